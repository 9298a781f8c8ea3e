"""The replication stream's wire format: frames, the mutual handshake, and the batch codec.

A frame is `u32 length | u8 type | payload` (length counts the type byte). Lengths are checked
against MAX_FRAME before anything is buffered, and every decoder raises `WireError` on bad input,
so a garbled or hostile stream is refused with a clear reason and harms nobody.

Handshake (the secret never crosses the wire):

    leader   -> CHALLENGE  magic, version, leader nonce
    follower -> HELLO      magic, version, node id, last (epoch, lsn), follower nonce,
                           HMAC-SHA256(secret, "hello" | leader nonce | follower nonce | node id)
    leader   -> WELCOME    mode (stream from lsn / snapshot), leader epoch,
                           HMAC-SHA256(secret, "welcome" | follower nonce | leader nonce)
             or REFUSE     reason text (wrong secret, wrong version, not the leader)

Then BATCH frames (epoch, lsn, encoded batch) from the leader and cumulative ACK frames (lsn)
from the follower, HEARTBEAT both ways, and SNAPSHOT_* frames when a follower must start over.

The batch codec encodes what a store commit writes: nested lists/tuples of None, int (64-bit),
str and bytes. Nesting is limited to MAX_DEPTH levels, so decoding recurses at most that deep.
"""
from __future__ import annotations

import hashlib
import hmac
import struct

MAGIC = b"USAGIREP"
VERSION = 1
MAX_FRAME = 256 * 1024 * 1024      # a batch holds at most a commit's worth of messages (16 MiB each)
MAX_DEPTH = 6                      # batch -> parts -> rows -> values (and a little slack)

CHALLENGE, HELLO, WELCOME, REFUSE, BATCH, ACK, HEARTBEAT, SNAP_BEGIN, SNAP_CHUNK, SNAP_END = range(1, 11)
NAMES = {CHALLENGE: "challenge", HELLO: "hello", WELCOME: "welcome", REFUSE: "refuse", BATCH: "batch",
         ACK: "ack", HEARTBEAT: "heartbeat", SNAP_BEGIN: "snapshot-begin", SNAP_CHUNK: "snapshot-chunk",
         SNAP_END: "snapshot-end"}
MODE_STREAM, MODE_SNAPSHOT = 1, 2

_HEAD = struct.Struct(">IB")
_Q = struct.Struct(">Q")
_q = struct.Struct(">q")
_I = struct.Struct(">I")
_QQ = struct.Struct(">QQ")


class WireError(Exception):
    """The peer sent something this side cannot accept."""


# ---------------------------------------------------------------------------------------- frames

def frame(ftype: int, payload: bytes = b"") -> bytes:
    return _HEAD.pack(len(payload) + 1, ftype) + payload


class FrameReader:
    """Bytes in, (type, payload) frames out; never buffers more than one frame's announced size."""

    def __init__(self, max_frame: int = MAX_FRAME):
        self.buf = bytearray()
        self.max_frame = max_frame

    def feed(self, data: bytes) -> list:
        self.buf += data
        out = []
        buf = self.buf
        off = 0
        while len(buf) - off >= 5:
            n, ftype = _HEAD.unpack_from(buf, off)
            if n < 1 or n > self.max_frame:
                raise WireError(f"frame of {n} bytes refused (limit {self.max_frame})")
            if ftype not in NAMES:
                raise WireError(f"unknown frame type {ftype}")
            end = off + 4 + n
            if len(buf) < end:
                break
            out.append((ftype, bytes(buf[off + 5:end])))
            off = end
        if off:
            del buf[:off]
        return out


# ---------------------------------------------------------------------------------------- handshake

def mac(secret: bytes, *parts: bytes) -> bytes:
    return hmac.new(secret, b"|".join(parts), hashlib.sha256).digest()


def challenge(nonce: bytes) -> bytes:
    return MAGIC + bytes((VERSION,)) + _bytes(nonce)


def parse_challenge(p: bytes) -> tuple[int, bytes]:
    r = _Reader(p)
    if r.take(len(MAGIC)) != MAGIC:
        raise WireError("not a Usagi replication peer (bad magic)")
    version = r.take(1)[0]
    return version, r.bytes_()


def hello(node_id: int, epoch: int, lsn: int, f_nonce: bytes, l_nonce: bytes, secret: bytes) -> bytes:
    nid = _Q.pack(node_id)
    return (MAGIC + bytes((VERSION,)) + nid + _QQ.pack(epoch, lsn) + _bytes(f_nonce) +
            _bytes(mac(secret, b"hello", l_nonce, f_nonce, nid)))


def parse_hello(p: bytes) -> dict:
    r = _Reader(p)
    if r.take(len(MAGIC)) != MAGIC:
        raise WireError("not a Usagi replication peer (bad magic)")
    version = r.take(1)[0]
    node_id = _Q.unpack(r.take(8))[0]
    epoch, lsn = _QQ.unpack(r.take(16))
    f_nonce = r.bytes_()
    tag = r.bytes_()
    return {"version": version, "node_id": node_id, "epoch": epoch, "lsn": lsn, "nonce": f_nonce, "mac": tag}


def hello_ok(h: dict, l_nonce: bytes, secret: bytes) -> bool:
    want = mac(secret, b"hello", l_nonce, h["nonce"], _Q.pack(h["node_id"]))
    return hmac.compare_digest(want, h["mac"])


def welcome(mode: int, epoch: int, lsn: int, f_nonce: bytes, l_nonce: bytes, secret: bytes) -> bytes:
    return bytes((mode,)) + _QQ.pack(epoch, lsn) + _bytes(mac(secret, b"welcome", f_nonce, l_nonce))


def parse_welcome(p: bytes, f_nonce: bytes, l_nonce: bytes, secret: bytes) -> tuple[int, int, int]:
    r = _Reader(p)
    mode = r.take(1)[0]
    epoch, lsn = _QQ.unpack(r.take(16))
    tag = r.bytes_()
    if not hmac.compare_digest(tag, mac(secret, b"welcome", f_nonce, l_nonce)):
        raise WireError("the leader could not prove it knows the cluster secret")
    if mode not in (MODE_STREAM, MODE_SNAPSHOT):
        raise WireError(f"unknown replication mode {mode}")
    return mode, epoch, lsn


def batch_frame(epoch: int, lsn: int, body: bytes) -> bytes:
    return frame(BATCH, _QQ.pack(epoch, lsn) + body)


def parse_batch(p: bytes) -> tuple[int, int, bytes]:
    if len(p) < 16:
        raise WireError("batch frame truncated")
    epoch, lsn = _QQ.unpack_from(p, 0)
    return epoch, lsn, p[16:]


def ack_frame(lsn: int) -> bytes:
    return frame(ACK, _Q.pack(lsn))


def parse_ack(p: bytes) -> int:
    if len(p) != 8:
        raise WireError("ack frame of the wrong size")
    return _Q.unpack(p)[0]


# ---------------------------------------------------------------------------------------- batch codec

_NONE, _INT, _STR, _BYTES, _LIST, _TUPLE, _BIGINT = b"n", b"i", b"s", b"b", b"l", b"t", b"I"


def encode(value) -> bytes:
    out = []
    _enc(value, out, 0)
    return b"".join(out)


def _enc(v, out, depth):
    if depth > MAX_DEPTH:
        raise WireError("value nested too deep to encode")
    t = type(v)
    if v is None:
        out.append(_NONE)
    elif t is int or t is bool:
        if -(1 << 63) <= v < (1 << 63):
            out.append(_INT + _q.pack(v))
        else:
            b = str(int(v)).encode()
            out.append(_BIGINT + _I.pack(len(b)) + b)
    elif t is str:
        b = v.encode("utf-8", "surrogateescape")
        out.append(_STR + _I.pack(len(b)) + b)
    elif t is bytes or t is bytearray or t is memoryview:
        b = bytes(v)
        out.append(_BYTES + _I.pack(len(b)) + b)
    elif t is list or t is tuple:
        out.append((_LIST if t is list else _TUPLE) + _I.pack(len(v)))
        for x in v:
            _enc(x, out, depth + 1)
    else:
        raise WireError(f"cannot encode a {t.__name__}")


def decode(data: bytes):
    r = _Reader(data)
    v = _dec(r, 0)
    if r.off != len(data):
        raise WireError("trailing bytes after a batch")
    return v


def _dec(r, depth):
    if depth > MAX_DEPTH:
        raise WireError("batch nested too deep")
    tag = r.take(1)
    if tag == _NONE:
        return None
    if tag == _INT:
        return _q.unpack(r.take(8))[0]
    if tag == _STR:
        return r.take(_I.unpack(r.take(4))[0]).decode("utf-8", "surrogateescape")
    if tag == _BYTES:
        return r.take(_I.unpack(r.take(4))[0])
    if tag == _BIGINT:
        text = r.take(_I.unpack(r.take(4))[0])
        if len(text) > 64:
            raise WireError("integer too long")
        try:
            return int(text)
        except ValueError:
            raise WireError("bad integer") from None
    if tag == _LIST or tag == _TUPLE:
        n = _I.unpack(r.take(4))[0]
        if n > len(r.data) - r.off:          # every element takes at least one byte
            raise WireError("list longer than the frame")
        items = [_dec(r, depth + 1) for _ in range(n)]
        return items if tag == _LIST else tuple(items)
    raise WireError(f"unknown value tag {tag!r}")


class _Reader:
    __slots__ = ("data", "off")

    def __init__(self, data: bytes):
        self.data = data
        self.off = 0

    def take(self, n: int) -> bytes:
        end = self.off + n
        if end > len(self.data):
            raise WireError("frame truncated")
        b = self.data[self.off:end]
        self.off = end
        return bytes(b)

    def bytes_(self) -> bytes:
        return self.take(_I.unpack(self.take(4))[0])


def _bytes(b: bytes) -> bytes:
    return _I.pack(len(b)) + b
