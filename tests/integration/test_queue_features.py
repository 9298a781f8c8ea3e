"""RabbitMQ queue extensions through pika: TTL, dead-lettering, length limits, priorities,
queue expiry, single active consumer, consumer priorities, direct reply-to, argument checks."""
from __future__ import annotations

import time

import pika
import pika.exceptions as pex
import pytest

from itutil import drain, settle, uname, wait_count
from support.harness import bodies

pytestmark = pytest.mark.timeout(30)


def dead_letter_target(ch):
    """A fanout exchange (auto-delete) and an exclusive queue bound to it."""
    dlx = uname("dlx")
    ch.exchange_declare(dlx, "fanout", auto_delete=True)
    dq = ch.queue_declare(uname("dead"), exclusive=True).method.queue
    ch.queue_bind(dq, dlx)
    return dlx, dq


def test_per_queue_message_ttl(ch):
    q = ch.queue_declare(uname("q"), exclusive=True, arguments={"x-message-ttl": 100}).method.queue
    ch.basic_publish("", q, b"short-lived")
    time.sleep(0.3)
    ch.basic_publish("", q, b"fresh")
    assert bodies(ch, q) == [b"fresh"]


def test_per_message_expiration(ch):
    q = ch.queue_declare(uname("q"), exclusive=True).method.queue
    ch.basic_publish("", q, b"gone", pika.BasicProperties(expiration="50"))
    ch.basic_publish("", q, b"stays", pika.BasicProperties(expiration="60000"))
    time.sleep(0.3)
    m, p, b = ch.basic_get(q, auto_ack=True)
    assert b == b"stays"
    assert p.expiration == "60000"      # the property is delivered unchanged
    assert ch.basic_get(q) == (None, None, None)


def test_expiration_zero_expires_unless_delivered_at_once(conn):
    ch = conn.channel()
    q = ch.queue_declare(uname("q"), exclusive=True).method.queue
    ch.basic_publish("", q, b"no consumer", pika.BasicProperties(expiration="0"))
    time.sleep(0.1)
    assert ch.basic_get(q) == (None, None, None)
    got = []
    ch.basic_consume(q, lambda c, m, p, b: got.append(b), auto_ack=True)
    ch.basic_publish("", q, b"consumer waiting", pika.BasicProperties(expiration="0"))
    drain(conn, lambda: got)
    assert got == [b"consumer waiting"]


def test_dead_letter_on_reject_expired_and_maxlen(ch):
    dlx, dq = dead_letter_target(ch)
    q = uname("src")
    ch.queue_declare(q, exclusive=True, arguments={
        "x-dead-letter-exchange": dlx, "x-max-length": 2, "x-message-ttl": 200})
    for i in range(3):      # m0 is pushed out by max-length, m1/m2 later expire
        ch.basic_publish("", q, f"m{i}".encode(), pika.BasicProperties(headers={"h": i}))
    q2 = uname("src2")
    ch.queue_declare(q2, exclusive=True, arguments={
        "x-dead-letter-exchange": dlx, "x-dead-letter-routing-key": "new-key"})
    ch.basic_publish("", q2, b"rejected", pika.BasicProperties(expiration="100000"))
    m, _, _ = ch.basic_get(q2, auto_ack=False)
    ch.basic_reject(m.delivery_tag, requeue=False)
    time.sleep(0.5)
    ch.basic_get(q)       # makes the queue drop its expired head, if it has not yet
    got = {}
    while True:
        m, p, b = ch.basic_get(dq, auto_ack=True)
        if m is None:
            break
        got[b] = (m.exchange, m.routing_key, p)
    assert set(got) == {b"m0", b"m1", b"m2", b"rejected"}

    def death(body):
        exchange, rk, props = got[body]
        [d] = props.headers["x-death"]
        return exchange, rk, props, d

    for body, reason in ((b"m0", "maxlen"), (b"m1", "expired"), (b"m2", "expired")):
        exchange, rk, props, d = death(body)
        assert (exchange, rk) == (dlx, q)           # the original routing key is kept
        assert props.headers["h"] == int(body[1:])
        assert (d["count"], d["reason"], d["queue"], d["exchange"], d["routing-keys"]) == (
            1, reason, q, "", [q])
        assert "time" in d
        assert (props.headers["x-first-death-reason"], props.headers["x-first-death-queue"],
                props.headers["x-first-death-exchange"]) == (reason, q, "")

    exchange, rk, props, d = death(b"rejected")
    assert (exchange, rk) == (dlx, "new-key")
    assert (d["count"], d["reason"], d["queue"], d["routing-keys"]) == (1, "rejected", q2, [q2])
    # the per-message TTL is removed and kept as original-expiration
    assert d["original-expiration"] == "100000"
    assert props.expiration is None


def test_max_length_drop_head(ch):
    q = ch.queue_declare(uname("q"), exclusive=True, arguments={"x-max-length": 2}).method.queue
    for i in range(5):
        ch.basic_publish("", q, f"m{i}".encode())
    assert bodies(ch, q) == [b"m3", b"m4"]


def test_max_length_reject_publish_nacks(conn):
    ch = conn.channel()
    ch.confirm_delivery()
    q = ch.queue_declare(uname("q"), exclusive=True, arguments={
        "x-max-length": 1, "x-overflow": "reject-publish"}).method.queue
    ch.basic_publish("", q, b"first")
    with pytest.raises(pex.NackError):
        ch.basic_publish("", q, b"second")
    assert bodies(ch, q) == [b"first"]


def test_max_length_bytes(ch):
    q = ch.queue_declare(uname("q"), exclusive=True,
                         arguments={"x-max-length-bytes": 10}).method.queue
    for b in (b"aaaa", b"bbbb", b"cccc"):
        ch.basic_publish("", q, b)
    assert bodies(ch, q) == [b"bbbb", b"cccc"]


def test_priority_queue_delivers_highest_first(ch):
    q = ch.queue_declare(uname("q"), exclusive=True, arguments={"x-max-priority": 5}).method.queue
    for body, prio in ((b"p0", None), (b"p3", 3), (b"p9", 9), (b"p1", 1), (b"p3b", 3)):
        ch.basic_publish("", q, body, pika.BasicProperties(priority=prio))
    wait_count(ch, q, 5)
    # priorities above the maximum count as the maximum, FIFO within a priority
    assert bodies(ch, q) == [b"p9", b"p3", b"p3b", b"p1", b"p0"]


def test_queue_expires_when_unused(conn, vhost):
    ch = conn.channel()
    q = uname("q")
    ch.queue_declare(q, arguments={"x-expires": 300})
    ch.queue_declare(q, passive=True)
    time.sleep(0.8)
    with pytest.raises(pex.ChannelClosedByBroker) as ei:
        ch.queue_declare(q, passive=True)
    assert (ei.value.reply_code, ei.value.reply_text) == (
        404, f"NOT_FOUND - no queue '{q}' in vhost '{vhost}'")


def test_single_active_consumer(conn):
    ch = conn.channel()
    q = ch.queue_declare(uname("q"), exclusive=True,
                         arguments={"x-single-active-consumer": True}).method.queue
    got = []
    t1 = ch.basic_consume(q, lambda c, m, p, b: got.append(m.consumer_tag), auto_ack=True)
    t2 = ch.basic_consume(q, lambda c, m, p, b: got.append(m.consumer_tag), auto_ack=True)
    for _ in range(4):
        ch.basic_publish("", q, b"x")
    drain(conn, lambda: len(got) == 4)
    assert got == [t1] * 4
    ch.basic_cancel(t1)
    ch.basic_publish("", q, b"y")
    drain(conn, lambda: len(got) == 5)
    assert got[-1] == t2


def test_consumer_priorities(conn):
    ch = conn.channel()
    q = ch.queue_declare(uname("q"), exclusive=True).method.queue
    got = []
    low = ch.basic_consume(q, lambda c, m, p, b: got.append(m.consumer_tag), auto_ack=True,
                           arguments={"x-priority": 1})
    high = ch.basic_consume(q, lambda c, m, p, b: got.append(m.consumer_tag), auto_ack=True,
                            arguments={"x-priority": 10})
    for _ in range(5):
        ch.basic_publish("", q, b"x")
    drain(conn, lambda: len(got) == 5)
    assert got == [high] * 5
    assert low != high


def test_direct_reply_to(conn):
    ch = conn.channel()
    server_q = ch.queue_declare(uname("rpc"), exclusive=True).method.queue
    replies = []
    ch.basic_consume("amq.rabbitmq.reply-to", lambda c, m, p, b: replies.append((m, p, b)),
                     auto_ack=True)
    ch.basic_publish("", server_q, b"ping", pika.BasicProperties(
        reply_to="amq.rabbitmq.reply-to", correlation_id="c-1"))
    m, props, body = ch.basic_get(server_q, auto_ack=True)
    assert body == b"ping"
    assert props.reply_to.startswith("amq.rabbitmq.reply-to.")
    assert len(props.reply_to) > len("amq.rabbitmq.reply-to.")
    other = conn.channel()
    other.basic_publish("", props.reply_to, b"pong", pika.BasicProperties(correlation_id="c-1"))
    drain(conn, lambda: replies)
    m, p, b = replies[0]
    assert (b, p.correlation_id, m.routing_key) == (b"pong", "c-1", props.reply_to)


def test_direct_reply_to_requires_a_consumer(conn):
    ch = conn.channel()
    q = ch.queue_declare(uname("rpc"), exclusive=True).method.queue
    ch.basic_publish("", q, b"x", pika.BasicProperties(reply_to="amq.rabbitmq.reply-to"))
    with pytest.raises(pex.ChannelClosedByBroker) as ei:
        ch.queue_declare(q, passive=True)
    assert (ei.value.reply_code, ei.value.reply_text) == (
        406, "PRECONDITION_FAILED - fast reply consumer does not exist")


@pytest.mark.parametrize("args, detail", [
    ({"x-expires": 0}, "{value_zero,0}"),
    ({"x-expires": -1}, "{value_negative,-1}"),
    ({"x-message-ttl": -1}, "{value_negative,-1}"),
    ({"x-message-ttl": "abc"}, '"expected integer, got longstr"'),
    ({"x-max-length": -1}, "{value_negative,-1}"),
    ({"x-max-length-bytes": -1}, "{value_negative,-1}"),
    ({"x-max-priority": 300}, "{max_value_exceeded,300}"),
    ({"x-max-priority": -1}, "{value_negative,-1}"),
    ({"x-overflow": "bogus"}, "invalid_overflow"),
    ({"x-dead-letter-routing-key": "k"}, "routing_key_but_no_dlx_defined"),
    ({"x-single-active-consumer": "yes"}, "{unacceptable_type,longstr}"),
])
def test_invalid_queue_arguments_406(conn, vhost, args, detail):
    ch = conn.channel()
    q = uname("q")
    with pytest.raises(pex.ChannelClosedByBroker) as ei:
        ch.queue_declare(q, exclusive=True, arguments=args)
    [key] = args
    assert (ei.value.reply_code, ei.value.reply_text) == (
        406, f"PRECONDITION_FAILED - invalid arg '{key}' for queue '{q}' in vhost '{vhost}': {detail}")


def test_classic_queue_type_argument_is_accepted(ch):
    q = ch.queue_declare(uname("q"), exclusive=True, arguments={"x-queue-type": "classic"}).method.queue
    ch.basic_publish("", q, b"x")
    assert bodies(ch, q) == [b"x"]
    settle(ch.connection, 0.05)


@pytest.mark.parametrize("durable", [False, True])
def test_a_zero_ttl_message_requeued_by_its_consumer_expires_and_is_dead_lettered(ch, durable):
    # x-message-ttl 0: the message goes straight to the waiting consumer; nacked with requeue it
    # comes back expired, and is dead-lettered (RabbitMQ 3.10.8 does so), not left in the queue
    dlx, dq = dead_letter_target(ch)
    q = uname("q")
    ch.queue_declare(q, durable=durable, exclusive=not durable,
                     arguments={"x-message-ttl": 0, "x-dead-letter-exchange": dlx})
    seen = []

    def on(chn, m, p, b):
        seen.append(b)
        chn.basic_nack(m.delivery_tag, requeue=True)
        chn.basic_cancel("zero")
    ch.basic_consume(q, on, consumer_tag="zero")
    ch.basic_publish("", q, b"now or never", pika.BasicProperties(delivery_mode=2))
    deadline = time.monotonic() + 5
    while not seen and time.monotonic() < deadline:
        ch.connection.process_data_events(0.05)
    assert seen == [b"now or never"]
    wait_count(ch, dq, 1)
    assert ch.queue_declare(q, passive=True).method.message_count == 0
    m, p, b = ch.basic_get(dq, auto_ack=True)
    assert b == b"now or never" and p.headers["x-death"][0]["reason"] == "expired"
    ch.queue_delete(q)
