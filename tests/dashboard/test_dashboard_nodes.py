"""The dashboard's nodes in headless Chromium: the overview lists every node of a real 3-node
cluster (real etcd, real usagi-server processes, tests/cluster/harness.py) with its role, whether
it runs and is in sync, its epoch and replication lag, and the cluster's leader changes; after the
leader is killed it shows the new leader, one more leader change and the old leader as not
running. A single node shows itself alone; a user without the monitoring tag sees no nodes.

The dashboard is opened on a follower that stays up: its management port forwards to whichever
node leads, as an operator's bookmark would. Screenshots go to dashutil.SHOTS_DIR and are checked
(not blank, the header, the red of a stopped node only once one is stopped).
"""
from __future__ import annotations

import base64
import http.client
import json
import os
import sys
import time
import urllib.request

import pytest

try:
    from selenium.common.exceptions import StaleElementReferenceException
except ImportError:            # the tests skip without selenium (dashutil.AVAILABLE)
    class StaleElementReferenceException(Exception):
        pass

from dashutil import (AVAILABLE, WHY, choose, element_box, finds, go, js_errors, login, page_shot, region_count,
                      stat, text, wait)

if not AVAILABLE:
    pytest.skip(WHY, allow_module_level=True)

sys.path.append(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "cluster"))
from etcdutil import need_etcd  # noqa: E402
from harness import Cluster  # noqa: E402

pytestmark = pytest.mark.timeout(120)

DANGER_RGB = (0xD1, 0x34, 0x38)     # --danger in style.css: a stopped node's dot and badge


def api(node, path: str, timeout: float = 20.0):
    """The JSON of a GET on a node's management API, retried while a leader change closes the
    forwarded connections."""
    token = base64.b64encode(b"guest:guest").decode()
    deadline = time.monotonic() + timeout
    while True:
        req = urllib.request.Request(f"http://{node.host}:{node.http_port}/api{path}",
                                     headers={"Authorization": "Basic " + token})
        try:
            with urllib.request.urlopen(req, timeout=20) as r:
                return json.loads(r.read())
        except (OSError, http.client.HTTPException):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def rows(d) -> dict:
    """The nodes table as {name: {role, running, and each cell's text by column}}. The page redraws
    the table on every refresh: a read that a redraw overtook (its rows gone from the page) is
    read again from the new table."""
    for attempt in range(20):
        try:
            out = {}
            for tr in finds(d, "#nodes-table tbody tr[data-name]"):
                cells = {td.get_attribute("data-col"): td.text.strip()
                         for td in tr.find_elements("css selector", "td")}
                out[tr.get_attribute("data-name")] = dict(cells, data_role=tr.get_attribute("data-role"),
                                                          data_running=tr.get_attribute("data-running"))
            return out
        except StaleElementReferenceException:
            if attempt == 19:
                raise
            time.sleep(0.05)


def cluster_stats(d) -> dict:
    return {k: stat(d, k) for k in ("nodes_running", "nodes_in_sync", "leader", "epoch", "leader_changes")}


def red_in_nodes_panel(d, shots, name, top_css="#cluster-summary") -> int:
    """Pixels of a stopped node's red in the nodes panel, on a screenshot with `top_css` at the top."""
    img = page_shot(d, shots, name, top_css=top_css)
    box = element_box(d, "#nodes-panel")
    assert box[3] <= img.size[1], f"{name}: the nodes panel is not all in view: {box}"
    return region_count(img, box, DANGER_RGB, 30)


def test_the_overview_shows_the_cluster_nodes_and_the_new_leader_after_a_failover(browser, shots):
    need_etcd()
    c = Cluster(3).start()
    try:
        c.wait_isr(3)
        leader = c.leader()
        viewer = c.followers()[0]
        names = sorted(n.name for n in c.nodes)

        # the API: every node with its replication figures; the leader's entry counts leader changes
        nodes = {n["name"]: n for n in api(viewer, "/nodes")}
        assert sorted(nodes) == names
        lead = nodes[leader.name]
        epoch = lead["usagi_epoch"]
        assert lead["usagi_role"] == "leader" and lead["usagi_lag"] == 0 and lead["usagi_in_sync"] is True
        changes = lead["usagi_leader_changes"]
        assert changes >= 1
        last = lead["usagi_last_leader_change"]
        assert last["leader"] == leader.name and last["epoch"] == epoch and isinstance(last["time"], int)
        for f in c.followers():
            assert nodes[f.name]["usagi_role"] == "follower" and nodes[f.name]["usagi_in_sync"] is True
            assert "usagi_leader_changes" not in nodes[f.name]
        assert api(viewer, "/usagi/cluster")["last_leader_change"] == last

        # the dashboard, through a follower: three nodes, the leader, all running and in sync
        d = browser
        login(d, f"http://{viewer.host}:{viewer.http_port}", "guest", "guest")
        choose(d, "#refresh-interval", "2000")
        wait(d, lambda d: sorted(rows(d)) == names, what="the three nodes in the nodes table")
        want = {n.name: {"role": "leader" if n is leader else "follower", "state": "running", "in_sync": "yes"}
                for n in c.nodes}
        wait(d, lambda d: {k: {col: v[col] for col in ("role", "state", "in_sync")} for k, v in rows(d).items()} == want,
             what=f"roles, states and in-sync as {want}")
        table = rows(d)
        assert table[leader.name]["data_role"] == "leader" and table[leader.name]["lag"] == "0"
        assert all(r["epoch"] == str(epoch) for r in table.values()), table
        assert all(r["data_running"] == "true" for r in table.values())
        assert table[leader.name]["memory"] != "–" and table[leader.name]["uptime"] != "–"
        wait(d, lambda d: cluster_stats(d) == {"nodes_running": "3 / 3", "nodes_in_sync": "3", "leader": leader.name,
                                               "epoch": str(epoch), "leader_changes": str(changes)},
             what="the cluster summary")
        assert f"{leader.name} took over" in text(d, "#leader-change") and f"(epoch {epoch})" in text(d, "#leader-change")
        assert red_in_nodes_panel(d, shots, "nodes-01-cluster") == 0, "no node is shown stopped"

        # the leader dies: another node leads, one more leader change, the old leader is not running
        leader.kill()
        new = c.wait_leader(30, not_node=leader)
        new_epoch = api(viewer, "/usagi/cluster")["epoch"]
        assert new_epoch != epoch
        wait(d, lambda d: stat(d, "leader") == new.name, timeout=30, what=f"{new.name} as the leader")

        def after(d):
            t = rows(d)
            return (sorted(t) == names and t[new.name]["role"] == "leader"
                    and t[leader.name]["role"] == "stopped" and t[leader.name]["state"] == "not running"
                    and t[leader.name]["data_running"] == "false" and t[leader.name]["in_sync"] == "no"
                    and t[other.name]["role"] == "follower" and t[other.name]["state"] == "running"
                    and [k for k, v in t.items() if v["role"] == "leader"] == [new.name]) and t
        other = next(n for n in c.nodes if n not in (leader, new))
        try:
            wait(d, after, timeout=30, what="the old leader stopped, the new one leading, the other following")
        except AssertionError as e:
            raise AssertionError(f"{e}\nthe table: {rows(d)}\nthe API: {api(viewer, '/nodes')}") from None
        wait(d, lambda d: int(stat(d, "leader_changes")) > changes and stat(d, "nodes_running") == "2 / 3"
             and stat(d, "epoch") == str(new_epoch), timeout=20, what="the leader change counted")
        assert f"{new.name} took over from {leader.name}" in text(d, "#leader-change"), text(d, "#leader-change")
        assert red_in_nodes_panel(d, shots, "nodes-02-failover") > 20, "the stopped node is shown in red"
        assert not js_errors(d), js_errors(d)
    finally:
        c.cleanup()


def test_a_single_node_shows_itself_alone_and_only_to_monitors(dash, browser, shots):
    d = browser
    _, ov = dash.api("GET", "/overview")
    login(d, dash.base, "guest", "guest")
    wait(d, lambda d: list(rows(d)) == [ov["node"]], what="the one node in the nodes table")
    row = rows(d)[ov["node"]]
    assert (row["role"], row["state"], row["in_sync"], row["epoch"], row["lag"]) == (
        "single node", "running", "n/a", "–", "–"), row
    assert row["data_role"] == "single" and row["memory"] != "–" and row["uptime"] != "–"
    assert not finds(d, "#cluster-summary") or not finds(d, "#cluster-summary")[0].is_displayed()
    assert "single node" in text(d, "#leader-change")
    assert red_in_nodes_panel(d, shots, "nodes-03-single", "#nodes-panel") == 0
    assert not js_errors(d), js_errors(d)

    # a management user sees no nodes (as RabbitMQ shows them to monitoring users and administrators)
    dash.user("dash-mgmt", "pw", "management")
    d.execute_script("sessionStorage.clear()")
    login(d, dash.base, "dash-mgmt", "pw")
    go(d, dash.base, "", "#node-body table")
    assert not finds(d, "#nodes-panel") and not finds(d, "#nodes-table")
