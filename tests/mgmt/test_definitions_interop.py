"""Definitions move between RabbitMQ 3.10 and Usagi, both ways.

1. A rich set of definitions is made on RabbitMQ through its management API (users with tags,
   limits and password hashes, vhosts, permissions, topic permissions, policies, operator
   policies, vhost limits, a global parameter, durable exchanges of every type with arguments,
   queues with arguments - TTL, expiry, dead lettering, length limits, priorities, quorum,
   stream - and bindings, exchange-to-exchange and headers ones included).
2. RabbitMQ's GET /api/definitions (cut down to this test's objects) is POSTed into a fresh Usagi,
   which must then show the same objects, export the same definitions, accept AMQP logins with
   the original passwords (checked against RabbitMQ's own hashes) and passive declares of every
   queue and exchange.
3. Usagi's export (again cut down, with every name moved to a second prefix so nothing clashes)
   is POSTed into RabbitMQ, which must then hold the very same definitions, and accept the
   same logins.

RabbitMQ's management API is USAGI_TEST_MGMT_URL (default http://guest:guest@127.0.0.1:15682) and
its AMQP port that of USAGI_TEST_BROKER_URL (default amqp://guest:guest@127.0.0.1:5682/%2F); the
test is skipped if they cannot be reached. Everything it makes on RabbitMQ is deleted afterwards.
"""
from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)

from mgmtutil import MGMT_RE, wait_until  # noqa: E402
from rawamqp import RawConnection, close_summary  # noqa: E402
from support.harness import ServerProcess  # noqa: E402

pytestmark = pytest.mark.timeout(120)

DEFAULT_MGMT_URL = "http://guest:guest@127.0.0.1:15682"
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5682/%2F"


def q(name: str) -> str:
    return urllib.parse.quote(name, safe="")


class Api:
    def __init__(self, url: str):
        p = urllib.parse.urlsplit(url)
        self.base = f"{p.scheme}://{p.hostname}:{p.port}{p.path.rstrip('/')}"
        user = urllib.parse.unquote(p.username or "guest")
        password = urllib.parse.unquote(p.password or "guest")
        self.auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def call(self, method: str, path: str, body=None, expect=(200, 201, 204)):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Authorization": self.auth,
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        if expect and status not in expect:
            raise AssertionError(f"{method} {path}: {status} {raw[:500]!r}")
        return json.loads(raw) if raw else None

    def get(self, path):
        return self.call("GET", path)

    def reachable(self) -> bool:
        try:
            req = urllib.request.Request(self.base + "/api/overview", headers={"Authorization": self.auth})
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status == 200
        except (OSError, urllib.error.URLError):
            return False


def amqp_login(host: str, port: int, user: str, password: str, vhost: str):
    """(RawConnection with channel 1 open, None), or (None, the connection.close summary)."""
    c = RawConnection.open_to(host, port)
    try:
        reply = c.handshake(user=user, password=password, vhost=vhost)
    except Exception:
        c.close()
        return None, ("closed",)
    if reply.name != "connection.open-ok":
        c.close()
        return None, close_summary(reply) if reply.name == "connection.close" else (reply.name,)
    c.open_channel(1)
    return c, None


def passive_checks(c: RawConnection, queues, exchanges):
    for name in queues:
        c.send_method(1, "queue.declare", queue=name, passive=True)
        f = c.read_frame()
        assert f.name == "queue.declare-ok", (name, f.name, f.args)
    for name in exchanges:
        c.send_method(1, "exchange.declare", exchange=name, type="direct", passive=True)
        f = c.read_frame()
        assert f.name == "exchange.declare-ok", (name, f.name, f.args)


def sha_hash(password: str, algo=hashlib.sha512, salt: bytes = b"\x01\x02\x03\x04") -> str:
    """A RabbitMQ password hash: base64(salt ++ H(salt ++ password))."""
    return base64.b64encode(salt + algo(salt + password.encode()).digest()).decode()


# ----------------------------------------------------------------------------- the definitions
def make_definitions_on_rabbitmq(api: Api, p: str) -> dict:
    """Creates everything under prefix `p`; returns facts the checks need."""
    main, second = f"{p}-main", f"{p}-second"
    users = {f"{p}-admin": ("admin-pw", "administrator"),
             f"{p}-app": ("app-pw", "monitoring,policymaker"),
             f"{p}-plain": ("plain-pw", "")}
    for v, body in ((main, {"description": "main vhost", "tags": "prod,eu"}), (second, {})):
        api.call("PUT", f"/api/vhosts/{q(v)}", body)
    for u, (pw, tags) in users.items():
        api.call("PUT", f"/api/users/{q(u)}", {"password": pw, "tags": tags})
    # a user given as a SHA-512 hash
    api.call("PUT", f"/api/users/{q(p + '-hashed')}",
             {"password_hash": sha_hash("hashed-pw"), "hashing_algorithm": "rabbit_password_hashing_sha512",
              "tags": "management"})
    users[f"{p}-hashed"] = ("hashed-pw", "management")
    api.call("PUT", f"/api/user-limits/{q(p + '-app')}/max-connections", {"value": 20})
    api.call("PUT", f"/api/user-limits/{q(p + '-app')}/max-channels", {"value": 30})
    for v in (main, second):
        api.call("PUT", f"/api/permissions/{q(v)}/{q(p + '-admin')}",
                 {"configure": ".*", "write": ".*", "read": ".*"})
        api.call("PUT", f"/api/permissions/{q(v)}/guest", {"configure": ".*", "write": ".*", "read": ".*"})
    api.call("PUT", f"/api/permissions/{q(main)}/{q(p + '-app')}",
             {"configure": "^app-", "write": "^(app-|amq\\.default$)", "read": ".*"})
    api.call("PUT", f"/api/permissions/{q(second)}/{q(p + '-plain')}", {"configure": "", "write": "", "read": ".*"})
    api.call("PUT", f"/api/permissions/{q(main)}/{q(p + '-hashed')}", {"configure": "", "write": "", "read": ""})
    api.call("PUT", f"/api/topic-permissions/{q(main)}/{q(p + '-app')}",
             {"exchange": "amq.topic", "write": "^orders\\.", "read": ".*"})
    api.call("PUT", f"/api/topic-permissions/{q(main)}/{q(p + '-app')}",
             {"exchange": "app-events", "write": "^{username}\\.", "read": ""})
    # policies, operator policies, limits, a global parameter
    api.call("PUT", f"/api/policies/{q(main)}/ttl-policy",
             {"pattern": "^pol-", "definition": {"message-ttl": 60000, "max-length": 1000},
              "apply-to": "queues", "priority": 2})
    api.call("PUT", f"/api/policies/{q(main)}/ae-policy",
             {"pattern": "^polx-", "definition": {"alternate-exchange": "ae"}, "apply-to": "exchanges"})
    api.call("PUT", f"/api/policies/{q(second)}/dlx-policy",
             {"pattern": ".*", "definition": {"dead-letter-exchange": "dlx", "overflow": "reject-publish"},
              "apply-to": "all", "priority": 0})
    api.call("PUT", f"/api/operator-policies/{q(main)}/op-limit",
             {"pattern": "^op-", "definition": {"max-length": 5000, "expires": 3600000},
              "apply-to": "queues", "priority": 1})
    api.call("PUT", f"/api/vhost-limits/{q(main)}/max-queues", {"value": 500})
    api.call("PUT", f"/api/vhost-limits/{q(main)}/max-connections", {"value": 100})
    api.call("PUT", f"/api/global-parameters/{q(p + '-gp')}", {"value": {"owner": "tests", "n": 1}})
    # exchanges
    exchanges = {
        "app-direct": {"type": "direct"},
        "app-fanout": {"type": "fanout", "arguments": {"alternate-exchange": "ae"}},
        "app-events": {"type": "topic"},
        "app-headers": {"type": "headers", "internal": True},
        "ae": {"type": "fanout"},
        "dlx": {"type": "direct"},
        "polx-routed": {"type": "topic"},
        "app-autodelete": {"type": "direct", "auto_delete": True},
    }
    for name, body in exchanges.items():
        api.call("PUT", f"/api/exchanges/{q(main)}/{q(name)}", {"durable": True, **body})
    api.call("PUT", f"/api/exchanges/{q(second)}/dlx", {"type": "fanout", "durable": True})
    # queues
    queues = {
        "app-plain": {},
        "app-ttl": {"x-message-ttl": 30000, "x-expires": 600000},
        "app-dlx": {"x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": "dead"},
        "app-maxlen": {"x-max-length": 10, "x-overflow": "reject-publish", "x-max-length-bytes": 100000},
        "app-priority": {"x-max-priority": 10},
        "app-lazy": {"x-queue-mode": "lazy", "x-single-active-consumer": True},
        "app-quorum": {"x-queue-type": "quorum", "x-delivery-limit": 5},
        "app-stream": {"x-queue-type": "stream", "x-max-age": "1D"},
        "ae-sink": {},
        "dead": {},
        "pol-target": {},
    }
    for name, args in queues.items():
        api.call("PUT", f"/api/queues/{q(main)}/{q(name)}", {"durable": True, "arguments": args})
    api.call("PUT", f"/api/queues/{q(second)}/sq", {"durable": True, "arguments": {"x-queue-type": "classic"}})
    # bindings
    qb = [("app-direct", "app-plain", "plain", {}), ("app-direct", "app-ttl", "ttl", {}),
          ("app-fanout", "app-priority", "", {}), ("app-events", "app-quorum", "orders.#", {}),
          ("app-events", "app-lazy", "*.created", {}), ("ae", "ae-sink", "", {}),
          ("dlx", "dead", "dead", {}),
          ("app-headers", "app-maxlen", "", {"x-match": "all", "kind": "report", "version": 2}),
          ("app-headers", "app-dlx", "", {"x-match": "any", "urgent": True, "tag": "x"}),
          ("app-autodelete", "app-plain", "auto", {})]
    for src, dst, rk, args in qb:
        api.call("POST", f"/api/bindings/{q(main)}/e/{q(src)}/q/{q(dst)}", {"routing_key": rk, "arguments": args})
    eb = [("app-events", "app-direct", "orders.created", {}),
          ("app-fanout", "app-headers", "", {"x-match": "any", "a": 1}),
          ("app-direct", "app-fanout", "fan", {})]
    for src, dst, rk, args in eb:
        api.call("POST", f"/api/bindings/{q(main)}/e/{q(src)}/e/{q(dst)}", {"routing_key": rk, "arguments": args})
    api.call("POST", f"/api/bindings/{q(second)}/e/dlx/q/sq", {"routing_key": "", "arguments": {}})
    return {"main": main, "second": second, "users": users,
            "queues": list(queues), "exchanges": list(exchanges)}


# ----------------------------------------------------------------------------- export handling
NAMED_LISTS = ("users", "vhosts", "permissions", "topic_permissions", "parameters", "global_parameters",
               "policies", "queues", "exchanges", "bindings")


def _mine(d: dict, key: str, p: str) -> bool:
    if key in ("users", "vhosts", "global_parameters"):
        return d["name"].startswith(p + "-")
    return d.get("vhost", "").startswith(p + "-") and (key != "permissions" or d["user"] != "guest")


def cut(defs: dict, p: str) -> dict:
    """A definitions export reduced to this test's objects (prefix p)."""
    out = {k: v for k, v in defs.items() if k not in NAMED_LISTS}
    for key in NAMED_LISTS:
        out[key] = [d for d in defs.get(key, []) if _mine(d, key, p)]
    return out


def rename(defs: dict, old: str, new: str) -> dict:
    """Every user, vhost and global parameter name with prefix `old` moved to prefix `new`."""
    d = copy.deepcopy(defs)

    def mv(s):
        return new + s[len(old):] if isinstance(s, str) and s.startswith(old + "-") else s
    for key in NAMED_LISTS:
        for item in d.get(key, []):
            for f in ("name", "vhost", "user"):
                if f in item and (f != "name" or key in ("users", "vhosts", "global_parameters")):
                    item[f] = mv(item[f])
    return d


def normal(defs: dict, drop_vhost: bool = False) -> dict:
    """The comparable part of an export: each list as a sorted list of canonical JSON strings."""
    out = {}
    for key in NAMED_LISTS:
        items = []
        for item in defs.get(key, []):
            item = dict(item)
            if drop_vhost:
                item.pop("vhost", None)
            if key == "vhosts":
                item = {"name": item["name"]}       # RabbitMQ 3.10 exports vhost names only
            if key == "users":
                item["tags"] = sorted(item.get("tags") or [])
                item.setdefault("limits", {})
            items.append(json.dumps(item, sort_keys=True))
        out[key] = sorted(items)
    return out


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def rabbit():
    api = Api(os.environ.get("USAGI_TEST_MGMT_URL") or DEFAULT_MGMT_URL)
    if not api.reachable():
        pytest.skip(f"RabbitMQ's management API is not reachable at {api.base} "
                    f"(set USAGI_TEST_MGMT_URL to a RabbitMQ 3.10 node's management URL)")
    amqp = urllib.parse.urlsplit(os.environ.get("USAGI_TEST_BROKER_URL") or DEFAULT_AMQP_URL)
    host, port = amqp.hostname or "127.0.0.1", amqp.port or 5672
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError:
        pytest.skip(f"RabbitMQ's AMQP port is not reachable at {host}:{port} (set USAGI_TEST_BROKER_URL)")
    return api, host, port


@pytest.fixture
def usagi():
    server = ServerProcess(extra_args=["--in-memory"]).start()
    try:
        m = wait_until(lambda: MGMT_RE.search("".join(server.lines)), 10,
                       message="'Management listener on HOST:PORT' in the Usagi log")
        yield Api(f"http://guest:guest@{m.group(1)}:{m.group(2)}"), server
    finally:
        server.cleanup()


@pytest.fixture
def prefixes(rabbit):
    api = rabbit[0]
    uid = uuid.uuid4().hex[:8]
    made = [f"defs-{uid}", f"defsback-{uid}"]
    yield made
    for p in made:       # clean up RabbitMQ
        for v in (f"{p}-main", f"{p}-second"):
            api.call("DELETE", f"/api/vhosts/{q(v)}", expect=None)
        for u in ("admin", "app", "plain", "hashed"):
            api.call("DELETE", f"/api/users/{q(p + '-' + u)}", expect=None)
        api.call("DELETE", f"/api/global-parameters/{q(p + '-gp')}", expect=None)


# ----------------------------------------------------------------------------- the test
def test_definitions_round_trip_rabbitmq_usagi_rabbitmq(rabbit, usagi, prefixes):
    rmq, rhost, rport = rabbit
    uapi, server = usagi
    p, p2 = prefixes
    facts = make_definitions_on_rabbitmq(rmq, p)
    main = facts["main"]

    # --- RabbitMQ -> Usagi
    exported = cut(rmq.get("/api/definitions"), p)
    assert exported["rabbit_version"].startswith("3.")
    assert len(exported["queues"]) == len(facts["queues"]) + 1
    assert len(exported["exchanges"]) == len(facts["exchanges"]) + 1
    uapi.call("POST", "/api/definitions", exported)

    # the objects, one by one, through Usagi's API
    hashes = {u["name"]: u for u in exported["users"]}
    for name in facts["users"]:
        u = uapi.get(f"/api/users/{q(name)}")
        assert u["password_hash"] == hashes[name]["password_hash"]
        assert u["hashing_algorithm"] == hashes[name]["hashing_algorithm"]
        assert sorted(u["tags"]) == sorted(hashes[name]["tags"])
    assert uapi.get(f"/api/user-limits/{q(p + '-app')}")[0]["value"] == {"max-connections": 20,
                                                                          "max-channels": 30}
    perm = uapi.get(f"/api/permissions/{q(main)}/{q(p + '-app')}")
    assert (perm["configure"], perm["write"], perm["read"]) == ("^app-", "^(app-|amq\\.default$)", ".*")
    tps = uapi.get(f"/api/topic-permissions/{q(main)}/{q(p + '-app')}")
    assert sorted((t["exchange"], t["write"], t["read"]) for t in tps) == [
        ("amq.topic", "^orders\\.", ".*"), ("app-events", "^{username}\\.", "")]
    pol = uapi.get(f"/api/policies/{q(main)}/ttl-policy")
    assert (pol["pattern"], pol["apply-to"], pol["priority"], pol["definition"]) == (
        "^pol-", "queues", 2, {"message-ttl": 60000, "max-length": 1000})
    op = uapi.get(f"/api/operator-policies/{q(main)}/op-limit")
    assert (op["pattern"], op["definition"]) == ("^op-", {"max-length": 5000, "expires": 3600000})
    assert uapi.get(f"/api/vhost-limits/{q(main)}")[0]["value"] == {"max-queues": 500, "max-connections": 100}
    assert uapi.get(f"/api/global-parameters/{q(p + '-gp')}")["value"] == {"owner": "tests", "n": 1}
    x = uapi.get(f"/api/exchanges/{q(main)}/app-fanout")
    assert (x["type"], x["durable"], x["arguments"]) == ("fanout", True, {"alternate-exchange": "ae"})
    assert uapi.get(f"/api/exchanges/{q(main)}/app-headers")["internal"] is True
    assert uapi.get(f"/api/exchanges/{q(main)}/app-autodelete")["auto_delete"] is True
    qq = uapi.get(f"/api/queues/{q(main)}/app-quorum")
    assert (qq["type"], qq["arguments"]) == ("quorum", {"x-queue-type": "quorum", "x-delivery-limit": 5})
    assert uapi.get(f"/api/queues/{q(main)}/app-stream")["type"] == "stream"
    assert uapi.get(f"/api/queues/{q(main)}/pol-target")["policy"] == "ttl-policy"
    assert uapi.get(f"/api/queues/{q(main)}/app-priority")["arguments"] == {"x-max-priority": 10}

    # Usagi's export holds exactly what RabbitMQ's did
    from_usagi = cut(uapi.get("/api/definitions"), p)
    assert normal(from_usagi) == normal(exported)

    # AMQP: logins with the original passwords (RabbitMQ's hashes), passive declares, permissions
    c, refused = amqp_login(server.host, server.port, p + "-app", "app-pw", main)
    assert refused is None, refused
    try:
        passive_checks(c, facts["queues"], facts["exchanges"])
        c.send_method(1, "queue.declare", queue="other-queue")
        assert close_summary(c.expect_channel_close(1)) == (
            403, f"ACCESS_REFUSED - access to queue 'other-queue' in vhost '{main}' refused for user "
                 f"'{p}-app'", 50, 10)
    finally:
        c.close()
    c, refused = amqp_login(server.host, server.port, p + "-hashed", "hashed-pw", main)
    assert refused is None, refused
    c.close()
    _, refused = amqp_login(server.host, server.port, p + "-app", "wrong-pw", main)
    assert refused is not None and refused[0] in (403, "closed")
    c, refused = amqp_login(server.host, server.port, p + "-plain", "plain-pw", f"{p}-second")
    assert refused is None, refused
    passive_checks(c, ["sq"], ["dlx"])
    c.close()

    # --- Usagi -> RabbitMQ, under a second prefix
    back = rename(from_usagi, p, p2)
    rmq.call("POST", "/api/definitions", back)
    again = cut(rmq.get("/api/definitions"), p2)
    assert normal(again) == normal(rename(exported, p, p2))
    for user, vhost in ((p2 + "-app", p2 + "-main"), (p2 + "-hashed", p2 + "-main"),
                        (p2 + "-plain", p2 + "-second"), (p2 + "-admin", p2 + "-second")):
        pw = facts["users"][p + user[len(p2):]][0]
        c, refused = amqp_login(rhost, rport, user, pw, vhost)
        assert refused is None, (user, refused)
        if user == p2 + "-app":
            passive_checks(c, facts["queues"], facts["exchanges"])
        c.close()


def test_vhost_definitions_from_rabbitmq_import_into_usagi(rabbit, usagi, prefixes):
    """GET /api/definitions/VHOST from RabbitMQ goes into POST /api/definitions/VHOST, and back."""
    rmq, _rhost, _rport = rabbit
    uapi, server = usagi
    p, p2 = prefixes
    facts = make_definitions_on_rabbitmq(rmq, p)
    main = facts["main"]
    per_vhost = rmq.get(f"/api/definitions/{q(main)}")
    assert "users" not in per_vhost and all("vhost" not in x for x in per_vhost["queues"])
    uapi.call("PUT", f"/api/vhosts/{q(main)}", {})
    uapi.call("POST", f"/api/definitions/{q(main)}", per_vhost)
    from_usagi = uapi.get(f"/api/definitions/{q(main)}")
    assert normal(from_usagi, True) == normal(per_vhost, True)
    c, refused = amqp_login(server.host, server.port, "guest", "guest", main)
    assert refused is None, refused
    passive_checks(c, facts["queues"], facts["exchanges"])
    c.close()
    # and Usagi's per-vhost export imports into a new RabbitMQ vhost
    rmq.call("PUT", f"/api/vhosts/{q(p2 + '-main')}", {})
    rmq.call("POST", f"/api/definitions/{q(p2 + '-main')}", from_usagi)
    assert normal(rmq.get(f"/api/definitions/{q(p2 + '-main')}"), True) == normal(per_vhost, True)
