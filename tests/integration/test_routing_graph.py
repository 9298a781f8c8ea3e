"""Routing through graphs of exchanges, as RabbitMQ walks them (rabbit_exchange:route/2).

Every exchange reached, through an exchange-to-exchange binding or as an alternate exchange, routes
the message with all its routing keys (CC included); an exchange whose own bindings match nothing
hands the message to its alternate exchange, wherever it sits in the graph; each exchange is
visited once, so rings end, and each queue gets one copy. Each case passes against RabbitMQ in
differential mode.
"""
from __future__ import annotations

import pika
import pytest

from itutil import uname, wait_count


@pytest.fixture
def graph(pika_connect, names):
    """A channel and a builder that deletes what it declared afterwards."""
    conn = pika_connect()
    ch = conn.channel()
    made = {"x": [], "q": []}

    def x(type_="fanout", ae=None, name=None):
        name = name or names("rg-x")
        ch.exchange_declare(name, type_, arguments={"alternate-exchange": ae} if ae else None)
        made["x"].append(name)
        return name

    def q(*sources, key="", args=None):
        name = names("rg-q")
        ch.queue_declare(name, arguments=args)
        made["q"].append(name)
        for s in sources:
            ch.queue_bind(name, s, key)
        return name

    yield ch, x, q
    cleanup = pika_connect().channel()
    for name in made["q"]:
        cleanup.queue_delete(name)
    for name in made["x"]:
        cleanup.exchange_delete(name)


def counts(ch, *queues) -> list:
    ch.basic_qos(prefetch_count=0)      # a round trip: every publish before it has been routed
    return [ch.queue_declare(q, passive=True).method.message_count for q in queues]


def test_alternate_exchange_of_an_exchange_reached_by_a_binding(graph):
    ch, x, q = graph
    target = x()
    qa = q(target)
    inner = x(ae=target)                 # no bindings of its own
    outer = x("direct")
    ch.exchange_bind(inner, outer, "k")
    ch.basic_publish(outer, "k", b"m")
    assert wait_count(ch, qa, 1) == 1


def test_alternate_exchange_unused_when_the_exchange_routes_to_an_exchange(graph):
    """An exchange that matched a binding (to an exchange that then routes nowhere) does not use
    its own alternate exchange: the message is unroutable."""
    ch, x, q = graph
    ae = x()
    qa = q(ae)
    dead_end = x()
    src = x(ae=ae)
    ch.exchange_bind(dead_end, src)
    ch.basic_publish(src, "", b"m")
    assert counts(ch, qa) == [0]


def test_alternate_exchange_beside_queues(graph):
    """A queue matched directly and an alternate exchange used further down both get the message."""
    ch, x, q = graph
    ae = x()
    q2 = q(ae)
    inner = x(ae=ae)
    src = x()
    q1 = q(src)
    ch.exchange_bind(inner, src)
    ch.basic_publish(src, "", b"m")
    assert wait_count(ch, q1, 1) == 1 and wait_count(ch, q2, 1) == 1


def test_cc_keys_route_at_every_exchange_of_the_walk(graph):
    ch, x, q = graph
    outer = x("direct")
    inner = x("direct")
    ch.exchange_bind(inner, outer, "k1")
    qc = q(inner, key="k2")
    ch.basic_publish(outer, "k1", b"m", pika.BasicProperties(headers={"CC": ["k2"]}))
    assert wait_count(ch, qc, 1) == 1


def test_cc_match_means_no_alternate_exchange(graph):
    ch, x, q = graph
    ae = x()
    q_ae = q(ae)
    src = x("direct", ae=ae)
    q_cc = q(src, key="k2")
    ch.basic_publish(src, "k1", b"m", pika.BasicProperties(headers={"CC": ["k2"]}))
    assert wait_count(ch, q_cc, 1) == 1
    assert counts(ch, q_ae) == [0]


def test_ring_of_exchanges_delivers_once_per_queue(graph):
    ch, x, q = graph
    ring = [x() for _ in range(5)]
    for i, name in enumerate(ring):
        ch.exchange_bind(ring[(i + 1) % len(ring)], name)
    qa = q(ring[0], ring[2], ring[4])
    qb = q(ring[3])
    ch.basic_publish(ring[1], "", b"m")
    assert wait_count(ch, qa, 1) == 1 and wait_count(ch, qb, 1) == 1
    assert counts(ch, qa, qb) == [1, 1]


def test_ring_of_alternate_exchanges_ends(graph):
    ch, x, q = graph
    a, c = uname("rg-x"), uname("rg-x")
    x("direct", ae=c, name=a)           # a -> c -> b -> a, as alternate exchanges
    b = x("direct", ae=a)
    x("direct", ae=b, name=c)
    qb = q(b, key="only-b")
    ch.basic_publish(a, "k", b"m")
    ch.basic_publish(a, "only-b", b"m2")
    assert wait_count(ch, qb, 1) == 1
    assert counts(ch, qb) == [1]


def test_dead_letter_exchange_uses_its_alternate_exchange(graph):
    ch, x, q = graph
    ae = x()
    qa = q(ae)
    dlx = x(ae=ae)
    src = q(args={"x-dead-letter-exchange": dlx, "x-message-ttl": 0})
    ch.basic_publish("", src, b"m")
    assert wait_count(ch, qa, 1) == 1
