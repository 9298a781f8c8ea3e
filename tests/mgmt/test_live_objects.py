"""Connections, channels, consumers, message counts and rates, seen and acted on through the API."""
from __future__ import annotations

import pika
import pytest
from mgmtutil import q, wait_until


def _one(api, path):
    return wait_until(lambda: (lambda xs: xs[0] if len(xs) == 1 else None)(api.get(path).json()), 5,
                      message=f"one item at {path}")


def test_connection_channel_and_consumer_views(api, mgmt):
    conn = mgmt.pika(connection_name="billing-worker")
    ch1 = conn.channel()
    ch1.confirm_delivery()
    ch2 = conn.channel()
    ch2.basic_qos(prefetch_count=7)
    ch2.queue_declare("work")
    ch2.basic_consume("work", lambda *a: None, consumer_tag="worker-1")

    c = _one(api, "/api/connections")
    local_port = conn._impl._transport._sock.getsockname()[1]
    assert c["peer_port"] == local_port and c["peer_host"] == "127.0.0.1"
    assert c["port"] == mgmt.amqp_port
    assert (c["user"], c["vhost"], c["state"], c["protocol"], c["type"]) == \
        ("guest", "/", "running", "AMQP 0-9-1", "network")
    assert c["client_properties"]["connection_name"] == "billing-worker"
    assert c["client_properties"]["product"] == "Pika Python Client Library"
    assert c["user_provided_name"] == "billing-worker"
    assert c["channels"] == 2 and c["frame_max"] > 0 and c["auth_mechanism"] == "PLAIN"
    assert c["name"] == f"127.0.0.1:{local_port} -> 127.0.0.1:{mgmt.amqp_port}"
    assert api.get("/api/connections/" + q(c["name"])).json()["name"] == c["name"]
    assert api.get("/api/vhosts/%2F/connections").json()[0]["name"] == c["name"]

    chans = api.get(f"/api/connections/{q(c['name'])}/channels").json()
    assert [x["number"] for x in chans] == [1, 2]
    one, two = chans
    assert one["confirm"] is True and one["prefetch_count"] == 0 and one["consumer_count"] == 0
    assert two["confirm"] is False and two["prefetch_count"] == 7 and two["consumer_count"] == 1
    assert two["name"] == f"{c['name']} (2)" and two["connection_details"]["name"] == c["name"]
    assert api.get("/api/channels/" + q(two["name"])).json()["number"] == 2
    assert len(api.get("/api/channels").json()) == 2

    cons = api.get("/api/consumers").json()
    assert len(cons) == 1
    k = cons[0]
    assert k["consumer_tag"] == "worker-1" and k["queue"] == {"name": "work", "vhost": "/"}
    assert k["ack_required"] is True and k["prefetch_count"] == 7 and k["exclusive"] is False
    assert k["channel_details"]["number"] == 2 and k["channel_details"]["connection_name"] == c["name"]
    assert api.get("/api/consumers/%2F").json() == cons
    qd = api.get("/api/queues/%2F/work").json()
    assert qd["consumers"] == 1 and qd["consumer_details"][0]["consumer_tag"] == "worker-1"

    ov = api.get("/api/overview").json()["object_totals"]
    assert (ov["connections"], ov["channels"], ov["consumers"], ov["queues"]) == (1, 2, 1, 1)


def test_exclusive_queue_owner(api, mgmt):
    conn = mgmt.pika()
    name = conn.channel().queue_declare("", exclusive=True).method.queue
    d = api.get("/api/queues/%2F/" + q(name)).json()
    assert d["exclusive"] is True
    c = api.get("/api/connections").json()[0]
    assert d["owner_pid_details"]["name"] == c["name"]


def test_closing_a_connection_from_the_api(api, mgmt):
    conn = mgmt.pika()
    conn.channel()
    c = _one(api, "/api/connections")
    assert api.delete("/api/connections/" + q(c["name"])).status == 204
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as info:
        for _ in range(100):
            conn.process_data_events(0.05)
    assert info.value.reply_code == 320
    assert info.value.reply_text == "CONNECTION_FORCED - Closed via management plugin"
    wait_until(lambda: api.get("/api/connections").json() == [], 5, message="no connections")
    assert api.delete("/api/connections/" + q(c["name"])).status == 404

    conn2 = mgmt.pika()
    c2 = _one(api, "/api/connections")
    api.delete("/api/connections/" + q(c2["name"]), headers={"X-Reason": "maintenance window"})
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as info:
        for _ in range(100):
            conn2.process_data_events(0.05)
    assert info.value.reply_text == "CONNECTION_FORCED - maintenance window"


def test_users_see_only_their_own_connections(api, mgmt):
    api.ok("PUT", "/api/users/mona", {"password": "m", "tags": "management"})
    api.ok("PUT", "/api/permissions/%2F/mona", {"configure": ".*", "write": ".*", "read": ".*"})
    mgmt.pika()
    mine = mgmt.pika(user="mona", password="m")
    mona = api.as_user("mona", "m")
    wait_until(lambda: len(api.get("/api/connections").json()) == 2, 5)
    seen = mona.get("/api/connections").json()
    assert [c["user"] for c in seen] == ["mona"]
    guests = [c for c in api.get("/api/connections").json() if c["user"] == "guest"][0]
    r = mona.get("/api/connections/" + q(guests["name"]))
    assert r.status == 401 and r.json()["reason"] == "User not authorised to access object"
    assert mona.delete("/api/connections/" + q(guests["name"])).status == 401
    assert mona.delete("/api/connections/" + q(seen[0]["name"])).status == 204
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker):
        for _ in range(100):
            mine.process_data_events(0.05)


def test_unacked_counts(api, mgmt):
    conn = mgmt.pika()
    ch = conn.channel()
    ch.queue_declare("pending")
    for i in range(5):
        ch.basic_publish("", "pending", b"0123456789")
    ch.basic_qos(prefetch_count=3)
    got = []
    ch.basic_consume("pending", lambda c, m, p, b: got.append(m.delivery_tag))
    wait_until(lambda: (conn.process_data_events(0.05), len(got) == 3)[1], 5)
    d = wait_until(lambda: (lambda d: d if d["messages_unacknowledged"] == 3 else None)(
        api.get("/api/queues/%2F/pending").json()), 5)
    assert d["messages_ready"] == 2 and d["messages"] == 5
    assert d["message_bytes_unacknowledged"] == 30 and d["message_bytes_ready"] == 20
    chan = [c for c in api.get("/api/channels").json() if c["consumer_count"] == 1][0]
    assert chan["messages_unacknowledged"] == 3
    ch.basic_ack(got[-1], multiple=True)
    wait_until(lambda: (conn.process_data_events(0.05), len(got) == 5)[1], 5)
    ch.basic_ack(got[-1], multiple=True)
    conn.process_data_events(0.1)
    d = wait_until(lambda: (lambda d: d if d["messages"] == 0 else None)(
        api.get("/api/queues/%2F/pending").json()), 5)
    assert d["message_stats"]["ack"] == 5 and d["message_stats"]["deliver_get"] == 5


def test_message_rates_are_sampled(api, mgmt):
    conn = mgmt.pika()
    ch = conn.channel()
    ch.queue_declare("rated")

    def rate_while_publishing(path, get_rate):
        def probe():
            for _ in range(20):
                ch.basic_publish("", "rated", b"x")
            conn.process_data_events(0)
            d = api.get(path).json()
            return get_rate(d) > 0 and d
        return wait_until(probe, 10, interval=0.1, message=f"a positive rate at {path}")

    d = rate_while_publishing("/api/queues/%2F/rated", lambda d: d["message_stats"]["publish_details"]["rate"])
    assert d["messages_details"]["rate"] > 0
    ov = rate_while_publishing("/api/overview", lambda d: d["message_stats"]["publish_details"]["rate"])
    assert ov["queue_totals"]["messages_details"]["rate"] > 0 or ov["queue_totals"]["messages"] >= 20
    assert ov["message_stats"]["publish"] >= 20
    assert ov["queue_totals"]["messages"] >= 20
    x = api.get("/api/exchanges/%2F/amq.default").json()
    assert x["message_stats"]["publish_in"] >= 20
    c = api.get("/api/connections").json()[0]
    assert c["recv_oct"] > 0 and "rate" in c["recv_oct_details"]
    v = api.get("/api/vhosts/%2F").json()
    assert v["messages"] >= 20 and v["message_stats"]["publish"] >= 20
