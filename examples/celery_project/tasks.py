"""A small Celery application, of the kind whose tests used to need a RabbitMQ server.

In production Celery takes the broker from CELERY_BROKER_URL (else a RabbitMQ on localhost); the
tests (tests/) give it Usagi's usagi_broker fixture instead. Results travel back over AMQP too
(the rpc:// result backend), so the broker is all the tests need.
"""
from __future__ import annotations

from celery import Celery

app = Celery("tasks", backend="rpc://")
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_routes={"tasks.send_invoice": {"queue": "invoices"}},
)


@app.task
def add(x, y):
    return x + y


@app.task
def order_total(lines):
    """The total of an order's lines, [[quantity, unit price in cents], ...], in cents."""
    return sum(quantity * price for quantity, price in lines)


@app.task
def send_invoice(order_id, total):
    """Runs on the `invoices` queue (task_routes)."""
    return f"invoice for order {order_id}: {total / 100:.2f}"


@app.task(bind=True, max_retries=5)
def charge_card(self, order_id, declines):
    """The card is declined `declines` times before it goes through: each decline retries the task."""
    if self.request.retries < declines:
        raise self.retry(countdown=0)
    return {"order": order_id, "attempts": self.request.retries + 1}


@app.task
def refuse(reason):
    raise ValueError(reason)
