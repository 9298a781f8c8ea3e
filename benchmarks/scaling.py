#!/usr/bin/env python3
"""How Usagi's throughput, latency and CPU per message grow with the work, against RabbitMQ.

    python benchmarks/scaling.py --runs 3                          # every curve, both brokers
    python benchmarks/scaling.py --quick --curves queues,size      # a smoke run: few points, short windows
    python benchmarks/scaling.py --brokers usagi --quick           # Usagi only (no RabbitMQ needed)
    python benchmarks/scaling.py --from benchmarks/results/2026-12-07-scaling.jsonl   # table and plots again

A single figure (compare.py) says how fast a broker is at one point; a curve says whether its
cost stays linear as the number of queues, connections, bytes, queued messages, fanout width or
offered rate grows, which is where a broker that looks fast on one queue falls over. Each curve
is measured point by point, Usagi then RabbitMQ right after (U R U R ...), every point repeated
--runs times; each result is a JSON line in results/DATE-scaling.jsonl, and the script writes a
markdown table (medians, ratio Usagi/RabbitMQ per point, broker CPU per message and how it grew
from the curve's first point) and one PNG per curve in results/.

Curves (see CURVES): queues, publishers, consumers, size, depth, fanout, latency.  The size,
fanout and latency curves run the shared load generator amqp_bench.py (one OS process per
client).  The curves with hundreds of clients (queues, publishers, consumers) and the deep-queue
curve use the multiplexed driver below: one process for all publishers and one for all
consumers, each over epoll, so that a thousand idle or slow connections cost the generator
nothing and the broker, not 2,000 Python processes, is what is measured.

Brokers, CPU and memory sampling, interleaving and provenance come from compare.py.  Usagi is
started fresh for every point (or --usagi-url).  RabbitMQ is the running node; a curve that
needs more connections than that node may open (its `ulimit -n`, 1,024 for the Debian package)
runs against a temporary node of the same package (compare.RabbitMQTemp), started once per curve
and run (--rabbitmq-temp).  Queue and exchange names are unique to this process and deleted
afterwards, so a shared node is left as found.

matplotlib draws the plots (`pip install .[bench]`); without it the data and tables are written
and the plots are skipped with a message.
"""
from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing as mp
import os
import resource
import selectors
import shlex
import shutil
import statistics
import struct
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import compare as C  # noqa: E402

REPO = C.REPO

# ------------------------------------------------------------------ the curves
# points: the full set; quick: a smoke run.  conns(x, a): connections a point opens (for the
# choice of RabbitMQ node).  work: what the CPU cost is divided by ("msg" or "byte").
CURVES = {
    "queues": dict(
        title="Throughput vs number of queues",
        xlabel="queues (one consumer each; publishers = max(queues, 4))",
        points=[1, 10, 100, 1000], quick=[1, 10], xscale="log",
        conns=lambda x, a: max(x, 4) + x + 1),
    "publishers": dict(
        title="Throughput vs number of publishing connections",
        xlabel="publishing connections (one queue, one consumer)",
        points=[1, 10, 100, 1000], quick=[1, 10], xscale="log",
        conns=lambda x, a: x + 2),
    "consumers": dict(
        title="Throughput vs number of consuming connections",
        xlabel="consuming connections on one queue (publishers: --consumers-publishers)",
        points=[1, 10, 100, 1000], quick=[1, 10], xscale="log",
        conns=lambda x, a: x + a.consumers_publishers + 1),
    "size": dict(
        title="Throughput vs message size",
        xlabel="message body size (bytes); 1 publisher, 1 queue, 1 consumer",
        points=[16, 256, 4096, 65536, 1048576], quick=[16, 65536], xscale="log", work="byte",
        conns=lambda x, a: 3),
    "depth": dict(
        title="Throughput vs queue depth at the start",
        xlabel="messages queued before the measurement (1 publisher, 1 consumer)",
        points=[0, 10000, 100000, 1000000], quick=[0, 20000], xscale="symlog",
        conns=lambda x, a: 3),
    "fanout": dict(
        title="Fanout width",
        xlabel="queues bound to one fanout exchange (one consumer each, 1 publisher)",
        points=[1, 3, 10, 30, 100], quick=[1, 10], xscale="log",
        conns=lambda x, a: x + 2),
    "latency": dict(
        title="End-to-end latency vs offered rate",
        xlabel="offered rate (msg/s, 1 publisher, 1 consumer)",
        points=[1000, 3000, 10000, 30000, 100000, 200000, 300000], quick=[1000, 10000], xscale="log",
        conns=lambda x, a: 3),
}
CURVE_ORDER = list(CURVES)

# the figures of each curve: (key in the values, label, higher is better)
METRICS = {
    "queues": [("cons_rate", "consumed msg/s (all queues)", True)],
    "publishers": [("cons_rate", "consumed msg/s", True)],
    "consumers": [("cons_rate", "consumed msg/s (all consumers)", True)],
    "size": [("cons_rate", "consumed msg/s", True), ("mb_s", "consumed MB/s", True)],
    "depth": [("cons_rate", "publish+consume: consumed msg/s", True),
              ("drain_rate", "drain (consume only) msg/s", True)],
    "fanout": [("cons_rate", "deliveries/s (all queues)", True)],
    "latency": [("p50_us", "p50 latency (µs)", False), ("p99_us", "p99 latency (µs)", False),
                ("p999_us", "p99.9 latency (µs)", False)],
}

# ------------------------------------------------------------------ raw AMQP helpers
DELIVER = (60 << 16) | 60
CLOSES = {(10 << 16) | 50: "connection.close", (20 << 16) | 40: "channel.close"}
CLOSE_OK = (10 << 16) | 51
ACK = (60 << 16) | 80
NACK = (60 << 16) | 120
_I = struct.Struct(">I")
_Q = struct.Struct(">Q")
_HDR = struct.Struct(">BHI")


def encode_publish(exchange, rk, size, frame_max, delivery_mode=1):
    """One basic.publish on channel 1: method, header (delivery mode only), body frames."""
    m = C.mframe(1, 60, 40, b"\x00\x00" + C._ss(exchange) + C._ss(rk) + b"\x00")
    h = C.frame(2, 1, struct.pack(">HHQHB", 60, 0, size, 0x1000, delivery_mode))
    step = frame_max - 8
    body = bytes(size)
    return m + h + b"".join(C.frame(3, 1, body[i:i + step]) for i in range(0, size, step))


def declare_frame(q, passive=False):
    return C.mframe(1, 50, 10, b"\x00\x00" + C._ss(q) + bytes([1 if passive else 0]) + b"\x00\x00\x00\x00")


def delete_frame(q):
    return C.mframe(1, 50, 40, b"\x00\x00" + C._ss(q) + b"\x00")


def rpc_many(c, frames, cls, mid, batch=500):
    """Send frames pipelined, `batch` at a time, and read one reply cls.mid for each."""
    out = []
    for i in range(0, len(frames), batch):
        chunk = frames[i:i + batch]
        c.sock.sendall(b"".join(chunk))
        for _ in chunk:
            out.append(c.expect(cls, mid))
    return out


def declare_many(c, names, passive=False):
    """queue.declare each name; returns the message counts."""
    counts = []
    for p in rpc_many(c, [declare_frame(q, passive) for q in names], 50, 11):
        counts.append(struct.unpack_from(">I", p, 5 + p[4])[0])
    return counts


def delete_many(c, names):
    rpc_many(c, [delete_frame(q) for q in names], 50, 41)


def connect_many(addr, n, batch=100, timeout=120.0, channel=True):
    """n connections, handshakes in lock-step batches (as compare.run_conn), each with channel 1
    open unless channel=False."""
    conns = []
    for i in range(0, n, batch):
        b = [C.Raw(*addr, connect=False) for _ in range(min(batch, n - i))]
        for c in b:
            c.start(timeout)
        for step in (C.Raw.finish_start, C.Raw.finish_tune, C.Raw.finish_open):
            for c in b:
                step(c)
        if channel:
            lockstep(b, lambda c: C.mframe(1, 20, 10, C._ss("")), 20, 11)
        conns += b
    return conns


def lockstep(conns, make_frame, cls, mid):
    for c in conns:
        c.sock.sendall(make_frame(c))
    return [c.expect(cls, mid) for c in conns]


def close_many(conns, timeout=15.0):
    """connection.close on each, then wait (bounded) for close-ok, skipping whatever comes first."""
    for c in conns:
        try:
            c.sock.settimeout(5)
            c.send_close()
        except OSError:
            pass
    deadline = time.monotonic() + timeout
    for c in conns:
        try:
            while time.monotonic() < deadline:
                c.sock.settimeout(max(0.05, deadline - time.monotonic()))
                t, _ch, p = c.read_frame()
                if t == 1 and _I.unpack_from(p, 0)[0] == CLOSE_OK:
                    break
        except (OSError, C.AMQPFail):
            pass
        finally:
            c.sock.close()


def scan_closes(buf):
    """Drop the complete frames at the start of buf; raise on a connection.close or channel.close."""
    pos, end = 0, len(buf)
    while end - pos >= 7:
        t, _ch, n = _HDR.unpack_from(buf, pos)
        nxt = pos + n + 8
        if nxt > end:
            break
        if t == 1 and _I.unpack_from(buf, pos + 7)[0] in CLOSES:
            raise C.AMQPFail("%s: %s" % (CLOSES[_I.unpack_from(buf, pos + 7)[0]], C._close_text(bytes(buf[pos + 7:nxt - 1]))))
        pos = nxt
    del buf[:pos]


# ------------------------------------------------------------------ multiplexed driver
# shared counters per worker: [count, ready, done, error]; control: [go, stop publishers, stop consumers]
K_COUNT, K_READY, K_DONE, K_ERR = range(4)
GO, STOP_PUB, STOP_CONS = range(3)


class _Pub:
    """One publishing connection with confirms: `sent` messages written whole, `low` the highest
    tag below which all are confirmed, `extra` tags confirmed above it."""
    __slots__ = ("c", "L", "batch", "out", "off", "sent", "low", "extra", "nacked", "writing")

    def __init__(self, c, msg, batch_bytes):
        self.c = c
        self.L = len(msg)
        self.batch = memoryview(msg * max(1, batch_bytes // self.L))
        self.out = None        # the slice of batch being written
        self.off = 0
        self.sent = 0
        self.low = 0
        self.extra = set()
        self.nacked = 0
        self.writing = True

    def confirmed(self):
        return self.low + len(self.extra)

    def handle(self, buf):
        """Take the acks and nacks off the complete frames in buf; raise on a close."""
        pos, end = 0, len(buf)
        while end - pos >= 7:
            t, _ch, n = _HDR.unpack_from(buf, pos)
            nxt = pos + n + 8
            if nxt > end:
                break
            if t == 1:
                cm = _I.unpack_from(buf, pos + 7)[0]
                if cm in (ACK, NACK):
                    tag = _Q.unpack_from(buf, pos + 11)[0]
                    before = self.confirmed()
                    if buf[pos + 19] & 1:
                        if tag > self.low:
                            self.extra = {x for x in self.extra if x > tag}
                            self.low = tag
                    elif tag > self.low:
                        self.extra.add(tag)
                    while self.low + 1 in self.extra:
                        self.extra.discard(self.low + 1)
                        self.low += 1
                    if cm == NACK:
                        self.nacked += self.confirmed() - before
                elif cm in CLOSES:
                    raise C.AMQPFail("publisher: %s: %s" % (CLOSES[cm], C._close_text(bytes(buf[pos + 7:nxt - 1]))))
            pos = nxt
        del buf[:pos]


def _pub_worker(slot, addr, targets, size, window, batch_bytes, counters, ctl, errq):
    """Publishers: one connection per (exchange, routing key), in confirm mode, each writing a
    pre-encoded batch whenever its socket is writable and it has fewer than `window` messages
    unconfirmed (which bounds what sits in socket buffers, so that stopping is quick and the
    count exact), until told to stop; then each waits for its last confirms.  The count
    reported is of confirmed messages."""
    k = slot * 4
    conns = []
    try:
        conns = connect_many(addr, len(targets))
        lockstep(conns, lambda c: C.mframe(1, 85, 10, b"\x00"), 85, 11)
        sel = selectors.DefaultSelector()
        pubs = []
        both = selectors.EVENT_READ | selectors.EVENT_WRITE
        for c, (ex, rk) in zip(conns, targets):
            p = _Pub(c, encode_publish(ex, rk, size, c.frame_max), batch_bytes)
            c.sock.setblocking(False)
            sel.register(c.sock, both, p)
            pubs.append(p)
        counters[k + K_READY] = 1
        while not ctl[GO]:
            time.sleep(0.005)
        last = 0.0
        stopping = False
        deadline = None
        while True:
            if not stopping and ctl[STOP_PUB]:
                stopping = True
                deadline = time.monotonic() + 120
            if stopping and (all(p.out is None and p.confirmed() >= p.sent for p in pubs) or
                             time.monotonic() > deadline):
                break
            for key, mask in sel.select(0.05):
                p = key.data
                if mask & selectors.EVENT_READ:
                    d = p.c.sock.recv(65536)
                    if not d:
                        raise C.AMQPFail("publisher: connection closed by the broker")
                    p.c.buf += d
                    p.handle(p.c.buf)
                if p.out is None and not stopping:
                    room = window - (p.sent - p.confirmed())
                    if room > 0:
                        p.out = p.batch[:min(room, len(p.batch) // p.L) * p.L]
                        p.off = 0
                if p.out is not None and mask & selectors.EVENT_WRITE:
                    try:
                        p.off += p.c.sock.send(p.out[p.off:])
                    except (BlockingIOError, InterruptedError):
                        pass
                    if p.off == len(p.out):
                        p.sent += len(p.out) // p.L
                        p.out = None
                    elif stopping and p.off % p.L == 0:   # stop at a message boundary
                        p.sent += p.off // p.L
                        p.out = None
                want = both if p.out is not None or (not stopping and p.sent - p.confirmed() < window) \
                    else selectors.EVENT_READ
                if want != p.writing:
                    sel.modify(p.c.sock, want, p)
                    p.writing = want
            now = time.monotonic()
            if now - last > 0.05:
                counters[k + K_COUNT] = sum(p.confirmed() for p in pubs)
                last = now
        sel.close()
        counters[k + K_COUNT] = sum(p.confirmed() for p in pubs)
        nacked = sum(p.nacked for p in pubs)
        unconfirmed = sum(p.sent - p.confirmed() for p in pubs)
        for c in conns:
            c.sock.setblocking(True)
        close_many(conns)
        if nacked or unconfirmed:
            raise C.AMQPFail("%d messages nacked, %d unconfirmed 120 s after the stop" % (nacked, unconfirmed))
    except Exception as e:  # noqa: BLE001 - reported to the parent
        counters[k + K_ERR] = 1
        errq.put("publisher worker %d: %s: %s" % (slot, type(e).__name__, e))
        for c in conns:
            try:
                c.sock.close()
            except OSError:
                pass
    finally:
        counters[k + K_DONE] = 1


class _Con:
    __slots__ = ("c", "count", "tag", "acked", "rx")

    def __init__(self, c):
        self.c = c
        self.count = 0
        self.tag = 0
        self.acked = 0
        self.rx = 0.0


def _ack(c, tag):
    c.sock.sendall(C.mframe(1, 60, 80, _Q.pack(tag) + b"\x01"))


def _cons_worker(slot, addr, queues, prefetch, autoack, counters, ctl, errq):
    """Consumers: one connection per queue name given, counting basic.deliver frames and acking
    (multiple) every prefetch/2 deliveries and whenever a connection has been quiet for 20 ms."""
    k = slot * 4
    conns = []
    try:
        conns = connect_many(addr, len(queues))
        if not autoack:
            lockstep(conns, lambda c: C.mframe(1, 60, 10, struct.pack(">IHB", 0, prefetch, 0)), 60, 11)
        names = iter(queues)
        lockstep(conns, lambda c: C.mframe(1, 60, 20, b"\x00\x00" + C._ss(next(names)) + C._ss("") +
                                           bytes([2 if autoack else 0]) + b"\x00\x00\x00\x00"), 60, 21)
        sel = selectors.DefaultSelector()
        cons = []
        for c in conns:
            c.sock.settimeout(None)
            s = _Con(c)
            sel.register(c.sock, selectors.EVENT_READ, s)
            cons.append(s)
        ack_every = max(1, prefetch // 2)
        unpack_hdr, unpack_i, unpack_q = _HDR.unpack_from, _I.unpack_from, _Q.unpack_from
        pending = set()
        counters[k + K_READY] = 1
        while not ctl[GO]:
            time.sleep(0.005)
        last = 0.0
        ready = [(False, s) for s in cons if s.c.buf]   # deliveries read along with consume-ok
        while not ctl[STOP_CONS]:
            if not ready:
                ready = [(True, key.data) for key, _m in sel.select(0.02)]
            now = time.monotonic()
            for readable, s in ready:
                c = s.c
                buf = c.buf
                if readable:
                    d = c.sock.recv(1 << 18)
                    if not d:
                        raise C.AMQPFail("consumer: connection closed by the broker")
                    buf += d
                pos, end = 0, len(buf)
                while end - pos >= 7:
                    t, _ch, n = unpack_hdr(buf, pos)
                    nxt = pos + n + 8
                    if nxt > end:
                        break
                    if t == 1:
                        cm = unpack_i(buf, pos + 7)[0]
                        if cm == DELIVER:
                            s.count += 1
                            s.tag = unpack_q(buf, pos + 12 + buf[pos + 11])[0]
                        elif cm in CLOSES:
                            raise C.AMQPFail("consumer: %s: %s" % (CLOSES[cm], C._close_text(bytes(buf[pos + 7:nxt - 1]))))
                    pos = nxt
                del buf[:pos]
                s.rx = now
                if not autoack:
                    if s.tag - s.acked >= ack_every:
                        _ack(c, s.tag)
                        s.acked = s.tag
                        pending.discard(s)
                    elif s.tag > s.acked:
                        pending.add(s)
            ready = []
            if pending:
                for s in [s for s in pending if now - s.rx > 0.02]:
                    _ack(s.c, s.tag)
                    s.acked = s.tag
                    pending.discard(s)
            if now - last > 0.05:
                counters[k + K_COUNT] = sum(s.count for s in cons)
                last = now
        for s in cons:
            if not autoack and s.tag > s.acked:
                _ack(s.c, s.tag)
                s.acked = s.tag
        counters[k + K_COUNT] = sum(s.count for s in cons)
        sel.close()
        close_many(conns)
    except Exception as e:  # noqa: BLE001 - reported to the parent
        counters[k + K_ERR] = 1
        errq.put("consumer worker %d: %s: %s" % (slot, type(e).__name__, e))
        for c in conns:
            try:
                c.sock.close()
            except OSError:
                pass
    finally:
        counters[k + K_DONE] = 1


class LoadCpu:
    """CPU % (100 = one core) of the broker tree, of the load generator (this process and its
    workers) and of everything else, over a window: compare.CpuWindow, with the workers counted."""

    def __init__(self, broker_pid, gen_pids):
        self.bpids = C.proc_tree(broker_pid) if broker_pid else []
        self.gpids = list(gen_pids)
        self.t0 = time.monotonic()
        self.b0 = C.cpu_ticks(self.bpids)
        self.g0 = C.cpu_ticks(self.gpids)
        self.s0 = C.sys_busy_ticks()
        self.io0 = _syscalls(self.bpids)

    def result(self):
        dt = time.monotonic() - self.t0
        if dt <= 0:
            return {}
        b = (C.cpu_ticks(self.bpids) - self.b0) / C.CLK / dt * 100
        g = (C.cpu_ticks(self.gpids) - self.g0) / C.CLK / dt * 100
        s = (C.sys_busy_ticks() - self.s0) / C.CLK / dt * 100
        io1 = _syscalls(self.bpids)
        return {"broker_pct": round(b, 1), "loadgen_pct": round(g, 1), "system_busy_pct": round(s, 1),
                "other_pct": round(max(0.0, s - b - g), 1), "window_s": round(dt, 2),
                "broker_read_syscalls": io1[0] - self.io0[0], "broker_write_syscalls": io1[1] - self.io0[1]}


def _syscalls(pids):
    """Read and write system calls made so far by pids (/proc/PID/io: syscr, syscw)."""
    r = w = 0
    for p in pids:
        try:
            with open("/proc/%d/io" % p) as f:
                for line in f:
                    if line.startswith("syscr:"):
                        r += int(line.split()[1])
                    elif line.startswith("syscw:"):
                        w += int(line.split()[1])
        except (OSError, ValueError):
            pass
    return r, w


def _split(items, n):
    n = max(1, min(n, len(items)))
    return [items[i::n] for i in range(n)]


def mux_run(a, tgt, *, queues, publish_to, consume_from, size, declare=True, delete=True, backlog=0,
            drain_window=False):
    """Publishers (one connection per routing key in publish_to) and consumers (one connection
    per queue in consume_from) for --warmup + --duration s, then the publishers stop (and with
    drain_window the consumers go on alone for another --duration s: the drain rate), then the
    consumers.  Publishers run in confirm mode with at most --in-flight unconfirmed messages
    over all of them: without that, a thousand connections' socket buffers hold millions of
    messages the broker has yet to read when the window ends.  Loss check: backlog + confirmed =
    consumed + what is left in the queues, which are then deleted.  A queue that grew during the
    window is not drained: a broker that ingests faster than it delivers would spend minutes on
    it."""
    window = max(10, a.in_flight // max(1, len(publish_to)))
    res = {"driver": "mux", "queues": len(queues), "publishers": len(publish_to), "confirm_window": window,
           "consumers": len(consume_from), "size": size, "backlog_at_start": backlog, "errors": []}
    addr = (tgt.host, tgt.port, tgt.user, tgt.password, tgt.vhost)
    ctl_conn = tgt.raw()
    ctl_conn.channel_open(1)
    if declare:
        declare_many(ctl_conn, queues)
    res["rss_before_kib"] = C.rss_kib(tgt.pid)
    ctx = mp.get_context("fork")
    pgroups = _split([("", q) for q in publish_to], a.mux_procs) if publish_to else []
    cgroups = _split(list(consume_from), a.mux_procs) if consume_from else []
    nslot = len(pgroups) + len(cgroups)
    counters = ctx.RawArray("q", 4 * nslot)
    ctl = ctx.RawArray("q", 4)
    errq = ctx.Queue()
    procs, pslots, cslots = [], [], []
    t_setup = time.monotonic()

    def total(slots):
        return sum(counters[s * 4 + K_COUNT] for s in slots)

    def failed():
        return any(counters[s * 4 + K_ERR] for s in range(nslot))

    def wait_flag(slots, flag, limit):
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if all(counters[s * 4 + flag] or counters[s * 4 + K_DONE] for s in slots):
                return True
            time.sleep(0.02)
        return False

    try:
        for g in cgroups:
            s = len(pslots) + len(cslots)
            cslots.append(s)
            procs.append(ctx.Process(target=_cons_worker, args=(s, addr, g, a.prefetch, a.autoack, counters, ctl, errq),
                                     daemon=True))
        for g in pgroups:
            s = len(pslots) + len(cslots)
            pslots.append(s)
            procs.append(ctx.Process(target=_pub_worker, args=(s, addr, g, size, window, 65536, counters, ctl, errq),
                                     daemon=True))
        for p in procs:
            p.start()
        if not wait_flag(range(nslot), K_READY, a.setup_timeout):
            res["errors"].append("clients not connected within %.0f s" % a.setup_timeout)
        res["setup_s"] = round(time.monotonic() - t_setup, 1)
        if not failed() and not res["errors"]:
            gen = [os.getpid()] + [p.pid for p in procs]
            ctl[GO] = 1
            time.sleep(a.warmup)
            p0, c0 = total(pslots), total(cslots)
            cpu = LoadCpu(tgt.pid, gen)
            end = time.monotonic() + a.duration
            while time.monotonic() < end and not failed():
                time.sleep(0.05)
            p1, c1 = total(pslots), total(cslots)
            res["cpu"] = cpu.result()
            win = res["cpu"].get("window_s") or a.duration
            res["pub_rate"] = round((p1 - p0) / win)
            res["cons_rate"] = round((c1 - c0) / win)
            res["backlog_at_end_of_window"] = backlog + p1 - c1
        # publishers stop and wait for their last confirms: what they count is what was routed
        ctl[STOP_PUB] = 1
        wait_flag(pslots, K_DONE, a.setup_timeout)
        res["stop_s"] = round(time.monotonic() - end, 2) if not res["errors"] and "cpu" in res else None
        published = total(pslots)
        expected = backlog + published
        if drain_window and not failed() and "cpu" in res:
            # consumers alone on what is left, for another window (or until it is all consumed)
            c0, t0 = total(cslots), time.monotonic()
            while time.monotonic() - t0 < a.duration and total(cslots) < expected and not failed():
                time.sleep(0.02)
            res["drain_s"] = round(time.monotonic() - t0, 2)
            res["drained"] = total(cslots) - c0
            if res["drained"] >= 1000:
                res["drain_rate"] = round(res["drained"] / res["drain_s"])
        ctl[STOP_CONS] = 1
        wait_flag(cslots, K_DONE, 120)
        consumed = total(cslots)
        res.update(published=published, expected_deliveries=expected, consumed=consumed)
    finally:
        ctl[STOP_PUB] = ctl[STOP_CONS] = 1
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.terminate()
                p.join(5)
        while True:
            try:
                res["errors"].append(errq.get(timeout=0.1))
            except Exception:  # queue.Empty
                break
    try:
        # what the consumers did not take is still queued (deliveries not yet counted when they
        # closed are requeued): expected = consumed + left, or something was lost
        for wait in (0.3, 1, 2, 4):
            time.sleep(wait)
            left = sum(declare_many(ctl_conn, sorted(set(queues)), passive=True))
            res["left_in_queues"] = left
            res["lost"] = res["expected_deliveries"] - res["consumed"] - left
            if res["lost"] == 0:
                break
        res["rss_after_kib"] = C.rss_kib(tgt.pid)
        if delete:
            delete_many(ctl_conn, queues)
        ctl_conn.close()
    except (OSError, C.AMQPFail, KeyError) as e:
        res["errors"].append("control: %s: %s" % (type(e).__name__, e))
    if not tgt.alive():
        res["errors"].append("broker process is gone")
    res["ok"] = not res["errors"] and res.get("lost") == 0
    return res


def fill(tgt, q, n, size, settle=0.0, timeout=900.0, total=None):
    """Publish n transient messages of `size` bytes to queue q (declared by the caller) from one
    connection, pre-encoded, as fast as the broker reads; wait until it reports them all queued
    (`total` in all, if q held some before).  Returns {published, queued, fill_s, fill_rate}."""
    total = n if total is None else total
    c = tgt.raw()
    c.channel_open(1)
    one = encode_publish("", q, size, c.frame_max)
    per = max(1, 65536 // len(one))
    chunk = one * per
    t0 = time.monotonic()
    sent = 0
    c.sock.settimeout(timeout)
    while sent < n:
        k = min(per, n - sent)
        c.sock.sendall(chunk if k == per else one * k)
        sent += k
        if sent % (per * 64) == 0:   # a close from the broker shows up early
            c.sock.setblocking(False)
            try:
                d = c.sock.recv(65536)
            except BlockingIOError:
                d = None
            c.sock.settimeout(timeout)
            if d == b"":
                raise C.AMQPFail("broker closed the publishing connection")
            if d:
                c.buf += d
                scan_closes(c.buf)
    count = declare_many(c, [q], passive=True)[0]
    deadline = time.monotonic() + timeout
    while count < total and time.monotonic() < deadline:
        time.sleep(0.1)
        count = declare_many(c, [q], passive=True)[0]
    fill_s = time.monotonic() - t0
    c.close()
    if settle:
        time.sleep(settle)
    return {"published": sent, "queued": count, "fill_s": round(fill_s, 2),
            "fill_rate": round(sent / fill_s) if fill_s > 0 else None}


# ------------------------------------------------------------------ one point
def names(a, curve, x, run):
    """Queue and exchange names of one point: unique to this process."""
    return "usagi-scaling-%d-%s-%s-r%d" % (os.getpid(), curve, x, run)


def bench_args(a, prefix, extra):
    ack = "--autoack" if a.autoack else "--prefetch %d" % a.prefetch
    return "%s --queue-prefix %s --exchange %s.fx %s --drain-max %g" % (extra, prefix, prefix, ack, a.drain_max)


def measure(a, tgt, curve, x, run):
    prefix = names(a, curve, x, run)
    if curve == "queues":
        qs = ["%s-%d" % (prefix, i) for i in range(x)]
        pubs = [qs[i % x] for i in range(max(x, 4))]
        return mux_run(a, tgt, queues=qs, publish_to=pubs, consume_from=qs, size=a.size)
    if curve == "publishers":
        q = prefix + "-0"
        return mux_run(a, tgt, queues=[q], publish_to=[q] * x, consume_from=[q], size=a.size)
    if curve == "consumers":
        q = prefix + "-0"
        return mux_run(a, tgt, queues=[q], publish_to=[q] * a.consumers_publishers, consume_from=[q] * x,
                       size=a.size)
    if curve == "depth":
        q = prefix + "-0"
        c = tgt.raw()
        c.channel_open(1)
        declare_many(c, [q])
        c.close()
        rss0 = C.rss_kib(tgt.pid)
        f = fill(tgt, q, x, a.depth_size, settle=a.settle) if x else {"queued": 0}
        rss1 = C.rss_kib(tgt.pid)
        res = mux_run(a, tgt, queues=[q], publish_to=[q], consume_from=[q], size=a.depth_size, declare=False,
                      backlog=f["queued"], drain_window=True)
        res["fill"] = f
        res["rss_empty_kib"], res["rss_full_kib"] = rss0, rss1
        if x and f["queued"] != x:
            res["errors"].append("only %d of %d messages queued before the measurement" % (f["queued"], x))
            res["ok"] = False
        return res
    if curve == "size":
        res = C.run_bench(a, tgt, curve, bench_args(a, prefix, "-s %d" % x))
    elif curve == "fanout":
        res = C.run_bench(a, tgt, curve, bench_args(a, prefix, "-s %d --fanout -q %d -y %d" % (a.size, x, x)))
    elif curve == "latency":
        res = C.run_bench(a, tgt, curve, "-s %d --rate %d --latency --prefetch %d --queue-prefix %s --drain-max %g" % (
            a.size, x, a.prefetch, prefix, a.drain_max))
    else:
        raise ValueError(curve)
    res["driver"] = "amqp_bench"
    return res


# ------------------------------------------------------------------ the figures of a result
def values(curve, x, res):
    """The numbers the table and the plots use, from one result."""
    v = {}
    for k in ("cons_rate", "pub_rate", "drain_rate"):
        if res.get(k) is not None:
            v[k] = res[k]
    if res.get("backlog_at_end_of_window") is not None:
        v["backlog"] = res["backlog_at_end_of_window"]
    cpu = res.get("cpu") or {}
    for k in ("broker_pct", "loadgen_pct", "other_pct"):
        if cpu.get(k) is not None:
            v[k] = cpu[k]
    if curve == "size" and v.get("cons_rate") is not None:
        v["mb_s"] = v["cons_rate"] * x / 1e6
    lat = res.get("latency") or {}
    for k in ("p50_us", "p99_us", "p999_us"):
        if lat.get(k) is not None:
            v[k] = lat[k]
    # broker CPU per message in or out (a publish taken, a delivery made): a consumer starved by
    # its publishers does not make the cost look higher than it is
    ops = (v.get("pub_rate") or 0) + (v.get("cons_rate") or 0)
    if v.get("broker_pct") and ops:
        v["cpu_us"] = v["broker_pct"] * 1e4 / ops
        if curve == "size":
            v["cpu_us_kb"] = v["cpu_us"] / (x / 1000.0)            # ... per 1,000 bytes in or out
    return v


def saturated(res, rate):
    """A latency point past saturation: the broker did not take or deliver the offered rate."""
    return (res.get("pub_rate") or 0) < 0.95 * rate or (res.get("cons_rate") or 0) < 0.95 * rate


# ------------------------------------------------------------------ tables
def fmt(v):
    return C.fmt(v)


def fmtx(x):
    """A point's x: an integer with thousands separators."""
    return "{:,}".format(x) if isinstance(x, int) or float(x).is_integer() else "%g" % x


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def collect(records):
    """{curve: {x: {"usagi": [values], "rabbitmq": [values], "pairs": [(u, r)], "problems": [...]}}}"""
    by = {}
    pairs = {}
    for r in records:
        if r.get("type") != "result":
            continue
        cell = by.setdefault(r["curve"], {}).setdefault(r["x"], {"usagi": [], "rabbitmq": [], "pairs": [],
                                                                 "problems": [], "skipped": {}})
        if r.get("skipped"):
            cell["skipped"][r["broker"]] = r["skipped"]
            continue
        v = values(r["curve"], r["x"], r["res"])
        cell[r["broker"]].append(v)
        pairs.setdefault((r["curve"], r["x"], r.get("run"), r.get("pair")), {})[r["broker"]] = v
        res = r["res"]
        if not res.get("ok", False):
            e = "; ".join(str(x) for x in (res.get("errors") or []))[:160]
            cell["problems"].append("%s run %s: %s%s" % (r["broker"][0].upper(), r.get("run"), e or "not ok",
                                                         " lost=%s" % res.get("lost") if res.get("lost") else ""))
    for (curve, x, _run, _pair), p in pairs.items():
        if "usagi" in p and "rabbitmq" in p:
            by[curve][x]["pairs"].append((p["usagi"], p["rabbitmq"]))
    return by


def ratio_of(cell, key):
    rs = [u[key] / r[key] for u, r in cell["pairs"] if u.get(key) is not None and r.get(key)]
    return med(rs)


def growth_notes(curve, cells):
    """Where Usagi's broker CPU per unit of work grew 1.5x or more above its value at the
    curve's first point (the cost growing faster than linearly with the work), and where a
    broker's consumers took less than half of what was published (its queues grew)."""
    key = "cpu_us_kb" if curve == "size" else "cpu_us"
    xs = sorted(cells)
    base = None
    notes = []
    for x in xs:
        v = med([u.get(key) for u in cells[x]["usagi"]])
        if v is None:
            continue
        if base is None:
            base = (x, v)
            continue
        if curve == "latency":
            continue   # CPU per message falls with the rate (batching) until saturation
        if v >= 1.5 * base[1]:
            notes.append("Usagi's broker CPU per %s at %s = %s is %.1fx its value at %s (%s vs %s µs)" % (
                "1,000 bytes in or out" if curve == "size" else "message in or out", curve, fmtx(x), v / base[1],
                fmtx(base[0]), fmt(v), fmt(base[1])))
    if curve != "latency":
        for x in xs:
            for b in ("usagi", "rabbitmq"):
                pub = med([u.get("pub_rate") for u in cells[x][b]])
                con = med([u.get("cons_rate") for u in cells[x][b]])
                want = (pub or 0) * (x if curve == "fanout" else 1)
                if pub and con is not None and con < 0.5 * want:
                    notes.append("%s at %s = %s: the consumers took %.1f%% of what was published (%s in, %s out "
                                 "a second); the queue grew" % (LABELS[b], curve, fmtx(x), 100 * con / want,
                                                                fmt(pub), fmt(con)))
    return notes


def table(records):
    by = collect(records)
    out = []
    for curve in [c for c in CURVE_ORDER if c in by]:
        cells = by[curve]
        spec = CURVES[curve]
        out.append("### %s (`%s`)\n" % (spec["title"], curve))
        out.append("x: %s\n" % spec["xlabel"])
        mets = METRICS[curve]
        head = ["x"]
        for _k, label, _h in mets:
            head += ["%s Usagi" % label, "RabbitMQ", "U/R"]
        cpu_key = "cpu_us_kb" if curve == "size" else "cpu_us"
        cpu_label = "broker CPU µs per 1,000 B in or out" if curve == "size" else "broker CPU µs per message in or out"
        if curve == "latency":
            head += ["broker CPU % U / R", "consumed msg/s U / R"]
        else:
            head += ["%s U / R" % cpu_label, "Usagi cost vs first point"]
        if curve != "latency":
            head += ["published msg/s U / R", "backlog at end of window U / R"]
        head += ["pairs", "other CPU % U / R", "errors, loss or skipped"]
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "---|" * len(head))
        base = None
        for x in sorted(cells):
            cell = cells[x]
            row = [fmtx(x)]
            for k, _label, _h in mets:
                mu, mr = med([v.get(k) for v in cell["usagi"]]), med([v.get(k) for v in cell["rabbitmq"]])
                rt = ratio_of(cell, k)
                row += [fmt(mu), fmt(mr), "%.2f" % rt if rt is not None else "-"]
            cu, cr = med([v.get(cpu_key) for v in cell["usagi"]]), med([v.get(cpu_key) for v in cell["rabbitmq"]])
            if curve == "latency":
                row.append("%s / %s" % (fmt(med([v.get("broker_pct") for v in cell["usagi"]])),
                                        fmt(med([v.get("broker_pct") for v in cell["rabbitmq"]]))))
                row.append("%s / %s" % (fmt(med([v.get("cons_rate") for v in cell["usagi"]])),
                                        fmt(med([v.get("cons_rate") for v in cell["rabbitmq"]]))))
            else:
                row.append("%s / %s" % (fmt(cu), fmt(cr)))
                if cu is not None and base is None:
                    base = cu
                row.append("%.2fx" % (cu / base) if cu is not None and base else "-")
            if curve != "latency":
                row.append("%s / %s" % (fmt(med([v.get("pub_rate") for v in cell["usagi"]])),
                                        fmt(med([v.get("pub_rate") for v in cell["rabbitmq"]]))))
                row.append("%s / %s" % (fmt(med([v.get("backlog") for v in cell["usagi"]])),
                                        fmt(med([v.get("backlog") for v in cell["rabbitmq"]]))))
            row.append(str(len(cell["pairs"])))
            row.append("%s / %s" % (fmt(med([v.get("other_pct") for v in cell["usagi"]])),
                                    fmt(med([v.get("other_pct") for v in cell["rabbitmq"]]))))
            probs = cell["problems"] + ["%s: %s" % (b, s) for b, s in sorted(cell["skipped"].items())]
            row.append("<br>".join(probs) or "none")
            out.append("| " + " | ".join(row) + " |")
        notes = growth_notes(curve, cells)
        if notes:
            out.append("")
            out += ["* " + n for n in notes]
        out.append("")
    return "\n".join(out)


# ------------------------------------------------------------------ plots
COLORS = {"usagi": "#1b6ca8", "rabbitmq": "#e5732a"}
LABELS = {"usagi": "Usagi", "rabbitmq": "RabbitMQ"}


def plots(records, prefix):
    """One PNG per curve: the figures of both brokers (medians as lines, each run as a dot), the
    ratio Usagi/RabbitMQ, and the broker CPU per unit of work.  Returns the paths, or None
    without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter
    except ImportError:
        return None
    by = collect(records)
    paths = []
    si = FuncFormatter(lambda v, _p: _si(v))
    for curve in [c for c in CURVE_ORDER if c in by]:
        cells = by[curve]
        spec = CURVES[curve]
        xs = sorted(cells)
        mets = METRICS[curve]
        lat = curve == "latency"
        has_pairs = any(cells[x]["pairs"] for x in xs)
        panels = (["main"] if lat else ["m%d" % i for i in range(len(mets))]) + (["ratio"] if has_pairs else []) + ["cpu"]
        height = 2.6 * len(panels) + 1.0
        fig, axes = plt.subplots(len(panels), 1, figsize=(8, height), sharex=True,
                                 gridspec_kw={"height_ratios": [3 if p.startswith("m") or p == "main" else 2
                                                                for p in panels]})
        fig.text(0.5, 1 - 0.25 / height, spec["title"], ha="center", va="center", fontsize=13)
        fig.text(0.5, 1 - 0.52 / height, subtitle(records, curve), ha="center", va="center", fontsize=8,
                 color="#555")
        styles = ["-", "--", ":"]
        for i, p in enumerate(panels):
            ax = axes[i]
            if p == "main" or p.startswith("m"):
                sel = mets if p == "main" else [mets[int(p[1:])]]
                log = _want_log([v.get(k) for x in xs for b in ("usagi", "rabbitmq") for v in cells[x][b]
                                 for k, _l, _h in sel], force_log=lat)
                for j, (k, label, _h) in enumerate(sel):
                    for b in ("usagi", "rabbitmq"):
                        pts = [(x, med([v.get(k) for v in cells[x][b]])) for x in xs]
                        pts = [(x, y) for x, y in pts if y is not None and (y > 0 or not log)]
                        if not pts:
                            continue
                        name = LABELS[b] + (" " + label.split(" ")[0] if lat else "")
                        ax.plot([x for x, _ in pts], [y for _, y in pts], styles[j % 3] if lat else "-",
                                marker="o", color=COLORS[b], label=name)
                        dots = [(x, v.get(k)) for x in xs for v in cells[x][b]
                                if v.get(k) is not None and (v.get(k) > 0 or not log)]
                        ax.scatter([x for x, _ in dots], [y for _, y in dots], s=10, color=COLORS[b], alpha=0.35)
                ylab = "latency (µs)" if lat else sel[0][1]
                ax.set_ylabel(ylab)
                _yaxis(ax, log)
                if ax.get_legend_handles_labels()[0]:
                    ax.legend(fontsize=8, ncol=2 if lat else 1)
            elif p == "ratio":
                rmets = mets[:1] if curve == "size" else mets      # MB/s ratio = msg/s ratio
                for j, (k, label, higher) in enumerate(rmets):
                    pts = [(x, ratio_of(cells[x], k)) for x in xs]
                    pts = [(x, y) for x, y in pts if y is not None]
                    if pts:
                        ax.plot([x for x, _ in pts], [y for _, y in pts], styles[j % 3], marker="s", color="#444",
                                label=label if len(rmets) > 1 else None)
                ax.axhline(1.0, color="#999", linewidth=1)
                better = "higher: Usagi ahead" if mets[0][2] else "lower: Usagi ahead"
                ax.set_ylabel("Usagi / RabbitMQ\n(%s)" % better)
                if len(rmets) > 1:
                    ax.legend(fontsize=8)
                rs = [ratio_of(cells[x], k) for x in xs for k, _l, _h in rmets]
                rs = [r for r in rs if r]
                if rs and max(rs + [1]) / min(rs + [1]) > 10:
                    ax.set_yscale("log")
                    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: "%g" % v))
                    ax.yaxis.set_minor_formatter(FuncFormatter(_minor_25(lambda v: "%g" % v)))
                else:
                    ax.set_ylim(bottom=0, top=max([1.2] + rs) * 1.1)
            else:
                key = "cpu_us_kb" if curve == "size" else ("broker_pct" if lat else "cpu_us")
                log = _want_log([v.get(key) for x in xs for b in ("usagi", "rabbitmq") for v in cells[x][b]])
                for b in ("usagi", "rabbitmq"):
                    pts = [(x, med([v.get(key) for v in cells[x][b]])) for x in xs]
                    pts = [(x, y) for x, y in pts if y is not None and (y > 0 or not log)]
                    if pts:
                        ax.plot([x for x, _ in pts], [y for _, y in pts], "-", marker="o", color=COLORS[b],
                                label=LABELS[b])
                ax.set_ylabel({"cpu_us_kb": "broker CPU µs per\n1,000 B in or out",
                               "broker_pct": "broker CPU %\n(100 = one core)",
                               "cpu_us": "broker CPU µs per\nmessage in or out"}[key])
                _yaxis(ax, log)
                if ax.get_legend_handles_labels()[0]:
                    ax.legend(fontsize=8)
            ax.grid(True, which="major", alpha=0.3)
        ax = axes[-1]
        if spec["xscale"] == "symlog":
            ax.set_xscale("symlog", linthresh=max(1, min([x for x in xs if x > 0] or [1])))
            ax.set_xlim(left=min(xs), right=max(xs) * 1.5)
        elif spec["xscale"] == "log" and len(xs) > 1 and max(xs) / max(min(xs), 1) >= 20:
            ax.set_xscale("log")
        ax.set_xticks(xs)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: _bytes(v)) if curve == "size" else si)
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _p: ""))
        ax.set_xlabel(spec["xlabel"])
        fig.tight_layout(rect=(0, 0, 1, 1 - 0.7 / height))
        path = "%s-%s.png" % (prefix, curve)
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def subtitle(records, curve):
    """What a plot was measured with: sizes, ack mode, window, runs, commit, date."""
    meta = next((r for r in records if r.get("type") == "meta"), {})
    runs = len({r.get("run") for r in records if r.get("type") == "result" and r.get("curve") == curve})
    size = meta.get("depth_size") if curve == "depth" else meta.get("size")
    parts = []
    if curve != "size":
        parts.append("%s B bodies" % size)
    if curve == "latency":
        parts.append("ack, prefetch %s" % (meta.get("prefetch") or 100))
    else:
        parts.append("autoack" if meta.get("prefetch") is None else "ack, prefetch %s" % meta.get("prefetch"))
    parts.append("%gs window after %gs warmup" % (meta.get("duration") or 0, meta.get("warmup") or 0))
    parts.append("%d run%s a point (dots), medians (lines)" % (runs, "" if runs == 1 else "s"))
    parts.append("git %s, %s" % ((meta.get("git") or {}).get("commit"), (meta.get("ts") or "")[:10]))
    return "; ".join(parts)


def _si(v):
    if v == 0:
        return "0"
    for div, suf in ((1000000, "M"), (1000, "k")):
        if abs(v) >= div:
            q = v / div
            return ("%d" % q if q == int(q) else "%.1f" % q) + suf
    return "%g" % v


def _bytes(v):
    for div, suf in ((1 << 20, " MiB"), (1 << 10, " KiB")):
        if v >= div and v % div == 0:
            return "%d%s" % (v // div, suf)
    return "%d B" % v


def _want_log(vals, force_log=False):
    """A log axis when the positive values span more than a factor of 20."""
    vals = [v for v in vals if v and v > 0]
    return bool(vals) and (force_log or max(vals) / min(vals) >= 20)


def _minor_25(fmt):
    """Minor tick labels on a log axis: only at 2 and 5 times a power of ten."""
    return lambda v, _p: fmt(v) if ("%g" % v).replace("0", "").replace(".", "")[:1] in ("2", "5") else ""


def _yaxis(ax, log):
    from matplotlib.ticker import FuncFormatter
    if log:
        ax.set_yscale("log")
        ax.yaxis.set_minor_formatter(FuncFormatter(_minor_25(_si)))
    else:
        ax.set_ylim(bottom=0)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: _si(v)))


# ------------------------------------------------------------------ main
def default_bench_dir():
    for d in (os.environ.get("USAGI_BENCH_DIR"), os.path.join(REPO, "..", "shared", "bench"),
              os.path.join(REPO, "..", "..", "shared", "bench")):
        if d and os.path.isfile(os.path.join(d, "amqp_bench.py")):
            return os.path.normpath(d)
    return os.path.normpath(os.path.join(REPO, "..", "shared", "bench"))


def parse_points(specs, curves, quick):
    pts = {c: list(CURVES[c]["quick" if quick else "points"]) for c in curves}
    for s in specs:
        name, _, vals = s.partition("=")
        if name not in CURVES or not vals:
            raise SystemExit("error: --points wants CURVE=X,Y,...; curves: %s" % ",".join(CURVES))
        pts[name] = [int(float(v)) for v in vals.split(",") if v]
    return pts


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--curves", default=",".join(CURVE_ORDER), help="comma-separated: " + ",".join(CURVE_ORDER))
    ap.add_argument("--points", action="append", default=[], metavar="CURVE=X,Y,...",
                    help="the points of one curve (repeatable), e.g. --points queues=1,10,100")
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run: two points a curve, --duration 2, --warmup 1, --runs 1 unless given")
    ap.add_argument("--runs", type=int, default=None, help="repeats of every point (default 3; 1 with --quick)")
    ap.add_argument("--duration", type=float, default=None, help="measured window, s (default 10; 2 with --quick)")
    ap.add_argument("--warmup", type=float, default=None, help="default 2; 1 with --quick")
    ap.add_argument("--brokers", default="usagi,rabbitmq", help="which to run, in this order within a pair")
    ap.add_argument("--bench-dir", default=default_bench_dir(),
                    help="folder with amqp_bench.py (default: $USAGI_BENCH_DIR or ../shared/bench)")
    ap.add_argument("--usagi-cmd", default="{python} -m usagi.cli.server --port {port} --data-dir {data_dir} "
                                           "--no-management --log-level warning",
                    help="command that starts Usagi for every point (as compare.py)")
    ap.add_argument("--usagi-url", default="", help="use an already running Usagi instead")
    ap.add_argument("--rabbitmq-url", default="amqp://guest:guest@127.0.0.1:5682/%2F")
    ap.add_argument("--rabbitmq-mgmt", default="http://127.0.0.1:15682", help="management API (for the version)")
    ap.add_argument("--rabbitmq-node", default="rabbit@localhost", help="node name for rabbitmqctl (version)")
    ap.add_argument("--rabbitmq-temp", choices=("auto", "never", "always"), default="auto",
                    help="run a curve against a temporary RabbitMQ node (same package, no plugins, ulimit -n "
                         "raised): 'auto' when a point needs more connections than the running node may "
                         "open (default), 'always' for every curve, 'never'")
    ap.add_argument("--size", type=int, default=16, help="body bytes of the queues, connections, fanout and "
                                                         "latency curves (default 16)")
    ap.add_argument("--depth-size", type=int, default=1024, help="body bytes of the depth curve (default 1024)")
    ap.add_argument("--prefetch", type=int, default=100, help="manual ack with this prefetch (default 100)")
    ap.add_argument("--autoack", action="store_true", help="consume with autoack instead (not the latency curve)")
    ap.add_argument("--consumers-publishers", type=int, default=2, help="publishers of the consumers curve")
    ap.add_argument("--mux-procs", type=int, default=1,
                    help="processes per role (publishers, consumers) of the multiplexed driver")
    ap.add_argument("--in-flight", type=int, default=20000,
                    help="unconfirmed messages over all publishers of the multiplexed driver (each has a confirm "
                         "window of max(10, this / publishers)); default 20,000")
    ap.add_argument("--drain-max", type=float, default=20.0,
                    help="s amqp_bench lets its consumers catch up after the window; what is left is counted as "
                         "left in the queues, not lost (default 20)")
    ap.add_argument("--setup-timeout", type=float, default=300.0, help="s for all clients of a point to connect")
    ap.add_argument("--settle", type=float, default=1.0, help="s before reading RSS after filling a queue")
    ap.add_argument("--wait-quiet", type=float, default=0, metavar="PCT",
                    help="before each pair, wait until the machine uses at most PCT %% CPU (compare.wait_quiet)")
    ap.add_argument("--wait-max", type=float, default=60)
    ap.add_argument("--out", default=os.path.join(HERE, "results", datetime.date.today().isoformat() + "-scaling.jsonl"))
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--keep-logs", action="store_true")
    ap.add_argument("--from", dest="from_", default="", help="comma-separated .jsonl files: table and plots only")
    a = ap.parse_args(argv)
    a.runs = a.runs if a.runs is not None else (1 if a.quick else 3)
    a.duration = a.duration if a.duration is not None else (2.0 if a.quick else 10.0)
    a.warmup = a.warmup if a.warmup is not None else (1.0 if a.quick else 2.0)
    base = os.path.splitext(a.out)[0]

    if a.from_:
        recs = []
        for fn in a.from_.split(","):
            with open(fn) as f:
                recs += [json.loads(line) for line in f if line.strip()]
        base = os.path.splitext(a.from_.split(",")[0])[0]
        return report(a, recs, base)

    curves = [c for c in a.curves.split(",") if c]
    bad = [c for c in curves if c not in CURVES]
    if bad:
        ap.error("unknown curve(s) %s; known: %s" % (",".join(bad), ",".join(CURVES)))
    pts = parse_points(a.points, curves, a.quick)
    if any(c in ("size", "fanout", "latency") for c in curves) and \
            not os.path.isfile(os.path.join(a.bench_dir, "amqp_bench.py")):
        sys.exit("error: %s/amqp_bench.py not found (the size, fanout and latency curves use the shared load "
                 "generator); pass --bench-dir or set USAGI_BENCH_DIR" % a.bench_dir)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    logdir = tempfile.mkdtemp(prefix="usagi-scaling-logs-")

    brokers = [b for b in a.brokers.split(",") if b]
    targets = {}
    for b in brokers:
        if b == "usagi":
            targets[b] = C.Target("usagi", *C.parse_url(a.usagi_url, 5672)) if a.usagi_url else \
                C.UsagiProcess(a.usagi_cmd, logdir, a.keep_logs)
        elif b == "rabbitmq":
            targets[b] = C.RabbitMQ(a.rabbitmq_url, a.rabbitmq_mgmt, a.rabbitmq_node)
        else:
            ap.error("unknown broker %r" % b)
    meta = {"type": "meta", "ts": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "argv": sys.argv if argv is None else argv,
            "tool": "scaling", "machine": C.machine_info(), "git": C.git_info(), "points": pts,
            "duration": a.duration, "warmup": a.warmup, "prefetch": None if a.autoack else a.prefetch,
            "size": a.size, "depth_size": a.depth_size}
    rmq = targets.get("rabbitmq")
    shared_limit = None
    if rmq:
        if not rmq.find_pid():
            sys.exit("error: nothing listens on %s:%d; start RabbitMQ or pass --brokers usagi" % (rmq.host, rmq.port))
        meta["rabbitmq_version"] = rmq.version()
        lim = C.nofile_limit(rmq.pid)
        shared_limit = lim[0] if lim else None
        meta["rabbitmq_nofile"] = lim
    records = [meta]
    out = open(a.out, "a")
    out.write(json.dumps(meta) + "\n")
    out.flush()
    print("# %s  git %s  -> %s" % (meta["ts"], meta["git"], a.out), file=sys.stderr)
    t_start = time.monotonic()
    pair = 0

    def one(bname, tgt, curve, x, run, node):
        t0 = time.time()
        gi = C.git_info() if bname == "usagi" else None
        tail = ""
        try:
            tgt.up(curve, run)
            res = measure(a, tgt, curve, x, run)
        except Exception as e:  # noqa: BLE001 - a failed point is a result too
            res = {"errors": ["%s: %s" % (type(e).__name__, e)], "ok": False}
        finally:
            if isinstance(tgt, C.UsagiProcess):
                tail = tgt.log_tail()
                tgt.down()
        if tail.strip():
            res["usagi_log_tail"] = tail[-800:]
        rec = {"type": "result", "ts": time.strftime("%Y-%m-%dT%H:%M:%S"), "tool": "scaling", "curve": curve,
               "x": x, "broker": bname, "run": run, "pair": pair, "elapsed_s": round(time.time() - t0, 1),
               "res": res}
        if node:
            rec["rabbitmq_node"] = node
        if gi:
            rec["git"] = gi
        records.append(rec)
        out.write(json.dumps(rec) + "\n")
        out.flush()
        v = values(curve, x, res)
        shown = {k: round(v[k], 1) for k in ("cons_rate", "drain_rate", "mb_s", "p50_us", "p99_us", "cpu_us",
                                               "broker_pct", "other_pct") if v.get(k) is not None}
        print("run %d %-10s %-8s %-8s %5.1fs ok=%s %s %s" % (
            run, curve, fmtx(x), bname, time.time() - t0, res.get("ok"), shown,
            ("ERR " + "; ".join(map(str, res.get("errors") or []))[:300]) if res.get("errors") else ""),
            file=sys.stderr)
        return res

    try:
        for run in range(a.runs):
            for curve in curves:
                need = max(CURVES[curve]["conns"](x, a) for x in pts[curve])
                rtgt, node = rmq, None
                if rmq and (a.rabbitmq_temp == "always" or
                            (a.rabbitmq_temp == "auto" and shared_limit and need + 50 > shared_limit)):
                    rtgt = C.RabbitMQTemp(rmq, logdir)
                    node = "temporary node (no plugins): %d connections needed, the running node may open %s files" % (
                        need, shared_limit)
                    try:
                        rtgt.up(curve, run)
                    except Exception as e:  # noqa: BLE001
                        print("temporary RabbitMQ node did not start: %s" % e, file=sys.stderr)
                        rtgt.down()
                        rtgt = None
                    orig_up = rtgt.up if rtgt else None
                    if rtgt:
                        rtgt.up = lambda sid, r, _t=rtgt: _t.find_pid()   # started once for the curve
                elif rmq:
                    node = "running node %s:%d" % (rmq.host, rmq.port)
                saturated_at = {}
                try:
                    for x in pts[curve]:
                        if a.wait_quiet:
                            C.wait_quiet(a.wait_quiet, a.wait_max)
                        pair += 1
                        for b in brokers:
                            tgt = targets[b] if b == "usagi" else rtgt
                            if tgt is None:
                                continue
                            if b in saturated_at:
                                rec = {"type": "result", "tool": "scaling", "curve": curve, "x": x, "broker": b,
                                       "run": run, "pair": pair, "res": {},
                                       "skipped": "saturated at %s msg/s" % fmtx(saturated_at[b])}
                                records.append(rec)
                                out.write(json.dumps(rec) + "\n")
                                continue
                            res = one(b, tgt, curve, x, run, node if b == "rabbitmq" else None)
                            if curve == "latency" and saturated(res, x):
                                saturated_at[b] = x
                finally:
                    if rtgt is not None and rtgt is not rmq:
                        rtgt.up = orig_up
                        rtgt.down()
    except KeyboardInterrupt:
        print("interrupted: the table below has what was measured so far", file=sys.stderr)
    out.close()
    if a.keep_logs:
        print("broker logs kept in %s" % logdir, file=sys.stderr)
    else:
        shutil.rmtree(logdir, ignore_errors=True)
    rc = report(a, records, base, argv)
    print("wrote %s (%.1f min)" % (a.out, (time.monotonic() - t_start) / 60), file=sys.stderr)
    return rc


def report(a, records, base, argv=None):
    meta = next((r for r in records if r.get("type") == "meta"), {})
    tab = table(records)
    print(tab)
    md = base + ".md"
    with open(md, "w") as f:
        f.write("Generated by `%s` at %s, git %s\n\n%s\n" % (
            " ".join(shlex.quote(x) for x in (sys.argv if argv is None else ["scaling.py"] + list(argv))),
            meta.get("ts"), meta.get("git"), tab))
    print("wrote %s" % md, file=sys.stderr)
    if a.no_plots:
        return 0
    paths = plots(records, base)
    if paths is None:
        print("plots skipped: matplotlib is not installed (pip install '.[bench]'); the data is in the .jsonl "
              "and `--from FILE` draws them later", file=sys.stderr)
    else:
        for p in paths:
            print("wrote %s" % p, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
