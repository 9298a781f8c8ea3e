#!/usr/bin/env python3
"""What a hostile client costs everyone else, attack by attack: the publish-to-delivery latency of a
well-behaved bystander while each attack runs against a fresh Usagi server.

All AMQP and HTTP work shares one event loop, so the promise is that no client, user or message can
stall or starve the others: a bystander's p99 stays under 50 ms and its connection stays open while
any one attack runs. This script carries those figures; the tests in tests/abuse/ drive the same
attacks with generous bounds and check the behaviour.

    python benchmarks/abuse.py                        # every attack, ~10-20 s of attack each
    python benchmarks/abuse.py --quick                # smaller sizes: a smoke run of a minute or two
    python benchmarks/abuse.py --attacks topic-hash,dlx-chain --json out.jsonl
    python benchmarks/abuse.py --list                 # the attacks and their classes

For every attack a fresh server is started (real process, real sockets: tests/support/harness.py),
the attack's setup runs, then the bystander (tests/support/bystander.py, raw AMQP, one message every
10 ms, in a process of its own so that the attacker's threads cannot delay it) measures while the
attack runs. Each attack is bounded in time (--duration, and --limit at most; past the limit the
server is killed and the row says so). The table gives the bystander's deliveries, p50/p99/max,
lost messages (not delivered within 10 s), whether its connection was closed, the attack's own
duration and a verdict against the 50 ms p99 target. The memory-alarm attack is judged on the time
the alarm takes to clear after the queue is deleted (publishers, the bystander too, are blocked by
design while it is set).

The attack drivers are those of the abuse tests (tests/abuse/*.py, abuseutil.py) and of
benchmarks/abuse_regex.py, imported, not copied.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import socket
import sys
import threading
import time
from contextlib import contextmanager

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for p in (ROOT, os.path.join(ROOT, "tests"), os.path.join(ROOT, "tests", "abuse"), HERE):
    if p not in sys.path:
        sys.path.insert(0, p)

import abuse_regex  # noqa: E402
from abuseutil import fill_expiring, rss  # noqa: E402
from rawamqp import RawConnection, content_header_payload, frame_bytes, method_payload  # noqa: E402
from support.bystander import Bystander  # noqa: E402
from support.harness import MGMT_RE, ServerProcess, wait_for  # noqa: E402

TARGET_P99_MS = 50.0
ALARM_CLEAR_S = 10.0
HEADER = b"AMQP\x00\x00\x09\x01"
BAD_FRAME_END = b"\x01\x00\x00\x00\x00\x00\x04\x00\x0a\x00\x33\x00"     # a frame error: what follows is junk


# ------------------------------------------------------------------------------- the bystander
def _bystander_main(pipe, host, port):
    """The bystander in a process of its own: commands 'reset', 'stats', 'stop' over a pipe."""
    b = Bystander(host, port)
    try:
        b.start()
    except AssertionError as e:
        pipe.send({"error": str(e)})
        return
    pipe.send({"ready": True})
    while True:
        cmd = pipe.recv()
        if cmd == "reset":
            b.reset()
            pipe.send(True)
        elif cmd == "stats":
            pipe.send(b.stats())
        elif cmd == "stop":
            b.stop()
            pipe.send(b.stats())
            return


class BystanderProcess:
    def __init__(self, host, port):
        ctx = multiprocessing.get_context("spawn")
        self.pipe, child = ctx.Pipe()
        self.proc = ctx.Process(target=_bystander_main, args=(child, host, port), daemon=True)
        self.proc.start()
        first = self.pipe.recv() if self.pipe.poll(30) else {"error": "no answer from the bystander"}
        if "error" in first:
            self.close()
            raise RuntimeError(first["error"])

    def ask(self, cmd, timeout=30):
        self.pipe.send(cmd)
        return self.pipe.recv() if self.pipe.poll(timeout) else None

    def close(self):
        if self.proc.is_alive():
            try:
                self.pipe.send("stop")
                self.pipe.poll(20)
            except OSError:
                pass
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()


# ------------------------------------------------------------------------------- one attack's run
class Ctx:
    """What an attack gets: the server, the management API (abuse_regex.Target), the options, and
    `measuring()`, the block during which the bystander measures."""

    def __init__(self, srv, target, a):
        self.srv, self.t, self.a = srv, target, a
        self.info = {}            # attack-specific figures for the row
        self.stats = None
        self.seconds = None
        self.bystander = None
        self.t0 = None

    def size(self, full, quick):
        return quick if self.a.quick else full

    @contextmanager
    def measuring(self):
        self.bystander = BystanderProcess(self.srv.host, self.srv.port)
        time.sleep(0.5)
        self.bystander.ask("reset")
        self.t0 = time.monotonic()
        try:
            yield
        finally:
            self.seconds = round(time.monotonic() - self.t0, 2)
            time.sleep(0.5)           # deliveries still on the way are counted
            self.stats = self.bystander.ask("stats")
            self.bystander.close()

    def until_done(self):
        """A loop guard for attacks that repeat: True while --duration has not passed."""
        return time.monotonic() - self.t0 < self.a.duration

    def amqp(self, channel=True, **kw) -> RawConnection:
        c = RawConnection.opened(self.srv.host, self.srv.port, **kw)
        if channel:
            c.open_channel(1)
        return c


def start_server(extra_args=(), env=None):
    srv = ServerProcess(extra_args=list(extra_args), env=env).start()
    m = wait_for(lambda: MGMT_RE.search("".join(srv.lines)), 20, message="management listener")
    return srv, abuse_regex.Target("usagi", srv.host, srv.port, f"http://127.0.0.1:{m.group(2)}")


# ------------------------------------------------------------------------------- attacks: regex
REGEX_DOCS = {
    "listing": "A `management` user lists exchanges with use_regex and backtracking patterns (3,000 exchanges "
               "with names of long runs of 'a').",
    "policy": "A `policymaker` sets policies with backtracking patterns over 3,000 queues, then declares "
              "queues and publishes to them with confirms.",
    "permission": "A user whose configure/write permission patterns backtrack declares and publishes to "
                  "250-character names (refused).",
    "topic": "A user whose topic-permission patterns on amq.topic backtrack binds and publishes (refused).",
    "apply": "A policy set and changed, again and again, over a vhost of 100,000 queues.",
    "idle": "No attack: the 100,000 queues of policy-apply, idle (what holding them costs by itself).",
}


def _regex(kind):
    def attack(ctx):
        a = argparse.Namespace(names=ctx.size(3000, 1000), declares=ctx.size(200, 50),
                               apply_queues=ctx.size(100_000, 20_000))
        abuse_regex.setup_vhost(ctx.t)
        run = abuse_regex.ATTACKS[kind](ctx.t, a)
        replies, n = set(), 0
        with ctx.measuring():
            while n == 0 or ctx.until_done():
                replies.update(map(str, run(n)))
                n += 1
        ctx.info.update(rounds=n, replies=sorted(replies))
    attack.__doc__ = REGEX_DOCS[kind]
    return attack


# ------------------------------------------------------------------------------- attacks: routing
def topic_hash(ctx):
    """Topic bindings of up to 126 '#' words (and mixes), 255-byte routing keys that change on
    every publish, 250 publishes a second."""
    from test_routing_abuse import CRAFTED_TOPIC_KEYS, flood
    c = ctx.amqp()
    c.call(1, "exchange.declare", "exchange.declare-ok", exchange="crafted", type="topic")
    c.call(1, "queue.declare", "queue.declare-ok", queue="crafted-q", arguments={"x-max-length": 1000})
    for key in CRAFTED_TOPIC_KEYS:
        c.call(1, "queue.bind", "queue.bind-ok", queue="crafted-q", exchange="crafted", routing_key=key)
    base = ".".join(["a"] * 120)
    with ctx.measuring():
        ctx.info["published"] = flood(ctx.srv, "crafted", lambda i: f"{base}.{i}"[:255], None, ctx.a.duration)
    c.close()


def headers_bindings(ctx):
    """A headers exchange with 5,000 bindings of 20 pairs; messages with 20 header tables of 30
    entries each, matching none, 250 a second."""
    from test_routing_abuse import flood
    from test_upkeep import pipeline
    n = ctx.size(5000, 1000)
    c = ctx.amqp()
    pipeline(c, [("exchange.declare", dict(exchange="hdrs", type="headers", no_wait=True)),
                 ("queue.declare", dict(queue="hdrs-q", no_wait=True, arguments={"x-max-length": 1000}))]
             + [("queue.bind", dict(queue="hdrs-q", exchange="hdrs", routing_key=f"b{i}", no_wait=True,
                                    arguments={"x-match": "any" if i % 2 else "all",
                                               **{f"k{j}": i for j in range(20)}})) for i in range(n)])
    big = {f"entry{e}": f"value {e}" for e in range(30)}
    headers = {"k0": -1, **{f"k{j}": big for j in range(1, 20)}}
    with ctx.measuring():
        ctx.info["published"] = flood(ctx.srv, "hdrs", lambda i: "", headers, ctx.a.duration)
    c.close()


# ------------------------------------------------------------------------------- attacks: chains
def _ttl0(name, next_name, last=False):
    from test_upkeep import queue
    if last:
        return queue(name, {"x-max-length": 100})
    return queue(name, {"x-message-ttl": 0, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": next_name})


def _dead_letter(ctx, ring):
    from test_upkeep import pipeline
    n = ctx.size(500, 200)
    c = ctx.amqp()
    if ring:
        pipeline(c, [_ttl0(f"cy-{i}", f"cy-{(i + 1) % n}") for i in range(n)])
    else:
        pipeline(c, [_ttl0(f"dl-{i}", f"dl-{i + 1}", last=i == n - 1) for i in range(n)])
    rate = 10
    sent = 0
    with ctx.measuring():
        while ctx.until_done():
            due = int((time.monotonic() - ctx.t0) * rate) + 1
            while sent < due:
                c.publish(1, "", "cy-0" if ring else "dl-0", b"round and round %d" % sent)
                sent += 1
            time.sleep(0.01)
        c.call(1, "basic.qos", "basic.qos-ok", prefetch_count=0)
    ctx.info.update(hops=n, published=sent)
    if not ring:
        ctx.info["arrived"] = c.call(1, "queue.declare", "queue.declare-ok", queue=f"dl-{n - 1}",
                                     passive=True)["message_count"]
    c.close()


def dlx_chain(ctx):
    """A chain of 500 TTL-0 queues, each dead-lettering into the next: 10 messages a second go
    through all of it (x-death grows by one entry a hop)."""
    _dead_letter(ctx, ring=False)


def dlx_ring(ctx):
    """A ring of 500 TTL-0 queues dead-lettering into each other: 10 messages a second cycle
    until the cycle rule drops them."""
    _dead_letter(ctx, ring=True)


def autodelete_chain(ctx):
    """Chains of 2,000 auto-delete exchanges ending in a queue with x-expires 500 ms: the queue
    expires and the cascade runs in the broker's upkeep; a new chain every round."""
    from test_upkeep import auto_delete_chain, pipeline
    n = ctx.size(2000, 500)
    c = ctx.amqp()
    rounds = 0
    with ctx.measuring():
        while rounds == 0 or ctx.until_done():
            pipeline(c, auto_delete_chain(f"ad{rounds}-", n, f"ad{rounds}-end", {"x-expires": 500}))
            rounds += 1
            time.sleep(1.0)
    ctx.info["rounds"] = rounds
    time.sleep(1.5)
    left = [x["name"] for x in ctx.t.api("GET", "/api/exchanges/%2F")[1] if x["name"].startswith("ad")]
    ctx.info["exchanges_left"] = len(left)
    c.close()


# ------------------------------------------------------------------------------- attacks: scale
def consumers(ctx):
    """50,000 consumers (prefetch 1) on one queue over 5 connections x 10 channels: created, fed,
    starved, cancelled (tests/abuse/test_consumer_scale.py)."""
    from test_consumer_scale import run
    n = ctx.size(50_000, 10_000)
    with ctx.measuring():
        phases = run(ctx.srv, n)
    ctx.info.update(consumers=n, **{k: round(v, 2) for k, v in phases.items()})


def list_queues(ctx):
    """GET /api/queues over 100,000 queues, again and again."""
    n = ctx.size(100_000, 20_000)
    abuse_regex.setup_vhost(ctx.t)
    abuse_regex.declare_many(ctx.t, "queue.declare", [f"q-{i}" for i in range(n)])
    rounds, statuses = 0, set()
    with ctx.measuring():
        while rounds == 0 or ctx.until_done():
            statuses.add(ctx.t.api("GET", "/api/queues", timeout=ctx.a.limit)[0])
            rounds += 1
    ctx.info.update(queues=n, rounds=rounds, replies=sorted(statuses))


def definitions_import(ctx):
    """POST /api/definitions with 200,000 queues."""
    n = ctx.size(200_000, 20_000)
    defs = {"queues": [{"name": f"imp-{i}", "vhost": "/", "durable": False, "auto_delete": False,
                        "arguments": {}} for i in range(n)]}
    with ctx.measuring():
        status, body = ctx.t.api("POST", "/api/definitions", defs, timeout=ctx.a.limit)
    ctx.info.update(queues=n, replies=[status] if status < 300 else [status, body])


# ------------------------------------------------------------------------------- attacks: poison
def poison(ctx):
    """Messages whose headers nest past the decode depth, carry unknown types, lying lengths or
    x-death of the wrong types: rejected, nacked and requeued, dead-lettered, expired (TTL 0)."""
    from test_poison import Client, poisons, props
    from test_upkeep import pipeline, queue
    c = ctx.amqp()
    pipeline(c, [queue("poison-dlq", {"x-max-length": 1000}),
                 queue("poison-q", {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "poison-dlq"}),
                 queue("poison-ttl", {"x-message-ttl": 0, "x-dead-letter-exchange": "",
                                      "x-dead-letter-routing-key": "poison-dlq"})])
    c.close()
    ctl, r = Client(ctx.srv), Client(ctx.srv)
    r.call("basic.qos", "basic.qos-ok", prefetch_count=1)
    r.call("basic.consume", "basic.consume-ok", queue="poison-q", consumer_tag="R")
    kinds = list(poisons("poison-q").values())
    n = 0
    with ctx.measuring():
        while ctx.until_done():
            headers, _count = kinds[n % len(kinds)]
            raw = props(headers)
            ctl.publish("", "poison-q", raw)
            ctl.publish("", "poison-ttl", props(headers, expiration="0"))
            tag, _red, _got, _body = r.deliver()
            r.c.send_method(1, "basic.nack", delivery_tag=tag, multiple=False, requeue=True)
            tag, _red, _got, _body = r.deliver()
            r.c.send_method(1, "basic.reject", delivery_tag=tag, requeue=False)
            n += 1
            time.sleep(0.005)
        ctx.info["connections_alive"] = r.alive() and ctl.alive()
    ctx.info.update(poisons=n, dead_lettered=ctl.count("poison-dlq"))
    ctl.c.close()
    r.c.close()


# ------------------------------------------------------------------------------- attacks: memory
def memory_alarm(ctx):
    """Publishers fill a queue held in memory until the memory alarm blocks them; the queue is
    deleted; time until the alarm clears and the publisher goes on."""
    from test_memory_alarm import Publisher
    import pika
    srv = ctx.srv
    setup = pika.BlockingConnection(pika.URLParameters(srv.url()))
    setup.channel().queue_declare("flood")
    setup.close()
    pub = Publisher(srv.url())
    log = lambda: "".join(srv.lines)       # noqa: E731
    with ctx.measuring():
        pub.start()
        t_set = time.monotonic()
        wait_for(lambda: "memory resource limit alarm set" in log(), timeout=ctx.a.limit / 2,
                 message="memory alarm")
        ctx.info["alarm_after_s"] = round(time.monotonic() - t_set, 2)
        time.sleep(1.0)
        c = pika.BlockingConnection(pika.URLParameters(srv.url()))
        c.channel().queue_delete("flood")
        c.close()
        t0 = time.monotonic()
        wait_for(lambda: "memory resource limit alarm cleared" in log(), timeout=30, message="alarm cleared")
        ctx.info["clear_s"] = round(time.monotonic() - t0, 2)
        wait_for(lambda: pub.unblocked.is_set() and pub.after_unblock >= 20, timeout=30,
                 message="publisher resumed")
        ctx.info["resume_s"] = round(time.monotonic() - t0, 2)
        pub.stop.set()
        pub.join(10)
    ctx.info["publisher_error"] = repr(pub.error) if pub.error else None


def _memory_alarm_server(a):
    from test_memory_alarm import HEADROOM, idle_rss
    limit = idle_rss() + HEADROOM
    return ["--vm-memory-high-watermark-absolute", str(limit)], {"USAGI_QUEUE_MEMORY_BYTES": str(1 << 30)}


def mass_expiry(ctx):
    """A million 16-byte messages whose per-message TTLs fall due at the same moment (most of
    them paged out), then expire together."""
    n = ctx.size(1_000_000, 200_000)
    c = ctx.amqp()
    c.call(1, "queue.declare", "queue.declare-ok", queue="mass")
    count = lambda: c.call(1, "queue.declare", "queue.declare-ok", queue="mass", passive=True)["message_count"]  # noqa: E731
    deadline = time.time() + 4 + n / 80_000
    t0 = time.monotonic()
    fill_expiring(c, "mass", n, deadline, check=count)
    count()
    ctx.info.update(messages=n, fill_s=round(time.monotonic() - t0, 1),
                    margin_s=round(deadline - time.time(), 1))
    with ctx.measuring():
        time.sleep(max(0.0, deadline - time.time()))
        wait_for(lambda: count() == 0, timeout=ctx.a.limit, interval=0.5, message="every message expired")
        ctx.info["expired_in_s"] = round(time.monotonic() - ctx.t0, 1)
    c.close()


# ------------------------------------------------------------------------------- attacks: connections
def connection_flood(ctx):
    """12 threads open and drop TCP connections as fast as they can (bare connect, protocol
    header only, header and read, reset), plus full handshakes dropped without a close."""
    from test_connection_flood import _attempt
    counts = [0] * 13
    host, port = ctx.srv.host, ctx.srv.port

    def worker(k):
        i = 0
        while ctx.until_done():
            counts[k] += _attempt(host, port, (i + k) % 4)
            i += 1

    def handshakes():
        while ctx.until_done():
            try:
                RawConnection.opened(host, port).close()
                counts[12] += 1
            except (OSError, AssertionError):
                pass
    with ctx.measuring():
        threads = [threading.Thread(target=worker, args=(k,)) for k in range(12)]
        threads.append(threading.Thread(target=handshakes))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    ctx.info.update(attempts=sum(counts[:12]), handshakes=counts[12])


def slowloris(ctx):
    """200 connections trickle their handshake a byte at a time and never finish it (the
    handshake timeout, 2 s here, cuts them; they reconnect), and one open connection trickles
    its frames a byte at a time."""
    start_ok = frame_bytes(1, 0, method_payload("connection.start-ok", client_properties={}, mechanism="PLAIN",
                                                response=b"\0guest\0guest", locale="en_US"))
    host, port = ctx.srv.host, ctx.srv.port

    def sock(i):
        s = socket.create_connection((host, port), timeout=5)
        data = HEADER + start_ok if i % 2 else HEADER
        if i % 2:
            s.sendall(HEADER)
        s.setblocking(False)
        return [s, data, 8 if i % 2 else 0]
    slow = ctx.amqp()
    trickle = frame_bytes(1, 1, method_payload("queue.declare", queue="trickled")) + b"".join(
        frame_bytes(1, 1, method_payload("basic.publish", exchange="", routing_key="trickled"))
        + frame_bytes(2, 1, content_header_payload(5)) + frame_bytes(3, 1, b"hello") for _ in range(100))
    cut = 0
    with ctx.measuring():
        socks = [sock(i) for i in range(200)]
        pos = 0
        while ctx.until_done():
            for k, item in enumerate(socks):
                s, data, p = item
                try:
                    if p < len(data) - 1:
                        s.send(data[p:p + 1])
                        item[2] = p + 1
                    if s.recv(65536) == b"":
                        raise ConnectionResetError
                except BlockingIOError:
                    pass
                except OSError:
                    s.close()
                    cut += 1
                    socks[k] = sock(k)
            if pos < len(trickle):
                slow.send_raw(trickle[pos:pos + 1])
                pos += 1
            time.sleep(0.05)
        for item in socks:
            item[0].close()
    slow.close()
    ctx.info.update(cut_off=cut, trickled_bytes=pos)


def garbage(ctx):
    """Other protocols and random bytes in place of AMQP on fresh connections, as fast as one
    client goes; and a connection that keeps sending 256 KiB chunks of junk after a frame error."""
    from test_garbage import TLS_HELLO
    rng = random.Random(7)
    host, port = ctx.srv.host, ctx.srv.port
    junk = os.urandom(256 * 1024)
    sent = [0]

    def broken():
        c = ctx.amqp(channel=False)
        c.sock.sendall(BAD_FRAME_END)
        c.sock.settimeout(0.5)
        return c

    def blaster():
        c = broken()
        while ctx.until_done():
            try:
                sent[0] += c.sock.send(junk)
            except socket.timeout:
                pass
            except OSError:
                c.close()
                c = broken()
        c.close()
    n = 0
    with ctx.measuring():
        th = threading.Thread(target=blaster)
        th.start()
        while ctx.until_done():
            kind = n % 4
            data = (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", TLS_HELLO, b"\x00" * 64,
                    HEADER + bytes(rng.randrange(256) for _ in range(rng.randint(1, 300))))[kind]
            try:
                s = socket.create_connection((host, port), timeout=3)
                s.sendall(data)
                while s.recv(65536):
                    pass
            except OSError:
                pass
            finally:
                s.close()
            n += 1
        th.join()
    ctx.info.update(connections=n, junk_mib=round(sent[0] / 2 ** 20, 1))


# ------------------------------------------------------------------------------- attacks: floods
def non_reader(ctx):
    """A consumer (manual ack, no prefetch limit, 4 KiB receive buffer) that never reads, while
    3,000 messages of 64 KiB (192 MiB) are published to its queue with confirms, spread over the
    attack's duration; then it leaves (what it held is requeued)."""
    n = ctx.size(3000, 500)
    lazy = ctx.amqp()
    lazy.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    lazy.call(1, "queue.declare", "queue.declare-ok", queue="stuck")
    lazy.call(1, "basic.consume", "basic.consume-ok", queue="stuck", consumer_tag="never-reads")
    pub = ctx.amqp()
    pub.call(1, "confirm.select", "confirm.select-ok")
    body = b"y" * (64 * 1024)
    base = rss(ctx.srv.proc.pid)
    peak = base
    with ctx.measuring():
        confirmed = 0
        for i in range(0, n, 50):
            for _ in range(50):
                pub.publish(1, "", "stuck", body)
            while confirmed < i + 50:          # acks may be multiple
                confirmed = pub.expect_method("basic.ack", timeout=60)["delivery_tag"]
            peak = max(peak, rss(ctx.srv.proc.pid))
            time.sleep(max(0.0, ctx.t0 + ctx.a.duration * (i + 50) / n - time.monotonic()))   # spread
        lazy.close()
        left = pub.call(1, "queue.declare", "queue.declare-ok", queue="stuck", passive=True)["message_count"]
    pub.close()
    ctx.info.update(published_mib=n // 16, rss_growth_mib=round((peak - base) / 2 ** 20), requeued=left)


def big_messages(ctx):
    """A publisher sends 1 MiB messages as fast as the broker takes them, to a queue that keeps
    the last 20 (x-max-length)."""
    c = ctx.amqp()
    c.call(1, "queue.declare", "queue.declare-ok", queue="big", arguments={"x-max-length": 20})
    body = os.urandom(1 << 20)
    n = 0
    with ctx.measuring():
        while ctx.until_done():
            c.publish(1, "", "big", body)
            n += 1
        c.call(1, "basic.qos", "basic.qos-ok", prefetch_count=0)
    c.close()
    ctx.info["published_mib"] = n


# ------------------------------------------------------------------------------- the attacks
# name -> (class, function, server options: (extra args, env) or a function of the options giving them)
ATTACKS = {
    "regex-listing": ("regex", _regex("listing"), None),
    "regex-policy": ("regex", _regex("policy"), None),
    "regex-permission": ("regex", _regex("permission"), None),
    "regex-topic-permission": ("regex", _regex("topic"), None),
    "policy-apply": ("regex", _regex("apply"), None),
    "idle-queues": ("baseline", _regex("idle"), None),
    "topic-hash": ("routing", topic_hash, None),
    "headers-bindings": ("routing", headers_bindings, None),
    "dlx-chain": ("chains", dlx_chain, None),
    "dlx-ring": ("chains", dlx_ring, None),
    "autodelete-chain": ("chains", autodelete_chain, None),
    "consumers": ("scale", consumers, None),
    "list-queues": ("management", list_queues, None),
    "definitions-import": ("management", definitions_import, None),
    "poison": ("poison", poison, None),
    "memory-alarm": ("memory", memory_alarm, _memory_alarm_server),
    "mass-expiry": ("expiry", mass_expiry, None),
    "connection-flood": ("connections", connection_flood, None),
    "slowloris": ("connections", slowloris, (["--handshake-timeout", "2000"], None)),
    "garbage": ("connections", garbage, None),
    "non-reader": ("floods", non_reader, None),
    "big-messages": ("floods", big_messages, None),
}


def verdict(name, row):
    if not row.get("finished"):
        return "FAIL (did not finish)"
    s = row.get("bystander") or {}
    if not s:
        return "no figures (the attack failed)" if row.get("error") else "no figures"
    if s.get("closed"):
        return "FAIL (bystander closed)"
    if name == "memory-alarm":
        clear = row["info"].get("clear_s")
        return "ok (alarm)" if clear is not None and clear < ALARM_CLEAR_S else "FAIL (alarm)"
    if not s.get("count") or s.get("lost"):
        return "FAIL (lost)"
    return "ok" if s["p99_ms"] < TARGET_P99_MS else "FAIL (p99)"


def run_attack(name, a) -> dict:
    cls, fn, server = ATTACKS[name]
    extra, env = (server(a) if callable(server) else server) or ([], None)
    srv, t = start_server(extra, env)
    ctx = Ctx(srv, t, a)
    out = {}

    def body():
        try:
            fn(ctx)
        except Exception as e:  # noqa: BLE001 - a broker that gave up on the attacker is a result
            out["error"] = f"{type(e).__name__}: {e}"[:300]
    th = threading.Thread(target=body, daemon=True)
    t0 = time.monotonic()
    th.start()
    th.join(a.limit)
    finished = not th.is_alive()
    try:
        if not finished and ctx.bystander is not None and ctx.stats is None:
            ctx.stats = ctx.bystander.ask("stats", timeout=5)
            ctx.seconds = round(time.monotonic() - ctx.t0, 2)
            ctx.bystander.close()
        alive = srv.proc.poll() is None
        log = "".join(srv.lines)
        tracebacks = log.count("Traceback")
        warnings = [ln.strip()[:200] for ln in srv.lines if "WARNING" in ln or "ERROR" in ln]
    finally:
        if finished:
            srv.stop()
        else:
            srv.kill()
        srv.cleanup()
    if not finished and ctx.bystander is not None:
        ctx.bystander.close()
    row = {"class": cls, "attack": name, "quick": a.quick, "bystander": ctx.stats, "attack_s": ctx.seconds,
           "total_s": round(time.monotonic() - t0, 1), "finished": finished, "server_alive": alive,
           "server_tracebacks": tracebacks,
           "server_warnings": warnings[:5], "info": ctx.info, "error": out.get("error"),
           "loadavg": os.getloadavg()[0]}
    row["verdict"] = verdict(name, row)
    return row


def table(rows) -> str:
    out = ["| class | attack | count | p50 ms | p99 ms | max ms | lost | closed | attack s | verdict (p99 < 50 ms) "
           "| notes |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s = r["bystander"] or {}
        notes = ", ".join(f"{k}={v}" for k, v in r["info"].items())
        if r.get("error"):
            notes += f"; error: {r['error']}"
        if r["server_tracebacks"]:
            notes += f"; {r['server_tracebacks']} tracebacks in the server log"
        out.append(f"| {r['class']} | {r['attack']} | {s.get('count', '-')} | {s.get('p50_ms', '-')} | "
                   f"{s.get('p99_ms', '-')} | {s.get('max_ms', '-')} | {s.get('lost', '-')} | "
                   f"{s.get('closed', '-')} | {r['attack_s']} | {r['verdict']} | {notes} |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--attacks", default=",".join(ATTACKS), help="comma-separated names (see --list)")
    ap.add_argument("--quick", action="store_true", help="smaller sizes and 3 s of attack each (smoke run)")
    ap.add_argument("--duration", type=float, help="seconds of attack rounds (default 12, 3 with --quick)")
    ap.add_argument("--limit", type=float, help="seconds an attack may run before the server is killed "
                                                "(default 120, 60 with --quick)")
    ap.add_argument("--json", metavar="FILE", help="append one JSON line per attack to FILE")
    ap.add_argument("--list", action="store_true", help="list the attacks and exit")
    a = ap.parse_args()
    if a.list:
        for name, (cls, fn, _s) in ATTACKS.items():
            print(f"{cls:12} {name:24} {' '.join((fn.__doc__ or '').split())}")
        return
    a.duration = a.duration or (3.0 if a.quick else 12.0)
    a.limit = a.limit or (60.0 if a.quick else 120.0)
    names = [n for n in a.attacks.split(",") if n]
    unknown = [n for n in names if n not in ATTACKS]
    if unknown:
        ap.error(f"unknown attacks: {', '.join(unknown)} (see --list)")
    rows = []
    print(f"# abuse benchmark ({'quick' if a.quick else 'full'}), load average at start "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    for name in names:
        row = run_attack(name, a)
        rows.append(row)
        print(json.dumps(row), flush=True)
        if a.json:
            with open(a.json, "a") as f:
                f.write(json.dumps(row) + "\n")
    print(f"\nload average at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    print(table(rows))


if __name__ == "__main__":
    main()
