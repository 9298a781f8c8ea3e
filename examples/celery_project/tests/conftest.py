"""The tests' broker is Usagi's `usagi_broker` fixture (pytest loads Usagi's plugin by itself once
usagi-mq is installed), where a RabbitMQ server or container used to be; a Celery worker runs in a
thread of the test process and consumes from it."""
from __future__ import annotations

import celery.contrib.testing.tasks  # noqa: F401  (the celery.ping task start_worker checks with)
import pytest
from celery.contrib.testing.worker import start_worker

from tasks import app


@pytest.fixture(scope="session")
def celery_app(usagi_broker):
    with pytest.MonkeyPatch.context() as env:
        # Celery prefers these variables to its configuration: the tests' broker must win
        env.delenv("CELERY_BROKER_URL", raising=False)
        env.delenv("CELERY_RESULT_BACKEND", raising=False)
        # broker_heartbeat=0: the worker thread looks for its stop between two polls of its
        # connection, which last up to 1 s without heartbeat timers and up to 10 s with them
        # (start_worker waits 10 s for it, then fails the test)
        app.conf.update(broker_url=usagi_broker.url, result_backend="rpc://", broker_heartbeat=0)
        yield app


@pytest.fixture(scope="session")
def worker(celery_app):
    with start_worker(celery_app, pool="solo", queues=["celery", "invoices"]) as w:
        yield w
