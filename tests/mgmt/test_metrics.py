"""Prometheus metrics with rabbitmq_prometheus's names, read as a Prometheus scraper reads them."""
from __future__ import annotations

import re
import urllib.request

from mgmtutil import wait_until

_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> dict:
    """{(name, frozenset(labels)): value}, checking every line is valid exposition format."""
    out = {}
    types = {}
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert kind in ("counter", "gauge", "untyped", "summary", "histogram"), line
            types[name] = kind
            continue
        if line.startswith("# HELP "):
            continue
        m = _LINE.match(line)
        assert m, f"bad exposition line: {line!r}"
        name, labels, value = m.groups()
        family = name
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and types.get(name[:-len(suffix)]) in ("histogram", "summary"):
                family = name[:-len(suffix)]
        assert family in types, f"sample before its TYPE line: {line!r}"
        lab = frozenset(_LABEL.findall(labels or ""))
        out[(name, lab)] = float(value)
    try:   # the reference parser, when it is installed, must agree
        from prometheus_client.parser import text_string_to_metric_families
        assert list(text_string_to_metric_families(text))
    except ImportError:
        pass
    return out


def value(samples: dict, name: str, **labels):
    return samples[(name, frozenset(labels.items()))]


def test_core_families(api, mgmt):
    with urllib.request.urlopen(mgmt.metrics_base + "/metrics", timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    conn = mgmt.pika()
    ch = conn.channel()
    ch.queue_declare("m1")
    ch.queue_declare("m2")
    for _ in range(3):
        ch.basic_publish("", "m1", b"abc")
    ch.basic_publish("", "nowhere", b"lost")
    got = []
    ch2 = conn.channel()
    ch2.basic_qos(prefetch_count=1)
    ch2.basic_consume("m2", lambda c, m, p, b: got.append(m.delivery_tag))
    ch.basic_publish("", "m2", b"x")
    wait_until(lambda: (conn.process_data_events(0.05), got)[1], 5)

    s = wait_until(lambda: (lambda s: s if value(s, "rabbitmq_queue_messages_ready") == 3 else None)(
        parse(mgmt.metrics())), 5)
    assert value(s, "rabbitmq_connections") == 1
    assert value(s, "rabbitmq_channels") == 2
    assert value(s, "rabbitmq_consumers") == 1
    assert value(s, "rabbitmq_queues") == 2
    assert value(s, "rabbitmq_queue_messages_unacked") == 1
    assert value(s, "rabbitmq_queue_messages") == 4
    assert value(s, "rabbitmq_queue_messages_ready_bytes") == 9
    assert value(s, "rabbitmq_global_messages_received_total", protocol="amqp091") == 5
    assert value(s, "rabbitmq_global_messages_routed_total", protocol="amqp091") == 4
    assert value(s, "rabbitmq_global_messages_unroutable_dropped_total", protocol="amqp091") == 1
    classic = {"protocol": "amqp091", "queue_type": "rabbit_classic_queue"}
    assert value(s, "rabbitmq_global_messages_delivered_total", **classic) == 1
    assert value(s, "rabbitmq_global_messages_acknowledged_total", **classic) == 0
    assert value(s, "rabbitmq_process_resident_memory_bytes") > 1_000_000
    assert value(s, "rabbitmq_process_open_fds") > 0
    assert value(s, "rabbitmq_disk_space_available_bytes") > 0
    ident = [k for k in s if k[0] == "rabbitmq_identity_info"]
    assert ident and dict(ident[0][1])["rabbitmq_node"] == api.get("/api/overview").json()["node"]
    assert any(k[0] == "rabbitmq_build_info" for k in s)

    ch2.basic_ack(got[0])
    s = wait_until(lambda: (lambda s: s if value(
        s, "rabbitmq_global_messages_acknowledged_total", **classic) == 1 else None)(
        parse(mgmt.metrics())), 5)
    assert value(s, "rabbitmq_queue_messages_unacked") == 0


def test_per_queue_metrics(api, mgmt):
    api.ok("PUT", "/api/vhosts/other")
    api.ok("PUT", "/api/permissions/other/guest", {"configure": ".*", "write": ".*", "read": ".*"})
    api.ok("PUT", "/api/queues/%2F/a")
    api.ok("PUT", "/api/queues/other/b")
    pub = {"properties": {}, "routing_key": "a", "payload": "12345", "payload_encoding": "string"}
    api.ok("POST", "/api/exchanges/%2F/amq.default/publish", pub)
    api.ok("POST", "/api/exchanges/%2F/amq.default/publish", pub)
    api.ok("POST", "/api/exchanges/other/amq.default/publish", dict(pub, routing_key="b"))

    s = parse(mgmt.metrics("/metrics/detailed?family=queue_coarse_metrics&family=queue_consumer_count"))
    assert value(s, "rabbitmq_detailed_queue_messages_ready", vhost="/", queue="a") == 2
    assert value(s, "rabbitmq_detailed_queue_messages", vhost="other", queue="b") == 1
    assert value(s, "rabbitmq_detailed_queue_consumers", vhost="/", queue="a") == 0
    assert not any(k[0] == "rabbitmq_connections" for k in s)

    s = parse(mgmt.metrics("/metrics/detailed?family=queue_metrics,vhost_status,exchange_names&vhost=other"))
    assert value(s, "rabbitmq_detailed_queue_messages_ready_bytes", vhost="other", queue="b") == 5
    assert ("rabbitmq_detailed_queue_messages_ready_bytes", frozenset({("vhost", "/"), ("queue", "a")})) not in s
    assert value(s, "rabbitmq_cluster_vhost_status", vhost="other") == 1
    assert value(s, "rabbitmq_cluster_exchange_name", vhost="other", exchange="amq.topic", type="topic") == 1

    s = parse(mgmt.metrics("/metrics/per-object"))
    assert value(s, "rabbitmq_queue_messages_ready", vhost="/", queue="a") == 2
    assert value(s, "rabbitmq_queue_messages_ready", vhost="other", queue="b") == 1


def test_label_values_are_escaped(api, mgmt):
    api.ok("PUT", "/api/queues/%2F/" + "we%22ird%5Cname")      # we"ird\name
    text = mgmt.metrics("/metrics/per-object")
    assert 'queue="we\\"ird\\\\name"' in text
    assert value(parse(text), "rabbitmq_queue_messages", vhost="/", queue='we\\"ird\\\\name') == 0


def test_delivery_counts_agree_between_api_and_metrics(api, mgmt):
    """basic.get with and without acks and on an empty queue, deliveries with automatic and manual
    acks, an ack and a redelivery: /api/queues, /api/channels and the per-object metrics count the
    same."""
    conn = mgmt.pika()
    ch = conn.channel()
    ch.queue_declare("dc")
    ch.queue_declare("dc.empty")
    for i in range(6):
        ch.basic_publish("", "dc", b"m%d" % i)
    m, _p, _b = ch.basic_get("dc", auto_ack=False)          # get (manual ack), acked below
    ch.basic_get("dc", auto_ack=True)                        # get_no_ack
    assert ch.basic_get("dc.empty") == (None, None, None)     # get_empty
    ch.basic_ack(m.delivery_tag)
    manual, auto = conn.channel(), conn.channel()
    got = []
    manual.basic_qos(prefetch_count=1)
    manual.basic_consume("dc", lambda c, m, p, b: got.append(m))
    wait_until(lambda: (conn.process_data_events(0.05), got)[1], 5)
    manual.basic_nack(got[0].delivery_tag, requeue=True)     # redelivered next
    wait_until(lambda: (conn.process_data_events(0.05), len(got) >= 2)[1], 5)
    manual.basic_cancel(manual.consumer_tags[0])
    auto.basic_consume("dc", lambda c, m, p, b: got.append(m), auto_ack=True)
    wait_until(lambda: (conn.process_data_events(0.05), len(got) >= 5)[1], 5)
    manual.basic_ack(got[1].delivery_tag)

    def settled():
        conn.process_data_events(0.05)
        q = api.get("/api/queues/%2F/dc").json()
        return q if q.get("messages") == 0 else None
    q = wait_until(settled, 5)
    ms = q["message_stats"]
    assert (ms["get"], ms["get_no_ack"], ms["deliver_no_ack"]) == (1, 1, 3), ms
    assert ms["deliver"] == 2 and ms["deliver_get"] == 7 and ms["ack"] == 2 and ms["redeliver"] == 1, ms
    assert api.get("/api/queues/%2F/dc.empty").json()["message_stats"]["get_empty"] == 1
    s = parse(mgmt.metrics("/metrics/per-object"))
    for name, want in (("rabbitmq_queue_get_ack_total", 1), ("rabbitmq_queue_get_total", 1),
                       ("rabbitmq_queue_messages_delivered_ack_total", 2),
                       ("rabbitmq_queue_messages_delivered_total", 3),
                       ("rabbitmq_queue_messages_redelivered_total", 1), ("rabbitmq_queue_messages_acked_total", 2)):
        assert value(s, name, vhost="/", queue="dc") == want, name
    assert value(s, "rabbitmq_queue_get_empty_total", vhost="/", queue="dc.empty") == 1
    chans = {c["number"]: c.get("message_stats", {}) for c in api.get("/api/channels").json()}
    assert chans[1]["get"] == 1 and chans[1]["get_no_ack"] == 1 and chans[1]["get_empty"] == 1, chans[1]
    assert chans[auto.channel_number]["deliver_no_ack"] == 3, chans
    assert chans[manual.channel_number]["deliver"] == 2 and chans[manual.channel_number]["redeliver"] == 1
