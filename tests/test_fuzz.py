"""Random and mutated frames against the real server: it never fails internally and keeps serving."""
from __future__ import annotations

import os
import random
import socket
import struct
import time

import pika
import pytest

from usagi.amqp import methods as M
from usagi.amqp.frames import PROTOCOL_HEADER
from usagi.amqp.table import encode_table

pytestmark = pytest.mark.timeout(300)

FRAMES_TO_SEND = int(os.environ.get("USAGI_FUZZ_FRAMES", "100000"))


def frame(ftype, channel, payload, end=b"\xce"):
    return struct.pack(">BHI", ftype, channel, len(payload)) + payload + end


def handshake() -> bytes:
    resp = b"\x00guest\x00guest"
    return b"".join([
        frame(1, 0, M.ConnectionStartOk({"product": "fuzz", "capabilities": {"consumer_cancel_notify": True}},
                                        "PLAIN", resp, "en_US").encode()),
        frame(1, 0, M.ConnectionTuneOk(2047, 131072, 0).encode()),
        frame(1, 0, M.ConnectionOpen("/").encode()),
    ])


def corpus() -> list:
    """Valid frames of every kind: each method with default fields, content headers and bodies."""
    frames = []
    for cls in M.METHODS.values():
        try:
            payload = cls().encode()
        except Exception:
            continue
        frames.append((1, payload))
    frames += [
        (1, M.ChannelOpen().encode()),
        (1, M.QueueDeclare(0, "fuzz-q", False, False, False, True, False, {"x-max-length": 10}).encode()),
        (1, M.QueueBind(0, "fuzz-q", "amq.topic", "a.#", False, {}).encode()),
        (1, M.BasicPublish(0, "", "fuzz-q", False, False).encode()),
        (1, M.BasicPublish(0, "amq.topic", "a.b", True, False).encode()),
        (1, M.BasicConsume(0, "fuzz-q", "", False, False, False, False, {}).encode()),
        (1, M.BasicAck(1, True).encode()),
        (2, struct.pack(">HHQ", 60, 0, 5) + b"\x90\x00\x0atext/plain\x02"),
        (2, struct.pack(">HHQ", 60, 0, 3) + b"\x20\x00" + encode_table({"k": [1, "x", {"n": None}]})),
        (3, b"hello"),
        (3, b"abc"),
        (8, b""),
    ]
    return frames


def mutate(rng: random.Random, items) -> bytes:
    ftype, payload = rng.choice(items)
    payload = bytearray(payload)
    channel = rng.choice((0, 1, 1, 1, 1, 1, 2, 65535))
    if rng.random() < 0.5:          # half the frames are valid, so connections live through several
        return frame(ftype, 1 if ftype != 8 else 0, bytes(payload))
    r = rng.random()
    end = b"\xce"
    if r < 0.45 and payload:
        for _ in range(rng.randint(1, 4)):
            payload[rng.randrange(len(payload))] = rng.randrange(256)
    elif r < 0.55:
        payload = payload[:rng.randrange(len(payload) + 1)]
    elif r < 0.65:
        payload += os.urandom(rng.randint(1, 40))
    elif r < 0.72:
        ftype = rng.randrange(256)
    elif r < 0.76:
        end = bytes([rng.randrange(256)])
    elif r < 0.80:
        return os.urandom(rng.randint(1, 64))
    return frame(ftype, channel, bytes(payload), end)


class Peer:
    """Reads the server's frames; tells whether a probe was answered or the connection closed."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def wait(self, probe_channel: int, timeout: float = 10.0) -> bool:
        """True once channel.open-ok for `probe_channel` arrives; False if the server closed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while len(self.buf) >= 7:
                ftype, ch, size = struct.unpack_from(">BHI", self.buf, 0)
                if len(self.buf) < size + 8:
                    break
                payload = self.buf[7:7 + size]
                self.buf = self.buf[size + 8:]
                if ftype == 1 and payload[:4] == b"\x00\x0a\x00\x32":      # connection.close
                    return False
                if ftype == 1 and ch == probe_channel and payload[:4] == b"\x00\x14\x00\x0b":
                    return True
            try:
                data = self.sock.recv(65536)
            except OSError:
                return False
            if not data:
                return False
            self.buf += data
        raise AssertionError("the server did not answer a probe in time")


def test_fuzz_frames(fresh_server):
    srv = fresh_server()
    rng = random.Random(int(os.environ.get("USAGI_FUZZ_SEED", "20261125")))
    items = corpus()
    sent = connections = closes = 0
    opener = handshake()
    deadline = time.monotonic() + 240
    while sent < FRAMES_TO_SEND and time.monotonic() < deadline:
        sock = socket.create_connection((srv.host, srv.port))
        sock.settimeout(10)
        connections += 1
        sock.sendall(PROTOCOL_HEADER + opener + frame(1, 1, M.ChannelOpen().encode()))
        peer = Peer(sock)
        probe = 100
        while sent < FRAMES_TO_SEND:
            # a batch of mutated frames, then a probe that tells when the server got through them
            batch = b"".join(mutate(rng, items) for _ in range(8))
            probe += 1
            try:
                sock.sendall(batch + frame(1, probe, M.ChannelOpen().encode()))
            except OSError:
                break
            sent += 8
            if not peer.wait(probe):
                closes += 1
                break
            if probe > 2000:
                break
        sock.close()
    assert sent >= FRAMES_TO_SEND, f"only {sent} frames sent in time"
    # a normal client is still served
    conn = pika.BlockingConnection(pika.URLParameters(srv.url()))
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_publish("", q, b"still here")
    assert ch.basic_get(q, auto_ack=True)[2] == b"still here"
    conn.close()
    log = "".join(srv.lines)
    for bad in ("Traceback", "internal error", "Exception in callback", "Fatal error"):
        assert bad not in log, f"server log has {bad!r}:\n{log[-5000:]}"
    assert srv.proc.poll() is None
    print(f"fuzz: {sent} frames over {connections} connections, {closes} closed by the server")
