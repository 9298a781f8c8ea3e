"""Flow: a publisher that outruns the consumers of a paging queue waits for them (core/flow.py).

As with RabbitMQ's credit flow, the publishing connection shows the state "flow" while it waits,
and the queue does not pile up on disk behind consumers that are taking messages; a consumer that
takes nothing does not hold its publishers up.
"""
from __future__ import annotations

import base64
import json
import struct
import threading
import time
import urllib.request

import pika
import pytest

from rawamqp import RawConnection, content_header_payload, frame_bytes, method_payload
from support.harness import MGMT_RE, external_broker_url, wait_for
from usagi.core import flow

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(bool(external_broker_url()), reason="needs a Usagi server of its own")]

BUDGET = 200          # messages a queue keeps in memory before it pages


def api(srv, path):
    m = wait_for(lambda: MGMT_RE.search("".join(srv.lines)), 10, message="the management listener")
    req = urllib.request.Request(f"http://{m.group(1)}:{m.group(2)}{path}",
                                 headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


class Sampler(threading.Thread):
    """Reads the publisher's connection state and the queue's paged-out count, every 20 ms."""

    def __init__(self, srv, queue, conn_name):
        super().__init__(daemon=True)
        self.srv, self.queue, self.conn_name = srv, queue, conn_name
        self.states, self.paged = [], []
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            try:
                for c in api(self.srv, "/api/connections"):
                    if (c.get("client_properties") or {}).get("connection_name") == self.conn_name:
                        self.states.append(c["state"])
                self.paged.append(api(self.srv, "/api/queues/%2F/" + self.queue)["messages_paged_out"])
            except OSError:
                pass
            time.sleep(0.02)


def consume(url, queue, stop, got, ack=True, delay=0.0):
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=20)

    def on(ch_, m, _p, _b):
        if stop.is_set():
            return
        got.append(1)
        if delay:
            time.sleep(delay)
        if ack:
            ch_.basic_ack(m.delivery_tag)

    ch.basic_consume(queue, on)
    while not stop.is_set():
        conn.process_data_events(0.05)
    conn.close()


def fast_consume(port, queue, stop, got):
    """A consumer as fast as a client gets (as the benchmarks' load generator): raw frames read
    in big chunks, an ack for every 50 deliveries (multiple), prefetch 100."""
    c = RawConnection.opened("127.0.0.1", port)
    c.open_channel(1)
    c.call(1, "basic.qos", "basic.qos-ok", prefetch_count=100)
    c.call(1, "basic.consume", "basic.consume-ok", queue=queue, consumer_tag="fast", arguments={})
    c.sock.settimeout(0.05)
    buf, last_tag, acked = b"", 0, 0
    while not stop.is_set():
        try:
            data = c.sock.recv(1 << 16)
        except OSError:
            data = b""
        buf += data
        off = 0
        while len(buf) - off >= 7:
            ftype, _ch, size = struct.unpack_from(">BHI", buf, off)
            if len(buf) - off < size + 8:
                break
            if ftype == 1 and buf[off + 7:off + 11] == b"\x00\x3c\x00\x3c":     # basic.deliver
                tl = buf[off + 11]
                last_tag = struct.unpack_from(">Q", buf, off + 12 + tl)[0]
                got.append(1)
            off += size + 8
        buf = buf[off:]
        if last_tag - acked >= 50 or (last_tag > acked and not data):
            c.send_method(1, "basic.ack", delivery_tag=last_tag, multiple=True)
            acked = last_tag
    c.close()


def publisher(url, name):
    params = pika.URLParameters(url)
    params.client_properties = {"connection_name": name}
    return pika.BlockingConnection(params)


def test_a_publisher_waits_in_flow_while_the_consumers_of_a_paging_queue_catch_up(fresh_server):
    srv = fresh_server(env={"USAGI_QUEUE_MEMORY_MESSAGES": str(BUDGET)})
    pub = RawConnection.opened("127.0.0.1", srv.port, client_properties={"connection_name": "flow-pub"})
    pub.open_channel(1)
    pub.call(1, "queue.declare", "queue.declare-ok", queue="flowq", arguments={})
    stop, got = threading.Event(), []
    t = threading.Thread(target=fast_consume, args=(srv.port, "flowq", stop, got), daemon=True)
    t.start()
    wait_for(lambda: api(srv, "/api/queues/%2F/flowq")["consumers"] == 1, 10, message="the consumer")
    sampler = Sampler(srv, "flowq", "flow-pub")
    sampler.start()
    n = 30000
    one = (frame_bytes(1, 1, method_payload("basic.publish", exchange="", routing_key="flowq"))
           + frame_bytes(2, 1, content_header_payload(200)) + frame_bytes(3, 1, b"x" * 200))
    pub.sock.sendall(one * n)            # as fast as the socket takes it
    wait_for(lambda: len(got) >= n, 60, message="every message consumed")
    sampler.done.set()
    sampler.join()
    stop.set()
    t.join(10)
    pub.close()
    assert "flow" in sampler.states, sampler.states
    # without flow the publisher is done long before the consumer: thousands paged out at once
    assert max(sampler.paged) < 5000, max(sampler.paged)
    assert len(got) == n


@pytest.mark.parametrize("kind", ["stuck", "slow"])
def test_a_consumer_slow_on_its_own_does_not_hold_its_publishers(fresh_server, kind):
    """A consumer that takes nothing (holds its prefetch), or one that works 20 ms on each
    message: RabbitMQ would not pace the publisher to it, nor does Usagi."""
    srv = fresh_server(env={"USAGI_QUEUE_MEMORY_MESSAGES": str(BUDGET)})
    stop, got = threading.Event(), []
    c = pika.BlockingConnection(pika.URLParameters(srv.url()))
    c.channel().queue_declare("stuckq")
    c.close()
    kw = {"ack": False} if kind == "stuck" else {"delay": 0.02}
    t = threading.Thread(target=consume, args=(srv.url(), "stuckq", stop, got), kwargs=kw,
                         daemon=True)
    t.start()
    wait_for(lambda: api(srv, "/api/queues/%2F/stuckq")["consumers"] == 1, 10, message="the consumer")
    conn = publisher(srv.url(), "stuck-pub")
    ch = conn.channel()
    sampler = Sampler(srv, "stuckq", "stuck-pub")
    sampler.start()
    n = 20000
    t0 = time.monotonic()
    for i in range(n):
        ch.basic_publish("", "stuckq", b"y" * 100)
    ch.confirm_delivery()               # a round trip: everything before it was taken
    took = time.monotonic() - t0
    sampler.done.set()
    sampler.join()
    q = api(srv, "/api/queues/%2F/stuckq")
    stop.set()
    t.join(10)
    conn.close()
    if kind == "stuck":
        assert q["messages"] == n and len(got) == 20
    assert q["messages_paged_out"] > n // 2            # the backlog is paged, as it should be
    # the publisher may have waited once, for the consumer to show it is slow (0.1 s), then not
    # for 2 s, then once more, then not for 4 s...: each wait a few samples (20-50 ms apart) at
    # most, and one more wait for each 2 s the publishing took (more on a loaded machine)
    waits = [len(run) for run in "".join("f" if s == "flow" else "." for s in sampler.states).split(".") if run]
    assert max(waits, default=0) <= 6, sampler.states
    assert len(waits) <= 1 + int(took / flow.STALL_BACKOFF), (waits, took)


def test_a_connection_that_also_consumes_from_the_queue_is_never_held(fresh_server):
    """Its acks are what the queue waits for: holding it would only stall both sides."""
    srv = fresh_server(env={"USAGI_QUEUE_MEMORY_MESSAGES": str(BUDGET)})
    conn = publisher(srv.url(), "both")
    pub, sub = conn.channel(), conn.channel()
    pub.queue_declare("bothq")
    sub.basic_qos(prefetch_count=20)
    got = []
    sub.basic_consume("bothq", lambda c, m, p, b: (got.append(1), c.basic_ack(m.delivery_tag)))
    sampler = Sampler(srv, "bothq", "both")
    sampler.start()
    n = 5000
    for i in range(n):
        pub.basic_publish("", "bothq", b"z" * 200)
        if i % 500 == 0:
            conn.process_data_events(0)
    deadline = time.monotonic() + 60
    while len(got) < n and time.monotonic() < deadline:
        conn.process_data_events(0.05)
    sampler.done.set()
    sampler.join()
    conn.close()
    assert len(got) == n
    assert "flow" not in sampler.states, sampler.states
