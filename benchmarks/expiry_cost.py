"""What a mass expiry costs the event loop, in process, without sockets.

    python benchmarks/expiry_cost.py [--messages 1000000] [--dlx]

A queue holds N small messages that all fall due at the same moment (per-message `expiration`,
most of them paged out past the queue's in-memory budget, as in a server); then the broker's
expiry runs turn after turn, as the server's timer and its follow-up turns call it. Every other
client waits behind one turn, so the figure that matters is the longest turn (and how the turns
are spread), not the total. With --dlx the expired messages are dead-lettered to another queue.
"""
from __future__ import annotations

import argparse
import gc
import os
import shutil
import struct
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from usagi.amqp import methods as M  # noqa: E402
from usagi.amqp import properties as P  # noqa: E402
from usagi.amqp.frames import method_frame  # noqa: E402
from usagi.core.broker import Broker  # noqa: E402
from usagi.model.queue import PAGING  # noqa: E402

from hotpath import opened  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--size", type=int, default=16)
    ap.add_argument("--dlx", action="store_true", help="dead-letter the expired messages to another queue")
    a = ap.parse_args()
    gc.set_threshold(50_000, 50, 100)       # as the server runs (server/app.py)
    d = tempfile.mkdtemp(prefix="usagi-expiry-bench-")
    PAGING["dir"] = d
    try:
        b = Broker()
        b.bootstrap()
        pub = opened(b)
        args = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dead"} if a.dlx else {}
        pub.data_received(method_frame(1, M.QueueDeclare(0, "dead", False, False, False, False, False, {}).encode()))
        pub.data_received(method_frame(1, M.QueueDeclare(0, "mass", False, False, False, False, False,
                                                         args).encode()))
        b.flush_output()
        body = b"x" * a.size
        head = method_frame(1, M.BasicPublish(0, "", "mass", False, False).encode())
        tail = struct.pack(">BHI", 3, 1, a.size) + body + b"\xce"
        t0 = time.time()
        due = t0 + 3600                       # far enough; the clock is moved past it below
        sent = 0
        while sent < a.messages:
            exp = str(int((due - time.time()) * 1000)).encode()
            props = P.encode({"expiration": exp.decode()})
            one = head + struct.pack(">BHI", 2, 1, 12 + len(props)) + struct.pack(">HHQ", 60, 0, a.size) + \
                props + b"\xce" + tail
            n = min(1000, a.messages - sent)
            pub.data_received(one * n)
            sent += n
        b.flush_output()
        q = b.vhosts["/"].queues["mass"]
        print(f"{a.messages} messages of {a.size} B, {q.paged} paged out, filled in {time.time() - t0:.1f} s")
        # every one of them is due: the clock moves past their deadline
        import usagi.core.expiry as expiry_mod

        class Later:
            @staticmethod
            def time():
                return due + 1.0
        expiry_mod.time = Later
        now = int(due * 1000) + 1000
        # an event loop's turns: what was deferred to this turn runs; with nothing deferred, the
        # server's timer (every 25 ms) calls expire()
        ready = []
        b.on_defer = ready.append
        turns = []
        t = time.perf_counter()
        while q.message_count or b._dl_work or ready:
            t1 = time.perf_counter()
            batch, ready[:] = list(ready), []
            if not batch:
                b.expire(now)
            for fn in batch:
                fn()
            turns.append(time.perf_counter() - t1)
        total = time.perf_counter() - t
        worst = sorted(range(len(turns)), key=lambda i: -turns[i])[:5]
        print("slowest turns:", [(i, round(turns[i] * 1000, 1)) for i in worst])
        turns.sort()
        dead = b.vhosts["/"].queues["dead"].message_count
        print(f"expired in {len(turns)} turns, {total:.2f} s of work; longest turn {turns[-1] * 1000:.1f} ms, "
              f"p99 {turns[int(len(turns) * 0.99)] * 1000:.1f} ms, median {turns[len(turns) // 2] * 1000:.1f} ms"
              f"{f'; {dead} dead-lettered' if a.dlx else ''}")
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
