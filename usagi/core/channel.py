"""One AMQP channel: content assembly, publishing, deliveries, acks, confirms and transactions.

Sans-IO like the connection: frames come in through `on_publish`/`on_header`/`on_body`/`handle`,
frames go out through the connection's output buffer. The broker calls `deliver` when a queue
hands this channel a message for one of its consumers.
"""
from __future__ import annotations

import logging
from collections import deque

from ..amqp import errors as E
from ..amqp import methods as M
from ..amqp import properties as P
from ..amqp.errors import AMQPError, ChannelError, ConnectionError_
from ..model import deadletter as DL
from ..model.message import Message
from . import access
from .arguments import parse_expiration
from .channel_common import (CLOSING, OPEN, _H, _HHQ, _RETURN_HEAD, _shortstr)
from .handlers.basic import BasicHandlers
from .handlers.channel import ChannelClassHandlers
from .handlers.exchange import ExchangeHandlers
from .handlers.queue import QueueHandlers
from .handlers.tx import TxHandlers
from .hot import fastpath
from .replyto import ReplyToMixin

log = logging.getLogger("usagi.channel")


class Channel(fastpath.ChannelState, ChannelClassHandlers, ExchangeHandlers, QueueHandlers, BasicHandlers,
              TxHandlers, ReplyToMixin):
    def __init__(self, conn, number: int):
        self.conn = conn
        self.broker = conn.broker
        self.number = number
        self.vhost = conn.vhost_obj
        self.user = conn.user
        self.state = OPEN
        # content assembly
        self.content_expected = False
        self.body_expected = False
        self._pub = None             # (exchange, routing_key, route bytes, mandatory)
        self.pub_memo = None         # the last publish method seen on the hot path (fastpath._remember)
        self._props = b""
        self._size = 0
        self._got = 0
        self._parts: list = []
        # consumers and deliveries
        self.consumers: dict = {}    # tag -> Consumer
        self.revisit: dict = {}      # id(queue) -> queue where consumers of this one wait for its room
        self.unacked: dict = {}      # delivery tag -> Unacked, in tag order
        self.next_tag = 0
        self.spill_mark = 0          # next_tag when its unacked records were last looked at (memory)
        self.reply_queue = None      # direct reply-to: the pseudo queue of this channel's consumer
        self.reply_token = None
        self.prefetch_count = 0      # basic.qos global=false: for consumers created afterwards
        self.global_prefetch = 0     # basic.qos global=true: for the whole channel
        self.flow_active = True      # deliveries allowed: channel.flow, and no reply held (below)
        self.last_queue = ""
        # confirms
        self.confirm = False
        self.publish_seq = 0
        self.acks_ready: list = []   # confirm seqs ready to ack
        self.nacks_ready: list = []
        self.waiting = deque()       # [(seq, epoch, message)] waiting for a store commit, in order
        self.early: set = set()      # seqs of `waiting` confirmed already, their messages consumed
        self.confirm_dirty = False
        self.waited_epoch = -1       # the commit epoch this channel last registered to wait on
        # transactions
        self.tx = False
        self.tx_publishes: list = []
        self.tx_acks: list = []      # [(kind, tag, multiple, requeue)]
        # a reply that promises durability, held until the store has committed (reply_after_commit)
        self.held = None             # [method, ...]: this channel's output held back, in order
        self.held_epoch = None       # the commit epoch the held reply waits for
        # caches
        self._x_cache = {}           # exchange name -> exchange (validated per use)
        self._write_ok: set = set()  # exchange names the user may write to
        # statistics
        self.published = 0
        self.delivered = 0           # by basic.consume (delivered_auto of them with automatic acks)
        self.delivered_auto = 0
        self.acked = 0
        self.confirmed = 0
        self.returned = 0            # unroutable: returned (mandatory) or dropped
        self.dropped = 0
        self.redelivered = 0
        self.get_ack = 0             # basic.get: with manual acks, automatic acks, found nothing
        self.get_auto = 0
        self.get_empty = 0
        self.broker.stats["channel_created"] += 1
        self._sizes = self.broker.counters.sizes     # rabbitmq_message_size_bytes (core/counters.py)

    # ------------------------------------------------------------------ errors
    def fail(self, e: AMQPError):
        """A channel-level error: close the channel, or the connection for hard codes."""
        if e.hard or isinstance(e, ConnectionError_):
            raise e
        if self.state == CLOSING:
            return
        log.info("channel %s/%d closed: %s", self.conn.name, self.number, e.reply_text)
        self._send(M.ChannelClose(e.code, e.reply_text, e.class_id, e.method_id))
        self.state = CLOSING
        self.content_expected = self.body_expected = False
        self.release()

    # ------------------------------------------------------------------ publishing
    def on_publish(self, payload):
        if self.state == CLOSING:
            return
        self._pub = fastpath.parse_publish(payload)
        self.content_expected = True
        self.conn.publishing = True

    def on_header(self, payload):
        if self.state == CLOSING:
            return
        self.conn.publishing = True          # content read counts as publishing (a resource alarm blocks it)
        if len(payload) < 14:
            raise E.FrameError("content header frame too short")
        class_id, weight, size = _HHQ.unpack_from(payload, 0)
        if weight != 0:
            raise ConnectionError_("expected content header for class 60, got non content header frame "
                                   "instead", E.UNEXPECTED_FRAME, 60, 40)
        if class_id != 60:
            raise ConnectionError_(f"expected content header for class 60, got one for class {class_id} "
                                   f"instead", E.UNEXPECTED_FRAME, 60, 40)
        self.content_expected = False
        self._props = bytes(payload[12:])
        self._size = size
        self._got = 0
        if size > self.broker.config.max_message_size:
            self._pub = None
            self.fail(ChannelError(f"message size {size} is larger than configured max size "
                                   f"{self.broker.config.max_message_size}", E.PRECONDITION_FAILED, 60, 40))
            return
        if size == 0:
            self._complete(b"")
        else:
            self.body_expected = True
            self._parts = []

    def on_body(self, payload):
        if self.state == CLOSING:
            return
        self.conn.publishing = True
        n = len(payload)
        self._got += n
        if self._got > self._size:
            raise ConnectionError_("content body frame exceeds remaining content size", E.FRAME_ERROR, 60, 40)
        if self._got == self._size:
            self.body_expected = False
            parts = self._parts
            if parts:
                parts.append(payload)
                body = b"".join(parts)
                self._parts = []
            else:
                body = bytes(payload)
            self._complete(body)
        else:
            self._parts.append(bytes(payload))

    # basic.publish with its header and body, all arrived together (the connection's hot path)
    fast_publish = fastpath.publish

    def _complete(self, body: bytes):
        if not isinstance(self._pub, tuple):
            m = self._pub
            raise ConnectionError_("unimplemented method", E.COMMAND_INVALID, m.CLASS_ID, m.METHOD_ID)
        exchange, routing_key, route, bits = self._pub
        self._pub = None
        props = self._props
        broker = self.broker
        try:
            if bits & 2:
                raise ConnectionError_("immediate=true", E.NOT_IMPLEMENTED, 60, 40)
            x = self._x_cache.get(exchange)
            if x is None or x.deleted:
                x = self._publish_target(exchange)
            scan, special = fastpath.scan_props(props)
            if special:
                if scan.expiration is not None:
                    self._check_expiration(scan.expiration)
                if scan.headers_span is not None:
                    bad = DL.cc_type_error(props, scan)
                    if bad is not None:
                        raise ChannelError(bad, E.PRECONDITION_FAILED, 60, 40)
                if scan.reply_to == "amq.rabbitmq.reply-to":
                    props = self._reply_to_props(props, scan)
                    scan = P.scan(props)
            msg = Message(exchange, routing_key, props, body, scan, broker.next_msg_id, route)
            if x.TYPE == "topic" and broker.users.topic_permissions:
                access.check_publish_topics(broker, self.user, self.vhost.name, x, msg)
            if special and scan.user_id is not None and scan.user_id != self.user.name:
                raise ChannelError(f"user_id property set to '{scan.user_id}' but authenticated user was "
                                   f"'{self.user.name}'", E.PRECONDITION_FAILED, 60, 40)
            broker.next_msg_id += 1
        except ChannelError as e:
            e.class_id, e.method_id = 60, 40
            self.fail(e)
            return
        if self.tx:
            self.tx_publishes.append((x, msg, bits & 1))
            return
        self._route_publish(x, msg, bits & 1)

    def _publish_target(self, exchange: str):
        x = access.publish_target(self.broker, self.user, self.vhost, exchange, self._write_ok)
        self._x_cache[exchange] = x
        return x

    @staticmethod
    def _check_expiration(value: str):
        parse_expiration(value)     # RabbitMQ's parse and range (ten years at most); 406 if bad

    def _route_publish(self, x, msg, mandatory):
        broker = self.broker
        rk = msg.routing_key
        if not x.name and msg.scan.headers_span is None and not rk.startswith("amq.rabbitmq.reply-to."):
            x.publish_in += 1
            q = self.vhost.queues.get(rk)
            queues = (q,) if q is not None else ()
        elif rk.startswith("amq.rabbitmq.reply-to.") and x.name == "":
            queues = self._reply_route(msg)
        else:
            queues = broker.route_publish(self.vhost, x, msg)
        self.published += 1
        broker.stats["publish"] += 1
        fastpath.count_size(self._sizes, len(msg.body))
        rejected = False
        if queues:
            x.publish_out += 1
            only = len(queues) == 1
            for q in queues:
                if q is None:
                    continue
                if q.simple and msg.scan.expiration is None:
                    if not broker.enqueue_plain(q, msg, only) and q.consumers:
                        # consumers are behind: let them catch up (credit flow, in effect)
                        self.conn.throttled = True
                elif not broker.enqueue(q, msg):
                    rejected = True
        elif mandatory:
            self._send_return(msg, E.NO_ROUTE, "NO_ROUTE")
            broker.stats["return_unroutable"] += 1
            self.returned += 1
            x.returned += 1
        else:
            broker.stats["drop_unroutable"] += 1
            self.dropped += 1
            x.dropped += 1
        if self.confirm:
            if not rejected and x.TYPE == "x-delayed-message" and broker.store.durable:
                # a delayed message (always kept in the store): confirmed once the commit holding it
                # is on disk
                self.publish_seq += 1
                broker.stats["publish_confirm"] += 1
                self.waiting.append((self.publish_seq, broker.wait_for_commit(self), msg))
            else:
                fastpath.confirm(self, broker, msg, rejected)
        return queues

    def _send_return(self, msg, code, text):
        m = _RETURN_HEAD + _H.pack(code) + _shortstr(text) + msg.route
        self._write_content(m, msg)

    # a method frame with content (deliver, get-ok, return): the stored property and body bytes
    # pass through as received; returns the bytes written
    _write_content = fastpath.write_content

    # ------------------------------------------------------------------ replies after the commit
    def _send(self, method):
        """Send a method of this channel's own (not a confirm), after a held reply if there is one."""
        held = self.held
        if held is not None:
            held.append(method)
        else:
            self.conn.send_method(self.number, method)

    def hold_output(self):
        """Hold what this channel says from now on until the reply to the method being handled is
        out (reply_after_commit): the basic.cancel of its own consumers of a queue it deletes follows
        queue.delete-ok, as RabbitMQ's channel sends them."""
        if self.held is None:
            self.held = []

    def reply_after_commit(self, method, durable=True):
        """Send the reply to a method whose effect the store records (None: a nowait method, which
        gets no reply) once that effect is durable: at once when nothing recorded waits for the
        store, else after the commit that holds it. Meanwhile the connection handles no more input
        and this channel gets no deliveries, so nothing it says afterwards overtakes the reply
        (RabbitMQ's channel blocks on the write the same way). `durable` False: the method wrote
        nothing that must outlive a crash (a transient entity)."""
        held = self.held
        broker = self.broker
        if method is not None and durable and broker.commit_needed():
            self.held = [method] + held if held else [method]
            self.held_epoch = broker.wait_for_commit(self)
            self.flow_active = False
            self.conn.hold_input(self)
            return
        self.held = None
        send = self.conn.send_method
        if method is not None:
            send(self.number, method)
        if held:
            for h in held:
                send(self.number, h)

    @staticmethod
    def _stored(q) -> bool:
        """Whether the store keeps queue `q` (durable and not exclusive)."""
        return q.durable and q.exclusive_owner is None

    def _durable_ends(self, m) -> bool:
        """Whether the exchange-to-exchange binding named by `m` is one the store keeps (both ends
        durable); an end gone (auto-deleted by the unbind) counts, its deletion being recorded."""
        xs = self.vhost.exchanges
        src = xs.get(m.source)
        dst = xs.get(m.destination)
        return src is None or dst is None or (src.durable and dst.durable)

    def _release_held(self, error):
        held, self.held = self.held, None
        self.held_epoch = None
        self.flow_active = True
        conn = self.conn
        if conn.holder is not self:
            return          # the connection closed meanwhile: nobody to tell
        if error is not None:
            # an ok would be a lie: close the connection, as RabbitMQ does when a write crashes the
            # channel (541 INTERNAL_ERROR), and say why (connection_error logs it)
            conn.connection_error(ConnectionError_(f"store commit failed: {error}", E.INTERNAL_ERROR))
            return
        send = conn.send_method
        for h in held:
            send(self.number, h)
        self.kick()
        conn.input_released(self)

    # ------------------------------------------------------------------ confirms
    def on_commit(self, epoch: int, error):
        """The store committed everything recorded up to `epoch` (or failed to)."""
        he = self.held_epoch
        if he is not None and he <= epoch:
            self._release_held(error)
        w = self.waiting
        if not w or w[0][1] > epoch:
            return
        ready = self.nacks_ready if error else self.acks_ready
        early = self.early
        while w and w[0][1] <= epoch:
            seq, _epoch, msg = w.popleft()
            if early and seq in early:
                early.discard(seq)          # consumed and confirmed before its commit
            else:
                msg.confirm = None
                ready.append(seq)
        while early and w and w[0][0] in early:
            early.discard(w.popleft()[0])
        self.confirm_dirty = True
        self.send_confirms()

    def confirm_early(self, seq):
        """Confirm now a publish whose message every queue's consumers have acknowledged (see
        fastpath.confirm_consumed); sent with the next batch of confirms (Broker.send_early_confirms)."""
        if self.state != OPEN:
            return
        w = self.waiting
        if w and w[0][0] == seq:
            w.popleft()
            early = self.early
            while early and w and w[0][0] in early:   # those behind it, confirmed before it
                early.discard(w.popleft()[0])
        else:
            self.early.add(seq)
        self.acks_ready.append(seq)
        if not self.confirm_dirty:
            self.confirm_dirty = True
            broker = self.broker
            broker.early_confirms.append(self)
            if len(broker.early_confirms) == 1 and not broker.flush_pending and broker.on_flush_needed:
                broker.on_flush_needed()     # an ack outside a connection's input (the HTTP API's get)

    def send_confirms(self):
        self.confirm_dirty = False
        if self.state != OPEN:
            self.acks_ready.clear()
            self.nacks_ready.clear()
            return
        send = self.conn.send_method
        num = self.number
        if self.nacks_ready:
            for tag in self.nacks_ready:
                send(num, M.BasicNack(tag, False, False))
            self.nacks_ready = []
        acks = self.acks_ready
        if not acks:
            return
        self.acks_ready = []
        limit = self.waiting[0][0] if self.waiting else None
        if limit is None:
            # nothing waits: every seq up to the highest is confirmed. The list is not always in
            # order (a publish consumed early, behind one confirmed later), so the highest, not
            # the last
            send(num, M.BasicAck(max(acks) if len(acks) > 1 else acks[0], len(acks) > 1))
            self.broker.stats["confirm"] += len(acks)
            self.confirmed += len(acks)
            return
        below = [t for t in acks if t < limit]
        above = [t for t in acks if t > limit]
        if below:
            send(num, M.BasicAck(max(below), len(below) > 1))
        for t in above:
            send(num, M.BasicAck(t, False))
        self.broker.stats["confirm"] += len(acks)
        self.confirmed += len(acks)

    # ------------------------------------------------------------------ deliveries
    def can_deliver(self, c) -> bool:
        conn = self.conn
        if not conn.writable or conn.out_size > conn.out_limit or not self.flow_active:
            return False
        if c.no_ack:
            return True
        if c.prefetch and c.unacked >= c.prefetch:
            return False
        if self.global_prefetch and len(self.unacked) >= self.global_prefetch:
            return False
        return True

    # a delivery to consumer c of this channel (the broker calls it; core/fastpath.py)
    deliver = fastpath.deliver

    def kick(self):
        """Room may have appeared for this channel's consumers (see Broker.channel_room)."""
        self.broker.channel_room(self)

    def consumer_cancelled_by_server(self, c):
        """The queue went away: drop the consumer and tell the client if it understands."""
        if self.consumers.get(c.tag) is c:
            del self.consumers[c.tag]
            if self.state == OPEN and self.conn.capabilities.get("consumer_cancel_notify"):
                self._send(M.BasicCancel(c.tag, True))

    # ------------------------------------------------------------------ acks
    # the unacknowledged deliveries an ack, nack or reject names, taken out; and what is done with
    # them (requeue None: ack; True: back to the queue; False: discard or dead-letter)
    _take = fastpath.take
    _settle = fastpath.settle_items

    def requeue_all(self):
        items = list(self.unacked.values())
        self.unacked.clear()
        # requeue newest first so that each lands before the ones delivered after it
        self._settle(items, True)

    # ------------------------------------------------------------------ teardown
    def release(self):
        """The channel is closing or gone: cancel consumers, requeue unacked messages."""
        for c in list(self.consumers.values()):
            self._remove_consumer(c)
        self.consumers.clear()
        if self.unacked:
            self.requeue_all()
        self.tx_publishes.clear()
        self.tx_acks.clear()
        for w in self.waiting:
            w[2].confirm = None
        self.waiting.clear()
        self.early.clear()

    def _remove_consumer(self, c):
        q = c.queue
        if q is self.reply_queue:
            self._drop_reply_consumer()
            return
        q.remove_consumer(c)
        self.broker.consumer_removed(q, c)
        if q.auto_delete and not q.consumers and q.had_consumer and not q.deleted:
            self.broker.delete_queue(q)

    # ------------------------------------------------------------------ methods
    def handle(self, m):
        if self.state == CLOSING:
            if m.INDEX == M.ChannelCloseOk.INDEX:
                self.conn.channel_closed(self)
            elif m.INDEX == M.ChannelClose.INDEX:
                self.conn.send_method(self.number, M.ChannelCloseOk())
                self.conn.channel_closed(self)
            return
        h = _HANDLERS.get(m.INDEX)
        if h is None:
            if m.HAS_CONTENT:
                # RabbitMQ reads the content of a method it will refuse, then refuses it
                self._pub = m
                self.content_expected = True
                return
            raise ConnectionError_("unimplemented method", E.COMMAND_INVALID, m.CLASS_ID, m.METHOD_ID)
        try:
            h(self, m)
        except ChannelError as e:
            if not e.class_id:
                e.class_id, e.method_id = m.CLASS_ID, m.METHOD_ID
            if self.held is not None and self.held_epoch is None:
                self.reply_after_commit(None)       # what the failed method held back goes first
            self.fail(e)
        except ConnectionError_ as e:
            if not e.class_id:
                e.class_id, e.method_id = m.CLASS_ID, m.METHOD_ID
            raise

    def reply(self, method):
        self.conn.send_method(self.number, method)


def _build_handlers():
    table = {}
    for cls in M.METHODS.values():
        name = cls.NAME.replace(".", "_").replace("-", "_")
        fn = getattr(Channel, name, None)
        if fn is not None:
            table[cls.INDEX] = fn
    return table


_HANDLERS = _build_handlers()
