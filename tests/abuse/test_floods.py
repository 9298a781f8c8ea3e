"""Channel and queue floods up to the limits, and field tables deeply nested or as large as a frame:
the limits hold with RabbitMQ's words, nothing else breaks, and other clients are served."""
from __future__ import annotations

import struct

import pytest

from abuseutil import assert_healthy, rss, well_behaved
from rawamqp import RawConnection, close_summary, frame_bytes, method_payload

pytestmark = pytest.mark.timeout(180)


def test_channel_flood_to_channel_max(fresh_server):
    srv = fresh_server(extra_args=["--channel-max", "2047"])
    c = RawConnection.opened(srv.host, srv.port)
    # all 2047 channel.open pipelined in one write
    c.send_raw(b"".join(frame_bytes(1, n, method_payload("channel.open")) for n in range(1, 2048)))
    for n in range(1, 2048):
        f = c.expect_method("channel.open-ok", timeout=20)
        assert f.channel == n
    well_behaved(srv, 20)
    c.send_method(2048, "channel.open")
    assert close_summary(c.expect_connection_close()) == (
        530, "NOT_ALLOWED - number of channels opened (2047) has reached the negotiated channel_max (2047)", 0, 0)
    c.close()
    well_behaved(srv, 20)
    assert_healthy(srv)


def test_queue_flood_to_the_vhost_limit(fresh_server):
    srv = fresh_server()
    from mgmtapi import put_vhost_limit
    put_vhost_limit(srv, "max-queues", 1000)
    c = RawConnection.opened(srv.host, srv.port)
    c.open_channel(1)
    c.send_raw(b"".join(frame_bytes(1, 1, method_payload("queue.declare", queue=f"flood-{i}", auto_delete=False))
                        for i in range(1000)))
    for i in range(1000):
        assert c.expect_method("queue.declare-ok", timeout=20).args["queue"] == f"flood-{i}"
    c.send_method(1, "queue.declare", queue="flood-1000")
    assert close_summary(c.expect_channel_close(1)) == (
        406, "PRECONDITION_FAILED - cannot declare queue 'flood-1000': queue limit in vhost '/' (1000) is reached",
        50, 10)
    c.open_channel(2)
    c.send_raw(b"".join(frame_bytes(1, 2, method_payload("queue.delete", queue=f"flood-{i}")) for i in range(1000)))
    for i in range(1000):
        c.expect_method("queue.delete-ok", timeout=20)
    c.close_connection()
    well_behaved(srv, 20, queue="after-flood")
    assert_healthy(srv)


def nested(depth: int, kind: str = "F") -> bytes:
    """An encoded field value nested `depth` levels deep, innermost an int."""
    v = b"I" + struct.pack(">i", 1)
    for _ in range(depth):
        if kind == "F":
            inner = b"\x01k" + v
            v = b"F" + struct.pack(">I", len(inner)) + inner
        else:
            v = b"A" + struct.pack(">I", len(v)) + v
    return v


def raw_table(entries: list) -> bytes:
    body = b"".join(bytes([len(k)]) + k + v for k, v in entries)
    return struct.pack(">I", len(body)) + body


def publish_with_headers(c, table: bytes, body: bytes = b"hi", queue="tables"):
    props = table          # property flags: headers only
    c.send_raw(frame_bytes(1, 1, method_payload("basic.publish", exchange="", routing_key=queue))
               + frame_bytes(2, 1, struct.pack(">HHQ", 60, 0, len(body)) + b"\x20\x00" + props)
               + frame_bytes(3, 1, body))


def test_nested_and_oversized_tables(fresh_server):
    srv = fresh_server()
    pid = srv.proc.pid
    c = RawConnection.opened(srv.host, srv.port)
    c.open_channel(1)
    c.call(1, "queue.declare", "queue.declare-ok", queue="tables")
    # headers nested 50 deep (tables and arrays) are carried as they came
    for kind in "FA":
        publish_with_headers(c, raw_table([(b"deep", nested(50, kind))]))
        c.send_method(1, "basic.get", queue="tables", no_ack=True)
        c.expect_method("basic.get-ok")
        props, body = c.read_message()
        assert body == b"hi"
    # a header table as large as a frame allows: 120 KiB of entries
    big = raw_table([(b"h%05d" % i, b"S" + struct.pack(">I", 100) + b"v" * 100) for i in range(1000)])
    publish_with_headers(c, big)
    c.send_method(1, "basic.get", queue="tables", no_ack=True)
    c.expect_method("basic.get-ok")
    props, body = c.read_message()
    assert len(props["headers"]) == 1000
    # 130,000 voids in one array, in queue.declare arguments (x- arguments nobody knows are kept)
    arr = b"A" + struct.pack(">I", 130000) + b"V" * 130000
    c.send_raw(frame_bytes(1, 1, method_payload("queue.declare", queue="voids")[:-4] + raw_table([(b"x-voids", arr)])))
    c.expect_method("queue.declare-ok")
    well_behaved(srv, 20)
    c.close_connection()
    # nesting past the decoder's bound (100) where arguments must be read: a syntax error, not a crash
    for kind in "FA":
        c = RawConnection.opened(srv.host, srv.port)
        c.open_channel(1)
        c.send_raw(frame_bytes(1, 1, method_payload("queue.declare", queue="deep")[:-4]
                               + raw_table([(b"x-deep", nested(5000 if kind == "A" else 3000, kind))])))
        code, text, cls, mid = close_summary(c.expect_connection_close())
        assert code in (501, 502), text
        c.close()
    # a table whose lengths lie: declared far past the frame
    c = RawConnection.opened(srv.host, srv.port)
    c.open_channel(1)
    c.send_raw(frame_bytes(1, 1, method_payload("queue.declare", queue="liar")[:-4]
                           + struct.pack(">I", 2 ** 32 - 1) + b"\x01kS" + struct.pack(">I", 2 ** 31)))
    code, text, _c, _m = close_summary(c.expect_connection_close())
    assert code in (501, 502), text
    c.close()
    # a frame larger than frame_max
    c = RawConnection.opened(srv.host, srv.port)
    c.open_channel(1)
    c.send_raw(frame_bytes(1, 1, method_payload("queue.declare", queue="huge")[:-4] + raw_table(
        [(b"x-big", b"S" + struct.pack(">I", 200000) + b"b" * 200000)])))
    code, text, _c, _m = close_summary(c.expect_connection_close())
    assert code == 501 and "frame_too_large" in text
    c.close()
    well_behaved(srv, 50)
    assert rss(pid) < 400 * 2 ** 20
    assert_healthy(srv)
