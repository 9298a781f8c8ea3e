"""FrameReader and frame builders: split invariance, limits, errors, agreement with a reference parser."""
from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from usagi.amqp import errors as E
from usagi.amqp import methods as M
from usagi.amqp import properties as P
from usagi.amqp.frames import (FRAME_BODY, FRAME_END, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD,
                               HEARTBEAT_FRAME, PROTOCOL_HEADER, BadProtocolHeader, FrameReader,
                               content_frames, method_frame, parse_content_header)

HEADER_EVENT = ("header", 0, b"")


def frame(ftype, channel, payload, end=0xCE):
    return struct.pack(">BHI", ftype, channel, len(payload)) + payload + bytes((end,))


def norm(frames):
    return [(t, c, bytes(p)) for t, c, p in frames]


def feed_chunks(reader, chunks):
    out = []
    for c in chunks:
        out += reader.feed(c)
    return norm(out)


def reference(stream: bytes, frame_max: int):
    """(frames, error kind or None, leftover bytes) for a stream after the protocol header."""
    frames, off = [], 0
    while len(stream) - off >= 7:
        t, ch, size = struct.unpack_from(">BHI", stream, off)
        if frame_max and size > frame_max:
            return frames, "frame_too_large", 0
        if off + 8 + size > len(stream):
            break
        if stream[off + 7 + size] != 0xCE:
            return frames, "invalid_frame_end_marker", 0
        if t not in (1, 2, 3, 8) or (t == 1 and size < 4) or (t == 8 and size):
            return frames, "unknown_frame", 0
        frames.append((t, ch, stream[off + 7:off + 7 + size]))
        off += 8 + size
    return frames, None, len(stream) - off


def sample_stream():
    props = P.encode({"content_type": "text/plain", "delivery_mode": 2, "headers": {"k": "v"}})
    body = bytes(range(256)) * 40   # 10240 octets: several body frames at frame_max 4096
    parts = [method_frame(0, M.ConnectionTune(2047, 4096, 60).encode()),
             method_frame(1, M.ChannelOpen().encode()),
             method_frame(1, M.BasicPublish(0, "amq.direct", "rk", False, False).encode())]
    parts += content_frames(1, 60, props, body, 4096)
    parts += [HEARTBEAT_FRAME, method_frame(1, M.BasicPublish(0, "", "q").encode())]
    parts += content_frames(1, 60, P.EMPTY, b"", 4096)   # empty body: header frame only
    parts += [method_frame(65535, M.BasicAck(1, True).encode())]
    return b"".join(parts), props, body


STREAM, PROPS, BODY = sample_stream()
EXPECTED = [HEADER_EVENT] + reference(STREAM, 4096)[0]


def test_sample_stream_shape():
    kinds = [t for t, _, _ in EXPECTED]
    assert kinds == ["header", 1, 1, 1, 2, 3, 3, 3, 8, 1, 2, 1]
    assert reference(STREAM, 4096)[1:] == (None, 0)
    assert b"".join(p for t, _, p in EXPECTED if t == FRAME_BODY) == BODY
    assert all(len(p) <= 4096 - 8 for _, _, p in EXPECTED)
    assert parse_content_header(EXPECTED[4][2]) == (60, len(BODY), PROPS)
    assert parse_content_header(EXPECTED[10][2]) == (60, 0, b"\x00\x00")
    assert EXPECTED[-1][1] == 65535


def test_whole_stream_at_once():
    r = FrameReader(4096)
    assert norm(r.feed(PROTOCOL_HEADER + STREAM)) == EXPECTED
    assert r.error is None and r.buffered == 0
    assert r.bytes_received == len(PROTOCOL_HEADER) + len(STREAM)


def test_split_at_every_offset():
    data = PROTOCOL_HEADER + STREAM
    for i in range(len(data) + 1):
        r = FrameReader(4096)
        assert feed_chunks(r, [data[:i], data[i:]]) == EXPECTED, i
        assert r.error is None and r.buffered == 0


def test_one_byte_at_a_time():
    data = PROTOCOL_HEADER + STREAM
    r = FrameReader(4096)
    assert feed_chunks(r, [data[i:i + 1] for i in range(len(data))]) == EXPECTED


def test_bytearray_and_memoryview_input():
    data = PROTOCOL_HEADER + STREAM
    r = FrameReader(4096)
    assert feed_chunks(r, [bytearray(data[:100]), memoryview(data[100:5000]), data[5000:]]) == EXPECTED


@settings(max_examples=200, deadline=None, database=None)
@given(st.lists(st.integers(0, len(PROTOCOL_HEADER) + len(STREAM)), max_size=12))
def test_random_multi_splits(cuts):
    data = PROTOCOL_HEADER + STREAM
    cuts = sorted(set(cuts))
    chunks = [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]
    r = FrameReader(4096)
    assert feed_chunks(r, chunks) == EXPECTED
    assert r.error is None


def test_without_protocol_header():
    r = FrameReader(0, expect_header=False)
    assert feed_chunks(r, [HEARTBEAT_FRAME]) == [(FRAME_HEARTBEAT, 0, b"")]


# ---------------------------------------------------------------- builders

def test_method_frame_golden():
    assert method_frame(1, b"\x00\x0a\x00\x0b") == b"\x01\x00\x01\x00\x00\x00\x04\x00\x0a\x00\x0b\xce"
    assert HEARTBEAT_FRAME == frame(8, 0, b"")


def test_content_frames_golden():
    raw = b"".join(content_frames(5, 60, b"\x10\x00\x02", b"hello world", 16))
    assert raw == (b"\x02\x00\x05\x00\x00\x00\x0f" b"\x00\x3c\x00\x00\x00\x00\x00\x00\x00\x00\x00\x0b\x10\x00\x02\xce"
                   b"\x03\x00\x05\x00\x00\x00\x08hello wo\xce"
                   b"\x03\x00\x05\x00\x00\x00\x03rld\xce")


@settings(max_examples=100, deadline=None, database=None)
@given(st.binary(max_size=3000), st.integers(9, 600) | st.just(0))
def test_content_frames_split_and_reassemble(body, frame_max):
    raw = b"".join(content_frames(3, 60, P.EMPTY, body, frame_max))
    frames = norm(FrameReader(0, expect_header=False).feed(raw))
    assert frames[0][0] == FRAME_HEADER and parse_content_header(frames[0][2]) == (60, len(body), P.EMPTY)
    bodies = frames[1:]
    assert all(t == FRAME_BODY and c == 3 for t, c, _ in bodies)
    assert b"".join(p for _, _, p in bodies) == body
    assert all(p for _, _, p in bodies)   # no empty body frames
    if frame_max:
        assert len(bodies) == -(-len(body) // (frame_max - 8))


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("frame_max", [4096, 131072])
def test_oversized_frame_rejected_from_its_header(frame_max):
    r = FrameReader(frame_max)
    # as in RabbitMQ, a payload of frame_max octets is accepted (the limit it reports is frame_max - 8)
    ok = frame(FRAME_METHOD, 1, b"x" * frame_max)
    assert norm(r.feed(PROTOCOL_HEADER + ok)) == [HEADER_EVENT, (1, 1, b"x" * frame_max)]
    # one octet more: refused as soon as the 7-octet frame header is in, before any payload
    got = r.feed(struct.pack(">BHI", FRAME_BODY, 1, frame_max + 1))
    assert got == []
    assert isinstance(r.error, E.FrameError)
    assert r.error.code == E.FRAME_ERROR == 501 and r.error.hard
    assert r.error.text == f"type 3, all octets = <<>>: {{frame_too_large,{frame_max + 1},{frame_max - 8}}}"
    assert r.buffered == 0
    assert r.feed(b"x" * 100) == [] and r.buffered == 0


def test_huge_declared_size_is_not_buffered():
    r = FrameReader(131072, expect_header=False)
    r.feed(b"\x03\x00\x01\xff\xff\xff\xff")
    assert isinstance(r.error, E.FrameError) and r.buffered == 0


def test_no_limit_when_frame_max_zero():
    r = FrameReader(0, expect_header=False)
    big = b"y" * 200000
    assert norm(r.feed(frame(FRAME_BODY, 2, big))) == [(FRAME_BODY, 2, big)]


def test_bad_frame_end_keeps_earlier_frames():
    r = FrameReader(4096)
    data = PROTOCOL_HEADER + HEARTBEAT_FRAME + frame(FRAME_METHOD, 1, b"\x00\x14\x00\x0a\x00", end=0x00) \
        + HEARTBEAT_FRAME
    assert norm(r.feed(data)) == [HEADER_EVENT, (8, 0, b"")]
    assert isinstance(r.error, E.FrameError) and r.error.code == 501
    assert "invalid_frame_end_marker,0" in r.error.text
    assert r.feed(HEARTBEAT_FRAME) == []


def test_bad_frame_end_detected_when_the_end_octet_arrives():
    r = FrameReader(4096, expect_header=False)
    f = frame(FRAME_METHOD, 1, b"abcd", end=0xCD)
    assert r.feed(f[:-1]) == [] and r.error is None
    r.feed(f[-1:])
    assert isinstance(r.error, E.FrameError)


@pytest.mark.parametrize("ftype", [0, 4, 5, 7, 9, 206, 255])
def test_unknown_frame_type(ftype):
    r = FrameReader(4096, expect_header=False)
    assert r.feed(frame(ftype, 0, b"") + HEARTBEAT_FRAME) == []
    assert isinstance(r.error, E.FrameError)
    assert r.error.text == f"type {ftype}, all octets = <<>>: unknown_frame"


@pytest.mark.parametrize("data", [b"AMQP\x00\x00\x09\x02", b"AMQP\x01\x01\x00\x0a", b"GET / HTTP/1.1\r\n",
                                  b"AMQP\x00\x00\x08\x00", b"X"])
def test_bad_protocol_header(data):
    r = FrameReader(4096)
    assert r.feed(data) == []
    assert isinstance(r.error, BadProtocolHeader)
    assert r.feed(PROTOCOL_HEADER) == []


def test_protocol_header_prefix_waits():
    r = FrameReader(4096)
    for i in range(8):
        assert r.feed(PROTOCOL_HEADER[i:i + 1]) == ([HEADER_EVENT] if i == 7 else [])
        assert r.error is None


def test_frame_constants():
    assert (FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_HEARTBEAT, FRAME_END) == (1, 2, 3, 8, 206)
    assert M.CONSTANTS["FRAME-END"] == FRAME_END and M.CONSTANTS["FRAME-MIN-SIZE"] == 4096
    assert PROTOCOL_HEADER == b"AMQP\x00\x00\x09\x01"


# ---------------------------------------------------------------- fuzzing against the reference parser

frame_like = st.builds(
    lambda t, ch, payload, end: frame(t, ch, payload, end),
    st.sampled_from([1, 2, 3, 8]) | st.integers(0, 255),
    st.integers(0, 65535),
    st.binary(max_size=40),
    st.just(0xCE) | st.integers(0, 255),
)
streams = st.lists(frame_like | st.binary(max_size=12), max_size=8).map(b"".join) | st.binary(max_size=200)


def check_against_reference(stream, cuts, frame_max):
    data = PROTOCOL_HEADER + stream
    cuts = sorted(set(c % (len(data) + 1) for c in cuts))
    chunks = [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]
    r = FrameReader(frame_max)
    out = []
    for c in chunks:
        try:
            out += r.feed(c)
        except Exception as e:   # the reader must report, never raise
            pytest.fail(f"feed raised {e!r}")
    frames, err, leftover = reference(stream, frame_max)
    assert norm(out) == [HEADER_EVENT] + frames
    if err is None:
        assert r.error is None
        assert r.buffered == leftover
    else:
        assert isinstance(r.error, E.FrameError) and r.error.code == E.FRAME_ERROR
        assert err in r.error.text


@settings(max_examples=700, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(streams, st.lists(st.integers(0, 400), max_size=5), st.sampled_from([0, 30, 4096]))
def test_fuzz_matches_reference(stream, cuts, frame_max):
    check_against_reference(stream, cuts, frame_max)


@settings(max_examples=2000, deadline=None, database=None)
@given(st.binary(min_size=1, max_size=64))
def test_random_bytes_after_header(data):
    r = FrameReader(4096)
    out = norm(r.feed(PROTOCOL_HEADER + data))
    assert out[0] == HEADER_EVENT
    assert r.error is None or isinstance(r.error, E.FrameError)
    for t, _, p in out[1:]:
        assert t in (1, 2, 3, 8) and len(p) <= 4096 - 8
