"""Every reply that promises durability holds across a kill -9 right after it.

Each round prepares entities (made durable before the round starts), then performs one operation
of every kind that promises durability, in a shuffled order (each kind in turn last): queue.delete, queue.purge, tx.commit
of publishes, tx.commit of acks, durable queue.declare and exchange.declare, queue.bind and
queue.unbind, exchange.bind, exchange.delete, and through the management API PUT queue, DELETE
queue, definitions import, PUT policy and PUT user. As soon as the last -ok or 2xx is in, the
server is killed with SIGKILL; it is restarted on the same data dir and every promise is checked.
A promise is one operation's effect; the count of promises checked (and of kills) is reported.
"""
from __future__ import annotations

import os
import random
import time
import urllib.parse
import warnings

import pika
import pytest

from mgmt.mgmtutil import MGMT_RE, Api
from support.harness import ServerProcess, external_broker_url, wait_for

ROUNDS = int(os.environ.get("USAGI_CRASH_PROMISE_ROUNDS", "40"))

pytestmark = [pytest.mark.timeout(90 + 3 * ROUNDS),
              pytest.mark.skipif(bool(external_broker_url()), reason="needs Usagi server processes")]
PERSISTENT = pika.BasicProperties(delivery_mode=2)


class CrashTestReport(UserWarning):
    """How many promises the crash test checked."""


def q(name: str) -> str:
    return urllib.parse.quote(name, safe="")


class Node:
    """A server on one data dir, killed and restarted; AMQP and HTTP clients to it."""

    def __init__(self, data_dir: str):
        self.srv = ServerProcess(data_dir=data_dir)
        self.conn = None

    def start(self):
        self.srv.start()
        port = wait_for(lambda: next((int(m.group(2)) for m in map(MGMT_RE.search, list(self.srv.lines)) if m),
                                     None), timeout=10, message="management listener")
        self.api = Api(f"http://127.0.0.1:{port}")
        self.conn = pika.BlockingConnection(pika.URLParameters(self.srv.url()))
        return self

    def channel(self):
        return self.conn.channel()

    def kill(self):
        self.srv.kill()
        self.conn = None

    def stop(self):
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                pass
        self.srv.stop()


def exists(node, kind: str, name: str) -> bool:
    r = node.api.request("GET", f"/api/{kind}/%2F/{q(name)}")
    assert r.status in (200, 404), r
    return r.status == 200


def queue_messages(node, name: str) -> int | None:
    ch = node.channel()
    try:
        n = ch.queue_declare(name, passive=True).method.message_count
    except pika.exceptions.ChannelClosedByBroker as e:
        assert e.reply_code == 404
        return None
    ch.close()
    return n


def bindings(node, src: str, kind: str, dst: str) -> list:
    r = node.api.request("GET", f"/api/bindings/%2F/e/{q(src)}/{kind}/{q(dst)}")
    assert r.status == 200, r
    return [b["routing_key"] for b in r.json()]


def prepare(node, k: int) -> dict:
    """Entities for round k's operations, durable before the round starts."""
    n = {key: f"{key}-{k}" for key in (
        "del-q", "purge-q", "txpub-q", "txack-q", "decl-q", "decl-x", "bind-x", "bind-q", "unbind-x",
        "unbind-q", "e2e-src", "e2e-dst", "xdel", "api-q", "api-del-q", "defs-q", "defs-x", "pol", "user")}
    ch = node.channel()
    for key in ("del-q", "purge-q", "txpub-q", "txack-q", "bind-q", "unbind-q", "api-del-q"):
        ch.queue_declare(n[key], durable=True)
    for key in ("bind-x", "unbind-x", "e2e-src", "e2e-dst", "xdel"):
        ch.exchange_declare(n[key], "direct", durable=True)
    ch.queue_bind(n["unbind-q"], n["unbind-x"], "k")
    ch.confirm_delivery()
    for key in ("del-q", "purge-q", "txack-q"):
        for i in range(3):
            ch.basic_publish("", n[key], f"{key}{i}".encode(), PERSISTENT)
    # a confirm comes after the commit holding everything recorded before it: the setup is on disk
    ch.close()
    return n


def operations(node, n: dict) -> dict:
    """One operation of each kind, as callables that return once the reply is in."""
    ch = node.channel()
    tx = node.channel()
    tx.tx_select()

    def tx_publish():
        for i in range(3):
            tx.basic_publish("", n["txpub-q"], f"t{i}".encode(), PERSISTENT)
        tx.tx_commit()

    def tx_ack():
        for _ in range(2):
            method, _props, _body = tx.basic_get(n["txack-q"])
            tx.basic_ack(method.delivery_tag)
        tx.tx_commit()

    def api(method, path, body=None, expect=(201, 204)):
        r = node.api.request(method, path, body)
        assert r.status in expect, (method, path, r)

    defs = {"queues": [{"name": n["defs-q"], "vhost": "/", "durable": True, "auto_delete": False,
                        "arguments": {}}],
            "exchanges": [{"name": n["defs-x"], "vhost": "/", "type": "fanout", "durable": True,
                           "auto_delete": False, "internal": False, "arguments": {}}],
            "bindings": [{"source": n["defs-x"], "vhost": "/", "destination": n["defs-q"],
                          "destination_type": "queue", "routing_key": "d", "arguments": {}}]}
    return {
        "queue.delete": lambda: ch.queue_delete(n["del-q"]),
        "queue.purge": lambda: ch.queue_purge(n["purge-q"]),
        "tx.commit publishes": tx_publish,
        "tx.commit acks": tx_ack,
        "queue.declare durable": lambda: ch.queue_declare(n["decl-q"], durable=True),
        "exchange.declare durable": lambda: ch.exchange_declare(n["decl-x"], "topic", durable=True),
        "queue.bind": lambda: ch.queue_bind(n["bind-q"], n["bind-x"], "k"),
        "queue.unbind": lambda: ch.queue_unbind(n["unbind-q"], n["unbind-x"], "k"),
        "exchange.bind": lambda: ch.exchange_bind(n["e2e-dst"], n["e2e-src"], "k"),
        "exchange.delete": lambda: ch.exchange_delete(n["xdel"]),
        "API PUT queue": lambda: api("PUT", f"/api/queues/%2F/{q(n['api-q'])}", {"durable": True}),
        "API DELETE queue": lambda: api("DELETE", f"/api/queues/%2F/{q(n['api-del-q'])}"),
        "API definitions import": lambda: api("POST", "/api/definitions", defs, expect=(200, 201, 204)),
        "API PUT policy": lambda: api("PUT", f"/api/policies/%2F/{q(n['pol'])}",
                                      {"pattern": f"^{n['pol']}$", "definition": {"max-length": 7},
                                       "apply-to": "queues"}),
        "API PUT user": lambda: api("PUT", f"/api/users/{q(n['user'])}",
                                    {"password": "secret", "tags": ""}),
    }


def broken_promises(node, n: dict) -> list:
    """The operations of a round whose effect is missing after the restart."""
    checks = {
        "queue.delete": lambda: queue_messages(node, n["del-q"]) is None,
        "queue.purge": lambda: queue_messages(node, n["purge-q"]) == 0,
        "tx.commit publishes": lambda: queue_messages(node, n["txpub-q"]) == 3,
        "tx.commit acks": lambda: queue_messages(node, n["txack-q"]) == 1,
        "queue.declare durable": lambda: exists(node, "queues", n["decl-q"]),
        "exchange.declare durable": lambda: exists(node, "exchanges", n["decl-x"]),
        "queue.bind": lambda: bindings(node, n["bind-x"], "q", n["bind-q"]) == ["k"],
        "queue.unbind": lambda: bindings(node, n["unbind-x"], "q", n["unbind-q"]) == [],
        "exchange.bind": lambda: bindings(node, n["e2e-src"], "e", n["e2e-dst"]) == ["k"],
        "exchange.delete": lambda: not exists(node, "exchanges", n["xdel"]),
        "API PUT queue": lambda: exists(node, "queues", n["api-q"]),
        "API DELETE queue": lambda: not exists(node, "queues", n["api-del-q"]),
        "API definitions import": lambda: (exists(node, "queues", n["defs-q"])
                                           and bindings(node, n["defs-x"], "q", n["defs-q"]) == ["d"]),
        "API PUT policy": lambda: exists(node, "policies", n["pol"]),
        "API PUT user": lambda: node.api.request("GET", f"/api/users/{q(n['user'])}").status == 200,
    }
    return [kind for kind, check in checks.items() if not check()]


def test_every_durable_reply_survives_kill_minus_9(tmp_path):
    rng = random.Random(int(os.environ.get("USAGI_CRASH_SEED", "11")))
    node = Node(str(tmp_path / "data")).start()
    checked = 0
    failures = []
    t0 = time.monotonic()
    try:
        for k in range(ROUNDS):
            n = prepare(node, k)
            ops = operations(node, n)
            # shuffled, each kind in turn last (killed right after its reply)
            last = list(ops)[k % len(ops)]
            order = [kind for kind in ops if kind != last]
            rng.shuffle(order)
            order.append(last)
            for kind in order:
                ops[kind]()
            node.kill()                     # at once: the last reply has just come in
            node.start()
            broken = broken_promises(node, n)
            checked += len(ops)
            if broken:
                failures.append((k, order[-3:], broken))
    finally:
        node.stop()
    assert not failures, f"promises broken after kill -9 (round, last operations, broken): {failures}"
    warnings.warn(CrashTestReport(f"crash promises: {checked} promises of {len(ops)} kinds checked over "
                                  f"{ROUNDS} kill -9 rounds in {time.monotonic() - t0:.1f}s, none broken"))
    assert checked >= 200
