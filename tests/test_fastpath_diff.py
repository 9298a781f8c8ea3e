"""The hot path against the general path: the same bytes in, the same bytes out, the same state.

`Connection._fast` (core/fastpath.py) handles a publish whose three frames came in one read, and a
basic.ack, without the general frame reader and method decoder; `Connection.fast_path = False`
sends every frame through the general path instead. Each test here feeds one byte stream, split
in the same places, to a fresh engine (sans-IO, no sockets) once with the hot path and once
without, and compares every byte each connection was sent and the state the engine ends in (queue
depths, unacknowledged deliveries, confirms, statistics). Streams: a pipelined publish + confirm +
ack stream split at every offset, many channels (one above 255) at random split points, and the
fuzz corpus (tests/test_fuzz.py) mutated with a fixed seed.

When the hot path is compiled, the same streams also go through its pure-Python source (the
module the build was made from), so the two forms are tested against each other as well.
"""
from __future__ import annotations

import itertools
import random
import struct

import pytest

from support.sansio import Transport
from test_fuzz import corpus
from usagi.amqp import methods as M
from usagi.amqp.frames import PROTOCOL_HEADER, method_frame
from usagi.core import connection as connection_mod
from usagi.core import entities, replyto
from usagi.core import fastpath as source
from usagi.core import hot
from usagi.core.broker import Broker
from usagi.core.channel import Channel
from usagi.core.connection import Connection
from usagi.core.handlers import basic as basic_handlers
from usagi.core.handlers import queue as queue_handlers


def frame(ftype, channel, payload, end=b"\xce"):
    return struct.pack(">BHI", ftype, channel, len(payload)) + payload + end


def publish(ch, rk, body, exchange="", props=b"\x00\x00", mandatory=False, frame_max=None):
    out = method_frame(ch, M.BasicPublish(0, exchange, rk, mandatory, False).encode())
    out += frame(2, ch, struct.pack(">HHQ", 60, 0, len(body)) + props)
    if body:
        step = frame_max or len(body)
        for i in range(0, len(body), step):
            out += frame(3, ch, body[i:i + step])
    return out


def ack(ch, tag, multiple=False):
    return method_frame(ch, M.BasicAck(tag, multiple).encode())


HANDSHAKE = PROTOCOL_HEADER + b"".join(method_frame(0, m.encode()) for m in (
    M.ConnectionStartOk({"capabilities": {"consumer_cancel_notify": True, "publisher_confirms": True}},
                        "PLAIN", b"\x00guest\x00guest", "en_US"),
    M.ConnectionTuneOk(2047, 131072, 0),
    M.ConnectionOpen("/")))


def setup_stream(channels=(1,)):
    """Channels opened; queues dq1..dq3 declared; ch1 in confirm mode consuming dq1 (manual ack,
    prefetch 5) and dq2 (autoack)."""
    out = b""
    for ch in channels:
        out += method_frame(ch, M.ChannelOpen().encode())
    for q in ("dq1", "dq2", "dq3"):
        out += method_frame(channels[0], M.QueueDeclare(0, q, False, False, False, False, False, {}).encode())
    out += method_frame(1, M.ConfirmSelect(False).encode())
    out += method_frame(1, M.BasicQos(0, 5, False).encode())
    out += method_frame(1, M.BasicConsume(0, "dq1", "c1", False, False, False, False, {}).encode())
    out += method_frame(1, M.BasicConsume(0, "dq2", "c2", False, True, False, False, {}).encode())
    return out


class Engine:
    """A fresh broker with one connection, fed by hand; deferred work runs at once."""

    def __init__(self, fast: bool, setup: bytes):
        global NAMES
        NAMES = itertools.count()
        self.broker = Broker()
        self.broker.bootstrap()
        self.t = Transport()
        self.conn = Connection(self.broker, self.t, ("127.0.0.1", 1), ("127.0.0.1", 2))
        self.conn.fast_path = fast
        self.conn.connection_made()
        self.feed(HANDSHAKE + setup)
        self.t.data.clear()

    def feed(self, data):
        self.conn.data_received(data)
        self.broker.flush_output()

    def state(self):
        b = self.broker
        v = b.vhosts["/"]
        queues = {name: (q.message_count, q.unacked, q.delivered, q.acked, q.published, len(q.consumers))
                  for name, q in sorted(v.queues.items())}
        chans = {n: (ch.state, sorted(ch.unacked), ch.next_tag, ch.publish_seq, ch.published, ch.delivered,
                     ch.acked, ch.content_expected, ch.body_expected, len(ch.tx_publishes), ch.confirm_dirty)
                 for n, ch in sorted(self.conn.channels.items())}
        exchanges = {name: (x.publish_in, x.publish_out, x.returned, x.dropped)
                     for name, x in sorted(v.exchanges.items())}
        return {"queues": queues, "channels": chans, "exchanges": exchanges, "stats": dict(b.stats),
                "next_msg_id": b.next_msg_id,
                "conn": (self.conn.state, self.conn.closed, self.t.closed)}


def run(fast, setup, chunks):
    e = Engine(fast, setup)
    for c in chunks:
        e.feed(c)
    return bytes(e.t.data), e.state()


NAMES = itertools.count()


def names(prefix: str) -> str:
    """Server-generated names, the same in both runs of a comparison (Engine restarts the count)."""
    return "%s%022d" % (prefix, next(NAMES))


@pytest.fixture(autouse=True)
def deterministic(monkeypatch):
    """A turn cut short by the clock would split confirms differently on a busy machine: the clock
    is taken out of the comparison (the frame budget stays). Generated names are counted."""
    for mod in {source, hot.fastpath}:
        monkeypatch.setattr(mod, "TURN_SECONDS", 1e9)
    monkeypatch.setattr(connection_mod, "TURN_SECONDS", 1e9)
    for mod in (basic_handlers, queue_handlers, replyto, entities):
        monkeypatch.setattr(mod, "gen_name", names)


# the hot path's entry points as the classes carry them (see core/fastpath.py)
ENTRY_POINTS = ((Connection, "_fast", "fast_input"), (Channel, "fast_publish", "publish"),
                (Channel, "deliver", "deliver"), (Channel, "_write_content", "write_content"),
                (Broker, "enqueue_plain", "enqueue_plain"), (Broker, "_pick_consumer", "pick_consumer"),
                (Channel, "_take", "take"), (Channel, "_settle", "settle_items"), (Broker, "settle", "settle"),
                (Broker, "dispatch", "dispatch"))

FORMS = ["running"] + (["source"] if hot.COMPILED else [])


@pytest.fixture(params=FORMS)
def form(request, monkeypatch):
    """'running': the hot path the server runs (compiled when built); 'source': its pure-Python source."""
    if request.param == "source":
        for cls, attr, name in ENTRY_POINTS:
            monkeypatch.setattr(cls, attr, getattr(source, name))
    return request.param


def same(setup, chunks):
    fast = run(True, setup, chunks)
    general = run(False, setup, chunks)
    assert fast[0] == general[0]
    assert fast[1] == general[1]
    return fast


def pipelined():
    """Publishes with confirms to a manual-ack consumer (acks of one and of several), to an
    autoack consumer, to a queue without consumers, an unroutable mandatory one (basic.return),
    an empty body, a body in two frames."""
    s = b""
    for i in range(4):
        s += publish(1, "dq1", b"m%d" % i)
    s += ack(1, 2, True)
    s += publish(1, "dq2", b"auto")
    s += publish(1, "dq3", b"")
    s += ack(1, 3)
    s += publish(1, "nowhere", b"r", mandatory=True)
    s += publish(1, "dq1", b"x" * 10, frame_max=4)
    s += ack(1, 4)
    s += publish(1, "dq1", b"last")
    return s


def test_every_split_point(form):
    stream = pipelined()
    setup = setup_stream()
    whole, state = same(setup, [stream])
    assert state["queues"]["dq1"][1] == 2 and state["queues"]["dq3"][0] == 1   # the stream did its work
    assert whole.count(b"\x00\x3c\x00\x50") >= 1 and b"NO_ROUTE" in whole      # confirms, a return
    for k in range(1, len(stream)):
        out, st = same(setup, [stream[:k], stream[k:]])
        assert st == state


def test_byte_by_byte(form):
    stream = pipelined()
    same(setup_stream(), [stream[i:i + 1] for i in range(len(stream))])


def test_many_channels_random_splits(form):
    rng = random.Random(1301)
    chans = (1, 2, 7, 300)
    setup = setup_stream(chans)
    setup += method_frame(300, M.BasicConsume(0, "dq3", "c3", False, True, False, False, {}).encode())
    setup += method_frame(2, M.ConfirmSelect(False).encode())
    setup += method_frame(7, M.TxSelect().encode())
    parts = []
    for i in range(120):
        ch = rng.choice(chans)
        kind = rng.random()
        if kind < 0.1:
            parts.append(ack(1, rng.randint(0, 3), rng.random() < 0.5))
        elif kind < 0.15:
            parts.append(method_frame(7, M.TxCommit().encode()))
        elif kind < 0.2:
            parts.append(publish(ch, "dq1", b"p", exchange="amq.direct"))
        elif kind < 0.25:
            parts.append(publish(ch, "dq2", b"e", props=b"\x01\x00\x0210"))   # expiration "10"
        else:
            parts.append(publish(ch, rng.choice(("dq1", "dq2", "dq3", "none")), b"b" * rng.randint(0, 40)))
    stream = b"".join(parts)
    for _ in range(30):
        cuts = sorted(rng.sample(range(1, len(stream)), rng.randint(1, 12)))
        chunks = [stream[a:b] for a, b in zip([0] + cuts, cuts + [len(stream)])]
        same(setup, chunks)


def test_errors_on_the_hot_path(form):
    """A publish to an exchange that is not there (404, the channel closes), an ack of an unknown
    tag (406), a wrong user_id, a content header of another class (a connection error)."""
    setup = setup_stream((1, 2, 3))
    streams = [
        publish(2, "k", b"a", exchange="no-such-exchange") + publish(2, "dq1", b"after"),
        ack(1, 99) + publish(1, "dq1", b"after"),
        publish(3, "dq1", b"u", props=b"\x00\x10\x04mary") + publish(3, "dq1", b"after"),
        method_frame(2, M.BasicPublish(0, "", "dq1", False, False).encode())
        + frame(2, 2, struct.pack(">HHQ", 61, 0, 1) + b"\x00\x00") + frame(3, 2, b"z"),
        publish(2, "dq1", b"q", mandatory=True) + frame(1, 2, b"\x00\x3c\x00\x28\x00\x00\x03dq"),
    ]
    for s in streams:
        for k in range(0, len(s), 3):
            same(setup, [s[:k], s[k:]] if k else [s])


def fuzz_frames(rng, items, n):
    out = []
    for _ in range(n):
        ftype, payload = rng.choice(items)
        payload = bytearray(payload)
        channel = rng.choice((1, 1, 1, 2, 300))
        r = rng.random()
        end = 206
        if r < 0.5:
            pass
        elif r < 0.7 and payload:
            for _ in range(rng.randint(1, 3)):
                payload[rng.randrange(len(payload))] = rng.randrange(256)
        elif r < 0.8:
            payload = payload[:rng.randrange(len(payload) + 1)]
        elif r < 0.9:
            payload += bytes(rng.randrange(256) for _ in range(rng.randint(1, 20)))
        elif r < 0.93:
            ftype = rng.choice((0, 4, 8, 9))
        elif r < 0.96:
            end = rng.randrange(256)
        elif r < 0.98:
            # a frame header whose size uses the high bits (a scanner that reads it as signed breaks)
            out.append(struct.pack(">BHI", rng.choice((1, 2, 3)), channel,
                                   rng.choice((0x80000000, 0xFFFFFFFF, 0x7FFFFFFF, 0x80000010))) + bytes(payload))
            continue
        else:
            out.append(bytes(rng.randrange(256) for _ in range(rng.randint(1, 64))))
            continue
        out.append(frame(ftype, channel, bytes(payload), bytes((end,))))
    return out


def test_fuzz_corpus(form):
    """Frames of the fuzz corpus, half of them mutated, with valid publishes among them: whatever
    the server makes of them (deliveries, errors, a closed connection), it makes the same of them
    with and without the hot path."""
    rng = random.Random(20261206)
    items = corpus()
    setup = setup_stream((1, 2))
    for _ in range(150):
        parts = fuzz_frames(rng, items, rng.randint(3, 12))
        for _ in range(rng.randint(1, 4)):
            parts.insert(rng.randrange(len(parts) + 1), publish(rng.choice((1, 2)), "dq1", b"v"))
        stream = b"".join(parts)
        cuts = sorted(rng.sample(range(1, len(stream)), min(len(stream) - 1, rng.randint(0, 4))))
        chunks = [stream[a:b] for a, b in zip([0] + cuts, cuts + [len(stream)])]
        same(setup, chunks)


def test_the_switch_is_real():
    """fast_path=False does leave the hot path alone (else the comparisons above would prove nothing)."""
    calls = []
    engine = Engine(False, setup_stream())
    original = Connection._fast
    try:
        Connection._fast = lambda self, data: calls.append(data) or original(self, data)
        engine.feed(pipelined())
        assert not calls
        engine.conn.fast_path = True
        engine.feed(publish(1, "dq2", b"x"))
        assert calls
    finally:
        Connection._fast = original


def test_the_server_says_which_hot_path_runs(fresh_server):
    """The start-up log names the hot path; USAGI_PURE_PYTHON=1 makes it the pure-Python one."""
    def said(srv):
        from support.harness import wait_for
        return wait_for(lambda: next((ln for ln in srv.lines if "hot path:" in ln), None), 10,
                        message="the hot path's log line")
    pure = said(fresh_server(env={"USAGI_PURE_PYTHON": "1"}))
    assert "pure Python (USAGI_PURE_PYTHON is set)" in pure
    running = said(fresh_server())         # the same environment as this test's: the same choice
    assert hot.DESCRIPTION in running


@pytest.mark.skipif(not hot.COMPILED, reason="the hot path is not compiled here")
def test_the_compiled_form_writes_what_its_source_writes(monkeypatch):
    """The compiled module writes deliveries with a routine of its own (fastpath.pxd); the same
    streams through the compiled module and through its source give the same bytes and state."""
    rng = random.Random(7)
    setup = setup_stream((1, 300))
    setup += method_frame(300, M.BasicConsume(0, "dq3", "c3", False, True, False, False, {}).encode())
    stream = pipelined() + b"".join(
        publish(rng.choice((1, 300)), rng.choice(("dq1", "dq2", "dq3")), bytes(rng.randrange(256) for _ in range(n)),
                props=rng.choice((b"\x00\x00", b"\x90\x00\x0atext/plain\x02")))
        for n in (1, 2, 100, 5000, 131000, 0, 7))
    chunks = [stream[:500], stream[500:]]
    compiled = run(True, setup, chunks), run(False, setup, chunks)
    for cls, attr, name in ENTRY_POINTS:
        monkeypatch.setattr(cls, attr, getattr(source, name))
    pure = run(True, setup, chunks), run(False, setup, chunks)
    assert compiled == pure
    assert compiled[0][0].count(b"\x00\x3c\x00\x3c") >= 8      # deliveries were written


def test_fanout_publishes(form):
    """A fanout exchange to plain queues (the hot path's own branch), one that also reaches a
    queue with a length limit, one bound to nothing (mandatory: basic.return), and publishes with
    an expiration or headers: each as the general path routes them, at every few split points."""
    setup = setup_stream((1, 2))
    setup += method_frame(1, M.ExchangeDeclare(0, "fx", "fanout", False, False, False, False, False, {}).encode())
    setup += method_frame(1, M.ExchangeDeclare(0, "fl", "fanout", False, False, False, False, False, {}).encode())
    setup += method_frame(1, M.ExchangeDeclare(0, "f0", "fanout", False, False, False, False, False, {}).encode())
    setup += method_frame(1, M.QueueDeclare(0, "lim", False, False, False, False, False,
                                            {"x-max-length": 3}).encode())
    for q in ("dq1", "dq2", "dq3"):
        setup += method_frame(1, M.QueueBind(0, q, "fx", "", False, {}).encode())
    for q in ("dq3", "lim"):
        setup += method_frame(1, M.QueueBind(0, q, "fl", "", False, {}).encode())
    setup += method_frame(2, M.ConfirmSelect(False).encode())
    s = b""
    for i in range(6):
        s += publish(1, "k", b"f%d" % i, exchange="fx")
        s += publish(2, "k", b"g%d" % i, exchange="fx")
    s += ack(1, 3, True)
    s += publish(2, "k", b"l", exchange="fl")
    s += publish(2, "k", b"none", exchange="f0", mandatory=True)
    # expiration "600000": the branch for a TTL, with no expiry inside the test (a 10 ms one could
    # expire in one of the two runs and not in the other on a loaded machine)
    s += publish(1, "k", b"e", exchange="fx", props=b"\x01\x00\x06600000")
    s += publish(2, "k", b"h", exchange="fx", props=b"\x20\x00\x00\x00\x00\x00")  # empty headers table
    for i in range(5):
        s += publish(2, "k", b"l%d" % i, exchange="fl")
    whole, state = same(setup, [s])
    assert state["queues"]["dq3"][0] >= 12 and state["queues"]["lim"][0] == 3, state["queues"]
    assert b"NO_ROUTE" in whole
    for k in range(1, len(s), 7):
        out, st = same(setup, [s[:k], s[k:]])
        assert st == state
