"""History in the management API as RabbitMQ gives it: with lengths_age/_incr, msg_rates_*,
data_rates_* (and node_stats_*) a figure's `_details` hold `samples` (newest first, one every incr
seconds, age/incr + 1 of them, at instants that are multiples of incr), `rate` from the last two,
`avg_rate` over the range and `avg`. Lengths beside the current counts (queues, connections) end
at now rounded up, the rest at now rounded down. A range of more than 500 increments, or a
non-positive age or increment, is refused with RabbitMQ's error; anything but two integers is no
range at all. A dashboard opening a page gets the last minutes at once.

Differential: with USAGI_TEST_BROKER_URL and USAGI_TEST_MGMT_URL the same checks run against
RabbitMQ (on a queue and connection of their own).
"""
from __future__ import annotations

import os
import sys
import time
import uuid

import pytest

from mgmtutil import Api, q, wait_until

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from support.harness import management_base  # noqa: E402

pika = pytest.importorskip("pika")
pytestmark = pytest.mark.timeout(180)

UID = uuid.uuid4().hex[:8]
QUEUE = f"history-{UID}"
RANGE = "lengths_age=60&lengths_incr=5&msg_rates_age=60&msg_rates_incr=5&data_rates_age=60&data_rates_incr=5"


@pytest.fixture(scope="module")
def env(broker):
    base, user, password = management_base(broker)
    api = Api(base, user, password)
    if api.get("/api/overview").status != 200:
        pytest.skip(f"management API not reachable at {base} (set USAGI_TEST_MGMT_URL)")
    conn = pika.BlockingConnection(pika.ConnectionParameters(
        host=broker.host, port=broker.port, connection_attempts=1, socket_timeout=5,
        credentials=pika.PlainCredentials(user, password), client_properties={"connection_name": QUEUE}))
    ch = conn.channel()
    ch.queue_declare(QUEUE)
    try:
        yield api, conn, ch
    finally:
        ch.queue_delete(QUEUE)
        conn.close()


def check_details(d: dict, incr_ms: int, n: int, last_low: int, last_high: int, ceil: bool):
    """One `_details` with samples: RabbitMQ's keys, instants and arithmetic."""
    assert set(d) == {"rate", "samples", "avg_rate", "avg"}, d.keys()
    smp = d["samples"]
    assert len(smp) == n and all(set(s) == {"sample", "timestamp"} for s in smp)
    ts = [s["timestamp"] for s in smp]
    assert all(t % incr_ms == 0 for t in ts)
    assert all(a - b == incr_ms for a, b in zip(ts, ts[1:])), ts       # newest first, one per incr
    rounded = ((last_low + incr_ms - 1) // incr_ms if ceil else last_low // incr_ms) * incr_ms
    rounded_high = ((last_high + incr_ms - 1) // incr_ms if ceil else last_high // incr_ms) * incr_ms
    assert rounded <= ts[0] <= rounded_high, (ts[0], last_low, last_high, ceil)
    v = [s["sample"] for s in smp]
    assert d["rate"] == pytest.approx((v[0] - v[1]) * 1000 / (ts[0] - ts[1]))
    assert d["avg_rate"] == pytest.approx((v[0] - v[-1]) * 1000 / (ts[0] - ts[-1]))
    assert d["avg"] == pytest.approx(sum(v) / n)


def ranged(api: Api, path: str, query: str = RANGE):
    before = int(time.time() * 1000)
    r = api.get(f"{path}{'&' if '?' in path else '?'}{query}")
    after = int(time.time() * 1000)
    assert r.status == 200, r
    return r.json(), before, after


def test_a_queue_history(env):
    api, conn, ch = env
    for _ in range(5):
        ch.basic_publish("", QUEUE, b"x")
    path = f"/api/queues/%2F/{q(QUEUE)}"

    # the 5 messages show in an instant before the newest: history, not the count of now
    def history_has_them():
        body, before, after = ranged(api, path)
        smp = body.get("messages_details", {}).get("samples", [])   # (RabbitMQ: once the queue's stats came)
        return (body, before, after) if [s["sample"] for s in smp[:2]] == [5, 5] else None
    body, before, after = wait_until(history_has_them, 40, interval=0.5, message="5 messages in two samples")
    assert body["messages"] == 5
    for key in ("messages", "messages_ready", "messages_unacknowledged"):
        check_details(body[f"{key}_details"], 5000, 13, before, after, ceil=True)
    # the queue is younger than the range: its oldest samples are zeros
    assert body["messages_details"]["samples"][-1]["sample"] == 0
    assert body["messages_unacknowledged_details"]["avg"] == 0
    # message_stats with msg_rates_*: rounded down
    for key, d in (body.get("message_stats") or {}).items():
        if key.endswith("_details"):
            check_details(d, 5000, 13, before, after, ceil=False)

    # the list answers the same way
    listed = [x for x in ranged(api, "/api/queues/%2F")[0] if x["name"] == QUEUE][0]
    assert len(listed["messages_details"]["samples"]) == 13

    # another range: the last 20 seconds every 10
    body, before, after = ranged(api, path, "lengths_age=20&lengths_incr=10")
    check_details(body["messages_details"], 10000, 3, before, after, ceil=True)
    # without a range, no samples
    assert set(api.get(path).json()["messages_details"]) == {"rate"}


def test_overview_vhost_and_connection_history(env):
    api, conn, ch = env
    body, before, after = ranged(api, "/api/overview")
    for key in ("publish", "ack", "deliver_get", "confirm"):
        check_details(body["message_stats"][f"{key}_details"], 5000, 13, before, after, ceil=False)
    check_details(body["queue_totals"]["messages_details"], 5000, 13, before, after, ceil=False)
    check_details(body["churn_rates"]["connection_created_details"], 5000, 13, before, after, ceil=False)

    body, before, after = ranged(api, "/api/vhosts/%2F")
    check_details(body["messages_details"], 5000, 13, before, after, ceil=False)
    check_details(body["recv_oct_details"], 5000, 13, before, after, ceil=False)

    def mine():
        found = [c for c in api.get("/api/connections").json() if c.get("user_provided_name") == QUEUE]
        return found[0]["name"] if found else None
    name = wait_until(mine, 30, message="the test's connection listed")
    body, before, after = ranged(api, f"/api/connections/{q(name)}")
    for key in ("recv_oct", "send_oct"):
        check_details(body[f"{key}_details"], 5000, 13, before, after, ceil=False)
    assert body["recv_oct_details"]["samples"][0]["sample"] <= body["recv_oct"]

    nodes = api.get("/api/nodes?node_stats_age=60&node_stats_incr=5")
    if nodes.status == 200:         # (a monitoring user's route)
        n = nodes.json()[0]
        assert len(n["mem_used_details"]["samples"]) == 13 and len(n["fd_used_details"]["samples"]) == 13


@pytest.mark.parametrize("path,error", [
    ("/api/queues", "invalid_range_parameters"), ("/api/queues/%2F", "invalid_range_parameters"),
    ("/api/exchanges", "invalid_range_parameters"), ("/api/vhosts", "invalid_range_parameters"),
    ("/api/overview", "bad_request"), ("/api/nodes", "bad_request"), ("/api/connections", "bad_request"),
    ("/api/channels", "bad_request"), ("/api/vhosts/%2F", "bad_request"),
    ("/api/exchanges/%2F/amq.direct", "bad_request"), ("/api/connections/no-such-connection", "bad_request"),
])
def test_ranges_refused_as_rabbitmq_refuses_them(env, path, error):
    api, _conn, _ch = env
    for age, incr in (("2505", "5"), ("60", "0"), ("-5", "5")):
        r = api.get(f"{path}?msg_rates_age={age}&msg_rates_incr={incr}")
        assert (r.status, r.json()) == (400, {"error": error, "reason": f"Invalid range parameters: age {age}, incr {incr}"})
    # the largest range allowed: 501 samples
    if path == "/api/overview":
        r = api.get(f"{path}?msg_rates_age=2500&msg_rates_incr=5")
        assert r.status == 200 and len(r.json()["message_stats"]["publish_details"]["samples"]) == 501
    # not two integers: no range, no error
    for query in ("msg_rates_age=60", "msg_rates_age=sixty&msg_rates_incr=5", "msg_rates_age=60.0&msg_rates_incr=5"):
        assert api.get(f"{path}?{query}").status in (200, 404)
    # a route without history does not read them
    assert api.get("/api/extensions?msg_rates_age=2505&msg_rates_incr=5").status == 200
