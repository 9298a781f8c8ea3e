"""The programs in examples/ run unmodified, as separate processes, against the broker."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import pika
import pytest

from support.harness import ROOT

pytestmark = pytest.mark.timeout(60)
EXAMPLES = os.path.join(ROOT, "examples")


class Proc:
    """A running example program whose output lines are collected as they come."""

    def __init__(self, args, cwd, env):
        # Ctrl+C as from a terminal: a test run started in the background inherits SIGINT ignored,
        # and a Python started with it ignored never raises KeyboardInterrupt
        self.p = subprocess.Popen([sys.executable, "-u", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True,
                                  preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self.lines: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.p.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_line(self, text, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in ln for ln in self.lines):
                return
            if self.p.poll() is not None and not any(text in ln for ln in self.lines):
                time.sleep(0.2)
                if not any(text in ln for ln in self.lines):
                    break
            time.sleep(0.02)
        raise AssertionError(f"{text!r} not seen; output so far:\n" + "\n".join(self.lines))

    def interrupt(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGINT)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:   # as a user would, press Ctrl+C again
                self.p.send_signal(signal.SIGINT)
            try:
                self.p.wait(20)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


def run(args, cwd, env, timeout=30):
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def env(broker):
    e = dict(os.environ)
    e["AMQP_URL"] = broker.url
    return e


def _purge(broker, *queues):
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    ch = conn.channel()
    for q in queues:
        try:
            ch.queue_purge(q)
        except pika.exceptions.ChannelClosedByBroker:
            ch = conn.channel()
    conn.close()


def test_pika_hello_world(broker, env):
    cwd = os.path.join(EXAMPLES, "pika")
    _purge(broker, "hello")
    receiver = Proc(["receive.py"], cwd, env)
    try:
        receiver.wait_line("Waiting for messages")
        for _ in range(2):
            out = run(["send.py"], cwd, env)
            assert out.returncode == 0, out.stderr
            assert "[x] Sent 'Hello World!'" in out.stdout
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and sum("Received b'Hello World!'" in ln for ln in receiver.lines) < 2:
            time.sleep(0.02)
        assert sum("[x] Received b'Hello World!'" in ln for ln in receiver.lines) == 2, receiver.lines
    finally:
        receiver.interrupt()
    assert receiver.p.returncode == 0


def test_pika_send_then_receive_later(broker, env):
    """The message waits in the queue until a receiver starts."""
    cwd = os.path.join(EXAMPLES, "pika")
    _purge(broker, "hello")
    out = run(["send.py"], cwd, env)
    assert out.returncode == 0, out.stderr
    receiver = Proc(["receive.py"], cwd, env)
    try:
        receiver.wait_line("[x] Received b'Hello World!'")
    finally:
        receiver.interrupt()


def test_kombu_task_queue(broker, env):
    cwd = os.path.join(EXAMPLES, "kombu")
    worker = Proc(["worker.py"], cwd, env)
    try:
        worker.wait_line("Waiting for tasks on hipri, midpri, lopri")
        who = "u" + uuid.uuid4().hex[:8]
        out = run(["client.py", who], cwd, env)
        assert out.returncode == 0, out.stderr
        assert f"Sent hello_task('{who}') to hipri" in out.stdout
        worker.wait_line(f"Running hello_task('{who}')")
        worker.wait_line(f"Hello {who}")
        out = run(["client.py", who + "x", "--priority", "lopri"], cwd, env)
        assert out.returncode == 0, out.stderr
        worker.wait_line(f"Hello {who}x")
    finally:
        worker.interrupt()
    # the worker acked everything: nothing is left in the task queues
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    ch = conn.channel()
    for q in ("hipri", "midpri", "lopri"):
        assert ch.queue_declare(q, passive=True).method.message_count == 0
    conn.close()
