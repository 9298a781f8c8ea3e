"""The channel class: flow, close and close-ok (open is handled by the connection).

Methods of Channel (core/channel.py), one module per AMQP class.
"""
from __future__ import annotations

import logging

from ...amqp import errors as E
from ...amqp import methods as M
from ...amqp.errors import ConnectionError_


log = logging.getLogger("usagi.channel")


class ChannelClassHandlers:
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
