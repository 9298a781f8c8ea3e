"""The tasks run by a real worker over a real broker: nothing is mocked, no RabbitMQ needed."""
from __future__ import annotations

import pytest
from celery import chain, group

import tasks

TIMEOUT = 20


def test_add(worker):
    assert tasks.add.delay(2, 3).get(timeout=TIMEOUT) == 5


def test_chain_order_total_then_invoice(worker):
    result = chain(tasks.order_total.s([[2, 250], [1, 1999]]), tasks.send_invoice.s(42).set(queue="invoices"))
    # a chained task receives its parent's result first: send_invoice(total, order_id)
    assert result.apply_async().get(timeout=TIMEOUT) == "invoice for order 2499: 0.42"


def test_routed_to_invoices_queue(worker):
    assert tasks.send_invoice.delay(7, 1050).get(timeout=TIMEOUT) == "invoice for order 7: 10.50"


def test_group(worker):
    results = group(tasks.add.s(i, i) for i in range(10)).apply_async()
    assert results.get(timeout=TIMEOUT) == [2 * i for i in range(10)]


def test_retries_until_the_card_goes_through(worker):
    assert tasks.charge_card.delay("A-1", 2).get(timeout=TIMEOUT) == {"order": "A-1", "attempts": 3}


def test_failure_reaches_the_caller(worker):
    with pytest.raises(ValueError, match="out of stock"):
        tasks.refuse.delay("out of stock").get(timeout=TIMEOUT)


def test_countdown(worker):
    assert tasks.add.apply_async((20, 22), countdown=0.5).get(timeout=TIMEOUT) == 42
