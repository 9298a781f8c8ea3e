"""usagi.testing: brokers started and stopped by a test suite, in a thread or a child process, used
with the real clients (pika, kombu) and the management API over real sockets."""
from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import textwrap
import urllib.error
import urllib.parse
import urllib.request

import kombu
import pika
import pytest

from support.harness import ROOT, wait_for
from usagi.testing import BrokerStartError, UsagiBroker, start_broker

pytestmark = pytest.mark.timeout(90)
MODES = ["thread", "process"]


def api(base: str, path: str, method: str = "GET", body=None):
    """(status, JSON or None) of a management API call; `base` is a management_url with credentials."""
    u = urllib.parse.urlsplit(base)
    req = urllib.request.Request(f"{u.scheme}://{u.hostname}:{u.port}/api/{path}", method=method,
                                 data=None if body is None else json.dumps(body).encode())
    token = base64.b64encode(f"{urllib.parse.unquote(u.username)}:{urllib.parse.unquote(u.password)}".encode())
    req.add_header("Authorization", "Basic " + token.decode())
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
            return r.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        return e.code, None


def refused(port: int) -> bool:
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect(("127.0.0.1", port))
        return False
    except ConnectionRefusedError:
        return True
    finally:
        s.close()


def bindable(port: int) -> bool:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
        s.listen(1)
        return True
    except OSError:
        return False
    finally:
        s.close()


def pika_connection(url: str) -> pika.BlockingConnection:
    params = pika.URLParameters(url)
    params.connection_attempts = 1
    params.socket_timeout = 5
    return pika.BlockingConnection(params)


def queue_exists(url: str, name: str) -> bool:
    conn = pika_connection(url)
    try:
        ch = conn.channel()
        try:
            ch.queue_declare(name, passive=True)
            return True
        except pika.exceptions.ChannelClosedByBroker as e:
            assert e.reply_code == 404, e
            return False
    finally:
        conn.close()


@pytest.fixture(params=MODES)
def mode(request):
    return request.param


def test_url_pika_and_kombu_roundtrip(mode):
    with start_broker(mode) as b:
        assert b.running
        assert b.url == f"amqp://guest:guest@127.0.0.1:{b.port}/%2F"
        assert b.port > 0 and b.management_port > 0 and b.port != b.management_port
        conn = pika_connection(b.url)
        ch = conn.channel()
        ch.queue_declare("tk.pika")
        ch.basic_publish("", "tk.pika", b"over pika")
        method, _props, body = ch.basic_get("tk.pika", auto_ack=True)
        assert body == b"over pika"
        conn.close()
        with kombu.Connection(b.url) as k:
            q = k.SimpleQueue("tk.kombu")
            q.put({"over": "kombu"})
            msg = q.get(timeout=5)
            msg.ack()
            assert msg.payload == {"over": "kombu"}
            q.close()


def test_management_api(mode):
    with start_broker(mode) as b:
        assert b.management_url == f"http://guest:guest@127.0.0.1:{b.management_port}"
        status, who = api(b.management_url, "whoami")
        assert status == 200 and who["name"] == "guest" and "administrator" in who["tags"]
        status, _ = api(b.management_url, "queues/%2F/tk.mgmt", "PUT", {"durable": False})
        assert status in (201, 204)
        assert queue_exists(b.url, "tk.mgmt")
        status, queues = api(b.management_url, "queues")
        assert [q["name"] for q in queues] == ["tk.mgmt"]


def test_without_management(mode):
    with start_broker(mode, management=False) as b:
        assert b.management_url is None and b.management_port is None
        assert queue_exists(b.url, "nothing") is False


def test_own_user_and_options(mode):
    with start_broker(mode, user="alice", password="s3 cr/et", args=["--max-message-size", "1000"]) as b:
        assert b.url == f"amqp://alice:s3%20cr%2Fet@127.0.0.1:{b.port}/%2F"
        conn = pika_connection(b.url)
        ch = conn.channel()
        ch.queue_declare("tk.small")
        ch.basic_publish("", "tk.small", b"x" * 1001)
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            ch.basic_get("tk.small")
        assert e.value.reply_code == 406            # --max-message-size reached the broker
        conn.close()
        status, who = api(b.management_url, "whoami")
        assert status == 200 and who["name"] == "alice"
        with pytest.raises(pika.exceptions.ProbableAuthenticationError):
            pika_connection(f"amqp://guest:guest@127.0.0.1:{b.port}/%2F")


def test_stop_frees_the_ports_and_closes_clients(mode):
    b = start_broker(mode)
    port, mport = b.port, b.management_port
    conn = pika_connection(b.url)
    conn.channel()
    b.stop()
    assert not b.running and b.port is None and b.pid is None
    assert refused(port) and refused(mport)
    assert bindable(port) and bindable(mport)
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        conn.process_data_events(2)
    assert e.value.reply_code == 320
    b.stop()                                        # a second stop does nothing
    with pytest.raises(RuntimeError):
        b.url


def test_process_mode_leaves_no_process():
    b = start_broker("process")
    pid = b.pid
    assert pid != os.getpid()
    os.kill(pid, 0)
    b.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_program_that_forgets_to_stop_leaves_no_process():
    script = textwrap.dedent("""
        from usagi.testing import start_broker
        b = start_broker("process")
        print(b.pid, b.port, flush=True)
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, env=dict(os.environ, PYTHONPATH=ROOT))
    assert out.returncode == 0, out.stderr
    pid, port = map(int, out.stdout.split())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert refused(port)


def test_two_brokers_at_once_are_separate(mode):
    with start_broker(mode) as a, start_broker(mode) as b:
        assert a.port != b.port and a.management_port != b.management_port
        conn = pika_connection(a.url)
        conn.channel().queue_declare("tk.only-on-a")
        conn.close()
        assert queue_exists(a.url, "tk.only-on-a")
        assert not queue_exists(b.url, "tk.only-on-a")
        a_port = a.port
        a.stop()
        assert refused(a_port)
        assert queue_exists(b.url, "nothing") is False       # b goes on serving


def test_thread_and_process_side_by_side():
    with start_broker("thread") as a, start_broker("process") as b:
        for x, y in ((a, b), (b, a)):
            conn = pika_connection(x.url)
            ch = conn.channel()
            ch.queue_declare(f"tk.side.{x.port}")
            conn.close()
            assert not queue_exists(y.url, f"tk.side.{x.port}")


def test_a_restarted_broker_is_empty(mode):
    b = UsagiBroker(mode)
    with b:
        conn = pika_connection(b.url)
        ch = conn.channel()
        ch.queue_declare("tk.left-behind")
        ch.basic_publish("", "tk.left-behind", b"old")
        conn.close()
    assert not b.running
    with b:
        assert b.running
        assert not queue_exists(b.url, "tk.left-behind")


def test_stop_through_the_management_api_stops_only_the_broker(mode):
    b = start_broker(mode)
    try:
        port = b.port
        status, _ = api(b.management_url, "usagi/stop", "POST")
        assert status == 204
        wait_for(lambda: not b.running, 15, message="the broker to stop")
        assert refused(port)
    finally:
        b.stop()
    # this process is still here (a stop in a thread does not signal it), and can start another
    with start_broker(mode) as again:
        assert queue_exists(again.url, "nothing") is False


def test_long_queues_of_two_brokers_page_to_one_dir_without_mixing(monkeypatch):
    """In-memory brokers of one process page long queues to one temp dir of the process (removed
    at exit); two brokers' queues of the same name keep their own messages."""
    from usagi.model.queue import PAGING
    with start_broker("thread") as a, start_broker("thread") as b:
        monkeypatch.setitem(PAGING, "count", 100)       # a queue's in-memory budget, for new queues
        for broker, n in ((a, 1500), (b, 1000)):
            conn = pika_connection(broker.url)
            ch = conn.channel()
            ch.queue_declare("tk.long")
            for i in range(n):
                ch.basic_publish("", "tk.long", f"{broker.port}:{i}".encode())
            conn.close()
        assert any(name.startswith("seg-") for name in os.listdir(PAGING["dir"]))
        for broker, n in ((a, 1500), (b, 1000)):
            conn = pika_connection(broker.url)
            ch = conn.channel()
            got = []
            while True:
                method, _p, body = ch.basic_get("tk.long", auto_ack=True)
                if method is None:
                    break
                got.append(body.decode())
            conn.close()
            assert got == [f"{broker.port}:{i}" for i in range(n)]


def test_bad_options():
    with pytest.raises(ValueError):
        UsagiBroker("fork")
    with pytest.raises(ValueError):
        start_broker(args=["--no-such-option"])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("option", [("--frame-max", "10"), ("--heartbeat", "-5"), ("--channel-max", "70000"),
                                    ("--max-message-size", "0")])
def test_a_broker_that_cannot_start_says_why(mode, option):
    """Values usagi-server refuses are refused in a thread too (where the broker is built without
    usagi-server's start-up code), with the same reason."""
    with pytest.raises(BrokerStartError) as e:
        start_broker(mode, args=list(option))
    assert f"{option[0]} must be between" in str(e.value)


def test_a_process_broker_stops_when_the_program_that_started_it_is_killed():
    """SIGKILL leaves a program no clean-up (no atexit): its broker notices that the pipe from it
    closed, and stops."""
    script = textwrap.dedent("""
        import time
        from usagi.testing import start_broker
        b = start_broker("process")
        print(b.pid, b.port, flush=True)
        time.sleep(120)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=ROOT))
    try:
        pid, port = map(int, parent.stdout.readline().split())
        os.kill(pid, 0)
        assert not refused(port)
        parent.kill()
        parent.wait(10)

        def gone():
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            return False
        wait_for(gone, 20, message="the orphaned broker to stop")
        assert refused(port)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        parent.stdout.close()


def publish_and_get(url: str, size: int):
    """Publish `size` bytes and get them back; the reply code if the broker refuses them."""
    conn = pika_connection(url)
    try:
        ch = conn.channel()
        ch.queue_declare("tk.sized")
        ch.basic_publish("", "tk.sized", b"x" * size)
        try:
            method, _p, body = ch.basic_get("tk.sized", auto_ack=True)
            return len(body)
        except pika.exceptions.ChannelClosedByBroker as e:
            return e.reply_code
    finally:
        if conn.is_open:
            conn.close()


def test_configuration_files(tmp_path, monkeypatch):
    """A configuration file applies when the options name it (in a process), never one the
    environment names for the machine's own broker."""
    conf = tmp_path / "rabbitmq.conf"
    conf.write_text("max_message_size = 1000\n")
    monkeypatch.setenv("RABBITMQ_CONFIG_FILE", str(conf))
    monkeypatch.setenv("USAGI_CONFIG_FILE", str(conf))
    for mode in MODES:
        with start_broker(mode, management=False) as b:
            assert publish_and_get(b.url, 1001) == 1001
    with start_broker("process", management=False, args=["--config", str(conf)]) as b:
        assert publish_and_get(b.url, 1001) == 406
    with pytest.raises(ValueError, match="mode='process'"):
        start_broker("thread", args=["--config", str(conf)])
