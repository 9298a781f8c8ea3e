#!/usr/bin/env python3
"""A 3-node Usagi cluster against a single node, interleaved, on the same machine.

    python benchmarks/cluster_bench.py --runs 3
    python benchmarks/cluster_bench.py --runs 1 --scenario "-s 16 --persistent --confirm 1000 --prefetch 100"

Each run measures a fresh single node, then a fresh 3-node cluster (one etcd member; nodes,
etcd and the load generator share this machine's cores), with the shared load generator
(`amqp_bench.py`, --bench-dir) connected to the leader, and once more through a follower (its
connections forwarded to the leader). Reported per run: confirmed-and-delivered msg/s, the
cluster's ratio to the single node, and the leader's CPU time per message (µs; /proc/PID/stat
over the measured run, warm-up and drain included, divided by the messages delivered).
The cluster is started by the test suite's harness (tests/cluster), with a real etcd.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "cluster"))
sys.path.insert(0, os.path.join(REPO, "tests"))
CLK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def bench(bench_dir: str, host: str, port: int, args: str, pid: int, duration: int) -> dict:
    cmd = [sys.executable, os.path.join(bench_dir, "amqp_bench.py"), "--host", host, "--port", str(port),
           "-d", str(duration), "--broker-pid", str(pid), *args.split()]
    c0 = cpu_seconds(pid)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration * 10 + 120)
    c1 = cpu_seconds(pid)
    lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"load generator failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    r = json.loads(lines[-1])
    delivered = r.get("consumed") or r.get("cons_count") or 0
    r["leader_cpu_s"] = c1 - c0
    r["cpu_us_per_msg"] = (c1 - c0) / delivered * 1e6 if delivered else None
    return r


def rate(r: dict) -> float:
    return float(r.get("cons_rate") or r.get("rate") or 0)


def run_single(bench_dir, scenario, duration):
    from support.harness import ServerProcess
    srv = ServerProcess().start()
    try:
        return bench(bench_dir, srv.host, srv.port, scenario, srv.proc.pid, duration)
    finally:
        srv.cleanup()


def run_cluster(bench_dir, scenario, duration, via_follower: bool):
    from harness import Cluster
    c = Cluster(3, etcd_members=1, ttl=5).start()
    try:
        c.wait_isr(3)
        leader = c.wait_leader()
        target = c.followers()[0] if via_follower else leader
        return bench(bench_dir, target.host, target.port, scenario, leader.proc.pid, duration)
    finally:
        c.cleanup()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--duration", type=int, default=10)
    p.add_argument("--scenario", default="-s 16 --persistent --confirm 1000 --prefetch 100")
    p.add_argument("--bench-dir", default=os.path.join(REPO, "..", "shared", "bench"))
    p.add_argument("--no-follower", action="store_true", help="skip the run through a follower")
    p.add_argument("--out", default=None, help="JSON lines of every measurement")
    a = p.parse_args()
    rows = []
    for i in range(a.runs):
        single = run_single(a.bench_dir, a.scenario, a.duration)
        lead = run_cluster(a.bench_dir, a.scenario, a.duration, False)
        fol = None if a.no_follower else run_cluster(a.bench_dir, a.scenario, a.duration, True)
        row = {"run": i + 1, "single": rate(single), "cluster": rate(lead),
               "ratio": rate(lead) / rate(single) if rate(single) else None,
               "via_follower": rate(fol) if fol else None,
               "single_cpu_us": single["cpu_us_per_msg"], "leader_cpu_us": lead["cpu_us_per_msg"]}
        rows.append(row)
        print(json.dumps(row), flush=True)
        if a.out:
            with open(a.out, "a") as f:
                for kind, r in (("single", single), ("cluster", lead), ("via-follower", fol)):
                    if r is not None:
                        f.write(json.dumps({"run": i + 1, "kind": kind, "scenario": a.scenario,
                                            "at": time.strftime("%Y-%m-%dT%H:%M:%S"), **r}) + "\n")

    def med(k):
        vals = [r[k] for r in rows if r[k] is not None]
        return statistics.median(vals) if vals else None
    print()
    print(f"scenario: {a.scenario}, {a.runs} interleaved runs of {a.duration} s")
    print("| | single node | 3-node cluster (leader) | ratio | through a follower |")
    print("|---|---:|---:|---:|---:|")
    vf = med("via_follower")
    print(f"| msg/s (median) | {med('single'):.0f} | {med('cluster'):.0f} | {med('ratio'):.2f} | "
          f"{'' if vf is None else f'{vf:.0f}'} |")
    print(f"| broker CPU per message (µs) | {med('single_cpu_us'):.1f} | {med('leader_cpu_us'):.1f} | | |")


if __name__ == "__main__":
    main()
