"""pytest plugin: the fixture `usagi_broker`, a running Usagi broker in place of a RabbitMQ server.

pytest loads it by itself wherever Usagi is installed (the `pytest11` entry point named `usagi`;
`-p no:usagi` turns it off). A test, or a fixture of the project's, asks for the broker by name:

    def test_roundtrip(usagi_broker):
        with kombu.Connection(usagi_broker.url) as conn:     # amqp://guest:guest@127.0.0.1:PORT/%2F
            ...
        usagi_broker.management_url                           # http://guest:guest@127.0.0.1:PORT

The broker is a usagi.testing.UsagiBroker: in memory, on free ports, started in milliseconds. By
default one broker serves the whole test run (each pytest-xdist worker has its own), so tests should
use names of their own; `--usagi-scope=function` (or `usagi_scope = function` in the ini file)
gives every test a fresh, empty broker instead. The settings (command line, else ini file):

    --usagi-scope / usagi_scope      session (default), package, module, class or function
    --usagi-mode / usagi_mode        thread (default): in this process; process: a child process
    usagi_management                 true (default) or false: without the management API
    usagi_args                       further usagi-server options, e.g. --heartbeat 0

A test that needs a broker of its own in a run that shares one starts it with
usagi.testing.start_broker(). Until a test asks for `usagi_broker`, the plugin costs nothing.
"""
from __future__ import annotations

import pytest

from . import MODES

SCOPES = ("session", "package", "module", "class", "function")


def pytest_addoption(parser):
    group = parser.getgroup("usagi", "Usagi broker (the usagi_broker fixture)")
    group.addoption("--usagi-scope", choices=SCOPES, default=None,
                    help="how long a usagi_broker lives: session (one for the whole run, the default) "
                         "... function (a fresh broker for every test)")
    group.addoption("--usagi-mode", choices=MODES, default=None,
                    help="run usagi_broker in a thread of the test process (the default) or as a child process")
    parser.addini("usagi_scope", "how long a usagi_broker lives: session, package, module, class or "
                  "function", default="session")
    parser.addini("usagi_mode", "usagi_broker runs in a thread (the default) or a process", default="thread")
    parser.addini("usagi_management", "usagi_broker serves the management API (default true)",
                  type="bool", default=True)
    parser.addini("usagi_args", "further usagi-server options for usagi_broker", type="args", default=[])


def _setting(config, name: str, allowed: tuple) -> str:
    value = config.getoption(f"usagi_{name}") or config.getini(f"usagi_{name}")
    value = (value or allowed[0]).strip()
    if value not in allowed:
        raise pytest.UsageError(f"usagi_{name} must be one of {', '.join(allowed)}, not {value!r}")
    return value


def _scope(fixture_name: str, config) -> str:
    return _setting(config, "scope", SCOPES)


@pytest.fixture(scope=_scope)
def usagi_broker(request):
    """A running Usagi broker: `.url` (AMQP), `.management_url` (HTTP API, or None), `.port`,
    `.management_port`; its lifetime is set by --usagi-scope / usagi_scope (session by default)."""
    from . import start_broker
    config = request.config
    broker = start_broker(_setting(config, "mode", MODES), management=config.getini("usagi_management"),
                          args=config.getini("usagi_args"))
    try:
        yield broker
    finally:
        broker.stop()
