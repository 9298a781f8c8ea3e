"""pika BlockingConnection against a live broker: the AMQP 0-9-1 model as RabbitMQ implements it.

Reply codes and texts are the ones RabbitMQ sends (checked against RabbitMQ 3.10.8); where
RabbitMQ 4.x words something differently, both texts are accepted and a comment says why.
"""
from __future__ import annotations

import datetime
import decimal
import re

import pika
import pika.exceptions as pex
import pytest

from itutil import EXCLUSIVE_LOCKED, drain, settle, uname, wait_count

pytestmark = pytest.mark.timeout(30)


def declare_tmp(ch, name=None, **kw):
    """A queue that disappears with the test's connection."""
    kw.setdefault("auto_delete", False)
    return ch.queue_declare(name or uname("q"), exclusive=True, **kw).method.queue


def get_body(ch, q, auto_ack=True):
    method, props, body = ch.basic_get(q, auto_ack=auto_ack)
    return None if method is None else body


def closed_by_broker(excinfo):
    return excinfo.value.reply_code, excinfo.value.reply_text


# ---------------------------------------------------------------------------
# declare / bind / publish / get
# ---------------------------------------------------------------------------
def test_declare_publish_get_roundtrip(ch):
    q = uname("q")
    ok = ch.queue_declare(q, exclusive=True)
    assert (ok.method.queue, ok.method.message_count, ok.method.consumer_count) == (q, 0, 0)
    for i in range(3):
        ch.basic_publish("", q, f"m{i}".encode())
    ok = ch.queue_declare(q, passive=True)
    assert ok.method.consumer_count == 0
    wait_count(ch, q, 3)

    method, props, body = ch.basic_get(q, auto_ack=False)
    assert body == b"m0"
    assert method.delivery_tag == 1
    assert method.redelivered is False
    assert method.exchange == ""
    assert method.routing_key == q
    assert method.message_count == 2          # messages left after this one
    method2, _, body2 = ch.basic_get(q, auto_ack=False)
    assert (body2, method2.delivery_tag, method2.message_count) == (b"m1", 2, 1)
    ch.basic_ack(2, multiple=True)
    assert get_body(ch, q) == b"m2"
    assert ch.basic_get(q) == (None, None, None)      # basic.get-empty
    assert ch.queue_declare(q, passive=True).method.message_count == 0


def test_bind_unbind_direct(ch):
    x = uname("x")
    ch.exchange_declare(x, "direct", auto_delete=True)
    q = declare_tmp(ch)
    ch.queue_bind(q, x, routing_key="k1")
    ch.queue_bind(q, x, routing_key="k2")
    ch.basic_publish(x, "k1", b"one")
    ch.basic_publish(x, "k2", b"two")
    ch.basic_publish(x, "k3", b"three")
    ch.queue_unbind(q, x, routing_key="k2")
    ch.basic_publish(x, "k2", b"four")
    ch.basic_publish(x, "k1", b"five")
    assert [get_body(ch, q) for _ in range(4)] == [b"one", b"two", b"five", None]
    ch.exchange_delete(x)


def test_default_exchange_routes_by_queue_name_only(ch):
    q = declare_tmp(ch)
    ch.basic_publish("", q, b"direct")
    ch.basic_publish("", q + "-nope", b"lost")
    assert get_body(ch, q) == b"direct"
    assert get_body(ch, q) is None


def test_fanout_ignores_routing_key_and_delivers_once_per_queue(ch):
    x = uname("x")
    ch.exchange_declare(x, "fanout", auto_delete=True)
    q1, q2 = declare_tmp(ch), declare_tmp(ch)
    ch.queue_bind(q1, x, routing_key="a")
    ch.queue_bind(q1, x, routing_key="b")      # a second binding to the same queue
    ch.queue_bind(q2, x)
    ch.basic_publish(x, "whatever", b"hi")
    assert [get_body(ch, q1), get_body(ch, q1)] == [b"hi", None]
    assert [get_body(ch, q2), get_body(ch, q2)] == [b"hi", None]
    ch.exchange_delete(x)


def test_direct_two_bindings_same_queue_one_copy(ch):
    x = uname("x")
    ch.exchange_declare(x, "direct", auto_delete=True)
    q = declare_tmp(ch)
    ch.queue_bind(q, x, routing_key="k")
    ch.queue_bind(q, x, routing_key="k")       # idempotent
    ch.basic_publish(x, "k", b"x")
    assert [get_body(ch, q), get_body(ch, q)] == [b"x", None]
    ch.exchange_delete(x)


TOPIC_CASES = [
    # (binding key, routing key, matches)
    ("a.b.c", "a.b.c", True),
    ("a.b.c", "a.b", False),
    ("*.orange.*", "quick.orange.rabbit", True),
    ("*.orange.*", "quick.orange", False),
    ("*.orange.*", "quick.orange.male.rabbit", False),
    ("*.*.rabbit", "lazy.orange.rabbit", True),
    ("lazy.#", "lazy", True),
    ("lazy.#", "lazy.a.b.c", True),
    ("lazy.#", "lazyx.a", False),
    ("#", "", True),
    ("#", "any.thing.at.all", True),
    ("*", "", False),
    ("*", "one", True),
    ("*", "one.two", False),
    ("a.*.#", "a", False),
    ("a.*.#", "a.b", True),
    ("a.*.#", "a.b.c.d", True),
    ("#.z", "z", True),
    ("#.z", "a.b.z", True),
    ("#.z", "a.b.zz", False),
    ("a.#.z", "a.z", True),
    ("a.#.z", "a.b.c.z", True),
    ("a.#.#.z", "a.z", True),
    ("", "", True),
    ("", "a", False),
    ("a..b", "a..b", True),
    ("a.*.b", "a..b", True),
    ("A.b", "a.b", False),
]


def test_topic_routing(ch):
    x = uname("x")
    ch.exchange_declare(x, "topic", auto_delete=True)
    queues = []
    for i, (binding, _rk, _m) in enumerate(TOPIC_CASES):
        q = declare_tmp(ch)
        ch.queue_bind(q, x, routing_key=binding)
        queues.append(q)
    for i, (_b, rk, _m) in enumerate(TOPIC_CASES):
        # tag each message with the case index; each queue must get only its own case (if it matches)
        ch.basic_publish(x, rk, str(i).encode())
    for i, (binding, rk, matches) in enumerate(TOPIC_CASES):
        got = []
        while True:
            body = get_body(ch, queues[i])
            if body is None:
                break
            got.append(body)
        # Case i's own message must be there exactly when it matches.
        assert (str(i).encode() in got) == matches, (binding, rk, got)
    ch.exchange_delete(x)


def test_headers_exchange_all_any(ch):
    x = uname("x")
    ch.exchange_declare(x, "headers", auto_delete=True)
    q_all, q_any, q_default, q_allx, q_anyx = (declare_tmp(ch) for _ in range(5))
    ch.queue_bind(q_all, x, arguments={"x-match": "all", "a": 1, "b": "two"})
    ch.queue_bind(q_any, x, arguments={"x-match": "any", "a": 1, "b": "two"})
    ch.queue_bind(q_default, x, arguments={"a": 1, "b": "two"})               # default is all
    ch.queue_bind(q_allx, x, arguments={"x-match": "all-with-x", "x-k": "v"})
    ch.queue_bind(q_anyx, x, arguments={"x-match": "any", "x-k": "v"})         # x- keys ignored

    def pub(headers, body):
        ch.basic_publish(x, "ignored", body, pika.BasicProperties(headers=headers))

    pub({"a": 1, "b": "two"}, b"both")
    pub({"a": 1}, b"only-a")
    pub({"a": 1, "b": "three"}, b"b-wrong")
    pub({"a": 1, "b": "two", "c": 3}, b"extra")
    pub({"x-k": "v"}, b"xk")
    pub(None, b"none")

    def all_bodies(q):
        out = []
        while (b := get_body(ch, q)) is not None:
            out.append(b)
        return out

    assert all_bodies(q_all) == [b"both", b"extra"]
    assert all_bodies(q_any) == [b"both", b"only-a", b"b-wrong", b"extra"]
    assert all_bodies(q_default) == [b"both", b"extra"]
    assert all_bodies(q_allx) == [b"xk"]
    # With plain "any", x- prefixed binding keys are not used for matching, so nothing matches.
    assert all_bodies(q_anyx) == []
    ch.exchange_delete(x)


def test_exchange_to_exchange_bindings(ch):
    src, mid, dst = uname("xs"), uname("xm"), uname("xd")
    ch.exchange_declare(src, "topic", auto_delete=False)
    ch.exchange_declare(mid, "fanout", auto_delete=False)
    ch.exchange_declare(dst, "direct", auto_delete=False)
    try:
        q_mid, q_dst = declare_tmp(ch), declare_tmp(ch)
        ch.exchange_bind(destination=mid, source=src, routing_key="a.#")
        ch.exchange_bind(destination=dst, source=mid)
        ch.queue_bind(q_mid, mid)
        ch.queue_bind(q_dst, dst, routing_key="a.b")
        ch.basic_publish(src, "a.b", b"ab")
        ch.basic_publish(src, "a.c", b"ac")
        ch.basic_publish(src, "b.b", b"bb")
        assert [get_body(ch, q_mid) for _ in range(3)] == [b"ab", b"ac", None]
        assert [get_body(ch, q_dst) for _ in range(2)] == [b"ab", None]
        # a cycle must not loop or duplicate
        ch.exchange_bind(destination=src, source=mid, routing_key="#")
        ch.basic_publish(src, "a.b", b"cycle")
        assert [get_body(ch, q_mid) for _ in range(2)] == [b"cycle", None]
        ch.exchange_unbind(destination=src, source=mid, routing_key="#")
        ch.exchange_unbind(destination=mid, source=src, routing_key="a.#")
        ch.basic_publish(src, "a.b", b"after-unbind")
        assert get_body(ch, q_mid) is None
    finally:
        for x in (src, mid, dst):
            ch.exchange_delete(x)


def test_internal_exchange_reachable_only_through_binding(ch, vhost):
    src, internal = uname("x"), uname("xi")
    ch.exchange_declare(src, "fanout", auto_delete=True)
    ch.exchange_declare(internal, "fanout", auto_delete=True, internal=True)
    q = declare_tmp(ch)
    ch.queue_bind(q, internal)
    ch.exchange_bind(destination=internal, source=src)
    ch.basic_publish(src, "", b"via-binding")
    assert get_body(ch, q) == b"via-binding"
    ch.basic_publish(internal, "", b"direct")
    with pytest.raises(pex.ChannelClosedByBroker) as ei:
        ch.queue_declare(q, passive=True)
    assert closed_by_broker(ei) == (
        403, f"ACCESS_REFUSED - cannot publish to internal exchange '{internal}' in vhost '{vhost}'")


def test_auto_delete_exchange_goes_when_last_binding_goes(conn, vhost):
    ch = conn.channel()
    x = uname("x")
    ch.exchange_declare(x, "direct", auto_delete=True)
    q = declare_tmp(ch)
    ch.queue_bind(q, x, "k")
    ch.exchange_declare(x, "direct", passive=True)
    ch.queue_unbind(q, x, "k")
    with pytest.raises(pex.ChannelClosedByBroker) as ei:
        ch.exchange_declare(x, "direct", passive=True)
    assert closed_by_broker(ei) == (404, f"NOT_FOUND - no exchange '{x}' in vhost '{vhost}'")


def test_auto_delete_queue_goes_when_last_consumer_cancels(conn, vhost):
    ch = conn.channel()
    q = uname("q")
    ch.queue_declare(q, auto_delete=True)
    ch.basic_publish("", q, b"kept until a consumer came and went")
    wait_count(ch, q, 1)   # no consumer yet: stays
    tag = ch.basic_consume(q, lambda *a: None, auto_ack=True)
    assert ch.queue_declare(q, passive=True).method.consumer_count == 1
    ch.basic_cancel(tag)
    with pytest.raises(pex.ChannelClosedByBroker) as ei:
        ch.queue_declare(q, passive=True)
    assert closed_by_broker(ei) == (404, f"NOT_FOUND - no queue '{q}' in vhost '{vhost}'")


# ---------------------------------------------------------------------------
# ack / nack / reject / requeue order / redelivered
# ---------------------------------------------------------------------------
def test_requeue_restores_original_order_and_sets_redelivered(ch):
    q = declare_tmp(ch)
    for i in range(5):
        ch.basic_publish("", q, f"m{i}".encode())
    got = [ch.basic_get(q, auto_ack=False) for _ in range(3)]       # m0 m1 m2, tags 1 2 3
    assert [(m.delivery_tag, b) for m, _, b in got] == [(1, b"m0"), (2, b"m1"), (3, b"m2")]
    ch.basic_reject(3, requeue=True)      # m2 back first ...
    ch.basic_nack(1, requeue=True)        # ... then m0; the queue keeps publish order anyway
    rest = []
    while (r := ch.basic_get(q, auto_ack=False))[0] is not None:
        rest.append((r[2], r[0].redelivered, r[0].delivery_tag))
    assert rest == [(b"m0", True, 4), (b"m2", True, 5), (b"m3", False, 6), (b"m4", False, 7)]


def test_nack_multiple_and_ack_multiple(ch):
    q = declare_tmp(ch)
    for i in range(6):
        ch.basic_publish("", q, f"m{i}".encode())
    for _ in range(6):
        ch.basic_get(q, auto_ack=False)
    ch.basic_ack(2, multiple=True)                    # m0 m1 done
    ch.basic_nack(4, multiple=True, requeue=True)     # m2 m3 back
    ch.basic_nack(5, multiple=False, requeue=False)   # m4 dropped (no dead-letter exchange)
    ch.basic_ack(6)                                   # m5 done
    bodies = []
    while (r := ch.basic_get(q, auto_ack=True))[0] is not None:
        bodies.append((r[2], r[0].redelivered))
    assert bodies == [(b"m2", True), (b"m3", True)]


def test_reject_without_requeue_drops(ch):
    q = declare_tmp(ch)
    ch.basic_publish("", q, b"bye")
    m, _, _ = ch.basic_get(q, auto_ack=False)
    ch.basic_reject(m.delivery_tag, requeue=False)
    assert ch.queue_declare(q, passive=True).method.message_count == 0


def test_closing_channel_requeues_unacked_in_order(conn):
    ch = conn.channel()
    q = declare_tmp(ch)
    for i in range(4):
        ch.basic_publish("", q, f"m{i}".encode())
    ch2 = conn.channel()
    got = []
    ch2.basic_consume(q, lambda c, m, p, b: got.append(b), auto_ack=False)
    drain(conn, lambda: len(got) == 4)
    ch2.close()
    again = []
    for _ in range(4):
        m, _, b = ch.basic_get(q, auto_ack=True)
        again.append((b, m.redelivered))
    assert again == [(b"m0", True), (b"m1", True), (b"m2", True), (b"m3", True)]


def test_basic_recover_requeue_redelivers(conn):
    ch = conn.channel()
    q = declare_tmp(ch)
    ch.basic_publish("", q, b"a")
    ch.basic_publish("", q, b"b")
    got = []
    ch.basic_consume(q, lambda c, m, p, b: got.append((b, m.redelivered, m.delivery_tag)))
    drain(conn, lambda: len(got) == 2)
    ch.basic_recover(requeue=True)
    drain(conn, lambda: len(got) == 4)
    assert got == [(b"a", False, 1), (b"b", False, 2), (b"a", True, 3), (b"b", True, 4)]


def test_unknown_delivery_tag_closes_channel_406(conn):
    ch = conn.channel()
    ch.basic_ack(5)
    with pytest.raises(pex.ChannelClosedByBroker) as ei:
        ch.queue_declare("", exclusive=True)
    assert closed_by_broker(ei) == (406, "PRECONDITION_FAILED - unknown delivery tag 5")
    assert conn.is_open
    assert conn.channel().is_open


def test_double_ack_is_unknown_delivery_tag(conn):
    ch = conn.channel()
    q = declare_tmp(ch)
    ch.basic_publish("", q, b"x")
    m, _, _ = ch.basic_get(q, auto_ack=False)
    ch.basic_ack(m.delivery_tag)
    ch.basic_ack(m.delivery_tag)
    with pytest.raises(pex.ChannelClosedByBroker) as ei:
        ch.queue_declare(q, passive=True)
    assert closed_by_broker(ei) == (406, "PRECONDITION_FAILED - unknown delivery tag 1")


def test_ack_of_auto_ack_delivery_is_unknown(conn):
    ch = conn.channel()
    q = declare_tmp(ch)
    ch.basic_publish("", q, b"x")
    m, _, _ = ch.basic_get(q, auto_ack=True)
    assert m.delivery_tag == 1
    ch.basic_nack(1, requeue=True)
    with pytest.raises(pex.ChannelClosedByBroker) as ei:
        ch.queue_declare(q, passive=True)
    assert closed_by_broker(ei) == (406, "PRECONDITION_FAILED - unknown delivery tag 1")


def test_ack_zero_with_multiple_acks_everything(ch):
    q = declare_tmp(ch)
    for i in range(3):
        ch.basic_publish("", q, b"x")
    for _ in range(3):
        ch.basic_get(q, auto_ack=False)
    ch.basic_ack(0, multiple=True)
    ch.basic_recover(requeue=True)     # nothing left unacked to recover
    assert ch.queue_declare(q, passive=True).method.message_count == 0


def test_delivery_tags_are_per_channel(conn):
    ch1, ch2 = conn.channel(), conn.channel()
    q = declare_tmp(ch1)
    for _ in range(4):
        ch1.basic_publish("", q, b"x")
    assert ch1.basic_get(q)[0].delivery_tag == 1
    assert ch2.basic_get(q)[0].delivery_tag == 1
    assert ch1.basic_get(q)[0].delivery_tag == 2
    assert ch2.basic_get(q)[0].delivery_tag == 2


# ---------------------------------------------------------------------------
# consumers, qos, cancel, tags
# ---------------------------------------------------------------------------
def test_consume_delivers_in_order_with_fields(conn):
    ch = conn.channel()
    q = declare_tmp(ch)
    for i in range(10):
        ch.basic_publish("", q, f"m{i}".encode())
    got = []
    tag = ch.basic_consume(q, lambda c, m, p, b: got.append((m, b)), auto_ack=True)
    drain(conn, lambda: len(got) == 10)
    assert [b for _, b in got] == [f"m{i}".encode() for i in range(10)]
    assert [m.delivery_tag for m, _ in got] == list(range(1, 11))
    assert all(m.consumer_tag == tag and m.routing_key == q and m.exchange == ""
               and m.redelivered is False for m, _ in got)


def test_server_generated_names(ch):
    q = ch.queue_declare("", exclusive=True).method.queue
    assert re.fullmatch(r"amq\.gen-[A-Za-z0-9_-]{22}", q), q
    assert ch.queue_declare(q, passive=True).method.queue == q
    q2 = ch.queue_declare("", exclusive=True).method.queue
    assert q2 != q and q2.startswith("amq.gen-")
    # (pika makes consumer tags itself; server-made amq.ctag- tags are tested with py-amqp and raw)


def test_qos_prefetch_is_per_consumer(conn):
    ch = conn.channel()
    q1, q2 = declare_tmp(ch), declare_tmp(ch)
    for q in (q1, q2):
        for i in range(6):
            ch.basic_publish("", q, b"x")
    ch.basic_qos(prefetch_count=2)
    got = {q1: [], q2: []}
    ch.basic_consume(q1, lambda c, m, p, b: got[q1].append(m.delivery_tag))
    ch.basic_consume(q2, lambda c, m, p, b: got[q2].append(m.delivery_tag))
    drain(conn, lambda: len(got[q1]) + len(got[q2]) >= 4)
    settle(conn, 0.3)
    assert (len(got[q1]), len(got[q2])) == (2, 2)
    ch.basic_ack(got[q1][0])
    drain(conn, lambda: len(got[q1]) == 3)
    settle(conn, 0.2)
    assert (len(got[q1]), len(got[q2])) == (3, 2)


def test_qos_global_is_shared_by_the_channel(conn):
    # RabbitMQ reinterprets global=true as a limit shared by all consumers of the channel.
    ch = conn.channel()
    q1, q2 = declare_tmp(ch), declare_tmp(ch)
    for q in (q1, q2):
        for i in range(5):
            ch.basic_publish("", q, b"x")
    ch.basic_qos(prefetch_count=3, global_qos=True)
    got = []
    ch.basic_consume(q1, lambda c, m, p, b: got.append((q1, m.delivery_tag)))
    ch.basic_consume(q2, lambda c, m, p, b: got.append((q2, m.delivery_tag)))
    drain(conn, lambda: len(got) >= 3)
    settle(conn, 0.3)
    assert len(got) == 3
    ch.basic_ack(got[-1][1], multiple=True)
    drain(conn, lambda: len(got) >= 6)
    settle(conn, 0.2)
    assert len(got) == 6


def test_qos_applies_to_consumers_created_after_it_only(conn):
    ch = conn.channel()
    q1, q2 = declare_tmp(ch), declare_tmp(ch)
    for q in (q1, q2):
        for i in range(5):
            ch.basic_publish("", q, b"x")
    got = {q1: 0, q2: 0}

    def cb(q):
        def on(c, m, p, b):
            got[q] += 1
        return on

    ch.basic_consume(q1, cb(q1))           # unlimited
    ch.basic_qos(prefetch_count=1)
    ch.basic_consume(q2, cb(q2))           # limited to 1
    drain(conn, lambda: got[q1] == 5 and got[q2] >= 1)
    settle(conn, 0.3)
    assert got == {q1: 5, q2: 1}


def test_basic_cancel_stops_deliveries_unacked_stay_ackable(conn):
    ch = conn.channel()
    q = declare_tmp(ch)
    ch.basic_qos(prefetch_count=2)
    for i in range(5):
        ch.basic_publish("", q, f"m{i}".encode())
    got = []
    tag = ch.basic_consume(q, lambda c, m, p, b: got.append((m.delivery_tag, b)))
    drain(conn, lambda: len(got) == 2)
    ch.basic_cancel(tag)
    ch.basic_ack(got[0][0])
    ch.basic_ack(got[1][0])
    settle(conn, 0.2)
    assert [b for _, b in got] == [b"m0", b"m1"]
    ok = ch.queue_declare(q, passive=True)
    assert (ok.method.message_count, ok.method.consumer_count) == (3, 0)


def test_consumers_round_robin(conn):
    ch = conn.channel()
    q = declare_tmp(ch)
    got = []
    t1 = ch.basic_consume(q, lambda c, m, p, b: got.append((m.consumer_tag, b)), auto_ack=True)
    t2 = ch.basic_consume(q, lambda c, m, p, b: got.append((m.consumer_tag, b)), auto_ack=True)
    for i in range(6):
        ch.basic_publish("", q, f"m{i}".encode())
    drain(conn, lambda: len(got) == 6)
    assert [b for _, b in got] == [f"m{i}".encode() for i in range(6)]
    assert [t for t, _ in got] == [t1, t2, t1, t2, t1, t2]


def test_exclusive_consumer_403(conn, vhost):
    ch = conn.channel()
    q = uname("q")
    ch.queue_declare(q, auto_delete=True)
    ch.basic_consume(q, lambda *a: None, exclusive=True, consumer_tag="only")
    ch2 = conn.channel()
    with pytest.raises(pex.ChannelClosedByBroker) as ei:
        ch2.basic_consume(q, lambda *a: None)
    assert closed_by_broker(ei) == (403, f"ACCESS_REFUSED - queue '{q}' in vhost '{vhost}' in exclusive use")
    # and the other way round: an exclusive consumer cannot join a queue that has consumers
    q2 = uname("q")
    ch3 = conn.channel()
    ch3.queue_declare(q2, auto_delete=True)
    ch3.basic_consume(q2, lambda *a: None)
    ch4 = conn.channel()
    with pytest.raises(pex.ChannelClosedByBroker) as ei:
        ch4.basic_consume(q2, lambda *a: None, exclusive=True)
    assert closed_by_broker(ei) == (403, f"ACCESS_REFUSED - queue '{q2}' in vhost '{vhost}' in exclusive use")


# ---------------------------------------------------------------------------
# mandatory, confirms, transactions
# ---------------------------------------------------------------------------
def test_mandatory_unroutable_is_returned_312(conn):
    ch = conn.channel()
    returned = []
    ch.add_on_return_callback(lambda c, m, p, b: returned.append((m, p, b)))
    x = uname("x")
    ch.exchange_declare(x, "direct", auto_delete=True)
    q = declare_tmp(ch)
    ch.queue_bind(q, x, "yes")
    ch.basic_publish(x, "no", b"unroutable", pika.BasicProperties(message_id="m1"), mandatory=True)
    ch.basic_publish(x, "yes", b"routable", mandatory=True)
    ch.basic_publish(x, "no", b"dropped silently", mandatory=False)
    drain(conn, lambda: len(returned) >= 1)
    settle(conn, 0.2)
    assert len(returned) == 1
    m, p, b = returned[0]
    assert (m.reply_code, m.reply_text, m.exchange, m.routing_key) == (312, "NO_ROUTE", x, "no")
    assert (p.message_id, b) == ("m1", b"unroutable")
    assert get_body(ch, q) == b"routable"
    ch.exchange_delete(x)


def test_confirms_ack_routable_and_unroutable(conn):
    ch = conn.channel()
    ch.confirm_delivery()
    q = declare_tmp(ch)
    ch.basic_publish("", q, b"ok")                              # acked
    ch.basic_publish("", q + "-none", b"nobody")                # unroutable, not mandatory: still acked
    with pytest.raises(pex.UnroutableError) as ei:
        ch.basic_publish("", q + "-none", b"back", mandatory=True)
    [msg] = ei.value.messages
    assert (msg.method.reply_code, msg.method.reply_text, msg.body) == (312, "NO_ROUTE", b"back")
    wait_count(ch, q, 1)


def test_tx_commit_and_rollback(conn):
    ch = conn.channel()
    q = declare_tmp(ch)
    ch.tx_select()
    ch.basic_publish("", q, b"rolled-back")
    assert ch.queue_declare(q, passive=True).method.message_count == 0
    ch.tx_rollback()
    assert ch.basic_get(q) == (None, None, None)
    ch.basic_publish("", q, b"c1")
    ch.basic_publish("", q, b"c2")
    ch.tx_commit()
    wait_count(ch, q, 2)
    # acks are transactional too
    m, _, b = ch.basic_get(q, auto_ack=False)
    assert b == b"c1"
    ch.basic_ack(m.delivery_tag)
    ch.tx_rollback()                     # the ack is discarded: c1 stays unacked
    ch.basic_recover(requeue=True)
    wait_count(ch, q, 2)
    m, _, b = ch.basic_get(q, auto_ack=False)
    assert (b, m.redelivered) == (b"c1", True)
    ch.basic_ack(m.delivery_tag)
    ch.tx_commit()
    wait_count(ch, q, 1)


def test_tx_commit_without_select_406(conn):
    ch = conn.channel()
    with pytest.raises(pex.ChannelClosedByBroker) as ei:
        ch.tx_commit()
    assert closed_by_broker(ei) == (406, "PRECONDITION_FAILED - channel is not transactional")
    ch = conn.channel()
    with pytest.raises(pex.ChannelClosedByBroker) as ei:
        ch.tx_rollback()
    assert closed_by_broker(ei) == (406, "PRECONDITION_FAILED - channel is not transactional")


def test_confirm_and_tx_are_exclusive(conn):
    ch = conn.channel()
    ch.confirm_delivery()
    with pytest.raises(pex.ChannelClosedByBroker) as ei:
        ch.tx_select()
    assert closed_by_broker(ei) == (406, "PRECONDITION_FAILED - cannot switch from confirm to tx mode")
    ch = conn.channel()
    ch.tx_select()
    with pytest.raises(pex.ChannelClosedByBroker) as ei:
        ch.confirm_delivery()
    assert closed_by_broker(ei) == (406, "PRECONDITION_FAILED - cannot switch from tx to confirm mode")


# ---------------------------------------------------------------------------
# errors on declare / delete
# ---------------------------------------------------------------------------
def test_passive_declare_missing_queue_404_then_channel_reusable(conn, vhost):
    ch = conn.channel()
    q = uname("missing")
    with pytest.raises(pex.ChannelClosedByBroker) as ei:
        ch.queue_declare(q, passive=True)
    assert closed_by_broker(ei) == (404, f"NOT_FOUND - no queue '{q}' in vhost '{vhost}'")
    assert conn.is_open
    ch2 = conn.channel()
    with pytest.raises(pex.ChannelClosedByBroker) as ei:
        ch2.exchange_declare(q, "direct", passive=True)
    assert closed_by_broker(ei) == (404, f"NOT_FOUND - no exchange '{q}' in vhost '{vhost}'")


def test_inequivalent_queue_redeclare_406(conn, vhost):
    ch = conn.channel()
    q = uname("q")
    ch.queue_declare(q, auto_delete=True)
    ch.basic_consume(q, lambda *a: None)     # keeps the auto-delete queue alive
    cases = [
        (dict(durable=True, auto_delete=True),
         f"PRECONDITION_FAILED - inequivalent arg 'durable' for queue '{q}' in vhost '{vhost}': "
         "received 'true' but current is 'false'"),
        (dict(auto_delete=False),
         f"PRECONDITION_FAILED - inequivalent arg 'auto_delete' for queue '{q}' in vhost '{vhost}': "
         "received 'false' but current is 'true'"),
        (dict(auto_delete=True, arguments={"x-max-length": 10}),
         f"PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue '{q}' in vhost '{vhost}': "
         "received the value '10' of type 'signedint' but current is none"),
    ]
    for kwargs, text in cases:
        ch2 = conn.channel()
        with pytest.raises(pex.ChannelClosedByBroker) as ei:
            ch2.queue_declare(q, **kwargs)
        assert closed_by_broker(ei) == (406, text)
    # an equivalent redeclare is fine
    ok = conn.channel().queue_declare(q, auto_delete=True)
    assert ok.method.consumer_count == 1


def test_exclusive_queue_durable_flag_is_ignored(conn):
    """RabbitMQ declares exclusive queues as non-durable whatever the durable bit says, so a
    redeclare with a different durable bit is not an inequivalence."""
    ch = conn.channel()
    q1, q2 = uname("q"), uname("q")
    ch.queue_declare(q1, exclusive=True, durable=True)
    ch.queue_declare(q1, exclusive=True, durable=False)
    ch.queue_declare(q2, exclusive=True, durable=False)
    ch.queue_declare(q2, exclusive=True, durable=True)
    ch.basic_publish("", q1, b"ok")
    assert get_body(ch, q1) == b"ok"


def test_inequivalent_queue_argument_values(conn, vhost):
    ch = conn.channel()
    q = uname("q")
    ch.queue_declare(q, exclusive=True, arguments={"x-max-length": 10, "x-message-ttl": 5000})
    ch2 = conn.channel()
    with pytest.raises(pex.ChannelClosedByBroker) as ei:
        ch2.queue_declare(q, exclusive=True, arguments={"x-max-length": 11, "x-message-ttl": 5000})
    assert closed_by_broker(ei) == (
        406, f"PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue '{q}' in vhost "
             f"'{vhost}': received '11' but current is '10'")
    ch3 = conn.channel()
    with pytest.raises(pex.ChannelClosedByBroker) as ei:
        ch3.queue_declare(q, exclusive=True, arguments={"x-max-length": 10})
    assert closed_by_broker(ei) == (
        406, f"PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue '{q}' in vhost "
             f"'{vhost}': received none but current is the value '5000' of type 'signedint'")
    ch4 = conn.channel()
    with pytest.raises(pex.ChannelClosedByBroker) as ei:
        ch4.queue_declare(q, exclusive=True, arguments={"x-max-length": "10", "x-message-ttl": 5000})
    # Both present but of different type classes: RabbitMQ prints the bare values, so the text
    # says "received '10' but current is '10'" (string "10" against integer 10).
    assert closed_by_broker(ei) == (
        406, f"PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue '{q}' in vhost "
             f"'{vhost}': received '10' but current is '10'")
    # non-x- arguments are not compared
    conn.channel().queue_declare(q, exclusive=True,
                                 arguments={"x-max-length": 10, "x-message-ttl": 5000, "foo": 1})


def test_inequivalent_exchange_redeclare_406(conn, vhost):
    ch = conn.channel()
    x = uname("x")
    ch.exchange_declare(x, "direct", auto_delete=True)
    q = declare_tmp(ch)
    ch.queue_bind(q, x, "k")
    cases = [
        (dict(exchange_type="fanout", auto_delete=True), "type", "fanout", "direct"),
        (dict(exchange_type="direct", durable=True, auto_delete=True), "durable", "true", "false"),
        (dict(exchange_type="direct", auto_delete=False), "auto_delete", "false", "true"),
        (dict(exchange_type="direct", auto_delete=True, internal=True), "internal", "true", "false"),
    ]
    for kwargs, arg, got, cur in cases:
        c = conn.channel()
        with pytest.raises(pex.ChannelClosedByBroker) as ei:
            c.exchange_declare(x, **kwargs)
        assert closed_by_broker(ei) == (
            406, f"PRECONDITION_FAILED - inequivalent arg '{arg}' for exchange '{x}' in vhost "
                 f"'{vhost}': received '{got}' but current is '{cur}'")
    conn.channel().exchange_declare(x, "direct", auto_delete=True)    # equivalent: fine
    ch.exchange_delete(x)


def test_reserved_amq_prefix_403(conn, vhost):
    name = "amq." + uname("reserved")
    ch = conn.channel()
    with pytest.raises(pex.ChannelClosedByBroker) as ei:
        ch.exchange_declare(name, "direct")
    assert closed_by_broker(ei) == (
        403, f"ACCESS_REFUSED - exchange name '{name}' contains reserved prefix 'amq.*'")
    ch = conn.channel()
    with pytest.raises(pex.ChannelClosedByBroker) as ei:
        ch.queue_declare(name)
    assert closed_by_broker(ei) == (
        403, f"ACCESS_REFUSED - queue name '{name}' contains reserved prefix 'amq.*'")
    # passive declare of an amq.* name is a plain lookup
    ch = conn.channel()
    with pytest.raises(pex.ChannelClosedByBroker) as ei:
        ch.exchange_declare(name, "direct", passive=True)
    assert closed_by_broker(ei) == (404, f"NOT_FOUND - no exchange '{name}' in vhost '{vhost}'")
    # redeclaring a predeclared amq.* exchange with the same properties is allowed
    conn.channel().exchange_declare("amq.topic", "topic", durable=True)
    conn.channel().exchange_declare("amq.headers", "headers", passive=True)


def test_default_and_system_exchanges_are_protected(conn, vhost):
    ch = conn.channel()
    with pytest.raises(pex.ChannelClosedByBroker) as ei:
        ch.exchange_delete("amq.direct")
    assert closed_by_broker(ei) == (
        403, f"ACCESS_REFUSED - deletion of system exchange 'amq.direct' in vhost '{vhost}' not allowed")
    ch = conn.channel()
    q = declare_tmp(ch)
    with pytest.raises(pex.ChannelClosedByBroker) as ei:
        ch.queue_bind(q, "", routing_key="k")
    assert closed_by_broker(ei) == (403, "ACCESS_REFUSED - operation not permitted on the default exchange")
    ch = conn.channel()
    with pytest.raises(pex.ChannelClosedByBroker) as ei:
        ch.exchange_delete("")
    assert closed_by_broker(ei) == (403, "ACCESS_REFUSED - operation not permitted on the default exchange")
    ch = conn.channel()
    with pytest.raises(pex.ChannelClosedByBroker) as ei:
        ch.exchange_declare("amq.default", "direct", durable=True)
    assert closed_by_broker(ei) == (
        403, "ACCESS_REFUSED - exchange name 'amq.default' contains reserved prefix 'amq.*'")


def test_unknown_exchange_type(conn):
    ch = conn.channel()
    with pytest.raises((pex.ConnectionClosedByBroker, pex.ChannelClosedByBroker)) as ei:
        ch.exchange_declare(uname("x"), "no-such-type")
    if isinstance(ei.value, pex.ConnectionClosedByBroker):
        # RabbitMQ 3.x: a connection error
        assert closed_by_broker(ei) == (503, "COMMAND_INVALID - unknown exchange type 'no-such-type'")
    else:
        # RabbitMQ 4.x: a channel error
        assert closed_by_broker(ei) == (406, "PRECONDITION_FAILED - unknown exchange type 'no-such-type'")
        assert conn.is_open


def test_publish_to_missing_exchange_404(conn, vhost):
    ch = conn.channel()
    x = uname("nox")
    ch.basic_publish(x, "k", b"x")
    with pytest.raises(pex.ChannelClosedByBroker) as ei:
        ch.queue_declare("", exclusive=True)
    assert closed_by_broker(ei) == (404, f"NOT_FOUND - no exchange '{x}' in vhost '{vhost}'")


def test_delete_and_purge_missing_things(conn, vhost):
    ch = conn.channel()
    # deleting what does not exist is not an error
    assert ch.queue_delete(uname("noq")).method.message_count == 0
    ch.exchange_delete(uname("nox"))
    q = uname("noq")
    with pytest.raises(pex.ChannelClosedByBroker) as ei:
        ch.queue_purge(q)
    assert closed_by_broker(ei) == (404, f"NOT_FOUND - no queue '{q}' in vhost '{vhost}'")
    ch = conn.channel()
    with pytest.raises(pex.ChannelClosedByBroker) as ei:
        ch.queue_bind(q, "amq.direct", "k")
    assert closed_by_broker(ei) == (404, f"NOT_FOUND - no queue '{q}' in vhost '{vhost}'")
    ch = conn.channel()
    real = declare_tmp(ch)
    with pytest.raises(pex.ChannelClosedByBroker) as ei:
        ch.queue_bind(real, q, "k")
    assert closed_by_broker(ei) == (404, f"NOT_FOUND - no exchange '{q}' in vhost '{vhost}'")
    ch = conn.channel()
    with pytest.raises(pex.ChannelClosedByBroker) as ei:
        ch.basic_consume(q, lambda *a: None)
    assert closed_by_broker(ei) == (404, f"NOT_FOUND - no queue '{q}' in vhost '{vhost}'")
    ch = conn.channel()
    ch.queue_unbind(real, "amq.direct", "never-bound")      # unbinding a missing binding is fine


def test_purge_and_delete_counts_and_conditions(conn, vhost):
    ch = conn.channel()
    q = uname("q")
    ch.queue_declare(q, auto_delete=False)
    try:
        for _ in range(3):
            ch.basic_publish("", q, b"x")
        wait_count(ch, q, 3)
        assert ch.queue_purge(q).method.message_count == 3
        assert ch.queue_purge(q).method.message_count == 0
        ch.basic_publish("", q, b"y")
        ch.basic_publish("", q, b"z")
        with pytest.raises(pex.ChannelClosedByBroker) as ei:
            ch.queue_delete(q, if_empty=True)
        assert closed_by_broker(ei) == (406, f"PRECONDITION_FAILED - queue '{q}' in vhost '{vhost}' not empty")
        ch = conn.channel()
        tag = ch.basic_consume(q, lambda *a: None)
        ch2 = conn.channel()
        with pytest.raises(pex.ChannelClosedByBroker) as ei:
            ch2.queue_delete(q, if_unused=True)
        assert closed_by_broker(ei) == (406, f"PRECONDITION_FAILED - queue '{q}' in vhost '{vhost}' in use")
        ch.basic_cancel(tag)
        ch.basic_recover(requeue=True)
        assert ch.queue_delete(q, if_unused=True).method.message_count == 2
    finally:
        conn.channel().queue_delete(q)


def test_exchange_delete_if_unused(conn, vhost):
    ch = conn.channel()
    x = uname("x")
    ch.exchange_declare(x, "fanout")
    try:
        q = declare_tmp(ch)
        ch.queue_bind(q, x)
        with pytest.raises(pex.ChannelClosedByBroker) as ei:
            ch.exchange_delete(x, if_unused=True)
        assert closed_by_broker(ei) == (406, f"PRECONDITION_FAILED - exchange '{x}' in vhost '{vhost}' in use")
        ch = conn.channel()
        ch.queue_unbind(q, x)
        ch.exchange_delete(x, if_unused=True)
        with pytest.raises(pex.ChannelClosedByBroker):
            ch.exchange_declare(x, "fanout", passive=True)
    finally:
        conn.channel().exchange_delete(x)


def test_deleting_queue_removes_its_bindings(conn):
    ch = conn.channel()
    x = uname("x")
    ch.exchange_declare(x, "fanout", auto_delete=False)
    try:
        q = uname("q")
        ch.queue_declare(q)
        ch.queue_bind(q, x)
        ch.queue_delete(q)
        ch.queue_declare(q, exclusive=True)
        ch.basic_publish(x, "", b"x")
        assert ch.basic_get(q) == (None, None, None)
    finally:
        ch.exchange_delete(x)


def test_exclusive_queue_locked_for_other_connections_405(pika_connect, vhost):
    owner = pika_connect()
    och = owner.channel()
    q = uname("excl")
    och.queue_declare(q, exclusive=True)
    och.basic_publish("", q, b"mine")
    other = pika_connect()
    for op in (lambda c: c.queue_declare(q),
               lambda c: c.queue_declare(q, passive=True),
               lambda c: c.basic_get(q),
               lambda c: c.basic_consume(q, lambda *a: None),
               lambda c: c.queue_purge(q),
               lambda c: c.queue_delete(q),
               lambda c: c.queue_bind(q, "amq.fanout")):
        c = other.channel()
        with pytest.raises(pex.ChannelClosedByBroker) as ei:
            op(c)
        assert closed_by_broker(ei) == (405, EXCLUSIVE_LOCKED.format(q=q, vhost=vhost))
    # publishing to it from elsewhere is allowed
    other.channel().basic_publish("", q, b"theirs")
    assert [get_body(och, q), get_body(och, q)] == [b"mine", b"theirs"]
    # ... and it disappears with its owner
    owner.close()
    c = other.channel()
    with pytest.raises(pex.ChannelClosedByBroker) as ei:
        c.queue_declare(q, passive=True)
    assert closed_by_broker(ei) == (404, f"NOT_FOUND - no queue '{q}' in vhost '{vhost}'")


def test_redeclare_exclusive_mismatch_on_same_connection_405(conn, vhost):
    ch = conn.channel()
    q = uname("q")
    ch.queue_declare(q, auto_delete=True)
    ch.basic_consume(q, lambda *a: None)
    ch2 = conn.channel()
    with pytest.raises(pex.ChannelClosedByBroker) as ei:
        ch2.queue_declare(q, exclusive=True, auto_delete=True)
    assert closed_by_broker(ei) == (405, EXCLUSIVE_LOCKED.format(q=q, vhost=vhost))


def test_queue_name_shortcut_uses_last_declared_queue(conn):
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind("", "amq.fanout")             # "" means the channel's last declared queue
    ch.basic_publish("amq.fanout", "", b"via-shortcut")
    m, _, b = ch.basic_get("", auto_ack=True)
    assert (b, m.routing_key) == (b"via-shortcut", "")
    ch.queue_unbind(q, "amq.fanout")
    fresh = conn.channel()
    with pytest.raises(pex.ChannelClosedByBroker) as ei:
        fresh.basic_get("")
    assert closed_by_broker(ei) == (404, "NOT_FOUND - no previously declared queue")


# ---------------------------------------------------------------------------
# message content: sizes, properties, headers
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("size", [0, 1, 131072 - 8, 131072 - 7, 131072, 1_000_003])
def test_body_sizes_roundtrip(ch, size):
    q = declare_tmp(ch)
    body = bytes((i * 7 + 3) % 256 for i in range(size))
    ch.basic_publish("", q, body)
    m, props, got = ch.basic_get(q, auto_ack=True)
    assert len(got) == size
    assert got == body


def test_large_message_with_small_frame_max(pika_connect):
    conn = pika_connect(frame_max=4096)
    ch = conn.channel()
    q = declare_tmp(ch)
    body = bytes(range(256)) * 1000
    ch.basic_publish("", q, body)
    got = []
    ch.basic_consume(q, lambda c, m, p, b: got.append(b), auto_ack=True)
    drain(conn, lambda: got)
    assert got == [body]


def test_all_basic_properties_roundtrip(ch):
    q = declare_tmp(ch)
    ts = 1_700_000_000
    headers = {
        "str": "héllo",
        "int": 42,
        "neg": -7,
        "big": 2 ** 40,
        "bool_t": True,
        "bool_f": False,
        "decimal": decimal.Decimal("3.14"),
        "ts": datetime.datetime(2024, 1, 2, 3, 4, 5),
        "table": {"nested": "yes", "n": 1},
        "array": [1, "two", {"three": 3}, [4]],
        "void": None,
        "bytes": b"\x00\x01\xff",
        "empty": "",
    }
    props = pika.BasicProperties(
        content_type="application/json", content_encoding="gzip", headers=headers,
        delivery_mode=2, priority=7, correlation_id="corr-1", reply_to="reply.q",
        expiration="60000", message_id="msg-1", timestamp=ts, type="kind",
        user_id="guest", app_id="tests", cluster_id="c1")
    ch.basic_publish("", q, b"{}", props)
    m, p, body = ch.basic_get(q, auto_ack=True)
    assert body == b"{}"
    assert p.content_type == "application/json"
    assert p.content_encoding == "gzip"
    assert p.delivery_mode == 2
    assert p.priority == 7
    assert p.correlation_id == "corr-1"
    assert p.reply_to == "reply.q"
    assert p.expiration == "60000"
    assert p.message_id == "msg-1"
    assert p.timestamp == ts
    assert p.type == "kind"
    assert p.user_id == "guest"
    assert p.app_id == "tests"
    # cluster_id is deprecated; RabbitMQ 3.10 passes it through, 4.x may drop it.
    assert p.cluster_id in ("c1", None)
    h = p.headers
    assert h["str"] == "héllo"
    assert h["int"] == 42 and h["neg"] == -7 and h["big"] == 2 ** 40
    assert h["bool_t"] is True and h["bool_f"] is False
    assert h["decimal"] == decimal.Decimal("3.14")
    assert h["ts"] == datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    assert h["table"] == {"nested": "yes", "n": 1}
    assert h["array"] == [1, "two", {"three": 3}, [4]]
    assert h["void"] is None
    assert h["bytes"] == b"\x00\x01\xff"
    assert h["empty"] == ""
    assert set(h) == set(headers)


def test_no_properties_arrive_as_none(ch):
    q = declare_tmp(ch)
    ch.basic_publish("", q, b"bare")
    _, p, _ = ch.basic_get(q, auto_ack=True)
    assert (p.content_type, p.headers, p.delivery_mode, p.priority, p.message_id,
            p.timestamp) == (None, None, None, None, None, None)


def test_user_id_must_match_authenticated_user_406(conn):
    ch = conn.channel()
    ch.basic_publish("", "nowhere", b"x", pika.BasicProperties(user_id="mallory"))
    with pytest.raises(pex.ChannelClosedByBroker) as ei:
        ch.queue_declare("", exclusive=True)
    assert closed_by_broker(ei) == (
        406, "PRECONDITION_FAILED - user_id property set to 'mallory' but authenticated user was 'guest'")


@pytest.mark.parametrize("expiration, detail", [
    ("abc", "no_integer"),
    ("-5", "{value_negative,-5}"),
])
def test_invalid_expiration_406(conn, expiration, detail):
    ch = conn.channel()
    ch.basic_publish("", "nowhere", b"x", pika.BasicProperties(expiration=expiration))
    with pytest.raises(pex.ChannelClosedByBroker) as ei:
        ch.queue_declare("", exclusive=True)
    assert closed_by_broker(ei) == (406, f"PRECONDITION_FAILED - invalid expiration '{expiration}': {detail}")


def test_connection_survives_many_channel_errors(conn):
    for i in range(5):
        ch = conn.channel()
        with pytest.raises(pex.ChannelClosedByBroker):
            ch.queue_declare(uname("missing"), passive=True)
    ch = conn.channel()
    q = declare_tmp(ch)
    ch.basic_publish("", q, b"still fine")
    assert get_body(ch, q) == b"still fine"
    assert conn.is_open


def test_channel_numbers_are_reused_after_close(conn):
    chans = [conn.channel() for _ in range(3)]
    numbers = [c.channel_number for c in chans]
    chans[1].close()
    again = conn.channel()
    assert again.channel_number == numbers[1]
    q = declare_tmp(again)
    again.basic_publish("", q, b"ok")
    assert get_body(again, q) == b"ok"
