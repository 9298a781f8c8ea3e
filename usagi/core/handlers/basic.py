"""basic.qos, basic.consume, basic.cancel, basic.get, acks, rejects and basic.recover.

Methods of Channel (core/channel.py), one module per AMQP class.
"""
from __future__ import annotations

import logging
import struct

from ...amqp import errors as E
from ...amqp import methods as M
from ...amqp.errors import ChannelError, ConnectionError_
from ...model.queue import Consumer
from ...model.util import gen_name
from .. import access
from ..channel_common import (_DELIVER_HEAD, _GET_OK_HEAD, _Q, _REDELIVERED, _shortstr, _with_delivery_count)
from ..hot import fastpath


log = logging.getLogger("usagi.channel")


class BasicHandlers:
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
        q = access.readable_queue(b, self.user, self.vhost, self._queue_name(m.queue), self.conn)
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
        q = access.readable_queue(b, self.user, self.vhost, self._queue_name(m.queue), self.conn)
        if q.kind == "stream":
            raise ConnectionError_(f"basic.get not supported by stream queues {q.label}", E.NOT_IMPLEMENTED)
        item = b.get_message(q)
        if item is None:
            q.get_empty += 1
            self.get_empty += 1
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
            q.get_auto += 1
            self.get_auto += 1
            b.settle(q, seq, msg)
        else:
            q.get_ack += 1
            self.get_ack += 1
            self.unacked[tag] = fastpath.Unacked(tag, q, seq, msg, None)
            q.unacked += 1
            if msg.stored and q.durable:
                b.stored_delivered(q, seq, msg)

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
