"""A RabbitMQ deployment's rabbitmq.conf starts Usagi with the same behaviour: listeners, TLS with
client certificates, limits with units, the default user, definitions loaded at start, logs to a
rotated JSON file; a broken file, or a broken definitions file, stops the start with the file,
the line and the reason. Checked with the real server process, pika and the management API."""
from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request

import pika
import pytest

from rawamqp import RawConnection
from support.certs import make_certs
from support.harness import ROOT, ServerProcess, external_broker_url, wait_for

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(bool(external_broker_url()), reason="starts Usagi servers of its own")]

MGMT_RE = re.compile(r"Management listener on (\S+):(\d+)")
METRICS_RE = re.compile(r"Metrics listener on (\S+):(\d+)")
AMQPS_RE = re.compile(r"AMQPS listener on (\S+):(\d+)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write(path, text: str) -> str:
    with open(path, "w") as f:
        f.write(text)
    return str(path)


def api(port: int, path: str, user: str, password: str, method: str = "GET", body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None)
    req.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            data = r.read()
            return r.status, json.loads(data) if data else None
    except urllib.error.HTTPError as e:
        return e.code, None


def start(tmp_path, conf_text: str, *args, env=None) -> ServerProcess:
    conf = write(tmp_path / "rabbitmq.conf", conf_text)
    srv = ServerProcess(data_dir=str(tmp_path / "data"), extra_args=["--config", conf, *args], env=env,
                        defaults=False)
    srv.start()
    # the start's last lines (the listeners are ready before they are all logged)
    wait_for(lambda: "Memory high watermark set to" in "".join(srv.lines), message="start-up lines")
    return srv


def run_server(args, env=None, timeout=30) -> subprocess.CompletedProcess:
    """usagi-server run to its end (a start that fails)."""
    e = dict(os.environ, PYTHONPATH=ROOT)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "usagi.cli.server", *args], capture_output=True, text=True,
                          env=e, cwd=ROOT, timeout=timeout)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(str(tmp_path_factory.mktemp("certs")))


# ------------------------------------------------------------------------------------ a typical file

def test_a_typical_rabbitmq_conf(tmp_path, certs):
    tcp, tls, mgmt, metrics = free_port(), free_port(), free_port(), free_port()
    log_file = tmp_path / "log" / "usagi.log"
    srv = start(tmp_path, f"""
# a RabbitMQ node's configuration, unchanged
listeners.tcp.default = 127.0.0.1:{tcp}
listeners.ssl.default = {tls}
num_acceptors.tcp = 10

ssl_options.cacertfile = {certs.ca}
ssl_options.certfile   = {certs.server_cert}
ssl_options.keyfile    = {certs.server_key}
ssl_options.verify     = verify_peer
ssl_options.fail_if_no_peer_cert = true
ssl_options.versions.1 = tlsv1.2

default_vhost = main
default_user = ops
default_pass = 'p#ss word'
default_user_tags.administrator = true
default_permissions.configure = .*
loopback_users = none

heartbeat = 20
frame_max = 64KB
channel_max = 50
max_message_size = 1048576
vm_memory_high_watermark.absolute = 1TiB
disk_free_limit.absolute = 5MB
cluster_name = deployment-7

management.tcp.port = {mgmt}
management.tcp.ip = 127.0.0.1
prometheus.tcp.port = {metrics}
prometheus.tcp.ip = 127.0.0.1

log.file = {log_file}
log.file.level = info
log.file.formatter = json
log.console = true
log.console.level = info
""")
    try:
        lines = lambda: "".join(srv.lines)  # noqa: E731
        assert srv.port == tcp and f"AMQP listener on 127.0.0.1:{tcp}" in lines()
        assert int(AMQPS_RE.search(lines()).group(2)) == tls
        assert MGMT_RE.search(lines()).group(1, 2) == ("127.0.0.1", str(mgmt))
        assert METRICS_RE.search(lines()).group(1, 2) == ("127.0.0.1", str(metrics))
        assert "num_acceptors.tcp: a RabbitMQ setting that does not apply to Usagi" in lines()
        assert "Disk free limit set to 5000000 bytes" in lines()
        assert "Memory high watermark set to" in lines()
        assert "Created user 'ops' with tags [administrator]" in lines() and "p#ss" not in lines()

        # the protocol's settings, as connection.tune offers them
        raw = RawConnection.open_to("127.0.0.1", tcp)
        reply = raw.handshake(user="ops", password="p#ss word", vhost="main")
        assert reply.name == "connection.open-ok"
        assert (raw.tune["heartbeat"], raw.tune["frame_max"], raw.tune["channel_max"]) == (20, 65536, 50)
        raw.close()

        # the default user, its vhost, its permissions; guest does not exist
        conn = pika.BlockingConnection(pika.ConnectionParameters(
            "127.0.0.1", tcp, "main", pika.PlainCredentials("ops", "p#ss word")))
        ch = conn.channel()
        ch.queue_declare("cfg-q")
        ch.basic_publish("", "cfg-q", b"x" * 1000)
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
            ch.basic_publish("", "cfg-q", b"x" * (1048576 + 1))
            ch.queue_declare("cfg-q", passive=True)
        assert ei.value.reply_code == 406           # max_message_size
        conn.close()
        with pytest.raises(pika.exceptions.ProbableAuthenticationError):
            pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", tcp,
                                                              credentials=pika.PlainCredentials("guest", "guest")))

        # TLS: the client certificate is required (fail_if_no_peer_cert), verified against the CA
        cert = certs.client("ops")
        ctx = ssl.create_default_context(cafile=certs.ca)
        ctx.load_cert_chain(*cert)
        tconn = pika.BlockingConnection(pika.ConnectionParameters(
            "localhost", tls, "main", pika.PlainCredentials("ops", "p#ss word"),
            ssl_options=pika.SSLOptions(ctx, "localhost")))
        assert tconn.is_open
        tconn.close()
        bare = ssl.create_default_context(cafile=certs.ca)
        with pytest.raises(Exception):
            c = pika.BlockingConnection(pika.ConnectionParameters(
                "localhost", tls, "main", pika.PlainCredentials("ops", "p#ss word"),
                ssl_options=pika.SSLOptions(bare, "localhost"), connection_attempts=1, socket_timeout=5))
            c.close()

        # the management API and metrics on their configured ports
        status, me = api(mgmt, "/api/whoami", "ops", "p#ss word")
        assert status == 200 and me["tags"] == ["administrator"]
        status, ov = api(mgmt, "/api/overview", "ops", "p#ss word")
        assert status == 200 and ov["cluster_name"] == "deployment-7"
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=10) as r:
            assert r.status == 200

        # the JSON log file: RabbitMQ's fields, and the reason each connection closed
        def closing_lines():
            out = []
            for line in log_file.read_text().splitlines():
                rec = json.loads(line)
                assert set(rec) >= {"time", "level", "msg"}
                if rec["msg"].startswith("closing AMQP connection"):
                    out.append(rec)
            return out
        closed = wait_for(lambda: [r for r in closing_lines() if "closed by the client: 200" in r["msg"]],
                          message="the close of the pika connection in the log file")
        assert re.fullmatch(r"closing AMQP connection \(127\.0\.0\.1:\d+ -> 127\.0\.0\.1:\d+, vhost: 'main', "
                            r"user: 'ops', duration: '\d+(ms|s)'\): closed by the client: 200 'Normal shutdown'",
                            closed[0]["msg"]), closed[0]["msg"]
        assert closed[0]["level"] == "info"
    finally:
        srv.cleanup()


def test_definitions_loaded_at_start(tmp_path):
    defs = tmp_path / "defs"
    defs.mkdir()
    write(defs / "10-users.json", json.dumps({
        "users": [{"name": "app", "password": "app-secret", "tags": []},
                  {"name": "admin", "password": "admin-secret", "tags": ["administrator"]}],
        "vhosts": [{"name": "orders"}],
        "permissions": [{"user": "app", "vhost": "orders", "configure": "", "write": ".*", "read": ".*"},
                        {"user": "admin", "vhost": "orders", "configure": ".*", "write": ".*", "read": ".*"}]}))
    write(defs / "20-topology.json", json.dumps({
        "policies": [{"vhost": "orders", "name": "cap", "pattern": "^incoming$", "apply-to": "queues",
                      "definition": {"max-length": 2}, "priority": 0}],
        "exchanges": [{"vhost": "orders", "name": "events", "type": "topic", "durable": True,
                       "auto_delete": False, "internal": False, "arguments": {}}],
        "queues": [{"vhost": "orders", "name": "incoming", "durable": True, "auto_delete": False,
                    "arguments": {"x-queue-type": "classic"}}],
        "bindings": [{"vhost": "orders", "source": "events", "destination": "incoming",
                      "destination_type": "queue", "routing_key": "order.*", "arguments": {}}]}))
    write(defs / "README", "")          # an empty file is nothing to apply
    srv = start(tmp_path, f"""
listeners.tcp.default = 127.0.0.1:0
management.tcp.port = 0
prometheus.tcp.port = 0
load_definitions = {defs}
""")
    try:
        lines = "".join(srv.lines)
        assert "Will not seed default virtual host and user: have definitions to load..." in lines
        assert f"Applying definitions from file at '{defs / '20-topology.json'}'" in lines
        conn = pika.BlockingConnection(pika.ConnectionParameters(
            "127.0.0.1", srv.port, "orders", pika.PlainCredentials("app", "app-secret")))
        ch = conn.channel()
        for i in range(4):
            ch.basic_publish("events", "order.created", f"m{i}".encode())
        ok = ch.queue_declare("incoming", passive=True)
        assert ok.method.message_count == 2          # routed by the binding, capped by the policy
        conn.close()
        with pytest.raises(pika.exceptions.ProbableAuthenticationError):
            pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", srv.port))   # no guest
        mgmt = int(MGMT_RE.search(lines).group(2))
        status, qs = api(mgmt, "/api/queues/orders", "admin", "admin-secret")
        assert status == 200 and [q["name"] for q in qs] == ["incoming"]
        # applied again at the next start: a deleted queue comes back, the data is kept
        assert api(mgmt, "/api/queues/orders/incoming", "admin", "admin-secret", "DELETE")[0] == 204
        srv.stop()
        srv.start()
        mgmt = int(wait_for(lambda: MGMT_RE.search("".join(srv.lines)), message="management port").group(2))
        status, q = api(mgmt, "/api/queues/orders/incoming", "admin", "admin-secret")
        assert status == 200 and q["durable"] is True
    finally:
        srv.cleanup()


# ------------------------------------------------------------------------------------ broken files

@pytest.mark.parametrize("text,line,reason", [
    ("heartbeat = 30\nheartbeet = 30\n", 2, "unknown setting 'heartbeet' (did you mean 'heartbeat'?)"),
    ("disk_free_limit.absolute = 2 apples\n", 1, "disk_free_limit.absolute: invalid value '2 apples'"),
    ("vm_memory_high_watermark.relative = 2\n", 1, "must be at least 0 and at most 1.0"),
    ("# ok\nlisteners.tcp.default = 99999\n", 2, "listeners.tcp.default: invalid value '99999'"),
    ("auth_backends.1 = ldap\n", 1, "internal user database only"),
    ("ssl_options.certfile = /nonexistent/server.pem\n", 1, "ssl_options.certfile: '/nonexistent/server.pem': "
                                                            "file does not exist or cannot be read"),
    ("mqtt.listeners.tcp.default = 1883\n", 1, "a setting of rabbitmq_mqtt, which Usagi does not have"),
    ("this line is not a setting\n", 1, "expected 'key = value'"),
    # a relative limit so large that bytes = fraction x RAM overflows (was a traceback, exit 1)
    ("disk_free_limit.relative = 1e300\n", 1, "disk_free_limit.relative: invalid value '1e300'"),
    ("disk_free_limit.relative = inf\n", 1, "disk_free_limit.relative: invalid value 'inf'"),
    ("heartbeat = \u0663\n", 1, "heartbeat: invalid value"),
])
def test_a_broken_file_stops_the_start_with_file_line_and_reason(tmp_path, text, line, reason):
    conf = write(tmp_path / "rabbitmq.conf", text)
    r = run_server(["--config", conf, "--data-dir", str(tmp_path / "data")])
    assert r.returncode == 78, r.stdout + r.stderr
    assert r.stderr.startswith(f"usagi-server: error: {conf}:{line}: "), r.stderr
    assert reason in r.stderr
    assert not os.path.exists(tmp_path / "data")          # refused before anything is touched


def test_the_config_file_from_the_environment(tmp_path):
    conf = write(tmp_path / "rabbitmq.conf", "heartbeat = lots\n")
    for var in ("USAGI_CONFIG_FILE", "RABBITMQ_CONFIG_FILE"):
        r = run_server(["--data-dir", str(tmp_path / "data")], env={var: conf})
        assert r.returncode == 78 and f"{conf}:1: heartbeat: invalid value 'lots'" in r.stderr, r.stderr
    # RabbitMQ's variable may leave the extension out
    r = run_server(["--data-dir", str(tmp_path / "data")], env={"RABBITMQ_CONFIG_FILE": conf[:-len(".conf")]})
    assert r.returncode == 78 and f"{conf}:1:" in r.stderr, r.stderr


@pytest.mark.parametrize("defs,reason", [
    ('{"vhosts": [{"name": "/"}], "queues": [{"vhost": "/", "name": "q", "durable": true, '
     '"arguments": {"x-max-length": "ten"}}]}', "x-max-length"),
    ('{"queues": [{"name": "q", "durable": true}]}', "missing the virtual host field"),
    ('{"users": [', "not a valid JSON document"),
    ('{"vhosts": [{"name": "/"}], "permissions": [{"user": "nobody", "vhost": "/", "configure": ".*", '
     '"write": ".*", "read": ".*"}]}', "no_such_user"),
])
def test_a_broken_definitions_file_stops_the_start(tmp_path, defs, reason):
    path = write(tmp_path / "defs.json", defs)
    conf = write(tmp_path / "rabbitmq.conf", f"listeners.tcp.default = 127.0.0.1:0\nmanagement.tcp.port = 0\n"
                                             f"prometheus.tcp.port = 0\nload_definitions = {path}\n")
    r = run_server(["--config", conf, "--data-dir", str(tmp_path / "data")])
    assert r.returncode == 78, r.stdout + r.stderr
    assert f"cannot start: {path}: " in r.stderr and reason in r.stderr, r.stderr
    assert f"(load_definitions at {conf}:4)" in r.stderr


def test_a_definitions_path_that_is_not_a_regular_file_is_refused(tmp_path):
    """A FIFO would hold the start forever waiting for a writer (and /dev/zero would be read until
    memory runs out): refused unread, exit 78."""
    fifo = str(tmp_path / "defs.json")
    os.mkfifo(fifo)
    conf = write(tmp_path / "rabbitmq.conf", f"listeners.tcp.default = 127.0.0.1:0\nmanagement.tcp.port = 0\n"
                                             f"prometheus.tcp.port = 0\nload_definitions = {fifo}\n")
    r = run_server(["--config", conf, "--data-dir", str(tmp_path / "data")], timeout=20)
    assert r.returncode == 78, r.stdout + r.stderr
    assert f"cannot start: {fifo}: not a regular file" in r.stderr, r.stderr


def test_a_definitions_directory_with_one_bad_file_applies_nothing(tmp_path):
    """The files of a directory are applied in one transaction: when the second is refused, what
    the first created is not in the store at the next start."""
    d = tmp_path / "defs"
    d.mkdir()
    write(d / "a.json", '{"vhosts": [{"name": "/"}, {"name": "half"}], "queues": [{"vhost": "half", '
                        '"name": "qa", "durable": true, "auto_delete": false, "arguments": {}}]}')
    write(d / "b.json", '{"queues": [{"vhost": "/", "name": "qb", "durable": true, '
                        '"arguments": {"x-max-length": "x"}}]}')
    conf = write(tmp_path / "rabbitmq.conf", f"listeners.tcp.default = 127.0.0.1:0\nmanagement.tcp.port = 0\n"
                                             f"prometheus.tcp.port = 0\nload_definitions = {d}\n")
    r = run_server(["--config", conf, "--data-dir", str(tmp_path / "data")])
    assert r.returncode == 78 and f"cannot start: {d / 'b.json'}: " in r.stderr, r.stderr
    srv = start(tmp_path, "listeners.tcp.default = 127.0.0.1:0\nmanagement.tcp.port = 0\n"
                          "prometheus.tcp.port = 0\n")
    try:
        assert "recovered 0 queues" in "".join(srv.lines), "".join(srv.lines)
    finally:
        srv.cleanup()


def test_certificates_the_file_names_that_cannot_be_loaded_are_a_config_error(tmp_path):
    """A certificate file that exists but is not a certificate: exit 78 (the unit file does not
    restart), naming the lines of the file that gave it."""
    bad = write(tmp_path / "server.pem", "not a certificate\n")
    conf = write(tmp_path / "rabbitmq.conf", f"listeners.tcp.default = 127.0.0.1:0\nlisteners.ssl.default = "
                                             f"127.0.0.1:0\nssl_options.certfile = {bad}\nssl_options.keyfile = "
                                             f"{bad}\nmanagement.tcp.port = 0\nprometheus.tcp.port = 0\n")
    r = run_server(["--config", conf, "--data-dir", str(tmp_path / "data")])
    assert r.returncode == 78, r.stdout + r.stderr
    assert "cannot load TLS certificate" in r.stderr and f"tls_cert at {conf}:3" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


# ------------------------------------------------------------------------------------ precedence

def test_options_win_over_the_file_and_take_units(tmp_path):
    srv = start(tmp_path, "heartbeat = 20\nchannel_max = 50\nlisteners.tcp.default = 127.0.0.1:0\n"
                          "management.tcp.port = 0\nprometheus.tcp.port = 0\ndisk_free_limit.absolute = 1GB\n",
                "--heartbeat", "7", "--disk-free-limit", "2MiB", env={"USAGI_CHANNEL_MAX": "9"})
    try:
        raw = RawConnection.open_to("127.0.0.1", srv.port)
        assert raw.handshake().name == "connection.open-ok"
        assert (raw.tune["heartbeat"], raw.tune["channel_max"]) == (7, 9)
        raw.close()
        assert "Disk free limit set to 2097152 bytes" in "".join(srv.lines)
    finally:
        srv.cleanup()


def test_no_config_file_is_needed(tmp_path):
    # the README's run command: no file, RabbitMQ's defaults
    srv = ServerProcess(data_dir=str(tmp_path / "data")).start()
    try:
        raw = RawConnection.open_to("127.0.0.1", srv.port)
        assert raw.handshake().name == "connection.open-ok"
        assert (raw.tune["heartbeat"], raw.tune["frame_max"], raw.tune["channel_max"]) == (60, 131072, 2047)
        raw.close()
        assert "configuration file" not in "".join(srv.lines)
    finally:
        srv.cleanup()


# ------------------------------------------------------------------------------------ logs

def test_why_connections_closed_is_logged(tmp_path):
    srv = start(tmp_path, "listeners.tcp.default = 127.0.0.1:0\nlog.connection.level = debug\n",
                "--no-management")
    try:
        lines = lambda: "".join(srv.lines)  # noqa: E731
        # the client drops the socket
        raw = RawConnection.opened("127.0.0.1", srv.port)
        raw.close()
        wait_for(lambda: re.search(r"\[WARNING\] usagi\.connection: closing AMQP connection \(127\.0\.0\.1:\d+ -> "
                                   r"127\.0\.0\.1:\d+, vhost: '/', user: 'guest', duration: '[^']+'\): client "
                                   r"unexpectedly closed TCP connection", lines()), message="abrupt close logged")
        # the client stops sending heartbeats
        raw = RawConnection.open_to("127.0.0.1", srv.port)
        assert raw.handshake(heartbeat=1).name == "connection.open-ok"
        wait_for(lambda: "missed heartbeats from client, timeout: 1s" in lines(), timeout=15,
                 message="heartbeat timeout logged")
        raw.close()
        # the broker closes it for a protocol error: the reply text it sent
        raw = RawConnection.opened("127.0.0.1", srv.port)
        raw.send_method(5, "queue.declare", queue="x")
        wait_for(lambda: "CHANNEL_ERROR - expected 'channel.open'" in lines(), message="server close logged")
        raw.close()
        # a health check (connect, send nothing, go away) is only a debug line
        socket.create_connection(("127.0.0.1", srv.port)).close()
        wait_for(lambda: re.search(r"\[DEBUG\] usagi\.connection: closing AMQP connection \(127\.0\.0\.1:\d+ -> "
                                   r"127\.0\.0\.1:\d+, duration: '\d+ms'\)", lines()), message="health check")
        assert "accepting AMQP connection 127.0.0.1:" in lines()
    finally:
        srv.cleanup()


def test_log_file_rotation_and_reopen(tmp_path):
    log_file = tmp_path / "usagi.log"
    srv = start(tmp_path, f"listeners.tcp.default = 127.0.0.1:0\nmanagement.tcp.port = 0\nprometheus.tcp.port = 0\n"
                          f"log.file = {log_file}\nlog.file.rotation.size = 4000\nlog.file.rotation.count = 2\n")
    try:
        for _ in range(30):         # each connection writes two lines
            c = RawConnection.opened("127.0.0.1", srv.port)
            c.send_method(0, "connection.close", reply_code=200, reply_text="bye", class_id=0, method_id=0)
            c.expect_method("connection.close-ok")
            c.close()
        wait_for(lambda: os.path.exists(f"{log_file}.2"), message="two rotated files")
        assert not os.path.exists(f"{log_file}.3")
        for p in (log_file, f"{log_file}.1", f"{log_file}.2"):
            assert os.path.getsize(p) <= 4000
        # an external tool moves the file away; SIGUSR1 opens a new one
        os.rename(log_file, tmp_path / "moved.log")
        srv.proc.send_signal(signal.SIGUSR1)
        wait_for(lambda: log_file.exists() and "log file reopened" in log_file.read_text(), message="reopened")
    finally:
        srv.cleanup()


def test_alarm_figures_are_logged(tmp_path):
    srv = start(tmp_path, "listeners.tcp.default = 127.0.0.1:0\nmanagement.tcp.port = 0\nprometheus.tcp.port = 0\n"
                          "disk_free_limit.absolute = 1000PB\n")
    try:
        line = wait_for(lambda: re.search(r"Free disk space is insufficient\. Free bytes: (\d+)\. Limit: (\d+)",
                                          "".join(srv.lines)), message="disk alarm")
        assert int(line.group(2)) == 1000 * 10 ** 15 and 0 < int(line.group(1)) < int(line.group(2))
        assert re.search(r"disk resource limit alarm set on node \S+ \(free disk space \d+ bytes, limit "
                         r"1000000000000000000 bytes\)", "".join(srv.lines))
        # publishers are blocked, as with RabbitMQ
        raw = RawConnection.open_to("127.0.0.1", srv.port)
        reply = raw.handshake(client_properties={"capabilities": {"connection.blocked": True}})
        assert reply.name == "connection.open-ok"
        raw.open_channel(1)
        raw.publish(1, "", "nowhere", b"x")          # blocked once it publishes
        blocked = raw.expect_method("connection.blocked")
        assert blocked.args["reason"] == "low on disk"
        raw.close()
    finally:
        srv.cleanup()


def test_systemd_readiness(tmp_path):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(20)
    try:
        srv = start(tmp_path, "listeners.tcp.default = 127.0.0.1:0\nmanagement.tcp.port = 0\n"
                              "prometheus.tcp.port = 0\n", env={"NOTIFY_SOCKET": path})
        try:
            msg = sock.recv(4096).decode()
            assert "READY=1" in msg.splitlines()
            srv.proc.send_signal(signal.SIGTERM)
            assert "STOPPING=1" in sock.recv(4096).decode().splitlines()
            assert srv.proc.wait(20) == 0
        finally:
            srv.cleanup()
    finally:
        sock.close()


# ------------------------------------------------------------------------------------ systemd

UNIT = os.path.join(ROOT, "packaging", "usagi.service")


def test_the_systemd_unit_verifies(tmp_path):
    import shutil
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze is not installed (Debian's systemd package)")
    text = open(UNIT).read()
    for key in ("Type=notify", "User=usagi", "StateDirectory=usagi", "LimitNOFILE=65536", "Restart=on-failure",
                "RestartPreventExitStatus=78", "--config /etc/usagi/rabbitmq.conf"):
        assert key in text, key
    # verify checks that ExecStart's program exists: point it at this interpreter, keep the rest
    m = re.search(r"^ExecStart=(\S+)", text, re.M)
    local = text.replace(f"ExecStart={m.group(1)}", f"ExecStart={sys.executable} -m usagi.cli.server")
    unit = write(tmp_path / "usagi.service", local)
    r = subprocess.run([exe, "verify", unit], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "usagi.service" not in r.stderr, r.stdout + r.stderr
    # and it does fail on a broken unit, so the test can fail
    (tmp_path / "bad").mkdir()
    bad = write(tmp_path / "bad" / "usagi.service", local.replace("LimitNOFILE=65536", "LimitNOFILE=lots"))
    r = subprocess.run([exe, "verify", bad], capture_output=True, text=True, timeout=60)
    assert "usagi.service:" in r.stderr and "lots" in r.stderr, r.stdout + r.stderr


def test_environment_shows_the_default_user_settings_in_force(tmp_path):
    """rabbitmqctl environment's default_user_tags and default_permissions are the configured ones,
    not the built-in defaults."""
    mgmt = free_port()
    srv = start(tmp_path, f"listeners.tcp.default = 127.0.0.1:0\nmanagement.tcp.port = {mgmt}\n"
                          f"prometheus.tcp.port = 0\ndefault_user = boss\ndefault_pass = pw\n"
                          f"default_user_tags.administrator = true\ndefault_user_tags.monitoring = true\n"
                          f"default_permissions.read = ^r$\n")
    try:
        status, env = api(mgmt, "/api/usagi/environment", "boss", "pw")
        assert status == 200, env
        assert sorted(env["rabbit"]["default_user_tags"]) == ["administrator", "monitoring"]
        assert env["rabbit"]["default_permissions"] == [".*", ".*", "^r$"]
    finally:
        srv.cleanup()
