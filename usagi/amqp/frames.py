"""Frames, sans-IO: bytes in, frames out; and the builders for frames going out.

A frame is (type, channel, payload). The reader checks a frame's size against frame_max before it
buffers its payload, and reports errors without losing the frames that came before them.
"""
from __future__ import annotations

import struct

from . import erlfmt
from .errors import FrameError

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
# AMQP 0-9 clients send this one; RabbitMQ serves them as 0-9-1
ACCEPTED_HEADERS = (PROTOCOL_HEADER, b"AMQP\x01\x01\x00\x09")

FRAME_METHOD = 1
FRAME_HEADER = 2
FRAME_BODY = 3
FRAME_HEARTBEAT = 8
FRAME_END = 206
FRAME_END_BYTE = b"\xce"
FRAME_OVERHEAD = 8  # 7 bytes of header and the frame-end octet
FRAME_MIN_SIZE = 4096

_hdr = struct.Struct(">BHI")
_HHQ = struct.Struct(">HHQ")
_method_hdr = struct.Struct(">BHI")

HEARTBEAT_FRAME = b"\x08\x00\x00\x00\x00\x00\x00\xce"


class BadProtocolHeader(Exception):
    """The peer did not open with AMQP 0-9-1's protocol header."""

    def __init__(self, received: bytes):
        super().__init__(f"bad protocol header {received!r}")
        self.received = received


class FrameReader:
    """Splits a byte stream into frames.

    feed(data) returns the complete frames found so far. If the stream turns out to be broken,
    `error` is set to a FrameError and no further frames are returned; frames parsed before the
    fault are still returned so that they can be processed in order.
    """

    __slots__ = ("_buf", "frame_max", "expect_header", "error", "bytes_received")

    def __init__(self, frame_max: int = 8192, expect_header: bool = True):
        self._buf = b""
        self.frame_max = frame_max  # largest whole frame accepted (0 = no limit)
        self.expect_header = expect_header
        self.error: Exception | None = None
        self.bytes_received = 0

    def feed(self, data) -> list:
        if self.error is not None:
            return []
        self.bytes_received += len(data)
        buf = self._buf + data if self._buf else data
        off = 0
        n = len(buf)
        frames = []
        if self.expect_header:
            if n < 8:
                if not any(h.startswith(bytes(buf[:n])) for h in ACCEPTED_HEADERS):
                    self.error = BadProtocolHeader(bytes(buf))
                    self._buf = b""
                    return frames
                self._buf = bytes(buf)
                return frames
            if buf[:8] not in ACCEPTED_HEADERS:
                self.error = BadProtocolHeader(bytes(buf[:8]))
                self._buf = b""
                return frames
            self.expect_header = False
            off = 8
            frames.append(("header", 0, b""))
        frame_max = self.frame_max
        unpack = _hdr.unpack_from
        while n - off >= 7:
            ftype, channel, size = unpack(buf, off)
            if frame_max and size > frame_max:
                # RabbitMQ allows a payload of frame_max (not frame_max - 8) and reports the limit
                # as frame_max - 8
                self.error = FrameError(erlfmt.frame_error(ftype, b"", "frame_too_large", size,
                                                           frame_max - FRAME_OVERHEAD))
                self._buf = b""
                return frames
            end = off + 7 + size
            if end >= n:  # need the frame-end octet too
                break
            payload = buf[off + 7:end]
            if buf[end] != FRAME_END:
                self.error = FrameError(erlfmt.frame_error(ftype, payload, "invalid_frame_end_marker", buf[end]))
                self._buf = b""
                return frames
            if (ftype != FRAME_METHOD and ftype != FRAME_HEADER and ftype != FRAME_BODY
                    and ftype != FRAME_HEARTBEAT) or (ftype == FRAME_METHOD and size < 4) \
                    or (ftype == FRAME_HEARTBEAT and size):
                self.error = FrameError(erlfmt.frame_error(ftype, payload, "unknown_frame"))
                self._buf = b""
                return frames
            frames.append((ftype, channel, payload))
            off = end + 1
        self._buf = bytes(buf[off:]) if off < n else b""
        return frames

    @property
    def buffered(self) -> int:
        return len(self._buf)


def _octets(b) -> str:
    return "<<" + ",".join(str(x) for x in bytes(b)) + ">>"


def method_frame(channel: int, payload: bytes) -> bytes:
    return _method_hdr.pack(FRAME_METHOD, channel, len(payload)) + payload + FRAME_END_BYTE


def content_frames(channel: int, class_id: int, props_raw: bytes, body: bytes, frame_max: int) -> list:
    """The content header frame and body frames for one message, as a list of byte strings."""
    size = len(body)
    header = _HHQ.pack(class_id, 0, size) + props_raw
    parts = [_hdr.pack(FRAME_HEADER, channel, len(header)), header, FRAME_END_BYTE]
    if size:
        chunk = (frame_max - FRAME_OVERHEAD) if frame_max else size
        if size <= chunk:
            parts += (_hdr.pack(FRAME_BODY, channel, size), body, FRAME_END_BYTE)
        else:
            for i in range(0, size, chunk):
                piece = body[i:i + chunk]
                parts += (_hdr.pack(FRAME_BODY, channel, len(piece)), piece, FRAME_END_BYTE)
    return parts


def parse_content_header(payload) -> tuple:
    """(class_id, body_size, properties bytes as received) of a content header frame."""
    class_id, _weight, body_size = _HHQ.unpack_from(payload, 0)
    return class_id, body_size, bytes(payload[12:])
