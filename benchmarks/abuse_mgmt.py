#!/usr/bin/env python3
"""What management work whose size users control costs everyone else: a bystander's
publish-to-delivery latency while the management API lists, imports, parses and exports at scale.

    python benchmarks/abuse_mgmt.py                               # every attack
    python benchmarks/abuse_mgmt.py --attacks listing,metrics --queues 50000
    python benchmarks/abuse_mgmt.py --attacks import --import-queues 200000

Attacks (each on a fresh Usagi server):
  listing   --queues queues (a fifth of them bound to amq.direct): GET /api/queues whole, a sorted
            page, a name-filtered page, /api/bindings, /api/definitions
  import    POST /api/definitions of --import-queues durable queues (answered after the commit)
  bodies    three bodies of ~19 MB (just under the 20 MB cap) parsed at once, then three
            30 MB Content-Lengths refused (413) before their bodies are sent
  metrics   --queues queues with a statistics sample every second: the sampler alone for a few
            seconds, then /metrics, /metrics/per-object and /api/overview

For each: the bystander's p50/p99/max latency (ms), its deliveries and losses while the attack ran,
and how long the attack took. The machine's load average is printed with each line: the figures
are only as quiet as the machine.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import re
import socket
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

from rawamqp import RawConnection, frame_bytes, method_payload  # noqa: E402
from support.bystander import Bystander  # noqa: E402
from support.harness import ServerProcess, wait_for  # noqa: E402

AUTH = "Basic " + base64.b64encode(b"guest:guest").decode()


def http(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
         send_body: bool = True, timeout: float = 600):
    """One request on a socket of its own; (status, body length). The body is read and dropped."""
    h = {"Host": f"127.0.0.1:{port}", "Authorization": AUTH, "Connection": "close"}
    if body is not None:
        h["Content-Type"] = "application/json"
        h["Content-Length"] = str(len(body))
    h.update(headers or {})
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall((f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items())
                   + "\r\n").encode() + (body if body is not None and send_body else b""))
        data = bytearray()
        while True:
            d = s.recv(1 << 20)
            if not d:
                break
            data += d
    finally:
        s.close()
    head, _, rest = bytes(data).partition(b"\r\n\r\n")
    return int(head.split()[1]), len(rest)


def declare(srv, names, bind_every: int = 0):
    c = RawConnection.opened(srv.host, srv.port)
    c.open_channel(1)
    for start in range(0, len(names), 2000):
        part = names[start:start + 2000]
        frames = []
        for i, n in enumerate(part, start):
            frames.append(frame_bytes(1, 1, method_payload("queue.declare", queue=n)))
            if bind_every and i % bind_every == 0:
                frames.append(frame_bytes(1, 1, method_payload("queue.bind", queue=n, exchange="amq.direct",
                                                               routing_key=n)))
        c.send_raw(b"".join(frames))
        for i, _n in enumerate(part, start):
            c.expect_method("queue.declare-ok", timeout=120)
            if bind_every and i % bind_every == 0:
                c.expect_method("queue.bind-ok", timeout=120)
    c.close_connection()


def ports(srv):
    text = lambda: "".join(srv.lines)  # noqa: E731
    m = wait_for(lambda: re.search(r"Management listener on \S+:(\d+)", text()), message="management")
    x = wait_for(lambda: re.search(r"Metrics listener on \S+:(\d+)", text()), message="metrics")
    return int(m.group(1)), int(x.group(1))


def measure(srv, label: str, fn):
    with Bystander(srv.host, srv.port) as b:
        time.sleep(0.5)
        b.reset()
        t0 = time.monotonic()
        result = fn()
        took = time.monotonic() - t0
        s = b.stats()
    load = os.getloadavg()[0]
    print(f"{label:44s} p50 {s['p50_ms']!s:>7} ms  p99 {s['p99_ms']!s:>7} ms  max {s['max_ms']!s:>8} ms  "
          f"n={s['count']:<5} lost={s['lost']} closed={s['closed']}  took {took:6.2f} s  load {load:.2f}  "
          f"-> {result}", flush=True)


def attack_listing(args):
    srv = ServerProcess().start()
    try:
        names = [f"bq.{i:06d}" for i in range(args.queues)]
        t0 = time.monotonic()
        declare(srv, names, bind_every=5)
        print(f"# {args.queues} queues declared in {time.monotonic() - t0:.1f} s", flush=True)
        mport, _ = ports(srv)
        measure(srv, "listing: none (idle, the queues only)", lambda: time.sleep(3))
        for path in ("/api/queues", "/api/queues?page=1&page_size=100&sort=messages&sort_reverse=true",
                     "/api/queues?page=2&page_size=500&name=bq.00", "/api/bindings", "/api/definitions"):
            measure(srv, f"listing GET {path[:34]}", lambda: http(mport, "GET", path))
    finally:
        srv.cleanup()


def attack_import(args):
    srv = ServerProcess().start()
    try:
        mport, _ = ports(srv)
        defs = {"queues": [{"name": f"iq.{i:06d}", "vhost": "/", "durable": True, "auto_delete": False,
                            "arguments": {}} for i in range(args.import_queues)]}
        body = json.dumps(defs).encode()
        print(f"# import of {args.import_queues} queues: {len(body)} bytes", flush=True)
        measure(srv, f"import POST /api/definitions ({args.import_queues} q)",
                lambda: http(mport, "POST", "/api/definitions", body))
        measure(srv, "after import: GET /api/overview", lambda: http(mport, "GET", "/api/overview"))
    finally:
        srv.cleanup()


def attack_bodies(args):
    srv = ServerProcess().start()
    try:
        mport, _ = ports(srv)
        pad = [{"k": i, "v": "x" * 190} for i in range(90_000)]     # (at most 100,000 objects in a body)
        body = json.dumps({"durable": False, "padding": pad}).encode()

        def three(send_body: bool, size: int | None = None):
            out = [None] * 3

            def one(i):
                h = {"Content-Length": str(size)} if size else None
                out[i] = http(mport, "PUT", f"/api/queues/%2F/big{i}", body, headers=h, send_body=send_body)[0]
            ts = [threading.Thread(target=one, args=(i,)) for i in range(3)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            return out
        measure(srv, f"bodies 3 x {len(body) / 1e6:.1f} MB parsed at once", lambda: three(True))
        measure(srv, "bodies 3 x 30 MB Content-Length (413)", lambda: three(False, 30_000_000))
    finally:
        srv.cleanup()


def attack_metrics(args):
    srv = ServerProcess(env={"USAGI_COLLECT_STATISTICS_INTERVAL": "1000"}).start()
    try:
        declare(srv, [f"mq.{i:06d}" for i in range(args.queues)])
        mport, xport = ports(srv)
        measure(srv, "statistics sampler alone (5 s)", lambda: time.sleep(5))
        for port, path in ((xport, "/metrics"), (xport, "/metrics/per-object"),
                           (xport, "/metrics/detailed?family=queue_metrics"), (mport, "/api/overview")):
            measure(srv, f"metrics GET {path}", lambda: http(port, "GET", path))
    finally:
        srv.cleanup()


ATTACKS = {"listing": attack_listing, "import": attack_import, "bodies": attack_bodies, "metrics": attack_metrics}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--attacks", default=",".join(ATTACKS))
    p.add_argument("--queues", type=int, default=100_000)
    p.add_argument("--import-queues", type=int, default=200_000)
    args = p.parse_args()
    print(f"# cpus {os.cpu_count()}, load {os.getloadavg()}", flush=True)
    for name in args.attacks.split(","):
        ATTACKS[name](args)


if __name__ == "__main__":
    main()
