"""rabbitmqctl reset and a crash: a reset deletes a slice at a time and the store commits as it
goes, so a kill -9 part way would leave a node half reset (some queues gone, the rest and every
user still there). The next start completes an interrupted reset before serving."""
from __future__ import annotations

import os
import threading

from mgmtutil import wait_until

QUEUES = 20_000


def _populate(m, queues: int):
    defs = {"vhosts": [{"name": "/"}, {"name": "rc-other"}],
            "users": [{"name": f"rc-u{i}", "password_hash": "", "hashing_algorithm": "rabbit_password_hashing_sha256",
                       "tags": ""} for i in range(200)],
            "queues": [{"vhost": "/", "name": f"rc-q{i}", "durable": True, "auto_delete": False, "arguments": {}}
                       for i in range(queues)]}
    r = m.api.post("/api/definitions", defs)
    assert r.status in (201, 204), r


def _stop_app(m):
    assert m.api.post("/api/usagi/stop_app").status == 204
    wait_until(lambda: m.api.get("/api/nodes").json()[0].get("running") is False, 30, message="the app stopping")


def _assert_virgin(m):
    assert [v["name"] for v in m.api.get("/api/vhosts").json()] == ["/"]
    assert [u["name"] for u in m.api.get("/api/users").json()] == ["guest"]
    assert m.api.get("/api/queues").json() == []


def test_a_reset_killed_part_way_is_completed_at_the_next_start(start_mgmt):
    m = start_mgmt()
    srv = m.server
    _populate(m, QUEUES)
    _stop_app(m)
    def reset():
        try:
            m.api.post("/api/usagi/reset")
        except OSError:
            pass                        # the node is killed under it
    threading.Thread(target=reset, daemon=True).start()
    # killed once the first deletions are made (20,000 queues take the reset about a second)
    wait_until(lambda: m.api.get("/api/overview").json()["object_totals"]["queues"] < QUEUES, 30,
               interval=0.005, message="the reset deleting")
    srv.kill()
    srv.start()
    m2 = type(m)(srv)      # the fixture's class (a bare `conftest` import is ambiguous)
    _assert_virgin(m2)                  # completed, not left part way
    assert not os.path.exists(os.path.join(srv.data_dir, "reset.pending"))


def test_a_reset_marker_left_by_a_crash_resets_the_node_at_start(start_mgmt):
    """The marker as a crash after the first committed deletion leaves it, whatever the store holds."""
    m = start_mgmt()
    srv = m.server
    _populate(m, 50)
    srv.stop()
    with open(os.path.join(srv.data_dir, "reset.pending"), "w") as f:
        f.write("x\n")
    srv.start()
    m2 = type(m)(srv)      # the fixture's class (a bare `conftest` import is ambiguous)
    _assert_virgin(m2)
    assert "a reset of this node was interrupted" in "".join(srv.lines)
    assert not os.path.exists(os.path.join(srv.data_dir, "reset.pending"))


def test_a_completed_reset_leaves_no_marker(start_mgmt):
    """What is created after a reset survives a kill -9 and the next start: the node is not reset again."""
    m = start_mgmt()
    srv = m.server
    _populate(m, 50)
    _stop_app(m)
    assert m.api.post("/api/usagi/reset").status == 204
    assert not os.path.exists(os.path.join(srv.data_dir, "reset.pending"))
    assert m.api.put("/api/vhosts/rc-after", {}).status in (201, 204)
    srv.kill()
    srv.start()
    m2 = type(m)(srv)      # the fixture's class (a bare `conftest` import is ambiguous)
    assert "a reset of this node was interrupted" not in "".join(srv.lines)
    assert [v["name"] for v in m2.api.get("/api/vhosts").json()] == ["/", "rc-after"]
