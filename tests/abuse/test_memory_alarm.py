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


def test_memory_alarm_clears_within_seconds_when_the_burst_is_deleted(fresh_server):
    """The alarm counts what the broker holds, not RSS: a burst held in memory sets it and blocks
    the publisher; once the queue is deleted it clears within seconds (whatever memory the allocator
    kept) and the blocked publisher goes on. /api/nodes reports the same figure and the real limit."""
    from mgmtapi import api
    limit = idle_rss() + HEADROOM
    # the queue keeps the whole burst in memory (a budget larger than the limit), and freed memory
    # stays with the process (no MALLOC_MMAP_THRESHOLD_): only the accounting can see it go
    srv = fresh_server(extra_args=["--vm-memory-high-watermark-absolute", str(limit)],
                       env={"USAGI_QUEUE_MEMORY_BYTES": str(1 << 30)})
    setup = pika.BlockingConnection(pika.URLParameters(srv.url()))
    setup.channel().queue_declare("flood")
    setup.close()
    pub = Publisher(srv.url())
    pub.start()
    wait_for(lambda: "memory resource limit alarm set" in "".join(srv.lines), timeout=90,
             message=f"memory alarm (limit {limit})")
    node = api(srv, "GET", "/api/nodes")[0]
    assert node["mem_alarm"] is True and node["mem_limit"] == limit and node["mem_used"] > limit
    time.sleep(1.0)
    n = len(pub.confirmed)
    time.sleep(1.0)
    assert len(pub.confirmed) <= n + 1, "publisher went on while blocked"
    assert not pub.unblocked.is_set()
    rss_before = rss(srv.proc.pid)
    c = pika.BlockingConnection(pika.URLParameters(srv.url()))
    c.channel().queue_delete("flood")
    c.close()
    t0 = time.monotonic()
    wait_for(lambda: "memory resource limit alarm cleared" in "".join(srv.lines), timeout=10,
             message="the alarm cleared after the queue was deleted")
    cleared_after = time.monotonic() - t0
    wait_for(lambda: pub.unblocked.is_set() and pub.after_unblock >= 20, timeout=30,
             message="the publisher unblocked and publishing again")
    pub.stop.set()
    pub.join(10)
    assert pub.error is None, pub.error
    assert pub.events[:2] == ["blocked", "unblocked"], pub.events
    node = api(srv, "GET", "/api/nodes")[0]
    assert node["mem_alarm"] is False and node["mem_used"] < limit, (node["mem_used"], limit)
    assert cleared_after < 10, (cleared_after, rss_before)
    assert_healthy(srv)
