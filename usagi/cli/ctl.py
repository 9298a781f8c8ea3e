"""usagictl: a rabbitmqctl-compatible command-line tool for Usagi (and RabbitMQ).

usagictl is a thin client of the RabbitMQ-compatible management HTTP API. It takes
rabbitmqctl's command names, options and positional arguments, and prints what
rabbitmqctl 3.10 prints (banners, tab-separated tables, ``--formatter json``), with the
same exit codes (64 usage, 65 data error, 67 no such user, 69 unavailable, 70 software
error, 75 timeout).

Where the broker is, and what a command needs of the node's app: see common.py (shared with
usagi-diagnostics). Banners name the node that ``GET /api/nodes`` (or ``/api/overview``) reports.

Management API endpoints used (all as in RabbitMQ's management plugin):

  GET    /api/overview, /api/nodes/{node}, /api/vhosts   status, ping, await_startup, banners
  GET    /api/whoami (with the user's own credentials)    authenticate_user
  GET/PUT/DELETE /api/users/{user}                        add_user, delete_user, change_password,
                                                          clear_password, set_user_tags
  GET    /api/users, /api/users/{user}/permissions        list_users, list_user_permissions
  GET/PUT/DELETE /api/vhosts/{vhost}                      add_vhost, delete_vhost, list_vhosts
  PUT/DELETE /api/permissions/{vhost}/{user}              set_permissions, clear_permissions
  GET    /api/vhosts/{vhost}/permissions                  list_permissions
  GET    /api/queues/{vhost}[/{name}]                     list_queues, delete_queue
  DELETE /api/queues/{vhost}/{name}[?if-empty&if-unused]  delete_queue
  DELETE /api/queues/{vhost}/{name}/contents              purge_queue
  GET    /api/exchanges/{vhost}, /api/bindings/{vhost}    list_exchanges, list_bindings
  GET    /api/connections, /api/vhosts/{vhost}/connections, /api/channels, /api/consumers/{vhost}
  DELETE /api/connections/{name} (header X-Reason)        close_connection, close_all_connections
  GET/PUT/DELETE /api/policies/{vhost}[/{name}]           set_policy, clear_policy, list_policies
  GET/POST /api/definitions                               export_definitions, import_definitions
  GET/PUT/DELETE /api/vhost-limits[/{vhost}[/{name}]]     set/clear/list_vhost_limits
  GET/PUT/DELETE /api/user-limits[/{user}[/{name}]]       set/clear/list_user_limits
  GET    /api/nodes                                       the app's state (every command but node control)
  GET    /api/vhosts/{vhost}/topic-permissions,
         /api/users/{user}/topic-permissions              list_topic_permissions, list_user_topic_permissions
  PUT/DELETE /api/topic-permissions/{vhost}/{user}[/{exchange}]   set/clear_topic_permissions
  GET    /api/parameters; PUT/DELETE /api/parameters/{component}/{vhost}/{name}
                                                          list/set/clear_parameter
  GET    /api/global-parameters; PUT/DELETE /api/global-parameters/{name}
                                                          list/set/clear_global_parameter
  GET/PUT/DELETE /api/operator-policies/{vhost}[/{name}]  list/set/clear_operator_policy
  GET    /api/feature-flags; PUT /api/feature-flags/{name}/enable   list_feature_flags, enable_feature_flag
  PUT    /api/cluster-name                                set_cluster_name

Usagi-specific endpoints (RabbitMQ's management API has no equivalent; rabbitmqctl does
these over Erlang distribution; administrator tag). Node control takes an empty POST body and
answers 204 once the action has been accepted:

  POST /api/usagi/stop        stop: stop the broker and exit the server process
                              (rabbitmqctl stop). usagictl then waits, up to --timeout,
                              until the API stops answering.
  POST /api/usagi/stop_app    stop_app: stop the AMQP side (close client connections and
                              listeners) but keep the process and the management API up.
                              While stopped, GET /api/nodes/{node} reports "running": false.
  POST /api/usagi/start_app   start_app: start the AMQP side again. stop_app and start_app
                              return once GET /api/nodes says the app has stopped or started.
  POST /api/usagi/reset, /api/usagi/force_reset
                              reset, force_reset (the app must be stopped): delete every vhost,
                              queue, message, user, permission, policy and parameter, then
                              create the default vhost and user again (as the next start
                              would); 204 once durable. Only the default user can log in after.
  GET  /api/usagi/environment environment: the node's settings under RabbitMQ's names
  PUT  /api/usagi/vm_memory_high_watermark  {"relative": f} | {"absolute": bytes}
  PUT  /api/usagi/disk_free_limit           {"absolute": bytes} | {"mem_relative": f}
  PUT  /api/usagi/log_level                 {"level": "debug" | ... | "none"}
  POST /api/usagi/rotate_logs               {"rotated": [files]}
  GET  /api/usagi/log_tail?lines=N          {"file": ..., "lines": [...]} (usagi-diagnostics)
  GET  /api/usagi/queues/{vhost}            each queue's pid (list_queues pid)
  GET  /api/usagi/cluster                   cluster_status: nodes, roles, leader, epoch, ISR, lag
  DELETE /api/usagi/cluster/nodes/{node}    forget_cluster_node (409 for a running node, 404 for
                                            one that is not a member)
  POST /api/usagi/cluster/step_down         step_down: hand the cluster's leadership over (204
                                            once started; 409 when no other node is in sync);
                                            usagictl then waits until another node leads

await_online_nodes polls GET /api/nodes until enough nodes report "running": true.

await_startup polls GET /api/nodes/{node} until it answers with "running": true.
Against a broker without these endpoints (RabbitMQ), these commands fail with exit code 69
and a message that says so (rotate_logs with RabbitMQ's own: it rotates nothing), and
list_queues leaves the pid column blank.

Other differences from rabbitmqctl, all forced by the HTTP API: connection and channel
"pid" columns show the connection/channel name that the API uses (and close_connection
takes that name); ``close_connection`` on an unknown name succeeds as rabbitmqctl does for
an unknown pid. set_vm_memory_high_watermark absolute 0 (or less) is refused (rabbitmqctl fails
with a stack trace). trace_on/trace_off are not offered: Usagi has no message tracing.
"""
from __future__ import annotations

import json
import os
import re
import sys
import time
import urllib.parse

from .common import (CTL, EX_DATAERR, EX_NOUSER, EX_SOFTWARE, EX_TEMPFAIL, EX_UNAVAILABLE, EX_USAGE,
                     STOPPED, Api, CtlError, Ctx, TimedOut, Tool, Unreachable, ValidationError, bold, compact,
                     erlang_term, general_options, listener_interface, listener_line, listener_purpose,
                     listeners, q, select_columns)

PROG = CTL

SECTIONS = [
    ("help", "Help"), ("nodes", "Nodes"), ("cluster", "Cluster"), ("users", "Users"),
    ("access", "Access Control"),
    ("monitoring", "Monitoring, observability and health checks"), ("parameters", "Parameters"),
    ("policies", "Policies"), ("vhosts", "Virtual hosts"), ("configuration", "Configuration and Environment"),
    ("definitions", "Definitions"), ("feature_flags", "Feature flags"), ("operations", "Operations"),
    ("queues", "Queues"),
]

TOOL = Tool(PROG, SECTIONS, general_options())
COMMANDS = TOOL.commands
command = TOOL.command


def _user_must_exist(api: Api, user: str, code=EX_NOUSER, message=None) -> dict:
    r = api.get(f"/api/users/{q(user)}", allow=(404,))
    if r.status == 404:
        raise CtlError(message or f'User "{user}" does not exist', code)
    return r.data or {}


def _vhost_exists(api: Api, vhost: str) -> bool:
    return api.get(f"/api/vhosts/{q(vhost)}", allow=(404,)).status != 404


def _tags_of(user: dict) -> list[str]:
    tags = user.get("tags") or []
    if isinstance(tags, str):
        tags = [t for t in tags.split(",") if t]
    return list(tags)


def _parse_json_arg(text: str, code=EX_UNAVAILABLE):
    try:
        return json.loads(text)
    except ValueError:
        raise CtlError("JSON decoding error. Reason: badarg", code) from None


# ---- nodes

@command("version", "help", "Displays CLI tools version", app=None)
def cmd_version(ctx):
    from .. import __version__
    ctx.print(__version__)


@command("status", "monitoring", "Displays status of a node", "[--unit <unit>] [--timeout <timeout>]",
         options=("unit",))
def cmd_status(ctx):
    api = ctx.api
    ov = api.overview()
    node = api.node()
    ctx.banner(f"Status of node {node} ...")
    n = api.get(f"/api/nodes/{q(node)}", allow=(404,)).data or {}
    vhosts = api.get("/api/vhosts", allow=(404,)).data or []
    totals = ov.get("object_totals") or {}
    lsn = listeners(api)
    alarms = node_alarms(n, node)
    watermark = _watermark_setting(api)
    unit = ctx.opts.get("unit", "gb").lower()
    div = {"b": 1, "bytes": 1, "kb": 1e3, "kib": 1024, "mb": 1e6, "mib": 1024 ** 2,
           "gb": 1e9, "gib": 1024 ** 3}.get(unit, 1e9)
    if ctx.formatter == "json":
        obj = {
            "pid": _int_or(n.get("os_pid")), "rabbitmq_version": ov.get("rabbitmq_version"),
            "product_name": ov.get("product_name"), "product_version": ov.get("product_version"),
            "erlang_version": ov.get("erlang_full_version"), "node_name": node,
            "uptime": (n.get("uptime") or 0) // 1000, "is_under_maintenance": False,
            "processes": {"limit": n.get("proc_total"), "used": n.get("proc_used")},
            "run_queue": n.get("run_queue"), "net_ticktime": n.get("net_ticktime"),
            "enabled_plugin_file": n.get("enabled_plugins_file"),
            "active_plugins": n.get("enabled_plugins") or [],
            "data_directory": n.get("db_dir"), "config_files": n.get("config_files") or [],
            "log_files": n.get("log_files") or [],
            "alarms": [{"node": node, "resource": r, "type": "resource_limit"} for r in node_alarm_resources(n)],
            "memory": {"total": {"rss": n.get("mem_used")}},
            "vm_memory_calculation_strategy": n.get("mem_calculation_strategy"),
            "vm_memory_high_watermark_limit": n.get("mem_limit"),
            "vm_memory_high_watermark_setting": watermark,
            "file_descriptors": {"total_used": n.get("fd_used"), "total_limit": n.get("fd_total"),
                                 "sockets_used": n.get("sockets_used"),
                                 "sockets_limit": n.get("sockets_total")},
            "disk_free_limit": n.get("disk_free_limit"), "disk_free": n.get("disk_free"),
            "totals": {"connection_count": totals.get("connections"),
                       "queue_count": totals.get("queues"), "virtual_host_count": len(vhosts)},
            "listeners": lsn,
        }
        ctx.print(json.dumps(obj, separators=(",", ":"), ensure_ascii=False))
        return
    lines = ["Runtime", "",
             f"OS PID: {n.get('os_pid', '')}",
             f"OS: {n.get('os', 'Linux' if sys.platform.startswith('linux') else sys.platform)}",
             f"Uptime (seconds): {(n.get('uptime') or 0) // 1000}",
             "Is under maintenance?: false",
             f"RabbitMQ version: {ov.get('rabbitmq_version', '')}"]
    if ov.get("release_series_support_status"):
        lines.append(f"RabbitMQ release series support status: {ov['release_series_support_status']}")
    if ov.get("product_name") and ov.get("product_name") != "RabbitMQ":
        lines.append(f"Product: {ov.get('product_name')} {ov.get('product_version', '')}".rstrip())
    lines += [f"Node name: {node}",
              f"Erlang configuration: {ov.get('erlang_full_version', ov.get('erlang_version', ''))}",
              f"Erlang processes: {n.get('proc_used', '')} used, {n.get('proc_total', '')} limit",
              f"Scheduler run queue: {n.get('run_queue', '')}",
              f"Cluster heartbeat timeout (net_ticktime): {n.get('net_ticktime', '')}",
              "", "Plugins", "",
              f"Enabled plugin file: {n.get('enabled_plugins_file', '')}",
              "Enabled plugins:", ""]
    lines += [f" * {p}" for p in (n.get("enabled_plugins") or [])]
    lines += ["", "Data directory", "", f"Node data directory: {n.get('db_dir', '')}",
              "", "Config files", ""]
    lines += [f" * {f}" for f in (n.get("config_files") or [])]
    lines += ["", "Log file(s)", ""]
    lines += [f" * {f}" for f in (n.get("log_files") or [])]
    lines += ["", "Alarms", ""]
    lines += alarms or ["(none)"]
    mem_used = n.get("mem_used") or 0
    mem_limit = n.get("mem_limit") or 0
    lines += ["", "Memory", "",
              f"Total memory used: {_units(mem_used, div)} {unit}",
              f"Calculation strategy: {n.get('mem_calculation_strategy', '')}",
              f"Memory high watermark setting: {_watermark_text(watermark, div, unit)}computed to: "
              f"{_units(mem_limit, div)} {unit}",
              "", "File Descriptors", "",
              f"Total: {n.get('fd_used', '')}, limit: {n.get('fd_total', '')}",
              f"Sockets: {n.get('sockets_used', '')}, limit: {n.get('sockets_total', '')}",
              "", "Free Disk Space", "",
              f"Low free disk space watermark: {_units(n.get('disk_free_limit') or 0, div)} {unit}",
              f"Free disk space: {_units(n.get('disk_free') or 0, div)} {unit}",
              "", "Totals", "",
              f"Connection count: {totals.get('connections', 0)}",
              f"Queue count: {totals.get('queues', 0)}",
              f"Virtual host count: {len(vhosts)}",
              "", "Listeners", ""]
    lines += [listener_line(l) for l in lsn]
    for line in lines:
        ctx.print(bold(line) if line in _STATUS_HEADINGS else line)


def node_alarm_resources(n: dict) -> list[str]:
    """The resource alarms in effect on a node (GET /api/nodes/{node}), in rabbitmqctl's order."""
    return (["disk"] if n.get("disk_free_alarm") else []) + (["memory"] if n.get("mem_alarm") else [])


ALARM_TEXT = {"disk": "Free disk space alarm on node {}", "disk space": "Free disk space alarm on node {}",
              "memory": "Memory alarm on node {}"}


def alarm_text(resource: str, node: str) -> str:
    return ALARM_TEXT.get(resource, resource + " alarm on node {}").format(node)


def node_alarms(n: dict, node: str) -> list[str]:
    return [alarm_text(r, node) for r in node_alarm_resources(n)]


def _watermark_setting(api: Api):
    """The node's vm_memory_high_watermark setting ({"relative": f} or {"absolute": n}) where it says
    (GET /api/usagi/environment); None elsewhere."""
    try:
        r = api.request("GET", "/api/usagi/environment")
    except (Unreachable, TimedOut):
        return None
    if not r.ok or not isinstance(r.data, dict):
        return None
    w = (r.data.get("rabbit") or {}).get("vm_memory_high_watermark")
    return w if isinstance(w, (dict, int, float)) else None


def _watermark_text(w, div, unit) -> str:
    if isinstance(w, dict) and "absolute" in w:
        return f"{_units(w['absolute'], div)} {unit}, "
    if isinstance(w, dict) and "relative" in w:
        return f"{w['relative']} of available memory, "
    if isinstance(w, (int, float)) and not isinstance(w, bool):
        return f"{w} of available memory, "
    return ""


@command("cluster_status", "cluster", "Displays all the nodes in the cluster grouped by node type, together "
         "with the currently running nodes")
def cmd_cluster_status(ctx):
    api = ctx.api
    ov = api.overview()
    node = api.node()
    ctx.banner(f"Cluster status of node {node} ...")
    c = api.get("/api/usagi/cluster", allow=(404,)).data
    nodes_api = api.get("/api/nodes", allow=(404,)).data or []
    if not c:       # not a Usagi node (a RabbitMQ management API): what /api/nodes says
        cn = (api.get("/api/cluster-name", allow=(404,)).data or {}).get("name")
        c = {"cluster_name": cn or ov.get("cluster_name", node), "leader": None, "nodes": [
            {"name": n.get("name"), "running": n.get("running", True), "role": None} for n in nodes_api]}
    names = [n["name"] for n in c.get("nodes", [])]
    running = [n["name"] for n in c.get("nodes", []) if n.get("running")]
    alarms = []
    for n in nodes_api:
        if n.get("mem_alarm"):
            alarms.append(f"Node {n.get('name')} reported an alarm: memory")
        if n.get("disk_free_alarm"):
            alarms.append(f"Node {n.get('name')} reported an alarm: free disk space")
    all_listeners = sorted(ov.get("listeners") or [], key=lambda l: str(l.get("port")))
    if ctx.formatter == "json":
        obj = {"cluster_name": c.get("cluster_name"), "disk_nodes": names, "ram_nodes": [],
               "running_nodes": running,
               "versions": {n["name"]: {"rabbitmq_version": ov.get("rabbitmq_version"),
                                        "usagi_version": n.get("version")} for n in c.get("nodes", [])},
               "maintenance_status": {n: "not under maintenance" for n in names},
               "alarms": alarms, "partitions": {},
               "listeners": {l.get("node"): [] for l in all_listeners},
               "leader": c.get("leader"), "epoch": c.get("epoch"), "in_sync": c.get("isr"),
               "nodes": c.get("nodes")}
        for l in all_listeners:
            obj["listeners"].setdefault(l.get("node"), []).append(
                {"interface": listener_interface(l.get("ip_address")), "port": l.get("port"), "protocol": l.get("protocol"),
                 "purpose": listener_purpose(l.get("protocol"))})
        ctx.print(json.dumps(obj, separators=(",", ":"), ensure_ascii=False))
        return
    lines = ["Basics", "", f"Cluster name: {c.get('cluster_name', '')}", "", "Disk Nodes", ""]
    lines += names or [node]
    lines += ["", "Running Nodes", ""]
    lines += running or [node]
    lines += ["", "Versions", ""]
    for n in c.get("nodes", []):
        lines.append(f"{n['name']}: RabbitMQ {ov.get('rabbitmq_version', '')} on Usagi "
                     f"{n.get('version') or ov.get('product_version', '')}".rstrip())
    lines += ["", "Maintenance status", ""]
    lines += [f"Node: {n}, status: not under maintenance" for n in names]
    lines += ["", "Alarms", ""]
    lines += alarms or ["(none)"]
    lines += ["", "Network Partitions", "", "(none)", "", "Listeners", ""]
    for l in all_listeners:
        lines.append(f"Node: {l.get('node')}, interface: {listener_interface(l.get('ip_address'))}, port: {l.get('port')}, "
                     f"protocol: {l.get('protocol')}, purpose: {listener_purpose(l.get('protocol'))}")
    if c.get("leader"):
        lines += ["", "Leader and replication", ""]
        for n in c.get("nodes", []):
            lag = n.get("lag")
            epoch = n.get("epoch", c.get("epoch"))
            lines.append(f"Node: {n['name']}, role: {n.get('role')}, in sync: "
                         f"{'true' if n.get('in_sync') else 'false'}, epoch: "
                         f"{'unknown' if epoch is None else epoch}, lag: {'unknown' if lag is None else lag}")
    for line in lines:
        ctx.print(bold(line) if line in _CLUSTER_HEADINGS else line)


def _count_arg(ctx) -> int:
    """A count as rabbitmqctl reads it (Integer.parse: leading digits), at least 1."""
    m = re.match(r"[+-]?[0-9]+", ctx.args[0])
    if m is None or int(m.group(0)) < 1:
        raise ValidationError("Argument must be a positive integer")
    return int(m.group(0))


@command("await_online_nodes", "cluster", "Waits for <count> nodes to join the cluster", "<count>",
         nargs=(1, 1), validate=_count_arg,
         extra_help=(("<count>", "how many cluster members must be up in order for this command to "
                                 "exit. When <count> is 1, always exits immediately."),))
def cmd_await_online_nodes(ctx):
    count = _count_arg(ctx)
    timeout = float(ctx.opts.get("timeout", 300))
    node = ctx.api.node()
    ctx.banner(f"Will wait for at least {count} nodes to join the cluster of {node}. "
               f"Timeout: {int(timeout)} seconds.")
    deadline = time.monotonic() + timeout
    while True:
        try:
            r = ctx.api.request("GET", "/api/nodes", timeout=5)
            if r.ok and isinstance(r.data, list) and \
                    sum(1 for n in r.data if isinstance(n, dict) and n.get("running", True)) >= count:
                return
        except (Unreachable, TimedOut):
            pass                # a node restarting as a follower, or a hand-over: ask again
        if time.monotonic() >= deadline:
            raise CtlError(f"Error: timed out while waiting. Not enough nodes joined {node}'s cluster.",
                           EX_SOFTWARE, prefix=False)
        time.sleep(0.2)


@command("forget_cluster_node", "cluster", "Removes a node from the cluster", "<existing_cluster_member_node>",
         nargs=(1, 1))
def cmd_forget_cluster_node(ctx):
    name = ctx.args[0]
    ctx.banner(f"Removing node {name} from the cluster")
    r = ctx.api.request("DELETE", f"/api/usagi/cluster/nodes/{q(name)}")
    if r.ok:
        return
    if r.status == 409 and isinstance(r.data, dict) and r.data.get("error") == "failed_to_remove_node":
        raise CtlError(r.reason, EX_SOFTWARE)
    if r.status == 404 and isinstance(r.data, dict) and r.data.get("error") == "not_a_cluster_node":
        raise CtlError(f"{{:not_a_cluster_node, '{r.reason}'}}", EX_SOFTWARE)
    if r.status in (404, 405):
        raise CtlError(f"forget_cluster_node is not supported by the management API at {ctx.api.display} "
                       f"(DELETE /api/usagi/cluster/nodes answered {r.status}); usagictl can run it only "
                       f"against Usagi nodes", EX_UNAVAILABLE)
    raise CtlError(r.reason, EX_UNAVAILABLE if r.status in (401, 403) else EX_SOFTWARE)


@command("step_down", "cluster", "Hands the cluster's leadership over to another in-sync node: the leader "
         "confirms what it has taken, closes its client connections (clients reconnect) and follows",
         "[--timeout <timeout>]")
def cmd_step_down(ctx):
    before = ctx.api.get("/api/usagi/cluster", allow=(404,)).data or {}
    old = before.get("leader")
    if before.get("mode") != "cluster":
        raise CtlError(f"the node behind {ctx.api.display} is not a member of a Usagi cluster", EX_UNAVAILABLE)
    ctx.banner(f"Handing leadership of cluster {before.get('cluster_name')} over from node {old} ...")
    _usagi_post(ctx, "cluster/step_down")
    timeout = float(ctx.opts.get("timeout", 60))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.2)
        try:
            r = ctx.api.request("GET", "/api/usagi/cluster", timeout=5)
        except (Unreachable, TimedOut):
            continue                    # the old leader's ports, while it starts again as a follower
        if r.ok and isinstance(r.data, dict) and r.data.get("leader") not in (None, old):
            ctx.print(f"Node {r.data['leader']} now leads (epoch {r.data.get('epoch')})")
            return
    raise CtlError(f"no other node took over within {timeout:g} seconds", EX_TEMPFAIL)


_CLUSTER_HEADINGS = {"Basics", "Disk Nodes", "Running Nodes", "Versions", "Maintenance status", "Alarms",
                     "Network Partitions", "Listeners", "Leader and replication"}


_STATUS_HEADINGS = {"Runtime", "Plugins", "Data directory", "Config files", "Log file(s)", "Alarms",
                    "Memory", "File Descriptors", "Free Disk Space", "Totals", "Listeners"}


def _units(v, div) -> str:
    return str(round(v / div, 4)) if div != 1 else str(v)


def _int_or(v):
    try:
        return int(v)
    except (TypeError, ValueError):
        return v


def _usagi_post(ctx, action: str):
    r = ctx.api.request("POST", f"/api/usagi/{action}")
    if r.ok:
        return r
    if r.status == 501:
        raise CtlError(r.reason, EX_UNAVAILABLE)
    if r.status in (404, 405):
        raise CtlError(f"{action} is not supported by the management API at {ctx.api.display} "
                       f"(POST /api/usagi/{action} answered {r.status}); usagictl can run {action} "
                       f"only against Usagi nodes", EX_UNAVAILABLE)
    if r.status in (401, 403):
        raise CtlError(f"the management API refused POST /api/usagi/{action} for user "
                       f"'{ctx.api.user}' ({r.status}: {r.reason})", EX_UNAVAILABLE)
    raise CtlError(r.reason, EX_SOFTWARE)


@command("stop", "nodes", "Stops RabbitMQ and its runtime (Erlang VM). Requires a local node pid "
         "file path to monitor progress.", "[--idempotent] [<pidfile>]", nargs=(0, 1),
         options=("idempotent",), app=None)
def cmd_stop(ctx):
    try:
        node = ctx.api.node()
    except Unreachable:
        if "idempotent" in ctx.opts:
            return
        raise
    ctx.banner(f"Stopping and halting node {node} ...")
    _usagi_post(ctx, "stop")
    deadline = time.monotonic() + float(ctx.opts.get("timeout", 60))
    while time.monotonic() < deadline:
        try:
            ctx.api.request("GET", "/api/overview", timeout=2)
        except (Unreachable, TimedOut):
            return
        time.sleep(0.1)


@command("stop_app", "nodes", "Stops the RabbitMQ application, leaving the runtime (Erlang VM) running",
         app=None)
def cmd_stop_app(ctx):
    ctx.banner(f"Stopping rabbit application on node {ctx.api.node()} ...")
    _usagi_post(ctx, "stop_app")
    _wait_app(ctx, False)
    ctx.ok()


@command("start_app", "nodes", "Starts the RabbitMQ application but leaves the runtime (Erlang VM) running",
         app=None)
def cmd_start_app(ctx):
    ctx.banner(f"Starting node {ctx.api.node()} ...")
    _usagi_post(ctx, "start_app")
    _wait_app(ctx, True)
    ctx.ok()


@command("await_startup", "nodes", "Waits for the RabbitMQ application to start on the target node",
         "[--timeout <timeout>]", app=None)
def cmd_await_startup(ctx):
    timeout = float(ctx.opts.get("timeout", 300))
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        try:
            r = ctx.api.request("GET", "/api/overview", timeout=5)
            if r.ok and isinstance(r.data, dict):
                node = r.data.get("node")
                n = ctx.api.request("GET", f"/api/nodes/{q(node)}", timeout=5) if node else r
                if n.ok and (not isinstance(n.data, dict) or n.data.get("running", True)):
                    return
                last = "the node reports that it is not running" if n.ok else f"HTTP {n.status}"
            elif r.status in (401, 403):
                raise CtlError(f"the management API refused user '{ctx.api.user}' "
                               f"({r.status}: {r.reason})", EX_UNAVAILABLE)
            else:
                last = f"HTTP {r.status}"
        except (Unreachable, TimedOut) as e:
            last = str(e)
        if time.monotonic() >= deadline:
            raise CtlError(f"the node behind {ctx.api.display} did not start within {timeout:g} "
                           f"seconds (last: {last})", EX_UNAVAILABLE)
        time.sleep(0.2)


@command("ping", "monitoring", "Checks that the node OS process is up, registered with EPMD and CLI "
         "tools can authenticate with it", "[--timeout <timeout>]", app=None)
def cmd_ping(ctx):
    timeout_ms = int(float(ctx.opts.get("timeout", 60)) * 1000)
    try:
        r = ctx.api.request("GET", "/api/overview")
    except (Unreachable, TimedOut):
        r = None
    node = (r.data.get("node") if r is not None and r.ok and isinstance(r.data, dict) else None) \
        or ctx.opts.get("node") or ctx.api.display
    ctx.banner(f"Will ping {node}. This only checks if the OS process is running and registered "
               f"with epmd. Timeout: {timeout_ms} ms.")
    if r is None or not r.ok:
        raise CtlError(f"Failed to connect and authenticate to {node} in {timeout_ms} ms",
                       EX_UNAVAILABLE)
    if ctx.json:
        ctx.print_json({"message": "Ping succeeded"})
    else:
        ctx.print("Ping succeeded")


# ---- users

def _validate_user_name(ctx):
    if ctx.args[0] == "":
        raise ValidationError("Bad argument: user cannot be an empty string", EX_DATAERR)


@command("add_user", "users", "Creates a new user in the internal database. This user will have no "
         "permissions for any virtual hosts by default.", "<username> <password>", nargs=(2, 2),
         validate=_validate_user_name)
def cmd_add_user(ctx):
    user, password = ctx.args
    ctx.banner(f'Adding user "{user}" ...')
    r = ctx.api.get(f"/api/users/{q(user)}", allow=(404,))
    if r.status != 404:
        raise CtlError(f'User "{user}" already exists', EX_SOFTWARE)
    body = {"password": password, "tags": ""} if password else {"password_hash": "", "tags": ""}
    ctx.api.call("PUT", f"/api/users/{q(user)}", body)
    ctx.banner("Done. Don't forget to grant the user permissions to some virtual hosts! "
               "See 'rabbitmqctl help set_permissions' to learn more.")


@command("delete_user", "users", "Removes a user from the internal database. Has no effect on users "
         "provided by external backends such as LDAP", "<username>", nargs=(1, 1))
def cmd_delete_user(ctx):
    user = ctx.args[0]
    ctx.banner(f'Deleting user "{user}" ...')
    r = ctx.api.call("DELETE", f"/api/users/{q(user)}", allow=(404,))
    if r.status == 404:
        raise CtlError(f'User "{user}" does not exist', EX_NOUSER)


@command("change_password", "users", "Changes the user password", "<username> <password>", nargs=(2, 2))
def cmd_change_password(ctx):
    user, password = ctx.args
    ctx.banner(f'Changing password for user "{user}" ...')
    u = _user_must_exist(ctx.api, user)
    body = {"tags": ",".join(_tags_of(u))}
    if password:
        body["password"] = password
    else:
        body["password_hash"] = ""
    ctx.api.call("PUT", f"/api/users/{q(user)}", body)


@command("clear_password", "users", "Clears (resets) password and disables password login for a user",
         "<username>", nargs=(1, 1))
def cmd_clear_password(ctx):
    user = ctx.args[0]
    ctx.banner(f'Clearing password for user "{user}" ...')
    u = _user_must_exist(ctx.api, user, EX_UNAVAILABLE, f'{{:no_such_user, "{user}"}}')
    ctx.api.call("PUT", f"/api/users/{q(user)}", {"password_hash": "", "tags": ",".join(_tags_of(u))})


@command("set_user_tags", "users", "Sets user tags", "<username> <tag> [...]", nargs=(1, None))
def cmd_set_user_tags(ctx):
    user, tags = ctx.args[0], ctx.args[1:]
    ctx.banner(f'Setting tags for user "{user}" to [{", ".join(tags)}] ...')
    u = _user_must_exist(ctx.api, user)
    body = {"password_hash": u.get("password_hash", ""), "tags": ",".join(tags)}
    if u.get("hashing_algorithm"):
        body["hashing_algorithm"] = u["hashing_algorithm"]
    ctx.api.call("PUT", f"/api/users/{q(user)}", body)


@command("list_users", "users", "List user names and tags", "[--no-table-headers] [--timeout <timeout>]")
def cmd_list_users(ctx):
    ctx.banner("Listing users ...")
    users = ctx.api.get("/api/users").data or []
    ctx.table(["user", "tags"], [{"user": u.get("name"), "tags": _tags_of(u)} for u in users])


@command("authenticate_user", "users", "Attempts to authenticate a user. Exits with a non-zero code if "
         "authentication fails.", "<username> <password>", nargs=(2, 2))
def cmd_authenticate_user(ctx):
    user, password = ctx.args
    ctx.banner(f'Authenticating user "{user}" ...')
    r = ctx.api.request("GET", "/api/whoami", auth=(user, password))
    # A user with valid credentials but no management tag is refused with another reason
    # ("Not management user") than bad credentials ("Login failed").
    if r.ok or (r.status in (401, 403) and "login failed" not in r.reason.lower()
                and "invalid credentials" not in r.reason.lower()):
        ctx.print("Success")
        return
    if r.status in (401, 403):
        raise CtlError(f'Error: failed to authenticate user "{user}"\n'
                       f"user '{user}' - invalid credentials", EX_DATAERR)
    raise CtlError(r.reason, EX_SOFTWARE)


@command("set_user_limits", "users", "Sets user limits", "<username> <definition>", nargs=(2, 2))
def cmd_set_user_limits(ctx):
    user, definition = ctx.args
    ctx.banner(f'Setting user limits to "{definition}" for user "{user}" ...')
    limits = _parse_json_arg(definition)
    if not isinstance(limits, dict):
        raise CtlError("JSON decoding error. Reason: badarg", EX_UNAVAILABLE)
    for name, value in limits.items():
        r = ctx.api.call("PUT", f"/api/user-limits/{q(user)}/{q(name)}", {"value": value},
                         allow=(400, 404))
        if not r.ok:
            if r.status == 404 or "no_such_user" in r.reason:
                raise CtlError(f'{{:no_such_user, "{user}"}}', EX_UNAVAILABLE)
            raise CtlError(r.reason, EX_UNAVAILABLE)


@command("clear_user_limits", "users", "Clears user connection/channel limits",
         "<username> <limit_type> | all", nargs=(2, 2))
def cmd_clear_user_limits(ctx):
    user, limit = ctx.args
    if limit == "all":
        ctx.banner(f'Clearing all limits for user "{user}" ...')
        r = ctx.api.get(f"/api/user-limits/{q(user)}", allow=(404,))
        if r.status == 404:
            raise CtlError(f'{{:no_such_user, "{user}"}}', EX_UNAVAILABLE)
        names = [k for item in (r.data or []) for k in (item.get("value") or {})]
    else:
        ctx.banner(f'Clearing "{limit}" limit for user "{user}" ...')
        names = [limit]
    for name in names:
        ctx.api.call("DELETE", f"/api/user-limits/{q(user)}/{q(name)}", allow=(404,))


@command("list_user_limits", "users", "Displays configured user limits",
         "[--user <username>] [--global]", options=("user", "global"))
def cmd_list_user_limits(ctx):
    if "global" in ctx.opts:
        ctx.banner("Listing limits for all users ...")
        data = ctx.api.get("/api/user-limits").data or []
        ctx.table(["user", "limits"], [{"user": d.get("user"), "limits": compact(d.get("value") or {})}
                                       for d in data], empty_line=True, empty_json="[]")
        return
    user = ctx.opts.get("user", ctx.api.user)
    ctx.banner(f'Listing limits for user "{user}" ...')
    r = ctx.api.get(f"/api/user-limits/{q(user)}", allow=(404,))
    if r.status == 404:
        raise CtlError(f'{{:no_such_user, "{user}"}}', EX_UNAVAILABLE)
    value = {}
    for item in r.data or []:
        value.update(item.get("value") or {})
    if ctx.formatter == "json":
        ctx.print(json.dumps({"message": compact(value)}, separators=(",", ":")))
    else:
        ctx.print(compact(value))


# ---- virtual hosts

@command("add_vhost", "vhosts", "Creates a virtual host",
         '<vhost> [--description <description> --tags "<tag1>,<tag2>,<...>" '
         "--default-queue-type <quorum|classic|stream>]", nargs=(1, 1),
         options=("description", "tags", "default-queue-type"))
def cmd_add_vhost(ctx):
    vhost = ctx.args[0]
    ctx.banner(f'Adding vhost "{vhost}" ...')
    body = {}
    if "description" in ctx.opts:
        body["description"] = ctx.opts["description"]
    if "tags" in ctx.opts:
        body["tags"] = ctx.opts["tags"]
    if "default-queue-type" in ctx.opts:
        # 3.10 reads "defaultqueuetype", later versions "default_queue_type".
        body["default_queue_type"] = body["defaultqueuetype"] = ctx.opts["default-queue-type"]
    existed = _vhost_exists(ctx.api, vhost)
    ctx.api.call("PUT", f"/api/vhosts/{q(vhost)}", body)
    if not existed:
        # RabbitMQ's management API grants the creating user full permissions on a new vhost;
        # rabbitmqctl add_vhost grants nobody anything. Undo the grant to behave like rabbitmqctl.
        ctx.api.call("DELETE", f"/api/permissions/{q(vhost)}/{q(ctx.api.user)}", allow=(400, 404))


@command("delete_vhost", "vhosts", "Deletes a virtual host", "<vhost>", nargs=(1, 1))
def cmd_delete_vhost(ctx):
    vhost = ctx.args[0]
    ctx.banner(f'Deleting vhost "{vhost}" ...')
    r = ctx.api.call("DELETE", f"/api/vhosts/{q(vhost)}", allow=(404,))
    if r.status == 404:
        raise CtlError(f"Virtual host '{vhost}' does not exist", EX_DATAERR, prefix=False)


VHOST_COLUMNS = ["cluster_state", "default_queue_type", "description", "name", "tags", "tracing"]


@command("list_vhosts", "access", "Lists virtual hosts",
         "[--no-table-headers] [<column> ...] [--timeout <timeout>]", nargs=(0, None),
         columns=VHOST_COLUMNS, default_columns=["name"])
def cmd_list_vhosts(ctx):
    cols = select_columns(ctx)
    ctx.banner("Listing vhosts ...")
    rows = []
    for v in ctx.api.get("/api/vhosts").data or []:
        row = dict(v)
        md = v.get("metadata") or {}
        row.setdefault("description", md.get("description", ""))
        row.setdefault("tags", md.get("tags", []))
        if isinstance(row.get("tags"), str):
            row["tags"] = [t for t in row["tags"].split(",") if t]
        cs = v.get("cluster_state")
        if isinstance(cs, dict):
            row["cluster_state"] = [[k, s] for k, s in cs.items()]
        rows.append(row)
    ctx.table(cols, rows)


@command("set_vhost_limits", "vhosts", "Sets virtual host limits", "[--vhost <vhost>] <definition>",
         nargs=(1, 1))
def cmd_set_vhost_limits(ctx):
    definition = ctx.args[0]
    vhost = ctx.vhost
    ctx.banner(f'Setting vhost limits to "{definition}" for vhost "{vhost}" ...')
    limits = _parse_json_arg(definition)
    if not isinstance(limits, dict):
        raise CtlError("JSON decoding error. Reason: badarg", EX_UNAVAILABLE)
    for name, value in limits.items():
        r = ctx.api.call("PUT", f"/api/vhost-limits/{q(vhost)}/{q(name)}", {"value": value},
                         allow=(400, 404))
        if r.status == 404:
            raise CtlError(f"Virtual host '{vhost}' does not exist", EX_DATAERR, prefix=False)
        if not r.ok:
            raise CtlError(r.reason, EX_UNAVAILABLE)


@command("clear_vhost_limits", "vhosts", "Clears virtual host limits", "[--vhost <vhost>]")
def cmd_clear_vhost_limits(ctx):
    vhost = ctx.vhost
    ctx.banner(f'Clearing vhost "{vhost}" limits ...')
    r = ctx.api.get(f"/api/vhost-limits/{q(vhost)}", allow=(404,))
    names = [k for item in (r.data or []) if r.ok for k in (item.get("value") or {})]
    if not names:
        raise CtlError("Parameter does not exist", EX_UNAVAILABLE)
    for name in names:
        ctx.api.call("DELETE", f"/api/vhost-limits/{q(vhost)}/{q(name)}", allow=(404,))


@command("list_vhost_limits", "vhosts", "Displays configured virtual host limits",
         "[--vhost <vhost>] [--global] [--no-table-headers]", options=("global",))
def cmd_list_vhost_limits(ctx):
    if "global" in ctx.opts:
        ctx.banner("Listing limits for all vhosts ...")
        data = ctx.api.get("/api/vhost-limits").data or []
        ctx.table(["vhost", "limits"], [{"vhost": d.get("vhost"), "limits": compact(d.get("value") or {})}
                                        for d in data], empty_line=True, empty_json="[]")
        return
    vhost = ctx.vhost
    ctx.banner(f'Listing limits for vhost "{vhost}" ...')
    r = ctx.api.get(f"/api/vhost-limits/{q(vhost)}", allow=(404,))
    if r.status == 404:
        raise CtlError(f"Virtual host '{vhost}' does not exist", EX_DATAERR, prefix=False)
    value = {}
    for item in r.data or []:
        value.update(item.get("value") or {})
    if ctx.formatter == "json":
        ctx.print(json.dumps({"node": ctx.api.node(), "result": "ok", "value": compact(value)},
                             separators=(",", ":")) if value else "[]")
    else:
        ctx.print(compact(value) if value else "")


# ---- permissions

@command("set_permissions", "access", "Sets user permissions for a vhost",
         "[--vhost <vhost>] <username> <conf> <write> <read>", nargs=(4, 4))
def cmd_set_permissions(ctx):
    user, conf, write, read = ctx.args
    vhost = ctx.vhost
    ctx.banner(f'Setting permissions for user "{user}" in vhost "{vhost}" ...')
    r = ctx.api.call("PUT", f"/api/permissions/{q(vhost)}/{q(user)}",
                     {"configure": conf, "write": write, "read": read}, allow=(400, 404))
    if not r.ok:
        _permission_error(ctx, user, vhost, r)


def _permission_error(ctx, user, vhost, r):
    if ctx.api.get(f"/api/users/{q(user)}", allow=(404,)).status == 404:
        raise CtlError(f"User {user} does not exist", EX_NOUSER)
    if not _vhost_exists(ctx.api, vhost):
        raise CtlError(f"Virtual host {vhost} does not exist", EX_UNAVAILABLE)
    raise CtlError(r.reason, EX_UNAVAILABLE)


@command("clear_permissions", "access", "Revokes user permissions for a vhost",
         "[--vhost <vhost>] <username>", nargs=(1, 1))
def cmd_clear_permissions(ctx):
    user = ctx.args[0]
    vhost = ctx.vhost
    ctx.banner(f'Clearing permissions for user "{user}" in vhost "{vhost}" ...')
    r = ctx.api.call("DELETE", f"/api/permissions/{q(vhost)}/{q(user)}", allow=(400, 404))
    if r.status == 404:
        # No permissions to clear is fine, unless the user or the vhost is missing.
        if ctx.api.get(f"/api/users/{q(user)}", allow=(404,)).status == 404:
            raise CtlError(f"User {user} does not exist", EX_NOUSER)
        if not _vhost_exists(ctx.api, vhost):
            raise CtlError(f"Virtual host {vhost} does not exist", EX_UNAVAILABLE)
    elif not r.ok:
        _permission_error(ctx, user, vhost, r)


@command("list_permissions", "access", "Lists user permissions in a virtual host",
         "[--vhost <vhost>] [--no-table-headers] [--timeout <timeout>]")
def cmd_list_permissions(ctx):
    vhost = ctx.vhost
    ctx.banner(f'Listing permissions for vhost "{vhost}" ...')
    r = ctx.api.get(f"/api/vhosts/{q(vhost)}/permissions", allow=(404,))
    if r.status == 404:
        raise CtlError(f"Virtual host '{vhost}' does not exist", EX_DATAERR, prefix=False)
    ctx.table(["user", "configure", "write", "read"], r.data or [], empty_line=True, empty_json="[]")


@command("list_user_permissions", "access", "Lists permissions of a user across all virtual hosts",
         "[--no-table-headers] <username> [--timeout <timeout>]", nargs=(1, 1))
def cmd_list_user_permissions(ctx):
    user = ctx.args[0]
    ctx.banner(f'Listing permissions for user "{user}" ...')
    r = ctx.api.get(f"/api/users/{q(user)}/permissions", allow=(404,))
    if r.status == 404:
        raise CtlError(f'{{:no_such_user, "{user}"}}', EX_UNAVAILABLE)
    ctx.table(["vhost", "configure", "write", "read"], r.data or [], empty_line=True, empty_json="[]")


# ---- listing

QUEUE_COLUMNS = ["arguments", "auto_delete", "consumer_capacity", "consumer_utilisation", "consumers",
                 "disk_reads", "disk_writes", "durable", "exclusive", "exclusive_consumer_pid",
                 "exclusive_consumer_tag", "head_message_timestamp", "leader", "members", "memory",
                 "message_bytes", "message_bytes_persistent", "message_bytes_ram",
                 "message_bytes_ready", "message_bytes_unacknowledged", "messages",
                 "messages_persistent", "messages_ram", "messages_ready", "messages_ready_ram",
                 "messages_unacknowledged", "messages_unacknowledged_ram", "name", "online",
                 "owner_pid", "pid", "policy", "slave_pids", "state", "synchronised_slave_pids",
                 "type"]


def _queue_row(qd: dict) -> dict:
    row = dict(qd)
    owner = qd.get("owner_pid_details") or {}
    row["owner_pid"] = owner.get("name", qd.get("owner_pid", ""))
    ecd = qd.get("exclusive_consumer_details") or {}
    row["exclusive_consumer_pid"] = (ecd.get("channel_details") or {}).get("name", "") if ecd else ""
    row["exclusive_consumer_tag"] = qd.get("exclusive_consumer_tag") or ecd.get("consumer_tag", "")
    row["pid"] = qd.get("pid", "")
    node = qd.get("node", "")
    replicated = qd.get("type") in ("quorum", "stream")
    # leader, members and online are a replicated queue's; rabbitmqctl leaves them blank for a
    # classic queue, and its disk reads and writes blank for the others
    row.setdefault("leader", qd.get("leader", node) if replicated else "")
    row.setdefault("members", qd.get("members", [node] if node else []) if replicated else "")
    row.setdefault("online", qd.get("online", [node] if node else []) if replicated else "")
    row.setdefault("slave_pids", "")
    row.setdefault("synchronised_slave_pids", "")
    if row.get("policy") is None:
        row["policy"] = ""
    bs = qd.get("backing_queue_status") or {}
    row.setdefault("disk_reads", "" if replicated else bs.get("disk_reads", 0))
    row.setdefault("disk_writes", "" if replicated else bs.get("disk_writes", 0))
    return row


def _pids(ctx, vhost: str) -> dict:
    """name -> (pid, exclusive consumer's channel) of a vhost's queues, where the node says (GET
    /api/usagi/queues/{vhost}: RabbitMQ's management API has neither); empty where it does not."""
    out = {}
    try:
        for p in ctx.api.stream_list(f"/api/usagi/queues/{q(vhost)}", allow=(400, 401, 403, 404, 405)):
            if isinstance(p, dict):
                out[p.get("name")] = (p.get("pid", ""), p.get("exclusive_consumer_pid", ""))
    except (Unreachable, TimedOut, CtlError, ValueError):
        pass
    return out


def _fill_pids(row: dict, pids: dict):
    f = pids.get(row.get("name"))
    if f is not None:
        for key, v in zip(("pid", "exclusive_consumer_pid"), f):
            if not row.get(key):
                row[key] = v or ""


def _add_pids(ctx, vhost: str, rows: list):
    pids = _pids(ctx, vhost)
    for row in rows:
        _fill_pids(row, pids)


@command("list_queues", "monitoring", "Lists queues and their properties",
         "[--vhost <vhost>] [--online] [--offline] [--local] [--no-table-headers] [<column>, ...] "
         "[--timeout <timeout>]", nargs=(0, None), options=("online", "offline", "local"),
         columns=QUEUE_COLUMNS, default_columns=["name", "messages"])
def cmd_list_queues(ctx):
    cols = select_columns(ctx)
    vhost = ctx.vhost
    ctx.banner(f"Timeout: {float(ctx.opts.get('timeout', 60))} seconds ...")
    ctx.banner(f"Listing queues for vhost {vhost} ...")
    offline = "offline" in ctx.opts and "online" not in ctx.opts
    online = "online" in ctx.opts and "offline" not in ctx.opts
    pids = _pids(ctx, vhost) if "pid" in cols or "exclusive_consumer_pid" in cols else None

    def rows():
        # decoded and written a queue at a time as the listing arrives: with 50,000 queues the
        # reply is some 90 MB of JSON, which parsed whole took the tool over 500 MB
        for x in ctx.api.stream_list(f"/api/queues/{q(vhost)}", allow=(404,)):
            if not isinstance(x, dict) or (offline and x.get("state") != "down") or \
                    (online and x.get("state") == "down"):
                continue
            row = _queue_row(x)
            if pids is not None:
                _fill_pids(row, pids)
            yield row
    ctx.table(cols, rows())


EXCHANGE_COLUMNS = ["arguments", "auto_delete", "durable", "internal", "name", "policy", "type"]


@command("list_exchanges", "monitoring", "Lists exchanges",
         "[--vhost <vhost>] [--no-table-headers] [<column> ...] [--timeout <timeout>]",
         nargs=(0, None), columns=EXCHANGE_COLUMNS, default_columns=["name", "type"])
def cmd_list_exchanges(ctx):
    cols = select_columns(ctx)
    vhost = ctx.vhost
    ctx.banner(f"Listing exchanges for vhost {vhost} ...")
    r = ctx.api.get(f"/api/exchanges/{q(vhost)}", allow=(404,))
    rows = []
    for x in (r.data or []) if r.ok else []:
        row = dict(x)
        if row.get("policy") is None:
            row["policy"] = ""
        rows.append(row)
    ctx.table(cols, rows)


BINDING_COLUMNS = ["arguments", "destination_kind", "destination_name", "routing_key", "source_kind",
                   "source_name"]


@command("list_bindings", "monitoring", "Lists all bindings on a vhost",
         "[--vhost <vhost>] [--no-table-headers] [<column> ...] [--timeout <timeout>]",
         nargs=(0, None), columns=BINDING_COLUMNS,
         default_columns=["source_name", "source_kind", "destination_name", "destination_kind",
                          "routing_key", "arguments"])
def cmd_list_bindings(ctx):
    cols = select_columns(ctx)
    vhost = ctx.vhost
    ctx.banner(f"Listing bindings for vhost {vhost}...")
    r = ctx.api.get(f"/api/bindings/{q(vhost)}", allow=(404,))
    rows = [{"source_name": b.get("source", ""), "source_kind": "exchange",
             "destination_name": b.get("destination", ""),
             "destination_kind": b.get("destination_type", "queue"),
             "routing_key": b.get("routing_key", ""), "arguments": b.get("arguments") or {}}
            for b in ((r.data or []) if r.ok else [])]
    ctx.table(cols, rows)


CONNECTION_COLUMNS = ["auth_mechanism", "channel_max", "channels", "client_properties", "connected_at",
                      "frame_max", "host", "name", "peer_cert_issuer", "peer_cert_subject",
                      "peer_cert_validity", "peer_host", "peer_port", "pid", "port", "protocol",
                      "recv_cnt", "recv_oct", "send_cnt", "send_oct", "send_pend", "ssl",
                      "ssl_cipher", "ssl_hash", "ssl_key_exchange", "ssl_protocol", "state",
                      "timeout", "user", "vhost"]


@command("list_connections", "monitoring", "Lists AMQP 0.9.1 connections for the node",
         "[--no-table-headers] [<column> ...] [--timeout <timeout>]", nargs=(0, None),
         columns=CONNECTION_COLUMNS, default_columns=["user", "peer_host", "peer_port", "state"])
def cmd_list_connections(ctx):
    cols = select_columns(ctx)
    ctx.banner("Listing connections ...")
    rows = []
    for c in ctx.api.get("/api/connections").data or []:
        row = dict(c)
        row["pid"] = c.get("name", "")
        proto = c.get("protocol")
        if isinstance(proto, str) and proto.startswith("AMQP ") and "-" in proto:
            row["protocol"] = "{" + ",".join(proto[5:].split("-")) + "}"   # {0,9,1}
        for k in ("peer_cert_issuer", "peer_cert_subject", "peer_cert_validity", "ssl_cipher",
                  "ssl_hash", "ssl_key_exchange", "ssl_protocol"):
            if row.get(k) is None:
                row[k] = ""
        rows.append(row)
    ctx.table(cols, rows)


CHANNEL_COLUMNS = ["acks_uncommitted", "confirm", "connection", "consumer_count", "global_prefetch_count",
                   "messages_unacknowledged", "messages_uncommitted", "messages_unconfirmed", "name",
                   "number", "pid", "prefetch_count", "transactional", "user", "vhost"]


@command("list_channels", "monitoring", "Lists all channels in the node",
         "[--no-table-headers] [<column> ...]", nargs=(0, None), columns=CHANNEL_COLUMNS,
         default_columns=["pid", "user", "consumer_count", "messages_unacknowledged"])
def cmd_list_channels(ctx):
    cols = select_columns(ctx)
    ctx.banner("Listing channels ...")
    rows = []
    for c in ctx.api.get("/api/channels").data or []:
        row = dict(c)
        row["pid"] = c.get("name", "")
        row["connection"] = (c.get("connection_details") or {}).get("name", "")
        rows.append(row)
    ctx.table(cols, rows)


CONSUMER_COLUMNS = ["ack_required", "active", "activity_status", "arguments", "channel_pid",
                    "consumer_tag", "prefetch_count", "queue_name"]


@command("list_consumers", "monitoring", "Lists all consumers for a vhost",
         "[--vhost <vhost>] [--no-table-headers] [<column> ...] [--timeout <timeout>]",
         nargs=(0, None), columns=CONSUMER_COLUMNS,
         default_columns=["queue_name", "channel_pid", "consumer_tag", "ack_required",
                          "prefetch_count", "active", "arguments"])
def cmd_list_consumers(ctx):
    cols = select_columns(ctx)
    vhost = ctx.vhost
    ctx.banner(f"Listing consumers in vhost {vhost} ...")
    r = ctx.api.get(f"/api/consumers/{q(vhost)}", allow=(404,))
    rows = []
    for c in (r.data or []) if r.ok else []:
        row = dict(c)
        row["queue_name"] = (c.get("queue") or {}).get("name", "")
        row["channel_pid"] = (c.get("channel_details") or {}).get("name", "")
        row.setdefault("active", True)
        row.setdefault("activity_status", "up")
        row["arguments"] = c.get("arguments") or {}
        rows.append(row)
    ctx.table(cols, rows)


# ---- operations

@command("close_connection", "operations", "Instructs the broker to close the connection associated "
         "with the Erlang process id", "<connection pid> <explanation>", nargs=(2, 2))
def cmd_close_connection(ctx):
    name, reason = ctx.args
    ctx.banner(f"Closing connection {name}, reason: {reason}...")
    ctx.api.call("DELETE", f"/api/connections/{q(name)}", headers={"X-Reason": reason}, allow=(404,))


@command("close_all_connections", "operations", "Instructs the broker to close all connections for the "
         "specified vhost or entire RabbitMQ node",
         "[--vhost <vhost> --limit <limit>] [-n <node> --global] [--per-connection-delay <delay>] "
         "<explanation>", nargs=(1, 1), options=("limit", "global", "per-connection-delay"))
def cmd_close_all_connections(ctx):
    reason = ctx.args[0]
    try:
        limit = int(ctx.opts["limit"]) if "limit" in ctx.opts else None
        delay = float(ctx.opts.get("per-connection-delay", 0)) / 1000.0
    except ValueError:
        raise ValidationError("Bad argument: --limit and --per-connection-delay take integers",
                              EX_USAGE) from None
    if "global" in ctx.opts:
        ctx.banner(f"Closing all connections to node {ctx.api.node()} (across all vhosts), "
                   f"reason: {reason}...")
        conns = ctx.api.get("/api/connections").data or []
    else:
        vhost = ctx.vhost
        ctx.banner(f"Closing all connections in vhost {vhost}, reason: {reason}...")
        r = ctx.api.get(f"/api/vhosts/{q(vhost)}/connections", allow=(404,))
        conns = (r.data or []) if r.ok else []
    if limit is not None and limit > 0:
        conns = conns[:limit]
    closed = 0
    for c in conns:
        r = ctx.api.call("DELETE", f"/api/connections/{q(c.get('name', ''))}",
                         headers={"X-Reason": reason}, allow=(404,))
        if r.ok:
            closed += 1
        if delay:
            time.sleep(delay)
    ctx.print(f"Closed {closed} connections")


# ---- queues

@command("purge_queue", "queues", "Purges a queue (removes all messages in it)",
         "<queue> [--timeout <timeout>]", nargs=(1, 1))
def cmd_purge_queue(ctx):
    name = ctx.args[0]
    vhost = ctx.vhost
    ctx.banner(f"Purging queue '{name}' in vhost '{vhost}' ...")
    r = ctx.api.call("DELETE", f"/api/queues/{q(vhost)}/{q(name)}/contents", allow=(404,))
    if r.status == 404:
        raise CtlError("not_found", EX_UNAVAILABLE)


@command("delete_queue", "queues", "Deletes a queue",
         "<queue_name> [--if-empty|-e] [--if-unused|-u] [--timeout <timeout>]", nargs=(1, 1),
         options=("if-empty", "if-unused"), shorts={"e": "if-empty", "u": "if-unused"})
def cmd_delete_queue(ctx):
    name = ctx.args[0]
    vhost = ctx.vhost
    if_empty, if_unused = "if-empty" in ctx.opts, "if-unused" in ctx.opts
    conds = []
    if if_empty:
        conds.append("if queue is empty")
    if if_unused:
        conds.append("if queue is unused")
    ctx.banner(f"Deleting queue '{name}' on vhost '{vhost}' "
               + (" and ".join(conds) + " " if conds else "") + "...")
    path = f"/api/queues/{q(vhost)}/{q(name)}"
    r = ctx.api.get(path, allow=(404,))
    if r.status == 404:
        raise CtlError("Queue not found", EX_USAGE)
    info = r.data or {}
    ready = info.get("messages_ready", info.get("messages", 0)) or 0
    params = {}
    if if_empty:
        params["if-empty"] = "true"
    if if_unused:
        params["if-unused"] = "true"
    d = ctx.api.call("DELETE", path + ("?" + urllib.parse.urlencode(params) if params else ""),
                     allow=(400, 404))
    if d.status == 404:
        raise CtlError("Queue not found", EX_USAGE)
    if not d.ok:
        reason = d.reason
        if "not empty" in reason or "not_empty" in reason:
            reason = "Queue is not empty"
        elif "in use" in reason or "in_use" in reason:
            reason = "Queue is in use"
        raise CtlError(reason, EX_USAGE)
    ctx.print(f"Queue was successfully deleted with {ready} ready messages")


# ---- policies

@command("set_policy", "policies", "Sets or updates a policy",
         "[--vhost <vhost>] [--priority <priority>] [--apply-to <apply-to>] <name> <pattern> "
         "<definition>", nargs=(3, 3), options=("priority", "apply-to"))
def cmd_set_policy(ctx):
    name, pattern, definition = ctx.args
    vhost = ctx.vhost
    try:
        priority = int(ctx.opts.get("priority", 0))
    except ValueError:
        raise ValidationError(f"Bad argument: priority must be an integer, got "
                              f"{ctx.opts.get('priority')!r}", EX_USAGE) from None
    apply_to = ctx.opts.get("apply-to", "all")
    ctx.banner(f'Setting policy "{name}" for pattern "{pattern}" to "{definition}" with priority '
               f'"{priority}" for vhost "{vhost}" ...')
    defn = _parse_json_arg(definition)
    r = ctx.api.call("PUT", f"/api/policies/{q(vhost)}/{q(name)}",
                     {"pattern": pattern, "definition": defn, "priority": priority,
                      "apply-to": apply_to}, allow=(400, 404))
    if r.status == 404:
        raise CtlError(f"Virtual host '{vhost}' does not exist", EX_DATAERR, prefix=False)
    if not r.ok:
        raise CtlError(r.reason, EX_UNAVAILABLE)


@command("clear_policy", "policies", "Clears (removes) a policy", "[--vhost <vhost>] <name>",
         nargs=(1, 1))
def cmd_clear_policy(ctx):
    name = ctx.args[0]
    vhost = ctx.vhost
    ctx.banner(f'Clearing policy "{name}" on vhost "{vhost}" ...')
    r = ctx.api.call("DELETE", f"/api/policies/{q(vhost)}/{q(name)}", allow=(404,))
    if r.status == 404:
        raise CtlError("Parameter does not exist", EX_UNAVAILABLE)


@command("list_policies", "policies", "Lists all policies in a virtual host",
         "[--vhost <vhost>] [--no-table-headers] [--timeout <timeout>]")
def cmd_list_policies(ctx):
    vhost = ctx.vhost
    ctx.banner(f'Listing policies for vhost "{vhost}" ...')
    r = ctx.api.get(f"/api/policies/{q(vhost)}", allow=(404,))
    if r.status == 404 or not _vhost_exists(ctx.api, vhost):
        raise CtlError(f"Virtual host '{vhost}' does not exist", EX_DATAERR, prefix=False)
    ctx.table(POLICY_COLUMNS, _policy_rows(r.data), empty_line=True, empty_json="[]")


# ---- definitions

@command("export_definitions", "definitions", "Exports definitions in JSON or compressed Erlang Term "
         "Format.", '<file_path | "-"> [--format <json | erlang>] [--timeout <timeout>]',
         nargs=(1, 1), options=("format",))
def cmd_export_definitions(ctx):
    path = ctx.args[0]
    if ctx.opts.get("format", "json") != "json":
        raise ValidationError("Bad argument: usagictl supports only --format json", EX_DATAERR)
    if path != "-":
        ctx.banner(f'Exporting definitions in JSON to a file at "{path}" ...')
    data = ctx.api.get("/api/definitions").data
    text = compact(data)
    if path == "-":
        ctx.out.write(text)
        ctx.out.flush()
        return
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError:
        raise CtlError(f"No permissions to write to file {path} or its parent directory\n",
                       EX_DATAERR) from None


@command("import_definitions", "definitions", "Imports definitions in JSON or compressed Erlang Term "
         "Format.", '<file_path | "-"> [--format <json | erlang>] [--skip-if-unchanged] '
         "[--timeout <timeout>]", nargs=(1, 1), options=("format", "skip-if-unchanged"))
def cmd_import_definitions(ctx):
    path = ctx.args[0]
    if ctx.opts.get("format", "json") != "json":
        raise ValidationError("Bad argument: usagictl supports only --format json", EX_DATAERR)
    if path == "-":
        ctx.banner("Importing definitions in JSON from standard input ...")
        raw = sys.stdin.buffer.read()
    else:
        if not os.path.isfile(path):
            raise ValidationError(f"Bad argument: File {path} does not exist", EX_DATAERR)
        ctx.banner(f'Importing definitions in JSON from a file at "{path}" ...')
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except OSError as e:
            raise CtlError(f"could not read {path}: {e.strerror}", EX_DATAERR) from None
    try:
        defs = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise CtlError(f"Failed to decode definitions: {e}", EX_DATAERR) from None
    r = ctx.api.call("POST", "/api/definitions", defs, allow=(400,))
    if not r.ok:
        raise CtlError(r.reason, EX_DATAERR)
    ctx.banner("Successfully started definition import. This process is asynchronous and can take "
               "some time.")


# ---- node settings and state (Usagi endpoints under /api/usagi/)

def _usagi(ctx, method: str, action: str, body=None, what: str | None = None):
    """A Usagi-specific endpoint; against a management API without it (RabbitMQ's), exit code 69 and
    a message that says so."""
    path = f"/api/usagi/{action}"
    r = ctx.api.request(method, path, body)
    if r.ok:
        return r
    if r.status in (404, 405) and not (isinstance(r.data, dict) and r.data.get("reason") not in
                                       (None, "Not Found", "Object Not Found")):
        what = what or ctx.cmd.name
        raise CtlError(f"{what} is not supported by the management API at {ctx.api.display} "
                       f"({method} {path} answered {r.status}); {PROG} can run {what} only against Usagi "
                       f"nodes", EX_UNAVAILABLE)
    if r.status in (401, 403):
        raise CtlError(f"the management API refused {method} {path} for user '{ctx.api.user}' "
                       f"({r.status}: {r.reason})", EX_UNAVAILABLE)
    raise CtlError(r.reason.rstrip("\n"), EX_UNAVAILABLE if r.status in (400, 409, 501) else EX_SOFTWARE)


def _wait_app(ctx, running: bool):
    """stop_app and start_app return once the node says the app has stopped or started (the API
    answers before it acts), as rabbitmqctl's return once it has."""
    deadline = time.monotonic() + float(ctx.opts.get("timeout", 60))
    while time.monotonic() < deadline:
        state = ctx.api.app_running()
        if state is None or state == running:
            return
        time.sleep(0.05)
    raise CtlError(f"the node behind {ctx.api.display} did not {'start' if running else 'stop'} its app "
                   f"within {ctx.opts.get('timeout', 60)} seconds", EX_TEMPFAIL)


@command("reset", "nodes", "Instructs a RabbitMQ node to leave the cluster and return to its virgin state",
         app=STOPPED)
def cmd_reset(ctx):
    ctx.banner(f"Resetting node {ctx.api.node()} ...")
    _usagi(ctx, "POST", "reset")
    ctx.ok()


@command("force_reset", "cluster", "Forcefully returns a RabbitMQ node to its virgin state", app=STOPPED)
def cmd_force_reset(ctx):
    ctx.banner(f"Forcefully resetting node {ctx.api.node()} ...")
    _usagi(ctx, "POST", "force_reset")
    ctx.ok()


@command("rotate_logs", "nodes", "Rotates the node's log files (Usagi); does nothing on RabbitMQ [deprecated]")
def cmd_rotate_logs(ctx):
    r = ctx.api.request("POST", "/api/usagi/rotate_logs")
    if r.status in (404, 405):
        raise CtlError("This command does not rotate logs anymore [deprecated]", EX_UNAVAILABLE)
    if not r.ok:
        _usagi(ctx, "POST", "rotate_logs")
    files = (r.data or {}).get("rotated") or []
    if not files:
        raise CtlError(f"node {ctx.api.node()} logs to standard output or error only: it has no log file "
                       f"to rotate", EX_UNAVAILABLE)
    ctx.banner(f"Rotating logs for node {ctx.api.node()} ...")
    ctx.ok()


MEMORY_UNITS = {"": 1, "k": 1024, "kiB": 1024, "M": 1024 ** 2, "MiB": 1024 ** 2, "G": 1024 ** 3,
                "GiB": 1024 ** 3, "kB": 1000, "MB": 1000 ** 2, "GB": 1000 ** 3}
_INT = re.compile(r"([+-]?[0-9]+)(.*)\Z", re.S)       # ASCII digits: int() also takes other scripts'
_FLOAT = re.compile(r"[+-]?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?\Z")


def parse_size(text: str) -> int | None:
    """An absolute size as rabbitmqctl reads one: an integer with one of MEMORY_UNITS (k, M, G are
    powers of 2; kB, MB, GB of 10). None if it is not one."""
    m = _INT.match(text)
    if m is None or m.group(2) not in MEMORY_UNITS:
        return None
    n = int(m.group(1))
    if n < 0 and m.group(2):
        return None
    return n * MEMORY_UNITS[m.group(2)]


def _fraction(text: str) -> float | None:
    return float(text) if _FLOAT.match(text) else None


def _validate_watermark(ctx):
    a = ctx.args
    if a[0] == "absolute":
        if len(a) < 2:
            raise ValidationError("not enough arguments.")
        if len(a) > 2:
            raise ValidationError("too many arguments.")
        m = _INT.match(a[1])
        if m is None:
            raise ValidationError("Bad argument.", EX_DATAERR)
        if m.group(2).startswith("."):
            raise ValidationError("Bad argument: The threshold should be an integer.", EX_DATAERR)
        if m.group(2) not in MEMORY_UNITS:
            raise ValidationError("Bad argument: Invalid units.", EX_DATAERR)
        if int(m.group(1)) <= 0:
            raise ValidationError("Bad argument: The threshold should be a positive integer.", EX_DATAERR)
        return
    if len(a) > 1:
        raise ValidationError("too many arguments.")
    f = _fraction(a[0])
    if f is None:
        raise ValidationError("Bad argument.", EX_DATAERR)
    if not 0.0 <= f <= 1.0:
        raise ValidationError("Bad argument: The threshold should be a fraction between 0.0 and 1.0", EX_DATAERR)


@command("set_vm_memory_high_watermark", "configuration", "Sets the vm_memory_high_watermark setting",
         "<fraction> | absolute <value>", nargs=(1, 2), validate=_validate_watermark,
         extra_help=(("<fraction>", "New limit as a fraction of total memory reported by the OS"),
                     ("absolute <value>", "New limit as an absolute value with units, e.g. 1GB")))
def cmd_set_vm_memory_high_watermark(ctx):
    a = ctx.args
    node = ctx.api.node()
    if a[0] == "absolute":
        ctx.banner(f"Setting memory threshold on {node} to {a[1]} bytes ...")
        body = {"absolute": parse_size(a[1])}
    else:
        ctx.banner(f"Setting memory threshold on {node} to {a[0]} ...")
        body = {"relative": _fraction(a[0])}
    _usagi(ctx, "PUT", "vm_memory_high_watermark", body)
    ctx.ok()


def _validate_disk_limit(ctx):
    a = ctx.args
    if a[0] == "mem_relative":
        if len(a) < 2:
            raise ValidationError("not enough arguments.")
        if len(a) > 2:
            raise ValidationError("too many arguments.")
        f = _fraction(a[1])
        if f is None or f < 0:
            raise ValidationError("Bad argument.", EX_DATAERR)
        return
    if len(a) > 1:
        raise ValidationError("too many arguments.")
    if parse_size(a[0]) is None:
        raise ValidationError("Bad argument.", EX_DATAERR)


@command("set_disk_free_limit", "configuration", "Sets the disk_free_limit setting",
         "<disk_limit> | mem_relative <fraction>", nargs=(1, 2), validate=_validate_disk_limit,
         extra_help=(("<disk_limit>", "New limit as an absolute value with units, e.g. 1GB"),
                     ("mem_relative <fraction>", "New limit as a fraction of total memory reported by the OS")))
def cmd_set_disk_free_limit(ctx):
    a = ctx.args
    node = ctx.api.node()
    if a[0] == "mem_relative":
        ctx.banner(f"Setting disk free limit on {node} to {a[1]} times the total RAM ...")
        body = {"mem_relative": _fraction(a[1])}
    else:
        ctx.banner(f"Setting disk free limit on {node} to {a[0]} bytes ...")
        body = {"absolute": parse_size(a[0])}
    _usagi(ctx, "PUT", "disk_free_limit", body)
    ctx.ok()


LOG_LEVELS = ("debug", "info", "warning", "error", "critical", "none")


@command("set_log_level", "configuration", "Sets log level in the running node", "<log_level>", nargs=(1, 1))
def cmd_set_log_level(ctx):
    level = ctx.args[0]
    if level not in LOG_LEVELS:
        raise CtlError(f"level {level} is not supported. Try one of {', '.join(LOG_LEVELS)}", EX_UNAVAILABLE)
    ctx.banner(f'Setting log level to "{level}" ...')
    _usagi(ctx, "PUT", "log_level", {"level": level})
    ctx.ok()


@command("environment", "configuration", "Displays the name and value of each variable in the application "
         "environment for each running application", app=None)
def cmd_environment(ctx):
    ctx.banner(f"Application environment of node {ctx.api.node()} ...")
    env = _usagi(ctx, "GET", "environment").data or {}
    if ctx.json:
        ctx.print(compact(env))
        return
    ctx.print(erlang_term({app: dict(sorted((env[app] or {}).items())) if isinstance(env[app], dict)
                           else env[app] for app in sorted(env)}))


@command("hash_password", "users", "Hashes a plaintext password", "<cleartext_password>", nargs=(0, 1),
         app=None)
def cmd_hash_password(ctx):
    from ..auth.passwords import hash_password
    if ctx.args:
        password = ctx.args[0]
        if password == "":
            raise ValidationError("Bad argument: password cannot be an empty string", EX_DATAERR)
        ctx.banner(f"Will hash password {password}")
    else:
        ctx.banner("Will hash provided password")
        if sys.stdin.isatty():
            import getpass
            password = getpass.getpass("Password: ")
        else:
            password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise ValidationError("not enough arguments.")
    ctx.print(hash_password(password))


@command("set_cluster_name", "configuration", "Sets the cluster name", "<name>", nargs=(1, 1))
def cmd_set_cluster_name(ctx):
    name = ctx.args[0]
    ctx.banner(f"Setting cluster name to {name} ...")
    r = ctx.api.call("PUT", "/api/cluster-name", {"name": name}, allow=(400,))
    if not r.ok:
        raise CtlError(r.reason, EX_UNAVAILABLE)
    ctx.ok()


@command("shutdown", "nodes", "Stops RabbitMQ and its runtime (Erlang VM). Monitors progress for local nodes. "
         "Does not require a PID file path.", "[--wait] [--timeout <timeout>]", options=("wait", "no-wait"),
         app=None)
def cmd_shutdown(ctx):
    node = ctx.api.node()
    pid = ctx.api.node_info().get("os_pid", "")
    ctx.banner(f"Shutting down RabbitMQ node {node} running at PID {pid}")
    _usagi(ctx, "POST", "stop", what="shutdown")
    if "no-wait" in ctx.opts:
        return
    ctx.banner(f"Waiting for PID {pid} to terminate")
    deadline = time.monotonic() + float(ctx.opts.get("timeout", 60))
    while time.monotonic() < deadline:
        try:
            ctx.api.request("GET", "/api/overview", timeout=2)
        except (Unreachable, TimedOut):
            ctx.banner(f"RabbitMQ node {node} running at PID {pid} successfully shut down")
            return
        time.sleep(0.1)
    raise CtlError(f"node {node} did not stop within {ctx.opts.get('timeout', 60)} seconds", EX_TEMPFAIL)


# ---- topic permissions

TOPIC_PERMISSION_COLUMNS = ["user", "exchange", "write", "read"]


@command("list_topic_permissions", "access", "Lists topic permissions in a virtual host",
         "[--vhost <vhost>] [--no-table-headers] [--timeout <timeout>]")
def cmd_list_topic_permissions(ctx):
    vhost = ctx.vhost
    ctx.banner(f'Listing topic permissions for vhost "{vhost}" ...')
    r = ctx.api.get(f"/api/vhosts/{q(vhost)}/topic-permissions", allow=(404,))
    if r.status == 404:
        raise CtlError(f"Virtual host '{vhost}' does not exist", EX_DATAERR, prefix=False)
    ctx.table(TOPIC_PERMISSION_COLUMNS, r.data or [], empty_line=True, empty_json="[]")


@command("list_user_topic_permissions", "access", "Lists user topic permissions",
         "[--no-table-headers] <username> [--timeout <timeout>]", nargs=(1, 1))
def cmd_list_user_topic_permissions(ctx):
    user = ctx.args[0]
    ctx.banner(f'Listing topic permissions for user "{user}" ...')
    r = ctx.api.get(f"/api/users/{q(user)}/topic-permissions", allow=(404,))
    if r.status == 404:
        raise CtlError(f'{{:no_such_user, "{user}"}}', EX_UNAVAILABLE)
    ctx.headers = False          # rabbitmqctl prints this table without its header row
    ctx.table(["vhost", "exchange", "write", "read"], r.data or [], empty_line=True, empty_json="[]")


@command("set_topic_permissions", "access", "Sets user topic permissions for an exchange",
         "[--vhost <vhost>] <username> <exchange> <write> <read>", nargs=(4, 4))
def cmd_set_topic_permissions(ctx):
    user, exchange, write, read = ctx.args
    vhost = ctx.vhost
    ctx.banner(f'Setting topic permissions on "{exchange}" for user "{user}" in vhost "{vhost}" ...')
    r = ctx.api.call("PUT", f"/api/topic-permissions/{q(vhost)}/{q(user)}",
                     {"exchange": exchange, "write": write, "read": read}, allow=(400, 404))
    if not r.ok:
        _user_and_vhost_must_exist(ctx, user, vhost)
        raise CtlError(r.reason, EX_UNAVAILABLE)
    ctx.ok()


def _user_and_vhost_must_exist(ctx, user, vhost):
    if ctx.api.get(f"/api/users/{q(user)}", allow=(404,)).status == 404:
        raise CtlError(f"User {user} does not exist", EX_NOUSER)
    if not _vhost_exists(ctx.api, vhost):
        raise CtlError(f"Virtual host {vhost} does not exist", EX_UNAVAILABLE)


@command("clear_topic_permissions", "access", "Clears user topic permissions for a vhost or exchange",
         "[--vhost <vhost>] <username> [<exchange>]", nargs=(1, 2))
def cmd_clear_topic_permissions(ctx):
    user = ctx.args[0]
    vhost = ctx.vhost
    if len(ctx.args) > 1:
        exchange = ctx.args[1]
        ctx.banner(f'Clearing topic permissions on "{exchange}" for user "{user}" in vhost "{vhost}" ...')
        path = f"/api/topic-permissions/{q(vhost)}/{q(user)}/{q(exchange)}"
    else:
        ctx.banner(f'Clearing topic permissions for user "{user}" in vhost "{vhost}" ...')
        path = f"/api/topic-permissions/{q(vhost)}/{q(user)}"
    r = ctx.api.call("DELETE", path, allow=(400, 404))
    if not r.ok:
        # none to clear is fine, unless the user or the vhost is missing
        _user_and_vhost_must_exist(ctx, user, vhost)
        if r.status != 404:
            raise CtlError(r.reason, EX_UNAVAILABLE)
    ctx.ok()


# ---- runtime parameters

def _json_text(v) -> str:
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False)


@command("list_parameters", "parameters", "Lists runtime parameters for a virtual host",
         "[--vhost <vhost>] [--no-table-headers] [--timeout <timeout>]")
def cmd_list_parameters(ctx):
    vhost = ctx.vhost
    ctx.banner(f'Listing runtime parameters for vhost "{vhost}" ...')
    if not _vhost_exists(ctx.api, vhost):
        raise CtlError(f"Virtual host '{vhost}' does not exist", EX_DATAERR, prefix=False)
    rows = [{"component": p.get("component"), "name": p.get("name"), "value": _json_text(p.get("value"))}
            for p in ctx.api.get("/api/parameters").data or [] if p.get("vhost") == vhost]
    ctx.table(["component", "name", "value"], rows, empty_line=True, empty_json="[]")


@command("set_parameter", "parameters", "Sets a runtime parameter.",
         "[--vhost <vhost>] <component_name> <name> <value>", nargs=(3, 3))
def cmd_set_parameter(ctx):
    component, name, value = ctx.args
    vhost = ctx.vhost
    ctx.banner(f'Setting runtime parameter "{name}" for component "{component}" to "{value}" in vhost '
               f'"{vhost}" ...')
    v = _parse_json_arg(value)
    r = ctx.api.call("PUT", f"/api/parameters/{q(component)}/{q(vhost)}/{q(name)}",
                     {"vhost": vhost, "component": component, "name": name, "value": v}, allow=(400, 404))
    if r.status == 404:
        raise CtlError(f"Virtual host '{vhost}' does not exist", EX_DATAERR, prefix=False)
    if not r.ok:
        raise CtlError(r.reason.rstrip("\n"), EX_UNAVAILABLE)
    ctx.ok()


@command("clear_parameter", "parameters", "Clears a runtime parameter.",
         "[--vhost <vhost>] <component_name> <name>", nargs=(2, 2))
def cmd_clear_parameter(ctx):
    component, name = ctx.args
    vhost = ctx.vhost
    ctx.banner(f'Clearing runtime parameter "{name}" for component "{component}" on vhost "{vhost}" ...')
    r = ctx.api.call("DELETE", f"/api/parameters/{q(component)}/{q(vhost)}/{q(name)}", allow=(400, 404))
    if r.status == 404:
        raise CtlError("Parameter does not exist", EX_UNAVAILABLE)
    if not r.ok:
        raise CtlError(r.reason.rstrip("\n"), EX_UNAVAILABLE)
    ctx.ok()


@command("list_global_parameters", "parameters", "Lists global runtime parameters",
         "[--no-table-headers] [--timeout <timeout>]")
def cmd_list_global_parameters(ctx):
    ctx.banner("Listing global runtime parameters ...")
    rows = [{"name": p.get("name"), "value": _json_text(p.get("value"))}
            for p in ctx.api.get("/api/global-parameters").data or []]
    ctx.table(["name", "value"], rows, empty_line=True, empty_json="[]")


@command("set_global_parameter", "parameters", "Sets a runtime parameter.", "<name> <value>", nargs=(2, 2))
def cmd_set_global_parameter(ctx):
    name, value = ctx.args
    ctx.banner(f'Setting global runtime parameter "{name}" to "{value}" ...')
    v = _parse_json_arg(value)
    r = ctx.api.call("PUT", f"/api/global-parameters/{q(name)}", {"name": name, "value": v}, allow=(400,))
    if not r.ok:
        raise CtlError(r.reason.rstrip("\n"), EX_UNAVAILABLE)
    ctx.ok()


@command("clear_global_parameter", "parameters", "Clears a global runtime parameter", "<name>", nargs=(1, 1))
def cmd_clear_global_parameter(ctx):
    name = ctx.args[0]
    ctx.banner(f'Clearing global runtime parameter "{name}" ...')
    r = ctx.api.call("DELETE", f"/api/global-parameters/{q(name)}", allow=(404,))
    if r.status == 404:
        raise CtlError("Parameter does not exist", EX_UNAVAILABLE)
    ctx.ok()


# ---- operator policies

POLICY_COLUMNS = ["vhost", "name", "pattern", "apply-to", "definition", "priority"]


def _policy_rows(data) -> list:
    rows = []
    for p in data or []:
        row = dict(p)
        row["definition"] = _json_text(p.get("definition") or {})
        rows.append(row)
    return rows


@command("set_operator_policy", "policies", "Sets an operator policy that overrides a subset of arguments in "
         "user policies", "[--vhost <vhost>] [--priority <priority>] [--apply-to <apply-to>] <name> <pattern> "
         "<definition>", nargs=(3, 3), options=("priority", "apply-to"))
def cmd_set_operator_policy(ctx):
    name, pattern, definition = ctx.args
    vhost = ctx.vhost
    try:
        priority = int(ctx.opts.get("priority", 0))
    except ValueError:
        raise ValidationError(f"Bad argument: priority must be an integer, got "
                              f"{ctx.opts.get('priority')!r}", EX_USAGE) from None
    apply_to = ctx.opts.get("apply-to", "all")
    ctx.banner(f'Setting operator policy override "{name}" for pattern "{pattern}" to "{definition}" with '
               f'priority "{priority}" for vhost "{vhost}" ...')
    defn = _parse_json_arg(definition)
    r = ctx.api.call("PUT", f"/api/operator-policies/{q(vhost)}/{q(name)}",
                     {"pattern": pattern, "definition": defn, "priority": priority, "apply-to": apply_to},
                     allow=(400, 404))
    if r.status == 404:
        raise CtlError(f"Virtual host '{vhost}' does not exist", EX_DATAERR, prefix=False)
    if not r.ok:
        raise CtlError(r.reason.rstrip("\n"), EX_UNAVAILABLE)
    ctx.ok()


@command("clear_operator_policy", "policies", "Clears an operator policy", "[--vhost <vhost>] <name>",
         nargs=(1, 1))
def cmd_clear_operator_policy(ctx):
    name = ctx.args[0]
    vhost = ctx.vhost
    ctx.banner(f'Clearing operator policy "{name}" on vhost "{vhost}" ...')
    r = ctx.api.call("DELETE", f"/api/operator-policies/{q(vhost)}/{q(name)}", allow=(404,))
    if r.status == 404:
        raise CtlError("Parameter does not exist", EX_UNAVAILABLE)
    ctx.ok()


@command("list_operator_policies", "policies", "Lists operator policy overrides for a virtual host",
         "[--vhost <vhost>] [--no-table-headers] [--timeout <timeout>]")
def cmd_list_operator_policies(ctx):
    vhost = ctx.vhost
    ctx.banner(f'Listing operator policy overrides for vhost "{vhost}" ...')
    r = ctx.api.get(f"/api/operator-policies/{q(vhost)}", allow=(404,))
    if r.status == 404 or not _vhost_exists(ctx.api, vhost):
        raise CtlError(f"Virtual host '{vhost}' does not exist", EX_DATAERR, prefix=False)
    ctx.table(POLICY_COLUMNS, _policy_rows(r.data), empty_line=True, empty_json="[]")


# ---- virtual hosts

@command("set_vhost_tags", "vhosts", "Sets virtual host tags", "<vhost> <tag> [...]", nargs=(1, None))
def cmd_set_vhost_tags(ctx):
    vhost, tags = ctx.args[0], ctx.args[1:]
    ctx.banner(f'Setting tags for virtual host "{vhost}" to [{", ".join(tags)}] ...')
    r = ctx.api.get(f"/api/vhosts/{q(vhost)}", allow=(404,))
    if r.status == 404:
        raise CtlError(f'Virtual host "{vhost}" does not exist', EX_DATAERR)
    v = r.data or {}
    body = {"tags": ",".join(tags), "description": v.get("description", "")}
    if v.get("default_queue_type"):
        body["default_queue_type"] = v["default_queue_type"]
    ctx.api.call("PUT", f"/api/vhosts/{q(vhost)}", body)
    ctx.ok()


# ---- monitoring

@command("list_unresponsive_queues", "monitoring", "Tests queues to respond within timeout. Lists those which "
         "did not respond", "[--local] [--queue-timeout <milliseconds>] [<column> ...] [--no-table-headers] "
         "[--timeout <timeout>]", nargs=(0, None), options=("local", "queue-timeout"),
         columns=["arguments", "auto_delete", "durable", "name", "pid", "recoverable_slaves"],
         default_columns=["name"])
def cmd_list_unresponsive_queues(ctx):
    """A queue that does not answer is one its node reports in another state than running (the node
    answers for its queues: Usagi's always answer)."""
    cols = select_columns(ctx)
    vhost = ctx.vhost
    ctx.banner(f"Listing unresponsive queues for vhost {vhost} ...")
    r = ctx.api.get(f"/api/queues/{q(vhost)}", allow=(404,))
    rows = [_queue_row(x) for x in ((r.data or []) if r.ok else [])
            if x.get("state") not in (None, "running", "idle", "flow")]
    if rows and "pid" in cols:
        _add_pids(ctx, vhost, rows)
    for row in rows:
        row.setdefault("recoverable_slaves", "")
    ctx.table(cols, rows)


FEATURE_FLAG_COLUMNS = ["desc", "doc_url", "name", "provided_by", "stability", "state"]


def _feature_flags(ctx) -> list:
    return sorted(ctx.api.get("/api/feature-flags").data or [], key=lambda f: f.get("name", ""))


@command("list_feature_flags", "feature_flags", "Lists feature flags", "[<column> ...] [--timeout <timeout>]",
         nargs=(0, None), columns=FEATURE_FLAG_COLUMNS, default_columns=["name", "state"])
def cmd_list_feature_flags(ctx):
    cols = select_columns(ctx)
    ctx.banner("Listing feature flags ...")
    ctx.table(cols, _feature_flags(ctx))


@command("enable_feature_flag", "feature_flags", "Enables a feature flag or all supported feature flags on the "
         "target node", "<all> | <feature_flag>", nargs=(1, 1))
def cmd_enable_feature_flag(ctx):
    name = ctx.args[0]
    ctx.banner("Enabling all feature flags ..." if name == "all" else f'Enabling feature flag "{name}" ...')
    flags = _feature_flags(ctx)
    if name != "all" and not any(f.get("name") == name for f in flags):
        raise CtlError(f"This feature flag is not supported by node {ctx.api.node()}", EX_USAGE)
    for f in flags:
        if (name == "all" or f.get("name") == name) and f.get("state") != "enabled":
            ctx.api.call("PUT", f"/api/feature-flags/{q(f['name'])}/enable", {})
    ctx.ok()


# ---- operations

@command("close_all_user_connections", "operations", "Instructs the broker to close all connections of the "
         "specified user", "<username> <explanation>", nargs=(2, 2))
def cmd_close_all_user_connections(ctx):
    user, reason = ctx.args
    ctx.banner(f"Closing connections of user {user}, reason: {reason}...")
    for c in ctx.api.get("/api/connections").data or []:
        if c.get("user") == user:
            ctx.api.call("DELETE", f"/api/connections/{q(c.get('name', ''))}", headers={"X-Reason": reason},
                         allow=(404,))
    ctx.ok()


# ---- report

REPORT_QUEUE_COLUMNS = [
    "name", "durable", "auto_delete", "arguments", "policy", "pid", "owner_pid", "exclusive",
    "exclusive_consumer_pid", "exclusive_consumer_tag", "messages_ready", "messages_unacknowledged", "messages",
    "messages_ready_ram", "messages_unacknowledged_ram", "messages_ram", "messages_persistent", "message_bytes",
    "message_bytes_ready", "message_bytes_unacknowledged", "message_bytes_ram", "message_bytes_persistent",
    "head_message_timestamp", "disk_reads", "disk_writes", "consumers", "consumer_utilisation",
    "consumer_capacity", "memory", "slave_pids", "synchronised_slave_pids", "state", "type", "leader", "members",
    "online"]


@command("report", "monitoring", "Generate a server status report containing a concatenation of all server "
         "status information for support purposes", "[--timeout <timeout>]")
def cmd_report(ctx):
    """status, cluster_status, environment, connections and channels, then each vhost's queues,
    exchanges, bindings, permissions, policies and parameters: what each of those commands prints."""
    ctx.banner(f"Reporting server status of node {ctx.api.node()} ...")

    def sub(name, args=(), **opts):
        ctx.print()
        c = COMMANDS[name]
        o = {k: v for k, v in ctx.opts.items() if k in ("timeout", "quiet", "silent", "formatter")}
        o.update(opts)
        c.handler(Ctx(ctx.tool, c, list(args), o, ctx.api, ctx.out, ctx.err))

    sub("status")
    sub("cluster_status")
    try:
        sub("environment")
    except CtlError:
        pass                    # a management API without Usagi's endpoints (RabbitMQ's)
    sub("list_connections", CONNECTION_COLUMNS_REPORT)
    sub("list_channels", CHANNEL_COLUMNS_REPORT)
    for v in ctx.api.get("/api/vhosts").data or []:
        name = v.get("name")
        sub("list_queues", REPORT_QUEUE_COLUMNS, vhost=name)
        sub("list_exchanges", ["name", "type", "durable", "auto_delete", "internal", "arguments", "policy"],
            vhost=name)
        sub("list_bindings", vhost=name)
        sub("list_permissions", vhost=name)
        sub("list_policies", vhost=name)
        sub("list_global_parameters")
        sub("list_parameters", vhost=name)


CONNECTION_COLUMNS_REPORT = ["pid", "name", "port", "host", "peer_port", "peer_host", "ssl", "ssl_protocol",
                             "ssl_key_exchange", "ssl_cipher", "ssl_hash", "peer_cert_subject",
                             "peer_cert_issuer", "peer_cert_validity", "state", "channels", "protocol",
                             "auth_mechanism", "user", "vhost", "timeout", "frame_max", "channel_max",
                             "client_properties", "recv_oct", "recv_cnt", "send_oct", "send_cnt", "send_pend",
                             "connected_at"]
CHANNEL_COLUMNS_REPORT = ["pid", "name", "connection", "number", "user", "vhost", "transactional", "confirm",
                          "consumer_count", "messages_unacknowledged", "messages_uncommitted",
                          "acks_uncommitted", "messages_unconfirmed", "prefetch_count",
                          "global_prefetch_count"]


# ---- help

@command("help", "help", "Displays usage information for a command",
         "(<command> | [--list-commands])", nargs=(0, 1), options=("list-commands",), app=None)
def cmd_help(ctx):
    if "list-commands" in ctx.opts:
        for name in sorted(COMMANDS):
            ctx.print(name)
        return
    if not ctx.args:
        ctx.out.write(ctx.tool.general_usage())
        return
    name = ctx.args[0]
    c = ctx.tool.commands.get(name)
    if c is None:
        raise CtlError(f"\nCommand '{name}' not found.", EX_USAGE)
    ctx.out.write(ctx.tool.command_help(c))



def run(argv: list[str], out=None, err=None) -> int:
    return TOOL.run(argv, out, err)


def main(argv=None) -> int:
    return TOOL.main(argv)


if __name__ == "__main__":
    sys.exit(main())
