"""Fixtures for the web dashboard tests: a fresh Usagi server with its management base URL.

The server comes from tests/conftest.py's `fresh_server`; the management port is read from its
startup log ("Management listener on HOST:PORT"). Statistics are sampled every 200 ms
(USAGI_COLLECT_STATISTICS_INTERVAL) so that message rates show within a second.
"""
from __future__ import annotations

import base64
import json
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

import pytest

MGMT_RE = re.compile(r"Management listener on (\S+):(\d+)")
FAST_STATS = {"USAGI_COLLECT_STATISTICS_INTERVAL": "200"}


@dataclass
class Dash:
    server: object
    base: str           # http://HOST:PORT of the management listener

    @property
    def amqp_url(self) -> str:
        return self.server.url()

    def api(self, method: str, path: str, body=None, user="guest", password="guest"):
        """(status, parsed JSON or None) of one management API call."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + "/api" + path, data=data, method=method)
        if user is not None:
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            req.add_header("Authorization", "Basic " + token)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                raw, status = r.read(), r.status
        except urllib.error.HTTPError as e:
            raw, status = e.read(), e.code
        return status, (json.loads(raw) if raw else None)

    def pika(self):
        import pika
        params = pika.URLParameters(self.amqp_url)
        params.connection_attempts = 1
        params.socket_timeout = 5
        return pika.BlockingConnection(params)


@pytest.fixture
def dash(fresh_server):
    server = fresh_server(env=FAST_STATS)
    deadline = time.monotonic() + 10
    m = None
    while m is None and time.monotonic() < deadline:
        m = MGMT_RE.search("".join(server.lines))
        if m is None:
            time.sleep(0.05)
    assert m, "the server never logged its management listener:\n" + "".join(server.lines)
    return Dash(server, f"http://{m.group(1)}:{m.group(2)}")
