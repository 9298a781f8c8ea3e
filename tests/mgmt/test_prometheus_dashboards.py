"""RabbitMQ's own Grafana dashboards against Usagi: every query of every panel returns data.

The dashboards are RabbitMQ's JSON, read where the project keeps test data
(USAGI_TEST_GRAFANA_DIR, by default /work/shared/grafana; RabbitMQ-Overview.json there, and any
other of RabbitMQ's dashboards dropped beside it). Each panel's PromQL is taken from the JSON, its
template variables given the values Grafana would pick from rabbitmq_identity_info, and evaluated
(tests/support/promql.py) over two scrapes of a loaded Usagi's /metrics, as Prometheus would
between two scrapes: the metrics it names must exist with the labels its joins use, the answer must
hold series, none of them NaN, with the labels its legend prints.
"""
from __future__ import annotations

import glob
import json
import math
import os
import re
import time

import pika
import pytest

from support.promql import Parser, Scrapes, evaluate, names

GRAFANA_DIR = os.environ.get("USAGI_TEST_GRAFANA_DIR", "/work/shared/grafana")
OVERVIEW = os.path.join(GRAFANA_DIR, "RabbitMQ-Overview.json")
_VAR = re.compile(r"\$\{?(\w+)\}?")


# what must show: RabbitMQ-Overview, every query; the per-queue Raft dashboard (if it is there),
# every panel. Its later versions query RabbitMQ 4.2's Raft metrics beside 4.0's (Usagi has 4.0's):
# those targets are left out, and a panel with no other target.
EVERY_QUERY = ("RabbitMQ-Overview.json",)
EVERY_PANEL = ("RabbitMQ-Quorum-Queues-Raft.json",)
RAFT_42 = {"rabbitmq_raft_commit_index", "rabbitmq_raft_last_written_index", "rabbitmq_raft_snapshot_index",
           "rabbitmq_raft_term", "rabbitmq_raft_commit_latency_seconds"}


def dashboards() -> list:
    return [p for p in sorted(glob.glob(os.path.join(GRAFANA_DIR, "*.json")))
            if os.path.basename(p) in EVERY_QUERY + EVERY_PANEL]


def queries(path: str) -> list:
    """(panel title, expr, legendFormat) of every target of every panel, rows' panels included."""
    with open(path, encoding="utf-8") as f:
        d = json.load(f)
    out = []
    stack = list(d.get("panels", [])) + [p for r in d.get("rows", []) for p in r.get("panels", [])]
    while stack:
        p = stack.pop(0)
        stack.extend(p.get("panels", []))
        for t in p.get("targets", []):
            if t.get("expr"):
                out.append((p.get("title") or "", t["expr"], t.get("legendFormat") or ""))
    return out


def substitute(expr: str, values: dict) -> str:
    return _VAR.sub(lambda m: values.get(m.group(1), m.group(0)), expr)


def template_values(scrapes: Scrapes) -> dict:
    """The dashboard variables as Grafana sets them from label_values(rabbitmq_identity_info, ...)."""
    ident = [lab for lab, _v in scrapes.points[-1][1].values() if lab["__name__"] == "rabbitmq_identity_info"]
    assert len(ident) == 1, ident
    lab = ident[0]
    return {"rabbitmq_cluster": lab["rabbitmq_cluster"], "namespace": lab.get("namespace", ""),
            "endpoint": lab.get("rabbitmq_endpoint", ""), "__rate_interval": "1m", "__range": "1h",
            "__interval": "15s"}


def load(mgmt, tag: str, rounds: int = 1):
    """Traffic of every kind the dashboards chart: publishes of many sizes with and without
    confirms, unroutable ones (dropped and returned), deliveries with manual and automatic acks,
    basic.get of each kind and on an empty queue, redeliveries, dead-lettering, and churn of
    connections, channels and queues."""
    conn = mgmt.pika()
    ch = conn.channel()
    ch.queue_declare(f"{tag}.classic", durable=True)
    ch.queue_declare(f"{tag}.quorum", durable=True, arguments={"x-queue-type": "quorum"})
    ch.queue_declare(f"{tag}.ttl", arguments={"x-message-ttl": 1, "x-dead-letter-exchange": "amq.fanout"})
    ch.queue_declare(f"{tag}.empty")
    ch.confirm_delivery()
    for _ in range(rounds):
        for size in (10, 500, 5_000, 50_000, 500_000, 2_000_000):
            ch.basic_publish("", f"{tag}.classic", b"c" * size, pika.BasicProperties(delivery_mode=2))
            ch.basic_publish("", f"{tag}.quorum", b"q" * size)
        ch.basic_publish("", f"{tag}.ttl", b"dies")
        ch.basic_publish("", "no-such-queue", b"dropped")
        try:
            ch.basic_publish("", "no-such-queue", b"returned", mandatory=True)
        except pika.exceptions.UnroutableError:
            pass
    # basic.get: manual ack, automatic ack, empty
    m, _p, _b = ch.basic_get(f"{tag}.classic", auto_ack=False)
    ch.basic_ack(m.delivery_tag)
    ch.basic_get(f"{tag}.classic", auto_ack=True)
    assert ch.basic_get(f"{tag}.empty", auto_ack=True) == (None, None, None)
    # consumers: manual acks (one requeued, then redelivered), automatic acks
    c2 = conn.channel()
    c2.basic_qos(prefetch_count=2)
    got = []
    c2.basic_consume(f"{tag}.classic", lambda c, m, p, b: got.append(m))
    c3 = conn.channel()
    auto = []
    c3.basic_consume(f"{tag}.quorum", lambda c, m, p, b: auto.append(m), auto_ack=True)
    deadline = time.monotonic() + 10
    while (len(got) < 2 or not auto) and time.monotonic() < deadline:
        conn.process_data_events(0.05)
    assert got and auto
    c2.basic_nack(got[0].delivery_tag, requeue=True)
    c2.basic_ack(got[1].delivery_tag)
    conn.process_data_events(0.2)
    # churn: a connection, a channel and a queue that come and go
    extra = mgmt.pika()
    extra.channel().queue_declare(f"{tag}.gone.{time.monotonic_ns()}", auto_delete=False)
    extra.close()
    x = conn.channel()
    x.queue_delete(f"{tag}.empty")
    x.queue_declare(f"{tag}.empty")
    x.close()
    return conn


def scrape(mgmt, scrapes: Scrapes, path: str = "/metrics"):
    scrapes.add(time.time(), mgmt.metrics(path))


@pytest.fixture
def loaded(start_mgmt):
    """A Usagi under load, scraped twice a second apart: (mgmt, Scrapes of /metrics, of
    /metrics/per-object)."""
    mgmt = start_mgmt()
    agg = Scrapes(instance=f"127.0.0.1:{mgmt.metrics_port}")
    per = Scrapes(instance=f"127.0.0.1:{mgmt.metrics_port}")
    load(mgmt, "dash").close()
    scrape(mgmt, agg)
    scrape(mgmt, per, "/metrics/per-object")
    time.sleep(1.1)
    conn = load(mgmt, "dash", rounds=2)
    scrape(mgmt, agg)
    scrape(mgmt, per, "/metrics/per-object")
    mgmt.per_object = per
    yield mgmt, agg
    conn.close()


def check_query(scrapes: Scrapes, title: str, expr: str, legend: str, values: dict):
    q = substitute(expr, values)
    assert "$" not in q, f"{title}: a variable is left in {q!r}"
    node = Parser(q).parse()
    present = {lab["__name__"] for lab, _v in scrapes.points[-1][1].values()}
    missing = names(node) - present
    assert not missing, f"{title}: no series named {sorted(missing)} in /metrics ({q})"
    result = evaluate(q, scrapes)
    if isinstance(result, float):
        assert math.isfinite(result), f"{title}: {q} = {result}"
        return
    assert result, f"{title}: no data for {q}"
    for lab, v in result:
        assert math.isfinite(v), f"{title}: {lab} = {v} for {q}"
    for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", legend):
        if label not in q:
            continue            # a label the query sums away: Grafana prints it empty
        assert all(label in lab for lab, _v in result), f"{title}: legend label {label} missing in {result}"


@pytest.mark.skipif(not os.path.exists(OVERVIEW), reason=f"RabbitMQ's dashboards are not in {GRAFANA_DIR}")
def test_every_query_of_rabbitmq_dashboards_returns_data(loaded):
    mgmt, agg = loaded
    checked = 0
    for path in dashboards():
        name = os.path.basename(path)
        # the overview reads the aggregated endpoint; the per-queue dashboards per-object metrics
        scrapes = agg if name in EVERY_QUERY else mgmt.per_object
        values = template_values(scrapes)
        assert values["endpoint"] == ("aggregated" if name in EVERY_QUERY else "per-object")
        panels: dict = {}
        for title, expr, legend in queries(path):
            if names(Parser(substitute(expr, values)).parse()) & RAFT_42:
                continue
            panels.setdefault(title, []).append((expr, legend))
        for title, targets in panels.items():
            failures = []
            for expr, legend in targets:
                try:
                    check_query(scrapes, f"{name} / {title}", expr, legend, values)
                    checked += 1
                except AssertionError as e:
                    failures.append(str(e))
            if name in EVERY_QUERY or len(failures) == len(targets):
                assert not failures, "\n".join(failures)
    assert checked >= 40            # RabbitMQ-Overview alone has some 45 queries


@pytest.mark.skipif(not os.path.exists(OVERVIEW), reason=f"RabbitMQ's dashboards are not in {GRAFANA_DIR}")
def test_overview_figures_are_the_brokers(loaded):
    """A few panels' answers checked against what the load did and what the API says."""
    mgmt, scrapes = loaded
    v = template_values(scrapes)
    join = ('* on(instance, job) group_left(rabbitmq_cluster, rabbitmq_node) rabbitmq_identity_info'
            '{rabbitmq_cluster="%s", namespace="", rabbitmq_endpoint="%s"}' % (v["rabbitmq_cluster"], v["endpoint"]))

    def one(expr):
        r = evaluate(expr, scrapes)
        assert len(r) == 1, (expr, r)
        return r[0][1]

    node = mgmt.api.get("/api/nodes").json()[0]
    limit = one(f"rabbitmq_resident_memory_limit_bytes {join}")
    assert limit == node["mem_limit"] > 0
    assert one(f"rabbitmq_disk_space_available_limit_bytes {join}") == node["disk_free_limit"]
    assert one(f"sum(rabbitmq_queues {join})") == len(mgmt.api.get("/api/queues").json())
    # two rounds of 6 sizes to each of 2 queues, 1 to the TTL queue, 2 unroutable, between the scrapes
    published = one(f"sum(increase(rabbitmq_global_messages_received_total[1h]) {join})")
    assert published == 2 * (12 + 3)
    dist = {}
    for le in ("100.0", "1000.0", "10000.0", "100000.0", "1e+06", "1e+07", "+Inf"):
        dist[le] = one(f'sum(increase(rabbitmq_message_size_bytes_bucket{{le="{le}"}}[1h]) {join})')
    assert dist["+Inf"] == published
    assert dist["100.0"] == 2 * (2 + 3)          # 10 B to two queues, and 3 small ones
    assert dist["1000.0"] - dist["100.0"] == 2 * 2
    assert dist["1e+07"] - dist["1e+06"] == 2 * 2
    assert one(f"sum(rate(rabbitmq_global_messages_confirmed_total[1m]) {join}) by(rabbitmq_node)") > 0
    assert one(f"sum(rate(rabbitmq_queues_created_total[1m]) {join}) by(rabbitmq_node)") > 0
    assert one(f"sum(rate(rabbitmq_channels_opened_total[1m]) {join}) by(rabbitmq_node)") > 0
    assert one(f"sum(rate(rabbitmq_connections_closed_total[1m]) {join}) by(rabbitmq_node)") > 0
    assert one(f"sum(rate(rabbitmq_global_messages_unroutable_returned_total[1m]) {join}) by(rabbitmq_node)") > 0
    assert one(f"sum(rate(rabbitmq_global_messages_get_empty_total[1m]) {join}) by(rabbitmq_node)") > 0
    assert one(f"sum(rate(rabbitmq_global_messages_delivered_get_auto_ack_total[1m]) {join}) "
               f"by(rabbitmq_node)") > 0
    assert one(f"sum(rate(rabbitmq_global_messages_redelivered_total[1m]) {join}) by(rabbitmq_node)") > 0


def test_raft_queries_per_quorum_queue(loaded):
    """The per-queue Raft panels (RabbitMQ-Quorum-Queues-Raft): log entries, uncommitted entries,
    leader elections and commit latency by queue, for each quorum queue and for no other."""
    mgmt, _s = loaded
    scrapes = Scrapes(instance=f"127.0.0.1:{mgmt.metrics_port}")
    scrape(mgmt, scrapes, "/metrics/per-object")
    time.sleep(0.5)
    conn = mgmt.pika()
    ch = conn.channel()
    ch.confirm_delivery()
    for _ in range(5):
        ch.basic_publish("", "dash.quorum", b"more")
    scrape(mgmt, scrapes, "/metrics/per-object")
    v = template_values(scrapes)
    assert v["endpoint"] == "per-object"
    join = ('* on(instance, job) group_left(rabbitmq_cluster, rabbitmq_node) rabbitmq_identity_info'
            '{rabbitmq_cluster="%s", namespace="", rabbitmq_endpoint="%s"}' % (v["rabbitmq_cluster"], v["endpoint"]))
    in_log = evaluate(f"sum((rabbitmq_raft_log_last_written_index {join}) - "
                      f"(rabbitmq_raft_log_snapshot_index {join})) by(queue, rabbitmq_node)", scrapes)
    quorum = {q["name"]: q for q in mgmt.api.get("/api/queues").json() if q["type"] == "quorum"}
    assert {lab["queue"] for lab, _v in in_log} == set(quorum)
    for lab, n in in_log:
        assert n == quorum[lab["queue"]]["messages"]        # entries not yet snapshotted: what it holds
    committed = evaluate(f"sum(rate(rabbitmq_raft_log_commit_index[1m]) {join}) by(queue)", scrapes)
    assert [r for lab, r in committed if lab["queue"] == "dash.quorum"][0] > 0
    assert all(r == 0 for _lab, r in evaluate(
        f"sum((rabbitmq_raft_log_last_written_index {join}) - (rabbitmq_raft_log_commit_index {join})) "
        f"by(rabbitmq_node)", scrapes))
    assert evaluate(f"sum(rate(rabbitmq_raft_term_total[1m]) {join}) by(rabbitmq_node)", scrapes)[0][1] == 0
    latency = evaluate(f"rabbitmq_raft_entry_commit_latency_seconds {join}", scrapes)
    assert latency and all(0 <= r < 60 for _lab, r in latency)
    conn.close()
