"""Soak test: a mixed workload against a Usagi server of its own, watching memory and descriptors.

    python tools/soak.py --minutes 30 [--json result.json] [--server-arg=--in-memory ...]

It starts `usagi-server` (a temporary data dir, port 0), then runs for the given time:

* publishers (pika, publisher confirms, persistent messages) into durable work queues, one of
  them a quorum queue, and a raw-socket publisher that speaks the wire format itself;
* consumers (manual acks, prefetch) that restart every so often, leaving deliveries unacked
  (they are redelivered), and nack-requeue now and then (classic queues);
* connection churn: pika connect/close, TCP connect/close, header-only, handshake then drop;
* queue churn: declare, bind, publish, get, delete; exclusive queues dropped with their connection.

Every few seconds it samples the server's RSS (/proc/PID/status) and open descriptors
(/proc/PID/fd). At the end it stops publishing, lets the consumers drain, and reports messages
published (confirmed), consumed (unique), lost and duplicated, the start and end RSS and fds, and
their trend (least-squares slope over the run after a warm-up). Exit status 1 if anything was lost.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import pika  # noqa: E402

from usagi.amqp import methods as M  # noqa: E402
from usagi.amqp.frames import PROTOCOL_HEADER, method_frame  # noqa: E402

LISTENER_RE = re.compile(r"AMQP listener on (\S+):(\d+)")
WORK_QUEUES = ("soak-work-0", "soak-work-1", "soak-work-q")    # the last one is a quorum queue


# ---------------------------------------------------------------------------------------- the server
class Server:
    def __init__(self, extra_args=(), data_dir=None, env=None):
        self.own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="usagi-soak-")
        self.extra_args = list(extra_args)
        self.env = env
        self.proc = None
        self.port = None
        self.lines: list = []

    def start(self, timeout=30.0):
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        env.update(self.env or {})
        cmd = [sys.executable, "-m", "usagi.cli.server", "--host", "127.0.0.1", "--port", "0",
               "--data-dir", self.data_dir, "--management-port", "-1", *self.extra_args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                     cwd=ROOT)
        ready = threading.Event()

        def pump():
            for line in self.proc.stdout:
                if len(self.lines) < 20000:
                    self.lines.append(line)
                m = LISTENER_RE.search(line)
                if m and self.port is None:
                    self.port = int(m.group(2))
                    ready.set()
        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(timeout):
            self.stop()
            raise RuntimeError("server did not start:\n" + "".join(self.lines))
        return self

    @property
    def pid(self):
        return self.proc.pid

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def slope(points) -> float:
    """Least-squares slope of (x, y) points; 0 for fewer than two."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    den = sum((p[0] - mx) ** 2 for p in points)
    if den == 0:
        return 0.0
    return sum((p[0] - mx) * (p[1] - my) for p in points) / den


# ---------------------------------------------------------------------------------------- workload
class Ledger:
    """What was confirmed to publishers and what consumers acknowledged, by message id."""

    def __init__(self):
        self.lock = threading.Lock()
        self.published: set = set()
        self.consumed: set = set()
        self.deliveries = 0
        self.redelivered = 0
        self.errors: list = []
        self.counts = {"pika_churn": 0, "tcp_churn": 0, "header_churn": 0, "drop_churn": 0,
                       "queues_created": 0, "queues_deleted": 0, "consumer_restarts": 0, "raw_batches": 0,
                       "nacks": 0, "exclusive_dropped": 0}

    def error(self, where, e):
        with self.lock:
            if len(self.errors) < 200:
                self.errors.append(f"{time.strftime('%H:%M:%S')} {where}: {type(e).__name__}: {e}")

    def bump(self, key, n=1):
        with self.lock:
            self.counts[key] += n


def params(port, **kw):
    return pika.ConnectionParameters("127.0.0.1", port, heartbeat=30, blocked_connection_timeout=60,
                                     connection_attempts=3, retry_delay=0.5, **kw)


def setup_queues(port):
    c = pika.BlockingConnection(params(port))
    ch = c.channel()
    for q in WORK_QUEUES:
        args = {"x-queue-type": "quorum"} if q.endswith("-q") else {}
        ch.queue_declare(q, durable=True, arguments=args)
    c.close()


class Worker(threading.Thread):
    def __init__(self, name, port, ledger, stop, rng_seed):
        super().__init__(name=name, daemon=True)
        self.port = port
        self.ledger = ledger
        self.stop = stop
        self.rng = random.Random(rng_seed)

    def run(self):
        while not self.stop.is_set():
            try:
                self.work()
            except Exception as e:  # a connection dropped: note it, reconnect
                if not self.stop.is_set():
                    self.ledger.error(self.name, e)
                    time.sleep(0.5)


class Publisher(Worker):
    def __init__(self, *a, who=0, pace=0.0):
        super().__init__(*a)
        self.who = who
        self.seq = 0
        self.pace = pace

    def work(self):
        c = pika.BlockingConnection(params(self.port))
        try:
            ch = c.channel()
            ch.confirm_delivery()
            props = pika.BasicProperties(delivery_mode=2, content_type="application/octet-stream")
            while not self.stop.is_set():
                self.seq += 1
                mid = f"p{self.who}-{self.seq}"
                q = self.rng.choice(WORK_QUEUES)
                size = self.rng.choice((16, 100, 1000, 4000, 20000))
                body = mid.encode() + b" " + b"x" * size
                ch.basic_publish("", q, body, props, mandatory=True)   # raises unless confirmed
                with self.ledger.lock:
                    self.ledger.published.add(mid)
                if self.pace:
                    time.sleep(self.pace)
        finally:
            _close(c)


class Consumer(Worker):
    def __init__(self, *a, queue="", restart_every=20.0, nack=True):
        super().__init__(*a)
        self.queue = queue
        self.restart_every = restart_every
        self.nack = nack
        self.draining = False

    def work(self):
        c = pika.BlockingConnection(params(self.port))
        try:
            ch = c.channel()
            ch.basic_qos(prefetch_count=self.rng.choice((1, 10, 50, 200)))
            until = time.monotonic() + self.rng.uniform(0.5, 1.5) * self.restart_every
            for method, props, body in ch.consume(self.queue, inactivity_timeout=0.5):
                if self.stop.is_set():
                    break
                if method is None:
                    if time.monotonic() > until and not self.draining:
                        break
                    continue
                mid = body.split(b" ", 1)[0].decode()
                led = self.ledger
                if self.nack and not self.draining and self.rng.random() < 0.01:
                    ch.basic_nack(method.delivery_tag, requeue=True)
                    led.bump("nacks")
                    continue
                ch.basic_ack(method.delivery_tag)
                with led.lock:
                    led.deliveries += 1
                    if method.redelivered:
                        led.redelivered += 1
                    led.consumed.add(mid)
                if time.monotonic() > until and not self.draining:
                    break      # restart with deliveries still unacked on the wire: they come back
            self.ledger.bump("consumer_restarts")
        finally:
            _close(c)


class RawPublisher(Worker):
    """Publishes in batches over a raw socket, with confirms, written frame by frame."""

    def __init__(self, *a, who=0):
        super().__init__(*a)
        self.who = who
        self.seq = 0

    def work(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        try:
            s.sendall(PROTOCOL_HEADER)
            r = _FrameIn(s)
            r.method(10, 10)
            s.sendall(method_frame(0, M.ConnectionStartOk({"product": "soak-raw"}, "PLAIN", b"\0guest\0guest",
                                                          "en_US").encode()))
            r.method(10, 30)
            s.sendall(method_frame(0, M.ConnectionTuneOk(16, 131072, 0).encode())
                      + method_frame(0, M.ConnectionOpen("/").encode()))
            r.method(10, 41)
            s.sendall(method_frame(1, M.ChannelOpen().encode()) + method_frame(1, M.ConfirmSelect(False).encode()))
            r.method(20, 11)
            r.method(85, 11)
            n = 0
            while not self.stop.is_set() and n < 20:
                ids = []
                out = []
                for _ in range(10):
                    self.seq += 1
                    mid = f"r{self.who}-{self.seq}"
                    ids.append(mid)
                    body = mid.encode() + b" raw"
                    out.append(method_frame(1, M.BasicPublish(0, "", WORK_QUEUES[0], True, False).encode()))
                    out.append(struct.pack(">BHI", 2, 1, 15) + struct.pack(">HHQ", 60, 0, len(body))
                               + b"\x10\x00\x02\xce")      # delivery-mode 2
                    out.append(struct.pack(">BHI", 3, 1, len(body)) + body + b"\xce")
                # trickle the batch in small pieces, splitting frames anywhere
                data = b"".join(out)
                i = 0
                while i < len(data):
                    k = self.rng.randint(1, 300)
                    s.sendall(data[i:i + k])
                    i += k
                want = set(range(r.base + 1, r.base + 11))
                seen = []
                while want:
                    try:
                        cid, mid_, payload = r.method_any()
                    except socket.timeout:
                        raise RuntimeError(f"raw publish: no confirm of tags {sorted(want)} "
                                           f"(confirms seen for the batch: {seen})") from None
                    if (cid, mid_) == (60, 80):        # basic.ack
                        tag, multiple = struct.unpack_from(">QB", payload, 4)
                        seen.append((tag, multiple))
                        if multiple:
                            want = {t for t in want if t > tag}
                        else:
                            want.discard(tag)
                    elif (cid, mid_) == (60, 50):      # basic.return: unroutable (not expected)
                        raise RuntimeError("raw publish returned")
                    elif (cid, mid_) == (60, 120):
                        raise RuntimeError("raw publish nacked")
                r.base += 10
                with self.ledger.lock:
                    self.ledger.published.update(ids)
                self.ledger.bump("raw_batches")
                n += 1
                time.sleep(0.05)
            s.sendall(method_frame(0, M.ConnectionClose(200, "bye", 0, 0).encode()))
            try:
                r.method(10, 51)
            except Exception:
                pass
        finally:
            s.close()


class _FrameIn:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.base = 0

    def frame(self):
        while True:
            if len(self.buf) >= 7:
                t, ch, size = struct.unpack_from(">BHI", self.buf, 0)
                if len(self.buf) >= size + 8:
                    payload = self.buf[7:7 + size]
                    self.buf = self.buf[size + 8:]
                    return t, ch, payload
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("server closed the raw connection")
            self.buf += data

    def method_any(self):
        while True:
            t, _ch, payload = self.frame()
            if t == 1:
                cid, mid = struct.unpack_from(">HH", payload, 0)
                if (cid, mid) == (10, 50):
                    raise ConnectionError(f"server closed: {payload!r}")
                return cid, mid, payload

    def method(self, cid, mid):
        got = self.method_any()
        if got[:2] != (cid, mid):
            raise RuntimeError(f"expected {cid}.{mid}, got {got[0]}.{got[1]}")
        return got[2]


class Churn(Worker):
    def work(self):
        while not self.stop.is_set():
            k = self.rng.random()
            if k < 0.3:
                c = pika.BlockingConnection(params(self.port))
                ch = c.channel()
                if self.rng.random() < 0.5:
                    q = ch.queue_declare("", exclusive=True).method.queue
                    ch.basic_publish("", q, b"gone with the connection")
                    self.ledger.bump("exclusive_dropped")
                c.close()
                self.ledger.bump("pika_churn")
            elif k < 0.55:
                s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                s.close()
                self.ledger.bump("tcp_churn")
            elif k < 0.8:
                s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                s.sendall(PROTOCOL_HEADER)
                s.recv(4096)
                s.close()
                self.ledger.bump("header_churn")
            else:
                s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                s.sendall(PROTOCOL_HEADER)
                r = _FrameIn(s)
                r.method(10, 10)
                s.sendall(method_frame(0, M.ConnectionStartOk({}, "PLAIN", b"\0guest\0guest", "en_US").encode()))
                r.method(10, 30)
                s.sendall(method_frame(0, M.ConnectionTuneOk(2047, 131072, 0).encode())
                          + method_frame(0, M.ConnectionOpen("/").encode())
                          + method_frame(1, M.ChannelOpen().encode()))
                r.method(10, 41)
                s.close()      # dropped without connection.close
                self.ledger.bump("drop_churn")
            time.sleep(self.rng.uniform(0.02, 0.2))


class QueueChurn(Worker):
    def work(self):
        c = pika.BlockingConnection(params(self.port))
        try:
            ch = c.channel()
            n = 0
            while not self.stop.is_set():
                n += 1
                q = f"soak-tmp-{self.name}-{n}"
                ch.queue_declare(q, durable=self.rng.random() < 0.3, arguments={"x-max-length": 100})
                self.ledger.bump("queues_created")
                ch.queue_bind(q, "amq.topic", f"soak.{n}.#")
                for i in range(5):
                    ch.basic_publish("amq.topic", f"soak.{n}.x", b"tmp %d" % i)
                got = 0
                deadline = time.monotonic() + 5
                while got < 5 and time.monotonic() < deadline:
                    m, _p, _b = ch.basic_get(q, auto_ack=True)
                    if m is None:
                        time.sleep(0.01)
                    else:
                        got += 1
                ch.queue_delete(q)
                self.ledger.bump("queues_deleted")
                if got != 5:
                    raise RuntimeError(f"queue churn: {got} of 5 messages came back from {q}")
                time.sleep(self.rng.uniform(0.05, 0.3))
        finally:
            _close(c)


def _close(c):
    try:
        if c.is_open:
            c.close()
    except Exception:
        pass


# ---------------------------------------------------------------------------------------- the run
def run(seconds: float, interval: float = 5.0, server_args=(), publishers: int = 2, pace: float = 0.0,
        log=print, seed: int = 1, port: int | None = None, pid: int | None = None) -> dict:
    server = None
    if port is None:
        server = Server(server_args).start()
        port, pid = server.port, server.pid
    ledger = Ledger()
    stop_pub = threading.Event()
    stop_rest = threading.Event()
    samples = []
    try:
        setup_queues(port)
        workers = [Publisher(f"pub{i}", port, ledger, stop_pub, seed * 100 + i, who=i, pace=pace)
                   for i in range(publishers)]
        workers.append(RawPublisher("raw", port, ledger, stop_pub, seed * 100 + 50, who=0))
        consumers = []
        for i, q in enumerate(WORK_QUEUES):
            for j in range(2):
                consumers.append(Consumer(f"con-{q}-{j}", port, ledger, stop_rest, seed * 100 + 60 + i * 2 + j,
                                          queue=q, restart_every=min(20.0, max(3.0, seconds / 6)),
                                          nack=not q.endswith("-q")))
        workers += consumers
        workers.append(Churn("churn", port, ledger, stop_rest, seed * 100 + 90))
        workers.append(QueueChurn("qchurn", port, ledger, stop_rest, seed * 100 + 91))
        t0 = time.monotonic()
        samples.append((0.0, rss_bytes(pid), fd_count(pid)))
        for w in workers:
            w.start()
        next_sample = t0 + interval
        while time.monotonic() - t0 < seconds:
            time.sleep(max(0.0, min(next_sample, t0 + seconds) - time.monotonic()))
            now = time.monotonic()
            if now >= next_sample:
                s = (now - t0, rss_bytes(pid), fd_count(pid))
                samples.append(s)
                next_sample += interval
                with ledger.lock:
                    pub, con = len(ledger.published), len(ledger.consumed)
                log(f"[{s[0]:7.1f}s] rss {s[1] / 1e6:7.1f} MB  fds {s[2]:4d}  published {pub}  consumed {con}  "
                    f"errors {len(ledger.errors)}")
        # stop producing (a publish under way still completes and counts), then let the consumers
        # drain what was confirmed
        stop_pub.set()
        for w in workers:
            if isinstance(w, (Publisher, RawPublisher)):
                w.join(60)
        for c in consumers:
            c.draining = True
        drain_deadline = time.monotonic() + 60 + seconds * 0.05
        while time.monotonic() < drain_deadline:
            with ledger.lock:
                missing = len(ledger.published - ledger.consumed)
            if missing == 0:
                break
            time.sleep(0.5)
        stop_rest.set()
        for w in workers:
            w.join(15)
        elapsed = time.monotonic() - t0
        samples.append((elapsed, rss_bytes(pid), fd_count(pid)))
        with ledger.lock:
            lost = sorted(ledger.published - ledger.consumed)
            unexpected = sorted(ledger.consumed - ledger.published)
            res = {
                "seconds": round(elapsed, 1),
                "published": len(ledger.published),
                "consumed": len(ledger.consumed),
                "deliveries": ledger.deliveries,
                "redelivered": ledger.redelivered,
                "lost": len(lost),
                "lost_sample": lost[:20],
                "unexpected": len(unexpected),
                "unexpected_sample": unexpected[:20],
                "counts": dict(ledger.counts),
                "client_errors": list(ledger.errors),
            }
        warm = [s for s in samples if s[0] >= min(60.0, elapsed * 0.2)] or samples
        res.update({
            "rss_start": samples[0][1], "rss_after_warmup": warm[0][1], "rss_end": samples[-1][1],
            "rss_max": max(s[1] for s in samples),
            "fds_start": samples[0][2], "fds_end": samples[-1][2], "fds_max": max(s[2] for s in samples),
            "rss_slope_mb_per_hour": round(slope([(s[0], s[1]) for s in warm]) * 3600 / 1e6, 2),
            "fds_slope_per_hour": round(slope([(s[0], s[2]) for s in warm]) * 3600, 2),
            "samples": [(round(t, 1), r, f) for t, r, f in samples],
        })
        if server is not None:
            log_text = "".join(server.lines)
            res["server_tracebacks"] = log_text.count("Traceback")
            res["server_internal_errors"] = log_text.count("internal error")
            res["server_alive"] = server.proc.poll() is None
        return res
    finally:
        stop_pub.set()
        stop_rest.set()
        if server is not None:
            server.stop()


def summary(res: dict) -> str:
    lines = [
        f"ran {res['seconds']} s: published {res['published']} (confirmed), consumed {res['consumed']} unique "
        f"({res['deliveries']} deliveries acked, {res['redelivered']} redelivered), lost {res['lost']}, "
        f"unexpected {res['unexpected']}",
        f"RSS start {res['rss_start'] / 1e6:.1f} MB, after warm-up {res['rss_after_warmup'] / 1e6:.1f} MB, "
        f"end {res['rss_end'] / 1e6:.1f} MB, max {res['rss_max'] / 1e6:.1f} MB; trend "
        f"{res['rss_slope_mb_per_hour']:+.2f} MB/hour",
        f"fds start {res['fds_start']}, end {res['fds_end']}, max {res['fds_max']}; trend "
        f"{res['fds_slope_per_hour']:+.2f}/hour",
        "churn: " + ", ".join(f"{k} {v}" for k, v in res["counts"].items()),
        f"client-side errors (reconnected): {len(res['client_errors'])}; server tracebacks: "
        f"{res.get('server_tracebacks', '?')}, internal errors: {res.get('server_internal_errors', '?')}",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--seconds", type=float, help="run time in seconds (overrides --minutes)")
    ap.add_argument("--interval", type=float, default=5.0, help="sampling interval, seconds (default 5)")
    ap.add_argument("--publishers", type=int, default=2)
    ap.add_argument("--pace", type=float, default=0.0, help="sleep between publishes of one publisher")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--server-arg", action="append", default=[], help="extra usagi-server argument")
    ap.add_argument("--json", help="write the full result here")
    a = ap.parse_args(argv)
    import signal

    def _term(*_):
        raise KeyboardInterrupt       # so that the server it started is stopped too
    signal.signal(signal.SIGTERM, _term)
    seconds = a.seconds if a.seconds is not None else a.minutes * 60
    res = run(seconds, a.interval, a.server_arg, a.publishers, a.pace, seed=a.seed,
              log=lambda s: print(s, flush=True))
    print(summary(res), flush=True)
    for e in res["client_errors"][:20]:
        print("  client error:", e)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    return 1 if res["lost"] or not res.get("server_alive", True) else 0


if __name__ == "__main__":
    sys.exit(main())
