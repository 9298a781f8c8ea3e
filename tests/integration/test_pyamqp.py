"""py-amqp (the `amqp` package, kombu's default transport) against a live broker."""
from __future__ import annotations

import datetime
import decimal
import re
import socket

import amqp
import amqp.exceptions as aex
import pytest

from itutil import uname

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def connect(broker):
    made = []

    def make(**kw):
        c = amqp.Connection(host=f"{broker.host}:{broker.port}", userid="guest", password="guest",
                            virtual_host=broker.vhost, connect_timeout=5, **kw)
        c.connect()
        made.append(c)
        return c

    yield make
    for c in made:
        try:
            c.collect() if not c.connected else c.close()
        except Exception:
            pass


@pytest.fixture
def chan(connect):
    return connect().channel()


def drain_until(conn, predicate, timeout=5.0):
    import time
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        try:
            conn.drain_events(timeout=0.1)
        except socket.timeout:
            pass


def test_declare_returns_name_and_counts(chan):
    q = uname("q")
    name, count, consumers = chan.queue_declare(q, exclusive=True, auto_delete=False)
    assert (name, count, consumers) == (q, 0, 0)
    server_named = chan.queue_declare("", exclusive=True).queue
    assert re.fullmatch(r"amq\.gen-[A-Za-z0-9_-]{22}", server_named)


def test_publish_get_ack_with_properties(chan):
    q = chan.queue_declare(uname("q"), exclusive=True).queue
    msg = amqp.Message(b"payload", content_type="text/plain", delivery_mode=1, priority=3,
                       correlation_id="c", message_id="m", application_headers={"k": "v", "n": 5})
    chan.basic_publish(msg, exchange="", routing_key=q)
    got = chan.basic_get(q, no_ack=False)
    assert got.body == b"payload"
    assert got.delivery_info["delivery_tag"] == 1
    assert got.delivery_info["redelivered"] is False
    assert got.delivery_info["routing_key"] == q
    assert got.delivery_info["message_count"] == 0
    assert got.properties["content_type"] == "text/plain"
    assert got.properties["priority"] == 3
    assert got.properties["correlation_id"] == "c"
    assert got.properties["message_id"] == "m"
    assert got.headers == {"k": "v", "n": 5}
    chan.basic_ack(got.delivery_tag)
    assert chan.basic_get(q) is None


def test_all_field_types_roundtrip(chan):
    q = chan.queue_declare(uname("q"), exclusive=True).queue
    headers = {
        "s": "text", "i": 7, "neg": -7, "long": 2 ** 40, "t": True, "f": False,
        "d": 2.5, "dec": decimal.Decimal("1.25"),
        "ts": datetime.datetime(2020, 5, 6, 7, 8, 9),
        "tbl": {"a": 1, "b": {"c": "d"}}, "arr": [1, "x", [2, 3], {"e": None}],
        "none": None,
    }
    chan.basic_publish(amqp.Message(b"", application_headers=headers), routing_key=q)
    got = chan.basic_get(q, no_ack=True)
    assert len(got.body) == 0      # py-amqp hands an empty body over as ""
    h = got.headers
    assert h["s"] == "text" and h["i"] == 7 and h["neg"] == -7 and h["long"] == 2 ** 40
    assert h["t"] is True and h["f"] is False
    assert h["d"] == 2.5
    assert h["dec"] == decimal.Decimal("1.25")
    assert h["ts"] == datetime.datetime(2020, 5, 6, 7, 8, 9)
    assert h["tbl"] == {"a": 1, "b": {"c": "d"}}
    assert h["arr"] == [1, "x", [2, 3], {"e": None}]
    assert h["none"] is None


def test_consume_with_server_generated_tag(connect):
    conn = connect()
    ch = conn.channel()
    q = ch.queue_declare(uname("q"), exclusive=True).queue
    got = []
    tag = ch.basic_consume(q, callback=lambda m: got.append(m))
    assert re.fullmatch(r"amq\.ctag-[A-Za-z0-9_-]{22}", tag), tag
    for i in range(5):
        ch.basic_publish(amqp.Message(f"m{i}".encode()), routing_key=q)
    drain_until(conn, lambda: len(got) == 5)
    assert [m.body for m in got] == [f"m{i}".encode() for i in range(5)]
    assert {m.delivery_info["consumer_tag"] for m in got} == {tag}
    ch.basic_ack(got[-1].delivery_tag, multiple=True)
    assert ch.basic_cancel(tag) == tag


def test_reject_requeue_sets_redelivered(chan):
    q = chan.queue_declare(uname("q"), exclusive=True).queue
    chan.basic_publish(amqp.Message(b"again"), routing_key=q)
    m = chan.basic_get(q)
    chan.basic_reject(m.delivery_tag, requeue=True)
    m2 = chan.basic_get(q, no_ack=True)
    assert (m2.body, m2.delivery_info["redelivered"], m2.delivery_tag) == (b"again", True, 2)


def test_publisher_confirms(connect):
    conn = connect(confirm_publish=True)
    ch = conn.channel()
    q = ch.queue_declare(uname("q"), exclusive=True).queue
    for i in range(5):
        ch.basic_publish(amqp.Message(b"c"), routing_key=q)    # waits for basic.ack
    assert ch.queue_declare(q, passive=True).message_count == 5


def test_unknown_delivery_tag(connect):
    conn = connect()
    ch = conn.channel()
    ch.basic_ack(42)
    with pytest.raises(aex.PreconditionFailed) as ei:
        ch.queue_declare("", exclusive=True)
    assert ei.value.reply_code == 406
    assert ei.value.reply_text == "PRECONDITION_FAILED - unknown delivery tag 42"
    assert ei.value.method_name == "Basic.ack"
    # the connection survives a channel error
    assert conn.channel().queue_declare("", exclusive=True).queue.startswith("amq.gen-")


def test_not_found_and_access_refused(connect, vhost):
    conn = connect()
    q = uname("nope")
    with pytest.raises(aex.NotFound) as ei:
        conn.channel().queue_declare(q, passive=True)
    assert (ei.value.reply_code, ei.value.reply_text) == (404, f"NOT_FOUND - no queue '{q}' in vhost '{vhost}'")
    with pytest.raises(aex.AccessRefused) as ei:
        conn.channel().exchange_declare("amq.mine", "direct")
    assert (ei.value.reply_code, ei.value.reply_text) == (
        403, "ACCESS_REFUSED - exchange name 'amq.mine' contains reserved prefix 'amq.*'")


def test_immediate_is_not_implemented_540(connect):
    conn = connect()
    ch = conn.channel()
    q = ch.queue_declare(uname("q"), exclusive=True).queue
    ch.basic_publish(amqp.Message(b"x"), routing_key=q, immediate=True)
    with pytest.raises(aex.AMQPNotImplementedError) as ei:
        ch.queue_declare(q, passive=True)
    assert (ei.value.reply_code, ei.value.reply_text) == (540, "NOT_IMPLEMENTED - immediate=true")
    assert ei.value.method_name == "Basic.publish"


def test_exclusive_queue_resource_locked(connect, vhost):
    owner = connect().channel()
    q = owner.queue_declare(uname("q"), exclusive=True).queue
    with pytest.raises(aex.ResourceLocked) as ei:
        connect().channel().basic_consume(q, callback=lambda m: None)
    assert ei.value.reply_code == 405
    assert ei.value.reply_text.startswith(
        f"RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{q}' in vhost '{vhost}'.")


def test_exchange_bind_and_topic(chan):
    x1, x2 = uname("x"), uname("x")
    chan.exchange_declare(x1, "topic", auto_delete=True)
    chan.exchange_declare(x2, "fanout", auto_delete=True)
    q = chan.queue_declare(uname("q"), exclusive=True).queue
    chan.queue_bind(q, x2)
    chan.exchange_bind(destination=x2, source=x1, routing_key="*.important")
    chan.basic_publish(amqp.Message(b"yes"), exchange=x1, routing_key="log.important")
    chan.basic_publish(amqp.Message(b"no"), exchange=x1, routing_key="log.boring")
    assert chan.basic_get(q, no_ack=True).body == b"yes"
    assert chan.basic_get(q, no_ack=True) is None
    chan.exchange_delete(x1)
    chan.exchange_delete(x2)


def test_tx(chan):
    q = chan.queue_declare(uname("q"), exclusive=True).queue
    chan.tx_select()
    chan.basic_publish(amqp.Message(b"rb"), routing_key=q)
    chan.tx_rollback()
    chan.basic_publish(amqp.Message(b"c"), routing_key=q)
    chan.tx_commit()
    assert chan.basic_get(q, no_ack=True).body == b"c"
    assert chan.basic_get(q, no_ack=True) is None


def test_server_properties_seen_by_client(connect):
    conn = connect()
    caps = conn.server_capabilities
    assert caps["publisher_confirms"] is True
    assert caps["consumer_cancel_notify"] is True
    assert caps["basic.nack"] is True
    assert caps["exchange_exchange_bindings"] is True
    assert conn.channel_max == 2047        # the lower of the client's 65535 and the server's 2047
    assert conn.frame_max == 131072
