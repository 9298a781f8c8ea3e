#!/usr/bin/env python3
"""Memory per unit of work: RSS per queued message (by size), per idle queue, per connection
and per channel, Usagi against RabbitMQ.

    python benchmarks/memory_units.py                       # every kind, both brokers, ~15 min
    python benchmarks/memory_units.py --quick --brokers usagi
    python benchmarks/memory_units.py --kinds queue,conn --queues 50000
    python benchmarks/memory_units.py --from benchmarks/results/2026-12-07-memory.jsonl

What a user can create costs memory, and a broker's capacity is its RAM divided by that cost.
Method: for each kind, a fresh broker (Usagi: a new process; RabbitMQ: a temporary node of
the same package with no plugins, so that nobody else's queues or connections move its RSS; see
--rabbitmq-temp).  After --settle s its RSS is read (r0, the VmRSS of the process and its
children, /proc); one tenth of N units are created, RSS read (r1); the rest, RSS read (r2).
The figure is the slope (r2 - r1) / (0.9 N): the memory each further unit costs, free of
what the first allocations of a fresh process and the allocator's reuse of freed memory do to
small counts.  The average (r2 - r0) / N is given too.

Units: `msgS` a message of S bytes in one queue with no consumer (transient, published by
one connection; Usagi pages a queue past 50,000 messages or 32 MiB to segment files, so the
figure for large N is its steady state, and the data dir's size is reported as well); `queue` an
idle transient queue (declared pipelined on one channel); `conn` a connection with no channel
(handshakes in lock-step batches, heartbeat 0, as compare.py's connN); `channel` an open channel
on connections opened before r0 (1,000 a connection).
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import resource
import shlex
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import compare as C  # noqa: E402
import scaling as S  # noqa: E402

KINDS = {
    "msg16": ("queued message, 16 B body", "messages", 16),
    "msg1k": ("queued message, 1 KiB body", "messages", 1024),
    "msg16k": ("queued message, 16 KiB body", "messages", 16384),
    "queue": ("idle queue", "queues", None),
    "conn": ("connection (no channel)", "conns", None),
    "channel": ("channel", "channels", None),
}
CHANNELS_PER_CONN = 1000


def fresh_rss(tgt, settle):
    time.sleep(settle)
    return C.rss_kib(tgt.pid)


def measure(a, tgt, kind, uniq):
    """r0, r1, r2 around creating N/10 and then N units of `kind`; returns the result dict."""
    _desc, count_arg, size = KINDS[kind]
    n = getattr(a, count_arg)
    n1 = max(1, n // 10)
    res = {"kind": kind, "n": n, "n1": n1, "errors": []}
    held = []      # connections to close at the end
    c = None
    try:
        if count_arg == "messages":
            q = uniq + "-q"
            c = tgt.raw()
            c.channel_open(1)
            S.declare_many(c, [q])
            r0 = fresh_rss(tgt, a.settle)
            S.fill(tgt, q, n1, size)
            r1 = fresh_rss(tgt, a.settle)
            f2 = S.fill(tgt, q, n - n1, size, total=n)
            r2 = fresh_rss(tgt, a.settle)
            res["queued"] = S.declare_many(c, [q], passive=True)[0]
            res["fill_rate"] = f2.get("fill_rate")
            res["data_dir_mib"] = C.disk_mib(tgt.data_dir())
            if res["queued"] != n:
                res["errors"].append("%d of %d messages queued" % (res["queued"], n))
            S.delete_many(c, [q])
        elif count_arg == "queues":
            names = ["%s-%d" % (uniq, i) for i in range(n)]
            c = tgt.raw()
            c.channel_open(1)
            r0 = fresh_rss(tgt, a.settle)
            t0 = time.monotonic()
            S.declare_many(c, names[:n1])
            r1 = fresh_rss(tgt, a.settle)
            S.declare_many(c, names[n1:])
            res["declare_rate"] = round(n / (time.monotonic() - t0 - a.settle))
            r2 = fresh_rss(tgt, a.settle)
            if not a.no_cleanup:
                S.delete_many(c, names)
        elif count_arg == "conns":
            addr = (tgt.host, tgt.port, tgt.user, tgt.password, tgt.vhost)
            r0 = fresh_rss(tgt, a.settle)
            held += S.connect_many(addr, n1, channel=False)
            r1 = fresh_rss(tgt, a.settle)
            held += S.connect_many(addr, n - n1, channel=False)
            r2 = fresh_rss(tgt, a.settle)
        else:
            addr = (tgt.host, tgt.port, tgt.user, tgt.password, tgt.vhost)
            k = math.ceil(n / CHANNELS_PER_CONN)
            held += S.connect_many(addr, k, channel=False)
            per = [min(CHANNELS_PER_CONN, n - i * CHANNELS_PER_CONN) for i in range(k)]
            r0 = fresh_rss(tgt, a.settle)
            open_channels(held, per, n1)
            r1 = fresh_rss(tgt, a.settle)
            open_channels(held, per, n, start=n1)
            r2 = fresh_rss(tgt, a.settle)
    except (OSError, C.AMQPFail, RuntimeError) as e:
        res["errors"].append("%s: %s" % (type(e).__name__, e))
        r0 = r1 = r2 = None
    finally:
        if held:
            S.close_many(held)
        if c is not None:
            c.close()
    res.update(rss0_kib=r0, rss1_kib=r1, rss2_kib=r2)
    if None not in (r0, r1, r2):
        res["bytes_per_unit"] = round((r2 - r1) * 1024 / (n - n1)) if n > n1 else None
        res["bytes_per_unit_avg"] = round((r2 - r0) * 1024 / n)
    if not tgt.alive():
        res["errors"].append("broker process is gone")
    res["ok"] = not res["errors"]
    return res


def open_channels(conns, per, upto, start=0):
    """Open channels 2, 3, ... on the connections, `per[i]` on connection i, the units numbered
    start..upto-1 in connection order; pipelined on each connection."""
    i = 0
    for c, k in zip(conns, per):
        lo, hi = max(start - i, 0), min(upto - i, k)
        if hi > lo:
            S.rpc_many(c, [C.mframe(ch + 2, 20, 10, C._ss("")) for ch in range(lo, hi)], 20, 11)
        i += k


def table(records):
    rows = {}
    for r in records:
        if r.get("type") == "result":
            rows.setdefault(r["kind"], {}).setdefault(r["broker"], []).append(r["res"])
    out = ["| unit | N | Usagi bytes per unit | RabbitMQ bytes per unit | Usagi/RabbitMQ | average over N: Usagi / RabbitMQ "
           "| Usagi data dir at N (MiB) | runs | errors |",
           "|---|---:|---:|---:|---:|---|---:|---|---|"]
    for kind in [k for k in KINDS if k in rows]:
        cell = rows[kind]
        u, r = cell.get("usagi", []), cell.get("rabbitmq", [])

        def m(rs, key):
            v = [x.get(key) for x in rs if x.get(key) is not None]
            return statistics.median(v) if v else None
        mu, mr = m(u, "bytes_per_unit"), m(r, "bytes_per_unit")
        n = (u or r)[0].get("n")
        errs = ["%s: %s" % (b, "; ".join(x.get("errors") or [])[:120]) for b, rs in cell.items() for x in rs
                if x.get("errors")]
        out.append("| %s | %s | %s | %s | %s | %s / %s | %s | %d / %d | %s |" % (
            KINDS[kind][0], "{:,}".format(n), C.fmt(mu), C.fmt(mr),
            "%.3f" % (mu / mr) if mu is not None and mr else "-",
            C.fmt(m(u, "bytes_per_unit_avg")), C.fmt(m(r, "bytes_per_unit_avg")), C.fmt(m(u, "data_dir_mib")),
            len(u), len(r), "<br>".join(errs) or "none"))
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kinds", default=",".join(KINDS), help="comma-separated: " + ",".join(KINDS))
    ap.add_argument("--messages", type=int, default=100000, help="N for the msg kinds (default 100,000)")
    ap.add_argument("--queues", type=int, default=100000, help="N idle queues (default 100,000)")
    ap.add_argument("--conns", type=int, default=1000, help="N connections (default 1,000)")
    ap.add_argument("--channels", type=int, default=10000, help="N channels (default 10,000)")
    ap.add_argument("--quick", action="store_true", help="small counts (a smoke run): 2,000 of each, 200 connections")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--settle", type=float, default=3.0, help="s before each RSS reading")
    ap.add_argument("--brokers", default="usagi,rabbitmq")
    ap.add_argument("--usagi-cmd", default="{python} -m usagi.cli.server --port {port} --data-dir {data_dir} "
                                           "--no-management --log-level warning")
    ap.add_argument("--usagi-url", default="", help="an already running Usagi (not fresh: the slopes still hold)")
    ap.add_argument("--rabbitmq-url", default="amqp://guest:guest@127.0.0.1:5682/%2F")
    ap.add_argument("--rabbitmq-mgmt", default="http://127.0.0.1:15682")
    ap.add_argument("--rabbitmq-temp", choices=("always", "never"), default="always",
                    help="'always': a fresh temporary RabbitMQ node per kind and run (default); 'never': the "
                         "running node, shared with whatever else uses it")
    ap.add_argument("--no-cleanup", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=os.path.join(HERE, "results", datetime.date.today().isoformat() + "-memory.jsonl"))
    ap.add_argument("--from", dest="from_", default="", help="comma-separated .jsonl files: the table only")
    a = ap.parse_args(argv)
    if a.quick:
        a.messages = min(a.messages, 2000)
        a.queues = min(a.queues, 2000)
        a.channels = min(a.channels, 2000)
        a.conns = min(a.conns, 200)
        a.settle = min(a.settle, 1.0)
    if a.from_:
        recs = []
        for fn in a.from_.split(","):
            with open(fn) as f:
                recs += [json.loads(line) for line in f if line.strip()]
        print(table(recs))
        return 0
    kinds = [k for k in a.kinds.split(",") if k]
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        ap.error("unknown kind(s) %s; known: %s" % (",".join(bad), ",".join(KINDS)))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    logdir = tempfile.mkdtemp(prefix="usagi-memory-logs-")
    brokers = [b for b in a.brokers.split(",") if b]
    meta = {"type": "meta", "tool": "memory_units", "ts": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "argv": sys.argv if argv is None else argv, "machine": C.machine_info(), "git": C.git_info(),
            "counts": {"messages": a.messages, "queues": a.queues, "conns": a.conns, "channels": a.channels},
            "settle": a.settle, "rabbitmq_temp": a.rabbitmq_temp}
    rmq = None
    if "rabbitmq" in brokers:
        rmq = C.RabbitMQ(a.rabbitmq_url, a.rabbitmq_mgmt, "")
        if not rmq.find_pid():
            sys.exit("error: nothing listens on %s:%d; start RabbitMQ or pass --brokers usagi" % (rmq.host, rmq.port))
        meta["rabbitmq_version"] = rmq.version()
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    records = [meta]
    out = open(a.out, "a")
    out.write(json.dumps(meta) + "\n")
    out.flush()
    t_start = time.monotonic()
    try:
        for run in range(a.runs):
            for kind in kinds:
                for b in brokers:
                    if b == "usagi":
                        tgt = C.Target("usagi", *C.parse_url(a.usagi_url, 5672)) if a.usagi_url else \
                            C.UsagiProcess(a.usagi_cmd, logdir, False)
                    else:
                        tgt = C.RabbitMQTemp(rmq, logdir) if a.rabbitmq_temp == "always" else rmq
                    t0 = time.time()
                    try:
                        tgt.up(kind, run)
                        res = measure(a, tgt, kind, "usagi-memory-%d-%s-r%d" % (os.getpid(), kind, run))
                    except Exception as e:  # noqa: BLE001 - a failed measurement is a result too
                        res = {"kind": kind, "errors": ["%s: %s" % (type(e).__name__, e)], "ok": False}
                    finally:
                        tgt.down()
                    rec = {"type": "result", "tool": "memory_units", "ts": time.strftime("%Y-%m-%dT%H:%M:%S"),
                           "kind": kind, "broker": b, "run": run, "elapsed_s": round(time.time() - t0, 1), "res": res}
                    if b == "rabbitmq":
                        rec["rabbitmq_node"] = "temporary node (no plugins)" if a.rabbitmq_temp == "always" else \
                            "running node %s:%d" % (rmq.host, rmq.port)
                    records.append(rec)
                    out.write(json.dumps(rec) + "\n")
                    out.flush()
                    print("run %d %-8s %-8s %6.1fs ok=%s bytes/unit %s (avg %s) %s" % (
                        run, kind, b, time.time() - t0, res.get("ok"), res.get("bytes_per_unit"),
                        res.get("bytes_per_unit_avg"), "; ".join(res.get("errors") or [])[:300]), file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted: the table below has what was measured so far", file=sys.stderr)
    out.close()
    shutil.rmtree(logdir, ignore_errors=True)
    tab = table(records)
    print(tab)
    md = os.path.splitext(a.out)[0] + ".md"
    with open(md, "w") as f:
        f.write("Generated by `%s` at %s, git %s\n\nMethod: a fresh broker per unit kind; RSS (VmRSS of the "
                "broker's process tree) read after creating N/10 and N units; bytes per unit = the slope between "
                "the two readings. RabbitMQ: %s.\n\n%s\n" % (
                    " ".join(shlex.quote(x) for x in (sys.argv if argv is None else ["memory_units.py"] + list(argv))),
                    meta["ts"], meta["git"], "a temporary node per kind" if a.rabbitmq_temp == "always" else
                    "the running node", tab))
    print("wrote %s and %s (%.1f min)" % (a.out, md, (time.monotonic() - t_start) / 60), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
