"""Garbage: other protocols and random bytes instead of AMQP, garbage after the protocol header,
and a client that goes on sending after its stream broke. The server answers as RabbitMQ does (its
protocol header, or a frame error), frees what the connection held, and serves others."""
from __future__ import annotations

import os
import random
import socket
import struct
import time

import pytest

from abuseutil import assert_healthy, fds, rss, well_behaved
from rawamqp import RawConnection, close_summary
from support.harness import wait_for

pytestmark = pytest.mark.timeout(120)

HEADER = b"AMQP\x00\x00\x09\x01"
TLS_HELLO = bytes.fromhex("16030100a5010000a10303") + os.urandom(32) + b"\x00\x00\x02\x13\x01\x01\x00"


def _exchange(srv, data: bytes, timeout=3.0) -> bytes:
    s = socket.create_connection((srv.host, srv.port), timeout=timeout)
    try:
        s.sendall(data)
        out = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        s.close()


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    TLS_HELLO,
    b"AMQP\x00\x00\x08\x00",
    b"AMQP\x01\x01\x00\x0a",
    b"\x00" * 64,
    b"SSH-2.0-OpenSSH_9.0\r\n",
], ids=["http", "tls-hello", "amqp-0-8", "amqp-1-0", "zeros", "ssh"])
def test_other_protocols_get_our_header(fresh_server_once, data):
    srv = fresh_server_once
    assert _exchange(srv, data) == HEADER
    well_behaved(srv, 5)


@pytest.fixture(scope="module")
def fresh_server_once():
    from support.harness import ServerProcess
    s = ServerProcess().start()
    yield s
    assert_healthy(s)
    s.cleanup()


def test_random_garbage_after_the_header(fresh_server_once):
    srv = fresh_server_once
    rng = random.Random(7)
    base = fds(srv.proc.pid)
    for i in range(300):
        junk = bytes(rng.randrange(256) for _ in range(rng.randint(1, 300)))
        s = socket.create_connection((srv.host, srv.port), timeout=5)
        s.sendall(HEADER + junk)
        s.settimeout(3)
        try:
            while s.recv(65536):
                pass
        except (socket.timeout, ConnectionResetError):
            pass
        s.close()
        if i % 50 == 0:
            well_behaved(srv, 5)
    wait_for(lambda: fds(srv.proc.pid) <= base + 3, message="descriptors released")


def test_garbage_after_open_gets_a_frame_error(fresh_server_once):
    srv = fresh_server_once
    c = RawConnection.opened(srv.host, srv.port)
    c.open_channel(1)
    c.send_raw(b"\x01\x00\x01\x00\x00\x00\x05hello\x00")       # bad frame end
    code, text, _cls, _m = close_summary(c.expect_connection_close())
    assert code == 501 and "invalid_frame_end_marker" in text
    c.close()


def test_sending_on_after_the_stream_broke_does_not_grow_the_server(fresh_server):
    """Regression: each read after a frame error re-raised the stored error, chaining a traceback
    that kept every chunk read alive until the connection was dropped (hundreds of MB in 3 s)."""
    srv = fresh_server()
    pid = srv.proc.pid
    c = RawConnection.opened(srv.host, srv.port)
    base = rss(pid)
    c.sock.sendall(b"\x01\x00\x00\x00\x00\x00\x04\x00\x0a\x00\x33\x00")   # bad frame end: frame error
    c.sock.setblocking(False)
    junk = os.urandom(256 * 1024)
    sent = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < 2.5:
        try:
            sent += c.sock.send(junk)
        except BlockingIOError:
            time.sleep(0.01)
        except OSError:
            break
    grown = (rss(pid) - base) / 2 ** 20
    c.close()
    assert grown < 40, f"server grew {grown:.0f} MiB while {sent / 2 ** 20:.0f} MiB were sent after the error"
    well_behaved(srv, 10)
    assert_healthy(srv)


def test_sending_on_after_the_stream_broke_in_process():
    from usagi.amqp.frames import PROTOCOL_HEADER
    from usagi.core.broker import Broker
    from usagi.core.connection import Connection
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tools"))
    from fuzz_long import FakeTransport
    b = Broker()
    b.bootstrap()
    conn = Connection(b, FakeTransport(), ("127.0.0.1", 1), ("127.0.0.1", 2))
    conn.connection_made()
    conn.data_received(PROTOCOL_HEADER + b"\x01\x00\x00\x00\x00\x00\x04\x00\x0a\x00\x33\x00")
    err = conn.reader.error
    assert err is not None and conn.closed
    conn.closed = False            # as if the socket were still being read (the closing state)
    for _ in range(100):
        conn.data_received(b"x" * 1000)
    depth = 0
    tb = err.__traceback__
    while tb is not None:
        depth += 1
        tb = tb.tb_next
    assert depth < 20


def test_oversized_frame_declared_before_tune(fresh_server_once):
    srv = fresh_server_once
    c = RawConnection.open_to(srv.host, srv.port)
    c.expect_method("connection.start")
    c.send_raw(struct.pack(">BHI", 1, 0, 2 ** 31) + b"\x00" * 100)
    assert c.is_closed_by_peer(5)
    c.close()
