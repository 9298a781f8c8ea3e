"""Dead lettering: a message rejected, expired or dropped by a length limit goes to its queue's
dead-letter exchange with x-death headers (model/deadletter.py edits them).

A dead-lettered message can die again at once in the queue it reaches (a TTL of 0, an overflow
of reject-publish-dlx or drop-head), and so on along a chain of queues that users build as long
as they like. So dead lettering is a worklist, first in first out, never a recursion: `dead_letter`
appends, and whoever finds the worklist idle drains it. A death that happens while the worklist
drains joins the end of it, so messages leave each queue and reach the next in the order they
died, as RabbitMQ's queue processes pass them on.

The work of one loop turn is bounded (TURN_BUDGET): past it, the rest of the worklist goes on at
a later turn (Broker.defer), so a chain of 10,000 TTL-0 queues costs every other client at most
one budget's worth of delay per turn. The x-death header gains an entry for each queue on a chain
(RabbitMQ's does too), so a hop costs in proportion to the message's properties: the budget counts
those bytes, not only hops.

Part of the engine (see broker.py): methods of Broker, split out by concern.
"""
from __future__ import annotations

import logging
import time
from collections import deque

from ..model.message import Message
from ..model.queue import Queue
from ..model import deadletter as DL
from . import upkeep


log = logging.getLogger("usagi.broker")

# The dead-letter work of one loop turn is at most TURN_BUDGET units, a unit being about the cost
# of copying one byte of message properties (1-2 ns on a typical core). A hop (one message leaving
# one queue) costs HOP_COST, plus the bytes of properties it reads and writes, plus DECODE_COST per
# byte where x-death must be decoded (a message that already died in that queue, or that may
# cycle back to a queue it died in), plus TARGET_COST per queue it reaches. A turn ends once the
# budget is spent, so it overruns it by at most the one hop that crossed it, whose cost is linear
# in that message's properties: x-death grows by about 110 bytes per queue of a chain, so the hop
# out of the 10,000th queue copies about 1.1 MB (about 2 ms). A decoding hop costs DECODE_COST
# times more per byte, but happens only with an x-death sent by a client (bounded by frame_max)
# or with deaths that consumers drive (rejections), not along a chain on its own.
TURN_BUDGET = 4 * 1024 * 1024       # about 5 ms
HOP_COST = 32 * 1024                # routing and enqueueing one hop: about 50 us
DECODE_COST = 64
TARGET_COST = 1024


class DeadLetterMixin:
    _dl_work = None             # deque of (queue, message, reason) waiting to be dead-lettered
    _dl_busy = False            # the worklist is being drained, or a drain is scheduled

    def dead_letter(self, q: Queue, msg: Message, reason: str):
        """Send a message that left queue q (rejected, expired, maxlen, delivery_limit) to q's
        dead-letter exchange: at once when the worklist is idle, else in its turn. Counted either
        way (rabbitmq_global_messages_dead_lettered_*_total; "disabled" without a DLX)."""
        self.counters.death(q, reason)
        if q.dlx is None:
            return
        work = self._dl_work
        if work is None:
            work = self._dl_work = deque()
        work.append((q, msg, reason))
        if not self._dl_busy:
            self._dl_drain()

    def _dl_drain(self):
        """Dead-letter what the worklist holds, up to one turn's budget; schedule the rest."""
        work = self._dl_work
        self._dl_busy = True
        scheduled = False
        spent = 0
        try:
            while work:
                if spent >= TURN_BUDGET:
                    if self.on_defer is not None:
                        self.on_defer(self._dl_resume)
                        scheduled = True
                        return
                    spent = 0               # no event loop to yield to: carry on
                q, msg, reason = work.popleft()
                try:
                    spent += self._dead_letter_one(q, msg, reason)
                except Exception:
                    spent += HOP_COST + DECODE_COST * len(msg.props)
                    upkeep.failed("dead-lettering", log, f"a message from queue '{q.name}' in vhost '{q.vhost}'")
        finally:
            if not scheduled:
                self._dl_busy = False

    def _dl_resume(self):
        """A later loop turn: go on with the worklist, then deliver what it queued."""
        self._dl_busy = False
        upkeep.guard("dead-lettering", self._dl_drain, logger=log)
        upkeep.guard("deliveries", self.run_dirty, logger=log)

    def _dead_letter_one(self, q: Queue, msg: Message, reason: str) -> int:
        """One hop: msg, which left q for `reason`, goes to q's dead-letter exchange with a new
        x-death entry. Returns its cost in the units of TURN_BUDGET."""
        dlx = q.dlx
        if dlx is None:
            return HOP_COST
        v = self.vhosts.get(q.vhost)
        x = v.exchanges.get(dlx) if v is not None else None
        if x is None:
            log.debug("dead-letter exchange '%s' of queue '%s' does not exist; message dropped", dlx, q.name)
            return HOP_COST
        cost = HOP_COST + len(msg.props)
        if DL.queue_field(q.name) in msg.props:     # record_death decodes x-death for this one
            cost += DECODE_COST * len(msg.props)
        props = DL.record_death(msg, q.name, reason, int(time.time() * 1000))
        cost += len(props)
        keys = [q.dlrk] if q.dlrk is not None else DL.routing_keys(msg) + (msg.bcc or [])
        new = self.new_message(dlx, keys[0], props, msg.body)
        targets = self.route(v, x, new, keys) if len(keys) > 1 else self.route(v, x, new)
        if not targets:
            return cost
        cycling = ()
        if reason != "rejected" and any(DL.queue_field(tq.name) in props for tq in targets):
            # only then can a target be one the message died in: decode x-death for the cycle rule
            cycling = DL.cycling_queues(DL.deaths_of(new))
            cost += DECODE_COST * len(props)
        for tq in targets:
            if tq.name in cycling:
                upkeep.warn("dead-letter cycle", log, "dead-letter cycle: message from queue '%s' to '%s' dropped",
                            q.name, tq.name)
                continue
            self.enqueue(tq, new)
        return cost + len(targets) * TARGET_COST
