"""Time: message TTLs (timely, wherever the message is in its queue) and x-expires of unused queues.

Both are deadline structures, not scans. Message TTL: each queue with entries that expire is in a
heap by its earliest deadline (`ttl_heap`, entries (due, n, queue); a queue's `ttl_due` says which
of its entries is current, the others are stale and skipped). A queue knows its own earliest
deadline among in-memory entries (a heap) and paged-out ones (per segment, see model/paging.py).
The work of one turn is bounded: at most EXPIRE_BUDGET entries expire per turn, and none while the
dead-letter worklist holds more than DL_BACKLOG (its own budget drains it, see deadlettering.py);
what is left goes on at the next turn. So a million messages expiring together cost everyone else
a few milliseconds per turn, not one long stall.

x-expires: queues in a heap by when they expire if still unused (`xexp_heap`, lazily corrected:
a use moves the deadline later, found when the entry comes up). Queues are found by a scan of at
most XSCAN_SLICE queues per tick (a new queue, a policy setting x-expires), a pass over all of them
per XSCAN_SLICE-sized steps instead of every queue several times a second.

Part of the engine (see broker.py): methods of Broker, split out by concern.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import time

from ..model.paging import Spilled
from . import upkeep


log = logging.getLogger("usagi.broker")

EXPIRE_BUDGET = 2048     # entries expired per loop turn (a few milliseconds)
DL_BACKLOG = 8192        # no expiry while this many dead-letterings wait
XSCAN_SLICE = 10_000     # queues looked at per tick to find those with x-expires (about 1.5 ms)

_order = itertools.count()


class ExpiryMixin:
    ttl_heap = ()            # (due ms, n, queue): made on first use
    xexp_heap = ()           # (due monotonic s, n, queue)
    _expire_scheduled = False
    _xscan = None            # the queues of the scan in progress, and where it is
    _xscan_at = 0

    # ------------------------------------------------------------------ message TTL
    def ttl_schedule(self, q, due: int):
        """q has an entry expiring at `due` (ms since the epoch), earlier than it was down for."""
        if not self.ttl_heap:
            self.ttl_heap = []
        q.ttl_due = due
        heapq.heappush(self.ttl_heap, (due, next(_order), q))

    def _ttl_reschedule(self, q):
        due = q.next_due()
        if due is not None and (q.ttl_due is None or due < q.ttl_due):
            self.ttl_schedule(q, due)

    def expire(self, now_ms: int):
        """Dead-letter or drop messages whose TTL has passed, wherever they are in their queues, at
        most EXPIRE_BUDGET of them this turn. A queue whose expiry fails is logged and skipped: the
        others still expire on time."""
        reg = self.ttl_queues           # queues registered by recovery (and older callers)
        while reg:
            _k, q = reg.popitem()
            if q is not None and not q.deleted:
                try:
                    self._ttl_reschedule(q)
                except Exception:
                    upkeep.failed("message TTL expiry", log, f"queue '{q.name}' in vhost '{q.vhost}'")
        heap = self.ttl_heap
        budget = EXPIRE_BUDGET
        # what dies here is dead-lettered through the worklist, within its own budget per turn
        # (deadlettering.py): queued up now, drained below
        busy = self._dl_busy
        self._dl_busy = True
        try:
            while heap and heap[0][0] <= now_ms and budget > 0:
                if self._dl_work is not None and len(self._dl_work) > DL_BACKLOG:
                    break               # the next tick goes on, once dead-lettering caught up
                due, _n, q = heapq.heappop(heap)
                if q.ttl_due != due or q.deleted:
                    continue            # stale: the queue is down for another time
                q.ttl_due = None
                try:
                    got = q.expire_due(now_ms, budget)
                    budget -= len(got) + 1
                    for seq, msg in got:
                        if type(msg) is Spilled:
                            msg = self.loaded(q, seq, msg) if q.dlx is not None else msg
                            if msg is None:
                                continue
                        self.dead_letter(q, msg, "expired")
                        self._forget(q, seq, msg)
                    self._ttl_reschedule(q)
                except Exception:
                    upkeep.failed("message TTL expiry", log, f"queue '{q.name}' in vhost '{q.vhost}'")
        finally:
            self._dl_busy = busy
        if not busy and self._dl_work:
            self._dl_drain()
        if self._dl_work is not None and len(self._dl_work) > DL_BACKLOG:
            return
        if heap and heap[0][0] <= now_ms and self.on_defer is not None and not self._expire_scheduled:
            self._expire_scheduled = True
            self.on_defer(self._expire_more)

    def _expire_more(self):
        """The next turn of a large expiry."""
        self._expire_scheduled = False
        upkeep.guard("message TTL expiry", self.expire, int(time.time() * 1000), logger=log)
        upkeep.guard("deliveries", self.run_dirty, logger=log)

    # ------------------------------------------------------------------ x-expires
    def xexp_schedule(self, q):
        """q may expire (unused for its x-expires) at last_used + expires: have it looked at then."""
        if q.expires is None or q.deleted:
            return
        due = q.last_used + q.expires / 1000.0
        if q.expires_due is None or due < q.expires_due:
            if not self.xexp_heap:
                self.xexp_heap = []
            q.expires_due = due
            heapq.heappush(self.xexp_heap, (due, next(_order), q))

    def expire_queues(self, now: float):
        """x-expires: delete queues unused for their expiry period (one failing is logged and
        skipped; the others still go). `now` is monotonic seconds."""
        self._xscan_step()
        heap = self.xexp_heap
        while heap and heap[0][0] <= now:
            due, _n, q = heapq.heappop(heap)
            if q.expires_due != due or q.deleted:
                continue
            q.expires_due = None
            if q.expires is None or q.consumers:
                continue                # no longer expires; a consumer leaving has it looked at again
            if (now - q.last_used) * 1000 < q.expires:
                self.xexp_schedule(q)   # used since: later
                continue
            try:
                self.delete_queue(q)
                log.info("queue '%s' in vhost '%s' expired", q.name, q.vhost)
            except Exception:
                upkeep.failed("queue expiry (x-expires)", log, f"queue '{q.name}' in vhost '{q.vhost}'")

    def _xscan_step(self):
        """Look at the next XSCAN_SLICE queues for x-expires; a pass over all of them, then another."""
        if self._xscan is None or self._xscan_at >= len(self._xscan):
            self._xscan = list(itertools.chain.from_iterable(
                [list(v.queues.values()) for v in list(self.vhosts.values())]))
            self._xscan_at = 0
        scan = self._xscan
        end = min(len(scan), self._xscan_at + XSCAN_SLICE)
        for i in range(self._xscan_at, end):
            q = scan[i]
            if q.expires is not None and not q.deleted and not q.consumers:
                self.xexp_schedule(q)
        self._xscan_at = end
        if end >= len(scan):
            self._xscan = None          # let go of deleted queues
