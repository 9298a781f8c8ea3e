"""queue.declare, queue.bind, queue.unbind, queue.purge and queue.delete.

Methods of Channel (core/channel.py), one module per AMQP class.
"""
from __future__ import annotations

import logging

from ...amqp import errors as E
from ...amqp import methods as M
from ...amqp.errors import ChannelError
from ...model.util import gen_name
from .. import access
from ..channel_common import OPEN


log = logging.getLogger("usagi.channel")


class QueueHandlers:
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
            server_named = not name
            if server_named:
                name = gen_name("amq.gen-")
            access.declare_queue(b, self.user, self.vhost, name, m.arguments, server_named)
            q = b.declare_queue(self.vhost, name, m.durable, m.exclusive, m.auto_delete, m.arguments,
                                owner=self.conn, server_named=server_named)
        self.last_queue = q.name
        if not m.nowait:
            self.reply_after_commit(M.QueueDeclareOk(q.name, q.message_count, len(q.consumers)),
                                    self._stored(q) and not m.passive)

    def _queue_binding(self, m, unbind: bool):
        qname = self._queue_name(m.queue)
        rk = m.routing_key
        if not m.queue and not rk:
            rk = qname
        ends = access.binding(self.broker, self.user, self.vhost, m.exchange, "queue", qname, rk, m.arguments,
                              self.conn, unbind)
        return ends, rk

    def queue_bind(self, m):
        (x, q), rk = self._queue_binding(m, False)
        self.broker.bind(self.vhost, x, q, rk, m.arguments)
        if not m.nowait:
            self.reply_after_commit(M.QueueBindOk(), x.durable and self._stored(q))

    def queue_unbind(self, m):
        # RabbitMQ: unbinding from a queue or exchange that does not exist, or a binding that does
        # not exist, succeeds (clients unbind while closing, after an auto-delete queue went away)
        ends, rk = self._queue_binding(m, True)
        if ends is not None:
            self.broker.unbind(self.vhost, ends[0], ends[1], rk, m.arguments)
        self.reply_after_commit(M.QueueUnbindOk(), ends is not None and ends[0].durable and self._stored(ends[1]))

    def queue_purge(self, m):
        b = self.broker
        q = access.readable_queue(b, self.user, self.vhost, self._queue_name(m.queue), self.conn)
        n = b.purge_queue(q)
        if not m.nowait:
            self.reply_after_commit(M.QueuePurgeOk(n), self._stored(q))

    def queue_delete(self, m):
        b = self.broker
        q = access.delete_queue(b, self.user, self.vhost, self._queue_name(m.queue), self.conn)
        n = 0
        if q is not None:
            self.hold_output()      # its own consumers' basic.cancel follow delete-ok, as in RabbitMQ
            n = b.delete_queue(q, m.if_unused, m.if_empty)
        self.reply_after_commit(None if m.nowait else M.QueueDeleteOk(n),
                                q is not None and self._stored(q))
