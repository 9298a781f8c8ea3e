"""A Celery app for tests/integration/test_celery.py: a retry-via-DLX topology and an rpc:// backend.

The worker runs as `celery -A celery_app worker --pool=solo -c 1 -Q <work>,<work2>` with this
directory on PYTHONPATH and the broker and queue names in the environment (USAGI_CELERY_BROKER,
USAGI_CELERY_PREFIX); the test process calls make_app() with the same values, so both sides
declare the queues with the same arguments.

Topology (prefix P):

    P.work   --basic.reject(requeue=False)--> exchange P.dlx (direct) --"P.retry"--> P.retry
    P.retry  (x-message-ttl) --expired--> default exchange --"P.work"--> P.work
    P.work2  --basic.reject(requeue=False)--> exchange P.dlx --"P.parked"--> P.parked

The test declares P.dlx, P.retry and P.parked itself (declare_topology); the worker and the
client declare P.work and P.work2 (task_queues). Tasks count their attempts from the x-death header the broker adds on each dead-lettering.
"""
from __future__ import annotations

import os
import time

from celery import Celery
from celery.exceptions import Reject
from kombu import Exchange, Queue

RETRY_TTL_MS = 300


def names(prefix: str) -> dict:
    return {"work": f"{prefix}.work", "retry": f"{prefix}.retry", "dlx": f"{prefix}.dlx",
            "work2": f"{prefix}.work2", "parked": f"{prefix}.parked"}


def work_queue_arguments(prefix: str) -> dict:
    n = names(prefix)
    return {"x-dead-letter-exchange": n["dlx"], "x-dead-letter-routing-key": n["retry"]}


def work2_queue_arguments(prefix: str) -> dict:
    n = names(prefix)
    return {"x-dead-letter-exchange": n["dlx"], "x-dead-letter-routing-key": n["parked"]}


def retry_queue_arguments(prefix: str) -> dict:
    n = names(prefix)
    return {"x-message-ttl": RETRY_TTL_MS, "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": n["work"]}


def deaths_summary(request) -> list:
    """The task message's x-death header as [(queue, reason, count)], most recent first."""
    deaths = request.get("x-death") or []
    out = []
    for d in deaths:
        q, r, c = d.get("queue"), d.get("reason"), d.get("count")
        out.append([q.decode() if isinstance(q, bytes) else q,
                    r.decode() if isinstance(r, bytes) else r, c])
    return out


def attempt_number(request, work_queue: str) -> int:
    for q, reason, count in deaths_summary(request):
        if q == work_queue and reason == "rejected":
            return count + 1
    return 1


def declare_topology(channel, prefix: str):
    """Declare the DLX, the retry queue and the parking queue with a pika channel."""
    n = names(prefix)
    channel.exchange_declare(n["dlx"], "direct")
    channel.queue_declare(n["retry"], arguments=retry_queue_arguments(prefix))
    channel.queue_bind(n["retry"], n["dlx"], n["retry"])
    channel.queue_declare(n["parked"])
    channel.queue_bind(n["parked"], n["dlx"], n["parked"])


def make_app(broker_url: str, prefix: str) -> Celery:
    n = names(prefix)
    app = Celery(f"usagi-{prefix}", broker=broker_url, backend="rpc://")
    nameless = Exchange("")
    app.conf.update(
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=3,
        task_default_queue=n["work"],
        task_queues=[
            Queue(n["work"], nameless, routing_key=n["work"], durable=False,
                  queue_arguments=work_queue_arguments(prefix)),
            Queue(n["work2"], nameless, routing_key=n["work2"], durable=False,
                  queue_arguments=work2_queue_arguments(prefix)),
        ],
        task_routes={f"{prefix}.failing": {"queue": n["work2"], "routing_key": n["work2"]}},
        result_expires=60,
        worker_prefetch_multiplier=4,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
    )

    @app.task(name=f"{prefix}.add")
    def add(x, y):
        return x + y

    @app.task(name=f"{prefix}.flaky", bind=True, acks_late=True, reject_on_worker_lost=True)
    def flaky(self, succeed_on: int):
        """Rejects its message (requeue=False) until the succeed_on-th attempt."""
        attempt = attempt_number(self.request, n["work"])
        if attempt < succeed_on:
            raise Reject(f"attempt {attempt} of {succeed_on}", requeue=False)
        return {"attempt": attempt, "deaths": deaths_summary(self.request),
                "redelivered": bool((self.request.delivery_info or {}).get("redelivered"))}

    @app.task(name=f"{prefix}.failing", bind=True, acks_late=True,
              acks_on_failure_or_timeout=False, ignore_result=True)
    def failing(self, tag: str):
        """Raises: with acks_late and acks_on_failure_or_timeout=False Celery rejects the message."""
        raise RuntimeError(f"failing task {tag}")

    @app.task(name=f"{prefix}.slow", bind=True, acks_late=True)
    def slow(self, seconds: float):
        """Sleeps on its first delivery (so a test can kill the worker meanwhile), not on a redelivery."""
        redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
        if not redelivered:
            time.sleep(seconds)
        return {"redelivered": redelivered}

    app.tasks_by_role = {"add": add, "flaky": flaky, "failing": failing, "slow": slow}
    return app


if os.environ.get("USAGI_CELERY_PREFIX"):
    app = make_app(os.environ["USAGI_CELERY_BROKER"], os.environ["USAGI_CELERY_PREFIX"])
