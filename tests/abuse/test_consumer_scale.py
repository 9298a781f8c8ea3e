"""Tens of thousands of consumers on one queue: created, fed, starved by their prefetch and
cancelled in time linear in their number, while another client keeps its latency.

A queue's consumers used to be a list: every basic.consume scanned it (for an exclusive consumer),
every cancel searched it, and every delivery walked past the consumers whose prefetch was full.
Creating 50,000 took minutes of the event loop, and with all of them full each message cost a
walk of all 50,000. The figures are in benchmarks/routing_cost.py; this test compares 5,000 with
50,000 consumers and allows far more than ten times the time (quadratic would be a hundred).
"""
from __future__ import annotations

import struct
import time

import pytest

from abuseutil import assert_healthy
from rawamqp import RawConnection, content_header_payload, frame_bytes, method_payload
from support.bystander import Bystander

pytestmark = pytest.mark.timeout(900)

CONNECTIONS = 5
CHANNELS = 10          # per connection
DELIVER = b"\x00\x3c\x00\x3c"
CONSUME_OK = b"\x00\x3c\x00\x15"
CANCEL_OK = b"\x00\x3c\x00\x1f"
CLOSE_OK = b"\x00\x14\x00\x29"


class Wire:
    """A raw connection whose input is read with offsets: these tests read 100,000s of frames."""

    def __init__(self, srv):
        self.c = RawConnection.opened(srv.host, srv.port)
        self.sock = self.c.sock
        self.buf = bytearray(self.c.buf)

    def send(self, data: bytes):
        self.sock.sendall(data)

    def until(self, fn, timeout: float = 300.0):
        """Read frames, handing each (type, channel, payload) to fn, until fn returns True."""
        deadline = time.monotonic() + timeout
        buf = self.buf
        while True:
            off, n = 0, len(buf)
            while n - off >= 8:
                ftype, ch, size = struct.unpack_from(">BHI", buf, off)
                end = off + 7 + size
                if end >= n:
                    break
                done = fn(ftype, ch, bytes(buf[off + 7:end]))
                off = end + 1
                if done:
                    del buf[:off]
                    return
            del buf[:off]
            left = deadline - time.monotonic()
            assert left > 0, "timed out reading from the broker"
            self.sock.settimeout(left)
            chunk = self.sock.recv(1 << 20)
            assert chunk, "the broker closed the connection"
            buf += chunk

    def count(self, head: bytes, n: int, timeout: float = 300.0, seen=None):
        """Read until n method frames starting with `head` have come (seen(channel, payload) for each)."""
        got = [0]

        def fn(ftype, ch, payload):
            if ftype == 1 and payload[:4] == head:
                got[0] += 1
                if seen is not None:
                    seen(ch, payload)
            return got[0] >= n
        if n:
            self.until(fn, timeout)


def _tag(payload: bytes) -> int:
    """The delivery tag of a basic.deliver payload."""
    k = payload[4]
    return struct.unpack_from(">Q", payload, 5 + k)[0]


def _publishes(queue: str, bodies) -> bytes:
    out = []
    for body in bodies:
        out.append(frame_bytes(1, 1, method_payload("basic.publish", exchange="", routing_key=queue)))
        out.append(frame_bytes(2, 1, content_header_payload(len(body))))
        out.append(frame_bytes(3, 1, body))
    return b"".join(out)


def run(srv, n: int) -> dict:
    """n consumers (prefetch 1) over 5 connections x 10 channels: timings of each phase."""
    queue = f"scale-{n}"
    ctl = Wire(srv)
    ctl.c.open_channel(1)
    ctl.c.call(1, "queue.declare", "queue.declare-ok", queue=queue)
    wires = [Wire(srv) for _ in range(CONNECTIONS)]
    for w in wires:
        for k in range(1, CHANNELS + 1):
            w.c.open_channel(k)
            w.c.call(k, "basic.qos", "basic.qos-ok", prefetch_count=1)
    per = n // (CONNECTIONS * CHANNELS)
    t = {}
    t0 = time.monotonic()
    for wi, w in enumerate(wires):
        w.send(b"".join(frame_bytes(1, k, method_payload("basic.consume", queue=queue, consumer_tag=f"c{wi}.{k}.{i}"))
                        for k in range(1, CHANNELS + 1) for i in range(per)))
    for w in wires:
        w.count(CONSUME_OK, per * CHANNELS)
    t["consume"] = time.monotonic() - t0
    # every consumer gets one message, and then has no room left
    t0 = time.monotonic()
    ctl.send(_publishes(queue, (b"%d" % i for i in range(per * CONNECTIONS * CHANNELS))))
    last = {}
    for wi, w in enumerate(wires):
        w.count(DELIVER, per * CHANNELS, seen=lambda ch, p, wi=wi: last.__setitem__((wi, ch), _tag(p)))
    t["fill"] = time.monotonic() - t0
    # one consumer acks and gets the next message, 300 times, while all the others stay full
    w = wires[0]
    t0 = time.monotonic()
    for i in range(300):
        w.send(frame_bytes(1, 1, method_payload("basic.ack", delivery_tag=last[(0, 1)])))
        ctl.send(_publishes(queue, [b"x%d" % i]))
        w.count(DELIVER, 1, seen=lambda ch, p: last.__setitem__((0, ch), _tag(p)))
    t["starved"] = time.monotonic() - t0
    # cancel them all: three connections cancel each consumer, two close their channels
    t0 = time.monotonic()
    for wi, w in enumerate(wires):
        if wi < 3:
            w.send(b"".join(frame_bytes(1, k, method_payload("basic.cancel", consumer_tag=f"c{wi}.{k}.{i}"))
                            for k in range(1, CHANNELS + 1) for i in range(per)))
        else:
            w.send(b"".join(frame_bytes(1, k, method_payload("channel.close", reply_code=200, reply_text="bye"))
                            for k in range(1, CHANNELS + 1)))
    for wi, w in enumerate(wires):
        if wi < 3:
            w.count(CANCEL_OK, per * CHANNELS)
        else:
            w.count(CLOSE_OK, CHANNELS)
    t["cancel"] = time.monotonic() - t0
    ok = ctl.c.call(1, "queue.declare", "queue.declare-ok", queue=queue, passive=True)
    assert ok["consumer_count"] == 0
    # the closed channels' messages are back in the queue; the cancelled consumers' are still unacked
    assert ok["message_count"] == per * 2 * CHANNELS
    ctl.c.call(1, "queue.delete", "queue.delete-ok", queue=queue)
    for x in wires + [ctl]:
        x.c.close()
    t["total"] = sum(t.values())
    return t


def test_fifty_thousand_consumers_cost_linear_time(fresh_server):
    srv = fresh_server()
    small = run(srv, 5_000)
    with Bystander(srv.host, srv.port) as b:
        time.sleep(0.3)
        big = run(srv, 50_000)
    small2 = run(srv, 5_000)
    base = {k: max(small[k], small2[k]) for k in small}
    print("5,000 consumers:", {k: round(v, 3) for k, v in base.items()})
    print("50,000 consumers:", {k: round(v, 3) for k, v in big.items()})
    print("bystander:", b.stats())
    # ten times the consumers: linear is ~10x for creating, feeding and cancelling them, and ~1x for
    # a message while all but one are full; quadratic would be ~100x and ~10x
    assert big["consume"] < 30 * base["consume"] + 1.0, (base, big)
    assert big["cancel"] < 30 * base["cancel"] + 1.0, (base, big)
    assert big["starved"] < 4 * base["starved"] + 0.5, (base, big)
    assert big["total"] < 30 * base["total"], (base, big)
    b.assert_ok(p99_ms=250)
    assert_healthy(srv)
