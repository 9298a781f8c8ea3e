"""kombu (py-amqp transport) against a live broker: what Celery-style applications do."""
from __future__ import annotations

import socket

import amqp.exceptions as aex
import pytest
from kombu import Connection, Consumer, Exchange, Producer, Queue

from itutil import uname

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def kconn(broker):
    with Connection(broker.url, connect_timeout=5, transport_options={"confirm_publish": True}) as c:
        c.connect()
        yield c


def drain(conn, n_expected, got, timeout=5.0):
    import time
    deadline = time.monotonic() + timeout
    while len(got) < n_expected:
        if time.monotonic() > deadline:
            raise AssertionError(f"got {len(got)} of {n_expected}")
        try:
            conn.drain_events(timeout=0.2)
        except socket.timeout:
            pass


def test_simple_queue_put_get(kconn):
    name = uname("simple")
    q = kconn.SimpleQueue(name, queue_opts={"auto_delete": True, "durable": False},
                          exchange_opts={"auto_delete": True, "durable": False})
    try:
        q.put({"hello": "world", "n": [1, 2, 3]})
        q.put("second")
        m1 = q.get(block=True, timeout=5)
        assert m1.payload == {"hello": "world", "n": [1, 2, 3]}
        assert m1.content_type == "application/json"
        m1.ack()
        m2 = q.get(block=True, timeout=5)
        assert m2.payload == "second"
        m2.ack()
        with pytest.raises(q.Empty):
            q.get(block=False)
    finally:
        q.clear()
        q.close()


def test_producer_consumer_json_and_routing(kconn):
    ex = Exchange(uname("kx"), type="direct", durable=False, auto_delete=True)
    q_a = Queue(uname("ka"), exchange=ex, routing_key="a", durable=False, auto_delete=True)
    q_b = Queue(uname("kb"), exchange=ex, routing_key="b", durable=False, auto_delete=True)
    got = []
    with kconn.channel() as ch:
        consumer = Consumer(ch, queues=[q_a, q_b], accept=["json"],
                            callbacks=[lambda body, msg: (got.append((msg.delivery_info["routing_key"],
                                                                      body)), msg.ack())])
        consumer.consume()
        producer = Producer(ch, exchange=ex, serializer="json")
        for i in range(4):
            producer.publish({"i": i}, routing_key="a" if i % 2 == 0 else "b",
                             declare=[ex], retry=False)
        producer.publish({"i": 99}, routing_key="nowhere", retry=False)
        drain(kconn, 4, got)
        consumer.cancel()
    assert sorted(got, key=lambda t: t[1]["i"]) == [("a", {"i": 0}), ("b", {"i": 1}),
                                                    ("a", {"i": 2}), ("b", {"i": 3})]


def test_message_requeue_and_reject(kconn):
    q = Queue(uname("kq"), durable=False, auto_delete=False)
    with kconn.channel() as ch:
        bound = q(ch)
        bound.declare()
        try:
            producer = Producer(ch, serializer="json")
            producer.publish({"v": 1}, routing_key=q.name, retry=False)
            m = bound.get(no_ack=False)
            assert m.payload == {"v": 1}
            assert m.delivery_info["redelivered"] is False
            m.requeue()
            m = bound.get(no_ack=False)
            assert m.delivery_info["redelivered"] is True
            m.reject()
            assert bound.get() is None
        finally:
            bound.delete()


def test_default_kombu_queue_is_durable_and_message_persistent(kconn):
    """kombu's defaults: durable queue/exchange, delivery_mode 2."""
    name = uname("kdur")
    ex = Exchange(name, type="direct")
    q = Queue(name, exchange=ex, routing_key=name)
    with kconn.channel() as ch:
        bound = q(ch)
        bound.declare()
        try:
            Producer(ch, exchange=ex).publish({"p": True}, routing_key=name, retry=False)
            m = bound.get(no_ack=True)
            assert m.payload == {"p": True}
            assert m.properties["delivery_mode"] == 2
        finally:
            bound.delete()
            ex(ch).delete()


def test_passive_declare_error_surface(kconn, vhost):
    name = uname("kmissing")
    with kconn.channel() as ch:
        with pytest.raises(aex.NotFound) as ei:
            Queue(name, no_declare=True)(ch).queue_declare(passive=True)
    assert (ei.value.reply_code, ei.value.reply_text) == (
        404, f"NOT_FOUND - no queue '{name}' in vhost '{vhost}'")


def test_inequivalent_redeclare_via_kombu(kconn, vhost):
    name = uname("kineq")
    with kconn.channel() as ch:
        bound = Queue(name, durable=False, auto_delete=False)(ch)
        bound.declare()
        try:
            with kconn.channel() as ch2:
                with pytest.raises(aex.PreconditionFailed) as ei:
                    Queue(name, durable=True, auto_delete=False)(ch2).declare()
        finally:
            bound.delete()
    assert ei.value.reply_text == (
        f"PRECONDITION_FAILED - inequivalent arg 'durable' for queue '{name}' in vhost '{vhost}': "
        "received 'true' but current is 'false'")


def test_topic_fanout_via_kombu(kconn):
    tx = Exchange(uname("ktopic"), type="topic", durable=False, auto_delete=True)
    q1 = Queue(uname("k1"), exchange=tx, routing_key="stock.#", durable=False, auto_delete=True)
    q2 = Queue(uname("k2"), exchange=tx, routing_key="*.eur", durable=False, auto_delete=True)
    with kconn.channel() as ch:
        b1, b2 = q1(ch), q2(ch)
        b1.declare()
        b2.declare()
        p = Producer(ch, exchange=tx, serializer="json")
        for rk in ("stock.usd", "stock.eur", "bond.eur", "stock"):
            p.publish(rk, routing_key=rk, retry=False)

        def all_payloads(b):
            out = []
            while (m := b.get(no_ack=True)) is not None:
                out.append(m.payload)
            return out

        assert all_payloads(b1) == ["stock.usd", "stock.eur", "stock"]
        assert all_payloads(b2) == ["stock.eur", "bond.eur"]
        b1.delete()
        b2.delete()
