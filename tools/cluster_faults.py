#!/usr/bin/env python3
"""The long fault run: a 3-node cluster with a 3-member etcd, publishers with confirms and
consumers with manual acks on real clients (aio-pika), and faults one after another.

    python tools/cluster_faults.py --faults 200                 # every kind of fault, in turn
    python tools/cluster_faults.py --faults 50 --kinds kill-leader,pause-leader --ttl 5
    python tools/cluster_faults.py --faults 210 --consumers 4 --rate 350    # a bounded backlog
    python tools/cluster_faults.py --faults 220 --partitions    # crashes and partitions (root, nft)

Kinds: kill-leader, kill-follower, pause-leader (SIGSTOP past the lease), term-leader (graceful),
kill-etcd (one member of three), kill-etcd-leader; with --partitions (nodes and etcd members in
network namespaces, links cut with nftables) also isolate-leader, cut-leader-etcd,
cut-leader-followers, cut-follower and drop-link. After the last fault everything is healed and
the queue drained; the checker prints lost (confirmed, never drained: must be 0), unexpected (must
be 0), duplicated, recovered (unconfirmed yet delivered) and unknown publishes, and the failover
time of each kind of fault (from the fault to the first confirm of a publish sent after it).
The split-brain probe reads
the nodes' logs: a confirm by a leader past its lease deadline, or after a later leader's
election, is a violation. Exit status 1 if anything was lost or unexpected, or on a violation. The short version runs in the test suite
(tests/cluster/test_fault_run.py).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "cluster"))
sys.path.insert(0, REPO)

from faults import KINDS, PARTITIONS, run_with_workload, split_brain, summary  # noqa: E402
from harness import Cluster  # noqa: E402
from workload import Workload  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--faults", type=int, default=200)
    p.add_argument("--kinds", default=",".join(KINDS))
    p.add_argument("--ttl", type=int, default=2, help="lease TTL of the nodes, seconds (default 2)")
    p.add_argument("--publishers", type=int, default=3)
    p.add_argument("--consumers", type=int, default=2)
    p.add_argument("--window", type=int, default=50, help="unconfirmed publishes per publisher")
    p.add_argument("--rate", type=float, default=None,
                   help="publishes per second per publisher (default: as fast as confirms come); a rate the "
                        "consumers keep up with holds the backlog a new leader loads down")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default=None, help="append the result as one JSON line to this file")
    p.add_argument("--keep-logs", default=None, help="copy the nodes' data and logs here at the end")
    p.add_argument("--partitions", action="store_true",
                   help="run the nodes and etcd in network namespaces and add the partition kinds")
    a = p.parse_args()
    kinds = [k for k in a.kinds.split(",") if k]
    if a.partitions and a.kinds == ",".join(KINDS):
        kinds += list(PARTITIONS)
    known = KINDS + (PARTITIONS if a.partitions else ())
    bad = [k for k in kinds if k not in known]
    if bad:
        p.error(f"unknown kinds {bad}; known: {', '.join(known)}")
    if a.partitions:
        from netns import netns_missing
        why = netns_missing()
        if why:
            p.error(f"--partitions: {why}")
    c = Cluster(3, etcd_members=3, ttl=a.ttl, netns=a.partitions).start()
    t0 = time.monotonic()
    try:
        wl = Workload(c.urls(), publishers=a.publishers, consumers=a.consumers, window=a.window, rate=a.rate)

        run = run_with_workload(c, wl, a.faults, kinds=kinds, seed=a.seed,
                                log=lambda s: print(f"{time.monotonic() - t0:8.1f}s {s}", flush=True))
        result = wl.check()
        fo = summary(run.failovers())
        took = time.monotonic() - t0
        probe = split_brain([open(n.log_path, errors="replace").read() for n in c.nodes])
    finally:
        c.stop()
        if a.keep_logs:
            import shutil
            shutil.copytree(c.root, a.keep_logs, dirs_exist_ok=True)
        c.cleanup()
    print()
    print(f"{a.faults} faults in {took / 60:.1f} min, lease TTL {a.ttl} s")
    print(f"publishes: {result['attempted']} attempted, {result['ok']} confirmed, {result['fail']} refused, "
          f"{result['unknown']} unknown")
    print(f"lost {result['lost_count']}, unexpected {result['unexpected_count']}, duplicated "
          f"{result['duplicated']}, recovered {result['recovered']}")
    print(f"leaders that went with no in-sync node to take over (brought back): {run.no_successor}")
    print(f"split-brain probe: {probe['elections']} elections, {probe['leader_ends']} leader ends, "
          f"{len(probe['violations'])} violations")
    for v in probe["violations"][:20]:
        print("  " + v)
    print()
    print("| fault | n | failover p50 (s) | failover max (s) |")
    print("|---|---:|---:|---:|")
    for kind in kinds:
        s = fo.get(kind)
        if s:
            print(f"| {kind} | {s['n']} | {s['p50']} | {s['max']} |")
    if a.out:
        with open(a.out, "a") as f:
            f.write(json.dumps({"at": time.strftime("%Y-%m-%dT%H:%M:%S"), "faults": a.faults, "ttl": a.ttl,
                                "minutes": round(took / 60, 1), **{k: v for k, v in result.items()
                                                                    if k not in ("lost", "unexpected")},
                                "failover": fo, "split_brain": probe, "no_successor": run.no_successor}) + "\n")
    return 1 if result["lost_count"] or result["unexpected_count"] or probe["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
