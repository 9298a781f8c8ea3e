"""What a follower answers over HTTP itself, rather than forwarding it to the leader.

A follower forwards its clients' HTTP connections to the leader, so that the management API is
the cluster's whatever node is asked. Two things must describe the node that is asked, though:

- Prometheus metrics (its metrics port): each node is scraped on its own, as RabbitMQ's nodes
  are; a follower has no broker, and reports its cluster figures (role, epoch, ISR, replication
  lag, leader changes, etcd round trips: mgmt.metrics.cluster_families).
- Health checks (`/api/health/checks/...` on its management port): a load balancer or an
  orchestrator asks each node whether *it* is healthy. The first request line of each connection
  to the management port is read; a health check is answered here (with the same basic
  authentication, against the users this node has replicated), anything else is forwarded. One
  connection is one or the other: a client that sends a health check and then other requests on
  the same keep-alive connection gets them answered here too (404 for the rest).

Bounds: a request line is read up to MAX_LINE bytes (past it the connection is forwarded as it
is) within LINE_TIMEOUT seconds (else the connection is closed); users are read from the node's
replica store, at most once per USERS_TTL seconds per name.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import sqlite3
import time

from aiohttp import web

from ..auth.users import User
from ..mgmt.metrics import CONTENT_TYPE, cluster_families
from ..mgmt.util import is_loopback

log = logging.getLogger("usagi.cluster")

MAX_LINE = 8192
LINE_TIMEOUT = 60.0     # seconds a connection may take to send its first request line
USERS_TTL = 1.0
REALM = 'Basic realm="RabbitMQ Management"'
MGMT_TAGS = ("management", "policymaker", "monitoring", "administrator")


# ---------------------------------------------------------------------------------------- metrics

async def start_metrics(node, host, port: int):
    """The follower's metrics listener (an aiohttp runner, to be cleaned up), or None."""
    async def metrics(request):
        fig = await node.follower_metrics()
        return web.Response(body="".join(cluster_families(fig)).encode(), headers={"Content-Type": CONTENT_TYPE})
    app = web.Application()
    for path in ("/metrics", "/metrics/per-object", "/metrics/detailed"):
        app.router.add_get(path, metrics)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_address=True).start()
    except OSError as e:
        log.error("cluster: the metrics listener could not start on this node: %s", e)
        await runner.cleanup()
        return None
    return runner


# ---------------------------------------------------------------------------------------- health checks

def is_health_check(path: bytes) -> bool:
    return path.startswith(b"/api/health/checks/") or path.startswith(b"/api/healthchecks/")


class Users:
    """The users this node has replicated, read from its own store (at most once per USERS_TTL
    per name): a follower authenticates its health checks as the leader would."""

    def __init__(self, db_path: str):
        self.db_path = db_path
        self.cache: dict = {}

    def _read(self, name: str):
        from ..storage.sqlite import encode_key
        try:
            conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=1.0)
        except sqlite3.Error:
            return None
        try:
            row = conn.execute("SELECT value FROM definitions WHERE kind = 'user' AND key = ?",
                               (encode_key((name,)),)).fetchone()
        except sqlite3.Error:
            row = None
        finally:
            conn.close()
        if row is None:
            return None
        try:
            d = json.loads(row[0])
        except ValueError:
            return None
        kw = {"hashing_algorithm": d["hashing_algorithm"]} if d.get("hashing_algorithm") else {}
        return User(d.get("name", name), d.get("password_hash", ""), list(d.get("tags") or []), **kw)

    async def get(self, name: str):
        now = time.monotonic()
        hit = self.cache.get(name)
        if hit is not None and now - hit[0] < USERS_TTL:
            return hit[1]
        user = await asyncio.get_running_loop().run_in_executor(None, self._read, name)
        if len(self.cache) > 1024:
            self.cache.clear()
        self.cache[name] = (now, user)
        return user


def _error(status: int, error: str, reason: str, headers=None) -> web.Response:
    return web.Response(status=status, body=json.dumps({"error": error, "reason": reason}).encode(),
                        content_type="application/json", headers=headers)


def _answer(body: dict, failed: bool = False) -> web.Response:
    if failed:
        body = dict(body, status="failed")
    return web.Response(status=503 if failed else 200, body=json.dumps(body).encode(), content_type="application/json")


class HealthChecks:
    """RabbitMQ's health checks, answered by a follower for itself."""

    PROTOCOLS = {"amqp": "amqp", "amqp091": "amqp", "amqp0.9.1": "amqp", "amqp0-9-1": "amqp",
                 "http": "http", "management": "http", "prometheus": "http/prometheus",
                 "http/prometheus": "http/prometheus"}

    def __init__(self, node, users: Users, loopback_users=("guest",)):
        self.node = node
        self.users = users
        self.loopback_users = tuple(loopback_users or ())
        self.server = web.Server(self.handle)

    async def _authenticate(self, request):
        header = request.headers.get("Authorization", "")
        if not header.lower().startswith("basic "):
            return _error(401, "", "", {"WWW-Authenticate": REALM})
        try:
            username, _, password = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, ValueError, UnicodeDecodeError):
            return _error(401, "", "", {"WWW-Authenticate": REALM})
        user = await self.users.get(username)
        if user is None or not user.check(password):
            log.warning("HTTP access denied: user '%s' - invalid credentials", username)
            return _error(401, "not_authorized", "Login failed", {"WWW-Authenticate": REALM})
        if username in self.loopback_users and not is_loopback(request.remote or ""):
            return _error(401, "not_authorized", "User can only log in via localhost")
        if not any(t in MGMT_TAGS for t in user.tags):
            return _error(401, "not_authorized", "Not management user")
        return None

    async def handle(self, request) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            return _error(405, "Method Not Allowed", "Method Not Allowed")
        refused = await self._authenticate(request)
        if refused is not None:
            return refused
        parts = [p for p in request.path.split("/") if p]
        if parts[:2] == ["api", "healthchecks"] and parts[2:] == ["node"]:
            return _answer({"status": "ok"})
        if parts[:3] != ["api", "health", "checks"] or len(parts) < 4:
            return _error(404, "Object Not Found", "Not Found")
        check, args = parts[3], parts[4:]
        n = self.node
        if check in ("alarms", "local-alarms", "virtual-hosts", "node-is-mirror-sync-critical") and not args:
            return _answer({"status": "ok"})
        if check == "certificate-expiration" and len(args) == 2:
            return _answer({"status": "ok"})
        if check in ("is-in-service", "ready-to-serve-clients") and not args:
            if n.leader_info is None:
                return _answer({"reason": "no node of the cluster leads at the moment: this node cannot serve "
                                          "clients until one does"}, failed=True)
            return _answer({"status": "ok"})
        if check == "node-is-quorum-critical" and not args:
            critical = await n.quorum_critical()
            if critical:
                return _answer({"reason": critical, "queues": []}, failed=True)
            return _answer({"status": "ok"})
        if check == "port-listener" and len(args) == 1:
            try:
                port = int(args[0])
            except ValueError:
                return _error(400, "bad_request", f"Invalid port: {args[0]}")
            ports = sorted({p for _proto, p in n.follower_listeners()})
            if port in ports:
                return _answer({"status": "ok", "port": port})
            return _answer({"reason": "No active listener", "missing": port, "ports": ports}, failed=True)
        if check == "protocol-listener" and len(args) == 1:
            want = args[0].lower()
            protocols = sorted({proto for proto, _p in n.follower_listeners()})
            if self.PROTOCOLS.get(want, want) in protocols:
                return _answer({"status": "ok", "protocol": args[0]})
            return _answer({"reason": "No active listener", "missing": args[0], "protocols": protocols}, failed=True)
        return _error(404, "Object Not Found", "Not Found")


class Sniffer(asyncio.Protocol):
    """A connection to a follower's management port: its first request line decides whether the
    health checks answer it here or it is forwarded to the leader (`forward()` gives the
    forwarding protocol)."""

    def __init__(self, forward, checks: HealthChecks):
        self.forward = forward
        self.checks = checks
        self.transport = None
        self.buf = b""
        self.timer = None

    def connection_made(self, transport):
        self.transport = transport
        self.timer = asyncio.get_running_loop().call_later(LINE_TIMEOUT, transport.close)

    def data_received(self, data):
        self.buf += data
        if b"\r\n" not in self.buf and len(self.buf) < MAX_LINE:
            return
        self.timer.cancel()
        line = self.buf.split(b"\r\n", 1)[0]
        parts = line.split(b" ")
        path = parts[1] if len(parts) >= 2 else b""
        proto = self.checks.server() if is_health_check(path) else self.forward()
        self.transport.set_protocol(proto)
        proto.connection_made(self.transport)
        buf, self.buf = self.buf, b""
        proto.data_received(buf)

    def eof_received(self):
        return False

    def connection_lost(self, exc):
        self.buf = b""
        if self.timer is not None:
            self.timer.cancel()
