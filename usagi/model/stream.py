"""Stream queues (x-queue-type=stream) over AMQP 0-9-1: an append-only log read by offset.

Every consumer reads the log from its own position (x-stream-offset: first, last, next, an
offset, a timestamp or an interval such as "1h"); deliveries carry the x-stream-offset header and
nothing is removed on ack: an ack only gives the consumer credit for more (it must set a
prefetch). Retention trims the oldest messages by x-max-length-bytes and x-max-age.
"""
from __future__ import annotations

import re
import time
from collections import deque

from ..amqp import errors as E
from ..amqp.errors import ChannelError, ConnectionError_
from ..amqp.table import Timestamp, Typed
from .queue import Queue

_AGE = re.compile(r"^(\d+)(Y|M|D|h|m|s)$")
_UNIT_MS = {"Y": 365 * 86400_000, "M": 30 * 86400_000, "D": 86400_000, "h": 3600_000, "m": 60_000, "s": 1000}


def parse_age(value) -> int | None:
    """RabbitMQ's x-max-age syntax ("7D", "12h", "30m", "10s") in milliseconds, or None if invalid."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    m = _AGE.match(value)
    if not m:
        return None
    return int(m.group(1)) * _UNIT_MS[m.group(2)]


class StreamQueue(Queue):
    kind = "stream"

    def __init__(self, *a, **kw):
        self.log: deque = deque()      # (offset, message, timestamp_ms)
        self.first_offset = 0
        self.next_offset = 0
        self.log_bytes = 0
        super().__init__(*a, **kw)

    def configure(self, effective: dict):
        super().configure(effective)
        self.max_age_ms = parse_age(effective.get("x-max-age"))
        self.retention_bytes = self.max_length_bytes
        # streams ignore the classic length limits and TTLs
        self.limited = False
        self.max_length = self.max_length_bytes = None
        self.message_ttl = None

    @property
    def label(self) -> str:
        return f"queue '{self.name}' in vhost '{self.vhost}'"

    @property
    def message_count(self) -> int:
        return len(self.log)

    @property
    def message_bytes(self) -> int:
        return self.log_bytes

    # -- writing
    def append(self, broker, msg) -> bool:
        off = self.next_offset
        self.next_offset += 1
        now = int(time.time() * 1000)
        self.log.append((off, msg, now))
        self.log_bytes += len(msg.body)
        self.published += 1
        store = broker.store
        if store.durable:
            if not msg.stored:
                store.add_message(msg.id, msg.exchange, msg.routing_key, msg.props, msg.body)
                msg.stored = True
            msg.refs += 1
            store.enqueue(self.vhost, self.name, off + 1, msg.id, now)     # its age counts from now
            self.seq = off + 1
        self.trim(broker, now)
        if self.consumers:
            broker.dirty[id(self)] = self
        return True

    def restore(self, off: int, msg, ts_ms: int):
        self.log.append((off, msg, ts_ms))
        self.log_bytes += len(msg.body)
        if not self.first_offset and len(self.log) == 1:
            self.first_offset = off
        self.next_offset = max(self.next_offset, off + 1)

    def trim(self, broker, now_ms: int):
        log = self.log
        while log and ((self.retention_bytes is not None and self.log_bytes > self.retention_bytes) or
                       (self.max_age_ms is not None and now_ms - log[0][2] > self.max_age_ms)):
            off, msg, _ = log.popleft()
            self.log_bytes -= len(msg.body)
            self.first_offset = off + 1
            if msg.stored and broker.store.durable:
                broker.store.dequeue(self.vhost, self.name, off + 1, msg.id)

    def purge(self) -> list:
        return []          # streams cannot be purged: RabbitMQ keeps the log

    def peek_all(self) -> list:
        return [(off + 1, m, False) for off, m, _ in self.log]

    def pop(self):
        return None

    # -- reading
    def validate_consumer(self, args: dict):
        v = args.get("x-stream-offset") if args else None
        if v is None or isinstance(v, (int, Timestamp)) and not isinstance(v, bool):
            return
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        if isinstance(v, str) and (v in ("first", "last", "next") or parse_age(v) is not None):
            return
        raise ChannelError(f"Invalid x-stream-offset: {v!r}", E.PRECONDITION_FAILED)

    def check_consume(self, no_ack: bool, prefetch: int):
        if no_ack:
            raise ConnectionError_(f"automatic acknowledgement not supported by stream queues {self.label}",
                                   E.NOT_IMPLEMENTED)
        if not prefetch:
            raise ChannelError(f"consumer prefetch count is not set for '{self.label}'", E.PRECONDITION_FAILED)

    def start_offset(self, spec) -> int:
        if isinstance(spec, bytes):
            spec = spec.decode("utf-8", "replace")
        if spec is None or spec == "next":
            return self.next_offset
        if spec == "first":
            return self.first_offset
        if spec == "last":
            return max(self.first_offset, self.next_offset - 1)
        if isinstance(spec, Timestamp):
            return self._offset_at(int(spec) * 1000)
        if isinstance(spec, str):
            return self._offset_at(int(time.time() * 1000) - (parse_age(spec) or 0))
        if isinstance(spec, int):
            return min(max(spec, self.first_offset), self.next_offset)
        return self.next_offset

    def _offset_at(self, ts_ms: int) -> int:
        for off, _m, ts in self.log:
            if ts >= ts_ms:
                return off
        return self.next_offset

    def consumer_added(self, c):
        c.offset = self.start_offset(c.arguments.get("x-stream-offset") if c.arguments else None)

    def dispatch(self, broker):
        from .deadletter import with_header
        from .message import Message
        first = self.first_offset
        for c in list(self.consumers):
            ch = c.channel
            while c.offset < self.next_offset and ch.can_deliver(c):
                if c.offset < first:
                    c.offset = first
                    if c.offset >= self.next_offset:
                        break
                off, msg, _ = self.log[c.offset - first]
                props = with_header(msg, "x-stream-offset", Typed("l", off))
                view = Message(msg.exchange, msg.routing_key, props, msg.body, None, msg.id, msg.route)
                c.offset += 1
                ch.deliver(c, self, off + 1, view, False)
