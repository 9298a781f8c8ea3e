"""Dead lettering: a message rejected, expired or dropped by a length limit goes to its queue's
dead-letter exchange with x-death headers (model/deadletter.py edits them).

Part of the engine (see broker.py): methods of Broker, split out by concern.
"""
from __future__ import annotations

import logging
import time

from ..model.message import Message
from ..model.queue import Queue
from ..model import deadletter as DL


log = logging.getLogger("usagi.broker")


class DeadLetterMixin:
    # -- dead lettering
    def dead_letter(self, q: Queue, msg: Message, reason: str):
        dlx = q.dlx
        if dlx is None:
            return
        v = self.vhosts.get(q.vhost)
        x = v.exchanges.get(dlx) if v is not None else None
        if x is None:
            log.debug("dead-letter exchange '%s' of queue '%s' does not exist; message dropped", dlx, q.name)
            return
        props = DL.record_death(msg, q.name, reason, int(time.time() * 1000))
        keys = [q.dlrk] if q.dlrk is not None else DL.routing_keys(msg) + (msg.bcc or [])
        new = self.new_message(dlx, keys[0], props, msg.body)
        targets = self._route_keys(v, x, new, keys) if len(keys) > 1 else self.route(v, x, new)
        if not targets:
            return
        deaths = DL.deaths_of(new)
        for tq in targets:
            if DL.is_cycle(deaths, tq.name):
                log.warning("dead-letter cycle: message from queue '%s' to '%s' dropped", q.name, tq.name)
                continue
            self.enqueue(tq, new)
