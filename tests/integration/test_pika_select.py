"""pika SelectConnection (callback style, its own I/O loop) against a live broker."""
from __future__ import annotations

import pika
import pika.exceptions as pex
import pytest

from itutil import uname

pytestmark = pytest.mark.timeout(30)


class Flow:
    """Runs a SelectConnection, calling `on_channel(flow, channel)` once a channel is open.

    The test's callbacks record results in `flow.result` and call `flow.done()`; a watchdog
    stops the loop after `timeout` seconds so a hung broker fails the test instead of hanging.
    """

    def __init__(self, params, on_channel, timeout=10.0):
        self.on_channel = on_channel
        self.result: dict = {}
        self.error = None
        self.timed_out = False
        self.conn = pika.SelectConnection(
            params, on_open_callback=self._opened,
            on_open_error_callback=self._open_failed,
            on_close_callback=self._closed)
        self.conn.ioloop.call_later(timeout, self._watchdog)

    def _opened(self, conn):
        conn.channel(on_open_callback=self._channel_opened)

    def _channel_opened(self, ch):
        try:
            self.on_channel(self, ch)
        except Exception as e:      # noqa: BLE001
            self.fail(e)

    def _open_failed(self, conn, err):
        self.error = err
        conn.ioloop.stop()

    def _closed(self, conn, reason):
        self.result.setdefault("connection_closed", reason)
        conn.ioloop.stop()

    def _watchdog(self):
        self.timed_out = True
        self.done()

    def fail(self, exc):
        self.error = exc
        self.done()

    def done(self):
        if self.conn.is_open:
            self.conn.close()
        else:
            self.conn.ioloop.stop()

    def run(self):
        self.conn.ioloop.start()
        if self.error:
            raise self.error
        assert not self.timed_out, f"timed out; partial result {self.result}"
        return self.result


def test_async_publish_consume_ack(pika_params):
    n = 50

    def on_channel(flow, ch):
        q = uname("q")
        got = []

        def on_message(c, method, props, body):
            got.append((body, method.delivery_tag, props.message_id))
            c.basic_ack(method.delivery_tag)
            if len(got) == n:
                flow.result["got"] = got
                c.queue_delete(q, callback=lambda frame: flow.done())

        def on_consume_ok(frame):
            flow.result["ctag"] = frame.method.consumer_tag
            for i in range(n):
                ch.basic_publish("", q, f"m{i}".encode(),
                                 pika.BasicProperties(message_id=str(i)))

        def on_declared(frame):
            assert frame.method.queue == q
            ch.basic_qos(prefetch_count=10, callback=lambda _f: ch.basic_consume(
                q, on_message, consumer_tag="my-tag", callback=on_consume_ok))

        ch.queue_declare(q, auto_delete=True, callback=on_declared)

    result = Flow(pika_params, on_channel).run()
    assert result["ctag"] == "my-tag"
    assert [b for b, _, _ in result["got"]] == [f"m{i}".encode() for i in range(n)]
    assert [t for _, t, _ in result["got"]] == list(range(1, n + 1))
    assert [m for _, _, m in result["got"]] == [str(i) for i in range(n)]


def test_async_publisher_confirms(pika_params):
    n = 20

    def on_channel(flow, ch):
        acked = set()
        flow.result["nacks"] = 0

        def on_confirm(frame):
            method = frame.method
            if isinstance(method, pika.spec.Basic.Nack):
                flow.result["nacks"] += 1
            tag = method.delivery_tag
            acked.update(range(1, tag + 1) if method.multiple else [tag])
            if len(acked) == n:
                flow.result["acked"] = sorted(acked)
                flow.done()

        def on_declared(frame):
            q = frame.method.queue
            for i in range(n):
                ch.basic_publish("", q, b"x")

        def on_selected(frame):
            ch.queue_declare("", exclusive=True, callback=on_declared)

        ch.confirm_delivery(on_confirm, callback=on_selected)

    result = Flow(pika_params, on_channel).run()
    assert result["acked"] == list(range(1, n + 1))
    assert result["nacks"] == 0


def test_async_channel_close_by_broker(pika_params, vhost):
    missing = uname("missing")

    def on_channel(flow, ch):
        def on_close(c, reason):
            flow.result["reason"] = reason
            flow.done()

        ch.add_on_close_callback(on_close)
        ch.queue_declare(missing, passive=True, callback=lambda f: flow.fail(AssertionError("declared")))

    result = Flow(pika_params, on_channel).run()
    reason = result["reason"]
    assert isinstance(reason, pex.ChannelClosedByBroker)
    assert (reason.reply_code, reason.reply_text) == (
        404, f"NOT_FOUND - no queue '{missing}' in vhost '{vhost}'")


def test_async_connection_close_by_broker(pika_params):
    def on_channel(flow, ch):
        # qos with prefetch_size is not implemented by RabbitMQ: a connection error
        ch.basic_qos(prefetch_size=1024, callback=lambda f: flow.fail(AssertionError("qos-ok")))

    result = Flow(pika_params, on_channel).run()
    reason = result["connection_closed"]
    assert isinstance(reason, pex.ConnectionClosedByBroker)
    assert (reason.reply_code, reason.reply_text) == (540, "NOT_IMPLEMENTED - prefetch_size!=0 (1024)")


def test_async_consumer_cancel_notification(pika_params):
    def on_channel(flow, ch):
        q = uname("q")

        def on_cancelled(frame):
            flow.result["cancel"] = frame.method
            flow.done()

        def on_consume_ok(frame):
            flow.result["tag"] = frame.method.consumer_tag
            # delete the queue from a second channel; the broker cancels our consumer
            flow.conn.channel(on_open_callback=lambda ch2: ch2.queue_delete(q))

        def on_declared(frame):
            ch.add_on_cancel_callback(on_cancelled)
            ch.basic_consume(q, lambda *a: None, callback=on_consume_ok)

        ch.queue_declare(q, callback=on_declared)

    result = Flow(pika_params, on_channel).run()
    assert isinstance(result["cancel"], pika.spec.Basic.Cancel)
    assert result["cancel"].consumer_tag == result["tag"]


def test_async_mandatory_return(pika_params):
    def on_channel(flow, ch):
        def on_return(c, method, props, body):
            flow.result["returned"] = (method.reply_code, method.reply_text, method.exchange,
                                       method.routing_key, props.correlation_id, body)
            flow.done()

        ch.add_on_return_callback(on_return)
        ch.basic_publish("amq.direct", uname("nobody"), b"back",
                         pika.BasicProperties(correlation_id="r1"), mandatory=True)

    result = Flow(pika_params, on_channel).run()
    code, text, exchange, rk, corr, body = result["returned"]
    assert (code, text, exchange, corr, body) == (312, "NO_ROUTE", "amq.direct", "r1", b"back")
    assert rk.startswith("nobody-")


def test_many_channels_in_parallel(pika_params):
    n_channels = 10

    def on_channel(flow, first):
        done = []

        def run_one(ch):
            q = uname("q")

            def on_get(c, method, props, body):
                done.append((ch.channel_number, body))
                if len(done) == n_channels:
                    flow.result["done"] = done
                    flow.done()

            def on_declared(frame):
                ch.basic_publish("", q, str(ch.channel_number).encode())
                ch.basic_get(q, on_get, auto_ack=True)

            ch.queue_declare(q, exclusive=True, callback=on_declared)

        run_one(first)
        for _ in range(n_channels - 1):
            flow.conn.channel(on_open_callback=run_one)

    result = Flow(pika_params, on_channel).run()
    assert len(result["done"]) == n_channels
    assert all(str(num).encode() == body for num, body in result["done"])
    assert len({num for num, _ in result["done"]}) == n_channels


def test_blocking_and_select_interoperate(pika_params, conn):
    """A message published through a SelectConnection is read by a BlockingConnection."""
    ch = conn.channel()
    q = ch.queue_declare(uname("q"), auto_delete=False).method.queue
    try:
        def on_channel(flow, sch):
            sch.basic_publish("", q, b"from-select")
            sch.queue_declare(q, passive=True, callback=lambda f: flow.done())

        Flow(pika_params, on_channel).run()
        m, p, b = ch.basic_get(q, auto_ack=True)
        assert (b, m.redelivered, m.routing_key) == (b"from-select", False, q)
    finally:
        ch.queue_delete(q)


def test_heartbeat_negotiation(pika_params):
    """The client may lower the server's proposed heartbeat (60 s in RabbitMQ)."""
    seen = {}

    def choose(conn, server_value):
        seen["proposed"] = server_value
        return 7

    params = pika.ConnectionParameters(host=pika_params.host, port=pika_params.port,
                                       virtual_host=pika_params.virtual_host,
                                       credentials=pika_params.credentials, heartbeat=choose)

    def on_channel(flow, ch):
        flow.result["heartbeat"] = flow.conn.params.heartbeat
        flow.done()

    result = Flow(params, on_channel).run()
    assert seen["proposed"] == 60
    assert result["heartbeat"] == 7
