"""Long queues page to disk past their memory budget and come back in order, nothing lost."""
from __future__ import annotations

import os

import pika
import pytest

from support.harness import external_broker_url

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(bool(external_broker_url()), reason="needs a Usagi server of its own")]


def segments(data_dir):
    d = os.path.join(data_dir, "paging")
    return [f for f in os.listdir(d) if f.endswith(".q")] if os.path.isdir(d) else []


def test_paged_queue_keeps_order_through_requeues(fresh_server):
    srv = fresh_server(env={"USAGI_QUEUE_MEMORY_MESSAGES": "100"})
    conn = pika.BlockingConnection(pika.URLParameters(srv.url()))
    ch = conn.channel()
    ch.queue_declare("deep")
    n = 3000
    for i in range(n):
        ch.basic_publish("", "deep", str(i).encode(),
                         pika.BasicProperties(headers={"i": i}, content_type="text/plain"))
    assert ch.queue_declare("deep", passive=True).method.message_count == n
    assert segments(srv.data_dir), "nothing was paged out"
    # take a few, requeue one: it comes back first, marked redelivered
    m0 = ch.basic_get("deep")
    m1 = ch.basic_get("deep")
    ch.basic_nack(m1[0].delivery_tag, requeue=True)
    ch.basic_ack(m0[0].delivery_tag)
    got = []
    while True:
        m, p, body = ch.basic_get("deep", auto_ack=True)
        if m is None:
            break
        assert p.headers["i"] == int(body) and p.content_type == "text/plain"
        got.append((int(body), m.redelivered))
    assert got[0] == (1, True)
    assert [b for b, _ in got] == list(range(1, n))
    assert not segments(srv.data_dir), "segment files left after draining"
    conn.close()


def test_paged_persistent_messages_survive_restart(fresh_server, tmp_path):
    srv = fresh_server(env={"USAGI_QUEUE_MEMORY_MESSAGES": "50"}, data_dir=str(tmp_path / "d"))
    conn = pika.BlockingConnection(pika.URLParameters(srv.url()))
    ch = conn.channel()
    ch.queue_declare("deep-durable", durable=True)
    ch.confirm_delivery()
    for i in range(500):
        ch.basic_publish("", "deep-durable", str(i).encode(), pika.BasicProperties(delivery_mode=2))
    conn.close()
    assert srv.stop() == 0
    srv.start()
    conn = pika.BlockingConnection(pika.URLParameters(srv.url()))
    ch = conn.channel()
    bodies = []
    while True:
        m, _p, body = ch.basic_get("deep-durable")
        if m is None:
            break
        ch.basic_ack(m.delivery_tag)
        bodies.append(int(body))
    assert bodies == list(range(500))
    conn.close()
