#!/usr/bin/env python3
"""Several brokers that are already running, measured interleaved with the shared load generator.

    python benchmarks/interleave.py --targets base=5721,pure=5731,compiled=5711,rabbitmq=5682 \\
        --scenarios a16,b16,c16,d16 --rounds 3 --out benchmarks/results/DATE-interleaved.jsonl

compare.py starts one Usagi per scenario and pairs it with RabbitMQ; this script compares any
number of brokers started beforehand (say, two builds of Usagi and RabbitMQ): every round runs each
scenario against each target in turn, so that all see the same background load. It prints and
stores per run the rate and the broker's CPU per message (broker CPU % x 10^4 / rate), which moves
much less with the machine's load than the rate does, then the medians.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from compare import SCENARIOS  # noqa: E402


def rate(sid: str, r: dict):
    return r.get("conf_rate") if sid.startswith("c") else r.get("cons_rate")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", required=True, help="name=port,... of brokers already running on 127.0.0.1")
    ap.add_argument("--scenarios", default="a16,b16,c16,d16")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", default="8")
    ap.add_argument("--warmup", default="2")
    ap.add_argument("--bench-dir", default=os.path.normpath(os.path.join(HERE, "..", "..", "shared", "bench")))
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    targets = [t.split("=") for t in a.targets.split(",")]
    sids = a.scenarios.split(",")
    out = open(a.out, "a") if a.out else None
    got: dict = {}
    for rnd in range(a.rounds):
        for sid in sids:
            for name, port in targets:
                cmd = [sys.executable, os.path.join(a.bench_dir, "amqp_bench.py"), "--host", "127.0.0.1",
                       "--port", port, "-d", a.duration, "--warmup", a.warmup, "--quiet"] + SCENARIOS[sid][2].split()
                p = subprocess.run(cmd, capture_output=True, text=True)
                lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
                if not lines:
                    print("round %d %s %s: no result (rc %d)" % (rnd, sid, name, p.returncode), file=sys.stderr)
                    continue
                r = json.loads(lines[-1])
                v = rate(sid, r)
                cpu = r.get("cpu") or {}
                us = cpu.get("broker_pct", 0) * 1e4 / v if v else None
                got.setdefault((sid, name), []).append((v, us))
                rec = {"round": rnd, "scenario": sid, "target": name, "rate": v, "broker_cpu_us_per_msg": us,
                       "latency": r.get("latency"), "cpu": cpu, "ok": r.get("ok")}
                if out:
                    out.write(json.dumps(rec) + "\n")
                    out.flush()
                print("round %d %-5s %-10s %10.0f msg/s  %6.2f us CPU/msg  other CPU %s%%  ok=%s" % (
                    rnd, sid, name, v or 0, us or 0, cpu.get("other_pct"), r.get("ok")), flush=True)
    print("\nmedians: rate (msg/s), broker CPU per message (us)")
    for (sid, name), vals in sorted(got.items()):
        rates = [v for v, _ in vals if v]
        uss = [u for _, u in vals if u]
        print("%-5s %-10s %10.0f  %6.2f" % (sid, name, statistics.median(rates) if rates else 0,
                                             statistics.median(uss) if uss else 0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
