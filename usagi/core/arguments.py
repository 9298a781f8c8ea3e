"""Queue and exchange arguments: RabbitMQ's names for value types, equivalence on redeclare,
and which arguments each queue type accepts.
"""
from __future__ import annotations

import logging

from ..amqp import errors as E
from ..amqp.errors import ChannelError
from ..model.util import freeze


log = logging.getLogger("usagi.broker")


def _q(name):
    return f"queue '{name}'"


def _x(name):
    return f"exchange '{name}'"


def not_found(kind: str, name: str, vhost: str) -> ChannelError:
    return ChannelError(f"no {kind} '{name}' in vhost '{vhost}'", E.NOT_FOUND)


# The value types RabbitMQ names in "inequivalent arg" texts.
def _type_name(v) -> str:
    """The AMQP field type RabbitMQ reports for a value (as its clients send them)."""
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "signedint" if -2147483648 <= v <= 2147483647 else "long"
    if isinstance(v, float):
        return "double"
    if isinstance(v, (str, bytes)):
        return "longstr"
    if isinstance(v, dict):
        return "table"
    if isinstance(v, list):
        return "array"
    return "void" if v is None else type(v).__name__


def _fmt_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return str(v)


def _numeric_equal(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b and type(a) is type(b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, bytes):
        a = a.decode("utf-8", "surrogateescape")
    if isinstance(b, bytes):
        b = b.decode("utf-8", "surrogateescape")
    return freeze(a) == freeze(b)


# Queue arguments RabbitMQ compares on redeclare (others are ignored for equivalence).
QUEUE_EQUIV_ARGS = ("x-expires", "x-message-ttl", "x-dead-letter-exchange", "x-dead-letter-routing-key",
                    "x-max-length", "x-max-length-bytes", "x-max-priority", "x-overflow",
                    "x-queue-mode", "x-queue-type", "x-single-active-consumer", "x-delivery-limit",
                    "x-queue-master-locator", "x-max-age", "x-stream-max-segment-size-bytes",
                    "x-initial-cluster-size", "x-queue-leader-locator", "x-dead-letter-strategy",
                    "x-queue-version")


# Which queue arguments each queue type accepts (RabbitMQ refuses a known argument that the type
# does not support).
QUEUE_TYPE_ARGS = {
    "classic": {"x-expires", "x-message-ttl", "x-dead-letter-exchange", "x-dead-letter-routing-key",
                "x-max-length", "x-max-length-bytes", "x-max-priority", "x-overflow", "x-queue-mode",
                "x-single-active-consumer", "x-queue-type", "x-queue-master-locator", "x-queue-version"},
    "quorum": {"x-expires", "x-message-ttl", "x-dead-letter-exchange", "x-dead-letter-routing-key",
               "x-max-length", "x-max-length-bytes", "x-delivery-limit", "x-overflow", "x-single-active-consumer",
               "x-queue-type", "x-quorum-initial-group-size", "x-max-in-memory-length",
               "x-max-in-memory-bytes", "x-dead-letter-strategy", "x-queue-leader-locator"},
    "stream": {"x-max-length-bytes", "x-max-age", "x-stream-max-segment-size-bytes", "x-queue-type",
               "x-initial-cluster-size", "x-queue-leader-locator"},
}
KNOWN_QUEUE_ARGS = set().union(*QUEUE_TYPE_ARGS.values())
