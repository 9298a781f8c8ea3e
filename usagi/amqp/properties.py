"""Basic content properties.

Properties travel as the bytes received (flags then fields) and are decoded only when a feature
needs them. `scan` pulls out the few fields the broker acts on; `decode` and `encode` handle all.

What the broker reads from a stored message's properties for its own work (headers for routing and
dead lettering, properties for the management API) is read leniently: `headers_of` and
`decode_lenient` give what can be decoded and never raise, so a message with headers the decoder
refuses is still routed, dead-lettered and shown (see amqp/table.py). Edits (`replace_headers`,
`without_expiration`) splice the raw bytes and leave every other field as it came.
"""
from __future__ import annotations

import struct

from .errors import SyntaxError_
from .table import Timestamp, decode_table, decode_table_lenient, encode_table

_H = struct.Struct(">H")
_I = struct.Struct(">I")
_Q = struct.Struct(">Q")

# (name, type) in flag order: the first property is bit 15.
BASIC_PROPERTIES = (
    ("content_type", "shortstr"), ("content_encoding", "shortstr"), ("headers", "table"),
    ("delivery_mode", "octet"), ("priority", "octet"), ("correlation_id", "shortstr"),
    ("reply_to", "shortstr"), ("expiration", "shortstr"), ("message_id", "shortstr"),
    ("timestamp", "timestamp"), ("type", "shortstr"), ("user_id", "shortstr"),
    ("app_id", "shortstr"), ("cluster_id", "shortstr"),
)
FLAG_CONTENT_TYPE = 1 << 15
FLAG_CONTENT_ENCODING = 1 << 14
FLAG_HEADERS = 1 << 13
FLAG_DELIVERY_MODE = 1 << 12
FLAG_PRIORITY = 1 << 11
FLAG_CORRELATION_ID = 1 << 10
FLAG_REPLY_TO = 1 << 9
FLAG_EXPIRATION = 1 << 8
FLAG_USER_ID = 1 << 4
_AFTER_EXPIRATION_NEEDED = FLAG_USER_ID | (1 << 7) | (1 << 6) | (1 << 5)

EMPTY = b"\x00\x00"


class Scan:
    """What the broker needs from a message's properties."""

    __slots__ = ("delivery_mode", "priority", "expiration", "headers_span", "user_id", "reply_to")

    def __init__(self):
        self.delivery_mode = 0
        self.priority = None
        self.expiration = None
        self.headers_span = None
        self.user_id = None
        self.reply_to = None


def scan(raw: bytes) -> Scan:
    """Read delivery_mode, priority, expiration, user_id, reply_to and where the headers lie."""
    s = Scan()
    n = len(raw)
    if n < 2:
        raise SyntaxError_("content header too short")
    flags = (raw[0] << 8) | raw[1]
    if not flags:
        return s
    try:
        off = 2
        if flags & FLAG_CONTENT_TYPE:
            off += 1 + raw[off]
        if flags & FLAG_CONTENT_ENCODING:
            off += 1 + raw[off]
        if flags & FLAG_HEADERS:
            size, = _I.unpack_from(raw, off)
            s.headers_span = (off, off + 4 + size)
            off += 4 + size
        if flags & FLAG_DELIVERY_MODE:
            s.delivery_mode = raw[off]
            off += 1
        if flags & FLAG_PRIORITY:
            s.priority = raw[off]
            off += 1
        if flags & (FLAG_CORRELATION_ID | FLAG_REPLY_TO | FLAG_EXPIRATION | _AFTER_EXPIRATION_NEEDED):
            if flags & FLAG_CORRELATION_ID:
                off += 1 + raw[off]
            if flags & FLAG_REPLY_TO:
                k = raw[off]
                s.reply_to = raw[off + 1:off + 1 + k].decode("utf-8", "surrogateescape")
                off += 1 + k
            if flags & FLAG_EXPIRATION:
                k = raw[off]
                s.expiration = raw[off + 1:off + 1 + k].decode("utf-8", "surrogateescape")
                off += 1 + k
            if flags & FLAG_USER_ID:
                if flags & (1 << 7):
                    off += 1 + raw[off]
                if flags & (1 << 6):
                    off += 8
                if flags & (1 << 5):
                    off += 1 + raw[off]
                k = raw[off]
                s.user_id = raw[off + 1:off + 1 + k].decode("utf-8", "surrogateescape")
                off += 1 + k
    except (IndexError, struct.error):
        raise SyntaxError_("content header properties truncated") from None
    if off > n:
        raise SyntaxError_("content header properties truncated")
    return s


def decode(raw: bytes) -> dict:
    """All properties present, as a dict (headers decoded to a dict)."""
    if len(raw) < 2:
        raise SyntaxError_("content header too short")
    flags, = _H.unpack_from(raw, 0)
    off = 2
    out = {}
    try:
        for i, (name, kind) in enumerate(BASIC_PROPERTIES):
            if not flags & (1 << (15 - i)):
                continue
            if kind == "shortstr":
                k = raw[off]
                out[name] = bytes(raw[off + 1:off + 1 + k]).decode("utf-8", "surrogateescape")
                off += 1 + k
            elif kind == "table":
                out[name], off = decode_table(raw, off)
            elif kind == "octet":
                out[name] = raw[off]
                off += 1
            else:
                out[name] = Timestamp(_Q.unpack_from(raw, off)[0])
                off += 8
    except (IndexError, struct.error):
        raise SyntaxError_("content header properties truncated") from None
    if off > len(raw):
        raise SyntaxError_("content header properties truncated")
    return out


def encode(props: dict, raw_headers: bytes | None = None) -> bytes:
    """Encode properties; `raw_headers`, if given, is an already encoded headers table."""
    flags = 0
    parts = [b""]
    for i, (name, kind) in enumerate(BASIC_PROPERTIES):
        if name == "headers" and raw_headers is not None:
            flags |= 1 << (15 - i)
            parts.append(raw_headers)
            continue
        v = props.get(name)
        if v is None:
            continue
        flags |= 1 << (15 - i)
        if kind == "shortstr":
            b = v.encode("utf-8", "surrogateescape") if isinstance(v, str) else bytes(v)
            if len(b) > 255:
                raise ValueError(f"property {name} longer than 255 bytes")
            parts.append(bytes((len(b),)) + b)
        elif kind == "table":
            parts.append(encode_table(v))
        elif kind == "octet":
            parts.append(bytes((int(v),)))
        else:
            parts.append(_Q.pack(int(v)))
    parts[0] = _H.pack(flags)
    return b"".join(parts)


def replace_headers(raw: bytes, new_headers: bytes | None) -> bytes:
    """The same properties with the headers table replaced (or removed when None)."""
    flags, = _H.unpack_from(raw, 0)
    s = scan(raw)
    if s.headers_span is not None:
        a, b = s.headers_span
        rest_before, rest_after = raw[2:a], raw[b:]
    else:
        # headers come after content_type and content_encoding
        off = 2
        if flags & FLAG_CONTENT_TYPE:
            off += 1 + raw[off]
        if flags & FLAG_CONTENT_ENCODING:
            off += 1 + raw[off]
        rest_before, rest_after = raw[2:off], raw[off:]
    if new_headers is None:
        flags &= ~FLAG_HEADERS
        return _H.pack(flags) + rest_before + rest_after
    flags |= FLAG_HEADERS
    return _H.pack(flags) + rest_before + new_headers + rest_after


def headers_of(raw: bytes, s: Scan | None = None) -> dict:
    """The headers as far as they can be decoded (see table.decode_table_lenient): never raises
    for what is inside the table."""
    s = s or scan(raw)
    if s.headers_span is None:
        return {}
    return decode_table_lenient(raw, s.headers_span[0], s.headers_span[1])


def decode_lenient(raw: bytes) -> dict:
    """The properties as far as they can be decoded: headers leniently (entries it cannot read
    become table.Opaque values or are left out), and the fields before any that runs past the end.
    Never raises; for showing a stored message (management API)."""
    out: dict = {}
    if len(raw) < 2:
        return out
    flags, = _H.unpack_from(raw, 0)
    off = 2
    n = len(raw)
    for i, (name, kind) in enumerate(BASIC_PROPERTIES):
        if not flags & (1 << (15 - i)):
            continue
        if off >= n:
            break
        if kind == "shortstr":
            k = raw[off]
            if off + 1 + k > n:
                break
            out[name] = bytes(raw[off + 1:off + 1 + k]).decode("utf-8", "surrogateescape")
            off += 1 + k
        elif kind == "table":
            if off + 4 > n:
                break
            end = off + 4 + _I.unpack_from(raw, off)[0]
            if end > n:
                break
            out[name] = decode_table_lenient(raw, off, end)
            off = end
        elif kind == "octet":
            out[name] = raw[off]
            off += 1
        else:
            if off + 8 > n:
                break
            out[name] = Timestamp(_Q.unpack_from(raw, off)[0])
            off += 8
    return out


def without_expiration(raw: bytes) -> bytes:
    """The same properties without the expiration field (dead lettering moves it into x-death);
    the bytes before and after it are kept as they came."""
    flags, = _H.unpack_from(raw, 0)
    if not flags & FLAG_EXPIRATION:
        return raw
    try:
        off = 2
        if flags & FLAG_CONTENT_TYPE:
            off += 1 + raw[off]
        if flags & FLAG_CONTENT_ENCODING:
            off += 1 + raw[off]
        if flags & FLAG_HEADERS:
            off += 4 + _I.unpack_from(raw, off)[0]
        if flags & FLAG_DELIVERY_MODE:
            off += 1
        if flags & FLAG_PRIORITY:
            off += 1
        if flags & FLAG_CORRELATION_ID:
            off += 1 + raw[off]
        if flags & FLAG_REPLY_TO:
            off += 1 + raw[off]
        start = off
        off += 1 + raw[off]
    except (IndexError, struct.error):
        raise SyntaxError_("content header properties truncated") from None
    if off > len(raw):
        raise SyntaxError_("content header properties truncated")
    return _H.pack(flags & ~FLAG_EXPIRATION) + raw[2:start] + raw[off:]
