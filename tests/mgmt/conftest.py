"""Fixtures for the management API tests: a fresh Usagi server, its HTTP ports, a small HTTP client.

The server comes from tests/conftest.py's `fresh_server`; the management and metrics ports are
read from its startup log ("Management listener on HOST:PORT", "Metrics listener on HOST:PORT").
Statistics are sampled every 200 ms here (USAGI_COLLECT_STATISTICS_INTERVAL) so rates show quickly.
"""
from __future__ import annotations

import os
import sys
import urllib.request

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from mgmtutil import FAST_STATS, METRICS_RE, MGMT_RE, Api, wait_until  # noqa: E402


class Mgmt:
    def __init__(self, server):
        self.server = server
        text = lambda: "".join(server.lines)  # noqa: E731
        m = wait_until(lambda: MGMT_RE.search(text()), 10, message="the management listener log line")
        x = wait_until(lambda: METRICS_RE.search(text()), 10, message="the metrics listener log line")
        self.host, self.port = m.group(1), int(m.group(2))
        self.metrics_port = int(x.group(2))
        self.base = f"http://{self.host}:{self.port}"
        self.metrics_base = f"http://{x.group(1)}:{self.metrics_port}"
        self.api = Api(self.base)

    @property
    def amqp_port(self) -> int:
        return self.server.port

    def url(self, vhost="/", user="guest", password="guest") -> str:
        return self.server.url(user=user, password=password, vhost=vhost)

    def pika(self, vhost="/", user="guest", password="guest", **props):
        import pika
        params = pika.URLParameters(self.url(vhost, user, password))
        params.connection_attempts = 1
        params.socket_timeout = 5
        if props:
            params.client_properties = props
        conn = pika.BlockingConnection(params)
        self._conns.append(conn)
        return conn

    _conns: list

    def metrics(self, path="/metrics") -> str:
        with urllib.request.urlopen(self.metrics_base + path, timeout=10) as r:
            return r.read().decode()

    def close(self):
        for c in self._conns:
            try:
                if c.is_open:
                    c.close()
            except Exception:
                pass


@pytest.fixture
def start_mgmt(fresh_server):
    made = []

    def start(env=None, **kw) -> Mgmt:
        s = fresh_server(env={**FAST_STATS, **(env or {})}, **kw)
        m = Mgmt(s)
        m._conns = []
        made.append(m)
        return m

    yield start
    for m in made:
        m.close()


@pytest.fixture
def mgmt(start_mgmt) -> Mgmt:
    return start_mgmt(extra_args=["--in-memory"])


@pytest.fixture
def api(mgmt) -> Api:
    return mgmt.api
