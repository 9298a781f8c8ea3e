"""Paging: a long queue keeps its head in memory and the rest in segment files.

Once a plain queue holds more than its in-memory budget, messages that arrive go to the tail
segment file instead of memory, in order; when the in-memory head runs low, the next batch is
read back from the oldest segment. Memory per queue is then bounded whatever its length, as with
RabbitMQ's CQv2 queues and LavinMQ's segments. Segment files are scratch space: durability of
persistent messages is the store's job, and the files are deleted when read or at start.

Record layout: seq u64, msg_id u64, flags u8, exchange len u8, routing key len u8,
properties len u32, body len u32, then the five byte strings.
"""
from __future__ import annotations

import itertools
import os
import struct
from collections import deque

_REC = struct.Struct(">QQBBBII")
SEGMENT_BYTES = 64 * 1024 * 1024
_ids = itertools.count(1)


class Segment:
    __slots__ = ("path", "count", "bytes", "writer", "reader", "closed_for_write")

    def __init__(self, directory: str):
        self.path = os.path.join(directory, f"seg-{os.getpid()}-{next(_ids)}.q")
        self.count = 0
        self.bytes = 0
        self.writer = open(self.path, "wb", buffering=1024 * 1024)
        self.reader = None
        self.closed_for_write = False

    def append(self, seq: int, msg):
        ex = msg.exchange.encode("utf-8", "surrogateescape")
        rk = msg.routing_key.encode("utf-8", "surrogateescape")
        body = msg.body
        self.writer.write(b"".join((_REC.pack(seq, msg.id, 1 if msg.stored else 0, len(ex), len(rk),
                                             len(msg.props), len(body)), ex, rk, msg.props, body)))
        self.count += 1
        self.bytes += len(body)

    def seal(self):
        if not self.closed_for_write:
            self.writer.close()
            self.closed_for_write = True

    def read(self, max_count: int, make) -> list:
        """Up to max_count (seq, message) pairs from where the last read stopped."""
        self.seal()
        if self.reader is None:
            self.reader = open(self.path, "rb", buffering=1024 * 1024)
        out = []
        r = self.reader
        size = _REC.size
        while len(out) < max_count:
            head = r.read(size)
            if len(head) < size:
                break
            seq, msg_id, flags, lx, lr, lp, lb = _REC.unpack(head)
            data = r.read(lx + lr + lp + lb)
            ex = data[:lx].decode("utf-8", "surrogateescape")
            rk = data[lx:lx + lr].decode("utf-8", "surrogateescape")
            props = data[lx + lr:lx + lr + lp]
            body = data[lx + lr + lp:]
            out.append((seq, make(ex, rk, props, body, msg_id, flags & 1)))
        self.count -= len(out)
        self.bytes -= sum(len(m.body) for _, m in out)
        return out

    def drop(self):
        for f in (self.writer, self.reader):
            try:
                if f is not None:
                    f.close()
            except OSError:
                pass
        try:
            os.unlink(self.path)
        except OSError:
            pass


class Pager:
    """The paged-out middle of one queue: segments in order, oldest first."""

    __slots__ = ("directory", "segments", "count", "bytes")

    def __init__(self, directory: str):
        self.directory = directory
        self.segments: deque = deque()
        self.count = 0
        self.bytes = 0

    def append(self, seq: int, msg):
        segs = self.segments
        if not segs or segs[-1].closed_for_write or segs[-1].bytes >= SEGMENT_BYTES:
            if segs:
                segs[-1].seal()
            segs.append(Segment(self.directory))
        segs[-1].append(seq, msg)
        self.count += 1
        self.bytes += len(msg.body)

    def read(self, max_count: int, make) -> list:
        out = []
        while self.segments and len(out) < max_count:
            seg = self.segments[0]
            got = seg.read(max_count - len(out), make)
            out += got
            if seg.count <= 0 and seg.closed_for_write:
                seg.drop()
                self.segments.popleft()
            elif not got:
                break
        self.count -= len(out)
        self.bytes -= sum(len(m.body) for _, m in out)
        return out

    def drop(self):
        for seg in self.segments:
            seg.drop()
        self.segments.clear()
        self.count = 0
        self.bytes = 0
