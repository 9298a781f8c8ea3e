"""Fanout exchange: every bound destination, whatever the key."""
from __future__ import annotations

from .base import Exchange


class FanoutExchange(Exchange):
    TYPE = "fanout"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.dests: list = []

    def _index_add(self, b):
        if not any(d is b.destination for d in self.dests):
            self.dests.append(b.destination)

    def _index_remove(self, b):
        if any(o.destination is b.destination for o in self.bindings.values()):
            return
        self.dests = [d for d in self.dests if d is not b.destination]

    def route(self, routing_key, msg):
        return self.dests
