"""Direct exchange: a binding key equal to the routing key.

Per routing key, bindings to each destination are counted, so adding or removing one is O(1);
the destinations of a key are rebuilt only when that key is next routed after a change.
"""
from __future__ import annotations

from .base import Exchange


class DirectExchange(Exchange):
    TYPE = "direct"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.counts: dict = {}  # routing key -> {id(destination): [destination, bindings]}
        self.index: dict = {}   # routing key -> list of destinations, rebuilt lazily after a change

    def _index_add(self, b):
        per_key = self.counts.get(b.routing_key)
        if per_key is None:
            per_key = self.counts[b.routing_key] = {}
        entry = per_key.get(id(b.destination))
        if entry is None:
            per_key[id(b.destination)] = [b.destination, 1]
            self.index.pop(b.routing_key, None)
        else:
            entry[1] += 1

    def _index_remove(self, b):
        per_key = self.counts.get(b.routing_key)
        if per_key is None:
            return
        entry = per_key.get(id(b.destination))
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            del per_key[id(b.destination)]
            if not per_key:
                del self.counts[b.routing_key]
            self.index.pop(b.routing_key, None)

    def route(self, routing_key, msg):
        dests = self.index.get(routing_key)
        if dests is None:
            per_key = self.counts.get(routing_key)
            if per_key is None:
                return ()
            dests = self.index[routing_key] = [e[0] for e in per_key.values()]
        return dests
