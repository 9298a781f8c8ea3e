"""Fanout exchange: every bound destination, whatever the key.

Bindings to one destination are counted (a queue may be bound several times, with other keys or
arguments), so adding or removing a binding is O(1); the list `route` returns is rebuilt only when
it is next needed after a change, so a run of binds or unbinds costs O(bindings) in all, not each.
"""
from __future__ import annotations

from .base import Exchange


class FanoutExchange(Exchange):
    TYPE = "fanout"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.counts: dict = {}      # id(destination) -> [destination, bindings to it]
        self._dests = None          # the route, rebuilt lazily after a change

    def _index_add(self, b):
        entry = self.counts.get(id(b.destination))
        if entry is None:
            self.counts[id(b.destination)] = [b.destination, 1]
            self._dests = None
        else:
            entry[1] += 1

    def _index_remove(self, b):
        entry = self.counts.get(id(b.destination))
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            del self.counts[id(b.destination)]
            self._dests = None

    @property
    def dests(self) -> list:
        d = self._dests
        if d is None:
            d = self._dests = [e[0] for e in self.counts.values()]
        return d

    def route(self, routing_key, msg):
        d = self._dests
        return d if d is not None else self.dests
