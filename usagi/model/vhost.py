"""A virtual host: its own exchanges, queues and bindings."""
from __future__ import annotations

from .exchanges import TYPES

STANDARD_EXCHANGES = (
    ("", "direct"),
    ("amq.direct", "direct"),
    ("amq.fanout", "fanout"),
    ("amq.topic", "topic"),
    ("amq.headers", "headers"),
    ("amq.match", "headers"),
    ("amq.rabbitmq.trace", "topic"),     # internal, as in RabbitMQ (firehose tracing target)
)


class VHost:
    def __init__(self, name: str, description: str = "", tags=None, default_queue_type: str = "classic"):
        self.name = name
        self.description = description
        self.tags = list(tags or [])
        self.default_queue_type = default_queue_type
        self.exchanges: dict = {}
        self.queues: dict = {}
        self.limits: dict = {}
        self.tracing = False
        for name_, type_ in STANDARD_EXCHANGES:
            self.exchanges[name_] = TYPES[type_](self.name, name_, durable=True,
                                                 internal=name_ == "amq.rabbitmq.trace")

    def metadata(self) -> dict:
        return {"description": self.description, "tags": list(self.tags),
                "default_queue_type": self.default_queue_type}
