"""Queues at work: enqueue (with TTL and length limits), dispatch to consumers round-robin,
basic.get, and what an ack, a reject or a requeue does to a queue.

Memory: a queue pages its ready messages past its in-memory budget by itself (model/queue.py).
Unacknowledged deliveries and requeued messages are records held here and in channels; past the
queue's budget their messages leave memory as Spilled stubs (model/paging.py) and are read back
when delivered again. That is decided once per connection per loop turn, after its output is
flushed (`after_flush`): a channel that made SPILL_STEP deliveries since its last look has its new
unacknowledged records looked at, so the publish and delivery path pays nothing per message for
it. A requeue checks its queue once per batch (`check_returned`).

Part of the engine (see broker.py): methods of Broker, split out by concern.
"""
from __future__ import annotations

import logging
import time

from ..amqp import errors as E
from ..amqp.errors import ChannelError
from ..model.message import Message
from ..model.paging import Spilled, dropped, spill
from ..model.queue import PAGING, PARKED_CHANNEL, PARKED_GLOBAL, PARKED_OWN, Queue

from . import upkeep
from .arguments import MAX_EXPIRY, _q, _type_name
from .hot import fastpath

log = logging.getLogger("usagi.broker")

SPILL_STEP = 256      # deliveries on a channel between two looks at its unacknowledged records
CHECK_QUEUES = 64     # a look checks the queues of at most this many consumers before walking records
LOAD_BUDGET = 256     # spilled messages read back from the store per loop turn (about 20-40 us each)
DROP_BUDGET = 4096    # entries drop-head removes per loop turn (a limit lowered on a long queue)


def _over_budget(q: Queue, size: int) -> bool:
    """Whether q may hold more in memory than its budget: its in-memory ready entries and its
    unacknowledged messages in memory (their bytes at the larger of the mean the memory accounting
    last measured and `size`)."""
    ram_unacked = q.unacked - (q.spilled.n - q.returned_stubs)
    return (q.ram_count() + ram_unacked > q.cap_count or
            q.ram_bytes() + ram_unacked * max(q.unacked_avg, size) > q.cap_bytes)


def _rows(staged) -> list:
    """Store.add_entries rows of staged entries ([queue, seq, delivered, msg]); a deleted queue's
    are left out (the store forgot that queue: drop_queue_messages)."""
    return [(msg.id, msg.exchange, msg.routing_key, msg.props, msg.body, q.vhost, q.name, seq, delivered)
            for q, seq, delivered, msg in staged if not q.deleted]


class DeliveryMixin:
    # -- time to live
    @staticmethod
    def message_ttl(q: Queue, msg: Message):
        ttl = q.message_ttl
        exp = msg.scan.expiration
        if exp is not None:
            try:
                e = int(exp)
            except ValueError:
                e = None
            if e is not None and (ttl is None or e < ttl):
                ttl = e
        return ttl

    def enqueue(self, q: Queue, msg: Message) -> bool:
        """Put a routed message on a queue, or hand it straight to a consumer that has room.

        Returns False when the queue refuses it (x-overflow reject-publish)."""
        if q.limited and q.overflow != "drop-head" and self._full(q, msg):
            if q.overflow == "reject-publish-dlx":
                self.dead_letter(q, msg, "maxlen")
            return False
        ttl = None
        if q.message_ttl is not None or msg.scan.expiration is not None:
            ttl = self.message_ttl(q, msg)
            if ttl is not None and ttl <= 0:
                # expires at once unless a consumer takes it right now
                if q.consumers and q.message_count == 0:
                    c = self._pick_consumer(q)
                    if c is not None:
                        now = int(time.time() * 1000)
                        if q.durable and msg.scan.delivery_mode == 2 and self.store.durable:
                            # stored as any delivered entry: kept until acked, and counted in
                            # msg.refs (an ack here must not confirm what other queues hold); its
                            # deadline is now, so a restart expires it rather than delivering it
                            self.persist(q, msg, now)
                        seq = q.next_seq()
                        # a requeue brings it back already expired: it is dead-lettered then, as
                        # RabbitMQ does, rather than left in the queue for good
                        q.held_expiry[seq] = now
                        c.channel.deliver(c, q, seq, msg, False)
                        return True
                q.published += 1
                self.dead_letter(q, msg, "expired")
                return True
        if q.kind == "stream":
            return q.append(self, msg)
        if ttl is None:
            if not self.enqueue_plain(q, msg) and q.limited:
                self._drop_head(q)
            return True
        if ttl > MAX_EXPIRY:        # a policy stored before policies were range-checked
            ttl = MAX_EXPIRY
        exp = int(time.time() * 1000) + ttl
        if q.durable and msg.scan.delivery_mode == 2 and self.store.durable:
            self.persist(q, msg, exp)       # the deadline is stored: it holds after a restart
        q.push(msg, exp)
        due = q.ttl_due
        if due is None or exp < due:
            self.ttl_schedule(q, exp)
        if q.limited:
            self._drop_head(q)
        if q.consumers:
            self.dirty[id(q)] = q
        return True

    # a message with no TTL: straight to a consumer with room if the queue is empty (True), else
    # onto the queue (False); the publish hot path calls it directly for plain queues (fastpath.py)
    enqueue_plain = fastpath.enqueue_plain

    def persist(self, q: Queue, msg: Message, expires: int | None = None):
        """Record a persistent message's entry in a durable queue (the seq it is about to get),
        with the time it expires at (ms since the epoch) if it has a TTL."""
        msg.refs += 1
        if not msg.stored:
            msg.stored = True
            self.store.add_with_entry(msg.id, msg.exchange, msg.routing_key, msg.props, msg.body,
                                      q.vhost, q.name, q.seq + 1, expires)
        else:
            if self.staged and msg.id in self.staged:
                self._save_one(msg.id)      # a second entry: the store must hold the message first
            self.store.enqueue(q.vhost, q.name, q.seq + 1, msg.id, expires)

    # ------------------------------------------------------------------ staged entries
    # A persistent message routed to one durable queue is staged (fastpath.enqueue_plain): its
    # entry waits in `staged` rather than going to the store at once. Most are acknowledged before
    # the next commit begins and then never reach the store (fastpath.settle drops them), which
    # spares the store's bookkeeping on the publish, the delivery and the ack. The rest go to the
    # store when a commit begins (Broker.begin_commit), so a commit still writes everything
    # recorded before it: confirms and commit barriers wait for commits as before. They also go
    # before anything that needs the store to hold them: a second entry of the message
    # (persist), paging out (_stubs), the last commit at stop. A staged entry is its message's
    # only entry. `staged` holds at most STAGED_MAX entries (fastpath.enqueue_plain hands the
    # oldest to the store beyond that), so what a commit's start hands over is bounded (about 1 µs
    # an entry) whatever the publishers do between commits.

    def save_staged(self):
        """Hand every staged entry to the store (on the loop's thread): at most STAGED_MAX, in one
        call. Entries of deleted queues are dropped: the store forgot their queue
        (drop_queue_messages)."""
        self.store.add_entries(_rows(self.staged.values()))
        self.staged.clear()

    def _save_one(self, msg_id):
        """The staged entry of one message goes to the store (a second entry is coming, or the
        staged set is full: fastpath.enqueue_plain hands over its oldest)."""
        self.store.add_entries(_rows((self.staged.pop(msg_id),)))

    def unstore(self, q, seq, msg):
        """The stored entry `seq` of msg in q is gone (seq 0: every entry of msg in q): from the
        staged entries, or else from the store. The caller checked msg.stored and q.durable."""
        staged = self.staged
        if (not staged or staged.pop(msg.id, None) is None) and not q.deleted:
            # (a deleted queue's entries left the store with it: drop_queue_messages; one of the
            # same name declared since has entries of its own under that name)
            self.store.dequeue(q.vhost, q.name, seq, msg.id)

    def stored_delivered(self, q, seq, msg):
        """The stored entry `seq` of msg in q was delivered (it comes back redelivered after a
        restart). The caller checked msg.stored and q.durable."""
        rec = self.staged.get(msg.id) if self.staged else None
        if rec is not None:
            rec[2] = 1
        elif not q.deleted:
            self.store.mark_delivered(q.vhost, q.name, seq)

    def _full(self, q, msg) -> bool:
        if q.max_length is not None and q.message_count >= q.max_length:
            return True
        if q.max_length_bytes is not None and q.message_bytes + len(msg.body) > q.max_length_bytes:
            return True
        return False

    def _drop_head(self, q):
        """drop-head overflow: the oldest entries go (dead-lettered) while the queue is over its
        length limits. A publish drops one; a limit lowered by a policy may drop many: at most
        DROP_BUDGET per loop turn, dead-lettered through the worklist within its budget, the rest at
        the next turns."""
        n = 0
        busy = self._dl_busy
        self._dl_busy = True
        try:
            while (q.max_length is not None and q.message_count > q.max_length) or \
                    (q.max_length_bytes is not None and q.message_bytes > q.max_length_bytes):
                if n >= DROP_BUDGET and self.on_defer is not None:
                    self.on_defer(lambda: self._drop_head(q) if not q.deleted and q.limited else None)
                    break
                item = q.pop()
                if item is None:
                    break
                n += 1
                seq, msg, _ = item
                q.expiry.pop(seq, None)
                q.delivery_counts.pop(seq, None)
                if q.dlx is not None:
                    msg = self.loaded(q, seq, msg)
                if msg is not None:
                    self.dead_letter(q, msg, "maxlen")
                    self._forget(q, seq, msg)
        finally:
            self._dl_busy = busy
        if not busy and self._dl_work:
            self._dl_drain()

    def _forget(self, q, seq, msg):
        """An entry left the queue without a delivery (dropped, expired, dead-lettered)."""
        if msg.stored and q.durable:
            self.unstore(q, seq, msg)

    def take(self, q: Queue, budgeted: bool = False):
        """The next live entry to deliver: expired ones on the way are dead-lettered; a spilled
        message is read back. `budgeted` (deliveries): None once LOAD_BUDGET messages were read
        back from the store this turn, the queue going on at the next one."""
        while True:
            item = q.pop()
            if item is None:
                return None
            if budgeted and item[2] and type(item[1]) is Spilled and item[1].off is None and \
                    self._loads >= LOAD_BUDGET:
                q.unpop(*item)
                if self._deferred is None:
                    self._deferred = set()
                self._deferred.add(q)
                return None
            if q.expiry:
                seq = item[0]
                e = q.expiry.pop(seq, None)
                if e is not None:
                    exp = e[0]
                    if exp <= time.time() * 1000:
                        msg = item[1]
                        if q.dlx is not None:
                            msg = self.loaded(q, seq, msg)
                        if msg is not None:
                            self.dead_letter(q, msg, "expired")
                            self._forget(q, seq, msg)
                        continue
                    q.held_expiry[seq] = exp
            if item[2] and type(item[1]) is Spilled:
                seq, stub, red = item
                msg = self.loaded(q, seq, stub)
                if msg is None:
                    continue
                item = (seq, msg, red)
            return item

    _loads = 0            # spilled messages read back from the store this loop turn
    _loads_reset = False  # the count's reset at the next turn is scheduled
    _deferred = None      # queues whose deliveries wait for that reset

    def loaded(self, q: Queue, seq: int, msg):
        """The message of an entry, read back if it was spilled; None if it cannot be (logged,
        and the entry forgotten so that it does not come back)."""
        if type(msg) is not Spilled:
            return msg
        try:
            m = msg.load()
        except Exception:
            m = None
            upkeep.failed("reading back a spilled message", log, f"queue '{q.name}' in vhost '{q.vhost}'")
        if msg.off is None and self.on_defer is not None:
            self._loads += 1
            if not self._loads_reset:
                self._loads_reset = True
                self.on_defer(self._reset_loads)
        if m is None:
            log.error("queue '%s' in vhost '%s': message %d could not be read back; it is dropped",
                      q.name, q.vhost, msg.id)
            self._forget(q, seq, msg)
        return m

    def _reset_loads(self):
        self._loads = 0
        self._loads_reset = False
        waiting, self._deferred = self._deferred, None
        for q in waiting or ():
            self.mark_dirty(q)
        upkeep.guard("deliveries", self.run_dirty, logger=log)

    # the consumer to give q's next message to, or None: round-robin over the consumers with room,
    # highest priority first; O(1) amortised per delivery (fastpath.pick_consumer)
    _pick_consumer = fastpath.pick_consumer

    def _pick_by_priority(self, q: Queue):
        rotation = q.rotation
        prios = rotation.prios
        levels = rotation.levels
        while prios:
            ring = levels[-prios[0]]
            for c in ring:
                break
            if c.channel.can_deliver(c):
                if len(ring) > 1:
                    ring.move_to_end(c)
                return c
            self._park(q, c)
        return None

    @staticmethod
    def _park(q: Queue, c):
        """c cannot take a message now: park it, noting what it waits for (mirrors Channel.can_deliver)."""
        ch = c.channel
        conn = ch.conn
        if not conn.writable or conn.out_size > conn.out_limit or not ch.flow_active:
            kind = PARKED_CHANNEL
        elif not c.no_ack and c.prefetch and c.unacked >= c.prefetch:
            kind = PARKED_OWN
        elif ch.global_prefetch and len(ch.unacked) >= ch.global_prefetch:
            kind = PARKED_GLOBAL
        else:
            kind = PARKED_CHANNEL         # any other reason: back at the channel's next kick
        q.park(c, kind)
        if kind != PARKED_OWN:
            ch.revisit[id(q)] = q

    def consumer_room(self, c):
        """One of c's deliveries was settled: if it was parked for its own prefetch, it takes part
        in its queue's round-robin again."""
        q = c.queue
        if q.unpark(c):
            self.mark_dirty(q)

    def channel_room(self, ch):
        """Room may have appeared for a channel's consumers (Channel.kick: an ack under a global
        prefetch, basic.qos, flow, the connection's output drained): those parked for the channel
        go back to their queues' rotations, and those queues are looked at. Under a global prefetch
        only as many per queue as it has room for go back (the rest stay parked, in order), so an
        ack costs O(queues the channel waits on), not O(its consumers). Stream queues serve their
        consumers by a walk of their own and are only looked at again."""
        revisit = ch.revisit
        if not revisit:
            return
        conn = ch.conn
        if not conn.writable or conn.out_size > conn.out_limit or not ch.flow_active:
            return
        room = None
        if ch.global_prefetch:
            room = ch.global_prefetch - len(ch.unacked)
        mark = self.mark_dirty
        for key, q in list(revisit.items()):
            if q.deleted or ch not in q.by_channel:
                del revisit[key]
                continue
            if q.kind == "stream":
                mark(q)
                continue
            back, left = q.unpark_channel(ch, room if room is None or room > 0 else 0)
            if not left:
                del revisit[key]
            if back:
                mark(q)

    # deliver ready messages to consumers with room, round-robin (core/fastpath.py)
    dispatch = fastpath.dispatch

    def run_dirty(self):
        while self.dirty:
            dirty = self.dirty
            self.dirty = {}
            for q in dirty.values():
                self.dispatch(q)

    def mark_dirty(self, q: Queue):
        if q.consumers and q.message_count:
            self.dirty[id(q)] = q

    def get_message(self, q: Queue):
        """basic.get: the head of the queue as (seq, message, redelivered), or None."""
        q.last_used = time.monotonic()
        if q.kind == "stream":
            raise ChannelError(f"queue '{q.name}' in vhost '{q.vhost}' does not support basic.get",
                               E.NOT_IMPLEMENTED if False else E.PRECONDITION_FAILED)
        return self.take(q)

    def reject(self, q: Queue, seq: int, msg: Message):
        """A delivery was rejected or nacked without requeue: dead-letter it if the queue says so."""
        q.held_expiry.pop(seq, None)
        q.delivery_counts.pop(seq, None)
        if not q.deleted and q.dlx is not None:
            m = self.loaded(q, seq, msg)
            if m is None:
                return
            self.dead_letter(q, m, "rejected")
        elif not q.deleted:
            self.counters.death(q, "rejected")
        self._forget(q, seq, msg)

    def validate_consumer_arguments(self, q: Queue, args: dict):
        if args and "x-priority" in args:
            v = args["x-priority"]
            if isinstance(v, bool) or not isinstance(v, int):
                raise ChannelError(f"invalid arg 'x-priority' for {_q(q.name)} in vhost '{q.vhost}': "
                                   f'"expected integer, got {_type_name(v)}"', E.PRECONDITION_FAILED)
        if q.kind == "stream":
            q.validate_consumer(args)

    @staticmethod
    def consumer_priority(args: dict) -> int:
        v = args.get("x-priority", 0) if args else 0
        return v if isinstance(v, int) and not isinstance(v, bool) else 0

    def consumer_added(self, q: Queue, c):
        """Hook for queue features that react to consumers."""
        q.last_used = time.monotonic()
        if q.kind == "stream":
            q.consumer_added(c)
            c.channel.revisit[id(q)] = q     # looked at again whenever the channel gets room

    def consumer_removed(self, q: Queue, c):
        q.last_used = time.monotonic()
        self.mark_dirty(q)
        if q.expires is not None and not q.consumers:
            self.xexp_schedule(q)

    # a delivery was acknowledged: the queue no longer holds the message
    settle = fastpath.settle

    def requeue(self, q: Queue, seq: int, msg: Message):
        if q.deleted:
            self._drop_messages(q, [msg])
            return
        if q.kind == "stream":
            return
        if q.kind == "quorum" or q.delivery_limit is not None:
            n = q.delivery_counts.get(seq, 0) + 1
            limit = q.delivery_limit
            if limit is None and q.kind == "quorum":
                limit = self.config.quorum_delivery_limit
            if limit is not None and limit >= 0 and n > limit:
                q.delivery_counts.pop(seq, None)
                q.held_expiry.pop(seq, None)
                if q.dlx is not None:
                    m = self.loaded(q, seq, msg)
                    if m is None:
                        return
                    self.dead_letter(q, m, "delivery_limit")
                else:
                    self.counters.death(q, "delivery_limit")
                self._forget(q, seq, msg)
                return
            q.delivery_counts[seq] = n
        exp = q.held_expiry.pop(seq, None) if q.held_expiry else None
        q.requeue(seq, msg, exp)
        if exp is not None:
            due = q.ttl_due
            if due is None or exp < due:
                self.ttl_schedule(q, exp)
        q.redelivered_count += 1
        self.mark_dirty(q)

    # ------------------------------------------------------------------ memory of records
    def restore_entry(self, q: Queue, seq: int, msg: Message, redelivered: bool, expires):
        """An entry recovered from the store goes back in its place (paged out if the queue is
        over its budget; a redelivered one spilled past it); `expires`: its deadline or None."""
        q.restore(seq, msg, redelivered, expires)
        if expires is not None:
            self.ttl_queues[id(q)] = q
        if redelivered and len(q.returned) - q.returned_stubs >= SPILL_STEP:
            self.check_returned(q)

    def _stubs(self, q: Queue, entries: list) -> list:
        """Stubs for [(seq, message)] of q whose messages leave memory."""
        if q.kind == "stream":
            return [dropped(m, q.spilled) for _s, m in entries]
        store = self.store if self.store.durable else None
        if self.staged:
            self.save_staged()      # a stub of a stored message is read back from the store
        return spill(entries, PAGING["dir"], store, q.durable, q.spilled)

    def check_returned(self, q: Queue):
        """After requeues: if q's in-memory entries are over its budget, page out the tail of its
        ready messages, then spill requeued ones (the last to be delivered again first), down to
        nine tenths of the budget so that the next requeues do not each write one."""
        if not PAGING["dir"] or q.kind == "stream" or q.deleted:
            return
        if q.ram_count() <= q.cap_count and q.ram_bytes() <= q.cap_bytes:
            return
        keep_n = q.cap_count * 9 // 10
        keep_b = q.cap_bytes * 9 // 10
        try:
            q.page_out(keep_n, keep_b)
            over_n = q.ram_count() - keep_n
            over_b = q.ram_bytes() - keep_b
            if over_n <= 0 and over_b <= 0:
                return
            heap = q.returned
            picks = []
            for i in range(len(heap) - 1, -1, -1):
                if over_n <= 0 and over_b <= 0:
                    break
                e = heap[i]
                m = e[-1]
                if type(m) is Spilled:
                    continue
                picks.append(i)
                over_n -= 1
                over_b -= len(m.body)
            if not picks:
                return
            stubs = self._stubs(q, [(heap[i][-2], heap[i][-1]) for i in picks])
            for i, stub in zip(picks, stubs):
                e = heap[i]
                heap[i] = e[:-1] + (stub,)        # the same keys: the heap stays a heap
                q.returned_stubs += 1
                q.returned_stub_bytes += stub.size
                ex = q.expiry.get(e[-2])
                if ex is not None:
                    q.expiry[e[-2]] = (ex[0], stub)
        except Exception:
            upkeep.failed("paging out requeued messages", log, f"queue '{q.name}' in vhost '{q.vhost}'")

    def after_flush(self, conn):
        """Once per connection per loop turn, after its output went out: channels that delivered
        SPILL_STEP messages since their last look have their new unacknowledged records looked at."""
        for ch in conn.channels.values():
            if ch.next_tag - ch.spill_mark >= SPILL_STEP:
                self.examine_unacked(ch)

    def examine_unacked(self, ch):
        """The unacknowledged deliveries a channel made since it was last looked at: where their
        queue holds more in memory than its budget (its in-memory ready entries, plus its
        unacknowledged messages still in memory, their bytes estimated from their mean size), the
        newest of them leave memory. A record keeps tag, queue, seq and a stub (paging.STUB_BYTES).

        Cheap first: the queues the channel consumes from are checked (O(1) each, at most
        CHECK_QUEUES); only if one is over its budget are the new records walked (newest first,
        so the walk costs what was delivered since the last look)."""
        mark = ch.spill_mark
        ch.spill_mark = ch.next_tag
        unacked = ch.unacked
        if not unacked or not PAGING["dir"]:
            return
        newest = unacked[next(reversed(unacked))]
        sample = newest.msg.size
        if len(ch.consumers) <= CHECK_QUEUES and not _over_budget(newest.queue, sample) and \
                not any(_over_budget(c.queue, sample) for c in ch.consumers.values()):
            return
        new = {}
        for tag in reversed(unacked):
            if tag <= mark:
                break
            u = unacked[tag]
            if type(u.msg) is not Spilled:
                e = new.get(id(u.queue))
                if e is None:
                    e = new[id(u.queue)] = (u.queue, [])
                e[1].append(u)
        for q, recs in new.values():
            try:
                self._spill_unacked(q, recs)
            except Exception:
                upkeep.failed("paging out unacknowledged messages", log, f"queue '{q.name}' in vhost '{q.vhost}'")

    def _spill_unacked(self, q: Queue, recs: list):
        total = 0
        for u in recs:
            total += len(u.msg.body)
        avg = max(q.unacked_avg, total // len(recs))
        ram_unacked = q.unacked - (q.spilled.n - q.returned_stubs)
        over_n = q.ram_count() + ram_unacked - q.cap_count
        over_b = q.ram_bytes() + ram_unacked * avg - q.cap_bytes
        if over_n <= 0 and over_b <= 0:
            return
        picks = []
        for u in recs:
            if over_n <= 0 and over_b <= 0:
                break
            picks.append(u)
            over_n -= 1
            over_b -= len(u.msg.body)
        stubs = self._stubs(q, [(u.seq, u.msg) for u in picks])
        for u, stub in zip(picks, stubs):
            u.msg = stub
