"""confirm.select and the tx class: select, commit and rollback.

Methods of Channel (core/channel.py), one module per AMQP class.
"""
from __future__ import annotations

import logging

from ...amqp import errors as E
from ...amqp import methods as M
from ...amqp.errors import ChannelError


log = logging.getLogger("usagi.channel")


class TxHandlers:
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
        broker = self.broker
        recorded = broker.recorded()
        for x, msg, mandatory in publishes:
            if x.deleted:
                continue
            self._route_publish(x, msg, mandatory)
        for items, requeue in acks:
            self._settle(items, requeue)
        # commit-ok promises the publishes and the acks alike: an acked persistent message must not
        # come back after a crash, nor a committed one be missing
        self.reply_after_commit(M.TxCommitOk(), broker.recorded() != recorded)

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
