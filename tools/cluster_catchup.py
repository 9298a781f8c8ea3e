#!/usr/bin/env python3
"""A follower's catch-up: how long a node that was down takes to be back in the in-sync set, and
what its catch-up costs the clients of the leader meanwhile.

    python tools/cluster_catchup.py                          # 100,000 persistent 1 KiB messages
    python tools/cluster_catchup.py --messages 20000 --rate 500
    python tools/cluster_catchup.py --catchup-rate 0            # the catch-up unpaced

A 3-node cluster (3 etcd members) serves a steady publisher (a process of its own): persistent
messages with confirms at --rate per second to a quorum queue with a consumer, each publish's
confirm latency recorded.
Phases:

1. normal: --normal seconds of the steady publisher alone: its p50/p99 confirm latency;
2. one follower is stopped (kill -9), and --messages persistent messages of --size bytes are
   published with confirms to a second queue (left queued: the follower must fetch them), by a
   process of its own; then --settle seconds pass;
3. the follower is started again: the time until the leader's ISR names it again, and the
   steady publisher's latency while it catches up (from its start to its return to the ISR,
   and at least 2 s).

Prints the catch-up time and p99 during catch-up / p99 normal (the targets: back within 30 s,
the ratio at most 2). Exit status 1 if the follower is not back within --timeout seconds.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "cluster"))
sys.path.insert(0, REPO)

import aio_pika  # noqa: E402

from harness import Cluster  # noqa: E402


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


class Steady:
    """Publishes at a fixed rate with confirms; (sent, latency) of each confirmed publish."""

    def __init__(self, url, queue, rate, size):
        self.url, self.queue, self.rate, self.size = url, queue, rate, size
        self.samples: list = []
        self.errors = 0
        self.stopping = False

    async def run(self):
        conn = await aio_pika.connect(self.url)
        ch = await conn.channel(publisher_confirms=True)
        q = await ch.declare_queue(self.queue, durable=True, arguments={"x-queue-type": "quorum"})
        await q.consume(lambda m: m.ack())           # the steady queue stays short
        body = b"s" * self.size
        pending = set()
        t0 = time.monotonic()
        n = 0
        while not self.stopping:
            n += 1
            due = t0 + n / self.rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            pending.add(asyncio.ensure_future(self._one(ch, body)))
            pending = {p for p in pending if not p.done()}
        if pending:
            await asyncio.wait(pending, timeout=30)
        await conn.close()

    async def _one(self, ch, body):
        sent = time.monotonic()
        try:
            await ch.default_exchange.publish(aio_pika.Message(body, delivery_mode=2), routing_key=self.queue,
                                              timeout=30)
            self.samples.append((sent, time.monotonic() - sent))
        except Exception:  # noqa: BLE001 - counted; the run goes on
            self.errors += 1

    def between(self, a, b):
        return [lat for s, lat in self.samples if a <= s < b]


class SteadyProcess:
    """The steady publisher in a process of its own, so that what this process does meanwhile
    (polling etcd for the ISR, reading the nodes' logs) never holds it up: its samples are the
    leader's latency only. Time stamps are CLOCK_MONOTONIC, the same in both processes."""

    def __init__(self, url, rate, size):
        fd, self.path = tempfile.mkstemp(prefix="catchup-steady-", suffix=".json")
        os.close(fd)
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--steady", url, "--rate", str(rate),
                                      "--size", str(size), "--samples-out", self.path])
        self.samples: list = []
        self.errors = 0

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        if self.proc.wait(60) != 0:
            raise RuntimeError(f"the steady publisher failed (exit status {self.proc.returncode})")
        with open(self.path) as f:
            got = json.load(f)
        os.unlink(self.path)
        self.samples, self.errors = [tuple(x) for x in got["samples"]], got["errors"]

    between = Steady.between

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if os.path.exists(self.path):
            os.unlink(self.path)


def run_steady(url, rate, size, out):
    """--steady: publish until SIGTERM, then write the samples to `out`."""
    steady = Steady(url, "catchup-steady", rate, size)
    loop = asyncio.new_event_loop()
    loop.add_signal_handler(signal.SIGTERM, lambda: setattr(steady, "stopping", True))
    loop.run_until_complete(steady.run())
    with open(out, "w") as f:
        json.dump({"samples": steady.samples, "errors": steady.errors}, f)


async def backlog(url, queue, n, size, window=500):
    conn = await aio_pika.connect(url)
    ch = await conn.channel(publisher_confirms=True)
    await ch.declare_queue(queue, durable=True, arguments={"x-queue-type": "quorum"})
    body = b"b" * size
    sem = asyncio.Semaphore(window)

    async def one():
        try:
            await ch.default_exchange.publish(aio_pika.Message(body, delivery_mode=2), routing_key=queue,
                                              timeout=60)
        finally:
            sem.release()
    tasks = []
    for _ in range(n):
        await sem.acquire()
        tasks.append(asyncio.ensure_future(one()))
    await asyncio.gather(*tasks)
    await conn.close()


async def publish_backlog(url, n, size):
    """The backlog, published by a process of its own: in this one it would hold up the steady
    publisher's event loop (up to 400 ms at a time, measured), and that wait would be counted as
    the leader's latency."""
    proc = await asyncio.create_subprocess_exec(sys.executable, os.path.abspath(__file__), "--publish-backlog", url,
                                                "--messages", str(n), "--size", str(size))
    if await proc.wait() != 0:
        raise RuntimeError(f"the backlog's publisher failed (exit status {proc.returncode})")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=100_000)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--rate", type=float, default=1000, help="steady publishes per second (default 1000)")
    p.add_argument("--normal", type=float, default=20, help="seconds of the normal phase (default 20)")
    p.add_argument("--ttl", type=int, default=5, help="lease TTL of the nodes (default 5)")
    p.add_argument("--timeout", type=float, default=120)
    p.add_argument("--catchup-rate", default=None,
                   help="the nodes' --cluster-catchup-rate in MiB/s (default: the server's default)")
    p.add_argument("--settle", type=float, default=1.0,
                   help="seconds between the backlog's last confirm and the follower's start (default 1), so "
                        "that the backlog's own last writes are not counted as the catch-up's cost")
    p.add_argument("--out", default=None, help="append the result as one JSON line to this file")
    p.add_argument("--publish-backlog", metavar="URL", help=argparse.SUPPRESS)
    p.add_argument("--steady", metavar="URL", help=argparse.SUPPRESS)
    p.add_argument("--samples-out", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.steady:
        run_steady(a.steady, a.rate, a.size, a.samples_out)
        return 0
    if a.publish_backlog:
        # the backlog's publisher, in a process of its own (see publish_backlog)
        asyncio.run(backlog(a.publish_backlog, "catchup-backlog", a.messages, a.size))
        return 0
    extra = ["--cluster-catchup-rate", a.catchup_rate] if a.catchup_rate is not None else []
    c = Cluster(3, etcd_members=3, ttl=a.ttl, extra_args=extra).start()
    cleanups: list = []
    try:
        leader = c.wait_leader(30)
        c.wait_isr(3, 60)
        follower = next(n for n in c.nodes if n is not leader)
        fid = None
        steady = SteadyProcess(leader.url(), a.rate, a.size)
        cleanups.append(steady.kill)

        async def go():
            nonlocal fid
            await asyncio.sleep(3)                            # its start, and a warm-up
            t_normal = time.monotonic()
            await asyncio.sleep(a.normal)
            t_normal_end = time.monotonic()
            before = set(c.isr())
            follower.kill()
            t = time.monotonic()
            await asyncio.to_thread(lambda: c.wait_isr_without(before))
            fid = (before - set(c.isr())).pop()
            t_down = time.monotonic()
            await publish_backlog(leader.url(), a.messages, a.size)
            published = time.monotonic() - t_down
            await asyncio.sleep(a.settle)
            t_start = time.monotonic()
            follower.start()
            back = await asyncio.to_thread(c.wait_member, fid, a.timeout)
            t_back = time.monotonic()
            await asyncio.sleep(max(0.0, 2.0 - (t_back - t_start)))
            steady.stop()
            normal = steady.between(t_normal, t_normal_end)
            during = steady.between(t_start, max(t_back, t_start + 2.0))
            return normal, during, back, t_back - t_start, published, t_down - t
        normal, during, back, took, published, dropped = asyncio.run(go())
    finally:
        for f in cleanups:
            f()
        c.cleanup()
    p99n, p99d = pct(normal, 0.99), pct(during, 0.99)
    res = {"messages": a.messages, "size": a.size, "rate": a.rate, "catchup_rate": a.catchup_rate, "settle_s": a.settle,
           "back_in_isr": back,
           "catch_up_s": round(took, 2), "backlog_published_s": round(published, 1),
           "isr_dropped_after_s": round(dropped, 2),
           "normal": {"n": len(normal), "p50_ms": round(pct(normal, 0.5) * 1e3, 2), "p99_ms": round(p99n * 1e3, 2)},
           "catch_up": {"n": len(during), "p50_ms": round(pct(during, 0.5) * 1e3, 2) if during else None,
                        "p99_ms": round(p99d * 1e3, 2) if during else None},
           "p99_ratio": round(p99d / p99n, 2) if during and p99n else None, "errors": steady.errors}
    print(json.dumps(res, indent=1))
    if a.out:
        with open(a.out, "a") as f:
            f.write(json.dumps({"at": time.strftime("%Y-%m-%dT%H:%M:%S"), **res}) + "\n")
    return 0 if back else 1


if __name__ == "__main__":
    sys.exit(main())
