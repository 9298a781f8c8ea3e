"""Poison messages are contained: headers the broker cannot fully decode never cost anyone else.

Headers travel as the bytes received and are not checked at publish, so a queue can hold a message
whose headers nest deeper than the decoder goes (MAX_DEPTH), carry a type code it does not know or
a length that lies, or an x-death of the wrong shape or with a count at the top of its type. Such a
message used to close the connection of whoever rejected it (and come back to the queue to do it
again to the next consumer), to vanish on TTL expiry and come back after a restart, and to close
the connection with 541 and be lost when its x-death count overflowed.

Here every kind is sent with raw frames and taken through each path: delivered (the bytes as
received), rejected and nacked with and without requeue, dead-lettered (a fresh x-death where the
old cannot be read, the other headers kept as they came), expired by TTL across a restart, purged,
deleted with its queue, shown and fetched by the management API, delivered from quorum and stream
queues (which add a header). A well-behaved consumer on the same queue keeps its connection.
"""
from __future__ import annotations

import struct
import time

import pytest

from abuseutil import assert_healthy
from mgmtapi import api
from rawamqp import RawConnection, frame_bytes, method_payload, parse_frame
from support.harness import ServerProcess, external_broker_url, wait_for
from usagi.amqp import properties as P
from usagi.amqp import table as T

pytestmark = pytest.mark.timeout(300)

LONG_MAX = 2 ** 63 - 1


# ---------------------------------------------------------------------------------- wire values
def S(s) -> bytes:
    raw = s.encode() if isinstance(s, str) else s
    return b"S" + struct.pack(">I", len(raw)) + raw


def table(entries) -> bytes:
    body = b"".join(bytes([len(k)]) + k + v for k, v in entries)
    return struct.pack(">I", len(body)) + body


def F(entries) -> bytes:
    return b"F" + table(entries)


def A(items) -> bytes:
    body = b"".join(items)
    return b"A" + struct.pack(">I", len(body)) + body


def nested(depth: int, kind: str = "F") -> bytes:
    v = b"I" + struct.pack(">i", 1)
    for _ in range(depth):
        v = F([(b"k", v)]) if kind == "F" else A([v])
    return v


def death(queue: str, count: bytes, extra=()) -> bytes:
    return F([(b"count", count), (b"reason", S("rejected")), (b"queue", S(queue)), *extra])


def props(headers: bytes, persistent: bool = False, expiration: str | None = None) -> bytes:
    flags = 0x2000
    out = headers
    if persistent:
        flags |= 0x1000
        out += b"\x02"
    if expiration is not None:
        flags |= 0x0100
        out += bytes([len(expiration)]) + expiration.encode()
    return struct.pack(">H", flags) + out


KEEP = (b"keep", S("me"))


def poisons(queue: str) -> dict:
    """kind -> (headers table, x-death count expected after one rejection from `queue`)."""
    return {
        "deep-table": (table([KEEP, (b"deep", nested(150)), (b"after", S("kept"))]), 1),
        "deep-array": (table([KEEP, (b"deep", nested(400, "A"))]), 1),
        "unknown-type": (table([KEEP, (b"bad", b"Z\x01\x02\x03"), (b"hidden", S("x"))]), 1),
        "lying-length": (table([KEEP, (b"liar", b"S" + struct.pack(">I", 2 ** 31) + b"short")]), 1),
        "x-death-string": (table([KEEP, (b"x-death", S("not an array"))]), 1),
        "x-death-junk": (table([KEEP, (b"x-death", A([S("junk"), b"I\x00\x00\x00\x05",
                                                        death(queue, b"T" + b"\xff" * 8)]))]), LONG_MAX),
        "x-death-deep": (table([KEEP, (b"x-death", A([death(queue, b"l" + struct.pack(">q", 1),
                                                              [(b"deep", nested(150))])]))]), 2),
        "x-death-count-max": (table([KEEP, (b"x-death", A([death(queue, b"l" + struct.pack(">q", LONG_MAX))]))]),
                              LONG_MAX),
        "x-death-broken-array": (table([KEEP, (b"x-death", b"A" + struct.pack(">I", 6) + b"Z\x00\x00\x00\x00\x00")]),
                                 1),
    }


# ---------------------------------------------------------------------------------- a raw client
class Client:
    """A raw AMQP client that reads content headers as bytes (no decoding on the test's side)."""

    def __init__(self, srv, channel: int = 1):
        self.c = RawConnection.opened(srv.host, srv.port)
        self.ch = channel
        self.c.open_channel(channel)
        self.pending = []

    def frame(self, timeout=10.0):
        if self.pending:
            return self.pending.pop(0)
        header = self.c.read_exact(7, timeout)
        ftype, channel, size = struct.unpack(">BHI", header)
        payload = self.c.read_exact(size, timeout)
        assert self.c.read_exact(1, timeout) == b"\xce"
        if ftype == 8:
            return self.frame(timeout)
        if ftype == 1:
            f = parse_frame(ftype, channel, payload)
            assert f.name not in ("connection.close", "channel.close"), f"closed by the broker: {f.args}"
            return f
        return ftype, channel, payload

    def method(self, name, timeout=10.0):
        f = self.frame(timeout)
        assert getattr(f, "name", None) == name, f"expected {name}, got {f}"
        return f

    def call(self, method, reply, **args):
        self.c.send_method(self.ch, method, **args)
        return self.method(reply)

    def content(self, timeout=10.0):
        """(raw properties, body) after a deliver or get-ok."""
        _t, _c, payload = self.frame(timeout)
        size = struct.unpack_from(">Q", payload, 4)[0]
        body = b""
        while len(body) < size:
            _t, _c, part = self.frame(timeout)
            body += part
        return payload[12:], body

    def publish(self, exchange, key, raw_props, body=b"poison"):
        self.c.send_raw(frame_bytes(1, self.ch, method_payload("basic.publish", exchange=exchange, routing_key=key))
                        + frame_bytes(2, self.ch, struct.pack(">HHQ", 60, 0, len(body)) + raw_props)
                        + frame_bytes(3, self.ch, body))

    def deliver(self, timeout=10.0):
        f = self.method("basic.deliver", timeout)
        raw, body = self.content(timeout)
        return f["delivery_tag"], f["redelivered"], raw, body

    def get(self, queue):
        self.c.send_method(self.ch, "basic.get", queue=queue, no_ack=True)
        f = self.frame()
        if f.name == "basic.get-empty":
            return None
        assert f.name == "basic.get-ok", f
        return self.content()

    def alive(self):
        """A round trip: the connection and channel are still open."""
        self.call("basic.qos", "basic.qos-ok", prefetch_count=1)
        return True

    def count(self, queue):
        return self.call("queue.declare", "queue.declare-ok", queue=queue, passive=True)["message_count"]


def headers_of(raw: bytes) -> tuple:
    """(entries, rest) of a message's raw headers table."""
    s = P.scan(raw)
    a, b = s.headers_span
    return T.table_entries_lenient(raw[a:b])


def deaths(raw: bytes) -> list:
    return P.headers_of(raw).get("x-death")


@pytest.fixture(scope="module")
def srv():
    if external_broker_url():
        pytest.skip("needs a Usagi server of its own")
    s = ServerProcess().start()
    yield s
    s.cleanup()


@pytest.fixture
def setup(srv):
    ctl = Client(srv)
    yield ctl
    ctl.c.close()


def declare(ctl, name, durable=False, **args):
    ctl.call("queue.declare", "queue.declare-ok", queue=name, durable=durable, arguments=args or {})


# ---------------------------------------------------------------------------------- the tests
def test_delivered_as_received_rejected_and_dead_lettered(srv, setup):
    ctl = setup
    q, dlq = "poison-q", "poison-dlq"
    ctl.call("exchange.declare", "exchange.declare-ok", exchange="poison-dlx", type="fanout")
    declare(ctl, dlq)
    ctl.call("queue.bind", "queue.bind-ok", queue=dlq, exchange="poison-dlx", routing_key="")
    declare(ctl, q, **{"x-dead-letter-exchange": "poison-dlx"})
    # R takes the poison (highest priority, prefetch 1); W, well-behaved, gets the rest and acks
    r = Client(srv)
    r.call("basic.qos", "basic.qos-ok", prefetch_count=1)
    r.call("basic.consume", "basic.consume-ok", queue=q, consumer_tag="R", arguments={"x-priority": 10})
    w = Client(srv)
    w.call("basic.qos", "basic.qos-ok", prefetch_count=1)
    w.call("basic.consume", "basic.consume-ok", queue=q, consumer_tag="W")
    kinds = poisons(q)
    for kind, (headers, count) in kinds.items():
        raw = props(headers)
        ctl.publish("", q, raw, kind.encode())
        tag, redelivered, got, body = r.deliver()
        assert (got, body, redelivered) == (raw, kind.encode(), False), kind       # untouched
        for i in range(3):
            ctl.publish("", q, props(table([])), b"fine %d" % i)
            wtag, _r, _p, wbody = w.deliver()
            assert wbody == b"fine %d" % i
            w.c.send_method(1, "basic.ack", delivery_tag=wtag)
        r.c.send_method(1, "basic.reject", delivery_tag=tag, requeue=False)
        assert r.alive() and w.alive(), kind
        dead = wait_for(lambda: ctl.get(dlq), message=f"{kind} dead-lettered")
        got, body = dead
        assert body == kind.encode()
        entries, _rest = headers_of(got)
        assert entries[0] == (KEEP[0].decode(), KEEP[1]), kind          # other headers kept as they came
        d = deaths(got)
        assert isinstance(d, list) and isinstance(d[0], dict), (kind, d)
        assert (d[0]["queue"], d[0]["reason"], d[0]["count"]) == (q, "rejected", count), (kind, d[0])
        assert P.headers_of(got)["x-last-death-queue"] == q
    assert ctl.count(q) == 0 and ctl.count(dlq) == 0
    assert r.alive() and w.alive()
    for c in (r, w):
        c.c.close()
    assert_healthy(srv)


def test_requeued_nacked_and_redelivered_untouched(srv, setup):
    ctl = setup
    q, dlq = "poison-rq", "poison-rq-dlq"
    declare(ctl, dlq)
    declare(ctl, q, **{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq})
    r = Client(srv)
    r.call("basic.qos", "basic.qos-ok", prefetch_count=1)
    r.call("basic.consume", "basic.consume-ok", queue=q, consumer_tag="R")
    for kind, (headers, _count) in poisons(q).items():
        raw = props(headers)
        ctl.publish("", q, raw, kind.encode())
        tag, red, got, _b = r.deliver()
        assert (got, red) == (raw, False)
        r.c.send_method(1, "basic.reject", delivery_tag=tag, requeue=True)
        tag, red, got, _b = r.deliver()
        assert (got, red) == (raw, True), kind
        r.c.send_method(1, "basic.nack", delivery_tag=tag, multiple=False, requeue=True)
        tag, red, got, _b = r.deliver()
        assert (got, red) == (raw, True), kind
        r.c.send_method(1, "basic.nack", delivery_tag=tag, multiple=True, requeue=False)
        got, body = wait_for(lambda: ctl.get(dlq), message=f"{kind} dead-lettered")
        assert body == kind.encode() and deaths(got)[0]["queue"] == q
    assert r.alive()
    r.c.close()


def test_quorum_and_stream_deliveries_add_their_header(srv, setup):
    """A quorum queue's redelivery adds x-delivery-count, a stream's delivery x-stream-offset: the
    header is added, the rest of the table kept as it came."""
    ctl = setup
    declare(ctl, "poison-quorum", durable=True, **{"x-queue-type": "quorum"})
    declare(ctl, "poison-stream", durable=True, **{"x-queue-type": "stream"})
    r = Client(srv)
    r.call("basic.qos", "basic.qos-ok", prefetch_count=10)
    r.call("basic.consume", "basic.consume-ok", queue="poison-quorum", consumer_tag="R")
    for kind, (headers, _count) in poisons("poison-quorum").items():
        ctl.publish("", "poison-quorum", props(headers, persistent=True), kind.encode())
        tag, _red, got, _b = r.deliver()
        r.c.send_method(1, "basic.reject", delivery_tag=tag, requeue=True)
        tag, red, got, body = r.deliver()
        assert red and body == kind.encode()
        assert P.headers_of(got)["x-delivery-count"] == 1, kind
        assert headers_of(got)[0][0] == (KEEP[0].decode(), KEEP[1])
        r.c.send_method(1, "basic.ack", delivery_tag=tag)
    s = Client(srv)
    s.call("basic.qos", "basic.qos-ok", prefetch_count=100)
    s.call("basic.consume", "basic.consume-ok", queue="poison-stream", consumer_tag="S",
           arguments={"x-stream-offset": "first"})
    kinds = poisons("poison-stream")
    for kind, (headers, _count) in kinds.items():
        ctl.publish("", "poison-stream", props(headers), kind.encode())
    for i, kind in enumerate(kinds):
        tag, _red, got, body = s.deliver()
        assert body == kind.encode() and P.headers_of(got)["x-stream-offset"] == i
        s.c.send_method(1, "basic.ack", delivery_tag=tag)
    assert r.alive() and s.alive()
    r.c.close()
    s.c.close()


def test_management_shows_fetches_purges_and_deletes(srv, setup):
    ctl = setup
    q, dlq = "poison-api", "poison-api-dlq"
    declare(ctl, dlq)
    declare(ctl, q, **{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq})
    kinds = poisons(q)
    for kind, (headers, _count) in kinds.items():
        ctl.publish("", q, props(headers), kind.encode())
    wait_for(lambda: ctl.count(q) == len(kinds))
    peeked = api(srv, "GET", f"/api/queues/%2F/{q}/peek?count=100")
    assert [m["payload"] for m in peeked] == list(kinds)
    for m in peeked:
        assert m["properties"]["headers"]["keep"] == "me", m          # what can be read is shown
    got = api(srv, "POST", f"/api/queues/%2F/{q}/get",
              {"count": 100, "ackmode": "ack_requeue_true", "encoding": "auto"})
    assert [m["payload"] for m in got] == list(kinds)
    assert all(m["properties"]["headers"]["keep"] == "me" for m in got)
    got = api(srv, "POST", f"/api/queues/%2F/{q}/get",
              {"count": 100, "ackmode": "reject_requeue_false", "encoding": "auto"})
    assert len(got) == len(kinds)
    wait_for(lambda: ctl.count(dlq) == len(kinds), message="dead-lettered through the API")
    assert ctl.count(q) == 0
    # basic.get, purge, delete: the queue lets go of them
    for kind, (headers, _count) in kinds.items():
        ctl.publish("", dlq, props(headers), kind.encode())
    got = ctl.get(dlq)
    assert got is not None
    assert ctl.call("queue.purge", "queue.purge-ok", queue=dlq)["message_count"] == 2 * len(kinds) - 1
    for kind, (headers, _count) in kinds.items():
        ctl.publish("", q, props(headers), kind.encode())
    wait_for(lambda: ctl.count(q) == len(kinds))
    assert ctl.call("queue.delete", "queue.delete-ok", queue=q)["message_count"] == len(kinds)
    assert ctl.alive()
    assert_healthy(srv)


def test_ttl_expiry_dead_letters_and_a_restart_does_not_bring_them_back(fresh_server):
    srv = fresh_server()
    ctl = Client(srv)
    q, dlq = "poison-ttl", "poison-ttl-dlq"
    ctl.call("queue.declare", "queue.declare-ok", queue=dlq, durable=True)
    ctl.call("queue.declare", "queue.declare-ok", queue=q, durable=True,
             arguments={"x-message-ttl": 300, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq})
    ctl.call("queue.declare", "queue.declare-ok", queue=q + "-per-message", durable=True,
             arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq})
    ctl.call("confirm.select", "confirm.select-ok")
    kinds = poisons(q)
    for kind, (headers, _count) in kinds.items():
        ctl.publish("", q, props(headers, persistent=True), kind.encode())
        ctl.publish("", q + "-per-message", props(headers, persistent=True, expiration="300"), kind.encode())
    acked = 0
    while acked < 2 * len(kinds):                 # confirms, perhaps cumulative
        acked = max(acked, ctl.method("basic.ack")["delivery_tag"])
    wait_for(lambda: ctl.count(q) == 0 and ctl.count(q + "-per-message") == 0, timeout=15, message="expiry")
    wait_for(lambda: ctl.count(dlq) == 2 * len(kinds), timeout=15, message="expired poison dead-lettered")
    ctl.c.close()
    srv.stop()
    srv.start()
    ctl = Client(srv)
    time.sleep(0.5)
    assert ctl.count(q) == 0 and ctl.count(q + "-per-message") == 0    # not back from the store
    assert ctl.count(dlq) == 2 * len(kinds)
    seen = []
    while (m := ctl.get(dlq)) is not None:
        got, body = m
        d = deaths(got)
        assert d[0]["reason"] == "expired" and d[0]["queue"].startswith(q)
        assert P.scan(got).expiration is None
        seen.append(body)
    assert sorted(seen) == sorted(k.encode() for k in kinds for _ in (1, 2))
    ctl.c.close()
    assert_healthy(srv)
