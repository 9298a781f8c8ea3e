"""usagi-diagnostics: a rabbitmq-diagnostics-compatible health-check and inspection tool.

Operators and their monitoring run rabbitmq-diagnostics for health checks (ping, check_running,
check_local_alarms, check_port_connectivity, check_virtual_hosts, ...) and to look at a node
(status, listeners, alarms, memory_breakdown, log_tail, ...); usagi-diagnostics takes the same
commands, options and arguments and prints what rabbitmq-diagnostics 3.10 prints, with its exit
codes (0 passed, 69 a check failed or the node is unavailable, 64 usage, 70 software error).
It shares everything but its own commands with usagictl (common.py); the listings, status, ping,
environment and report are usagictl's.

Management API endpoints used, besides usagictl's (RabbitMQ's):

  GET /api/health/checks/alarms, /local-alarms, /virtual-hosts, /port-listener/{port}
  GET /api/nodes/{node}/memory                           memory_breakdown
  GET /api/overview (listeners), /api/nodes/{node}         listeners, check_port_connectivity, log_location

and Usagi's (RabbitMQ's management API has none: rabbitmq-diagnostics reads the log over Erlang
distribution):

  GET /api/usagi/log_tail?lines=N                        log_tail: the last N lines of the node's log file

check_port_connectivity opens a TCP connection to each listener's port from where the tool runs (at
the host of --url when the listener is on all interfaces or on loopback), which is what a client
sees; rabbitmq-diagnostics connects from the node's host.
"""
from __future__ import annotations

import socket
import sys

from . import ctl
from .common import (EX_DATAERR, EX_SOFTWARE, EX_UNAVAILABLE, CtlError, Tool, ValidationError, general_options,
                     listener_line, listeners, q)
from .ctl import alarm_text

PROG = "usagi-diagnostics"

SECTIONS = [
    ("help", "Help"), ("nodes", "Nodes"), ("cluster", "Cluster"), ("users", "Users"), ("access", "Access Control"),
    ("monitoring", "Monitoring, observability and health checks"), ("parameters", "Parameters"),
    ("policies", "Policies"), ("vhosts", "Virtual hosts"), ("configuration", "Configuration and Environment"),
    ("feature_flags", "Feature flags"),
]

TOOL = Tool(PROG, SECTIONS, general_options())
COMMANDS = TOOL.commands
command = TOOL.command

# usagictl's commands that rabbitmq-diagnostics offers as well (in its help sections)
for _name, _section in (
        ("help", None), ("version", None), ("ping", None), ("status", None), ("cluster_status", None),
        ("environment", None), ("report", None), ("list_users", None), ("list_user_limits", None),
        ("list_permissions", None), ("list_topic_permissions", None), ("list_user_permissions", None),
        ("list_user_topic_permissions", None), ("list_vhosts", None), ("list_bindings", None),
        ("list_channels", None), ("list_connections", None), ("list_consumers", None), ("list_exchanges", None),
        ("list_queues", None), ("list_unresponsive_queues", None), ("list_global_parameters", None),
        ("list_parameters", None), ("list_operator_policies", None), ("list_policies", None),
        ("list_vhost_limits", None), ("list_feature_flags", None)):
    TOOL.add(ctl.COMMANDS[_name], _section)


def _node(ctx) -> str:
    return ctx.api.node()


# ---------------------------------------------------------------------------------------- running

RUNNING_TEXT = "RabbitMQ on node {} is fully booted and running"
NOT_RUNNING_TEXT = "RabbitMQ on node {} is not running or has not fully booted yet (check with is_booting)"


@command("check_running", "monitoring", "Health check that exits with a non-zero code if the RabbitMQ app on "
         "the target node is not running", app=None)
def cmd_check_running(ctx):
    node = _node(ctx)
    ctx.banner(f"Checking if RabbitMQ is running on node {node} ...")
    if ctx.api.app_running() is False:
        raise CtlError(NOT_RUNNING_TEXT.format(node), EX_UNAVAILABLE)
    _message(ctx, RUNNING_TEXT.format(node))


@command("is_running", "monitoring", "Checks if RabbitMQ is fully booted and running on the target node",
         app=None)
def cmd_is_running(ctx):
    node = _node(ctx)
    ctx.banner(f"Asking node {node} for its status ...")
    running = ctx.api.app_running() is not False
    if ctx.json:
        ctx.print_json(running)
        return
    ctx.print((RUNNING_TEXT if running else NOT_RUNNING_TEXT).format(node))


@command("is_booting", "monitoring", "Checks if RabbitMQ is still booting on the target node", app=None)
def cmd_is_booting(ctx):
    """A Usagi node answers its management API only once it has booted."""
    node = _node(ctx)
    ctx.banner(f"Asking node {node} for its boot status ...")
    if ctx.json:
        ctx.print_json(False)
        return
    ctx.print(f"RabbitMQ on node {node} is fully booted (check with is_running), stopped or has not started "
              f"booting yet")


def _message(ctx, text: str):
    if ctx.json:
        ctx.print_json({"message": text})
    else:
        ctx.print(text)


# ---------------------------------------------------------------------------------------- alarms

def _alarms(ctx, path: str) -> tuple[list, list]:
    """(local, global) alarms as rabbitmq-diagnostics words them, from a health check endpoint."""
    node = _node(ctx)
    r = ctx.api.call("GET", path, allow=(503,))
    local, others = [], []
    if r.status == 503 and isinstance(r.data, dict):
        for a in sorted(r.data.get("alarms") or [], key=lambda a: (str(a.get("node")), str(a.get("resource")))):
            n = a.get("node") or node
            (local if n == node else others).append(alarm_text(str(a.get("resource")), n))
    return local, others


def _error_json(ctx, obj: dict, code: int = EX_UNAVAILABLE):
    """A failed check with --formatter json: the JSON goes to stderr, as rabbitmq-diagnostics's."""
    import json
    raise CtlError(json.dumps(obj, separators=(",", ":"), ensure_ascii=False), code, prefix=False)


@command("check_local_alarms", "monitoring", "Health check that exits with a non-zero code if the target node "
         "reports any local alarms")
def cmd_check_local_alarms(ctx):
    node = _node(ctx)
    ctx.banner(f"Asking node {node} to report any local resource alarms ...")
    local, _ = _alarms(ctx, "/api/health/checks/local-alarms")
    if local:
        if ctx.json:
            _error_json(ctx, {"local": local, "message": f"Node {node} reported local alarms", "result": "error"})
        raise CtlError("\n".join(local), EX_UNAVAILABLE)
    if ctx.json:
        ctx.print_json({"result": "ok"})
    else:
        ctx.print(f"Node {node} reported no local alarms")


@command("check_alarms", "monitoring", "Health check that exits with a non-zero code if the target node reports "
         "any alarms, local or cluster-wide.")
def cmd_check_alarms(ctx):
    node = _node(ctx)
    ctx.banner(f"Asking node {node} to report any local resource alarms ...")
    local, others = _alarms(ctx, "/api/health/checks/alarms")
    if local or others:
        if ctx.json:
            _error_json(ctx, {"global": others, "local": local, "message": f"Node {node} reported alarms",
                              "result": "error"})
        raise CtlError("\n".join(local + others), EX_UNAVAILABLE, prefix=False)
    if ctx.json:
        ctx.print_json({"result": "ok"})
    else:
        ctx.print(f"Node {node} reported no alarms, local or clusterwide")


@command("alarms", "monitoring", "Lists resource alarms (local or cluster-wide) in effect on the target node")
def cmd_alarms(ctx):
    node = _node(ctx)
    ctx.banner(f"Asking node {node} to report any known resource alarms ...")
    local, others = _alarms(ctx, "/api/health/checks/alarms")
    if ctx.json:
        if local or others:
            ctx.print_json({"global": others, "local": local, "message": f"Node {node} reported alarms",
                            "result": "ok"})
        else:
            ctx.print_json({"alarms": [], "node": node, "result": "ok"})
        return
    for line in local + others or [f"Node {node} reported no alarms, local or clusterwide"]:
        ctx.print(line)


# ---------------------------------------------------------------------------------------- listeners

@command("listeners", "monitoring", "Lists active connection listeners (bound interface, port, protocol) on the "
         "target node")
def cmd_listeners(ctx):
    node = _node(ctx)
    ctx.banner(f"Asking node {node} to report its protocol listeners ...")
    ls = listeners(ctx.api)
    if ctx.json:
        ctx.print_json({"listeners": ls, "node": node, "result": "ok"})
        return
    for l in ls:
        ctx.print(listener_line(l))


def _connect_host(ctx, interface: str) -> str:
    ip = interface.strip("[]")
    if ip in ("", "::", "0.0.0.0", "*") or ip.startswith("127.") or ip == "::1":
        return ctx.api.host
    return ip


@command("check_port_connectivity", "monitoring", "Basic TCP connectivity health check for each listener's port "
         "on the target node", "[--timeout <timeout>]")
def cmd_check_port_connectivity(ctx):
    node = _node(ctx)
    ctx.banner(f"Testing TCP connections to all active listeners on node {node} ...")
    ls = listeners(ctx.api)
    per = float(ctx.opts.get("timeout", 30)) / (len(ls) + 1)
    failures = []
    for l in ls:
        try:
            with socket.create_connection((_connect_host(ctx, l["interface"]), int(l["port"])), timeout=per):
                pass
        except (OSError, ValueError):
            failures.append(l)
    if failures:
        if ctx.json:
            _error_json(ctx, {"failures": failures, "node": node, "result": "error"})
        raise CtlError(f"Connection to ports of the following listeners on node {node} failed: \n"
                       + "\n".join(listener_line(l) for l in failures), EX_UNAVAILABLE)
    if ctx.json:
        ctx.print_json({"listeners": ls, "node": node, "result": "ok"})
        return
    ports = ", ".join(str(p) for p in sorted(int(l["port"]) for l in ls))
    ctx.print(f"Successfully connected to ports {ports} on node {node}.")


@command("check_port_listener", "monitoring", "Health check that exits with a non-zero code if target node does "
         "not have an active listener for given port", "<port>", nargs=(1, 1))
def cmd_check_port_listener(ctx):
    node = _node(ctx)
    port = ctx.args[0]
    ctx.banner(f"Asking node {node} if there's an active listener on port {port} ...")
    ls = listeners(ctx.api)
    if any(str(l["port"]) == port for l in ls):
        if ctx.json:
            ctx.print_json({"node": node, "port": int(port) if port.isdigit() else port, "result": "ok"})
        else:
            ctx.print(f"A listener for port {port} is running on node {node}.")
        return
    if ctx.json:
        _error_json(ctx, {"listeners": ls, "missing": port, "ports": [l["port"] for l in ls], "result": "error"})
    ports = ", ".join(str(p) for p in sorted(int(l["port"]) for l in ls))
    raise CtlError(f"No listener for port {port} is active on node {node}. Found listeners that use the "
                   f"following ports: {ports}", EX_UNAVAILABLE, prefix=False)


PROTOCOL_ALIASES = {"amqp091": "amqp", "amqp0.9.1": "amqp", "amqp0-9-1": "amqp", "amqp09": "amqp",
                    "amqps": "amqp/ssl", "management": "http", "prometheus": "http/prometheus"}


@command("check_protocol_listener", "monitoring", "Health check that exits with a non-zero code if target node "
         "does not have an active listener for given protocol", "<protocol>", nargs=(1, 1))
def cmd_check_protocol_listener(ctx):
    node = _node(ctx)
    proto = ctx.args[0]
    ctx.banner(f"Asking node {node} if there's an active listener for protocol {proto} ...")
    ls = listeners(ctx.api)
    want = PROTOCOL_ALIASES.get(proto.lower(), proto.lower())
    if any(l["protocol"] == want for l in ls):
        if ctx.json:
            ctx.print_json({"node": node, "protocol": proto, "result": "ok"})
        else:
            ctx.print(f"A listener for protocol {proto} is running on node {node}.")
        return
    if ctx.json:
        _error_json(ctx, {"listeners": ls, "missing": proto, "protocols": [l["protocol"] for l in ls],
                          "result": "error"})
    protocols = ", ".join(sorted({str(l["protocol"]) for l in ls}))
    raise CtlError(f"No listener for protocol {proto} is active on node {node}. Found listeners for the "
                   f"following protocols: {protocols}", EX_UNAVAILABLE)


# ---------------------------------------------------------------------------------------- vhosts

@command("check_virtual_hosts", "monitoring", "Health check that checks if all vhosts are running in the target "
         "node")
def cmd_check_virtual_hosts(ctx):
    node = _node(ctx)
    ctx.banner(f"Checking if all vhosts are running on node {node} ...")
    r = ctx.api.call("GET", "/api/health/checks/virtual-hosts", allow=(503,))
    down = (r.data or {}).get("virtual-hosts") or [] if r.status == 503 and isinstance(r.data, dict) else []
    if r.status == 503:
        if ctx.json:
            _error_json(ctx, {"down_vhosts": down, "result": "error"})
        raise CtlError(f"Some virtual hosts on node {node} are down:\n" + "\n".join(map(str, down)),
                       EX_UNAVAILABLE)
    if ctx.json:
        ctx.print_json({"result": "ok"})
    elif not ctx.silent:
        ctx.print(f"Node {node} reported all vhosts as running")


# ---------------------------------------------------------------------------------------- memory

UNITS = {"bytes": 1, "b": 1, "kb": 1e3, "kilobytes": 1e3, "mb": 1e6, "megabytes": 1e6, "gb": 1e9,
         "gigabytes": 1e9, "tb": 1e12, "terabytes": 1e12, "kib": 1024, "mib": 1024 ** 2, "gib": 1024 ** 3}


def _breakdown(memory: dict) -> list:
    """[(category, bytes, percentage)] largest first, percentages of the largest total (as
    rabbitmq-diagnostics computes them)."""
    totals = memory.get("total") or {}
    total = max([v for v in totals.values() if isinstance(v, (int, float))] or [0]) if isinstance(totals, dict) \
        else totals
    rows = [(k, v) for k, v in memory.items()
            if k not in ("total", "strategy") and isinstance(v, (int, float)) and not isinstance(v, bool)]
    rows.sort(key=lambda kv: kv[1], reverse=True)
    return [(k, v, round(v / total * 100, 2) if total else 0.0) for k, v in rows]


def _validate_unit(ctx):
    if ctx.opts.get("unit", "gb").lower() not in UNITS:
        raise ValidationError(f"Bad argument: unknown unit {ctx.opts.get('unit')}", EX_DATAERR)


@command("memory_breakdown", "monitoring", "Provides a memory usage breakdown on the target node.",
         "[--unit <unit>] [--timeout <timeout>]", options=("unit",), validate=_validate_unit,
         extra_help=(("--unit <bytes | mb | gb>", "byte multiple (bytes, megabytes, gigabytes) to use"),))
def cmd_memory_breakdown(ctx):
    node = _node(ctx)
    ctx.banner(f"Reporting memory breakdown on node {node}...")
    r = ctx.api.get(f"/api/nodes/{q(node)}/memory")
    memory = (r.data or {}).get("memory") or {}
    rows = _breakdown(memory)
    if ctx.json:
        ctx.print_json({k: {"bytes": v, "percentage": p} for k, v, p in rows})
        return
    unit = ctx.opts.get("unit", "gb").lower()
    div = UNITS[unit]
    for k, v, p in rows:
        amount = str(int(v)) if div == 1 else str(round(v / div, 4))
        ctx.print(f"{k}: {amount} {unit} ({p}%)")


# ---------------------------------------------------------------------------------------- log

@command("log_tail", "monitoring", "Prints the last N lines of the log on the node", "[--number|-N <number>]",
         options=("number",), shorts={"N": "number"}, app=None,
         extra_help=(("<number>", "number of lines to print. Defaults to 50"),))
def cmd_log_tail(ctx):
    try:
        n = int(ctx.opts.get("number", 50))
        if n < 0:
            raise ValueError
    except ValueError:
        raise ValidationError(f"Bad argument: --number must be a non-negative integer, got "
                              f"{ctx.opts.get('number')!r}", EX_DATAERR) from None
    node = _node(ctx)
    ctx.banner(f"Last {n} log lines on node {node} ...")
    data = ctl._usagi(ctx, "GET", f"log_tail?lines={n}", what="log_tail").data or {}
    if not data.get("file"):
        where = ", ".join(data.get("locations") or []) or "standard error"
        raise CtlError(f"No log files configured on the node (it logs to {where} only)", EX_SOFTWARE)
    lines = data.get("lines") or []
    if ctx.json:
        import json
        ctx.out.write("[\n" + "".join(("," if i else "") + json.dumps({"message": line}, separators=(",", ":"), ensure_ascii=False)
                                      + "\n" for i, line in enumerate(lines)) + "]\n")
        return
    for line in lines:
        ctx.print(line)


@command("log_location", "configuration", "Shows log file location(s) on target node", "[--all|-a]",
         options=("all",), shorts={"a": "all"}, app=None)
def cmd_log_location(ctx):
    node = _node(ctx)
    ctx.banner(f"Log file location(s) on node {node} ...")
    files = [f for f in ctx.api.node_info().get("log_files") or [] if not str(f).startswith("<")]
    if not files:
        raise CtlError("No log files configured on the node", EX_SOFTWARE)
    paths = files if "all" in ctx.opts else files[:1]
    if ctx.json:
        ctx.print_json({"node_name": node, "paths": paths, "result": "ok"})
        return
    for p in paths:
        ctx.print(p)


# ---------------------------------------------------------------------------------------- versions

@command("server_version", "monitoring", "Displays server version on the target node", app=None)
def cmd_server_version(ctx):
    node = _node(ctx)
    ctx.banner(f"Asking node {node} for its RabbitMQ version...")
    ov = ctx.api.overview()
    v = ov.get("rabbitmq_version", "")
    if ctx.json:
        ctx.print_json(v)
        return
    ctx.print(str(v))


@command("erlang_version", "monitoring", "Displays Erlang/OTP version on the target node", app=None)
def cmd_erlang_version(ctx):
    """A Usagi node runs on Python: its runtime is named as the node reports it."""
    node = _node(ctx)
    ctx.banner(f"Asking node {node} for its Erlang/OTP version...")
    ov = ctx.api.overview()
    if ov.get("usagi_version"):
        ctx.print(str(ov.get("erlang_full_version") or ov.get("erlang_version", "")))
    else:
        ctx.print(f"Erlang/OTP {ov.get('erlang_version', '')}")


def run(argv: list[str], out=None, err=None) -> int:
    return TOOL.run(argv, out, err)


def main(argv=None) -> int:
    return TOOL.main(argv)


if __name__ == "__main__":
    sys.exit(main())
