"""What every exchange type shares: identity, flags, the binding list."""
from __future__ import annotations

from ..state import ExchangeState
from ..util import freeze


class Binding:
    __slots__ = ("source", "destination", "routing_key", "arguments", "key")

    def __init__(self, source, destination, routing_key: str, arguments: dict):
        self.source = source
        self.destination = destination
        self.routing_key = routing_key
        self.arguments = arguments or {}
        self.key = (id(destination), routing_key, freeze(self.arguments))


class Exchange(ExchangeState):
    """Base exchange. Subclasses index bindings their own way and implement `route`."""

    TYPE = ""

    def __init__(self, vhost: str, name: str, durable: bool = False, auto_delete: bool = False,
                 internal: bool = False, arguments: dict | None = None):
        self.vhost = vhost
        self.name = name
        self.durable = durable
        self.auto_delete = auto_delete
        self.internal = internal
        self.arguments = arguments or {}
        self.bindings: dict = {}        # Binding.key -> Binding
        self.incoming: dict = {}        # id(Binding) -> Binding, for bindings from other exchanges to this one
        self.deleted = False
        self.policy = None
        self.policy_ae = None           # alternate-exchange from a policy
        # statistics
        self.publish_in = 0
        self.publish_out = 0
        self.returned = 0               # unroutable: returned to a mandatory publisher, or dropped
        self.dropped = 0

    @property
    def type(self) -> str:
        return self.TYPE

    def add_binding(self, b: Binding) -> bool:
        if b.key in self.bindings:
            return False
        self.bindings[b.key] = b
        self._index_add(b)
        return True

    def remove_binding(self, destination, routing_key: str, arguments: dict) -> Binding | None:
        key = (id(destination), routing_key, freeze(arguments or {}))
        b = self.bindings.pop(key, None)
        if b is not None:
            self._index_remove(b)
        return b

    def has_binding(self, destination, routing_key: str, arguments: dict) -> bool:
        return (id(destination), routing_key, freeze(arguments or {})) in self.bindings

    def remove_destination(self, destination) -> list:
        """Drop every binding to `destination` (a deleted queue or exchange)."""
        gone = [b for b in self.bindings.values() if b.destination is destination]
        for b in gone:
            del self.bindings[b.key]
            self._index_remove(b)
        return gone

    def _index_add(self, b: Binding):
        raise NotImplementedError

    def _index_remove(self, b: Binding):
        raise NotImplementedError

    def route(self, routing_key: str, msg) -> list | tuple:
        """Destinations (queues or exchanges) for a message with this routing key."""
        raise NotImplementedError

    def validate_binding(self, routing_key: str, arguments: dict) -> str | None:
        """An error text if a binding with these arguments is invalid for this type."""
        return None
