"""The management API under the CLI tools: the RabbitMQ endpoints usagictl and usagi-diagnostics
added a use for (their shapes and rules as RabbitMQ's, checked against RabbitMQ in differential
mode) and Usagi's own /api/usagi/ endpoints (administrator only, input checked where it enters)."""
from __future__ import annotations

import urllib.parse

import pytest

from ctlutil import unique

RABBITMQ_MEMORY_KEYS = {
    "connection_readers", "connection_writers", "connection_channels", "connection_other", "queue_procs",
    "queue_slave_procs", "quorum_queue_procs", "quorum_queue_dlx_procs", "stream_queue_procs",
    "stream_queue_replica_reader_procs", "stream_queue_coordinator_procs", "plugins", "other_proc", "metrics",
    "mgmt_db", "mnesia", "quorum_ets", "other_ets", "binary", "msg_index", "code", "atom", "other_system",
    "allocated_unused", "reserved_unallocated", "strategy", "total"}


def q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


def test_topic_permission_of_one_exchange(mgmt):
    """DELETE /api/topic-permissions/{vhost}/{user}/{exchange} (RabbitMQ 3.10 has it)."""
    v, u = mgmt.vhost(), mgmt.user()
    assert mgmt.api("PUT", f"/api/users/{q(u)}", {"password": "pw", "tags": ""})[0] in (201, 204)
    base = f"/api/topic-permissions/{q(v)}/{q(u)}"
    assert mgmt.api("DELETE", base + "/amq.topic")[0] == 404          # none at all yet
    for x in ("amq.topic", "x2"):
        assert mgmt.api("PUT", base, {"exchange": x, "write": "^w", "read": "^r"})[0] in (201, 204)
    assert mgmt.api("DELETE", base + "/no-such-exchange")[0] == 204
    assert mgmt.api("DELETE", base + "/amq.topic")[0] == 204
    st, body = mgmt.api("GET", base)
    assert st == 200 and [p["exchange"] for p in body] == ["x2"]
    assert mgmt.api("DELETE", base)[0] == 204
    assert mgmt.api("DELETE", base)[0] == 404
    assert mgmt.api("DELETE", f"/api/topic-permissions/{q(v)}/{unique('nobody')}/amq.topic")[0] == 404


def test_node_memory_and_feature_flags_shapes(mgmt):
    node = mgmt.node()
    st, body = mgmt.api("GET", f"/api/nodes/{q(node)}/memory")
    assert st == 200
    mem = body["memory"]
    assert set(mem) == RABBITMQ_MEMORY_KEYS
    assert set(mem["total"]) == {"erlang", "rss", "allocated"} and mem["strategy"] == "rss"
    assert all(isinstance(v, int) and v >= 0 for k, v in mem.items() if k not in ("total", "strategy"))
    st, flags = mgmt.api("GET", "/api/feature-flags")
    assert st == 200 and flags
    for f in flags:
        assert set(f) == {"name", "desc", "doc_url", "state", "stability", "provided_by"}
    assert {"quorum_queue", "user_limits", "virtual_host_metadata"} <= {f["name"] for f in flags}


@pytest.fixture
def usagi(mgmt):
    if not mgmt.is_usagi:
        pytest.skip("Usagi's own endpoints, on a Usagi server of the test's own")
    return mgmt


def test_usagi_endpoints_need_administrator(usagi):
    u = usagi.user()
    assert usagi.api("PUT", f"/api/users/{q(u)}", {"password": "pw", "tags": "monitoring"})[0] in (201, 204)
    p = urllib.parse.urlsplit(usagi.url)
    from ctlutil import Mgmt
    monitor = Mgmt(url=f"http://{u}:pw@{p.hostname}:{p.port}", amqp_url=None)
    for method, path, body in (("GET", "/api/usagi/environment", None), ("GET", "/api/usagi/log_tail", None),
                               ("PUT", "/api/usagi/disk_free_limit", {"absolute": 1}),
                               ("PUT", "/api/usagi/vm_memory_high_watermark", {"relative": 0.5}),
                               ("PUT", "/api/usagi/log_level", {"level": "debug"}),
                               ("POST", "/api/usagi/rotate_logs", None), ("POST", "/api/usagi/reset", None),
                               ("POST", "/api/usagi/force_reset", None)):
        assert monitor.api(method, path, body) == (401, {"error": "not_authorised", "reason": "Not administrator user"}), path
    st, body = monitor.api("GET", "/api/usagi/queues/%2F")          # a vhost's queues: as GET /api/queues/{vhost}
    assert st == 401 and body["reason"] == "User not authorised to access virtual host"
    assert usagi.api("GET", "/api/usagi/queues/%2F")[0] == 200
    assert usagi.api("GET", f"/api/usagi/queues/{unique('none')}")[0] == 404


@pytest.mark.parametrize("path,body", [
    ("vm_memory_high_watermark", {"relative": 1.5}), ("vm_memory_high_watermark", {"relative": "0.5"}),
    ("vm_memory_high_watermark", {"absolute": 0}), ("vm_memory_high_watermark", {"absolute": 1.5}),
    ("vm_memory_high_watermark", {"absolute": True}), ("vm_memory_high_watermark", {}),
    ("disk_free_limit", {"absolute": "1GB"}), ("disk_free_limit", {"mem_relative": -1}),
    ("disk_free_limit", {"absolute": 2 ** 70}), ("disk_free_limit", {}), ("log_level", {"level": "loud"}),
    ("log_level", {}),
    # not a string (was a 500: unhashable type), a watermark beyond any counter (was taken and reported)
    ("log_level", {"level": ["debug"]}), ("log_level", {"level": {"a": 1}}),
    ("vm_memory_high_watermark", {"absolute": 2 ** 70}),
])
def test_usagi_settings_checked(usagi, path, body):
    st, reply = usagi.api("PUT", f"/api/usagi/{path}", body)
    assert st == 400 and reply["error"] == "bad_request", (st, reply)


def test_usagi_reset_refused_while_running(usagi):
    st, body = usagi.api("POST", "/api/usagi/reset")
    assert st == 409 and "stop it first" in body["reason"]
    assert usagi.api("GET", "/api/usagi/log_tail?lines=-1")[0] == 400
    assert usagi.api("GET", "/api/usagi/log_tail?lines=x")[0] == 400


def test_health_check_names_the_disk_alarm_as_rabbitmq(usagi):
    node = usagi.node()
    assert usagi.api("PUT", "/api/usagi/disk_free_limit", {"absolute": 10 ** 18})[0] == 204
    try:
        for path, reason in (("local-alarms", "There are alarms in effect on the node"),
                             ("alarms", "There are alarms in effect in the cluster")):
            st, body = usagi.api("GET", f"/api/health/checks/{path}")
            assert (st, body) == (503, {"status": "failed", "reason": reason,
                                        "alarms": [{"node": node, "resource": "disk space"}]})
        assert usagi.api("GET", f"/api/nodes/{q(node)}")[1]["disk_free_alarm"] is True
    finally:
        assert usagi.api("PUT", "/api/usagi/disk_free_limit", {"absolute": 50_000_000})[0] == 204
    assert usagi.api("GET", "/api/health/checks/local-alarms") == (200, {"status": "ok"})
