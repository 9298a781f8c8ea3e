"""Where the end-to-end latency of the e10k scenario goes: the load generator, the kernel and Usagi.

    python benchmarks/latency_breakdown.py [--rate 10000] [--runs 1] [--bench-dir ../shared/bench]
    python benchmarks/latency_breakdown.py --wakeup         # the kernel alone: loopback TCP wake-ups

The first form starts Usagi with timing hooks (this script, re-run with --serve), runs the
load generator's fixed-rate latency scenario against it (`amqp_bench.py -s 16 --rate R --latency
--prefetch 100`, as compare.py's e10k) and prints, besides the generator's end-to-end figures, per
read of a batch of publishes:

- arrive: from the producer's timestamp (the first 8 bytes of the body, taken just before its
  write) to the start of Usagi's handling of the read: the producer's write, the kernel's
  loopback delivery, the wake-up of the broker's thread and the event loop's dispatch;
- handle: Usagi's handling of the read (parse, route, deliver into the consumer's output buffer),
  wall time and CPU time of the thread;
- to flush: from the end of the read's handling to the start of the write to the consumer;
- write: the write to the consumer's socket (Connection.flush), which in the kernel also wakes the
  consumer.

The second form measures, with no broker, what a 1 KiB write over loopback TCP costs and how long
the reader takes to see it, with writer and reader pinned to the same CPU and to different CPUs:
on a virtual machine a wake-up across CPUs can cost several times one on the same CPU, and every
broker pays it twice per message (producer to broker, broker to consumer).

The hooks wrap methods (Connection.data_received, Connection.flush, Broker.flush_output) and add
a few microseconds per read; the figures are for finding where time goes, not for comparison
with other brokers (compare.py is for that).
"""
from __future__ import annotations

import argparse
import array
import atexit
import bisect
import json
import os
import resource
import socket
import struct
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BODY_FRAME_16 = b"\x03\x00\x01\x00\x00\x00\x10"     # a 16-byte body frame on channel 1
FIELDS = 6                                           # per read: stamp, start, end, cpu, preempted, publishes


def serve(argv, out_path):
    """Usagi's server with the hooks; the records are written to out_path when it stops."""
    sys.path.insert(0, REPO)
    from usagi.cli.server import main
    from usagi.core import broker as broker_mod
    from usagi.core import connection as conn_mod

    mono = time.monotonic_ns
    cpu = time.thread_time_ns
    reads = array.array("q")
    flushes = array.array("q")
    writes = array.array("q")
    data_received = conn_mod.Connection.data_received
    flush = conn_mod.Connection.flush
    flush_output = broker_mod.Broker.flush_output

    def timed_data_received(self, data, counted=False):
        at = data.find(BODY_FRAME_16) if len(data) > 20 else -1
        if at < 0:
            return data_received(self, data, counted)
        stamp = struct.unpack_from(">q", data, at + 7)[0]
        t0, c0 = mono(), cpu()
        v0 = resource.getrusage(resource.RUSAGE_THREAD).ru_nivcsw
        data_received(self, data, counted)
        t1, c1 = mono(), cpu()
        v1 = resource.getrusage(resource.RUSAGE_THREAD).ru_nivcsw
        reads.extend((stamp, t0, t1, c1 - c0, v1 - v0, data.count(BODY_FRAME_16)))

    def timed_flush(self):
        t0 = mono()
        flush(self)
        writes.extend((t0, mono()))

    def timed_flush_output(self):
        t0 = mono()
        flush_output(self)
        flushes.extend((t0, mono()))

    conn_mod.Connection.data_received = timed_data_received
    conn_mod.Connection.flush = timed_flush
    broker_mod.Broker.flush_output = timed_flush_output

    def dump():
        with open(out_path, "w") as f:
            json.dump({"reads": list(reads), "flushes": list(flushes), "writes": list(writes)}, f)

    atexit.register(dump)
    return main(argv)


def pct(values, p):
    values = sorted(v for v in values if v is not None)
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(len(values) * p))] / 1000.0


def analyse(records, skip=0.2) -> dict:
    """Percentiles (µs) of each part, over the reads after the first `skip` share (warm-up)."""
    r, fl, wr = records["reads"], records["flushes"], records["writes"]
    f_start, f_end = fl[0::2], fl[1::2]
    w_start, w_end = wr[0::2], wr[1::2]
    rows = []
    for k in range(0, len(r) - FIELDS + 1, FIELDS):
        stamp, t0, t1, c, preempted, n = r[k:k + FIELDS]
        j = bisect.bisect_left(f_end, t1)                # the flush that wrote this read's deliveries
        w = bisect.bisect_left(w_end, t1)
        rows.append({
            "arrive": t0 - stamp,
            "handle": t1 - t0,
            "handle_cpu": c,
            "to_flush": f_start[j] - t1 if j < len(f_start) else None,
            "write": w_end[w] - w_start[w] if w < len(w_start) else None,
            "stamp_to_written": f_end[j] - stamp if j < len(f_end) else None,
            "preempted": preempted,
            "publishes": n,
        })
    rows = rows[int(len(rows) * skip):]
    out = {"reads": len(rows),
           "preempted_share": round(sum(1 for x in rows if x["preempted"]) / max(1, len(rows)), 4),
           "publishes_per_read_p50": pct([x["publishes"] * 1000 for x in rows], 0.5)}
    for key in ("arrive", "handle", "handle_cpu", "to_flush", "write", "stamp_to_written"):
        vals = [x[key] for x in rows]
        out[key] = {p: round(pct(vals, q), 1) for p, q in (("p50", .5), ("p90", .9), ("p99", .99), ("p999", .999))}
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_once(a) -> dict:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="usagi-latency-") as tmp:
        out = os.path.join(tmp, "records.json")
        server = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", out, "--",
                                   "--port", str(port), "--data-dir", os.path.join(tmp, "data"),
                                   "--no-management", "--log-level", "warning"], cwd=REPO)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise SystemExit("the server did not start")
                    time.sleep(0.1)
            bench = subprocess.run([sys.executable, os.path.join(a.bench_dir, "amqp_bench.py"), "--host", "127.0.0.1",
                                    "--port", str(port), "-s", "16", "--rate", str(a.rate), "--latency",
                                    "--prefetch", "100", "-d", str(a.duration)],
                                   capture_output=True, text=True, timeout=a.duration + 120)
            lines = bench.stdout.strip().splitlines()
            e2e = json.loads(lines[-1]) if lines else {}
        finally:
            server.terminate()
            server.wait(60)
        with open(out) as f:
            records = json.load(f)
    return {"end_to_end": e2e.get("latency"), "broker_cpu_pct": (e2e.get("cpu") or {}).get("broker_pct"),
            "parts": analyse(records)}


def wakeup(cpus, n=3000, size=1024) -> dict:
    """A writer sends `size` bytes every millisecond over loopback TCP to a reader blocked in recv;
    the writer pinned to cpus[0], the reader to cpus[1]. Returns the write's duration and the
    reader's delay (µs percentiles)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    w = socket.create_connection(srv.getsockname())
    r, _ = srv.accept()
    srv.close()
    for s in (w, r):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:                                      # the reader
        os.sched_setaffinity(0, {cpus[1]})
        delays, got = array.array("q"), 0
        while got < n * size:
            data = r.recv(65536)
            now = time.monotonic_ns()
            got += len(data)
            delays.append(now - struct.unpack(">q", data[:8])[0])
        os.write(wr, json.dumps(list(delays)).encode())
        os._exit(0)
    os.close(wr)
    os.sched_setaffinity(0, {cpus[0]})
    took = []
    pad = b"x" * (size - 8)
    for _ in range(n):
        time.sleep(0.001)
        t0 = time.monotonic_ns()
        w.sendall(struct.pack(">q", t0) + pad)
        took.append(time.monotonic_ns() - t0)
    chunks = []
    while True:
        b = os.read(rd, 1 << 20)
        if not b:
            break
        chunks.append(b)
    os.waitpid(pid, 0)
    os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    delays = json.loads(b"".join(chunks))
    w.close()
    r.close()
    return {"write": {p: round(pct(took, q), 1) for p, q in (("p50", .5), ("p99", .99))},
            "reader_sees_it": {p: round(pct(delays, q), 1) for p, q in (("p50", .5), ("p99", .99))}}


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--serve":
        out = sys.argv[2]
        rest = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
        sys.exit(serve(rest, out))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=int, default=10000)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--bench-dir", default=os.path.normpath(os.path.join(REPO, "..", "shared", "bench")))
    ap.add_argument("--wakeup", action="store_true", help="measure the kernel's loopback wake-ups only")
    ap.add_argument("--out", help="append the results as JSON lines to this file")
    a = ap.parse_args()
    results = []
    if a.wakeup:
        ncpu = len(os.sched_getaffinity(0))
        pairs = [(0, 0), (0, 1)] if ncpu > 1 else [(0, 0)]
        for _ in range(a.runs):
            for pair in pairs:
                res = {"kind": "wakeup", "cpus": pair, **wakeup(pair)}
                print(json.dumps(res))
                results.append(res)
    else:
        if not os.path.isfile(os.path.join(a.bench_dir, "amqp_bench.py")):
            raise SystemExit(f"no amqp_bench.py in {a.bench_dir} (pass --bench-dir)")
        for _ in range(a.runs):
            res = {"kind": "breakdown", "rate": a.rate, **run_once(a)}
            print(json.dumps(res))
            results.append(res)
    if a.out:
        with open(a.out, "a") as f:
            for res in results:
                f.write(json.dumps({"ts": time.strftime("%Y-%m-%dT%H:%M:%S"), **res}) + "\n")


if __name__ == "__main__":
    main()
