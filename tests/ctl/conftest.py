"""Fixtures for usagictl tests.

usagictl is run as a subprocess (`python -m usagi.cli.ctl ...`) against a management API:

* USAGI_TEST_MGMT_URL set (e.g. http://guest:guest@127.0.0.1:15682): that API, for instance
  RabbitMQ's, which makes these differential tests of the client side. AMQP traffic for the
  tests then goes to USAGI_TEST_BROKER_URL (tests that need it skip without it).
* Otherwise a fresh Usagi server from tests/conftest.py's fresh_server() factory; the tests
  skip if that server never logs "Management listener on HOST:PORT".

Everything a test creates has a unique name (ctl-xxxxxxxx) and is deleted afterwards, so the
tests can share a broker with other suites.
"""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ctlutil import Mgmt, _wait_for_mgmt  # noqa: E402


@pytest.fixture
def mgmt(request) -> Mgmt:
    url = os.environ.get("USAGI_TEST_MGMT_URL")
    if url:
        m = Mgmt(url=url, amqp_url=os.environ.get("USAGI_TEST_BROKER_URL") or None)
    else:
        fresh_server = request.getfixturevalue("fresh_server")
        server = fresh_server()
        where = _wait_for_mgmt(server)
        if where is None:
            pytest.skip("Usagi has no management API yet: the server never logged "
                        "'Management listener on HOST:PORT' (set USAGI_TEST_MGMT_URL to test "
                        "against another broker's management API)")
        host, port = where
        h = f"[{host}]" if ":" in host else host
        m = Mgmt(url=f"http://guest:guest@{h}:{port}", amqp_url=server.url(), server=server)
    yield m
    for method, path in reversed(m.cleanups):
        try:
            m.api(method, path)
        except Exception:
            pass


@pytest.fixture
def mgmt_url(mgmt) -> str:
    return mgmt.url
