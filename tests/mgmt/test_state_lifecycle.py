"""Everything an operator sets survives a restart, and dies with its vhost (or user).

Topic permissions, global parameters (the cluster name among them) come back after a restart
and still act; a vhost deleted and re-created under the same name starts clean - no bindings,
permissions, topic permissions, policies, operator policies, parameters or limits of its former
self - in memory and after a restart; a deleted user's permissions go with it; a deleted queue's
bindings are not resurrected by the next start.
"""
from __future__ import annotations

import pika
import pika.exceptions
import pytest

pytestmark = pytest.mark.timeout(120)

PERMS = {"configure": ".*", "write": ".*", "read": ".*"}


def restart(start_mgmt, m, data):
    assert m.server.stop() == 0
    return start_mgmt(data_dir=data)


def test_topic_permissions_and_global_parameters_survive_a_restart(start_mgmt, tmp_path):
    data = str(tmp_path / "data")
    m = start_mgmt(data_dir=data)
    api = m.api
    api.ok("PUT", "/api/users/tp", {"password": "tp", "tags": ""})
    api.ok("PUT", "/api/permissions/%2F/tp", PERMS)
    api.ok("PUT", "/api/topic-permissions/%2F/tp", {"exchange": "amq.topic", "write": "^allowed\\.", "read": ".*"})
    api.ok("PUT", "/api/global-parameters/my-param", {"value": {"a": [1, "two"]}})
    api.ok("PUT", "/api/cluster-name", {"name": "my-cluster"})
    cid = api.get("/api/global-parameters/internal_cluster_id").json()["value"]

    m = restart(start_mgmt, m, data)
    api = m.api
    assert api.get("/api/topic-permissions/%2F/tp").json() == [
        {"user": "tp", "vhost": "/", "exchange": "amq.topic", "write": "^allowed\\.", "read": ".*"}]
    assert api.get("/api/global-parameters/my-param").json()["value"] == {"a": [1, "two"]}
    assert api.get("/api/global-parameters/internal_cluster_id").json()["value"] == cid
    assert api.get("/api/cluster-name").json() == {"name": "my-cluster"}
    conn = m.pika(user="tp", password="tp")
    assert conn._impl.server_properties["cluster_name"] == b"my-cluster" or \
        conn._impl.server_properties["cluster_name"] == "my-cluster"
    ch = conn.channel()
    ch.basic_publish("amq.topic", "allowed.x", b"ok")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.basic_publish("amq.topic", "denied.x", b"no")
        ch.queue_declare("", exclusive=True)
    assert e.value.reply_code == 403

    # and what is cleared stays cleared
    api.ok("DELETE", "/api/topic-permissions/%2F/tp")
    api.ok("DELETE", "/api/global-parameters/my-param")
    m = restart(start_mgmt, m, data)
    assert m.api.get("/api/topic-permissions/%2F/tp").status == 404
    assert m.api.get("/api/global-parameters/my-param").status == 404


def fill_tenant(api):
    api.ok("PUT", "/api/vhosts/tenant")
    api.ok("PUT", "/api/users/t1", {"password": "t1", "tags": ""})
    api.ok("PUT", "/api/permissions/tenant/t1", PERMS)
    api.ok("PUT", "/api/topic-permissions/tenant/t1", {"exchange": "amq.topic", "write": "^a", "read": "^a"})
    api.ok("PUT", "/api/queues/tenant/q", {"durable": True})
    api.ok("PUT", "/api/exchanges/tenant/x", {"type": "fanout", "durable": True})
    api.ok("PUT", "/api/exchanges/tenant/x2", {"type": "fanout", "durable": True})
    api.ok("POST", "/api/bindings/tenant/e/x/q/q", {"routing_key": ""})
    api.ok("POST", "/api/bindings/tenant/e/x/e/x2", {"routing_key": ""})
    api.ok("POST", "/api/bindings/tenant/e/amq.direct/q/q", {"routing_key": "k"})
    api.ok("PUT", "/api/policies/tenant/p", {"pattern": ".*", "definition": {"message-ttl": 1}})
    # the operator policy that would drop the next tenant's messages
    api.ok("PUT", "/api/operator-policies/tenant/op", {"pattern": ".*", "definition": {"max-length": 0}})
    api.ok("PUT", "/api/parameters/federation-upstream/tenant/up", {"value": {"uri": "amqp://elsewhere"}})
    api.ok("PUT", "/api/vhost-limits/tenant/max-queues", {"value": 5})


def assert_clean(api):
    assert api.get("/api/queues/tenant").json() == []
    assert sorted(x["name"] for x in api.get("/api/exchanges/tenant").json()) == [
        "", "amq.direct", "amq.fanout", "amq.headers", "amq.match", "amq.rabbitmq.trace", "amq.topic"]
    assert api.get("/api/bindings/tenant").json() == []
    assert [p["user"] for p in api.get("/api/vhosts/tenant/permissions").json()] == ["guest"]
    assert api.get("/api/vhosts/tenant/topic-permissions").json() == []
    assert api.get("/api/policies/tenant").json() == []
    assert api.get("/api/operator-policies/tenant").json() == []
    assert [p for p in api.get("/api/parameters").json() if p["vhost"] == "tenant"] == []
    assert api.get("/api/vhost-limits/tenant").json() == []
    assert api.get("/api/users/t1/topic-permissions").json() == []


def test_a_deleted_vhost_comes_back_clean_also_after_restarts(start_mgmt, tmp_path):
    data = str(tmp_path / "data")
    m = start_mgmt(data_dir=data)
    fill_tenant(m.api)
    m.api.ok("DELETE", "/api/vhosts/tenant")
    m = restart(start_mgmt, m, data)           # nothing of it is left in the store either
    api = m.api
    assert api.get("/api/vhosts/tenant").status == 404
    api.ok("PUT", "/api/vhosts/tenant")
    assert_clean(api)
    api.ok("PUT", "/api/queues/tenant/q", {"durable": True})
    api.ok("POST", "/api/exchanges/tenant/amq.default/publish", {
        "properties": {"delivery_mode": 2}, "routing_key": "q", "payload": "kept", "payload_encoding": "string"})
    assert api.get("/api/queues/tenant/q").json()["messages"] == 1     # no old operator policy drops it
    m = restart(start_mgmt, m, data)
    api = m.api
    assert api.get("/api/queues/tenant/q").json()["messages"] == 1
    assert api.get("/api/bindings/tenant").json() == [b for b in api.get("/api/bindings/tenant").json()
                                                      if b["source"] == ""]
    api.ok("DELETE", "/api/queues/tenant/q")
    assert_clean(api)


def test_deleting_a_vhost_in_memory_leaves_nothing(api):
    fill_tenant(api)
    api.ok("DELETE", "/api/vhosts/tenant")
    api.ok("PUT", "/api/vhosts/tenant")
    assert_clean(api)


def test_a_deleted_user_takes_its_permissions_along(start_mgmt, tmp_path):
    data = str(tmp_path / "data")
    m = start_mgmt(data_dir=data)
    api = m.api
    api.ok("PUT", "/api/users/gone", {"password": "g", "tags": ""})
    api.ok("PUT", "/api/permissions/%2F/gone", PERMS)
    api.ok("PUT", "/api/topic-permissions/%2F/gone", {"exchange": "amq.topic", "write": "^a", "read": "^a"})
    api.ok("DELETE", "/api/users/gone")
    assert api.get("/api/topic-permissions").json() == []
    api.ok("PUT", "/api/users/gone", {"password": "g", "tags": ""})
    assert api.get("/api/users/gone/permissions").json() == []
    assert api.get("/api/users/gone/topic-permissions").json() == []
    m = restart(start_mgmt, m, data)
    assert m.api.get("/api/users/gone/permissions").json() == []
    assert m.api.get("/api/users/gone/topic-permissions").json() == []


def test_a_deleted_queue_does_not_get_its_bindings_back(start_mgmt, tmp_path):
    data = str(tmp_path / "data")
    m = start_mgmt(data_dir=data)
    api = m.api
    api.ok("PUT", "/api/exchanges/%2F/bx", {"type": "direct", "durable": True})
    api.ok("PUT", "/api/queues/%2F/bq", {"durable": True})
    api.ok("POST", "/api/bindings/%2F/e/bx/q/bq", {"routing_key": "old"})
    api.ok("DELETE", "/api/queues/%2F/bq")
    api.ok("PUT", "/api/queues/%2F/bq", {"durable": True})
    m = restart(start_mgmt, m, data)
    assert m.api.get("/api/bindings/%2F/e/bx/q/bq").json() == []
