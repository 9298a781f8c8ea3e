"""No structure a user builds can stop the broker's own upkeep.

An ordinary user (no tags, full permissions on a vhost of its own) builds what once made the
engine recurse until RecursionError: a chain of thousands of auto-delete exchanges whose last
binding goes when a queue expires (the cascade ran inside the server's periodic tick, which then
never ran again), rings and long chains of exchange-to-exchange bindings, a long chain of
alternate exchanges, and a chain of TTL-0 dead-letter queues. While that runs and afterwards, the
upkeep must still work for everyone: a silent client is dropped by the heartbeat timeout, a
socket that never completes the handshake by the handshake timeout, message TTLs and x-expires
act on time, background commits still reach the disk (checked with kill -9 and a restart), and a
bystander on another vhost keeps its connection with a generous latency bound.
"""
from __future__ import annotations

import time

import pytest

from mgmtapi import api
from rawamqp import PROTOCOL_HEADER, RawConnection, frame_bytes, method_payload
from support.bystander import Bystander
from support.harness import wait_for

pytestmark = pytest.mark.timeout(300)

TENANT, PASSWORD, VHOST = "upkeep-tenant", "upkeep-secret", "upkeep-vh"
HANDSHAKE_TIMEOUT_MS = 2000
SLACK = 4.0               # seconds allowed beyond a timeout on a busy machine
BYSTANDER_P99_MS = 1000   # generous: the bound is about staying responsive, not speed


# ------------------------------------------------------------------------------------------ helpers
@pytest.fixture
def srv(fresh_server):
    s = fresh_server(extra_args=["--handshake-timeout", str(HANDSHAKE_TIMEOUT_MS)])
    api(s, "PUT", f"/api/users/{TENANT}", {"password": PASSWORD, "tags": ""})
    api(s, "PUT", f"/api/vhosts/{VHOST}", {})
    api(s, "PUT", f"/api/permissions/{VHOST}/{TENANT}", {"configure": ".*", "write": ".*", "read": ".*"})
    return s


def tenant(srv) -> RawConnection:
    c = RawConnection.opened(srv.host, srv.port, vhost=VHOST, user=TENANT, password=PASSWORD)
    c.open_channel(1)
    return c


def pipeline(c: RawConnection, methods):
    """Send many methods in a few writes (no_wait where they have it), then one round trip to
    know they were all applied: a channel error on the way shows up instead of the reply."""
    batch = []
    for name, args in methods:
        batch.append(frame_bytes(1, 1, method_payload(name, **args)))
        if len(batch) >= 500:
            c.send_raw(b"".join(batch))
            batch = []
    if batch:
        c.send_raw(b"".join(batch))
    c.call(1, "basic.qos", "basic.qos-ok", prefetch_size=0, prefetch_count=0, **{"global": False})


def exchange(name, type_="fanout", auto_delete=False, arguments=None):
    return ("exchange.declare", dict(exchange=name, type=type_, auto_delete=auto_delete, no_wait=True,
                                     arguments=arguments or {}))


def e2e(source, destination, key=""):
    return ("exchange.bind", dict(destination=destination, source=source, routing_key=key, no_wait=True,
                                  arguments={}))


def queue(name, arguments=None, durable=False):
    return ("queue.declare", dict(queue=name, durable=durable, no_wait=True, arguments=arguments or {}))


def bind(q, x, key=""):
    return ("queue.bind", dict(queue=q, exchange=x, routing_key=key, no_wait=True, arguments={}))


def message_count(c: RawConnection, name: str) -> int:
    return c.call(1, "queue.declare", "queue.declare-ok", queue=name, passive=True)["message_count"]


def get(c: RawConnection, name: str):
    """basic.get with no-ack: (properties, body), or None when the queue is empty."""
    c.send_method(1, "basic.get", queue=name, no_ack=True)
    f = c.read_frame(10)
    if f.name == "basic.get-empty":
        return None
    assert f.name == "basic.get-ok", (f.name, f.args)
    return c.read_message(10)


def exchanges_in(srv, prefix: str) -> list:
    return [x["name"] for x in api(srv, "GET", f"/api/exchanges/{VHOST}") if x["name"].startswith(prefix)]


class Upkeep:
    """Probes of the broker's periodic upkeep, started before an attack and checked after it."""

    def __init__(self, srv):
        self.srv = srv
        self.bystander = Bystander(srv.host, srv.port)

    def start(self):
        srv = self.srv
        self.bystander.start()
        self.t0 = time.monotonic()
        # a client that negotiates a 1 s heartbeat and then never sends anything
        self.silent = RawConnection.opened(srv.host, srv.port, heartbeat=1)
        # a socket that sends the protocol header and never answers connection.start
        self.half_open = RawConnection.connect(srv.host, srv.port)
        self.half_open.send_raw(PROTOCOL_HEADER)
        return self

    def check(self, attacker: RawConnection | None = None):
        """After the attack: every kind of upkeep still happens, and on time."""
        srv = self.srv
        # the timeouts of the clients that were waiting all along (the deadline counts from their start)
        left = self.t0 + 2 * 1 + SLACK - time.monotonic()
        assert self.silent.is_closed_by_peer(max(left, 0.5)), "a silent client outlived its heartbeat timeout"
        left = self.t0 + HANDSHAKE_TIMEOUT_MS / 1000 + SLACK - time.monotonic()
        assert self.half_open.is_closed_by_peer(max(left, 0.5)), "a stalled handshake outlived its timeout"
        # and fresh ones, started now
        silent = RawConnection.opened(srv.host, srv.port, heartbeat=1)
        half_open = RawConnection.connect(srv.host, srv.port)
        half_open.send_raw(PROTOCOL_HEADER)
        t = time.monotonic()
        try:
            assert silent.is_closed_by_peer(2 + SLACK), "heartbeat timeout no longer enforced"
            assert half_open.is_closed_by_peer(HANDSHAKE_TIMEOUT_MS / 1000 + SLACK - (time.monotonic() - t)), \
                "handshake timeout no longer enforced"
        finally:
            silent.close()
            half_open.close()
        # a message TTL and a queue's x-expires act on time
        c = tenant(srv)
        try:
            pipeline(c, [queue("probe-ttl", {"x-message-ttl": 500}), queue("probe-expires", {"x-expires": 500})])
            c.publish(1, "", "probe-ttl", b"short-lived")
            t = time.monotonic()
            wait_for(lambda: message_count(c, "probe-ttl") == 0, timeout=0.5 + SLACK, message="message TTL expiry")
            assert time.monotonic() - t < 0.5 + SLACK
            wait_for(lambda: "probe-expires" not in [q["name"] for q in api(srv, "GET", f"/api/queues/{VHOST}")],
                     timeout=0.5 + SLACK, interval=0.1, message="x-expires deleting an unused queue")
            # background commits: a durable queue and an unconfirmed persistent message, then kill -9
            pipeline(c, [queue("probe-durable", durable=True)])
            c.publish(1, "", "probe-durable", b"persistent", {"delivery_mode": 2})
            message_count(c, "probe-durable")               # the publish has been handled
            if attacker is not None:
                message_count(attacker, "probe-ttl")        # the attacker's connection is still open
        finally:
            c.close()
        self.bystander.stop()
        st = self.bystander.assert_ok(p99_ms=BYSTANDER_P99_MS)
        log = "".join(srv.lines)
        assert "RecursionError" not in log and "Traceback" not in log, log[-3000:]
        time.sleep(1.0)                                     # several background commit intervals
        srv.kill()
        srv.start()
        c = tenant(srv)
        try:
            assert message_count(c, "probe-durable") == 1, "a background commit did not happen before kill -9"
            assert get(c, "probe-durable")[1] == b"persistent"
        finally:
            c.close()
        return st

    def close(self):
        self.bystander.stop()
        self.silent.close()
        self.half_open.close()


@pytest.fixture
def upkeep(srv):
    u = Upkeep(srv).start()
    yield u
    u.close()


# ------------------------------------------------------------------------------------------ attacks
def auto_delete_chain(prefix: str, n: int, end_queue: str, queue_args: dict) -> list:
    """n auto-delete fanout exchanges, each bound to the next, the last bound to a queue."""
    names = [f"{prefix}{i}" for i in range(n)]
    out = [exchange(x, auto_delete=True) for x in names]
    out += [e2e(names[i], names[i + 1]) for i in range(n - 1)]
    out += [queue(end_queue, queue_args), bind(end_queue, names[-1])]
    return out


def queues_in(srv) -> list:
    return [q["name"] for q in api(srv, "GET", f"/api/queues/{VHOST}")]


def test_auto_delete_chain_ended_by_an_expiring_queue(srv, upkeep):
    """The queue ending a chain of 2000 auto-delete exchanges expires: the cascade runs in the
    server's periodic tick, which must go on ticking."""
    c = tenant(srv)
    pipeline(c, auto_delete_chain("ad-", 2000, "ad-end", {"x-expires": 1000}))
    wait_for(lambda: "ad-end" not in queues_in(srv), timeout=1 + SLACK, interval=0.1, message="x-expires")
    upkeep.check(attacker=c)
    assert exchanges_in(srv, "ad-") == [], "the cascade did not go through the chain"
    c.close()


def test_auto_delete_chains_ended_by_the_user(srv, upkeep):
    """Deleting the queue that ends a chain answers delete-ok and cascades; so does unbinding it."""
    c = tenant(srv)
    pipeline(c, auto_delete_chain("bd-", 2000, "bd-end", {}))
    assert len(exchanges_in(srv, "bd-")) == 2000
    reply = c.call(1, "queue.delete", "queue.delete-ok", queue="bd-end")
    assert reply["message_count"] == 0
    assert exchanges_in(srv, "bd-") == [], "deleting the queue did not cascade through the chain"
    pipeline(c, auto_delete_chain("cd-", 2000, "cd-end", {}))
    c.call(1, "queue.unbind", "queue.unbind-ok", queue="cd-end", exchange="cd-1999", routing_key="", arguments={})
    assert exchanges_in(srv, "cd-") == []
    # deleting the first exchange of a chain removes only it (its bindings as a source go with it)
    pipeline(c, auto_delete_chain("dd-", 2000, "dd-end", {}))
    c.call(1, "exchange.delete", "exchange.delete-ok", exchange="dd-0")
    assert len(exchanges_in(srv, "dd-")) == 1999
    c.call(1, "exchange.delete", "exchange.delete-ok", exchange="dd-1999")
    assert exchanges_in(srv, "dd-") == []
    upkeep.check(attacker=c)
    c.close()


def test_exchange_graphs_route_once(srv, upkeep):
    c = tenant(srv)
    n = 2000
    # a long chain of exchange-to-exchange bindings
    chain = [f"ch-{i}" for i in range(n)]
    ops = [exchange(x) for x in chain] + [e2e(chain[i], chain[i + 1]) for i in range(n - 1)]
    ops += [queue("ch-end"), bind("ch-end", chain[-1])]
    # a ring of them: every exchange bound to the next, the last to the first; two queues on it
    ring = [f"ring-{i}" for i in range(n)]
    ops += [exchange(x) for x in ring] + [e2e(ring[i], ring[(i + 1) % n]) for i in range(n)]
    ops += [queue("ring-a"), queue("ring-b")]
    ops += [bind("ring-a", ring[i]) for i in range(0, n, 100)] + [bind("ring-b", ring[n // 2])]
    # a chain of alternate exchanges: each exchange has no binding and names the next as its alternate
    ae = [f"ae-{i}" for i in range(n)]
    ops += [exchange(ae[i], "direct", arguments={"alternate-exchange": ae[i + 1]} if i + 1 < n else None)
            for i in range(n)]
    ops += [queue("ae-end"), bind("ae-end", ae[-1], "k")]
    pipeline(c, ops)
    for x in (chain[0], ring[0], ring[n - 1], ae[0]):
        c.publish(1, x, "k", x.encode())
    assert get(c, "ch-end")[1] == b"ch-0"
    assert [get(c, "ring-a")[1], get(c, "ring-a")[1]] == [b"ring-0", b"ring-1999"]
    assert [get(c, "ring-b")[1], get(c, "ring-b")[1]] == [b"ring-0", b"ring-1999"]
    assert get(c, "ae-end")[1] == b"ae-0"
    for q in ("ch-end", "ring-a", "ring-b", "ae-end"):
        assert get(c, q) is None, f"{q} got a message more than once"
    upkeep.check(attacker=c)
    c.close()


def test_dead_letter_chain_of_1000_ttl0_queues(srv, upkeep):
    c = tenant(srv)
    n = 1000
    ops = [queue(f"dl-{i}", {"x-message-ttl": 0, "x-dead-letter-exchange": "",
                             "x-dead-letter-routing-key": f"dl-{i + 1}"}) for i in range(n - 1)]
    ops.append(queue(f"dl-{n - 1}"))
    pipeline(c, ops)
    c.publish(1, "", "dl-0", b"through the chain")
    c.publish(1, "", "dl-0", b"and another")
    wait_for(lambda: message_count(c, f"dl-{n - 1}") == 2, timeout=60, interval=0.2,
             message="messages through 999 dead-letter hops")
    props, body = get(c, f"dl-{n - 1}")
    assert body == b"through the chain"
    h = props["headers"]
    deaths = h["x-death"]
    assert len(deaths) == n - 1
    assert [d["queue"] for d in deaths[:2]] == [b"dl-%d" % (n - 2), b"dl-%d" % (n - 3)]    # most recent first
    assert {d["reason"] for d in deaths} == {b"expired"} and all(d["count"] == 1 for d in deaths)
    assert h["x-first-death-queue"] == b"dl-0" and h["x-last-death-queue"] == b"dl-%d" % (n - 2)
    assert get(c, f"dl-{n - 1}")[1] == b"and another"
    upkeep.check(attacker=c)
    c.close()


def test_dead_letter_cycle_ends(srv, upkeep):
    """A ring of TTL-0 queues dead-lettering into each other: RabbitMQ's cycle rule drops the
    message when it would reach a queue it already died in (no rejection on the way)."""
    c = tenant(srv)
    n = 500
    pipeline(c, [queue(f"cy-{i}", {"x-message-ttl": 0, "x-dead-letter-exchange": "",
                                   "x-dead-letter-routing-key": f"cy-{(i + 1) % n}"}) for i in range(n)])
    c.publish(1, "", "cy-0", b"round and round")
    wait_for(lambda: "dead-letter cycle" in "".join(srv.lines), timeout=30, message="the cycle detected")
    assert sum(message_count(c, f"cy-{i}") for i in range(0, n, 50)) == 0
    upkeep.check(attacker=c)
    c.close()


def test_connection_close_cascades(srv, upkeep):
    """An exclusive queue ending an auto-delete chain goes with its connection, and the chain with it."""
    c = tenant(srv)
    ops = auto_delete_chain("ex-", 2000, "ex-end", {})
    ops[-2] = ("queue.declare", dict(queue="ex-end", exclusive=True, no_wait=True, arguments={}))
    pipeline(c, ops)
    assert len(exchanges_in(srv, "ex-")) == 2000
    c.close_connection()
    wait_for(lambda: exchanges_in(srv, "ex-") == [], timeout=SLACK, interval=0.1, message="the cascade")
    upkeep.check()


def test_vhost_deletion_with_chains(srv, upkeep):
    c = tenant(srv)
    pipeline(c, auto_delete_chain("vd-", 2000, "vd-end", {}))
    pipeline(c, [queue(f"vdl-{i}", {"x-message-ttl": 0, "x-dead-letter-exchange": "",
                                    "x-dead-letter-routing-key": f"vdl-{i + 1}"}) for i in range(200)])
    api(srv, "DELETE", f"/api/vhosts/{VHOST}")
    assert c.is_closed_by_peer(SLACK)
    api(srv, "PUT", f"/api/vhosts/{VHOST}", {})
    api(srv, "PUT", f"/api/permissions/{VHOST}/{TENANT}", {"configure": ".*", "write": ".*", "read": ".*"})
    assert exchanges_in(srv, "vd-") == []
    upkeep.check()


def test_a_failing_step_stops_nothing_else(caplog, monkeypatch):
    """The server's ticks isolate their steps: with x-expires, the resource checks and message
    expiry failing on every tick (injected), heartbeats and handshake timeouts still act, and each
    failure is logged with its traceback once, not once per tick."""
    import asyncio
    import logging
    import threading

    from usagi.core import upkeep as upkeep_module
    from usagi.core.broker import Broker, Config
    from usagi.server.app import Server

    monkeypatch.setattr(upkeep_module, "_recent", {})
    b = Broker(Config(handshake_timeout=HANDSHAKE_TIMEOUT_MS / 1000))
    b.bootstrap()

    def boom(*_args):
        raise RuntimeError("injected failure")
    b.tick = b.check_resources = b.expire = boom
    b.ttl_queues[0] = None                      # so that the fast tick calls expire
    loop = asyncio.new_event_loop()
    server = Server(b, "127.0.0.1", 0)
    started = threading.Event()

    def run():
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        started.set()
        loop.run_forever()
    thread = threading.Thread(target=run, daemon=True)
    caplog.set_level(logging.ERROR, logger="usagi.server")
    thread.start()
    try:
        assert started.wait(10)
        t0 = time.monotonic()
        silent = RawConnection.opened("127.0.0.1", server.amqp_port, heartbeat=1)
        half_open = RawConnection.connect("127.0.0.1", server.amqp_port)
        half_open.send_raw(PROTOCOL_HEADER)
        assert silent.is_closed_by_peer(2 + SLACK), "heartbeat timeout not enforced"
        assert half_open.is_closed_by_peer(HANDSHAKE_TIMEOUT_MS / 1000 + SLACK), "handshake timeout not enforced"
        silent.close()
        half_open.close()
        assert time.monotonic() - t0 >= 2          # many ticks, each failing three times
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
    failures = [r for r in caplog.records if "injected failure" in str(r.exc_info[1] if r.exc_info else "")]
    steps = sorted(r.getMessage().split(" failed")[0] for r in failures)
    assert steps == ["broker tick (x-expires)", "message TTL expiry", "resource checks"], steps
