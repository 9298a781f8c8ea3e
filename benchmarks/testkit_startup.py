"""How long a test suite waits for a usagi.testing broker: start (until it accepts connections and
its ports are known) and stop, in a thread and in a child process, with and without the
management API.

Each round runs in a fresh interpreter, so that the first start in a thread includes what a test
run pays once: importing the broker (and aiohttp for the management API). The later starts in
the same interpreter are what a fresh broker per test costs.

    python benchmarks/testkit_startup.py [--rounds 5]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ROUND = r"""
import json, sys, time
t0 = time.perf_counter()
from usagi.testing import start_broker
mode, management = sys.argv[1], sys.argv[2] == "1"
out = {"import": time.perf_counter() - t0, "starts": [], "stops": []}
for _ in range(5):
    t = time.perf_counter()
    b = start_broker(mode, management=management)
    out["starts"].append(time.perf_counter() - t)
    t = time.perf_counter()
    b.stop()
    out["stops"].append(time.perf_counter() - t)
print(json.dumps(out))
"""


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    print(f"{'mode':<8} {'mgmt':<5} {'first start':>12} {'next starts':>12} {'stop':>8}   (medians, ms)")
    for mode in ("thread", "process"):
        for management in ("1", "0"):
            first, later, stops = [], [], []
            for _ in range(args.rounds):
                res = subprocess.run([sys.executable, "-c", ROUND, mode, management], env=env, cwd=ROOT,
                                     capture_output=True, text=True, check=True)
                r = json.loads(res.stdout.strip().splitlines()[-1])
                first.append(r["starts"][0])
                later += r["starts"][1:]
                stops += r["stops"]
            print(f"{mode:<8} {'on' if management == '1' else 'off':<5} {statistics.median(first) * 1e3:>12.1f} "
                  f"{statistics.median(later) * 1e3:>12.1f} {statistics.median(stops) * 1e3:>8.1f}")


if __name__ == "__main__":
    main()
