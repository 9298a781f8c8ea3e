"""Time: message TTLs (timely, wherever the message is in its queue) and x-expires of unused queues.

Part of the engine (see broker.py): methods of Broker, split out by concern.
"""
from __future__ import annotations

import logging

import heapq

from . import upkeep


log = logging.getLogger("usagi.broker")


class ExpiryMixin:
    def expire(self, now_ms: int):
        """Dead-letter or drop every message whose TTL has passed, wherever it is in its queue.
        A queue whose expiry fails is logged and skipped: the others still expire on time."""
        for key, q in list(self.ttl_queues.items()):
            try:
                dl = q.deadlines
                while dl and dl[0][0] <= now_ms:
                    exp, seq, msg = heapq.heappop(dl)
                    if q.expiry.get(seq) != exp:
                        continue          # delivered meanwhile
                    del q.expiry[seq]
                    q.remove(seq, msg)
                    self.dead_letter(q, msg, "expired")
                    self._forget(q, seq, msg)
                if not dl:
                    del self.ttl_queues[key]
            except Exception:
                upkeep.failed("message TTL expiry", log, f"queue '{q.name}' in vhost '{q.vhost}'")

    def expire_queues(self, now: float):
        """x-expires: delete queues unused for their expiry period (one failing is logged and
        skipped; the others still go)."""
        for v in list(self.vhosts.values()):
            for q in list(v.queues.values()):
                if q.expires is not None and not q.consumers and not q.deleted and \
                        (now - q.last_used) * 1000 >= q.expires:
                    try:
                        self.delete_queue(q)
                        log.info("queue '%s' in vhost '%s' expired", q.name, q.vhost)
                    except Exception:
                        upkeep.failed("queue expiry (x-expires)", log, f"queue '{q.name}' in vhost '{q.vhost}'")
