"""Measure start-up time with a large backlog of persistent messages.

    python tools/startup_time.py [--messages 1000000] [--size 1024]

Fills a fresh data dir through the store interface (a durable queue 'backlog' holding N
persistent messages), then starts `usagi-server` on it and reports the time until the AMQP
listener is up, what the server says it recovered, its RSS, and checks the first message.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from usagi.storage.sqlite import SQLiteStore  # noqa: E402


def fill(data_dir: str, n: int, size: int):
    store = SQLiteStore(data_dir)
    store.open()
    store.put_definition("vhost", ("/",), {"name": "/", "description": "", "tags": [],
                                           "default_queue_type": "classic"})
    store.put_definition("queue", ("/", "backlog"), {"name": "backlog", "vhost": "/", "durable": True,
                                                     "auto_delete": False, "arguments": {}})
    body = b"x" * size
    props = b"\x10\x00\x02"          # delivery_mode 2
    batch = 10000
    for start in range(0, n, batch):
        for i in range(start, min(n, start + batch)):
            store.add_message(i + 1, "", "backlog", props, body)
            store.enqueue("/", "backlog", i + 1, i + 1)
        store.commit()
    store.close()


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--size", type=int, default=1024)
    a = ap.parse_args()
    d = tempfile.mkdtemp(prefix="usagi-startup-")
    try:
        t = time.monotonic()
        fill(d, a.messages, a.size)
        print(f"filled {a.messages} x {a.size} B in {time.monotonic() - t:.1f}s "
              f"({os.path.getsize(os.path.join(d, 'usagi.db')) / 1e6:.0f} MB on disk)", flush=True)
        t = time.monotonic()
        p = subprocess.Popen([sys.executable, "-m", "usagi.cli.server", "--data-dir", d, "--port", "0",
                              "--host", "127.0.0.1", "--no-management"], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines = []
        for line in p.stdout:
            lines.append(line)
            if re.search(r"AMQP listener on", line):
                break
        up = time.monotonic() - t
        rec = next((ln.strip() for ln in lines if "recovered" in ln), "")
        print(f"listener up after {up:.2f}s; RSS {rss_mb(p.pid):.0f} MB")
        print(rec)
        p.terminate()
        p.wait(60)
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
