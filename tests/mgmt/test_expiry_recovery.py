"""Recovered messages keep their expiry.

A persistent message on a durable queue with a TTL (x-message-ttl, or its own `expiration`)
expires at its original deadline after a restart - dead-lettered if its queue says so - whether
it was ready or delivered and unacknowledged at the stop; one whose deadline is far off is still
there. A store of format 1 (which did not record deadlines) is migrated when it is opened, and
its entries on TTL queues get their queue's TTL counted from that start.
"""
from __future__ import annotations

import os
import sqlite3
import time

import pika
import pytest

from mgmtutil import wait_until

pytestmark = pytest.mark.timeout(120)


def setup_topology(ch):
    ch.exchange_declare("dlx", "fanout", durable=True)
    ch.queue_declare("dlq", durable=True)
    ch.queue_bind("dlq", "dlx")
    ch.queue_declare("ttlq", durable=True, arguments={"x-message-ttl": 3000, "x-dead-letter-exchange": "dlx"})
    ch.queue_declare("expq", durable=True, arguments={"x-dead-letter-exchange": "dlx"})
    ch.queue_declare("longq", durable=True, arguments={"x-message-ttl": 600_000})
    ch.queue_declare("plainq", durable=True)


def publish(ch, queue, body, **props):
    ch.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2, **props))


def counts(api, *queues):
    return tuple(api.get(f"/api/queues/%2F/{q}").json()["messages"] for q in queues)


def dead_letters(m):
    ch = m.pika().channel()
    out = []
    while True:
        method, props, body = ch.basic_get("dlq", auto_ack=True)
        if method is None:
            return sorted(out)
        death = props.headers["x-death"][0]
        out.append((body, death["queue"], death["reason"]))


def test_ttl_and_expiration_hold_after_a_restart(start_mgmt, tmp_path):
    data = str(tmp_path / "data")
    m = start_mgmt(data_dir=data)
    ch = m.pika().channel()
    ch.confirm_delivery()
    setup_topology(ch)
    publish(ch, "ttlq", b"ttl-ready")
    publish(ch, "ttlq", b"ttl-unacked")
    publish(ch, "expq", b"own-expiration", expiration="3000")
    publish(ch, "expq", b"far-expiration", expiration="600000")
    publish(ch, "longq", b"long-ttl")
    publish(ch, "plainq", b"no-ttl")
    consumer = m.pika().channel()
    method, _, body = consumer.basic_get("ttlq")       # delivered, never acknowledged
    assert body == b"ttl-ready" and method is not None
    published = time.monotonic()
    assert m.server.stop() == 0

    m = start_mgmt(data_dir=data)
    api = m.api
    wait_until(lambda: counts(api, "ttlq", "expq", "dlq") == (0, 1, 3), timeout=30,
               message="the recovered messages to expire and be dead-lettered")
    assert time.monotonic() - published >= 2.5           # not before their deadline
    assert dead_letters(m) == [(b"own-expiration", "expq", "expired"), (b"ttl-ready", "ttlq", "expired"),
                               (b"ttl-unacked", "ttlq", "expired")]
    assert counts(api, "longq", "plainq", "expq") == (1, 1, 1)


def test_a_message_past_its_deadline_at_start_expires_at_once(start_mgmt, tmp_path):
    data = str(tmp_path / "data")
    m = start_mgmt(data_dir=data)
    ch = m.pika().channel()
    ch.confirm_delivery()
    setup_topology(ch)
    publish(ch, "expq", b"short", expiration="1500")     # confirmed: on disk
    m.server.kill()                                      # before it expires
    time.sleep(2)
    m = start_mgmt(data_dir=data)
    wait_until(lambda: counts(m.api, "expq", "dlq") == (0, 1), timeout=20, message="the expiry at start")
    assert dead_letters(m) == [(b"short", "expq", "expired")]


def test_a_format_1_store_is_migrated_and_its_ttl_entries_expire(start_mgmt, tmp_path):
    data = str(tmp_path / "data")
    m = start_mgmt(data_dir=data)
    ch = m.pika().channel()
    ch.confirm_delivery()
    setup_topology(ch)
    publish(ch, "ttlq", b"old-ttl")
    publish(ch, "plainq", b"old-plain")
    assert m.server.stop() == 0
    # make it a file of the previous format: no expires column, user_version 1
    db = sqlite3.connect(os.path.join(data, "usagi.db"))
    db.execute("ALTER TABLE queue_entries DROP COLUMN expires")
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()

    m = start_mgmt(data_dir=data)
    wait_until(lambda: counts(m.api, "ttlq", "dlq") == (0, 1), timeout=30,
               message="the migrated entry to expire by its queue's TTL")
    assert dead_letters(m) == [(b"old-ttl", "ttlq", "expired")]
    assert counts(m.api, "plainq") == (1,)
    assert m.server.stop() == 0
    db = sqlite3.connect(os.path.join(data, "usagi.db"))
    assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    assert "expires" in [r[1] for r in db.execute("PRAGMA table_info(queue_entries)")]
    db.close()
    m = start_mgmt(data_dir=data)              # and it opens again as it is
    assert counts(m.api, "plainq", "ttlq") == (1, 0)


def stream_bodies(ch, name):
    ch.basic_qos(prefetch_count=100)
    got = []
    ch.basic_consume(name, lambda c, m, p, b: got.append(b), arguments={"x-stream-offset": "first"})
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        ch.connection.process_data_events(time_limit=0.1)
    return got


def test_stream_entries_keep_their_age_across_a_restart(start_mgmt, tmp_path):
    """x-max-age counts from when an entry was appended, not from the last start."""
    data = str(tmp_path / "data")
    m = start_mgmt(data_dir=data)
    ch = m.pika().channel()
    ch.confirm_delivery()
    ch.queue_declare("aged", durable=True, arguments={"x-queue-type": "stream", "x-max-age": "2s"})
    publish(ch, "aged", b"old")
    assert m.server.stop() == 0
    time.sleep(2.5)
    m = start_mgmt(data_dir=data)
    ch = m.pika().channel()
    ch.confirm_delivery()
    publish(ch, "aged", b"new")           # an append trims what is past its age
    assert stream_bodies(m.pika().channel(), "aged") == [b"new"]
