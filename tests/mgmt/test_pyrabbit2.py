"""A management client from PyPI, unchanged, against Usagi: pyrabbit2 (pip install pyrabbit2)."""
from __future__ import annotations

import pytest

pyrabbit2 = pytest.importorskip("pyrabbit2.api")


def test_pyrabbit2_drives_the_broker(mgmt):
    c = pyrabbit2.Client(f"{mgmt.host}:{mgmt.port}", "guest", "guest")
    assert c.is_alive() is True
    assert c.get_vhost_names() == ["/"]
    assert c.get_overview()["node"] == c.get_nodes()[0]["name"]
    assert c.get_whoami()["name"] == "guest"

    c.create_vhost("pyr")
    c.set_vhost_permissions("pyr", "guest", ".*", ".*", ".*")
    assert "pyr" in c.get_vhost_names()
    c.create_exchange("pyr", "px", "topic", durable=True)
    c.create_queue("pyr", "pq", durable=True)
    c.create_binding("pyr", "px", "pq", "a.*")
    assert c.get_exchange("pyr", "px")["type"] == "topic"
    assert [b["routing_key"] for b in c.get_queue_bindings("pyr", "pq")] == ["pq", "a.*"]

    assert c.publish("pyr", "px", "a.b", "hello") is True
    assert c.publish("pyr", "px", "x.y", "lost") is False
    assert c.get_queue_depth("pyr", "pq") == 1
    msgs = c.get_messages("pyr", "pq", count=1, requeue=True)
    assert msgs[0]["payload"] == "hello" and msgs[0]["routing_key"] == "a.b"
    assert c.get_queue_depth("pyr", "pq") == 1
    msgs = c.get_messages("pyr", "pq", count=1, requeue=False)
    assert msgs[0]["redelivered"] is True
    assert c.get_queue_depth("pyr", "pq") == 0

    # the connection shows up and can be closed from the client
    conn = mgmt.pika("pyr")
    names = [x["name"] for x in c.get_connections()]
    assert len(names) == 1
    assert c.get_connection(names[0])["vhost"] == "pyr"
    c.delete_connection(names[0])
    with pytest.raises(Exception):
        for _ in range(100):
            conn.process_data_events(0.05)

    c.create_user("pyuser", "pw", tags="management")
    assert any(u["name"] == "pyuser" for u in c.get_users())
    c.set_vhost_permissions("pyr", "pyuser", ".*", ".*", ".*")
    assert {p["user"] for p in c.get_vhost_permissions("pyr")} == {"guest", "pyuser"}
    c.delete_user("pyuser")

    c.delete_binding("pyr", "px", "pq", "a.*")
    assert [b["routing_key"] for b in c.get_queue_bindings("pyr", "pq")] == ["pq"]
    c.purge_queue("pyr", "pq")
    c.delete_queue("pyr", "pq")
    c.delete_exchange("pyr", "px")
    assert c.get_queues("pyr") == []
    c.delete_vhost("pyr")
    assert c.get_vhost_names() == ["/"]
