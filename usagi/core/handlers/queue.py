"""queue.declare, queue.bind, queue.unbind, queue.purge and queue.delete.

Methods of Channel (core/channel.py), one module per AMQP class.
"""
from __future__ import annotations

import logging

from ...amqp import errors as E
from ...amqp import methods as M
from ...amqp.errors import ChannelError
from ...model.util import gen_name
from ..channel_common import (OPEN, default_exchange_error)


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
            self.reply_after_commit(M.QueueDeclareOk(q.name, q.message_count, len(q.consumers)),
                                    self._stored(q) and not m.passive)

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
            self.reply_after_commit(M.QueueBindOk(), x.durable and self._stored(q))

    def queue_unbind(self, m):
        v, x, q, rk = self._queue_binding(m)
        self.broker.unbind(v, x, q, rk, m.arguments)
        self.reply_after_commit(M.QueueUnbindOk(), x.durable and self._stored(q))

    def queue_purge(self, m):
        b = self.broker
        name = self._queue_name(m.queue)
        b.check_access(self.user, self.vhost.name, "read", "queue", name)
        q = b.get_queue(self.vhost, name, self.conn)
        n = b.purge_queue(q)
        if not m.nowait:
            self.reply_after_commit(M.QueuePurgeOk(n), self._stored(q))

    def queue_delete(self, m):
        b = self.broker
        name = self._queue_name(m.queue)
        b.check_access(self.user, self.vhost.name, "configure", "queue", name)
        q = self.vhost.queues.get(name)
        n = 0
        if q is not None:
            b.check_exclusive(q, self.conn)
            self.hold_output()      # its own consumers' basic.cancel follow delete-ok, as in RabbitMQ
            n = b.delete_queue(q, m.if_unused, m.if_empty)
        self.reply_after_commit(None if m.nowait else M.QueueDeleteOk(n),
                                q is not None and self._stored(q))
