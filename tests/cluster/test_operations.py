"""Running a cluster as an operator does: what usagictl, the management API, the health checks and
Prometheus show of it; removing a node for good; handing leadership over; adding a node and
restarting every node while clients publish. Real nodes, real etcd, real clients."""
from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import warnings

import aio_pika
import pika
import pytest

from etcdutil import need_etcd
from support.reports import FaultRunReport
from harness import ROOT, Cluster
from workload import Workload

pytestmark = pytest.mark.timeout(300)


def http(node, method: str, path: str, port: int | None = None, user: str = "guest", password: str = "guest",
         body=None):
    """(status, JSON or text) of a request to a node's management (or metrics) port."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    req = urllib.request.Request(f"http://{node.host}:{port or node.http_port}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": "Basic " + token, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            raw = r.read().decode()
            status = r.status
    except urllib.error.HTTPError as e:
        raw = e.read().decode()
        status = e.code
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw


def ctl(node, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=ROOT, NO_COLOR="1", USAGI_URL=f"http://guest:guest@{node.host}:{node.http_port}")
    return subprocess.run([sys.executable, "-m", "usagi.cli.ctl", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


def wait_for(pred, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = pred()
            if last:
                return last
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"{what} not met in {timeout}s (last: {last!r})")


def publish_confirmed(url: str, queue: str, bodies, qtype: str = "quorum"):
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        ch.queue_declare(queue, durable=True, arguments={"x-queue-type": qtype})
        ch.confirm_delivery()
        for b in bodies:
            ch.basic_publish("", queue, b, pika.BasicProperties(delivery_mode=2))
    finally:
        conn.close()


def drain(url: str, queue: str, timeout: float = 30.0) -> list:
    """Every message left in the queue (reconnecting while the cluster settles)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = pika.BlockingConnection(pika.URLParameters(url))
        except pika.exceptions.AMQPConnectionError:
            time.sleep(0.2)
            continue
        got = []
        try:
            ch = conn.channel()
            while True:
                m, _p, body = ch.basic_get(queue, auto_ack=True)
                if m is None:
                    return got
                got.append(body)
        except pika.exceptions.AMQPError:
            time.sleep(0.2)
        finally:
            if conn.is_open:
                conn.close()
    raise AssertionError("could not drain " + queue)


# ---------------------------------------------------------------------------------------- what operators see

def test_cluster_status_nodes_and_queues_show_the_cluster(cluster):
    cluster.wait_isr(3)
    leader = cluster.leader()
    follower = cluster.followers()[0]
    names = sorted(n.name for n in cluster.nodes)
    assert ctl(follower, "await_online_nodes", "3", "--timeout", "30").returncode == 0
    publish_confirmed(leader.url(), "ops-qq", [b"a", b"b"])

    # usagictl cluster_status, through a follower (its HTTP is the leader's): rabbitmqctl's sections,
    # plus each node's role, epoch and lag
    r = ctl(follower, "cluster_status")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for heading in ("Basics", "Disk Nodes", "Running Nodes", "Versions", "Leader and replication"):
        assert heading in out
    disk = out.split("Disk Nodes\n\n")[1].split("\n\n")[0].splitlines()
    assert sorted(disk) == names, out
    epoch = http(leader, "GET", "/api/usagi/cluster")[1]["epoch"]
    assert f"Node: {leader.name}, role: leader, in sync: true, epoch: {epoch}, lag: 0" in out
    for f in cluster.followers():
        assert f"Node: {f.name}, role: follower, in sync: true, epoch: {epoch}, lag: " in out
    j = json.loads(ctl(leader, "cluster_status", "--formatter", "json").stdout)
    assert sorted(j["running_nodes"]) == names and j["leader"] == leader.name

    # /api/nodes: every node, running
    status, nodes = http(follower, "GET", "/api/nodes")
    assert status == 200
    assert sorted(n["name"] for n in nodes) == names
    assert all(n["running"] for n in nodes)
    assert {n["name"]: n["usagi_role"] for n in nodes}[leader.name] == "leader"

    # a quorum queue reports the cluster: leader, members = ISR, online
    status, q = http(leader, "GET", "/api/queues/%2F/ops-qq")
    assert status == 200
    assert q["leader"] == leader.name and q["node"] == leader.name
    assert q["members"] == names and q["online"] == names
    r = ctl(leader, "list_queues", "name", "leader", "members", "online", "--formatter", "json")
    row = next(x for x in json.loads(r.stdout) if x["name"] == "ops-qq")
    assert row["leader"] == leader.name and sorted(row["members"]) == names

    # a follower stops: it is listed, not running; it leaves the ISR and the queue's members
    gone = cluster.followers()[0]
    gone.term()
    publish_confirmed(leader.url(), "ops-qq", [b"c"])
    wait_for(lambda: len(cluster.isr()) == 2, what="the ISR without the stopped node")
    status, nodes = http(leader, "GET", "/api/nodes")
    by = {n["name"]: n for n in wait_for(lambda: [n for n in http(leader, "GET", "/api/nodes")[1]
                                                  if n["name"] == gone.name and not n["running"]] and
                                         http(leader, "GET", "/api/nodes")[1], what="the stopped node listed")}
    assert sorted(by) == names and by[gone.name]["running"] is False and by[gone.name]["type"] == "disc"
    status, one = http(cluster.followers()[0], "GET", f"/api/nodes/{gone.name}")
    assert status == 200 and one["name"] == gone.name and one["running"] is False
    assert http(leader, "GET", "/api/nodes/usagi@nowhere")[0] == 404
    out = ctl(leader, "cluster_status").stdout
    running = out.split("Running Nodes\n\n")[1].split("\n\n")[0].splitlines()
    assert gone.name not in running and sorted(running) == sorted(set(names) - {gone.name})
    assert gone.name in out.split("Disk Nodes\n\n")[1].split("\n\n")[0].splitlines()
    q = wait_for(lambda: (lambda q: q if len(q["members"]) == 2 else None)(
        http(leader, "GET", "/api/queues/%2F/ops-qq")[1]), what="members without the stopped node")
    assert gone.name not in q["members"] and gone.name not in q["online"]


def test_await_online_nodes_and_forget_cluster_node(cluster):
    cluster.wait_isr(3)
    leader = cluster.leader()
    gone = cluster.followers()[0]
    gone.term()
    wait_for(lambda: [n for n in http(leader, "GET", "/api/nodes")[1] if n["name"] == gone.name and not n["running"]],
             what="the stopped node listed as not running")
    r = ctl(leader, "await_online_nodes", "3", "--timeout", "2")
    assert r.returncode == 70, (r.stdout, r.stderr)
    assert f"Will wait for at least 3 nodes to join the cluster of {leader.name}. Timeout: 2 seconds." in r.stdout
    assert f"Error: timed out while waiting. Not enough nodes joined {leader.name}'s cluster." in r.stderr
    assert ctl(leader, "await_online_nodes", "2").returncode == 0
    r = ctl(leader, "await_online_nodes", "zero")
    assert r.returncode == 64 and "Argument must be a positive integer" in r.stderr

    # a running node cannot be forgotten (as rabbitmqctl refuses it), nor an unknown one
    other = next(n for n in cluster.followers() if n is not gone)
    r = ctl(leader, "forget_cluster_node", other.name)
    assert r.returncode == 70 and "failed_to_remove_node" in r.stderr and "Mnesia is running" in r.stderr
    r = ctl(leader, "forget_cluster_node", "usagi@nowhere")
    assert r.returncode == 70 and "not_a_cluster_node" in r.stderr
    # the stopped one is removed for good: registry, listing, ISR
    r = ctl(leader, "forget_cluster_node", gone.name)
    assert r.returncode == 0, r.stderr
    assert f"Removing node {gone.name} from the cluster" in r.stdout
    nodes = http(leader, "GET", "/api/nodes")[1]
    assert gone.name not in [n["name"] for n in nodes] and len(nodes) == 2
    assert len(cluster.isr()) == 2
    assert gone.name not in ctl(leader, "cluster_status").stdout
    # started again with its old data dir it is refused, clearly; with an empty one it joins anew
    gone.start()
    gone.proc.wait(60)
    assert gone.proc.returncode == 1
    assert "was removed from cluster" in gone.log_text() and "forget_cluster_node" in gone.log_text()
    import shutil
    shutil.rmtree(gone.data_dir)
    gone.lines.clear()
    gone.start()
    cluster.wait_isr(3, timeout=60)
    ctl(leader, "await_online_nodes", "3", "--timeout", "30").check_returncode()


def test_health_checks_and_metrics_answer_per_node():
    need_etcd()
    cluster = Cluster(3, extra_args=["--cluster-min-in-sync", "2"]).start()
    try:
        _health_checks_and_metrics(cluster)
    finally:
        cluster.cleanup()


def _health_checks_and_metrics(cluster):
    cluster.wait_isr(3)
    leader = cluster.leader()
    follower = cluster.followers()[0]
    # a follower answers its own health checks (its own ports), authenticated with the replicated users
    for node in (leader, follower):
        assert http(node, "GET", f"/api/health/checks/port-listener/{node.port}") == (
            200, {"status": "ok", "port": node.port})
        assert http(node, "GET", "/api/health/checks/protocol-listener/amqp")[0] == 200
        assert http(node, "GET", "/api/health/checks/alarms") == (200, {"status": "ok"})
        assert http(node, "GET", "/api/health/checks/node-is-quorum-critical") == (200, {"status": "ok"})
        assert http(node, "GET", "/api/health/checks/ready-to-serve-clients") == (200, {"status": "ok"})
        assert http(node, "GET", "/api/health/checks/alarms", password="wrong")[0] == 401
    other = cluster.followers()[1]
    status, body = http(follower, "GET", f"/api/health/checks/port-listener/{other.port}")
    assert status == 503 and body["status"] == "failed" and body["missing"] == other.port
    # a user added through the leader can use a follower's health checks once replicated
    assert http(leader, "PUT", "/api/users/ops-mon", body={"password": "pw", "tags": "monitoring"})[0] in (201, 204)
    wait_for(lambda: http(follower, "GET", "/api/health/checks/alarms", user="ops-mon", password="pw")[0] == 200,
             what="the new user on the follower")
    status, body = http(follower, "GET", "/api/overview")      # the rest is the leader's
    assert status == 200 and body["node"] == leader.name

    # Prometheus: each node reports itself
    status, text = http(leader, "GET", "/metrics", port=leader.metrics_port)
    assert status == 200
    assert f'usagi_cluster_leader{{node="{leader.name}"}} 1' in text
    assert f'usagi_cluster_isr_size{{node="{leader.name}"}} 3' in text
    assert f'usagi_cluster_replication_lag{{node="{leader.name}",follower="{follower.name}"}}' in text
    assert "usagi_cluster_leader_changes_total" in text and "usagi_cluster_etcd_request_duration_seconds_count" in text
    assert "rabbitmq_queues" in text                        # the leader's broker metrics as before
    status, text = http(follower, "GET", "/metrics", port=follower.metrics_port)
    assert status == 200
    assert f'usagi_cluster_leader{{node="{follower.name}"}} 0' in text
    assert f'usagi_cluster_in_sync{{node="{follower.name}"}} 1' in text
    assert f'usagi_cluster_replication_lag{{node="{follower.name}"}}' in text
    count = [ln for ln in text.splitlines() if ln.startswith("usagi_cluster_etcd_request_duration_seconds_count")]
    assert count and int(count[0].split()[-1]) > 0

    # with --cluster-min-in-sync 2, a follower is quorum-critical once stopping it would leave fewer
    # than 2 nodes in sync; the leader is not while another node is in sync to take over
    assert http(follower, "GET", "/api/health/checks/node-is-quorum-critical")[0] == 200
    other.term()
    publish_confirmed(leader.url(), "hc-q", [b"x"])
    wait_for(lambda: len(cluster.isr()) == 2, what="the ISR without the stopped node")
    status, body = http(follower, "GET", "/api/health/checks/node-is-quorum-critical")
    assert status == 503 and body["status"] == "failed" and "min-in-sync (2)" in body["reason"], body
    assert http(leader, "GET", "/api/health/checks/node-is-quorum-critical")[0] == 200


# ---------------------------------------------------------------------------------------- hand-over

def test_step_down_confirms_everything_it_took_and_hands_over(cluster):
    """A hand-over while a follower stalls: the leader stops reading, waits until the ISR has
    everything it took (the stalled follower is dropped after the ack timeout), sends every
    confirm, and only then closes its clients and resigns: none of the publishes in flight is
    left without its confirm."""
    cluster.wait_isr(3)
    leader = cluster.leader()
    f1, f2 = cluster.followers()
    publish_confirmed(leader.url(), "so-q", [b"warm"])
    f1.pause()                                  # acks stall: confirms wait on it for the ack timeout
    try:
        async def go():
            conn = await aio_pika.connect(leader.url())
            ch = await conn.channel(publisher_confirms=True)
            pubs = [asyncio.ensure_future(ch.default_exchange.publish(
                aio_pika.Message(b"m%d" % i, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key="so-q", timeout=30)) for i in range(300)]
            await asyncio.sleep(0.3)           # every publish is read; none confirmed yet (f1 stalls)
            status = await asyncio.to_thread(http, leader, "POST", "/api/usagi/cluster/step_down")
            assert status[0] == 204, status
            results = await asyncio.gather(*pubs, return_exceptions=True)
            try:
                await conn.close()
            except Exception:  # noqa: BLE001 - the leader closed it
                pass
            return results
        results = asyncio.run(go())
    finally:
        f1.resume()
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        print(leader.log_text()[-5000:])
    assert not failed, failed[:3]
    new = cluster.wait_leader(20, not_node=leader)
    assert new is f2                            # the follower that was in sync
    got = drain(new.url(), "so-q")
    assert sorted(got) == sorted([b"warm"] + [b"m%d" % i for i in range(300)])
    # the old leader starts again as a follower and is back in sync
    wait_for(lambda: "restarting as a follower" in leader.log_text(), what="the old leader restarting")
    cluster.wait_isr(3, timeout=60)
    assert cluster.leader() is new


def test_step_down_via_usagictl_and_refused_without_a_successor(cluster):
    cluster.wait_isr(3)
    leader = cluster.leader()
    follower = cluster.followers()[0]
    r = ctl(follower, "step_down")            # through any node: its HTTP reaches the leader
    assert r.returncode == 0, (r.stdout, r.stderr)
    new = cluster.wait_leader(20, not_node=leader)
    assert f"Node {new.name} now leads" in r.stdout
    cluster.wait_isr(3, timeout=60)
    for f in cluster.followers():
        f.term()
    wait_for(lambda: http(new, "GET", "/api/usagi/cluster")[1]["nodes"] and
             not any(n["running"] for n in http(new, "GET", "/api/usagi/cluster")[1]["nodes"]
                     if n["name"] != new.name), what="followers gone from the registry")
    r = ctl(new, "step_down")
    assert r.returncode != 0 and "no other in-sync node" in r.stderr
    assert cluster.leader() is new


# ---------------------------------------------------------------------------------------- membership under load

def _run_with_workload(cluster, during, publishers=2, consumers=2):
    wl = Workload(cluster.urls(), queue="ops-load", publishers=publishers, consumers=consumers, window=20)

    async def go():
        await wl.setup()
        wl.start()
        await asyncio.sleep(2)
        await asyncio.to_thread(during)
        await asyncio.sleep(2)
        await wl.stop()
        await wl.drain()
    asyncio.run(go())
    return wl, wl.check()


def test_a_node_added_while_the_leader_serves_syncs_and_joins_the_isr():
    need_etcd()
    c = Cluster(3)
    try:
        c.etcd.start()
        for n in c.nodes[:2]:
            n.start()
        c.wait_leader(30)
        c.wait_isr(2)
        new = c.nodes[2]

        def add():
            time.sleep(3)                          # a backlog to sync
            new.start()
            c.wait_isr(3, timeout=60)
            time.sleep(1)
        wl, result = _run_with_workload(c, add)
        warnings.warn(FaultRunReport(f"node added under load: {result['ok']} confirmed, lost {result['lost_count']}, "
                                     f"unexpected {result['unexpected_count']}, unknown {result['unknown']}"))
        assert result["lost_count"] == 0 and result["unexpected_count"] == 0, result
        assert result["ok"] > 100, result
        # the new node has everything: make it lead (hand-overs until it does) and read the queue there
        publish_confirmed(c.leader().url(), "added-q", [b"%d" % i for i in range(200)])
        for _ in range(4):
            lead = c.wait_leader(30)
            if lead is new:
                break
            assert http(lead, "POST", "/api/usagi/cluster/step_down")[0] == 204
            c.wait_leader(30, not_node=lead)
            c.wait_isr(3, timeout=60)
        assert c.wait_leader(30) is new
        assert sorted(drain(new.url(), "added-q")) == sorted(b"%d" % i for i in range(200))
    finally:
        c.cleanup()


def test_rolling_restart_of_every_node_under_load_loses_nothing(cluster):
    cluster.wait_isr(3)
    restarts = []

    def roll():
        for node in list(cluster.nodes):       # the leader's turn comes in its place in the list
            t0 = time.monotonic()
            node.term()
            assert node.proc.returncode == 0, node.log_text()[-2000:]
            node.start()
            cluster.wait_leader(30)
            cluster.wait_isr(3, timeout=60)
            restarts.append(time.monotonic() - t0)
    wl, result = _run_with_workload(cluster, roll)
    warnings.warn(FaultRunReport(f"rolling restart of 3 nodes: {result['ok']} confirmed, lost {result['lost_count']}, "
                                 f"unexpected {result['unexpected_count']}, unknown {result['unknown']}, "
                                 f"recovered {result['recovered']}, duplicated {result['duplicated']}; "
                                 f"restart times {[round(t, 1) for t in restarts]}"))
    assert len(restarts) == 3
    assert result["lost_count"] == 0, result
    assert result["unexpected_count"] == 0, result
    assert result["ok"] > 100, result
    # clients saw reconnects only: connections closed or refused, never a channel error
    assert wl.rec.errors, "the restarts closed client connections"
    bad = [e for e in wl.rec.errors if any(w in e for w in ("ChannelClosed", "PRECONDITION", "NOT_FOUND",
                                                               "ACCESS_REFUSED", "RESOURCE_LOCKED", "NOT_ALLOWED"))]
    assert not bad, bad[:5]
