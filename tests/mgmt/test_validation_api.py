"""The management API checks what it is sent before it changes anything.

Bad definitions are refused with 400 and change nothing (not even the good elements of the same
file), and every listing still answers 200 with JSON, also after a restart. Request bodies get
RabbitMQ's reasons (texts read from RabbitMQ 3.10.8's management API and rabbit_policies /
rabbit_parameter_validation): types, ranges (TTLs up to ten years, integers up to 64 bits),
regexes that compile, names that are text.
"""
from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.timeout(120)

PERMS = {"configure": ".*", "write": ".*", "read": ".*"}
BIG = "1" + "0" * 400

LISTINGS = ("/api/overview", "/api/vhosts", "/api/users", "/api/users/without-permissions", "/api/permissions",
            "/api/topic-permissions", "/api/queues", "/api/exchanges", "/api/bindings", "/api/policies",
            "/api/operator-policies", "/api/parameters", "/api/global-parameters", "/api/vhost-limits",
            "/api/user-limits", "/api/connections", "/api/channels", "/api/consumers", "/api/definitions",
            "/api/definitions/%2F", "/api/cluster-name", "/api/whoami")


def policy(vhost, name, definition, pattern="^zz$"):
    return {"vhost": vhost, "name": name, "pattern": pattern, "apply-to": "all", "priority": 0,
            "definition": definition}


# Each: a definitions file (JSON text, so that it can hold what Python would not write).
BAD_DEFINITIONS = {
    "int vhost name": '{"vhosts":[{"name":42}]}',
    "int user name": '{"users":[{"name":99,"password_hash":"","tags":""}]}',
    "empty user name": '{"users":[{"name":"","password_hash":"","tags":""}]}',
    "huge policy value": '{"policies":[{"vhost":"/","name":"p","pattern":"^zz$","definition":{"message-ttl":'
                         + BIG + '}}]}',
    "policy ttl past ten years": json.dumps({"policies": [policy("/", "p", {"message-ttl": 2 ** 62})]}),
    "policy huge max-length": '{"policies":[{"vhost":"/","name":"p","pattern":"^zz$","definition":{"max-length":'
                              + BIG + '}}]}',
    "policy bad regex": json.dumps({"policies": [policy("/", "p", {"max-length": 1}, pattern="(")]}),
    "policy of no vhost": json.dumps({"policies": [policy("nowhere", "p", {"max-length": 1})]}),
    "topic permission bad regex": json.dumps({"topic_permissions": [
        {"user": "guest", "vhost": "/", "exchange": "amq.topic", "write": "(", "read": ".*"}]}),
    "permission bad regex": json.dumps({"permissions": [
        {"user": "guest", "vhost": "/", "configure": "(", "write": ".*", "read": ".*"}]}),
    "permission of no user": json.dumps({"permissions": [{"user": "nobody", "vhost": "/", **PERMS}]}),
    "permission int vhost": json.dumps({"permissions": [{"user": "guest", "vhost": 7, **PERMS}]}),
    "vhost description int": json.dumps({"vhosts": [{"name": "v-bad", "description": 5}]}),
    "user tags int": json.dumps({"users": [{"name": "u-bad", "password_hash": "", "tags": 5}]}),
    "queue int name": json.dumps({"queues": [{"name": 5, "vhost": "/", "durable": True, "arguments": {}}]}),
    "queue ttl past ten years": json.dumps({"queues": [{"name": "q-bad", "vhost": "/", "durable": True,
                                                        "arguments": {"x-message-ttl": 2 ** 62}}]}),
    "queue huge argument": '{"queues":[{"name":"q-bad","vhost":"/","durable":true,"arguments":{"x-max-length":'
                           + BIG + '}}]}',
    "queue null argument": json.dumps({"queues": [{"name": "q-bad", "vhost": "/", "arguments": {"x-foo": None}}]}),
    "queue reserved name": json.dumps({"queues": [{"name": "amq.q-bad", "vhost": "/", "arguments": {}}]}),
    "queue durable maybe": json.dumps({"queues": [{"name": "q-bad", "vhost": "/", "durable": "maybe"}]}),
    "queue twice, differently": json.dumps({"queues": [
        {"name": "q-bad", "vhost": "/", "durable": True, "arguments": {}},
        {"name": "q-bad", "vhost": "/", "durable": True, "arguments": {"x-max-length": 1}}]}),
    "exchange int type": json.dumps({"exchanges": [{"name": "x-bad", "vhost": "/", "type": 5}]}),
    "exchange list type": json.dumps({"exchanges": [{"name": "x-bad", "vhost": "/", "type": ["direct"]}]}),
    "exchange unknown type": json.dumps({"exchanges": [{"name": "x-bad", "vhost": "/", "type": "nope"}]}),
    "exchange inequivalent": json.dumps({"exchanges": [{"name": "x-twice", "vhost": "/", "type": "direct"},
                                                       {"name": "x-twice", "vhost": "/", "type": "fanout"}]}),
    "binding to no queue": json.dumps({"bindings": [{"source": "amq.direct", "vhost": "/", "destination": "none",
                                                     "destination_type": "queue", "routing_key": "k"}]}),
    "binding from the default exchange": json.dumps({"queues": [{"name": "q-ok", "vhost": "/"}], "bindings": [
        {"source": "", "vhost": "/", "destination": "q-ok", "destination_type": "queue", "routing_key": "k"}]}),
    "binding bad x-match": json.dumps({"queues": [{"name": "q-ok", "vhost": "/"}], "bindings": [
        {"source": "amq.headers", "vhost": "/", "destination": "q-ok", "destination_type": "queue",
         "routing_key": "", "arguments": {"x-match": "some"}}]}),
    "vhost limit not a number": json.dumps({"parameters": [
        {"vhost": "/", "component": "vhost-limits", "name": "limits", "value": {"max-queues": "x"}}]}),
    "int component": json.dumps({"parameters": [{"vhost": "/", "component": 5, "name": "n", "value": 1}]}),
    "operator policy bad value": json.dumps({"parameters": [
        {"vhost": "/", "component": "operator_policy", "name": "op",
         "value": {"pattern": ".*", "definition": {"max-length": "x"}}}]}),
    "int global parameter name": json.dumps({"global_parameters": [{"name": 5, "value": 1}]}),
    "cluster name not a string": json.dumps({"global_parameters": [{"name": "cluster_name", "value": 5}]}),
    "lone surrogate in a name": '{"vhosts":[{"name":"v-\\ud800"}]}',
    "NaN in an argument": '{"queues":[{"name":"q-bad","vhost":"/","arguments":{"x-foo":NaN}}]}',
    "element not an object": '{"users":["guest"]}',
    "section not a list": '{"queues":{"name":"q"}}',
    # good elements first, one bad at the end: the good ones must not be applied either
    "good then bad": json.dumps({
        "vhosts": [{"name": "v-good"}], "users": [{"name": "u-good", "password_hash": "", "tags": ""}],
        "permissions": [{"user": "u-good", "vhost": "v-good", **PERMS}],
        "queues": [{"name": "q-good", "vhost": "v-good", "durable": True}],
        "exchanges": [{"name": "x-good", "vhost": "v-good", "type": "fanout", "durable": True}],
        "bindings": [{"source": "x-good", "vhost": "v-good", "destination": "q-good", "destination_type": "queue",
                      "routing_key": ""},
                     {"source": "x-good", "vhost": "v-good", "destination": "q-none", "destination_type": "queue",
                      "routing_key": ""}]}),
}


def all_listings_answer(api):
    for path in LISTINGS:
        r = api.get(path)
        assert r.status == 200, (path, r)
        r.json()


def export(api):
    d = api.get("/api/definitions").json()
    return {k: v for k, v in d.items() if k != "global_parameters"} | {
        "global_parameters": [p for p in d["global_parameters"] if p["name"] != "internal_cluster_id"]}


def test_bad_definitions_are_refused_and_change_nothing_also_after_a_restart(start_mgmt, tmp_path):
    data = str(tmp_path / "data")
    m = start_mgmt(data_dir=data)
    api = m.api
    api.ok("PUT", "/api/queues/%2F/q-kept", {"durable": True})
    before = export(api)
    for case, text in BAD_DEFINITIONS.items():
        r = api.request("POST", "/api/definitions", raw=text.encode(), headers={"Content-Type": "application/json"})
        assert r.status == 400, (case, r)
        assert r.json()["error"] == "bad_request", case
        assert export(api) == before, case
        all_listings_answer(api)
    assert m.server.stop() == 0
    m2 = start_mgmt(data_dir=data)
    all_listings_answer(m2.api)
    assert export(m2.api) == before


def test_definitions_are_checked_in_vhost_scope_too(api):
    api.ok("PUT", "/api/vhosts/scoped")
    r = api.post("/api/definitions/scoped", {"queues": [{"name": "q", "arguments": {"x-expires": 0}}]})
    assert r.status == 400 and "{value_zero,0}" in r.json()["reason"]
    assert api.get("/api/queues/scoped").json() == []


def test_import_may_use_what_it_creates(api):
    """References are checked against what exists and what the same file creates."""
    defs = {"users": [{"name": "nu", "password": "p", "tags": ""}], "vhosts": [{"name": "nv"}],
            "permissions": [{"user": "nu", "vhost": "nv", **PERMS}],
            "topic_permissions": [{"user": "nu", "vhost": "nv", "exchange": "amq.topic", "write": "^a", "read": ".*"}],
            "parameters": [{"vhost": "nv", "component": "vhost-limits", "name": "limits",
                            "value": {"max-queues": 2}}],
            "policies": [policy("nv", "p", {"max-length": 5}, pattern="^q")],
            "queues": [{"name": "q1", "vhost": "nv"}, {"name": "q2", "vhost": "nv"}],
            "exchanges": [{"name": "x", "vhost": "nv", "type": "topic"},
                          {"name": "amq.direct", "vhost": "nv", "type": "direct"}],    # there already: left
            "bindings": [{"source": "x", "vhost": "nv", "destination": "q1", "destination_type": "queue",
                          "routing_key": "a.#"},
                         {"source": "amq.direct", "vhost": "nv", "destination": "q2", "destination_type": "queue",
                          "routing_key": "k"},
                         {"source": "x", "vhost": "nv", "destination": "amq.fanout",
                          "destination_type": "exchange", "routing_key": "b"}]}
    assert api.post("/api/definitions", defs).status in (201, 204)
    assert [q["name"] for q in api.get("/api/queues/nv").json()] == ["q1", "q2"]
    assert api.get("/api/topic-permissions/nv/nu").json()[0]["write"] == "^a"
    assert sorted((b["source"], b["destination"]) for b in api.get("/api/bindings/nv").json() if b["source"]) == [
        ("amq.direct", "q2"), ("x", "amq.fanout"), ("x", "q1")]
    # a third queue would pass the limit the file set
    r = api.post("/api/definitions", {"queues": [{"name": "q3", "vhost": "nv"}]})
    assert r.status == 400 and "queue limit" in r.json()["reason"]


@pytest.mark.parametrize("path,body,reason", [
    ("/api/queues/%2F/q-v", {"arguments": {"x-message-ttl": 2 ** 62}},
     "invalid arg 'x-message-ttl' for queue 'q-v' in vhost '/': {value_too_large,4611686018427387904}"),
    ("/api/queues/%2F/q-v", {"arguments": {"x-expires": 2 ** 63 - 1}},
     "invalid arg 'x-expires' for queue 'q-v' in vhost '/': {value_too_large,9223372036854775807}"),
    ("/api/queues/%2F/q-v", {"arguments": {"x-max-length": None}}, "null_not_allowed"),
    ("/api/queues/%2F/q-v", {"durable": "maybe"}, ["not_boolean", "maybe"]),
    ("/api/queues/%2F/q-v", {"auto_delete": [1]}, ["not_boolean", [1]]),
    ("/api/queues/%2F/" + "q" * 300, {}, "queue should be less than 255 bytes, actually was 300\n"),
    ("/api/exchanges/%2F/x-v", {"type": "nope"}, "unknown exchange type 'nope'"),
    ("/api/exchanges/%2F/x-v", {"type": "direct", "internal": "maybe"}, ["not_boolean", "maybe"]),
    ("/api/exchanges/%2F/x-v", {"type": "x-delayed-message", "arguments": {"x-delayed-type": ["direct"]}},
     "Invalid argument, 'x-delayed-type' must be an existing exchange type"),
    ("/api/policies/%2F/p-v", {"pattern": "^zz$", "definition": {"message-ttl": "x"}},
     'Validation failed\n\n<<"x">> is not a valid message TTL\n'),
    ("/api/policies/%2F/p-v", {"pattern": "^zz$", "definition": {"max-length": -1}},
     "Validation failed\n\n-1 is not a valid maximum length\n"),
    ("/api/policies/%2F/p-v", {"pattern": "^zz$", "definition": {"expires": 0}},
     "Validation failed\n\n0 is not a valid queue expiry\n"),
    ("/api/policies/%2F/p-v", {"pattern": "^zz$", "definition": {"foo": 1, "bar": "x"}},
     'Validation failed\n\n[{<<"bar">>,<<"x">>},{<<"foo">>,1}] are not recognised policy settings\n'),
    ("/api/policies/%2F/p-v", {"pattern": "^zz$", "definition": {}}, "Validation failed\n\nno policy provided\n"),
    ("/api/policies/%2F/p-v", {"pattern": "^zz$", "definition": {"queue-leader-locator": "x"}},
     'Validation failed\n\n<<"x">> is not a valid queue leader locator value\n'),
    ("/api/policies/%2F/p-v", {"pattern": "^zz$", "definition": {"queue-leader-locator": 5}},
     "Validation failed\n\n5 is not a valid queue leader locator value\n"),
    ("/api/queues/%2F/q-v", {"durable": True, "arguments": {"x-queue-type": "quorum", "x-queue-leader-locator": "x"}},
     "invalid arg 'x-queue-leader-locator' for queue 'q-v' in vhost '/': invalid_queue_locator_arg"),
    ("/api/policies/%2F/p-v", {"pattern": "^zz$", "definition": {"max-length": 5}, "priority": "x"},
     'Validation failed\n\npriority should be a number, actually was <<"x">>\n'),
    ("/api/policies/%2F/p-v", {"pattern": "^zz$", "definition": {"max-length": 5}, "apply-to": "bogus"},
     "Validation failed\n\napply-to 'bogus' unrecognised; should be 'queues', 'exchanges' or 'all'\n"),
    ("/api/policies/%2F/p-v", {"pattern": 5, "definition": {"max-length": 5}},
     "Validation failed\n\npattern should be a binary but was 5\n"),
    ("/api/operator-policies/%2F/p-v", {"pattern": "^zz$", "definition": {"dead-letter-exchange": "x"}},
     'Validation failed\n\n[{<<"dead-letter-exchange">>,<<"x">>}] are not recognised policy settings\n'),
    ("/api/vhost-limits/%2F/max-queues", {"value": 1.5},
     "Validation failed\n\nmax-queues should be a number, actually was 1.5\n"),
    ("/api/parameters/vhost-limits/%2F/limits", {"value": {"max-queues": "x"}},
     'Validation failed\n\nmax-queues should be a number, actually was <<"x">>\n'),
    ("/api/global-parameters/cluster_name", {"value": 5}, "cluster_name should be binary, actually was 5"),
    ("/api/vhosts/v-v", {"description": 5}, "description should be binary, actually was 5"),
    ("/api/vhosts/" + "v" * 300, {}, "vhost should be less than 255 bytes, actually was 300\n"),
    ("/api/users/u-v", {"password": "x", "tags": 5},
     "tags should be a list of strings or a comma-separated string, actually was 5"),
    ("/api/users/u-v", {"password": 5, "tags": ""}, "password must be a string"),
    ("/api/permissions/%2F/guest", {"configure": 5, "write": ".*", "read": ".*"},
     "configure should be binary, actually was 5"),
    ("/api/topic-permissions/%2F/guest", {"exchange": "amq.topic", "write": "(", "read": ".*"}, None),
    ("/api/topic-permissions/%2F/guest", {"exchange": 5, "write": ".*", "read": ".*"},
     "exchange should be binary, actually was 5"),
])
def test_bodies_are_checked(api, path, body, reason):
    r = api.put(path, body)
    assert r.status == 400, r
    if reason is not None:
        assert r.json()["reason"] == reason
    else:
        assert r.json()["reason"][0] == "invalid_regexp"
    all_listings_answer(api)


def test_huge_integers_and_lone_surrogates_are_refused(api):
    for path, text in (
            ("/api/policies/%2F/p", '{"pattern":"^zz$","definition":{"message-ttl":' + BIG + '}}'),
            ("/api/queues/%2F/q", '{"arguments":{"x-max-length":' + BIG + '}}'),
            ("/api/exchanges/%2F/x", '{"type":"direct","arguments":{"a":' + BIG + '}}'),
            ("/api/vhosts/v", '{"description":"\\udc80"}'),
            ("/api/parameters/federation-upstream/%2F/u", '{"value":{"uri":"\\ud800"}}'),
            ("/api/global-parameters/g", '{"value":Infinity}')):
        r = api.request("PUT", path, raw=text.encode(), headers={"Content-Type": "application/json"})
        assert r.status == 400, (path, r)
    all_listings_answer(api)


@pytest.mark.parametrize("props,routing_key,reason", [
    ({"expiration": "1e23"}, "q", "406 PRECONDITION_FAILED - invalid expiration '1e23': {leftover_string,\"e23\"}"),
    ({"expiration": "315360000001"}, "q",
     "406 PRECONDITION_FAILED - invalid expiration '315360000001': {value_too_large,315360000001}"),
    ({"headers": {"a": 10 ** 30}}, "q", None),
    ({}, "k" * 256, ["too_long", "routing_key"]),
])
def test_publish_is_checked(api, props, routing_key, reason):
    r = api.post("/api/exchanges/%2F/amq.default/publish", {"properties": props, "routing_key": routing_key,
                                                           "payload": "x", "payload_encoding": "string"})
    assert r.status == 400, r
    if reason is not None:
        assert r.json()["reason"] == reason


def test_a_store_damaged_by_an_older_version_is_repaired_at_start(start_mgmt, tmp_path):
    """Definitions an older version let in (an int vhost and its acting user's permission, an int
    user, wrongly typed metadata, a policy TTL past what a store row holds) do not break the
    next start: the unreadable ones are dropped, the rest is read within range."""
    from usagi.storage.sqlite import SQLiteStore
    data = str(tmp_path / "data")
    m = start_mgmt(data_dir=data)
    assert m.server.stop() == 0
    store = SQLiteStore(data)
    store.open()
    store.put_definition("vhost", (42,), {"name": 42, "description": "", "tags": []})
    store.put_definition("permission", ("guest", 42), {"user": "guest", "vhost": 42, **PERMS})
    store.put_definition("user", (99,), {"name": 99, "password_hash": "", "tags": [], "limits": {}})
    store.put_definition("vhost", ("odd",), {"name": "odd", "description": 5, "tags": 5})
    store.put_definition("user", ("odd",), {"name": "odd", "password_hash": 5, "tags": 5, "limits": {}})
    store.put_definition("policy", ("/", "huge"), {"vhost": "/", "name": "huge", "pattern": "^ttl", "apply-to": "all",
                                                  "priority": 0, "definition": {"message-ttl": 10 ** 30}})
    store.commit()
    store.close()

    m = start_mgmt(data_dir=data)
    api = m.api
    all_listings_answer(api)
    assert [v["name"] for v in api.get("/api/vhosts").json()] == ["/", "odd"]
    assert sorted(u["name"] for u in api.get("/api/users").json()) == ["guest", "odd"]
    api.ok("PUT", "/api/queues/%2F/ttl-q", {"durable": True})
    api.ok("POST", "/api/exchanges/%2F/amq.default/publish", {
        "properties": {"delivery_mode": 2}, "routing_key": "ttl-q", "payload": "x", "payload_encoding": "string"})
    assert m.server.stop() == 0         # the message's deadline fits its row: the store still commits
    m = start_mgmt(data_dir=data)
    assert m.api.get("/api/queues/%2F/ttl-q").json()["messages"] == 1
    all_listings_answer(m.api)


@pytest.mark.parametrize("locator", ["client-local", "balanced", "random", "least-leaders"])
def test_queue_leader_locator_values_rabbitmq_accepts(api, locator):
    """RabbitMQ's leader locators (3.10 keeps random and least-leaders as older names of balanced):
    as the queue-leader-locator policy key and as a quorum queue's x-queue-leader-locator."""
    name = f"p-loc-{locator}"
    r = api.put(f"/api/policies/%2F/{name}", {"pattern": "^zz-loc$", "definition": {"queue-leader-locator": locator},
                                              "apply-to": "queues"})
    assert r.status in (201, 204), r
    assert api.delete(f"/api/policies/%2F/{name}").status == 204
    q = f"q-loc-{locator}"
    r = api.put(f"/api/queues/%2F/{q}", {"durable": True, "arguments": {"x-queue-type": "quorum",
                                                                      "x-queue-leader-locator": locator}})
    assert r.status in (201, 204), r
    info = api.get(f"/api/queues/%2F/{q}").json()
    assert info["type"] == "quorum" and info["arguments"]["x-queue-leader-locator"] == locator
    # a quorum queue says where it lives, as a one-node RabbitMQ says it: leader, members, online
    assert info["leader"] == info["members"][0] == info["online"][0] and len(info["members"]) == 1
    assert api.delete(f"/api/queues/%2F/{q}").status == 204
