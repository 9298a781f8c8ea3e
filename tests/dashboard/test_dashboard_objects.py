"""The dashboard's object pages in headless Chromium, driven as a user would: declare queues (type
and arguments) and exchanges, add and remove bindings from the queue's page and the exchange's,
get messages with each of RabbitMQ's ack modes beside the read-only peek, the connection and
channel pages and force-closing a connection with a reason; charts that open with history; the
node panel. After each action the broker's state is read back through the API (and over AMQP).

Screenshots of the pages go to dashutil.SHOTS_DIR.
"""
from __future__ import annotations

import threading
import time
import urllib.parse

import pytest
from dashutil import (AVAILABLE, CANVAS_PIXELS_JS, PUBLISH_RGB, READY_RGB, WHY, choose, click, confirm, find,
                      finds, go, js_errors, login, page_shot, row_names, stat, submit_ok, text, type_into, wait)

if not AVAILABLE:
    pytest.skip(WHY, allow_module_level=True)
pika = pytest.importorskip("pika")

pytestmark = pytest.mark.timeout(240)


def q(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def kv_row(d, editor_id, key):
    """The row of a key = value editor holding `key`."""
    for r in finds(d, f"#{editor_id} .kv-row"):
        if r.find_element("css selector", ".kv-key").get_attribute("value") == key:
            return r
    raise AssertionError(f"no row {key!r} in #{editor_id}")


def test_declare_queues_exchanges_and_bindings(dash, browser, shots):
    d = browser
    login(d, dash.base, "guest", "guest")

    # -- a classic queue with arguments picked from the offered ones
    click(d, '#nav a[data-nav="queues"]')
    click(d, "#add-queue-toggle")
    choose(d, "#queue-vhost", "/")
    choose(d, "#queue-type", "classic")
    type_into(d, "#queue-name-input", "orders")
    choose(d, "#queue-durable", "true")
    offered = [a.get_attribute("data-key") for a in finds(d, "#add-queue-form .kv-link")]
    assert "x-max-priority" in offered and "x-delivery-limit" not in offered and "x-max-age" not in offered
    click(d, '#add-queue-form .kv-link[data-key="x-message-ttl"]')
    kv_row(d, "queue-arguments", "x-message-ttl").find_element("css selector", ".kv-value").send_keys("60000")
    click(d, '#add-queue-form .kv-link[data-key="x-dead-letter-exchange"]')
    kv_row(d, "queue-arguments", "x-dead-letter-exchange").find_element("css selector", ".kv-value").send_keys("dlx")
    click(d, '#add-queue-form .kv-link[data-key="x-single-active-consumer"]')
    submit_ok(d, "add-queue-form", "orders")
    status, qd = dash.api("GET", "/queues/%2F/orders")
    assert status == 200 and qd["durable"] is True and qd["auto_delete"] is False and qd["type"] == "classic"
    assert qd["arguments"] == {"x-message-ttl": 60000, "x-dead-letter-exchange": "dlx", "x-single-active-consumer": True}
    wait(d, lambda d: "orders" in row_names(d, "#queues-table"), what="orders in the table")

    # a quorum queue: durable, no auto-delete choice, its own arguments offered
    choose(d, "#queue-type", "quorum")
    assert not find(d, "#queue-durable").is_displayed() and not find(d, "#queue-auto-delete").is_displayed()
    offered = [a.get_attribute("data-key") for a in finds(d, "#add-queue-form .kv-link")]
    assert "x-delivery-limit" in offered and "x-max-priority" not in offered
    type_into(d, "#queue-name-input", "payments")
    click(d, '#add-queue-form .kv-link[data-key="x-delivery-limit"]')
    kv_row(d, "queue-arguments", "x-delivery-limit").find_element("css selector", ".kv-value").send_keys("5")
    submit_ok(d, "add-queue-form", "payments")
    qd = dash.api("GET", "/queues/%2F/payments")[1]
    assert qd["type"] == "quorum" and qd["durable"] is True
    assert qd["arguments"] == {"x-queue-type": "quorum", "x-delivery-limit": 5}
    # a declaration the broker refuses shows its reason
    choose(d, "#queue-type", "classic")
    type_into(d, "#queue-name-input", "broken")
    click(d, '#add-queue-form .kv-link[data-key="x-max-length"]')
    kv_row(d, "queue-arguments", "x-max-length").find_element("css selector", ".kv-value").send_keys("-1")
    click(d, "#add-queue-form-submit")
    wait(d, lambda d: "x-max-length" in text(d, "#add-queue-form-result"), what="the refusal")
    assert "err" in find(d, "#add-queue-form-result").get_attribute("class")
    assert dash.api("GET", "/queues/%2F/broken")[0] == 404
    page_shot(d, shots, "objects-01-queues", "#add-queue")

    # -- exchanges: a topic exchange and a fanout one for exchange-to-exchange bindings
    click(d, '#nav a[data-nav="exchanges"]')
    for name, kind in (("events", "topic"), ("audit", "fanout")):
        click(d, "#add-exchange-toggle") if not find(d, "#add-exchange-form").is_displayed() else None
        choose(d, "#exchange-vhost", "/")
        type_into(d, "#exchange-name-input", name)
        choose(d, "#exchange-type", kind)
        choose(d, "#exchange-durable", "true")
        submit_ok(d, "add-exchange-form", name)
        x = dash.api("GET", f"/exchanges/%2F/{name}")[1]
        assert (x["type"], x["durable"], x["auto_delete"], x["internal"]) == (kind, True, False, False)
    wait(d, lambda d: "events" in row_names(d, "#exchanges-table"), what="events in the table")

    # -- bind from the queue's page: events -> orders with order.*
    go(d, dash.base, "queues/%2F/orders", "#queue-bind")
    wait(d, lambda d: text(d, "#queue-name") == "orders", what="the queue page")
    type_into(d, "#queue-bind-source", "events")
    type_into(d, "#queue-bind-routing-key", "order.*")
    submit_ok(d, "queue-bind")
    assert [b["routing_key"] for b in dash.api("GET", "/bindings/%2F/e/events/q/orders")[1]] == ["order.*"]
    wait(d, lambda d: finds(d, '#queue-bindings-table tr[data-source="events"]'), what="the binding listed")
    page_shot(d, shots, "objects-02-queue-bindings", "#bindings-panel")

    # -- from the exchange's page: events -> queue payments (pay.#), events -> exchange audit (#)
    go(d, dash.base, "exchanges/%2F/events", "#exchange-bind")
    choose(d, "#exchange-bind-destination-type", "q")
    type_into(d, "#exchange-bind-destination", "payments")
    type_into(d, "#exchange-bind-routing-key", "pay.#")
    submit_ok(d, "exchange-bind")
    choose(d, "#exchange-bind-destination-type", "e")
    type_into(d, "#exchange-bind-destination", "audit")
    type_into(d, "#exchange-bind-routing-key", "#")
    submit_ok(d, "exchange-bind")
    src = dash.api("GET", "/exchanges/%2F/events/bindings/source")[1]
    assert sorted((b["destination_type"], b["destination"], b["routing_key"]) for b in src) == [
        ("exchange", "audit", "#"), ("queue", "orders", "order.*"), ("queue", "payments", "pay.#")]
    wait(d, lambda d: len(finds(d, "#exchange-bindings-source-table tbody tr[data-destination]")) == 3,
         what="three bindings from events")
    # routing works as bound: a publish through the exchange's form reaches payments
    type_into(d, "#publish-routing-key", "pay.card")
    type_into(d, "#publish-payload", "42 EUR")
    click(d, "#publish-submit")
    wait(d, lambda d: "routed" in text(d, "#publish-result") and "not" not in text(d, "#publish-result"),
         what="the routed publish")
    assert dash.api("GET", "/queues/%2F/payments")[1]["messages"] == 1
    page_shot(d, shots, "objects-03-exchange", "#bindings-panel")

    # the bindings to audit show on audit's page
    go(d, dash.base, "exchanges/%2F/audit", '#exchange-bindings-destination-table tr[data-source="events"]')

    # -- unbind on the exchange's page (audit) and on the queue's page (orders)
    go(d, dash.base, "exchanges/%2F/events", '#exchange-bindings-source-table tr[data-destination="audit"]')
    click(d, '#exchange-bindings-source-table tr[data-destination="audit"] .unbind')
    wait(d, lambda d: dash.api("GET", "/bindings/%2F/e/events/e/audit")[1] == [], what="events -> audit unbound")
    go(d, dash.base, "queues/%2F/orders", '#queue-bindings-table tr[data-source="events"]')
    click(d, '#queue-bindings-table tr[data-source="events"] .unbind')
    wait(d, lambda d: dash.api("GET", "/bindings/%2F/e/events/q/orders")[1] == [], what="events -> orders unbound")
    wait(d, lambda d: not finds(d, '#queue-bindings-table tr[data-source="events"]'), what="the row gone")
    # the default exchange's implicit binding cannot be removed: no button
    assert not finds(d, '#queue-bindings-table tr[data-source=""] .unbind')
    assert not js_errors(d), js_errors(d)


def test_get_messages_with_each_ack_mode(dash, browser, shots):
    d = browser
    conn = dash.pika()
    ch = conn.channel()
    ch.queue_declare("work", durable=True)
    for i in range(4):
        ch.basic_publish("", "work", f"job-{i}".encode(), pika.BasicProperties(headers={"n": i}, delivery_mode=2))
    login(d, dash.base, "guest", "guest")
    go(d, dash.base, "queues/%2F/work", "#get-form")
    wait(d, lambda d: stat(d, "messages_ready") == "4", what="4 ready")

    def got():
        return [e.text for e in finds(d, "#get-results .message pre.payload")]

    def redelivered():
        return [e.text.endswith("yes") for e in finds(d, "#get-results .redelivered")]

    # nack with requeue: the messages stay, now redelivered
    choose(d, "#get-ackmode", "ack_requeue_true")
    type_into(d, "#get-count", "2")
    submit_ok(d, "get-form", "requeued")
    assert got() == ["job-0", "job-1"] and redelivered() == [False, False]
    assert dash.api("GET", "/queues/%2F/work")[1]["messages"] == 4
    peek = dash.api("GET", "/queues/%2F/work/peek?count=10")[1]
    assert [(m["payload"], m["redelivered"]) for m in peek] == [
        ("job-0", True), ("job-1", True), ("job-2", False), ("job-3", False)]

    # reject with requeue: the same, the first now shows as redelivered
    choose(d, "#get-ackmode", "reject_requeue_true")
    type_into(d, "#get-count", "1")
    submit_ok(d, "get-form", "requeued")
    assert got() == ["job-0"] and redelivered() == [True]
    assert dash.api("GET", "/queues/%2F/work")[1]["messages"] == 4

    # automatic ack: taken for good
    choose(d, "#get-ackmode", "ack_requeue_false")
    type_into(d, "#get-count", "3")
    submit_ok(d, "get-form", "removed")
    assert got() == ["job-0", "job-1", "job-2"]
    assert "n" in text(d, '#get-results .message[data-index="3"] .props')
    assert dash.api("GET", "/queues/%2F/work")[1]["messages"] == 1
    wait(d, lambda d: stat(d, "messages_ready") == "1", what="1 ready after the get")

    # the read-only peek beside it sees the last one, and takes nothing
    click(d, "#peek-button")
    wait(d, lambda d: [e.text for e in finds(d, "#peek-results .message pre.payload")] == ["job-3"], what="the peek")
    assert dash.api("GET", "/queues/%2F/work")[1]["messages"] == 1
    page_shot(d, shots, "objects-04-get-messages", "#messages-panel")

    # reject without requeue: gone too; an empty queue says so
    choose(d, "#get-ackmode", "reject_requeue_false")
    type_into(d, "#get-count", "5")
    submit_ok(d, "get-form", "removed")
    assert got() == ["job-3"] and dash.api("GET", "/queues/%2F/work")[1]["messages"] == 0
    submit_ok(d, "get-form", "empty")
    assert ch.basic_get("work", auto_ack=True)[0] is None
    conn.close()
    assert not js_errors(d), js_errors(d)


def test_connection_and_channel_pages_and_force_close(dash, browser, shots):
    d = browser
    conn = dash.pika(name="billing-worker")
    ch = conn.channel()
    ch.basic_qos(prefetch_count=7)
    ch.queue_declare("bills")
    ch.basic_consume("bills", lambda *a: None, consumer_tag="billing-consumer")
    ch.basic_publish("", "bills", b"x")
    login(d, dash.base, "guest", "guest")

    # -- the connections table links to the connection's page
    click(d, '#nav a[data-nav="connections"]')
    wait(d, lambda d: len(finds(d, "#connections-table tbody tr[data-name]")) == 1, what="the connection listed")
    cname = row_names(d, "#connections-table")[0]
    assert "billing-worker" in text(d, "#connections-table tbody")
    click(d, "#connections-table tbody tr[data-name] td.name a")
    wait(d, lambda d: text(d, "#connection-name") == cname, what="the connection page")
    wait(d, lambda d: "guest" in text(d, "#connection-details") and "billing-worker" in text(d, "#connection-client"),
         what="the connection's details")
    assert "Pika" in text(d, "#connection-client")
    wait(d, lambda d: len(finds(d, "#connection-channels-table tbody tr")) == 1 and
         "(1)" in text(d, "#connection-channels-table"), what="its channel")
    assert find(d, "#close-panel").is_displayed()
    page_shot(d, shots, "objects-05-connection")

    # -- the channel's page: prefetch, its consumer and the consumer's queue
    click(d, "#connection-channels-table tbody td.name a")
    wait(d, lambda d: text(d, "#channel-name") == f"{cname} (1)", what="the channel page")
    wait(d, lambda d: "billing-consumer" in text(d, "#channel-consumers-table"), what="the consumer")
    assert "7 per consumer" in text(d, "#channel-details")
    assert find(d, "#channel-consumers-table a").text == "bills"
    page_shot(d, shots, "objects-06-channel")
    click(d, "#channel-details a")
    wait(d, lambda d: text(d, "#connection-name") == cname, what="back to the connection")

    # -- force close with a reason (cancel first)
    type_into(d, "#close-reason", "maintenance window")
    click(d, "#close-connection-button")
    confirm(d, ok=False)
    assert len(dash.api("GET", "/connections")[1]) == 1
    click(d, "#close-connection-button")
    confirm(d)
    wait(d, lambda d: d.execute_script("return location.hash") == "#/connections", what="back to the connections")
    wait(d, lambda d: dash.api("GET", "/connections")[1] == [], what="the connection closed")
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        conn.process_data_events(time_limit=2)
    assert e.value.reply_code == 320 and "maintenance window" in e.value.reply_text
    assert not js_errors(d), js_errors(d)


def test_charts_open_with_history_and_the_node_panel(dash, browser, shots):
    d = browser
    # traffic before anyone looks: the charts must show it as soon as the page opens
    conn = dash.pika()
    ch = conn.channel()
    ch.queue_declare("history")
    stop = threading.Event()

    def load():
        c = dash.pika()
        k = c.channel()
        while not stop.is_set():
            for _ in range(10):
                k.basic_publish("", "history", b"tick")
            c.sleep(0.1)
        c.close()
    t = threading.Thread(target=load, daemon=True)
    t.start()
    try:
        time.sleep(12)          # two and more history slots (5 s) of publishing
    finally:
        stop.set()
        t.join(10)
    status, qd = dash.api("GET", "/queues/%2F/history?lengths_age=60&lengths_incr=5&msg_rates_age=60&msg_rates_incr=5")
    assert status == 200
    pub = [s["sample"] for s in qd["message_stats"]["publish_details"]["samples"]]
    assert len(pub) == 13 and pub[0] > pub[-1]

    login(d, dash.base, "guest", "guest")
    go(d, dash.base, "queues/%2F/history")
    # drawn from the first answer: the page has made one request, and the lines are there
    wait(d, lambda d: d.execute_script(CANVAS_PIXELS_JS, "#queue-chart-queued", *READY_RGB) > 40,
         timeout=5, what="the ready line drawn from history")
    assert d.execute_script(CANVAS_PIXELS_JS, "#queue-chart-rates", *PUBLISH_RGB) > 40
    page_shot(d, shots, "objects-07-queue-history")
    # the 1 minute range: its own request, the same history in more detail
    choose(d, "#chart-range", "60")
    wait(d, lambda d: "last minute" in text(d, ".chart-panel h2 .hint"), what="the 1 minute charts")
    wait(d, lambda d: d.execute_script(CANVAS_PIXELS_JS, "#queue-chart-queued", *READY_RGB) > 40,
         timeout=5, what="the ready line over the last minute")

    # -- the node panel on the overview: memory, disk, descriptors, sockets, alarms, uptime
    go(d, dash.base, "", "#node-memory")
    status, nodes = dash.api("GET", "/nodes")
    n = nodes[0]
    assert "high watermark" in text(d, "#node-memory") and "limit" in text(d, "#node-disk")
    assert text(d, "#node-alarms") == "none"
    assert "of " in text(d, "#node-fds") and text(d, "#node-uptime").endswith("s")
    assert n["name"] in text(d, "#node-table")
    wait(d, lambda d: d.execute_script(CANVAS_PIXELS_JS, "#chart-memory", 0x08, 0x91, 0xB2) > 40,
         what="the memory line")
    page_shot(d, shots, "objects-08-overview-node", "#node-panel")
    conn.close()
    assert not js_errors(d), js_errors(d)


def test_node_panel_shows_an_alarm(start_dash, browser, shots):
    # a memory limit the broker is always over: the memory alarm is on from the start
    dash = start_dash(["--vm-memory-high-watermark-absolute", "1000000"])
    d = browser
    wait(d, lambda d: dash.api("GET", "/nodes")[1][0]["mem_alarm"] is True, what="the memory alarm")
    login(d, dash.base, "guest", "guest")
    go(d, dash.base, "", "#node-alarms .badge")
    assert text(d, "#node-alarms") == "memory alarm"
    assert "alarm" in find(d, "#node-memory").get_attribute("class").split()
    n = dash.api("GET", "/nodes")[1][0]
    assert n["mem_limit"] == 1000000
    page_shot(d, shots, "objects-09-node-alarm", "#node-panel")
    assert not js_errors(d), js_errors(d)
