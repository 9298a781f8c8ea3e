"""Flow: a publisher that outruns the consumers of its queue waits while they catch up.

RabbitMQ's credit flow makes a publishing connection wait (its state shows "flow") when the
queue it publishes to cannot keep up: the queue's process is busy delivering and paging, so it
grants credit more slowly, and a publisher's rate falls to what the queue can take. In Usagi every
connection shares one event loop, and without such a brake a fast publisher (or a thousand of
them) takes most of the loop's turns while the consumers of the same queue get one turn each per
round: the queue grows past its memory budget, everything beyond goes through the paging files,
and the consumers fall further behind.

So when a publish goes to a queue that is paging (over its in-memory budget) and has consumers,
the connection that published it stops being read at the end of its turn (`start`) until:

- the queue no longer pages (its consumers drained the paged part: `dispatch` calls `check`), or
- the queue is gone or has no consumers left, or
- its consumers took less than MIN_TAKEN messages (and MIN_TAKEN_BYTES) in STALL_SECONDS, with
  the loop all theirs (the interval starts again whenever one more publisher is held, so that it
  measures the consumers with every publisher of the queue held): they are slow on their own (a consumer that holds its prefetch and does
  not ack, or one that works a while on each message), and holding the publisher would only
  pace it to them, which RabbitMQ does not do; the queue then takes publishes without flow for
  STALL_BACKOFF seconds, twice as long after each further stall up to STALL_BACKOFF_MAX (and
  afresh once its consumers drain it), so a stuck consumer costs its publishers a blink now and
  then, and paging does its job, or
- FLOW_MAX_SECONDS have passed (a bound on any single wait).

A queue that is under its budget never holds anyone; nor does one without consumers (a backlog
being built); nor is a connection held that consumes from the queue itself (its acks are what
the queue waits for). Cost: a publish that is queued behind consumers reads one attribute more; the
end of a turn tests one attribute; the checks above run every fast tick (25 ms) only while some
connection waits, over the queues waited on (at most one per waiting connection).
"""
from __future__ import annotations

import time

STALL_SECONDS = 0.1        # an interval over which the consumers must take at least ...
MIN_TAKEN = 200            # ... this many messages (2,000 a second) ...
MIN_TAKEN_BYTES = 1 << 20  # ... or this many bytes (10 MB a second), else they are slow on their own
STALL_BACKOFF = 2.0        # ... then no flow for this queue for this long
STALL_BACKOFF_MAX = 10.0   # ... doubled after each stall in a row, up to this
FLOW_MAX_SECONDS = 1.0     # the longest a connection waits at once


def _mean_size(q) -> int:
    """The mean body size of the messages a queue holds in memory (0 if none)."""
    n = len(q.ready)
    return q.ready_bytes // n if n else 0


class _Waited:
    """A queue that connections wait on: who, since when, and its delivery count then."""

    __slots__ = ("q", "conns", "since", "mark", "delivered")

    def __init__(self, q, now):
        self.q = q
        self.conns = []
        self.since = now           # the wait began
        self.mark = now            # the delivery count was last read ...
        self.delivered = q.delivered   # ... and was this


class FlowMixin:
    """The broker's side of flow (state: see init_flow)."""

    def init_flow(self):
        self.pressure = None        # a paging queue with consumers published to in this turn
        self.flow_waits: dict = {}  # id(queue) -> _Waited
        self.flow_off: dict = {}    # id(queue) -> [until when its consumers count as stuck, backoff, queue]

    def flow_start(self, conn, q) -> bool:
        """End of conn's turn, in which it published to q while q paged with consumers: conn waits
        (True) unless q's consumers were found stuck a moment ago."""
        if q.deleted or not q.consumers or not q.paged:
            return False
        now = time.monotonic()
        off = self.flow_off.get(id(q))
        if off is not None and now < off[0]:
            return False
        by_channel = q.by_channel
        for ch in conn.channels.values():
            if ch in by_channel:
                return False        # it consumes from q too: its acks must still be read
        w = self.flow_waits.get(id(q))
        if w is None:
            w = self.flow_waits[id(q)] = _Waited(q, now)
        else:
            w.mark, w.delivered = now, q.delivered
        w.conns.append(conn)
        conn.flow_pause()
        return True

    def flow_check(self, q):
        """After deliveries from q: release its waiters once it no longer pages."""
        if not q.paged or not q.consumers:
            w = self.flow_waits.get(id(q))
            if w is not None:
                self._flow_release(w)
            if not q.paged:
                self.flow_off.pop(id(q), None)      # drained: its consumers keep up after all

    def flow_tick(self, now: float | None = None):
        """Every fast tick while someone waits: the other ways out (see the module docstring)."""
        if not self.flow_waits:
            return
        now = time.monotonic() if now is None else now
        for w in list(self.flow_waits.values()):
            q = w.q
            if q.deleted or not q.paged or not q.consumers or now - w.since >= FLOW_MAX_SECONDS:
                self._flow_release(w)
            elif now - w.mark >= STALL_SECONDS:
                taken = q.delivered - w.delivered
                if taken < MIN_TAKEN and taken * _mean_size(q) < MIN_TAKEN_BYTES:
                    off = self.flow_off.get(id(q))
                    backoff = STALL_BACKOFF if off is None else min(off[1] * 2, STALL_BACKOFF_MAX)
                    self.flow_off[id(q)] = [now + backoff, backoff, q]
                    self._flow_release(w)
                else:               # they keep up: measure the next interval from here
                    w.mark, w.delivered = now, q.delivered
                    self.flow_off.pop(id(q), None)

    def flow_forget(self):
        """Every second (the slow tick): forget the stuck marks of queues that are gone (a queue
        drained forgets its own). One entry per queue whose consumers were found stuck."""
        for k in [k for k, (_t, _b, q) in self.flow_off.items() if q.deleted]:
            del self.flow_off[k]

    def _flow_release(self, w):
        self.flow_waits.pop(id(w.q), None)
        for conn in w.conns:
            conn.flow_resume()
        w.conns = []
