"""A Usagi cluster of the tests' own: real etcd members and real usagi-server processes.

Each cluster gets loopback addresses of its own (127.<a>.<b>.<i>, chosen at random, so tests that
run in parallel never meet), one per node, with free ports found on them. Faults are the real
thing: SIGKILL, SIGSTOP/SIGCONT, SIGTERM, and killing etcd members.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from etcdutil import EtcdCluster

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LISTENER_RE = re.compile(r"AMQP listener on (\S+):(\d+)")


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class UsagiNode:
    def __init__(self, cluster, i: int, host: str, data_dir: str):
        self.cluster = cluster
        self.i = i
        self.host = host
        self.data_dir = data_dir
        if cluster.net is None:
            self.port = free_port(host)
            self.http_port = free_port(host)
            self.repl_port = free_port(host)
            self.metrics_port = free_port(host)
        else:               # a namespace of its own: the standard ports
            self.port, self.http_port, self.repl_port, self.metrics_port = 5672, 15672, 25672, 15692
        self.proc: subprocess.Popen | None = None
        self.lines: list[str] = []
        self.log_path = data_dir + ".log"

    @property
    def name(self) -> str:
        return f"usagi@n{self.i}"

    def cmd(self) -> list[str]:
        c = self.cluster
        return [sys.executable, "-m", "usagi.cli.server", "--host", self.host, "--port", str(self.port),
                "--management-port", str(self.http_port), "--metrics-port", str(self.metrics_port),
                "--replication-port", str(self.repl_port), "--data-dir", self.data_dir,
                "--cluster-etcd", ",".join(c.etcd.endpoints), "--cluster-name", c.name,
                "--cluster-lease-ttl", str(c.ttl), "--node-name", self.name, *c.extra_args]

    def start(self):
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        env.update(self.cluster.env)
        prefix = self.cluster.net.prefix_cmd(self.host) if self.cluster.net is not None else []
        self.proc = subprocess.Popen(prefix + self.cmd(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=env, cwd=ROOT, start_new_session=True)
        proc = self.proc
        threading.Thread(target=self._pump, args=(proc,), daemon=True).start()
        return self

    def _pump(self, proc):
        with open(self.log_path, "a") as log:
            for line in proc.stdout:
                self.lines.append(line)
                log.write(line)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        if self.alive:
            self.proc.kill()
            self.proc.wait()

    def term(self, timeout: float = 20.0):
        if self.alive:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def pause(self):
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self):
        os.kill(self.proc.pid, signal.SIGCONT)

    def url(self, user="guest", password="guest") -> str:
        return f"amqp://{user}:{password}@{self.host}:{self.port}/%2F"

    def log_text(self) -> str:
        return "".join(self.lines)

    def node_id(self) -> str | None:
        """Its id as the ISR names it (from node.json: the node's lease id, in hex), or None."""
        try:
            with open(os.path.join(self.data_dir, "node.json")) as f:
                raw = str(json.load(f).get("node_id", ""))
            return f"{(int(raw[:16], 16) & 0x7FFF_FFFF_FFFF_FFFF) or 1:x}"
        except (OSError, ValueError):
            return None


class Cluster:
    def __init__(self, n: int = 3, etcd_members: int = 1, ttl: int = 2, extra_args=(), env=None, name=None,
                 netns: bool = False):
        """n nodes and etcd_members etcd members, on loopback addresses of their own, or with
        netns=True each in a network namespace of its own (netns.Net), so that links can be cut."""
        a, b = random.randrange(20, 250), random.randrange(1, 250)
        self.net = None
        if netns:
            from netns import Net
            self.net = Net()
            self.hosts = [self.net.add(f"n{i}", i) for i in range(1, n + 1)]
        else:
            self.hosts = [f"127.{a}.{b}.{i}" for i in range(1, n + 1)]
        self.root = tempfile.mkdtemp(prefix="usagi-cluster-")
        self.name = name or f"t{os.getpid()}-{random.randrange(1 << 30):x}"
        self.ttl = ttl
        self.extra_args = list(extra_args)
        self.env = dict(env or {})
        self.env.setdefault("USAGI_QUEUE_MEMORY_MESSAGES", "50000")
        self.etcd = EtcdCluster(etcd_members, host=f"127.{a}.{b}.200", net=self.net)
        if self.net is not None:
            # clients come through the bridge, not from loopback: guest may log in from there
            conf = os.path.join(self.root, "rabbitmq.conf")
            with open(conf, "w") as f:
                f.write("loopback_users = none\n")
            self.extra_args += ["--config", conf]
        self.nodes = [UsagiNode(self, i + 1, h, os.path.join(self.root, f"n{i + 1}")) for i, h in enumerate(self.hosts)]

    def start(self, timeout: float = 30.0) -> "Cluster":
        self.etcd.start()
        for node in self.nodes:
            node.start()
        self.wait_leader(timeout)
        return self

    def stop(self):
        for node in self.nodes:
            node.term(10)
        self.etcd.stop()

    def cleanup(self):
        try:
            if self.net is not None:
                self.net.heal()
            self.stop()
        finally:
            if self.net is not None:
                self.net.close()
        shutil.rmtree(self.root, ignore_errors=True)

    # -- state, read from etcd through its JSON gateway
    def _etcd(self, path: str, body: dict) -> dict:
        for ep in self.etcd.endpoints:
            try:
                req = urllib.request.Request(ep + path, data=json.dumps(body).encode(), method="POST")
                with urllib.request.urlopen(req, timeout=2) as r:
                    return json.loads(r.read())
            except OSError:
                continue
        raise OSError("no etcd endpoint answered")

    def _get(self, key: str):
        import base64
        data = self._etcd("/v3/kv/range", {"key": base64.b64encode(key.encode()).decode()})
        kvs = data.get("kvs") or []
        return json.loads(base64.b64decode(kvs[0]["value"])) if kvs else None

    def leader_info(self):
        import base64
        try:
            data = self._etcd("/v3/election/leader",
                              {"name": base64.b64encode(f"/usagi/{self.name}/leader".encode()).decode()})
        except OSError:
            return None
        kv = data.get("kv")
        return json.loads(base64.b64decode(kv["value"])) if kv else None

    def isr(self) -> list:
        v = self._get(f"/usagi/{self.name}/isr")
        return v["nodes"] if v else []

    def leader(self) -> UsagiNode | None:
        info = self.leader_info()
        if not info:
            return None
        for node in self.nodes:
            if info.get("name") == node.name and node.alive:
                return node
        return None

    def serving_leader(self):
        """The node that leads and accepts AMQP connections."""
        node = self.leader()
        if node is None:
            return None
        if "leads (epoch" not in node.log_text() or not _accepts(node.host, node.port):
            return None
        return node

    def wait_leader(self, timeout: float = 30.0, not_node=None) -> UsagiNode:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            node = self.serving_leader()
            if node is not None and node is not not_node:
                return node
            if not any(n.alive for n in self.nodes):
                break
            time.sleep(0.1)
        raise AssertionError(f"no leader in time ({timeout}s, not {getattr(not_node, 'name', None)}):\n"
                             + self.describe() + "\n" + "\n".join(
                                 f"--- {n.name}\n" + "".join(n.lines[-30:]) for n in self.nodes))

    def describe(self) -> str:
        """What the tests see of the cluster, for a failure's message."""
        try:
            info = self.leader_info()
        except Exception as e:          # a failure message must not fail
            info = f"error {e!r}"
        out = [f"at {time.strftime('%H:%M:%S')}: etcd's leader key: {info}"]
        for n in self.nodes:
            out.append(f"  {n.name}: alive={n.alive} accepts={_accepts(n.host, n.port)} "
                       f"leads-in-log={'leads (epoch' in n.log_text()}")
        for m in self.etcd.members:
            out.append(f"  etcd {m.client_url}: running={m.proc is not None and m.proc.poll() is None} "
                       f"healthy={m.healthy()}")
        return "\n".join(out)

    def wait_isr(self, size: int, timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if len(self.isr()) >= size:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"ISR did not reach {size}: {self.isr()}")

    def in_sync_successors(self, node) -> list:
        """The nodes other than `node` that run and are in the ISR: those that may lead after it."""
        try:
            isr = set(self.isr())
        except OSError:
            return []
        return [n for n in self.nodes if n is not node and n.alive and n.node_id() in isr]

    def wait_isr_without(self, before, timeout: float = 60.0):
        """Until the ISR has lost a member of `before` (a stopped follower was dropped)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if set(before) - set(self.isr()):
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"the ISR still holds every one of {sorted(before)}")

    def wait_member(self, node_id: str, timeout: float = 60.0) -> bool:
        """Until the ISR names `node_id` again: True, or False after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if node_id in self.isr():
                    return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def followers(self) -> list:
        lead = self.leader()
        return [n for n in self.nodes if n is not lead and n.alive]

    def urls(self) -> list:
        return [n.url() for n in self.nodes]


def _accepts(host, port) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False
