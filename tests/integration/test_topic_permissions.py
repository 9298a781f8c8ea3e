"""Topic permissions: on topic exchanges, routing keys are checked against the user's patterns."""
from __future__ import annotations

import json
import re
import urllib.request
import uuid

import pika
import pytest

from support.harness import wait_for

pytestmark = pytest.mark.timeout(60)


def _mgmt(server_lines):
    for line in server_lines:
        m = re.search(r"Management listener on (\S+):(\d+)", line)
        if m:
            return f"http://{m.group(1)}:{m.group(2)}"
    return None


def _api(base, method, path, body=None):
    req = urllib.request.Request(base + path, method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})
    import base64
    req.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status


def test_topic_write_and_read_patterns(fresh_server):
    srv = fresh_server()
    base = wait_for(lambda: _mgmt(srv.lines), timeout=10, message="the management listener")
    user = "tp-" + uuid.uuid4().hex[:6]
    _api(base, "PUT", f"/api/users/{user}", {"password": "pw", "tags": ""})
    _api(base, "PUT", f"/api/permissions/%2F/{user}", {"configure": ".*", "write": ".*", "read": ".*"})
    _api(base, "PUT", f"/api/topic-permissions/%2F/{user}",
         {"exchange": "amq.topic", "write": "^orders\\.", "read": "^orders\\.{username}"})
    conn = pika.BlockingConnection(pika.URLParameters(f"amqp://{user}:pw@127.0.0.1:{srv.port}/%2F"))
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, "amq.topic", f"orders.{user}.#")
    ch.basic_publish("amq.topic", f"orders.{user}.1", b"ok")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.basic_publish("amq.topic", "invoices.1", b"no")
        ch.queue_declare(q, passive=True)
    assert (e.value.reply_code, e.value.reply_text) == (
        403, f"ACCESS_REFUSED - access to topic 'invoices.1' in exchange 'amq.topic' in vhost '/' "
             f"refused for user '{user}'")
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_bind(q, "amq.topic", "orders.someone-else.#")
    assert e.value.reply_code == 403
    ch = conn.channel()
    assert ch.basic_get(q, auto_ack=True)[2] == b"ok"
    conn.close()
