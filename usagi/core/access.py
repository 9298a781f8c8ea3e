"""The one gate: who may do what to a queue, an exchange or a topic, and who owns an exclusive queue.

RabbitMQ checks a user's rights in one place (rabbit_channel), and its management API reaches the
same code through an internal channel. Usagi does the same: the AMQP method handlers
(core/handlers/*.py, core/channel.py) and the management API (mgmt/api.py, mgmt/ops.py) call the
functions here, so a rule holds whichever way a client names a resource: a method field, an
argument that names an exchange (x-dead-letter-exchange, alternate-exchange) in any field type, a
management API path or a JSON body. Each function checks in RabbitMQ's order and raises
ChannelError with RabbitMQ's code and text; the management API turns those into HTTP replies the
way RabbitMQ's does.

Cost: each check is a few dictionary lookups and one permission-pattern match (auth/users.py) on a
name the client gave (a shortstr, at most 255 bytes); the publish path keeps a per-channel set of
exchanges already found writable (`publish_target`), so the pattern is matched once per channel
and exchange. Topic permissions cost one dictionary lookup when the user has none for the exchange.
"""
from __future__ import annotations

from decimal import Decimal

from ..amqp import errors as E
from ..amqp.errors import ChannelError
from ..amqp.table import Timestamp
from ..model.deadletter import routing_keys

DEFAULT_EXCHANGE = "amq.default"     # the name RabbitMQ checks permissions on for the exchange ""

# The argument of a new queue or exchange that names another exchange, by the kind declared.
EXCHANGE_ARGUMENT = {"queue": "x-dead-letter-exchange", "exchange": "alternate-exchange"}


# ---------------------------------------------------------------------------------------- errors

def refused(resource: str, name: str, vhost: str, user) -> ChannelError:
    return ChannelError(f"access to {resource} '{name}' in vhost '{vhost}' refused for user '{user.name}'",
                        E.ACCESS_REFUSED)


def not_found(resource: str, name: str, vhost: str) -> ChannelError:
    return ChannelError(f"no {resource} '{name}' in vhost '{vhost}'", E.NOT_FOUND)


def default_exchange_refused() -> ChannelError:
    return ChannelError("operation not permitted on the default exchange", E.ACCESS_REFUSED)


def reserved_name(resource: str, name: str) -> ChannelError:
    return ChannelError(f"{resource} name '{name}' contains reserved prefix 'amq.*'", E.ACCESS_REFUSED)


def locked(q) -> ChannelError:
    return ChannelError(
        f"cannot obtain exclusive access to locked queue '{q.name}' in vhost '{q.vhost}'. It could be "
        f"originally declared on another connection or the exclusive property value does not match "
        f"that of the original declaration.", E.RESOURCE_LOCKED)


# ---------------------------------------------------------------------------------------- the checks

def vhost_access(broker, user, vhost: str) -> bool:
    """May `user` open (and so see) `vhost`? RabbitMQ: any permission entry there."""
    return user is None or broker.users.permission(user.name, vhost) is not None


def check(broker, user, vhost: str, kind: str, resource: str, name: str) -> None:
    """Raise ACCESS_REFUSED unless `user` may `kind` (configure, write, read) the `resource`
    (queue, exchange) `name` in `vhost`. The default exchange is checked as 'amq.default', as
    RabbitMQ does. A user of None is the broker itself."""
    if user is None:
        return
    if not name and resource == "exchange":
        name = DEFAULT_EXCHANGE
    p = broker.users.permission(user.name, vhost)
    if p is None or not p.allows(kind, name):
        raise refused(resource, name, vhost, user)


def check_exclusive(q, owner) -> None:
    """An exclusive queue is only for the connection that declared it (`owner`; None for the
    management API, which has no connection): others get RESOURCE_LOCKED."""
    if q.exclusive_owner is not None and q.exclusive_owner is not owner:
        raise locked(q)


def check_topic(broker, user, vhost: str, x, routing_key: str, kind: str) -> None:
    """Topic permissions (RabbitMQ's topic authorisation): on a topic exchange, a routing key must
    match the user's `kind` (write: publish, read: bind and unbind) pattern for that exchange, if
    the user has one (the match itself is the user database's: UserDB.topic_allowed)."""
    if user is None or x.TYPE != "topic" or not broker.users.topic_permissions:
        return
    if not broker.users.topic_allowed(user.name, vhost, x.name, kind, routing_key):
        raise ChannelError(f"access to topic '{routing_key}' in exchange '{x.name}' in vhost "
                           f"'{vhost}' refused for user '{user.name}'", E.ACCESS_REFUSED)


# ---------------------------------------------------------------------------------------- arguments naming exchanges

def field_type(v, from_json: bool = False) -> str:
    """RabbitMQ's name for the field type of a decoded value. A byte array ('x') decodes to bytes;
    integers are named by their range as the usual clients send them ('I' or 'l'). A JSON number
    from the management API is always a long there, as RabbitMQ converts it."""
    if isinstance(v, str):
        return "longstr"
    if isinstance(v, (bytes, bytearray, memoryview)):
        return "binary"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, Timestamp):
        return "timestamp"
    if isinstance(v, int):
        return "long" if from_json or not -2147483648 <= v <= 2147483647 else "signedint"
    if isinstance(v, float):
        return "double"
    if isinstance(v, Decimal):
        return "decimal"
    if isinstance(v, dict):
        return "table"
    if isinstance(v, (list, tuple)):
        return "array"
    if v is None:
        return "void"
    return type(v).__name__


def named_exchange(arguments, resource: str, name: str, vhost: str, from_json: bool = False) -> str | None:
    """The exchange that the x-dead-letter-exchange (of a queue) or alternate-exchange (of an
    exchange) argument names, or None without one. Only a longstr names an exchange: a byte array
    or any other type is refused with 406, as RabbitMQ refuses it (rabbit_misc:r_arg)."""
    key = EXCHANGE_ARGUMENT[resource]
    if not arguments or key not in arguments:
        return None
    v = arguments[key]
    if isinstance(v, str):
        return v
    raise ChannelError(f"invalid type '{field_type(v, from_json)}' for arg '{key}' in {resource} '{name}' "
                       f"in vhost '{vhost}'", E.PRECONDITION_FAILED)


# ---------------------------------------------------------------------------------------- queues

def declare_queue(broker, user, vhost, name: str, arguments, server_named: bool = False,
                  from_json: bool = False) -> None:
    """queue.declare (not passive) and PUT /api/queues/V/Q. RabbitMQ's order: the reserved prefix
    (a name the client gave; server-named ones are amq.gen-...), configure on the queue; then, only
    if the queue is new, the type of x-dead-letter-exchange, read on the queue and write on that
    exchange. An existing queue is compared (equivalence, exclusivity) by the declaration itself."""
    if not server_named and name.startswith("amq."):
        raise reserved_name("queue", name)
    check(broker, user, vhost.name, "configure", "queue", name)
    if name not in vhost.queues:
        dlx = named_exchange(arguments, "queue", name, vhost.name, from_json)
        if dlx is not None:
            check(broker, user, vhost.name, "read", "queue", name)
            check(broker, user, vhost.name, "write", "exchange", dlx)


def delete_queue(broker, user, vhost, name: str, owner):
    """queue.delete and DELETE /api/queues/V/Q: configure on the queue (existing or not), then its
    exclusivity. Returns the queue, or None if there is none (RabbitMQ: delete-ok, 0 messages)."""
    check(broker, user, vhost.name, "configure", "queue", name)
    q = vhost.queues.get(name)
    if q is not None:
        check_exclusive(q, owner)
    return q


def readable_queue(broker, user, vhost, name: str, owner):
    """basic.consume, basic.get, queue.purge and their API forms (get, peek, DELETE contents):
    read on the queue, then that it exists (404), then its exclusivity (405)."""
    check(broker, user, vhost.name, "read", "queue", name)
    q = vhost.queues.get(name)
    if q is None:
        raise not_found("queue", name, vhost.name)
    check_exclusive(q, owner)
    return q


# ---------------------------------------------------------------------------------------- exchanges

def declare_exchange(broker, user, vhost, name: str, arguments, from_json: bool = False) -> None:
    """exchange.declare (not passive) and PUT /api/exchanges/V/X. RabbitMQ's order: not the default
    exchange, configure on the exchange; then, only if it is new, the reserved prefix, the type of
    alternate-exchange, read on the new exchange and write on the alternate."""
    if not name:
        raise default_exchange_refused()
    check(broker, user, vhost.name, "configure", "exchange", name)
    if name not in vhost.exchanges:
        if name.startswith("amq."):
            raise reserved_name("exchange", name)
        ae = named_exchange(arguments, "exchange", name, vhost.name, from_json)
        if ae is not None:
            check(broker, user, vhost.name, "read", "exchange", name)
            check(broker, user, vhost.name, "write", "exchange", ae)


def delete_exchange(broker, user, vhost, name: str) -> None:
    """exchange.delete and DELETE /api/exchanges/V/X: not the default exchange, not a system
    (amq.*) one, existing or not; then configure on it."""
    if not name:
        raise default_exchange_refused()
    if name.startswith("amq."):
        raise ChannelError(f"deletion of system exchange '{name}' in vhost '{vhost.name}' not allowed",
                           E.ACCESS_REFUSED)
    check(broker, user, vhost.name, "configure", "exchange", name)


# ---------------------------------------------------------------------------------------- bindings

def binding(broker, user, vhost, source: str, dest_kind: str, dest: str, routing_key: str,
            arguments, owner, unbind: bool = False):
    """queue.bind/unbind, exchange.bind/unbind and the management API's bindings (POST, DELETE).

    RabbitMQ's order: write on the destination, neither end the default exchange, read on the
    source, topic read permission for the routing key if the source is a topic exchange; then the
    ends must exist (the source first). Unbinding where either end or the binding itself does not
    exist succeeds with nothing to do (None is returned). The destination queue's exclusivity is
    checked for every bind, and for an unbind only when the binding exists.
    Returns (source exchange, destination), or None for an unbind that has nothing to do."""
    name = vhost.name
    check(broker, user, name, "write", dest_kind, dest)
    if not source or (dest_kind == "exchange" and not dest):
        raise default_exchange_refused()
    check(broker, user, name, "read", "exchange", source)
    x = vhost.exchanges.get(source)
    if x is not None:
        check_topic(broker, user, name, x, routing_key, "read")
    d = (vhost.queues if dest_kind == "queue" else vhost.exchanges).get(dest)
    if x is None or d is None:
        if unbind:
            return None
        raise not_found("exchange", source, name) if x is None else not_found(dest_kind, dest, name)
    if unbind and not x.has_binding(d, routing_key, arguments or {}):
        return None
    if dest_kind == "queue":
        check_exclusive(d, owner)
    return x, d


# ---------------------------------------------------------------------------------------- publishing

def publish_target(broker, user, vhost, name: str, write_ok: set | None = None):
    """basic.publish and POST /api/exchanges/V/X/publish: write on the exchange, that it exists,
    that it is not internal. Returns the exchange. `write_ok` (a channel's set of exchange names
    already found writable) spares the pattern match on later publishes."""
    if write_ok is None or name not in write_ok:
        check(broker, user, vhost.name, "write", "exchange", name)
        if write_ok is not None:
            write_ok.add(name)
    x = vhost.exchanges.get(name)
    if x is None:
        raise not_found("exchange", name, vhost.name)
    if x.internal:
        raise ChannelError(f"cannot publish to internal exchange '{name}' in vhost '{vhost.name}'",
                           E.ACCESS_REFUSED)
    return x


def check_publish_topics(broker, user, vhost: str, x, msg) -> None:
    """Topic write permission for a message published to a topic exchange: for its routing key
    and, as RabbitMQ 4.x checks them, the keys of its CC and BCC headers (which route it too)."""
    if user is None or x.TYPE != "topic":
        return
    tp = broker.users.topic_permissions
    if not tp or (user.name, vhost, x.name) not in tp:
        return
    for key in routing_keys(msg):
        check_topic(broker, user, vhost, x, key, "write")
