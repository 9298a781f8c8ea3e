"""A consumer that never reads: its deliveries stop at the write buffer's high-water mark instead of
piling up in the server, long queues page out, server memory stays bounded, others are served, and
when it goes away every message it held comes back: nothing is lost."""
from __future__ import annotations

import socket
import time

import pika
import pytest

from abuseutil import assert_healthy, rss, well_behaved
from rawamqp import RawConnection
from support.harness import wait_for

pytestmark = pytest.mark.timeout(240)

BODY = 64 * 1024
COUNT = 3000            # 3000 x 64 KiB = 192 MiB through a consumer that reads nothing


def test_consumer_that_never_reads(fresh_server):
    srv = fresh_server()
    pid = srv.proc.pid
    setup = pika.BlockingConnection(pika.URLParameters(srv.url()))
    sch = setup.channel()
    sch.queue_declare("stuck", durable=False)
    setup.close()
    # the non-reader: manual acks, no prefetch limit, a tiny receive buffer, and it never reads
    lazy = RawConnection.opened(srv.host, srv.port)
    lazy.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    lazy.open_channel(1)
    lazy.call(1, "basic.consume", "basic.consume-ok", queue="stuck", consumer_tag="never-reads")
    well_behaved(srv, 50)
    base = rss(pid)
    peak = base
    conn = pika.BlockingConnection(pika.URLParameters(srv.url()))
    ch = conn.channel()
    ch.confirm_delivery()
    body = b"y" * BODY
    for i in range(COUNT):
        ch.basic_publish("", "stuck", b"%06d" % i + body)
        if i % 250 == 0:
            peak = max(peak, rss(pid))
            assert well_behaved(srv, 5) < 10          # others keep being served
    conn.close()
    time.sleep(1.5)
    peak = max(peak, rss(pid))
    published_mb = COUNT * BODY / 2 ** 20
    grown_mb = (peak - base) / 2 ** 20
    # the queue keeps at most its in-memory budget (32 MiB) and the stuck socket about 1 MiB
    assert grown_mb < 110, f"server grew {grown_mb:.0f} MiB for {published_mb:.0f} MiB published"
    # the non-reader leaves: what it held is requeued; a normal consumer gets every message once
    lazy.close()
    conn = pika.BlockingConnection(pika.URLParameters(srv.url()))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=200)
    seen = set()
    for method, _p, b in ch.consume("stuck", inactivity_timeout=10):
        if method is None:
            break
        seen.add(int(b[:6]))
        ch.basic_ack(method.delivery_tag)
        if len(seen) == COUNT:
            break
    ch.cancel()
    assert len(seen) == COUNT, f"{COUNT - len(seen)} messages lost"
    assert ch.queue_declare("stuck", passive=True).method.message_count == 0
    conn.close()
    assert_healthy(srv)
    print(f"published {published_mb:.0f} MiB past a non-reading consumer; server grew {grown_mb:.0f} MiB")


def test_publisher_that_never_reads_confirms(fresh_server):
    """Confirms and returns for a client that never reads go to its socket until the hard limit, then
    the server stops reading from it; other clients are served; memory stays bounded."""
    srv = fresh_server()
    pid = srv.proc.pid
    base = rss(pid)
    lazy = RawConnection.opened(srv.host, srv.port)
    lazy.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    lazy.open_channel(1)
    lazy.call(1, "confirm.select", "confirm.select-ok")
    from rawamqp import frame_bytes, method_payload
    import struct
    # mandatory publishes to nowhere: each one earns a basic.return with the body, and an ack
    pub = (frame_bytes(1, 1, method_payload("basic.publish", exchange="", routing_key="nowhere", mandatory=True))
           + frame_bytes(2, 1, struct.pack(">HHQ", 60, 0, 1000) + b"\x00\x00") + frame_bytes(3, 1, b"z" * 1000))
    lazy.sock.setblocking(False)
    sent = 0
    t0 = time.monotonic()
    chunk = pub * 100
    while time.monotonic() - t0 < 8:
        try:
            sent += lazy.sock.send(chunk[sent % len(chunk):])
        except BlockingIOError:
            time.sleep(0.05)       # the server stopped reading from us
    grown = (rss(pid) - base) / 2 ** 20
    assert well_behaved(srv, 20) < 10
    assert grown < 150, f"server grew {grown:.0f} MiB"
    lazy.close()
    wait_for(lambda: well_behaved(srv, 5) < 10, message="served after")
    assert_healthy(srv)
