"""RPC over direct reply-to (amq.rabbitmq.reply-to) with a server in a process of its own.

The server (this file run as a script: `python test_rpc.py URL QUEUE`) consumes a request queue
with pika, answers each request on its reply_to with the request's correlation_id (publisher
confirms on) and acks it. Clients: pika, kombu (py-amqp) and aio-pika, each
consuming amq.rabbitmq.reply-to with no-ack on the channel they publish requests on.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pika

if __name__ != "__main__":
    import pika.exceptions as pex
    import pytest

    from itutil import drain, settle, uname

    pytestmark = pytest.mark.timeout(30)

REPLY_TO = "amq.rabbitmq.reply-to"


# ---------------------------------------------------------------------------------- the server
def serve(url: str, queue: str):
    params = pika.URLParameters(url)
    conn = pika.BlockingConnection(params)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.basic_qos(prefetch_count=10)
    state = {"n": 0, "nacked": 0, "stop": False}

    def on_request(c, m, p, body):
        if body == b"__stop__":
            state["stop"] = True
            c.basic_ack(m.delivery_tag)
            return
        state["n"] += 1
        reply = json.dumps({"echo": body.decode(), "n": state["n"], "pid": os.getpid(),
                            "reply_to": p.reply_to}).encode()
        # (not mandatory: RabbitMQ 3.10 returns mandatory replies to direct reply-to as unroutable
        # even when it delivers them)
        try:
            c.basic_publish("", p.reply_to, reply, pika.BasicProperties(
                correlation_id=p.correlation_id, content_type="application/json"))
        except pika.exceptions.NackError:
            state["nacked"] += 1
        c.basic_ack(m.delivery_tag)

    ch.basic_consume(queue, on_request)
    print("ready", flush=True)
    while not state["stop"]:
        conn.process_data_events(time_limit=0.1)
    print(f"served {state['n']} nacked {state['nacked']}", flush=True)
    conn.close()


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2])
    sys.exit(0)


# ---------------------------------------------------------------------------------- fixtures
class RpcServer:
    def __init__(self, url: str, queue: str):
        self.url, self.queue = url, queue
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), url, queue],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = self.proc.stdout.readline()
        assert line.strip() == "ready", line + self.proc.stdout.read()

    def stop(self) -> str:
        if self.proc.poll() is None:
            conn = pika.BlockingConnection(pika.URLParameters(self.url))
            conn.channel().basic_publish("", self.queue, b"__stop__")
            conn.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.stdout.read()


@pytest.fixture
def rpc_server(broker, pika_connect):
    """A request queue and a server process answering on it (stopped and deleted afterwards)."""
    admin = pika_connect().channel()
    q = admin.queue_declare(uname("rpc"), auto_delete=False).method.queue
    server = RpcServer(broker.url, q)
    yield server
    out = server.stop()
    server.output = out
    admin.queue_delete(q)


def call_many(conn, ch, queue: str, bodies: list, timeout: float = 10.0) -> dict:
    """Publish requests with reply_to=amq.rabbitmq.reply-to on ch; replies by correlation id."""
    replies = {}

    def on_reply(c, m, p, b):
        replies[p.correlation_id] = (m, p, json.loads(b))
    ch.basic_consume(REPLY_TO, on_reply, auto_ack=True)
    for i, body in enumerate(bodies):
        ch.basic_publish("", queue, body, pika.BasicProperties(reply_to=REPLY_TO, correlation_id=f"c-{i}"))
    drain(conn, lambda: len(replies) == len(bodies), timeout=timeout)
    return replies


# ---------------------------------------------------------------------------------- pika
def test_pika_rpc_client_and_server_process(conn, rpc_server):
    ch = conn.channel()
    bodies = [f"req-{i}".encode() for i in range(50)]
    replies = call_many(conn, ch, rpc_server.queue, bodies)
    assert sorted(replies) == sorted(f"c-{i}" for i in range(50))
    reply_tos = set()
    for i in range(50):
        m, p, r = replies[f"c-{i}"]
        assert r["echo"] == f"req-{i}"
        assert r["pid"] == rpc_server.proc.pid
        assert m.exchange == "" and m.routing_key == r["reply_to"]
        assert p.content_type == "application/json"
        reply_tos.add(r["reply_to"])
    # one reply-to address per channel, whatever the number of requests
    [rt] = reply_tos
    assert rt.startswith(REPLY_TO + ".")
    assert "served 50 nacked 0" in rpc_server.stop()


def test_each_channel_gets_its_own_replies(conn, rpc_server):
    chans = [conn.channel() for _ in range(3)]
    got = {i: [] for i in range(3)}
    for i, ch in enumerate(chans):
        ch.basic_consume(REPLY_TO, lambda c, m, p, b, i=i: got[i].append(json.loads(b)["echo"]),
                         auto_ack=True)
    for k in range(5):
        for i, ch in enumerate(chans):
            ch.basic_publish("", rpc_server.queue, f"ch{i}-{k}".encode(),
                             pika.BasicProperties(reply_to=REPLY_TO))
    drain(conn, lambda: all(len(v) == 5 for v in got.values()))
    for i in range(3):
        assert sorted(got[i]) == sorted(f"ch{i}-{k}" for k in range(5))


def test_reply_to_a_closed_requester_is_dropped_and_gone(conn, pika_connect, vhost):
    requester = pika_connect()
    rch = requester.channel()
    rch.basic_consume(REPLY_TO, lambda *a: None, auto_ack=True)
    q = rch.queue_declare(uname("rpc"), exclusive=True).method.queue
    rch.basic_publish("", q, b"req", pika.BasicProperties(reply_to=REPLY_TO))
    _, props, _ = rch.basic_get(q, auto_ack=True)
    reply_to = props.reply_to
    # while the requester lives its address declares (passively) as a queue
    ch = conn.channel()
    ok = ch.queue_declare(reply_to, passive=True)
    assert ok.method.queue == reply_to
    requester.close()
    time.sleep(0.2)
    ch.confirm_delivery()
    ch.basic_publish("", reply_to, b"late reply")      # dropped, yet confirmed
    ch = conn.channel()
    with pytest.raises(pex.ChannelClosedByBroker) as ei:
        ch.queue_declare(reply_to, passive=True)
    assert (ei.value.reply_code, ei.value.reply_text) == (
        404, f"NOT_FOUND - no queue '{reply_to}' in vhost '{vhost}'")


def test_reply_to_unknown_address_is_unroutable(conn):
    ch = conn.channel()
    ch.confirm_delivery()
    with pytest.raises(pex.UnroutableError):
        ch.basic_publish("", REPLY_TO + ".bogus", b"x", mandatory=True)
    ch.basic_publish("", REPLY_TO + ".bogus", b"x")      # without mandatory: dropped, confirmed


@pytest.mark.parametrize("passive", [True, False])
def test_declare_of_the_reply_to_pseudo_queue(conn, passive):
    ch = conn.channel()
    ok = ch.queue_declare(REPLY_TO, passive=passive).method
    # RabbitMQ answers with a fixed (0 messages, 1 consumer), whoever asks
    assert (ok.queue, ok.message_count, ok.consumer_count) == (REPLY_TO, 0, 1)


@pytest.mark.parametrize("passive", [True, False])
def test_declare_of_an_unknown_reply_to_address_404(conn, vhost, passive):
    ch = conn.channel()
    name = REPLY_TO + ".bogus"
    with pytest.raises(pex.ChannelClosedByBroker) as ei:
        ch.queue_declare(name, passive=passive)
    assert (ei.value.reply_code, ei.value.reply_text) == (
        404, f"NOT_FOUND - no queue '{name}' in vhost '{vhost}'")


def test_reply_consumer_must_be_no_ack_and_single(conn):
    ch = conn.channel()
    with pytest.raises(pex.ChannelClosedByBroker) as ei:
        ch.basic_consume(REPLY_TO, lambda *a: None, auto_ack=False)
    assert (ei.value.reply_code, ei.value.reply_text) == (
        406, "PRECONDITION_FAILED - reply consumer cannot acknowledge")
    ch = conn.channel()
    ch.basic_consume(REPLY_TO, lambda *a: None, auto_ack=True)
    with pytest.raises(pex.ChannelClosedByBroker) as ei:
        ch.basic_consume(REPLY_TO, lambda *a: None, auto_ack=True)
    assert (ei.value.reply_code, ei.value.reply_text) == (
        406, "PRECONDITION_FAILED - reply consumer already set")


def test_reply_to_needs_the_consumer_on_the_publishing_channel(conn):
    consumer_ch, other = conn.channel(), conn.channel()
    consumer_ch.basic_consume(REPLY_TO, lambda *a: None, auto_ack=True)
    q = other.queue_declare(uname("rpc"), exclusive=True).method.queue
    other.basic_publish("", q, b"x", pika.BasicProperties(reply_to=REPLY_TO))
    with pytest.raises(pex.ChannelClosedByBroker) as ei:
        other.queue_declare(q, passive=True)
    assert (ei.value.reply_code, ei.value.reply_text) == (
        406, "PRECONDITION_FAILED - fast reply consumer does not exist")


def test_cancelled_reply_consumer_stops_replies(conn, rpc_server):
    ch = conn.channel()
    got = []
    tag = ch.basic_consume(REPLY_TO, lambda c, m, p, b: got.append(b), auto_ack=True)
    ch.basic_publish("", rpc_server.queue, b"one", pika.BasicProperties(reply_to=REPLY_TO))
    drain(conn, lambda: got)
    ch.basic_cancel(tag)
    ch.basic_publish("", rpc_server.queue, b"two", pika.BasicProperties(reply_to=REPLY_TO))
    with pytest.raises(pex.ChannelClosedByBroker) as ei:
        ch.queue_declare(rpc_server.queue, passive=True)
    assert ei.value.reply_code == 406
    settle(conn, 0.1)
    assert len(got) == 1


# ---------------------------------------------------------------------------------- kombu
def test_kombu_rpc_client(broker, rpc_server):
    from kombu import Connection, Consumer, Producer, Queue

    replies = {}
    with Connection(broker.url, connect_timeout=5) as kc:
        channel = kc.channel()
        reply_queue = Queue(REPLY_TO, no_declare=True)
        consumer = Consumer(channel, [reply_queue], no_ack=True,
                            callbacks=[lambda body, msg: replies.__setitem__(
                                msg.properties["correlation_id"], body)],
                            accept=["json"])
        consumer.consume()
        producer = Producer(channel)
        for i in range(10):
            producer.publish(f"k-{i}", exchange="", routing_key=rpc_server.queue, serializer="raw",
                             content_type="text/plain", reply_to=REPLY_TO, correlation_id=f"k{i}")
        deadline = time.monotonic() + 10
        while len(replies) < 10:
            assert time.monotonic() < deadline, replies
            try:
                kc.drain_events(timeout=0.2)
            except TimeoutError:
                pass
            except OSError:         # socket.timeout on older Pythons
                pass
        consumer.cancel()
    assert {k: v["echo"] for k, v in replies.items()} == {f"k{i}": f"k-{i}" for i in range(10)}


# ---------------------------------------------------------------------------------- aio-pika
def test_aio_pika_rpc_client(broker, rpc_server):
    import asyncio

    import aio_pika

    async def main():
        connection = await aio_pika.connect(broker.url, timeout=5)
        async with connection:
            channel = await connection.channel()
            replies = {}
            done = asyncio.Event()
            reply_queue = await channel.declare_queue(REPLY_TO, passive=True)

            async def on_reply(message: aio_pika.abc.AbstractIncomingMessage):
                replies[message.correlation_id] = json.loads(message.body)["echo"]
                if len(replies) == 10:
                    done.set()
            await reply_queue.consume(on_reply, no_ack=True)
            for i in range(10):
                await channel.default_exchange.publish(
                    aio_pika.Message(f"a-{i}".encode(), reply_to=REPLY_TO, correlation_id=f"a{i}"),
                    routing_key=rpc_server.queue)
            await asyncio.wait_for(done.wait(), 10)
            return replies

    replies = asyncio.run(main())
    assert replies == {f"a{i}": f"a-{i}" for i in range(10)}
