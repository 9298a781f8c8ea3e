"""exchange.declare, exchange.delete, exchange.bind and exchange.unbind.

Methods of Channel (core/channel.py), one module per AMQP class.
"""
from __future__ import annotations

import logging

from ...amqp import errors as E
from ...amqp import methods as M
from ...amqp.errors import ChannelError
from ..channel_common import (default_exchange_error)


log = logging.getLogger("usagi.channel")


class ExchangeHandlers:
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
            self.reply_after_commit(M.ExchangeDeclareOk(), m.durable and not m.passive)

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
            self.reply_after_commit(M.ExchangeDeleteOk())

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
            self.reply_after_commit(M.ExchangeBindOk(), self._durable_ends(m))

    def exchange_unbind(self, m):
        self._e2e(m, True)
        if not m.nowait:
            self.reply_after_commit(M.ExchangeUnbindOk(), self._durable_ends(m))
