"""The README's cluster command: usagi-cluster starts etcd and three nodes on 127.0.1.1-3; clients
and guest work through any node; a node killed with kill -9 and started again with its own command
line rejoins; SIGTERM stops everything it started."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import pika
import pytest

from etcdutil import need_etcd
from harness import ROOT

pytestmark = pytest.mark.timeout(180)


def _busy() -> list:
    out = []
    for i in (1, 2, 3):
        for port in (5672, 15672, 25672):
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind((f"127.0.1.{i}", port))
                except OSError:
                    out.append(f"127.0.1.{i}:{port}")
    return out


def _ctl(*args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "usagi.cli.ctl", "--url", "http://guest:guest@127.0.1.2:15672",
                           *args], capture_output=True, text=True, timeout=30, env=env)


def test_usagi_cluster_runs_three_nodes_that_survive_a_kill(tmp_path):
    need_etcd()
    busy = _busy()
    if busy:
        pytest.skip(f"the cluster command's addresses are in use here: {busy}")
    env = dict(os.environ, PYTHONPATH=ROOT)
    lines = []
    launcher = subprocess.Popen([sys.executable, "-m", "usagi.cluster.local", "--data-dir", str(tmp_path),
                                 "--lease-ttl", "2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=env, cwd=ROOT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        for line in launcher.stdout:
            lines.append(line)
            if "Ctrl-C stops the cluster" in line or time.monotonic() > deadline:
                break
        cmds = {}
        for l in lines:
            m = re.search(r"started with: (.*--node-name usagi@n(\d).*)$", l.rstrip())
            if m:
                cmds[int(m.group(2))] = m.group(1)
        assert len(cmds) == 3, "".join(lines)
        # guest publishes through every node (its address is loopback whichever node forwards it)
        deadline = time.monotonic() + 60
        while True:
            r = _ctl("cluster_status")
            if r.returncode == 0 and r.stdout.count("in sync: true") == 3:
                break
            assert time.monotonic() < deadline, r.stdout + r.stderr
            time.sleep(0.5)
        for i in (1, 2, 3):
            conn = pika.BlockingConnection(pika.ConnectionParameters(f"127.0.1.{i}", 5672))
            ch = conn.channel()
            ch.queue_declare("local-q", durable=True)
            ch.confirm_delivery()
            ch.basic_publish("", "local-q", b"via %d" % i, pika.BasicProperties(delivery_mode=2))
            conn.close()
        leader = re.search(r"Node: usagi@n(\d), role: leader", r.stdout).group(1)
        pid = int(subprocess.run(["pgrep", "-f", "--", f"--node-name usagi@n{leader} "], capture_output=True,
                                 text=True).stdout.split()[0])
        os.kill(pid, signal.SIGKILL)
        # started again with its own command line, it rejoins
        node = subprocess.Popen(cmds[int(leader)] + " >/dev/null 2>&1", shell=True, env=env, cwd=ROOT,
                                start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while True:
                r = _ctl("cluster_status") if leader != "2" else subprocess.run(
                    [sys.executable, "-m", "usagi.cli.ctl", "--url", "http://guest:guest@127.0.1.1:15672",
                     "cluster_status"], capture_output=True, text=True, timeout=30, env=env)
                if r.returncode == 0 and r.stdout.count("in sync: true") == 3:
                    break
                assert time.monotonic() < deadline, r.stdout + r.stderr
                time.sleep(0.5)
            conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.1.3", 5672))
            q = conn.channel().queue_declare("local-q", passive=True)
            assert q.method.message_count == 3
            conn.close()
        finally:
            os.killpg(node.pid, signal.SIGTERM)
            node.wait(30)
    finally:
        os.killpg(launcher.pid, signal.SIGTERM)
        out, _ = launcher.communicate(timeout=90)
    assert "cluster stopped" in out
    assert launcher.returncode == 0
    left = subprocess.run(["pgrep", "-f", "--", f"--data-dir {tmp_path}"], capture_output=True, text=True).stdout.split()
    assert not left, f"processes left running: {left}"
