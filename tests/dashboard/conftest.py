"""Fixtures for the web dashboard tests: a fresh Usagi server with its management base URL, a
headless Chromium, and the directory the screenshots go to (dashutil.SHOTS_DIR).

The server comes from tests/conftest.py's `fresh_server`; the management port is read from its
startup log ("Management listener on HOST:PORT"). Statistics are sampled every 200 ms
(USAGI_COLLECT_STATISTICS_INTERVAL) so that message rates show within a second.
"""
from __future__ import annotations

import base64
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import dashutil  # noqa: E402

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

    def pika(self, user="guest", password="guest", name: str | None = None):
        import pika
        params = pika.URLParameters(self.server.url(user=user, password=password))
        params.connection_attempts = 1
        params.socket_timeout = 5
        if name is not None:
            params.client_properties = {"connection_name": name}
        return pika.BlockingConnection(params)


    def user(self, name: str, password: str, tags: str, vhost_perms: tuple | None = (".*", ".*", ".*")):
        """A user made through the API (with permissions in "/" unless vhost_perms is None)."""
        assert self.api("PUT", f"/users/{name}", {"password": password, "tags": tags})[0] in (201, 204)
        if vhost_perms is not None:
            conf, write, read = vhost_perms
            assert self.api("PUT", f"/permissions/%2F/{name}",
                            {"configure": conf, "write": write, "read": read})[0] in (201, 204)


def _dash(server) -> Dash:
    deadline = time.monotonic() + 10
    m = None
    while m is None and time.monotonic() < deadline:
        m = MGMT_RE.search("".join(server.lines))
        if m is None:
            time.sleep(0.05)
    assert m, "the server never logged its management listener:\n" + "".join(server.lines)
    return Dash(server, f"http://{m.group(1)}:{m.group(2)}")


@pytest.fixture
def dash(fresh_server):
    return _dash(fresh_server(env=FAST_STATS))


@pytest.fixture
def start_dash(fresh_server):
    """A server with extra command-line arguments: start_dash(["--vm-memory-high-watermark-absolute", "1"])."""
    return lambda extra_args=None: _dash(fresh_server(env=FAST_STATS, extra_args=extra_args or []))


@pytest.fixture
def browser():
    if not dashutil.AVAILABLE:
        pytest.skip(dashutil.WHY)
    driver = dashutil.new_browser()
    yield driver
    driver.quit()


@pytest.fixture
def shots():
    os.makedirs(dashutil.SHOTS_DIR, exist_ok=True)
    return dashutil.SHOTS_DIR
