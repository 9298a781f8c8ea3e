"""Helpers shared by the tests: a Usagi server process of the tests' own, and polling."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

LISTENER_RE = re.compile(r"AMQPS? listener on (\S+):(\d+)")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclass
class Broker:
    host: str
    port: int
    url: str
    vhost: str = "/"
    process: subprocess.Popen | None = None
    data_dir: str | None = None
    log_lines: list = field(default_factory=list)

    @property
    def is_usagi(self) -> bool:
        return self.process is not None

    def log_text(self) -> str:
        return "".join(self.log_lines)


def external_broker_url() -> str | None:
    return os.environ.get("USAGI_TEST_BROKER_URL") or None


MGMT_RE = re.compile(r"Management listener on (\S+):(\d+)")
DEFAULT_MGMT_URL = "http://guest:guest@127.0.0.1:15682"


def management_base(broker: Broker, timeout: float = 10.0) -> tuple:
    """(scheme://host:port, user, password) of the management API of the session broker: a Usagi
    server's own (from its log; guest), else USAGI_TEST_MGMT_URL (RabbitMQ's, in differential mode)."""
    if broker.is_usagi:
        m = wait_for(lambda: MGMT_RE.search(broker.log_text()), timeout,
                     message="'Management listener on HOST:PORT' in the Usagi log")
        host = m.group(1)
        base = f"http://[{host}]:{m.group(2)}" if ":" in host else f"http://{host}:{m.group(2)}"
        return base, "guest", "guest"
    p = urllib.parse.urlsplit(os.environ.get("USAGI_TEST_MGMT_URL") or DEFAULT_MGMT_URL)
    return (f"{p.scheme}://{p.hostname}:{p.port}", urllib.parse.unquote(p.username or "guest"),
            urllib.parse.unquote(p.password or "guest"))


class ServerProcess:
    """Runs `python -m usagi.cli.server` on port 0 and learns the port from its startup log."""

    def __init__(self, data_dir: str | None = None, extra_args: list[str] | None = None,
                 env: dict | None = None, defaults: bool = True):
        # defaults=False: only --data-dir and extra_args (listeners and ports from a config file)
        self.defaults = defaults
        self.own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="usagi-test-")
        self.extra_args = extra_args or []
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.lines: list[str] = []
        self.host = "127.0.0.1"
        self.port: int | None = None
        self._ready = threading.Event()

    def start(self, timeout: float = 20.0) -> "ServerProcess":
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        if self.env:
            env.update(self.env)
        cmd = [sys.executable, "-m", "usagi.cli.server", "--host", "127.0.0.1", "--port", "0",
               "--data-dir", self.data_dir, "--management-port", "0", "--metrics-port", "0",
               *self.extra_args]
        if not self.defaults:
            cmd = [sys.executable, "-m", "usagi.cli.server", "--data-dir", self.data_dir, *self.extra_args]
        self.lines = []
        self._ready.clear()
        self.port = None
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=env, cwd=ROOT)
        threading.Thread(target=self._pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._ready.wait(0.05):
                return self
            if self.proc.poll() is not None:
                time.sleep(0.2)
                raise RuntimeError("server exited during start:\n" + "".join(self.lines))
        self.kill()
        raise RuntimeError("server did not start in time:\n" + "".join(self.lines))

    def _pump(self):
        proc = self.proc
        for line in proc.stdout:
            self.lines.append(line)
            if self.port is None:
                m = LISTENER_RE.search(line)
                if m:
                    self.port = int(m.group(2))
                    self._ready.set()

    def url(self, user="guest", password="guest", vhost="/") -> str:
        return f"amqp://{user}:{password}@{self.host}:{self.port}/{urllib.parse.quote(vhost, safe='')}"

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else None

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def cleanup(self):
        self.stop()
        if self.own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)



def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02, message: str = "condition"):
    """Poll `predicate` until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {message}")
        time.sleep(interval)


def bodies(ch, queue: str) -> list:
    """Every message of a queue, taken on pika channel `ch` with basic.get (auto-ack) until it is
    empty: their bodies."""
    out = []
    while True:
        method, _props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            return out
        out.append(body)


def drain_bodies(url: str, queue: str) -> list:
    """bodies() on a connection of its own to `url`."""
    import pika
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return bodies(conn.channel(), queue)
    finally:
        conn.close()
