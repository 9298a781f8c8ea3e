"""Messages as the broker holds them: properties and body exactly as received."""
from __future__ import annotations

from ..amqp import properties as P


def encode_route(exchange: str, routing_key: str) -> bytes:
    e = exchange.encode("utf-8", "surrogateescape")
    r = routing_key.encode("utf-8", "surrogateescape")
    return bytes((len(e),)) + e + bytes((len(r),)) + r


class Message:
    """One published message. Shared by every queue it was routed to.

    `props` are the content-header property bytes as received (flags then fields); `body` is the
    whole body. `scan` holds the few properties the broker acts on, read once at publish.
    """

    __slots__ = ("exchange", "routing_key", "props", "body", "scan", "id", "refs", "stored",
                 "_headers", "route", "bcc", "confirm")

    def __init__(self, exchange: str, routing_key: str, props: bytes, body: bytes, scan=None,
                 msg_id: int = 0, route: bytes | None = None):
        if route is None:
            route = encode_route(exchange, routing_key)
        self.route = route     # exchange and routing key as two shortstrs, as deliver/return carry them
        self.exchange = exchange
        self.routing_key = routing_key
        self.props = props
        self.body = body
        self.scan = scan if scan is not None else P.scan(props)
        self.id = msg_id
        self.refs = 0          # entries of durable queues holding this message in the store
        self.stored = False    # written (or queued for writing) to the message store
        self._headers = None
        self.bcc = None        # BCC routing keys, kept after the header is stripped (for dead lettering)
        self.confirm = None    # (channel, publish seq) while its publisher confirm waits for a commit

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
