"""Queues at work: enqueue (with TTL and length limits), dispatch to consumers round-robin,
basic.get, and what an ack, a reject or a requeue does to a queue.

Part of the engine (see broker.py): methods of Broker, split out by concern.
"""
from __future__ import annotations

import logging
import time

from ..amqp import errors as E
from ..amqp.errors import ChannelError
from ..model.message import Message
from ..model.queue import PARKED_CHANNEL, PARKED_GLOBAL, PARKED_OWN, Queue
import heapq

from .arguments import MAX_EXPIRY, _q, _type_name

log = logging.getLogger("usagi.broker")


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
                        c.channel.deliver(c, q, q.next_seq(), msg, False)
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
        seq = q.push(msg)
        q.expiry[seq] = exp
        heapq.heappush(q.deadlines, (exp, seq, msg))
        self.ttl_queues[id(q)] = q
        if q.limited:
            self._drop_head(q)
        if q.consumers:
            self.dirty[id(q)] = q
        return True

    def enqueue_plain(self, q: Queue, msg: Message) -> bool:
        """A message with no TTL: straight to a consumer with room if the queue is empty (True),
        else onto the queue (False). The publish hot path calls this directly for plain queues."""
        if msg.scan.delivery_mode == 2 and q.durable and self.store.durable:
            self.persist(q, msg)
        if q.consumers and not q.ready and not q.returned and not q.paged:
            c = self._pick_consumer(q)
            if c is not None:
                c.channel.deliver(c, q, q.next_seq(), msg, False)
                return True
        q.push(msg)
        if q.consumers:
            self.dirty[id(q)] = q
        return False

    def persist(self, q: Queue, msg: Message, expires: int | None = None):
        """Record a persistent message's entry in a durable queue (the seq it is about to get),
        with the time it expires at (ms since the epoch) if it has a TTL."""
        if not msg.stored:
            self.store.add_message(msg.id, msg.exchange, msg.routing_key, msg.props, msg.body)
            msg.stored = True
        msg.refs += 1
        self.store.enqueue(q.vhost, q.name, q.seq + 1, msg.id, expires)

    def _full(self, q, msg) -> bool:
        if q.max_length is not None and q.message_count >= q.max_length:
            return True
        if q.max_length_bytes is not None and q.message_bytes + len(msg.body) > q.max_length_bytes:
            return True
        return False

    def _drop_head(self, q):
        while (q.max_length is not None and q.message_count > q.max_length) or \
                (q.max_length_bytes is not None and q.message_bytes > q.max_length_bytes):
            item = q.pop()
            if item is None:
                break
            seq, msg, _ = item
            q.expiry.pop(seq, None)
            q.delivery_counts.pop(seq, None)
            self.dead_letter(q, msg, "maxlen")
            self._forget(q, seq, msg)

    def _forget(self, q, seq, msg):
        """An entry left the queue without a delivery (dropped, expired, dead-lettered)."""
        if msg.stored and q.durable:
            self.store.dequeue(q.vhost, q.name, seq, msg.id)

    def take(self, q: Queue):
        """The next live entry to deliver: expired ones on the way are dead-lettered."""
        while True:
            item = q.pop()
            if item is None:
                return None
            if q.expiry:
                seq = item[0]
                exp = q.expiry.pop(seq, None)
                if exp is not None:
                    if exp <= time.time() * 1000:
                        self.dead_letter(q, item[1], "expired")
                        self._forget(q, seq, item[1])
                        continue
                    q.held_expiry[seq] = exp
            return item

    def _pick_consumer(self, q: Queue):
        """The consumer to give q's next message to, or None: round-robin over the consumers with
        room, highest priority first. One that comes round without room is parked (out of the
        rotation until it has room, see Queue.park), so each is looked at once per time it fills
        up, not once per message: O(1) amortised per delivery, whatever the number of consumers."""
        if q.consumer_priorities:
            return self._pick_by_priority(q)
        ring = q.ring
        while ring:
            for c in ring:
                break
            if c.channel.can_deliver(c):
                if len(ring) > 1:
                    ring.move_to_end(c)
                return c
            self._park(q, c)
        return None

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

    def dispatch(self, q: Queue):
        """Deliver ready messages to consumers with room, round-robin."""
        if q.deleted:
            return
        if q.kind == "stream":
            q.dispatch(self)
            return
        while q.consumers and q.message_count:
            c = self._pick_consumer(q)
            if c is None:
                return
            item = self.take(q)
            if item is None:
                return
            seq, msg, redelivered = item
            c.channel.deliver(c, q, seq, msg, redelivered)

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
        if not q.deleted:
            self.dead_letter(q, msg, "rejected")
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

    def settle(self, q: Queue, seq: int, msg: Message):
        """A delivery was acknowledged: the queue no longer holds the message."""
        if q.kind == "stream":
            q.acked += 1
            self.mark_dirty(q)
            return
        if q.held_expiry:
            q.held_expiry.pop(seq, None)
        if q.delivery_counts:
            q.delivery_counts.pop(seq, None)
        if msg.stored and q.durable:
            self.store.dequeue(q.vhost, q.name, seq, msg.id)
        q.acked += 1

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
                self.dead_letter(q, msg, "delivery_limit")
                self._forget(q, seq, msg)
                return
            q.delivery_counts[seq] = n
        q.requeue(seq, msg)
        exp = q.held_expiry.pop(seq, None) if q.held_expiry else None
        if exp is not None:
            q.expiry[seq] = exp
            heapq.heappush(q.deadlines, (exp, seq, msg))
            self.ttl_queues[id(q)] = q
        q.redelivered_count += 1
        self.mark_dirty(q)
