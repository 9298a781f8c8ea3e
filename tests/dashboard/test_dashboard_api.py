"""The dashboard's server side without a browser: static files, and the read-only peek endpoint
GET /api/queues/{vhost}/{name}/peek that the queue page uses."""
from __future__ import annotations

import base64
import os
import re
import urllib.request

import pytest

pika = pytest.importorskip("pika")

STATIC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                      "usagi", "mgmt", "static")


def fetch(url: str):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.headers.get("Content-Type", ""), r.read()


def test_peek_does_not_consume(dash):
    conn = dash.pika()
    ch = conn.channel()
    ch.queue_declare("peeked", durable=True)
    for i in range(5):
        ch.basic_publish("", "peeked", f"m{i}".encode(),
                         pika.BasicProperties(content_type="text/plain", headers={"i": i}, delivery_mode=2))
    ch.basic_publish("", "peeked", b"\xff\xfe binary", pika.BasicProperties())
    # take m0 and give it back: it is now a redelivery, first in line
    method, _props, body = ch.basic_get("peeked", auto_ack=False)
    assert body == b"m0" and not method.redelivered
    ch.basic_reject(method.delivery_tag, requeue=True)

    status, before = dash.api("GET", "/queues/%2F/peeked")
    assert status == 200 and before["messages"] == 6

    status, msgs = dash.api("GET", "/queues/%2F/peeked/peek?count=100")
    assert status == 200
    assert [m["payload"] for m in msgs[:5]] == ["m0", "m1", "m2", "m3", "m4"]
    assert [m["redelivered"] for m in msgs] == [True, False, False, False, False, False]
    first = msgs[1]
    assert first["properties"] == {"content_type": "text/plain", "headers": {"i": 1}, "delivery_mode": 2}
    assert first["exchange"] == "" and first["routing_key"] == "peeked"
    assert first["payload_encoding"] == "string" and first["payload_bytes"] == 2
    assert msgs[5]["payload_encoding"] == "base64"
    assert base64.b64decode(msgs[5]["payload"]) == b"\xff\xfe binary"
    assert [m["message_count"] for m in msgs] == [5, 4, 3, 2, 1, 0]

    status, msgs = dash.api("GET", "/queues/%2F/peeked/peek?count=2&truncate=1&encoding=base64")
    assert status == 200 and len(msgs) == 2
    assert base64.b64decode(msgs[1]["payload"]) == b"m" and msgs[1]["payload_bytes"] == 2

    # nothing was taken: same count, no deliveries counted, and a real get sees no new redelivery
    status, after = dash.api("GET", "/queues/%2F/peeked")
    assert after["messages"] == 6 and after["messages_unacknowledged"] == 0
    assert after["message_stats"]["deliver_get"] == before["message_stats"]["deliver_get"]
    got = []
    for _ in range(6):
        method, _props, body = ch.basic_get("peeked", auto_ack=True)
        got.append((body, method.redelivered))
    assert got == [(b"m0", True), (b"m1", False), (b"m2", False), (b"m3", False), (b"m4", False),
                   (b"\xff\xfe binary", False)]
    conn.close()


def test_static_files_and_peek_errors(dash):
    # the dashboard's files
    status, ctype, body = fetch(dash.base + "/")
    assert status == 200 and ctype.startswith("text/html")
    html = body.decode()
    assert 'id="login-form"' in html
    for name, want in (("app.js", "javascript"), ("style.css", "text/css"), ("favicon.svg", "svg")):
        assert f'"{name}"' in html, name
        status, ctype, body = fetch(f"{dash.base}/{name}")
        assert status == 200 and want in ctype and len(body) > 100, (name, ctype)
    # no CDN, no remote fonts: every URL the page loads is local
    for name in os.listdir(STATIC):
        with open(os.path.join(STATIC, name), encoding="utf-8") as f:
            text = f.read()
        remote = re.findall(r"""(?:src|href|url)\s*[=(]\s*["']?(?:https?:)?//""", text)
        assert not remote, f"{name} loads something remote: {remote}"
        assert "@import" not in text, name

    # the peek endpoint's errors and access rules
    conn = dash.pika()
    conn.channel().queue_declare("private")
    conn.close()
    assert dash.api("GET", "/queues/%2F/nosuch/peek")[0] == 404
    assert dash.api("GET", "/queues/nosuchvhost/private/peek")[0] == 404
    assert dash.api("GET", "/queues/%2F/private/peek?count=x")[0] == 400
    assert dash.api("GET", "/queues/%2F/private/peek?count=-1")[0] == 400
    assert dash.api("GET", "/queues/%2F/private/peek?encoding=hex")[0] == 400
    assert dash.api("GET", "/queues/%2F/private/peek", user=None)[0] == 401
    assert dash.api("GET", "/queues/%2F/private/peek", password="wrong")[0] == 401
    assert dash.api("GET", "/queues/%2F/private/peek?count=0") == (200, [])
    # a management user without read permission on the queue may not peek
    assert dash.api("PUT", "/users/viewer", {"password": "pw", "tags": "management"})[0] in (201, 204)
    assert dash.api("PUT", "/permissions/%2F/viewer",
                    {"configure": ".*", "write": ".*", "read": "^$"})[0] in (201, 204)
    status, body = dash.api("GET", "/queues/%2F/private/peek", user="viewer", password="pw")
    assert status == 401 and body["error"] == "not_authorised"
    assert dash.api("PUT", "/permissions/%2F/viewer",
                    {"configure": ".*", "write": ".*", "read": ".*"})[0] in (201, 204)
    assert dash.api("GET", "/queues/%2F/private/peek", user="viewer", password="pw") == (200, [])
