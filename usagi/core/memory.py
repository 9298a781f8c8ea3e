"""What the broker holds in memory, counted: the figure the memory alarm compares with its limit.

The process's RSS is a poor figure for that: memory freed after a burst mostly stays with the
process (the allocator keeps it for reuse), so an alarm on RSS set by a burst never clears. This
counts instead what the broker holds: message bodies in memory (queued, requeued, unacknowledged,
on their way out), what each entry, record, queue and connection costs besides (estimates per
item, below, measured with tracemalloc on CPython 3.11, 64 bits), connection buffers (output not
yet written, transports' write buffers, bytes read and not yet handled, content being
assembled), delayed messages in memory, the dead-letter worklist and the store (its index, cache and writes
under way: Store.memory_bytes).

Nothing is added to the publish and delivery path for it: the queues' byte counts already exist,
and the rest is summed by a walk (`Account`) that does at most STEP_UNITS units of work per loop
turn (a queue, a connection, a record are each a unit) and starts at most every PASS_INTERVAL
seconds, so on a broker with a million records a pass takes some tens of turns.

`used` = `base` + what the walk found, `base` being the memory of the interpreter and code: RSS
minus what was found, the lowest seen (so that a burst kept by the allocator never counts).
"""
from __future__ import annotations

import time

from ..model.paging import STUB_BYTES, Spilled
from ..model.queue import ENTRY_BYTES, TIMED_BYTES

MESSAGE_BYTES = 310        # a Message without its body: the object, its properties, route, strings
UNACKED_BYTES = 200        # an Unacked record and its slot in the channel's dict
QUEUE_BYTES = 3300         # an empty queue with its dicts, deques and statistics
CONNECTION_BYTES = 16384   # a connection with its transport, protocol, reader and first channel
CHANNEL_BYTES = 2048       # each further channel
EXCHANGE_BYTES = 1024
BINDING_BYTES = 400
DELAYED_BYTES = ENTRY_BYTES + 64

STEP_UNITS = 10_000        # work of one step (one loop turn): about 3 ms at most (a unit: a record, ~0.3 us)
QUEUE_UNITS = 10           # a queue's figures cost about ten units
PASS_INTERVAL = 1.0        # seconds between the starts of two passes


class Account:
    """A walk over what the broker holds, in bounded steps; `figures` of the last pass done."""

    def __init__(self):
        self.walk = None
        self.started = 0.0
        self.figures = None       # {"queues": bytes, "unacked": ..., ...} of the last pass
        self.held = 0             # their sum
        self.passes = 0

    def due(self, now: float) -> bool:
        return self.walk is not None or now - self.started >= PASS_INTERVAL

    def step(self, broker, units: int = STEP_UNITS) -> bool:
        """Go on with the pass (starting one if none is under way); True when a pass ended."""
        if self.walk is None:
            self.walk = self._walk(broker)
            self.started = time.monotonic()
        walk = self.walk
        try:
            while units > 0:
                units -= next(walk)
        except StopIteration as done:
            self.walk = None
            self.figures = done.value
            self.held = sum(done.value.values())
            self.passes += 1
            return True
        return False

    def run(self, broker):
        """A whole pass at once (start-up, and callers without an event loop)."""
        self.walk = None
        while not self.step(broker, 1 << 60):
            pass

    @staticmethod
    def _walk(broker):
        """Yields the units of work done since it last yielded; returns the figures."""
        f = {"queues": 0, "entries": 0, "unacked": 0, "connections": 0, "delayed": 0, "dead_letter": 0,
             "store": 0, "entities": 0}
        per_q = {}        # id(queue) -> [queue, unacked messages in memory, their bytes]
        for v in list(broker.vhosts.values()):
            queues = list(v.queues.values())
            f["entities"] += EXCHANGE_BYTES * len(v.exchanges)
            n = 0
            for q in queues:
                if q.deleted:
                    continue
                f["queues"] += q.ram_bytes()
                f["entries"] += ENTRY_BYTES * q.ram_count() + TIMED_BYTES * len(q.expiry) + \
                    STUB_BYTES * q.returned_stubs + 16 * len(q.deadlines) + 64 * len(q.dead) + \
                    100 * (len(q.held_expiry) + len(q.delivery_counts))
                f["entities"] += QUEUE_BYTES + BINDING_BYTES * len(q.bindings)
                n += QUEUE_UNITS
                if n >= 2048:
                    yield n
                    n = 0
            yield n + 1
        for conn in list(broker.connections):
            b = CONNECTION_BYTES
            out = conn.out
            for piece in out:
                b += len(piece)
            try:
                b += conn.transport.get_write_buffer_size()
            except Exception:
                pass
            rbuf = getattr(conn.reader, "_buf", b"")
            b += len(rbuf) if rbuf else 0
            units = 1 + len(out)
            for ch in list(conn.channels.values()):
                b += CHANNEL_BYTES
                for part in ch._parts:
                    b += len(part)
                units += 1 + len(ch._parts)
                unacked = list(ch.unacked.values())
                u_bytes = 0
                for i, u in enumerate(unacked):
                    m = u.msg
                    if type(m) is Spilled:
                        u_bytes += UNACKED_BYTES + STUB_BYTES
                    else:
                        n = len(m.body)
                        u_bytes += UNACKED_BYTES + MESSAGE_BYTES + n
                        e = per_q.get(id(u.queue))
                        if e is None:
                            e = per_q[id(u.queue)] = [u.queue, 0, 0]
                        e[1] += 1
                        e[2] += n
                    if i & 4095 == 4095:
                        yield 4096
                f["unacked"] += u_bytes
                units += len(unacked) & 4095
            f["connections"] += b
            yield units
        for q, n, b in per_q.values():
            q.unacked_avg = b // n         # the mean size of its unacknowledged messages in memory
        heap = getattr(broker.delayed, "heap", ())
        d = 0
        for i, e in enumerate(list(heap)):
            d += DELAYED_BYTES + len(e[-1].body)
            if i & 4095 == 4095:
                yield 4096
        f["delayed"] = d
        work = broker._dl_work
        d = 0
        for i, (_q, m, _r) in enumerate(list(work or ())):
            d += MESSAGE_BYTES + len(m.body)
            if i & 4095 == 4095:
                yield 4096
        f["dead_letter"] = d
        try:
            f["store"] = broker.store.memory_bytes()
        except Exception:
            pass
        yield 1
        return f
