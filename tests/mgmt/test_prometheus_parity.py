"""Usagi's Prometheus endpoints beside a RabbitMQ node's (rabbitmq_prometheus): after the same
traffic on both, every RabbitMQ family (but the Erlang runtime's erlang_*) is there with the same
type, help text and label names, and the figures of the queues the test made are the same.

RabbitMQ's endpoint is USAGI_TEST_PROMETHEUS_URL (default http://127.0.0.1:15692, the node of
/tmp/rmq/README), its AMQP port USAGI_TEST_BROKER_URL (default amqp://guest:guest@127.0.0.1:5682/%2F);
the test is skipped when they cannot be reached. The node may be RabbitMQ 3.10, whose texts and
labels differ from 4.0's (Usagi's) in the few places listed below with the reason."""
from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
import uuid

import pika
import pytest

from mgmtutil import wait_until
from support.promql import parse_exposition

PROM_URL = os.environ.get("USAGI_TEST_PROMETHEUS_URL", "http://127.0.0.1:15692")
AMQP_URL = os.environ.get("USAGI_TEST_BROKER_URL", "amqp://guest:guest@127.0.0.1:5682/%2F")

# RabbitMQ 3.10 help texts that 4.0 changed (Usagi has 4.0's)
HELP_4_0 = {
    "auth_attempts_total": "Total number of authentication attempts",
    "auth_attempts_detailed_total": "Total number of authentication attempts with source info",
    "auth_attempts_detailed_succeeded_total": "Total number of successful authentication attempts with source info",
    "auth_attempts_detailed_failed_total": "Total number of failed authentication attempts with source info",
    "channel_prefetch": "Deprecated and will be removed in a future version",
    "queue_messages_published_total":
        "Total number of messages published into a queue through an exchange on a channel",
}
# label names that differ, and why
LABELS_ADDED = {
    "rabbitmq_identity_info": {"rabbitmq_endpoint"},          # RabbitMQ 4.1: which endpoint answered
    "rabbitmq_build_info": {"product_name", "product_version"},  # 4.x, when a product is named
}
# counted per channel (and vhost) in Usagi, per channel and queue or exchange in RabbitMQ
PER_CHANNEL = {"channel_messages_published_total", "channel_messages_confirmed_total",
               "channel_messages_unroutable_returned_total", "channel_messages_unroutable_dropped_total",
               "channel_get_ack_total", "channel_get_total", "channel_messages_delivered_ack_total",
               "channel_messages_delivered_total", "channel_messages_redelivered_total",
               "channel_messages_acked_total", "channel_get_empty_total", "queue_messages_published_total"}
DETAILED_FAMILIES = ("connection_churn_metrics", "node_coarse_metrics", "node_metrics", "node_persister_metrics",
                     "ra_metrics", "auth_attempt_metrics", "auth_attempt_detailed_metrics", "queue_coarse_metrics",
                     "queue_consumer_count", "queue_metrics", "channel_metrics", "channel_exchange_metrics",
                     "channel_process_metrics", "channel_queue_metrics", "connection_coarse_metrics",
                     "connection_metrics", "channel_queue_exchange_metrics", "vhost_status", "exchange_bindings",
                     "exchange_names")
ENDPOINTS = ("/metrics", "/metrics/per-object", "/metrics/detailed?" + "&".join(
    f"family={f}" for f in DETAILED_FAMILIES))


def fetch(base: str, path: str) -> str:
    with urllib.request.urlopen(base + path, timeout=30) as r:
        return r.read().decode()


@pytest.fixture
def rabbit():
    try:
        fetch(PROM_URL, "/metrics/detailed")
        conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    except (OSError, urllib.error.URLError, pika.exceptions.AMQPError):
        pytest.skip(f"no RabbitMQ at {PROM_URL} / {AMQP_URL}")
    yield conn
    if conn.is_open:
        conn.close()


def traffic(conn, tag: str) -> list:
    """The same on both brokers: a classic and a quorum queue, persistent and transient
    messages, a consumer with manual acks holding some, basic.get, an unroutable publish."""
    ch = conn.channel()
    ch.confirm_delivery()
    names = [f"{tag}.c", f"{tag}.q"]
    ch.queue_declare(names[0], durable=True)
    ch.queue_declare(names[1], durable=True, arguments={"x-queue-type": "quorum"})
    for i in range(6):
        ch.basic_publish("", names[0], b"a" * (100 + i), pika.BasicProperties(delivery_mode=2))
        ch.basic_publish("", names[1], b"b" * 50)
    ch.basic_publish("", names[0], b"transient")
    ch.basic_publish("", f"{tag}.nowhere", b"dropped")
    m, _p, _b = ch.basic_get(names[0], auto_ack=False)
    ch.basic_ack(m.delivery_tag)
    c2 = conn.channel()
    c2.basic_qos(prefetch_count=2)
    c2.basic_consume(names[1], lambda c, m, p, b: None)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        conn.process_data_events(0.1)
    return names


def families(text: str) -> dict:
    """{family: (type, help, {label-name sets of its samples})}."""
    fams, samples = parse_exposition(text)
    labels: dict = {}
    for lab, _v in samples:
        name = lab["__name__"]
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and name[:-len(suffix)] in fams:
                name = name[:-len(suffix)]
        labels.setdefault(name, set()).add(frozenset(k for k in lab if k not in ("__name__", "le", "quantile")))
    return {n: (t, h, labels.get(n, set())) for n, (t, h) in fams.items()}


def queue_values(text: str, queues) -> dict:
    _f, samples = parse_exposition(text)
    out = {}
    for lab, v in samples:
        if lab.get("queue") in queues and "channel" not in lab and lab["__name__"] in (
                "rabbitmq_queue_messages_ready", "rabbitmq_queue_messages_unacked", "rabbitmq_queue_messages",
                "rabbitmq_queue_consumers", "rabbitmq_queue_messages_ready_bytes",
                "rabbitmq_queue_messages_unacked_bytes", "rabbitmq_queue_messages_bytes"):
            out[(lab["__name__"], lab["queue"])] = v
    return out


def _short(name: str) -> str:
    for p in ("rabbitmq_detailed_", "rabbitmq_cluster_", "rabbitmq_"):
        if name.startswith(p):
            return name[len(p):]
    return name


def test_families_types_help_and_labels_match_rabbitmq(rabbit, mgmt):
    tag = f"prom-parity-{uuid.uuid4().hex[:8]}"
    usagi_conn = mgmt.pika()
    queues = traffic(usagi_conn, tag)
    try:
        traffic(rabbit, tag)
        problems = []
        for path in ENDPOINTS:
            theirs = families(fetch(PROM_URL, path))
            ours = families(mgmt.metrics(path))
            for name, (kind, help_, labels) in sorted(theirs.items()):
                if name.startswith("erlang_"):
                    continue            # the Erlang runtime's own
                if name not in ours:
                    problems.append(f"{path}: no {name}")
                    continue
                okind, ohelp, olabels = ours[name]
                if okind != kind:
                    problems.append(f"{path}: {name} is {okind}, RabbitMQ's {kind}")
                if ohelp != help_ and ohelp != HELP_4_0.get(_short(name)):
                    problems.append(f"{path}: {name} help {ohelp!r}, RabbitMQ's {help_!r}")
                if not labels or not olabels:
                    continue
                added = LABELS_ADDED.get(name, set())
                expected = {frozenset(s | added) for s in labels}
                if _short(name) in PER_CHANNEL:
                    assert all(s <= frozenset({"channel", "vhost", "queue_vhost", "queue"}) for s in olabels), \
                        (name, olabels)
                    continue
                if olabels - expected:
                    problems.append(f"{path}: {name} labels {sorted(map(sorted, olabels))}, RabbitMQ's "
                                    f"{sorted(map(sorted, labels))}")
        assert not problems, "\n".join(problems)

        # the figures of the queues made here, once RabbitMQ's statistics have caught up
        ours = queue_values(mgmt.metrics("/metrics/per-object"), queues)
        assert ours[("rabbitmq_queue_messages", queues[0])] == 6
        assert ours[("rabbitmq_queue_messages_ready_bytes", queues[0])] == sum(100 + i for i in range(1, 6)) + 9
        wait_until(lambda: queue_values(fetch(PROM_URL, "/metrics/per-object"), queues) == ours, 20,
                   message=f"RabbitMQ's per-queue figures to be {ours}")
    finally:
        for conn in (usagi_conn, rabbit):
            if conn.is_open:
                ch = conn.channel()
                for q in queues:
                    ch.queue_delete(q)
