"""Authentication, error shapes, the node-level endpoints and health checks."""
from __future__ import annotations

import gzip
import socket
import time

from mgmtutil import q
from support.harness import wait_for


def test_listeners_are_logged_on_their_own_free_ports(mgmt):
    ports = {mgmt.amqp_port, mgmt.port, mgmt.metrics_port}
    assert len(ports) == 3 and all(p > 0 for p in ports)
    assert mgmt.api.get("/api/overview").status == 200


def test_missing_or_wrong_credentials(api, mgmt):
    anon = api.as_user(None, "")
    r = anon.get("/api/overview")
    assert r.status == 401
    assert r.headers["WWW-Authenticate"] == 'Basic realm="RabbitMQ Management"'
    assert r.body == b""
    r = api.as_user("guest", "wrong").get("/api/overview")
    assert r.status == 401
    assert r.headers["WWW-Authenticate"] == 'Basic realm="RabbitMQ Management"'
    assert r.json()["error"] == "not_authorized"
    assert api.as_user("nobody", "x").get("/api/whoami").status == 401


def test_tags_decide_what_a_user_may_see(api):
    api.ok("PUT", "/api/users/plain", {"password": "p", "tags": ""})
    api.ok("PUT", "/api/users/mgr", {"password": "p", "tags": "management"})
    api.ok("PUT", "/api/users/mon", {"password": "p", "tags": ["monitoring"]})
    api.ok("PUT", "/api/users/pol", {"password": "p", "tags": "management,policymaker"})

    r = api.as_user("plain", "p").get("/api/overview")
    assert r.status == 401 and r.json() == {"error": "not_authorised", "reason": "Not management user"}

    mgr = api.as_user("mgr", "p")
    assert mgr.get("/api/overview").status == 200
    assert mgr.get("/api/whoami").json()["tags"] == ["management"]
    r = mgr.get("/api/users")
    assert r.status == 401 and r.json() == {"error": "not_authorised", "reason": "Not administrator user"}
    r = mgr.get("/api/nodes")
    assert r.status == 401 and r.json()["reason"] == "Not monitor user"
    # no permission in "/": the vhost's resources are hidden
    r = mgr.get("/api/queues/%2F")
    assert r.status == 401
    assert r.json() == {"error": "not_authorised", "reason": "User not authorised to access virtual host"}
    assert mgr.get("/api/vhosts").json() == []
    r = mgr.get("/api/policies/%2F")
    assert r.status == 401

    mon = api.as_user("mon", "p")
    assert mon.get("/api/nodes").status == 200
    assert [v["name"] for v in mon.get("/api/vhosts").json()] == ["/"]

    api.ok("PUT", "/api/permissions/%2F/pol", {"configure": ".*", "write": ".*", "read": ".*"})
    pol = api.as_user("pol", "p")
    assert pol.put("/api/policies/%2F/p1", {"pattern": ".*", "definition": {"max-length": 5}}).status == 201
    assert pol.get("/api/queues/%2F").status == 200


def test_error_shapes_and_methods(api):
    r = api.get("/api/no-such-thing")
    assert r.status == 404
    assert r.json() == {"error": "Object Not Found", "reason": "Not Found"}
    assert r.headers["Content-Type"].startswith("application/json")
    assert api.get("/api/queues/%2F/no-such-queue").json() == {"error": "Object Not Found",
                                                                "reason": "Not Found"}
    assert api.get("/api/queues/no-such-vhost/q").status == 404
    r = api.post("/api/overview", {})
    assert r.status == 405
    assert r.headers["Allow"] == "HEAD, GET, OPTIONS"
    r = api.request("DELETE", "/api/queues")
    assert r.status == 405
    r = api.request("PUT", "/api/queues/%2F/q1", raw=b"{not json")
    assert r.status == 400 and r.json() == {"error": "bad_request", "reason": "not_json"}
    # a compressed body is not inflated (a small body must not become a large one): not JSON
    r = api.request("PUT", "/api/queues/%2F/q1", raw=gzip.compress(b'{"durable": true}'),
                    headers={"Content-Encoding": "gzip"})
    assert r.status == 400 and r.json() == {"error": "bad_request", "reason": "not_json"}
    assert api.get("/api/queues/%2F/q1").status == 404
    r = api.request("OPTIONS", "/api/queues/%2F/q1")
    assert r.status == 200 and "PUT" in r.headers["Allow"] and "DELETE" in r.headers["Allow"]
    assert api.request("HEAD", "/api/whoami").status == 200


def test_overview_whoami_nodes_and_cluster_name(api, mgmt):
    ov = api.get("/api/overview").json()
    for key in ("management_version", "rabbitmq_version", "product_name", "cluster_name", "node",
                "message_stats", "queue_totals", "object_totals", "listeners", "contexts",
                "exchange_types", "churn_rates", "rates_mode"):
        assert key in ov, key
    assert ov["object_totals"]["exchanges"] == len(api.get("/api/exchanges").json()) >= 6
    assert ov["object_totals"]["queues"] == 0 and ov["object_totals"]["connections"] == 0
    amqp = [l for l in ov["listeners"] if l["protocol"] == "amqp"]
    assert amqp and amqp[0]["port"] == mgmt.amqp_port
    assert {c["port"] for c in ov["contexts"]} == {str(mgmt.port)}
    assert api.get("/api/whoami").json()["name"] == "guest"
    assert api.get("/api/whoami").json()["tags"] == ["administrator"]

    nodes = api.get("/api/nodes").json()
    assert len(nodes) == 1 and nodes[0]["name"] == ov["node"] and nodes[0]["running"] is True
    assert nodes[0]["mem_used"] > 0
    assert api.get("/api/nodes/" + q(ov["node"])).json()["name"] == ov["node"]
    assert api.get("/api/nodes/nobody@nowhere").status == 404

    assert api.put("/api/cluster-name", {"name": "rabbit-hole"}).status == 204
    assert api.get("/api/cluster-name").json() == {"name": "rabbit-hole"}
    assert api.get("/api/overview").json()["cluster_name"] == "rabbit-hole"
    conn = mgmt.pika()                      # new connections are told the new name
    name = conn._impl.server_properties["cluster_name"]
    assert (name.decode() if isinstance(name, bytes) else name) == "rabbit-hole"
    assert api.get("/api/extensions").json() == []


def test_health_checks_and_aliveness(api, mgmt):
    for path in ("alarms", "local-alarms", "virtual-hosts", "node-is-quorum-critical"):
        r = api.get("/api/health/checks/" + path)
        assert r.status == 200 and r.json() == {"status": "ok"}, path
    r = api.get(f"/api/health/checks/port-listener/{mgmt.amqp_port}")
    assert r.status == 200 and r.json() == {"status": "ok", "port": mgmt.amqp_port}
    r = api.get("/api/health/checks/port-listener/1")
    assert r.status == 503
    body = r.json()
    assert body["status"] == "failed" and body["missing"] == 1 and mgmt.amqp_port in body["ports"]
    assert api.get("/api/health/checks/protocol-listener/amqp").status == 200
    assert api.get("/api/health/checks/protocol-listener/stomp").status == 503

    assert api.get("/api/aliveness-test/%2F").json() == {"status": "ok"}
    assert api.get("/api/queues/%2F/aliveness-test").json()["messages"] == 0
    assert api.get("/api/aliveness-test/nope").status == 404


def test_api_index_and_unknown_top_level(api):
    r = api.get("/api")
    assert r.status == 200 and b"Management HTTP API" in r.body


def test_usagi_node_control(api, mgmt):
    r = api.post("/api/usagi/stop_app")
    if r.status == 501:         # the server layer offers no stop_app: said so in RabbitMQ's error shape
        assert r.json()["error"] == "not_implemented"
    else:
        assert r.status == 204
        from mgmtutil import wait_until
        wait_until(lambda: api.get("/api/nodes").json()[0]["running"] is False, 5)
        assert api.post("/api/usagi/start_app").status == 204
        wait_until(lambda: api.get("/api/nodes").json()[0]["running"] is True, 5)
    mgr_tags = {"password": "p", "tags": "management"}
    api.ok("PUT", "/api/users/mgr", mgr_tags)
    assert api.as_user("mgr", "p").post("/api/usagi/stop").status == 401
    assert api.post("/api/usagi/stop").status == 204
    assert mgmt.server.proc.wait(20) == 0


def test_malformed_and_unfinished_requests(start_mgmt):
    """A request that cannot be parsed gets 400 and one log line, not a traceback each; a
    connection whose request never completes is closed after the request timeout."""
    m = start_mgmt(env={"USAGI_MANAGEMENT_REQUEST_TIMEOUT": "2"}, extra_args=["--in-memory"])

    def exchange(data: bytes) -> bytes:
        with socket.create_connection((m.host, m.port), timeout=10) as s:
            s.sendall(data)
            return s.recv(200)

    for _ in range(20):
        assert exchange(b"GET /api/overview HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 20000 + b"\r\n\r\n"
                        ).startswith(b"HTTP/1.0 400")
        assert exchange(b"GARBAGE \x00\x01\r\n\r\n").startswith(b"HTTP/1.0 400")
    wait_for(lambda: "malformed HTTP request" in "".join(m.server.lines), 5, message="a log line")
    assert "Traceback" not in "".join(m.server.lines)
    slow = socket.create_connection((m.host, m.port), timeout=10)
    slow.sendall(b"GET /api/overview HTTP/1.1\r\nHost")          # and nothing more
    t0 = time.monotonic()
    assert slow.recv(100) == b""            # closed by the server
    assert time.monotonic() - t0 < 9
    slow.close()
    assert m.api.get("/api/overview").status == 200
