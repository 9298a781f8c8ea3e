"""10,000 connection attempts, sequential and concurrent, fast: TCP connect and close, protocol header
only, full handshakes dropped without a close. The server keeps serving, and descriptors and memory
come back to where they were."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from abuseutil import assert_healthy, fds, rss, well_behaved
from rawamqp import RawConnection
from support.harness import wait_for

pytestmark = pytest.mark.timeout(300)

HEADER = b"AMQP\x00\x00\x09\x01"


def _attempt(host, port, kind: int):
    try:
        s = socket.create_connection((host, port), timeout=10)
    except OSError:
        return False
    try:
        if kind == 1:
            s.sendall(HEADER)
        elif kind == 2:
            s.sendall(HEADER)
            s.recv(4096)
        elif kind == 3:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
    except OSError:
        pass
    finally:
        s.close()
    return True


def test_ten_thousand_connection_attempts(fresh_server):
    srv = fresh_server()
    pid = srv.proc.pid
    well_behaved(srv, 20)
    base_fds = fds(pid)
    base_rss = rss(pid)
    t0 = time.monotonic()
    ok = 0
    # 4,000 sequential
    for i in range(4000):
        ok += _attempt(srv.host, srv.port, i % 4)
    # 6,000 concurrent: 12 threads, each opening and closing as fast as it can
    counts = [0] * 12

    def worker(k):
        for i in range(500):
            counts[k] += _attempt(srv.host, srv.port, (i + k) % 4)
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(12)]
    for t in threads:
        t.start()
    # meanwhile a well-behaved client is served
    while any(t.is_alive() for t in threads):
        assert well_behaved(srv, 20) < 15
    for t in threads:
        t.join()
    ok += sum(counts)
    elapsed = time.monotonic() - t0
    # a few hundred full handshakes, dropped without connection.close
    for i in range(300):
        c = RawConnection.opened(srv.host, srv.port)
        if i % 2:
            c.open_channel(1)
        c.close()
    assert ok >= 9900, f"only {ok} of 10000 attempts connected"
    wait_for(lambda: fds(pid) <= base_fds + 5, timeout=20, message=f"descriptors back near {base_fds}")
    grown = (rss(pid) - base_rss) / 2 ** 20
    assert grown < 30, f"server grew {grown:.0f} MiB"
    well_behaved(srv, 200)
    assert_healthy(srv)
    print(f"10000 attempts in {elapsed:.1f}s; fds {base_fds} -> {fds(pid)}; rss +{grown:.1f} MiB")
