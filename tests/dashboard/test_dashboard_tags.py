"""What the dashboard shows a user by their tags, in headless Chromium, following RabbitMQ's rules:

- management: the object pages; under Admin only Policies and Limits, to read. The pages of users,
  virtual hosts, feature flags and definitions are not reachable (a bookmark shows why, and the API
  refuses what they would ask); no forms or buttons to change policies or limits; no node figures;
  only their own connections, which they may close.
- policymaker: the same, and policies may be added, edited and deleted (not operator policies).
- monitoring: the node panel, every connection and channel; closing another user's connection is
  not offered (only administrators may).

The API's side of the same rules: tests/mgmt/test_admin_tag_rules.py.
"""
from __future__ import annotations

import pytest
from dashutil import (AVAILABLE, WHY, choose, click, find, finds, go, js_errors, login, page_shot, row_names,
                      shown, submit_ok, text, type_into, wait)

if not AVAILABLE:
    pytest.skip(WHY, allow_module_level=True)
pika = pytest.importorskip("pika")

pytestmark = pytest.mark.timeout(240)

ADMIN_ONLY_PAGES = ("admin/users", "admin/users/guest", "admin/vhosts", "admin/vhosts/%2F", "admin/feature-flags",
                    "admin/definitions")


def setup_broker(dash):
    assert dash.api("PUT", "/policies/%2F/cap-orders", {"pattern": "^orders", "definition": {"max-length": 9}})[0] == 201
    assert dash.api("PUT", "/operator-policies/%2F/op-cap", {"pattern": ".*", "definition": {"max-length": 99},
                                                             "apply-to": "queues"})[0] == 201
    assert dash.api("PUT", "/vhost-limits/%2F/max-queues", {"value": 500})[0] in (201, 204)
    dash.user("mona", "pw", "management")
    dash.user("polly", "pw", "policymaker")
    dash.user("monty", "pw", "monitoring")


def test_management_user_reaches_no_admin_page_or_action(dash, browser, shots):
    setup_broker(dash)
    d = browser
    guest_conn = dash.pika(name="guest-conn")
    own_conn = dash.pika("mona", "pw", name="mona-conn")
    own_conn.channel().queue_declare("mona-q")
    login(d, dash.base, "mona", "pw")
    assert text(d, "#user-tags") == "management"

    # -- Admin shows Policies and Limits only
    click(d, '#nav a[data-nav="admin"]')
    wait(d, lambda d: d.execute_script("return location.hash") == "#/admin/policies", what="the policies tab")
    assert [a.text for a in finds(d, "#admin-tabs a")] == ["Policies", "Limits"]
    wait(d, lambda d: row_names(d, "#policies-table") == ["cap-orders"], what="the policy listed")
    wait(d, lambda d: row_names(d, "#operator-policies-table") == ["op-cap"], what="the operator policy listed")
    for css in ("#policy-form", "#operator-policy-form", ".edit-policy", ".delete-policy", "#add-policy"):
        assert not finds(d, css), css
    page_shot(d, shots, "tags-01-management-policies")
    click(d, '#admin-tabs a[data-tab="limits"]')
    wait(d, lambda d: row_names(d, "#limits-table", "data-limit") == ["max-queues"], what="the vhost limit listed")
    for css in ("#limit-form", ".clear-limit", "#user-limits-panel", "#user-limit-form"):
        assert not finds(d, css), css

    # -- the administrator's pages are out of reach, even from a bookmark
    for route in ADMIN_ONLY_PAGES:
        go(d, dash.base, route, ".error-box")
        assert "administrator" in text(d, ".error-box"), route
        for css in ("#users-table", "#vhosts-table", "#add-user-form", "#add-vhost-form", "#permissions-panel",
                    "#feature-flags-table", "#export-form", "#import-form", "#delete-user-button",
                    "#delete-vhost-button"):
            assert not finds(d, css), (route, css)
    page_shot(d, shots, "tags-02-management-users-refused")
    # ... and the API refuses what those pages would do
    for method, path, body in (("GET", "/users", None), ("PUT", "/users/evil", {"password": "x", "tags": "administrator"}),
                               ("PUT", "/vhosts/evil", {}), ("GET", "/definitions", None),
                               ("POST", "/definitions", {"users": [{"name": "evil", "password_hash": "", "tags": "administrator"}]}),
                               ("GET", "/feature-flags", None), ("PUT", "/vhost-limits/%2F/max-queues", {"value": 1}),
                               ("PUT", "/policies/%2F/evil", {"pattern": ".*", "definition": {"max-length": 0}}),
                               ("DELETE", "/operator-policies/%2F/op-cap", None)):
        status, _ = dash.api(method, path, body, user="mona", password="pw")
        assert status == 401, (method, path, status)
    assert dash.api("GET", "/users/evil")[0] == 404 and dash.api("GET", "/vhosts/evil")[0] == 404
    assert dash.api("GET", "/policies/%2F/evil")[0] == 404 and dash.api("GET", "/operator-policies/%2F/op-cap")[0] == 200
    assert dash.api("GET", "/vhost-limits/%2F")[1] == [{"vhost": "/", "value": {"max-queues": 500}}]

    # -- the overview: totals and charts, no node figures
    go(d, dash.base, "", "#node-panel")
    wait(d, lambda d: "monitoring users" in text(d, "#node-panel"), what="the node panel without figures")
    assert not finds(d, "#node-memory") and not finds(d, "#chart-memory")

    # -- connections: only their own, which they may close
    click(d, '#nav a[data-nav="connections"]')
    wait(d, lambda d: len(finds(d, "#connections-table tbody tr[data-name]")) == 1, what="one connection listed")
    assert "mona-conn" in text(d, "#connections-table") and "guest-conn" not in text(d, "#connections-table")
    click(d, "#connections-table tbody tr[data-name] td.name a")
    wait(d, lambda d: shown(d, "#close-panel"), what="the close form of their own connection")
    page_shot(d, shots, "tags-03-management-connection")
    assert not js_errors(d), js_errors(d)
    guest_conn.close()
    own_conn.close()


def test_policymaker_changes_policies_but_not_operator_policies_or_limits(dash, browser, shots):
    setup_broker(dash)
    d = browser
    login(d, dash.base, "polly", "pw")
    click(d, '#nav a[data-nav="admin"]')
    wait(d, lambda d: row_names(d, "#policies-table") == ["cap-orders"], what="the policy listed")
    assert [a.text for a in finds(d, "#admin-tabs a")] == ["Policies", "Limits"]
    assert finds(d, "#policy-form") and finds(d, '#policies-table .edit-policy')
    assert not finds(d, "#operator-policy-form") and not finds(d, "#operator-policies-table .delete-policy")
    choose(d, "#policy-form-vhost", "/")
    type_into(d, "#policy-form-name", "polly-ttl")
    type_into(d, "#policy-form-pattern", "^polly")
    click(d, '#policy-form .kv-link[data-key="message-ttl"]')
    type_into(d, "#policy-form-definition .kv-row:nth-child(1) .kv-value", "30000")
    submit_ok(d, "policy-form", "polly-ttl")
    assert dash.api("GET", "/policies/%2F/polly-ttl")[1]["definition"] == {"message-ttl": 30000}
    wait(d, lambda d: "polly-ttl" in row_names(d, "#policies-table"), what="the new policy listed")
    page_shot(d, shots, "tags-04-policymaker-policies")
    click(d, '#admin-tabs a[data-tab="limits"]')
    wait(d, lambda d: row_names(d, "#limits-table", "data-limit") == ["max-queues"], what="the limit listed")
    assert not finds(d, "#limit-form") and not finds(d, ".clear-limit")
    go(d, dash.base, "admin/users", ".error-box")
    assert not finds(d, "#users-table")
    assert not js_errors(d), js_errors(d)


def test_monitoring_user_sees_the_node_and_all_connections(dash, browser, shots):
    setup_broker(dash)
    d = browser
    guest_conn = dash.pika(name="guest-conn")
    login(d, dash.base, "monty", "pw")
    go(d, dash.base, "", "#node-memory")
    assert "high watermark" in text(d, "#node-memory")
    click(d, '#nav a[data-nav="connections"]')
    wait(d, lambda d: "guest-conn" in text(d, "#connections-table"), what="guest's connection listed")
    click(d, "#connections-table tbody tr[data-name] td.name a")
    wait(d, lambda d: "guest" in text(d, "#connection-details"), what="guest's connection page")
    assert not shown(d, "#close-panel")      # only administrators close others' connections
    page_shot(d, shots, "tags-05-monitoring-connection")
    click(d, '#nav a[data-nav="admin"]')
    wait(d, lambda d: finds(d, "#policies-table"), what="the policies page")
    assert [a.text for a in finds(d, "#admin-tabs a")] == ["Policies", "Limits"]
    assert not finds(d, "#policy-form")
    assert find(d, "#nav-admin").is_displayed()
    assert not js_errors(d), js_errors(d)
    guest_conn.close()
