"""Permission matrix: user x vhost x configure/write/read x each AMQP operation that RabbitMQ checks.

RabbitMQ 3.10's rules (rabbit_channel), which Usagi must follow to the letter:

* exchange.declare: configure on the exchange (passive: nothing). Creating one with an
  alternate-exchange also needs read on the new exchange and write on the alternate.
* exchange.delete: configure on the exchange (even when it does not exist).
* queue.declare: configure on the queue (server-named ones too, as amq.gen-...; passive: nothing).
  Creating one with x-dead-letter-exchange also needs read on the queue and write on the DLX.
  A name with the reserved prefix amq. is refused before any permission check.
* queue.bind / queue.unbind: write on the queue, then read on the exchange; the default
  exchange is refused (between those two checks).
* exchange.bind / exchange.unbind: write on the destination, read on the source.
* basic.publish: write on the exchange (the default exchange is checked as 'amq.default').
* basic.consume, basic.get, queue.purge: read on the queue.
* Permission patterns are regular expressions searched for anywhere in the name (unanchored);
  an empty pattern matches nothing. A user with no permissions in a vhost cannot open it (530).

The broker under test is the session `broker` (a Usagi server, or the broker of
USAGI_TEST_BROKER_URL in differential mode). Users and vhosts are made through the management
API: Usagi's own (found in the server's log), or USAGI_TEST_MGMT_URL in differential mode
(default http://guest:guest@127.0.0.1:15682). Everything is created with unique names and deleted
at the end. The whole matrix runs over raw wire connections (tests/rawamqp.py), one per user and
vhost, so close codes, texts and class/method ids are compared exactly.
"""
from __future__ import annotations

import base64
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field

import pytest

from rawamqp import RawConnection, close_summary
from support.harness import wait_for

pytestmark = pytest.mark.timeout(120)

MGMT_RE = re.compile(r"Management listener on (\S+):(\d+)")
DEFAULT_MGMT_URL = "http://guest:guest@127.0.0.1:15682"
UID = uuid.uuid4().hex[:8]
KINDS = ("configure", "write", "read")

# patterns a profile can give one permission kind; every test resource is named "allowed-..."
# except the "other-..." ones, amq.* exchanges, the default exchange and server-named queues
PATTERNS = {
    "all": ".*",
    "none": "",                 # matches nothing (RabbitMQ reads "" as ^$)
    "anchored": "^allowed-",
    "unanchored": "llowed-",    # unanchored: found inside "allowed-..." (re.match would not)
    "miss": "^denied-",
}


def _profiles() -> dict:
    """Profile name -> (configure, write, read): one kind restricted at a time, plus all and nothing."""
    out = {"full": (".*", ".*", ".*"), "nothing": ("", "", "")}
    for i, kind in enumerate(KINDS):
        for pname, pattern in PATTERNS.items():
            if pname == "all":
                continue
            perms = [".*", ".*", ".*"]
            perms[i] = pattern
            out[f"{kind}-{pname}"] = tuple(perms)
    return out


PROFILES = _profiles()


def _in_vhost_b(perms: tuple) -> tuple:
    """A user's permissions in the second vhost: its profile rotated (c, w, r) -> (r, c, w)."""
    c, w, r = perms
    return (r, c, w)


def _allows(pattern: str, name: str) -> bool:
    return re.search(pattern or "^$", name) is not None


# ----------------------------------------------------------------------------- management client
class MgmtClient:
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
            with urllib.request.urlopen(req, timeout=30) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        if expect and status not in expect:
            raise AssertionError(f"{method} {path}: {status} {raw[:300]!r}")
        return status, (json.loads(raw) if raw else None)

    def reachable(self) -> bool:
        try:
            return self.call("GET", "/api/overview", expect=None)[0] == 200
        except OSError:
            return False


def _q(name: str) -> str:
    return urllib.parse.quote(name, safe="")


# ----------------------------------------------------------------------------- raw AMQP helpers
class Closed(Exception):
    def __init__(self, summary):
        super().__init__(summary)
        self.summary = summary


def _await(c: RawConnection, channel: int, reply: str):
    """Read frames until `reply` on `channel` (returned) or channel.close (raised as Closed)."""
    while True:
        f = c.read_frame()
        if f.channel != channel:
            continue
        if f.name == "channel.close":
            c.send_method(channel, "channel.close-ok")
            raise Closed(close_summary(f))
        if f.name == "connection.close":
            raise AssertionError(f"connection closed: {f.args}")
        if f.name == reply:
            return f
        # deliveries, content frames and the like: skipped


def call(c: RawConnection, channel: int, method: str, reply: str, **args):
    c.send_method(channel, method, **args)
    return _await(c, channel, reply)


def open_as(broker, user: str, password: str, vhost: str):
    """(RawConnection, None) once open, or (None, connection.close summary) if refused."""
    c = RawConnection.open_to(broker.host, broker.port)
    reply = c.handshake(user=user, password=password, vhost=vhost)
    if reply.name == "connection.open-ok":
        return c, None
    try:
        if reply.name == "connection.close":
            c.send_method(0, "connection.close-ok")
            return None, close_summary(reply)
        raise AssertionError(f"unexpected reply to connection.open: {reply.name} {reply.args}")
    finally:
        if reply.name != "connection.open-ok":
            c.close()


# ----------------------------------------------------------------------------- the environment
@dataclass
class Env:
    broker: object
    mgmt: MgmtClient
    vhosts: dict                                   # "A"/"B" -> vhost name
    password: str
    users: dict = field(default_factory=dict)      # profile -> user name
    admin: dict = field(default_factory=dict)      # "A"/"B" -> RawConnection (guest), channel 1 open
    conns: dict = field(default_factory=dict)      # (profile, "A"/"B") -> RawConnection
    counter: int = 0

    def names(self, vkey: str) -> dict:
        self.counter += 1
        return {"X": f"allowed-x-{UID}", "X2": f"allowed-x2-{UID}", "OX": f"other-x-{UID}",
                "Q": f"allowed-q-{UID}", "OQ": f"other-q-{UID}", "N": f"allowed-new-{self.counter}-{UID}",
                "vhost": self.vhosts[vkey]}

    def perms(self, profile: str, vkey: str) -> tuple:
        p = PROFILES[profile]
        return p if vkey == "A" else _in_vhost_b(p)

    def conn(self, profile: str, vkey: str) -> RawConnection:
        c = self.conns.get((profile, vkey))
        if c is None:
            c, refused = open_as(self.broker, self.users[profile], self.password, self.vhosts[vkey])
            assert refused is None, refused
            self.conns[(profile, vkey)] = c
        return c


def _mgmt_for(broker) -> MgmtClient:
    if broker.is_usagi:
        m = wait_for(lambda: MGMT_RE.search(broker.log_text()), 10,
                     message="'Management listener on HOST:PORT' in the Usagi log")
        host = m.group(1)
        h = f"[{host}]" if ":" in host else host
        client = MgmtClient(f"http://guest:guest@{h}:{m.group(2)}")
    else:
        client = MgmtClient(os.environ.get("USAGI_TEST_MGMT_URL") or DEFAULT_MGMT_URL)
    if not client.reachable():
        pytest.skip(f"management API not reachable at {client.base} (set USAGI_TEST_MGMT_URL)")
    return client


@pytest.fixture(scope="module")
def env(broker):
    mgmt = _mgmt_for(broker)
    vhosts = {"A": f"perm-a-{UID}", "B": f"perm-b-{UID}"}
    e = Env(broker=broker, mgmt=mgmt, vhosts=vhosts, password=f"pw-{UID}")
    made_users = []
    try:
        for v in vhosts.values():
            mgmt.call("PUT", f"/api/vhosts/{_q(v)}", {})
            mgmt.call("PUT", f"/api/permissions/{_q(v)}/guest",
                      {"configure": ".*", "write": ".*", "read": ".*"})
        for profile, perms in PROFILES.items():
            user = f"perm-{profile}-{UID}"
            mgmt.call("PUT", f"/api/users/{_q(user)}", {"password": e.password, "tags": ""})
            made_users.append(user)
            e.users[profile] = user
            for vkey, p in (("A", perms), ("B", _in_vhost_b(perms))):
                mgmt.call("PUT", f"/api/permissions/{_q(vhosts[vkey])}/{_q(user)}",
                          dict(zip(KINDS, p)))
        # a user with permissions in vhost A only
        only_a = f"perm-only-a-{UID}"
        mgmt.call("PUT", f"/api/users/{_q(only_a)}", {"password": e.password, "tags": ""})
        made_users.append(only_a)
        e.users["only-a"] = only_a
        mgmt.call("PUT", f"/api/permissions/{_q(vhosts['A'])}/{_q(only_a)}",
                  {"configure": ".*", "write": ".*", "read": ".*"})
        # shared resources, made by guest in both vhosts
        for vkey, vname in vhosts.items():
            c, refused = open_as(broker, "guest", "guest", vname)
            assert refused is None, refused
            e.admin[vkey] = c
            c.open_channel(1)
            n = e.names(vkey)
            for x, t in (("X", "direct"), ("X2", "fanout"), ("OX", "fanout")):
                call(c, 1, "exchange.declare", "exchange.declare-ok", exchange=n[x], type=t)
            for q in ("Q", "OQ"):
                call(c, 1, "queue.declare", "queue.declare-ok", queue=n[q])
            call(c, 1, "queue.bind", "queue.bind-ok", queue=n["Q"], exchange=n["X"], routing_key="k")
        yield e
    finally:
        for c in list(e.conns.values()) + list(e.admin.values()):
            c.close()
        for user in made_users:
            mgmt.call("DELETE", f"/api/users/{_q(user)}", expect=None)
        for v in vhosts.values():
            mgmt.call("DELETE", f"/api/vhosts/{_q(v)}", expect=None)


# ----------------------------------------------------------------------------- the operations
@dataclass
class Op:
    """An AMQP operation: what guest prepares, what the user does, what RabbitMQ checks, in order."""
    name: str
    method: tuple                      # (class_id, method_id) a refusal names
    run: object                        # (conn, channel, names) -> None; raises Closed
    checks: object                     # names -> [(kind, resource, name)]; name None = server-named
    setup: object = None               # (admin conn, names) -> None
    then: object = None                # names -> (code, text) the operation ends with, if not ok


def _declare_x(name, type_="direct", **args):
    return _run("exchange.declare", "exchange.declare-ok", exchange=name, type=type_, **args)


def _admin(method, reply, **kw):
    """A setup step for guest: kw values are keys of the names dict, or literal values."""
    def setup(c, n):
        args = {k: (n[v] if isinstance(v, str) and v in n else v) for k, v in kw.items()}
        if "arguments" in args:
            args["arguments"] = {k: n.get(v, v) for k, v in args["arguments"].items()}
        call(c, 1, method, reply, **args)
    return setup


def _run(method, reply, **kw):
    def run(c, ch, n):
        args = {k: (n[v] if isinstance(v, str) and v in n else v) for k, v in kw.items()}
        if "arguments" in args:
            args["arguments"] = {k: n.get(v, v) for k, v in args["arguments"].items()}
        call(c, ch, method, reply, **args)
    return run


def _publish(exchange_key, rk):
    def run(c, ch, n):
        call(c, ch, "confirm.select", "confirm.select-ok")
        exchange = n[exchange_key] if exchange_key in n else exchange_key
        c.publish(ch, exchange, n.get(rk, rk), b"perm")
        _await(c, ch, "basic.ack")
    return run


def _consume(queue_key):
    def run(c, ch, n):
        tag = call(c, ch, "basic.consume", "basic.consume-ok", queue=n[queue_key])["consumer_tag"]
        call(c, ch, "basic.cancel", "basic.cancel-ok", consumer_tag=tag)
    return run


def _get_run(c, ch, n):
    # basic.get answers get-ok or get-empty: read whichever comes
    c.send_method(ch, "basic.get", queue=n["Q"], no_ack=False)
    while True:
        f = c.read_frame()
        if f.channel != ch:
            continue
        if f.name == "channel.close":
            c.send_method(ch, "channel.close-ok")
            raise Closed(close_summary(f))
        if f.name in ("basic.get-ok", "basic.get-empty"):
            return


def C(kind, resource, key):
    return lambda n: (kind, resource, n[key] if key in n else key)


def checks(*items):
    return lambda n: [i(n) for i in items]


DEFAULT_X_REFUSED = (403, "ACCESS_REFUSED - operation not permitted on the default exchange")

OPS = [
    # exchange.declare
    Op("exchange.declare", (40, 10), _declare_x("N"), checks(C("configure", "exchange", "N"))),
    Op("exchange.declare existing", (40, 10), _declare_x("X"), checks(C("configure", "exchange", "X"))),
    Op("exchange.declare passive", (40, 10), _run("exchange.declare", "exchange.declare-ok",
                                                   exchange="X", type="direct", passive=True),
       checks()),
    Op("exchange.declare alternate-exchange", (40, 10),
       _declare_x("N", "fanout", arguments={"alternate-exchange": "OX"}),
       checks(C("configure", "exchange", "N"), C("read", "exchange", "N"), C("write", "exchange", "OX"))),
    Op("exchange.declare alternate-exchange allowed-", (40, 10),
       _declare_x("N", "fanout", arguments={"alternate-exchange": "X2"}),
       checks(C("configure", "exchange", "N"), C("read", "exchange", "N"), C("write", "exchange", "X2"))),
    Op("exchange.declare alternate-exchange existing", (40, 10),
       _declare_x("N", "fanout", arguments={"alternate-exchange": "OX"}),
       checks(C("configure", "exchange", "N")),
       setup=_admin("exchange.declare", "exchange.declare-ok", exchange="N", type="fanout",
                    arguments={"alternate-exchange": "OX"})),
    # exchange.delete
    Op("exchange.delete", (40, 20), _run("exchange.delete", "exchange.delete-ok", exchange="N"),
       checks(C("configure", "exchange", "N")),
       setup=_admin("exchange.declare", "exchange.declare-ok", exchange="N", type="direct")),
    Op("exchange.delete missing", (40, 20), _run("exchange.delete", "exchange.delete-ok", exchange="N"),
       checks(C("configure", "exchange", "N"))),
    # queue.declare
    Op("queue.declare", (50, 10), _run("queue.declare", "queue.declare-ok", queue="N"),
       checks(C("configure", "queue", "N"))),
    Op("queue.declare existing", (50, 10), _run("queue.declare", "queue.declare-ok", queue="Q"),
       checks(C("configure", "queue", "Q"))),
    Op("queue.declare server-named", (50, 10),
       _run("queue.declare", "queue.declare-ok", queue="", exclusive=True),
       lambda n: [("configure", "queue", None)]),
    Op("queue.declare passive", (50, 10), _run("queue.declare", "queue.declare-ok", queue="Q", passive=True),
       checks()),
    Op("queue.declare dead-letter-exchange", (50, 10),
       _run("queue.declare", "queue.declare-ok", queue="N", arguments={"x-dead-letter-exchange": "OX"}),
       checks(C("configure", "queue", "N"), C("read", "queue", "N"), C("write", "exchange", "OX"))),
    Op("queue.declare dead-letter-exchange default", (50, 10),
       _run("queue.declare", "queue.declare-ok", queue="N", arguments={"x-dead-letter-exchange": ""}),
       checks(C("configure", "queue", "N"), C("read", "queue", "N"), C("write", "exchange", "amq.default"))),
    Op("queue.declare dead-letter-exchange existing", (50, 10),
       _run("queue.declare", "queue.declare-ok", queue="N", arguments={"x-dead-letter-exchange": "OX"}),
       checks(C("configure", "queue", "N")),
       setup=_admin("queue.declare", "queue.declare-ok", queue="N",
                    arguments={"x-dead-letter-exchange": "OX"})),
    Op("queue.declare reserved name", (50, 10),
       _run("queue.declare", "queue.declare-ok", queue=f"amq.perm-{UID}"), checks(),
       then=lambda n: (403, f"ACCESS_REFUSED - queue name 'amq.perm-{UID}' contains reserved prefix "
                            f"'amq.*'")),
    # queue.delete
    Op("queue.delete", (50, 40), _run("queue.delete", "queue.delete-ok", queue="N"),
       checks(C("configure", "queue", "N")), setup=_admin("queue.declare", "queue.declare-ok", queue="N")),
    Op("queue.delete missing", (50, 40), _run("queue.delete", "queue.delete-ok", queue="N"),
       checks(C("configure", "queue", "N"))),
    # queue.bind / queue.unbind
    Op("queue.bind", (50, 20), _run("queue.bind", "queue.bind-ok", queue="Q", exchange="X", routing_key="N"),
       checks(C("write", "queue", "Q"), C("read", "exchange", "X"))),
    Op("queue.bind other queue", (50, 20),
       _run("queue.bind", "queue.bind-ok", queue="OQ", exchange="X", routing_key="N"),
       checks(C("write", "queue", "OQ"), C("read", "exchange", "X"))),
    Op("queue.bind amq.direct", (50, 20),
       _run("queue.bind", "queue.bind-ok", queue="Q", exchange="amq.direct", routing_key="N"),
       checks(C("write", "queue", "Q"), C("read", "exchange", "amq.direct"))),
    Op("queue.bind default exchange", (50, 20),
       _run("queue.bind", "queue.bind-ok", queue="Q", exchange="", routing_key="N"),
       checks(C("write", "queue", "Q")), then=lambda n: DEFAULT_X_REFUSED),
    Op("queue.unbind", (50, 50), _run("queue.unbind", "queue.unbind-ok", queue="Q", exchange="X",
                                      routing_key="N"),
       checks(C("write", "queue", "Q"), C("read", "exchange", "X")),
       setup=_admin("queue.bind", "queue.bind-ok", queue="Q", exchange="X", routing_key="N")),
    # exchange.bind / exchange.unbind
    Op("exchange.bind", (40, 30),
       _run("exchange.bind", "exchange.bind-ok", destination="X2", source="X", routing_key="N"),
       checks(C("write", "exchange", "X2"), C("read", "exchange", "X"))),
    Op("exchange.bind from other", (40, 30),
       _run("exchange.bind", "exchange.bind-ok", destination="X2", source="OX", routing_key="N"),
       checks(C("write", "exchange", "X2"), C("read", "exchange", "OX"))),
    Op("exchange.bind to other", (40, 30),
       _run("exchange.bind", "exchange.bind-ok", destination="OX", source="X", routing_key="N"),
       checks(C("write", "exchange", "OX"), C("read", "exchange", "X"))),
    Op("exchange.bind to default exchange", (40, 30),
       _run("exchange.bind", "exchange.bind-ok", destination="", source="X", routing_key="N"),
       checks(C("write", "exchange", "amq.default")), then=lambda n: DEFAULT_X_REFUSED),
    Op("exchange.unbind", (40, 40),
       _run("exchange.unbind", "exchange.unbind-ok", destination="X2", source="X", routing_key="N"),
       checks(C("write", "exchange", "X2"), C("read", "exchange", "X")),
       setup=_admin("exchange.bind", "exchange.bind-ok", destination="X2", source="X", routing_key="N")),
    # basic.publish
    Op("basic.publish", (60, 40), _publish("X", "k"), checks(C("write", "exchange", "X"))),
    Op("basic.publish default exchange", (60, 40), _publish("", "Q"),
       checks(C("write", "exchange", "amq.default"))),
    Op("basic.publish amq.fanout", (60, 40), _publish("amq.fanout", "k"),
       checks(C("write", "exchange", "amq.fanout"))),
    # read on queues
    Op("basic.consume", (60, 20), _consume("Q"), checks(C("read", "queue", "Q"))),
    Op("basic.consume other queue", (60, 20), _consume("OQ"), checks(C("read", "queue", "OQ"))),
    Op("basic.get", (60, 70), _get_run, checks(C("read", "queue", "Q"))),
    Op("queue.purge", (50, 30), _run("queue.purge", "queue.purge-ok", queue="Q"),
       checks(C("read", "queue", "Q"))),
]

GEN_NAME = "amq\\.gen-[A-Za-z0-9_-]+"


def expected_outcome(op: Op, perms: tuple, user: str, names: dict):
    """None for success, else (code, text regex, class_id, method_id) of the channel.close."""
    allowed = dict(zip(KINDS, perms))
    v = names["vhost"]
    for kind, resource, name in op.checks(names):
        if name is None:
            # a server-named queue: amq.gen- and 22 random characters
            if _allows(allowed[kind], "amq.gen-" + "A" * 22):
                continue
            shown = GEN_NAME
        else:
            if _allows(allowed[kind], name):
                continue
            shown = re.escape(name)
        text = (f"ACCESS_REFUSED - access to {resource} '{shown}' in vhost '{re.escape(v)}' "
                f"refused for user '{re.escape(user)}'")
        return (403, text) + op.method
    if op.then is not None:
        code, text = op.then(names)
        return (code, re.escape(text)) + op.method
    return None


CASES = [(op, profile, vkey) for vkey in ("A", "B") for profile in PROFILES for op in OPS]


@pytest.mark.parametrize("op,profile,vkey", CASES,
                         ids=[f"{v}-{p}-{o.name.replace(' ', '_')}" for o, p, v in CASES])
def test_permission_matrix(env, op, profile, vkey):
    n = env.names(vkey)
    if op.setup is not None:
        op.setup(env.admin[vkey], n)
    user = env.users[profile]
    expected = expected_outcome(op, env.perms(profile, vkey), user, n)
    c = env.conn(profile, vkey)
    c.open_channel(1)
    try:
        op.run(c, 1, n)
    except Closed as e:
        got = e.summary
    else:
        got = None
        call(c, 1, "channel.close", "channel.close-ok", reply_code=200, reply_text="bye")
    if expected is None:
        assert got is None, f"{op.name} as {profile} in vhost {vkey}: refused with {got}"
    else:
        assert got is not None, f"{op.name} as {profile} in vhost {vkey}: allowed, expected {expected}"
        code, text, cls, mth = got
        assert (code, cls, mth) == (expected[0],) + expected[2:], got
        assert re.fullmatch(expected[1], text), f"{text!r} !~ {expected[1]!r}"


# ----------------------------------------------------------------------------- vhost access
def test_no_permissions_in_vhost_refuses_connection(env):
    user = env.users["only-a"]
    c, refused = open_as(env.broker, user, env.password, env.vhosts["A"])
    assert refused is None
    c.close()
    c, refused = open_as(env.broker, user, env.password, env.vhosts["B"])
    assert c is None
    assert refused == (530, f"NOT_ALLOWED - access to vhost '{env.vhosts['B']}' refused for user "
                            f"'{user}'", 10, 40)


def test_unknown_vhost_refuses_connection(env):
    name = f"perm-missing-{UID}"
    c, refused = open_as(env.broker, env.users["full"], env.password, name)
    assert c is None
    assert refused == (530, f"NOT_ALLOWED - vhost {name} not found", 10, 40)


def test_permissions_granted_and_revoked_through_the_api(env):
    """Permissions are per user and vhost, and apply to connections opened after a change."""
    user = f"perm-late-{UID}"
    vb = env.vhosts["B"]
    env.mgmt.call("PUT", f"/api/users/{_q(user)}", {"password": env.password, "tags": ""})
    try:
        _, refused = open_as(env.broker, user, env.password, vb)
        assert refused and refused[0] == 530
        env.mgmt.call("PUT", f"/api/permissions/{_q(vb)}/{_q(user)}",
                      {"configure": "^allowed-", "write": "", "read": ".*"})
        c, refused = open_as(env.broker, user, env.password, vb)
        assert refused is None
        try:
            c.open_channel(1)
            q = f"allowed-late-{UID}"
            call(c, 1, "queue.declare", "queue.declare-ok", queue=q, exclusive=True)
            with pytest.raises(Closed) as e:
                c.publish(1, "", q, b"x")
                call(c, 1, "queue.declare", "queue.declare-ok", queue=q, passive=True)
            assert e.value.summary == (403, f"ACCESS_REFUSED - access to exchange 'amq.default' in vhost "
                                            f"'{vb}' refused for user '{user}'", 60, 40)
        finally:
            c.close()
        env.mgmt.call("DELETE", f"/api/permissions/{_q(vb)}/{_q(user)}")
        _, refused = open_as(env.broker, user, env.password, vb)
        assert refused == (530, f"NOT_ALLOWED - access to vhost '{vb}' refused for user '{user}'", 10, 40)
    finally:
        env.mgmt.call("DELETE", f"/api/users/{_q(user)}", expect=None)
