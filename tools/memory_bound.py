"""Measure the memory a server holds with long queues of every kind, with and without a consumer
holding many unacknowledged deliveries.

    python tools/memory_bound.py [--messages 1000000] [--size 1024] [--unacked 100000]
                                 [--cases plain,ttl,maxlen,priority,stream] [--data-dir]

For each case a fresh `usagi-server` (in memory, unless --data-dir: then with a data directory,
messages persistent and queues durable) gets one queue: plain, with a TTL (x-message-ttl one hour,
so nothing expires meanwhile), with a length limit (x-max-length equal to the number of messages),
with priorities (x-max-priority 10, priorities spread over the levels) or a stream. It is filled
with N messages of SIZE bytes with no consumer; then a consumer with a prefetch of UNACKED takes
that many deliveries and holds them unacknowledged. After each phase the tool prints the server's
RSS and peak RSS (VmHWM), and what its management API says: mem_used (the figure the memory
alarm compares with its limit) and the queue's messages_ram and messages_paged_out. The last line
checks every case against the plain queue's figure: RSS within the plain queue's plus a margin
(--margin, default 10% plus 16 MiB).

The publisher and consumer speak AMQP over a raw socket (pre-encoded frames, pipelined), so that
filling a queue with a million messages takes seconds, not minutes.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from usagi.amqp import methods as M  # noqa: E402
from usagi.amqp import properties as P  # noqa: E402
from usagi.amqp.frames import PROTOCOL_HEADER, method_frame  # noqa: E402

CASES = {
    "plain": {},
    "ttl": {"x-message-ttl": 3_600_000},
    "maxlen": None,                 # x-max-length: the number of messages (set below)
    "priority": {"x-max-priority": 10},
    "stream": {"x-queue-type": "stream"},
}


def status(pid: int) -> tuple:
    """(RSS, peak RSS) of a process in bytes."""
    rss = hwm = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM"):
                hwm = int(line.split()[1]) * 1024
    return rss, hwm


def mb(n) -> str:
    return f"{n / 2**20:.0f} MiB" if n is not None else "-"


class Raw:
    """Just enough AMQP over a socket: handshake, one channel, methods, pipelined publishes, and
    counting deliveries."""

    def __init__(self, host: str, port: int):
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.sock.sendall(PROTOCOL_HEADER)
        self.expect(10, 10)
        self.send(0, M.ConnectionStartOk({}, "PLAIN", b"\x00guest\x00guest", "en_US"))
        self.expect(10, 30)
        self.send(0, M.ConnectionTuneOk(2047, 131072, 0))
        self.send(0, M.ConnectionOpen("/"))
        self.expect(10, 41)
        self.send(1, M.ChannelOpen())
        self.expect(20, 11)

    def send(self, ch: int, method):
        self.sock.sendall(method_frame(ch, method.encode()))

    def frames(self):
        """Frames as they arrive: (type, channel, payload)."""
        while True:
            while len(self.buf) >= 7:
                t, ch, size = struct.unpack_from(">BHI", self.buf, 0)
                if len(self.buf) < size + 8:
                    break
                payload = self.buf[7:7 + size]
                self.buf = self.buf[size + 8:]
                yield t, ch, payload
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("closed by the server")
            self.buf += data

    def expect(self, cls: int, mid: int) -> bytes:
        for t, _ch, payload in self.frames():
            if t == 1:
                c, m = struct.unpack_from(">HH", payload, 0)
                if (c, m) == (cls, mid):
                    return payload
                if (c, m) in ((10, 50), (20, 40)):
                    raise ConnectionError(f"closed: {payload[4:]!r}")

    def declare(self, name: str, args: dict, durable: bool, passive: bool = False) -> int:
        self.send(1, M.QueueDeclare(0, name, passive, durable, False, False, False, args))
        payload = self.expect(50, 11)
        n = payload[4]
        return struct.unpack_from(">I", payload, 5 + n)[0]

    def publish_all(self, name: str, n: int, size: int, props_for, sync_every: int = 20000):
        """n messages, pipelined; every sync_every a queue.declare round trip bounds what is in flight."""
        body = b"x" * size
        head = method_frame(1, M.BasicPublish(0, "", name, False, False).encode())
        body_frame = struct.pack(">BHI", 3, 1, size) + body + b"\xce"
        cache = {}
        chunk = []
        for i in range(n):
            props = props_for(i)
            hdr = cache.get(props)
            if hdr is None:
                hdr = cache[props] = (struct.pack(">BHI", 2, 1, 12 + len(props)) +
                                      struct.pack(">HHQ", 60, 0, size) + props + b"\xce")
            chunk.append(head + hdr + body_frame)
            if len(chunk) >= 512:
                self.sock.sendall(b"".join(chunk))
                chunk = []
            if (i + 1) % sync_every == 0:
                if chunk:
                    self.sock.sendall(b"".join(chunk))
                    chunk = []
                self.declare(name, {}, False, passive=True)
        if chunk:
            self.sock.sendall(b"".join(chunk))
        self.declare(name, {}, False, passive=True)

    def hold(self, name: str, count: int, args: dict) -> int:
        """Take `count` deliveries and hold them unacknowledged: consumers with a prefetch (a 16-bit
        field, so several consumers for more than 65535) that add up to `count`."""
        n = -(-count // 50000)
        each = -(-count // n)
        self.send(1, M.BasicQos(0, each, False))
        self.expect(60, 11)
        for k in range(n):
            self.send(1, M.BasicConsume(0, name, f"holder-{k}", False, False, False, False, args))
        got = 0
        deadline = time.monotonic() + 600
        for t, _ch, payload in self.frames():
            if t == 1 and payload[:4] == b"\x00\x3c\x00\x3c":
                got += 1
                if got >= count:
                    return got
            if time.monotonic() > deadline:
                return got

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def api(port: int, path: str):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    req.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def start_server(data_dir: str | None, env: dict) -> tuple:
    args = [sys.executable, "-m", "usagi.cli.server", "--host", "127.0.0.1", "--port", "0",
            "--management-port", "0", "--metrics-port", "0"]
    tmp = None
    if data_dir:
        args += ["--data-dir", data_dir]
    else:
        tmp = tempfile.mkdtemp(prefix="usagi-membound-")
        args += ["--in-memory", "--data-dir", tmp]
    e = dict(os.environ)
    e["PYTHONPATH"] = ROOT + os.pathsep + e.get("PYTHONPATH", "")
    e.update(env)
    p = subprocess.Popen(args + ["--log-level", "info"], cwd=ROOT, env=e, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    amqp = mgmt = None
    for line in p.stdout:
        m = re.search(r"AMQP listener on \S+:(\d+)", line)
        if m:
            amqp = int(m.group(1))
        m = re.search(r"Management listener on \S+:(\d+)", line)
        if m:
            mgmt = int(m.group(1))
        if amqp and mgmt:
            break
    threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()    # keep the pipe drained
    return p, amqp, mgmt, tmp


def figures(p, mgmt: int, qname: str) -> dict:
    time.sleep(3.0)                    # a pass or two of the memory accounting
    rss, hwm = status(p.pid)
    out = {"rss": rss, "hwm": hwm}
    try:
        out["mem_used"] = api(mgmt, "/api/nodes")[0]["mem_used"]
        qj = api(mgmt, "/api/queues/%2F/" + qname)
        out.update({k: qj.get(k) for k in ("messages", "messages_ram", "messages_paged_out",
                                           "messages_unacknowledged", "messages_unacknowledged_ram")})
    except Exception as e:            # the figures of /proc still stand
        out["api_error"] = str(e)
    return out


def run_case(case: str, a) -> dict:
    args = {"x-max-length": a.messages} if case == "maxlen" else dict(CASES[case])
    durable = case == "stream" or a.data_dir
    persistent = bool(a.data_dir)
    data_dir = tempfile.mkdtemp(prefix="usagi-membound-data-") if a.data_dir else None
    p, amqp, mgmt, tmp = start_server(data_dir, {})
    try:
        time.sleep(1.0)
        idle = status(p.pid)[0]
        c = Raw("127.0.0.1", amqp)
        name = f"mb-{case}"
        c.declare(name, args, durable)
        dm = {"delivery_mode": 2} if persistent else {}
        plain_props = P.encode(dm) if dm else b"\x00\x00"
        prio_props = [P.encode({**dm, "priority": k}) for k in range(11)]

        def props_for(i):
            return prio_props[i % 11] if case == "priority" else plain_props
        t = time.monotonic()
        c.publish_all(name, a.messages, a.size, props_for)
        filled = time.monotonic() - t
        full = figures(p, mgmt, name)
        h = Raw("127.0.0.1", amqp)
        t = time.monotonic()
        got = h.hold(name, a.unacked, {"x-stream-offset": "first"} if case == "stream" else {})
        held_t = time.monotonic() - t
        held = figures(p, mgmt, name)
        h.close()
        c.close()
        return {"case": case, "idle": idle, "filled_s": filled, "full": full, "held": held, "got": got,
                "held_s": held_t}
    finally:
        p.terminate()
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()
        for d in (tmp, data_dir):
            if d:
                shutil.rmtree(d, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--unacked", type=int, default=100_000)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--data-dir", action="store_true", help="durable queues, persistent messages, a data dir")
    ap.add_argument("--margin", type=float, default=0.10, help="allowed excess over the plain queue, a fraction")
    a = ap.parse_args()
    results = []
    print(f"{a.messages} messages of {a.size} B per queue, then a consumer holding {a.unacked} unacked"
          f"{' (persistent, durable, with a data dir)' if a.data_dir else ' (in memory)'}")
    print(f"{'case':9} {'phase':7} {'RSS':>9} {'peak':>9} {'mem_used':>9} {'in RAM':>8} {'paged':>8} "
          f"{'unacked':>8} {'in RAM':>7}")
    for case in a.cases.split(","):
        r = run_case(case, a)
        results.append(r)
        for phase in ("full", "held"):
            f = r[phase]
            print(f"{case:9} {phase:7} {mb(f['rss']):>9} {mb(f['hwm']):>9} {mb(f.get('mem_used')):>9} "
                  f"{f.get('messages_ram', '-'):>8} {f.get('messages_paged_out', '-'):>8} "
                  f"{f.get('messages_unacknowledged', '-'):>8} {f.get('messages_unacknowledged_ram', '-'):>7}",
                  flush=True)
        print(f"{'':9} (idle RSS {mb(r['idle'])}; filled in {r['filled_s']:.1f} s; {r['got']} deliveries held "
              f"after {r['held_s']:.1f} s)", flush=True)
    plain = next((r for r in results if r["case"] == "plain"), None)
    if plain is None:
        return 0
    ok = True
    for phase in ("full", "held"):
        bound = plain[phase]["rss"] * (1 + a.margin) + 16 * 2**20
        for r in results:
            within = r[phase]["rss"] <= bound
            ok &= within
            if not within:
                print(f"{r['case']} {phase}: RSS {mb(r[phase]['rss'])} above the plain queue's bound {mb(bound)}")
        print(f"bound ({phase}): the plain queue's RSS {mb(plain[phase]['rss'])} + {a.margin:.0%} + 16 MiB = "
              f"{mb(bound)}: {'all within' if ok else 'EXCEEDED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
