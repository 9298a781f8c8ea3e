"""A million messages expiring together cost a bystander milliseconds, not a stall: expiry does a
bounded amount of work per loop turn (core/expiry.py), in memory and in paged-out segments alike."""
from __future__ import annotations

import time

import pytest

from abuseutil import assert_healthy, fill_expiring
from rawamqp import RawConnection
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
    deadline = time.time() + fill_s
    fill_expiring(pub, "mass", n, deadline, check=lambda: declared(pub, "mass"))
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
