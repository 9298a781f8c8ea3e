"""What crafted bindings and consumer floods cost the broker, in process, without sockets.

    python benchmarks/routing_cost.py [--consumers 5000,50000] [--only topic,headers,consumers]

Everything here runs on the event loop that every client shares, so each figure is time that
no other client is served:

* topic: one publish through a topic exchange holding a binding crafted to be expensive (runs of
  `#`, alternating `#` and a word, `*` and `#` mixed, empty words, up to 255 bytes long) with a
  long routing key that changes every time (so the routing cache does not help); then 100 and
  1,000 crafted bindings that the routing key enters one after another;
* headers: one publish with 1,000 headers through a headers exchange with 1,000 bindings of 20
  pairs each (x-match any and all), and one with 19 headers that are tables of 30 entries through
  5,000 bindings of 20 pairs on the same names that it does not match;
* consumers: N consumers on one queue over 50 channels (basic.consume), messages dispatched while
  all but a few of them are blocked by their prefetch, then every consumer cancelled.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from usagi.amqp import methods as M  # noqa: E402
from usagi.amqp import properties as P  # noqa: E402
from usagi.amqp.frames import method_frame  # noqa: E402
from usagi.core.broker import Broker  # noqa: E402
from usagi.model.exchanges import HeadersExchange, TopicExchange  # noqa: E402
from usagi.model.exchanges.base import Binding  # noqa: E402
from usagi.model.message import Message  # noqa: E402
from usagi.model.queue import Queue  # noqa: E402

from hotpath import opened  # noqa: E402

CRAFTED = {
    "hashes": ".".join(["#"] * 126) + ".z",
    "hash-word": ".".join(["#", "a"] * 63) + ".z",
    "star-hash": ".".join(["*", "#"] * 63) + ".z",
    "word-hash-word": ".".join(["a", "#", "a"] * 42) + ".z",
    "empty-hash": ".".join(["#", ""] * 63) + ".z",
}
KEYS = {"empty-hash": "." * 250}


def per_call(fn, n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - t0) / n


def topic():
    for name, bk in CRAFTED.items():
        x = TopicExchange("/", "t")
        q = Queue("/", "q")
        x.add_binding(Binding(x, q, bk, {}))
        base = KEYS.get(name, ".".join(["a"] * 126))

        def route(i):
            x.route(f"{base}.{i}"[:255], None)
        n = 3
        t = per_call(route, 1)
        if t < 0.05:
            n = 50
        t = per_call(route, n)
        print(f"topic  {name:15s} binding {len(bk)} B, routing key {len(base) + 2} B: {t * 1000:9.3f} ms per publish")
    # many crafted bindings: each one a different word after a '#', then '#' and a word alternating,
    # and a routing key whose words enter a new one at every step
    for nb in (100, 1000):
        x = TopicExchange("/", "t")
        for i in range(nb):
            x.add_binding(Binding(x, Queue("/", f"q{i}"), f"#.x{i}." + ".".join(["#", "a"] * 60), {}))
        key = ".".join(f"x{i}" for i in range(60))

        def route(i):
            x.route(f"{key}.{i}", None)
        t = per_call(route, 5)
        print(f"topic  {nb} crafted bindings, routing key of 61 words entering 60 of them: {t * 1000:9.3f} ms per publish")


def headers():
    for mode in ("any", "all"):
        x = HeadersExchange("/", "h")
        for i in range(1000):
            q = Queue("/", f"q{i}")
            args = {"x-match": mode}
            for j in range(20):
                args[f"k{(i + j) % 1000}"] = j if mode == "any" else (i + j) % 1000
            x.add_binding(Binding(x, q, "", args))
        props = P.encode({"headers": {f"k{i}": {"nested": [i, str(i) * 10]} for i in range(1000)}})

        def route(i):
            x.route("", Message("h", "", props, b""))
        t = per_call(route, 5)
        print(f"headers x-match {mode}: 1000 bindings x 20 pairs, 1000 headers: {t * 1000:9.3f} ms per publish")
        t0 = time.perf_counter()
        for b in list(x.bindings.values()):
            x.remove_binding(b.destination, b.routing_key, b.arguments)
        print(f"headers x-match {mode}: removing the 1000 bindings: {(time.perf_counter() - t0) * 1000:9.3f} ms")
    x = HeadersExchange("/", "h")
    for i in range(5000):
        args = {"x-match": "any" if i % 2 else "all", **{f"k{j}": i for j in range(20)}}
        x.add_binding(Binding(x, Queue("/", f"q{i}"), f"b{i}", args))
    big = {f"entry{e}": f"value {e}" for e in range(30)}
    props = P.encode({"headers": {"k0": -1, **{f"k{j}": big for j in range(1, 20)}}})

    def route(i):
        assert not x.route("", Message("h", "", props, b""))
    t = per_call(route, 3)
    print(f"headers 5000 bindings x 20 pairs on the same names, 19 table headers, no match: {t * 1000:9.3f} ms per publish")


def consumers(n: int, channels: int = 50):
    b = Broker()
    b.bootstrap()
    owner = opened(b)
    owner.data_received(method_frame(1, M.QueueDeclare(0, "many", False, False, False, False, False, {}).encode()))
    conns = [opened(b) for _ in range(max(1, channels // 10))]
    chans = []
    for ci, c in enumerate(conns):
        for k in range(1, 11):
            if k > 1:
                c.data_received(method_frame(k, M.ChannelOpen().encode()))
            c.data_received(method_frame(k, M.BasicQos(0, 1, False).encode()))
            chans.append((c, k))
    b.flush_output()
    per = n // len(chans)
    t0 = time.perf_counter()
    for c, k in chans:
        c.data_received(b"".join(method_frame(k, M.BasicConsume(0, "many", f"c{k}-{i}", False, False, False,
                                                                 True, {}).encode()) for i in range(per)))
        b.flush_output()
    t_add = time.perf_counter() - t0
    q = b.vhosts["/"].queues["many"]
    total = len(q.consumers)
    # every consumer takes one message (prefetch 1); then 2,000 more messages are dispatched to the
    # few consumers that still have room while all the others stay blocked
    pub = opened(b)
    one = lambda body: (method_frame(1, M.BasicPublish(0, "", "many", False, False).encode())   # noqa: E731
                        + bytes((2, 0, 1, 0, 0, 0, 14)) + (60).to_bytes(2, "big") + bytes(2)
                        + len(body).to_bytes(8, "big") + b"\x00\x00\xce"
                        + bytes((3, 0, 1)) + len(body).to_bytes(4, "big") + body + b"\xce")
    t0 = time.perf_counter()
    pub.data_received(b"".join(one(b"x") for _ in range(total)))
    b.run_dirty()
    b.flush_output()
    t_fill = time.perf_counter() - t0
    # then, 2,000 times: one consumer of the first channel acks its message, and one message is
    # published; only that consumer has room, all the others stay blocked by their prefetch
    c0, k0 = chans[0]
    ch0 = c0.channels[k0]
    t0 = time.perf_counter()
    for i in range(2000):
        c0.data_received(method_frame(k0, M.BasicAck(ch0.next_tag, False).encode()))
        b.run_dirty()
        pub.data_received(one(b"y"))
        b.run_dirty()
        b.flush_output()
    assert ch0.delivered >= 2000
    t_blocked = (time.perf_counter() - t0) / 2000
    t0 = time.perf_counter()
    for c, k in chans:
        ch = c.channels[k]
        c.data_received(b"".join(method_frame(k, M.BasicCancel(tag, True).encode()) for tag in list(ch.consumers)))
        b.flush_output()
    t_cancel = time.perf_counter() - t0
    assert not q.consumers
    print(f"consumers {total:6d}: consume {t_add:7.3f} s, one message each {t_fill:7.3f} s, "
          f"publish with all but one blocked {t_blocked * 1e6:9.1f} us per message, cancel all {t_cancel:7.3f} s")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--consumers", default="5000,50000")
    ap.add_argument("--only", default="topic,headers,consumers")
    a = ap.parse_args()
    only = a.only.split(",")
    if "topic" in only:
        topic()
    if "headers" in only:
        headers()
    if "consumers" in only:
        for n in a.consumers.split(","):
            consumers(int(n))


if __name__ == "__main__":
    main()
