"""A tiny raw AMQP 0-9-1 client for protocol-level tests.

It speaks the wire format directly over a socket so tests can send frames that
well-behaved client libraries never produce (bad frame ends, oversized frames,
unknown methods, stray content frames) and read exactly what the broker answers.

Usage:
    conn = RawConnection.open_to(host, port)       # socket + protocol header
    conn.handshake()                               # start/start-ok/tune/tune-ok/open
    conn.open_channel(1)
    conn.send_method(1, "queue.declare", queue="q", auto_delete=True)
    frame = conn.expect_method("queue.declare-ok")
"""
from __future__ import annotations

import datetime
import decimal
import socket
import struct
import time
from dataclasses import dataclass, field

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
FRAME_METHOD = 1
FRAME_HEADER = 2
FRAME_BODY = 3
FRAME_HEARTBEAT = 8
FRAME_END = 0xCE

# ---------------------------------------------------------------------------
# Method table: (class_id, method_id) -> (name, [(field, type), ...])
# Types: octet short long longlong shortstr longstr bit table timestamp
# ---------------------------------------------------------------------------
_METHODS = {
    (10, 10): ("connection.start", [("version_major", "octet"), ("version_minor", "octet"),
                                    ("server_properties", "table"), ("mechanisms", "longstr"),
                                    ("locales", "longstr")]),
    (10, 11): ("connection.start-ok", [("client_properties", "table"), ("mechanism", "shortstr"),
                                       ("response", "longstr"), ("locale", "shortstr")]),
    (10, 20): ("connection.secure", [("challenge", "longstr")]),
    (10, 21): ("connection.secure-ok", [("response", "longstr")]),
    (10, 30): ("connection.tune", [("channel_max", "short"), ("frame_max", "long"),
                                   ("heartbeat", "short")]),
    (10, 31): ("connection.tune-ok", [("channel_max", "short"), ("frame_max", "long"),
                                      ("heartbeat", "short")]),
    (10, 40): ("connection.open", [("virtual_host", "shortstr"), ("reserved_1", "shortstr"),
                                   ("reserved_2", "bit")]),
    (10, 41): ("connection.open-ok", [("reserved_1", "shortstr")]),
    (10, 50): ("connection.close", [("reply_code", "short"), ("reply_text", "shortstr"),
                                    ("class_id", "short"), ("method_id", "short")]),
    (10, 51): ("connection.close-ok", []),
    (10, 60): ("connection.blocked", [("reason", "shortstr")]),
    (10, 61): ("connection.unblocked", []),
    (20, 10): ("channel.open", [("reserved_1", "shortstr")]),
    (20, 11): ("channel.open-ok", [("reserved_1", "longstr")]),
    (20, 20): ("channel.flow", [("active", "bit")]),
    (20, 21): ("channel.flow-ok", [("active", "bit")]),
    (20, 40): ("channel.close", [("reply_code", "short"), ("reply_text", "shortstr"),
                                 ("class_id", "short"), ("method_id", "short")]),
    (20, 41): ("channel.close-ok", []),
    (40, 10): ("exchange.declare", [("reserved_1", "short"), ("exchange", "shortstr"),
                                    ("type", "shortstr"), ("passive", "bit"), ("durable", "bit"),
                                    ("auto_delete", "bit"), ("internal", "bit"),
                                    ("no_wait", "bit"), ("arguments", "table")]),
    (40, 11): ("exchange.declare-ok", []),
    (40, 20): ("exchange.delete", [("reserved_1", "short"), ("exchange", "shortstr"),
                                   ("if_unused", "bit"), ("no_wait", "bit")]),
    (40, 21): ("exchange.delete-ok", []),
    (40, 30): ("exchange.bind", [("reserved_1", "short"), ("destination", "shortstr"),
                                 ("source", "shortstr"), ("routing_key", "shortstr"),
                                 ("no_wait", "bit"), ("arguments", "table")]),
    (40, 31): ("exchange.bind-ok", []),
    (40, 40): ("exchange.unbind", [("reserved_1", "short"), ("destination", "shortstr"),
                                   ("source", "shortstr"), ("routing_key", "shortstr"),
                                   ("no_wait", "bit"), ("arguments", "table")]),
    (40, 51): ("exchange.unbind-ok", []),
    (50, 10): ("queue.declare", [("reserved_1", "short"), ("queue", "shortstr"),
                                 ("passive", "bit"), ("durable", "bit"), ("exclusive", "bit"),
                                 ("auto_delete", "bit"), ("no_wait", "bit"),
                                 ("arguments", "table")]),
    (50, 11): ("queue.declare-ok", [("queue", "shortstr"), ("message_count", "long"),
                                    ("consumer_count", "long")]),
    (50, 20): ("queue.bind", [("reserved_1", "short"), ("queue", "shortstr"),
                              ("exchange", "shortstr"), ("routing_key", "shortstr"),
                              ("no_wait", "bit"), ("arguments", "table")]),
    (50, 21): ("queue.bind-ok", []),
    (50, 30): ("queue.purge", [("reserved_1", "short"), ("queue", "shortstr"),
                               ("no_wait", "bit")]),
    (50, 31): ("queue.purge-ok", [("message_count", "long")]),
    (50, 40): ("queue.delete", [("reserved_1", "short"), ("queue", "shortstr"),
                                ("if_unused", "bit"), ("if_empty", "bit"), ("no_wait", "bit")]),
    (50, 41): ("queue.delete-ok", [("message_count", "long")]),
    (50, 50): ("queue.unbind", [("reserved_1", "short"), ("queue", "shortstr"),
                                ("exchange", "shortstr"), ("routing_key", "shortstr"),
                                ("arguments", "table")]),
    (50, 51): ("queue.unbind-ok", []),
    (60, 10): ("basic.qos", [("prefetch_size", "long"), ("prefetch_count", "short"),
                             ("global", "bit")]),
    (60, 11): ("basic.qos-ok", []),
    (60, 20): ("basic.consume", [("reserved_1", "short"), ("queue", "shortstr"),
                                 ("consumer_tag", "shortstr"), ("no_local", "bit"),
                                 ("no_ack", "bit"), ("exclusive", "bit"), ("no_wait", "bit"),
                                 ("arguments", "table")]),
    (60, 21): ("basic.consume-ok", [("consumer_tag", "shortstr")]),
    (60, 30): ("basic.cancel", [("consumer_tag", "shortstr"), ("no_wait", "bit")]),
    (60, 31): ("basic.cancel-ok", [("consumer_tag", "shortstr")]),
    (60, 40): ("basic.publish", [("reserved_1", "short"), ("exchange", "shortstr"),
                                 ("routing_key", "shortstr"), ("mandatory", "bit"),
                                 ("immediate", "bit")]),
    (60, 50): ("basic.return", [("reply_code", "short"), ("reply_text", "shortstr"),
                                ("exchange", "shortstr"), ("routing_key", "shortstr")]),
    (60, 60): ("basic.deliver", [("consumer_tag", "shortstr"), ("delivery_tag", "longlong"),
                                 ("redelivered", "bit"), ("exchange", "shortstr"),
                                 ("routing_key", "shortstr")]),
    (60, 70): ("basic.get", [("reserved_1", "short"), ("queue", "shortstr"), ("no_ack", "bit")]),
    (60, 71): ("basic.get-ok", [("delivery_tag", "longlong"), ("redelivered", "bit"),
                                ("exchange", "shortstr"), ("routing_key", "shortstr"),
                                ("message_count", "long")]),
    (60, 72): ("basic.get-empty", [("reserved_1", "shortstr")]),
    (60, 80): ("basic.ack", [("delivery_tag", "longlong"), ("multiple", "bit")]),
    (60, 90): ("basic.reject", [("delivery_tag", "longlong"), ("requeue", "bit")]),
    (60, 100): ("basic.recover-async", [("requeue", "bit")]),
    (60, 110): ("basic.recover", [("requeue", "bit")]),
    (60, 111): ("basic.recover-ok", []),
    (60, 120): ("basic.nack", [("delivery_tag", "longlong"), ("multiple", "bit"),
                               ("requeue", "bit")]),
    (85, 10): ("confirm.select", [("no_wait", "bit")]),
    (85, 11): ("confirm.select-ok", []),
    (90, 10): ("tx.select", []),
    (90, 11): ("tx.select-ok", []),
    (90, 20): ("tx.commit", []),
    (90, 21): ("tx.commit-ok", []),
    (90, 30): ("tx.rollback", []),
    (90, 31): ("tx.rollback-ok", []),
}
METHOD_IDS = {name: ids for ids, (name, _) in _METHODS.items()}

BASIC_PROPERTIES = [
    ("content_type", "shortstr"), ("content_encoding", "shortstr"), ("headers", "table"),
    ("delivery_mode", "octet"), ("priority", "octet"), ("correlation_id", "shortstr"),
    ("reply_to", "shortstr"), ("expiration", "shortstr"), ("message_id", "shortstr"),
    ("timestamp", "timestamp"), ("type", "shortstr"), ("user_id", "shortstr"),
    ("app_id", "shortstr"), ("cluster_id", "shortstr"),
]


# ---------------------------------------------------------------------------
# Primitive encoding
# ---------------------------------------------------------------------------
def enc_shortstr(value) -> bytes:
    data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    if len(data) > 255:
        raise ValueError("shortstr too long")
    return struct.pack("B", len(data)) + data


def enc_longstr(value) -> bytes:
    data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    return struct.pack(">I", len(data)) + data


def enc_field_value(value) -> bytes:
    if isinstance(value, bool):
        return b"t" + struct.pack("B", 1 if value else 0)
    if isinstance(value, int):
        if -2 ** 31 <= value < 2 ** 31:
            return b"I" + struct.pack(">i", value)
        return b"l" + struct.pack(">q", value)
    if isinstance(value, float):
        return b"d" + struct.pack(">d", value)
    if isinstance(value, decimal.Decimal):
        sign, digits, exponent = value.as_tuple()
        places = -exponent if exponent < 0 else 0
        unscaled = int(value * (10 ** places))
        return b"D" + struct.pack(">Bi", places, unscaled)
    if isinstance(value, datetime.datetime):
        return b"T" + struct.pack(">Q", int(value.replace(tzinfo=datetime.timezone.utc).timestamp()))
    if isinstance(value, str):
        return b"S" + enc_longstr(value)
    if isinstance(value, (bytes, bytearray)):
        return b"x" + enc_longstr(value)
    if isinstance(value, dict):
        return b"F" + enc_table(value)
    if isinstance(value, (list, tuple)):
        body = b"".join(enc_field_value(v) for v in value)
        return b"A" + struct.pack(">I", len(body)) + body
    if value is None:
        return b"V"
    raise TypeError(f"cannot encode {value!r}")


def enc_table(table: dict | None) -> bytes:
    body = b"".join(enc_shortstr(k) + enc_field_value(v) for k, v in (table or {}).items())
    return struct.pack(">I", len(body)) + body


class Reader:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0
        self.bitpos = 0
        self.bits = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError("truncated")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str):
        size = struct.calcsize(fmt)
        return struct.unpack(fmt, self.take(size))

    def shortstr(self) -> str:
        (n,) = self.unpack("B")
        return self.take(n).decode("utf-8", "replace")

    def longstr(self) -> bytes:
        (n,) = self.unpack(">I")
        return self.take(n)

    def table(self) -> dict:
        raw = self.longstr()
        sub = Reader(raw)
        result = {}
        while sub.pos < len(raw):
            key = sub.shortstr()
            result[key] = sub.field_value()
        return result

    def field_value(self):
        kind = self.take(1)
        if kind == b"t":
            return bool(self.unpack("B")[0])
        if kind == b"b":
            return self.unpack(">b")[0]
        if kind == b"B":
            return self.unpack(">B")[0]
        if kind == b"s":
            return self.unpack(">h")[0]
        if kind == b"u":
            return self.unpack(">H")[0]
        if kind == b"I":
            return self.unpack(">i")[0]
        if kind == b"i":
            return self.unpack(">I")[0]
        if kind == b"l":
            return self.unpack(">q")[0]
        if kind == b"f":
            return self.unpack(">f")[0]
        if kind == b"d":
            return self.unpack(">d")[0]
        if kind == b"D":
            places, unscaled = self.unpack(">Bi")
            return decimal.Decimal(unscaled).scaleb(-places)
        if kind == b"S":
            return self.longstr()
        if kind == b"x":
            return self.longstr()
        if kind == b"T":
            return datetime.datetime.fromtimestamp(self.unpack(">Q")[0], datetime.timezone.utc)
        if kind == b"F":
            return self.table()
        if kind == b"A":
            raw = self.longstr()
            sub = Reader(raw)
            items = []
            while sub.pos < len(raw):
                items.append(sub.field_value())
            return items
        if kind == b"V":
            return None
        raise ValueError(f"unknown field type {kind!r}")


def encode_args(fields, values: dict) -> bytes:
    out = bytearray()
    bits: list[bool] = []

    def flush_bits():
        if bits:
            byte = 0
            for i, b in enumerate(bits):
                if b:
                    byte |= 1 << i
            out.append(byte)
            bits.clear()

    for name, kind in fields:
        value = values.get(name)
        if kind == "bit":
            if len(bits) == 8:
                flush_bits()
            bits.append(bool(value))
            continue
        flush_bits()
        if kind == "octet":
            out += struct.pack("B", value or 0)
        elif kind == "short":
            out += struct.pack(">H", value or 0)
        elif kind == "long":
            out += struct.pack(">I", value or 0)
        elif kind in ("longlong", "timestamp"):
            out += struct.pack(">Q", value or 0)
        elif kind == "shortstr":
            out += enc_shortstr(value or "")
        elif kind == "longstr":
            out += enc_longstr(value or b"")
        elif kind == "table":
            out += enc_table(value)
        else:
            raise ValueError(kind)
    flush_bits()
    return bytes(out)


def decode_args(fields, reader: Reader) -> dict:
    result = {}
    bitbyte = 0
    bitcount = 8
    for name, kind in fields:
        if kind == "bit":
            if bitcount == 8:
                (bitbyte,) = reader.unpack("B")
                bitcount = 0
            result[name] = bool(bitbyte & (1 << bitcount))
            bitcount += 1
            continue
        bitcount = 8
        if kind == "octet":
            result[name] = reader.unpack("B")[0]
        elif kind == "short":
            result[name] = reader.unpack(">H")[0]
        elif kind == "long":
            result[name] = reader.unpack(">I")[0]
        elif kind in ("longlong", "timestamp"):
            result[name] = reader.unpack(">Q")[0]
        elif kind == "shortstr":
            result[name] = reader.shortstr()
        elif kind == "longstr":
            result[name] = reader.longstr()
        elif kind == "table":
            result[name] = reader.table()
    return result


def method_payload(name_or_ids, **args) -> bytes:
    ids = METHOD_IDS[name_or_ids] if isinstance(name_or_ids, str) else tuple(name_or_ids)
    _, fields = _METHODS.get(ids, ("", []))
    return struct.pack(">HH", *ids) + encode_args(fields, args)


def frame_bytes(frame_type: int, channel: int, payload: bytes, frame_end: int = FRAME_END) -> bytes:
    return struct.pack(">BHI", frame_type, channel, len(payload)) + payload + bytes([frame_end])


def content_header_payload(body_size: int, properties: dict | None = None, class_id: int = 60) -> bytes:
    properties = properties or {}
    flags = 0
    present = []
    for i, (name, kind) in enumerate(BASIC_PROPERTIES):
        if properties.get(name) is not None:
            flags |= 1 << (15 - i)
            present.append((name, kind))
    return struct.pack(">HHQH", class_id, 0, body_size, flags) + encode_args(present, properties)


def decode_content_header(payload: bytes) -> dict:
    r = Reader(payload)
    class_id, _weight, body_size, flags = r.unpack(">HHQH")
    props = {}
    for i, (name, kind) in enumerate(BASIC_PROPERTIES):
        if flags & (1 << (15 - i)):
            props.update(decode_args([(name, kind)], r))
    return {"class_id": class_id, "body_size": body_size, "properties": props}


# ---------------------------------------------------------------------------
# Frames and connection
# ---------------------------------------------------------------------------
@dataclass
class Frame:
    type: int
    channel: int
    payload: bytes
    name: str = ""
    class_id: int = 0
    method_id: int = 0
    args: dict = field(default_factory=dict)

    @property
    def is_method(self) -> bool:
        return self.type == FRAME_METHOD

    def __getitem__(self, key):
        return self.args[key]


def parse_frame(frame_type: int, channel: int, payload: bytes) -> Frame:
    frame = Frame(frame_type, channel, payload)
    if frame_type == FRAME_METHOD and len(payload) >= 4:
        frame.class_id, frame.method_id = struct.unpack(">HH", payload[:4])
        name, fields = _METHODS.get((frame.class_id, frame.method_id), ("unknown", []))
        frame.name = name
        try:
            frame.args = decode_args(fields, Reader(payload[4:]))
        except ValueError:
            frame.args = {}
    elif frame_type == FRAME_HEADER:
        frame.name = "header"
        frame.args = decode_content_header(payload)
    elif frame_type == FRAME_BODY:
        frame.name = "body"
    elif frame_type == FRAME_HEARTBEAT:
        frame.name = "heartbeat"
    return frame


class ConnectionClosedByPeer(Exception):
    pass


class RawConnection:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = b""
        self.server_properties: dict = {}
        self.tune: dict = {}
        self.frame_max = 131072

    # -- socket level -------------------------------------------------------
    @classmethod
    def connect(cls, host: str, port: int, timeout: float = 5.0) -> "RawConnection":
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(sock)

    @classmethod
    def open_to(cls, host: str, port: int, timeout: float = 5.0) -> "RawConnection":
        conn = cls.connect(host, port, timeout)
        conn.send_raw(PROTOCOL_HEADER)
        return conn

    def send_raw(self, data: bytes):
        self.sock.sendall(data)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _fill(self, deadline: float) -> bool:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no data from server")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("no data from server") from None
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return False
        self.buf += chunk
        return True

    def read_exact(self, n: int, timeout: float = 5.0) -> bytes:
        deadline = time.monotonic() + timeout
        while len(self.buf) < n:
            if not self._fill(deadline):
                raise ConnectionClosedByPeer(f"EOF with {self.buf!r}")
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_until_eof(self, timeout: float = 5.0) -> bytes:
        """Everything the peer sends until it closes the socket."""
        deadline = time.monotonic() + timeout
        while self._fill(deadline):
            pass
        data, self.buf = self.buf, b""
        return data

    def is_closed_by_peer(self, timeout: float = 5.0) -> bool:
        """True when the server closes the socket (discarding anything else it sends)."""
        try:
            self.read_until_eof(timeout)
            return True
        except TimeoutError:
            return False

    # -- frames ---------------------------------------------------------------
    def send_frame(self, frame_type: int, channel: int, payload: bytes, frame_end: int = FRAME_END):
        self.send_raw(frame_bytes(frame_type, channel, payload, frame_end))

    def send_method(self, channel: int, method, **args):
        self.send_frame(FRAME_METHOD, channel, method_payload(method, **args))

    def send_content(self, channel: int, body: bytes, properties: dict | None = None):
        self.send_frame(FRAME_HEADER, channel, content_header_payload(len(body), properties))
        chunk = self.frame_max - 8
        for i in range(0, len(body), chunk):
            self.send_frame(FRAME_BODY, channel, body[i:i + chunk])

    def publish(self, channel: int, exchange: str, routing_key: str, body: bytes,
                properties: dict | None = None, mandatory: bool = False, immediate: bool = False):
        self.send_method(channel, "basic.publish", exchange=exchange, routing_key=routing_key,
                         mandatory=mandatory, immediate=immediate)
        self.send_content(channel, body, properties)

    def read_frame(self, timeout: float = 5.0, skip_heartbeats: bool = True) -> Frame:
        while True:
            header = self.read_exact(7, timeout)
            frame_type, channel, size = struct.unpack(">BHI", header)
            payload = self.read_exact(size, timeout)
            end = self.read_exact(1, timeout)
            if end[0] != FRAME_END:
                raise ValueError(f"bad frame end from server: {end!r}")
            frame = parse_frame(frame_type, channel, payload)
            if skip_heartbeats and frame_type == FRAME_HEARTBEAT:
                continue
            return frame

    def expect_method(self, name: str, timeout: float = 5.0) -> Frame:
        frame = self.read_frame(timeout)
        if frame.name != name:
            raise AssertionError(f"expected {name}, got {frame.name} {frame.args}")
        return frame

    def read_message(self, timeout: float = 5.0):
        """After a deliver/get-ok/return method frame: read header + body frames."""
        header = self.read_frame(timeout)
        assert header.type == FRAME_HEADER, header
        size = header.args["body_size"]
        body = b""
        while len(body) < size:
            frame = self.read_frame(timeout)
            assert frame.type == FRAME_BODY, frame
            body += frame.payload
        return header.args["properties"], body

    # -- handshake --------------------------------------------------------------
    def handshake(self, user: str = "guest", password: str = "guest", vhost: str = "/",
                  frame_max: int | None = None, heartbeat: int = 0, channel_max: int | None = None,
                  client_properties: dict | None = None) -> Frame:
        start = self.expect_method("connection.start")
        self.server_properties = start.args["server_properties"]
        props = client_properties if client_properties is not None else {
            "product": "usagi-tests-raw",
            "capabilities": {"consumer_cancel_notify": True, "basic.nack": True,
                             "publisher_confirms": True, "authentication_failure_close": True},
        }
        response = b"\x00" + user.encode() + b"\x00" + password.encode()
        self.send_method(0, "connection.start-ok", client_properties=props, mechanism="PLAIN",
                         response=response, locale="en_US")
        tune = self.read_frame()
        if tune.name != "connection.tune":
            return tune
        self.tune = dict(tune.args)
        fm = frame_max if frame_max is not None else tune.args["frame_max"]
        cm = channel_max if channel_max is not None else tune.args["channel_max"]
        self.frame_max = fm
        self.send_method(0, "connection.tune-ok", channel_max=cm, frame_max=fm, heartbeat=heartbeat)
        self.send_method(0, "connection.open", virtual_host=vhost)
        return self.read_frame()

    @classmethod
    def opened(cls, host: str, port: int, vhost: str = "/", **kw) -> "RawConnection":
        conn = cls.open_to(host, port)
        reply = conn.handshake(vhost=vhost, **kw)
        if reply.name != "connection.open-ok":
            conn.close()
            raise AssertionError(f"handshake failed: {reply.name} {reply.args}")
        return conn

    def open_channel(self, channel: int = 1) -> Frame:
        self.send_method(channel, "channel.open")
        return self.expect_method("channel.open-ok")

    def call(self, channel: int, method: str, reply: str, **args) -> Frame:
        self.send_method(channel, method, **args)
        return self.expect_method(reply)

    # -- closing -----------------------------------------------------------------
    def expect_connection_close(self, timeout: float = 5.0) -> Frame:
        """Read until connection.close arrives; reply with close-ok; return the close frame."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self.read_frame(max(0.01, deadline - time.monotonic()))
            if frame.name == "connection.close":
                try:
                    self.send_method(0, "connection.close-ok")
                except OSError:
                    pass
                return frame

    def expect_channel_close(self, channel: int, timeout: float = 5.0) -> Frame:
        deadline = time.monotonic() + timeout
        while True:
            frame = self.read_frame(max(0.01, deadline - time.monotonic()))
            if frame.name == "channel.close" and frame.channel == channel:
                self.send_method(channel, "channel.close-ok")
                return frame
            if frame.name == "connection.close":
                raise AssertionError(f"connection closed instead of channel: {frame.args}")

    def close_connection(self, timeout: float = 5.0):
        self.send_method(0, "connection.close", reply_code=200, reply_text="bye")
        self.expect_method("connection.close-ok", timeout)
        self.close()


def close_summary(frame: Frame) -> tuple:
    """(reply_code, reply_text, class_id, method_id) of a connection.close / channel.close frame."""
    a = frame.args
    return a["reply_code"], a["reply_text"], a["class_id"], a["method_id"]
