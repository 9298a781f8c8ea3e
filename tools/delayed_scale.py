#!/usr/bin/env python3
"""Scale test for x-delayed-message: many delayed messages, server memory while they wait, lateness.

Starts a Usagi server of its own (python -m usagi.cli.server --port 0 --data-dir TMP), declares
an x-delayed-message exchange (x-delayed-type direct) bound to one queue, and publishes N small
messages (publisher confirms, in batches) whose x-delay is spread uniformly between --min-delay
and --max-delay. While they wait it samples the server's RSS (/proc/PID/status VmRSS); a consumer
process (no-ack) takes them as they fall due and records each one's lateness:

    lateness = arrival time - publish time - x-delay        (wall clock, same host)

The publish time is the client's send time, so lateness includes the publish's trip into the
server. Prints a JSON report (also written with --json).

    python tools/delayed_scale.py                            # 1,000,000 messages, 30-90 s
    python tools/delayed_scale.py -n 100000 --min-delay 5000 --max-delay 15000

The AMQP client here is a minimal one of its own (raw frames) so that publishing a million
messages from Python takes tens of seconds rather than minutes.
"""
from __future__ import annotations

import argparse
import array
import json
import multiprocessing as mp
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
LISTENER_RE = re.compile(r"AMQP listener on (\S+):(\d+)")
FRAME_END = b"\xce"


# ------------------------------------------------------------------------------ wire encoding
def shortstr(s) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return bytes([len(b)]) + b


def longstr(s) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">I", len(b)) + b


def table(d: dict) -> bytes:
    out = b""
    for k, v in d.items():
        out += shortstr(k)
        if isinstance(v, bool):
            out += b"t" + bytes([v])
        elif isinstance(v, int):
            out += b"l" + struct.pack(">q", v)
        else:
            out += b"S" + longstr(v)
    return struct.pack(">I", len(out)) + out


def frame(ftype: int, channel: int, payload: bytes) -> bytes:
    return struct.pack(">BHI", ftype, channel, len(payload)) + payload + FRAME_END


def method(channel: int, cls: int, mid: int, args: bytes = b"") -> bytes:
    return frame(1, channel, struct.pack(">HH", cls, mid) + args)


class Conn:
    """Just enough AMQP 0-9-1 for this tool."""

    def __init__(self, host: str, port: int):
        self.sock = socket.create_connection((host, port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.sock.sendall(b"AMQP\x00\x00\x09\x01")
        self.expect(10, 10)
        self.sock.sendall(method(0, 10, 11, table({}) + shortstr("PLAIN") +
                                 longstr(b"\x00guest\x00guest") + shortstr("en_US")))
        _, _, args = self.expect(10, 30)
        channel_max, frame_max, _hb = struct.unpack(">HIH", args[:8])
        self.frame_max = frame_max
        self.sock.sendall(method(0, 10, 31, struct.pack(">HIH", channel_max, frame_max, 0)))
        self.sock.sendall(method(0, 10, 40, shortstr("/") + shortstr("") + b"\x00"))
        self.expect(10, 41)
        self.sock.sendall(method(1, 20, 10, shortstr("")))
        self.expect(20, 11)

    def fill(self, n: int = 1 << 20) -> None:
        data = self.sock.recv(n)
        if not data:
            raise ConnectionError("server closed the connection")
        self.buf += data

    def frames(self):
        """Complete frames in the buffer: (type, channel, payload); reads more as needed."""
        while True:
            buf = self.buf
            pos, end = 0, len(buf)
            out = []
            while end - pos >= 7:
                ftype, ch, size = struct.unpack_from(">BHI", buf, pos)
                if end - pos < size + 8:
                    break
                out.append((ftype, ch, bytes(buf[pos + 7:pos + 7 + size])))
                pos += size + 8
            del buf[:pos]
            if out:
                return out
            self.fill()

    def expect(self, cls: int, mid: int):
        while True:
            for ftype, ch, payload in self.frames():
                if ftype != 1:
                    continue
                c, m = struct.unpack_from(">HH", payload)
                if (c, m) == (cls, mid):
                    return ch, (c, m), payload[4:]
                if (c, m) in ((10, 50), (20, 40)):
                    code = struct.unpack_from(">H", payload, 4)[0]
                    text = payload[7:7 + payload[6]].decode()
                    raise RuntimeError(f"closed by server: {code} {text}")

    def call(self, cls: int, mid: int, args: bytes):
        self.sock.sendall(method(1, cls, mid, args))
        return self.expect(cls, mid + 1)


# ------------------------------------------------------------------------------ the server
class Server:
    def __init__(self, data_dir: str, extra: list):
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        self.cmd = [sys.executable, "-m", "usagi.cli.server", "--host", "127.0.0.1", "--port", "0",
                    "--data-dir", data_dir, "--no-management", *extra]
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=env, cwd=ROOT)
        self.lines: list = []
        self.port = None
        ready = threading.Event()

        def pump():
            for line in self.proc.stdout:
                self.lines.append(line)
                m = LISTENER_RE.search(line)
                if m and self.port is None:
                    self.port = int(m.group(2))
                    ready.set()
        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(60):
            self.proc.kill()
            raise RuntimeError("server did not start:\n" + "".join(self.lines))

    def rss_kib(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ------------------------------------------------------------------------------ phases
def setup(port: int, exchange: str, queue: str):
    c = Conn("127.0.0.1", port)
    c.call(40, 10, struct.pack(">H", 0) + shortstr(exchange) + shortstr("x-delayed-message") +
           b"\x02" + table({"x-delayed-type": "direct"}))                 # durable
    c.call(50, 10, struct.pack(">H", 0) + shortstr(queue) + b"\x02" + table({}))
    c.call(50, 20, struct.pack(">H", 0) + shortstr(queue) + shortstr(exchange) + shortstr("k") +
           b"\x00" + table({}))
    c.sock.close()


def publish(port: int, exchange: str, n: int, lo: int, hi: int, body_size: int, batch: int,
            seed: int) -> dict:
    c = Conn("127.0.0.1", port)
    c.call(85, 10, b"\x00")                                    # confirm.select
    rnd = random.Random(seed)
    pub = struct.pack(">HH", 60, 40) + struct.pack(">H", 0) + shortstr(exchange) + shortstr("k") + b"\x00"
    pub_frame = frame(1, 1, pub)
    X_DELAY = shortstr("x-delay") + b"I"
    HEADERS_FLAG = struct.pack(">H", 0x2000)
    pad = b"." * max(0, body_size - 12)
    body_len = 12 + len(pad)
    seq = 0
    nacks = 0
    t0 = time.time()
    sent = 0
    while sent < n:
        k = min(batch, n - sent)
        parts = []
        for _ in range(k):
            delay = rnd.randint(lo, hi)
            now_ms = int(time.time() * 1000)
            entries = X_DELAY + struct.pack(">i", delay)         # headers = {"x-delay": delay}
            props = HEADERS_FLAG + struct.pack(">I", len(entries)) + entries
            header = struct.pack(">HHQ", 60, 0, body_len) + props
            parts.append(pub_frame)
            parts.append(frame(2, 1, header))
            parts.append(frame(3, 1, struct.pack(">qi", now_ms, delay) + pad))
        c.sock.sendall(b"".join(parts))
        sent += k
        target = seq + k
        confirmed = seq
        while confirmed < target:
            for ftype, ch, payload in c.frames():
                if ftype != 1:
                    continue
                cls, mid = struct.unpack_from(">HH", payload)
                if cls == 60 and mid in (80, 120):
                    tag = struct.unpack_from(">Q", payload, 4)[0]
                    multiple = payload[12] & 1
                    if mid == 120:
                        nacks += (tag - confirmed) if multiple else 1
                    confirmed = max(confirmed, tag)
                elif (cls, mid) in ((10, 50), (20, 40)):
                    raise RuntimeError("closed by server during publish")
        seq = target
    t1 = time.time()
    c.sock.close()
    return {"published": n, "nacked": nacks, "seconds": round(t1 - t0, 2),
            "rate_per_s": round(n / (t1 - t0)), "t_start": t0, "t_end": t1}


def consume(port: int, queue: str, n: int, deadline: float, out_path: str, ready):
    """Consumer process: records lateness (ms) of each delivery into out_path (array of int32)."""
    c = Conn("127.0.0.1", port)
    c.call(60, 20, struct.pack(">H", 0) + shortstr(queue) + shortstr("scale") + b"\x02" + table({}))
    ready.set()
    late = array.array("i")
    arrived = array.array("q")         # arrival wall-clock ms of each
    first = last = None
    got = 0
    want_body = False
    while got < n and time.time() < deadline:
        c.sock.settimeout(max(0.1, deadline - time.time()))
        try:
            frames = c.frames()
        except socket.timeout:
            break
        now_ms = int(time.time() * 1000)
        for ftype, ch, payload in frames:
            if ftype == 3 and want_body:
                pub_ms, delay = struct.unpack_from(">qi", payload)
                late.append(now_ms - pub_ms - delay)
                arrived.append(now_ms)
                got += 1
                want_body = False
                if first is None:
                    first = now_ms
                last = now_ms
            elif ftype == 1 and payload[:4] == b"\x00\x3c\x00\x3c":      # basic.deliver
                want_body = True
    with open(out_path, "wb") as f:
        late.tofile(f)
    with open(out_path + ".arrived", "wb") as f:
        arrived.tofile(f)
    with open(out_path + ".json", "w") as f:
        json.dump({"received": got, "first_ms": first, "last_ms": last}, f)
    c.sock.close()


def percentile(sorted_vals, p):
    if not sorted_vals:
        return None
    i = min(len(sorted_vals) - 1, max(0, int(round(p / 100.0 * (len(sorted_vals) - 1)))))
    return sorted_vals[i]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--messages", type=int, default=1_000_000)
    ap.add_argument("--min-delay", type=int, default=30_000, help="ms (default 30000)")
    ap.add_argument("--max-delay", type=int, default=90_000, help="ms (default 90000)")
    ap.add_argument("--body-size", type=int, default=16, help="bytes (at least 12)")
    ap.add_argument("--batch", type=int, default=2000, help="messages per confirm round trip")
    ap.add_argument("--sample-interval", type=float, default=0.5, help="RSS sampling period, s")
    ap.add_argument("--grace", type=float, default=120.0, help="s to wait past the last due time")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--data-dir", help="server data dir (default: a temporary one, removed after)")
    ap.add_argument("--server-arg", action="append", default=[], help="extra server argument (repeat)")
    ap.add_argument("--json", help="also write the report here")
    args = ap.parse_args(argv)

    data_dir = args.data_dir or tempfile.mkdtemp(prefix="usagi-delayed-scale-")
    server = Server(data_dir, args.server_arg)
    samples: list = []            # (t, rss_kib)
    depths: list = []             # (t, ready messages in the queue): released but not yet delivered
    stop = threading.Event()

    def sampler():
        while not stop.is_set():
            try:
                samples.append((time.time(), server.rss_kib()))
            except OSError:
                return
            stop.wait(args.sample_interval)

    def depth_sampler():
        c = Conn("127.0.0.1", server.port)
        while not stop.is_set():
            _, _, ok = c.call(50, 10, struct.pack(">H", 0) + shortstr("scale.q") + b"\x01" + table({}))
            qlen = ok[0]
            depths.append((time.time(), struct.unpack_from(">I", ok, 1 + qlen)[0]))
            stop.wait(args.sample_interval)
        c.sock.close()
    try:
        setup(server.port, "scale.delayed", "scale.q")
        time.sleep(1.0)
        baseline = server.rss_kib()
        threading.Thread(target=sampler, daemon=True).start()
        threading.Thread(target=depth_sampler, daemon=True).start()
        ctx = mp.get_context("fork")
        ready = ctx.Event()
        lat_path = os.path.join(tempfile.mkdtemp(prefix="usagi-delayed-lat-"), "lateness.bin")
        n = args.messages
        # generous: publishing itself may take a while; the consumer stops at this deadline
        deadline_guess = time.time() + args.max_delay / 1000 + args.grace + n / 5000
        consumer = ctx.Process(target=consume, args=(server.port, "scale.q", n, deadline_guess, lat_path,
                                                     ready))
        consumer.start()
        ready.wait(30)
        cpu0 = server.cpu_seconds()
        pub = publish(server.port, "scale.delayed", n, args.min_delay, args.max_delay, args.body_size,
                      args.batch, args.seed)
        rss_after_publish = server.rss_kib()
        cpu_publish = server.cpu_seconds() - cpu0
        db = os.path.join(data_dir, "delayed.db")
        db_bytes = sum(os.path.getsize(p) for p in (db, db + "-wal") if os.path.exists(p))
        consumer.join(max(1.0, deadline_guess - time.time() + 5))
        if consumer.is_alive():
            consumer.terminate()
            consumer.join()
        stop.set()
        rss_end = server.rss_kib()
        db_bytes_end = sum(os.path.getsize(p) for p in (db, db + "-wal") if os.path.exists(p))
        cpu_total = server.cpu_seconds() - cpu0
        late = array.array("i")
        with open(lat_path, "rb") as f:
            late.frombytes(f.read())
        arrived = array.array("q")
        with open(lat_path + ".arrived", "rb") as f:
            arrived.frombytes(f.read())
        with open(lat_path + ".json") as f:
            cinfo = json.load(f)
        shutil.rmtree(os.path.dirname(lat_path), ignore_errors=True)
    finally:
        stop.set()
        server.stop()
        if not args.data_dir:
            shutil.rmtree(data_dir, ignore_errors=True)

    t_pub_end = pub["t_end"]
    first_due = pub["t_start"] + args.min_delay / 1000
    waiting = [r for t, r in samples if t_pub_end <= t <= max(first_due, t_pub_end)]
    during_publish = [r for t, r in samples if pub["t_start"] <= t <= t_pub_end]
    peak = max([r for _, r in samples] + [rss_after_publish])
    wait_peak = max(waiting + [rss_after_publish])
    vals = sorted(late)

    def summary(xs):
        xs = sorted(xs)
        return {"count": len(xs), "p50": percentile(xs, 50), "p99": percentile(xs, 99),
                "max": xs[-1] if xs else None}
    end_ms = pub["t_end"] * 1000
    by_phase = {
        "due_while_publishing": summary([v for v, a in zip(late, arrived) if a - v < end_ms]),
        "due_after_publishing": summary([v for v, a in zip(late, arrived) if a - v >= end_ms]),
    }
    start_ms = pub["t_start"] * 1000
    buckets: dict = {}
    for v, a in zip(late, arrived):          # by due time, 10 s buckets from the publish start
        buckets.setdefault(int((a - v - start_ms) // 10000) * 10, []).append(v)
    by_due = {f"{k}-{k + 10}s": summary(vs) for k, vs in sorted(buckets.items())}
    report = {
        "command": " ".join([os.path.relpath(sys.argv[0], ROOT)] + (argv if argv is not None else sys.argv[1:])),
        "messages": n, "x_delay_ms": [args.min_delay, args.max_delay], "body_bytes": max(12, args.body_size),
        "publish": {k: v for k, v in pub.items() if not k.startswith("t_")},
        "server_rss_mib": {
            "baseline": round(baseline / 1024, 1),
            "peak_during_publish": round(max(during_publish + [baseline]) / 1024, 1),
            "after_publish": round(rss_after_publish / 1024, 1),
            "peak_while_waiting": round(wait_peak / 1024, 1),
            "peak_overall": round(peak / 1024, 1),
            "after_all_delivered": round(rss_end / 1024, 1),
        },
        "rss_growth_bytes_per_delayed_message": round((wait_peak - baseline) * 1024 / n, 1),
        "delayed_db_bytes_after_publish": db_bytes,
        "delayed_db_bytes_after_delivery": db_bytes_end,
        "server_cpu_s": {"publish": round(cpu_publish, 1), "total": round(cpu_total, 1)},
        "delivered": cinfo["received"],
        "lateness_ms": {
            "p50": percentile(vals, 50), "p99": percentile(vals, 99), "p999": percentile(vals, 99.9),
            "max": vals[-1] if vals else None, "min": vals[0] if vals else None,
            "early_count": sum(1 for v in vals if v < 0),
        },
        "lateness_by_phase_ms": by_phase,
        "lateness_by_due_time_ms": by_due,
        "delivery_window_s": (round((cinfo["last_ms"] - cinfo["first_ms"]) / 1000, 1)
                              if cinfo["first_ms"] else None),
        "queue_depth_max": max([d for _, d in depths] + [0]),
        "queue_depth_samples": [(round(t - pub["t_start"], 1), d) for t, d in depths[::max(1, len(depths) // 40)]],
        "rss_samples_mib": [(round(t - pub["t_start"], 1), round(r / 1024, 1)) for t, r in samples[::max(1, len(samples) // 40)]],
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    return 0 if cinfo["received"] == n else 1


if __name__ == "__main__":
    sys.exit(main())
