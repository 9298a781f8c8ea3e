"""AMQP field tables and arrays with RabbitMQ's type codes.

Decoding gives plain Python values; `Typed` lets a caller choose the wire type when encoding;
`table_entries` splits an encoded table into (name, raw typed value) pairs so that a table can
be edited (a header added or dropped) without re-encoding, and so without changing, the rest.

Message headers are not checked when a message is published (they travel as the bytes received),
so a stored message may hold a table this decoder refuses: nested deeper than MAX_DEPTH, a type
code it does not know, lengths that lie. Such a message must still be delivered, dead-lettered,
expired and shown, so the broker reads headers leniently: `decode_table_lenient` gives every entry
it can, an `Opaque` value (the raw bytes, written back unchanged) for an entry whose nested value
it cannot read, and stops where the table itself cannot be followed; `table_entries_lenient` splits
a table the same way and returns the unreadable rest as raw bytes. `skip_value` finds where a value
ends without decoding it (a table or array by its length), so no depth limit applies to splitting.
"""
from __future__ import annotations

import datetime
import struct
from decimal import Decimal

from .errors import SyntaxError_

_b = struct.Struct(">b")
_B = struct.Struct(">B")
_s = struct.Struct(">h")
_u = struct.Struct(">H")
_I = struct.Struct(">i")
_i = struct.Struct(">I")
_l = struct.Struct(">q")
_Q = struct.Struct(">Q")
_f = struct.Struct(">f")
_d = struct.Struct(">d")
_D = struct.Struct(">Bi")

# Tables and arrays nest at most this deep. Decoding and encoding recurse (two frames per level),
# so this bound is also what keeps them far from the interpreter's recursion limit: every value
# decoded from the wire (headers, arguments, x-death) nests no deeper, and so neither do the
# recursive walks over such values elsewhere (x-death editing, model.util.freeze of binding
# arguments). Values given as JSON to the management API have no such bound: the walks over
# those (mgmt.util.jsonable, the store's JSON encoding) iterate instead.
MAX_DEPTH = 100


class Timestamp(int):
    """A 'T' field value: seconds since the epoch."""

    def __repr__(self):
        return f"Timestamp({int(self)})"


class Opaque:
    """A field value the decoder could not read (nested too deeply, or broken inside), kept as its
    raw typed bytes (type code first): encoding writes them back as they were. Two are equal when
    their bytes are; a headers exchange matches one with nothing (see exchanges/headers.py)."""

    __slots__ = ("raw", "reason")

    def __init__(self, raw: bytes, reason: str = ""):
        self.raw = raw
        self.reason = reason

    def __eq__(self, other):
        return isinstance(other, Opaque) and self.raw == other.raw

    def __hash__(self):
        return hash(self.raw)

    def __repr__(self):
        return f"Opaque({len(self.raw)} bytes: {self.reason})"

    def __str__(self):
        return f"<unreadable field value of {len(self.raw)} bytes: {self.reason}>"


class Typed:
    """A value with an explicit wire type code, e.g. Typed('l', 1) for a 64-bit signed int."""

    __slots__ = ("code", "value")

    def __init__(self, code: str, value):
        self.code = code
        self.value = value

    def __eq__(self, other):
        return isinstance(other, Typed) and (self.code, self.value) == (other.code, other.value)

    def __repr__(self):
        return f"Typed({self.code!r}, {self.value!r})"


def _need(buf, off, n, end):
    if off + n > end:
        raise SyntaxError_("field table truncated")


def _decode_value(buf, off, end, depth, lenient=False):
    if off >= end:
        raise SyntaxError_("field table truncated")
    t = buf[off]
    off += 1
    if t == 83 or t == 120:  # 'S' longstr, 'x' byte array
        _need(buf, off, 4, end)
        n, = _i.unpack_from(buf, off)
        off += 4
        _need(buf, off, n, end)
        raw = bytes(buf[off:off + n])
        off += n
        if t == 120:
            return raw, off
        try:
            return raw.decode("utf-8"), off
        except UnicodeDecodeError:
            return raw, off
    if t == 73:  # 'I'
        _need(buf, off, 4, end)
        return _I.unpack_from(buf, off)[0], off + 4
    if t == 70:  # 'F'
        if lenient and depth >= MAX_DEPTH:
            return _opaque(buf, off - 1, end)
        return _decode_table(buf, off, end, depth + 1, lenient)
    if t == 116:  # 't'
        _need(buf, off, 1, end)
        return buf[off] != 0, off + 1
    if t == 108:  # 'l'
        _need(buf, off, 8, end)
        return _l.unpack_from(buf, off)[0], off + 8
    if t == 65:  # 'A'
        if lenient and depth >= MAX_DEPTH:
            return _opaque(buf, off - 1, end)
        return _decode_array(buf, off, end, depth + 1, lenient)
    if t == 84:  # 'T'
        _need(buf, off, 8, end)
        return Timestamp(_Q.unpack_from(buf, off)[0]), off + 8
    if t == 98:  # 'b'
        _need(buf, off, 1, end)
        return _b.unpack_from(buf, off)[0], off + 1
    if t == 66:  # 'B'
        _need(buf, off, 1, end)
        return buf[off], off + 1
    if t == 115:  # 's'
        _need(buf, off, 2, end)
        return _s.unpack_from(buf, off)[0], off + 2
    if t == 117:  # 'u'
        _need(buf, off, 2, end)
        return _u.unpack_from(buf, off)[0], off + 2
    if t == 105:  # 'i'
        _need(buf, off, 4, end)
        return _i.unpack_from(buf, off)[0], off + 4
    if t == 102:  # 'f'
        _need(buf, off, 4, end)
        return _f.unpack_from(buf, off)[0], off + 4
    if t == 100:  # 'd'
        _need(buf, off, 8, end)
        return _d.unpack_from(buf, off)[0], off + 8
    if t == 68:  # 'D'
        _need(buf, off, 5, end)
        scale, value = _D.unpack_from(buf, off)
        return Decimal(value).scaleb(-scale), off + 5
    if t == 86:  # 'V'
        return None, off
    raise SyntaxError_(f"unknown field table type {chr(t)!r}")


def _decode_table(buf, off, end, depth, lenient=False):
    if depth > MAX_DEPTH:
        raise SyntaxError_("field table nested too deeply")
    _need(buf, off, 4, end)
    size, = _i.unpack_from(buf, off)
    off += 4
    limit = off + size
    if limit > end:
        raise SyntaxError_("field table truncated")
    result = {}
    while off < limit:
        n = buf[off]
        off += 1
        if off + n > limit:
            raise SyntaxError_("field table truncated")
        key = bytes(buf[off:off + n]).decode("utf-8", "surrogateescape")
        off += n
        value, off = _decode_value(buf, off, limit, depth, lenient)
        result[key] = value
    if off != limit:
        raise SyntaxError_("field table truncated")
    return result, off


def _decode_array(buf, off, end, depth, lenient=False):
    if depth > MAX_DEPTH:
        raise SyntaxError_("field array nested too deeply")
    _need(buf, off, 4, end)
    size, = _i.unpack_from(buf, off)
    off += 4
    limit = off + size
    if limit > end:
        raise SyntaxError_("field array truncated")
    result = []
    while off < limit:
        try:
            value, off = _decode_value(buf, off, limit, depth, lenient)
        except SyntaxError_ as e:
            if not lenient:
                raise
            # the items before are kept; what cannot be read is one opaque item at the end
            result.append(Opaque(bytes(buf[off:limit]), e.args[0] if e.args else "unreadable"))
            return result, limit
        result.append(value)
    if off != limit:
        raise SyntaxError_("field array truncated")
    return result, off


def _opaque(buf, off, end):
    """A table or array nested past MAX_DEPTH, kept whole as an Opaque value (lenient decoding)."""
    stop = skip_value(buf, off, end)
    return Opaque(bytes(buf[off:stop]), "field table nested too deeply"), stop


def decode_table(buf, off=0, end=None):
    """Decode the table at `off`; returns (dict, offset after it)."""
    if end is None:
        end = len(buf)
    return _decode_table(buf, off, end, 0)


def _encode_value(out, v, depth=0):
    if isinstance(v, Opaque):
        out += v.raw
        return
    if depth > MAX_DEPTH:
        raise ValueError("field table nested too deeply")
    if isinstance(v, Typed):
        c = v.code
        x = v.value
        if c in "Sx":
            raw = x.encode("utf-8", "surrogateescape") if isinstance(x, str) else bytes(x)
            out += c.encode() + _i.pack(len(raw)) + raw
        elif c == "F":
            out += b"F"
            _encode_table(out, x, depth + 1)
        elif c == "A":
            out += b"A"
            _encode_array(out, x, depth + 1)
        elif c == "t":
            out += b"t\x01" if x else b"t\x00"
        elif c == "V":
            out += b"V"
        elif c == "D":
            _encode_value(out, Decimal(x), depth)
        else:
            st = {"b": _b, "B": _B, "s": _s, "u": _u, "I": _I, "i": _i, "l": _l, "T": _Q,
                  "f": _f, "d": _d}[c]
            out += c.encode() + st.pack(x)
        return
    if isinstance(v, bool):
        out += b"t\x01" if v else b"t\x00"
    elif isinstance(v, Timestamp):
        out += b"T" + _Q.pack(v)
    elif isinstance(v, int):
        if -2147483648 <= v <= 2147483647:
            out += b"I" + _I.pack(v)
        else:
            out += b"l" + _l.pack(v)
    elif isinstance(v, str):
        raw = v.encode("utf-8", "surrogateescape")
        out += b"S" + _i.pack(len(raw)) + raw
    elif isinstance(v, (bytes, bytearray, memoryview)):
        raw = bytes(v)
        out += b"x" + _i.pack(len(raw)) + raw
    elif isinstance(v, dict):
        out += b"F"
        _encode_table(out, v, depth + 1)
    elif isinstance(v, (list, tuple)):
        out += b"A"
        _encode_array(out, v, depth + 1)
    elif isinstance(v, float):
        out += b"d" + _d.pack(v)
    elif isinstance(v, Decimal):
        sign, digits, exponent = v.as_tuple()
        scale = -exponent if exponent < 0 else 0
        value = int(v.scaleb(scale))
        out += b"D" + _D.pack(scale, value)
    elif isinstance(v, datetime.datetime):
        out += b"T" + _Q.pack(int(v.timestamp()))
    elif v is None:
        out += b"V"
    else:
        raise TypeError(f"cannot encode {type(v).__name__} in a field table")


def _encode_table(out, table, depth):
    start = len(out)
    out += b"\0\0\0\0"
    for k, v in table.items():
        kb = k.encode("utf-8", "surrogateescape") if isinstance(k, str) else bytes(k)
        if len(kb) > 255:
            raise ValueError("field name longer than 255 bytes")
        out.append(len(kb))
        out += kb
        _encode_value(out, v, depth)
    out[start:start + 4] = _i.pack(len(out) - start - 4)


def _encode_array(out, items, depth):
    start = len(out)
    out += b"\0\0\0\0"
    for v in items:
        _encode_value(out, v, depth)
    out[start:start + 4] = _i.pack(len(out) - start - 4)


def encode_table(table) -> bytes:
    if not table:
        return b"\0\0\0\0"
    out = bytearray()
    _encode_table(out, table, 0)
    return bytes(out)


def encode_value(value) -> bytes:
    """The typed encoding of one value (type code followed by its bytes)."""
    out = bytearray()
    _encode_value(out, value)
    return bytes(out)


# RabbitMQ's names of the field types, by type octet (as its error texts print them)
TYPE_NAMES = {ord("S"): "longstr", ord("I"): "signedint", ord("l"): "long", ord("t"): "bool",
              ord("F"): "table", ord("A"): "array", ord("b"): "byte", ord("B"): "unsignedbyte",
              ord("s"): "short", ord("u"): "unsignedshort", ord("i"): "unsignedint", ord("f"): "float",
              ord("d"): "double", ord("D"): "decimal", ord("T"): "timestamp", ord("V"): "void",
              ord("x"): "binary"}

_FIXED = {73: 4, 116: 1, 108: 8, 84: 8, 98: 1, 66: 1, 115: 2, 117: 2, 105: 4, 102: 4, 100: 8, 68: 5, 86: 0}


def skip_value(buf, off: int, end: int) -> int:
    """The offset just after the typed value at `off`, found without decoding it: a table, array
    or string by its length prefix, anything else by its type's size. O(1), whatever the nesting.
    Raises SyntaxError_ for an unknown type or a value running past `end`."""
    if off >= end:
        raise SyntaxError_("field table truncated")
    t = buf[off]
    off += 1
    n = _FIXED.get(t)
    if n is None:
        if t not in (83, 120, 70, 65):      # 'S' 'x' 'F' 'A': a length prefix
            raise SyntaxError_(f"unknown field table type {chr(t)!r}")
        _need(buf, off, 4, end)
        n = 4 + _i.unpack_from(buf, off)[0]
    _need(buf, off, n, end)
    return off + n


def table_entries(raw: bytes) -> list:
    """Split an encoded table (with its length prefix) into [(name, typed value bytes)], unchanged.
    Values are stepped over by their length, not decoded (see skip_value): the cost is linear in
    the number of entries, however large or deeply nested their values (x-death grows along
    dead-letter chains). A broken table raises."""
    entries, rest = table_entries_lenient(raw)
    if rest:
        raise SyntaxError_("field table truncated or of unknown type")
    return entries


def table_entries_lenient(raw: bytes) -> tuple:
    """(entries, rest): the table's entries as table_entries gives them, as far as they can be
    followed, and the raw bytes from the first entry that cannot (b"" when the table is sound)."""
    if len(raw) < 4:
        return [], bytes(raw)
    size, = _i.unpack_from(raw, 0)
    end = min(4 + size, len(raw))
    off = 4
    entries = []
    while off < end:
        n = raw[off]
        start = off + 1 + n
        try:
            if start > end:
                raise SyntaxError_("field table truncated")
            stop = skip_value(raw, start, end)
        except SyntaxError_:
            return entries, bytes(raw[off:end])
        entries.append((raw[off + 1:start].decode("utf-8", "surrogateescape"), bytes(raw[start:stop])))
        off = stop
    return entries, b""


def decode_table_lenient(buf, off: int = 0, end: int | None = None) -> dict:
    """The table at `off` decoded as far as it can be: a table or array nested past MAX_DEPTH
    becomes an Opaque value where the limit is reached; an array keeps the items it can read and
    ends with one Opaque item for the rest; a table broken inside becomes one Opaque value; and
    decoding stops at an entry that cannot be followed (the entries before it are returned).
    Never raises."""
    if end is None:
        end = len(buf)
    raw = bytes(buf[off:end])
    entries, _rest = table_entries_lenient(raw)
    out = {}
    for name, value in entries:
        try:
            out[name], _ = _decode_value(value, 0, len(value), 0, True)
        except SyntaxError_ as e:
            out[name] = Opaque(value, e.args[0] if e.args else "unreadable")
    return out


def join_entries(entries, rest: bytes = b"") -> bytes:
    """Inverse of table_entries(_lenient): [(name, typed value bytes)] (and the unreadable rest,
    kept after them as it was) -> encoded table."""
    out = bytearray(b"\0\0\0\0")
    for name, value in entries:
        kb = name.encode("utf-8", "surrogateescape")
        out.append(len(kb))
        out += kb
        out += value
    out += rest
    out[0:4] = _i.pack(len(out) - 4)
    return bytes(out)


def array_items(raw) -> tuple | None:
    """(items, rest): the raw typed values of an encoded array value ('A', length, values) as far as
    they can be followed, and the bytes from the first that cannot (b"" when all can); None if it
    is not an array or its length runs past the bytes given."""
    if len(raw) < 5 or raw[0] != 65:
        return None
    end = 5 + _i.unpack_from(raw, 1)[0]
    if end > len(raw):
        return None
    off = 5
    items = []
    while off < end:
        try:
            stop = skip_value(raw, off, end)
        except SyntaxError_:
            return items, bytes(raw[off:end])
        items.append(bytes(raw[off:stop]))
        off = stop
    return items, b""


def join_items(items, rest: bytes = b"") -> bytes:
    """Inverse of array_items: raw typed values (and the unreadable rest, kept after them) -> an
    encoded array value ('A', length, values)."""
    body = b"".join(items) + rest
    return b"A" + _i.pack(len(body)) + body
