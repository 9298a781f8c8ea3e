"""The web dashboard end to end in headless Chromium (Debian's chromium + chromium-driver, driven by
selenium): log in, check the overview's numbers and live charts, the object tables, peek at a
queue's messages without consuming them, publish through the form, purge, delete, log out.

Screenshots are written to dashutil.SHOTS_DIR ($TMPDIR/usagi-dashboard-shots, or USAGI_DASHBOARD_SHOTS)
and checked: the right size, not blank, the header and the chart lines drawn where expected.
"""
from __future__ import annotations

import threading
import time

import pytest
from dashutil import (AVAILABLE, PUBLISH_RGB, READY_RGB, WHY, CANVAS_PIXELS_JS, assert_header, click,
                      element_box, rate_of, region_count, screenshot, stat, text, wait)

if not AVAILABLE:
    pytest.skip(WHY, allow_module_level=True)
pika = pytest.importorskip("pika")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402


class RateLoad:
    """Publishes to and gets+acks from one queue in a thread, so that all three rates move."""

    def __init__(self, dash, queue):
        self.dash, self.queue = dash, queue
        self.stop = threading.Event()
        self.error = None
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        try:
            conn = self.dash.pika()
            ch = conn.channel()
            deadline = time.monotonic() + 40
            while not self.stop.is_set() and time.monotonic() < deadline:
                for _ in range(5):
                    ch.basic_publish("", self.queue, b"tick")
                for _ in range(5):
                    method, _p, _b = ch.basic_get(self.queue, auto_ack=False)
                    if method:
                        ch.basic_ack(method.delivery_tag)
                conn.sleep(0.05)
            conn.close()
        except Exception as e:  # pragma: no cover - reported by the test
            self.error = e

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(10)
        assert self.error is None, self.error


# ---------------------------------------------------------------------------------------- the test

def test_dashboard_end_to_end(dash, browser, shots):
    d = browser
    conn = dash.pika()
    ch = conn.channel()
    for q in ("dash.orders", "dash.trash", "dash.rate"):
        ch.queue_declare(q, durable=True)
    ch.queue_declare("dash.work")
    orders = [f'order-{i} {{"sku": "A{i}", "qty": {i + 1}}}' for i in range(7)]
    for i, body in enumerate(orders):
        ch.basic_publish("", "dash.orders", body.encode(),
                         pika.BasicProperties(content_type="application/json", delivery_mode=2,
                                              headers={"n": i}))
    for i in range(2):
        ch.basic_publish("", "dash.trash", f"junk {i}".encode())
    holder = dash.pika()            # a second connection with a consumer, for the tables
    hch = holder.channel()
    hch.basic_qos(prefetch_count=5)
    hch.basic_consume("dash.work", lambda *a: None)

    # -- login: a wrong password is refused, then guest gets in
    d.get(dash.base + "/")
    wait(d, lambda d: d.find_element(By.ID, "login-form").is_displayed(), what="the login form")
    img = screenshot(d, shots, "01-login")
    login_box = element_box(d, "#login-form")
    cx = (login_box[0] + login_box[2]) / 2
    assert img.getpixel((int(cx), int(login_box[3]) - 6)) == (255, 255, 255), "the login card is white"
    assert sum(img.getpixel((10, 10))) < 200, "the login page background is dark"
    assert abs(cx - img.size[0] / 2) < 5, "the login card is centred"
    d.find_element(By.ID, "login-username").send_keys("guest")
    d.find_element(By.ID, "login-password").send_keys("nope")
    click(d, "#login-submit")
    wait(d, lambda d: "Login failed" in text(d, "#login-error"), what="the login error")
    assert not d.find_element(By.ID, "app").is_displayed()
    d.find_element(By.ID, "login-password").clear()
    d.find_element(By.ID, "login-password").send_keys("guest")
    click(d, "#login-submit")
    wait(d, lambda d: d.find_element(By.ID, "app").is_displayed(), what="the dashboard after login")
    assert text(d, "#user-name") == "guest"
    assert d.execute_script("return sessionStorage.getItem('usagi.auth')")
    Select(d.find_element(By.ID, "refresh-interval")).select_by_value("2000")

    # -- overview: object and message totals as the API has them
    status, ov = dash.api("GET", "/overview")
    assert status == 200
    assert ov["object_totals"]["queues"] == 4 and ov["queue_totals"]["messages_ready"] == 9
    expect = {"connections": "2", "channels": "2", "queues": "4", "consumers": "1",
              "exchanges": str(ov["object_totals"]["exchanges"]),
              "messages_ready": "9", "messages_unacknowledged": "0", "messages": "9"}
    wait(d, lambda d: {k: stat(d, k) for k in expect} == expect, what=f"overview totals {expect}")

    # -- live rates: under load the cards show non-zero rates and the charts draw their lines
    with RateLoad(dash, "dash.rate"):
        wait(d, lambda d: all(rate_of(stat(d, k)) > 0 for k in ("publish_rate", "deliver_rate", "ack_rate")),
             timeout=30, what="non-zero publish, deliver and ack rates")
        wait(d, lambda d: d.execute_script(CANVAS_PIXELS_JS, "#chart-rates", *PUBLISH_RGB) > 40,
             timeout=30, what="the publish line on the rates chart")
        wait(d, lambda d: d.execute_script(CANVAS_PIXELS_JS, "#chart-queued", *READY_RGB) > 40,
             timeout=30, what="the ready line on the queued messages chart")
        img = screenshot(d, shots, "02-overview")
    assert_header(img, "overview")
    box = element_box(d, "#chart-rates")
    assert box[2] - box[0] > 400 and box[3] - box[1] > 150, box
    assert region_count(img, box, PUBLISH_RGB) > 40, "the screenshot shows the publish line in the chart"
    area = (box[2] - box[0]) * (box[3] - box[1])
    assert region_count(img, box, (255, 255, 255), 3) > area * 0.5, "the chart is drawn on white"

    # -- the tables
    click(d, '#nav a[data-nav="exchanges"]')
    wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, '#exchanges-table tr[data-name="amq.topic"]'),
         what="amq.topic in the exchanges table")
    names = [r.get_attribute("data-name") for r in d.find_elements(By.CSS_SELECTOR, "#exchanges-table tbody tr")]
    assert "" in names and "amq.direct" in names and len(names) == ov["object_totals"]["exchanges"]
    click(d, '#nav a[data-nav="connections"]')
    wait(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#connections-table tbody tr[data-name]")) == 2,
         what="two rows in the connections table")
    assert "Pika" in text(d, "#connections-table tbody")
    click(d, '#nav a[data-nav="channels"]')
    wait(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#channels-table tbody tr[data-name]")) == 2,
         what="two rows in the channels table")
    click(d, '#nav a[data-nav="queues"]')
    row = '#queues-table tr[data-name="dash.orders"]'
    wait(d, lambda d: text(d, row + ' td[data-col="ready"]') == "7", what="dash.orders with 7 ready")
    assert text(d, row + ' td[data-col="total"]') == "7"
    assert text(d, '#queues-table tr[data-name="dash.work"] td[data-col="consumers"]') == "1"
    assert len(d.find_elements(By.CSS_SELECTOR, "#queues-table tbody tr[data-name]")) == 4
    filt = d.find_element(By.ID, "queues-table-filter")
    filt.send_keys("trash")
    wait(d, lambda d: [r.get_attribute("data-name") for r in
                       d.find_elements(By.CSS_SELECTOR, "#queues-table tbody tr[data-name]")] == ["dash.trash"],
         what="the filter to leave dash.trash alone")
    filt.clear()
    filt.send_keys("dash")
    wait(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#queues-table tbody tr[data-name]")) == 4,
         what="all four queues again")
    img = screenshot(d, shots, "03-queues")
    assert_header(img, "queues")

    # -- the queue page: peek shows the messages without consuming them
    click(d, row + " td.name a")
    wait(d, lambda d: text(d, "#queue-name") == "dash.orders", what="the queue page")
    wait(d, lambda d: stat(d, "messages_ready") == "7", what="7 ready on the queue page")
    _, before = dash.api("GET", "/queues/%2F/dash.orders")
    for _ in range(2):              # twice: peeking is repeatable
        click(d, "#peek-button")
        wait(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#peek-results .message")) == 7
             and "first 7" in text(d, "#peek-status"), what="7 peeked messages")
    payloads = [e.text for e in d.find_elements(By.CSS_SELECTOR, "#peek-results .message pre.payload")]
    assert payloads == orders
    assert all(e.text.endswith("no") for e in d.find_elements(By.CSS_SELECTOR, "#peek-results .redelivered"))
    assert "application/json" in text(d, '#peek-results .message[data-index="1"] .props')
    _, after = dash.api("GET", "/queues/%2F/dash.orders")
    assert after["messages"] == 7 and after["messages_ready"] == 7 and after["messages_unacknowledged"] == 0
    assert after["message_stats"]["deliver_get"] == before["message_stats"]["deliver_get"]
    assert after["message_stats"].get("redeliver", 0) == 0
    d.execute_script("document.getElementById('peek-panel').scrollIntoView({block: 'start'})")
    time.sleep(0.2)
    img = screenshot(d, shots, "04-queue-peek")
    panel = element_box(d, "#peek-panel")
    assert panel[1] < 80 and region_count(img, (panel[0], panel[1], panel[2], min(panel[3], img.size[1])),
                                          (255, 255, 255), 3) > 1000
    got = []
    for _ in range(7):
        method, _props, body = ch.basic_get("dash.orders", auto_ack=False)
        assert method is not None, "a peeked message went missing"
        got.append((body.decode(), method.redelivered))
        ch.basic_ack(method.delivery_tag)
    assert got == [(b, False) for b in orders]
    assert ch.basic_get("dash.orders", auto_ack=True)[0] is None

    # -- publish through the form; pika receives it with its properties
    d.execute_script("document.getElementById('publish-form').scrollIntoView({block: 'center'})")
    assert d.find_element(By.ID, "publish-routing-key").get_attribute("value") == "dash.orders"
    wait(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#publish-exchange option")) > 5,
         what="the exchange list of the publish form")
    Select(d.find_element(By.ID, "publish-delivery-mode")).select_by_value("2")
    d.find_element(By.ID, "publish-headers").send_keys("source=selenium\nattempt=3")
    d.find_element(By.ID, "publish-properties").send_keys("content_type=text/plain\ncorrelation_id=abc-123")
    d.find_element(By.ID, "publish-payload").send_keys("hello from the dashboard")
    click(d, "#publish-submit")
    wait(d, lambda d: "routed" in text(d, "#publish-result") and "not" not in text(d, "#publish-result"),
         what="the publish result")
    wait(d, lambda d: stat(d, "messages_ready") == "1", what="the published message counted")
    img = screenshot(d, shots, "05-queue-publish")
    assert_header(img, "queue page")
    method, props, body = ch.basic_get("dash.orders", auto_ack=True)
    assert body == b"hello from the dashboard" and not method.redelivered
    assert props.headers == {"source": "selenium", "attempt": 3}
    assert (props.content_type, props.correlation_id, props.delivery_mode) == ("text/plain", "abc-123", 2)

    # a routing key no queue is bound with is published but reported unroutable
    rk = d.find_element(By.ID, "publish-routing-key")
    rk.clear()
    rk.send_keys("nowhere")
    click(d, "#publish-submit")
    wait(d, lambda d: "not routed" in text(d, "#publish-result"), what="the unroutable report")

    # -- purge
    for i in range(3):
        ch.basic_publish("", "dash.orders", f"to purge {i}".encode())
    wait(d, lambda d: stat(d, "messages_ready") == "3", what="3 ready before the purge")
    click(d, "#purge-button")
    wait(d, lambda d: d.find_element(By.ID, "modal").is_displayed(), what="the purge confirmation")
    click(d, "#confirm-ok")
    wait(d, lambda d: dash.api("GET", "/queues/%2F/dash.orders")[1]["messages"] == 0, what="the purge")
    wait(d, lambda d: stat(d, "messages_ready") == "0", what="0 ready after the purge")

    # -- delete (cancel first: nothing happens)
    d.get(dash.base + "/#/queues/%2F/dash.trash")
    wait(d, lambda d: text(d, "#queue-name") == "dash.trash", what="the dash.trash page")
    click(d, "#delete-button")
    wait(d, lambda d: d.find_element(By.ID, "modal").is_displayed(), what="the delete confirmation")
    click(d, "#confirm-cancel")
    assert dash.api("GET", "/queues/%2F/dash.trash")[0] == 200
    click(d, "#delete-button")
    wait(d, lambda d: d.find_element(By.ID, "modal").is_displayed(), what="the delete confirmation")
    click(d, "#confirm-ok")
    wait(d, lambda d: d.execute_script("return location.hash") == "#/queues", what="back to the queues")
    assert dash.api("GET", "/queues/%2F/dash.trash")[0] == 404
    wait(d, lambda d: not d.find_elements(By.CSS_SELECTOR, '#queues-table tr[data-name="dash.trash"]')
         and d.find_elements(By.CSS_SELECTOR, '#queues-table tr[data-name="dash.orders"]'),
         what="dash.trash gone from the table")

    # -- log out: back to the login form, credentials forgotten
    click(d, "#logout")
    wait(d, lambda d: d.find_element(By.ID, "login-form").is_displayed(), what="the login form after logout")
    assert d.execute_script("return sessionStorage.getItem('usagi.auth')") is None
    d.refresh()
    wait(d, lambda d: d.find_element(By.ID, "login-form").is_displayed(), what="the login form after reload")
    assert not d.find_element(By.ID, "app").is_displayed()

    holder.close()
    conn.close()
    errors = [e for e in d.get_log("browser") if e.get("source") == "javascript"]
    assert not errors, f"JavaScript errors in the page: {errors}"
