"""Replies that promise durability keep the order of a channel's methods.

Usagi holds such a reply (tx.commit-ok, queue.delete-ok, a durable declare-ok, ...) until the store
has committed, and reads nothing more from the connection meanwhile; these tests check, with
pipelined frames, that no reply is lost, duplicated or overtaken, and that a channel deleting a
queue it consumes from gets queue.delete-ok before basic.cancel, as from RabbitMQ (py-amqp raised
ConsumerCancelled inside queue_delete otherwise). They hold for RabbitMQ too (differential mode).
"""
from __future__ import annotations

import socket

import amqp
import amqp.exceptions as aex
import pytest

import rawamqp
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


def _frames(*methods) -> bytes:
    """Method frames (channel, name, args) as one byte string, to be sent in one write."""
    return b"".join(rawamqp.frame_bytes(rawamqp.FRAME_METHOD, ch, rawamqp.method_payload(name, **args))
                    for ch, name, args in methods)


def _publish(ch: int, routing_key: str, body: bytes) -> bytes:
    return (rawamqp.frame_bytes(rawamqp.FRAME_METHOD, ch, rawamqp.method_payload(
                "basic.publish", exchange="", routing_key=routing_key, mandatory=False, immediate=False))
            + rawamqp.frame_bytes(rawamqp.FRAME_HEADER, ch,
                                  rawamqp.content_header_payload(len(body), {"delivery_mode": 2}))
            + rawamqp.frame_bytes(rawamqp.FRAME_BODY, ch, body))


def test_queue_delete_ok_comes_before_the_cancel_of_own_consumer(connect):
    conn = connect()
    ch = conn.channel()
    other = conn.channel()
    q = uname("del-own")
    ch.queue_declare(q, durable=True)
    cancelled = []
    ch.basic_consume(q, callback=lambda m: None)                      # no on_cancel: raises if early
    other.basic_consume(q, callback=lambda m: None, on_cancel=cancelled.append)
    assert ch.queue_delete(q) == 0           # used to raise ConsumerCancelled here
    with pytest.raises(aex.ConsumerCancelled):
        for _ in range(50):
            try:
                conn.drain_events(timeout=0.1)
            except socket.timeout:
                pass
    for _ in range(20):
        if cancelled:
            break
        try:
            conn.drain_events(timeout=0.1)
        except socket.timeout:
            pass
    assert len(cancelled) == 1               # another channel's consumer is told too


def test_pipelined_durable_methods_reply_in_order(broker):
    """Every method that waits for the store, sent in one write: each reply once, in order."""
    q, x = uname("pipe-q"), uname("pipe-x")
    conn = rawamqp.RawConnection.opened(broker.host, broker.port, vhost=broker.vhost)
    try:
        conn.open_channel(1)
        plan = [
            ("queue.declare", dict(queue=q, durable=True), "queue.declare-ok"),
            ("exchange.declare", dict(exchange=x, type="direct", durable=True), "exchange.declare-ok"),
            ("queue.bind", dict(queue=q, exchange=x, routing_key="k"), "queue.bind-ok"),
            ("exchange.bind", dict(destination=x, source="amq.direct", routing_key="k"), "exchange.bind-ok"),
            ("exchange.unbind", dict(destination=x, source="amq.direct", routing_key="k"), "exchange.unbind-ok"),
            ("queue.unbind", dict(queue=q, exchange=x, routing_key="k"), "queue.unbind-ok"),
            ("queue.purge", dict(queue=q), "queue.purge-ok"),
            ("tx.select", {}, "tx.select-ok"),
        ]
        # (RabbitMQ refuses a method pipelined behind tx.commit, 504 "unexpected command while
        # processing 'tx.commit'": the rest follows commit-ok)
        conn.send_raw(_frames(*((1, name, args) for name, args, _ in plan)) + _publish(1, q, b"one")
                      + _publish(1, q, b"two") + _frames((1, "tx.commit", {})))
        expected = [reply for _, _, reply in plan] + ["tx.commit-ok"]
        assert [conn.read_frame().name for _ in expected] == expected
        conn.send_raw(_frames((1, "queue.declare", dict(queue=q, passive=True)),
                              (1, "queue.bind", dict(queue=q, exchange=x, routing_key="k")),
                              (1, "exchange.delete", dict(exchange=x)),
                              (1, "queue.delete", dict(queue=q))))
        declare_ok = conn.expect_method("queue.declare-ok")
        assert declare_ok["message_count"] == 2
        expected = ["queue.bind-ok", "exchange.delete-ok", "queue.delete-ok"]
        assert [conn.read_frame().name for _ in expected] == expected
        conn.send_method(1, "queue.declare", queue=q, passive=True)
        assert conn.expect_channel_close(1)["reply_code"] == 404     # the queue is gone
    finally:
        conn.close()


def test_pipelined_handshake_then_held_reply(broker):
    """Frames that arrive with the handshake (handled in one batch) after a reply that waits."""
    q = uname("pipe-hs")
    conn = rawamqp.RawConnection.open_to(broker.host, broker.port)
    try:
        start = conn.expect_method("connection.start")
        assert start.name == "connection.start"
        conn.send_raw(_frames((0, "connection.start-ok", dict(
            client_properties={"capabilities": {"consumer_cancel_notify": True}}, mechanism="PLAIN",
            response=b"\x00guest\x00guest", locale="en_US"))))
        tune = conn.expect_method("connection.tune")
        conn.send_raw(_frames(
            (0, "connection.tune-ok", dict(channel_max=tune["channel_max"], frame_max=tune["frame_max"],
                                           heartbeat=0)),
            (0, "connection.open", dict(virtual_host=broker.vhost)),
            (1, "channel.open", {}),
            (1, "queue.declare", dict(queue=q, durable=True)),
            (1, "queue.bind", dict(queue=q, exchange="amq.direct", routing_key=q)),
            (1, "tx.select", {}),
            (1, "tx.commit", {})))
        names = [conn.read_frame().name for _ in range(6)]
        assert names == ["connection.open-ok", "channel.open-ok", "queue.declare-ok", "queue.bind-ok",
                         "tx.select-ok", "tx.commit-ok"]
        conn.send_raw(_frames((1, "queue.delete", dict(queue=q)),
                              (1, "channel.close", dict(reply_code=200, reply_text="bye"))))
        assert [conn.read_frame().name for _ in range(2)] == ["queue.delete-ok", "channel.close-ok"]
        conn.close_connection()
    finally:
        conn.close()


def test_tx_commit_of_acks_and_publishes(connect):
    conn = connect()
    ch = conn.channel()
    q = uname("tx-acks")
    ch.queue_declare(q, durable=True)
    for i in range(3):
        ch.basic_publish(amqp.Message(f"m{i}".encode(), delivery_mode=2), routing_key=q)
    ch.tx_select()
    got = [ch.basic_get(q) for _ in range(2)]
    for m in got:
        ch.basic_ack(m.delivery_tag)
    ch.basic_publish(amqp.Message(b"new", delivery_mode=2), routing_key=q)
    ch.tx_commit()
    assert ch.queue_declare(q, passive=True).message_count == 2     # m2 and new
    ch.queue_delete(q)
