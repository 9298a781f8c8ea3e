#!/usr/bin/env python3
"""Usagi vs RabbitMQ, interleaved, on the same machine.

    python benchmarks/compare.py --runs 3                       # everything, ~25-35 min
    python benchmarks/compare.py --runs 1 --scenarios a16,e1k,conn1k
    python benchmarks/compare.py --table-from benchmarks/results/2026-11-25.jsonl

For every run and every scenario it measures Usagi, then RabbitMQ, right after each other
(U R U R ...), so that both see the same background load.  A pair in which either side saw
more than --max-other % CPU taken by other processes is re-run (up to --retries times).
Results go to --out as JSON lines (one per broker and run); a markdown table of medians and of
the ratio Usagi/RabbitMQ (median over pairs) is printed and written next to it as .md.

Throughput and latency scenarios run the stdlib load generator `amqp_bench.py` of the shared
bench folder by path (--bench-dir).  The idle-connections and deep-queue scenarios are
implemented here with a small raw AMQP 0-9-1 client (standard library only).

Usagi is started by this script for every scenario (fresh data dir, free port) unless
--usagi-url points at a broker that is already running.  RabbitMQ must already be running
(--rabbitmq-url / --rabbitmq-port).  Broker memory is the VmRSS of the process listening on the
port plus its children (/proc); broker CPU comes from /proc/PID/stat.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import base64

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
CLK = os.sysconf("SC_CLK_TCK")

# id -> (description, kind, args).  kind "bench": args for amqp_bench.py; "conn": N idle
# connections; "deep": N queued messages of `size` bytes.
SCENARIOS = {
    "a16": ("1P->1Q->1C 16 B autoack", "bench", "-s 16 --autoack"),
    "a1k": ("1P->1Q->1C 1 KiB autoack", "bench", "-s 1024 --autoack"),
    "b16": ("1P->1Q->1C 16 B manual ack, prefetch 100", "bench", "-s 16 --prefetch 100"),
    "b1k": ("1P->1Q->1C 1 KiB manual ack, prefetch 100", "bench", "-s 1024 --prefetch 100"),
    "c16": ("16 B persistent, durable Q, confirms (window 1000), ack/prefetch 100", "bench",
            "-s 16 --persistent --confirm 1000 --prefetch 100"),
    "c1k": ("1 KiB persistent, durable Q, confirms (window 1000), ack/prefetch 100", "bench",
            "-s 1024 --persistent --confirm 1000 --prefetch 100"),
    "d16": ("fanout 1P->4Q->4C 16 B autoack", "bench", "-s 16 --fanout -q 4 -y 4 --autoack"),
    "d1k": ("fanout 1P->4Q->4C 1 KiB autoack", "bench", "-s 1024 --fanout -q 4 -y 4 --autoack"),
    "e1k": ("latency at 1,000 msg/s, 16 B, ack/prefetch 100", "bench", "-s 16 --rate 1000 --latency --prefetch 100"),
    "e10k": ("latency at 10,000 msg/s, 16 B, ack/prefetch 100", "bench",
             "-s 16 --rate 10000 --latency --prefetch 100"),
    "conn1k": ("1,000 idle connections (heartbeat 0)", "conn", {"n": 1000}),
    "conn10k": ("10,000 idle connections (heartbeat 0)", "conn", {"n": 10000}),
    "deep1m": ("deep queue: 1,000,000 x 1 KiB transient, then drain", "deep", {"n": 1000000, "size": 1024}),
}
DEFAULT_SCENARIOS = "a16,a1k,b16,b1k,c16,c1k,d16,d1k,e1k,e10k,conn1k,conn10k,deep1m"

# Rows of the ratio table: (scenario, label, extractor, higher_is_better)
def _lat(k):
    return lambda r: (r.get("latency") or {}).get(k)


def _cpu_us(r):
    c = (r.get("cpu") or {}).get("broker_pct")
    rate = r.get("cons_rate")
    return c * 1e4 / rate if c and rate else None


METRICS = {
    "bench": [("consumed msg/s", lambda r: r.get("cons_rate"), True),
              ("broker CPU us/msg", _cpu_us, False)],
    "c": [("confirmed msg/s", lambda r: r.get("conf_rate"), True),
          ("broker CPU us/msg", _cpu_us, False)],
    "d": [("deliveries/s", lambda r: r.get("cons_rate"), True),
          ("broker CPU us/msg", _cpu_us, False)],
    "e": [("p50 latency us", _lat("p50_us"), False), ("p99 latency us", _lat("p99_us"), False),
          ("p99.9 latency us", _lat("p999_us"), False), ("broker CPU %", lambda r: (r.get("cpu") or {}).get("broker_pct"), False)],
    "conn": [("RSS KiB per connection", lambda r: r.get("rss_kib_per_conn"), False),
             ("connections opened/s", lambda r: r.get("open_rate"), True)],
    "deep": [("RSS bytes per queued msg", lambda r: r.get("rss_bytes_per_msg"), False),
             ("RSS MiB with queue full", lambda r: r.get("rss_full_mib"), False),
             ("data dir MiB with queue full", lambda r: r.get("disk_full_mib"), False),
             ("publish msg/s (into queue)", lambda r: r.get("publish_rate"), True),
             ("drain msg/s", lambda r: r.get("drain_rate"), True)],
}


def scenario(sid):
    """Known id, or connN / deepN with an optional k or m suffix (e.g. conn200, deep100k)."""
    if sid in SCENARIOS:
        return SCENARIOS[sid]
    m = re.fullmatch(r"(conn|deep)(\d+)([km]?)", sid)
    if not m:
        return None
    n = int(m.group(2)) * {"": 1, "k": 1000, "m": 1000000}[m.group(3)]
    if m.group(1) == "conn":
        return ("{:,} idle connections (heartbeat 0)".format(n), "conn", {"n": n})
    return ("deep queue: {:,} x 1 KiB transient, then drain".format(n), "deep", {"n": n, "size": 1024})


def metrics_for(sid):
    kind = scenario(sid)[1]
    if kind == "bench":
        return METRICS.get(sid[0], METRICS["bench"])
    return METRICS[kind]


# ------------------------------------------------------------------ /proc helpers
def listener_pid(port):
    """PID of the process listening on TCP `port`, via /proc/net/tcp{,6} and /proc/*/fd."""
    inodes = set()
    for fn in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(fn) as f:
                f.readline()
                for line in f:
                    parts = line.split()
                    if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add("socket:[%s]" % parts[9])
        except OSError:
            pass
    if not inodes:
        return None
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fds = os.listdir("/proc/%s/fd" % pid)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink("/proc/%s/fd/%s" % (pid, fd)) in inodes:
                    return int(pid)
            except OSError:
                pass
    return None


def _stat_fields(pid):
    with open("/proc/%d/stat" % pid) as f:
        s = f.read()
    return s[s.rindex(")") + 2:].split()


def proc_tree(pid):
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                kids.setdefault(int(_stat_fields(int(d))[1]), []).append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def status_kib(pid, key="VmRSS"):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_kib(pid):
    """VmRSS of pid and all its descendants, KiB."""
    return sum(status_kib(p) for p in proc_tree(pid)) if pid else None


def cpu_ticks(pids):
    t = 0
    for p in pids:
        try:
            f = _stat_fields(p)
            t += int(f[11]) + int(f[12])
        except (OSError, ValueError, IndexError):
            pass
    return t


def sys_busy_ticks():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return sum(v) - v[3] - v[4]


class CpuWindow:
    """CPU % (100 = one core) of the broker tree, of this process, and of everything else."""

    def __init__(self, broker_pid):
        self.bpids = proc_tree(broker_pid) if broker_pid else []
        self.t0 = time.monotonic()
        self.b0 = cpu_ticks(self.bpids)
        self.s0 = sys_busy_ticks()
        self.m0 = sum(os.times()[:4])

    def result(self):
        dt = time.monotonic() - self.t0
        if dt <= 0:
            return {}
        b = (cpu_ticks(self.bpids) - self.b0) / CLK / dt * 100
        s = (sys_busy_ticks() - self.s0) / CLK / dt * 100
        m = (sum(os.times()[:4]) - self.m0) / dt * 100
        return {"broker_pct": round(b, 1), "loadgen_pct": round(m, 1), "system_busy_pct": round(s, 1),
                "other_pct": round(max(0.0, s - b - m), 1), "window_s": round(dt, 2)}


def nofile_limit(pid):
    try:
        with open("/proc/%d/limits" % pid) as f:
            for line in f:
                if line.startswith("Max open files"):
                    p = line.split()
                    return int(p[3]), int(p[4])
    except (OSError, ValueError):
        pass
    return None


def disk_mib(path):
    """Disk space used under path (allocated blocks), MiB."""
    if not path:
        return None
    total = 0
    for root, _dirs, files in os.walk(path):
        for fn in files:
            try:
                total += os.lstat(os.path.join(root, fn)).st_blocks * 512
            except OSError:
                pass
    return round(total / 1048576, 1)


def rabbitmq_data_dir(pid):
    """The node's mnesia dir, from its environment (RABBITMQ_MNESIA_DIR / _BASE)."""
    try:
        with open("/proc/%d/environ" % pid, "rb") as f:
            env = dict(x.split(b"=", 1) for x in f.read().split(b"\0") if b"=" in x)
    except OSError:
        return None
    d = env.get(b"RABBITMQ_MNESIA_DIR") or env.get(b"RABBITMQ_MNESIA_BASE")
    return d.decode() if d else None


# ------------------------------------------------------------------ raw AMQP 0-9-1
PROTO = b"AMQP\x00\x00\x09\x01"
_HDR = struct.Struct(">BHI")


def _ss(s):
    b = s.encode() if isinstance(s, str) else s
    return bytes([len(b)]) + b


def _ls(b):
    return struct.pack(">I", len(b)) + b


def frame(typ, ch, payload):
    return _HDR.pack(typ, ch, len(payload)) + payload + b"\xce"


def mframe(ch, cls, mid, args=b""):
    return frame(1, ch, struct.pack(">HH", cls, mid) + args)


CLIENT_PROPS = (b"\x00\x00\x00\x00")  # empty field table: no capabilities asked for


class AMQPFail(Exception):
    pass


def _close_text(p):
    code = struct.unpack_from(">H", p, 4)[0]
    n = p[6]
    return "%d %s" % (code, p[7:7 + n].decode(errors="replace"))


class Raw:
    """Minimal blocking AMQP connection: handshake by hand, heartbeat 0."""

    def __init__(self, host, port, user, password, vhost, timeout=30.0, connect=True):
        self.host, self.port, self.user, self.password, self.vhost = host, port, user, password, vhost
        self.buf = bytearray()
        self.frame_max = 131072
        self.sock = None
        if connect:
            self.start(timeout)
            self.finish_start()
            self.finish_tune()
            self.finish_open()

    # the handshake in 4 steps so that many connections can be driven in lock step
    def start(self, timeout):
        self.sock = socket.create_connection((self.host, self.port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(PROTO)

    def finish_start(self):
        self.expect(10, 10)
        resp = b"\x00" + self.user.encode() + b"\x00" + self.password.encode()
        self.sock.sendall(mframe(0, 10, 11, CLIENT_PROPS + _ss("PLAIN") + _ls(resp) + _ss("en_US")))

    def finish_tune(self):
        p = self.expect(10, 30)
        chmax, fmax, _hb = struct.unpack_from(">HIH", p, 4)
        self.frame_max = min(fmax or 131072, 131072)
        self.sock.sendall(mframe(0, 10, 31, struct.pack(">HIH", chmax or 2047, self.frame_max, 0)) +
                          mframe(0, 10, 40, _ss(self.vhost) + _ss("") + b"\x00"))

    def finish_open(self):
        self.expect(10, 41)

    def read_frame(self):
        b = self.buf
        while True:
            if len(b) >= 7:
                t, ch, n = _HDR.unpack_from(b, 0)
                if len(b) >= n + 8:
                    if b[n + 7] != 0xCE:
                        raise AMQPFail("bad frame end")
                    p = bytes(b[7:7 + n])
                    del b[:n + 8]
                    return t, ch, p
            d = self.sock.recv(65536)
            if not d:
                raise AMQPFail("connection closed by broker")
            b += d

    def expect(self, cls, mid):
        want = (cls << 16) | mid
        while True:
            t, ch, p = self.read_frame()
            if t != 1:
                continue
            cm = struct.unpack_from(">I", p, 0)[0]
            if cm == want:
                return p
            if cm == (10 << 16) | 50:
                self.sock.sendall(mframe(0, 10, 51))
                raise AMQPFail("connection.close: " + _close_text(p))
            if cm == (20 << 16) | 40:
                self.sock.sendall(mframe(ch, 20, 41))
                raise AMQPFail("channel.close: " + _close_text(p))
            if cm in ((10 << 16) | 60, (10 << 16) | 61):  # blocked / unblocked
                continue
            raise AMQPFail("expected %d.%d, got %d.%d" % (cls, mid, cm >> 16, cm & 0xFFFF))

    def rpc(self, ch, cls, mid, args, reply_mid):
        self.sock.sendall(mframe(ch, cls, mid, args))
        return self.expect(cls, reply_mid)

    def channel_open(self, ch=1):
        self.rpc(ch, 20, 10, _ss(""), 11)

    def queue_declare(self, q, passive=False, durable=False, ch=1):
        p = self.rpc(ch, 50, 10, b"\x00\x00" + _ss(q) + bytes([passive | durable << 1]) + b"\x00\x00\x00\x00", 11)
        n = p[4]
        return struct.unpack_from(">II", p, 5 + n)  # message count, consumer count

    def queue_delete(self, q, ch=1):
        self.rpc(ch, 50, 40, b"\x00\x00" + _ss(q) + b"\x00", 41)

    def close(self, timeout=10.0):
        try:
            self.sock.settimeout(timeout)
            self.send_close()
            self.expect(10, 51)
        except (OSError, AMQPFail):
            pass
        finally:
            self.sock.close()

    def send_close(self):
        self.sock.sendall(mframe(0, 10, 50, struct.pack(">H", 200) + _ss("bye") + b"\x00\x00\x00\x00"))


# ------------------------------------------------------------------ brokers
class Target:
    """A broker endpoint; `pid` is the listening process (for RSS and CPU)."""

    def __init__(self, name, host, port, user, password, vhost):
        self.name, self.host, self.port = name, host, port
        self.user, self.password, self.vhost = user, password, vhost
        self.pid = None
        self.log = None

    def raw(self, **kw):
        return Raw(self.host, self.port, self.user, self.password, self.vhost, **kw)

    def find_pid(self):
        self.pid = listener_pid(self.port)
        return self.pid

    def up(self, sid, run):
        self.find_pid()

    def down(self):
        pass

    def alive(self):
        return self.pid is not None and os.path.exists("/proc/%d" % self.pid)

    def data_dir(self):
        return None


def parse_url(url, default_port):
    u = urllib.parse.urlparse(url)
    vhost = urllib.parse.unquote(u.path[1:]) if u.path and u.path != "/" else "/"
    return (u.hostname or "127.0.0.1", u.port or default_port, urllib.parse.unquote(u.username or "guest"),
            urllib.parse.unquote(u.password or "guest"), vhost)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class UsagiProcess(Target):
    """Starts `--usagi-cmd` for every scenario with a fresh data dir on a free port."""

    def __init__(self, cmd, workdir, keep_logs):
        super().__init__("usagi", "127.0.0.1", 0, "guest", "guest", "/")
        self.cmd, self.workdir, self.keep_logs = cmd, workdir, keep_logs
        self.proc = None
        self.data_dir_path = None

    def up(self, sid, run):
        self.port = free_port()
        self.data_dir_path = tempfile.mkdtemp(prefix="usagi-bench-%s-" % sid)
        argv = shlex.split(self.cmd.format(port=self.port, data_dir=self.data_dir_path, python=sys.executable))
        self.log = os.path.join(self.workdir, "usagi-%s-run%d.log" % (sid, run))
        logf = open(self.log, "wb")
        self.proc = subprocess.Popen(argv, cwd=REPO, stdout=logf, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        logf.close()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 30:
            if self.proc.poll() is not None:
                raise RuntimeError("usagi exited with %s at startup: %s" % (self.proc.returncode, self.log_tail()))
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError("usagi did not listen on port %d within 30 s" % self.port)
        self.pid = listener_pid(self.port) or self.proc.pid
        time.sleep(0.3)

    def data_dir(self):
        return self.data_dir_path

    def log_tail(self, n=1500):
        try:
            with open(self.log, "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except (OSError, TypeError):
            return ""

    def down(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait()
            self.proc = None
        if self.data_dir_path:
            shutil.rmtree(self.data_dir_path, ignore_errors=True)
            self.data_dir_path = None


class RabbitMQ(Target):
    def __init__(self, url, mgmt, node):
        super().__init__("rabbitmq", *parse_url(url, 5672))
        self.mgmt, self.node = mgmt, node

    def up(self, sid, run):
        if not self.find_pid():
            raise RuntimeError("nothing listens on %s:%d; start RabbitMQ first (see benchmarks/README.md)"
                               % (self.host, self.port))

    def data_dir(self):
        return rabbitmq_data_dir(self.pid) if self.pid else None

    def version(self):
        try:
            ov = self.mgmt_get("/api/overview")
            return "%s (Erlang %s)" % (ov.get("rabbitmq_version"), ov.get("erlang_version"))
        except Exception:
            pass
        try:
            out = subprocess.run(["rabbitmqctl", "-n", self.node, "status"], capture_output=True, text=True,
                                 timeout=60).stdout
            for line in out.splitlines():
                if line.startswith("RabbitMQ version:"):
                    return line.split(":", 1)[1].strip()
        except (OSError, subprocess.TimeoutExpired):
            pass
        return None

    def mgmt_get(self, path):
        req = urllib.request.Request(self.mgmt.rstrip("/") + path)
        req.add_header("Authorization", "Basic " + base64.b64encode(
            ("%s:%s" % (self.user, self.password)).encode()).decode())
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())



class RabbitMQTemp(RabbitMQ):
    """A throw-away RabbitMQ node (Debian package) with `ulimit -n` raised, no plugins, fresh
    mnesia dir, started for one connN scenario and stopped after it.  Needed because the Erlang
    VM sizes its poll set from the open-files limit it was booted with: raising the limit of a
    running node does not let it accept more sockets."""

    def __init__(self, base, workdir):
        super().__init__("amqp://%s:%s@127.0.0.1:5672/%%2F" % (base.user, base.password), "", "")
        self.workdir = workdir
        self.dir = None

    def up(self, sid, run):
        self.port, dist = free_port(), free_port()
        self.node = "usagi-bench-conns-%d@localhost" % os.getpid()
        self.dir = tempfile.mkdtemp(prefix="usagi-bench-rmq-")
        for sub in ("mnesia", "log"):
            os.makedirs(os.path.join(self.dir, sub))
        with open(os.path.join(self.dir, "enabled_plugins"), "w") as f:
            f.write("[].\n")
        with open(os.path.join(self.dir, "rabbitmq.conf"), "w") as f:
            f.write("listeners.tcp.1 = 127.0.0.1:%d\nloopback_users = none\n" % self.port)
        if os.geteuid() == 0:
            subprocess.run(["chown", "-R", "rabbitmq:rabbitmq", self.dir], check=True)
            os.chmod(self.dir, 0o755)
        env = dict(os.environ, RABBITMQ_NODENAME=self.node, RABBITMQ_NODE_PORT=str(self.port),
                   RABBITMQ_NODE_IP_ADDRESS="127.0.0.1", RABBITMQ_DIST_PORT=str(dist),
                   RABBITMQ_MNESIA_BASE=self.dir + "/mnesia", RABBITMQ_LOG_BASE=self.dir + "/log",
                   RABBITMQ_ENABLED_PLUGINS_FILE=self.dir + "/enabled_plugins",
                   RABBITMQ_CONFIG_FILE=self.dir + "/rabbitmq")
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]

        def limits():
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        cmd = ["rabbitmq-server", "-detached"]
        if os.geteuid() == 0:
            # the package's wrapper would `su rabbitmq`, whose pam_limits resets `ulimit -n` to 1024
            cmd = ["runuser", "-u", "rabbitmq", "--", "sh", "-c",
                   "ulimit -n %d && exec /usr/sbin/rabbitmq-server -detached" % hard]
        r = subprocess.run(cmd, cwd=self.dir, env=env, preexec_fn=limits, capture_output=True, text=True,
                           timeout=120)
        if r.returncode != 0:
            raise RuntimeError("%s failed: %s" % (" ".join(cmd), (r.stderr or r.stdout)[-500:]))
        t0 = time.monotonic()
        while time.monotonic() - t0 < 120:
            if listener_pid(self.port):
                break
            time.sleep(0.5)
        r = subprocess.run(["rabbitmqctl", "-n", self.node, "await_startup", "--timeout", "120"],
                           capture_output=True, text=True, timeout=180)
        if not self.find_pid():
            raise RuntimeError("temporary RabbitMQ node %s did not start: %s" % (self.node, r.stderr[-500:]))
        time.sleep(1)

    def down(self):
        if self.dir:
            # no pipes: on a timeout, rabbitmqctl's own VM would keep them open and the wait would hang
            try:
                subprocess.run(["rabbitmqctl", "-n", self.node, "stop"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, timeout=120)
            except subprocess.TimeoutExpired:
                pass
            t0 = time.monotonic()
            while self.pid and os.path.exists("/proc/%d" % self.pid) and time.monotonic() - t0 < 30:
                time.sleep(0.2)
            if self.pid and os.path.exists("/proc/%d" % self.pid):   # a node too busy to stop: ours, end it
                for sig in (signal.SIGTERM, signal.SIGKILL):
                    try:
                        os.kill(self.pid, sig)
                    except OSError:
                        break
                    time.sleep(5)
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


# ------------------------------------------------------------------ scenarios
def run_bench(a, tgt, sid, args):
    script = os.path.join(a.bench_dir, "amqp_bench.py")
    cmd = [sys.executable, script, "--host", tgt.host, "--port", str(tgt.port), "--user", tgt.user,
           "--password", tgt.password, "--vhost", tgt.vhost, "-d", str(a.duration), "--warmup", str(a.warmup),
           "--quiet", "--label", "%s-%s" % (tgt.name, sid)] + shlex.split(args)
    if tgt.pid:
        cmd += ["--broker-pid", str(tgt.pid)]
    rss0 = rss_kib(tgt.pid)
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=a.duration + a.warmup + 300)
    except subprocess.TimeoutExpired as e:
        return {"errors": ["amqp_bench timed out"], "ok": False, "stdout_tail": str(e.stdout)[-1500:]}
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    try:
        res = json.loads(lines[-1])
    except (IndexError, ValueError):
        res = {"errors": ["amqp_bench printed no JSON (rc %d)" % p.returncode], "ok": False,
               "stderr_tail": p.stderr[-1500:], "stdout_tail": p.stdout[-1500:]}
    res["rc"] = p.returncode
    res["cmd"] = " ".join(shlex.quote(c) for c in cmd)
    res["rss_before_kib"] = rss0
    res["rss_after_kib"] = rss_kib(tgt.pid)
    if tgt.name == "usagi" and tgt.pid:
        res["usagi_peak_rss_kib"] = status_kib(tgt.pid, "VmHWM")
    return res


def run_conn(a, tgt, sid, n):
    res = {"n": n, "errors": []}
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    res["client_nofile"] = [soft, hard]
    if soft < n + 200:
        res["errors"].append("client ulimit -n is %d (hard %d), %d connections need more; raise the hard limit"
                             % (soft, hard, n))
        res["ok"] = False
        return res
    lim = nofile_limit(tgt.pid) if tgt.pid else None
    if lim and lim[0] < n + 50:
        res["errors"].append("the broker (pid %d) may open only %d files, fewer than %d connections; start it with "
                             "a higher `ulimit -n` (for RabbitMQ see --rabbitmq-conns)" % (tgt.pid, lim[0], n))
        res["ok"] = False
        return res
    res["broker_nofile"] = nofile_limit(tgt.pid) if tgt.pid else None
    time.sleep(a.settle)
    rss0 = rss_kib(tgt.pid)
    conns, opened = [], 0
    t0 = time.monotonic()
    cpu = CpuWindow(tgt.pid)
    try:
        for i in range(0, n, a.conn_batch):
            batch = []
            for _ in range(min(a.conn_batch, n - i)):
                c = tgt.raw(connect=False)
                c.start(15.0)
                batch.append(c)
            for step in (Raw.finish_start, Raw.finish_tune, Raw.finish_open):
                for c in batch:
                    step(c)
            conns += batch
            batch = []
            opened = len(conns)
    except (OSError, AMQPFail) as e:
        res["errors"].append("after %d connections: %s: %s" % (opened, type(e).__name__, e))
        for c in batch:
            if c.sock:
                c.sock.close()
    open_s = time.monotonic() - t0
    res["cpu_open"] = cpu.result()
    res["opened"] = opened
    res["open_s"] = round(open_s, 2)
    res["open_rate"] = round(opened / open_s) if open_s > 0 else None
    time.sleep(a.settle)
    cpu = CpuWindow(tgt.pid)
    time.sleep(a.settle)
    res["cpu_idle"] = cpu.result()   # broker CPU with n idle connections open
    res["cpu"] = res["cpu_open"]
    rss1 = rss_kib(tgt.pid)
    res["rss_before_kib"], res["rss_after_kib"] = rss0, rss1
    if opened and rss0 is not None and rss1 is not None:
        res["rss_kib_per_conn"] = round((rss1 - rss0) / opened, 2)
    # graceful close, in batches; give up waiting for close-ok after 60 s in all
    deadline = time.monotonic() + 60
    for i in range(0, len(conns), a.conn_batch):
        batch = conns[i:i + a.conn_batch]
        for c in batch:
            try:
                c.sock.settimeout(5)
                c.send_close()
            except OSError:
                pass
        for c in batch:
            try:
                if time.monotonic() < deadline:
                    c.expect(10, 51)
            except (OSError, AMQPFail):
                pass
            c.sock.close()
    if not tgt.alive():
        res["errors"].append("broker process is gone")
    res["ok"] = not res["errors"] and opened == n
    return res


def run_deep(a, tgt, sid, n, size):
    """Fill one transient queue with n messages, measure RSS, drain it with one consumer."""
    res = {"n": n, "size": size, "errors": [], "queue": "usagi-bench-deep"}
    q = res["queue"]
    try:
        pub = tgt.raw()
        pub.channel_open(1)
        try:
            pub.queue_delete(q)
        except AMQPFail:
            pub = tgt.raw()
            pub.channel_open(1)
        pub.queue_declare(q)
        time.sleep(a.settle)
        rss0 = rss_kib(tgt.pid)
        # pre-encoded publish batch: basic.publish(exchange "", routing key q) + header + body
        props = struct.pack(">HB", 0x1000, 1)  # property flags: delivery-mode only, 1 = transient
        one = (mframe(1, 60, 40, b"\x00\x00" + _ss("") + _ss(q) + b"\x00") +
               frame(2, 1, struct.pack(">HHQ", 60, 0, size) + props) +
               frame(3, 1, b"\x00" * size))
        per = max(1, 65536 // len(one))
        chunk = one * per
        cpu = CpuWindow(tgt.pid)
        t0 = time.monotonic()
        sent = 0
        pub.sock.setblocking(True)
        while sent < n:
            k = min(per, n - sent)
            pub.sock.sendall(chunk if k == per else one * k)
            sent += k
            if sent % (per * 64) == 0:  # notice a channel/connection close early
                pub.sock.setblocking(False)
                try:
                    d = pub.sock.recv(65536)
                except BlockingIOError:
                    d = None
                pub.sock.setblocking(True)
                if d == b"":
                    raise AMQPFail("broker closed the publishing connection")
                if d:
                    pub.buf += d
                    pub.sock.settimeout(5)
                    pub.expect(0, 0)  # raises with the broker's close reason
        sent_s = time.monotonic() - t0
        pub.sock.settimeout(600)
        count = pub.queue_declare(q, passive=True)[0]
        deadline = time.monotonic() + 120
        while count < n and time.monotonic() < deadline:
            time.sleep(0.2)
            count = pub.queue_declare(q, passive=True)[0]
        fill_s = time.monotonic() - t0
        res["cpu_publish"] = cpu.result()
        res["published"] = sent
        res["queued"] = count
        res["send_s"] = round(sent_s, 2)
        res["fill_s"] = round(fill_s, 2)
        res["publish_rate"] = round(count / fill_s) if fill_s > 0 else None
        time.sleep(a.settle)
        rss1 = rss_kib(tgt.pid)
        res["rss_before_kib"], res["rss_full_kib"] = rss0, rss1
        res["data_dir"] = tgt.data_dir()
        res["disk_full_mib"] = disk_mib(res["data_dir"])
        res["rss_full_mib"] = round(rss1 / 1024, 1) if rss1 else None
        if rss0 is not None and rss1 is not None and count:
            res["rss_bytes_per_msg"] = round((rss1 - rss0) * 1024 / count)
        if tgt.name == "usagi":
            res["usagi_peak_rss_kib"] = status_kib(tgt.pid, "VmHWM")

        # drain with one consumer, manual ack (multiple) with prefetch, or autoack
        con = tgt.raw()
        con.channel_open(1)
        con.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        if not a.deep_autoack:
            con.rpc(1, 60, 10, struct.pack(">IH", 0, a.deep_prefetch) + b"\x00", 11)
        cpu = CpuWindow(tgt.pid)
        t0 = time.monotonic()
        con.rpc(1, 60, 20, b"\x00\x00" + _ss(q) + _ss("drain") + bytes([2 if a.deep_autoack else 0]) +
                b"\x00\x00\x00\x00", 21)
        got, acked, last = 0, 0, t0
        ack_every = max(1, a.deep_prefetch // 2)
        deliver = struct.pack(">HH", 60, 60)
        buf = bytes(con.buf)
        con.buf = bytearray()
        sock = con.sock
        sock.settimeout(1.0)
        unpack = _HDR.unpack_from
        pos = 0
        while got < count:
            try:
                d = sock.recv(1 << 20)
            except socket.timeout:
                if time.monotonic() - last > a.drain_idle:
                    res["errors"].append("drain stalled: no delivery for %.0f s" % a.drain_idle)
                    break
                continue
            if not d:
                res["errors"].append("broker closed the consuming connection")
                break
            buf = buf[pos:] + d if pos < len(buf) else d
            pos, end = 0, len(buf)
            while pos + 7 <= end:
                t, _ch, sz = unpack(buf, pos)
                nxt = pos + sz + 8
                if nxt > end:
                    break
                if t == 1:
                    if buf[pos + 7:pos + 11] == deliver:
                        got += 1
                    elif buf[pos + 7:pos + 11] in (b"\x00\x14\x00\x28", b"\x00\x0a\x00\x32"):
                        res["errors"].append("broker closed: " + _close_text(buf[pos + 7:nxt - 1]))
                        count = got
                        break
                pos = nxt
            last = time.monotonic()
            if not a.deep_autoack and got - acked >= ack_every:
                sock.sendall(mframe(1, 60, 80, struct.pack(">QB", got, 1)))  # ack multiple up to tag `got`
                acked = got
        drain_s = last - t0
        if not a.deep_autoack and got > acked:
            sock.sendall(mframe(1, 60, 80, struct.pack(">QB", got, 1)))
        res["cpu_drain"] = cpu.result()
        res["cpu"] = res["cpu_drain"]
        res["consumed"] = got
        res["drain_s"] = round(drain_s, 2)
        res["drain_rate"] = round(got / drain_s) if drain_s > 0 else None
        con.sock.settimeout(30)
        con.buf = bytearray(buf[pos:])
        con.close()
        time.sleep(0.5)
        left = pub.queue_declare(q, passive=True)[0]
        res["left_in_queue"] = left
        res["lost"] = n - got - left
        res["rss_after_drain_kib"] = rss_kib(tgt.pid)
        pub.queue_delete(q)
        pub.close()
    except (OSError, AMQPFail) as e:
        res["errors"].append("%s: %s" % (type(e).__name__, e))
    if not tgt.alive():
        res["errors"].append("broker process is gone")
    res["ok"] = not res["errors"] and res.get("lost") == 0 and res.get("consumed") == n
    return res


def other_pct(res):
    vals = [(res.get(k) or {}).get("other_pct") for k in ("cpu", "cpu_open", "cpu_publish", "cpu_drain")]
    vals = [v for v in vals if v is not None]
    return max(vals) if vals else None


def wait_quiet(max_busy, max_wait):
    """Before a pair: wait (up to max_wait s) until the whole machine is below max_busy % CPU
    (100 = one core), sampled over 1 s.  Returns the last sample."""
    t0 = time.monotonic()
    while True:
        s0, w0 = sys_busy_ticks(), time.monotonic()
        time.sleep(1.0)
        busy = (sys_busy_ticks() - s0) / CLK / (time.monotonic() - w0) * 100
        if busy <= max_busy or time.monotonic() - t0 >= max_wait:
            if time.monotonic() - t0 > 1.5:
                print("   waited %.0f s for a quieter machine (busy %.0f%%)" % (time.monotonic() - t0, busy),
                      file=sys.stderr)
            return busy
        time.sleep(2.0)


# ------------------------------------------------------------------ provenance
def git_info():
    def g(*args):
        try:
            return subprocess.run(["git", "-C", REPO] + list(args), capture_output=True, text=True,
                                  timeout=30).stdout.strip()
        except OSError:
            return None
    h = hashlib.sha1()
    for root, dirs, files in sorted(os.walk(os.path.join(REPO, "usagi"))):
        dirs.sort()
        for fn in sorted(files):
            if fn.endswith(".py"):
                try:
                    with open(os.path.join(root, fn), "rb") as f:
                        h.update(fn.encode() + f.read())
                except OSError:
                    pass
    return {"commit": g("rev-parse", "--short", "HEAD"), "usagi_dirty": bool(g("status", "--porcelain", "usagi")),
            "usagi_src_sha1": h.hexdigest()[:12]}


def machine_info():
    cpu = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1])
    except OSError:
        mem = None
    return {"nproc": os.cpu_count(), "cpu_model": cpu, "mem_gib": round(mem / 1048576, 1) if mem else None,
            "kernel": platform.release(), "python": platform.python_version(), "python_exe": sys.executable}


# ------------------------------------------------------------------ table
def fmt(v):
    if v is None:
        return "-"
    if abs(v) >= 100:
        return "{:,.0f}".format(v)
    if abs(v) >= 10:
        return "%.1f" % v
    return "%.2f" % v


def table(records, max_other):
    by = {}
    for r in records:
        if r.get("type") == "result":
            by.setdefault(r["scenario"], {}).setdefault(r["pair"], {})[r["broker"]] = r
    lines = ["| scenario | metric | Usagi | RabbitMQ | Usagi/RabbitMQ | better | pairs (quiet/all) | other CPU % U / R | errors or loss |",
             "|---|---|---|---|---|---|---|---|---|"]
    for sid in [s for s in SCENARIOS if s in by] + sorted(s for s in by if s not in SCENARIOS):
        pairs = [p for p in by[sid].values() if "usagi" in p and "rabbitmq" in p]
        singles = [p for p in by[sid].values() if not ("usagi" in p and "rabbitmq" in p)]
        quiet = [p for p in pairs if all((other_pct(p[b]["res"]) or 0) <= max_other for b in p)]
        use = quiet or pairs
        probs = []
        for p in by[sid].values():
            for b, r in sorted(p.items()):
                res = r["res"]
                if not res.get("ok", False):
                    e = "; ".join(str(x) for x in (res.get("errors") or []))[:120]
                    probs.append("%s run %s: %s%s" % (b[0].upper(), r["run"], e or "not ok",
                                                      " lost=%s" % res.get("lost") if res.get("lost") else ""))
        first = True
        for label, fn, higher in metrics_for(sid):
            u = [fn(p["usagi"]["res"]) for p in use]
            rb = [fn(p["rabbitmq"]["res"]) for p in use]
            if not use:
                u = [fn(p[b]["res"]) for p in singles for b in p if b == "usagi"]
                rb = [fn(p[b]["res"]) for p in singles for b in p if b == "rabbitmq"]
            ratios = [x / y for x, y in zip(u, rb) if x is not None and y not in (None, 0)]
            u = [x for x in u if x is not None]
            rb = [x for x in rb if x is not None]
            mu = statistics.median(u) if u else None
            mr = statistics.median(rb) if rb else None
            ratio = statistics.median(ratios) if ratios else None
            better = "-"
            if ratio is not None:
                better = "Usagi" if (ratio > 1) == higher and ratio != 1 else "RabbitMQ"
            oth = "-"
            if first:
                ou = [other_pct(p["usagi"]["res"]) for p in use]
                orr = [other_pct(p["rabbitmq"]["res"]) for p in use]
                ou = [x for x in ou if x is not None]
                orr = [x for x in orr if x is not None]
                oth = "%s / %s" % (fmt(statistics.median(ou)) if ou else "-", fmt(statistics.median(orr)) if orr else "-")
            lines.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                sid if first else "", label, fmt(mu), fmt(mr), "%.2f" % ratio if ratio is not None else "-",
                better, "%d/%d" % (len(quiet), len(pairs)) if first else "", oth,
                ("<br>".join(probs) or "none") if first else ""))
            first = False
    return "\n".join(lines)


def details(records):
    """Per broker and scenario: medians of the raw numbers, over all runs (noisy ones included)."""
    rows = {}
    for r in records:
        if r.get("type") == "result":
            rows.setdefault((r["scenario"], r["broker"]), []).append(r["res"])
    cols = [("published msg/s", lambda x: x.get("pub_rate") or x.get("publish_rate")),
            ("consumed msg/s", lambda x: x.get("cons_rate") or x.get("drain_rate")),
            ("p50/p99/p99.9 us", None),
            ("RSS MiB before/after", None),
            ("broker CPU %", lambda x: (x.get("cpu") or {}).get("broker_pct")),
            ("loadgen CPU %", lambda x: (x.get("cpu") or {}).get("loadgen_pct")),
            ("other CPU %", other_pct)]
    out = ["| scenario | broker | runs | " + " | ".join(c for c, _ in cols) + " | lost | errors |",
           "|---" * (len(cols) + 5) + "|"]
    order = [s for s in SCENARIOS] + sorted({k[0] for k in rows} - set(SCENARIOS))
    for sid in order:
        for b in ("usagi", "rabbitmq"):
            rs = rows.get((sid, b))
            if not rs:
                continue
            cells = []
            for name, fn in cols:
                if name.startswith("p50"):
                    ls = [x.get("latency") for x in rs if x.get("latency")]
                    cells.append("/".join(fmt(statistics.median([l[k] for l in ls])) for k in ("p50_us", "p99_us", "p999_us"))
                                 if ls else "-")
                elif name.startswith("RSS"):
                    b0 = [x.get("rss_before_kib") for x in rs if x.get("rss_before_kib")]
                    b1 = [x.get("rss_full_kib") or x.get("rss_after_kib") for x in rs
                          if x.get("rss_full_kib") or x.get("rss_after_kib")]
                    cells.append("%s / %s" % (fmt(statistics.median(b0) / 1024) if b0 else "-",
                                              fmt(statistics.median(b1) / 1024) if b1 else "-"))
                else:
                    v = [fn(x) for x in rs]
                    v = [x for x in v if x is not None]
                    cells.append(fmt(statistics.median(v)) if v else "-")
            lost = ",".join(str(x.get("lost", "-")) for x in rs)
            errs = sum(1 for x in rs if x.get("errors"))
            out.append("| %s | %s | %d | %s | %s | %s |" % (sid, b, len(rs), " | ".join(cells), lost, errs))
    return "\n".join(out)


# ------------------------------------------------------------------ main
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench-dir", default=os.path.normpath(os.path.join(REPO, "..", "shared", "bench")),
                    help="folder with amqp_bench.py (default: ../shared/bench next to the repo)")
    ap.add_argument("--usagi-cmd", default="{python} -m usagi.cli.server --port {port} --data-dir {data_dir} "
                                           "--no-management --log-level warning",
                    help="command that starts Usagi; {port}, {data_dir} and {python} are filled in "
                         "(run from the repo root, once per scenario, stopped with SIGTERM)")
    ap.add_argument("--usagi-url", default="",
                    help="use an already running Usagi at this amqp:// URL instead of starting one")
    ap.add_argument("--rabbitmq-url", default="amqp://guest:guest@127.0.0.1:5682/%2F")
    ap.add_argument("--rabbitmq-port", type=int, default=None, help="port of the running RabbitMQ (default 5682)")
    ap.add_argument("--rabbitmq-mgmt", default="http://127.0.0.1:15682", help="management API (for the version)")
    ap.add_argument("--rabbitmq-node", default="bench@localhost", help="node name for rabbitmqctl")
    ap.add_argument("--rabbitmq-conns", choices=("auto", "same", "spawn"), default="auto",
                    help="connN against RabbitMQ: 'same' node, or 'spawn' a temporary node (rabbitmq-server "
                         "-detached, ulimit -n raised, no plugins) per scenario; 'auto' spawns only when the "
                         "running node's open-files limit is below N (default)")
    ap.add_argument("--brokers", default="usagi,rabbitmq", help="which to run, in this order within a pair")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--scenarios", default=DEFAULT_SCENARIOS, help="comma-separated: " + ",".join(SCENARIOS))
    ap.add_argument("--duration", type=float, default=10.0, help="amqp_bench measured window, s")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--max-other", type=float, default=30.0,
                    help="a pair where other processes took more than this CPU %% (100 = one core) is noisy")
    ap.add_argument("--retries", type=int, default=1, help="re-runs of a noisy pair")
    ap.add_argument("--wait-quiet", type=float, default=0, metavar="PCT",
                    help="before each pair, wait until the machine's total CPU use is at most PCT %% "
                         "(100 = one core), for up to --wait-max s (0: do not wait)")
    ap.add_argument("--wait-max", type=float, default=60)
    ap.add_argument("--budget-min", type=float, default=0,
                    help="stop re-running noisy pairs once this many minutes have passed (0: no limit)")
    ap.add_argument("--settle", type=float, default=2.0, help="seconds to wait before reading RSS")
    ap.add_argument("--conn-batch", type=int, default=100, help="connections opened in lock step")
    ap.add_argument("--deep-prefetch", type=int, default=1000)
    ap.add_argument("--deep-autoack", action="store_true", help="drain the deep queue with autoack")
    ap.add_argument("--drain-idle", type=float, default=30.0)
    ap.add_argument("--out", default=os.path.join(HERE, "results", datetime.date.today().isoformat() + ".jsonl"))
    ap.add_argument("--keep-logs", action="store_true", help="keep the Usagi logs (a temporary dir) after the run")
    ap.add_argument("--table-from", default="", help="comma-separated .jsonl files: only print the table")
    a = ap.parse_args()

    if a.table_from:
        recs = []
        for fn in a.table_from.split(","):
            with open(fn) as f:
                recs += [json.loads(l) for l in f if l.strip()]
        print(table(recs, a.max_other))
        print()
        print(details(recs))
        return 0

    sids = [s for s in a.scenarios.split(",") if s]
    bad = [s for s in sids if scenario(s) is None]
    if bad:
        ap.error("unknown scenario(s) %s; known: %s" % (",".join(bad), ",".join(SCENARIOS)))
    if any(scenario(s)[1] == "bench" for s in sids) and not os.path.isfile(os.path.join(a.bench_dir, "amqp_bench.py")):
        sys.exit("error: %s/amqp_bench.py not found. The throughput and latency scenarios use the shared load "
                 "generator; pass --bench-dir /path/to/bench (the folder holding amqp_bench.py), or run only "
                 "conn1k,conn10k,deep1m." % a.bench_dir)

    # file descriptors: raise our soft limit to the hard one (the Usagi we start inherits it)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    out_dir = os.path.dirname(os.path.abspath(a.out))
    os.makedirs(out_dir, exist_ok=True)
    logdir = tempfile.mkdtemp(prefix="usagi-bench-logs-")  # broker logs; their tails go into the JSON

    rurl = a.rabbitmq_url
    if a.rabbitmq_port:
        u = urllib.parse.urlparse(rurl)
        rurl = urllib.parse.urlunparse(u._replace(netloc="%s@%s:%d" % (
            u.netloc.rsplit("@", 1)[0] if "@" in u.netloc else "guest:guest", u.hostname or "127.0.0.1",
            a.rabbitmq_port)))
    targets = {}
    for b in a.brokers.split(","):
        if b == "usagi":
            if a.usagi_url:
                targets[b] = Target("usagi", *parse_url(a.usagi_url, 5672))
            else:
                targets[b] = UsagiProcess(a.usagi_cmd, logdir, a.keep_logs)
        elif b == "rabbitmq":
            targets[b] = RabbitMQ(rurl, a.rabbitmq_mgmt, a.rabbitmq_node)
        else:
            ap.error("unknown broker %r" % b)

    meta = {"type": "meta", "ts": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "argv": sys.argv,
            "machine": machine_info(), "git": git_info(), "client_nofile": resource.getrlimit(resource.RLIMIT_NOFILE)}
    if "rabbitmq" in targets:
        targets["rabbitmq"].find_pid()
        meta["rabbitmq_version"] = targets["rabbitmq"].version()
        meta["rabbitmq_target"] = "%s:%d" % (targets["rabbitmq"].host, targets["rabbitmq"].port)
        if targets["rabbitmq"].pid:
            meta["rabbitmq_nofile"] = nofile_limit(targets["rabbitmq"].pid)
    try:
        meta["usagi_version"] = subprocess.run([sys.executable, "-m", "usagi.cli.server", "--version"], cwd=REPO,
                                               capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    if any(scenario(s)[1] == "bench" for s in sids):
        meta["amqp_bench"] = os.path.abspath(os.path.join(a.bench_dir, "amqp_bench.py"))
    records = [meta]
    out = open(a.out, "a")
    out.write(json.dumps(meta) + "\n")
    out.flush()
    print("# %s  git %s  -> %s" % (meta["ts"], meta["git"], a.out), file=sys.stderr)

    def one(bname, sid, run, pair):
        tgt = targets[bname]
        desc, kind, args = scenario(sid)
        if kind == "conn" and isinstance(tgt, RabbitMQ) and a.rabbitmq_conns != "same":
            lim = nofile_limit(tgt.find_pid() or 0)
            if a.rabbitmq_conns == "spawn" or (lim and lim[0] < args["n"] + 50):
                tgt = RabbitMQTemp(tgt, logdir)
        t0 = time.time()
        gi = git_info() if bname == "usagi" else None
        try:
            tgt.up(sid, run)
            if kind == "bench":
                res = run_bench(a, tgt, sid, args)
            elif kind == "conn":
                res = run_conn(a, tgt, sid, args["n"])
            else:
                res = run_deep(a, tgt, sid, args["n"], args["size"])
        except Exception as e:  # keep going: a failed scenario is a result too
            res = {"errors": ["%s: %s" % (type(e).__name__, e)], "ok": False}
        finally:
            if isinstance(tgt, UsagiProcess):
                tail = tgt.log_tail()
            tgt.down()
        if isinstance(tgt, UsagiProcess) and tail.strip():
            res["usagi_log_tail"] = tail[-800:]
            res["usagi_log"] = tgt.log
        if isinstance(tgt, RabbitMQTemp):
            res["rabbitmq_node"] = "temporary node %s (no plugins, ulimit -n %s)" % (tgt.node, res.get("broker_nofile"))
        rec = {"type": "result", "ts": time.strftime("%Y-%m-%dT%H:%M:%S"), "broker": bname, "scenario": sid,
               "run": run, "pair": pair, "elapsed_s": round(time.time() - t0, 1), "res": res}
        if gi:
            rec["git"] = gi
        records.append(rec)
        out.write(json.dumps(rec) + "\n")
        out.flush()
        summary = {k: res.get(k) for k in ("pub_rate", "cons_rate", "conf_rate", "rss_kib_per_conn", "open_rate",
                                           "publish_rate", "drain_rate", "rss_bytes_per_msg", "lost") if k in res}
        if res.get("latency"):
            summary["p50/p99"] = "%s/%s" % (res["latency"].get("p50_us"), res["latency"].get("p99_us"))
        print("run %d %-8s %-8s %5.1fs ok=%s other=%s%% %s %s" % (
            run, sid, bname, time.time() - t0, res.get("ok"), other_pct(res), summary,
            ("ERR " + "; ".join(map(str, res.get("errors") or []))[:200]) if res.get("errors") else ""),
            file=sys.stderr)
        return res

    t_start = time.monotonic()
    pair = 0
    try:
        for run in range(a.runs):
            for sid in sids:
                for attempt in range(a.retries + 1):
                    if a.wait_quiet:
                        wait_quiet(a.wait_quiet, a.wait_max)
                    pair += 1
                    res = {b: one(b, sid, run, pair) for b in targets}
                    noisy = [b for b, r in res.items() if (other_pct(r) or 0) > a.max_other]
                    if not noisy or len(targets) < 2:
                        break
                    if a.budget_min and time.monotonic() - t_start > a.budget_min * 60:
                        print("   noisy (%s) but over the time budget: kept" % ",".join(noisy), file=sys.stderr)
                        break
                    if attempt < a.retries:
                        print("   noisy (other CPU > %g%% for %s): running the pair again" % (a.max_other, ",".join(noisy)),
                              file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted: the table below has what was measured so far", file=sys.stderr)
    out.close()
    if a.keep_logs:
        print("broker logs kept in %s" % logdir, file=sys.stderr)
    else:
        shutil.rmtree(logdir, ignore_errors=True)
    tab = table(records, a.max_other) + "\n\nAll runs, medians per broker:\n\n" + details(records)
    print(tab)
    md = os.path.splitext(a.out)[0] + ".md"
    with open(md, "w") as f:
        f.write("Generated by `%s` at %s, git %s\n\n%s\n" % (
            " ".join(shlex.quote(x) for x in sys.argv), meta["ts"], meta["git"], tab))
    print("wrote %s and %s (%.1f min)" % (a.out, md, (time.monotonic() - t_start) / 60), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
