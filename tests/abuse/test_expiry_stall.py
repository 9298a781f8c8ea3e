"""A million messages expiring together cost a bystander milliseconds, not a stall: expiry does a
bounded amount of work per loop turn (core/expiry.py), in memory and in paged-out segments alike."""
from __future__ import annotations

import time

import pytest

from abuseutil import assert_healthy
from rawamqp import (FRAME_BODY, FRAME_HEADER, FRAME_METHOD, RawConnection, content_header_payload,
                     frame_bytes, method_payload)
from support.bystander import Bystander
from support.harness import wait_for

pytestmark = pytest.mark.timeout(600)

P99_MS = 250           # generous: the benchmarks carry the figures (benchmarks/expiry_cost.py)


def declared(conn, queue) -> int:
    return conn.call(1, "queue.declare", "queue.declare-ok", queue=queue, passive=True)["message_count"]


@pytest.mark.parametrize("n, dlx, fill_s", [(1_000_000, False, 60), (200_000, True, 20)],
                         ids=["a-million", "dead-lettered"])
def test_messages_expiring_together_do_not_stall_a_bystander(fresh_server, n, dlx, fill_s):
    """n messages fall due at the same moment (`fill_s` after the fill starts; the fill takes a
    fraction of it), most of them paged out; with `dlx` each is dead-lettered (x-death and all)."""
    srv = fresh_server()
    pub = RawConnection.opened(srv.host, srv.port)
    pub.open_channel(1)
    pub.call(1, "queue.declare", "queue.declare-ok", queue="dead")
    args = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dead"} if dlx else {}
    pub.call(1, "queue.declare", "queue.declare-ok", queue="mass", arguments=args)
    body = b"0123456789abcdef"
    head = frame_bytes(FRAME_METHOD, 1, method_payload("basic.publish", exchange="", routing_key="mass"))
    tail = frame_bytes(FRAME_BODY, 1, body)
    deadline = time.time() + fill_s
    sent = 0
    while sent < n:
        # per-message expiration so that all of them fall due at `deadline` (100 ms buckets)
        exp = max(1, int((deadline - time.time()) * 10 + 1) * 100)
        one = head + frame_bytes(FRAME_HEADER, 1, content_header_payload(len(body), {"expiration": str(exp)})) + tail
        pub.send_raw(one * 1000)
        sent += 1000
        if sent % 50000 == 0:
            declared(pub, "mass")
    assert declared(pub, "mass") == n
    assert time.time() < deadline - 3, "the fill took too long for this test to mean anything"
    with Bystander(srv.host, srv.port) as b:
        time.sleep(max(0.0, deadline - time.time() - 2))
        b.reset()
        wait_for(lambda: declared(pub, "mass") == 0, timeout=180, interval=0.5,
                 message="every message expired")
        if dlx:
            wait_for(lambda: declared(pub, "dead") == n, timeout=180, interval=0.5,
                     message="every message dead-lettered")
        time.sleep(1.0)
    st = b.assert_ok(P99_MS)
    print(f"bystander while {n} messages expired{' and were dead-lettered' if dlx else ''}: {st}")
    pub.close()
    assert_healthy(srv)
