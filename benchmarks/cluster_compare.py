#!/usr/bin/env python3
"""A 3-node Usagi cluster against a 3-node RabbitMQ cluster with quorum queues, interleaved.

    python benchmarks/cluster_compare.py --runs 3
    python benchmarks/cluster_compare.py --runs 1 --scenarios c16 --duration 5     # a smoke run

The question it answers: with persistent messages and publisher confirms, how does a replicated
Usagi compare with what RabbitMQ users run for the same guarantee, a quorum queue on three nodes?
Both clusters run on this machine, sharing its cores with the load generator, so each run starts
both fresh, one after the other, alternating which goes first (run 1: Usagi then RabbitMQ, run 2:
RabbitMQ then Usagi, ...); every scenario is measured in both within minutes of each other, and
the ratio Usagi/RabbitMQ is taken per run, then its median over the runs.

* Usagi: three nodes and their etcd, started by the test suite's cluster harness (tests/cluster),
  as benchmarks/cluster_bench.py does; the load generator connects to the leader.
* RabbitMQ: three nodes of the installed package (/usr/lib/rabbitmq/bin), each with its own node
  name, AMQP, distribution and management ports, data and log directories in a scratch directory,
  and one Erlang cookie (a .erlang.cookie in a scratch HOME); nodes 2 and 3 join node 1 with
  `rabbitmqctl stop_app; join_cluster; start_app`. The script waits for each node
  (`await_startup`) and checks that `cluster_status` shows the three running.
* The queue: the shared load generator (amqp_bench.py, --bench-dir) deletes and declares its queue
  itself, without arguments, and has no option for them. It is run unchanged, through a few lines
  (BENCH_MAIN below) that add `x-queue-type: quorum` to its non-passive queue.declare, so that the
  queue it measures is a quorum queue on both. After each measurement the script checks that
  queue (type quorum, three members, all online; kept by `--keep` until then) and deletes it; a
  cluster that does not give three members stops the run with a message that says what it saw.

Reported per measurement: confirmed msg/s (the scenario's figure), consumed msg/s, the whole
cluster's CPU per message (every node, and etcd for Usagi, over the whole amqp_bench run, divided
by the messages delivered), and `other_pct`, the CPU of everything else on the machine (% of one
core) over the same time: a run with much of it was a noisy one. JSON lines go to --out; the
table at the end has the medians and the median of the per-run ratios. `--table-from FILE`
prints the table of a file again without running anything.

Teardown: only the processes this script started are stopped (each node's process group; the
cluster harness stops its own). An epmd that was running before is left alone; one that the
RabbitMQ nodes started is asked to stop (`epmd -kill`, which it refuses while any node is
registered) only if none was running before.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import signal
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "cluster"))
sys.path.insert(0, os.path.join(REPO, "tests"))
CLK = os.sysconf("SC_CLK_TCK")

SCENARIOS = {
    "c16": ("16 B persistent, quorum queue, confirms (window 1000), ack/prefetch 100",
            "-s 16 --persistent --confirm 1000 --prefetch 100"),
    "c1k": ("1 KiB persistent, quorum queue, confirms (window 1000), ack/prefetch 100",
            "-s 1024 --persistent --confirm 1000 --prefetch 100"),
}
QUEUE = "amqp-bench-0"            # amqp_bench's queue with its default prefix and one queue
PROBE = "cluster-compare-probe"

# amqp_bench run unchanged, with x-queue-type quorum added to the queues it declares (not to its
# passive declares, which only count what is left). argv: bench dir, then amqp_bench's arguments.
BENCH_MAIN = """
import sys
sys.path.insert(0, sys.argv.pop(1))
import amqp_bench
_declare = amqp_bench.Conn.queue_declare
def queue_declare(self, q, durable=False, passive=False, args=None, ch=1):
    if not passive:
        args = dict(args or {}, **{"x-queue-type": "quorum"})
    return _declare(self, q, durable, passive, args, ch)
amqp_bench.Conn.queue_declare = queue_declare
sys.exit(amqp_bench.main())
"""


# ------------------------------------------------------------------ processes and CPU
def proc_ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0


def process_tree(roots) -> list[int]:
    """The given PIDs and all their descendants (a RabbitMQ node is sh -> erlexec -> beam.smp)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d))
    out, todo = [], [p for p in roots if p]
    while todo:                      # bounded by the number of processes on the machine
        p = todo.pop()
        if p not in out:
            out.append(p)
            todo.extend(children.get(p, ()))
    return out


def system_ticks() -> tuple[int, int]:
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return sum(vals[:8]), idle


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def git_commit() -> str | None:
    r = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return r.stdout.strip() or None


# ------------------------------------------------------------------ the two clusters
class UsagiCluster:
    """Three Usagi nodes and their etcd, by the tests' harness; the load generator goes to the leader."""
    kind = "usagi"

    def __init__(self, etcd_members: int, ttl: int):
        self.etcd_members, self.ttl = etcd_members, ttl
        self.c = None
        self.leader = None

    def start(self):
        from harness import Cluster
        self.c = Cluster(3, etcd_members=self.etcd_members, ttl=self.ttl)
        self.c.start(timeout=60)
        self.c.wait_isr(3, timeout=60)
        self.leader = self.c.wait_leader(timeout=60)
        return self

    @property
    def port(self) -> int:
        return self.leader.port

    @property
    def host(self) -> str:
        return self.leader.host

    @property
    def leader_pid(self) -> int:
        return self.leader.proc.pid

    @property
    def target_name(self) -> str:
        return self.leader.name

    def pids(self) -> list[int]:
        roots = [n.proc.pid for n in self.c.nodes if n.proc] + [m.proc.pid for m in self.c.etcd.members if m.proc]
        return process_tree(roots)

    def queue_info(self, name: str) -> dict:
        url = f"http://{self.leader.host}:{self.leader.http_port}/api/queues/%2F/{name}"
        req = urllib.request.Request(url, headers={"Authorization": "Basic Z3Vlc3Q6Z3Vlc3Q="})   # guest:guest
        with urllib.request.urlopen(req, timeout=10) as r:
            q = json.loads(r.read())
        return {"type": q.get("type"), "members": q.get("members") or [], "online": q.get("online") or [],
                "leader": q.get("leader")}

    def describe(self) -> str:
        return self.c.describe() if self.c else "(not started)"

    def stop(self):
        if self.c is not None:
            self.c.cleanup()
            self.c = None


class RabbitNode:
    def __init__(self, cluster, i: int):
        self.i = i
        self.name = f"usagi-cc-{os.getpid()}-{i}@localhost"
        self.port = free_port()
        self.mgmt_port = free_port()
        self.dist_port = cluster.dist_port(i)
        self.dir = os.path.join(cluster.root, f"n{i}")
        self.log_path = self.dir + ".out"
        self.proc: subprocess.Popen | None = None


class RabbitCluster:
    """Three nodes of the installed RabbitMQ on this machine, clustered, in a scratch directory."""
    kind = "rabbitmq"

    def __init__(self, bin_dir: str, management: bool, keep_dirs: bool, erl_args: str = ""):
        self.bin = bin_dir
        self.erl_args = erl_args
        self.management = management
        self.keep_dirs = keep_dirs
        self.root = tempfile.mkdtemp(prefix="usagi-cc-rmq-")
        self.home = os.path.join(self.root, "home")
        os.makedirs(self.home)
        cookie = os.path.join(self.home, ".erlang.cookie")
        with open(cookie, "w") as f:
            f.write("".join(random.choice(string.ascii_uppercase) for _ in range(20)))
        os.chmod(cookie, 0o400)
        self._dist_taken: list[int] = []
        self.nodes = [RabbitNode(self, i) for i in (1, 2, 3)]
        self.epmd_before = accepts(4369)

    def dist_port(self, i: int) -> int:
        """A free distribution port p with p + 10000 free too: the CLI tools listen from there
        (RABBITMQ_CTL_DIST_PORT_MIN), so p must stay below 55536."""
        start = 26000 + random.randrange(0, 3000)
        for p in list(range(start, 29990)) + list(range(26000, start)):
            if p not in self._dist_taken and all(port_free(p + k) for k in (0, 10000)):
                self._dist_taken.append(p)
                return p
        raise RuntimeError("no free distribution port in 26000-29990")

    def env(self, node: RabbitNode | None = None) -> dict:
        e = dict(os.environ, HOME=self.home, RABBITMQ_CONF_ENV_FILE=os.path.join(self.root, "rabbitmq-env.conf"))
        if node is not None:
            e.update(RABBITMQ_NODENAME=node.name, RABBITMQ_NODE_PORT=str(node.port),
                     RABBITMQ_NODE_IP_ADDRESS="127.0.0.1", RABBITMQ_DIST_PORT=str(node.dist_port),
                     RABBITMQ_MNESIA_BASE=os.path.join(node.dir, "mnesia"),
                     RABBITMQ_LOG_BASE=os.path.join(node.dir, "log"),
                     RABBITMQ_ENABLED_PLUGINS_FILE=os.path.join(node.dir, "enabled_plugins"),
                     RABBITMQ_CONFIG_FILE=os.path.join(node.dir, "rabbitmq"),
                     RABBITMQ_ADVANCED_CONFIG_FILE=os.path.join(node.dir, "advanced.config"),
                     RABBITMQ_PID_FILE=os.path.join(node.dir, "pid"))
            if self.erl_args:
                e["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"] = self.erl_args
        return e

    def ctl(self, node: RabbitNode, *args, timeout: float = 120, check: bool = True) -> str:
        cmd = [os.path.join(self.bin, "rabbitmqctl"), "-n", node.name, *args]
        try:
            r = subprocess.run(cmd, env=self.env(), capture_output=True, text=True, timeout=timeout,
                               stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"`{' '.join(cmd[1:])}` did not answer in {timeout:.0f} s\n{self.logs()}")
        if check and r.returncode != 0:
            raise RuntimeError(f"`{' '.join(cmd[1:])}` failed ({r.returncode}): "
                               f"{(r.stderr or r.stdout).strip()[-800:]}\n{self.logs()}")
        return r.stdout

    def await_node(self, node: RabbitNode, timeout: float):
        """`await_startup` answers at once, with an error, until the VM has registered its name
        with epmd: so it is asked again until it says the node runs, or the node's process ends."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                self.ctl(node, "await_startup", "--timeout", str(max(1, int(left))), timeout=left + 60)
                return
            except RuntimeError as e:
                if node.proc.poll() is not None:
                    raise RuntimeError(f"RabbitMQ node {node.name} exited ({node.proc.returncode}) while "
                                       f"starting\n{self.logs(40)}") from None
                if time.monotonic() > deadline:
                    raise RuntimeError(f"RabbitMQ node {node.name} not started in {timeout:.0f} s: {e}") from None
            time.sleep(1)

    def start(self):
        with open(os.path.join(self.root, "rabbitmq-env.conf"), "w"):
            pass
        for n in self.nodes:
            os.makedirs(os.path.join(n.dir, "mnesia"))
            os.makedirs(os.path.join(n.dir, "log"))
            with open(os.path.join(n.dir, "enabled_plugins"), "w") as f:
                f.write("[rabbitmq_management].\n" if self.management else "[].\n")
            with open(os.path.join(n.dir, "rabbitmq.conf"), "w") as f:
                f.write(f"listeners.tcp.1 = 127.0.0.1:{n.port}\nloopback_users = none\n"
                        f"management.tcp.port = {n.mgmt_port}\nmanagement.tcp.ip = 127.0.0.1\n")
            # run directly as root (the /usr/sbin wrappers would switch to the rabbitmq user);
            # a session of its own, so that stopping it ends this node's processes and no others
            n.proc = subprocess.Popen([os.path.join(self.bin, "rabbitmq-server")], env=self.env(n), cwd=n.dir,
                                      stdin=subprocess.DEVNULL, stdout=open(n.log_path, "ab"),
                                      stderr=subprocess.STDOUT, start_new_session=True)
        for n in self.nodes:
            self.await_node(n, 180)
        first = self.nodes[0]
        for n in self.nodes[1:]:
            self.ctl(n, "stop_app")
            self.ctl(n, "join_cluster", first.name)
            self.ctl(n, "start_app")
        for n in self.nodes:
            self.await_node(n, 120)
        deadline = time.monotonic() + 60
        while True:
            status = json.loads(self.ctl(first, "cluster_status", "--formatter", "json"))
            running = sorted(status.get("running_nodes") or [])
            if running == sorted(n.name for n in self.nodes):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"RabbitMQ cluster_status shows running nodes {running}, expected the 3 of "
                                   f"{[n.name for n in self.nodes]}\n{self.logs()}")
            time.sleep(1)
        return self

    @property
    def port(self) -> int:
        return self.nodes[0].port

    host = "127.0.0.1"

    @property
    def leader_pid(self) -> int:
        return self.nodes[0].proc.pid

    @property
    def target_name(self) -> str:
        # the queue's leader is the node its declaring client is connected to (queue-leader-locator
        # client-local, the default); `on_leader` in the results says whether it was
        return self.nodes[0].name

    def pids(self) -> list[int]:
        return process_tree([n.proc.pid for n in self.nodes if n.proc])

    def queue_info(self, name: str) -> dict:
        rows = json.loads(self.ctl(self.nodes[0], "list_queues", "name", "type", "members", "online", "leader",
                                   "--formatter", "json") or "[]")
        for q in rows:
            if q.get("name") == name:
                return {"type": q.get("type"), "members": q.get("members") or [], "online": q.get("online") or [],
                        "leader": q.get("leader")}
        raise RuntimeError(f"RabbitMQ lists no queue {name!r}: {rows}")

    def describe(self) -> str:
        return "; ".join(f"{n.name} amqp {n.port} dist {n.dist_port} mgmt {n.mgmt_port} "
                         f"running={n.proc is not None and n.proc.poll() is None}" for n in self.nodes)

    def logs(self, lines: int = 15) -> str:
        out = []
        for n in self.nodes:
            try:
                with open(n.log_path, errors="replace") as f:
                    tail = f.readlines()[-lines:]
            except OSError:
                tail = []
            out.append(f"--- {n.name} ({n.log_path}; logs in {n.dir}/log)\n" + "".join(tail))
        return "\n".join(out)

    def stop(self):
        # SIGTERM to the node's own start script: it stops the VM the way `rabbitmqctl stop` does
        for n in self.nodes:
            if n.proc is not None and n.proc.poll() is None:
                n.proc.terminate()
        deadline = time.monotonic() + 60
        for n in self.nodes:
            if n.proc is None:
                continue
            try:
                n.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:                     # whatever is left of this node's session: ours alone
                os.killpg(n.proc.pid, signal.SIGKILL)
            except OSError:
                pass
            try:
                n.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        if not self.epmd_before and accepts(4369):
            # the nodes started this epmd; it refuses to stop while any node is registered with it
            epmd = shutil.which("epmd") or "/usr/lib/erlang/bin/epmd"
            subprocess.run([epmd, "-kill"], capture_output=True, timeout=10)
        if not self.keep_dirs:
            shutil.rmtree(self.root, ignore_errors=True)


# ------------------------------------------------------------------ measuring
def amqp_conn(bench_dir: str, host: str, port: int):
    sys.path.insert(0, bench_dir)
    import amqp_bench
    return amqp_bench.Conn(host, port, "guest", "guest", "/", name="cluster-compare")


def check_quorum(cluster, name: str, wait: float = 30) -> dict:
    """The queue's type and members, once it is a quorum queue with 3 members all online: a
    member (for Usagi, an ISR member) that fell behind under the load gets `wait` seconds to
    come back, how long it took is in `wait_s`; after that the run stops with what was seen."""
    t0 = time.monotonic()
    while True:
        q = cluster.queue_info(name)
        if q["type"] == "quorum" and len(q["members"]) == 3 and len(q["online"]) == 3:
            q["wait_s"] = round(time.monotonic() - t0, 1)
            return q
        if q["type"] != "quorum" or time.monotonic() - t0 > wait:
            raise RuntimeError(f"{cluster.kind}: queue {name!r} is {q}; expected type quorum with 3 members, "
                               f"all online\n{cluster.describe()}")
        time.sleep(1)


def probe(cluster, bench_dir: str) -> dict:
    """Declare a quorum queue as the benchmark will, check its members, delete it."""
    c = amqp_conn(bench_dir, cluster.host, cluster.port)
    try:
        c.queue_declare(PROBE, durable=True, args={"x-queue-type": "quorum"})
        return check_quorum(cluster, PROBE)
    finally:
        try:
            c.queue_delete(PROBE)
        finally:
            c.close()


def measure(a, cluster, sid: str) -> dict:
    args = SCENARIOS[sid][1]
    cmd = [sys.executable, "-c", BENCH_MAIN, a.bench_dir, "--host", cluster.host, "--port", str(cluster.port),
           "-d", str(a.duration), "--warmup", str(a.warmup), "--quiet", "--keep", "--label", f"{cluster.kind}-{sid}",
           "--broker-pid", str(cluster.leader_pid), *args.split()]
    pids = cluster.pids()
    c0, s0, ru0, t0 = sum(map(proc_ticks, pids)), system_ticks(), resource.getrusage(resource.RUSAGE_CHILDREN), \
        time.monotonic()
    # a session of its own: on an error or ^C its producer and consumer processes go with it
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = p.communicate(timeout=a.duration + a.warmup + 300)
    except BaseException:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except OSError:
            pass
        p.wait()
        raise
    t1, ru1, s1 = time.monotonic(), resource.getrusage(resource.RUSAGE_CHILDREN), system_ticks()
    c1 = sum(map(proc_ticks, pids))
    lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"{cluster.kind} {sid}: amqp_bench gave no result (exit {p.returncode}):\n"
                           f"{stdout[-1500:]}\n{stderr[-1500:]}")
    r = json.loads(lines[-1])
    queue = check_quorum(cluster, QUEUE)
    c = amqp_conn(a.bench_dir, cluster.host, cluster.port)
    try:
        c.queue_delete(QUEUE)
    finally:
        c.close()
    wall = t1 - t0
    cluster_s = (c1 - c0) / CLK
    loadgen_s = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    busy_s = ((s1[0] - s1[1]) - (s0[0] - s0[1])) / CLK
    delivered = r.get("consumed") or 0
    return {
        "rate": r.get("conf_rate"), "cons_rate": r.get("cons_rate"), "pub_rate": r.get("pub_rate"),
        "ok": r.get("ok"), "lost": r.get("lost"), "nacked": r.get("nacked"), "errors": r.get("errors"),
        "published": r.get("published"), "consumed": delivered,
        "cluster_cpu_s": round(cluster_s, 2),
        "cluster_cpu_us_per_msg": round(cluster_s / delivered * 1e6, 2) if delivered else None,
        "leader_cpu_pct": (r.get("cpu") or {}).get("broker_pct"),
        "loadgen_cpu_pct": round(100 * loadgen_s / wall, 1),
        "other_pct": round(max(0.0, 100 * (busy_s - cluster_s - loadgen_s) / wall), 1),
        "wall_s": round(wall, 1), "queue": queue, "on_leader": queue["leader"] == cluster.target_name,
        "bench": r,
    }


def wait_quiet(pct: float, most: float):
    """Wait, up to `most` seconds, until the machine has used at most pct % of one core over 2 s."""
    deadline = time.monotonic() + most
    while True:
        s0 = system_ticks()
        time.sleep(2)
        s1 = system_ticks()
        busy = 100 * ((s1[0] - s1[1]) - (s0[0] - s0[1])) / CLK / 2
        if busy <= pct:
            return
        if time.monotonic() > deadline:
            print(f"  (the machine is still {busy:.0f} % busy after {most:.0f} s; measuring anyway)", flush=True)
            return


def run_side(a, kind: str, run: int, out, rows: list):
    cluster = UsagiCluster(a.etcd_members, a.ttl) if kind == "usagi" else \
        RabbitCluster(a.rabbitmq_bin, not a.rabbitmq_no_management, a.keep_dirs, a.rabbitmq_erl_args)
    if a.wait_quiet is not None:
        wait_quiet(a.wait_quiet, a.wait_max)
    t0 = time.monotonic()
    try:
        cluster.start()
        start_s = time.monotonic() - t0
        probe(cluster, a.bench_dir)
        for sid in a.scenarios:
            m = measure(a, cluster, sid)
            rec = {"run": run, "broker": kind, "scenario": sid, "args": SCENARIOS[sid][1],
                   "rabbitmq_erl_args": a.rabbitmq_erl_args if kind == "rabbitmq" else None,
                   "duration": a.duration, "warmup": a.warmup, "start_s": round(start_s, 1),
                   "at": time.strftime("%Y-%m-%dT%H:%M:%S"), "commit": a.commit,
                   "loadavg": os.getloadavg()[0], **m}
            rows.append(rec)
            out.write(json.dumps(rec) + "\n")
            out.flush()
            print(f"run {run} {kind:8s} {sid:4s} {m['rate'] or 0:9.0f} msg/s confirmed  "
                  f"{m['cluster_cpu_us_per_msg'] or 0:6.1f} µs cluster CPU/msg  other {m['other_pct']:5.1f}%  "
                  f"queue leader {m['queue']['leader']}{'' if m['on_leader'] else ' (NOT the node measured)'}"
                  f"  ok={m['ok']}", flush=True)
    finally:
        cluster.stop()


def table(rows: list) -> str:
    by = {}
    for r in rows:
        by.setdefault((r["scenario"], r["run"]), {})[r["broker"]] = r
    out = ["| scenario | Usagi 3 nodes (msg/s) | RabbitMQ 3 nodes, quorum (msg/s) | Usagi/RabbitMQ | runs (ratios) "
           "| cluster CPU µs/msg Usagi / RabbitMQ | other CPU % (max) |",
           "|---|---:|---:|---:|---|---:|---:|"]
    for sid in [s for s in SCENARIOS if any(k[0] == s for k in by)]:
        pairs = [v for (s, _), v in sorted(by.items()) if s == sid and "usagi" in v and "rabbitmq" in v]
        if not pairs:
            continue
        u = [p["usagi"]["rate"] or 0 for p in pairs]
        q = [p["rabbitmq"]["rate"] or 0 for p in pairs]
        ratios = [x / y for x, y in zip(u, q) if y]
        ucpu = [p["usagi"]["cluster_cpu_us_per_msg"] for p in pairs if p["usagi"]["cluster_cpu_us_per_msg"]]
        qcpu = [p["rabbitmq"]["cluster_cpu_us_per_msg"] for p in pairs if p["rabbitmq"]["cluster_cpu_us_per_msg"]]
        other = max(max(p["usagi"]["other_pct"], p["rabbitmq"]["other_pct"]) for p in pairs)
        bad = [p[k]["run"] for p in pairs for k in ("usagi", "rabbitmq") if not p[k]["ok"]]
        out.append(f"| {sid} | {statistics.median(u):,.0f} | {statistics.median(q):,.0f} | "
                   f"**{statistics.median(ratios):.2f}x** | {len(pairs)} ({', '.join(f'{x:.2f}' for x in ratios)}) | "
                   f"{statistics.median(ucpu):.1f} / {statistics.median(qcpu):.1f} | {other:.0f} |"
                   + (f" not ok in runs {bad}" if bad else ""))
    return "\n".join(out)


def default_bench_dir() -> str:
    for up in (("..",), ("..", "..")):
        d = os.path.normpath(os.path.join(REPO, *up, "shared", "bench"))
        if os.path.exists(os.path.join(d, "amqp_bench.py")):
            return d
    return os.path.normpath(os.path.join(REPO, "..", "shared", "bench"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="pairs of measurements; the order alternates")
    ap.add_argument("--scenarios", default="c16,c1k", help=f"comma-separated, of {','.join(SCENARIOS)}")
    ap.add_argument("--duration", type=int, default=10, help="measured seconds (amqp_bench -d)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--first", choices=("usagi", "rabbitmq"), default="usagi", help="who goes first in run 1")
    ap.add_argument("--bench-dir", default=default_bench_dir(),
                    help="the folder of amqp_bench.py (default: shared/bench next to the repository, or one "
                    "level up from a worktree)")
    ap.add_argument("--rabbitmq-bin", default="/usr/lib/rabbitmq/bin")
    ap.add_argument("--rabbitmq-no-management", action="store_true",
                    help="RabbitMQ nodes without the management plugin (Usagi's nodes serve theirs)")
    ap.add_argument("--rabbitmq-erl-args", default="", metavar="ARGS",
                    help="extra Erlang VM flags for the RabbitMQ nodes (RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS), "
                    "e.g. '+sbwt none +sbwtdcpu none +sbwtdio none' (no scheduler busy-waiting)")
    ap.add_argument("--etcd-members", type=int, default=1)
    ap.add_argument("--ttl", type=int, default=5, help="Usagi's lease TTL (s)")
    ap.add_argument("--wait-quiet", type=float, default=None, metavar="PCT",
                    help="before each cluster, wait until the machine uses at most PCT %% of one core")
    ap.add_argument("--wait-max", type=float, default=120, help="seconds --wait-quiet waits at most")
    ap.add_argument("--keep-dirs", action="store_true", help="keep RabbitMQ's scratch directories (logs)")
    ap.add_argument("--out", default=None, help="JSON lines, appended "
                    "(default benchmarks/results/<date>-cluster-compare.jsonl)")
    ap.add_argument("--table-from", default=None, help="print the table of a JSON lines file; runs nothing")
    a = ap.parse_args()
    if a.table_from:
        with open(a.table_from) as f:
            print(table([json.loads(ln) for ln in f if ln.strip()]))
        return 0
    a.scenarios = [s for s in a.scenarios.split(",") if s]
    for s in a.scenarios:
        if s not in SCENARIOS:
            ap.error(f"unknown scenario {s!r}; known: {', '.join(SCENARIOS)}")
    if not os.path.exists(os.path.join(a.bench_dir, "amqp_bench.py")):
        ap.error(f"no amqp_bench.py in {a.bench_dir} (--bench-dir)")
    if not os.path.exists(os.path.join(a.rabbitmq_bin, "rabbitmq-server")):
        ap.error(f"no rabbitmq-server in {a.rabbitmq_bin} (--rabbitmq-bin; Debian's rabbitmq-server package)")
    a.out = a.out or os.path.join(HERE, "results", time.strftime("%Y-%m-%d") + "-cluster-compare.jsonl")
    a.commit = git_commit()
    # a SIGTERM ends the run through the same teardown as an error or ^C
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    other = "rabbitmq" if a.first == "usagi" else "usagi"
    rows: list = []
    t0 = time.monotonic()
    print(f"scenarios {','.join(a.scenarios)}, {a.runs} runs of {a.warmup}+{a.duration} s, load average "
          f"{os.getloadavg()[0]:.2f}, results to {a.out}", flush=True)
    with open(a.out, "a") as out:
        try:
            for run in range(1, a.runs + 1):
                order = (a.first, other) if run % 2 else (other, a.first)
                for kind in order:
                    run_side(a, kind, run, out, rows)
        except (KeyboardInterrupt, SystemExit):
            print(f"interrupted after {len(rows)} measurements; the clusters it started are stopped",
                  file=sys.stderr, flush=True)
            raise
    print(f"\n{a.runs} runs in {(time.monotonic() - t0) / 60:.1f} min, load average at the end "
          f"{os.getloadavg()[0]:.2f}; confirmed msg/s, medians over the runs; the ratio is the median of "
          f"the per-run ratios")
    print(table(rows))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
