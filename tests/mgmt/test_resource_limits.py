"""The memory and disk limits reported are the ones the broker acts on: /api/nodes (mem_limit,
disk_free_limit, which usagictl status prints) and /metrics (rabbitmq_resident_memory_limit_bytes,
rabbitmq_disk_space_available_limit_bytes) give the limit the alarm compares with, the figure it
compares (mem_used, disk_free) is over the limit exactly when the alarm is on, and publishers are
blocked then. With RabbitMQ reachable, the default watermark (0.4 of RAM on the same machine)
gives RabbitMQ's own mem_limit."""
from __future__ import annotations

import base64
import json
import os
import time
import urllib.parse
import urllib.request

import pytest

from mgmtutil import wait_until
from rawamqp import (FRAME_BODY, FRAME_HEADER, FRAME_METHOD, RawConnection, content_header_payload, frame_bytes,
                     method_payload)
from test_metrics import parse, value

RABBITMQ_MGMT = os.environ.get("USAGI_TEST_MGMT_URL") or "http://guest:guest@127.0.0.1:15682"


def node_and_metrics(mgmt) -> tuple:
    node = mgmt.api.get("/api/nodes").json()[0]
    s = parse(mgmt.metrics())
    return node, s


def blocked_on_publish(mgmt) -> bool:
    """Whether a client that says it understands connection.blocked, and publishes, is told that
    it is blocked (RabbitMQ tells a connection when it publishes while an alarm is on)."""
    conn = RawConnection.opened(mgmt.host, mgmt.amqp_port, client_properties={
        "product": "usagi-tests", "capabilities": {"connection.blocked": True}})
    try:
        conn.open_channel(1)
        conn.publish(1, "", "no-such-queue", b"x")
        conn.expect_method("connection.blocked", timeout=1.5)
        return True
    except (AssertionError, OSError, TimeoutError):
        return False
    finally:
        conn.close()


def memory_alarm(mgmt, on: bool):
    """The memory alarm on (a watermark of 0) or off (0.4 of RAM), once the node reports it."""
    r = mgmt.api.put("/api/usagi/vm_memory_high_watermark", {"relative": 0 if on else 0.4})
    assert r.status == 204, r
    wait_until(lambda: mgmt.api.get("/api/nodes").json()[0]["mem_alarm"] == on, 10, message=f"mem_alarm {on}")


def test_absolute_limits_are_reported_as_set(start_mgmt):
    mgmt = start_mgmt(extra_args=["--in-memory", "--vm-memory-high-watermark-absolute", "1234567890",
                                  "--disk-free-limit", "7654321"])
    node, s = node_and_metrics(mgmt)
    assert node["mem_limit"] == 1234567890 == value(s, "rabbitmq_resident_memory_limit_bytes")
    assert node["disk_free_limit"] == 7654321 == value(s, "rabbitmq_disk_space_available_limit_bytes")
    assert node["mem_used"] < node["mem_limit"] and not node["mem_alarm"]
    assert node["disk_free"] > node["disk_free_limit"] and not node["disk_free_alarm"]
    assert value(s, "rabbitmq_alarms_memory_used_watermark") == 0
    assert value(s, "rabbitmq_alarms_free_disk_space_watermark") == 0
    assert not blocked_on_publish(mgmt)


def test_memory_alarm_fires_at_the_reported_limit(start_mgmt):
    """A limit under what the broker uses at rest (its interpreter alone is more): the alarm is on,
    the figure reported is over the limit reported, and publishers are blocked."""
    limit = 10_000_000
    mgmt = start_mgmt(extra_args=["--in-memory", "--vm-memory-high-watermark-absolute", str(limit)])
    node = wait_until(lambda: (lambda n: n if n["mem_alarm"] else None)(mgmt.api.get("/api/nodes").json()[0]),
                      10, message="the memory alarm")
    assert node["mem_limit"] == limit < node["mem_used"]
    s = parse(mgmt.metrics())
    assert value(s, "rabbitmq_resident_memory_limit_bytes") == limit
    assert value(s, "rabbitmq_process_resident_memory_bytes") > limit
    assert value(s, "rabbitmq_alarms_memory_used_watermark") == 1
    assert blocked_on_publish(mgmt)
    alarms = mgmt.api.get("/api/health/checks/alarms")
    assert alarms.status == 503, alarms


@pytest.mark.parametrize("in_memory", [False, True])
def test_disk_alarm_fires_at_the_reported_limit(start_mgmt, in_memory):
    """A free space limit above the disk's size: the alarm is on, with a data dir or in memory (the
    broker still writes to disk: paged-out messages), and the figures say why."""
    huge = 1 << 60
    mgmt = start_mgmt(extra_args=(["--in-memory"] if in_memory else []) + ["--disk-free-limit", str(huge)])
    node = wait_until(lambda: (lambda n: n if n["disk_free_alarm"] else None)(mgmt.api.get("/api/nodes").json()[0]),
                      10, message="the disk alarm")
    assert node["disk_free_limit"] == huge > node["disk_free"] > 0
    s = parse(mgmt.metrics())
    assert value(s, "rabbitmq_disk_space_available_limit_bytes") == huge
    assert 0 < value(s, "rabbitmq_disk_space_available_bytes") < huge
    assert value(s, "rabbitmq_alarms_free_disk_space_watermark") == 1
    assert blocked_on_publish(mgmt)


def test_default_watermark_is_rabbitmqs(start_mgmt):
    """vm_memory_high_watermark 0.4 of the machine's RAM (MemTotal), as RabbitMQ computes it: the
    same figure as the RabbitMQ node of this machine when it runs with the default."""
    mgmt = start_mgmt(extra_args=["--in-memory"])
    node, s = node_and_metrics(mgmt)
    with open("/proc/meminfo") as f:
        total = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemTotal:"))
    assert node["mem_limit"] == round(total * 0.4) == value(s, "rabbitmq_resident_memory_limit_bytes")
    assert node["disk_free_limit"] == 50_000_000
    u = urllib.parse.urlsplit(RABBITMQ_MGMT)
    req = urllib.request.Request(f"{u.scheme}://{u.hostname}:{u.port}/api/nodes")
    token = f"{urllib.parse.unquote(u.username or 'guest')}:{urllib.parse.unquote(u.password or 'guest')}"
    req.add_header("Authorization", "Basic " + base64.b64encode(token.encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            rabbit = json.loads(r.read())[0]
    except OSError:
        pytest.skip("no RabbitMQ management API to compare with")
    if rabbit.get("mem_limit") and abs(rabbit["mem_limit"] / total - 0.4) < 0.001:
        assert node["mem_limit"] == rabbit["mem_limit"]
        assert node["disk_free_limit"] == rabbit["disk_free_limit"]


def test_watermark_zero_blocks_every_publisher(start_mgmt):
    """set_vm_memory_high_watermark 0 is RabbitMQ's way to stop all publishing: a limit of 0 bytes,
    the alarm on at once, publishers blocked; a fraction again lifts it. It is never "no limit"."""
    mgmt = start_mgmt(extra_args=["--in-memory"])
    assert not blocked_on_publish(mgmt)
    r = mgmt.api.put("/api/usagi/vm_memory_high_watermark", {"relative": 0})
    assert r.status == 204, r
    node = wait_until(lambda: (lambda n: n if n["mem_alarm"] else None)(mgmt.api.get("/api/nodes").json()[0]),
                      10, message="the memory alarm at watermark 0")
    assert node["mem_limit"] == 0 < node["mem_used"]
    assert blocked_on_publish(mgmt)
    assert mgmt.api.put("/api/usagi/vm_memory_high_watermark", {"relative": 0.4}).status == 204
    wait_until(lambda: not mgmt.api.get("/api/nodes").json()[0]["mem_alarm"], 10, message="the alarm clearing")
    assert not blocked_on_publish(mgmt)


def test_watermark_zero_at_start_blocks_publishers(start_mgmt):
    mgmt = start_mgmt(extra_args=["--in-memory", "--vm-memory-high-watermark", "0"])
    wait_until(lambda: mgmt.api.get("/api/nodes").json()[0]["mem_alarm"], 10, message="the memory alarm")
    assert blocked_on_publish(mgmt)


def test_only_connections_that_publish_during_an_alarm_are_blocked(start_mgmt):
    """What RabbitMQ 3.10 does, seen with this sequence against it: an alarm blocks no connection
    by itself (every open one shows "blocking"); one that publishes while it is on is blocked
    (connection.blocked if it asked for it, "blocked", not read from), whether or not it published
    before; one that only consumes or acks goes on. When the alarm clears the blocked ones are told
    (connection.unblocked) and read again; at the next alarm they are blocked again only once they
    publish again."""
    mgmt = start_mgmt(extra_args=["--in-memory"])

    def raw(product, capable=True):
        c = RawConnection.opened(mgmt.host, mgmt.amqp_port, client_properties={
            "product": product, "capabilities": {"connection.blocked": capable}})
        c.open_channel(1)
        return c

    def silent(c, timeout=1.0):
        try:
            f = c.read_frame(timeout)
        except (TimeoutError, OSError):
            return True
        raise AssertionError(f"unexpected {f.name} {f.args}")

    def states():
        return {c["client_properties"]["product"]: c["state"] for c in mgmt.api.get("/api/connections").json()}

    early, late, plain = raw("early"), raw("late"), raw("plain", capable=False)
    early.publish(1, "", "nowhere", b"before the alarm")
    early.call(1, "queue.declare", "queue.declare-ok", queue="work")
    memory_alarm(mgmt, True)
    assert silent(early) and silent(late) and silent(plain)
    assert wait_until(lambda: set(states().values()) == {"blocking"} or None, 10, message="blocking")
    # a connection that did not publish during the alarm is still read: it consumes and acks
    early.call(1, "queue.declare", "queue.declare-ok", queue="work")
    late.publish(1, "", "nowhere", b"during the alarm")
    plain.publish(1, "", "nowhere", b"during the alarm")
    assert late.expect_method("connection.blocked").args["reason"] == "low on memory"
    assert silent(plain)
    assert wait_until(lambda: states() == {"early": "blocking", "late": "blocked", "plain": "blocked"} or None,
                      10, message="late and plain blocked")
    # not read any more: a declare waits for the alarm to clear
    late.send_method(1, "queue.declare", queue="late-q")
    assert silent(late)
    memory_alarm(mgmt, False)
    assert late.expect_method("connection.unblocked")
    assert late.expect_method("queue.declare-ok").args["queue"] == "late-q"
    assert silent(early) and silent(plain)
    assert wait_until(lambda: set(states().values()) == {"running"} or None, 10, message="running")
    # the next alarm blocks them again only when they publish again
    memory_alarm(mgmt, True)
    assert silent(early) and silent(late) and silent(plain)
    late.publish(1, "", "nowhere", b"again")
    assert late.expect_method("connection.blocked")
    memory_alarm(mgmt, False)
    assert late.expect_method("connection.unblocked")
    for c in (early, late, plain):
        c.close()


def test_a_blocked_connection_outlives_its_heartbeat_timeout(start_mgmt):
    """A connection blocked by an alarm is not read from, so the heartbeats it sends wait unread:
    its silence is not taken for a dead peer (RabbitMQ pauses the heartbeat check of a blocked
    connection), and it goes on once the alarm clears."""
    mgmt = start_mgmt(extra_args=["--in-memory"])
    conn = RawConnection.open_to(mgmt.host, mgmt.amqp_port)
    assert conn.handshake(heartbeat=1, client_properties={
        "product": "usagi-tests", "capabilities": {"connection.blocked": True}}).name == "connection.open-ok"
    conn.open_channel(1)
    memory_alarm(mgmt, True)
    conn.publish(1, "", "nowhere", b"x")
    assert conn.expect_method("connection.blocked")
    deadline = time.monotonic() + 4.5              # over twice the heartbeat, sending only heartbeats
    while time.monotonic() < deadline:
        conn.send_raw(b"\x08\x00\x00\x00\x00\x00\x00\xce")
        try:
            frame = conn.read_frame(0.5, skip_heartbeats=True)
        except (TimeoutError, OSError):
            continue
        raise AssertionError(f"unexpected {frame.name} {frame.args}")
    memory_alarm(mgmt, False)
    assert conn.expect_method("connection.unblocked", timeout=10)
    assert conn.call(1, "queue.declare", "queue.declare-ok", queue="after").args["queue"] == "after"
    conn.close()


def test_content_read_during_an_alarm_blocks_a_publish_begun_before(start_mgmt):
    """A publish whose method and header came before the alarm, its body during it: the body is
    publishing too (RabbitMQ's reader blocks on content frames), so the connection is blocked after
    the first read of it and the other bodies wait unread until the alarm clears."""
    mgmt = start_mgmt(extra_args=["--in-memory"])
    conn = RawConnection.opened(mgmt.host, mgmt.amqp_port, client_properties={
        "product": "usagi-tests", "capabilities": {"connection.blocked": True}})
    conn.open_channel(1)
    conn.call(1, "queue.declare", "queue.declare-ok", queue="begun")
    size, channels = 200_000, range(2, 12)
    for ch in channels:
        conn.open_channel(ch)
        conn.send_raw(frame_bytes(FRAME_METHOD, ch, method_payload("basic.publish", exchange="", routing_key="begun"))
                      + frame_bytes(FRAME_HEADER, ch, content_header_payload(size, None)))
    memory_alarm(mgmt, True)
    body, chunk = b"b" * size, conn.frame_max - 8
    for ch in channels:
        for i in range(0, size, chunk):
            conn.send_raw(frame_bytes(FRAME_BODY, ch, body[i:i + chunk]))
        time.sleep(0.02)
    assert conn.expect_method("connection.blocked")
    depth = lambda: mgmt.api.get("/api/queues/%2F/begun").json().get("messages")  # noqa: E731
    time.sleep(1.5)                                  # the queue's figures are sampled
    assert (depth() or 0) <= 2, depth()
    memory_alarm(mgmt, False)
    assert conn.expect_method("connection.unblocked", timeout=10)
    assert wait_until(lambda: depth() == len(channels) or None, 10, message="every message once unblocked")
    conn.close()


def test_a_connection_closing_during_an_alarm_is_still_read(start_mgmt):
    """A publish the broker answers with connection.close (immediate=true, 540), during an alarm:
    the client's close-ok is read and the socket closed at once, not after the close timeout."""
    mgmt = start_mgmt(extra_args=["--in-memory"])
    memory_alarm(mgmt, True)
    conn = RawConnection.opened(mgmt.host, mgmt.amqp_port, client_properties={
        "product": "usagi-tests", "capabilities": {"connection.blocked": True}})
    conn.open_channel(1)
    # the whole publish in one write: read in one turn, it is answered before any blocking (sent in
    # pieces, a piece read alone would block the connection first, here as with RabbitMQ)
    conn.send_raw(frame_bytes(FRAME_METHOD, 1, method_payload("basic.publish", exchange="", routing_key="nowhere",
                                                               immediate=True))
                  + frame_bytes(FRAME_HEADER, 1, content_header_payload(1, None)) + frame_bytes(FRAME_BODY, 1, b"x"))
    close = conn.expect_method("connection.close")
    assert close.args["reply_code"] == 540
    t0 = time.monotonic()
    conn.send_method(0, "connection.close-ok")
    assert conn.is_closed_by_peer(timeout=2.5)
    assert time.monotonic() - t0 < 2.5             # the close timeout is 3 s
