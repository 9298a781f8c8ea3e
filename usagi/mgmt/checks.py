"""Checks of what the management API is sent, made before anything changes.

Every value of a request body or a definitions file is checked here for its JSON type and its
range, with RabbitMQ's reasons where RabbitMQ gives one, so that nothing stored can break a later
read: a name that is not a string breaks every listing that sorts or prints it, a TTL past ten
years a timer, a regex that does not compile every check that uses it, an integer past 64 bits
the store. The checks return normalised values and raise ApiError 400; they change nothing.
Their cost is linear in the size of what they are given.
"""
from __future__ import annotations

import base64
import math
import re

from ..amqp import erlfmt
from ..auth.passwords import MD5, SHA256, SHA512
from ..core.arguments import LEADER_LOCATORS, MAX_EXPIRY, OVERFLOW_MODES, QUEUE_MODES, max_age_ms
from ..model import patterns
from .util import bad_request, key_missing, parse_tags

HASHING_ALGORITHMS = (SHA256, SHA512, MD5)
APPLY_TO = ("all", "queues", "exchanges", "classic_queues", "quorum_queues", "streams")
QUEUE_TYPES = ("classic", "quorum", "stream")
VHOST_LIMITS = ("max-connections", "max-queues")
USER_LIMITS = ("max-connections", "max-channels")
MAX_NAME = 255                      # queue, exchange and vhost names travel as AMQP shortstrs
MAX_SEGMENT_SIZE = 3_000_000_000    # stream-max-segment-size-bytes, as RabbitMQ
MAX_LONG = 2 ** 63 - 1              # integers are AMQP longs (and SQLite integers) at most


# ---------------------------------------------------------------------------------------- terms

def erl(v) -> str:
    """A JSON value as Erlang's ~p prints what RabbitMQ decoded from it (for error reasons)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, str):
        return erlfmt.binary(v.encode("utf-8", "surrogatepass"))
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return _erl_float(v)
    if isinstance(v, list):
        return "[" + ",".join(erl(x) for x in v) + "]"
    if isinstance(v, dict):
        items = sorted(v.items(), key=lambda kv: str(kv[0]).encode("utf-8", "surrogatepass"))
        return "#{" + ",".join(f"{erl(k)} => {erl(x)}" for k, x in items) + "}"
    return repr(v)


def _erl_float(f: float) -> str:
    if not math.isfinite(f):
        return repr(f)
    r = repr(f)
    mant, _, exp = r.partition("e")
    if "." not in mant:
        mant += ".0"
    return f"{mant}e{int(exp)}" if exp else mant


def failed(text: str):
    """RabbitMQ's shape for a rejected parameter, policy or limit."""
    return bad_request(f"Validation failed\n\n{text}\n")


def is_int(v) -> bool:
    """An integer a 64-bit signed field holds (JSON has bigger ones; nothing downstream does)."""
    return isinstance(v, int) and not isinstance(v, bool) and -MAX_LONG - 1 <= v <= MAX_LONG


# ---------------------------------------------------------------------------------------- scalars

def name(what: str, v, limit: int | None = MAX_NAME, empty: bool = False) -> str:
    """A name: a string of text (at most `limit` bytes of UTF-8; not empty unless `empty`)."""
    if not isinstance(v, str):
        raise bad_request(f"{what} should be binary, actually was {erl(v)}")
    if not v and not empty:
        raise bad_request(f"{what} should not be empty")
    try:
        size = len(v.encode("utf-8"))
    except UnicodeEncodeError:
        raise bad_request(f"{what} is not valid UTF-8") from None
    if limit is not None and size > limit:
        raise bad_request(f"{what} should be less than {limit} bytes, actually was {size}\n")
    return v


def text(what: str, v, default: str = "") -> str:
    if v is None:
        return default
    if not isinstance(v, str):
        raise bad_request(f"{what} should be binary, actually was {erl(v)}")
    return v


def boolean(v, default: bool = False) -> bool:
    """A flag of a body, as RabbitMQ's management API parses one: true, false, "true", "false"."""
    if v is None:
        return default
    if isinstance(v, bool):
        return v
    if v == "true":
        return True
    if v == "false":
        return False
    raise bad_request(["not_boolean", v])


def tags(v) -> list:
    if v is None or isinstance(v, str) or (isinstance(v, list) and all(isinstance(t, str) for t in v)):
        return parse_tags(v)
    raise bad_request(f"tags should be a list of strings or a comma-separated string, actually was {erl(v)}")


def regex(what: str, v, as_string: bool = False) -> str:
    """A permission pattern: a string that compiles within the matcher's limits (model.patterns).
    Refused with RabbitMQ's reason, {invalid_regexp, Pattern, {Text, Offset}} as its JSON shows
    that term: the pattern a charlist for permissions, a binary (`as_string`) for topic permissions."""
    if not isinstance(v, str):
        raise bad_request(f"{what} should be binary, actually was {erl(v)}")
    try:
        patterns.validate(v)
    except patterns.PatternError as e:
        shown = v if as_string else list(v.encode("utf-8", "surrogatepass"))
        why = "pattern_too_long" if e.too_long else [[ord(ch) for ch in e.reason], e.offset]
        raise bad_request(["invalid_regexp", shown, why]) from None
    return v


MAX_VALUES = 65_536     # values in one argument table or parameter value: over AMQP a table is
                        # bounded by the frame size (131,072 bytes hold ~26,000 values); from the
                        # API it is bounded here, so that no one entity makes a listing's step long


def bounded(what: str, v):
    """Refuse a value holding more than MAX_VALUES values (its walk stops there)."""
    stack = [v]
    n = 0
    while stack:
        x = stack.pop()
        n += 1
        if n > MAX_VALUES:
            raise bad_request(f"{what} holds more than {MAX_VALUES} values")
        if isinstance(x, dict):
            stack.extend(x.values())
        elif isinstance(x, list):
            stack.extend(x)
    return v


def no_nulls(v):
    """AMQP tables have no null (RabbitMQ: null_not_allowed) and no integer past 64 bits.
    Iterative: nesting costs no stack."""
    bounded("arguments", v)
    stack = [v]
    while stack:
        x = stack.pop()
        if x is None:
            raise bad_request("null_not_allowed")
        if isinstance(x, int) and not isinstance(x, bool) and not is_int(x):
            raise bad_request(["value_too_large", x])
        if isinstance(x, float) and not math.isfinite(x):
            raise bad_request(["not_a_number", str(x)])
        if isinstance(x, dict):
            stack.extend(x.values())
        elif isinstance(x, list):
            stack.extend(x)


def table(what: str, v) -> dict:
    """Arguments of a queue, an exchange or a binding: a JSON object (or [] or absent)."""
    if v is None or v == []:
        return {}
    if not isinstance(v, dict):
        raise bad_request(f"{what} should be a dictionary, actually was {erl(v)}")
    no_nulls(v)
    return v


# ---------------------------------------------------------------------------------------- bodies

def vhost_body(body: dict) -> dict:
    """The settable fields of PUT /api/vhosts/NAME (or a definitions vhost), normalised; only
    those given."""
    out = {}
    if "description" in body:
        out["description"] = text("description", body["description"])
    if "tags" in body:
        out["tags"] = tags(body["tags"])
    if "default_queue_type" in body or "defaultqueuetype" in body:
        # RabbitMQ 3.10 reads "defaultqueuetype", 3.11 and later "default_queue_type" first
        dqt = body["default_queue_type"] if "default_queue_type" in body else body["defaultqueuetype"]
        if dqt is None:
            dqt = "classic"
        if dqt not in QUEUE_TYPES + ("undefined",):
            raise bad_request(f"Invalid queue type '{dqt}'")
        out["default_queue_type"] = "classic" if dqt == "undefined" else dqt
    return out


def user_body(body: dict) -> dict:
    """PUT /api/users/NAME (or a definitions user), checked: tags, password or hash, limits."""
    if "tags" not in body and "administrator" not in body:
        raise bad_request("tags_not_present")
    if "password" in body and "password_hash" in body:
        raise bad_request("both_password_and_password_hash_are_provided")
    if "tags" in body:
        t = tags(body["tags"])
    else:
        t = ["administrator"] if boolean(body.get("administrator")) else []
    algo = body.get("hashing_algorithm") or SHA256
    if algo not in HASHING_ALGORITHMS:
        raise bad_request(f"unknown hashing algorithm '{algo}'")
    password = body.get("password")
    if password is not None and not isinstance(password, str):
        raise bad_request("password must be a string")
    phash = body.get("password_hash")
    if phash is not None:
        if not isinstance(phash, str):
            raise bad_request("password_hash must be a string")
        if phash:
            try:
                base64.b64decode(phash, validate=True)
            except ValueError:
                raise bad_request("password_hash is not valid base64") from None
    lim = body.get("limits")
    if lim is not None:
        lim = limits(lim, USER_LIMITS)
    return {"tags": t, "hashing_algorithm": algo, "password": password, "password_hash": phash,
            "limits": lim}


def permission_body(body: dict) -> tuple:
    key_missing(body, ("configure", "write", "read"))
    return tuple(regex(k, body[k]) for k in ("configure", "write", "read"))


def topic_permission_body(body: dict) -> tuple:
    key_missing(body, ("exchange", "write", "read"))
    return (name("exchange", body["exchange"], empty=True), regex("write", body["write"], as_string=True),
            regex("read", body["read"], as_string=True))


# ---------------------------------------------------------------------------------------- limits

def limit_value(key: str, v, known) -> int:
    if key not in known:
        raise failed(f"Unrecognised terms [{{{erl(key)},{erl(v)}}}] in limits")
    if isinstance(v, str) and re.fullmatch(r"-?[0-9]{1,20}", v):
        v = int(v)
    if not is_int(v):
        raise failed(f"{key} should be a number, actually was {erl(v)}")
    return v


def limits(v, known) -> dict:
    if v == []:
        return {}
    if not isinstance(v, dict):
        raise bad_request(f"limits should be a dictionary, actually was {erl(v)}")
    return {k: limit_value(k, x, known) for k, x in v.items()}


# ---------------------------------------------------------------------------------------- policies

def _nonneg(v):
    return is_int(v) and v >= 0


def _expiry(lo):
    return lambda v: is_int(v) and lo <= v <= MAX_EXPIRY


def _string(v):
    return isinstance(v, str)


def _one_of(*choices):
    return lambda v: isinstance(v, str) and v in choices


# (check, what RabbitMQ calls an invalid value) per policy key. TTLs and expiries are held to
# the ten years every other TTL is held to: a policy is applied to queues as their arguments.
POLICY_CHECKS = {
    "alternate-exchange": (_string, "alternate exchange name"),
    "dead-letter-exchange": (_string, "dead letter exchange name"),
    "dead-letter-routing-key": (lambda v: isinstance(v, str) and len(v.encode("utf-8")) <= 255,
                                "dead letter routing key"),
    "dead-letter-strategy": (_one_of("at-most-once", "at-least-once"), "dead letter strategy"),
    "message-ttl": (_expiry(0), "message TTL"),
    "expires": (_expiry(1), "queue expiry"),
    "max-length": (_nonneg, "maximum length"),
    "max-length-bytes": (_nonneg, "maximum length in bytes"),
    "max-in-memory-length": (_nonneg, "maximum memory in bytes"),
    "max-in-memory-bytes": (_nonneg, "maximum memory in bytes"),
    "queue-mode": (_one_of(*QUEUE_MODES), "queue-mode value"),
    "queue-version": (lambda v: is_int(v) and v in (1, 2), "queue-version value"),
    "overflow": (_one_of(*OVERFLOW_MODES), "overflow value"),
    "delivery-limit": (_nonneg, "delivery limit"),
    "max-age": (lambda v: isinstance(v, str) and max_age_ms(v) is not None, "max age"),
    "queue-leader-locator": (_one_of(*LEADER_LOCATORS), "queue leader locator value"),
    "queue-master-locator": (_one_of("min-masters", "client-local", "random"), "queue master locator"),
    "initial-cluster-size": (_nonneg, "cluster size"),
    "target-group-size": (_nonneg, "target group size"),
    "stream-max-segment-size-bytes": (lambda v: _nonneg(v) and v <= MAX_SEGMENT_SIZE, "segment size"),
    "consumer-timeout": (_nonneg, "consumer timeout"),
    "federation-upstream-set": (_string, "federation upstream set"),
    "federation-upstream": (_string, "federation upstream"),
    "ha-mode": (_one_of("all", "exactly", "nodes"), "ha-mode value"),
    "ha-params": (lambda v: is_int(v) or (isinstance(v, list) and all(isinstance(x, str) for x in v)),
                  "ha-params value"),
    "ha-sync-mode": (_one_of("manual", "automatic"), "ha-sync-mode value"),
    "ha-sync-batch-size": (lambda v: is_int(v) and v > 0, "ha-sync-batch-size value"),
    "ha-promote-on-shutdown": (_one_of("when-synced", "always"), "ha-promote-on-shutdown value"),
    "ha-promote-on-failure": (_one_of("when-synced", "always"), "ha-promote-on-failure value"),
}
POLICY_KEYS = tuple(POLICY_CHECKS)
OPERATOR_POLICY_KEYS = ("expires", "message-ttl", "max-length", "max-length-bytes", "max-in-memory-length",
                        "max-in-memory-bytes", "delivery-limit", "overflow", "target-group-size")


def _sorted_items(d: dict) -> list:
    return sorted(d.items(), key=lambda kv: kv[0].encode("utf-8", "surrogatepass"))


def policy_definition(definition, operator: bool = False) -> dict:
    if isinstance(definition, dict) and not definition or definition == []:
        raise failed("no policy provided")
    if not isinstance(definition, dict):
        raise failed(f"definition must be a dictionary: {erl(definition)}")
    known = OPERATOR_POLICY_KEYS if operator else POLICY_KEYS
    unknown = [(k, v) for k, v in _sorted_items(definition) if k not in known]
    if unknown:
        terms = ",".join(f"{{{erl(k)},{erl(v)}}}" for k, v in unknown)
        raise failed(f"[{terms}] are not recognised policy settings")
    for k, v in _sorted_items(definition):
        check, what = POLICY_CHECKS[k]
        if not check(v):
            raise failed(f"{erl(v)} is not a valid {what}")
    return definition


def policy_body(body: dict, operator: bool = False) -> dict:
    """PUT /api/policies/V/NAME (or operator-policies): pattern, definition, priority, apply-to."""
    key_missing(body, ("pattern", "definition"))
    pattern = body["pattern"]
    if not isinstance(pattern, str):
        raise failed(f"pattern should be a binary but was {erl(pattern)}")
    try:
        patterns.validate(pattern)
    except patterns.PatternError as e:
        why = (f"must not exceed {patterns.MAX_PATTERN_LENGTH} bytes" if e.too_long else
               f"should be regular expression but is invalid: {e.erlang()}")
        raise failed(f"pattern {why}") from None
    definition = policy_definition(body["definition"], operator)
    priority = body.get("priority", 0)
    if priority is None:
        priority = 0
    if isinstance(priority, str) and re.fullmatch(r"-?[0-9]{1,20}", priority):
        priority = int(priority)
    if not is_int(priority):
        raise failed(f"priority should be a number, actually was {erl(priority)}")
    apply_to = body.get("apply-to", "all")
    if apply_to is None:
        apply_to = "all"
    if apply_to not in APPLY_TO:
        raise failed(f"apply-to '{apply_to if isinstance(apply_to, str) else erl(apply_to)}' unrecognised; "
                     f"should be 'queues', 'exchanges' or 'all'")
    return {"pattern": pattern, "definition": definition, "priority": priority, "apply-to": apply_to}


# ---------------------------------------------------------------------------------------- parameters

def parameter_value(component: str, pname: str, value):
    """A runtime parameter's value. Vhost limits and operator policies, which RabbitMQ keeps as
    parameters, are checked as what they are; others may be any JSON value."""
    if component == "vhost-limits":
        if pname != "limits":
            raise failed(f"name should be limits, actually was {erl(pname)}")
        return limits(value, VHOST_LIMITS)
    if component == "operator_policy":
        if not isinstance(value, dict):
            raise failed(f"operator_policy value should be a dictionary, actually was {erl(value)}")
        return policy_body(value, operator=True)
    return bounded("value", value)


def global_parameter(pname, value):
    name("name", pname)
    if pname == "cluster_name":
        name("cluster_name", value, limit=None)
    return bounded("value", value)


# ---------------------------------------------------------------------------------------- entities

def queue_body(qname, body: dict, durable: bool = False) -> tuple:
    """PUT /api/queues/V/NAME (or a definitions queue, durable unless it says otherwise):
    (durable, auto_delete, arguments)."""
    name("queue", qname, empty=True)
    return (boolean(body.get("durable"), durable), boolean(body.get("auto_delete")),
            table("arguments", body.get("arguments")))


def exchange_body(xname, body: dict, durable: bool = False) -> tuple:
    """PUT /api/exchanges/V/NAME (or a definitions exchange, durable unless it says otherwise):
    (type, durable, auto_delete, internal, arguments)."""
    name("exchange", xname, empty=True)
    type_ = body.get("type") or "direct"
    if not isinstance(type_, str):
        raise bad_request(f"unknown exchange type '{erl(type_)}'")
    return (type_, boolean(body.get("durable"), durable), boolean(body.get("auto_delete")),
            boolean(body.get("internal")), table("arguments", body.get("arguments")))


def binding_body(body: dict) -> tuple:
    """POST /api/bindings/... (or a definitions binding): (routing_key, arguments)."""
    rk = body.get("routing_key", "")
    if rk is None:
        rk = ""
    if not isinstance(rk, str):
        raise bad_request(["not_string", "routing_key"])
    name("routing_key", rk, limit=None, empty=True)
    return rk, table("arguments", body.get("arguments"))
