"""Vhosts, users, permissions and definitions export/import through the management API."""
from __future__ import annotations

import pika
import pytest
from mgmtutil import q

PERMS = {"configure": ".*", "write": ".*", "read": ".*"}


def test_vhost_lifecycle(api, mgmt):
    assert api.put("/api/vhosts/dev", {"description": "for devs", "tags": "a,b"}).status == 201
    assert api.put("/api/vhosts/dev", {"description": "for devs"}).status == 204
    v = api.get("/api/vhosts/dev").json()
    assert v["name"] == "dev" and v["description"] == "for devs" and v["tags"] == ["a", "b"]
    assert v["metadata"]["description"] == "for devs" and v["tracing"] is False
    assert v["messages"] == 0 and "message_stats" in v and v["cluster_state"]
    names = [x["name"] for x in api.get("/api/vhosts").json()]
    assert names == ["/", "dev"]
    assert api.get("/api/vhosts/%2F").json()["name"] == "/"

    # as in RabbitMQ, the user that created the vhost was granted full permissions on it
    assert api.get("/api/permissions/dev/guest").json()["configure"] == ".*"
    assert api.delete("/api/permissions/dev/guest").status == 204
    # no permission now: the broker refuses the AMQP login to the vhost
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        mgmt.pika("dev")
    assert api.put("/api/permissions/dev/guest", PERMS).status == 201
    conn = mgmt.pika("dev")
    conn.channel().queue_declare("in-dev")
    assert api.get("/api/queues/dev/in-dev").json()["vhost"] == "dev"

    assert api.delete("/api/vhosts/dev").status == 204
    assert api.delete("/api/vhosts/dev").status == 404
    assert api.get("/api/vhosts/dev").status == 404
    assert api.get("/api/queues/dev/in-dev").status == 404


def test_user_lifecycle_and_login(api, mgmt):
    r = api.put("/api/users/alice", {"password": "s3cret"})
    assert r.status == 400 and r.json() == {"error": "bad_request", "reason": "tags_not_present"}
    r = api.put("/api/users/alice", {"password": "a", "password_hash": "b", "tags": ""})
    assert r.json()["reason"] == "both_password_and_password_hash_are_provided"

    assert api.put("/api/users/alice", {"password": "s3cret", "tags": "monitoring,policymaker"}).status == 201
    u = api.get("/api/users/alice").json()
    assert u["tags"] == ["monitoring", "policymaker"]
    assert u["hashing_algorithm"] == "rabbit_password_hashing_sha256" and u["password_hash"]
    assert u["limits"] == {}
    assert api.put("/api/permissions/%2F/alice", PERMS).status == 201
    mgmt.pika(user="alice", password="s3cret").close()

    # a second user with the same password hash can log in with the same password
    assert api.put("/api/users/bob", {"password_hash": u["password_hash"], "tags": ["management"],
                                      "hashing_algorithm": u["hashing_algorithm"]}).status == 201
    api.ok("PUT", "/api/permissions/%2F/bob", PERMS)
    mgmt.pika(user="bob", password="s3cret").close()
    assert api.as_user("bob", "s3cret").get("/api/whoami").json() == {
        "name": "bob", "tags": ["management"], "is_internal_user": True}

    # update: new tags and password
    assert api.put("/api/users/bob", {"password": "n3w", "tags": "administrator"}).status == 204
    assert api.get("/api/users/bob").json()["tags"] == ["administrator"]
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        mgmt.pika(user="bob", password="s3cret")
    mgmt.pika(user="bob", password="n3w").close()

    assert sorted(x["name"] for x in api.get("/api/users").json()) == ["alice", "bob", "guest"]
    assert api.delete("/api/users/alice").status == 204
    assert api.delete("/api/users/alice").status == 404
    assert api.get("/api/users/alice").status == 404
    assert api.get("/api/permissions/%2F/alice").status == 404


def test_deleting_a_user_closes_its_connections(api, mgmt):
    api.ok("PUT", "/api/users/carol", {"password": "c", "tags": ""})
    api.ok("PUT", "/api/permissions/%2F/carol", PERMS)
    conn = mgmt.pika(user="carol", password="c")
    assert api.delete("/api/users/carol").status == 204
    with pytest.raises(pika.exceptions.ConnectionClosed):
        for _ in range(50):
            conn.process_data_events(0.1)


def test_permissions(api):
    api.ok("PUT", "/api/users/dave", {"password": "d", "tags": ""})
    r = api.put("/api/permissions/%2F/dave", {"configure": ".*"})
    assert r.status == 400
    assert r.json() == {"error": "bad_request", "reason": "[{key_missing,write},{key_missing,read}]"}
    assert api.put("/api/permissions/nope/dave", PERMS).json()["reason"] == "vhost_or_user_not_found"
    assert api.put("/api/permissions/%2F/nobody", PERMS).json()["reason"] == "vhost_or_user_not_found"
    assert api.put("/api/permissions/%2F/dave", {"configure": "^d-", "write": ".*", "read": ""}).status == 201
    assert api.put("/api/permissions/%2F/dave", {"configure": "^dd-", "write": ".*", "read": ""}).status == 204
    p = api.get("/api/permissions/%2F/dave").json()
    assert p == {"user": "dave", "vhost": "/", "configure": "^dd-", "write": ".*", "read": ""}
    assert p in api.get("/api/permissions").json()
    assert p in api.get("/api/users/dave/permissions").json()
    assert p in api.get("/api/vhosts/%2F/permissions").json()
    assert api.delete("/api/permissions/%2F/dave").status == 204
    assert api.delete("/api/permissions/%2F/dave").status == 404
    assert api.get("/api/users/dave/permissions").json() == []
    assert [u["name"] for u in api.get("/api/users/without-permissions").json()] == ["dave"]


def test_amqp_permissions_apply_to_api_operations(api):
    api.ok("PUT", "/api/users/erin", {"password": "e", "tags": "management"})
    api.ok("PUT", "/api/permissions/%2F/erin", {"configure": "^erin-", "write": "^erin-", "read": "^erin-"})
    erin = api.as_user("erin", "e")
    assert erin.put("/api/queues/%2F/erin-q").status == 201
    r = erin.put("/api/queues/%2F/other-q")
    assert r.status == 401 and r.json() == {"error": "not_authorised", "reason": "Access refused."}
    assert erin.delete("/api/exchanges/%2F/amq.direct").status == 401
    assert erin.get("/api/queues/%2F").status == 200


def _make_state(api, mgmt):
    api.ok("PUT", "/api/vhosts/shop", {"description": "the shop"})
    api.ok("PUT", "/api/users/frank", {"password": "f", "tags": ["management"]})
    api.ok("PUT", "/api/permissions/shop/frank", {"configure": ".*", "write": ".*", "read": "^x"})
    api.ok("PUT", "/api/permissions/shop/guest", PERMS)
    api.ok("PUT", "/api/exchanges/shop/orders", {"type": "topic", "durable": True,
                                                  "arguments": {"alternate-exchange": "amq.fanout"}})
    api.ok("PUT", "/api/queues/shop/order-log", {"durable": True, "arguments": {"x-max-length": 1000}})
    api.ok("POST", "/api/bindings/shop/e/orders/q/order-log", {"routing_key": "order.#", "arguments": {"k": 1}})
    api.ok("PUT", "/api/policies/shop/cap", {"pattern": "^order", "definition": {"max-length": 500},
                                              "priority": 3, "apply-to": "queues"})
    conn = mgmt.pika("shop")
    conn.channel().queue_declare("", exclusive=True)      # exclusive queues are not exported


def test_definitions_export(api, mgmt):
    _make_state(api, mgmt)
    d = api.get("/api/definitions").json()
    for key in ("rabbit_version", "users", "vhosts", "permissions", "topic_permissions", "parameters",
                "global_parameters", "policies", "queues", "exchanges", "bindings"):
        assert key in d, key
    frank = [u for u in d["users"] if u["name"] == "frank"][0]
    assert frank["tags"] == ["management"] and frank["hashing_algorithm"] == "rabbit_password_hashing_sha256"
    assert frank["password_hash"]
    assert [v["description"] for v in d["vhosts"] if v["name"] == "shop"] == ["the shop"]
    assert {"user": "frank", "vhost": "shop", "configure": ".*", "write": ".*", "read": "^x"} in d["permissions"]
    assert d["queues"] == [{"name": "order-log", "vhost": "shop", "durable": True, "auto_delete": False,
                            "arguments": {"x-max-length": 1000}}]
    assert d["exchanges"] == [{"name": "orders", "vhost": "shop", "type": "topic", "durable": True,
                               "auto_delete": False, "internal": False,
                               "arguments": {"alternate-exchange": "amq.fanout"}}]
    assert d["bindings"] == [{"source": "orders", "vhost": "shop", "destination": "order-log",
                              "destination_type": "queue", "routing_key": "order.#", "arguments": {"k": 1}}]
    assert d["policies"] == [{"vhost": "shop", "name": "cap", "pattern": "^order", "apply-to": "queues",
                              "definition": {"max-length": 500}, "priority": 3}]
    assert any(g["name"] == "internal_cluster_id" for g in d["global_parameters"])

    per = api.get("/api/definitions/shop").json()
    assert per["queues"] == [{"name": "order-log", "durable": True, "auto_delete": False,
                              "arguments": {"x-max-length": 1000}}]
    assert "users" not in per and "vhost" not in per["bindings"][0]
    r = api.get("/api/definitions?download=defs.json")
    assert r.headers["Content-Disposition"] == "attachment; filename=defs.json"


def test_definitions_import_round_trip(api, mgmt, start_mgmt):
    _make_state(api, mgmt)
    exported = api.get("/api/definitions").json()
    other = start_mgmt(extra_args=["--in-memory"])
    api2 = other.api
    r = api2.request("POST", "/api/definitions", raw=b"{oops")
    assert r.status == 400 and r.json()["reason"] == "failed_to_parse_json"
    assert api2.post("/api/definitions", exported).status == 204
    again = api2.get("/api/definitions").json()
    for key in ("queues", "exchanges", "bindings", "policies", "permissions"):
        assert again[key] == exported[key], key
    assert {u["name"]: u["password_hash"] for u in again["users"]} == \
        {u["name"]: u["password_hash"] for u in exported["users"]}
    # the imported password hash logs in with the original password
    other.pika("shop", user="frank", password="f").close()
    # the imported topology routes
    ch = other.pika("shop").channel()
    ch.basic_publish("orders", "order.created", b"o1")
    _wait_messages(api2, "shop", "order-log", 1)


def _wait_messages(api, vhost, queue, n):
    from mgmtutil import wait_until
    return wait_until(lambda: api.get(f"/api/queues/{q(vhost)}/{q(queue)}").json()["messages"] == n, 5)


def test_vhost_definitions_import(api):
    api.ok("PUT", "/api/vhosts/v2")
    defs = {"queues": [{"name": "dq", "durable": True, "auto_delete": False, "arguments": {}}],
            "exchanges": [{"name": "dx", "type": "fanout", "durable": True, "auto_delete": False,
                           "internal": False, "arguments": {}}],
            "bindings": [{"source": "dx", "destination": "dq", "destination_type": "queue",
                          "routing_key": "", "arguments": {}}]}
    assert api.post("/api/definitions/v2", defs).status == 204
    assert api.get("/api/queues/v2/dq").json()["durable"] is True
    assert api.get("/api/exchanges/v2/dx").json()["type"] == "fanout"
    assert len(api.get("/api/bindings/v2/e/dx/q/dq").json()) == 1
    r = api.post("/api/definitions/nope", defs)
    assert r.status == 404 and r.json() == {"error": "not_found", "reason": "vhost_not_found"}
    r = api.post("/api/definitions", {"queues": [{"name": "q", "vhost": "missing", "durable": True}]})
    assert r.status == 400 and "missing" in r.json()["reason"]


def test_vhost_and_user_limits(api):
    api.ok("PUT", "/api/vhosts/lim")
    assert api.get("/api/vhost-limits").json() == []
    assert api.put("/api/vhost-limits/lim/max-queues", {"value": 5}).status == 201
    assert api.put("/api/vhost-limits/lim/max-connections", {"value": 10}).status == 201
    assert api.put("/api/vhost-limits/lim/max-queues", {"value": 6}).status == 204
    assert api.get("/api/vhost-limits/lim").json() == [{"vhost": "lim", "value": {"max-queues": 6,
                                                                                 "max-connections": 10}}]
    assert api.get("/api/vhost-limits").json()[0]["vhost"] == "lim"
    assert api.put("/api/vhost-limits/lim/max-bananas", {"value": 1}).status == 400
    assert api.put("/api/vhost-limits/lim/max-queues", {"value": "many"}).status == 400
    assert api.put("/api/vhost-limits/nope/max-queues", {"value": 1}).status == 404
    assert api.delete("/api/vhost-limits/lim/max-queues").status == 204
    assert api.delete("/api/vhost-limits/lim/max-queues").status == 404
    assert api.get("/api/vhost-limits/lim").json() == [{"vhost": "lim", "value": {"max-connections": 10}}]

    api.ok("PUT", "/api/users/lu", {"password": "x", "tags": ""})
    assert api.put("/api/user-limits/lu/max-channels", {"value": 3}).status == 201
    assert api.get("/api/user-limits/lu").json() == [{"user": "lu", "value": {"max-channels": 3}}]
    assert api.get("/api/users/lu").json()["limits"] == {"max-channels": 3}
    assert api.get("/api/user-limits").json() == [{"user": "lu", "value": {"max-channels": 3}}]
    assert api.put("/api/user-limits/nobody/max-channels", {"value": 3}).status == 404
    assert api.delete("/api/user-limits/lu/max-channels").status == 204
    assert api.get("/api/user-limits/lu").json() == []


def test_operator_policies(api):
    body = {"pattern": "^op", "definition": {"max-length": 7}, "priority": 1, "apply-to": "queues"}
    assert api.put("/api/operator-policies/%2F/cap", body).status == 201
    assert api.get("/api/operator-policies/%2F/cap").json()["definition"] == {"max-length": 7}
    assert [p["name"] for p in api.get("/api/operator-policies").json()] == ["cap"]
    r = api.put("/api/operator-policies/%2F/bad", {"pattern": ".*", "definition": {"alternate-exchange": "x"}})
    assert r.status == 400 and "are not recognised policy settings" in r.json()["reason"]   # RabbitMQ 3.10's text
    api.ok("PUT", "/api/queues/%2F/op-q")
    assert api.get("/api/queues/%2F/op-q").json()["operator_policy"] == "cap"
    assert api.delete("/api/operator-policies/%2F/cap").status == 204
    assert api.get("/api/queues/%2F/op-q").json()["operator_policy"] is None
