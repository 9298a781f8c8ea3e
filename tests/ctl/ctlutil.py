"""Helpers for the usagictl tests (see conftest.py)."""
from __future__ import annotations

import base64
import json
import os
import re
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MGMT_RE = re.compile(r"Management listener on (\S+):(\d+)")


def unique(prefix: str = "ctl") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def run_ctl(url: str | None, *args: str, input: str | None = None, timeout: float = 90,
            env: dict | None = None, module: str = "usagi.cli.ctl") -> subprocess.CompletedProcess:
    e = dict(os.environ)
    e["PYTHONPATH"] = ROOT + os.pathsep + e.get("PYTHONPATH", "")
    e.pop("USAGI_URL", None)
    if url is not None:
        e["USAGI_URL"] = url
    e["NO_COLOR"] = "1"
    if env:
        e.update(env)
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True,
                          text=True, input=input, timeout=timeout, env=e, cwd=ROOT)


def run_diag(url: str | None, *args: str, **kw) -> subprocess.CompletedProcess:
    """usagi-diagnostics, as run_ctl runs usagictl."""
    return run_ctl(url, *args, module="usagi.cli.diagnostics", **kw)


# rabbitmqctl itself, for tests that compare with it: USAGI_TEST_RABBITMQCTL is the command that runs
# it against the node behind USAGI_TEST_MGMT_URL, e.g. "rabbitmqctl -n rabbit@localhost" or, as root
# on a machine where the node runs as user rabbitmq,
# "runuser -u rabbitmq -- env HOME=/var/lib/rabbitmq rabbitmqctl -n rabbit@localhost".
# rabbitmq-diagnostics is the same command with rabbitmq-diagnostics in rabbitmqctl's place.
RABBITMQCTL = os.environ.get("USAGI_TEST_RABBITMQCTL")
ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")


def run_rabbitmqctl(*args: str, tool: str = "rabbitmqctl", timeout: float = 90) -> subprocess.CompletedProcess:
    """rabbitmqctl (or rabbitmq-diagnostics) with `args`; its output as usagictl (usagi-diagnostics)
    would print it: no colours, no node option among the arguments it echoes, our tool's name in its
    usage lines."""
    cmd = shlex.split(RABBITMQCTL)
    i = next(i for i, c in enumerate(cmd) if c.endswith("rabbitmqctl"))
    extra = cmd[i + 1:]
    if tool != "rabbitmqctl":
        cmd[i] = cmd[i][:-len("rabbitmqctl")] + tool
    p = subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=timeout, cwd="/tmp",
                       env=dict(os.environ, LANG="C.UTF-8", LC_ALL="C.UTF-8"))
    ours = "usagictl" if tool == "rabbitmqctl" else "usagi-diagnostics"

    def clean(text: str) -> str:
        text = ANSI_RE.sub("", text)
        if extra:
            text = text.replace("\t" + " ".join(extra) + " ", "\t")
        text = text.replace(f"{tool} [--node", f"{ours} [--node")
        return text.replace("Start it with 'rabbitmqctl ", "Start it with 'usagictl ").replace(
            "Stop it with 'rabbitmqctl ", "Stop it with 'usagictl ")

    return subprocess.CompletedProcess(p.args, p.returncode, clean(p.stdout), clean(p.stderr))


@dataclass
class Mgmt:
    url: str                      # management API URL with credentials
    amqp_url: str | None          # AMQP URL of the same broker (vhost "/"), if known
    server: object | None = None  # the Usagi ServerProcess, when we started one
    cleanups: list = field(default_factory=list)

    @property
    def is_usagi(self) -> bool:
        return self.server is not None

    def ctl(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return run_ctl(self.url, *args, **kw)

    def diag(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return run_diag(self.url, *args, **kw)

    def node(self) -> str:
        return self.api("GET", "/api/overview")[1]["node"]

    def api(self, method: str, path: str, body=None):
        """Direct management API call, for setup and cleanup. Returns (status, json-or-None)."""
        p = urllib.parse.urlsplit(self.url)
        base = f"{p.scheme}://{p.hostname}:{p.port}{p.path.rstrip('/')}"
        token = base64.b64encode(f"{urllib.parse.unquote(p.username or 'guest')}:"
                                 f"{urllib.parse.unquote(p.password or 'guest')}".encode()).decode()
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(base + path, data=data, method=method,
                                     headers={"Authorization": "Basic " + token,
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                raw = r.read()
                return r.status, (json.loads(raw) if raw else None)
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw)
            except ValueError:
                return e.code, None

    def amqp(self, vhost: str = "/") -> str:
        if not self.amqp_url:
            pytest.skip("set USAGI_TEST_BROKER_URL to the AMQP URL of the broker behind "
                        "USAGI_TEST_MGMT_URL for tests that publish messages")
        p = urllib.parse.urlsplit(self.amqp_url)
        return urllib.parse.urlunsplit((p.scheme, p.netloc, "/" + urllib.parse.quote(vhost, safe=""),
                                        p.query, p.fragment))

    def vhost(self, grant: bool = True) -> str:
        """A fresh vhost (deleted after the test); guest gets full permissions on it."""
        name = unique("ctl-vh")
        st, _ = self.api("PUT", f"/api/vhosts/{urllib.parse.quote(name, safe='')}", {})
        assert st in (201, 204), st
        self.cleanups.append(("DELETE", f"/api/vhosts/{urllib.parse.quote(name, safe='')}"))
        if grant:
            user = urllib.parse.unquote(urllib.parse.urlsplit(self.url).username or "guest")
            st, _ = self.api("PUT", f"/api/permissions/{urllib.parse.quote(name, safe='')}/"
                                    f"{urllib.parse.quote(user, safe='')}",
                             {"configure": ".*", "write": ".*", "read": ".*"})
            assert st in (201, 204), st
        return name

    def user(self, password: str = "pw") -> str:
        name = unique("ctl-u")
        self.cleanups.append(("DELETE", f"/api/users/{name}"))
        return name


def _wait_for_mgmt(server, timeout: float = 10.0) -> tuple[str, int] | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in list(server.lines):
            m = MGMT_RE.search(line)
            if m:
                host = m.group(1)
                if host in ("0.0.0.0", "::", "[::]", "*", ""):
                    host = "127.0.0.1"
                return host.strip("[]"), int(m.group(2))
        if server.proc.poll() is not None:
            return None
        time.sleep(0.05)
    return None
