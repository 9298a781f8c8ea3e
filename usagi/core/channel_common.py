"""What the channel and its method handlers share: pre-encoded frame pieces, channel states and
small encoders (the record of an unacknowledged delivery, Unacked, is in fastpath.py).
"""
from __future__ import annotations

import struct

from ..model.deadletter import with_header

_Q = struct.Struct(">Q")
_QB = struct.Struct(">QB")
_FH = struct.Struct(">BHI")
_HHQ = struct.Struct(">HHQ")
_H = struct.Struct(">H")
_END = b"\xce"
_DELIVER_HEAD = b"\x00\x3c\x00\x3c"
_GET_OK_HEAD = b"\x00\x3c\x00\x47"
_RETURN_HEAD = b"\x00\x3c\x00\x32"
_REDELIVERED = (b"\x00", b"\x01")

OPEN, CLOSING = 0, 1


def _shortstr(s: str) -> bytes:
    b = s.encode("utf-8", "surrogateescape")
    return bytes((len(b),)) + b


def _with_delivery_count(msg, count: int):
    from ..amqp.table import Typed
    from ..model.message import Message
    props = with_header(msg, "x-delivery-count", Typed("l", count))
    return Message(msg.exchange, msg.routing_key, props, msg.body, None, msg.id, msg.route)
