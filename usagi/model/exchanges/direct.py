"""Direct exchange: a binding key equal to the routing key."""
from __future__ import annotations

from .base import Exchange


class DirectExchange(Exchange):
    TYPE = "direct"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.index: dict = {}   # routing key -> list of destinations (no duplicates)

    def _index_add(self, b):
        dests = self.index.setdefault(b.routing_key, [])
        if not any(d is b.destination for d in dests):
            dests.append(b.destination)

    def _index_remove(self, b):
        if any(o.destination is b.destination and o.routing_key == b.routing_key
               for o in self.bindings.values()):
            return  # another binding (other arguments) still links them
        dests = self.index.get(b.routing_key)
        if dests is not None:
            dests[:] = [d for d in dests if d is not b.destination]
            if not dests:
                del self.index[b.routing_key]

    def route(self, routing_key, msg):
        return self.index.get(routing_key, ())
