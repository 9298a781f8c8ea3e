"""Queue and exchange arguments: RabbitMQ's names for value types, equivalence on redeclare,
which arguments each queue type accepts, and the checks of every value with RabbitMQ's ranges
and texts (queue arguments at declare, the `expiration` property at publish).

Everything a client names here is checked where it enters, AMQP and management API alike, so
that nothing stored can break a later read (a TTL past what a timer can hold, an expiry that
overflows, a type the engine does not expect).
"""
from __future__ import annotations

import logging
import re
from decimal import Decimal

from ..amqp import errors as E
from ..amqp.errors import ChannelError
from ..amqp.table import Timestamp
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
    if isinstance(v, Timestamp):
        return "timestamp"
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
    if isinstance(v, Decimal):
        return "decimal"
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


# ---------------------------------------------------------------------------------------------
# Ranges and checks (RabbitMQ's rabbit_amqqueue declare_args, rabbit_misc:check_expiry,
# rabbit_basic:parse_expiration).

MAX_EXPIRY = 315_360_000_000       # ms, ten years: the longest TTL, queue expiry or expiration
MAX_PRIORITY = 255
OVERFLOW_MODES = ("drop-head", "reject-publish", "reject-publish-dlx")
QUEUE_TYPES = ("classic", "quorum", "stream")
QUEUE_MODES = ("default", "lazy")
DLX_STRATEGIES = ("at-most-once", "at-least-once")
LEADER_LOCATORS = ("client-local", "balanced", "random", "least-leaders")
MAX_AGE_UNITS = {"Y": 365 * 86_400_000, "M": 30 * 86_400_000, "D": 86_400_000, "h": 3_600_000,
                 "m": 60_000, "s": 1000}
_MAX_AGE = re.compile(r"([0-9]+)(.*)\Z", re.S)

_ESC = {0x22: '\\"', 0x5C: "\\\\", 0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t", 0x0B: "\\v", 0x08: "\\b",
        0x0C: "\\f", 0x1B: "\\e"}


def erl_string(raw: bytes) -> str:
    """A list of bytes as Erlang's ~p prints it: "text" when printable (Latin-1), else [1,2,3]."""
    if all(32 <= c < 127 or c >= 160 or c in _ESC for c in raw):
        out = bytearray(b'"')
        for c in raw:
            e = _ESC.get(c)
            out += e.encode() if e else bytes((c,))
        out += b'"'
        return out.decode("utf-8", "replace")
    return "[" + ",".join(str(c) for c in raw) + "]"


def erl_tuple(col: int, *items, width: int = 80) -> str:
    """{a,b} as ~p prints it at column `col`: on one line if it fits `width`, else broken after
    the first element with the rest indented under it."""
    parts = [str(i) for i in items]
    flat = "{" + ",".join(parts) + "}"
    if col + len(flat) < width:
        return flat
    return "{" + (",\n" + " " * (col + 1)).join(parts) + "}"


def check_expiry(n: int):
    """rabbit_misc:check_expiry: None if n is a valid TTL or expiry in ms, else the error term."""
    if n < 0:
        return ("value_negative", n)
    if n > MAX_EXPIRY:
        return ("value_too_large", n)
    return None


def parse_expiration(value: str) -> int:
    """The `expiration` property in ms, parsed as RabbitMQ's string:to_integer does (an optional
    sign and ASCII digits, nothing after); a bad one closes the channel with 406."""
    if len(value) <= 11 and value.isascii() and value.isdigit():    # the usual case: fewer than 10^11 ms
        return int(value)
    raw = value.encode("utf-8", "surrogateescape")
    n = len(raw)
    i = 1 if n and raw[0] in b"+-" else 0
    j = i
    while j < n and 48 <= raw[j] <= 57:
        j += 1
    head = f"invalid expiration '{value}': "
    if j == i:
        raise ChannelError(head + "no_integer", E.PRECONDITION_FAILED)
    if j < n:
        raise ChannelError(head + erl_tuple(len(head), "leftover_string", erl_string(raw[j:])),
                           E.PRECONDITION_FAILED)
    ms = int(raw[:j])
    err = check_expiry(ms)
    if err is not None:
        raise ChannelError(head + erl_tuple(len(head), *err), E.PRECONDITION_FAILED)
    return ms


def _text(v):
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else v


def queue_type(args: dict) -> str:
    """The type a queue's arguments name ("classic" when they name none)."""
    return _text(args.get("x-queue-type")) or "classic"


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, (bool, Timestamp))


def _int_check(v):
    return None if _is_int(v) else f'"expected integer, got {_type_name(v)}"'


def _non_neg(v, _args):
    err = _int_check(v)
    if err is None and v < 0:
        return ("value_negative", v)
    return err


def _expires(v, _args):
    err = _int_check(v)
    if err is None:
        return ("value_zero", v) if v == 0 else check_expiry(v)
    return err


def _message_ttl(v, _args):
    err = _int_check(v)
    return check_expiry(v) if err is None else err


def _max_priority(v, args):
    err = _non_neg(v, args)
    if err is None and v > MAX_PRIORITY:
        return ("max_value_exceeded", v)
    return err


def _positive(v, args):
    err = _non_neg(v, args)
    if err is None and v == 0:
        return ("value_zero", v)
    return err


def _bool(v, _args):
    return None if isinstance(v, bool) else ("unacceptable_type", _type_name(v))


def _dlx(v, _args):
    return None if isinstance(v, (str, bytes)) else ("unacceptable_type", _type_name(v))


def _dlrk(v, args):
    if not isinstance(v, (str, bytes)):
        return ("unacceptable_type", _type_name(v))
    if "x-dead-letter-exchange" not in args:
        return "routing_key_but_no_dlx_defined"
    size = len(v.encode("utf-8", "surrogateescape") if isinstance(v, str) else v)
    if size > 255:
        # the routing key of every message dead-lettered: a shortstr in its deliveries (RabbitMQ
        # takes it, then fails every delivery of such a message with 541)
        return ("too_long", size)
    return None


def _one_of(choices, bad):
    def check(v, _args):
        if not isinstance(v, (str, bytes)):
            return ("unacceptable_type", _type_name(v))
        return None if _text(v) in choices else bad(_text(v))
    return check


def _queue_version(v, args):
    err = _non_neg(v, args)
    if err is None and v not in (1, 2):
        return f"\"unsupported queue version '{v}'\""
    return err


def _max_age(v, _args):
    if not isinstance(v, (str, bytes)):
        return ("unacceptable_type", _type_name(v))
    return None if max_age_ms(_text(v)) is not None else "invalid_max_age"


def max_age_ms(v: str):
    """x-max-age ("7D", "12h", ...) in ms, or None if it is not valid."""
    m = _MAX_AGE.match(v)
    if m is None or int(m.group(1)) <= 0 or m.group(2) not in MAX_AGE_UNITS:
        return None
    return int(m.group(1)) * MAX_AGE_UNITS[m.group(2)]


# In RabbitMQ's order: the first failing check is the one reported.
QUEUE_ARG_CHECKS = (
    ("x-expires", _expires),
    ("x-message-ttl", _message_ttl),
    ("x-dead-letter-exchange", _dlx),
    ("x-dead-letter-routing-key", _dlrk),
    ("x-dead-letter-strategy", _one_of(DLX_STRATEGIES, lambda v: "invalid_dlx_strategy")),
    ("x-max-length", _non_neg),
    ("x-max-length-bytes", _non_neg),
    ("x-max-in-memory-length", _non_neg),
    ("x-max-in-memory-bytes", _non_neg),
    ("x-max-priority", _max_priority),
    ("x-overflow", _one_of(OVERFLOW_MODES, lambda v: "invalid_overflow")),
    ("x-queue-mode", _one_of(QUEUE_MODES, lambda v: f"\"unsupported queue mode '{v}'\"")),
    ("x-queue-version", _queue_version),
    ("x-single-active-consumer", _bool),
    ("x-quorum-initial-group-size", _positive),
    ("x-max-age", _max_age),
    ("x-stream-max-segment-size-bytes", _non_neg),
    ("x-initial-cluster-size", _positive),
    ("x-queue-leader-locator", _one_of(LEADER_LOCATORS, lambda v: "invalid_queue_locator_arg")),
)
_check_queue_type = _one_of(QUEUE_TYPES, lambda v: f"\"unsupported queue type '{v}'\"")


def validate_queue_arguments(vhost_name: str, name: str, args: dict):
    """RabbitMQ's check of queue.declare arguments: the queue type, then each argument that type
    supports (type and range), then no argument of another type. Raises 406."""
    if not args:
        return
    rs = f"queue '{name}' in vhost '{vhost_name}'"

    def fail(k, err):
        head = f"invalid arg '{k}' for {rs}: "
        text = erl_tuple(len(head), *err, width=255) if isinstance(err, tuple) else err
        return ChannelError(head + text, E.PRECONDITION_FAILED)

    qt = args.get("x-queue-type")
    if "x-queue-type" in args:
        err = _check_queue_type(qt, args)
        if err is not None:
            raise fail("x-queue-type", err)
    qt = queue_type(args)
    supported = QUEUE_TYPE_ARGS[qt]
    for k, check in QUEUE_ARG_CHECKS:
        if k in supported and k in args:
            err = check(args[k], args)
            if err is not None:
                raise fail(k, err)
    for k in args:
        if k in KNOWN_QUEUE_ARGS and k not in supported:
            raise ChannelError(f"invalid arg '{k}' for {rs} of queue type rabbit_{qt}_queue",
                               E.PRECONDITION_FAILED)
