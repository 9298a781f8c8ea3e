"""One AMQP channel: content assembly, publishing, deliveries, acks, confirms and transactions.

Sans-IO like the connection: frames come in through `on_publish`/`on_header`/`on_body`/`handle`,
frames go out through the connection's output buffer. The broker calls `deliver` when a queue
hands this channel a message for one of its consumers.
"""
from __future__ import annotations

import logging
import re
import struct

from ..amqp import errors as E
from ..amqp import methods as M
from ..amqp import properties as P
from ..amqp.errors import AMQPError, ChannelError, ConnectionError_
from ..amqp.frames import FRAME_OVERHEAD
from ..model.message import Message
from ..model.queue import Consumer, Queue
from .deadletter import with_header
from ..model.util import gen_name

log = logging.getLogger("usagi.channel")

_Q = struct.Struct(">Q")
_QB = struct.Struct(">QB")
_INTEGER = re.compile(r"^[+-]?[0-9]+\Z")
_SCANS: dict = {}     # content-header property bytes -> (Scan, needs checks); producers repeat them
_FH = struct.Struct(">BHI")
_HHQ = struct.Struct(">HHQ")
_H = struct.Struct(">H")
_END = b"\xce"
_DELIVER_HEAD = b"\x00\x3c\x00\x3c"
_GET_OK_HEAD = b"\x00\x3c\x00\x47"
_RETURN_HEAD = b"\x00\x3c\x00\x32"
_REDELIVERED = (b"\x00", b"\x01")

OPEN, CLOSING = 0, 1


def _shortstr(s: str) -> bytes:
    b = s.encode("utf-8", "surrogateescape")
    return bytes((len(b),)) + b


def default_exchange_error():
    return ChannelError("operation not permitted on the default exchange", E.ACCESS_REFUSED)


class Unacked:
    __slots__ = ("tag", "queue", "seq", "msg", "consumer")

    def __init__(self, tag, queue, seq, msg, consumer):
        self.tag = tag
        self.queue = queue
        self.seq = seq
        self.msg = msg
        self.consumer = consumer


class Channel:
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
        self._props = b""
        self._size = 0
        self._got = 0
        self._parts: list = []
        # consumers and deliveries
        self.consumers: dict = {}    # tag -> Consumer
        self.unacked: dict = {}      # delivery tag -> Unacked, in tag order
        self.next_tag = 0
        self.reply_queue = None      # direct reply-to: the pseudo queue of this channel's consumer
        self.reply_token = None
        self.prefetch_count = 0      # basic.qos global=false: for consumers created afterwards
        self.global_prefetch = 0     # basic.qos global=true: for the whole channel
        self.flow_active = True      # channel.flow from the client
        self.last_queue = ""
        # confirms
        self.confirm = False
        self.publish_seq = 0
        self.acks_ready: list = []   # confirm seqs ready to ack
        self.nacks_ready: list = []
        self.waiting: list = []      # [(seq, epoch)] waiting for a store commit, in order
        self.confirm_dirty = False
        # transactions
        self.tx = False
        self.tx_publishes: list = []
        self.tx_acks: list = []      # [(kind, tag, multiple, requeue)]
        self.tx_commit_epoch = None
        # caches
        self._x_cache = {}           # exchange name -> exchange (validated per use)
        self._write_ok: set = set()  # exchange names the user may write to
        # statistics
        self.published = 0
        self.delivered = 0
        self.acked = 0

    # ------------------------------------------------------------------ errors
    def fail(self, e: AMQPError):
        """A channel-level error: close the channel, or the connection for hard codes."""
        if e.hard or isinstance(e, ConnectionError_):
            raise e
        if self.state == CLOSING:
            return
        log.info("channel %s/%d closed: %s", self.conn.name, self.number, e.reply_text)
        self.conn.send_method(self.number, M.ChannelClose(e.code, e.reply_text, e.class_id, e.method_id))
        self.state = CLOSING
        self.content_expected = self.body_expected = False
        self.release()

    # ------------------------------------------------------------------ publishing
    def on_publish(self, payload):
        if self.state == CLOSING:
            return
        self._pub = _parse_publish(payload)
        self.content_expected = True
        self.conn.publishing = True

    def on_header(self, payload):
        if self.state == CLOSING:
            return
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

    def fast_publish(self, payload, props, body):
        """basic.publish with its header and body, all arrived together (the connection's hot path)."""
        self.conn.publishing = True
        self._pub = _parse_publish(payload)
        self._props = props
        self._complete(body)

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
            cached = _SCANS.get(props)
            if cached is None:
                scan = P.scan(props)
                special = scan.user_id is not None or scan.expiration is not None or scan.reply_to is not None
                if len(props) <= 96:
                    if len(_SCANS) >= 4096:
                        _SCANS.clear()
                    _SCANS[props] = (scan, special)
            else:
                scan, special = cached
            if special:
                if scan.user_id is not None and scan.user_id != self.user.name:
                    raise ChannelError(f"user_id property set to '{scan.user_id}' but authenticated user was "
                                       f"'{self.user.name}'", E.PRECONDITION_FAILED, 60, 40)
                if scan.expiration is not None:
                    self._check_expiration(scan.expiration)
                if scan.reply_to == "amq.rabbitmq.reply-to":
                    props = self._reply_to_props(props, scan)
                    scan = P.scan(props)
            if x.TYPE == "topic" and broker.users.topic_permissions:
                self.check_topic(x, routing_key, "write")
            msg = Message(exchange, routing_key, props, body, scan, broker.next_msg_id, route)
            broker.next_msg_id += 1
        except ChannelError as e:
            e.class_id, e.method_id = 60, 40
            self.fail(e)
            return
        if self.tx:
            self.tx_publishes.append((x, msg, bits & 1))
            return
        self._route_publish(x, msg, bits & 1)

    def check_topic(self, x, routing_key: str, kind: str):
        """Topic permissions (RabbitMQ's topic authorisation): on topic exchanges the routing key
        must match the user's write (publish) or read (bind) pattern for that exchange, if any."""
        p = self.broker.users.topic_permissions.get((self.user.name, self.vhost.name, x.name))
        if p is None:
            return
        pattern = (p.get(kind) or "").replace("{username}", re.escape(self.user.name)) \
            .replace("{vhost}", re.escape(self.vhost.name))
        try:
            ok = re.search(pattern or "^$", routing_key) is not None
        except re.error:
            ok = False
        if not ok:
            raise ChannelError(f"access to topic '{routing_key}' in exchange '{x.name}' in vhost "
                               f"'{self.vhost.name}' refused for user '{self.user.name}'", E.ACCESS_REFUSED)

    def _publish_target(self, exchange: str):
        if exchange not in self._write_ok:
            self.broker.check_access(self.user, self.vhost.name, "write", "exchange", exchange or "amq.default")
            self._write_ok.add(exchange)
        x = self.vhost.exchanges.get(exchange)
        if x is None:
            raise ChannelError(f"no exchange '{exchange}' in vhost '{self.vhost.name}'", E.NOT_FOUND)
        if x.internal:
            raise ChannelError(f"cannot publish to internal exchange '{exchange}' in vhost "
                               f"'{self.vhost.name}'", E.ACCESS_REFUSED)
        self._x_cache[exchange] = x
        return x

    @staticmethod
    def _check_expiration(value: str):
        if not _INTEGER.match(value):
            raise ChannelError(f"invalid expiration '{value}': no_integer", E.PRECONDITION_FAILED)
        if int(value) < 0:
            raise ChannelError(f"invalid expiration '{value}': {{value_negative,{int(value)}}}",
                               E.PRECONDITION_FAILED)

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
        rejected = False
        if queues:
            x.publish_out += 1
            for q in queues:
                if q is None:
                    continue
                if q.simple and msg.scan.expiration is None:
                    if not broker.enqueue_plain(q, msg) and q.consumers:
                        # consumers are behind: let them catch up (credit flow, in effect)
                        self.conn.throttled = True
                elif not broker.enqueue(q, msg):
                    rejected = True
        elif mandatory:
            self._send_return(msg, E.NO_ROUTE, "NO_ROUTE")
            broker.stats["return_unroutable"] += 1
        else:
            broker.stats["drop_unroutable"] += 1
        if self.confirm:
            self.publish_seq += 1
            if rejected:
                self.nacks_ready.append(self.publish_seq)
                self.confirm_dirty = True
            elif msg.stored:
                epoch = broker.wait_for_commit(self)
                self.waiting.append((self.publish_seq, epoch))
            else:
                self.acks_ready.append(self.publish_seq)
                self.confirm_dirty = True
        return queues

    def _send_return(self, msg, code, text):
        m = _RETURN_HEAD + _H.pack(code) + _shortstr(text) + msg.route
        self._write_content(m, msg)

    def _write_content(self, method_payload: bytes, msg) -> int:
        """Write a method frame with content (deliver, get-ok, return): the stored property and
        body bytes pass through as received. Returns the bytes written."""
        num = self.number
        body = msg.body
        props = msg.props
        size = len(body)
        conn = self.conn
        chunk = conn.frame_max - FRAME_OVERHEAD
        if 0 < size <= chunk:
            # the common case: one write of one method, one header and one body frame
            data = b"".join((_FH.pack(1, num, len(method_payload)), method_payload, _END,
                             _FH.pack(2, num, 12 + len(props)), _HHQ.pack(60, 0, size), props, _END,
                             _FH.pack(3, num, size), body, _END))
            if conn.closed:
                return 0
            if not conn.out:
                self.broker.want_flush(conn)
            conn.out.append(data)
            return len(data)
        head = (_FH.pack(1, num, len(method_payload)), method_payload, _END,
                _FH.pack(2, num, 12 + len(props)), _HHQ.pack(60, 0, size), props, _END)
        if not size:
            data = b"".join(head)
            conn.write(data)
            return len(data)
        parts = list(head)
        mv = memoryview(body)
        for i in range(0, size, chunk):
            piece = mv[i:i + chunk]
            parts += (_FH.pack(3, num, len(piece)), piece, _END)
        conn.write_parts(parts)
        return size + len(props) + 64

    # ------------------------------------------------------------------ confirms
    def on_commit(self, epoch: int, error):
        """The store committed everything recorded up to `epoch` (or failed to)."""
        if self.tx_commit_epoch is not None and self.tx_commit_epoch <= epoch:
            self.tx_commit_epoch = None
            if self.state == OPEN:
                self.conn.send_method(self.number, M.TxCommitOk())
        w = self.waiting
        i = 0
        while i < len(w) and w[i][1] <= epoch:
            (self.nacks_ready if error else self.acks_ready).append(w[i][0])
            i += 1
        if i:
            del w[:i]
            self.confirm_dirty = True
            self.send_confirms()

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
            top = acks[-1] if len(acks) == 1 or acks[-1] >= acks[0] else max(acks)
            send(num, M.BasicAck(top, len(acks) > 1))
            self.broker.stats["confirm"] += len(acks)
            return
        below = [t for t in acks if t < limit]
        above = [t for t in acks if t > limit]
        if below:
            send(num, M.BasicAck(max(below), len(below) > 1))
        for t in above:
            send(num, M.BasicAck(t, False))
        self.broker.stats["confirm"] += len(acks)

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

    def deliver(self, c, q, seq, msg, redelivered):
        self.next_tag = tag = self.next_tag + 1
        m = c.prefix + _QB.pack(tag, redelivered) + msg.route
        if redelivered and q.delivery_counts and seq in q.delivery_counts:
            self.conn.out_size += self._write_content(m, _with_delivery_count(msg, q.delivery_counts[seq]))
        else:
            self.conn.out_size += self._write_content(m, msg)
        q.delivered += 1
        self.delivered += 1
        if c.no_ack:
            if msg.stored or q.held_expiry or q.delivery_counts or q.kind == "stream":
                self.broker.settle(q, seq, msg)
            else:
                q.acked += 1
        else:
            self.unacked[tag] = Unacked(tag, q, seq, msg, c)
            c.unacked += 1
            q.unacked += 1
            if msg.stored and q.durable:
                self.broker.store.mark_delivered(q.vhost, q.name, seq)

    def kick(self):
        """Room may have appeared for this channel's consumers."""
        mark = self.broker.mark_dirty
        for c in self.consumers.values():
            mark(c.queue)

    def consumer_cancelled_by_server(self, c):
        """The queue went away: drop the consumer and tell the client if it understands."""
        if self.consumers.get(c.tag) is c:
            del self.consumers[c.tag]
            if self.state == OPEN and self.conn.capabilities.get("consumer_cancel_notify"):
                self.conn.send_method(self.number, M.BasicCancel(c.tag, True))

    # ------------------------------------------------------------------ acks
    def _take(self, tag: int, multiple: bool) -> list:
        unacked = self.unacked
        if multiple:
            if tag == 0:
                items = list(unacked.values())
                unacked.clear()
                return items
            if tag not in unacked:
                raise ChannelError(f"unknown delivery tag {tag}", E.PRECONDITION_FAILED)
            items = []
            for t, u in unacked.items():      # tags are in delivery order
                if t > tag:
                    break
                items.append(u)
            for u in items:
                del unacked[u.tag]
            return items
        u = unacked.pop(tag, None)
        if u is None:
            raise ChannelError(f"unknown delivery tag {tag}", E.PRECONDITION_FAILED)
        return [u]

    def _settle(self, items, requeue: bool | None):
        """requeue=None: ack; True: back to the queue; False: discard (or dead-letter)."""
        broker = self.broker
        touched = {}
        for u in items:
            q = u.queue
            c = u.consumer
            if c is not None:
                c.unacked -= 1
            q.unacked -= 1
            if requeue is None:
                broker.settle(q, u.seq, u.msg)
            elif requeue:
                broker.requeue(q, u.seq, u.msg)
            else:
                broker.reject(q, u.seq, u.msg)
            touched[id(q)] = q
        if requeue is None:
            self.acked += len(items)
            broker.stats["ack"] += len(items)
        if self.global_prefetch:
            self.kick()
        else:
            for q in touched.values():
                broker.mark_dirty(q)

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
        self.waiting.clear()

    def _remove_consumer(self, c):
        q = c.queue
        if q is self.reply_queue:
            self._drop_reply_consumer()
            return
        q.remove_consumer(c)
        self.broker.consumer_removed(q, c)
        if q.auto_delete and not q.consumers and q.had_consumer and not q.deleted:
            self.broker.delete_queue(q)

    # ------------------------------------------------------------------ direct reply-to
    def _consume_reply_to(self, m):
        if not m.no_ack:
            raise ChannelError("reply consumer cannot acknowledge", E.PRECONDITION_FAILED)
        if self.reply_queue is not None:
            raise ChannelError("reply consumer already set", E.PRECONDITION_FAILED)
        tag = m.consumer_tag or gen_name("amq.ctag-")
        if tag in self.consumers:
            raise ConnectionError_(f"attempt to reuse consumer tag '{tag}'", E.NOT_ALLOWED)
        q = Queue(self.vhost.name, "amq.rabbitmq.reply-to", False, None, False, {})
        c = Consumer(tag, self, q, True, False, 0, m.arguments)
        c.prefix = _DELIVER_HEAD + _shortstr(tag)
        q.consumers.append(c)
        self.consumers[tag] = c
        self.reply_queue = q
        self.reply_token = gen_name("")
        self.broker.reply_to[self.reply_token] = self
        if not m.nowait:
            self.reply(M.BasicConsumeOk(tag))

    def _drop_reply_consumer(self):
        if self.reply_token is not None:
            self.broker.reply_to.pop(self.reply_token, None)
        self.reply_queue = None
        self.reply_token = None

    def _reply_to_props(self, props: bytes, scan) -> bytes:
        if self.reply_queue is None:
            raise ChannelError("fast reply consumer does not exist", E.PRECONDITION_FAILED)
        d = P.decode(props)
        d["reply_to"] = "amq.rabbitmq.reply-to." + self.reply_token
        raw_headers = props[scan.headers_span[0]:scan.headers_span[1]] if scan.headers_span else None
        return P.encode(d, raw_headers=raw_headers)

    def _reply_route(self, msg) -> list:
        """Publishing to amq.rabbitmq.reply-to.TOKEN delivers straight to the requester's channel."""
        token = msg.routing_key[len("amq.rabbitmq.reply-to."):]
        ch = self.broker.reply_to.get(token)
        if ch is None or ch.reply_queue is None or ch.state != OPEN:
            return []
        q = ch.reply_queue
        c = q.consumers[0]
        ch.deliver(c, q, q.next_seq(), msg, False)
        return [None]

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
            self.fail(e)
        except ConnectionError_ as e:
            if not e.class_id:
                e.class_id, e.method_id = m.CLASS_ID, m.METHOD_ID
            raise

    def reply(self, method):
        self.conn.send_method(self.number, method)

    # --- channel class
    def channel_flow(self, m):
        if not m.active:
            raise ConnectionError_("active=false", E.NOT_IMPLEMENTED)
        self.flow_active = bool(m.active)
        self.reply(M.ChannelFlowOk(m.active))
        if self.flow_active:
            self.kick()

    def channel_flow_ok(self, m):
        pass

    def channel_close(self, m):
        self.release()
        self.reply(M.ChannelCloseOk())
        self.conn.channel_closed(self)

    def channel_close_ok(self, m):
        self.conn.channel_closed(self)

    def channel_open(self, m):
        raise ConnectionError_("second 'channel.open' seen", E.CHANNEL_ERROR)

    # --- exchange class
    def exchange_declare(self, m):
        b = self.broker
        name = m.exchange
        if not name:
            raise default_exchange_error()
        if m.passive:
            b.declare_exchange(self.vhost, name, m.type, passive=True)
        else:
            b.check_access(self.user, self.vhost.name, "configure", "exchange", name)
            if name not in self.vhost.exchanges:
                # creating it with an alternate exchange: read on it and write on the alternate
                self._check_arg_exchange(m.arguments, "alternate-exchange", "exchange", name)
            b.declare_exchange(self.vhost, name, m.type, m.durable, m.auto_delete, m.internal,
                               m.arguments, owner=self.conn)
        if not m.nowait:
            self.reply(M.ExchangeDeclareOk())

    def exchange_delete(self, m):
        b = self.broker
        name = m.exchange
        if not name:
            raise default_exchange_error()
        if name.startswith("amq.") and name in self.vhost.exchanges:
            raise ChannelError(f"deletion of system exchange '{name}' in vhost '{self.vhost.name}' not "
                               f"allowed", E.ACCESS_REFUSED)
        b.check_access(self.user, self.vhost.name, "configure", "exchange", name)
        b.delete_exchange(self.vhost, name, m.if_unused)
        self._x_cache.pop(name, None)
        if not m.nowait:
            self.reply(M.ExchangeDeleteOk())

    def _e2e(self, m, unbind: bool):
        b = self.broker
        v = self.vhost
        # RabbitMQ's order: write on the destination, then the default exchange, then read
        b.check_access(self.user, v.name, "write", "exchange", m.destination or "amq.default")
        if not m.destination or not m.source:
            raise default_exchange_error()
        b.check_access(self.user, v.name, "read", "exchange", m.source)
        src = b.get_exchange(v, m.source)
        dst = b.get_exchange(v, m.destination)
        if unbind:
            b.unbind(v, src, dst, m.routing_key, m.arguments)
        else:
            b.bind(v, src, dst, m.routing_key, m.arguments)

    def exchange_bind(self, m):
        self._e2e(m, False)
        if not m.nowait:
            self.reply(M.ExchangeBindOk())

    def exchange_unbind(self, m):
        self._e2e(m, True)
        if not m.nowait:
            self.reply(M.ExchangeUnbindOk())

    # --- queue class
    def _queue_name(self, name: str) -> str:
        if name:
            return name
        if not self.last_queue:
            raise ChannelError("no previously declared queue", E.NOT_FOUND)
        return self.last_queue

    def queue_declare(self, m):
        b = self.broker
        name = m.queue
        if name == "amq.rabbitmq.reply-to" or name.startswith("amq.rabbitmq.reply-to."):
            # the pseudo queue always "exists" (0 messages, 1 consumer); a reply address only while
            # its requester's channel is there
            if name != "amq.rabbitmq.reply-to":
                ch = b.reply_to.get(name[len("amq.rabbitmq.reply-to."):])
                if ch is None or ch.reply_queue is None or ch.state != OPEN:
                    raise ChannelError(f"no queue '{name}' in vhost '{self.vhost.name}'", E.NOT_FOUND)
            if not m.nowait:
                self.reply(M.QueueDeclareOk(name, 0, 1))
            return
        if m.passive:
            q = b.declare_queue(self.vhost, self._queue_name(name), passive=True, owner=self.conn)
        else:
            # RabbitMQ: the reserved prefix first, then configure (server-named queues included)
            if name.startswith("amq."):
                raise ChannelError(f"queue name '{name}' contains reserved prefix 'amq.*'", E.ACCESS_REFUSED)
            server_named = not name
            if server_named:
                name = gen_name("amq.gen-")
            b.check_access(self.user, self.vhost.name, "configure", "queue", name)
            if name not in self.vhost.queues:
                # creating it with a dead letter exchange: read on it and write on the DLX
                self._check_arg_exchange(m.arguments, "x-dead-letter-exchange", "queue", name)
            q = b.declare_queue(self.vhost, name, m.durable, m.exclusive, m.auto_delete, m.arguments,
                                owner=self.conn, server_named=server_named)
        self.last_queue = q.name
        if not m.nowait:
            self.reply(M.QueueDeclareOk(q.name, q.message_count, len(q.consumers)))

    def _check_arg_exchange(self, arguments, key: str, resource: str, name: str):
        """An exchange named by an argument (alternate-exchange, x-dead-letter-exchange) of a new
        exchange or queue: RabbitMQ wants read on the new one and write on that exchange."""
        target = arguments.get(key) if arguments else None
        if not isinstance(target, str):
            return      # absent, or of the wrong type (refused by the declaration itself)
        b = self.broker
        b.check_access(self.user, self.vhost.name, "read", resource, name)
        b.check_access(self.user, self.vhost.name, "write", "exchange", target or "amq.default")

    def _queue_binding(self, m):
        b = self.broker
        v = self.vhost
        qname = self._queue_name(m.queue)
        rk = m.routing_key
        if not m.queue and not rk:
            rk = qname
        # RabbitMQ's order: write on the queue, then the default exchange, then read
        b.check_access(self.user, v.name, "write", "queue", qname)
        if not m.exchange:
            raise default_exchange_error()
        b.check_access(self.user, v.name, "read", "exchange", m.exchange)
        q = b.get_queue(v, qname, self.conn)
        x = b.get_exchange(v, m.exchange)
        return v, x, q, rk

    def queue_bind(self, m):
        v, x, q, rk = self._queue_binding(m)
        if x.TYPE == "topic" and self.broker.users.topic_permissions:
            self.check_topic(x, rk, "read")
        self.broker.bind(v, x, q, rk, m.arguments)
        if not m.nowait:
            self.reply(M.QueueBindOk())

    def queue_unbind(self, m):
        v, x, q, rk = self._queue_binding(m)
        self.broker.unbind(v, x, q, rk, m.arguments)
        self.reply(M.QueueUnbindOk())

    def queue_purge(self, m):
        b = self.broker
        name = self._queue_name(m.queue)
        b.check_access(self.user, self.vhost.name, "read", "queue", name)
        q = b.get_queue(self.vhost, name, self.conn)
        n = b.purge_queue(q)
        if not m.nowait:
            self.reply(M.QueuePurgeOk(n))

    def queue_delete(self, m):
        b = self.broker
        name = self._queue_name(m.queue)
        b.check_access(self.user, self.vhost.name, "configure", "queue", name)
        q = self.vhost.queues.get(name)
        n = 0
        if q is not None:
            b.check_exclusive(q, self.conn)
            n = b.delete_queue(q, m.if_unused, m.if_empty)
        if not m.nowait:
            self.reply(M.QueueDeleteOk(n))

    # --- basic class
    def basic_qos(self, m):
        if m.prefetch_size:
            raise ConnectionError_(f"prefetch_size!=0 ({m.prefetch_size})", E.NOT_IMPLEMENTED)
        if m.global_:
            self.global_prefetch = m.prefetch_count
        else:
            self.prefetch_count = m.prefetch_count
        self.reply(M.BasicQosOk())
        self.kick()

    def basic_consume(self, m):
        b = self.broker
        if m.queue == "amq.rabbitmq.reply-to":
            return self._consume_reply_to(m)
        name = self._queue_name(m.queue)
        b.check_access(self.user, self.vhost.name, "read", "queue", name)
        q = b.get_queue(self.vhost, name, self.conn)
        tag = m.consumer_tag or gen_name("amq.ctag-")
        if tag in self.consumers:
            raise ConnectionError_(f"attempt to reuse consumer tag '{tag}'", E.NOT_ALLOWED)
        if (m.exclusive and q.consumers) or q.has_exclusive_consumer():
            raise ChannelError(f"queue '{q.name}' in vhost '{q.vhost}' in exclusive use", E.ACCESS_REFUSED)
        b.validate_consumer_arguments(q, m.arguments)
        if q.kind == "stream":
            if self.global_prefetch and not self.prefetch_count:
                raise ChannelError(f"global qos is not supported by stream queues {q.label}",
                                   E.NOT_IMPLEMENTED)
            q.check_consume(m.no_ack, self.prefetch_count)
        c = Consumer(tag, self, q, m.no_ack, m.exclusive, self.prefetch_count, m.arguments)
        c.prefix = _DELIVER_HEAD + _shortstr(tag)
        c.priority = b.consumer_priority(m.arguments)
        self.consumers[tag] = c
        if not m.nowait:
            self.reply(M.BasicConsumeOk(tag))
        q.add_consumer(c)
        b.consumer_added(q, c)
        b.mark_dirty(q)

    def basic_cancel(self, m):
        c = self.consumers.pop(m.consumer_tag, None)
        if not m.nowait:
            self.reply(M.BasicCancelOk(m.consumer_tag))
        if c is not None:
            self._remove_consumer(c)

    def basic_get(self, m):
        b = self.broker
        name = self._queue_name(m.queue)
        b.check_access(self.user, self.vhost.name, "read", "queue", name)
        q = b.get_queue(self.vhost, name, self.conn)
        if q.kind == "stream":
            raise ConnectionError_(f"basic.get not supported by stream queues {q.label}", E.NOT_IMPLEMENTED)
        item = b.get_message(q)
        if item is None:
            self.reply(M.BasicGetEmpty(""))
            return
        seq, msg, redelivered = item
        self.next_tag = tag = self.next_tag + 1
        payload = (_GET_OK_HEAD + _Q.pack(tag) + _REDELIVERED[redelivered] + msg.route +
                   struct.pack(">I", q.message_count))
        if redelivered and q.delivery_counts and seq in q.delivery_counts:
            self._write_content(payload, _with_delivery_count(msg, q.delivery_counts[seq]))
        else:
            self._write_content(payload, msg)
        q.delivered += 1
        b.stats["get"] += 1
        if m.no_ack:
            b.settle(q, seq, msg)
        else:
            self.unacked[tag] = Unacked(tag, q, seq, msg, None)
            q.unacked += 1
            if msg.stored and q.durable:
                b.store.mark_delivered(q.vhost, q.name, seq)

    def basic_ack(self, m):
        items = self._take(m.delivery_tag, m.multiple)
        if self.tx:
            self.tx_acks.append((items, None))
        else:
            self._settle(items, None)

    def _no_stream_rejects(self, items):
        for u in items:
            if u.queue.kind == "stream":
                for v in items:
                    self.unacked[v.tag] = v
                self.unacked = dict(sorted(self.unacked.items()))
                raise ConnectionError_(f"basic.nack and basic.reject not supported by stream queues "
                                       f"{u.queue.label}", E.NOT_IMPLEMENTED)

    def basic_nack(self, m):
        items = self._take(m.delivery_tag, m.multiple)
        self._no_stream_rejects(items)
        if self.tx:
            self.tx_acks.append((items, bool(m.requeue)))
        else:
            self._settle(items, bool(m.requeue))

    def basic_reject(self, m):
        items = self._take(m.delivery_tag, False)
        self._no_stream_rejects(items)
        if self.tx:
            self.tx_acks.append((items, bool(m.requeue)))
        else:
            self._settle(items, bool(m.requeue))

    def basic_recover(self, m):
        if not m.requeue:
            raise ConnectionError_("requeue=false", E.NOT_IMPLEMENTED)
        self.requeue_all()
        self.reply(M.BasicRecoverOk())

    def basic_recover_async(self, m):
        if not m.requeue:
            raise ConnectionError_("requeue=false", E.NOT_IMPLEMENTED)
        self.requeue_all()

    # --- confirm and tx classes
    def confirm_select(self, m):
        if self.tx:
            raise ChannelError("cannot switch from tx to confirm mode", E.PRECONDITION_FAILED)
        self.confirm = True
        if not m.nowait:
            self.reply(M.ConfirmSelectOk())

    def tx_select(self, m):
        if self.confirm:
            raise ChannelError("cannot switch from confirm to tx mode", E.PRECONDITION_FAILED)
        self.tx = True
        self.reply(M.TxSelectOk())

    def tx_commit(self, m):
        if not self.tx:
            raise ChannelError("channel is not transactional", E.PRECONDITION_FAILED)
        publishes, self.tx_publishes = self.tx_publishes, []
        acks, self.tx_acks = self.tx_acks, []
        stored = False
        for x, msg, mandatory in publishes:
            if x.deleted:
                continue
            self._route_publish(x, msg, mandatory)
            stored = stored or msg.stored
        for items, requeue in acks:
            self._settle(items, requeue)
        if stored and self.broker.store.durable:
            self.tx_commit_epoch = self.broker.wait_for_commit(self)
        else:
            self.reply(M.TxCommitOk())

    def tx_rollback(self, m):
        if not self.tx:
            raise ChannelError("channel is not transactional", E.PRECONDITION_FAILED)
        self.tx_publishes.clear()
        # acks taken in the transaction go back to the unacked set
        if self.tx_acks:
            for items, _requeue in self.tx_acks:
                for u in items:
                    self.unacked[u.tag] = u
            self.unacked = dict(sorted(self.unacked.items()))
            self.tx_acks.clear()
        self.reply(M.TxRollbackOk())


def _parse_publish(payload) -> tuple:
    """(exchange, routing key, the two as shortstrs, flag bits) of a basic.publish payload."""
    try:
        n = payload[6]
        off = 7 + n
        k = payload[off]
        end = off + 1 + k
        bits = payload[end]
    except IndexError:
        raise E.SyntaxError_("basic.publish method frame truncated", None, 60, 40) from None
    try:
        exchange = payload[7:off].decode() if n else ""
        routing_key = payload[off + 1:end].decode() if k else ""
    except UnicodeDecodeError:
        exchange = payload[7:off].decode("utf-8", "surrogateescape")
        routing_key = payload[off + 1:end].decode("utf-8", "surrogateescape")
    return exchange, routing_key, bytes(payload[6:end]), bits


def _with_delivery_count(msg, count: int):
    from ..amqp.table import Typed
    from ..model.message import Message
    props = with_header(msg, "x-delivery-count", Typed("l", count))
    return Message(msg.exchange, msg.routing_key, props, msg.body, None, msg.id, msg.route)


def _build_handlers():
    table = {}
    for cls in M.METHODS.values():
        name = cls.NAME.replace(".", "_").replace("-", "_")
        fn = getattr(Channel, name, None)
        if fn is not None:
            table[cls.INDEX] = fn
    return table


_HANDLERS = _build_handlers()
