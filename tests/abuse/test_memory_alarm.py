"""Publishers flood a queue that has no consumer until the memory alarm blocks them (connection.blocked,
as pika sees it); consumers drain it, the alarm clears (connection.unblocked), publishers resume, and
every confirmed message is consumed: nothing lost."""
from __future__ import annotations

import threading
import time

import pika
import pytest

from abuseutil import assert_healthy, rss
from support.harness import ServerProcess, wait_for

pytestmark = pytest.mark.timeout(240)

BODY = 256 * 1024
HEADROOM = 24 * 2 ** 20       # the alarm is set this far above the server's idle RSS (under the 32 MiB
                              # a queue keeps in memory before paging out)
ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}    # large bodies in their own mappings: freed memory goes back


def idle_rss() -> int:
    s = ServerProcess(env=ENV).start()
    try:
        c = pika.BlockingConnection(pika.URLParameters(s.url()))
        ch = c.channel()
        ch.queue_declare("warm")
        ch.basic_publish("", "warm", b"x" * BODY)
        ch.queue_delete("warm")
        c.close()
        time.sleep(0.5)
        return rss(s.proc.pid)
    finally:
        s.cleanup()


class Publisher(threading.Thread):
    def __init__(self, url):
        super().__init__(daemon=True)
        self.url = url
        self.blocked = threading.Event()
        self.unblocked = threading.Event()
        self.events = []      # the order pika reported them in
        self.stop = threading.Event()
        self.confirmed = []
        self.after_unblock = 0
        self.error = None

    def run(self):
        try:
            p = pika.URLParameters(self.url)
            p.blocked_connection_timeout = 120
            c = pika.BlockingConnection(p)
            c.add_on_connection_blocked_callback(lambda *_: (self.events.append("blocked"), self.blocked.set()))
            c.add_on_connection_unblocked_callback(lambda *_: (self.events.append("unblocked"),
                                                               self.unblocked.set()))
            ch = c.channel()
            ch.confirm_delivery()
            i = 0
            body = b"z" * BODY
            while not self.stop.is_set():
                ch.basic_publish("", "flood", b"%08d" % i + body)
                self.confirmed.append(i)
                c.process_data_events(0)        # BlockingConnection dispatches blocked/unblocked here
                if self.unblocked.is_set():
                    self.after_unblock += 1
                i += 1
            c.close()
        except Exception as e:  # pragma: no cover - reported by the test
            self.error = e


def test_memory_alarm_blocks_publishers_until_consumers_drain(fresh_server):
    limit = idle_rss() + HEADROOM
    srv = fresh_server(extra_args=["--vm-memory-high-watermark-absolute", str(limit)], env=ENV)
    setup = pika.BlockingConnection(pika.URLParameters(srv.url()))
    setup.channel().queue_declare("flood")
    setup.close()
    pub = Publisher(srv.url())
    pub.start()
    # the alarm goes off; the server stops reading from the publisher, whose publish (waiting for its
    # confirm) stalls; BlockingConnection dispatches connection.blocked once that publish returns
    wait_for(lambda: "memory resource limit alarm set" in "".join(srv.lines), timeout=90,
             message=f"memory alarm (limit {limit})")
    time.sleep(1.0)
    n = len(pub.confirmed)
    time.sleep(2.0)
    assert len(pub.confirmed) <= n + 1, "publisher went on while blocked"
    assert not pub.unblocked.is_set()
    assert pub.is_alive() and pub.error is None
    # a consumer drains the queue; the alarm clears; the publisher resumes
    seen = set()
    c = pika.BlockingConnection(pika.URLParameters(srv.url()))
    ch = c.channel()
    ch.basic_qos(prefetch_count=20)
    deadline = time.monotonic() + 120
    for method, _p, body in ch.consume("flood", inactivity_timeout=1):
        if method is not None:
            seen.add(int(body[:8]))
            ch.basic_ack(method.delivery_tag)
        if pub.unblocked.is_set() and pub.after_unblock >= 20 and not pub.stop.is_set():
            pub.stop.set()
        if pub.stop.is_set() and not pub.is_alive() and seen >= set(pub.confirmed):
            break
        assert time.monotonic() < deadline, (f"unblocked={pub.unblocked.is_set()} after={pub.after_unblock} "
                                             f"seen={len(seen)} confirmed={len(pub.confirmed)} "
                                             f"rss={rss(srv.proc.pid)} limit={limit}")
    ch.cancel()
    c.close()
    pub.join(10)
    assert pub.error is None, pub.error
    assert pub.events[:2] == ["blocked", "unblocked"], pub.events
    missing = set(pub.confirmed) - seen
    assert not missing, f"{len(missing)} confirmed messages lost"
    wait_for(lambda: "memory resource limit alarm cleared" in "".join(srv.lines), message="alarm cleared")
    assert_healthy(srv)
