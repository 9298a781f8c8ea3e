"""exchange.declare, exchange.delete, exchange.bind and exchange.unbind.

Methods of Channel (core/channel.py), one module per AMQP class.
"""
from __future__ import annotations

import logging

from ...amqp import methods as M
from .. import access


log = logging.getLogger("usagi.channel")


class ExchangeHandlers:
    # --- exchange class
    def exchange_declare(self, m):
        b = self.broker
        name = m.exchange
        if m.passive:
            if not name:
                raise access.default_exchange_refused()
            b.declare_exchange(self.vhost, name, m.type, passive=True)
        else:
            access.declare_exchange(b, self.user, self.vhost, name, m.arguments)
            b.declare_exchange(self.vhost, name, m.type, m.durable, m.auto_delete, m.internal,
                               m.arguments, owner=self.conn)
        if not m.nowait:
            self.reply_after_commit(M.ExchangeDeclareOk(), m.durable and not m.passive)

    def exchange_delete(self, m):
        b = self.broker
        name = m.exchange
        access.delete_exchange(b, self.user, self.vhost, name)
        b.delete_exchange(self.vhost, name, m.if_unused)
        self._x_cache.pop(name, None)
        self.pub_memo = None
        if not m.nowait:
            self.reply_after_commit(M.ExchangeDeleteOk())

    def _e2e(self, m, unbind: bool):
        # RabbitMQ: unbinding where an end or the binding does not exist succeeds
        ends = access.binding(self.broker, self.user, self.vhost, m.source, "exchange", m.destination,
                              m.routing_key, m.arguments, self.conn, unbind)
        if ends is None:
            return
        if unbind:
            self.broker.unbind(self.vhost, ends[0], ends[1], m.routing_key, m.arguments)
        else:
            self.broker.bind(self.vhost, ends[0], ends[1], m.routing_key, m.arguments)

    def exchange_bind(self, m):
        self._e2e(m, False)
        if not m.nowait:
            self.reply_after_commit(M.ExchangeBindOk(), self._durable_ends(m))

    def exchange_unbind(self, m):
        self._e2e(m, True)
        if not m.nowait:
            self.reply_after_commit(M.ExchangeUnbindOk(), self._durable_ends(m))
