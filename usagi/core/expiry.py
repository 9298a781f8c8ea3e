"""Time: message TTLs (timely, wherever the message is in its queue) and x-expires of unused queues.

Part of the engine (see broker.py): methods of Broker, split out by concern.
"""
from __future__ import annotations

import logging

import heapq


log = logging.getLogger("usagi.broker")


class ExpiryMixin:
    def expire(self, now_ms: int):
        """Dead-letter or drop every message whose TTL has passed, wherever it is in its queue."""
        for key, q in list(self.ttl_queues.items()):
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

    def expire_queues(self, now: float):
        """x-expires: delete queues unused for their expiry period."""
        for v in list(self.vhosts.values()):
            for q in list(v.queues.values()):
                if q.expires is not None and not q.consumers and not q.deleted and \
                        (now - q.last_used) * 1000 >= q.expires:
                    log.info("queue '%s' in vhost '%s' expired", q.name, q.vhost)
                    self.delete_queue(q)
