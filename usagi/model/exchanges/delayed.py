"""x-delayed-message: messages with an x-delay header wait, then route as the x-delayed-type exchange does.

Bindings and routing are those of an inner exchange of the delayed type; holding the messages
until they are due is the engine's job (broker.route_publish).
"""
from __future__ import annotations

from .base import Exchange


class DelayedExchange(Exchange):
    TYPE = "x-delayed-message"

    def __init__(self, vhost, name, durable=False, auto_delete=False, internal=False, arguments=None):
        super().__init__(vhost, name, durable, auto_delete, internal, arguments)
        from . import TYPES
        inner = self.arguments.get("x-delayed-type", "direct")
        if isinstance(inner, bytes):
            inner = inner.decode()
        self.inner = TYPES.get(inner, TYPES["direct"])(vhost, name, durable, auto_delete, internal, {})

    def _index_add(self, b):
        self.inner._index_add(b)

    def _index_remove(self, b):
        self.inner._index_remove(b)

    def route(self, routing_key, msg):
        return self.inner.route(routing_key, msg)

    def validate_binding(self, routing_key, arguments):
        return self.inner.validate_binding(routing_key, arguments)
