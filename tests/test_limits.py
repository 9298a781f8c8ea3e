"""Limits as RabbitMQ enforces and words them: node, vhost and user connection limits, vhost queue limit,
user channel limit, consumer acknowledgement timeout, handshake timeout, frame size before tune, and
failed logins (slowed per address, never logged with the password; guest only from loopback)."""
from __future__ import annotations

import base64
import json
import re
import socket
import time
import urllib.error
import urllib.request

import pika
import pytest

from rawamqp import ConnectionClosedByPeer, RawConnection, close_summary
from support.harness import wait_for

pytestmark = pytest.mark.timeout(120)

MGMT_RE = re.compile(r"Management listener on (\S+):(\d+)")


def api(srv, method, path, body=None):
    m = wait_for(lambda: MGMT_RE.search("".join(srv.lines)), message="management listener")
    req = urllib.request.Request(f"http://127.0.0.1:{m.group(2)}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode(),
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        data = r.read()
        return json.loads(data) if data else None


def open_raw(srv, **kw) -> tuple:
    """(connection, the frame answering connection.open)."""
    c = RawConnection.open_to(srv.host, srv.port)
    return c, c.handshake(**kw)


def refused(srv, **kw) -> tuple:
    c, reply = open_raw(srv, **kw)
    try:
        assert reply.name == "connection.close", reply
        return close_summary(reply)
    finally:
        c.close()


# ---------------------------------------------------------------------------------------- connections
def test_node_connection_limit(fresh_server):
    srv = fresh_server(extra_args=["--max-connections", "2"])
    a, ra = open_raw(srv)
    b, rb = open_raw(srv)
    assert ra.name == rb.name == "connection.open-ok"
    assert refused(srv) == (530, "NOT_ALLOWED - connection refused: node connection limit (2) is reached", 10, 40)
    a.close_connection()
    wait_for(lambda: open_raw(srv)[1].name == "connection.open-ok", message="room again")
    b.close()


def test_vhost_connection_limit(fresh_server):
    srv = fresh_server()
    api(srv, "PUT", "/api/vhost-limits/%2F/max-connections", {"value": 1})
    a, ra = open_raw(srv)
    assert ra.name == "connection.open-ok"
    assert refused(srv) == (530, "NOT_ALLOWED - access to vhost '/' refused for user 'guest': "
                                 "connection limit (1) is reached", 10, 40)
    a.close_connection()
    c, rc = open_raw(srv)
    assert rc.name == "connection.open-ok"
    c.close_connection()
    api(srv, "PUT", "/api/vhost-limits/%2F/max-connections", {"value": 0})
    assert refused(srv)[1].endswith("connection limit (0) is reached")
    api(srv, "PUT", "/api/vhost-limits/%2F/max-connections", {"value": -1})     # no limit
    c, rc = open_raw(srv)
    assert rc.name == "connection.open-ok"
    c.close()


def test_user_connection_and_channel_limits(fresh_server):
    srv = fresh_server()
    api(srv, "PUT", "/api/user-limits/guest/max-connections", {"value": 1})
    a, ra = open_raw(srv)
    assert ra.name == "connection.open-ok"
    assert refused(srv) == (530, "NOT_ALLOWED - connection refused for user 'guest': "
                                 "user connection limit (1) is reached", 10, 40)
    a.close_connection()
    api(srv, "DELETE", "/api/user-limits/guest/max-connections")
    api(srv, "PUT", "/api/user-limits/guest/max-channels", {"value": 2})
    node = api(srv, "GET", "/api/overview")["node"]
    a, _ = open_raw(srv)
    b, _ = open_raw(srv)
    a.open_channel(1)
    b.open_channel(1)          # two channels of this user, over two connections
    b.send_method(2, "channel.open")
    close = b.expect_connection_close()
    # RabbitMQ 4.0 words it with the node name (rabbit_reader:create_channel formats [node(), Limit])
    assert close_summary(close) == (530, f"NOT_ALLOWED - number of channels opened for user '{node}' has "
                                         f"reached the maximum allowed user limit of (2)", 0, 0)
    b.close()
    a.open_channel(2)          # b's channel went with its connection
    a.close_connection()


# ---------------------------------------------------------------------------------------- queues
def test_vhost_queue_limit(fresh_server):
    srv = fresh_server()
    api(srv, "PUT", "/api/vhost-limits/%2F/max-queues", {"value": 2})
    conn = pika.BlockingConnection(pika.URLParameters(srv.url()))
    ch = conn.channel()
    ch.queue_declare("q1")
    ch.queue_declare("q2")
    ch.queue_declare("q1")                        # redeclaring is not a new queue
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        ch.queue_declare("q3")
    assert (ei.value.reply_code, ei.value.reply_text) == (
        406, "PRECONDITION_FAILED - cannot declare queue 'q3': queue limit in vhost '/' (2) is reached")
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        ch.queue_declare("", exclusive=True)
    assert re.fullmatch(r"PRECONDITION_FAILED - cannot declare queue 'amq\.gen-\S+': queue limit in vhost '/' "
                        r"\(2\) is reached", ei.value.reply_text)
    ch = conn.channel()
    ch.queue_delete("q2")
    ch.queue_declare("q3")
    # the management API is held to the same limit
    with pytest.raises(urllib.error.HTTPError):
        api(srv, "PUT", "/api/queues/%2F/q4", {"durable": False})
    conn.close()


# ---------------------------------------------------------------------------------------- consumer timeout
def test_consumer_timeout_closes_the_channel_and_requeues(fresh_server):
    srv = fresh_server(extra_args=["--consumer-timeout", "1000"])
    c = RawConnection.opened(srv.host, srv.port)
    c.open_channel(1)
    c.call(1, "queue.declare", "queue.declare-ok", queue="ct")
    c.publish(1, "", "ct", b"slow")
    c.call(1, "basic.consume", "basic.consume-ok", queue="ct", consumer_tag="t")
    c.expect_method("basic.deliver")
    assert c.read_message()[1] == b"slow"
    t0 = time.monotonic()
    close = c.expect_channel_close(1, timeout=10)
    waited = time.monotonic() - t0
    assert close_summary(close) == (
        406, "PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out. Timeout value used: 1000 ms. "
             "This timeout value can be configured, see consumers doc guide to learn more", 0, 0)
    assert 0.9 <= waited < 4, waited
    # the delivery went back to the queue: another channel gets it, redelivered
    c.open_channel(2)
    c.send_method(2, "basic.get", queue="ct", no_ack=True)
    ok = c.expect_method("basic.get-ok")
    assert ok.args["redelivered"] is True
    c.read_message()
    # a consumer that acks in time keeps its channel
    c.publish(2, "", "ct", b"quick")
    c.open_channel(3)
    c.call(3, "basic.consume", "basic.consume-ok", queue="ct", consumer_tag="q")
    c.expect_method("basic.deliver")
    c.read_message()
    c.send_method(3, "basic.ack", delivery_tag=0, multiple=True)
    time.sleep(1.8)
    c.call(3, "queue.declare", "queue.declare-ok", queue="ct", passive=True)
    c.close_connection()
    assert "has timed out waiting for a consumer acknowledgement" in "".join(srv.lines)


def test_consumer_timeout_default_and_queue_argument(fresh_server):
    from usagi.cli.server import apply_limit_options, build_parser
    from usagi.core.broker import Config
    cfg = Config()
    apply_limit_options(cfg, build_parser().parse_args([]))
    assert cfg.consumer_timeout == 1800.0 and cfg.handshake_timeout == 10.0 and cfg.connection_max is None
    srv = fresh_server()
    c = RawConnection.opened(srv.host, srv.port)
    c.open_channel(1)
    c.call(1, "queue.declare", "queue.declare-ok", queue="qt", arguments={"x-consumer-timeout": 500})
    c.publish(1, "", "qt", b"x")
    c.send_method(1, "basic.get", queue="qt", no_ack=False)     # basic.get deliveries time out too
    c.expect_method("basic.get-ok")
    c.read_message()
    close = c.expect_channel_close(1, timeout=5)
    assert close.args["reply_code"] == 406 and "Timeout value used: 500 ms" in close.args["reply_text"]
    c.close_connection()


# ---------------------------------------------------------------------------------------- handshake
def test_handshake_timeout_counts_from_accept_however_slow_the_bytes(fresh_server):
    srv = fresh_server(extra_args=["--handshake-timeout", "1000"])
    s = socket.create_connection((srv.host, srv.port), timeout=5)
    header = b"AMQP\x00\x00\x09\x01"
    t0 = time.monotonic()
    closed_at = None
    for i in range(40):            # one byte every 100 ms: always "active", never done
        try:
            s.sendall(header[i % 8:i % 8 + 1] if i < 8 else b"\x01")
        except OSError:
            closed_at = time.monotonic()
            break
        time.sleep(0.1)
        s.settimeout(0.001)
        try:
            data = s.recv(65536)
            if data == b"" and i > 8:
                closed_at = time.monotonic()
                break
        except (socket.timeout, BlockingIOError):
            pass
        except OSError:
            closed_at = time.monotonic()
            break
    s.close()
    assert closed_at is not None and closed_at - t0 < 3.0, "slow handshake was not cut off"
    # a normal client is still served
    conn = pika.BlockingConnection(pika.URLParameters(srv.url()))
    conn.close()


def test_frame_size_before_tune_is_limited(fresh_server):
    srv = fresh_server()
    c = RawConnection.open_to(srv.host, srv.port)
    c.expect_method("connection.start")
    c.send_raw(b"\x01\x00\x00\x00\x01\x00\x00" + b"\x00" * 70000)    # 65536 bytes declared before tune
    assert c.is_closed_by_peer(5)


# ---------------------------------------------------------------------------------------- logins
def _bad_login(srv, password="wrong") -> tuple:
    """(seconds until the server answered or dropped the connection, whether it answered 403)."""
    t0 = time.monotonic()
    c = RawConnection.open_to(srv.host, srv.port, timeout=15)
    refused = False
    try:
        reply = c.handshake(password=password)
        refused = reply.name == "connection.close" and reply.args["reply_code"] == 403
    except (ConnectionClosedByPeer, ConnectionError, OSError, TimeoutError):
        pass                   # dropped unanswered
    finally:
        c.close()
    return time.monotonic() - t0, refused


def test_failed_logins_are_slowed_per_address_and_never_logged_with_the_password(fresh_server):
    srv = fresh_server()
    results = [_bad_login(srv, "s3cr3t-guess-%d" % i) for i in range(7)]
    times = [t for t, _ in results]
    assert all(r for _, r in results), results        # each one answered 403 in the end
    assert times[0] < 0.5, times                        # the first failure is answered at once
    # then later and later: 0.1, 0.2, 0.4, 0.8, 1.6, 3.2 s
    assert sum(times) > 4.0 and times[-1] > 2.5 and times[-1] > times[2], times
    # a successful login from that address is not held up
    t0 = time.monotonic()
    c = RawConnection.open_to(srv.host, srv.port)
    assert c.handshake().name == "connection.open-ok"
    assert time.monotonic() - t0 < 1.0
    c.close_connection()
    log = "".join(srv.lines)
    assert "user 'guest' failed to authenticate with PLAIN" in log
    assert "s3cr3t-guess" not in log


def test_parallel_guesses_do_not_go_faster(fresh_server):
    from usagi.core import limits
    srv = fresh_server()
    for i in range(4):
        _bad_login(srv)
    import concurrent.futures
    with concurrent.futures.ThreadPoolExecutor(10) as ex:
        results = list(ex.map(lambda i: _bad_login(srv), range(10)))
    answered = [t for t, r in results if r]
    # only MAX_PENDING of them are evaluated and answered (late); the others are dropped unanswered
    assert len(answered) <= limits.MAX_PENDING, results
    assert all(t > 0.5 for t in answered), results
    wait_for(lambda: "attempt dropped" in "".join(srv.lines), message="dropped attempts logged")
    assert srv.proc.poll() is None


def _non_loopback_address():
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect(("192.0.2.1", 9))      # no packet is sent: picks the outgoing interface
        addr = s.getsockname()[0]
        s.close()
    except OSError:
        return None
    return None if addr.startswith("127.") else addr


def test_guest_only_from_loopback(fresh_server):
    addr = _non_loopback_address()
    if addr is None:
        pytest.skip("this machine has no non-loopback address to connect from")
    srv = fresh_server(extra_args=["--host", "0.0.0.0"])
    c = RawConnection.open_to(addr, srv.port)
    reply = c.handshake()
    c.close()
    assert close_summary(reply) == (403, "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. "
                                         "For details see the broker logfile.", 0, 0)
    wait_for(lambda: "user 'guest' can only connect via localhost" in "".join(srv.lines), message="log line")
    # another user may connect from there
    api(srv, "PUT", "/api/users/remote", {"password": "pw", "tags": ""})
    api(srv, "PUT", "/api/permissions/%2F/remote", {"configure": ".*", "write": ".*", "read": ".*"})
    conn = pika.BlockingConnection(pika.ConnectionParameters(addr, srv.port,
                                                             credentials=pika.PlainCredentials("remote", "pw")))
    conn.channel()
    conn.close()
    # guest from loopback is fine
    c = RawConnection.opened(srv.host, srv.port)
    c.close_connection()


def test_limit_texts_in_process():
    """The hooks on their own, without a server."""
    from usagi.core import limits
    from usagi.core.broker import Broker
    from usagi.amqp.errors import ChannelError
    b = Broker()
    b.bootstrap()
    v = b.vhosts["/"]
    b.parameters[("/", "vhost-limits", "limits")] = {"value": {"max-queues": 1}}     # as recovered
    b.declare_queue(v, "one")
    with pytest.raises(ChannelError) as ei:
        b.declare_queue(v, "two")
    assert ei.value.text == "cannot declare queue 'two': queue limit in vhost '/' (1) is reached"
    assert limits.login_delay(0) == limits.login_delay(1) == 0
    assert limits.login_delay(2) == 0.1 and limits.login_delay(3) == 0.2 and limits.login_delay(50) == 5.0
    assert limits.MAX_PENDING == 2
    assert limits.consumer_timeout_text(3, 1800000) == (
        "delivery acknowledgement on channel 3 timed out. Timeout value used: 1800000 ms. "
        "This timeout value can be configured, see consumers doc guide to learn more")



def test_max_message_size(fresh_server):
    srv = fresh_server(extra_args=["--max-message-size", "1000"])
    conn = pika.BlockingConnection(pika.URLParameters(srv.url()))
    ch = conn.channel()
    ch.confirm_delivery()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_publish("", q, b"x" * 1000)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        ch.basic_publish("", q, b"x" * 1001)
    assert (ei.value.reply_code, ei.value.reply_text) == (
        406, "PRECONDITION_FAILED - message size 1001 is larger than configured max size 1000")
    conn.close()
