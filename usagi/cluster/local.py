"""usagi-cluster: a whole cluster on one machine, for trying it out and for development.

Starts three etcd members (Debian's etcd-server) on 127.0.2.1-3 and three Usagi nodes on
127.0.1.1-3, each with AMQP on 5672, the management API on 15672, metrics on 15692 and replication
on 25672 (addresses of the loopback network: nothing else is needed), data under one directory.
It prints each node's own command line: a node killed with kill -9 and started again with that
line rejoins. Ctrl-C or SIGTERM stops the nodes (each hands over or stops cleanly) and then etcd.
"""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request


def _env(name, default):
    return os.environ.get("USAGI_" + name, default)


def build_parser() -> argparse.ArgumentParser:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    p = argparse.ArgumentParser(prog="usagi-cluster", description="Run a Usagi cluster of N nodes and its etcd on "
                                "this machine (nodes on 127.0.1.1..N, etcd on 127.0.2.1..3).")
    p.add_argument("--nodes", type=int, default=int(_env("CLUSTER_NODES", "3")), help="how many nodes (default 3)")
    p.add_argument("--data-dir", default=_env("CLUSTER_DATA_DIR", os.path.join(base, "usagi-cluster")),
                   help="where the nodes and etcd keep their data (default ~/.local/share/usagi-cluster)")
    p.add_argument("--lease-ttl", type=int, default=int(_env("CLUSTER_LEASE_TTL", "5")),
                   help="seconds before another node takes over from a leader that stopped answering (default 5)")
    p.add_argument("--etcd", default=shutil.which("etcd") or "/usr/bin/etcd", help="the etcd binary")
    return p


def node_command(i: int, args, endpoints: str) -> list[str]:
    return [sys.executable, "-m", "usagi.cli.server", "--host", f"127.0.1.{i}", "--port", "5672",
            "--management-port", "15672", "--metrics-port", "15692", "--replication-port", "25672",
            "--data-dir", os.path.join(args.data_dir, f"n{i}"), "--cluster-etcd", endpoints,
            "--cluster-name", "usagi", "--node-name", f"usagi@n{i}",
            "--cluster-lease-ttl", str(args.lease_ttl)]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=1) as r:
            return b'"true"' in r.read()
    except OSError:
        return False


def _free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as the servers bind
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if not os.path.exists(args.etcd):
        print("usagi-cluster: etcd is not installed: install Debian's etcd-server (apt-get install etcd-server), "
              "or give its path with --etcd", file=sys.stderr)
        return 2
    if not 1 <= args.nodes <= 9:
        print("usagi-cluster: --nodes must be between 1 and 9", file=sys.stderr)
        return 2
    busy = [f"127.0.1.{i}:{p}" for i in range(1, args.nodes + 1) for p in (5672, 15672, 25672)
            if not _free(f"127.0.1.{i}", p)]
    if busy:
        print(f"usagi-cluster: these addresses are in use: {', '.join(busy)}", file=sys.stderr)
        return 1
    os.makedirs(args.data_dir, exist_ok=True)
    members = [(f"e{i}", f"127.0.2.{i}") for i in (1, 2, 3)]
    initial = ",".join(f"{name}=http://{host}:2380" for name, host in members)
    endpoints = ",".join(f"{host}:2379" for _n, host in members)
    procs = []

    def stop_all(*_a):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop_all)
    etcds = []
    nodes = {}
    try:
        for name, host in members:
            data = os.path.join(args.data_dir, "etcd", name)
            log = open(os.path.join(args.data_dir, f"etcd-{name}.log"), "ab")
            etcds.append(subprocess.Popen(
                [args.etcd, "--name", name, "--data-dir", data,
                 "--listen-client-urls", f"http://{host}:2379", "--advertise-client-urls", f"http://{host}:2379",
                 "--listen-peer-urls", f"http://{host}:2380", "--initial-advertise-peer-urls", f"http://{host}:2380",
                 "--initial-cluster", initial, "--initial-cluster-token", "usagi-cluster",
                 "--heartbeat-interval", "100", "--election-timeout", "1000", "--log-level", "warn"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
            procs.append(etcds[-1])
        deadline = time.monotonic() + 30
        while not all(_healthy(f"http://{h}:2379") for _n, h in members):
            if time.monotonic() > deadline or any(p.poll() is not None for p in etcds):
                print(f"usagi-cluster: etcd did not start; see {args.data_dir}/etcd-*.log", file=sys.stderr)
                return 1
            time.sleep(0.2)
        print(f"etcd: {endpoints}")
        # the nodes run the very package this launcher runs from
        import usagi
        pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(usagi.__file__)))
        env = dict(os.environ, PYTHONPATH=pkg_root + os.pathsep + os.environ.get("PYTHONPATH", ""))
        for i in range(1, args.nodes + 1):
            cmd = node_command(i, args, endpoints)
            log = open(os.path.join(args.data_dir, f"n{i}.log"), "ab")
            nodes[i] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
            print(f"node usagi@n{i}: AMQP 127.0.1.{i}:5672, management http://127.0.1.{i}:15672/, "
                  f"log {args.data_dir}/n{i}.log")
            print(f"  started with: {shlex.join(cmd)}")
        print("any node takes clients (amqp://guest:guest@127.0.1.1:5672/ ...); Ctrl-C stops the cluster")
        sys.stdout.flush()
        reported = set()
        while True:
            time.sleep(0.5)
            for i, p in nodes.items():
                if p.poll() is not None and i not in reported:
                    reported.add(i)
                    print(f"node usagi@n{i} exited with status {p.returncode}; start it again with its command "
                          f"line above to rejoin", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        for p in nodes.values():
            if p.poll() is None:
                p.terminate()
        for p in nodes.values():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        for p in etcds:
            if p.poll() is None:
                p.terminate()
        for p in etcds:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        print("cluster stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
