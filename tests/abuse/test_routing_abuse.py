"""Crafted bindings do not make anyone else wait: topic and headers routing under a publish flood.

A topic binding of 127 '#' words (or '#' and a word alternating, or empty words between '#'s)
with 255-byte routing keys used to cost 100 to 400 ms per publish (a recursive trie walk), so a few
such publishes a second stalled everyone; a headers exchange with thousands of bindings checked
every pair of every binding for each message. Here an attacker publishes 250 messages a second
with a routing key that changes every time (so no cache helps), while the bystander measures its
own publish-to-delivery latency. The figures are in benchmarks/routing_cost.py; the bound here is
generous.
"""
from __future__ import annotations

import threading
import time

import pytest

from abuseutil import assert_healthy
from rawamqp import RawConnection, content_header_payload, frame_bytes, method_payload
from support.bystander import Bystander

pytestmark = pytest.mark.timeout(300)

CRAFTED_TOPIC_KEYS = [
    ".".join(["#"] * 126) + ".z",
    ".".join(["#", "a"] * 63) + ".z",
    ".".join(["a", "#", "a"] * 42) + ".z",
    ".".join(["*", "#"] * 63) + ".z",
    ".".join(["#", ""] * 63) + ".z",
]


def flood(srv, exchange: str, keys, headers=None, seconds: float = 4.0, rate: int = 250) -> int:
    """Publish to `exchange` at `rate` messages a second for `seconds` (a steady stream, not as
    fast as the socket takes: a flood of cheap publishes alone is the fairness tests' business);
    returns how many, once the broker has taken them all in."""
    c = RawConnection.opened(srv.host, srv.port)
    c.open_channel(1)
    header = frame_bytes(2, 1, content_header_payload(1, {"headers": headers} if headers else None))
    body = frame_bytes(3, 1, b"x")
    sent = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        due = int((time.monotonic() - t0) * rate) + 1
        batch = []
        while sent < due:
            batch.append(frame_bytes(1, 1, method_payload("basic.publish", exchange=exchange, routing_key=keys(sent))))
            batch.append(header)
            batch.append(body)
            sent += 1
        if batch:
            c.send_raw(b"".join(batch))
        time.sleep(0.01)
    c.call(1, "queue.declare", "queue.declare-ok", queue="", exclusive=True)     # all were taken in
    c.close_connection(timeout=60)
    return sent


def attack(srv, exchange, keys, headers=None, seconds=4.0):
    result = {}

    def run():
        result["sent"] = flood(srv, exchange, keys, headers, seconds)
    t = threading.Thread(target=run, daemon=True)
    with Bystander(srv.host, srv.port) as b:
        time.sleep(0.5)
        b.reset()
        t.start()
        t.join(seconds + 60)
    assert not t.is_alive(), "the broker did not keep up with the publisher"
    print("published:", result, "bystander:", b.stats())
    return b, result["sent"]


def test_crafted_topic_bindings_with_long_keys(fresh_server):
    srv = fresh_server()
    c = RawConnection.opened(srv.host, srv.port)
    c.open_channel(1)
    c.call(1, "exchange.declare", "exchange.declare-ok", exchange="crafted", type="topic")
    c.call(1, "queue.declare", "queue.declare-ok", queue="crafted-q", arguments={"x-max-length": 1000})
    for key in CRAFTED_TOPIC_KEYS:
        assert len(key) <= 255
        c.call(1, "queue.bind", "queue.bind-ok", queue="crafted-q", exchange="crafted", routing_key=key)
    base = ".".join(["a"] * 120)
    b, sent = attack(srv, "crafted", lambda i: f"{base}.{i}"[:255])
    b.assert_ok(p99_ms=100)
    assert sent > 0
    # the routing itself is right: a key ending in z matches, one that does not is dropped
    c.call(1, "queue.purge", "queue.purge-ok", queue="crafted-q")
    c.publish(1, "crafted", base + ".z", b"in")
    c.publish(1, "crafted", base + ".y", b"out")
    c.send_method(1, "basic.get", queue="crafted-q", no_ack=True)
    c.expect_method("basic.get-ok")
    assert c.read_message()[1] == b"in"
    c.send_method(1, "basic.get", queue="crafted-q", no_ack=True)
    c.expect_method("basic.get-empty")
    c.close_connection()
    assert_healthy(srv)


def test_headers_exchange_with_thousands_of_bindings_and_big_headers(fresh_server):
    """5,000 bindings of 20 pairs each on the same 20 header names, and messages whose headers are
    tables of 30 entries under those names (and match none of them): each value is compared once
    per message, not once per binding (~0.5 s per message)."""
    srv = fresh_server()
    c = RawConnection.opened(srv.host, srv.port)
    c.open_channel(1)
    c.call(1, "exchange.declare", "exchange.declare-ok", exchange="hdrs", type="headers")
    c.call(1, "queue.declare", "queue.declare-ok", queue="hdrs-q", arguments={"x-max-length": 1000})
    n = 5000
    binds = []
    for i in range(n):
        args = {"x-match": "any" if i % 2 else "all"}
        for j in range(20):
            args[f"k{j}"] = i
        binds.append(frame_bytes(1, 1, method_payload("queue.bind", queue="hdrs-q", exchange="hdrs",
                                                       routing_key=f"b{i}", arguments=args)))
    c.send_raw(b"".join(binds))
    for _ in range(n):
        c.expect_method("queue.bind-ok", timeout=60)
    big = {f"entry{e}": f"value {e}" for e in range(30)}
    headers = {"k0": -1, **{f"k{j}": big for j in range(1, 20)}}      # matches no binding
    b, sent = attack(srv, "hdrs", lambda i: "", headers=headers)
    b.assert_ok(p99_ms=100)
    c.call(1, "queue.purge", "queue.purge-ok", queue="hdrs-q")
    c.publish(1, "hdrs", "", b"in", {"headers": {"k3": 9}})                          # any: binding 9
    c.publish(1, "hdrs", "", b"out", {"headers": {"k3": 8, "k4": 8}})                # all: 8 wants 20
    c.publish(1, "hdrs", "", b"all", {"headers": {f"k{j}": 8 for j in range(20)}})   # all: binding 8
    for expected in (b"in", b"all"):
        c.send_method(1, "basic.get", queue="hdrs-q", no_ack=True)
        c.expect_method("basic.get-ok")
        assert c.read_message()[1] == expected
    c.send_method(1, "basic.get", queue="hdrs-q", no_ack=True)
    c.expect_method("basic.get-empty")
    c.close_connection()
    assert_healthy(srv)
