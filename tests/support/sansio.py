"""Driving the engine without sockets (sans-IO tests): a transport that keeps what the engine
writes in `data` (and reports each write to `on_write`, if given) and records pausing; a broker on
a real SQLite store whose commits the test drives (StoreNode); the replies in written bytes."""
from __future__ import annotations

import struct

from usagi.amqp import methods as M
from usagi.amqp.frames import PROTOCOL_HEADER, content_frames, method_frame
from usagi.core.broker import Broker
from usagi.core.connection import Connection
from usagi.core.recovery import restore
from usagi.storage.sqlite import SQLiteStore


class Transport:
    def __init__(self, on_write=None):
        self.data = bytearray()
        self.paused = False
        self.closed = False
        self.on_write = on_write

    def write(self, data):
        self.data += data
        if self.on_write is not None:
            self.on_write(data)

    def close(self):
        self.closed = True

    def abort(self):
        self.closed = True

    def is_closing(self):
        return self.closed

    def pause_reading(self):
        self.paused = True

    def resume_reading(self):
        self.paused = False

    def get_write_buffer_size(self):
        return 0

    def get_extra_info(self, name, default=None):
        return default


PERSISTENT = b"\x10\x00\x02"      # property flags: delivery-mode; delivery-mode 2


class StoreNode:
    """A broker on a SQLite store (what it holds recovered, as at a server's start); `later` holds
    what the engine deferred to a later loop turn."""

    def __init__(self, path):
        self.store = SQLiteStore(str(path))
        self.broker = Broker(store=self.store)
        restore(self.broker, self.store.open())
        self.broker.bootstrap()
        self.store.commit()
        self.later = []
        self.broker.on_defer = self.later.append

    def connect(self):
        t = Transport()
        conn = Connection(self.broker, t, ("127.0.0.1", 1), ("127.0.0.1", 2))
        conn.connection_made()
        caps = {"capabilities": {"consumer_cancel_notify": True}}
        conn.data_received(PROTOCOL_HEADER
                           + method_frame(0, M.ConnectionStartOk(caps, "PLAIN", b"\x00guest\x00guest").encode())
                           + method_frame(0, M.ConnectionTuneOk(2047, 131072, 0).encode())
                           + method_frame(0, M.ConnectionOpen("/").encode())
                           + method_frame(1, M.ChannelOpen().encode()))
        self.settle()           # a slow turn (a loaded machine) yields what is left to a later one
        t.data = b""
        return conn, t

    def run_later(self) -> bool:
        ran = bool(self.later)
        while self.later:
            self.later.pop(0)()
        self.broker.flush_output()
        return ran

    def commit(self, error=None) -> bool:
        """One turn of the commit loop: False when there was nothing to commit."""
        b = self.broker
        if not (b.commit_waiters or b.store_pending()):
            return False
        epoch, waiters = b.begin_commit()
        if error is None:
            self.store.commit()
        b.commit_done(epoch, waiters, error)
        b.flush_output()
        return True

    def settle(self):
        while self.run_later() or self.commit():
            pass


def replies(data: bytes) -> list:
    """(channel, method name, fields) of the method frames in `data`."""
    out = []
    off = 0
    while off < len(data):
        ftype, ch, size = struct.unpack_from(">BHI", data, off)
        payload = data[off + 7:off + 7 + size]
        off += size + 8
        if ftype == 1:
            cls = M.METHODS[struct.unpack_from(">I", payload)[0]]
            m = cls.decode(payload, 4, len(payload))
            out.append((ch, cls.NAME, {f: getattr(m, f) for f in cls.FIELDS}))
    return out


def publish(queue: str, body: bytes) -> bytes:
    return (method_frame(1, M.BasicPublish(0, "", queue).encode())
            + b"".join(content_frames(1, 60, PERSISTENT, body, 131072)))
