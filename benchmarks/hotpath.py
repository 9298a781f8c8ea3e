"""CPU cost of the publish -> route -> deliver path, in process, without sockets.

    python benchmarks/hotpath.py [--size 16] [--messages 200000] [--ack]

Feeds pre-encoded basic.publish frames into one connection and lets a consumer on another
connection receive them (autoack, or manual ack with --ack), then prints microseconds per message.
Useful for profiling: python -m cProfile -s tottime benchmarks/hotpath.py
"""
from __future__ import annotations

import argparse
import os
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from usagi.amqp import methods as M  # noqa: E402
from usagi.amqp.frames import PROTOCOL_HEADER, method_frame  # noqa: E402
from usagi.core.broker import Broker  # noqa: E402
from usagi.core.connection import Connection  # noqa: E402


class Sink:
    def __init__(self):
        self.n = 0

    def write(self, data):
        self.n += len(data)

    def close(self):
        pass

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass

    def get_write_buffer_size(self):
        return 0


def opened(broker):
    conn = Connection(broker, Sink(), ("127.0.0.1", 1), ("127.0.0.1", 2))
    conn.connection_made()
    resp = b"\x00guest\x00guest"
    conn.data_received(PROTOCOL_HEADER + method_frame(0, M.ConnectionStartOk({}, "PLAIN", resp, "en_US").encode())
                       + method_frame(0, M.ConnectionTuneOk(2047, 131072, 0).encode())
                       + method_frame(0, M.ConnectionOpen("/").encode())
                       + method_frame(1, M.ChannelOpen().encode()))
    broker.flush_output()
    return conn


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=16)
    ap.add_argument("--messages", type=int, default=200000)
    ap.add_argument("--ack", action="store_true")
    a = ap.parse_args()
    b = Broker()
    b.bootstrap()
    pub = opened(b)
    con = opened(b)
    con.data_received(method_frame(1, M.QueueDeclare(0, "bench", False, False, False, False, False, {}).encode()))
    if a.ack:
        con.data_received(method_frame(1, M.BasicQos(0, 1000, False).encode()))
    con.data_received(method_frame(1, M.BasicConsume(0, "bench", "c", False, not a.ack, False, False, {}).encode()))
    b.flush_output()
    body = b"\0" * a.size
    one = (method_frame(1, M.BasicPublish(0, "", "bench", False, False).encode())
           + struct.pack(">BHI", 2, 1, 14) + struct.pack(">HHQ", 60, 0, a.size) + b"\x00\x00\xce"
           + struct.pack(">BHI", 3, 1, a.size) + body + b"\xce")
    per_chunk = max(1, 65536 // len(one))
    chunk = one * per_chunk
    chunks = a.messages // per_chunk
    tag = 0
    t0 = time.perf_counter()
    c0 = time.process_time()
    for _ in range(chunks):
        pub.data_received(chunk)
        if a.ack:
            ch = con.channels[1]
            if ch.next_tag > tag:
                tag = ch.next_tag
                con.data_received(method_frame(1, M.BasicAck(tag, True).encode()))
        b.flush_output()
    dt = time.perf_counter() - t0
    cpu = time.process_time() - c0
    n = chunks * per_chunk
    from usagi.core import hot
    print(f"{n} messages of {a.size} B ({'manual ack' if a.ack else 'autoack'}): "
          f"{dt / n * 1e6:.2f} us per message, {n / dt:,.0f} msg/s on one core; "
          f"{cpu / n * 1e6:.2f} us of CPU per message; delivered {con.channels[1].delivered}; "
          f"hot path {hot.DESCRIPTION}")


if __name__ == "__main__":
    main()
