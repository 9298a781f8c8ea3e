"""Helpers for the abuse tests: the server's memory and descriptors, and a well-behaved client's check."""
from __future__ import annotations

import os
import time

import pika

from rawamqp import FRAME_BODY, FRAME_HEADER, FRAME_METHOD, content_header_payload, frame_bytes, method_payload


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


def fill_expiring(conn, queue: str, n: int, deadline: float, body: bytes = b"0123456789abcdef",
                  check=None) -> int:
    """Publish n messages to `queue` on channel 1 of a raw connection, each with a per-message
    expiration that makes it fall due at the wall-clock `deadline` (100 ms buckets), 1,000 a write;
    `check()` is called every 50,000 (a round trip, to pace the fill). Returns n."""
    head = frame_bytes(FRAME_METHOD, 1, method_payload("basic.publish", exchange="", routing_key=queue))
    tail = frame_bytes(FRAME_BODY, 1, body)
    sent = 0
    while sent < n:
        exp = max(1, int((deadline - time.time()) * 10 + 1) * 100)
        one = head + frame_bytes(FRAME_HEADER, 1, content_header_payload(len(body), {"expiration": str(exp)})) + tail
        conn.send_raw(one * 1000)
        sent += 1000
        if check is not None and sent % 50000 == 0:
            check()
    return sent
