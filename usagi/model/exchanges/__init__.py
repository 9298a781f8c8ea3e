"""Exchange types, one module each. `TYPES` maps the AMQP type name to its class."""
from .base import Exchange
from .direct import DirectExchange
from .fanout import FanoutExchange
from .headers import HeadersExchange
from .topic import TopicExchange

TYPES = {
    "direct": DirectExchange,
    "fanout": FanoutExchange,
    "topic": TopicExchange,
    "headers": HeadersExchange,
}

from .delayed import DelayedExchange  # noqa: E402  (needs TYPES)

TYPES["x-delayed-message"] = DelayedExchange

__all__ = ["Exchange", "TYPES", "DirectExchange", "FanoutExchange", "TopicExchange", "HeadersExchange"]
