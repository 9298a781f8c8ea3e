"""Access matrix over the management API: who may see and do what, as each kind of user.

The same rules as over AMQP hold whichever way a request names a queue or an exchange (a path, a
body's arguments, a binding, a publish, a get), and the API's own rules follow RabbitMQ's by tag:
administrator, policymaker, management, monitoring, a user without tags (not a management user),
a user whose permissions allow only names starting with "allowed-", a policymaker with those same
permissions, and a user without permissions in the vhost. Nobody here has permissions in the
second vhost B.

Covered: listings and vhost-scoped reads (which vhosts a user is shown); PUT of queues and
exchanges with x-dead-letter-exchange / alternate-exchange in every JSON type; bindings (POST,
DELETE, topic permissions); publish (exchange and topic permissions, CC keys); get, purge, delete
and queue actions; another connection's exclusive queue; policies naming exchanges; parameters,
global parameters and the cluster name; definitions import.

Differential: with USAGI_TEST_BROKER_URL and USAGI_TEST_MGMT_URL the same expectations are checked
against RabbitMQ. Where RabbitMQ 3.10 and 4.x answer differently (a get or publish on a resource
that does not exist, CC keys under topic permissions) the expectation follows the version the
broker reports; the Usagi-only peek is skipped there.
"""
from __future__ import annotations

import re
import sys
import os
import uuid
from dataclasses import dataclass, field

import pytest

from mgmtutil import Api, q

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from rawamqp import RawConnection  # noqa: E402
from support.harness import management_base, wait_for  # noqa: E402

pytestmark = pytest.mark.timeout(300)

UID = uuid.uuid4().hex[:8]
PASSWORD = f"pw-{UID}"
KINDS = ("configure", "write", "read")
ALL = (".*", ".*", ".*")
LIMITED = ("^allowed-", "^allowed-", "^allowed-")
TOPIC_PATTERN = "^ok\\."
MGMT_TAGS = ("administrator", "monitoring", "policymaker", "management")

PROFILES = {
    "administrator": ("administrator", ALL),
    "policymaker": ("policymaker", ALL),
    "management": ("management", ALL),
    "monitoring": ("monitoring", ALL),
    "untagged": ("", ALL),
    "limited": ("management", LIMITED),
    "limited-policymaker": ("policymaker", LIMITED),
    "noperm": ("management", None),
}


@dataclass
class User:
    profile: str
    name: str
    tags: str
    perms: tuple | None

    @property
    def mgmt(self) -> bool:
        return self.tags in MGMT_TAGS

    @property
    def admin(self) -> bool:
        return self.tags == "administrator"

    @property
    def monitor(self) -> bool:
        return self.tags in ("administrator", "monitoring")

    @property
    def policymaker(self) -> bool:
        return self.tags in ("administrator", "policymaker")

    @property
    def in_a(self) -> bool:
        return self.perms is not None

    def allows(self, kind: str, name: str) -> bool:
        if self.perms is None:
            return False
        pattern = dict(zip(KINDS, self.perms))[kind]
        return re.search(pattern or "^$", name) is not None


@dataclass
class Env:
    api: Api                     # the setup user (guest)
    a: str                       # vhost A: the users' permissions are here
    b: str                       # vhost B: only the setup user has permissions
    version: tuple
    differential: bool
    users: dict = field(default_factory=dict)
    conns: list = field(default_factory=list)
    cluster_name: str = ""

    @property
    def is4(self) -> bool:
        return self.version >= (4,)

    def as_user(self, u: User) -> Api:
        return self.api.as_user(u.name, PASSWORD)


def _amqp(broker, user, password, vhost) -> RawConnection:
    c = RawConnection.open_to(broker.host, broker.port)
    reply = c.handshake(user=user, password=password, vhost=vhost)
    assert reply.name == "connection.open-ok", reply
    c.open_channel(1)
    return c


@pytest.fixture(scope="module")
def env(broker):
    base, admin_user, admin_password = management_base(broker)
    api = Api(base, admin_user, admin_password)
    if api.get("/api/overview").status != 200:
        pytest.skip(f"management API not reachable at {base} (set USAGI_TEST_MGMT_URL)")
    e = Env(api=api, a=f"amx-a-{UID}", b=f"amx-b-{UID}", version=(0,), differential=not broker.is_usagi)
    try:
        for v in (e.a, e.b):
            api.ok("PUT", f"/api/vhosts/{q(v)}", {})
            api.ok("PUT", f"/api/permissions/{q(v)}/{q(admin_user)}", dict(zip(KINDS, ALL)))
            api.ok("PUT", f"/api/vhost-limits/{q(v)}/max-connections", {"value": 1000})
            api.ok("PUT", f"/api/policies/{q(v)}/pol", {"pattern": "^zz-", "definition": {"max-length": 5}})
            api.ok("PUT", f"/api/operator-policies/{q(v)}/opol", {"pattern": "^zz-", "definition": {"max-length": 5}})
        for profile, (tags, perms) in PROFILES.items():
            u = User(profile, f"amx-{profile}-{UID}", tags, perms)
            api.ok("PUT", f"/api/users/{q(u.name)}", {"password": PASSWORD, "tags": tags})
            if perms is not None:
                api.ok("PUT", f"/api/permissions/{q(e.a)}/{q(u.name)}", dict(zip(KINDS, perms)))
                api.ok("PUT", f"/api/topic-permissions/{q(e.a)}/{q(u.name)}",
                       {"exchange": "allowed-t", "write": TOPIC_PATTERN if perms == LIMITED else ".*",
                        "read": TOPIC_PATTERN if perms == LIMITED else ".*"})
            e.users[profile] = u
        e.cluster_name = api.ok("GET", "/api/cluster-name")["name"]
        # resources in A, made over AMQP by the setup user, whose connection owns an exclusive queue
        c = _amqp(broker, admin_user, admin_password, e.a)
        e.conns.append(c)
        version = c.server_properties.get("version", b"0")
        version = version.decode() if isinstance(version, bytes) else str(version)
        e.version = tuple(int(x) for x in re.findall(r"\d+", version)[:2])
        for x, t in (("allowed-x", "direct"), ("allowed-x2", "fanout"), ("other-x", "fanout"),
                     ("allowed-t", "topic")):
            c.call(1, "exchange.declare", "exchange.declare-ok", exchange=x, type=t)
        for name in ["allowed-q", "other-q"] + [f"other-del-{p}" for p in PROFILES]:
            c.call(1, "queue.declare", "queue.declare-ok", queue=name)
        for p in PROFILES:
            c.call(1, "queue.bind", "queue.bind-ok", queue="other-q", exchange="allowed-x", routing_key=f"del-{p}")
        c.call(1, "queue.declare", "queue.declare-ok", queue="allowed-excl", exclusive=True)
        c.call(1, "queue.bind", "queue.bind-ok", queue="allowed-excl", exchange="allowed-x", routing_key="k")
        c.call(1, "basic.consume", "basic.consume-ok", queue="allowed-q", consumer_tag="amx")
        cb = _amqp(broker, admin_user, admin_password, e.b)
        e.conns.append(cb)
        cb.call(1, "queue.declare", "queue.declare-ok", queue="allowed-q")
        cb.call(1, "basic.consume", "basic.consume-ok", queue="allowed-q", consumer_tag="amx")
        # RabbitMQ lists connections, channels and consumers from statistics, a few seconds late
        for what in ("connections", "channels", "consumers"):
            wait_for(lambda w=what: vhosts_shown(e, api.get(f"/api/{w}").json()) == {e.a, e.b}, 30,
                     message=f"both vhosts' {what} listed")
        yield e
    finally:
        for c in e.conns:
            c.close()
        for u in e.users.values():
            api.delete(f"/api/users/{q(u.name)}")
        for v in (e.a, e.b):
            api.delete(f"/api/vhosts/{q(v)}")


# ----------------------------------------------------------------------------- expectations
def unauthorised(reason: str) -> tuple:
    return 401, {"error": "not_authorised", "reason": reason}


def bad_request(reason) -> tuple:
    return 400, {"error": "bad_request", "reason": reason}


NOT_MGMT = unauthorised("Not management user")
NOT_ADMIN = unauthorised("Not administrator user")
NOT_VHOST = unauthorised("User not authorised to access virtual host")
NOT_OBJECT = unauthorised("User not authorised to access object")
REFUSED = unauthorised("Access refused.")
OK = (200, None)
CREATED = (201, None)
NO_CONTENT = (204, None)


# route authorisations (RabbitMQ's is_authorized_*), given the vhost in the path (None: none)
def by_vhost(env, u, vhost):
    return None if u.admin or (vhost == env.a and u.in_a) or vhost is None else NOT_VHOST


def by_visible_vhost(env, u, vhost):
    return None if u.admin or u.monitor or (vhost == env.a and u.in_a) or vhost is None else NOT_VHOST


def by_policies(env, u, vhost):
    ok = u.admin or (u.policymaker and (vhost is None or (vhost == env.a and u.in_a)))
    return None if ok else NOT_OBJECT


def by_global(env, u, vhost):
    return None if u.policymaker else NOT_OBJECT


def by_admin(env, u, vhost):
    return None if u.admin else NOT_ADMIN


def by_any(env, u, vhost):
    return None


def locked_text(env, queue):
    return (f"cannot obtain exclusive access to locked queue '{queue}' in vhost '{env.a}'. It could be originally "
            f"declared on another connection or the exclusive property value does not match that of the "
            f"original declaration.")


def refused_text(env, u, resource, name):
    return f"ACCESS_REFUSED - access to {resource} '{name}' in vhost '{env.a}' refused for user '{u.name}'"


@dataclass
class Case:
    """A request (or a few); `expect(env, u, n)` gives [(status, body)] once the route lets the
    user in (`auth`); a body of None is not compared, a set is the vhosts (of A and B) a listing shows."""
    name: str
    requests: object                # (env, n) -> [(method, path, body)]
    auth: object                    # (env, u, vhost) -> None or the refusal
    vhost: object                   # env -> the vhost in the path, or None
    expect: object
    usagi_only: bool = False


def one(method, path, body=None):
    return lambda env, n: [(method, path(env, n), body(env, n) if callable(body) else body)]


A = lambda env: env.a                   # noqa: E731
B = lambda env: env.b                   # noqa: E731
NONE = lambda env: None                 # noqa: E731

CASES: list[Case] = []


# --- listings: which vhosts' objects a user is shown
def listing(name, path, auth, shown):
    CASES.append(Case(f"GET {name}", one("GET", lambda env, n: path), auth, NONE,
                      lambda env, u, n: [(200, shown(env, u))]))


def login(env, u):
    return {env.a} if u.in_a else set()


listing("/api/queues", "/api/queues", by_any, lambda env, u: {env.a, env.b} if u.admin else login(env, u))
listing("/api/exchanges", "/api/exchanges", by_any, lambda env, u: {env.a, env.b} if u.admin else login(env, u))
listing("/api/bindings", "/api/bindings", by_any, lambda env, u: {env.a, env.b} if u.admin else login(env, u))
listing("/api/consumers", "/api/consumers", by_any, lambda env, u: {env.a, env.b} if u.monitor else set())
listing("/api/connections", "/api/connections", by_any, lambda env, u: {env.a, env.b} if u.monitor else set())
listing("/api/channels", "/api/channels", by_any, lambda env, u: {env.a, env.b} if u.monitor else set())
listing("/api/vhosts", "/api/vhosts", by_any, lambda env, u: {env.a, env.b} if u.monitor else login(env, u))
listing("/api/policies", "/api/policies", by_any, lambda env, u: {env.a, env.b} if u.admin else login(env, u))
listing("/api/operator-policies", "/api/operator-policies", by_any,
        lambda env, u: {env.a, env.b} if u.admin else login(env, u))
listing("/api/vhost-limits", "/api/vhost-limits", by_any,
        lambda env, u: {env.a, env.b} if u.monitor else login(env, u))
# runtime parameters can hold credentials (federation URIs): never another vhost's
listing("/api/parameters", "/api/parameters", by_policies,
        lambda env, u: {env.a, env.b} if u.admin else login(env, u))
listing("/api/parameters/vhost-limits", "/api/parameters/vhost-limits", by_policies,
        lambda env, u: {env.a, env.b} if u.admin else login(env, u))
CASES.append(Case("GET /api/global-parameters", one("GET", lambda env, n: "/api/global-parameters"), by_global,
                  NONE, lambda env, u, n: [OK]))


# --- vhost-scoped reads
def scoped(name, path, auth, expect=None):
    for label, vh in (("A", A), ("B", B)):
        CASES.append(Case(f"GET {name} in {label}", one("GET", lambda env, n, p=path, v=vh: p.format(v=q(v(env)))),
                          auth, vh, expect or (lambda env, u, n, v=vh: [(200, {v(env)})])))


scoped("/api/queues/V", "/api/queues/{v}", by_vhost)
scoped("/api/exchanges/V", "/api/exchanges/{v}", by_vhost)
scoped("/api/bindings/V", "/api/bindings/{v}", by_vhost)
scoped("/api/policies/V", "/api/policies/{v}", by_vhost)
scoped("/api/operator-policies/V", "/api/operator-policies/{v}", by_vhost)
scoped("/api/vhost-limits/V", "/api/vhost-limits/{v}", by_visible_vhost)
scoped("/api/parameters/vhost-limits/V", "/api/parameters/vhost-limits/{v}", by_policies)
scoped("/api/parameters/vhost-limits/V/limits", "/api/parameters/vhost-limits/{v}/limits", by_policies,
       lambda env, u, n: [OK])
scoped("/api/policies/V/pol", "/api/policies/{v}/pol", by_policies, lambda env, u, n: [OK])
scoped("/api/operator-policies/V/opol", "/api/operator-policies/{v}/opol", by_admin, lambda env, u, n: [OK])
scoped("/api/queues/V/allowed-q", "/api/queues/{v}/allowed-q", by_vhost, lambda env, u, n: [OK])
for _label, _vh in (("A", A), ("B", B)):
    CASES.append(Case(f"GET /api/consumers/V in {_label}",
                      one("GET", lambda env, n, v=_vh: f"/api/consumers/{q(v(env))}"), by_any, _vh,
                      lambda env, u, n, v=_vh: [(200, {v(env)} if u.monitor else set())]))
    for _what in ("connections", "channels"):
        CASES.append(Case(f"GET /api/vhosts/V/{_what} in {_label}",
                          one("GET", lambda env, n, v=_vh, w=_what: f"/api/vhosts/{q(v(env))}/{w}"), by_vhost, _vh,
                          lambda env, u, n, v=_vh: [(200, {v(env)} if u.monitor else set())]))
CASES.append(Case("GET /api/vhosts/A", one("GET", lambda env, n: f"/api/vhosts/{q(env.a)}"), by_admin, A,
                  lambda env, u, n: [OK]))


# --- PUT a queue or an exchange whose arguments name an exchange
DECLARE = {"queue": ("x-dead-letter-exchange", "/api/queues"), "exchange": ("alternate-exchange", "/api/exchanges")}
JSON_VALUES = [("allowed", "allowed-x"), ("other", "other-x"), ("default exchange", ""), ("number", 5),
               ("boolean", True), ("float", 1.5), ("object", {"name": "other-x"}), ("list", ["other-x"]),
               ("null", None)]
JSON_TYPE = {int: "long", bool: "bool", float: "double", dict: "table", list: "array"}


def put_declared(resource, value, prefix="allowed-new"):
    key, root = DECLARE[resource]

    def requests(env, n):
        body = {"arguments": {key: value}}
        if resource == "exchange":
            body["type"] = "fanout"
        name = f"{prefix}-{n['i']}"
        return [("PUT", f"{root}/{q(env.a)}/{q(name)}", body), ("DELETE", f"{root}/{q(env.a)}/{q(name)}", None)]

    def expect(env, u, n):
        name = f"{prefix}-{n['i']}"
        if value is None:
            first = bad_request("null_not_allowed")          # before anything else
        elif prefix.startswith("amq."):
            first = REFUSED
        elif not u.allows("configure", name):
            first = REFUSED
        elif not isinstance(value, str):
            first = bad_request(f"invalid type '{JSON_TYPE[type(value)]}' for arg '{key}' in {resource} "
                                f"'{name}' in vhost '{env.a}'")
        elif not u.allows("write", value or "amq.default"):
            first = REFUSED
        else:
            first = CREATED
        # the cleanup (as the same user) deletes what was made; else there is nothing to delete
        second = NO_CONTENT if first == CREATED else (404, None)
        return [first, second]
    return requests, expect


for _res in ("queue", "exchange"):
    for _label, _value in JSON_VALUES:
        _r, _e = put_declared(_res, _value)
        CASES.append(Case(f"PUT {_res} with {DECLARE[_res][0]} {_label}", _r, by_vhost, A, _e))
    _r, _e = put_declared(_res, 5, "other-new")
    CASES.append(Case(f"PUT {_res} other name with {DECLARE[_res][0]} number", _r, by_vhost, A, _e))
    _r, _e = put_declared(_res, "allowed-x", "amq.amx")
    CASES.append(Case(f"PUT {_res} amq. name", _r, by_vhost, A, _e))
CASES.append(Case("PUT exchange amq.direct (existing)",
                  one("PUT", lambda env, n: f"/api/exchanges/{q(env.a)}/amq.direct", {"type": "direct", "durable": True}),
                  by_vhost, A, lambda env, u, n: [NO_CONTENT if u.allows("configure", "amq.direct") else REFUSED]))
CASES.append(Case("PUT queue in B", one("PUT", lambda env, n: f"/api/queues/{q(env.b)}/allowed-b-{n['i']}", {}),
                  by_vhost, B, lambda env, u, n: [REFUSED]))


# --- another connection's exclusive queue
def locked_case(name, method, path, body=None, channel=False, usagi_only=False):
    def expect(env, u, n):
        text = locked_text(env, "allowed-excl")
        return [bad_request(f"405 RESOURCE_LOCKED - {text}" if channel else text)]
    CASES.append(Case(f"exclusive queue of another connection: {name}", one(method, path, body), by_vhost, A,
                      expect, usagi_only))


locked_case("PUT", "PUT", lambda env, n: f"/api/queues/{q(env.a)}/allowed-excl", {})
locked_case("DELETE", "DELETE", lambda env, n: f"/api/queues/{q(env.a)}/allowed-excl")
locked_case("purge", "DELETE", lambda env, n: f"/api/queues/{q(env.a)}/allowed-excl/contents")
locked_case("get", "POST", lambda env, n: f"/api/queues/{q(env.a)}/allowed-excl/get",
            {"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto"}, channel=True)
locked_case("peek", "GET", lambda env, n: f"/api/queues/{q(env.a)}/allowed-excl/peek", channel=True,
            usagi_only=True)
locked_case("bind", "POST", lambda env, n: f"/api/bindings/{q(env.a)}/e/allowed-x/q/allowed-excl",
            {"routing_key": "k2"})
locked_case("unbind", "DELETE", lambda env, n: f"/api/bindings/{q(env.a)}/e/allowed-x/q/allowed-excl/k")


# --- delete, purge, get, actions
CASES.append(Case("DELETE queue other-del", one("DELETE", lambda env, n: f"/api/queues/{q(env.a)}/other-del-{n['p']}"),
                  by_vhost, A, lambda env, u, n: [NO_CONTENT if u.allows("configure", "other-del") else REFUSED]))
CASES.append(Case("purge other-q", one("DELETE", lambda env, n: f"/api/queues/{q(env.a)}/other-q/contents"),
                  by_vhost, A, lambda env, u, n: [NO_CONTENT if u.allows("read", "other-q") else REFUSED]))
GET_BODY = {"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto"}
CASES.append(Case("get other-q", one("POST", lambda env, n: f"/api/queues/{q(env.a)}/other-q/get", GET_BODY),
                  by_vhost, A, lambda env, u, n: [
                      (200, []) if u.allows("read", "other-q") else unauthorised(refused_text(env, u, "queue", "other-q"))]))
CASES.append(Case("get missing queue", one("POST", lambda env, n: f"/api/queues/{q(env.a)}/allowed-missing/get",
                                           GET_BODY), by_vhost, A, lambda env, u, n: [
    (404, {"error": "not_found", "reason": "queue_not_found"}) if env.is4 else
    (404, {"error": "not_found", "reason": f"NOT_FOUND - no queue 'allowed-missing' in vhost '{env.a}'"})]))
CASES.append(Case("get in B", one("POST", lambda env, n: f"/api/queues/{q(env.b)}/allowed-q/get", GET_BODY),
                  by_vhost, B, lambda env, u, n: [REFUSED]))
CASES.append(Case("queue actions", one("POST", lambda env, n: f"/api/queues/{q(env.a)}/allowed-q/actions",
                                       {"action": "sync"}), by_admin, A, lambda env, u, n: [NO_CONTENT]))


# --- bindings
def bind_case(label, source, dtype, dest, rk, expect):
    CASES.append(Case(f"POST binding {label}",
                      one("POST", lambda env, n: f"/api/bindings/{q(env.a)}/e/{q(source)}/{dtype}/{q(dest)}",
                          lambda env, n: {"routing_key": rk.format(**n)}), by_vhost, A, expect))


def bind_expect(dkind, dest, source):
    def expect(env, u, n):
        ok = u.allows("write", dest) and u.allows("read", source)
        return [CREATED if ok else REFUSED]
    return expect


bind_case("allowed-x to allowed-q", "allowed-x", "q", "allowed-q", "b-{p}", bind_expect("queue", "allowed-q", "allowed-x"))
bind_case("other-x to allowed-q", "other-x", "q", "allowed-q", "b-{p}", bind_expect("queue", "allowed-q", "other-x"))
bind_case("allowed-x to other-q", "allowed-x", "q", "other-q", "b-{p}", bind_expect("queue", "other-q", "allowed-x"))
bind_case("allowed-x to exchange other-x", "allowed-x", "e", "other-x", "b-{p}",
          bind_expect("exchange", "other-x", "allowed-x"))
bind_case("default exchange to allowed-q", "amq.default", "q", "allowed-q", "b-{p}", lambda env, u, n: [REFUSED])
bind_case("topic allowed-t to allowed-q, key refused by topic permissions", "allowed-t", "q", "allowed-q",
          "bad.{p}", lambda env, u, n: [REFUSED if u.perms == LIMITED else CREATED])
bind_case("allowed-x to a missing queue", "allowed-x", "q", "allowed-missing", "b-{p}",
          lambda env, u, n: [(404, {"error": "not_found", "reason": f"no queue 'allowed-missing' in vhost '{env.a}'"})])
CASES.append(Case("DELETE binding allowed-x to other-q",
                  one("DELETE", lambda env, n: f"/api/bindings/{q(env.a)}/e/allowed-x/q/other-q/del-{n['p']}"),
                  by_vhost, A, lambda env, u, n: [NO_CONTENT if u.allows("write", "other-q") else REFUSED]))
CASES.append(Case("DELETE the default exchange's binding",
                  one("DELETE", lambda env, n: f"/api/bindings/{q(env.a)}/e/amq.default/q/allowed-q/allowed-q"),
                  by_vhost, A, lambda env, u, n: [REFUSED]))


# --- publish
def publish_case(label, exchange, rk, expect, headers=None, vhost=A):
    body = {"routing_key": rk, "properties": {"headers": headers} if headers else {}, "payload": "p",
            "payload_encoding": "string"}
    CASES.append(Case(f"publish {label}", one("POST", lambda env, n: f"/api/exchanges/{q(vhost(env))}/{q(exchange)}/publish",
                                              body), by_vhost, vhost, expect))


def publish_refused(resource, name):
    return lambda env, u: bad_request(f"403 {refused_text(env, u, resource, name)}")


def topic_refused(env, u, key):
    return bad_request(f"403 ACCESS_REFUSED - access to topic '{key}' in exchange 'allowed-t' in vhost '{env.a}' "
                       f"refused for user '{u.name}'")


publish_case("allowed-x", "allowed-x", "unbound", lambda env, u, n: [(200, {"routed": False})])
publish_case("other-x", "other-x", "unbound", lambda env, u, n: [
    OK if u.allows("write", "other-x") else publish_refused("exchange", "other-x")(env, u)])
publish_case("default exchange", "amq.default", "allowed-q", lambda env, u, n: [
    (200, {"routed": True}) if u.allows("write", "amq.default") else publish_refused("exchange", "amq.default")(env, u)])
publish_case("topic key refused", "allowed-t", "bad.1", lambda env, u, n: [
    topic_refused(env, u, "bad.1") if u.perms == LIMITED else (200, {"routed": False})])
publish_case("topic CC key refused", "allowed-t", "ok.1", lambda env, u, n: [
    topic_refused(env, u, "bad.2") if u.perms == LIMITED and env.is4 else (200, {"routed": False})],
    headers={"CC": ["bad.2"]})
publish_case("missing exchange", "allowed-missing", "k", lambda env, u, n: [
    (404, {"error": "not_found", "reason": "exchange_not_found"}) if env.is4 else
    bad_request(f"404 NOT_FOUND - no exchange 'allowed-missing' in vhost '{env.a}'")])
publish_case("in B", "amq.default", "allowed-q", lambda env, u, n: [REFUSED], vhost=B)


# --- policies, parameters, global parameters, definitions
def policy_case(label, vhost, definition):
    def requests(env, n):
        path = f"/api/policies/{q(vhost(env))}/amx-{n['p']}"
        return [("PUT", path, {"pattern": "^allowed-zz-", "definition": definition}), ("DELETE", path, None)]
    CASES.append(Case(f"policy {label}", requests, by_policies, vhost, lambda env, u, n: [CREATED, NO_CONTENT]))


policy_case("naming a dead-letter exchange in A", A, {"dead-letter-exchange": "other-x"})
policy_case("naming an alternate exchange in A", A, {"alternate-exchange": "other-x"})
policy_case("in B", B, {"dead-letter-exchange": "other-x"})
CASES.append(Case("PUT parameter in A",
                  one("PUT", lambda env, n: f"/api/parameters/vhost-limits/{q(env.a)}/limits",
                      {"value": {"max-connections": 1000}}), by_policies, A, lambda env, u, n: [NO_CONTENT]))
CASES.append(Case("PUT parameter in B",
                  one("PUT", lambda env, n: f"/api/parameters/vhost-limits/{q(env.b)}/limits",
                      {"value": {"max-connections": 1000}}), by_policies, B, lambda env, u, n: [NO_CONTENT]))
CASES.append(Case("DELETE missing parameter in A",
                  one("DELETE", lambda env, n: f"/api/parameters/vhost-limits/{q(env.a)}/amx-none"), by_policies, A,
                  lambda env, u, n: [(404, None)]))
CASES.append(Case("global parameter PUT and DELETE",
                  lambda env, n: [("PUT", f"/api/global-parameters/amx-{UID}-{n['p']}", {"value": {"n": 1}}),
                                  ("DELETE", f"/api/global-parameters/amx-{UID}-{n['p']}", None)],
                  by_global, NONE, lambda env, u, n: [CREATED, NO_CONTENT]))


def definitions_case(label, path):
    def requests(env, n):
        queue = {"name": f"allowed-imp-{n['i']}", "durable": True, "auto_delete": False,
                 "arguments": {"x-dead-letter-exchange": "other-x"}}
        if path == "/api/definitions":
            queue["vhost"] = env.a
        return [("POST", path.format(v=q(env.a)), {"queues": [queue]})]
    CASES.append(Case(f"definitions import {label}", requests, by_admin, NONE, lambda env, u, n: [NO_CONTENT]))


definitions_case("(all)", "/api/definitions")
definitions_case("(one vhost)", "/api/definitions/{v}")


# ----------------------------------------------------------------------------- the test
def vhosts_shown(env, body) -> set:
    out = set()
    for it in body if isinstance(body, list) else []:
        if not isinstance(it, dict):
            continue
        v = it.get("vhost")
        if v is None and isinstance(it.get("queue"), dict):
            v = it["queue"].get("vhost")
        if v is None:
            v = it.get("name")
        if v in (env.a, env.b):
            out.add(v)
    return out


MATRIX = [(c, p) for c in CASES for p in PROFILES]
_counter = iter(range(10 ** 9))


@pytest.mark.parametrize("case,profile", MATRIX, ids=[f"{p}-{c.name.replace(' ', '_')}" for c, p in MATRIX])
def test_http_access_matrix(env, case, profile):
    if case.usagi_only and env.differential:
        pytest.skip("a Usagi-only route (no RabbitMQ counterpart to compare with)")
    u = env.users[profile]
    n = {"p": profile, "i": f"{next(_counter)}-{UID}"}
    requests = case.requests(env, n)
    if not u.mgmt:
        expected = [NOT_MGMT]
    else:
        refusal = case.auth(env, u, case.vhost(env))
        expected = [refusal] if refusal else case.expect(env, u, n)
    api = env.as_user(u)
    for (method, path, body), (status, want) in zip(requests, expected):
        r = api.request(method, path, body)
        got = r.json() if r.body else None
        where = f"{case.name} as {profile}: {method} {path}"
        assert r.status == status, f"{where}: {r}"
        if isinstance(want, set):
            assert vhosts_shown(env, got) == want, f"{where}: {got}"
        elif want is not None:
            assert got == want, where
    # a refused first request leaves nothing to clean up: the remaining requests are not sent


def test_cluster_name(env):
    """PUT /api/cluster-name is for administrators; but RabbitMQ (3.10 and 4.x) lets policymakers
    change global parameters, cluster_name included (it is where the cluster name is kept). The
    same name is written back and the global parameter restored, so the cluster keeps its name."""
    api = env.api
    before = api.get("/api/global-parameters/cluster_name")
    pm = env.as_user(env.users["policymaker"])
    try:
        for profile, u in env.users.items():
            r = env.as_user(u).put("/api/cluster-name", {"name": env.cluster_name})
            want = NO_CONTENT if u.admin else NOT_ADMIN if u.mgmt else NOT_MGMT
            assert (r.status, r.json() if r.body else None) == want, profile
        if before.status != 200:
            api.delete("/api/global-parameters/cluster_name")
        r = pm.put("/api/global-parameters/cluster_name", {"value": env.cluster_name})
        assert r.status == (204 if before.status == 200 else 201), r
        assert api.ok("GET", "/api/cluster-name") == {"name": env.cluster_name}
        mgmt = env.as_user(env.users["management"])
        r = mgmt.put("/api/global-parameters/cluster_name", {"value": "amx-not-allowed"})
        assert (r.status, r.json()) == NOT_OBJECT
    finally:
        if before.status == 200:
            api.put("/api/global-parameters/cluster_name", {"value": before.json()["value"]})
        else:
            api.delete("/api/global-parameters/cluster_name")
    assert api.ok("GET", "/api/cluster-name") == {"name": env.cluster_name}


def test_exclusive_queue_survives_the_api(env):
    """After every refused request above, the exclusive queue is still there with its binding."""
    c = env.conns[0]
    c.send_method(1, "queue.declare", queue="allowed-excl", passive=True)
    while True:                 # past deliveries to the setup connection's consumer
        f = c.read_frame()
        if f.name in ("queue.declare-ok", "channel.close"):
            break
    assert f.name == "queue.declare-ok" and f["queue"] == "allowed-excl", f
    bindings = env.api.ok("GET", f"/api/queues/{q(env.a)}/allowed-excl/bindings")
    assert any(b["routing_key"] == "k" for b in bindings)
