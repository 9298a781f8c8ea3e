"""Wire-level behaviour with the raw client (tests/rawamqp.py): handshake, framing errors,
channel state errors, and the exact close codes/texts RabbitMQ sends for them.

The texts below were read from RabbitMQ 3.10.8 and compared with the RabbitMQ 4.x sources.
Framing error texts embed Erlang terms printed with ~p (binaries as <<0,50,...>> or <<"abc">>,
and Erlang's pretty printer may break long terms over lines); they are asserted verbatim.
After every test a fresh connection must still work (the `broker_still_works` fixture).
"""
from __future__ import annotations

import struct
import threading
import time

import pytest

from itutil import uname
from rawamqp import (FRAME_BODY, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD, PROTOCOL_HEADER,
                     RawConnection, close_summary, content_header_payload, enc_table,
                     method_payload)

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(autouse=True)
def broker_still_works(broker):
    """After each error case, a second, normal connection must be served as usual."""
    yield
    c = RawConnection.opened(broker.host, broker.port, vhost=broker.vhost)
    try:
        c.open_channel(1)
        q = c.call(1, "queue.declare", "queue.declare-ok", queue="", exclusive=True)["queue"]
        c.publish(1, "", q, b"alive")
        c.send_method(1, "basic.get", queue=q, no_ack=True)
        c.expect_method("basic.get-ok")
        assert c.read_message()[1] == b"alive"
        c.close_connection()
    finally:
        c.close()


def conn_close(c: RawConnection, timeout: float = 5.0) -> tuple:
    """The next frame must be connection.close; answer close-ok; return its 4 fields."""
    return close_summary(c.expect_connection_close(timeout))


def chan_close(c: RawConnection, channel: int, timeout: float = 5.0) -> tuple:
    return close_summary(c.expect_channel_close(channel, timeout))


# ---------------------------------------------------------------------------
# protocol header and handshake
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("header", [
    b"AMQP\x00\x00\x09\x02",      # unknown 0-9-x revision
    b"AMQP\x00\x00\x0a\x00",      # 0-10
    b"HTTP/1.1",                  # not AMQP at all
    b"AMQP\x01\x01\x00\x0a",      # old-style 0-10 header
], ids=["0-9-2", "0-10", "http", "old-0-10"])
def test_bad_protocol_header_gets_supported_header_then_close(raw, header):
    c = raw(handshake=False)
    c.send_raw(header)
    assert c.read_until_eof(5) == PROTOCOL_HEADER == b"AMQP\x00\x00\x09\x01"


def test_amqp_0_9_header_is_served_as_0_9_1(raw):
    c = raw(handshake=False)
    c.send_raw(b"AMQP\x01\x01\x00\x09")
    start = c.expect_method("connection.start")
    assert (start["version_major"], start["version_minor"]) == (0, 9)


def test_connection_start_and_tune(raw):
    c = raw(handshake=False)
    c.send_raw(PROTOCOL_HEADER)
    start = c.expect_method("connection.start")
    assert start.channel == 0
    assert (start["version_major"], start["version_minor"]) == (0, 9)
    mechanisms = set(start["mechanisms"].decode().split(" "))
    # RabbitMQ 3.10 offers "PLAIN AMQPLAIN"; 4.1+ may also list ANONYMOUS.
    assert {"PLAIN", "AMQPLAIN"} <= mechanisms <= {"PLAIN", "AMQPLAIN", "ANONYMOUS", "EXTERNAL"}
    assert start["locales"] == b"en_US"
    props = start["server_properties"]
    for key in ("product", "version", "platform", "copyright", "information"):
        assert isinstance(props[key], bytes) and props[key]
    assert props["capabilities"] == {
        "publisher_confirms": True, "exchange_exchange_bindings": True, "basic.nack": True,
        "consumer_cancel_notify": True, "connection.blocked": True, "consumer_priorities": True,
        "authentication_failure_close": True, "per_consumer_qos": True, "direct_reply_to": True}
    c.send_method(0, "connection.start-ok", client_properties={"product": "t"}, mechanism="PLAIN",
                  response=b"\x00guest\x00guest", locale="en_US")
    tune = c.expect_method("connection.tune")
    # RabbitMQ's defaults: channel_max 2047, frame_max 128 KiB, heartbeat 60 s
    assert (tune["channel_max"], tune["frame_max"], tune["heartbeat"]) == (2047, 131072, 60)
    c.send_method(0, "connection.tune-ok", channel_max=2047, frame_max=131072, heartbeat=0)
    c.send_method(0, "connection.open", virtual_host="/")
    ok = c.expect_method("connection.open-ok")
    assert ok["reserved_1"] == ""
    c.close_connection()


def test_amqplain_mechanism(raw):
    c = raw(handshake=False)
    c.send_raw(PROTOCOL_HEADER)
    c.expect_method("connection.start")
    response = enc_table({"LOGIN": "guest", "PASSWORD": "guest"})[4:]   # table body, no length
    c.send_method(0, "connection.start-ok", client_properties={}, mechanism="AMQPLAIN",
                  response=response, locale="en_US")
    assert c.expect_method("connection.tune")["frame_max"] == 131072


def test_bad_credentials_403_with_authentication_failure_close(raw):
    c = raw(handshake=False)
    c.send_raw(PROTOCOL_HEADER)
    reply = c.handshake(password="wrong-password")     # client advertises authentication_failure_close
    assert reply.name == "connection.close"
    assert close_summary(reply) == (
        403, "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. "
             "For details see the broker logfile.", 0, 0)
    assert c.is_closed_by_peer(8)


def test_unknown_vhost_530(raw):
    c = raw(handshake=False)
    c.send_raw(PROTOCOL_HEADER)
    vhost = uname("novhost")
    reply = c.handshake(vhost=vhost)
    assert reply.name == "connection.close"
    assert close_summary(reply) == (530, f"NOT_ALLOWED - vhost {vhost} not found", 10, 40)


def _silently_closed(broker, steps) -> tuple[bytes, float]:
    c = RawConnection.open_to(broker.host, broker.port)
    try:
        c.expect_method("connection.start")
        t0 = time.monotonic()
        steps(c)
        return c.read_until_eof(10), time.monotonic() - t0
    finally:
        c.close()


def test_errors_before_connection_open_close_the_socket_without_a_frame(broker):
    """Before connection.open-ok, RabbitMQ sends no connection.close for these errors: it waits
    (3 s in RabbitMQ) and drops the socket. The cases run in parallel to keep the suite fast."""
    plain = b"\x00guest\x00guest"

    def start_ok(c, mechanism="PLAIN", response=plain, props=None):
        c.send_method(0, "connection.start-ok", client_properties=props or {}, mechanism=mechanism,
                      response=response, locale="en_US")

    def tune_ok(channel_max, frame_max):
        def steps(c):
            start_ok(c)
            c.expect_method("connection.tune")
            c.send_method(0, "connection.tune-ok", channel_max=channel_max, frame_max=frame_max,
                          heartbeat=0)
        return steps

    def open_without_tune_ok(c):
        start_ok(c)
        c.expect_method("connection.tune")
        c.send_method(0, "connection.open", virtual_host="/")

    cases = {
        "frame_max below 4096": tune_ok(2047, 4095),
        "frame_max above the server's": tune_ok(2047, 131073),
        "frame_max 0 (unlimited)": tune_ok(2047, 0),
        "channel_max above the server's": tune_ok(2048, 131072),
        "channel_max 0 (unlimited)": tune_ok(0, 131072),
        "unknown mechanism": lambda c: start_ok(c, mechanism="NOPE", response=b"x"),
        "malformed PLAIN response": lambda c: start_ok(c, response=b"guestguest"),
        "bad password, no authentication_failure_close": lambda c: start_ok(
            c, response=b"\x00guest\x00wrong"),
        "connection.open before start-ok": lambda c: c.send_method(0, "connection.open",
                                                                    virtual_host="/"),
        "connection.open without tune-ok": open_without_tune_ok,
    }
    results = {}

    def run(name, steps):
        try:
            results[name] = _silently_closed(broker, steps)
        except Exception as e:      # noqa: BLE001 - reported below
            results[name] = e

    threads = [threading.Thread(target=run, args=item) for item in cases.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    for name in cases:
        got = results.get(name)
        assert isinstance(got, tuple), f"{name}: {got!r}"
        data, elapsed = got
        assert data == b"", f"{name}: server sent {data!r} before closing"


def test_valid_tune_ok_values_are_accepted(raw):
    c = raw(frame_max=4096, channel_max=1, heartbeat=0)
    c.open_channel(1)
    c.close_connection()
    c = raw(frame_max=131072, channel_max=2047, heartbeat=5)
    c.open_channel(2047)
    c.close_connection()


# ---------------------------------------------------------------------------
# frame-level errors (connection.close 501/505 with class 0 method 0)
# ---------------------------------------------------------------------------
def test_frame_larger_than_frame_max_501(raw):
    c = raw()
    c.open_channel(1)
    payload = method_payload("basic.publish", exchange="", routing_key="x")
    payload += b"\x00" * (131072 + 10 - len(payload))
    c.send_frame(FRAME_METHOD, 1, payload)
    assert conn_close(c) == (
        501, "FRAME_ERROR - type 1, all octets = <<>>: {frame_too_large,131082,131064}", 0, 0)


def test_frame_max_limit_allows_the_8_byte_fudge(raw):
    """RabbitMQ accepts payloads up to frame_max (frame_max - 8 plus an 8-byte 'fudge'),
    and reports the limit as frame_max - 8."""
    c = raw(frame_max=4096)
    c.open_channel(1)
    q = c.call(1, "queue.declare", "queue.declare-ok", queue="", exclusive=True)["queue"]
    for size in (4088, 4096):
        c.send_method(1, "basic.publish", exchange="", routing_key=q)
        c.send_frame(FRAME_HEADER, 1, content_header_payload(size))
        c.send_frame(FRAME_BODY, 1, b"y" * size)
    c.send_method(1, "basic.get", queue=q, no_ack=True)
    c.expect_method("basic.get-ok")
    assert len(c.read_message()[1]) == 4088
    c.send_method(1, "basic.publish", exchange="", routing_key=q)
    c.send_frame(FRAME_HEADER, 1, content_header_payload(4097))
    c.send_frame(FRAME_BODY, 1, b"y" * 4097)
    assert conn_close(c) == (
        501, "FRAME_ERROR - type 3, all octets = <<>>: {frame_too_large,4097,4088}", 0, 0)


def test_missing_frame_end_501(raw):
    c = raw()
    c.open_channel(1)
    c.send_frame(FRAME_METHOD, 1, method_payload("queue.declare", queue="", exclusive=True),
                 frame_end=0x00)
    # Erlang's ~p breaks this term over two lines; the text is sent exactly like that.
    assert conn_close(c) == (
        501, "FRAME_ERROR - type 1, all octets = <<0,50,0,10,0,0,0,4,0,0,0,0>>: "
             "{invalid_frame_end_marker,\n" + " " * 53 + "0}", 0, 0)


def test_missing_frame_end_long_payload_501(raw):
    c = raw()
    c.open_channel(1)
    c.send_frame(FRAME_METHOD, 1, method_payload("queue.declare", queue="abcdefghijklmnopqrstuvwxyz"),
                 frame_end=0xCD)
    assert conn_close(c) == (
        501, "FRAME_ERROR - type 1, first 16 octets = "
             "<<0,50,0,10,0,0,26,97,98,99,100,101,102,103,104,105>>: "
             "{invalid_frame_end_marker,\n" + " " * 82 + "205}", 0, 0)


def test_missing_frame_end_on_body_frame_501(raw):
    c = raw()
    c.open_channel(1)
    c.send_method(1, "basic.publish", exchange="", routing_key="nowhere")
    c.send_frame(FRAME_HEADER, 1, content_header_payload(5))
    c.send_frame(FRAME_BODY, 1, b"hello", frame_end=0x00)
    assert conn_close(c) == (
        501, 'FRAME_ERROR - type 3, all octets = <<"hello">>: {invalid_frame_end_marker,0}', 0, 0)


@pytest.mark.parametrize("frame_type, channel, payload, expected", [
    (7, 1, b"abc", 'FRAME_ERROR - type 7, all octets = <<"abc">>: unknown_frame'),
    (0, 0, b"", "FRAME_ERROR - type 0, all octets = <<>>: unknown_frame"),
    (FRAME_HEARTBEAT, 0, b"xx", 'FRAME_ERROR - type 8, all octets = <<"xx">>: unknown_frame'),
    (FRAME_METHOD, 1, b"\x00\x32", "FRAME_ERROR - type 1, all octets = <<0,50>>: unknown_frame"),
], ids=["type-7", "type-0", "heartbeat-with-payload", "method-too-short"])
def test_unknown_or_malformed_frames_501(raw, frame_type, channel, payload, expected):
    c = raw()
    c.open_channel(1)
    c.send_frame(frame_type, channel, payload)
    assert conn_close(c) == (501, expected, 0, 0)


def test_truncated_method_arguments_501(raw):
    c = raw()
    c.open_channel(1)
    c.send_frame(FRAME_METHOD, 1, struct.pack(">HH", 50, 10) + b"\x00")
    assert conn_close(c) == (501, "FRAME_ERROR - cannot decode <<0>>", 50, 10)


def test_method_with_trailing_garbage_501(raw):
    c = raw()
    c.open_channel(1)
    c.send_frame(FRAME_METHOD, 1, method_payload("basic.qos", prefetch_count=1) + b"junk")
    assert conn_close(c) == (
        501, "FRAME_ERROR - cannot decode <<0,0,0,0,0,1,0,106,117,110,107>>", 60, 10)


@pytest.mark.parametrize("frame_type, payload, expected", [
    (FRAME_HEADER, content_header_payload(5),
     "UNEXPECTED_FRAME - type 2, all octets = <<0,60,0,0,0,0,0,0,0,0,0,5,0,0>>"),
    (FRAME_BODY, b"abc", 'UNEXPECTED_FRAME - type 3, all octets = <<"abc">>'),
], ids=["header", "body"])
def test_content_frames_on_channel_zero_505(raw, frame_type, payload, expected):
    c = raw()
    c.send_frame(frame_type, 0, payload)
    assert conn_close(c) == (505, expected, 0, 0)


def test_heartbeat_on_nonzero_channel_505(raw):
    c = raw()
    c.open_channel(1)
    c.send_frame(FRAME_HEARTBEAT, 1, b"")
    assert conn_close(c) == (505, "UNEXPECTED_FRAME - type 8, all octets = <<>>", 0, 0)


@pytest.mark.parametrize("class_id, method_id", [(99, 10), (60, 99), (10, 99)])
def test_unknown_class_or_method_drops_the_connection(raw, class_id, method_id):
    """RabbitMQ (3.10 and 4.x) cannot look the method up and the connection process exits:
    the socket is closed without a connection.close frame."""
    c = raw()
    c.open_channel(1)
    c.send_frame(FRAME_METHOD, 1, struct.pack(">HH", class_id, method_id))
    assert c.read_until_eof(5) == b""


# ---------------------------------------------------------------------------
# content sequencing (505)
# ---------------------------------------------------------------------------
def test_content_header_without_publish_505(raw):
    c = raw()
    c.open_channel(1)
    c.send_frame(FRAME_HEADER, 1, content_header_payload(3))
    assert conn_close(c) == (
        505, "UNEXPECTED_FRAME - expected method frame, got non method frame instead", 0, 0)


def test_body_without_publish_505(raw):
    c = raw()
    c.open_channel(1)
    c.send_frame(FRAME_BODY, 1, b"abc")
    assert conn_close(c) == (
        505, "UNEXPECTED_FRAME - expected method frame, got non method frame instead", 0, 0)


def test_method_instead_of_content_header_505(raw):
    c = raw()
    c.open_channel(1)
    c.send_method(1, "basic.publish", exchange="", routing_key="x")
    c.send_method(1, "basic.qos", prefetch_count=1)
    assert conn_close(c) == (
        505, "UNEXPECTED_FRAME - expected content header for class 60, "
             "got non content header frame instead", 60, 40)


def test_content_header_for_wrong_class_505(raw):
    c = raw()
    c.open_channel(1)
    c.send_method(1, "basic.publish", exchange="", routing_key="x")
    c.send_frame(FRAME_HEADER, 1, content_header_payload(3, class_id=50))
    assert conn_close(c) == (
        505, "UNEXPECTED_FRAME - expected content header for class 60, got one for class 50 instead",
        60, 40)


def test_content_header_with_nonzero_weight_505(raw):
    c = raw()
    c.open_channel(1)
    c.send_method(1, "basic.publish", exchange="", routing_key="x")
    c.send_frame(FRAME_HEADER, 1, struct.pack(">HHQH", 60, 1, 3, 0))
    assert conn_close(c) == (
        505, "UNEXPECTED_FRAME - expected content header for class 60, "
             "got non content header frame instead", 60, 40)


def test_second_header_instead_of_body_505(raw):
    c = raw()
    c.open_channel(1)
    c.send_method(1, "basic.publish", exchange="", routing_key="x")
    c.send_frame(FRAME_HEADER, 1, content_header_payload(10))
    c.send_frame(FRAME_HEADER, 1, content_header_payload(10))
    assert conn_close(c) == (
        505, "UNEXPECTED_FRAME - expected content body, got non content body frame instead", 60, 40)


def test_body_shorter_than_announced_then_method_505(raw):
    c = raw()
    c.open_channel(1)
    c.send_method(1, "basic.publish", exchange="", routing_key="x")
    c.send_frame(FRAME_HEADER, 1, content_header_payload(10))
    c.send_frame(FRAME_BODY, 1, b"12345")
    c.send_method(1, "basic.qos", prefetch_count=1)
    assert conn_close(c) == (
        505, "UNEXPECTED_FRAME - expected content body, got non content body frame instead", 60, 40)


def test_body_longer_than_announced(raw):
    c = raw()
    c.open_channel(1)
    c.send_method(1, "basic.publish", exchange="", routing_key="x")
    c.send_frame(FRAME_HEADER, 1, content_header_payload(3))
    c.send_frame(FRAME_BODY, 1, b"abcdef")
    c.send_method(1, "basic.qos", prefetch_count=1)
    close = conn_close(c)
    assert close in (
        # RabbitMQ 3.10 .. 4.2: the oversized body frame is taken, the remaining size goes
        # negative, and the channel keeps waiting for body frames; the next method frame is
        # then unexpected.
        (505, "UNEXPECTED_FRAME - expected content body, got non content body frame instead", 60, 40),
        # Newer RabbitMQ (main branch, 2026) rejects the oversized body frame itself.
        (501, "FRAME_ERROR - content body frame exceeds remaining content size", 60, 40),
    )


# ---------------------------------------------------------------------------
# channel state (504) and connection-state errors
# ---------------------------------------------------------------------------
def test_method_on_unopened_channel_504(raw):
    c = raw()
    c.send_method(3, "queue.declare", queue="", exclusive=True)
    assert conn_close(c) == (504, "CHANNEL_ERROR - expected 'channel.open'", 50, 10)


@pytest.mark.parametrize("method, ids", [("channel.close", (20, 40)), ("channel.close-ok", (20, 41))])
def test_close_of_unopened_channel_504(raw, method, ids):
    c = raw()
    if method == "channel.close":
        c.send_method(5, method, reply_code=200, reply_text="bye")
    else:
        c.send_method(5, method)
    assert conn_close(c) == (504, "CHANNEL_ERROR - expected 'channel.open'", *ids)


def test_second_channel_open_504(raw):
    c = raw()
    c.open_channel(1)
    c.send_method(1, "channel.open")
    assert conn_close(c) == (504, "CHANNEL_ERROR - second 'channel.open' seen", 20, 10)


@pytest.mark.parametrize("method, args, ids", [
    ("queue.declare", dict(queue="", exclusive=True), (50, 10)),
    ("channel.open", {}, (20, 10)),
    ("connection.open", dict(virtual_host="/"), (10, 40)),
    ("connection.start-ok", dict(mechanism="PLAIN", response=b"\x00guest\x00guest", locale="en_US"),
     (10, 11)),
    ("connection.tune-ok", dict(channel_max=10, frame_max=4096), (10, 31)),
    ("connection.secure-ok", dict(response=b"x"), (10, 21)),
    ("connection.blocked", dict(reason="x"), (10, 60)),
])
def test_unexpected_method_on_channel_zero_504(raw, method, args, ids):
    c = raw()
    c.send_method(0, method, **args)
    assert conn_close(c) == (504, "CHANNEL_ERROR - unexpected method in connection state running", *ids)


@pytest.mark.parametrize("method, args, ids", [
    ("queue.declare-ok", dict(queue="x"), (50, 11)),
    ("channel.open-ok", {}, (20, 11)),
    ("connection.tune-ok", {}, (10, 31)),
])
def test_server_only_methods_from_client_503(raw, method, args, ids):
    c = raw()
    c.open_channel(1)
    c.send_method(1, method, **args)
    assert conn_close(c) == (503, "COMMAND_INVALID - unimplemented method", *ids)


def test_basic_deliver_from_client_503_after_its_content(raw):
    c = raw()
    c.open_channel(1)
    c.send_method(1, "basic.deliver", consumer_tag="x", delivery_tag=1, exchange="", routing_key="x")
    c.send_content(1, b"abc")
    assert conn_close(c) == (503, "COMMAND_INVALID - unimplemented method", 60, 60)


def test_channel_max_counts_open_channels_530(raw):
    c = raw(channel_max=2)
    c.open_channel(1)
    # the channel *number* is not checked against channel_max, only the number of open channels
    c.open_channel(100)
    c.send_method(3, "channel.open")
    assert conn_close(c) == (
        530, "NOT_ALLOWED - number of channels opened (2) has reached the negotiated channel_max (2)",
        0, 0)


def test_connection_close_handshake(raw):
    c = raw()
    c.open_channel(1)
    c.send_method(0, "connection.close", reply_code=200, reply_text="bye", class_id=0, method_id=0)
    assert c.expect_method("connection.close-ok").channel == 0
    # Nothing follows close-ok. (RabbitMQ leaves the socket for the client to close and only
    # drops it itself after ~30 s, so the test does not wait for EOF.)
    try:
        rest = c.read_until_eof(0.5)
    except TimeoutError:
        rest = c.buf
    assert rest == b""


def test_connection_error_then_socket_closed_after_close_ok(raw):
    c = raw()
    c.send_method(3, "basic.qos", prefetch_count=1)
    assert conn_close(c)[0] == 504
    assert c.read_until_eof(5) == b""


def test_channel_close_handshake_and_reuse(raw):
    c = raw()
    c.open_channel(1)
    c.send_method(1, "channel.close", reply_code=200, reply_text="bye", class_id=0, method_id=0)
    assert c.expect_method("channel.close-ok").channel == 1
    c.open_channel(1)
    assert c.call(1, "basic.qos", "basic.qos-ok", prefetch_count=3).channel == 1


def test_frames_after_channel_close_are_ignored_until_close_ok(raw, vhost):
    c = raw()
    c.open_channel(1)
    q = uname("missing")
    c.send_method(1, "queue.declare", queue=q, passive=True)
    close = c.read_frame()
    assert close.name == "channel.close"
    assert close_summary(close) == (404, f"NOT_FOUND - no queue '{q}' in vhost '{vhost}'", 50, 10)
    # Anything but close/close-ok on the closing channel is dropped, content included.
    c.send_method(1, "queue.declare", queue="", exclusive=True)
    c.publish(1, "", "x", b"dropped")
    c.send_method(1, "channel.close-ok")
    c.open_channel(1)
    assert c.call(1, "basic.qos", "basic.qos-ok", prefetch_count=1).name == "basic.qos-ok"


def test_channel_error_keeps_other_channels(raw, vhost):
    c = raw()
    c.open_channel(1)
    c.open_channel(2)
    q = c.call(2, "queue.declare", "queue.declare-ok", queue="", exclusive=True)["queue"]
    c.send_method(1, "basic.ack", delivery_tag=5)
    assert chan_close(c, 1) == (406, "PRECONDITION_FAILED - unknown delivery tag 5", 60, 80)
    c.publish(2, "", q, b"ok")
    c.send_method(2, "basic.get", queue=q, no_ack=True)
    c.expect_method("basic.get-ok")
    assert c.read_message()[1] == b"ok"


# ---------------------------------------------------------------------------
# method-level errors with exact class/method ids
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("method, args, expected", [
    ("basic.ack", dict(delivery_tag=5), (406, "PRECONDITION_FAILED - unknown delivery tag 5", 60, 80)),
    ("basic.ack", dict(delivery_tag=0), (406, "PRECONDITION_FAILED - unknown delivery tag 0", 60, 80)),
    ("basic.reject", dict(delivery_tag=7, requeue=True),
     (406, "PRECONDITION_FAILED - unknown delivery tag 7", 60, 90)),
    ("basic.nack", dict(delivery_tag=9, requeue=True),
     (406, "PRECONDITION_FAILED - unknown delivery tag 9", 60, 120)),
    ("tx.commit", {}, (406, "PRECONDITION_FAILED - channel is not transactional", 90, 20)),
    ("tx.rollback", {}, (406, "PRECONDITION_FAILED - channel is not transactional", 90, 30)),
    ("basic.get", dict(queue=""), (404, "NOT_FOUND - no previously declared queue", 60, 70)),
    ("basic.consume", dict(queue=""), (404, "NOT_FOUND - no previously declared queue", 60, 20)),
    ("queue.bind", dict(queue="", exchange="amq.direct"),
     (404, "NOT_FOUND - no previously declared queue", 50, 20)),
    ("queue.purge", dict(queue=""), (404, "NOT_FOUND - no previously declared queue", 50, 30)),
    ("queue.delete", dict(queue=""), (404, "NOT_FOUND - no previously declared queue", 50, 40)),
    ("exchange.declare", dict(exchange="", type="direct"),
     (403, "ACCESS_REFUSED - operation not permitted on the default exchange", 40, 10)),
    ("exchange.declare", dict(exchange="", type="direct", passive=True),
     (403, "ACCESS_REFUSED - operation not permitted on the default exchange", 40, 10)),
    ("exchange.bind", dict(destination="amq.fanout", source="", routing_key="x"),
     (403, "ACCESS_REFUSED - operation not permitted on the default exchange", 40, 30)),
    ("queue.unbind", dict(queue="q", exchange="", routing_key="q"),
     (403, "ACCESS_REFUSED - operation not permitted on the default exchange", 50, 50)),
])
def test_channel_errors_with_ids(raw, method, args, expected):
    c = raw()
    c.open_channel(1)
    c.send_method(1, method, **args)
    assert chan_close(c, 1) == expected


def test_ack_zero_multiple_with_nothing_outstanding_is_fine(raw):
    c = raw()
    c.open_channel(1)
    c.send_method(1, "basic.ack", delivery_tag=0, multiple=True)
    assert c.call(1, "basic.qos", "basic.qos-ok", prefetch_count=1).name == "basic.qos-ok"


def test_cancel_of_unknown_consumer_tag_is_ok(raw):
    c = raw()
    c.open_channel(1)
    assert c.call(1, "basic.cancel", "basic.cancel-ok", consumer_tag="nope")["consumer_tag"] == "nope"


@pytest.mark.parametrize("method, args, expected", [
    ("basic.qos", dict(prefetch_size=1000), (540, "NOT_IMPLEMENTED - prefetch_size!=0 (1000)", 60, 10)),
    ("basic.recover", dict(requeue=False), (540, "NOT_IMPLEMENTED - requeue=false", 60, 110)),
    ("basic.recover-async", dict(requeue=False), (540, "NOT_IMPLEMENTED - requeue=false", 60, 100)),
    ("channel.flow", dict(active=False), (540, "NOT_IMPLEMENTED - active=false", 20, 20)),
])
def test_not_implemented_540(raw, method, args, expected):
    c = raw()
    c.open_channel(1)
    c.send_method(1, method, **args)
    assert conn_close(c) == expected


def test_channel_flow_active_true_is_acknowledged(raw):
    c = raw()
    c.open_channel(1)
    assert c.call(1, "channel.flow", "channel.flow-ok", active=True)["active"] is True


def test_immediate_publish_540(raw):
    c = raw()
    c.open_channel(1)
    q = c.call(1, "queue.declare", "queue.declare-ok", queue="", exclusive=True)["queue"]
    c.call(1, "basic.consume", "basic.consume-ok", queue=q, no_ack=True)
    c.publish(1, "", q, b"now", immediate=True)
    assert conn_close(c) == (540, "NOT_IMPLEMENTED - immediate=true", 60, 40)


def test_publish_to_missing_exchange_404_after_content(raw, vhost):
    c = raw()
    c.open_channel(1)
    x = uname("nox")
    c.send_method(1, "basic.publish", exchange=x, routing_key="k")
    # nothing happens until the content is complete
    with pytest.raises(TimeoutError):
        c.read_frame(0.3)
    c.send_content(1, b"body")
    assert chan_close(c, 1) == (404, f"NOT_FOUND - no exchange '{x}' in vhost '{vhost}'", 60, 40)


def test_reused_consumer_tag_530(raw):
    c = raw()
    c.open_channel(1)
    q = c.call(1, "queue.declare", "queue.declare-ok", queue="", exclusive=True)["queue"]
    c.call(1, "basic.consume", "basic.consume-ok", queue=q, consumer_tag="dup")
    c.send_method(1, "basic.consume", queue=q, consumer_tag="dup")
    assert conn_close(c) == (530, "NOT_ALLOWED - attempt to reuse consumer tag 'dup'", 60, 20)


def test_unknown_exchange_type(raw):
    c = raw()
    c.open_channel(1)
    c.send_method(1, "exchange.declare", exchange=uname("x"), type="no-such-type")
    frame = c.read_frame()
    if frame.name == "connection.close":
        # RabbitMQ 3.x: a connection error
        assert close_summary(frame) == (503, "COMMAND_INVALID - unknown exchange type 'no-such-type'",
                                        40, 10)
    else:
        # RabbitMQ 4.x: a channel error
        assert frame.name == "channel.close"
        assert close_summary(frame) == (
            406, "PRECONDITION_FAILED - unknown exchange type 'no-such-type'", 40, 10)


# ---------------------------------------------------------------------------
# consumers, confirms, returns at the frame level
# ---------------------------------------------------------------------------
def test_server_generated_consumer_tag_and_deliveries(raw):
    c = raw()
    c.open_channel(1)
    q = c.call(1, "queue.declare", "queue.declare-ok", queue="", exclusive=True)["queue"]
    tag = c.call(1, "basic.consume", "basic.consume-ok", queue=q)["consumer_tag"]
    assert tag.startswith("amq.ctag-") and len(tag) == len("amq.ctag-") + 22
    for i in range(3):
        c.publish(1, "", q, f"m{i}".encode(), properties={"message_id": f"id{i}"})
    for i in range(3):
        d = c.expect_method("basic.deliver")
        assert (d["consumer_tag"], d["delivery_tag"], d["redelivered"], d["exchange"],
                d["routing_key"]) == (tag, i + 1, False, "", q)
        props, body = c.read_message()
        assert (props, body) == ({"message_id": f"id{i}"}, f"m{i}".encode())
    c.send_method(1, "basic.ack", delivery_tag=3, multiple=True)
    assert c.call(1, "basic.cancel", "basic.cancel-ok", consumer_tag=tag)["consumer_tag"] == tag


def test_empty_body_has_no_body_frame(raw):
    c = raw()
    c.open_channel(1)
    q = c.call(1, "queue.declare", "queue.declare-ok", queue="", exclusive=True)["queue"]
    c.send_method(1, "basic.publish", exchange="", routing_key=q)
    c.send_frame(FRAME_HEADER, 1, content_header_payload(0, {"content_type": "x/empty"}))
    c.send_method(1, "basic.get", queue=q, no_ack=True)
    ok = c.expect_method("basic.get-ok")
    assert ok["message_count"] == 0
    header = c.read_frame()
    assert header.type == FRAME_HEADER
    assert header.args["body_size"] == 0
    assert header.args["properties"] == {"content_type": "x/empty"}
    # the very next frame is the reply to the next request, not an empty body frame
    assert c.call(1, "basic.qos", "basic.qos-ok", prefetch_count=1).name == "basic.qos-ok"


def test_consumer_cancelled_by_server_when_queue_deleted(raw):
    c = raw()      # advertises consumer_cancel_notify
    c.open_channel(1)
    c.open_channel(2)
    q = c.call(1, "queue.declare", "queue.declare-ok", queue=uname("q"))["queue"]
    tag = c.call(1, "basic.consume", "basic.consume-ok", queue=q)["consumer_tag"]
    c.send_method(2, "queue.delete", queue=q)
    frames = [c.read_frame(), c.read_frame()]
    names = sorted((f.name, f.channel) for f in frames)
    assert names == [("basic.cancel", 1), ("queue.delete-ok", 2)]
    cancel = next(f for f in frames if f.name == "basic.cancel")
    assert (cancel["consumer_tag"], cancel["no_wait"]) == (tag, True)


def test_confirm_select_then_acks_returns_before_ack(raw, vhost):
    c = raw()
    c.open_channel(1)
    assert c.call(1, "confirm.select", "confirm.select-ok").name == "confirm.select-ok"
    q = c.call(1, "queue.declare", "queue.declare-ok", queue="", exclusive=True)["queue"]
    c.publish(1, "", "no-such-queue-" + q, b"back", mandatory=True)   # tag 1: returned, then acked
    c.publish(1, "", "no-such-queue-" + q, b"gone")                   # tag 2: unroutable, acked
    c.publish(1, "", q, b"kept")                                       # tag 3: routed, acked
    ret = c.expect_method("basic.return")
    assert (ret["reply_code"], ret["reply_text"], ret["exchange"], ret["routing_key"]) == (
        312, "NO_ROUTE", "", "no-such-queue-" + q)
    assert c.read_message() == ({}, b"back")
    acked = set()
    while len(acked) < 3:
        f = c.expect_method("basic.ack")
        tag = f["delivery_tag"]
        acked |= set(range(1, tag + 1)) if f["multiple"] else {tag}
    assert acked == {1, 2, 3}
    # a publish to a missing exchange in confirm mode closes the channel (no nack)
    x = uname("nox")
    c.publish(1, x, "k", b"x")
    assert chan_close(c, 1) == (404, f"NOT_FOUND - no exchange '{x}' in vhost '{vhost}'", 60, 40)


def test_confirm_select_nowait_and_twice(raw):
    c = raw()
    c.open_channel(1)
    c.send_method(1, "confirm.select", no_wait=True)
    assert c.call(1, "confirm.select", "confirm.select-ok").name == "confirm.select-ok"
    c.open_channel(2)
    c.call(2, "tx.select", "tx.select-ok")
    assert c.call(2, "tx.select", "tx.select-ok").name == "tx.select-ok"


# ---------------------------------------------------------------------------
# heartbeats
# ---------------------------------------------------------------------------
def test_heartbeat_timeout_closes_silent_connection(broker):
    """With heartbeat=1 the server sends heartbeats every ~0.5 s and drops a silent client
    after a few seconds (RabbitMQ: ~3 s, no connection.close frame); a client that sends
    heartbeats stays connected."""
    silent = RawConnection.opened(broker.host, broker.port, vhost=broker.vhost, heartbeat=1)
    chatty = RawConnection.opened(broker.host, broker.port, vhost=broker.vhost, heartbeat=1)
    stop = threading.Event()

    def beat():
        while not stop.wait(0.3):
            try:
                chatty.send_frame(FRAME_HEARTBEAT, 0, b"")
            except OSError:
                return

    beater = threading.Thread(target=beat, daemon=True)
    beater.start()
    try:
        t0 = time.monotonic()
        heartbeats = 0
        while True:
            try:
                frame = silent.read_frame(10, skip_heartbeats=False)
            except Exception as e:      # EOF
                assert "EOF" in str(e), e
                break
            assert frame.type == FRAME_HEARTBEAT and frame.channel == 0 and frame.payload == b"", frame
            heartbeats += 1
        elapsed = time.monotonic() - t0
        assert heartbeats >= 2
        assert 1.5 <= elapsed <= 8, elapsed
        chatty.open_channel(1)
        assert chatty.call(1, "basic.qos", "basic.qos-ok", prefetch_count=1).name == "basic.qos-ok"
    finally:
        stop.set()
        beater.join(2)
        silent.close()
        chatty.close()


def test_heartbeat_zero_means_no_heartbeats(raw):
    c = raw(heartbeat=0)
    with pytest.raises(TimeoutError):
        c.read_frame(1.2, skip_heartbeats=False)
