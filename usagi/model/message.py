"""Messages as the broker holds them: properties and body exactly as received."""
from __future__ import annotations

from ..amqp import properties as P
from .state import MessageState, own_slots


class Message(MessageState):
    """One published message. Shared by every queue it was routed to.

    `props` are the content-header property bytes as received (flags then fields); `body` is the
    whole body. `scan` holds the few properties the broker acts on, read once at publish. The
    fields and the constructor are those of MessageState (model/hotstate.py), compiled when the
    hot path is.
    """

    __slots__ = own_slots(MessageState, ("exchange", "routing_key", "props", "body", "scan", "id", "refs",
                                         "stored", "_headers", "route", "bcc", "confirm"))

    @property
    def persistent(self) -> bool:
        return self.scan.delivery_mode == 2

    @property
    def size(self) -> int:
        return len(self.body)

    @property
    def headers(self) -> dict:
        h = self._headers
        if h is None:
            h = self._headers = P.headers_of(self.props, self.scan)
        return h

    def properties(self) -> dict:
        return P.decode(self.props)

    @staticmethod
    def from_page(exchange, routing_key, props, body, msg_id, stored) -> "Message":
        m = Message(exchange, routing_key, props, body, None, msg_id)
        m.stored = bool(stored)
        return m

    def with_props(self, props: bytes) -> "Message":
        return Message(self.exchange, self.routing_key, props, self.body)
