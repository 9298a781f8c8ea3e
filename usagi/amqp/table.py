"""AMQP field tables and arrays with RabbitMQ's type codes.

Decoding gives plain Python values; `Typed` lets a caller choose the wire type when encoding;
`table_entries` splits an encoded table into (name, raw typed value) pairs so that a table can
be edited (a header added or dropped) without re-encoding, and so without changing, the rest.
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


def _decode_value(buf, off, end, depth):
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
        return _decode_table(buf, off, end, depth + 1)
    if t == 116:  # 't'
        _need(buf, off, 1, end)
        return buf[off] != 0, off + 1
    if t == 108:  # 'l'
        _need(buf, off, 8, end)
        return _l.unpack_from(buf, off)[0], off + 8
    if t == 65:  # 'A'
        return _decode_array(buf, off, end, depth + 1)
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


def _decode_table(buf, off, end, depth):
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
        value, off = _decode_value(buf, off, limit, depth)
        result[key] = value
    if off != limit:
        raise SyntaxError_("field table truncated")
    return result, off


def _decode_array(buf, off, end, depth):
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
        value, off = _decode_value(buf, off, limit, depth)
        result.append(value)
    if off != limit:
        raise SyntaxError_("field array truncated")
    return result, off


def decode_table(buf, off=0, end=None):
    """Decode the table at `off`; returns (dict, offset after it)."""
    if end is None:
        end = len(buf)
    return _decode_table(buf, off, end, 0)


def _encode_value(out, v, depth=0):
    if depth > MAX_DEPTH:
        raise ValueError("field table nested too deeply")
    if isinstance(v, Typed):
        c = v.code
        x = v.value
        if c in "Sx":
            raw = x.encode("utf-8") if isinstance(x, str) else bytes(x)
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


_FIXED_SIZES = {116: 1, 98: 1, 66: 1, 115: 2, 117: 2, 73: 4, 105: 4, 102: 4, 108: 8, 84: 8, 100: 8, 68: 5,
                86: 0}       # t b B s u I i f l T d D V: bytes after the type code


def _skip_value(buf, off, end):
    """The offset after the field value at `off`, from its type code and length prefix alone:
    strings, tables and arrays are stepped over whole, not decoded (so at no cost in depth)."""
    if off >= end:
        raise SyntaxError_("field table truncated")
    t = buf[off]
    off += 1
    if t == 83 or t == 120 or t == 65 or t == 70:    # 'S' 'x' 'A' 'F': a 32-bit length, then the bytes
        _need(buf, off, 4, end)
        off += 4 + _i.unpack_from(buf, off)[0]
    else:
        n = _FIXED_SIZES.get(t)
        if n is None:
            raise SyntaxError_(f"unknown field table type {chr(t)!r}")
        off += n
    if off > end:
        raise SyntaxError_("field table truncated")
    return off


def table_entries(raw: bytes) -> list:
    """Split an encoded table (with its length prefix) into [(name, typed value bytes)], unchanged.
    Values are stepped over by their length, not decoded: the cost is linear in the number of
    entries, however large or deeply nested their values (x-death grows along dead-letter chains)."""
    size, = _i.unpack_from(raw, 0)
    end = 4 + size
    off = 4
    entries = []
    while off < end:
        n = raw[off]
        name = raw[off + 1:off + 1 + n].decode("utf-8", "surrogateescape")
        start = off + 1 + n
        off = _skip_value(raw, start, end)
        entries.append((name, raw[start:off]))
    return entries


def join_entries(entries) -> bytes:
    """Inverse of table_entries: [(name, typed value bytes)] -> encoded table."""
    out = bytearray(b"\0\0\0\0")
    for name, value in entries:
        kb = name.encode("utf-8", "surrogateescape")
        out.append(len(kb))
        out += kb
        out += value
    out[0:4] = _i.pack(len(out) - 4)
    return bytes(out)
