"""The dashboard's admin pages in headless Chromium, driven as an administrator would: users (add,
tags, password, permissions, topic permissions, delete), virtual hosts (add, metadata, limits,
delete), limits of users, policies and operator policies (add, edit, delete), definitions export
and import, and the node's feature flags. After each action the broker's state is read back
through the management API.

Screenshots of the pages go to dashutil.SHOTS_DIR.
"""
from __future__ import annotations

import json
import os
import tempfile

import pytest
from dashutil import (AVAILABLE, WHY, choose, click, confirm, find, finds, go, js_errors, login, page_shot,
                      row_names, submit_ok, text, type_into, wait)

if not AVAILABLE:
    pytest.skip(WHY, allow_module_level=True)
pika = pytest.importorskip("pika")

pytestmark = pytest.mark.timeout(240)


def test_users_permissions_and_topic_permissions(dash, browser, shots):
    d = browser
    login(d, dash.base, "guest", "guest")

    # -- the users page lists guest; a user is added with a password and tags from the quick picks
    click(d, '#nav a[data-nav="admin"]')
    wait(d, lambda d: "guest" in row_names(d, "#users-table"), what="guest in the users table")
    assert [a.text for a in finds(d, "#admin-tabs a")] == [
        "Users", "Virtual hosts", "Policies", "Limits", "Feature flags", "Definitions"]
    type_into(d, "#new-user-name", "anna")
    type_into(d, "#new-user-password", "s3cret")
    type_into(d, "#new-user-password-confirm", "s3cret")
    find(d, "#new-user-tags").clear()
    click(d, '#add-user-form a[data-tag="monitoring"]')
    click(d, '#add-user-form a[data-tag="policymaker"]')
    assert find(d, "#new-user-tags").get_attribute("value") == "monitoring, policymaker"
    submit_ok(d, "add-user-form", "anna")
    status, u = dash.api("GET", "/users/anna")
    assert status == 200 and sorted(u["tags"]) == ["monitoring", "policymaker"] and u["password_hash"]
    assert dash.api("GET", "/whoami", user="anna", password="s3cret")[0] == 200
    wait(d, lambda d: "anna" in row_names(d, "#users-table"), what="anna in the users table")
    page_shot(d, shots, "admin-01-users")

    # mismatched passwords are refused in the page, nothing is sent
    type_into(d, "#new-user-name", "bob")
    type_into(d, "#new-user-password", "a")
    type_into(d, "#new-user-password-confirm", "b")
    click(d, "#add-user-form-submit")
    wait(d, lambda d: "differ" in text(d, "#add-user-form-result"), what="the password mismatch")
    assert dash.api("GET", "/users/bob")[0] == 404

    # -- the user's page: permissions in "/"
    click(d, '#users-table tr[data-name="anna"] td.name a')
    wait(d, lambda d: text(d, "#user-title") == "anna", what="anna's page")
    wait(d, lambda d: "No permissions" in text(d, "#permissions-table"), what="no permissions yet")
    choose(d, "#perm-vhost", "/")
    type_into(d, "#perm-configure", "^anna-")
    type_into(d, "#perm-write", ".*")
    type_into(d, "#perm-read", "^(anna-|shared)")
    submit_ok(d, "perm-form")
    assert dash.api("GET", "/permissions/%2F/anna") == (200, {
        "user": "anna", "vhost": "/", "configure": "^anna-", "write": ".*", "read": "^(anna-|shared)"})
    wait(d, lambda d: row_names(d, "#permissions-table", "data-vhost") == ["/"], what="the permission listed")

    # topic permissions on amq.topic
    choose(d, "#topic-vhost", "/")
    choose(d, "#topic-exchange", "amq.topic")
    type_into(d, "#topic-write", "^anna\\.")
    type_into(d, "#topic-read", ".*")
    submit_ok(d, "topic-form")
    assert dash.api("GET", "/topic-permissions/%2F/anna") == (200, [
        {"user": "anna", "vhost": "/", "exchange": "amq.topic", "write": "^anna\\.", "read": ".*"}])
    wait(d, lambda d: row_names(d, "#topic-permissions-table", "data-exchange") == ["amq.topic"],
         what="the topic permission listed")
    page_shot(d, shots, "admin-02-user")

    # -- new tags and a new password; then the tags alone (the password stays)
    wait(d, lambda d: find(d, "#edit-user-tags").get_attribute("value") == "monitoring, policymaker",
         what="the tags in the update form")
    type_into(d, "#edit-user-tags", "management")
    type_into(d, "#edit-user-password", "n3w")
    submit_ok(d, "edit-user-form")
    assert dash.api("GET", "/users/anna")[1]["tags"] == ["management"]
    assert dash.api("GET", "/whoami", user="anna", password="n3w")[0] == 200
    assert dash.api("GET", "/whoami", user="anna", password="s3cret")[0] == 401
    type_into(d, "#edit-user-tags", "management, monitoring")
    submit_ok(d, "edit-user-form")
    assert dash.api("GET", "/users/anna")[1]["tags"] == ["management", "monitoring"]
    assert dash.api("GET", "/whoami", user="anna", password="n3w")[0] == 200
    wait(d, lambda d: "monitoring" in text(d, "#user-tags-shown"), what="the new tags shown")

    # -- clear the topic permission, then the permission
    click(d, '#topic-permissions-table tr[data-exchange="amq.topic"] .clear-topic-permission')
    wait(d, lambda d: dash.api("GET", "/topic-permissions/%2F/anna")[0] == 404, what="the topic permission gone")
    click(d, '#permissions-table tr[data-vhost="/"] .clear-permission')
    confirm(d)
    wait(d, lambda d: dash.api("GET", "/permissions/%2F/anna")[0] == 404, what="the permission gone")
    wait(d, lambda d: "No permissions" in text(d, "#permissions-table"), what="the permissions table emptied")

    # -- delete the user (cancel first)
    click(d, "#delete-user-button")
    confirm(d, ok=False)
    assert dash.api("GET", "/users/anna")[0] == 200
    click(d, "#delete-user-button")
    confirm(d)
    wait(d, lambda d: d.execute_script("return location.hash") == "#/admin/users", what="back to the users")
    assert dash.api("GET", "/users/anna")[0] == 404
    wait(d, lambda d: "anna" not in row_names(d, "#users-table"), what="anna gone from the table")
    assert not js_errors(d), js_errors(d)


def test_vhosts_and_limits(dash, browser, shots):
    d = browser
    login(d, dash.base, "guest", "guest")
    go(d, dash.base, "admin/vhosts", "#vhosts-table")
    type_into(d, "#vhost-name", "tenant-a")
    type_into(d, "#vhost-description", "first tenant")
    type_into(d, "#vhost-tags", "blue, eu")
    choose(d, "#vhost-queue-type", "quorum")
    submit_ok(d, "add-vhost-form", "tenant-a")
    status, v = dash.api("GET", "/vhosts/tenant-a")
    assert status == 200 and v["description"] == "first tenant" and v["tags"] == ["blue", "eu"]
    assert v["default_queue_type"] == "quorum"
    # the creator may use it (as RabbitMQ grants)
    assert dash.api("GET", "/permissions/tenant-a/guest")[0] == 200
    wait(d, lambda d: "tenant-a" in row_names(d, "#vhosts-table"), what="tenant-a in the table")
    page_shot(d, shots, "admin-03-vhosts")

    # -- its page: limits, metadata, permissions of another user
    click(d, '#vhosts-table tr[data-name="tenant-a"] td.name a')
    wait(d, lambda d: text(d, "#vhost-title") == "tenant-a", what="tenant-a's page")
    choose(d, "#vhost-limit-form-name", "max-queues")
    type_into(d, "#vhost-limit-form-value", "10")
    submit_ok(d, "vhost-limit-form")
    choose(d, "#vhost-limit-form-name", "max-connections")
    type_into(d, "#vhost-limit-form-value", "5")
    submit_ok(d, "vhost-limit-form")
    assert dash.api("GET", "/vhost-limits/tenant-a") == (200, [
        {"vhost": "tenant-a", "value": {"max-queues": 10, "max-connections": 5}}])
    wait(d, lambda d: sorted(row_names(d, "#vhost-limits-table", "data-limit")) == ["max-connections", "max-queues"],
         what="both limits listed")
    type_into(d, "#edit-vhost-description", "first tenant, renamed")
    submit_ok(d, "edit-vhost-form")
    assert dash.api("GET", "/vhosts/tenant-a")[1]["description"] == "first tenant, renamed"
    assert dash.api("PUT", "/users/carl", {"password": "c", "tags": ""})[0] == 201
    choose(d, "#perm-user", "carl")
    type_into(d, "#perm-configure", "")
    submit_ok(d, "perm-form")
    assert dash.api("GET", "/permissions/tenant-a/carl")[1] == {
        "user": "carl", "vhost": "tenant-a", "configure": "", "write": ".*", "read": ".*"}
    page_shot(d, shots, "admin-04-vhost")

    # -- the limits page: clear a vhost limit; set and clear a user limit
    go(d, dash.base, "admin/limits", '#limits-table tr[data-vhost="tenant-a"]')
    click(d, '#limits-table tr[data-vhost="tenant-a"][data-limit="max-connections"] .clear-limit')
    wait(d, lambda d: dash.api("GET", "/vhost-limits/tenant-a")[1] == [
        {"vhost": "tenant-a", "value": {"max-queues": 10}}], what="max-connections cleared")
    choose(d, "#limit-form-vhost", "/")
    choose(d, "#limit-form-name", "max-queues")
    type_into(d, "#limit-form-value", "1000")
    submit_ok(d, "limit-form")
    assert dash.api("GET", "/vhost-limits/%2F")[1] == [{"vhost": "/", "value": {"max-queues": 1000}}]
    choose(d, "#user-limit-user", "carl")
    choose(d, "#user-limit-name", "max-channels")
    type_into(d, "#user-limit-value", "7")
    submit_ok(d, "user-limit-form")
    assert dash.api("GET", "/user-limits/carl")[1] == [{"user": "carl", "value": {"max-channels": 7}}]
    wait(d, lambda d: finds(d, '#user-limits-table tr[data-user="carl"]'), what="carl's limit listed")
    page_shot(d, shots, "admin-05-limits")
    click(d, '#user-limits-table tr[data-user="carl"] .clear-user-limit')
    wait(d, lambda d: dash.api("GET", "/user-limits/carl")[1] == [], what="carl's limit cleared")
    type_into(d, "#limit-form-value", "many")
    click(d, "#limit-form-submit")
    wait(d, lambda d: "whole number" in text(d, "#limit-form-result"), what="a refused value")

    # -- delete the vhost
    go(d, dash.base, "admin/vhosts/tenant-a", "#delete-vhost-button")
    click(d, "#delete-vhost-button")
    confirm(d)
    wait(d, lambda d: d.execute_script("return location.hash") == "#/admin/vhosts", what="back to the vhosts")
    assert dash.api("GET", "/vhosts/tenant-a")[0] == 404
    assert not js_errors(d), js_errors(d)


def test_policies_and_operator_policies(dash, browser, shots):
    d = browser
    conn = dash.pika()
    ch = conn.channel()
    ch.queue_declare("pol-orders", durable=True)
    login(d, dash.base, "guest", "guest")
    go(d, dash.base, "admin/policies", "#policies-table")

    # -- a policy with a pattern, apply-to, priority and a definition from the offered keys
    choose(d, "#policy-form-vhost", "/")
    type_into(d, "#policy-form-name", "limit-orders")
    type_into(d, "#policy-form-pattern", "^pol-")
    choose(d, "#policy-form-apply-to", "queues")
    type_into(d, "#policy-form-priority", "5")
    click(d, '#policy-form .kv-link[data-key="max-length"]')
    type_into(d, "#policy-form-definition .kv-row:nth-child(1) .kv-value", "100")
    click(d, '#policy-form .kv-link[data-key="dead-letter-exchange"]')
    type_into(d, "#policy-form-definition .kv-row:nth-child(2) .kv-value", "dlx")
    submit_ok(d, "policy-form", "limit-orders")
    assert dash.api("GET", "/policies/%2F/limit-orders") == (200, {
        "vhost": "/", "name": "limit-orders", "pattern": "^pol-", "apply-to": "queues",
        "definition": {"max-length": 100, "dead-letter-exchange": "dlx"}, "priority": 5})
    wait(d, lambda d: dash.api("GET", "/queues/%2F/pol-orders")[1]["policy"] == "limit-orders",
         what="the policy applied to pol-orders")
    wait(d, lambda d: "limit-orders" in row_names(d, "#policies-table"), what="the policy listed")

    # -- edit: the form is filled from the row; change the definition and the priority
    click(d, '#policies-table tr[data-name="limit-orders"] .edit-policy')
    wait(d, lambda d: find(d, "#policy-form-name").get_attribute("value") == "limit-orders", what="the form filled")
    assert find(d, "#policy-form-pattern").get_attribute("value") == "^pol-"
    type_into(d, "#policy-form-priority", "7")
    value = find(d, "#policy-form-definition .kv-row:nth-child(1) .kv-value")
    assert find(d, "#policy-form-definition .kv-row:nth-child(1) .kv-key").get_attribute("value") == "max-length"
    value.clear()
    value.send_keys("50")
    click(d, "#policy-form-definition .kv-row:nth-child(2) .kv-del")
    submit_ok(d, "policy-form")
    p = dash.api("GET", "/policies/%2F/limit-orders")[1]
    assert p["definition"] == {"max-length": 50} and p["priority"] == 7
    wait(d, lambda d: dash.api("GET", "/queues/%2F/pol-orders")[1]["effective_policy_definition"] == {"max-length": 50},
         what="the edited policy in effect")

    # a definition the broker refuses: its reason is shown, nothing is stored
    type_into(d, "#policy-form-name", "bad")
    click(d, '#policy-form .kv-link[data-key="message-ttl"]')
    rows = finds(d, "#policy-form-definition .kv-row")
    ttl = [r for r in rows if r.find_element("css selector", ".kv-key").get_attribute("value") == "message-ttl"][0]
    ttl.find_element("css selector", ".kv-value").send_keys("-5")
    click(d, "#policy-form-submit")
    wait(d, lambda d: "not a valid message TTL" in text(d, "#policy-form-result"), what="the refusal")
    assert dash.api("GET", "/policies/%2F/bad")[0] == 404

    # -- an operator policy
    click(d, "#add-operator-policy-toggle")
    choose(d, "#operator-policy-form-vhost", "/")
    type_into(d, "#operator-policy-form-name", "cap")
    type_into(d, "#operator-policy-form-pattern", ".*")
    choose(d, "#operator-policy-form-apply-to", "queues")
    click(d, '#operator-policy-form .kv-link[data-key="max-length"]')
    type_into(d, "#operator-policy-form-definition .kv-row:nth-child(1) .kv-value", "20")
    submit_ok(d, "operator-policy-form", "cap")
    assert dash.api("GET", "/operator-policies/%2F/cap")[1] == {
        "vhost": "/", "name": "cap", "pattern": ".*", "apply-to": "queues", "definition": {"max-length": 20},
        "priority": 0}
    wait(d, lambda d: dash.api("GET", "/queues/%2F/pol-orders")[1]["operator_policy"] == "cap",
         what="the operator policy applied")
    wait(d, lambda d: "cap" in row_names(d, "#operator-policies-table"), what="the operator policy listed")
    page_shot(d, shots, "admin-06-policies")

    # -- delete both
    click(d, '#operator-policies-table tr[data-name="cap"] .delete-policy')
    confirm(d)
    wait(d, lambda d: dash.api("GET", "/operator-policies/%2F/cap")[0] == 404, what="the operator policy gone")
    click(d, '#policies-table tr[data-name="limit-orders"] .delete-policy')
    confirm(d)
    wait(d, lambda d: dash.api("GET", "/policies/%2F/limit-orders")[0] == 404, what="the policy gone")
    wait(d, lambda d: dash.api("GET", "/queues/%2F/pol-orders")[1]["policy"] is None, what="the queue without policy")
    conn.close()
    assert not js_errors(d), js_errors(d)


def test_definitions_export_import_and_feature_flags(dash, browser, shots):
    d = browser
    assert dash.api("PUT", "/users/exported", {"password": "e", "tags": "management"})[0] == 201
    assert dash.api("PUT", "/queues/%2F/kept", {"durable": True, "arguments": {"x-max-length": 3}})[0] == 201
    login(d, dash.base, "guest", "guest")

    # -- export: the JSON shown is the API's, and a file link is offered
    go(d, dash.base, "admin/definitions", "#export-form")
    submit_ok(d, "export-form", "queues")
    defs = json.loads(find(d, "#export-output").get_attribute("value"))
    assert defs == dash.api("GET", "/definitions")[1]
    assert "exported" in [u["name"] for u in defs["users"]]
    assert [q for q in defs["queues"] if q["name"] == "kept"][0]["arguments"] == {"x-max-length": 3}
    link = find(d, "#export-download")
    assert link.is_displayed() and link.get_attribute("href").startswith("blob:")
    assert link.get_attribute("download").endswith(".json")
    # one vhost
    choose(d, "#export-vhost", "/")
    submit_ok(d, "export-form")
    one = json.loads(find(d, "#export-output").get_attribute("value"))
    assert "users" not in one and [q["name"] for q in one["queues"]] == ["kept"]
    page_shot(d, shots, "admin-07-definitions")

    # -- import a file: a vhost, a user, a queue and a binding appear
    new = {"vhosts": [{"name": "imported-vh"}],
           "users": [{"name": "imported-user", "password_hash": "", "tags": ["monitoring"]}],
           "permissions": [{"user": "imported-user", "vhost": "imported-vh", "configure": ".*", "write": ".*",
                            "read": ".*"}],
           "queues": [{"name": "imported-q", "vhost": "imported-vh", "durable": True, "auto_delete": False,
                       "arguments": {"x-message-ttl": 1000}}],
           "exchanges": [{"name": "imported-x", "vhost": "imported-vh", "type": "fanout", "durable": True,
                          "auto_delete": False, "internal": False, "arguments": {}}],
           "bindings": [{"source": "imported-x", "vhost": "imported-vh", "destination": "imported-q",
                         "destination_type": "queue", "routing_key": "", "arguments": {}}]}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(new, f)
    try:
        find(d, "#import-file").send_keys(f.name)
        click(d, "#import-form-submit")
        confirm(d)
        wait(d, lambda d: "imported" in text(d, "#import-form-result"), what="the import")
    finally:
        os.unlink(f.name)
    assert dash.api("GET", "/queues/imported-vh/imported-q")[1]["arguments"] == {"x-message-ttl": 1000}
    assert dash.api("GET", "/users/imported-user")[1]["tags"] == ["monitoring"]
    assert dash.api("GET", "/bindings/imported-vh/e/imported-x/q/imported-q")[1][0]["routing_key"] == ""
    # pasted text into one vhost; broken JSON is refused in the page
    type_into(d, "#import-text", "{not json")
    click(d, "#import-form-submit")
    wait(d, lambda d: "not valid JSON" in text(d, "#import-form-result"), what="the JSON error")
    type_into(d, "#import-text", json.dumps({"queues": [{"name": "pasted-q", "durable": True, "auto_delete": False,
                                                          "arguments": {}}]}))
    choose(d, "#import-vhost", "imported-vh")
    click(d, "#import-form-submit")
    confirm(d)
    wait(d, lambda d: "imported" in text(d, "#import-form-result"), what="the second import")
    assert dash.api("GET", "/queues/imported-vh/pasted-q")[0] == 200

    # -- feature flags: the API's list, and what the node offers
    go(d, dash.base, "admin/feature-flags", "#feature-flags-table tbody tr[data-name]")
    flags = dash.api("GET", "/feature-flags")[1]
    assert flags and row_names(d, "#feature-flags-table") == sorted(f["name"] for f in flags)
    assert all(f["state"] == "enabled" for f in flags)
    for name in ("quorum_queue", "stream_queue", "user_limits", "virtual_host_metadata"):
        assert name in row_names(d, "#feature-flags-table")
    node = text(d, "#node-features")
    assert "topic" in node and "headers" in node and "PLAIN" in node and "quorum" in node
    page_shot(d, shots, "admin-08-feature-flags")
    assert not js_errors(d), js_errors(d)
