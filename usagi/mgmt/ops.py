"""Engine operations the management API needs, built from the broker's public methods and attributes.

Everything here runs synchronously on the event loop, like the AMQP handlers. Mutations go through
the broker's own methods (declare, bind, delete, add_user, set_permissions...) so that durable
state is written to the store; where the broker has no method (vhost metadata updates, user
updates, policies) the store is told here in the same format the broker uses.
"""
from __future__ import annotations

import base64
import secrets

from .. import RABBITMQ_COMPAT_VERSION
from ..amqp import errors as E
from ..amqp import properties as P
from ..amqp.errors import ChannelError
from ..amqp.table import Timestamp
from ..auth.passwords import MD5, SHA256, SHA512
from ..model import patterns
from ..model.queue import Queue
from .util import bad_request, jsonable, key_missing, parse_bool, parse_tags

HASHING_ALGORITHMS = (SHA256, SHA512, MD5)

# ---------------------------------------------------------------------------------------- policies

APPLY_TO = ("all", "queues", "exchanges", "classic_queues", "quorum_queues", "streams")

# policy keys RabbitMQ 4.x recognises, and how a value is checked
_NONNEG_INT = ("message-ttl", "max-length", "max-length-bytes", "max-in-memory-length",
               "max-in-memory-bytes", "delivery-limit", "stream-max-segment-size-bytes",
               "consumer-timeout", "initial-cluster-size", "target-group-size", "queue-version")
_POS_INT = ("expires",)
_STRING = ("alternate-exchange", "dead-letter-exchange", "dead-letter-routing-key", "queue-mode",
           "queue-leader-locator", "queue-master-locator", "federation-upstream-set",
           "federation-upstream", "dead-letter-strategy", "max-age", "ha-mode", "ha-sync-mode",
           "ha-promote-on-shutdown", "ha-promote-on-failure")
_OTHER = ("overflow", "ha-params", "ha-sync-batch-size")
POLICY_KEYS = _NONNEG_INT + _POS_INT + _STRING + _OTHER


def validate_policy_definition(definition) -> None:
    if not isinstance(definition, dict) or not definition:
        raise bad_request("Validation failed\n\nno policy provided\n" if isinstance(definition, dict)
                          else "Validation failed\n\ndefinition must be a JSON object\n")
    unknown = [k for k in definition if k not in POLICY_KEYS]
    if unknown:
        names = ",".join(f'<<"{k}">>' for k in unknown)
        raise bad_request(f"Validation failed\n\n[{names}] are not recognised policy settings\n")
    for k, v in definition.items():
        if k in _NONNEG_INT and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise bad_request(f'Validation failed\n\n<<"{k}">> should be a number greater than or '
                              f'equal to 0, actually was {_erl(v)}\n')
        if k in _POS_INT and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise bad_request(f'Validation failed\n\n<<"{k}">> should be a number greater than 0, '
                              f'actually was {_erl(v)}\n')
        if k in _STRING and not isinstance(v, str):
            raise bad_request(f'Validation failed\n\n<<"{k}">> should be binary, actually was {_erl(v)}\n')
        if k == "overflow" and v not in ("drop-head", "reject-publish", "reject-publish-dlx"):
            raise bad_request(f'Validation failed\n\n{_erl(v)} is not a valid overflow value\n')


def _erl(v) -> str:
    return f'<<"{v}">>' if isinstance(v, str) else str(jsonable(v)).lower() if isinstance(v, bool) else str(v)


OPERATOR_POLICY_KEYS = ("expires", "message-ttl", "max-length", "max-length-bytes", "max-in-memory-length",
                        "max-in-memory-bytes", "delivery-limit", "overflow", "target-group-size")


def put_policy(broker, vhost: str, name: str, body: dict, operator: bool = False) -> bool:
    """Create or replace a (operator) policy through the broker, which applies it. True if created."""
    key_missing(body, ("pattern", "definition"))
    pattern = body["pattern"]
    if not isinstance(pattern, str):
        raise bad_request("pattern must be a string")
    try:
        patterns.validate(pattern)
    except patterns.PatternError as e:
        why = (f"must not exceed {patterns.MAX_PATTERN_LENGTH} bytes" if e.too_long else
               f"should be regular expression but is invalid: {e.erlang()}")
        raise bad_request(f"Validation failed\n\npattern {why}\n") from None
    definition = body["definition"]
    validate_policy_definition(definition)
    if operator:
        unknown = [k for k in definition if k not in OPERATOR_POLICY_KEYS]
        if unknown:
            names = ",".join(f'<<"{k}">>' for k in unknown)
            raise bad_request(f"Validation failed\n\n[{names}] are not recognised operator policy settings\n")
    priority = body.get("priority", 0)
    if isinstance(priority, str):
        try:
            priority = int(priority)
        except ValueError:
            raise bad_request(f"Validation failed\n\n<<\"priority\">> should be a number, actually was "
                              f"<<\"{priority}\">>\n") from None
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise bad_request(f"Validation failed\n\n<<\"priority\">> should be a number, actually was {priority}\n")
    apply_to = body.get("apply-to", "all")
    if apply_to not in APPLY_TO:
        raise bad_request(f"Validation failed\n\n'{apply_to}' is not a valid apply-to value\n")
    table = broker.operator_policies if operator else broker.policies
    created = (vhost, name) not in table
    if hasattr(broker, "set_policy"):
        broker.set_policy(vhost, name, pattern, definition, priority, apply_to, operator=operator)
    else:       # an engine without policy support: keep and persist it all the same
        p = {"vhost": vhost, "name": name, "pattern": pattern, "apply-to": apply_to,
             "definition": definition, "priority": priority}
        table[(vhost, name)] = p
        broker.store.put_definition("operator_policy" if operator else "policy", (vhost, name), p)
    return created


def delete_policy(broker, vhost: str, name: str, operator: bool = False) -> bool:
    if hasattr(broker, "clear_policy"):
        return broker.clear_policy(vhost, name, operator=operator)
    table = broker.operator_policies if operator else broker.policies
    if table.pop((vhost, name), None) is None:
        return False
    broker.store.delete_definition("operator_policy" if operator else "policy", (vhost, name))
    return True


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

VHOST_LIMITS = ("max-connections", "max-queues")
USER_LIMITS = ("max-connections", "max-channels")


def _limit_value(name: str, body: dict, known) -> int:
    if name not in known:
        raise bad_request(f"Validation failed\n\nUnrecognised terms [{{<<\"{name}\">>,...}}] in limits\n")
    key_missing(body, ("value",))
    v = body["value"]
    if isinstance(v, str) and v.lstrip("-").isdigit():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise bad_request(f"Validation failed\n\n<<\"{name}\">> should be a number, actually was {_erl(v)}\n")
    return v


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
    description = body.get("description", "")
    tags = parse_tags(body.get("tags"))
    dqt = body.get("default_queue_type") or "classic"
    if dqt not in ("classic", "quorum", "stream", "undefined"):
        raise bad_request(f"Invalid queue type '{dqt}'")
    if dqt == "undefined":
        dqt = "classic"
    v = broker.vhosts.get(name)
    if v is None:
        broker.add_vhost(name, description or "", tags, dqt)
        if acting_user is not None and acting_user in broker.users.users:
            broker.set_permissions(acting_user, name, ".*", ".*", ".*")
        return True
    changed = False
    if "description" in body and v.description != description:
        v.description = description or ""
        changed = True
    if "tags" in body and v.tags != tags:
        v.tags = tags
        changed = True
    if "default_queue_type" in body and v.default_queue_type != dqt:
        v.default_queue_type = dqt
        changed = True
    if changed:
        broker.store.put_definition("vhost", (name,), {"name": name, **v.metadata()})
    return False


def put_user(broker, name: str, body: dict) -> bool:
    """PUT /api/users/NAME and the users of a definitions import. Returns True if created."""
    if "tags" not in body and "administrator" not in body:
        raise bad_request("tags_not_present")
    if "password" in body and "password_hash" in body:
        raise bad_request("both_password_and_password_hash_are_provided")
    if "tags" in body:
        tags = parse_tags(body.get("tags"))
    else:
        tags = ["administrator"] if parse_bool(body.get("administrator")) else []
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
    limits = body.get("limits")
    if limits is not None:
        if limits == []:
            limits = {}
        if not isinstance(limits, dict):
            raise bad_request("limits must be a JSON object")
        limits = {k: _limit_value(k, {"value": v}, USER_LIMITS) for k, v in limits.items()}
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
    key_missing(body, ("configure", "write", "read"))
    if user not in broker.users.users or vhost not in broker.vhosts:
        raise bad_request("vhost_or_user_not_found")
    for k in ("configure", "write", "read"):
        if not isinstance(body[k], str):
            raise bad_request(f"{k} must be a string")
        _check_permission_regex(body[k], as_string=False)
    created = broker.users.permission(user, vhost) is None
    broker.set_permissions(user, vhost, body["configure"], body["write"], body["read"])
    return created


def _check_permission_regex(pattern: str, as_string: bool):
    """A permission pattern that does not compile: 400 with RabbitMQ's reason,
    {invalid_regexp, Pattern, {Text, Offset}} as its JSON shows that term (the pattern is a
    charlist for permissions, a binary for topic permissions)."""
    try:
        patterns.validate(pattern)
    except patterns.PatternError as e:
        shown = pattern if as_string else list(pattern.encode("utf-8", "surrogatepass"))
        why = "pattern_too_long" if e.too_long else [[ord(ch) for ch in e.reason], e.offset]
        raise bad_request(["invalid_regexp", shown, why]) from None


def put_topic_permission(broker, user: str, vhost: str, body: dict) -> bool:
    key_missing(body, ("exchange", "write", "read"))
    if user not in broker.users.users or vhost not in broker.vhosts:
        raise bad_request("vhost_or_user_not_found")
    for k in ("write", "read"):
        if isinstance(body[k], str):
            _check_permission_regex(body[k], as_string=True)
    key = (user, vhost, body["exchange"])
    created = key not in broker.users.topic_permissions
    broker.users.topic_permissions[key] = {"user": user, "vhost": vhost, "exchange": body["exchange"],
                                           "write": body["write"], "read": body["read"]}
    return created


# ---------------------------------------------------------------------------------------- publish, get

_SHORTSTR_PROPS = ("content_type", "content_encoding", "correlation_id", "reply_to", "expiration",
                   "message_id", "type", "user_id", "app_id", "cluster_id")
_INT_PROPS = ("delivery_mode", "priority", "timestamp")


def _check_no_null(v):
    if v is None:
        raise bad_request("null_not_allowed")
    if isinstance(v, dict):
        for x in v.values():
            _check_no_null(x)
    elif isinstance(v, list):
        for x in v:
            _check_no_null(x)


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
            if len(v.encode("utf-8")) > 255:
                raise bad_request(["too_long", k])
            out[k] = v
    if "headers" in props:
        h = props["headers"]
        if not isinstance(h, dict):
            raise bad_request(["not_table", "headers"])
        _check_no_null(h)
        out["headers"] = h
    return P.encode(out)


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
    try:
        broker.check_access(user, vhost.name, "write", "exchange", exchange_name or "amq.default")
        x = vhost.exchanges.get(exchange_name)
        if x is None:
            raise ChannelError(f"no exchange '{exchange_name}' in vhost '{vhost.name}'", E.NOT_FOUND)
        if x.internal:
            raise ChannelError(f"cannot publish to internal exchange '{exchange_name}' in vhost "
                               f"'{vhost.name}'", E.ACCESS_REFUSED)
        if len(payload) > broker.config.max_message_size:
            raise ChannelError(f"message size {len(payload)} is larger than configured max size "
                               f"{broker.config.max_message_size}", E.PRECONDITION_FAILED)
        scan = P.scan(props)
        if scan.user_id is not None and user is not None and scan.user_id != user.name:
            raise ChannelError(f"user_id property set to '{scan.user_id}' but authenticated user was "
                               f"'{user.name}'", E.PRECONDITION_FAILED)
    except ChannelError as e:
        # RabbitMQ publishes over an internal channel and reports its close as a bad request
        raise bad_request(f"{e.code} {e.reply_text}") from None
    msg = broker.new_message(exchange_name, rk, props, payload, scan)
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
    """Content properties as the API shows them: an object, or [] when there are none."""
    try:
        d = P.decode(raw)
    except Exception:
        return []
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


def get_messages(broker, user, q: Queue, body: dict) -> list:
    """POST /api/queues/V/Q/get: basic.get `count` times, then ack, requeue or reject them."""
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
    try:
        broker.check_access(user, q.vhost, "read", "queue", q.name)
    except ChannelError:
        raise _access_refused() from None
    taken = []
    out = []
    for _ in range(count):
        item = broker.get_message(q)
        if item is None:
            break
        seq, msg, redelivered = item
        q.delivered += 1
        broker.stats["get"] = broker.stats.get("get", 0) + 1
        taken.append((seq, msg))
        out.append(message_json(msg, redelivered, q.message_count, encoding, truncate))
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


def _access_refused():
    from .util import not_authorised
    return not_authorised("Access refused.")


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
    g = broker.global_parameters
    cid = g.get("internal_cluster_id")
    if cid is None:
        cid = g["internal_cluster_id"] = "rabbitmq-cluster-id-" + secrets.token_urlsafe(16)
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


def export_definitions(broker, vhost_name: str | None = None) -> dict:
    qdefs, xdefs, bdefs = [], [], []
    vhosts = [broker.vhosts[vhost_name]] if vhost_name is not None else list(broker.vhosts.values())
    for v in vhosts:
        qs = exportable_queues(v)
        names = {q.name for q in qs}
        for q in sorted(qs, key=lambda q: q.name):
            qdefs.append({"name": q.name, "vhost": v.name, "durable": q.durable,
                          "auto_delete": q.auto_delete, "arguments": jsonable(q.arguments)})
        for x in sorted(v.exchanges.values(), key=lambda x: x.name):
            if not x.name or x.name.startswith("amq."):
                continue
            xdefs.append({"name": x.name, "vhost": v.name, "type": x.type, "durable": x.durable,
                          "auto_delete": x.auto_delete, "internal": x.internal,
                          "arguments": jsonable(x.arguments)})
        for src, dest, rk, args in broker.bindings_of(v):
            if src == "":
                continue
            if isinstance(dest, Queue):
                if dest.name not in names:
                    continue
                dtype = "queue"
            else:
                if dest.name == "":
                    continue
                dtype = "exchange"
            bdefs.append({"source": src, "vhost": v.name, "destination": dest.name,
                          "destination_type": dtype, "routing_key": rk, "arguments": jsonable(args)})
    policies = [policy_json(p, vh, n) for (vh, n), p in sorted(broker.policies.items())
                if vhost_name is None or vh == vhost_name]
    parameters = parameters_list(broker, vhost_name) + operator_policy_parameters(broker, vhost_name)
    if vhost_name is not None:
        for d in qdefs + xdefs + bdefs:
            d.pop("vhost", None)
        return {"rabbit_version": RABBITMQ_COMPAT_VERSION,
                "parameters": parameters, "policies": policies,
                "queues": qdefs, "exchanges": xdefs, "bindings": bdefs}
    return {
        "rabbit_version": RABBITMQ_COMPAT_VERSION,
        "rabbitmq_version": RABBITMQ_COMPAT_VERSION,
        "product_name": "RabbitMQ",
        "product_version": RABBITMQ_COMPAT_VERSION,
        "users": [user_json(u) for _n, u in sorted(broker.users.users.items())],
        "vhosts": [vhost_definition(v) for _n, v in sorted(broker.vhosts.items())],
        "permissions": [permission_json(p) for _k, p in sorted(broker.users.permissions.items())],
        "topic_permissions": [dict(p) for _k, p in sorted(broker.users.topic_permissions.items())],
        "parameters": parameters,
        "global_parameters": global_parameters_list(broker),
        "policies": policies,
        "queues": qdefs,
        "exchanges": xdefs,
        "bindings": bdefs,
    }


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
    """A runtime parameter of a definitions file. RabbitMQ keeps operator policies and vhost
    limits as parameters too, so those become operator policies and vhost limits here."""
    if component == "operator_policy":
        if not isinstance(value, dict):
            raise bad_request("operator_policy value must be a JSON object")
        put_policy(broker, vhost.name, name, value, operator=True)
    elif component == "vhost-limits" and name == "limits":
        if not isinstance(value, dict):
            raise bad_request("vhost-limits value must be a JSON object")
        limits = {k: _limit_value(k, {"value": v}, VHOST_LIMITS) for k, v in value.items()}
        vhost.limits.clear()
        vhost.limits.update(limits)
        _save_vhost_limits(broker, vhost)
    else:
        put_parameter(broker, vhost.name, component, name, value)


def _items(defs: dict, key: str) -> list:
    v = defs.get(key)
    if v is None:
        return []
    if not isinstance(v, list):
        raise bad_request(f"'{key}' must be a list")
    return [d for d in v if isinstance(d, dict)]


def _vhost_for(broker, d: dict, vhost_name: str | None):
    name = vhost_name if vhost_name is not None else d.get("vhost")
    if name is None:
        raise bad_request("Virtual host does not exist and is not specified in definitions file.")
    v = broker.vhosts.get(name)
    if v is None:
        raise bad_request(f'Please create virtual host "{name}" prior to importing definitions.')
    return v


def _amqp_args(a) -> dict:
    if a is None or a == []:
        return {}
    if not isinstance(a, dict):
        raise bad_request("arguments must be a JSON object")
    return a


def import_definitions(broker, defs, vhost_name: str | None = None, acting_user: str | None = None) -> None:
    """POST /api/definitions[/vhost]: apply an export, in RabbitMQ's order."""
    if not isinstance(defs, dict):
        raise bad_request("failed_to_parse_json")
    try:
        if vhost_name is None:
            for u in _items(defs, "users"):
                key_missing(u, ("name",))
                body = dict(u)
                body.setdefault("tags", [])
                if "password" in body:
                    body.pop("password_hash", None)
                put_user(broker, u["name"], body)
            for v in _items(defs, "vhosts"):
                key_missing(v, ("name",))
                meta = v.get("metadata") if isinstance(v.get("metadata"), dict) else {}
                body = {}
                for k in ("description", "tags", "default_queue_type"):
                    if k in v or k in meta:
                        body[k] = v.get(k, meta.get(k))
                put_vhost(broker, v["name"], body, acting_user)
            for p in _items(defs, "permissions"):
                key_missing(p, ("user", "vhost", "configure", "write", "read"))
                put_permission(broker, p["user"], p["vhost"], p)
            for p in _items(defs, "topic_permissions"):
                key_missing(p, ("user", "vhost", "exchange", "write", "read"))
                put_topic_permission(broker, p["user"], p["vhost"], p)
        for p in _items(defs, "parameters"):
            key_missing(p, ("component", "name", "value"))
            v = _vhost_for(broker, p, vhost_name)
            import_parameter(broker, v, p["component"], p["name"], p["value"])
        if vhost_name is None:
            for p in _items(defs, "global_parameters"):
                key_missing(p, ("name", "value"))
                broker.global_parameters[p["name"]] = p["value"]
        for p in _items(defs, "policies"):
            key_missing(p, ("name",))
            v = _vhost_for(broker, p, vhost_name)
            put_policy(broker, v.name, p["name"], p)
        for q in _items(defs, "queues"):
            key_missing(q, ("name",))
            v = _vhost_for(broker, q, vhost_name)
            broker.declare_queue(v, q["name"], parse_bool(q.get("durable"), True), False,
                                 parse_bool(q.get("auto_delete")), _amqp_args(q.get("arguments")))
        for x in _items(defs, "exchanges"):
            key_missing(x, ("name", "type"))
            v = _vhost_for(broker, x, vhost_name)
            if x["name"] in v.exchanges and (x["name"].startswith("amq.") or not x["name"]):
                continue
            broker.declare_exchange(v, x["name"], x["type"], parse_bool(x.get("durable"), True),
                                    parse_bool(x.get("auto_delete")), parse_bool(x.get("internal")),
                                    _amqp_args(x.get("arguments")))
        for b in _items(defs, "bindings"):
            key_missing(b, ("source", "destination", "destination_type"))
            v = _vhost_for(broker, b, vhost_name)
            src = broker.get_exchange(v, b["source"])
            if b["destination_type"] == "queue":
                dst = broker.get_queue(v, b["destination"], owner=False)
            else:
                dst = broker.get_exchange(v, b["destination"])
            broker.bind(v, src, dst, b.get("routing_key", ""), _amqp_args(b.get("arguments")))
    except ChannelError as e:
        raise bad_request(f"{E.REPLY_NAMES.get(e.code, 'error').lower()}: {e.text}") from None


def put_parameter(broker, vhost: str, component: str, name: str, value) -> bool:
    key = (vhost, component, name)
    created = key not in broker.parameters
    p = {"vhost": vhost, "component": component, "name": name, "value": value}
    broker.parameters[key] = p
    broker.store.put_definition("parameter", key, p)
    return created


def delete_parameter(broker, vhost: str, component: str, name: str) -> bool:
    key = (vhost, component, name)
    if broker.parameters.pop(key, None) is None:
        return False
    broker.store.delete_definition("parameter", key)
    return True
