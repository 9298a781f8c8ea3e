"""Fixtures shared by the integration tests (real client libraries against a live broker).

The session fixture `broker` comes from tests/conftest.py: a fresh Usagi server, or the broker
named by USAGI_TEST_BROKER_URL (differential mode, e.g. RabbitMQ on amqp://...:5682/%2F).
"""
from __future__ import annotations

import os
import sys

import pytest

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)

import rawamqp  # noqa: E402  (tests/rawamqp.py)

from itutil import uname  # noqa: E402


@pytest.fixture
def names():
    return uname


@pytest.fixture
def vhost(broker) -> str:
    return broker.vhost


@pytest.fixture
def pika_params(broker):
    import pika
    params = pika.URLParameters(broker.url)
    params.connection_attempts = 1
    params.socket_timeout = 5
    params.blocked_connection_timeout = 10
    return params


@pytest.fixture
def pika_connect(pika_params):
    """Factory for pika BlockingConnections; every connection made is closed at teardown."""
    import pika
    made = []

    def connect(**overrides):
        params = pika_params
        if overrides:
            params = pika.ConnectionParameters(
                host=pika_params.host, port=pika_params.port,
                virtual_host=pika_params.virtual_host, credentials=pika_params.credentials,
                connection_attempts=1, socket_timeout=5, **overrides)
        conn = pika.BlockingConnection(params)
        made.append(conn)
        return conn

    yield connect
    for conn in made:
        try:
            if conn.is_open:
                conn.close()
        except Exception:
            pass


@pytest.fixture
def conn(pika_connect):
    return pika_connect()


@pytest.fixture
def ch(conn):
    return conn.channel()


@pytest.fixture
def raw(broker):
    """Factory for raw wire-level connections (tests/rawamqp.py), closed at teardown."""
    made = []

    def open_(handshake: bool = True, **kw) -> rawamqp.RawConnection:
        if handshake:
            c = rawamqp.RawConnection.opened(broker.host, broker.port, vhost=broker.vhost, **kw)
        else:
            c = rawamqp.RawConnection.connect(broker.host, broker.port)
        made.append(c)
        return c

    yield open_
    for c in made:
        c.close()
