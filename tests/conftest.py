"""Shared fixtures: a real Usagi server process, or another broker in differential mode.

Set USAGI_TEST_BROKER_URL (for example amqp://guest:guest@127.0.0.1:5682/%2F) to run the
integration tests against another broker, such as RabbitMQ, instead of a fresh Usagi.
"""
from __future__ import annotations

import os
import sys
import urllib.parse

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from support.harness import (ROOT, Broker, ServerProcess, external_broker_url,  # noqa: E402,F401
                             wait_for)


@pytest.fixture(scope="session")
def broker():
    url = external_broker_url()
    if url:
        p = urllib.parse.urlparse(url)
        vhost = urllib.parse.unquote(p.path[1:]) if len(p.path) > 1 else "/"
        yield Broker(host=p.hostname or "127.0.0.1", port=p.port or 5672, url=url, vhost=vhost)
        return
    server = ServerProcess().start()
    b = Broker(host=server.host, port=server.port, url=server.url(), process=server.proc,
               data_dir=server.data_dir, log_lines=server.lines)
    yield b
    server.cleanup()


@pytest.fixture
def fresh_server():
    """A Usagi server of the test's own (for restarts, kills, odd settings). Skipped in differential mode."""
    if external_broker_url():
        pytest.skip("needs a Usagi server of its own")
    servers = []

    def make(**kw) -> ServerProcess:
        s = ServerProcess(**kw).start()
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.cleanup()


HEAVY_DIRS = (f"{os.sep}tests{os.sep}cluster{os.sep}", f"{os.sep}tests{os.sep}abuse{os.sep}")


@pytest.fixture(autouse=True)
def _heavy_tests_one_at_a_time(request):
    """The cluster tests (many processes each) and the abuse tests (which bound a bystander's
    latency) never run beside each other on pytest-xdist's workers: a fault run would otherwise be
    what an abuse test measures. They take turns on a lock file of this test run."""
    path = str(request.node.fspath)
    workerinput = getattr(request.config, "workerinput", None)
    if workerinput is None or not any(d in path for d in HEAVY_DIRS):
        yield
        return
    import fcntl
    import tempfile
    lock = os.path.join(tempfile.gettempdir(), f"usagi-tests-heavy-{workerinput['testrunuid']}.lock")
    with open(lock, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
