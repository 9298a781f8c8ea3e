"""Engine operations the management API needs, built from the broker's public methods and attributes.

Everything here runs synchronously on the event loop, like the AMQP handlers. Mutations go through
the broker's own methods (declare, bind, delete, add_user, set_permissions...) so that durable
state is written to the store; where the broker has no method (vhost metadata updates, user
updates, policies) the store is told here in the same format the broker uses.

What grows with what users made - a definitions import or export of 200,000 queues - is written as
generators of bounded steps (one element each) that the API runs a slice at a time (mgmt.slices).
"""
from __future__ import annotations

import base64
import secrets
import struct

from .. import RABBITMQ_COMPAT_VERSION
from ..amqp import errors as E
from ..amqp import properties as P
from ..amqp.errors import ChannelError
from ..amqp.table import Timestamp
from ..core import access
from ..core.arguments import parse_expiration
from ..core.limits import vhost_limit
from ..model.exchanges import TYPES
from ..model import patterns
from ..model.queue import Queue
from ..model.util import freeze
from ..model.vhost import VHost
from . import checks, slices
from .util import ApiError, bad_request, jsonable, key_missing

HASHING_ALGORITHMS = checks.HASHING_ALGORITHMS

# ---------------------------------------------------------------------------------------- policies

APPLY_TO = checks.APPLY_TO
POLICY_KEYS = checks.POLICY_KEYS
OPERATOR_POLICY_KEYS = checks.OPERATOR_POLICY_KEYS


def validate_policy_definition(definition, operator: bool = False) -> None:
    checks.policy_definition(definition, operator)


def put_policy(broker, vhost: str, name: str, body: dict, operator: bool = False) -> bool:
    """Create or replace a (operator) policy through the broker, which applies it. True if created."""
    checks.name("name", name, limit=None)
    p = checks.policy_body(body, operator)
    table = broker.operator_policies if operator else broker.policies
    created = (vhost, name) not in table
    broker.set_policy(vhost, name, p["pattern"], p["definition"], p["priority"], p["apply-to"], operator=operator)
    return created


def delete_policy(broker, vhost: str, name: str, operator: bool = False) -> bool:
    return broker.clear_policy(vhost, name, operator=operator)


def policy_json(p: dict, vhost: str | None = None, name: str | None = None) -> dict:
    return {"vhost": p.get("vhost", vhost), "name": p.get("name", name), "pattern": p.get("pattern"),
            "apply-to": p.get("apply-to", "all"), "definition": jsonable(p.get("definition") or {}),
            "priority": p.get("priority", 0)}


def _applies(p: dict, kind: str, obj) -> bool:
    a = p.get("apply-to", "all")
    if a == "all":
        return True
    if kind == "exchange":
        return a == "exchanges"
    if a == "queues":
        return True
    qtype = obj.arguments.get("x-queue-type", "classic") if obj.arguments else "classic"
    if isinstance(qtype, bytes):
        qtype = qtype.decode("utf-8", "replace")
    return {"classic_queues": "classic", "quorum_queues": "quorum", "streams": "stream"}.get(a) == qtype


def effective_policy(broker, kind: str, obj) -> dict | None:
    """The policy applied to a queue or exchange: the engine's choice, else the highest priority match."""
    if hasattr(obj, "policy"):
        name = obj.policy
        return broker.policies.get((obj.vhost, name)) if name else None
    best = None
    for (vhost, _name), p in broker.policies.items():
        if vhost != obj.vhost or not _applies(p, kind, obj):
            continue
        if not patterns.matches(p.get("pattern", ""), obj.name):
            continue
        if best is None or p.get("priority", 0) > best.get("priority", 0):
            best = p
    return best


# ---------------------------------------------------------------------------------------- limits

VHOST_LIMITS = checks.VHOST_LIMITS
USER_LIMITS = checks.USER_LIMITS


def _limit_value(name: str, body: dict, known) -> int:
    if name not in known:
        raise checks.failed(f"Unrecognised terms [{{{checks.erl(name)},{checks.erl(body.get('value'))}}}] "
                            f"in limits")
    key_missing(body, ("value",))
    return checks.limit_value(name, body["value"], known)


def set_vhost_limit(broker, v, name: str, body: dict) -> bool:
    value = _limit_value(name, body, VHOST_LIMITS)
    created = name not in v.limits
    v.limits[name] = value
    _save_vhost_limits(broker, v)
    return created


def clear_vhost_limit(broker, v, name: str) -> bool:
    if v.limits.pop(name, None) is None:
        return False
    _save_vhost_limits(broker, v)
    return True


def _save_vhost_limits(broker, v):
    # RabbitMQ keeps vhost limits as the runtime parameter vhost-limits/limits of the vhost
    key = (v.name, "vhost-limits", "limits")
    if v.limits:
        p = {"vhost": v.name, "component": "vhost-limits", "name": "limits", "value": dict(v.limits)}
        broker.parameters[key] = p
        broker.store.put_definition("parameter", key, p)
    elif broker.parameters.pop(key, None) is not None:
        broker.store.delete_definition("parameter", key)


def load_vhost_limits(broker):
    """Vhost limits recovered as parameters go back onto the vhosts (at service start)."""
    for (vname, comp, name), p in list(broker.parameters.items()):
        v = broker.vhosts.get(vname)
        if comp == "vhost-limits" and name == "limits" and v is not None and isinstance(p.get("value"), dict):
            v.limits.update(p["value"])


def set_user_limit(broker, u, name: str, body: dict) -> bool:
    value = _limit_value(name, body, USER_LIMITS)
    created = name not in u.limits
    u.limits[name] = value
    broker.save_user(u)
    return created


# ---------------------------------------------------------------------------------------- vhosts, users

def put_vhost(broker, name: str, body: dict, acting_user: str | None = None) -> bool:
    """Create a vhost or update its metadata. Returns True if it was created.

    As in RabbitMQ, the user that creates a vhost through the API (PUT or a definitions import)
    is granted full permissions on it."""
    checks.name("vhost", name)
    fields = checks.vhost_body(body)
    v = broker.vhosts.get(name)
    if v is None:
        broker.add_vhost(name, fields.get("description", ""), fields.get("tags", []),
                         fields.get("default_queue_type", "classic"))
        if acting_user is not None and acting_user in broker.users.users:
            broker.set_permissions(acting_user, name, ".*", ".*", ".*")
        return True
    changed = False
    for attr in ("description", "tags", "default_queue_type"):
        if attr in fields and getattr(v, attr) != fields[attr]:
            setattr(v, attr, fields[attr])
            changed = True
    if changed:
        broker.store.put_definition("vhost", (name,), {"name": name, **v.metadata()})
    return False


def put_user(broker, name: str, body: dict) -> bool:
    """PUT /api/users/NAME and the users of a definitions import. Returns True if created."""
    checks.name("user", name, limit=None)
    f = checks.user_body(body)
    tags, algo, password, phash, limits = (f["tags"], f["hashing_algorithm"], f["password"],
                                           f["password_hash"], f["limits"])
    u = broker.users.users.get(name)
    if u is None:
        if password is not None:
            u = broker.add_user(name, password, tags)
        else:
            u = broker.add_user(name, None, tags, password_hash=phash or "", hashing_algorithm=algo)
        if limits:            # RabbitMQ's put_user sets the limits an export carries
            u.limits = limits
            broker.save_user(u)
        return True
    if limits is not None:
        u.limits = limits
    u.tags = tags
    if password is not None:
        u.set_password(password)
    elif phash is not None:
        u.password_hash = phash
        u.hashing_algorithm = algo
    else:
        u.password_hash = ""          # RabbitMQ clears the password when neither is given
    broker.save_user(u)
    return False


def put_permission(broker, user: str, vhost: str, body: dict) -> bool:
    configure, write, read = checks.permission_body(body)
    if user not in broker.users.users or vhost not in broker.vhosts:
        raise bad_request("vhost_or_user_not_found")
    created = broker.users.permission(user, vhost) is None
    broker.set_permissions(user, vhost, configure, write, read)
    return created


def put_topic_permission(broker, user: str, vhost: str, body: dict) -> bool:
    exchange, write, read = checks.topic_permission_body(body)
    if user not in broker.users.users or vhost not in broker.vhosts:
        raise bad_request("vhost_or_user_not_found")
    return broker.set_topic_permission(user, vhost, exchange, write, read)


# ---------------------------------------------------------------------------------------- publish, get

_SHORTSTR_PROPS = ("content_type", "content_encoding", "correlation_id", "reply_to", "expiration",
                   "message_id", "type", "user_id", "app_id", "cluster_id")
_INT_PROPS = ("delivery_mode", "priority", "timestamp")


def check_no_null(v):
    """RabbitMQ refuses a JSON null in an AMQP table (headers, arguments). Iterative: a body can
    nest as deep as the JSON parser allows."""
    stack = [v]
    while stack:
        v = stack.pop()
        if v is None:
            raise bad_request("null_not_allowed")
        if isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)


def encode_properties(props: dict) -> bytes:
    """The management API's JSON `properties` as content-header property bytes."""
    if isinstance(props, list) and not props:
        props = {}
    if not isinstance(props, dict):
        raise bad_request("properties must be a JSON object")
    out = {}
    for k in _INT_PROPS:
        if k in props:
            v = props[k]
            if isinstance(v, bool) or not isinstance(v, int):
                raise bad_request(["not_int", k])
            if k != "timestamp" and not 0 <= v <= 255:
                raise bad_request(["not_int", k])
            out[k] = Timestamp(v) if k == "timestamp" else v
    for k in _SHORTSTR_PROPS:
        if k in props:
            v = props[k]
            if v is None:
                raise bad_request("null_not_allowed")
            if not isinstance(v, str):
                v = str(jsonable(v))
            if len(v.encode("utf-8", "surrogateescape")) > 255:
                raise bad_request(["too_long", k])
            out[k] = v
    if "headers" in props:
        h = props["headers"]
        if not isinstance(h, dict):
            raise bad_request(["not_table", "headers"])
        check_no_null(h)
        out["headers"] = h
    try:
        return P.encode(out)
    except (OverflowError, ValueError, TypeError, struct.error):
        # an integer past 64 bits, or a value AMQP has no type for
        raise bad_request(["not_encodable", "headers"]) from None


def decode_payload(body: dict) -> bytes:
    payload = body["payload"]
    enc = body["payload_encoding"]
    if not isinstance(payload, str):
        raise bad_request(["not_string", "payload"])
    if enc == "string":
        return payload.encode("utf-8", "surrogateescape")
    if enc == "base64":
        try:
            return base64.b64decode(payload, validate=True)
        except ValueError:
            raise bad_request(["not_base64", payload]) from None
    raise bad_request(["unsupported_encoding", enc])


def publish(broker, user, vhost, exchange_name: str, body: dict) -> bool:
    """POST /api/exchanges/V/X/publish: route one message as basic.publish would. Returns routed."""
    key_missing(body, ("routing_key", "properties", "payload", "payload_encoding"))
    props = encode_properties(body["properties"])
    payload = decode_payload(body)
    rk = body["routing_key"]
    if not isinstance(rk, str):
        raise bad_request(["not_string", "routing_key"])
    if len(rk.encode("utf-8", "surrogateescape")) > 255:      # a shortstr in every delivery
        raise bad_request(["too_long", "routing_key"])
    try:
        if len(payload) > broker.config.max_message_size:
            raise ChannelError(f"message size {len(payload)} is larger than configured max size "
                               f"{broker.config.max_message_size}", E.PRECONDITION_FAILED)
        # the checks basic.publish meets: write on the exchange, exists, not internal; topic
        # permissions for its routing keys; the user_id property
        x = access.publish_target(broker, user, vhost, exchange_name)
        scan = P.scan(props)
        msg = broker.new_message(exchange_name, rk, props, payload, scan)
        access.check_publish_topics(broker, user, vhost.name, x, msg)
        if scan.user_id is not None and user is not None and scan.user_id != user.name:
            raise ChannelError(f"user_id property set to '{scan.user_id}' but authenticated user was "
                               f"'{user.name}'", E.PRECONDITION_FAILED)
        if scan.expiration is not None:
            parse_expiration(scan.expiration)       # as basic.publish: 406, reported as a 400
    except ChannelError as e:
        # RabbitMQ publishes over an internal channel and reports its close as a bad request
        raise bad_request(f"{e.code} {e.reply_text}") from None
    route = getattr(broker, "route_publish", broker.route)    # alternate exchanges, CC/BCC, delays
    queues = route(vhost, x, msg)
    broker.stats["publish"] += 1
    if queues:
        x.publish_out += 1
        for q in queues:
            if q is not None:
                broker.enqueue(q, msg)
        broker.run_dirty()
    else:
        broker.stats["drop_unroutable"] += 1
    return bool(queues)


ACKMODES = ("ack_requeue_true", "ack_requeue_false", "reject_requeue_true", "reject_requeue_false")


def decode_properties(raw: bytes):
    """Content properties as the API shows them: an object, or [] when there are none. What cannot
    be decoded (headers the broker never checked) is left out or shown as a placeholder."""
    d = P.decode_lenient(raw)
    if not d:
        return []
    return {k: jsonable(v) for k, v in d.items()}


def message_json(msg, redelivered: bool, remaining: int, encoding: str, truncate) -> dict:
    body = msg.body
    size = len(body)
    if truncate is not None and size > truncate:
        body = body[:truncate]
    payload_encoding = "base64"
    payload = None
    if encoding == "auto":
        try:
            payload = body.decode("utf-8")
            payload_encoding = "string"
        except UnicodeDecodeError:
            payload = None
    if payload is None:
        payload = base64.b64encode(body).decode()
    return {"payload_bytes": size, "redelivered": bool(redelivered), "exchange": msg.exchange,
            "routing_key": msg.routing_key, "message_count": remaining,
            "properties": decode_properties(msg.props), "payload": payload,
            "payload_encoding": payload_encoding}


def get_request(body: dict) -> tuple:
    """The (count, ackmode, encoding, truncate) of a POST /api/queues/V/Q/get body, validated."""
    key_missing(body, ("count", "ackmode", "encoding"))
    count = body["count"]
    if isinstance(count, str) and count.isdigit():
        count = int(count)
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise bad_request(["not_int", "count"])
    ackmode = body["ackmode"]
    if ackmode not in ACKMODES:
        raise bad_request(f"Unsupported ackmode '{ackmode}'. Please use one of "
                          f"{', '.join(ACKMODES)}.")
    encoding = body["encoding"]
    if encoding not in ("auto", "base64"):
        raise bad_request("Unsupported encoding. Please use auto or base64.")
    truncate = body.get("truncate")
    if truncate in ("", None):
        truncate = None
    else:
        if isinstance(truncate, str) and truncate.isdigit():
            truncate = int(truncate)
        if isinstance(truncate, bool) or not isinstance(truncate, int) or truncate < 0:
            raise bad_request(["not_int", "truncate"])
    return count, ackmode, encoding, truncate


async def get_messages(broker, q: Queue, request: tuple, pacer: slices.Pacer) -> list:
    """POST /api/queues/V/Q/get: basic.get `count` times, then ack, requeue or reject them. The
    caller has checked the queue through the gate (access.readable_queue). Returns (message,
    redelivered, message count after it) for message_json. `count` is the client's (10^9 is
    accepted, as by RabbitMQ): the taking stops at the queue's end and runs in the pacer's slices,
    the taken messages held meanwhile as a channel holds its unacknowledged deliveries."""
    count, ackmode, _encoding, _truncate = request
    taken = []
    out = []
    try:
        for _ in range(count):
            if q.deleted:
                break
            item = broker.get_message(q)
            if item is None:
                break
            seq, msg, redelivered = item
            q.delivered += 1
            broker.stats["get"] = broker.stats.get("get", 0) + 1
            taken.append((seq, msg))
            out.append((msg, redelivered, q.message_count))
            if pacer.due():
                await pacer.pause()
    finally:
        # settled whatever happens (a client gone mid-way cancels the task): nothing is lost
        for seq, msg in taken:
            if ackmode == "ack_requeue_false":
                broker.settle(q, seq, msg)
                broker.stats["ack"] = broker.stats.get("ack", 0) + 1
            elif ackmode == "reject_requeue_false":
                broker.reject(q, seq, msg)
            else:
                broker.requeue(q, seq, msg)
        broker.run_dirty()
    return out


# ---------------------------------------------------------------------------------------- aliveness

ALIVENESS_QUEUE = "aliveness-test"


def aliveness_test(broker, vhost) -> tuple[bool, str]:
    """Declare `aliveness-test`, publish a message to it and get it back, as RabbitMQ does."""
    try:
        q = vhost.queues.get(ALIVENESS_QUEUE)
        if q is None:
            q = broker.declare_queue(vhost, ALIVENESS_QUEUE)
        msg = broker.new_message("", ALIVENESS_QUEUE, P.EMPTY, b"test_message")
        broker.stats["publish"] += 1
        vhost.exchanges[""].publish_in += 1
        broker.enqueue(q, msg)
        item = broker.get_message(q)
        if item is None:
            return False, "aliveness-test queue is being consumed"
        seq, got, _ = item
        q.delivered += 1
        broker.settle(q, seq, got)
        return True, ""
    except ChannelError as e:
        return False, e.text


# ---------------------------------------------------------------------------------------- definitions

def cluster_id(broker) -> str:
    cid = broker.global_parameters.get("internal_cluster_id")
    if cid is None:
        cid = "rabbitmq-cluster-id-" + secrets.token_urlsafe(16)
        broker.set_global_parameter("internal_cluster_id", cid)     # stored: the same after a restart
    return cid


def user_json(u) -> dict:
    return {"name": u.name, "password_hash": u.password_hash, "hashing_algorithm": u.hashing_algorithm,
            "tags": list(u.tags), "limits": dict(u.limits)}


def vhost_definition(v) -> dict:
    return {"name": v.name, "description": v.description, "tags": list(v.tags),
            "default_queue_type": v.default_queue_type,
            "metadata": {"description": v.description, "tags": list(v.tags),
                         "default_queue_type": v.default_queue_type}}


def permission_json(p) -> dict:
    return {"user": p.user, "vhost": p.vhost, "configure": p.configure, "write": p.write, "read": p.read}


def parameters_list(broker, vhost: str | None = None, component: str | None = None) -> list:
    out = []
    for (v, comp, name), p in broker.parameters.items():
        if (vhost is None or v == vhost) and (component is None or comp == component):
            out.append({"value": p.get("value"), "vhost": v, "component": comp, "name": name})
    return out


def global_parameters_list(broker) -> list:
    cluster_id(broker)
    return [{"name": k, "value": v} for k, v in sorted(broker.global_parameters.items())]


def exportable_queues(v) -> list:
    return [q for q in v.queues.values() if q.exclusive_owner is None]


class Rows:
    """A long list of a definitions export: objects, each made JSON by `render` when written."""
    __slots__ = ("items", "render")

    def __init__(self, items: list, render):
        self.items = items
        self.render = render


def _by_name(obj):
    return obj.name


def _queue_definition(q, scoped: bool) -> dict:
    d = {"name": q.name, "vhost": q.vhost, "durable": q.durable, "auto_delete": q.auto_delete,
         "arguments": jsonable(q.arguments)}
    if scoped:
        del d["vhost"]
    return d


def _exchange_definition(x, scoped: bool) -> dict:
    d = {"name": x.name, "vhost": x.vhost, "type": x.type, "durable": x.durable, "auto_delete": x.auto_delete,
         "internal": x.internal, "arguments": jsonable(x.arguments)}
    if scoped:
        del d["vhost"]
    return d


def _binding_definition(row, scoped: bool) -> dict:
    vname, src, dest, rk, args = row
    d = {"source": src, "vhost": vname, "destination": dest.name,
         "destination_type": "queue" if isinstance(dest, Queue) else "exchange", "routing_key": rk,
         "arguments": jsonable(args)}
    if scoped:
        del d["vhost"]
    return d


async def export_parts(broker, vhost_name: str | None, pacer: slices.Pacer) -> list:
    """A definitions export as (key, value) pairs in RabbitMQ's order, a value being JSON or Rows
    (queues, exchanges, bindings, users, permissions: the lists that grow), gathered and sorted a
    slice at a time."""
    scoped = vhost_name is not None
    vhosts = [broker.vhosts[vhost_name]] if scoped else list(broker.vhosts.values())
    qrows, xrows, brows = [], [], []
    for v in vhosts:
        qs = await slices.sort(exportable_queues(v), _by_name, pacer)
        qrows += qs
        names = {q.name for q in qs}
        xs = [x for x in list(v.exchanges.values()) if x.name and not x.name.startswith("amq.")]
        xrows += await slices.sort(xs, _by_name, pacer)
        for x in list(v.exchanges.values()):
            if not x.name:
                continue
            for b in list(x.bindings.values()):
                dest = b.destination
                if isinstance(dest, Queue):
                    if dest.name not in names:
                        continue
                elif dest.name == "":
                    continue
                brows.append((v.name, x.name, dest, b.routing_key, b.arguments))
                if pacer.due():
                    await pacer.pause()
    policies = [policy_json(p, vh, n) for (vh, n), p in sorted(broker.policies.items())
                if vhost_name is None or vh == vhost_name]
    parameters = parameters_list(broker, vhost_name) + operator_policy_parameters(broker, vhost_name)
    queues = Rows(qrows, lambda q: _queue_definition(q, scoped))
    exchanges = Rows(xrows, lambda x: _exchange_definition(x, scoped))
    bindings = Rows(brows, lambda row: _binding_definition(row, scoped))
    if scoped:
        return [("rabbit_version", RABBITMQ_COMPAT_VERSION), ("parameters", parameters), ("policies", policies),
                ("queues", queues), ("exchanges", exchanges), ("bindings", bindings)]
    users = await slices.sort(list(broker.users.users.values()), _by_name, pacer)
    perms = await slices.sort(list(broker.users.permissions.items()), _first, pacer)
    topic = await slices.sort(list(broker.users.topic_permissions.items()), _first, pacer)
    return [
        ("rabbit_version", RABBITMQ_COMPAT_VERSION),
        ("rabbitmq_version", RABBITMQ_COMPAT_VERSION),
        ("product_name", "RabbitMQ"),
        ("product_version", RABBITMQ_COMPAT_VERSION),
        ("users", Rows(users, user_json)),
        ("vhosts", [vhost_definition(v) for _n, v in sorted(broker.vhosts.items())]),
        ("permissions", Rows(perms, lambda kv: permission_json(kv[1]))),
        ("topic_permissions", Rows(topic, lambda kv: dict(kv[1]))),
        ("parameters", parameters),
        ("global_parameters", global_parameters_list(broker)),
        ("policies", policies),
        ("queues", queues),
        ("exchanges", exchanges),
        ("bindings", bindings),
    ]


def _first(kv):
    return kv[0]


def operator_policy_parameters(broker, vhost: str | None = None) -> list:
    """Operator policies as RabbitMQ exports them: runtime parameters of component operator_policy."""
    out = []
    for (vh, name), p in sorted(broker.operator_policies.items()):
        if vhost is None or vh == vhost:
            value = {"pattern": p.get("pattern"), "definition": jsonable(p.get("definition") or {}),
                     "priority": p.get("priority", 0), "apply-to": p.get("apply-to", "all")}
            out.append({"value": value, "vhost": vh, "component": "operator_policy", "name": name})
    return out


def import_parameter(broker, vhost, component: str, name: str, value) -> None:
    """A runtime parameter of a definitions file (see put_parameter)."""
    put_parameter(broker, vhost.name, component, name, value)


def put_parameter(broker, vhost: str, component: str, name: str, value) -> bool:
    """PUT /api/parameters/COMPONENT/V/NAME. RabbitMQ keeps operator policies and vhost limits
    as parameters too, so those are checked and become operator policies and vhost limits."""
    checks.name("component", component, limit=None)
    checks.name("name", name, limit=None)
    value = checks.parameter_value(component, name, value)
    if component == "operator_policy":
        return put_policy(broker, vhost, name, value, operator=True)
    if component == "vhost-limits":
        v = broker.vhosts[vhost]
        created = not v.limits
        v.limits.clear()
        v.limits.update(value)
        _save_vhost_limits(broker, v)
        return created
    key = (vhost, component, name)
    created = key not in broker.parameters
    p = {"vhost": vhost, "component": component, "name": name, "value": value}
    broker.parameters[key] = p
    broker.store.put_definition("parameter", key, p)
    return created


def delete_parameter(broker, vhost: str, component: str, name: str) -> bool:
    if component == "operator_policy":
        return delete_policy(broker, vhost, name, operator=True)
    if component == "vhost-limits" and name == "limits" and vhost in broker.vhosts:
        v = broker.vhosts[vhost]
        if not v.limits:
            return False
        v.limits.clear()
        _save_vhost_limits(broker, v)
        return True
    key = (vhost, component, name)
    if broker.parameters.pop(key, None) is None:
        return False
    broker.store.delete_definition("parameter", key)
    return True


# ---------------------------------------------------------------------------------------- definitions import
# Every element of a definitions file is checked - types, ranges, regexes, references, and what
# the engine would refuse (inequivalent redeclares, reserved names, queue limits) - before the
# first one is applied, so a file that is refused changes nothing. Checking and applying are
# generators of bounded steps, one element each (import_steps): the API runs them a slice at a time,
# so a file of 200,000 queues never holds the loop. Other clients go on working between the
# slices: what they change meanwhile is met when the element is applied, with the engine's own
# checks (and an error, 400, naming the element, as for an element the checks refused).

def _items(defs: dict, key: str):
    v = defs.get(key)
    if v is None:
        return []
    if not isinstance(v, list):
        raise bad_request(f"'{key}' must be a list")
    for i, d in enumerate(v):
        if not isinstance(d, dict):
            raise bad_request(f"{key}[{i}] should be an object, actually was {checks.erl(d)}")
        if not i % 1024:
            yield
    return v


def _amqp_args(a) -> dict:
    return checks.table("arguments", a)


def _engine_error(e: ChannelError):
    return bad_request(f"{E.REPLY_NAMES.get(e.code, 'error').lower()}: {e.text}")


class _Plan:
    """The checked, normalised elements of a definitions file, in the order they are applied:
    `check(defs)` and then `apply()`, both generators of one element per step."""

    def __init__(self, broker, vhost_name: str | None, acting_user: str | None):
        self.broker = broker
        self.scope = vhost_name
        self.acting_user = acting_user
        self.users, self.vhosts, self.permissions, self.topic_permissions = [], [], [], []
        self.parameters, self.global_parameters, self.policies = [], [], []
        self.queues, self.exchanges, self.bindings = [], [], []
        self.new_vhosts: dict = {}           # name -> a VHost standing in for the one the import creates
        self.limits_after: dict = {}         # vhost -> the limits the import sets
        self.user_names = set(broker.users.users)
        self.section = ""
        self.index = 0
        self.queue_defs: dict = {}           # (vhost, name) -> what the file says of it
        self.new_queues: dict = {}           # vhost -> count of queues the import creates
        self.exchange_objs: dict = {}        # (vhost, name) -> exchange the import creates (unattached)
        self.exchange_defs: dict = {}

    def check(self, defs: dict):
        if self.scope is None:
            yield from self._each(defs, "users", self._user)
            yield from self._each(defs, "vhosts", self._vhost)
            yield from self._each(defs, "permissions", self._permission)
            yield from self._each(defs, "topic_permissions", self._topic_permission)
        yield from self._each(defs, "parameters", self._parameter)
        if self.scope is None:
            yield from self._each(defs, "global_parameters", self._global_parameter)
        yield from self._each(defs, "policies", self._policy)
        yield from self._each(defs, "queues", self._queue)
        yield from self._each(defs, "exchanges", self._exchange)
        yield from self._each(defs, "bindings", self._binding)
        self._check_queue_limits()

    def _each(self, defs, section, check):
        items = yield from _items(defs, section)
        for i, d in enumerate(items):
            self.section, self.index = section, i
            try:
                check(d)
            except ChannelError as e:
                raise self._where(_engine_error(e)) from None
            except ApiError as e:
                raise self._where(e) from None
            yield

    def _where(self, e):
        if isinstance(e.reason, str) and self.section != "policies":     # those name the policy
            e.reason = f"{e.reason} ({self.section}[{self.index}])"
        return e

    # -- references
    def _vhost_of(self, d: dict):
        """The vhost an element belongs to: the existing one, or the one this import creates."""
        name = self.scope if self.scope is not None else d.get("vhost")
        if name is None:
            raise bad_request("Virtual host does not exist and is not specified in definitions file.")
        checks.name("vhost", name)
        v = self.broker.vhosts.get(name) or self.new_vhosts.get(name)
        if v is None:
            raise bad_request(f'Please create virtual host "{name}" prior to importing definitions.')
        return v

    def _user_vhost(self, d: dict):
        user = checks.name("user", d["user"], limit=None)
        vhost = checks.name("vhost", d["vhost"])
        if vhost not in self.broker.vhosts and vhost not in self.new_vhosts:
            raise bad_request(["no_such_vhost", vhost])
        if user not in self.user_names:
            raise bad_request(["no_such_user", user])
        return user, vhost

    # -- elements
    def _user(self, u):
        key_missing(u, ("name",))
        checks.name("user", u["name"], limit=None)
        body = dict(u)
        body.setdefault("tags", [])
        if "password" in body:
            body.pop("password_hash", None)
        checks.user_body(body)
        self.user_names.add(u["name"])
        self.users.append((u["name"], body))

    def _vhost(self, v):
        key_missing(v, ("name",))
        name = checks.name("vhost", v["name"])
        meta = v.get("metadata")
        if meta is not None and not isinstance(meta, dict):
            raise bad_request(f"metadata should be a dictionary, actually was {checks.erl(meta)}")
        meta = meta or {}
        body = {}
        for k in ("description", "tags", "default_queue_type"):
            if k in v or k in meta:
                body[k] = v.get(k, meta.get(k))
        checks.vhost_body(body)
        if name not in self.broker.vhosts:
            self.new_vhosts.setdefault(name, VHost(name))     # its standard exchanges too
        self.vhosts.append((name, body))

    def _permission(self, p):
        key_missing(p, ("user", "vhost", "configure", "write", "read"))
        user, vhost = self._user_vhost(p)
        self.permissions.append((user, vhost, *checks.permission_body(p)))

    def _topic_permission(self, p):
        key_missing(p, ("user", "vhost", "exchange", "write", "read"))
        user, vhost = self._user_vhost(p)
        self.topic_permissions.append((user, vhost, *checks.topic_permission_body(p)))

    def _parameter(self, p):
        key_missing(p, ("component", "name", "value"))
        v = self._vhost_of(p)
        component = checks.name("component", p["component"], limit=None)
        name = checks.name("name", p["name"], limit=None)
        value = checks.parameter_value(component, name, p["value"])
        if component == "vhost-limits":
            self.limits_after[v.name] = value
        self.parameters.append((v.name, component, name, p["value"]))

    def _global_parameter(self, p):
        key_missing(p, ("name", "value"))
        self.global_parameters.append((p["name"], checks.global_parameter(p["name"], p["value"])))

    def _policy(self, p):
        key_missing(p, ("name",))
        v = self._vhost_of(p)
        name = checks.name("name", p["name"], limit=None)
        try:
            checks.policy_body(p)
        except ApiError as e:
            if isinstance(e.reason, str):      # as RabbitMQ names the policy it refuses
                e.reason = e.reason.rstrip("\n") + f"\n ({v.name}/{name})"
            raise
        self.policies.append((v.name, name, p))

    def _queue(self, q):
        key_missing(q, ("name",))
        v = self._vhost_of(q)
        name = q["name"]
        durable, auto_delete, args = checks.queue_body(name, q, durable=True)
        key = (v.name, name)
        said = (durable, auto_delete, freeze(args))
        if key in self.queue_defs:
            if self.queue_defs[key] != said:
                raise bad_request(f"precondition_failed: queue '{name}' in vhost '{v.name}' is defined twice, "
                                  f"differently")
            return
        self.queue_defs[key] = said
        b = self.broker
        existing = v.queues.get(name)
        if existing is not None:
            b.declare_queue(v, name, durable, False, auto_delete, args)     # equivalence checks only
        else:
            if name.startswith("amq."):
                raise ChannelError(f"queue name '{name}' contains reserved prefix 'amq.*'", E.ACCESS_REFUSED)
            b.check_new_queue(v, name, durable, False, auto_delete, args)
            self.new_queues[v.name] = self.new_queues.get(v.name, 0) + 1
        self.queues.append((v.name, name, durable, auto_delete, args))

    def _exchange(self, x):
        key_missing(x, ("name", "type"))
        v = self._vhost_of(x)
        name = x["name"]
        type_, durable, auto_delete, internal, args = checks.exchange_body(name, x, durable=True)
        b = self.broker
        existing = v.exchanges.get(name)
        if existing is not None and (name.startswith("amq.") or not name):
            return                             # the standard exchanges are left as they are
        key = (v.name, name)
        said = (type_, durable, auto_delete, internal, freeze(args))
        if key in self.exchange_defs:
            if self.exchange_defs[key] != said:
                raise bad_request(f"precondition_failed: exchange '{name}' in vhost '{v.name}' is defined "
                                  f"twice, differently")
            return
        self.exchange_defs[key] = said
        if existing is not None:
            b.declare_exchange(v, name, type_, durable, auto_delete, internal, args)   # checks only
        else:
            if not name:
                raise ChannelError("operation not permitted on the default exchange", E.ACCESS_REFUSED)
            b.check_new_exchange(v, name, type_, args)
            self.exchange_objs[key] = TYPES[type_](v.name, name, durable, auto_delete, internal, args)
        self.exchanges.append((v.name, name, type_, durable, auto_delete, internal, args))

    def _binding(self, d):
        key_missing(d, ("source", "destination", "destination_type"))
        v = self._vhost_of(d)
        src = checks.name("source", d["source"], empty=True)
        dst = checks.name("destination", d["destination"], empty=True)
        dtype = d["destination_type"]
        if dtype not in ("queue", "exchange"):
            raise bad_request(f"destination_type should be queue or exchange, actually was {checks.erl(dtype)}")
        rk, args = checks.binding_body(d)
        if not src or (dtype == "exchange" and not dst):
            raise ChannelError("operation not permitted on the default exchange", E.ACCESS_REFUSED)
        source = self.exchange_objs.get((v.name, src)) or v.exchanges.get(src)
        if source is None:
            raise ChannelError(f"no exchange '{src}' in vhost '{v.name}'", E.NOT_FOUND)
        if dtype == "queue":
            found = (v.name, dst) in self.queue_defs or dst in v.queues
        else:
            found = (v.name, dst) in self.exchange_defs or dst in v.exchanges
        if not found:
            raise ChannelError(f"no {dtype} '{dst}' in vhost '{v.name}'", E.NOT_FOUND)
        err = source.validate_binding(rk, args)
        if err:
            raise ChannelError(err, E.PRECONDITION_FAILED)
        self.bindings.append((v.name, src, dtype, dst, rk, args))

    def _check_queue_limits(self):
        for vname, n in self.new_queues.items():
            v = self.broker.vhosts.get(vname) or self.new_vhosts[vname]
            if vname in self.limits_after:
                limit = self.limits_after[vname].get("max-queues")
            else:
                limit = vhost_limit(self.broker, v, "max-queues")
            if checks.is_int(limit) and limit >= 0 and len(v.queues) + n > limit:
                raise bad_request(f"precondition_failed: cannot declare queues: queue limit in vhost '{vname}' "
                                  f"({limit}) is reached")

    # -- applying
    def apply(self):
        """Apply the checked elements, one per step. Between steps other clients may have changed
        what an element meets (deleted its vhost, declared its queue otherwise): the engine's own
        checks then refuse it, and the error names it."""
        b = self.broker
        steps = ((self.users, lambda e: put_user(b, *e)),
                 (self.vhosts, lambda e: put_vhost(b, e[0], e[1], self.acting_user)),
                 (self.permissions, lambda e: b.set_permissions(*e)),
                 (self.topic_permissions, lambda e: b.set_topic_permission(*e)),
                 (self.parameters, lambda e: put_parameter(b, *e)),
                 (self.global_parameters, lambda e: b.set_global_parameter(*e)),
                 (self.policies, lambda e: put_policy(b, *e)),
                 (self.queues, self._apply_queue),
                 (self.exchanges, self._apply_exchange),
                 (self.bindings, self._apply_binding))
        for items, fn in steps:
            for e in items:
                try:
                    fn(e)
                except ChannelError as err:     # met something changed since the checks
                    raise _engine_error(err) from None
                yield

    def _vhost_now(self, name: str):
        v = self.broker.vhosts.get(name)
        if v is None:
            raise ChannelError(f"no vhost '{name}'", E.NOT_FOUND)
        return v

    def _apply_queue(self, e):
        vhost, name, durable, auto_delete, args = e
        self.broker.declare_queue(self._vhost_now(vhost), name, durable, False, auto_delete, args)

    def _apply_exchange(self, e):
        vhost, name, type_, durable, auto_delete, internal, args = e
        self.broker.declare_exchange(self._vhost_now(vhost), name, type_, durable, auto_delete, internal, args)

    def _apply_binding(self, e):
        vhost, src, dtype, dst, rk, args = e
        b = self.broker
        v = self._vhost_now(vhost)
        d = b.get_queue(v, dst, owner=False) if dtype == "queue" else b.get_exchange(v, dst)
        b.bind(v, b.get_exchange(v, src), d, rk, args)


def import_steps(broker, defs, vhost_name: str | None = None, acting_user: str | None = None):
    """POST /api/definitions[/vhost] as a generator of bounded steps: check every element, then
    apply them in RabbitMQ's order."""
    if not isinstance(defs, dict):
        raise bad_request("failed_to_parse_json")
    plan = _Plan(broker, vhost_name, acting_user)
    yield from plan.check(defs)
    yield from plan.apply()


def check_definitions(broker, defs, vhost_name: str | None = None) -> None:
    """Check a definitions file as an import would, changing nothing (400 if it is refused)."""
    if not isinstance(defs, dict):
        raise bad_request("failed_to_parse_json")
    slices.run(_Plan(broker, vhost_name, None).check(defs))


def import_definitions(broker, defs, vhost_name: str | None = None, acting_user: str | None = None) -> None:
    """An import in one go (few elements, or no loop to share): see import_steps."""
    slices.run(import_steps(broker, defs, vhost_name, acting_user))
