"""Helpers for the abuse tests: the server's memory and descriptors, and a well-behaved client's check."""
from __future__ import annotations

import os
import time

import pika


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def well_behaved(srv, n: int = 200, queue: str | None = None, size: int = 100) -> float:
    """A normal pika client publishes n messages with confirms and consumes them all back.
    Returns the time it took; fails if anything is lost."""
    t0 = time.monotonic()
    conn = pika.BlockingConnection(pika.ConnectionParameters(srv.host, srv.port, socket_timeout=10,
                                                             blocked_connection_timeout=30))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        q = ch.queue_declare(queue or "", exclusive=queue is None).method.queue
        for i in range(n):
            ch.basic_publish("", q, b"%d " % i + b"x" * size)
        got = []
        for method, _p, body in ch.consume(q, inactivity_timeout=10):
            if method is None:
                break
            got.append(int(body.split(b" ", 1)[0]))
            ch.basic_ack(method.delivery_tag)
            if len(got) == n:
                break
        ch.cancel()
        assert sorted(got) == list(range(n)), f"well-behaved client got {len(got)} of {n}"
    finally:
        if conn.is_open:
            conn.close()
    return time.monotonic() - t0


def assert_healthy(srv):
    assert srv.proc.poll() is None, "server exited:\n" + "".join(srv.lines[-50:])
    log = "".join(srv.lines)
    for bad in ("Traceback", "internal error", "Exception in callback", "Fatal error"):
        assert bad not in log, f"server log has {bad!r}:\n{log[-4000:]}"
