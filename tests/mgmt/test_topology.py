"""Exchanges, queues, bindings, policies, publish and get through the management API."""
from __future__ import annotations

import base64

import pika
from mgmtutil import q, wait_until

QUEUE_KEYS = ("name", "vhost", "durable", "auto_delete", "exclusive", "arguments", "type", "state",
              "messages", "messages_ready", "messages_unacknowledged", "consumers", "node", "policy",
              "message_stats", "messages_details", "message_bytes", "effective_policy_definition")


def test_exchanges(api, mgmt):
    names = {x["name"] for x in api.get("/api/exchanges/%2F").json()}
    assert {"", "amq.direct", "amq.fanout", "amq.topic", "amq.headers", "amq.match"} <= names
    default = api.get("/api/exchanges/%2F/amq.default").json()
    assert default["name"] == "" and default["type"] == "direct" and default["durable"] is True

    assert api.put("/api/exchanges/%2F/events", {"type": "fanout", "durable": True}).status == 201
    assert api.put("/api/exchanges/%2F/events", {"type": "fanout", "durable": True}).status == 204
    x = api.get("/api/exchanges/%2F/events").json()
    for key in ("name", "vhost", "type", "durable", "auto_delete", "internal", "arguments",
                "incoming", "outgoing", "user_who_performed_action"):
        assert key in x, key
    assert (x["type"], x["durable"], x["auto_delete"], x["internal"]) == ("fanout", True, False, False)

    r = api.put("/api/exchanges/%2F/events", {"type": "topic", "durable": True})
    assert r.status == 400
    assert r.json() == {"error": "bad_request", "reason": "inequivalent arg 'type' for exchange 'events' in "
                                                          "vhost '/': received 'topic' but current is 'fanout'"}
    r = api.put("/api/exchanges/%2F/bad", {"type": "nonsense"})
    assert r.status == 400 and "nonsense" in r.json()["reason"]
    assert api.put("/api/exchanges/%2F/amq.mine", {"type": "direct"}).json() == {
        "error": "not_authorised", "reason": "Access refused."}
    assert api.delete("/api/exchanges/%2F/amq.fanout").status == 401
    assert api.put("/api/exchanges/nope/x", {"type": "direct"}).json() == {
        "error": "not_found", "reason": "vhost_not_found"}

    # in use: if-unused refuses, a plain delete removes it
    api.ok("PUT", "/api/queues/%2F/evq")
    api.ok("POST", "/api/bindings/%2F/e/events/q/evq", {})
    r = api.delete("/api/exchanges/%2F/events?if-unused=true")
    assert r.status == 400 and r.json()["reason"] == "exchange 'events' in vhost '/' in use"
    assert api.delete("/api/exchanges/%2F/events").status == 204
    assert api.get("/api/exchanges/%2F/events").status == 404
    assert api.delete("/api/exchanges/%2F/events").status == 404


def test_publish(api, mgmt):
    api.ok("PUT", "/api/queues/%2F/inbox")
    body = {"properties": {"delivery_mode": 2, "content_type": "text/plain", "headers": {"n": 1, "s": "x"},
                           "message_id": "m-1", "priority": 3, "timestamp": 1700000000},
            "routing_key": "inbox", "payload": "hello", "payload_encoding": "string"}
    assert api.post("/api/exchanges/%2F/amq.default/publish", body).json() == {"routed": True}
    body2 = dict(body, routing_key="nowhere")
    assert api.post("/api/exchanges/%2F/amq.default/publish", body2).json() == {"routed": False}
    raw = dict(body, properties={}, payload=base64.b64encode(b"\xff\x00").decode(), payload_encoding="base64")
    assert api.post("/api/exchanges/%2F/amq.default/publish", raw).json() == {"routed": True}

    ch = mgmt.pika().channel()
    method, props, got = ch.basic_get("inbox", auto_ack=True)
    assert got == b"hello"
    assert props.content_type == "text/plain" and props.delivery_mode == 2 and props.priority == 3
    assert props.headers == {"n": 1, "s": "x"} and props.message_id == "m-1"
    assert props.timestamp == 1700000000
    assert method.routing_key == "inbox" and method.exchange == ""
    assert ch.basic_get("inbox", auto_ack=True)[2] == b"\xff\x00"

    r = api.post("/api/exchanges/%2F/amq.default/publish", {"routing_key": "x", "payload": "p"})
    assert r.status == 400
    assert r.json()["reason"] == "[{key_missing,properties},{key_missing,payload_encoding}]"
    r = api.post("/api/exchanges/%2F/nope/publish", dict(body))
    # RabbitMQ 4.x answers 404 before reading the body (3.10 published and relayed the channel's 404)
    assert r.status == 404 and r.json() == {"error": "not_found", "reason": "exchange_not_found"}
    api.ok("PUT", "/api/exchanges/%2F/hidden", {"type": "topic", "internal": True})
    r = api.post("/api/exchanges/%2F/hidden/publish", dict(body))
    assert r.status == 400 and r.json()["reason"].startswith("403 ACCESS_REFUSED")
    r = api.post("/api/exchanges/%2F/amq.default/publish", dict(body, payload="!!", payload_encoding="base64"))
    assert r.status == 400 and r.json()["reason"] == ["not_base64", "!!"]


def test_queue_lifecycle_and_fields(api, mgmt):
    assert api.put("/api/queues/%2F/jobs", {"durable": True, "arguments": {"x-max-length": 10}}).status == 201
    assert api.put("/api/queues/%2F/jobs", {"durable": True, "arguments": {"x-max-length": 10}}).status == 204
    r = api.put("/api/queues/%2F/jobs", {"durable": False})
    assert r.status == 400
    assert r.json()["reason"] == ("inequivalent arg 'durable' for queue 'jobs' in vhost '/': received 'false' "
                                  "but current is 'true'")
    assert api.put("/api/queues/%2F/amq.nope").status == 401
    assert api.put("/api/queues/nope/jobs").json() == {"error": "not_found", "reason": "vhost_not_found"}

    ch = mgmt.pika().channel()
    for i in range(3):
        ch.basic_publish("", "jobs", b"job-%d" % i, pika.BasicProperties(delivery_mode=2))
    qj = wait_until(lambda: (lambda d: d if d["messages"] == 3 else None)(api.get("/api/queues/%2F/jobs").json()),
                    5, message="3 messages in jobs")
    for key in QUEUE_KEYS:
        assert key in qj, key
    assert (qj["durable"], qj["auto_delete"], qj["exclusive"], qj["type"], qj["state"]) == \
        (True, False, False, "classic", "running")
    assert qj["arguments"] == {"x-max-length": 10}
    assert qj["messages_ready"] == 3 and qj["messages_unacknowledged"] == 0
    assert qj["message_bytes"] == qj["message_bytes_ready"] == 15
    assert qj["messages_persistent"] == 3
    assert qj["message_stats"]["publish"] == 3
    assert qj["consumer_details"] == [] and qj["policy"] is None
    assert [x["name"] for x in api.get("/api/queues/%2F").json()] == ["jobs"]
    assert api.get("/api/queues").json()[0]["name"] == "jobs"

    r = api.delete("/api/queues/%2F/jobs?if-empty=true")
    assert r.status == 400 and r.json()["reason"] == "queue 'jobs' in vhost '/' not empty"
    ch.basic_consume("jobs", lambda *a: None)
    wait_until(lambda: api.get("/api/queues/%2F/jobs").json()["consumers"] == 1, 5)
    r = api.delete("/api/queues/%2F/jobs?if-unused=true")
    assert r.status == 400 and r.json()["reason"] == "queue 'jobs' in vhost '/' in use"
    assert api.delete("/api/queues/%2F/jobs").status == 204
    assert api.get("/api/queues/%2F/jobs").status == 404
    assert api.delete("/api/queues/%2F/jobs").status == 404


def test_purge(api, mgmt):
    api.ok("PUT", "/api/queues/%2F/p")
    ch = mgmt.pika().channel()
    for _ in range(4):
        ch.basic_publish("", "p", b"x")
    wait_until(lambda: api.get("/api/queues/%2F/p").json()["messages"] == 4, 5)
    assert api.delete("/api/queues/%2F/p/contents").status == 204
    assert api.get("/api/queues/%2F/p").json()["messages"] == 0
    assert api.delete("/api/queues/%2F/nope/contents").status == 404


def _get(api, queue, **kw):
    body = {"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto"}
    body.update(kw)
    return api.post(f"/api/queues/%2F/{q(queue)}/get", body)


def test_get_messages(api, mgmt):
    api.ok("PUT", "/api/queues/%2F/g")
    ch = mgmt.pika().channel()
    ch.basic_publish("", "g", b"first message", pika.BasicProperties(content_type="text/plain",
                                                                    headers={"k": "v"}))
    ch.basic_publish("", "g", b"\xff\xfe")
    ch.basic_publish("", "g", b"third")
    wait_until(lambda: api.get("/api/queues/%2F/g").json()["messages"] == 3, 5)

    msgs = _get(api, "g", count=2, truncate=5).json()
    assert msgs == [
        {"payload_bytes": 13, "redelivered": False, "exchange": "", "routing_key": "g", "message_count": 2,
         "properties": {"content_type": "text/plain", "headers": {"k": "v"}}, "payload": "first",
         "payload_encoding": "string"},
        {"payload_bytes": 2, "redelivered": False, "exchange": "", "routing_key": "g", "message_count": 1,
         "properties": [], "payload": base64.b64encode(b"\xff\xfe").decode(), "payload_encoding": "base64"},
    ]
    # ack_requeue_true put them back, in place and marked redelivered
    again = _get(api, "g", count=1, encoding="base64").json()
    assert again[0]["redelivered"] is True and base64.b64decode(again[0]["payload"]) == b"first message"
    assert api.get("/api/queues/%2F/g").json()["messages"] == 3

    taken = _get(api, "g", count=1, ackmode="ack_requeue_false").json()
    assert taken[0]["payload"] == "first message"
    assert api.get("/api/queues/%2F/g").json()["messages"] == 2
    rejected = _get(api, "g", count=1, ackmode="reject_requeue_false").json()
    assert rejected[0]["payload_encoding"] == "base64"
    kept = _get(api, "g", count=5, ackmode="reject_requeue_true").json()
    assert [m["payload"] for m in kept] == ["third"]
    assert api.get("/api/queues/%2F/g").json()["messages"] == 1
    assert _get(api, "g", count=0).json() == []

    r = api.post("/api/queues/%2F/g/get", {"count": 1})
    assert r.status == 400 and r.json()["reason"] == "[{key_missing,ackmode},{key_missing,encoding}]"
    r = _get(api, "g", encoding="utf8")
    assert r.status == 400 and r.json()["reason"] == "Unsupported encoding. Please use auto or base64."
    assert _get(api, "g", ackmode="keep").status == 400
    assert _get(api, "nope").status == 404
    # the message left is still deliverable over AMQP
    assert ch.basic_get("g", auto_ack=True)[2] == b"third"


def test_bindings(api, mgmt):
    api.ok("PUT", "/api/exchanges/%2F/logs", {"type": "topic"})
    api.ok("PUT", "/api/exchanges/%2F/fan", {"type": "fanout"})
    api.ok("PUT", "/api/queues/%2F/errors")
    r = api.post("/api/bindings/%2F/e/logs/q/errors", {"routing_key": "*.error", "arguments": {"x": 1}})
    assert r.status == 201
    location = r.headers["Location"]
    assert location.startswith("errors/")
    pkey = location.split("/", 1)[1]
    assert pkey.startswith("%2A.error~")
    r = api.post("/api/bindings/%2F/e/logs/q/errors", {"routing_key": "#"})
    assert r.headers["Location"] == "errors/%23"
    api.ok("POST", "/api/bindings/%2F/e/logs/e/fan", {"routing_key": "audit.#"})

    between = api.get("/api/bindings/%2F/e/logs/q/errors").json()
    assert sorted(b["routing_key"] for b in between) == ["#", "*.error"]
    b = [b for b in between if b["routing_key"] == "*.error"][0]
    assert b == {"source": "logs", "vhost": "/", "destination": "errors", "destination_type": "queue",
                 "routing_key": "*.error", "arguments": {"x": 1}, "properties_key": pkey}
    qb = api.get("/api/queues/%2F/errors/bindings").json()
    assert {"source": "", "vhost": "/", "destination": "errors", "destination_type": "queue",
            "routing_key": "errors", "arguments": {}, "properties_key": "errors"} in qb
    assert len(qb) == 3
    assert len(api.get("/api/exchanges/%2F/logs/bindings/source").json()) == 3
    dest = api.get("/api/exchanges/%2F/fan/bindings/destination").json()
    assert [(d["source"], d["destination_type"], d["routing_key"]) for d in dest] == \
        [("logs", "exchange", "audit.#")]
    assert len(api.get("/api/bindings/%2F").json()) == 4       # 1 default + 3
    assert len(api.get("/api/bindings").json()) == 4

    # the binding routes over AMQP; the properties key addresses one binding
    ch = mgmt.pika().channel()
    ch.basic_publish("logs", "db.error", b"e1")
    wait_until(lambda: api.get("/api/queues/%2F/errors").json()["messages"] == 1, 5)
    assert api.get(f"/api/bindings/%2F/e/logs/q/errors/{pkey}").json()["routing_key"] == "*.error"
    assert api.delete(f"/api/bindings/%2F/e/logs/q/errors/{pkey}").status == 204
    assert api.delete(f"/api/bindings/%2F/e/logs/q/errors/{pkey}").status == 404
    assert api.delete("/api/bindings/%2F/e/logs/q/errors/%23").status == 204
    assert api.get("/api/bindings/%2F/e/logs/q/errors").json() == []
    ch.basic_publish("logs", "db.error", b"e2")
    ch.queue_declare("errors", passive=True)
    assert api.get("/api/queues/%2F/errors").json()["messages"] == 1

    r = api.post("/api/bindings/%2F/e/nope/q/errors", {"routing_key": "k"})
    assert r.status == 404 and r.json() == {"error": "not_found", "reason": "no exchange 'nope' in vhost '/'"}
    assert api.post("/api/bindings/%2F/e/amq.default/q/errors", {"routing_key": "k"}).status == 401
    assert api.get("/api/bindings/%2F/e/logs/x/errors").status == 404
    # an empty routing key without arguments is addressed as "~"
    api.ok("POST", "/api/bindings/%2F/e/fan/q/errors", {})
    assert api.get("/api/bindings/%2F/e/fan/q/errors").json()[0]["properties_key"] == "~"
    assert api.delete("/api/bindings/%2F/e/fan/q/errors/~").status == 204


def test_policies(api, mgmt):
    body = {"pattern": "^ha\\.", "definition": {"max-length": 10, "message-ttl": 1000}, "priority": 2,
            "apply-to": "queues"}
    assert api.put("/api/policies/%2F/limits", body).status == 201
    assert api.put("/api/policies/%2F/limits", body).status == 204
    p = api.get("/api/policies/%2F/limits").json()
    assert p == {"vhost": "/", "name": "limits", "pattern": "^ha\\.", "apply-to": "queues",
                 "definition": {"max-length": 10, "message-ttl": 1000}, "priority": 2}
    assert api.get("/api/policies").json() == [p]
    assert api.get("/api/policies/%2F").json() == [p]
    api.ok("PUT", "/api/policies/%2F/low", {"pattern": ".*", "definition": {"expires": 60000}, "priority": 1})

    api.ok("PUT", "/api/queues/%2F/ha.one")
    api.ok("PUT", "/api/queues/%2F/plain")
    one = api.get("/api/queues/%2F/ha.one").json()
    assert one["policy"] == "limits"
    assert one["effective_policy_definition"] == {"max-length": 10, "message-ttl": 1000}
    assert api.get("/api/queues/%2F/plain").json()["policy"] == "low"
    api.ok("PUT", "/api/policies/%2F/xpol", {"pattern": "^amq\\.topic$", "definition": {"alternate-exchange": "x"},
                                              "apply-to": "exchanges", "priority": 5})
    assert api.get("/api/exchanges/%2F/amq.topic").json()["policy"] == "xpol"

    r = api.put("/api/policies/%2F/bad", {"pattern": ".*"})
    assert r.status == 400 and r.json()["reason"] == "[{key_missing,definition}]"
    r = api.put("/api/policies/%2F/bad", {"pattern": ".*", "definition": {"no-such-key": 1}})
    assert r.status == 400 and "not recognised" in r.json()["reason"]
    r = api.put("/api/policies/%2F/bad", {"pattern": ".*", "definition": {"max-length": -1}})
    assert r.status == 400
    r = api.put("/api/policies/%2F/bad", {"pattern": ".*", "definition": {"max-length": 1}, "apply-to": "x"})
    assert r.status == 400

    assert api.delete("/api/policies/%2F/limits").status == 204
    assert api.delete("/api/policies/%2F/limits").status == 404
    assert api.get("/api/queues/%2F/ha.one").json()["policy"] == "low"


def test_list_columns_sort_and_pagination(api):
    for name in ("b-q", "a-q", "c-q"):
        api.ok("PUT", f"/api/queues/%2F/{name}")
    assert api.get("/api/queues/%2F?columns=name").json() == [{"name": "a-q"}, {"name": "b-q"}, {"name": "c-q"}]
    assert [x["name"] for x in api.get("/api/queues?sort=name&sort_reverse=true").json()] == \
        ["c-q", "b-q", "a-q"]
    page = api.get("/api/queues?page=2&page_size=2").json()
    assert page["total_count"] == 3 and page["filtered_count"] == 3 and page["page_count"] == 2
    assert page["page"] == 2 and page["item_count"] == 1 and page["items"][0]["name"] == "c-q"
    assert api.get("/api/queues?page=1&page_size=10&name=b-").json()["items"][0]["name"] == "b-q"
    assert api.get("/api/queues?page=0").status == 400
    only = api.get("/api/queues/%2F/a-q?columns=name,message_stats.publish").json()
    assert set(only) == {"name", "message_stats"} and set(only["message_stats"]) == {"publish"}
