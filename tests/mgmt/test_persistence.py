"""What the management API creates is durable state: it survives a restart of the broker."""
from __future__ import annotations

PERMS = {"configure": ".*", "write": ".*", "read": ".*"}


def test_api_made_state_survives_restart(start_mgmt, tmp_path):
    data = str(tmp_path / "data")
    m = start_mgmt(data_dir=data)
    api = m.api
    api.ok("PUT", "/api/vhosts/keep", {"description": "kept", "tags": ["prod"]})
    api.ok("PUT", "/api/users/ivy", {"password": "i", "tags": "monitoring"})
    api.ok("PUT", "/api/permissions/keep/ivy", PERMS)
    api.ok("PUT", "/api/permissions/keep/guest", PERMS)
    api.ok("PUT", "/api/exchanges/keep/kx", {"type": "direct", "durable": True})
    api.ok("PUT", "/api/queues/keep/kq", {"durable": True})
    api.ok("PUT", "/api/queues/keep/transient", {"durable": False})
    api.ok("POST", "/api/bindings/keep/e/kx/q/kq", {"routing_key": "k"})
    api.ok("PUT", "/api/policies/keep/kp", {"pattern": "^k", "definition": {"max-length": 9}})
    api.ok("POST", "/api/exchanges/keep/kx/publish", {"properties": {"delivery_mode": 2}, "routing_key": "k",
                                                       "payload": "durable", "payload_encoding": "string"})
    api.ok("PUT", "/api/vhost-limits/keep/max-queues", {"value": 50})
    api.ok("PUT", "/api/user-limits/ivy/max-channels", {"value": 4})
    api.ok("PUT", "/api/users/gone", {"password": "g", "tags": ""})
    api.ok("DELETE", "/api/users/gone")
    assert api.get("/api/queues/keep/kq").json()["messages"] == 1
    assert m.server.stop() == 0

    m2 = start_mgmt(data_dir=data)
    api2 = m2.api
    v = api2.get("/api/vhosts/keep").json()
    assert v["description"] == "kept" and v["tags"] == ["prod"]
    assert api2.get("/api/users/ivy").json()["tags"] == ["monitoring"]
    assert api2.get("/api/users/gone").status == 404
    assert api2.get("/api/permissions/keep/ivy").json()["configure"] == ".*"
    assert api2.get("/api/exchanges/keep/kx").json()["durable"] is True
    assert api2.get("/api/queues/keep/kq").json()["messages"] == 1
    assert api2.get("/api/queues/keep/transient").status == 404
    assert [b["routing_key"] for b in api2.get("/api/bindings/keep/e/kx/q/kq").json()] == ["k"]
    assert api2.get("/api/policies/keep/kp").json()["definition"] == {"max-length": 9}
    assert api2.get("/api/vhost-limits/keep").json() == [{"vhost": "keep", "value": {"max-queues": 50}}]
    assert api2.get("/api/user-limits/ivy").json() == [{"user": "ivy", "value": {"max-channels": 4}}]
    m2.pika("keep", user="ivy", password="i").close()
    got = api2.post("/api/queues/keep/kq/get", {"count": 1, "ackmode": "ack_requeue_false",
                                                "encoding": "auto"}).json()
    assert got[0]["payload"] == "durable" and got[0]["properties"] == {"delivery_mode": 2}
