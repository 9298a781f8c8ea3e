"""A bystander: a well-behaved client that measures what an attack costs everyone else.

It runs in a thread of its own with a raw AMQP socket client (no client library between it and
the wire, so what it measures is the broker): it declares an exclusive queue, consumes from it
with no-ack, and publishes one small message every `interval` seconds to that queue through the
default exchange, timing each from the publish to its delivery. Heartbeats are negotiated, so a
broker that stalls longer than the heartbeat timeout loses the bystander's connection, which is
reported.

    with Bystander(host, port) as b:
        ... run the attack ...
    s = b.stats()        # {'count', 'lost', 'p50_ms', 'p99_ms', 'max_ms', 'closed', 'error'}

The benchmarks (benchmarks/abuse.py) carry the figures; tests only assert generous bounds.
"""
from __future__ import annotations

import select
import struct
import threading
import time

from rawamqp import FRAME_BODY, FRAME_HEARTBEAT, ConnectionClosedByPeer, RawConnection


class Bystander:
    def __init__(self, host: str, port: int, interval: float = 0.01, user: str = "guest",
                 password: str = "guest", vhost: str = "/", heartbeat: int = 5, timeout: float = 10.0):
        self.host, self.port = host, port
        self.interval = interval
        self.user, self.password, self.vhost = user, password, vhost
        self.heartbeat = heartbeat
        self.timeout = timeout            # a delivery later than this counts as lost
        self.samples: list = []           # latencies in seconds
        self.lost = 0
        self.closed = False               # the broker closed or dropped the connection
        self.error = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = None

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> "Bystander":
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self, wait: float = 10.0):
        self._thread = threading.Thread(target=self._run, name="bystander", daemon=True)
        self._thread.start()
        if not self._ready.wait(wait):
            raise AssertionError(f"bystander could not connect: {self.error}")
        if self.error:
            raise AssertionError(f"bystander could not connect: {self.error}")

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout + 5)

    def reset(self):
        """Forget the samples so far (for example those taken before the attack started)."""
        self.samples = []
        self.lost = 0

    # ------------------------------------------------------------------ figures
    def stats(self) -> dict:
        s = sorted(self.samples)
        n = len(s)

        def pct(p):
            if not n:
                return None
            return round(s[min(n - 1, int(p * n))] * 1000, 2)
        return {"count": n, "lost": self.lost, "p50_ms": pct(0.50), "p99_ms": pct(0.99),
                "max_ms": round(s[-1] * 1000, 2) if n else None, "closed": self.closed, "error": self.error}

    def assert_ok(self, p99_ms: float, min_count: int = 10):
        st = self.stats()
        assert not st["closed"], f"bystander's connection was closed: {st}"
        assert st["count"] >= min_count, f"bystander got too few deliveries: {st}"
        assert st["lost"] == 0, f"bystander lost messages: {st}"
        assert st["p99_ms"] <= p99_ms, f"bystander p99 latency over {p99_ms} ms: {st}"
        return st

    # ------------------------------------------------------------------ the client
    def _run(self):
        try:
            conn = RawConnection.open_to(self.host, self.port, timeout=10)
            reply = conn.handshake(self.user, self.password, self.vhost, heartbeat=self.heartbeat)
            if reply.name != "connection.open-ok":
                raise AssertionError(f"handshake: {reply.name} {reply.args}")
            conn.open_channel(1)
            queue = conn.call(1, "queue.declare", "queue.declare-ok", queue="", exclusive=True,
                              auto_delete=True)["queue"]
            conn.call(1, "basic.consume", "basic.consume-ok", queue=queue, consumer_tag="bystander",
                      no_ack=True)
        except Exception as e:  # noqa: BLE001 - reported through stats()
            self.error = f"{type(e).__name__}: {e}"
            self._ready.set()
            return
        self._ready.set()
        try:
            self._loop(conn, queue)
        except (OSError, ConnectionClosedByPeer, _Closed) as e:
            if not self._stop.is_set():
                self.closed = True
                self.error = f"{type(e).__name__}: {e}"
        finally:
            conn.close()

    def _loop(self, conn, queue):
        seq = 0
        pending = {}                       # seq -> publish time
        next_pub = time.perf_counter()
        last_hb = time.monotonic()
        sock = conn.sock
        sock.setblocking(False)
        buf = b""
        while not self._stop.is_set():
            now = time.perf_counter()
            if now >= next_pub:
                seq += 1
                pending[seq] = now
                sock.setblocking(True)
                conn.publish(1, "", queue, struct.pack(">Q", seq))
                sock.setblocking(False)
                next_pub = now + self.interval
            if time.monotonic() - last_hb >= self.heartbeat / 2:
                sock.setblocking(True)
                conn.send_raw(b"\x08\x00\x00\x00\x00\x00\x00\xce")
                sock.setblocking(False)
                last_hb = time.monotonic()
            wait = max(0.0, min(next_pub - time.perf_counter(), 0.05))
            r, _, _ = select.select([sock], [], [], wait)
            if not r:
                self._expire(pending)
                continue
            try:
                chunk = sock.recv(65536)
            except BlockingIOError:
                continue
            if not chunk:
                raise _Closed("the broker closed the connection")
            t = time.perf_counter()
            buf += chunk
            off = 0
            while len(buf) - off >= 8:
                ftype, _ch, size = struct.unpack_from(">BHI", buf, off)
                end = off + 7 + size
                if len(buf) <= end:
                    break
                payload = buf[off + 7:end]
                off = end + 1
                if ftype == 1 and payload[:4] == b"\x00\x0a\x00\x32":      # connection.close
                    raise _Closed(f"connection.close from the broker: {payload[4:]!r}")
                if ftype == 1 and payload[:4] == b"\x00\x14\x00\x28":      # channel.close
                    raise _Closed(f"channel.close from the broker: {payload[4:]!r}")
                if ftype == FRAME_BODY and len(payload) >= 8:
                    n = struct.unpack_from(">Q", payload, 0)[0]
                    t0 = pending.pop(n, None)
                    if t0 is not None:
                        self.samples.append(t - t0)
                elif ftype == FRAME_HEARTBEAT:
                    pass
            buf = buf[off:]
            self._expire(pending)

    def _expire(self, pending):
        cutoff = time.perf_counter() - self.timeout
        for n in [n for n, t0 in pending.items() if t0 < cutoff]:
            del pending[n]
            self.lost += 1


class _Closed(Exception):
    pass
