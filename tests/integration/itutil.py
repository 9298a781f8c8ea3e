"""Helpers for the integration tests (import as `from itutil import ...`)."""
from __future__ import annotations

import os
import sys
import time
import uuid

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)

# Text of RabbitMQ's 405 for an exclusive queue used from another connection (3.10 and 4.x).
EXCLUSIVE_LOCKED = ("RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{q}' in vhost "
                    "'{vhost}'. It could be originally declared on another connection or the "
                    "exclusive property value does not match that of the original declaration.")


def uname(prefix: str = "it") -> str:
    """A name unique to one test, so tests never share queues or exchanges."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def drain(conn, predicate, timeout: float = 5.0, step: float = 0.02):
    """Run a BlockingConnection's I/O loop until predicate() is true (or fail on timeout)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the broker")
        conn.process_data_events(time_limit=step)


def settle(conn, seconds: float = 0.3):
    """Run a BlockingConnection's I/O loop for a while (to see that nothing more arrives)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.05)


def wait_count(ch, queue: str, expected: int, timeout: float = 3.0) -> int:
    """Poll queue.declare(passive) until message_count == expected.

    RabbitMQ answers queue.declare through a different path than the one publishes take, so a
    count read right after basic.publish (without confirms) may not include those messages yet.
    """
    deadline = time.monotonic() + timeout
    while True:
        n = ch.queue_declare(queue, passive=True).method.message_count
        if n == expected or time.monotonic() > deadline:
            assert n == expected, f"queue {queue}: message_count {n}, expected {expected}"
            return n
        time.sleep(0.02)
