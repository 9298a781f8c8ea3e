"""Real etcd members for the cluster tests: Debian's etcd-server, data on tmpfs, fast timers.

`EtcdCluster(n)` starts n members on free loopback ports and stops them (and removes their data)
at the end. Tests that need etcd skip with a clear reason when the binary is missing.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest

ETCD = shutil.which("etcd") or "/usr/bin/etcd"


def have_etcd() -> bool:
    return os.path.exists(ETCD)


def need_etcd():
    if not have_etcd():
        pytest.skip("etcd is not installed (Debian package etcd-server; .ci/run installs it)")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Member:
    def __init__(self, name, client_port, peer_port, data_dir, host="127.0.0.1"):
        self.name = name
        self.host = host
        self.client_port = client_port
        self.peer_port = peer_port
        self.data_dir = data_dir
        self.proc: subprocess.Popen | None = None
        self.log_path = data_dir + ".log"
        self.prefix: list[str] = []          # runs it in a network namespace (netns.Net)

    @property
    def client_url(self) -> str:
        return f"http://{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"

    def start(self, initial_cluster: str, state: str = "new"):
        cmd = [ETCD, "--name", self.name, "--data-dir", self.data_dir,
               "--listen-client-urls", self.client_url, "--advertise-client-urls", self.client_url,
               "--listen-peer-urls", self.peer_url, "--initial-advertise-peer-urls", self.peer_url,
               "--initial-cluster", initial_cluster, "--initial-cluster-state", state,
               "--initial-cluster-token", "usagi-tests",
               "--heartbeat-interval", "50", "--election-timeout", "500",
               "--log-level", "warn"]
        self.proc = subprocess.Popen(self.prefix + cmd, stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()

    def pause(self):
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self):
        os.kill(self.proc.pid, signal.SIGCONT)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.client_url + "/health", timeout=1) as r:
                return b'"true"' in r.read()
        except OSError:
            return False


class EtcdCluster:
    def __init__(self, n: int = 1, host: str = "127.0.0.1", net=None):
        """n members on free ports of `host`, or, with a netns.Net, each in a namespace of its own
        (addresses .201, .202, ...: the standard ports)."""
        base = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self.root = tempfile.mkdtemp(prefix="usagi-etcd-", dir=base)
        if net is None:
            self.members = [Member(f"e{i}", free_port(host), free_port(host), os.path.join(self.root, f"e{i}"),
                                   host) for i in range(1, n + 1)]
        else:
            self.members = []
            for i in range(1, n + 1):
                addr = net.add(f"e{i}", 200 + i)
                m = Member(f"e{i}", 2379, 2380, os.path.join(self.root, f"e{i}"), addr)
                m.prefix = net.prefix_cmd(addr)
                self.members.append(m)

    @property
    def endpoints(self) -> list[str]:
        return [m.client_url for m in self.members]

    def initial_cluster(self) -> str:
        return ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    def start(self, timeout: float = 20.0) -> "EtcdCluster":
        need_etcd()
        for m in self.members:
            m.start(self.initial_cluster())
        deadline = time.monotonic() + timeout
        while not all(m.healthy() for m in self.members):
            if time.monotonic() > deadline:
                logs = "".join(open(m.log_path, errors="replace").read()[-2000:] for m in self.members)
                self.stop()
                raise RuntimeError("etcd did not become healthy:\n" + logs)
            time.sleep(0.1)
        return self

    def restart(self, m: Member):
        m.start(self.initial_cluster(), state="existing")

    def leader(self) -> Member | None:
        import json
        for m in self.members:
            if m.proc is None or m.proc.poll() is not None:
                continue
            try:
                req = urllib.request.Request(m.client_url + "/v3/maintenance/status", data=b"{}", method="POST")
                with urllib.request.urlopen(req, timeout=1) as r:
                    st = json.loads(r.read())
                if st.get("leader") == st.get("header", {}).get("member_id"):
                    return m
            except OSError:
                continue
        return None

    def stop(self):
        for m in self.members:
            m.stop()
        shutil.rmtree(self.root, ignore_errors=True)
