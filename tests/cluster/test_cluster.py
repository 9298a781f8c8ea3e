"""Three real nodes and real etcd: failover, rejoin, hand-over, bad peers, etcd trouble.

The long fault run with the loss checker is test_fault_run.py (a short run in CI) and
tools/cluster_faults.py (the long one).
"""
from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time

import pika
import pytest

from usagi.server.startup import read_node_identity
from usagi.storage.sqlite import probe_file

from etcdutil import need_etcd, free_port
from harness import ROOT, Cluster

pytestmark = pytest.mark.timeout(240)


def publish_confirmed(url: str, queue: str, bodies) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        ch.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
        ch.confirm_delivery()
        for b in bodies:
            ch.basic_publish("", queue, b, pika.BasicProperties(delivery_mode=2))
    finally:
        conn.close()


def drain(url: str, queue: str, expect: int, timeout: float = 30.0) -> list:
    deadline = time.monotonic() + timeout
    got = []
    while time.monotonic() < deadline:
        try:
            conn = pika.BlockingConnection(pika.URLParameters(url))
        except pika.exceptions.AMQPConnectionError:
            time.sleep(0.2)
            continue
        try:
            ch = conn.channel()
            while len(got) < expect and time.monotonic() < deadline:
                m, props, body = ch.basic_get(queue, auto_ack=True)
                if m is None:
                    time.sleep(0.05)
                    continue
                got.append((body, m.redelivered))
            return got
        except pika.exceptions.AMQPError:
            time.sleep(0.2)
        finally:
            if conn.is_open:
                conn.close()
    return got


def test_confirmed_messages_survive_a_leader_kill_and_the_node_rejoins(cluster):
    cluster.wait_isr(3)
    leader = cluster.leader()
    follower = cluster.followers()[0]
    bodies = [b"m%d" % i for i in range(300)]
    publish_confirmed(follower.url(), "fq", bodies)          # through a follower's forwarding
    t0 = time.monotonic()
    leader.kill()
    new = cluster.wait_leader(20, not_node=leader)
    took = time.monotonic() - t0
    assert took <= cluster.ttl + 4, took
    got = drain(new.url(), "fq", len(bodies))
    assert sorted(b for b, _r in got) == sorted(bodies)
    assert all(r for _b, r in got), "recovered messages come back flagged redelivered"
    # the killed node, started again with its own command line, catches up and is back in sync
    leader.start()
    cluster.wait_isr(3, timeout=30)
    assert "joined" in leader.log_text()


def test_a_backlog_past_the_memory_budget_comes_back_in_order_after_a_leader_kill():
    """A promoted leader keeps only its queues' in-memory budget of messages in memory and leaves
    the rest in its store (read back as they are delivered): every message comes back, in order,
    redelivered, with its body; priorities and deadlines hold for the ones left in the store."""
    need_etcd()
    c = Cluster(3, env={"USAGI_QUEUE_MEMORY_MESSAGES": "40"}).start()
    try:
        c.wait_isr(3)
        leader = c.leader()
        plain = [b"p%04d" % i for i in range(700)]
        publish_confirmed(leader.url(), "deep", plain)
        conn = pika.BlockingConnection(pika.URLParameters(leader.url()))
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare("deep-prio", durable=True, arguments={"x-max-priority": 5})
        for i in range(300):
            ch.basic_publish("", "deep-prio", b"q%04d" % i, pika.BasicProperties(delivery_mode=2, priority=i % 3))
        ch.queue_declare("deep-ttl", durable=True, arguments={"x-message-ttl": 4000})
        for i in range(200):
            ch.basic_publish("", "deep-ttl", b"t%04d" % i, pika.BasicProperties(delivery_mode=2))
        conn.close()
        leader.kill()
        new = c.wait_leader(20, not_node=leader)
        got = drain(new.url(), "deep", len(plain))
        assert [b for b, _r in got] == plain
        assert all(r for _b, r in got)
        got = drain(new.url(), "deep-prio", 300)
        want = sorted((b"q%04d" % i for i in range(300)), key=lambda b: -(int(b[1:]) % 3))
        assert [b for b, _r in got] == want
        time.sleep(4.5)           # past the TTL: nothing is left, wherever it was kept
        conn = pika.BlockingConnection(pika.URLParameters(new.url()))
        try:
            assert conn.channel().queue_declare("deep-ttl", passive=True).method.message_count == 0
        finally:
            conn.close()
    finally:
        c.cleanup()


def test_graceful_stop_hands_over_at_once(cluster):
    cluster.wait_isr(3)
    leader = cluster.leader()
    publish_confirmed(leader.url(), "gq", [b"x"] * 10)
    t0 = time.monotonic()
    leader.term()
    assert leader.proc.returncode == 0
    new = cluster.wait_leader(10, not_node=leader)
    assert time.monotonic() - t0 < 3
    assert [b for b, _r in drain(new.url(), "gq", 10)] == [b"x"] * 10


def test_a_paused_leader_steps_down_and_comes_back_as_a_follower(cluster):
    cluster.wait_isr(3)
    old = cluster.leader()
    publish_confirmed(old.url(), "pq", [b"before"])
    old.pause()
    try:
        new = cluster.wait_leader(cluster.ttl * 3 + 10, not_node=old)
        publish_confirmed(new.url(), "pq", [b"after"])
    finally:
        old.resume()
    deadline = time.monotonic() + 20
    while "restarting as a follower" not in old.log_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "lost its lease" in old.log_text()
    cluster.wait_isr(3, timeout=30)
    assert cluster.leader() is new
    got = sorted(b for b, _r in drain(new.url(), "pq", 2))
    assert got == [b"after", b"before"]


def test_bad_replication_peers_are_refused_and_harm_nobody(cluster):
    from usagi.cluster.replication import Replica
    from usagi.cluster import wire as W
    cluster.wait_isr(3)
    leader = cluster.leader()

    class Nothing:
        def position(self):
            return (0, 0)

        def apply(self, batches):
            raise AssertionError("no batch may reach an unauthenticated peer")

        def install_snapshot(self, *a):
            raise AssertionError("no snapshot may reach an unauthenticated peer")

    async def wrong_secret():
        r = Replica(0xBAD, os.urandom(32), Nothing(), "/tmp")
        with pytest.raises(W.WireError) as ei:
            await asyncio.wait_for(r.run(leader.host, leader.repl_port), 10)
        return str(ei.value)
    assert "secret" in asyncio.run(wrong_secret())
    for garbage in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", os.urandom(5000), b"\x00\x00\x00\x10\x02" + b"\x01" * 100):
        with socket.create_connection((leader.host, leader.repl_port), timeout=5) as s:
            s.sendall(garbage)
            s.settimeout(10)
            try:
                while s.recv(65536):
                    pass
            except OSError:
                pass
    deadline = time.monotonic() + 10               # the leader logs it as it drops the peer
    while "did not prove it knows the cluster secret" not in leader.log_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "did not prove it knows the cluster secret" in leader.log_text()
    # still serving, and the followers still in sync
    publish_confirmed(leader.url(), "bq", [b"ok"])
    assert len(cluster.isr()) == 3
    assert cluster.leader() is leader


def test_a_spoofed_proxy_header_from_a_client_is_refused(cluster):
    leader = cluster.wait_leader()
    with socket.create_connection((leader.host, leader.port), timeout=5) as s:
        s.sendall(b"PROXY TCP4 127.0.0.1 127.0.0.1 1 2\r\nAMQP\x00\x00\x09\x01")
        s.settimeout(5)
        data = s.recv(100)
    assert data == b"AMQP\x00\x00\x09\x01"          # a bad protocol header: the broker's own answer


def test_etcd_unreachable_at_start_is_a_clear_error(tmp_path):
    host = "127.0.0.1"
    cmd = [sys.executable, "-m", "usagi.cli.server", "--host", host, "--port", str(free_port()),
           "--management-port", "-1", "--data-dir", str(tmp_path),
           "--cluster-etcd", f"127.0.0.1:{free_port()}", "--cluster-join-timeout", "2"]
    env = dict(os.environ, PYTHONPATH=ROOT)
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)
    assert r.returncode == 1
    assert "cannot reach etcd" in r.stderr
    assert time.monotonic() - t0 >= 1.5                 # it tried for the time it was given


def test_a_node_started_before_etcd_joins_once_etcd_answers():
    """etcd may be electing a leader or starting along with the node: a node keeps trying for
    --cluster-join-timeout (and for ever after losing its lease), it does not exit."""
    need_etcd()
    c = Cluster(1)
    try:
        node = c.nodes[0]
        node.start()
        time.sleep(3)
        assert node.alive
        c.etcd.start()
        leader = c.wait_leader(60)
        assert leader is node
        assert "cannot reach etcd" in node.log_text() and "trying again" in node.log_text()
        publish_confirmed(node.url(), "joined-late", [b"x"])
    finally:
        c.cleanup()


def test_a_second_process_with_the_same_identity_fails_fast(cluster):
    node = cluster.nodes[0]
    cluster.wait_leader()
    # a node just started may not have written its identity and its store yet: copied then, the
    # data dir is refused for another reason (an empty store)
    def settled():
        ident = read_node_identity(node.data_dir)
        return ident is not None and probe_file(os.path.join(node.data_dir, ident["store"])) == "present"
    deadline = time.monotonic() + 30
    while not settled():
        assert time.monotonic() < deadline, "node 0 never wrote its identity and its store"
        time.sleep(0.05)
    copy = os.path.join(cluster.root, "copy")
    shutil.copytree(node.data_dir, copy, ignore=shutil.ignore_patterns("usagi.lock"))
    cmd = [sys.executable, "-m", "usagi.cli.server", "--host", "127.0.0.1", "--port", str(free_port()),
           "--management-port", "-1", "--data-dir", copy, "--cluster-etcd", ",".join(cluster.etcd.endpoints),
           "--cluster-name", cluster.name, "--cluster-lease-ttl", str(cluster.ttl)]
    env = dict(os.environ, PYTHONPATH=ROOT)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)
    assert r.returncode == 1
    assert "another process holds node id" in r.stderr


def test_losing_etcd_makes_the_leader_step_down_within_the_lease(cluster):
    leader = cluster.wait_leader()
    conn = pika.BlockingConnection(pika.URLParameters(leader.url()))
    member = cluster.etcd.members[0]
    member.kill()
    t0 = time.monotonic()
    try:
        deadline = t0 + cluster.ttl + 5
        while "lost its lease" not in leader.log_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        stepped = time.monotonic() - t0
        assert "lost its lease" in leader.log_text()
        assert stepped <= cluster.ttl + 1.5, stepped
        with pytest.raises(pika.exceptions.AMQPError):        # its clients were closed
            for _ in range(100):
                conn.process_data_events(0.05)
    finally:
        cluster.etcd.restart(member)
    cluster.wait_leader(60)
