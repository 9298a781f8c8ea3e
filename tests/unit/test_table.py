"""Field tables: golden bytes, round trips, RabbitMQ type codes, and cross-checks with pika / py-amqp."""
from __future__ import annotations

import datetime
import math
import struct
from decimal import Decimal

import amqp.serialization as amqp_ser
import pika.data
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from usagi.amqp.errors import SyntaxError_
from usagi.amqp.table import (MAX_DEPTH, Timestamp, Typed, decode_table, encode_table, encode_value,
                              join_entries, table_entries)

# ---------------------------------------------------------------- helpers


def strict_eq(a, b) -> bool:
    """Equality that also compares types: True != 1, 'a' != b'a', Timestamp(1) != 1."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(strict_eq(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(strict_eq(x, y) for x, y in zip(a, b))
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    return a == b


def roundtrip(t):
    raw = encode_table(t)
    got, end = decode_table(raw)
    assert end == len(raw)
    return got


CHARS = st.characters(exclude_categories=("Cs",))   # any code point but lone surrogates
keys = st.text(CHARS, max_size=40).filter(lambda s: len(s.encode("utf-8")) <= 255)
utf8_text = st.text(CHARS, max_size=30)
int64 = st.integers(-(2 ** 63), 2 ** 63 - 1)

# Values that decode back to exactly the same Python value and type.
scalar = st.one_of(
    st.booleans(), int64, utf8_text, st.binary(max_size=30), st.none(),
    st.floats(allow_nan=False), st.integers(0, 2 ** 64 - 1).map(Timestamp),
)


def nested(leaves):
    return st.recursive(
        leaves,
        lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
        max_leaves=25)


values = nested(scalar)
tables = st.dictionaries(keys, values, max_size=6)

# The subset every client encodes the same way (pika has no float/Decimal/Timestamp-as-int rules).
pika_scalar = st.one_of(st.booleans(), int64, utf8_text, st.binary(max_size=20), st.none())
pika_tables = st.dictionaries(keys, nested(pika_scalar), max_size=6)

# ---------------------------------------------------------------- golden bytes


def test_empty_table():
    assert encode_table({}) == b"\x00\x00\x00\x00"
    assert encode_table(None) == b"\x00\x00\x00\x00"
    assert decode_table(b"\x00\x00\x00\x00") == ({}, 4)


GOLDEN_VALUES = [
    (True, b"t\x01"),
    (False, b"t\x00"),
    (0, b"I\x00\x00\x00\x00"),
    (-1, b"I\xff\xff\xff\xff"),
    (2147483647, b"I\x7f\xff\xff\xff"),
    (-2147483648, b"I\x80\x00\x00\x00"),
    (2147483648, b"l\x00\x00\x00\x00\x80\x00\x00\x00"),
    (-2147483649, b"l\xff\xff\xff\xff\x7f\xff\xff\xff"),
    ("abc", b"S\x00\x00\x00\x03abc"),
    ("é", b"S\x00\x00\x00\x02\xc3\xa9"),
    (b"\x00\xff", b"x\x00\x00\x00\x02\x00\xff"),
    (None, b"V"),
    (1.5, b"d\x3f\xf8\x00\x00\x00\x00\x00\x00"),
    (Decimal("1.25"), b"D\x02\x00\x00\x00\x7d"),
    (Decimal("-7"), b"D\x00\xff\xff\xff\xf9"),
    (Timestamp(1700000000), b"T\x00\x00\x00\x00\x65\x53\xf1\x00"),
    ([1, "a"], b"A\x00\x00\x00\x0bI\x00\x00\x00\x01S\x00\x00\x00\x01a"),
    ({"k": True}, b"F\x00\x00\x00\x04\x01kt\x01"),
    (datetime.datetime(2023, 11, 14, 22, 13, 20, tzinfo=datetime.timezone.utc),
     b"T\x00\x00\x00\x00\x65\x53\xf1\x00"),
]


@pytest.mark.parametrize("value,raw", GOLDEN_VALUES, ids=[repr(v)[:30] for v, _ in GOLDEN_VALUES])
def test_encode_value_golden(value, raw):
    assert encode_value(value) == raw


TYPED_GOLDEN = [
    # (code, value, bytes, decoded)
    ("b", -2, b"b\xfe", -2),
    ("B", 200, b"B\xc8", 200),
    ("s", -2, b"s\xff\xfe", -2),
    ("u", 65535, b"u\xff\xff", 65535),
    ("I", -5, b"I\xff\xff\xff\xfb", -5),
    ("i", 4294967295, b"i\xff\xff\xff\xff", 4294967295),
    ("l", 1, b"l\x00\x00\x00\x00\x00\x00\x00\x01", 1),
    ("T", 7, b"T\x00\x00\x00\x00\x00\x00\x00\x07", Timestamp(7)),
    ("f", 0.5, b"f\x3f\x00\x00\x00", 0.5),
    ("d", -2.0, b"d\xc0\x00\x00\x00\x00\x00\x00\x00", -2.0),
    ("S", "hi", b"S\x00\x00\x00\x02hi", "hi"),
    ("S", b"hi", b"S\x00\x00\x00\x02hi", "hi"),
    ("x", "hi", b"x\x00\x00\x00\x02hi", b"hi"),
    ("t", 1, b"t\x01", True),
    ("V", None, b"V", None),
    ("D", "3.140", b"D\x03\x00\x00\x0c\x44", Decimal("3.140")),
    ("A", [Typed("b", 1)], b"A\x00\x00\x00\x02b\x01", [1]),
    ("F", {"a": Typed("u", 2)}, b"F\x00\x00\x00\x05\x01au\x00\x02", {"a": 2}),
]


@pytest.mark.parametrize("code,value,raw,decoded", TYPED_GOLDEN, ids=[f"{c}-{v!r}" for c, v, _, _ in TYPED_GOLDEN])
def test_typed_golden(code, value, raw, decoded):
    assert encode_value(Typed(code, value)) == raw
    table = b"\x00\x00\x00" + bytes((2 + len(raw),)) + b"\x01k" + raw
    assert encode_table({"k": Typed(code, value)}) == table
    got, end = decode_table(table)
    assert end == len(table)
    assert strict_eq(got, {"k": decoded}), got


def test_golden_table_both_ways():
    t = {"product": "Usagi", "n": 5, "caps": {"ok": True}, "list": [None, b"\x01"]}
    raw = (b"\x00\x00\x00\x39"
           b"\x07productS\x00\x00\x00\x05Usagi"                       # 18
           b"\x01nI\x00\x00\x00\x05"                                   # 7
           b"\x04capsF\x00\x00\x00\x05\x02okt\x01"                     # 15
           b"\x04listA\x00\x00\x00\x07Vx\x00\x00\x00\x01\x01")         # 17
    assert len(raw) == 4 + 0x39
    assert encode_table(t) == raw
    assert strict_eq(decode_table(raw)[0], t)


def test_decode_at_offset_and_end():
    raw = b"junk" + encode_table({"a": 1}) + b"tail"
    got, end = decode_table(raw, 4)
    assert got == {"a": 1}
    assert raw[end:] == b"tail"


def test_invalid_utf8_longstr_decodes_to_bytes():
    raw = b"\x00\x00\x00\x08\x01kS\x00\x00\x00\x01\xff"
    assert strict_eq(decode_table(raw)[0], {"k": b"\xff"})


def test_large_ints_use_long_long_and_bounds():
    assert decode_table(encode_table({"a": 2 ** 63 - 1}))[0] == {"a": 2 ** 63 - 1}
    assert decode_table(encode_table({"a": -(2 ** 63)}))[0] == {"a": -(2 ** 63)}
    with pytest.raises(struct.error):
        encode_table({"a": 2 ** 63})


def test_unencodable_values():
    with pytest.raises(TypeError):
        encode_table({"a": object()})
    with pytest.raises(ValueError):
        encode_table({"k" * 256: 1})


# ---------------------------------------------------------------- malformed input


@pytest.mark.parametrize("raw", [
    b"",
    b"\x00\x00\x00",
    b"\x00\x00\x00\x05\x01a",                   # size beyond buffer
    b"\x00\x00\x00\x03\x05abc",                 # key runs past the table
    b"\x00\x00\x00\x02\x01a",                   # no type octet
    b"\x00\x00\x00\x03\x01aZ",                  # unknown type
    b"\x00\x00\x00\x03\x01aI",                  # truncated int
    b"\x00\x00\x00\x07\x01aS\x00\x00\x00\x09",  # truncated longstr
    b"\x00\x00\x00\x09\x01aA\x00\x00\x00\x09\x00",  # array longer than its table
    b"\x00\x00\x00\x07\x01aF\x00\x00\x00\x01",  # inner table truncated
    b"\x00\x00\x00\x03\x01aI\x00\x00\x00\x01",  # value runs past the declared table size
])
def test_malformed_tables_raise_syntax_error(raw):
    with pytest.raises(SyntaxError_):
        decode_table(raw)


def test_nesting_limit():
    deep = b"\x00\x00\x00\x00"
    for _ in range(MAX_DEPTH + 2):
        deep = struct.pack(">I", len(deep) + 3) + b"\x01kF" + deep
    with pytest.raises(SyntaxError_):
        decode_table(deep)
    ok = {}
    for _ in range(MAX_DEPTH - 1):
        ok = {"k": ok}
    assert decode_table(encode_table(ok))[0] == ok


@settings(max_examples=300, deadline=None, database=None)
@given(st.binary(max_size=60))
def test_random_bytes_decode_or_syntax_error(data):
    raw = struct.pack(">I", len(data)) + data
    try:
        decode_table(raw)
    except SyntaxError_:
        pass


@settings(max_examples=60, deadline=None, database=None)
@given(tables, st.data())
def test_every_truncation_is_a_syntax_error(t, data):
    raw = encode_table(t)
    if len(raw) <= 4:
        return
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(SyntaxError_):
        decode_table(raw[:cut])


# ---------------------------------------------------------------- round trips


@settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables)
def test_table_roundtrip(t):
    got = roundtrip(t)
    assert strict_eq(got, t), (t, got)


@settings(max_examples=50, deadline=None, database=None)
@given(st.lists(values, max_size=5))
def test_tuple_encodes_as_array(items):
    assert strict_eq(roundtrip({"a": tuple(items)}), {"a": items})


@settings(max_examples=150, deadline=None, database=None)
@given(st.integers(0, 9), st.integers(-(2 ** 31), 2 ** 31 - 1))
def test_decimal_roundtrip(scale, unscaled):
    d = Decimal(unscaled).scaleb(-scale)
    raw = encode_value(d)
    assert raw == b"D" + struct.pack(">Bi", scale, unscaled)
    got = roundtrip({"d": d})["d"]
    assert isinstance(got, Decimal) and got == d


TYPED_RANGES = {
    "b": st.integers(-128, 127), "B": st.integers(0, 255), "s": st.integers(-32768, 32767),
    "u": st.integers(0, 65535), "I": st.integers(-(2 ** 31), 2 ** 31 - 1), "i": st.integers(0, 2 ** 32 - 1),
    "l": int64, "T": st.integers(0, 2 ** 64 - 1),
    "f": st.floats(width=32, allow_nan=False), "d": st.floats(allow_nan=False),
}


@settings(max_examples=300, deadline=None, database=None)
@given(st.sampled_from(sorted(TYPED_RANGES)).flatmap(lambda c: st.tuples(st.just(c), TYPED_RANGES[c])))
def test_typed_numbers_roundtrip(cv):
    code, v = cv
    raw = encode_value(Typed(code, v))
    assert raw[:1] == code.encode()
    got = roundtrip({"k": Typed(code, v)})["k"]
    assert got == v
    assert isinstance(got, float if code in "fd" else int)
    assert (type(got) is Timestamp) == (code == "T")


@settings(max_examples=60, deadline=None, database=None)
@given(tables)
def test_table_entries_split_and_join(t):
    raw = encode_table(t)
    entries = table_entries(raw)
    assert [name for name, _ in entries] == list(t)
    for (name, value_raw), v in zip(entries, t.values()):
        assert value_raw == encode_value(v)
    assert join_entries(entries) == raw
    # dropping one entry keeps the others byte for byte
    if entries:
        smaller = join_entries(entries[1:])
        assert strict_eq(decode_table(smaller)[0], dict(list(t.items())[1:]))


# ---------------------------------------------------------------- independent encoders


@settings(max_examples=60, deadline=None, database=None)
@given(pika_tables)
def test_same_bytes_as_pika(t):
    pieces = []
    pika.data.encode_table(pieces, t)
    assert encode_table(t) == b"".join(pieces)


@settings(max_examples=60, deadline=None, database=None)
@given(pika_tables)
def test_pika_decodes_our_tables(t):
    raw = encode_table(t)
    decoded, end = pika.data.decode_table(raw, 0)
    assert end == len(raw)
    assert strict_eq(_plain(decoded), t)


def _plain(v):
    """pika returns its own int subclass (`long`) for 'l' values."""
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, int) and not isinstance(v, bool):
        return int(v)
    return v


amqp_scalar = st.one_of(st.booleans(), st.integers(-(2 ** 31) + 1, 2 ** 31 - 1), utf8_text, st.none())
amqp_tables = st.dictionaries(keys, nested(amqp_scalar), max_size=6)


@settings(max_examples=60, deadline=None, database=None)
@given(amqp_tables)
def test_same_bytes_as_py_amqp(t):
    theirs = amqp_ser.dumps("F", [t])
    assert encode_table(t) == theirs
    assert strict_eq(decode_table(theirs)[0], t)
    back, _ = amqp_ser.loads("F", encode_table(t), 0)
    assert strict_eq(back[0], t)


def test_py_amqp_reads_rabbitmq_codes_we_write():
    t = {"big": -(2 ** 40), "bin": b"\x00\x01", "x": Typed("s", -3), "u": Typed("i", 2 ** 32 - 1),
         "f": Typed("f", 0.25), "d": Decimal("12.5")}
    (back,), _ = amqp_ser.loads("F", encode_table(t), 0)
    assert back["big"] == -(2 ** 40)
    assert bytes(back["bin"]) == b"\x00\x01"
    assert back["x"] == -3
    assert back["u"] == 2 ** 32 - 1
    assert back["f"] == 0.25
    assert back["d"] == Decimal("12.5")
