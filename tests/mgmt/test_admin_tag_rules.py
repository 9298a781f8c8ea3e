"""The administrator's API refused to users without the administrator tag, whatever other tags they
hold (management, monitoring, policymaker), as RabbitMQ refuses it: users, virtual hosts,
permissions and topic permissions, limits, operator policies, feature flags, definitions export
and import, and closing another user's connection. Every refused write leaves the broker as it
was (read back as the administrator). Policies: policymakers may change them, the others may not.

Objects that belong to a user (connections, channels, a user's limits) follow RabbitMQ's owner
rule: the owner and monitoring users read them, only administrators close another's connection,
and anyone else gets 401 for them, for names that exist and names that do not alike.

These are the rules the dashboard's pages follow (tests/dashboard/test_dashboard_tags.py); the API
enforces them whatever a page shows.

Differential: with USAGI_TEST_BROKER_URL and USAGI_TEST_MGMT_URL the same expectations are checked
against RabbitMQ (only objects this test makes are touched). One difference is kept on purpose:
RabbitMQ up to 4.x lists every user's limits (GET /api/user-limits) to any management user; Usagi
answers it to administrators only, as RabbitMQ's main branch now does ("Check user or admin/monitor
for user-limits"), so that request is left out of the differential run.
"""
from __future__ import annotations

import json
import os
import sys
import uuid

import pytest

from mgmtutil import Api, q, wait_until

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from support.harness import management_base  # noqa: E402

pytestmark = pytest.mark.timeout(180)

UID = uuid.uuid4().hex[:8]
PW = f"pw-{UID}"
VH = f"tagrules-{UID}"
ADMIN_ONLY = (401, {"error": "not_authorised", "reason": "Not administrator user"})
NOT_OBJECT = (401, {"error": "not_authorised", "reason": "User not authorised to access object"})


@pytest.fixture(scope="module")
def env(broker):
    base, admin_user, admin_password = management_base(broker)
    admin = Api(base, admin_user, admin_password)
    if admin.get("/api/overview").status != 200:
        pytest.skip(f"management API not reachable at {base} (set USAGI_TEST_MGMT_URL)")
    users = {tag: f"tr-{tag}-{UID}" for tag in ("management", "monitoring", "policymaker")}
    victim = f"tr-victim-{UID}"
    conns = []
    try:
        admin.ok("PUT", f"/api/vhosts/{q(VH)}", {})
        admin.ok("PUT", f"/api/permissions/{q(VH)}/{q(admin_user)}", {"configure": ".*", "write": ".*", "read": ".*"})
        for tag, name in users.items():
            admin.ok("PUT", f"/api/users/{q(name)}", {"password": PW, "tags": tag})
            admin.ok("PUT", f"/api/permissions/{q(VH)}/{q(name)}", {"configure": ".*", "write": ".*", "read": ".*"})
        admin.ok("PUT", f"/api/users/{q(victim)}", {"password": PW, "tags": "management"})
        admin.ok("PUT", f"/api/permissions/{q(VH)}/{q(victim)}", {"configure": "^v", "write": "^v", "read": "^v"})
        admin.ok("PUT", f"/api/topic-permissions/{q(VH)}/{q(victim)}", {"exchange": "amq.topic", "write": "^v",
                                                                         "read": "^v"})
        admin.ok("PUT", f"/api/vhost-limits/{q(VH)}/max-queues", {"value": 100})
        admin.ok("PUT", f"/api/user-limits/{q(victim)}/max-channels", {"value": 10})
        admin.ok("PUT", f"/api/operator-policies/{q(VH)}/op", {"pattern": "^op-", "definition": {"max-length": 5},
                                                                "apply-to": "queues"})
        admin.ok("PUT", f"/api/policies/{q(VH)}/pol", {"pattern": "^pol-", "definition": {"max-length": 5}})
        # a connection of the administrator, which only an administrator may close
        import pika
        conns.append(pika.BlockingConnection(pika.ConnectionParameters(
            host=broker.host, port=broker.port, virtual_host=VH, connection_attempts=1, socket_timeout=5,
            credentials=pika.PlainCredentials(admin_user, admin_password),
            client_properties={"connection_name": f"tagrules-{UID}"})))
        name = wait_until(lambda: next((c["name"] for c in admin.get(f"/api/vhosts/{q(VH)}/connections").json()
                                        if c.get("user_provided_name") == f"tagrules-{UID}"), None), 30,
                          message="the administrator's connection listed")
        yield admin, users, victim, name, not broker.is_usagi
    finally:
        for c in conns:
            if c.is_open:
                c.close()
        for name in list(users.values()) + [victim, f"tr-new-{UID}"]:
            admin.delete(f"/api/users/{q(name)}")
        for v in (VH, f"{VH}-new"):
            admin.delete(f"/api/vhosts/{q(v)}")


# statistics that move with any traffic (a vhost's bytes and message counts and their rates): not
# what a refused request could have changed
VOLATILE = {"recv_oct", "send_oct", "message_stats", "messages", "messages_ready", "messages_unacknowledged",
            "cluster_state"}


def _stable(body: bytes):
    try:
        doc = json.loads(body)
    except ValueError:
        return body
    if isinstance(doc, dict):
        return {k: v for k, v in doc.items() if k not in VOLATILE and not k.endswith("_details")}
    return doc


def snapshot(admin: Api, victim: str) -> dict:
    """What the refused requests must not change, as the administrator reads it."""
    get = lambda p: (lambda r: (r.status, _stable(r.body)))(admin.get(p))  # noqa: E731
    return {p: get(p) for p in (
        f"/api/users/{q(victim)}", f"/api/users/tr-new-{UID}", f"/api/vhosts/{q(VH)}", f"/api/vhosts/{q(VH)}-new",
        f"/api/permissions/{q(VH)}/{q(victim)}", f"/api/topic-permissions/{q(VH)}/{q(victim)}",
        f"/api/vhost-limits/{q(VH)}", f"/api/user-limits/{q(victim)}", f"/api/operator-policies/{q(VH)}/op",
        f"/api/operator-policies/{q(VH)}/op2", f"/api/queues/{q(VH)}/imported-{UID}")}


def admin_requests(victim: str, conn_name: str) -> list:
    """(method, path, body) of what only an administrator may do."""
    vh, v = q(VH), q(victim)
    return [
        ("GET", "/api/users", None), ("GET", f"/api/users/{v}", None), ("GET", "/api/users/without-permissions", None),
        ("PUT", f"/api/users/tr-new-{UID}", {"password": "x", "tags": "administrator"}),
        ("PUT", f"/api/users/{v}", {"password": "changed", "tags": "administrator"}),
        ("DELETE", f"/api/users/{v}", None), ("POST", "/api/users/bulk-delete", {"users": [victim]}),
        ("GET", f"/api/vhosts/{vh}", None), ("PUT", f"/api/vhosts/{vh}-new", {}), ("DELETE", f"/api/vhosts/{vh}", None),
        ("GET", "/api/permissions", None), ("GET", f"/api/vhosts/{vh}/permissions", None),
        ("GET", f"/api/users/{v}/permissions", None), ("GET", f"/api/permissions/{vh}/{v}", None),
        ("PUT", f"/api/permissions/{vh}/{v}", {"configure": ".*", "write": ".*", "read": ".*"}),
        ("DELETE", f"/api/permissions/{vh}/{v}", None),
        ("GET", "/api/topic-permissions", None), ("GET", f"/api/topic-permissions/{vh}/{v}", None),
        ("PUT", f"/api/topic-permissions/{vh}/{v}", {"exchange": "amq.topic", "write": ".*", "read": ".*"}),
        ("DELETE", f"/api/topic-permissions/{vh}/{v}", None),
        ("DELETE", f"/api/topic-permissions/{vh}/{v}/amq.topic", None),
        ("PUT", f"/api/vhost-limits/{vh}/max-queues", {"value": 1}), ("DELETE", f"/api/vhost-limits/{vh}/max-queues", None),
        ("GET", "/api/user-limits", None), ("PUT", f"/api/user-limits/{v}/max-channels", {"value": 1}),
        ("DELETE", f"/api/user-limits/{v}/max-channels", None),
        ("GET", f"/api/operator-policies/{vh}/op", None),
        ("PUT", f"/api/operator-policies/{vh}/op2", {"pattern": ".*", "definition": {"max-length": 1}}),
        ("DELETE", f"/api/operator-policies/{vh}/op", None),
        ("GET", "/api/feature-flags", None),
        ("GET", "/api/definitions", None), ("GET", f"/api/definitions/{vh}", None),
        ("POST", "/api/definitions", {"queues": [{"name": f"imported-{UID}", "vhost": VH, "durable": True,
                                                  "auto_delete": False, "arguments": {}}]}),
        ("POST", f"/api/definitions/{vh}", {"queues": [{"name": f"imported-{UID}", "durable": True,
                                                        "auto_delete": False, "arguments": {}}]}),
    ]


@pytest.mark.parametrize("tag", ["management", "monitoring", "policymaker"])
def test_admin_actions_are_refused_without_the_administrator_tag(env, tag):
    admin, users, victim, conn_name, differential = env
    api = admin.as_user(users[tag], PW)
    assert api.get("/api/whoami").json()["tags"] == [tag]
    before = snapshot(admin, victim)
    wrong = []
    for method, path, body in admin_requests(victim, conn_name):
        if differential and (method, path) == ("GET", "/api/user-limits"):
            continue
        r = api.request(method, path, body)
        got = (r.status, r.json() if r.body else None)
        if got != ADMIN_ONLY:
            wrong.append((method, path, got))
    assert not wrong, f"{tag}: not refused as RabbitMQ refuses them: {wrong}"
    assert snapshot(admin, victim) == before, f"{tag}: a refused request changed something"

    # another user's connection: only an administrator closes it (monitoring users may see it)
    r = api.delete(f"/api/connections/{q(conn_name)}")
    assert (r.status, r.json()) == NOT_OBJECT, r
    r = api.get(f"/api/connections/{q(conn_name)}")
    if tag == "monitoring":
        assert r.status == 200
    else:
        assert (r.status, r.json()) == NOT_OBJECT
    assert admin.get(f"/api/connections/{q(conn_name)}").status == 200


@pytest.mark.parametrize("tag", ["management", "monitoring", "policymaker"])
def test_policies_need_the_policymaker_tag(env, tag):
    admin, users, victim, conn_name, _differential = env
    api = admin.as_user(users[tag], PW)
    name = f"p-{tag}"
    # everyone with access to the vhost lists its policies and operator policies
    assert [p["name"] for p in api.get(f"/api/policies/{q(VH)}").json()] == ["pol"]
    assert [p["name"] for p in api.get(f"/api/operator-policies/{q(VH)}").json()] == ["op"]
    r = api.put(f"/api/policies/{q(VH)}/{name}", {"pattern": "^x", "definition": {"max-length": 1}})
    d = api.delete(f"/api/policies/{q(VH)}/pol")
    g = api.get(f"/api/policies/{q(VH)}/pol")
    if tag == "policymaker":
        assert (r.status, d.status, g.status) == (201, 204, 404)
        admin.ok("PUT", f"/api/policies/{q(VH)}/pol", {"pattern": "^pol-", "definition": {"max-length": 5}})
        assert api.delete(f"/api/policies/{q(VH)}/{name}").status == 204
    else:
        assert (r.status, r.json()) == NOT_OBJECT and (d.status, d.json()) == NOT_OBJECT
        assert (g.status, g.json()) == NOT_OBJECT
        assert admin.get(f"/api/policies/{q(VH)}/{name}").status == 404
        assert admin.get(f"/api/policies/{q(VH)}/pol").status == 200


@pytest.mark.parametrize("tag", ["management", "monitoring", "policymaker"])
def test_objects_of_other_users_are_refused_not_hidden(broker, env, tag):
    """A connection, a channel or a user's limits belong to a user: RabbitMQ shows them to their
    owner and to monitoring users, and answers anyone else 401 "User not authorised to access
    object", for a name that exists and for one that does not alike (a 404 would tell them which
    names exist)."""
    import pika
    admin, users, victim, _conn_name, differential = env
    api = admin.as_user(users[tag], PW)
    base, admin_user, admin_password = management_base(broker)
    conn = pika.BlockingConnection(pika.ConnectionParameters(
        host=broker.host, port=broker.port, virtual_host=VH, connection_attempts=1, socket_timeout=5,
        credentials=pika.PlainCredentials(admin_user, admin_password),
        client_properties={"connection_name": f"tagrules-ch-{UID}-{tag}"}))
    try:
        conn.channel()
        cname = wait_until(lambda: next((c["name"] for c in admin.get(f"/api/vhosts/{q(VH)}/connections").json()
                                         if c.get("user_provided_name") == f"tagrules-ch-{UID}-{tag}"), None), 30,
                           message="the administrator's connection listed")
        chan = wait_until(lambda: next((c["name"] for c in admin.get(f"/api/connections/{q(cname)}/channels").json()),
                                       None), 30, message="its channel listed")
        missing_conn, missing_chan = f"no-such-connection-{UID}", f"no-such-connection-{UID} (1)"
        monitor = tag == "monitoring"
        got = {
            "channel": api.get(f"/api/channels/{q(chan)}"),
            "missing channel": api.get(f"/api/channels/{q(missing_chan)}"),
            "missing connection": api.get(f"/api/connections/{q(missing_conn)}"),
            "close missing connection": api.delete(f"/api/connections/{q(missing_conn)}"),
            "own limits": api.get(f"/api/user-limits/{q(users[tag])}"),
        }
        want = {
            "channel": 200 if monitor else NOT_OBJECT,
            "missing channel": 404 if monitor else NOT_OBJECT,
            "missing connection": 404 if monitor else NOT_OBJECT,
            "close missing connection": NOT_OBJECT,
            "own limits": 200,
        }
        if differential:
            # RabbitMQ fails with 500 on a connection or channel that does not exist where the tag
            # does not allow the request (its owner rule reads the user of a missing object); Usagi
            # refuses them as it refuses those that exist
            for k in ("missing channel", "missing connection", "close missing connection"):
                if want[k] != 404:
                    del got[k], want[k]
        if not differential:
            # RabbitMQ 4.x (main): another user's limits to monitoring users and administrators only
            # (3.10 shows them to every management user)
            got["other's limits"] = api.get(f"/api/user-limits/{q(victim)}")
            got["missing user's limits"] = api.get(f"/api/user-limits/no-such-user-{UID}")
            want["other's limits"] = 200 if monitor else NOT_OBJECT
            want["missing user's limits"] = 404 if monitor else NOT_OBJECT
        seen = {k: (r.status if isinstance(want[k], int) else (r.status, r.json() if r.body else None))
                for k, r in got.items()}
        assert seen == want
        assert api.get(f"/api/user-limits/{q(users[tag])}").json() == []
        if monitor and not differential:
            assert api.get(f"/api/user-limits/{q(victim)}").json() == [{"user": victim, "value": {"max-channels": 10}}]
    finally:
        conn.close()
