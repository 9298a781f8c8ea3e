"""Reading what the broker never checked: lenient field tables and properties, and dead-letter
header edits that work on any headers a stored message may carry.

Headers are kept as received, so a message can hold a table nested past MAX_DEPTH, an unknown type
code or a length that lies. The lenient readers give what they can and never raise; the edits keep
every byte they do not change; x-death counts saturate instead of overflowing.
"""
from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from usagi.amqp import properties as P
from usagi.amqp.errors import SyntaxError_
from usagi.amqp.table import (MAX_DEPTH, Opaque, Timestamp, Typed, array_items, decode_table, decode_table_lenient,
                              encode_table, encode_value, join_entries, join_items, skip_value, table_entries,
                              table_entries_lenient)
from usagi.model import deadletter as DL
from usagi.model.message import Message

LONG_MAX = 2 ** 63 - 1


def S(s: str) -> bytes:
    return b"S" + struct.pack(">I", len(s.encode())) + s.encode()


def table(entries) -> bytes:
    body = b"".join(bytes([len(k)]) + k + v for k, v in entries)
    return struct.pack(">I", len(body)) + body


def nested(depth: int, kind: str = "F") -> bytes:
    v = b"I" + struct.pack(">i", 1)
    for _ in range(depth):
        if kind == "F":
            inner = b"\x01k" + v
            v = b"F" + struct.pack(">I", len(inner)) + inner
        else:
            v = b"A" + struct.pack(">I", len(v)) + v
    return v


def message(headers_raw: bytes | None, expiration: str | None = None, routing_key: str = "rk") -> Message:
    flags, fields = 0, b""
    if headers_raw is not None:
        flags |= P.FLAG_HEADERS
        fields += headers_raw
    if expiration is not None:
        flags |= P.FLAG_EXPIRATION
        fields += bytes([len(expiration)]) + expiration.encode()
    return Message("ex", routing_key, struct.pack(">H", flags) + fields, b"body")


scalars = st.one_of(st.booleans(), st.integers(-(2 ** 63), 2 ** 63 - 1), st.text(max_size=10),
                    st.binary(max_size=10), st.none(), st.floats(allow_nan=False))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=5), inner, max_size=3)),
                      max_leaves=12)
tables = st.dictionaries(st.text(max_size=8), values, max_size=5)


# ---------------------------------------------------------------- field tables
@settings(max_examples=200, deadline=None, database=None)
@given(tables)
def test_lenient_equals_strict_on_sound_tables(t):
    raw = encode_table(t)
    assert decode_table_lenient(raw) == decode_table(raw)[0]
    entries, rest = table_entries_lenient(raw)
    assert rest == b"" and entries == table_entries(raw)
    assert join_entries(entries, rest) == raw


@settings(max_examples=200, deadline=None, database=None)
@given(values)
def test_skip_value_finds_the_end_decoding_does(v):
    raw = encode_value(v) + b"trailing"
    from usagi.amqp.table import _decode_value
    assert skip_value(raw, 0, len(raw)) == _decode_value(raw, 0, len(raw), 0)[1]


@settings(max_examples=400, deadline=None, database=None)
@given(st.binary(max_size=80))
def test_lenient_readers_never_raise_and_keep_every_byte(data):
    raw = struct.pack(">I", len(data)) + data
    d = decode_table_lenient(raw)
    assert isinstance(d, dict)
    entries, rest = table_entries_lenient(raw)
    assert join_entries(entries, rest) == raw          # split and joined again: the same bytes
    try:
        strict = decode_table(raw)[0]
    except SyntaxError_:
        return
    assert d == strict


def test_too_deep_values_become_opaque_where_the_limit_is():
    raw = table([(b"keep", S("me")), (b"deep", nested(MAX_DEPTH + 50)), (b"arr", nested(MAX_DEPTH + 300, "A")),
                 (b"after", S("kept"))])
    d = decode_table_lenient(raw)
    assert d["keep"] == "me" and d["after"] == "kept"
    v = d["deep"]
    for _ in range(MAX_DEPTH):
        v = v["k"]
    assert isinstance(v, Opaque) and v.raw[:1] == b"F"
    a = d["arr"]
    for _ in range(MAX_DEPTH):
        a = a[0]
    assert isinstance(a, Opaque)
    assert encode_table(d) == raw                      # the opaque parts are written back as they came
    # splitting needs no decoding at all
    assert [k for k, _ in table_entries(raw)] == ["keep", "deep", "arr", "after"]


def test_broken_entries():
    bad_inside = b"F" + table([(b"x", b"Z\x00")])       # a table with an unknown type inside
    raw = table([(b"a", S("1")), (b"b", bad_inside), (b"c", b"Z\x01\x02"), (b"d", S("unreached"))])
    d = decode_table_lenient(raw)
    assert d["a"] == "1" and isinstance(d["b"], Opaque) and "c" not in d and "d" not in d
    entries, rest = table_entries_lenient(raw)
    assert [k for k, _ in entries] == ["a", "b"] and rest.startswith(b"\x01cZ")


def test_array_items():
    items = [S("x"), b"I\x00\x00\x00\x05", nested(200)]
    raw = join_items(items)
    assert array_items(raw) == (items, b"")
    assert array_items(S("not an array")) is None
    broken = b"A" + struct.pack(">I", 8) + S("") + b"Z\x00\x00"
    assert array_items(broken) == ([S("")], b"Z\x00\x00")
    assert join_items(*array_items(broken)) == broken
    assert array_items(b"A\x00\x00\x00\x09") is None
    d = decode_table_lenient(table([(b"a", broken)]))
    assert d["a"][0] == "" and isinstance(d["a"][1], Opaque)


# ---------------------------------------------------------------- properties
def test_decode_lenient_gives_what_it_can():
    raw = message(table([(b"keep", S("me")), (b"deep", nested(300))]), expiration="60").props
    d = P.decode_lenient(raw)
    assert d["headers"]["keep"] == "me" and d["expiration"] == "60"
    assert P.decode_lenient(raw[:-3]) == {"headers": d["headers"]}       # expiration cut short
    assert P.decode_lenient(b"\x00") == {}


def test_without_expiration_keeps_the_other_bytes():
    props = P.encode({"content_type": "t", "headers": {"a": 1}, "delivery_mode": 2, "reply_to": "r",
                      "expiration": "1000", "message_id": "m", "app_id": "x"})
    d = P.decode(props)
    out = P.without_expiration(props)
    del d["expiration"]
    assert P.decode(out) == d
    assert P.without_expiration(out) == out


# ---------------------------------------------------------------- dead-letter headers
def deaths(props: bytes) -> list:
    return P.headers_of(props)["x-death"]


def test_undecodable_headers_get_a_fresh_x_death_and_keep_the_rest():
    for headers in (table([(b"keep", S("me")), (b"deep", nested(300))]),
                    table([(b"keep", S("me")), (b"x-death", S("nonsense"))]),
                    table([(b"keep", S("me")), (b"x-death", nested(300, "A"))]),
                    table([(b"keep", S("me")), (b"bad", b"Z\x00"), (b"x-death", S("hidden"))])):
        m = message(headers, expiration="500")
        out = DL.record_death(m, "q", "expired", 5_000)
        entries, rest = table_entries_lenient(out[P.scan(out).headers_span[0]:P.scan(out).headers_span[1]])
        assert entries[0] == ("keep", S("me"))
        d = deaths(out)
        assert d[0]["count"] == 1 and d[0]["queue"] == "q" and d[0]["reason"] == "expired"
        assert d[0]["original-expiration"] == "500" and d[0]["time"] == Timestamp(5)
        assert P.scan(out).expiration is None
        if b"bad" in headers:
            assert rest.startswith(b"\x03badZ")       # what could not be read is kept, after


def test_count_saturates_and_other_deaths_keep_their_bytes():
    junk = [S("junk"), b"T" + b"\xff" * 8]
    other = encode_value({"count": Typed("I", 3), "reason": "rejected", "queue": "other", "deep": {"a": [1]}})
    for count, expected in ((b"l" + struct.pack(">q", LONG_MAX), LONG_MAX), (b"T" + b"\xff" * 8, LONG_MAX),
                            (b"I" + struct.pack(">i", 41), 42), (S("NaN"), 1), (b"t\x01", 1),
                            (b"l" + struct.pack(">q", -(2 ** 63)), -(2 ** 63) + 1)):
        mine = b"F" + table([(b"count", count), (b"reason", S("rejected")), (b"queue", S("q")),
                             (b"deep", nested(300))])
        m = message(table([(b"x-death", join_items(junk + [other, mine]))]))
        out = DL.record_death(m, "q", "rejected", 0)
        s = P.scan(out)
        (name, xd), = [e for e in table_entries(out[s.headers_span[0]:s.headers_span[1]]) if e[0] == "x-death"]
        items, rest = array_items(xd)
        assert rest == b""
        assert items[1:] == junk + [other]            # the others as they were, in order
        first = dict(table_entries(items[0][1:]))
        assert first["count"] == encode_value(Typed("l", expected))
        assert first["deep"] == nested(300)


def test_a_broken_x_death_keeps_its_readable_deaths_and_cycles_are_seen():
    broken = b"Z\x00\x00"
    m = message(table([(b"x-death", join_items([], broken))]))
    out = DL.record_death(m, "q1", "expired", 0)       # no death in q1: put in front, as it is
    d = DL.deaths_of(Message("ex", "rk", out, b""))
    assert d[0]["queue"] == "q1" and isinstance(d[-1], Opaque)
    assert "q1" in DL.cycling_queues(d)
    out = DL.record_death(Message("ex", "rk", out, b""), "q1", "expired", 0)   # read: count 2, rest kept
    d = DL.deaths_of(Message("ex", "rk", out, b""))
    assert d[0]["count"] == 2 and len(d) == 2 and d[1].raw == broken


def test_death_for_a_message_without_headers_and_the_same_queue_twice():
    m = message(None)
    out = DL.record_death(m, "q", "rejected", 0)
    m2 = Message("ex", "rk", out, b"body")
    out2 = DL.record_death(m2, "q", "rejected", 0)
    d = deaths(out2)
    assert len(d) == 1 and d[0]["count"] == 2
    assert P.headers_of(out2)["x-first-death-queue"] == "q"


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=120), st.sampled_from(["rejected", "expired", "maxlen"]), st.booleans())
def test_record_death_is_total(data, reason, with_expiration):
    """Whatever bytes the headers table holds, dead-lettering gives properties that scan, with an
    x-death whose first entry is this death, and leaves every readable header as it was."""
    m = message(struct.pack(">I", len(data)) + data, expiration="7" if with_expiration else None,
                routing_key="r\udcff")
    out = DL.record_death(m, "q", reason, 0)
    d = deaths(out)
    assert isinstance(d, list) and isinstance(d[0], dict)
    assert (d[0]["queue"], d[0]["reason"]) == ("q", reason)
    before = dict(table_entries_lenient(m.props[m.scan.headers_span[0]:m.scan.headers_span[1]])[0])
    s = P.scan(out)
    after = dict(table_entries_lenient(out[s.headers_span[0]:s.headers_span[1]])[0])
    for k, v in before.items():
        if not k.startswith("x-"):
            assert after[k] == v
    assert DL.with_header(Message("ex", "rk", out, b""), "x-delivery-count", Typed("l", 1))
