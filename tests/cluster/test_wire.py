"""The replication wire format: round trips, split streams, hostile bytes, the handshake's MACs."""
from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usagi.cluster import wire as W

scalars = st.one_of(st.none(), st.integers(min_value=-(1 << 70), max_value=1 << 70),
                    st.text(max_size=20), st.binary(max_size=40))
values = st.recursive(scalars, lambda c: st.one_of(st.lists(c, max_size=5),
                                                   st.lists(c, max_size=5).map(tuple)), max_leaves=30)


@given(values)
def test_codec_round_trip(v):
    try:
        data = W.encode(v)
    except W.WireError:
        return                       # nested deeper than MAX_DEPTH: refused on the way out
    assert W.decode(data) == v


def test_a_store_batch_round_trips():
    batch = ([("queue", '["/","q"]', '{"a":1}')], [("binding", "[]")], [("/", "q", 3)], [], [("/", "q")],
             [(7,)], [(2, 9)], [(9, "amq.direct", "rk", b"\x80\x00", b"body", 1)],
             [("/", "q", 4, 9, 0)])
    assert W.decode(W.encode([batch])) == [batch]


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_garbage_is_refused_cleanly(data):
    try:
        W.decode(data)
    except W.WireError:
        pass


def test_decoder_refuses_nesting_and_lengths_beyond_the_frame():
    with pytest.raises(W.WireError):
        W.decode(b"l" + b"\x00\x00\x00\x01" * 1 + b"l\x00\x00\x00\x01" * 20 + b"n")
    with pytest.raises(W.WireError):
        W.decode(b"l\xff\xff\xff\xff")
    with pytest.raises(W.WireError):
        W.decode(b"s\x00\x10\x00\x00abc")
    with pytest.raises(W.WireError):
        W.decode(b"nn")


def test_frames_split_at_every_offset():
    stream = W.frame(W.HEARTBEAT) + W.batch_frame(3, 42, W.encode([1, "x", b"y"])) + W.ack_frame(42)
    for cut in range(len(stream) + 1):
        r = W.FrameReader()
        got = r.feed(stream[:cut]) + r.feed(stream[cut:])
        assert [t for t, _ in got] == [W.HEARTBEAT, W.BATCH, W.ACK]
        assert W.parse_batch(got[1][1])[:2] == (3, 42)
        assert W.parse_ack(got[2][1]) == 42


def test_oversized_and_unknown_frames_are_refused_before_buffering():
    r = W.FrameReader(max_frame=1024)
    with pytest.raises(W.WireError):
        r.feed(b"\x00\x10\x00\x00\x05")
    with pytest.raises(W.WireError):
        W.FrameReader().feed(b"\x00\x00\x00\x01\x63")


def test_handshake_needs_the_secret_on_both_sides():
    secret, wrong = os.urandom(32), os.urandom(32)
    ln, fn = os.urandom(16), os.urandom(16)
    version, got_ln = W.parse_challenge(W.challenge(ln))
    assert (version, got_ln) == (W.VERSION, ln)
    h = W.parse_hello(W.hello(0xABC, 5, 77, fn, ln, secret))
    assert (h["node_id"], h["epoch"], h["lsn"]) == (0xABC, 5, 77)
    assert W.hello_ok(h, ln, secret)
    assert not W.hello_ok(h, ln, wrong)
    assert not W.hello_ok(W.parse_hello(W.hello(0xABC, 5, 77, fn, ln, wrong)), ln, secret)
    assert not W.hello_ok(h, os.urandom(16), secret)          # a replayed hello fails a new challenge
    w = W.welcome(W.MODE_STREAM, 9, 77, fn, ln, secret)
    assert W.parse_welcome(w, fn, ln, secret) == (W.MODE_STREAM, 9, 77)
    with pytest.raises(W.WireError):
        W.parse_welcome(w, fn, ln, wrong)
    with pytest.raises(W.WireError):
        W.parse_challenge(b"HTTP/1.1 200 OK\r\n")
