"""Backtracking patterns from users with the rights to write them: a `management` user's
`use_regex` listing filter, a `policymaker`'s policies, and an administrator's permission and
topic-permission patterns. Each runs while a bystander client measures its publish-to-delivery
latency: it must keep its connection and a generous p99, and the attacked operations must answer
as RabbitMQ would (a match out of budget is no match)."""
from __future__ import annotations

import base64
import inspect
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from abuseutil import assert_healthy
from mgmtapi import MGMT_RE
from rawamqp import RawConnection, close_summary, frame_bytes, method_payload
from support.bystander import Bystander
from support.harness import wait_for

pytestmark = pytest.mark.timeout(300)

P99_MS = 200                   # generous: a frozen loop gives seconds
RUN = "a" * 200                # long runs of one letter are what backtracking feeds on

# patterns that match none of the names below, each slow to find so with a backtracking matcher
PATHOLOGICAL = [
    r"^x\.(a|aa)+$",                       # alternation blowup
    r"^x\.(a+)+$",                         # nested quantifiers
    r"^x\.(a*)*$",
    r"^x\.(.*a){20}$",
    ".*" * 20 + "\\x00",                   # `.*` twenty times, then an impossible character
    r"^x\.((a+)+)+\d{6}$",
]


def mgmt(srv, method, path, body=None, user="guest", password="guest", timeout=120):
    m = wait_for(lambda: MGMT_RE.search("".join(srv.lines)), message="management listener")
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    req = urllib.request.Request(f"http://127.0.0.1:{m.group(2)}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": "Basic " + auth, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            data = r.read()
            return r.status, (json.loads(data) if data else None)
    except urllib.error.HTTPError as e:
        data = e.read()
        return e.code, (json.loads(data) if data else None)


def add_user(srv, name, tags, configure=".*", write=".*", read=".*"):
    assert mgmt(srv, "PUT", f"/api/users/{name}", {"password": "pw", "tags": tags})[0] in (201, 204)
    assert mgmt(srv, "PUT", f"/api/permissions/%2F/{name}",
                {"configure": configure, "write": write, "read": read})[0] in (201, 204)


def declare_many(srv, method, names, **args):
    c = RawConnection.opened(srv.host, srv.port)
    c.open_channel(1)
    key = "exchange" if method == "exchange.declare" else "queue"
    c.send_raw(b"".join(frame_bytes(1, 1, method_payload(method, **{key: n}, **args)) for n in names))
    for _ in names:
        c.expect_method(method + "-ok", timeout=60)
    c.close_connection()


def attack(fn):
    """Run the attack in a thread (a frozen broker must not hang the test); wait for it."""
    out = {}

    def run():
        try:
            out["result"] = fn()
        except Exception as e:  # noqa: BLE001 - reported below
            out["error"] = e
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(90)
    assert not t.is_alive(), "the attacked operation did not finish in 90 s"
    if "error" in out:
        raise out["error"]
    return out["result"]


def check_topic_uses_bounded_matching() -> bool:
    """Topic permissions are checked in core (channel.py, moving to access.py): through
    UserDB.topic_allowed once that code calls it."""
    import usagi.core.channel as channel
    srcs = [inspect.getsource(channel)]
    try:
        import usagi.core.access as access
        srcs.append(inspect.getsource(access))
    except ImportError:
        pass
    return any("topic_allowed" in s for s in srcs)


# ------------------------------------------------------------------ management: use_regex

@pytest.mark.parametrize("kind", ["exchanges", "queues"])
def test_use_regex_listing_with_backtracking_patterns(fresh_server, kind):
    srv = fresh_server()
    names = [f"x.{RUN}.{i:05d}" for i in range(3000)]
    if kind == "exchanges":
        declare_many(srv, "exchange.declare", names, type="direct")
    else:
        declare_many(srv, "queue.declare", names)
    add_user(srv, "watcher", "management")
    with Bystander(srv.host, srv.port) as b:
        time.sleep(0.3)
        b.reset()

        def run():
            answers = []
            for pat in PATHOLOGICAL * 2:
                q = urllib.parse.urlencode({"page": 1, "page_size": 100, "use_regex": "true", "name": pat})
                answers.append((pat, *mgmt(srv, "GET", f"/api/{kind}?{q}", user="watcher", password="pw")))
            return answers
        answers = attack(run)
        time.sleep(0.3)
        b.assert_ok(P99_MS)
    for pat, status, body in answers:
        # no name matches: the listing is empty (or refused as too expensive), never wrong
        assert status in (200, 400), (pat, status, body)
        if status == 200:
            assert body["filtered_count"] == 0, (pat, body["filtered_count"])
        else:
            assert body["error"] == "invalid_pagination_parameters", body
    # ordinary patterns still answer in full
    q = urllib.parse.urlencode({"page": 1, "page_size": 500, "use_regex": "true", "name": r"^X\.A+\.0001\d$"})
    status, body = mgmt(srv, "GET", f"/api/{kind}?{q}", user="watcher", password="pw")
    assert status == 200 and body["filtered_count"] == 10, body
    q = urllib.parse.urlencode({"page": 1, "use_regex": "true", "name": "(a"})
    assert mgmt(srv, "GET", f"/api/{kind}?{q}", user="watcher", password="pw") == (
        400, {"error": "bad_request", "reason": "Pagination parameters are invalid"})
    q = urllib.parse.urlencode({"page": 1, "use_regex": "true", "name": "a" * 1025})
    assert mgmt(srv, "GET", f"/api/{kind}?{q}", user="watcher", password="pw") == (
        400, {"error": "invalid_pagination_parameters", "reason": "name filter regex is too long"})
    assert_healthy(srv)


# ------------------------------------------------------------------ policymaker: policies

def test_policies_with_backtracking_patterns(fresh_server):
    srv = fresh_server()
    declare_many(srv, "queue.declare", [f"x.{RUN}.{i:05d}" for i in range(2000)])
    add_user(srv, "pm", "policymaker")
    with Bystander(srv.host, srv.port) as b:
        time.sleep(0.3)
        b.reset()

        def run():
            for i, pat in enumerate(PATHOLOGICAL):
                status, body = mgmt(srv, "PUT", f"/api/policies/%2F/slow-{i}",
                                    {"pattern": pat, "definition": {"max-length": 1}, "priority": 10 + i,
                                     "apply-to": "queues"}, user="pm", password="pw")
                assert status in (201, 204), body
            status, body = mgmt(srv, "PUT", "/api/policies/%2F/legit",
                                {"pattern": r"^legit\.", "definition": {"max-length": 2}, "apply-to": "queues"},
                                user="pm", password="pw")
            assert status in (201, 204), body
            # declares and publishes meet every policy
            c = RawConnection.opened(srv.host, srv.port, user="pm", password="pw")
            c.open_channel(1)
            c.call(1, "confirm.select", "confirm.select-ok")
            for i in range(200):
                q = f"x.{RUN}.{90000 + i}"
                c.call(1, "queue.declare", "queue.declare-ok", queue=q)
                c.publish(1, "", q, b"m")
                c.expect_method("basic.ack", timeout=60)
            c.call(1, "queue.declare", "queue.declare-ok", queue="legit.q")
            for _ in range(3):
                c.publish(1, "", "legit.q", b"m")
                c.expect_method("basic.ack", timeout=60)
            c.close_connection()
        attack(run)
        time.sleep(0.3)
        b.assert_ok(P99_MS)
    # no pathological policy applies (a match out of budget is no match); the ordinary one does
    status, q = mgmt(srv, "GET", f"/api/queues/%2F/x.{RUN}.90007")
    assert status == 200 and q.get("policy") in (None, ""), q
    assert q["messages"] == 1 or q.get("messages_ready") == 1, q
    status, q = mgmt(srv, "GET", "/api/queues/%2F/legit.q")
    assert q["policy"] == "legit", q
    wait_for(lambda: mgmt(srv, "GET", "/api/queues/%2F/legit.q")[1].get("messages") == 2,
             message="max-length 2 from the ordinary policy")
    assert_healthy(srv)


def test_policy_pattern_validation_as_rabbitmq(fresh_server):
    srv = fresh_server()
    assert mgmt(srv, "PUT", "/api/policies/%2F/bad", {"pattern": "(a", "definition": {"max-length": 1}}) == (
        400, {"error": "bad_request",
              "reason": 'Validation failed\n\npattern should be regular expression but is invalid: '
                        '{"missing )",2}\n'})
    assert mgmt(srv, "PUT", "/api/policies/%2F/long", {"pattern": "a" * 1025, "definition": {"max-length": 1}}) == (
        400, {"error": "bad_request", "reason": "Validation failed\n\npattern must not exceed 1024 bytes\n"})
    status, body = mgmt(srv, "PUT", "/api/policies/%2F/huge",
                        {"pattern": r"(?:\w{1000}){1000}", "definition": {"max-length": 1}})
    assert status == 400 and "regular expression is too large" in body["reason"], body
    assert mgmt(srv, "PUT", "/api/permissions/%2F/guest", {"configure": "(a", "write": ".*", "read": ".*"}) == (
        400, {"error": "bad_request",
              "reason": ["invalid_regexp", [40, 97], [[ord(c) for c in "missing )"], 2]]})
    assert mgmt(srv, "PUT", "/api/topic-permissions/%2F/guest",
                {"exchange": "amq.topic", "write": "(a", "read": ".*"}) == (
        400, {"error": "bad_request", "reason": ["invalid_regexp", "(a", [[ord(c) for c in "missing )"], 2]]})
    assert_healthy(srv)


# ------------------------------------------------------------------ administrator: permissions

def test_permission_patterns_that_backtrack(fresh_server):
    srv = fresh_server()
    add_user(srv, "u", "", configure=r"^(a|aa)+$", write=r"^(a+)+$", read=".*")
    with Bystander(srv.host, srv.port) as b:
        time.sleep(0.3)
        b.reset()

        def run():
            c = RawConnection.opened(srv.host, srv.port, user="u", password="pw")
            replies = []
            for i in range(20):
                ch = i + 1
                c.open_channel(ch)
                if i % 2:
                    c.send_method(ch, "queue.declare", queue="a" * 250 + f"!{i}")
                else:
                    c.send_method(ch, "basic.publish", exchange="a" * 250 + f"!{i}", routing_key="k")
                    c.send_content(ch, b"m")
                replies.append(close_summary(c.expect_channel_close(ch, timeout=120))[0])
            c.open_channel(99)
            ok = c.call(99, "queue.declare", "queue.declare-ok", queue="aaaa")   # matches: allowed
            c.close_connection()
            return replies, ok
        replies, ok = attack(run)
        time.sleep(0.3)
        b.assert_ok(P99_MS)
    assert replies == [403] * 20, replies        # out of budget: no match, so refused
    assert ok.args["queue"] == "aaaa"
    assert_healthy(srv)


@pytest.mark.xfail(condition=not check_topic_uses_bounded_matching(), strict=True,
                   reason="core's topic permission check does not call UserDB.topic_allowed yet")
def test_topic_permission_patterns_that_backtrack(fresh_server):
    srv = fresh_server()
    add_user(srv, "u", "")
    assert mgmt(srv, "PUT", "/api/topic-permissions/%2F/u",
                {"exchange": "amq.topic", "write": r"^(a|aa)+$", "read": r"^(a+)+$"})[0] in (201, 204)
    with Bystander(srv.host, srv.port) as b:
        time.sleep(0.3)
        b.reset()

        def run():
            c = RawConnection.opened(srv.host, srv.port, user="u", password="pw")
            c.open_channel(1)
            q = c.call(1, "queue.declare", "queue.declare-ok", queue="", exclusive=True).args["queue"]
            replies = []
            for i in range(20):
                ch = i + 2
                c.open_channel(ch)
                if i % 2:
                    c.send_method(ch, "queue.bind", queue=q, exchange="amq.topic", routing_key="a" * 250 + "!")
                else:
                    c.publish(ch, "amq.topic", "a" * 250 + "!", b"m")
                replies.append(close_summary(c.expect_channel_close(ch, timeout=15))[0])
            c.publish(1, "amq.topic", "aaaa", b"m")                       # matches: allowed
            c.call(1, "queue.bind", "queue.bind-ok", queue=q, exchange="amq.topic", routing_key="aa")
            c.close_connection()
            return replies
        replies = attack(run)
        time.sleep(0.3)
        b.assert_ok(P99_MS)
    assert replies == [403] * 20, replies
    assert_healthy(srv)
