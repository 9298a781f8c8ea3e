"""Every kind of queue pages past its in-memory budget (USAGI_QUEUE_MEMORY_MESSAGES, small here)
and keeps its semantics: order, priorities, TTL expiry on time (dead-lettered, x-death right),
length limits, stream offsets; unacknowledged and requeued messages leave memory and come back
when delivered again, also after a consumer dies and across a restart; the management API says
where the messages are (messages_ram, messages_paged_out)."""
from __future__ import annotations

import base64
import json
import os
import re
import time
import urllib.request

import pika
import pytest

from support.harness import external_broker_url, wait_for

pytestmark = [pytest.mark.timeout(180),
              pytest.mark.skipif(bool(external_broker_url()), reason="needs a Usagi server of its own")]

BUDGET = 100
ENV = {"USAGI_QUEUE_MEMORY_MESSAGES": str(BUDGET)}
MGMT_RE = re.compile(r"Management listener on (\S+):(\d+)")


def api(srv, path, method="GET", body=None):
    m = wait_for(lambda: MGMT_RE.search("".join(srv.lines)), message="management listener")
    req = urllib.request.Request(f"http://127.0.0.1:{m.group(2)}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode(),
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        data = r.read()
        return json.loads(data) if data else None


def paging_files(srv, prefix=""):
    d = os.path.join(srv.data_dir, "paging")
    return [f for f in os.listdir(d) if f.startswith(prefix)] if os.path.isdir(d) else []


def channel(srv):
    return pika.BlockingConnection(pika.URLParameters(srv.url())).channel()


def drain(ch, queue, limit=100000):
    """Bodies (as ints) and redelivered flags, by basic.get with autoack, until the queue is empty."""
    got = []
    while len(got) < limit:
        m, _p, body = ch.basic_get(queue, auto_ack=True)
        if m is None:
            break
        got.append((int(body), m.redelivered))
    return got


def test_plain_queue_reports_where_its_messages_are(fresh_server):
    srv = fresh_server(env=ENV)
    ch = channel(srv)
    ch.queue_declare("where")
    for i in range(1000):
        ch.basic_publish("", "where", b"%d" % i)
    ch.queue_declare("where", passive=True)
    q = api(srv, "/api/queues/%2F/where")
    assert q["messages"] == 1000
    assert q["messages_ram"] == BUDGET and q["messages_ready_ram"] == BUDGET
    assert q["messages_paged_out"] == 900 and q["message_bytes_paged_out"] == sum(len(b"%d" % i) for i in range(100, 1000))
    assert q["message_bytes_ram"] == sum(len(b"%d" % i) for i in range(100))
    assert q["messages_persistent"] == 0
    assert q["backing_queue_status"]["delta"][2] == 900
    assert [b for b, _ in drain(ch, "where")] == list(range(1000))
    assert not paging_files(srv, "seg-")


def test_ttl_queue_pages_and_its_paged_messages_expire_on_time(fresh_server):
    """Paged-out entries expire when due and are dead-lettered with x-death, in order; nothing per
    entry waits in memory for them."""
    srv = fresh_server(env=ENV)
    ch = channel(srv)
    ch.queue_declare("ttl-dead")
    ch.queue_declare("ttl-paged", arguments={"x-message-ttl": 2000, "x-dead-letter-exchange": "",
                                             "x-dead-letter-routing-key": "ttl-dead"})
    n = 1500
    t0 = time.monotonic()
    for i in range(n):
        ch.basic_publish("", "ttl-paged", b"%d" % i, pika.BasicProperties(headers={"i": i}))
    assert ch.queue_declare("ttl-paged", passive=True).method.message_count == n
    assert paging_files(srv, "seg-"), "nothing was paged out"
    assert api(srv, "/api/queues/%2F/ttl-paged")["messages_paged_out"] == n - BUDGET
    wait_for(lambda: ch.queue_declare("ttl-dead", passive=True).method.message_count == n, timeout=30,
             message="every message dead-lettered")
    # a second after the last one was due at the latest (the broker is shared: generous)
    assert time.monotonic() - t0 < 2.0 + 10.0
    assert ch.queue_declare("ttl-paged", passive=True).method.message_count == 0
    got = []
    for _ in range(n):
        m, p, body = ch.basic_get("ttl-dead", auto_ack=True)
        got.append(int(body))
        assert p.headers["i"] == int(body)
        death = p.headers["x-death"][0]
        assert death["reason"] == "expired" and death["queue"] == "ttl-paged" and death["count"] == 1
    assert got == list(range(n))
    wait_for(lambda: not paging_files(srv, "seg-"), message="segments deleted")


def test_per_message_expiration_in_the_paged_middle_is_timely(fresh_server):
    """Messages with a short `expiration` deep in the paged-out part expire on time, wherever they
    are, while the others (no expiration, or a long one) stay in order."""
    srv = fresh_server(env=ENV)
    ch = channel(srv)
    ch.queue_declare("mixed-dead")
    ch.queue_declare("mixed", arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "mixed-dead"})
    kinds = [None, "1000", "600000"]
    n = 1200
    for i in range(n):
        exp = kinds[i % 3]
        ch.basic_publish("", "mixed", b"%d" % i, pika.BasicProperties(expiration=exp))
    short = [i for i in range(n) if kinds[i % 3] == "1000"]
    wait_for(lambda: ch.queue_declare("mixed-dead", passive=True).method.message_count == len(short),
             timeout=15, message="the short ones expired")
    assert ch.queue_declare("mixed", passive=True).method.message_count == n - len(short)
    assert [b for b, _ in drain(ch, "mixed")] == [i for i in range(n) if kinds[i % 3] != "1000"]
    dead = [b for b, _ in drain(ch, "mixed-dead")]
    assert sorted(dead) == short


def test_length_limited_queues_page_drop_head_and_reject_publish(fresh_server):
    srv = fresh_server(env=ENV)
    ch = channel(srv)
    ch.queue_declare("maxlen", arguments={"x-max-length": 700})
    for i in range(2000):
        ch.basic_publish("", "maxlen", b"%d" % i)
    assert ch.queue_declare("maxlen", passive=True).method.message_count == 700
    q = api(srv, "/api/queues/%2F/maxlen")
    assert q["messages_ram"] <= BUDGET and q["messages_ram"] + q["messages_paged_out"] == 700
    assert [b for b, _ in drain(ch, "maxlen")] == list(range(1300, 2000))

    ch.queue_declare("maxlen-reject", arguments={"x-max-length": 700, "x-overflow": "reject-publish"})
    ch.confirm_delivery()
    nacked = 0
    for i in range(800):
        try:
            ch.basic_publish("", "maxlen-reject", b"%d" % i)
        except pika.exceptions.NackError:
            nacked += 1
    assert nacked == 100
    assert [b for b, _ in drain(ch, "maxlen-reject")] == list(range(700))

    ch.queue_declare("maxbytes", arguments={"x-max-length-bytes": 3000})
    for i in range(2000):
        ch.basic_publish("", "maxbytes", b"%04d" % i)
    assert ch.queue_declare("maxbytes", passive=True).method.message_count == 750
    assert [b for b, _ in drain(ch, "maxbytes")] == list(range(1250, 2000))


def test_priority_queue_pages_each_level_and_keeps_priority_order(fresh_server):
    srv = fresh_server(env=ENV)
    ch = channel(srv)
    ch.queue_declare("prio", arguments={"x-max-priority": 5})
    n = 1500
    for i in range(n):
        ch.basic_publish("", "prio", b"%d" % i, pika.BasicProperties(priority=i % 7))   # 6 above the max
    q = api(srv, "/api/queues/%2F/prio")
    assert q["messages"] == n and q["messages_paged_out"] == n - BUDGET
    expected = sorted(range(n), key=lambda i: (-min(i % 7, 5), i))
    assert [b for b, _ in drain(ch, "prio")] == expected
    # requeued ones go back to their own level, also when paged
    for i in range(n):
        ch.basic_publish("", "prio", b"%d" % i, pika.BasicProperties(priority=i % 2))
    m, _p, body = ch.basic_get("prio")
    assert int(body) % 2 == 1
    ch.basic_nack(m.delivery_tag, requeue=True)
    got = drain(ch, "prio")
    assert got[0] == (int(body), True)
    assert [b for b, _ in got] == sorted(range(n), key=lambda i: (-(i % 2), i))


def stream_read(srv, name, offset, count, prefetch=500):
    conn = pika.BlockingConnection(pika.URLParameters(srv.url()))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=prefetch)
    got = []

    def on(c, m, p, body):
        got.append((p.headers["x-stream-offset"], int(body[:4] if body[4:5] == b"x" else body)))
        c.basic_ack(m.delivery_tag)
    ch.basic_consume(name, on, arguments={"x-stream-offset": offset})
    deadline = time.monotonic() + 15
    last = (time.monotonic(), 0)
    while len(got) < count and time.monotonic() < deadline:
        conn.process_data_events(0.05)
        if len(got) != last[1]:
            last = (time.monotonic(), len(got))
        elif time.monotonic() - last[0] > 2:
            break                   # nothing more is coming
    conn.close()                    # (no basic.cancel: pika would reject what is in flight)
    return got[:count]


def test_stream_pages_to_segments_and_reads_any_offset(fresh_server):
    srv = fresh_server(env=ENV)
    ch = channel(srv)
    ch.queue_declare("st", durable=True, arguments={"x-queue-type": "stream"})
    ch.confirm_delivery()
    n = 2000
    for i in range(n):
        ch.basic_publish("", "st", b"%d" % i)
    assert paging_files(srv, "log-"), "no stream segment"
    assert stream_read(srv, "st", "first", n) == [(i, i) for i in range(n)]
    assert stream_read(srv, "st", 1234, 10) == [(i, i) for i in range(1234, 1244)]
    assert stream_read(srv, "st", n - 5, 10) == [(i, i) for i in range(n - 5, n)]
    q = api(srv, "/api/queues/%2F/st")
    assert q["messages"] == n


def test_stream_retention_drops_old_segments(fresh_server):
    srv = fresh_server(env={"USAGI_QUEUE_MEMORY_MESSAGES": "50"})
    ch = channel(srv)
    ch.queue_declare("st-ret", durable=True, arguments={"x-queue-type": "stream", "x-max-length-bytes": 20000})
    ch.confirm_delivery()
    body = b"x" * 96
    for i in range(3000):
        ch.basic_publish("", "st-ret", b"%04d" % i + body)
    q = api(srv, "/api/queues/%2F/st-ret")
    assert 19000 <= q["message_bytes"] <= 20000
    first = 3000 - q["messages"]
    got = stream_read(srv, "st-ret", "first", 1000)
    assert [o for o, _ in got] == list(range(first, 3000))
    wait_for(lambda: len(paging_files(srv, "log-")) <= 4, message="old segment files deleted")


def hold(srv, queue, prefetch, args=None):
    """A consumer (own connection) that takes `prefetch` deliveries and acks none: (conn, bodies)."""
    conn = pika.BlockingConnection(pika.URLParameters(srv.url()))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=prefetch)
    got = []
    ch.basic_consume(queue, lambda c, m, p, b: got.append(int(b)), arguments=args)
    wait_for(lambda: (conn.process_data_events(0.05), len(got) >= prefetch)[1], timeout=30,
             message=f"{prefetch} deliveries")
    return conn, got


@pytest.mark.parametrize("args", [{}, {"x-message-ttl": 600000}, {"x-max-priority": 3}, {"x-max-length": 5000}],
                         ids=["plain", "ttl", "priority", "maxlen"])
def test_unacked_messages_leave_memory_and_come_back_after_the_consumer_dies(fresh_server, args):
    srv = fresh_server(env=ENV)
    ch = channel(srv)
    ch.queue_declare("held", arguments=args)
    n = 2000
    for i in range(n):
        ch.basic_publish("", "held", b"%d" % i)
    conn, got = hold(srv, "held", 1500)
    assert got == list(range(1500))
    q = wait_for(lambda: (lambda q: q if q["messages_unacknowledged"] == 1500 and
                          q["messages_ram"] <= BUDGET + 300 else None)(api(srv, "/api/queues/%2F/held")),
                 message="unacknowledged messages paged out")
    assert q["messages_unacknowledged_ram"] < 1500
    assert paging_files(srv, "spill-")
    conn.close()            # the consumer dies: all 1500 come back, in their places
    wait_for(lambda: ch.queue_declare("held", passive=True).method.message_count == n, message="requeued")
    got = drain(ch, "held")
    assert [b for b, _ in got] == list(range(n))
    assert all(r for _, r in got[:1500]) and not any(r for _, r in got[1500:])


def test_stream_consumer_holding_many_unacked_keeps_memory_bounded(fresh_server):
    srv = fresh_server(env=ENV)
    ch = channel(srv)
    ch.queue_declare("st-held", durable=True, arguments={"x-queue-type": "stream"})
    for i in range(2000):
        ch.basic_publish("", "st-held", b"%d" % i)
    conn, got = hold(srv, "st-held", 1500, {"x-stream-offset": "first"})
    assert got == list(range(1500))
    wait_for(lambda: api(srv, "/api/queues/%2F/st-held")["messages_unacknowledged_ram"] <= BUDGET + 300,
             message="stream deliveries' messages let go")
    conn.close()


def test_paged_unacked_persistent_messages_are_read_back_from_the_store_and_survive_a_restart(fresh_server,
                                                                                             tmp_path):
    srv = fresh_server(env=ENV, data_dir=str(tmp_path / "d"))
    ch = channel(srv)
    ch.queue_declare("held-durable", durable=True)
    ch.confirm_delivery()
    n = 2000
    for i in range(n):
        ch.basic_publish("", "held-durable", b"%d" % i, pika.BasicProperties(delivery_mode=2))
    conn, got = hold(srv, "held-durable", 1500)
    wait_for(lambda: api(srv, "/api/queues/%2F/held-durable")["messages_unacknowledged_ram"] < 1500,
             message="unacknowledged messages paged out")
    assert not paging_files(srv, "spill-"), "persistent messages are read back from the store, not spilled"
    q = api(srv, "/api/queues/%2F/held-durable")
    assert q["messages_persistent"] == n
    conn.close()
    wait_for(lambda: ch.queue_declare("held-durable", passive=True).method.message_count == n, message="requeued")
    assert [b for b, _ in drain(ch, "held-durable", 700)] == list(range(700))
    # the rest, held again and then the server restarts: they come back redelivered
    conn, got = hold(srv, "held-durable", 1000)
    assert got == list(range(700, 1700))
    ch.connection.close()
    assert srv.stop() == 0
    srv.start()
    ch = channel(srv)
    got = drain(ch, "held-durable")
    assert [b for b, _ in got] == list(range(700, n))
    assert all(r for _, r in got[:1000])


def test_paged_ttl_messages_keep_their_deadline_across_a_restart(fresh_server, tmp_path):
    srv = fresh_server(env=ENV, data_dir=str(tmp_path / "d"))
    ch = channel(srv)
    ch.queue_declare("ttl-durable", durable=True, arguments={"x-message-ttl": 4000})
    ch.queue_declare("keep-durable", durable=True)
    ch.confirm_delivery()
    for i in range(600):
        ch.basic_publish("", "ttl-durable", b"%d" % i, pika.BasicProperties(delivery_mode=2))
    ch.connection.close()
    assert srv.stop() == 0
    srv.start()
    ch = channel(srv)
    assert ch.queue_declare("ttl-durable", passive=True).method.message_count == 600
    assert api(srv, "/api/queues/%2F/ttl-durable")["messages_paged_out"] == 0     # persistent: the store's
    assert api(srv, "/api/queues/%2F/ttl-durable")["messages_ram"] == BUDGET
    wait_for(lambda: ch.queue_declare("ttl-durable", passive=True).method.message_count == 0, timeout=15,
             message="expired after the restart")
