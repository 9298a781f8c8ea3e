"""What a client sends over AMQP is checked where it enters, with RabbitMQ's ranges and texts.

Queue arguments (types and ranges per queue type, in RabbitMQ's order), the `expiration`
property (RabbitMQ's string:to_integer parse, ten years at most), names that are not UTF-8 (a
frame error, as RabbitMQ's codec asserts), routing keys in any bytes (accepted and stored), and
a requeue into a priority queue (back into its own level). Every text below was read from
RabbitMQ 3.10.8 (rabbit_amqqueue declare_args, rabbit_misc:check_expiry, rabbit_basic
parse_expiration, rabbit_binary_parser assert_utf8) and checked against the 4.x sources; the
tests pass against RabbitMQ in differential mode.
"""
from __future__ import annotations

import pika
import pika.exceptions
import pytest

from itutil import uname
from rawamqp import RawConnection, close_summary

pytestmark = pytest.mark.timeout(60)

TEN_YEARS = 315_360_000_000


def declare_error(pika_connect, name, arguments, **kw):
    """(reply code, reply text) of the channel close a queue.declare gets, or None if it is ok."""
    conn = pika_connect()
    ch = conn.channel()
    try:
        ch.queue_declare(name, arguments=arguments, **kw)
    except pika.exceptions.ChannelClosedByBroker as e:
        return e.reply_code, e.reply_text
    ch.queue_delete(name)
    return None


def invalid_arg(key, name, vhost, what):
    return 406, f"PRECONDITION_FAILED - invalid arg '{key}' for queue '{name}' in vhost '{vhost}': {what}"


@pytest.mark.parametrize("args,key,what", [
    ({"x-message-ttl": 2 ** 62}, "x-message-ttl", "{value_too_large,4611686018427387904}"),
    ({"x-message-ttl": TEN_YEARS + 1}, "x-message-ttl", "{value_too_large,315360000001}"),
    ({"x-message-ttl": -1}, "x-message-ttl", "{value_negative,-1}"),
    ({"x-message-ttl": True}, "x-message-ttl", '"expected integer, got bool"'),
    ({"x-expires": 2 ** 63 - 1}, "x-expires", "{value_too_large,9223372036854775807}"),
    ({"x-expires": 0}, "x-expires", "{value_zero,0}"),
    ({"x-max-length": -1}, "x-max-length", "{value_negative,-1}"),
    ({"x-max-priority": 256}, "x-max-priority", "{max_value_exceeded,256}"),
    ({"x-max-priority": "5"}, "x-max-priority", '"expected integer, got longstr"'),
    ({"x-overflow": "nope"}, "x-overflow", "invalid_overflow"),
    ({"x-overflow": 5}, "x-overflow", "{unacceptable_type,signedint}"),
    ({"x-queue-type": "nope"}, "x-queue-type", "\"unsupported queue type 'nope'\""),
    ({"x-queue-type": 5}, "x-queue-type", "{unacceptable_type,signedint}"),
    ({"x-queue-mode": "nope"}, "x-queue-mode", "\"unsupported queue mode 'nope'\""),
    ({"x-queue-version": 3}, "x-queue-version", "\"unsupported queue version '3'\""),
    ({"x-queue-version": "1"}, "x-queue-version", '"expected integer, got longstr"'),
    ({"x-single-active-consumer": 1}, "x-single-active-consumer", "{unacceptable_type,signedint}"),
    ({"x-dead-letter-routing-key": "k"}, "x-dead-letter-routing-key", "routing_key_but_no_dlx_defined"),
    # the first failing argument in RabbitMQ's order is the one reported
    ({"x-max-length": -1, "x-expires": 0}, "x-expires", "{value_zero,0}"),
])
def test_classic_queue_arguments_out_of_range(pika_connect, vhost, args, key, what):
    name = uname("val-q")
    assert declare_error(pika_connect, name, args) == invalid_arg(key, name, vhost, what)


@pytest.mark.parametrize("args", [{"x-message-ttl": TEN_YEARS}, {"x-expires": TEN_YEARS},
                                  {"x-max-length": 2 ** 62}, {"x-max-priority": 255}, {"x-queue-version": 2},
                                  {"x-queue-mode": "lazy"}, {"x-single-active-consumer": True}])
def test_queue_arguments_at_the_limits_are_accepted(pika_connect, args):
    assert declare_error(pika_connect, uname("val-q"), args) is None


def test_argument_of_another_queue_type_is_refused_before_its_value_is_checked(pika_connect, vhost):
    name = uname("val-q")
    assert declare_error(pika_connect, name, {"x-delivery-limit": "not a number"}) == (
        406, f"PRECONDITION_FAILED - invalid arg 'x-delivery-limit' for queue '{name}' in vhost '{vhost}' "
             f"of queue type rabbit_classic_queue")


@pytest.mark.parametrize("args,key,what", [
    ({"x-queue-type": "quorum", "x-message-ttl": 2 ** 40}, "x-message-ttl", "{value_too_large,1099511627776}"),
    ({"x-queue-type": "quorum", "x-dead-letter-strategy": "x"}, "x-dead-letter-strategy", "invalid_dlx_strategy"),
    ({"x-queue-type": "quorum", "x-queue-leader-locator": "x"}, "x-queue-leader-locator",
     "invalid_queue_locator_arg"),
    ({"x-queue-type": "quorum", "x-quorum-initial-group-size": 0}, "x-quorum-initial-group-size", "{value_zero,0}"),
    ({"x-queue-type": "quorum", "x-max-in-memory-length": -1}, "x-max-in-memory-length", "{value_negative,-1}"),
    ({"x-queue-type": "stream", "x-max-age": "5x"}, "x-max-age", "invalid_max_age"),
    ({"x-queue-type": "stream", "x-max-age": "0D"}, "x-max-age", "invalid_max_age"),
    ({"x-queue-type": "stream", "x-max-age": 5}, "x-max-age", "{unacceptable_type,signedint}"),
    ({"x-queue-type": "stream", "x-initial-cluster-size": 0}, "x-initial-cluster-size", "{value_zero,0}"),
    ({"x-queue-type": "stream", "x-stream-max-segment-size-bytes": -1}, "x-stream-max-segment-size-bytes",
     "{value_negative,-1}"),
])
def test_quorum_and_stream_arguments_out_of_range(pika_connect, vhost, args, key, what):
    name = uname("val-q")
    assert declare_error(pika_connect, name, args, durable=True) == invalid_arg(key, name, vhost, what)


# ---------------------------------------------------------------------------------------- expiration

def publish_error(pika_connect, expiration):
    """(code, text) of the channel close a publish with this expiration gets, or None."""
    conn = pika_connect()
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    try:
        ch.basic_publish("", q, b"x", pika.BasicProperties(expiration=expiration))
        ch.queue_declare(q, passive=True)      # a round trip: the publish was taken
    except pika.exceptions.ChannelClosedByBroker as e:
        return e.reply_code, e.reply_text
    return None


@pytest.mark.parametrize("expiration,what", [
    ("1e23", '{leftover_string,"e23"}'),
    ("100000000000000000000000", "{value_too_large,\n" + " " * 48 + "100000000000000000000000}"),
    (str(TEN_YEARS + 1), "{value_too_large,315360000001}"),
    ("-5", "{value_negative,-5}"),
    ("5 ", '{leftover_string," "}'),
    ("5\t", '{leftover_string,"\\t"}'),
    ("0x10", '{leftover_string,"x10"}'),
    (" 5", "no_integer"),
    ("", "no_integer"),
    ("+", "no_integer"),
    ("--5", "no_integer"),
])
def test_bad_expiration_closes_the_channel(pika_connect, expiration, what):
    assert publish_error(pika_connect, expiration) == (
        406, f"PRECONDITION_FAILED - invalid expiration '{expiration}': {what}")


@pytest.mark.parametrize("expiration", ["+5", "-0", "00012", "0", str(TEN_YEARS)])
def test_good_expiration_is_taken(pika_connect, expiration):
    assert publish_error(pika_connect, expiration) is None


# ---------------------------------------------------------------------------------------- names and keys

@pytest.mark.parametrize("method,args", [
    ("queue.declare", {"queue": b"val-\xff\xfe", "durable": True, "arguments": {}}),
    ("exchange.declare", {"exchange": b"val-\xff", "type": "direct", "durable": True, "arguments": {}}),
    ("queue.bind", {"queue": "val-none", "exchange": "amq.direct", "routing_key": b"k\xff", "arguments": {}}),
])
def test_names_not_in_utf8_are_a_frame_error(broker, method, args):
    """RabbitMQ's codec asserts UTF-8 in the names of methods without content: 501, no method named."""
    c = RawConnection.opened(broker.host, broker.port, vhost=broker.vhost)
    try:
        c.open_channel(1)
        c.send_method(1, method, **args)
        assert close_summary(c.expect_connection_close()) == (501, "FRAME_ERROR - Malformed UTF-8 in shortstr", 0, 0)
    finally:
        c.close()


def test_routing_key_in_any_bytes_is_confirmed_and_kept(broker):
    """basic.publish is not checked (RabbitMQ takes any bytes there): a persistent message with
    such a routing key reaches a durable queue, is confirmed, and is delivered with its key."""
    q = uname("val-rk")
    c = RawConnection.opened(broker.host, broker.port, vhost=broker.vhost)
    try:
        c.open_channel(1)
        c.call(1, "queue.declare", "queue.declare-ok", queue=q, durable=True, arguments={})
        try:
            c.call(1, "queue.bind", "queue.bind-ok", queue=q, exchange="amq.fanout", routing_key="", arguments={})
            c.call(1, "confirm.select", "confirm.select-ok")
            c.publish(1, "amq.fanout", b"k\xff\xfe", b"any bytes", {"delivery_mode": 2})
            assert c.expect_method("basic.ack", timeout=10).args["delivery_tag"] == 1
            got = c.call(1, "basic.get", "basic.get-ok", queue=q, no_ack=True)
            assert got.args["routing_key"] == "k\ufffd\ufffd"     # the bytes as sent (shown replaced)
            assert c.read_message()[1] == b"any bytes"
        finally:
            c.call(1, "queue.delete", "queue.delete-ok", queue=q)
    finally:
        c.close()


# ---------------------------------------------------------------------------------------- priorities

def test_requeued_message_goes_back_into_its_own_priority_level(pika_connect):
    """A message requeued into a priority queue is not served before a newer message of a higher
    priority; within its own level it comes back first (at its original place)."""
    conn = pika_connect()
    ch = conn.channel()
    ch.confirm_delivery()
    q = ch.queue_declare("", exclusive=True, arguments={"x-max-priority": 10}).method.queue

    def publish(body, priority):
        ch.basic_publish("", q, body, pika.BasicProperties(priority=priority))

    publish(b"low-1", 1)
    taken, _, body = ch.basic_get(q)
    assert body == b"low-1"
    publish(b"high", 9)
    publish(b"low-2", 1)
    publish(b"mid", 5)
    ch.basic_nack(taken.delivery_tag, requeue=True)
    got = []
    for _ in range(4):
        m, _, body = ch.basic_get(q, auto_ack=True)
        got.append((body, m.redelivered))
    assert got == [(b"high", False), (b"mid", False), (b"low-1", True), (b"low-2", False)]


def test_requeued_messages_of_several_levels(pika_connect):
    conn = pika_connect()
    ch = conn.channel()
    ch.confirm_delivery()
    q = ch.queue_declare("", exclusive=True, arguments={"x-max-priority": 5}).method.queue
    for body, p in ((b"a0", 0), (b"b3", 3), (b"c5", 5), (b"d3", 3)):
        ch.basic_publish("", q, body, pika.BasicProperties(priority=p))
    tags = [ch.basic_get(q)[0].delivery_tag for _ in range(3)]     # c5, b3, d3 delivered
    ch.basic_publish("", q, b"e5", pika.BasicProperties(priority=5))
    ch.basic_publish("", q, b"f3", pika.BasicProperties(priority=3))
    ch.basic_nack(tags[-1], multiple=True, requeue=True)
    got = []
    while True:
        m, _, body = ch.basic_get(q, auto_ack=True)
        if m is None:
            break
        got.append(body)
    assert got == [b"c5", b"e5", b"b3", b"d3", b"f3", b"a0"]


def test_cc_keys_in_any_bytes_route_without_closing_the_connection(pika_connect):
    """CC and BCC keys are routing keys: any bytes (RabbitMQ takes them); the channel goes on."""
    conn = pika_connect()
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, "amq.direct", routing_key="cc-text")
    ch.basic_publish("amq.direct", "none", b"m", pika.BasicProperties(headers={"CC": [b"\xff\xfe", "cc-text"],
                                                                              "BCC": [b"\xc3"]}))
    assert ch.queue_declare(q, passive=True).method.message_count == 1


def test_dead_letter_routing_key_must_fit_a_delivery(pika_connect, vhost, broker):
    """Usagi only: RabbitMQ takes a 300-byte x-dead-letter-routing-key, then closes with 541 every
    connection a message dead-lettered under it is delivered to. Usagi refuses it at the declare."""
    if not broker.is_usagi:
        pytest.skip("RabbitMQ takes it (and then cannot deliver what it dead-letters)")
    name = uname("val-q")
    args = {"x-dead-letter-exchange": "amq.fanout", "x-dead-letter-routing-key": "k" * 300}
    assert declare_error(pika_connect, name, args) == invalid_arg("x-dead-letter-routing-key", name, vhost,
                                                                  "{too_long,300}")
    args["x-dead-letter-routing-key"] = "k" * 255
    assert declare_error(pika_connect, name, args) is None
