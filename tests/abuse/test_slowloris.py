"""Slow-loris: many connections trickle bytes (a partial protocol header, partial frames) while a
well-behaved client is served; the handshake timeout cuts the slow ones off, counted from the accept."""
from __future__ import annotations

import socket
import struct
import time

import pytest

from abuseutil import assert_healthy, fds, well_behaved
from rawamqp import RawConnection, frame_bytes, method_payload
from support.harness import wait_for

pytestmark = pytest.mark.timeout(120)


def test_trickled_handshakes_are_cut_off_and_others_are_served(fresh_server):
    srv = fresh_server(extra_args=["--handshake-timeout", "2000"])
    base_fds = fds(srv.proc.pid)
    header = b"AMQP\x00\x00\x09\x01"
    start_ok = frame_bytes(1, 0, method_payload("connection.start-ok", client_properties={}, mechanism="PLAIN",
                                                response=b"\0guest\0guest", locale="en_US"))
    socks = []
    for i in range(100):
        s = socket.create_connection((srv.host, srv.port), timeout=5)
        if i % 2:
            # through the header at once, then connection.start-ok one byte at a time
            s.sendall(header)
            socks.append([s, header + start_ok, 8, None])
        else:
            socks.append([s, header, 0, None])      # the header itself, one byte at a time
        s.setblocking(False)
    t0 = time.monotonic()
    served = 0
    while time.monotonic() - t0 < 5.0:
        for item in socks:
            s, data, pos, closed = item
            if closed is not None:
                continue
            try:
                if pos < len(data) - 1:        # never the last byte: the handshake never completes
                    s.send(data[pos:pos + 1])
                    item[2] = pos + 1
                try:
                    if s.recv(65536) == b"":
                        item[3] = time.monotonic() - t0
                except BlockingIOError:
                    pass
            except OSError:
                item[3] = time.monotonic() - t0
        well_behaved(srv, 20)        # served all along
        served += 1
        time.sleep(0.2)
    closed_times = [item[3] for item in socks]
    assert all(t is not None for t in closed_times), f"{closed_times.count(None)} slow connections still open"
    assert max(closed_times) < 4.5, max(closed_times)
    assert served >= 5
    for item in socks:
        item[0].close()
    wait_for(lambda: fds(srv.proc.pid) <= base_fds + 3, message="descriptors released")
    assert_healthy(srv)


def test_partial_frames_after_open_do_not_stall_others(fresh_server):
    srv = fresh_server()
    slow = RawConnection.opened(srv.host, srv.port)
    slow.open_channel(1)
    decl = frame_bytes(1, 1, method_payload("queue.declare", queue="trickled", auto_delete=False))
    pub = (frame_bytes(1, 1, method_payload("basic.publish", exchange="", routing_key="trickled"))
           + frame_bytes(2, 1, struct.pack(">HHQ", 60, 0, 5) + b"\x00\x00")
           + frame_bytes(3, 1, b"hello"))
    data = decl + pub * 3
    t0 = time.monotonic()
    for i, b in enumerate(data):
        slow.send_raw(bytes([b]))
        if i % 40 == 0:
            time.sleep(0.01)
        if i % 200 == 0:
            assert well_behaved(srv, 10) < 5
    slow.expect_method("queue.declare-ok")
    slow.call(1, "queue.declare", "queue.declare-ok", queue="trickled", passive=True)
    wait_for(lambda: slow.call(1, "queue.declare", "queue.declare-ok", queue="trickled",
                               passive=True).args["message_count"] == 3, message="3 trickled messages")
    slow.close_connection()
    assert time.monotonic() - t0 < 60
    assert_healthy(srv)
