"""Basic content properties: golden bytes, round trips, scan agreeing with decode, pika cross-check."""
from __future__ import annotations

import pika.spec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from usagi.amqp import properties as P
from usagi.amqp.errors import SyntaxError_
from usagi.amqp.methods import PROPERTIES
from usagi.amqp.table import Timestamp, decode_table, encode_table


CHARS = st.characters(exclude_categories=("Cs",))   # any code point but lone surrogates


shortstr = st.text(CHARS, max_size=30).filter(lambda s: len(s.encode()) <= 255)
keys = st.text(CHARS, max_size=15)
leaf = st.one_of(st.booleans(), st.integers(-(2 ** 63), 2 ** 63 - 1), st.text(CHARS, max_size=15),
                 st.binary(max_size=15), st.none())
tables = st.dictionaries(keys, st.recursive(
    leaf, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3), max_leaves=6),
    max_size=4)

KIND = {"shortstr": shortstr, "octet": st.integers(0, 255), "table": tables,
        "timestamp": st.integers(0, 2 ** 64 - 1)}


@st.composite
def props(draw, kinds=KIND):
    out = {}
    for name, kind in P.BASIC_PROPERTIES:
        if draw(st.booleans()):
            out[name] = draw(kinds[kind])
    return out


GOLDEN = [
    ({}, b"\x00\x00"),
    ({"delivery_mode": 2}, b"\x10\x00\x02"),
    ({"content_type": "text/plain", "headers": {"a": 1}, "delivery_mode": 2, "timestamp": 1700000000,
      "user_id": "guest"},
     b"\xb0\x50"                                   # flags 15, 13, 12, 6, 4
     b"\x0atext/plain"
     b"\x00\x00\x00\x07\x01aI\x00\x00\x00\x01"
     b"\x02"
     b"\x00\x00\x00\x00\x65\x53\xf1\x00"
     b"\x05guest"),
    ({"priority": 9, "correlation_id": "c1", "reply_to": "amq.rabbitmq.reply-to", "expiration": "60000",
      "message_id": "m", "type": "t", "app_id": "app", "cluster_id": "x"},
     b"\x0f\xac"                                   # flags 11, 10, 9, 8, 7, 5, 3, 2
     b"\x09\x02c1\x15amq.rabbitmq.reply-to\x0560000\x01m\x01t\x03app\x01x"),
    ({"content_encoding": "gzip", "headers": {}}, b"\x60\x00\x04gzip\x00\x00\x00\x00"),
]


@pytest.mark.parametrize("p,raw", GOLDEN)
def test_golden(p, raw):
    assert P.encode(p) == raw
    assert P.decode(raw) == p
    pp = pika.spec.BasicProperties(**p)
    assert b"".join(pp.encode()) == raw
    theirs = pika.spec.BasicProperties()
    theirs.decode(raw)
    for k, v in p.items():
        assert getattr(theirs, k) == v


def test_property_table_matches_spec():
    assert PROPERTIES[60] == P.BASIC_PROPERTIES
    assert P.FLAG_CONTENT_TYPE == 0x8000 and P.FLAG_USER_ID == 0x0010 and P.FLAG_EXPIRATION == 0x0100


def test_timestamp_decodes_as_timestamp():
    d = P.decode(P.encode({"timestamp": 5}))
    assert type(d["timestamp"]) is Timestamp and d["timestamp"] == 5


def test_none_values_are_absent_and_long_shortstr_rejected():
    assert P.encode({"content_type": None, "priority": None}) == b"\x00\x00"
    with pytest.raises(ValueError):
        P.encode({"message_id": "m" * 256})


def test_raw_headers_are_used_verbatim():
    raw_h = b"\x00\x00\x00\x04\x01ab\x01"   # 'b' short-short int, kept as sent
    raw = P.encode({"content_type": "a", "headers": {"ignored": 1}}, raw_headers=raw_h)
    assert raw == b"\xa0\x00\x01a" + raw_h
    assert P.headers_of(raw) == {"a": 1}


TRUNCATED = [b"", b"\x80", b"\x80\x00", b"\x80\x00\x05abc", b"\x20\x00\x00\x00\x00\x09", b"\x10\x00",
             b"\x00\x10\x03ab", b"\x01\x00\x05abc", b"\x00\x50\x00\x00\x00\x05guest"]


@pytest.mark.parametrize("raw", TRUNCATED + [b"\x00\x40\x00\x00\x00", b"\x00\x04\x01"])
def test_truncated_properties_decode(raw):
    with pytest.raises(SyntaxError_):
        P.decode(raw)


@pytest.mark.parametrize("raw", TRUNCATED)
def test_truncated_properties_scan(raw):
    # scan reads only what the broker uses, but whatever it reads must be there
    with pytest.raises(SyntaxError_):
        P.scan(raw)


@settings(max_examples=120, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(props())
def test_roundtrip(p):
    raw = P.encode(p)
    got = P.decode(raw)
    assert got == p
    for k, v in p.items():
        if k != "headers":
            assert type(got[k]) is (Timestamp if k == "timestamp" else type(v))


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(props())
def test_scan_agrees_with_decode(p):
    raw = P.encode(p)
    d = P.decode(raw)
    s = P.scan(raw)
    assert s.delivery_mode == d.get("delivery_mode", 0)
    assert s.priority == d.get("priority")
    assert s.expiration == d.get("expiration")
    assert s.user_id == d.get("user_id")
    assert s.reply_to == d.get("reply_to")
    if "headers" in d:
        a, b = s.headers_span
        assert raw[a:b] == encode_table(p["headers"])
        assert decode_table(raw, a, b) == (d["headers"], b)
        assert P.headers_of(raw) == d["headers"]
    else:
        assert s.headers_span is None
        assert P.headers_of(raw) == {}


@settings(max_examples=120, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(props(), tables | st.none())
def test_replace_headers(p, h):
    raw = P.encode(p)
    new = P.replace_headers(raw, None if h is None else encode_table(h))
    expected = dict(p)
    expected.pop("headers", None)
    if h is not None:
        expected["headers"] = h
    assert P.decode(new) == expected
    assert new == P.encode(expected)


@settings(max_examples=120, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(props(), st.data())
def test_truncations_are_syntax_errors(p, data):
    raw = P.encode(p)
    if not p:
        return
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(SyntaxError_):
        P.decode(raw[:cut])


@settings(max_examples=500, deadline=None, database=None)
@given(st.binary(max_size=40))
def test_random_bytes_scan_and_decode_raise_only_syntax_errors(raw):
    for f in (P.scan, P.decode):
        try:
            f(raw)
        except SyntaxError_:
            pass


pika_kinds = dict(KIND, timestamp=st.integers(0, 2 ** 63 - 1))


@settings(max_examples=120, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(props(pika_kinds))
def test_same_bytes_as_pika(p):
    raw = P.encode(p)
    assert b"".join(pika.spec.BasicProperties(**p).encode()) == raw
    theirs = pika.spec.BasicProperties()
    theirs.decode(raw)
    for name, _ in P.BASIC_PROPERTIES:
        assert getattr(theirs, name) == p.get(name), name
