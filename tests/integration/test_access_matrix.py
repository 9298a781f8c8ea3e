"""Access matrix over AMQP: every way a client names an exchange or a queue, as each kind of user.

test_permissions.py covers the method fields (queue, exchange, source, destination) against
permission patterns. This matrix covers the other ways to name a resource, and exclusivity:

* the arguments that name an exchange when a queue or exchange is created (x-dead-letter-exchange,
  alternate-exchange) as a longstr, as a byte array ('x') and as every other field type, sent raw
  (tests/rawamqp.py) and by each client library: pika and aio-pika send bytes as a byte array,
  py-amqp sends them as a longstr. RabbitMQ wants read on the new resource and write on the named
  exchange, and refuses any type but longstr with 406 "invalid type";
* policies that name those exchanges (RabbitMQ does not check them against the declaring user);
* exchange-to-exchange bindings, unbinding, and CC/BCC headers on topic exchanges under topic
  permissions (RabbitMQ 4.x checks CC and BCC routing keys too; 3.10 only the routing key);
* unbinding a queue, an exchange or a binding that does not exist (RabbitMQ: unbind-ok);
* another connection's exclusive queue (405 RESOURCE_LOCKED).

Each case runs as each kind of user: administrator, policymaker, management, monitoring, a user
without tags (tags do not matter over AMQP), a user whose permissions allow only names starting
with "allowed-", and a user without permissions in the vhost. Run against RabbitMQ with
USAGI_TEST_BROKER_URL and USAGI_TEST_MGMT_URL (users, vhosts and policies are made through its
management API); where RabbitMQ versions differ, the expectation follows the version the broker
reports in connection.start.
"""
from __future__ import annotations

import asyncio
import datetime
import decimal
import os
import re
import sys
import uuid
from dataclasses import dataclass, field

import pytest

from rawamqp import RawConnection, close_summary
from support.harness import management_base

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "mgmt"))
from mgmtutil import Api, q  # noqa: E402

pytestmark = pytest.mark.timeout(180)

UID = uuid.uuid4().hex[:8]
PASSWORD = f"pw-{UID}"
ALL = (".*", ".*", ".*")
LIMITED = ("^allowed-", "^allowed-", "^allowed-")
KINDS = ("configure", "write", "read")

# profile -> (tags, permissions in the vhost or None)
PROFILES = {
    "administrator": ("administrator", ALL),
    "policymaker": ("policymaker", ALL),
    "management": ("management", ALL),
    "monitoring": ("monitoring", ALL),
    "untagged": ("", ALL),
    "limited": ("management", LIMITED),
}
TOPIC_PATTERN = "^ok\\."            # the limited user's topic permission on allowed-t, write and read


def allows(profile: str, kind: str, name: str) -> bool:
    perms = PROFILES[profile][1]
    pattern = dict(zip(KINDS, perms))[kind]
    return re.search(pattern or "^$", name) is not None


# ----------------------------------------------------------------------------- raw AMQP helpers
class Closed(Exception):
    def __init__(self, summary):
        super().__init__(summary)
        self.summary = summary


def await_reply(c: RawConnection, channel: int, *replies: str):
    while True:
        f = c.read_frame()
        if f.channel != channel:
            continue
        if f.name == "channel.close":
            c.send_method(channel, "channel.close-ok")
            raise Closed(close_summary(f))
        if f.name == "connection.close":
            raise AssertionError(f"connection closed: {f.args}")
        if f.name in replies:
            return f


def call(c: RawConnection, channel: int, method: str, reply: str, **args):
    c.send_method(channel, method, **args)
    return await_reply(c, channel, reply)


def open_as(broker, user: str, password: str, vhost: str):
    c = RawConnection.open_to(broker.host, broker.port)
    reply = c.handshake(user=user, password=password, vhost=vhost)
    if reply.name != "connection.open-ok":
        c.close()
        return None, close_summary(reply) if reply.name == "connection.close" else reply.name
    return c, None


# ----------------------------------------------------------------------------- the environment
@dataclass
class Env:
    broker: object
    api: Api
    vhost: str
    version: tuple
    users: dict = field(default_factory=dict)
    conns: dict = field(default_factory=dict)
    owner: RawConnection | None = None       # guest's connection, owner of the exclusive queue
    counter: int = 0

    def conn(self, profile: str) -> RawConnection:
        c = self.conns.get(profile)
        if c is None:
            c, refused = open_as(self.broker, self.users[profile], PASSWORD, self.vhost)
            assert refused is None, refused
            self.conns[profile] = c
        return c

    def fresh(self, prefix: str = "allowed-new") -> str:
        self.counter += 1
        return f"{prefix}-{self.counter}-{UID}"

    @property
    def is4(self) -> bool:
        return self.version >= (4,)


@pytest.fixture(scope="module")
def env(broker):
    base, admin_user, admin_password = management_base(broker)
    api = Api(base, admin_user, admin_password)
    if api.get("/api/overview").status != 200:
        pytest.skip(f"management API not reachable at {base} (set USAGI_TEST_MGMT_URL)")
    vhost = f"access-{UID}"
    e = Env(broker=broker, api=api, vhost=vhost, version=(0,))
    v = q(vhost)
    try:
        api.ok("PUT", f"/api/vhosts/{v}", {})
        api.ok("PUT", f"/api/permissions/{v}/{q(admin_user)}", dict(zip(KINDS, ALL)))
        for profile, (tags, perms) in list(PROFILES.items()) + [("noperm", ("management", None))]:
            user = f"acc-{profile}-{UID}"
            api.ok("PUT", f"/api/users/{q(user)}", {"password": PASSWORD, "tags": tags})
            e.users[profile] = user
            if perms is not None:
                api.ok("PUT", f"/api/permissions/{v}/{q(user)}", dict(zip(KINDS, perms)))
        api.ok("PUT", f"/api/topic-permissions/{v}/{q(e.users['limited'])}",
               {"exchange": "allowed-t", "write": TOPIC_PATTERN, "read": TOPIC_PATTERN})
        api.ok("PUT", f"/api/policies/{v}/pol-{UID}",
               {"pattern": "^allowed-pol-", "apply-to": "all",
                "definition": {"dead-letter-exchange": "other-x", "alternate-exchange": "other-x"}})
        c = RawConnection.open_to(broker.host, broker.port)
        reply = c.handshake(user=admin_user, password=admin_password, vhost=vhost)
        assert reply.name == "connection.open-ok", reply
        e.owner = c
        version = c.server_properties.get("version", b"0")
        version = version.decode() if isinstance(version, bytes) else str(version)
        e.version = tuple(int(x) for x in re.findall(r"\d+", version)[:2])
        c.open_channel(1)
        for x, t in (("allowed-x", "direct"), ("allowed-x2", "fanout"), ("other-x", "fanout"),
                     ("allowed-t", "topic")):
            call(c, 1, "exchange.declare", "exchange.declare-ok", exchange=x, type=t)
        for name in ("allowed-q", "other-q"):
            call(c, 1, "queue.declare", "queue.declare-ok", queue=name)
        call(c, 1, "queue.declare", "queue.declare-ok", queue="allowed-existing-q",
             arguments={"x-dead-letter-exchange": "other-x"})
        call(c, 1, "exchange.declare", "exchange.declare-ok", exchange="allowed-existing-x", type="fanout",
             arguments={"alternate-exchange": "other-x"})
        call(c, 1, "queue.declare", "queue.declare-ok", queue="allowed-excl", exclusive=True)
        call(c, 1, "queue.bind", "queue.bind-ok", queue="allowed-excl", exchange="allowed-x", routing_key="k")
        yield e
    finally:
        for c in list(e.conns.values()) + ([e.owner] if e.owner else []):
            c.close()
        for user in e.users.values():
            api.delete(f"/api/users/{q(user)}")
        api.delete(f"/api/vhosts/{v}")


# ----------------------------------------------------------------------------- the cases
@dataclass
class Case:
    """An AMQP operation; `expect(env, profile, names)` gives None (success) or (code, text,
    class_id, method_id) of the channel.close, in RabbitMQ's order of checks."""
    name: str
    run: object                     # (env, conn, channel, names) -> None; raises Closed
    expect: object
    names: object = None            # env -> dict of names the case uses


def refusal(env, profile, checks, ids):
    """The first of [(kind, resource, name)] the profile lacks, as RabbitMQ's 403."""
    for kind, resource, name in checks:
        shown = name or "amq.default" if resource == "exchange" else name
        if not allows(profile, kind, shown):
            return (403, f"ACCESS_REFUSED - access to {resource} '{shown}' in vhost '{env.vhost}' refused for "
                         f"user '{env.users[profile]}'") + ids
    return None


def locked(env, queue, ids):
    return (405, f"RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{queue}' in vhost "
                 f"'{env.vhost}'. It could be originally declared on another connection or the exclusive "
                 f"property value does not match that of the original declaration.") + ids


def invalid_type(env, type_name, key, resource, name, ids):
    return (406, f"PRECONDITION_FAILED - invalid type '{type_name}' for arg '{key}' in {resource} '{name}' in "
                 f"vhost '{env.vhost}'") + ids


DECLARE = {"queue": ("x-dead-letter-exchange", (50, 10)), "exchange": ("alternate-exchange", (40, 10))}

# value, the field type RabbitMQ names (None: a longstr, which names an exchange)
ARG_VALUES = [
    ("longstr allowed", "allowed-x", None),
    ("longstr other", "other-x", None),
    ("longstr default exchange", "", None),
    ("longstr missing exchange", "allowed-nowhere", None),
    ("byte array allowed", b"allowed-x", "binary"),
    ("byte array other", b"other-x", "binary"),
    ("byte array default exchange", b"", "binary"),
    ("signedint", 5, "signedint"),
    ("long", 2 ** 40, "long"),
    ("bool", True, "bool"),
    ("double", 1.5, "double"),
    ("decimal", decimal.Decimal("1.5"), "decimal"),
    ("timestamp", datetime.datetime(2026, 1, 1), "timestamp"),
    ("table", {"name": "other-x"}, "table"),
    ("array", ["other-x"], "array"),
    ("void", None, "void"),
]


def declare_run(resource, name_key, value):
    key, _ids = DECLARE[resource]

    def run(env, c, ch, n):
        if resource == "queue":
            call(c, ch, "queue.declare", "queue.declare-ok", queue=n[name_key], arguments={key: value})
        else:
            call(c, ch, "exchange.declare", "exchange.declare-ok", exchange=n[name_key], type="fanout",
                 arguments={key: value})
    return run


def declare_expect(resource, name_key, value, type_name):
    key, ids = DECLARE[resource]

    def expect(env, profile, n):
        # RabbitMQ's order: a queue's reserved prefix before configure, an exchange's after it
        name = n[name_key]
        reserved = (403, f"ACCESS_REFUSED - {resource} name '{name}' contains reserved prefix 'amq.*'") + ids
        if resource == "queue" and name.startswith("amq."):
            return reserved
        r = refusal(env, profile, [("configure", resource, name)], ids)
        if r or name_key == "existing":
            return r
        if name.startswith("amq."):
            return reserved
        if type_name is not None:
            return invalid_type(env, type_name, key, resource, name, ids)
        return refusal(env, profile, [("read", resource, name), ("write", "exchange", value)], ids)
    return expect


def fresh_names(prefix="allowed-new"):
    return lambda env: {"new": env.fresh(prefix)}


CASES = []
for _res in ("queue", "exchange"):
    for _label, _value, _type in ARG_VALUES:
        CASES.append(Case(f"{_res}.declare {DECLARE[_res][0]} {_label}", declare_run(_res, "new", _value),
                          declare_expect(_res, "new", _value, _type), fresh_names()))
    # configure on the new name comes before the argument's type; the reserved prefix before both
    CASES.append(Case(f"{_res}.declare other name, {DECLARE[_res][0]} byte array",
                      declare_run(_res, "new", b"allowed-x"), declare_expect(_res, "new", b"allowed-x", "binary"),
                      fresh_names("other-new")))
    CASES.append(Case(f"{_res}.declare amq. name, {DECLARE[_res][0]} byte array",
                      declare_run(_res, "new", b"allowed-x"), declare_expect(_res, "new", b"allowed-x", "binary"),
                      fresh_names("amq.acc")))
# an existing queue or exchange redeclared with the same arguments: no check of the named exchange
CASES.append(Case("queue.declare existing with x-dead-letter-exchange", declare_run("queue", "existing", "other-x"),
                  declare_expect("queue", "existing", "other-x", None),
                  lambda env: {"existing": "allowed-existing-q"}))
CASES.append(Case("exchange.declare existing with alternate-exchange",
                  declare_run("exchange", "existing", "other-x"),
                  declare_expect("exchange", "existing", "other-x", None),
                  lambda env: {"existing": "allowed-existing-x"}))


# a policy that names the dead-letter and alternate exchanges is the policymaker's authority: the
# declaring user's permissions on those exchanges are not checked
def _declare_plain(resource):
    def run(env, c, ch, n):
        if resource == "queue":
            call(c, ch, "queue.declare", "queue.declare-ok", queue=n["new"])
        else:
            call(c, ch, "exchange.declare", "exchange.declare-ok", exchange=n["new"], type="fanout")
    return run


for _res in ("queue", "exchange"):
    CASES.append(Case(f"{_res}.declare under a policy naming other-x", _declare_plain(_res),
                      lambda env, p, n: None, fresh_names("allowed-pol")))


# --- bindings under topic permissions (the limited user's read pattern on allowed-t is ^ok\.)
def topic_refusal(env, profile, key, ids):
    if profile != "limited" or re.search(TOPIC_PATTERN, key):
        return None
    return (403, f"ACCESS_REFUSED - access to topic '{key}' in exchange 'allowed-t' in vhost '{env.vhost}' "
                 f"refused for user '{env.users[profile]}'") + ids


def _run(method, reply, **kw):
    def run(env, c, ch, n):
        call(c, ch, method, reply, **{k: n.get(v, v) if isinstance(v, str) else v for k, v in kw.items()})
    return run


for _key in ("ok.key", "bad.key"):
    CASES.append(Case(f"exchange.bind from a topic exchange, key {_key}",
                      _run("exchange.bind", "exchange.bind-ok", destination="allowed-x2", source="allowed-t",
                           routing_key=_key),
                      lambda env, p, n, k=_key: topic_refusal(env, p, k, (40, 30))))
    CASES.append(Case(f"exchange.unbind from a topic exchange, key {_key}",
                      _run("exchange.unbind", "exchange.unbind-ok", destination="allowed-x2", source="allowed-t",
                           routing_key=_key),
                      lambda env, p, n, k=_key: topic_refusal(env, p, k, (40, 40))))
    CASES.append(Case(f"queue.bind to a topic exchange, key {_key}",
                      _run("queue.bind", "queue.bind-ok", queue="allowed-q", exchange="allowed-t", routing_key=_key),
                      lambda env, p, n, k=_key: topic_refusal(env, p, k, (50, 20))))
    CASES.append(Case(f"queue.unbind from a topic exchange, key {_key}",
                      _run("queue.unbind", "queue.unbind-ok", queue="allowed-q", exchange="allowed-t",
                           routing_key=_key),
                      lambda env, p, n, k=_key: topic_refusal(env, p, k, (50, 50))))


# --- publishing to a topic exchange: the routing key, and (4.x) the CC and BCC keys
def _publish(rk, headers=None):
    def run(env, c, ch, n):
        call(c, ch, "confirm.select", "confirm.select-ok")
        c.publish(ch, "allowed-t", rk, b"topic", properties={"headers": headers} if headers else None)
        await_reply(c, ch, "basic.ack")
    return run


CASES.append(Case("basic.publish topic key ok", _publish("ok.1"), lambda env, p, n: None))
CASES.append(Case("basic.publish topic key refused", _publish("bad.1"),
                  lambda env, p, n: topic_refusal(env, p, "bad.1", (60, 40))))
for _h in ("CC", "BCC"):
    CASES.append(Case(f"basic.publish topic {_h} key refused", _publish("ok.1", {_h: ["ok.2", "bad.2"]}),
                      lambda env, p, n: topic_refusal(env, p, "bad.2", (60, 40)) if env.is4 else None))


# --- unbinding what does not exist succeeds (permissions still apply)
UNBINDS = [
    ("queue.unbind missing queue", "queue.unbind", dict(queue="allowed-missing-q", exchange="allowed-x", routing_key="k"),
     [("write", "queue", "allowed-missing-q"), ("read", "exchange", "allowed-x")]),
    ("queue.unbind missing exchange", "queue.unbind", dict(queue="allowed-q", exchange="allowed-missing-x", routing_key="k"),
     [("write", "queue", "allowed-q"), ("read", "exchange", "allowed-missing-x")]),
    ("queue.unbind missing both", "queue.unbind",
     dict(queue="allowed-missing-q", exchange="allowed-missing-x", routing_key="k"),
     [("write", "queue", "allowed-missing-q"), ("read", "exchange", "allowed-missing-x")]),
    ("queue.unbind missing binding", "queue.unbind", dict(queue="allowed-q", exchange="allowed-x", routing_key="never"),
     [("write", "queue", "allowed-q"), ("read", "exchange", "allowed-x")]),
    ("queue.unbind missing other queue", "queue.unbind",
     dict(queue="other-missing-q", exchange="allowed-x", routing_key="k"),
     [("write", "queue", "other-missing-q"), ("read", "exchange", "allowed-x")]),
    ("exchange.unbind missing destination", "exchange.unbind",
     dict(destination="allowed-missing-x", source="allowed-x", routing_key="k"),
     [("write", "exchange", "allowed-missing-x"), ("read", "exchange", "allowed-x")]),
    ("exchange.unbind missing source", "exchange.unbind",
     dict(destination="allowed-x2", source="allowed-missing-x", routing_key="k"),
     [("write", "exchange", "allowed-x2"), ("read", "exchange", "allowed-missing-x")]),
    ("exchange.unbind missing other source", "exchange.unbind",
     dict(destination="allowed-x2", source="other-missing-x", routing_key="k"),
     [("write", "exchange", "allowed-x2"), ("read", "exchange", "other-missing-x")]),
]
for _name, _method, _args, _checks in UNBINDS:
    _ids = (50, 50) if _method == "queue.unbind" else (40, 40)
    CASES.append(Case(_name, _run(_method, _method + "-ok", **_args),
                      lambda env, p, n, c=_checks, i=_ids: refusal(env, p, c, i)))
CASES.append(Case("queue.unbind from the default exchange",
                  _run("queue.unbind", "queue.unbind-ok", queue="allowed-q", exchange="", routing_key="allowed-q"),
                  lambda env, p, n: (403, "ACCESS_REFUSED - operation not permitted on the default exchange", 50, 50)))
CASES.append(Case("queue.bind missing queue and exchange",
                  _run("queue.bind", "queue.bind-ok", queue="allowed-missing-q", exchange="allowed-missing-x",
                       routing_key="k"),
                  lambda env, p, n: (404, f"NOT_FOUND - no exchange 'allowed-missing-x' in vhost '{env.vhost}'",
                                     50, 20)))


# --- another connection's exclusive queue
def _get_run(env, c, ch, n):
    c.send_method(ch, "basic.get", queue="allowed-excl", no_ack=False)
    await_reply(c, ch, "basic.get-ok", "basic.get-empty")


EXCLUSIVE = [
    ("queue.bind", _run("queue.bind", "queue.bind-ok", queue="allowed-excl", exchange="allowed-x", routing_key="k2"),
     (50, 20)),
    ("queue.unbind of its binding", _run("queue.unbind", "queue.unbind-ok", queue="allowed-excl", exchange="allowed-x",
                                         routing_key="k"), (50, 50)),
    ("basic.consume", _run("basic.consume", "basic.consume-ok", queue="allowed-excl"), (60, 20)),
    ("basic.get", _get_run, (60, 70)),
    ("queue.purge", _run("queue.purge", "queue.purge-ok", queue="allowed-excl"), (50, 30)),
    ("queue.delete", _run("queue.delete", "queue.delete-ok", queue="allowed-excl"), (50, 40)),
    ("queue.declare", _run("queue.declare", "queue.declare-ok", queue="allowed-excl"), (50, 10)),
    ("queue.declare passive", _run("queue.declare", "queue.declare-ok", queue="allowed-excl", passive=True), (50, 10)),
]
for _name, _r, _ids in EXCLUSIVE:
    CASES.append(Case(f"exclusive queue of another connection: {_name}", _r,
                      lambda env, p, n, i=_ids: locked(env, "allowed-excl", i)))
CASES.append(Case("exclusive queue of another connection: queue.unbind without a binding",
                  _run("queue.unbind", "queue.unbind-ok", queue="allowed-excl", exchange="allowed-x",
                       routing_key="never"), lambda env, p, n: None))

# --- system exchanges
CASES.append(Case("exchange.delete amq. exchange that does not exist",
                  _run("exchange.delete", "exchange.delete-ok", exchange="amq.acc-missing"),
                  lambda env, p, n: (403, f"ACCESS_REFUSED - deletion of system exchange 'amq.acc-missing' in vhost "
                                          f"'{env.vhost}' not allowed", 40, 20)))


MATRIX = [(c, p) for c in CASES for p in PROFILES]


@pytest.mark.parametrize("case,profile", MATRIX, ids=[f"{p}-{c.name.replace(' ', '_')}" for c, p in MATRIX])
def test_amqp_access_matrix(env, case, profile):
    n = case.names(env) if case.names else {}
    expected = case.expect(env, profile, n)
    c = env.conn(profile)
    c.open_channel(1)
    try:
        case.run(env, c, 1, n)
    except Closed as e:
        got = e.summary
    else:
        got = None
        call(c, 1, "channel.close", "channel.close-ok", reply_code=200, reply_text="bye")
    assert got == expected, f"{case.name} as {profile}"


def test_user_without_permissions_cannot_open_the_vhost(env):
    c, refused = open_as(env.broker, env.users["noperm"], PASSWORD, env.vhost)
    assert c is None
    assert refused == (530, f"NOT_ALLOWED - access to vhost '{env.vhost}' refused for user "
                            f"'{env.users['noperm']}'", 10, 40)


# ----------------------------------------------------------------------------- client libraries
# How each library encodes a bytes value decides what the broker sees: pika and aio-pika (for a
# bytearray) send a byte array, refused for an argument that names an exchange; py-amqp sends a
# longstr, which names the exchange and meets the permission check.
CLIENT_PROFILES = ("administrator", "limited")


def _amqp_url(env, profile) -> str:
    return f"amqp://{env.users[profile]}:{PASSWORD}@{env.broker.host}:{env.broker.port}/{q(env.vhost)}"


def _binary_refusal(env, resource, name):
    key, ids = DECLARE[resource]
    return invalid_type(env, "binary", key, resource, name, ids)[:2]


@pytest.mark.parametrize("resource", ["queue", "exchange"])
@pytest.mark.parametrize("profile", CLIENT_PROFILES)
def test_pika_bytes_argument_is_a_byte_array(env, profile, resource):
    import pika
    name = env.fresh()
    key = DECLARE[resource][0]
    params = pika.URLParameters(_amqp_url(env, profile))
    conn = pika.BlockingConnection(params)
    try:
        ch = conn.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            if resource == "queue":
                ch.queue_declare(name, arguments={key: b"other-x"})
            else:
                ch.exchange_declare(name, "fanout", arguments={key: b"other-x"})
        assert (e.value.reply_code, e.value.reply_text) == _binary_refusal(env, resource, name)
    finally:
        conn.close()


@pytest.mark.parametrize("resource", ["queue", "exchange"])
@pytest.mark.parametrize("profile", CLIENT_PROFILES)
def test_py_amqp_bytes_argument_is_a_longstr(env, profile, resource):
    import amqp
    name = env.fresh()
    key = DECLARE[resource][0]
    conn = amqp.Connection(f"{env.broker.host}:{env.broker.port}", userid=env.users[profile], password=PASSWORD,
                           virtual_host=env.vhost)
    conn.connect()
    try:
        ch = conn.channel()
        expected = refusal(env, profile, [("read", resource, name), ("write", "exchange", "other-x")],
                           DECLARE[resource][1])
        try:
            if resource == "queue":
                ch.queue_declare(name, arguments={key: b"other-x"})
            else:
                ch.exchange_declare(name, "fanout", arguments={key: b"other-x"})
        except amqp.exceptions.AMQPError as e:
            got = (e.reply_code, e.reply_text)
        else:
            got = None
        assert got == (expected[:2] if expected else None)
    finally:
        conn.close()


@pytest.mark.parametrize("resource", ["queue", "exchange"])
@pytest.mark.parametrize("profile", CLIENT_PROFILES)
def test_aio_pika_bytearray_argument_is_a_byte_array(env, profile, resource):
    import aio_pika
    import aiormq
    name = env.fresh()
    key = DECLARE[resource][0]

    async def main():
        conn = await aio_pika.connect(_amqp_url(env, profile))
        try:
            ch = await conn.channel()
            with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed) as e:
                if resource == "queue":
                    await ch.declare_queue(name, arguments={key: bytearray(b"other-x")})
                else:
                    await ch.declare_exchange(name, "fanout", arguments={key: bytearray(b"other-x")})
            return e.value.args[-1]
        finally:
            await conn.close()

    assert asyncio.run(main()) == _binary_refusal(env, resource, name)[1]


def test_aio_pika_rpc_closes_after_its_queue_went_away(env):
    """aio-pika's RPC pattern cancels its consumer (the auto-delete reply queue goes away), then
    unbinds that queue: RabbitMQ answers unbind-ok, so closing must not fail."""
    import aio_pika
    from aio_pika.patterns import RPC

    async def main():
        conn = await aio_pika.connect(_amqp_url(env, "administrator"))
        try:
            ch = await conn.channel()
            rpc = await RPC.create(ch)
            await rpc.close()
            assert not ch.is_closed
            q2 = await ch.declare_queue(env.fresh(), exclusive=True)      # the channel still works
            await q2.delete()
        finally:
            await conn.close()

    asyncio.run(main())
