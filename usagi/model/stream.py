"""Stream queues (x-queue-type=stream) over AMQP 0-9-1: an append-only log read by offset.

Every consumer reads the log from its own position (x-stream-offset: first, last, next, an
offset, a timestamp or an interval such as "1h"); deliveries carry the x-stream-offset header and
nothing is removed on ack: an ack only gives the consumer credit for more (it must set a
prefetch). Retention trims the oldest messages by x-max-length-bytes and x-max-age.

Memory: the newest part of the log is in memory (`log`), up to the queue's in-memory budget;
older entries move, oldest first, to segment files with an offset index (paging.LogSegment), from
which a consumer reads any offset (a batch at a time, `_cache`). Retention trims message by
message from the oldest, on disk (logically, from a segment's head) or in memory; a segment's
files go once nothing in them is live. A trim does at most TRIM_BUDGET entries per append.
"""
from __future__ import annotations

import bisect
import re
import time
from collections import deque

from ..amqp import errors as E
from ..amqp.errors import ChannelError, ConnectionError_
from ..amqp.table import Timestamp, Typed
from .paging import LogSegment
from .queue import PAGING, PEEK_LIMIT, Purged, Queue

TRIM_BUDGET = 4096         # entries retention removes per append (the rest at the next ones)
READ_BATCH = 256           # entries read from disk at once for consumers
READ_BATCH_BYTES = 1 << 20

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
        self.log: deque = deque()      # the in-memory tail: (offset, message, timestamp_ms)
        self.segs: list = []           # the older part on disk, in offset order (LogSegment)
        self.seg_firsts: list = []     # their first offsets (for bisect)
        self.first_offset = 0
        self.next_offset = 0
        self.log_bytes = 0             # bodies of every live entry
        self.mem_bytes = 0             # ... of those in memory
        self._cache = None             # (first offset, [(offset, message, ts)]) read from disk
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
        return self.next_offset - self.first_offset

    @property
    def message_bytes(self) -> int:
        return self.log_bytes

    def ram_count(self) -> int:
        return len(self.log)

    def ram_bytes(self) -> int:
        return self.mem_bytes

    def paged_stats(self) -> tuple:
        n = sum(sg.live for sg in self.segs)
        return n, self.log_bytes - self.mem_bytes, 0, 0

    @property
    def mem_first(self) -> int:
        return self.log[0][0] if self.log else self.next_offset

    # -- writing
    def append(self, broker, msg) -> bool:
        off = self.next_offset
        now = int(time.time() * 1000)
        self._add(off, msg, now)
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

    def _add(self, off: int, msg, ts: int):
        if not self.log and not self.segs:
            self.first_offset = off
        self.log.append((off, msg, ts))
        n = len(msg.body)
        self.log_bytes += n
        self.mem_bytes += n
        self.next_offset = off + 1
        if PAGING["dir"] and (len(self.log) > self.cap_count or self.mem_bytes > self.cap_bytes):
            self._evict()

    def _evict(self):
        """The oldest in-memory entries go to the tail segment, down to nine tenths of the budget."""
        log = self.log
        keep_n = self.cap_count * 9 // 10
        keep_b = self.cap_bytes * 9 // 10
        segs = self.segs
        while log and (len(log) > keep_n or self.mem_bytes > keep_b):
            off, msg, ts = log.popleft()
            if not segs or segs[-1].sealed or segs[-1].full():
                if segs:
                    segs[-1].seal()
                segs.append(LogSegment(PAGING["dir"], off))
                self.seg_firsts.append(off)
            segs[-1].append(off, msg, ts)
            self.mem_bytes -= len(msg.body)

    def restore(self, off: int, msg, ts_ms: int):
        self._add(off, msg, ts_ms)

    def trim(self, broker, now_ms: int):
        """Retention: the oldest entries go while the log is over x-max-length-bytes or they are
        older than x-max-age (at most TRIM_BUDGET per call)."""
        rb = self.retention_bytes
        age = self.max_age_ms
        if rb is None and age is None:
            return
        durable = broker.store.durable
        budget = TRIM_BUDGET
        while budget > 0 and self.first_offset < self.next_offset:
            budget -= 1
            segs = self.segs
            if segs:
                sg = segs[0]
                ts, size, msg_id = sg.head_entry()
                if not ((rb is not None and self.log_bytes > rb) or (age is not None and now_ms - ts > age)):
                    return
                off = sg.first_off + sg.start
                sg.trim_one()
                if not sg.live:
                    sg.drop()
                    segs.pop(0)
                    self.seg_firsts.pop(0)
                stored = durable
            else:
                off, msg, ts = self.log[0]
                if not ((rb is not None and self.log_bytes > rb) or (age is not None and now_ms - ts > age)):
                    return
                self.log.popleft()
                size = len(msg.body)
                self.mem_bytes -= size
                msg_id = msg.id
                stored = msg.stored and durable
            self.log_bytes -= size
            self.first_offset = off + 1
            if stored:
                broker.store.dequeue(self.vhost, self.name, off + 1, msg_id)

    def _drop_segments(self):
        for sg in self.segs:
            sg.drop()
        self.segs = []
        self.seg_firsts = []
        self._cache = None

    def purge(self) -> Purged:
        if self.deleted:           # the queue is gone: its files with it (the store drops its entries)
            self._drop_segments()
            self.log.clear()
        return Purged([])          # streams cannot be purged: RabbitMQ keeps the log

    def read(self, off: int, max_count: int) -> list:
        """Entries from offset `off` on (at most max_count): [(offset, message, ts)], from disk or memory."""
        out = []
        while len(out) < max_count and off < self.next_offset:
            if off < self.first_offset:
                off = self.first_offset
                continue
            mf = self.mem_first
            if off >= mf:
                log = self.log
                i = off - mf
                while i < len(log) and len(out) < max_count:
                    out.append(log[i])
                    i += 1
                break
            e = self._entry(off)
            if e is None:
                break
            out.append(e)
            off += 1
        return out

    def _entry(self, off: int):
        """The entry at a paged-out offset, through a batch read shared by consumers."""
        c = self._cache
        if c is not None and c[0] <= off < c[0] + len(c[1]):
            return c[1][off - c[0]]
        i = bisect.bisect_right(self.seg_firsts, off) - 1
        if i < 0:
            return None
        sg = self.segs[i]
        if off >= sg.end_off:
            return None
        got = sg.read(off, READ_BATCH, READ_BATCH_BYTES)
        if not got:
            return None
        self._cache = (off, got)
        return got[0]

    def peek_all(self, limit: int | None = None) -> list:
        n = PEEK_LIMIT if limit is None else min(limit, PEEK_LIMIT)
        return [(off + 1, m, False) for off, m, _ in self.read(self.first_offset, n)]

    def pop(self):
        return None

    def contents(self) -> tuple:
        return 0, 0

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
        # the prefetch first, as RabbitMQ checks them: no-ack without a prefetch gets the 406
        if not prefetch:
            raise ChannelError(f"consumer prefetch count is not set for '{self.label}'", E.PRECONDITION_FAILED)
        if no_ack:
            raise ConnectionError_(f"automatic acknowledgement not supported by stream queues {self.label}",
                                   E.NOT_IMPLEMENTED)

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
        for sg in self.segs:
            off = sg.offset_at(ts_ms)
            if off is not None:
                return off
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
                mf = self.mem_first
                if c.offset >= mf:
                    off, msg, _ = self.log[c.offset - mf]
                else:
                    e = self._entry(c.offset)
                    if e is None:          # unreadable: skip it rather than stall the consumer
                        c.offset += 1
                        continue
                    off, msg, _ = e
                props = with_header(msg, "x-stream-offset", Typed("l", off))
                view = Message(msg.exchange, msg.routing_key, props, msg.body, None, msg.id, msg.route)
                c.offset += 1
                ch.deliver(c, self, off + 1, view, False)
