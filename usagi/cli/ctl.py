"""usagictl: a rabbitmqctl-compatible command-line tool for Usagi (and RabbitMQ).

usagictl is a thin client of the RabbitMQ-compatible management HTTP API. It takes
rabbitmqctl's command names, options and positional arguments, and prints what
rabbitmqctl 3.10 prints (banners, tab-separated tables, ``--formatter json``), with the
same exit codes (64 usage, 65 data error, 67 no such user, 69 unavailable, 70 software
error, 75 timeout).

Where the broker is: ``--url URL``, else the environment variable ``USAGI_URL``, else
``http://guest:guest@localhost:15672``. The URL's user and password are sent with HTTP
basic authentication; a path after the port is kept as a prefix (for a proxy).
``-n/--node`` and ``-l/--longnames`` are accepted and ignored: the node is the one behind
the URL, and banners name the node that ``GET /api/overview`` reports.

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

Usagi-specific endpoints (RabbitMQ's management API has no equivalent; rabbitmqctl does
these over Erlang distribution). Each takes an empty POST body and answers 204 (or 200)
once the action has been accepted:

  POST /api/usagi/stop        stop: stop the broker and exit the server process
                              (rabbitmqctl stop). usagictl then waits, up to --timeout,
                              until the API stops answering.
  POST /api/usagi/stop_app    stop_app: stop the AMQP side (close client connections and
                              listeners) but keep the process and the management API up.
                              While stopped, GET /api/nodes/{node} reports "running": false.
  POST /api/usagi/start_app   start_app: start the AMQP side again.

await_startup polls GET /api/nodes/{node} until it answers with "running": true.
Against a broker without these endpoints (RabbitMQ), stop/stop_app/start_app fail with
exit code 69 and a message that says so.

Other differences from rabbitmqctl, all forced by the HTTP API: connection and channel
"pid" columns show the connection/channel name that the API uses (and close_connection
takes that name); ``close_connection`` on an unknown name succeeds as rabbitmqctl does for
an unknown pid.
"""
from __future__ import annotations

import base64
import html
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

PROG = "usagictl"
DEFAULT_URL = "http://guest:guest@localhost:15672"

EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_NOUSER = 67
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_TEMPFAIL = 75


# --------------------------------------------------------------------------- errors

class CtlError(Exception):
    """A command failed: printed to stderr as rabbitmqctl does ("Error:" then the reason)."""

    def __init__(self, message: str, code: int = EX_SOFTWARE, prefix: bool = True):
        super().__init__(message)
        self.message = message
        self.code = code
        self.prefix = prefix


class ValidationError(Exception):
    """Bad arguments: "Error (argument validation): ..." plus the command's usage."""

    def __init__(self, message: str, code: int = EX_USAGE):
        super().__init__(message)
        self.message = message
        self.code = code


class Unreachable(Exception):
    pass


class TimedOut(Exception):
    pass


# --------------------------------------------------------------------------- HTTP client

class Response:
    def __init__(self, status: int, body: bytes):
        self.status = status
        self.body = body
        try:
            self.data = json.loads(body.decode("utf-8")) if body else None
        except (ValueError, UnicodeDecodeError):
            self.data = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def reason(self) -> str:
        d = self.data
        if isinstance(d, dict):
            r = d.get("reason", d.get("error"))
            if isinstance(r, list):
                r = "{" + ", ".join(_erl_term(x) for x in r) + "}"
            if r is not None:
                return html.unescape(str(r))
        text = self.body.decode("utf-8", "replace").strip()
        return text or f"HTTP {self.status}"


def _erl_term(x) -> str:
    return f'"{x}"' if isinstance(x, str) and not x.isidentifier() else str(x)


class Api:
    def __init__(self, url: str, timeout: float):
        parts = urllib.parse.urlsplit(url if "://" in url else "http://" + url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValidationError(f"Bad argument: invalid management URL {url!r}", EX_USAGE)
        self.user = urllib.parse.unquote(parts.username) if parts.username is not None else "guest"
        self.password = urllib.parse.unquote(parts.password) if parts.password is not None else "guest"
        host = parts.hostname
        if ":" in host:
            host = f"[{host}]"
        netloc = host + (f":{parts.port}" if parts.port else "")
        self.base = f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}"
        self.display = f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}/"
        self.timeout = timeout
        self._overview = None

    def request(self, method: str, path: str, body=None, headers: dict | None = None,
                auth: tuple[str, str] | None = None, timeout: float | None = None) -> Response:
        data = None
        hdrs = {}
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
            hdrs["Content-Type"] = "application/json"
        elif method in ("POST", "PUT"):
            data = b""
        user, password = auth or (self.user, self.password)
        token = base64.b64encode(f"{user}:{password}".encode("utf-8")).decode("ascii")
        hdrs["Authorization"] = "Basic " + token
        if headers:
            hdrs.update(headers)
        req = urllib.request.Request(self.base + path, data=data, headers=hdrs, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as resp:
                return Response(resp.status, resp.read())
        except urllib.error.HTTPError as e:
            try:
                payload = e.read()
            except Exception:
                payload = b""
            return Response(e.code, payload)
        except TimeoutError as e:
            raise TimedOut(str(e)) from None
        except urllib.error.URLError as e:
            if isinstance(e.reason, TimeoutError) or "timed out" in str(e.reason):
                raise TimedOut(str(e.reason)) from None
            raise Unreachable(str(e.reason)) from None
        except (ConnectionError, OSError) as e:
            raise Unreachable(str(e)) from None

    def call(self, method: str, path: str, body=None, allow=(), **kw) -> Response:
        """Like request(), but authentication failures and unexpected errors raise CtlError."""
        r = self.request(method, path, body, **kw)
        if r.ok or r.status in allow:
            return r
        if r.status in (401, 403) and "auth" not in kw:
            hint = ("check the user name and password in --url or USAGI_URL" if r.status == 401
                    and "login failed" in r.reason.lower() else
                    "this command needs a user with the administrator tag")
            raise CtlError(f"Error: the management API at {self.display} refused user "
                           f"'{self.user}' ({r.status}: {r.reason}): {hint}.",
                           EX_UNAVAILABLE, prefix=False)
        raise CtlError(r.reason, EX_SOFTWARE)

    def get(self, path: str, allow=()) -> Response:
        return self.call("GET", path, allow=allow)

    def overview(self) -> dict:
        if self._overview is None:
            self._overview = self.get("/api/overview").data or {}
        return self._overview

    def node(self) -> str:
        return str(self.overview().get("node") or "rabbit@localhost")


def q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


# --------------------------------------------------------------------------- value formatting

def _inner(v) -> str:
    """A value inside a list or argument table, as rabbitmqctl's table formatter shows it."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "undefined"
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, dict):
        return "[" + ",".join(f"{{{json.dumps(k, ensure_ascii=False)},{_inner(x)}}}" for k, x in v.items()) + "]"
    if isinstance(v, list):
        return "[" + ",".join(_inner(x) for x in v) + "]"
    return str(v)


def table_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    if isinstance(v, dict):
        return "[" + ",".join(f"{{{json.dumps(k, ensure_ascii=False)},{_inner(x)}}}" for k, x in v.items()) + "]"
    if isinstance(v, list):
        return "[" + ", ".join(x if isinstance(x, str) else _inner(x) for x in v) + "]"
    return str(v)


def _amqp_type(v) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "signedint" if -2 ** 31 <= v < 2 ** 31 else "long"
    if isinstance(v, float):
        return "double"
    if isinstance(v, dict):
        return "table"
    if isinstance(v, list):
        return "array"
    if v is None:
        return "void"
    return "longstr"


def json_arguments(d) -> list:
    if not isinstance(d, dict):
        return d if d is not None else []
    return [[k, _amqp_type(v), json_arguments(v) if isinstance(v, dict) else v] for k, v in d.items()]


def json_host(v):
    if isinstance(v, str) and v.count(".") == 3 and all(p.isdigit() for p in v.split(".")):
        return [int(p) for p in v.split(".")]
    return v


def json_value(key: str, v):
    if key in ("arguments", "client_properties"):
        return json_arguments(v)
    if key in ("peer_host", "host"):
        return json_host(v)
    return v


def compact(obj) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


# --------------------------------------------------------------------------- commands

SECTIONS = [
    ("help", "Help"), ("nodes", "Nodes"), ("cluster", "Cluster"), ("users", "Users"),
    ("access", "Access Control"),
    ("monitoring", "Monitoring, observability and health checks"), ("policies", "Policies"),
    ("vhosts", "Virtual hosts"), ("definitions", "Definitions"), ("operations", "Operations"),
    ("queues", "Queues"),
]

COMMON = "[--node <node>] [--longnames] [--quiet]"

# Options every command accepts (rabbitmqctl's general options and usagictl's --url).
GLOBAL_OPTS = {"node", "quiet", "silent", "timeout", "longnames", "formatter", "vhost", "url",
               "help", "no-table-headers", "erlang-cookie"}
# Options that take a value (whatever the command).
VALUE_OPTS = {"node", "timeout", "formatter", "vhost", "url", "description", "tags",
              "default-queue-type", "priority", "apply-to", "format", "limit",
              "per-connection-delay", "user", "unit", "erlang-cookie"}
SHORT = {"n": "node", "q": "quiet", "s": "silent", "t": "timeout", "l": "longnames", "p": "vhost",
         "?": "help"}
# Short options that exist only for some commands.
CMD_SHORT = {"delete_queue": {"e": "if-empty", "u": "if-unused"}}


class Command:
    def __init__(self, name, section, descr, usage, nargs, handler, options=(), columns=None,
                 default_columns=None, help_args=()):
        self.name = name
        self.section = section
        self.descr = descr
        self.usage_tail = usage
        self.min_args, self.max_args = nargs
        self.handler = handler
        self.options = set(options)
        self.columns = columns
        self.default_columns = default_columns
        self.help_args = help_args

    @property
    def usage(self) -> str:
        return f"{PROG} {COMMON} {self.name}" + (f" {self.usage_tail}" if self.usage_tail else "")


COMMANDS: dict[str, Command] = {}


def command(name, section, descr, usage="", nargs=(0, 0), options=(), columns=None,
            default_columns=None, help_args=()):
    def deco(fn):
        COMMANDS[name] = Command(name, section, descr, usage, nargs, fn, options, columns,
                                 default_columns, help_args)
        return fn
    return deco


class Ctx:
    """What a command handler gets: parsed options, the API client and output helpers."""

    def __init__(self, cmd: Command, args: list[str], opts: dict, api: Api, out, err):
        self.cmd = cmd
        self.args = args
        self.opts = opts
        self.api = api
        self.out = out
        self.err = err
        self.formatter = opts.get("formatter", "table")
        self.silent = "silent" in opts
        self.quiet = "quiet" in opts or self.silent or self.formatter == "json"
        self.headers = not (self.silent or "no-table-headers" in opts)

    @property
    def vhost(self) -> str:
        return self.opts.get("vhost", "/")

    def banner(self, text: str):
        if not self.quiet:
            self.out.write(text + "\n")

    def print(self, text: str = ""):
        self.out.write(text + "\n")

    def table(self, columns: list[str], rows: list[dict], empty_line: bool = False,
              empty_json: str = "[\n]"):
        """rows are dicts keyed by column, values as the API gives them."""
        if self.formatter == "json":
            if not rows:
                self.out.write(empty_json + "\n")
                return
            self.out.write("[\n")
            for i, r in enumerate(rows):
                obj = {c: json_value(c, r.get(c)) for c in columns}
                self.out.write(("," if i else "") + json.dumps(obj, separators=(",", ":"),
                                                               ensure_ascii=False) + "\n")
            self.out.write("]\n")
            return
        sep = "," if self.formatter == "csv" else "\t"
        if not rows:
            if empty_line:
                self.out.write("\n")
            return
        if self.headers:
            self.out.write(sep.join(columns) + "\n")
        for r in rows:
            self.out.write(sep.join(table_value(r.get(c)) for c in columns) + "\n")


def select_columns(ctx: Ctx) -> list[str]:
    cmd = ctx.cmd
    if not ctx.args:
        return list(cmd.default_columns)
    cols = []
    for a in ctx.args:
        cols.extend(c.strip() for c in a.split(",") if c.strip())
    bad = [c for c in cols if c not in cmd.columns]
    if bad:
        raise ValidationError(f"Info key(s) {','.join(bad)} are not supported")
    return cols


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

@command("version", "help", "Displays CLI tools version")
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
    listeners = ov.get("listeners") or []
    alarms = []
    if n.get("mem_alarm"):
        alarms.append("memory")
    if n.get("disk_free_alarm"):
        alarms.append("free disk space")
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
            "log_files": n.get("log_files") or [], "alarms": alarms,
            "memory": {"total": {"rss": n.get("mem_used")}},
            "vm_memory_calculation_strategy": n.get("mem_calculation_strategy"),
            "vm_memory_high_watermark_limit": n.get("mem_limit"),
            "file_descriptors": {"total_used": n.get("fd_used"), "total_limit": n.get("fd_total"),
                                 "sockets_used": n.get("sockets_used"),
                                 "sockets_limit": n.get("sockets_total")},
            "disk_free_limit": n.get("disk_free_limit"), "disk_free": n.get("disk_free"),
            "totals": {"connection_count": totals.get("connections"),
                       "queue_count": totals.get("queues"), "virtual_host_count": len(vhosts)},
            "listeners": [{"interface": l.get("ip_address"), "node": l.get("node"),
                           "port": l.get("port"), "protocol": l.get("protocol"),
                           "purpose": _purpose(l.get("protocol"))} for l in listeners],
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
    lines += [f" * {a}" for a in alarms] or ["(none)"]
    mem_used = n.get("mem_used") or 0
    mem_limit = n.get("mem_limit") or 0
    lines += ["", "Memory", "",
              f"Total memory used: {_units(mem_used, div)} {unit}",
              f"Calculation strategy: {n.get('mem_calculation_strategy', '')}",
              f"Memory high watermark setting: computed to: {_units(mem_limit, div)} {unit}",
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
    for l in listeners:
        lines.append(f"Interface: {l.get('ip_address')}, port: {l.get('port')}, protocol: "
                     f"{l.get('protocol')}, purpose: {_purpose(l.get('protocol'))}")
    for line in lines:
        ctx.print(bold(line) if line in _STATUS_HEADINGS else line)


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
    listeners = ov.get("listeners") or []
    if ctx.formatter == "json":
        obj = {"cluster_name": c.get("cluster_name"), "disk_nodes": names, "ram_nodes": [],
               "running_nodes": running,
               "versions": {n["name"]: {"rabbitmq_version": ov.get("rabbitmq_version"),
                                        "usagi_version": n.get("version")} for n in c.get("nodes", [])},
               "maintenance_status": {n: "not under maintenance" for n in names},
               "alarms": alarms, "partitions": {},
               "listeners": {l.get("node"): [] for l in listeners},
               "leader": c.get("leader"), "epoch": c.get("epoch"), "in_sync": c.get("isr"),
               "nodes": c.get("nodes")}
        for l in listeners:
            obj["listeners"].setdefault(l.get("node"), []).append(
                {"interface": l.get("ip_address"), "port": l.get("port"), "protocol": l.get("protocol"),
                 "purpose": _purpose(l.get("protocol"))})
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
    for l in listeners:
        lines.append(f"Node: {l.get('node')}, interface: {l.get('ip_address')}, port: {l.get('port')}, "
                     f"protocol: {l.get('protocol')}, purpose: {_purpose(l.get('protocol'))}")
    if c.get("leader"):
        lines += ["", "Leader and replication", ""]
        for n in c.get("nodes", []):
            lag = n.get("lag")
            lines.append(f"Node: {n['name']}, role: {n.get('role')}, in sync: "
                         f"{'true' if n.get('in_sync') else 'false'}, epoch: {c.get('epoch')}, lag: "
                         f"{'unknown' if lag is None else lag}")
    for line in lines:
        ctx.print(bold(line) if line in _CLUSTER_HEADINGS else line)


_CLUSTER_HEADINGS = {"Basics", "Disk Nodes", "Running Nodes", "Versions", "Maintenance status", "Alarms",
                     "Network Partitions", "Listeners", "Leader and replication"}


_STATUS_HEADINGS = {"Runtime", "Plugins", "Data directory", "Config files", "Log file(s)", "Alarms",
                    "Memory", "File Descriptors", "Free Disk Space", "Totals", "Listeners"}


def _purpose(proto) -> str:
    return {"amqp": "AMQP 0-9-1 and AMQP 1.0", "amqp/ssl": "AMQP 0-9-1 and AMQP 1.0 over TLS",
            "http": "HTTP API", "https": "HTTP API over TLS",
            "clustering": "inter-node and CLI tool communication",
            "http/prometheus": "Prometheus exporter API over HTTP"}.get(proto or "", proto or "")


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
         options=("idempotent",))
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


@command("stop_app", "nodes", "Stops the RabbitMQ application, leaving the runtime (Erlang VM) running")
def cmd_stop_app(ctx):
    ctx.banner(f"Stopping rabbit application on node {ctx.api.node()} ...")
    _usagi_post(ctx, "stop_app")


@command("start_app", "nodes", "Starts the RabbitMQ application but leaves the runtime (Erlang VM) running")
def cmd_start_app(ctx):
    ctx.banner(f"Starting node {ctx.api.node()} ...")
    _usagi_post(ctx, "start_app")


@command("await_startup", "nodes", "Waits for the RabbitMQ application to start on the target node",
         "[--timeout <timeout>]")
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
         "tools can authenticate with it", "[--timeout <timeout>]")
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
    ctx.print("Ping succeeded")


# ---- users

@command("add_user", "users", "Creates a new user in the internal database. This user will have no "
         "permissions for any virtual hosts by default.", "<username> <password>", nargs=(2, 2))
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
    row.setdefault("leader", qd.get("leader", node))
    row.setdefault("members", qd.get("members", [node] if node else []))
    row.setdefault("online", qd.get("online", [node] if node else []))
    row.setdefault("slave_pids", "")
    row.setdefault("synchronised_slave_pids", "")
    if row.get("policy") is None:
        row["policy"] = ""
    bs = qd.get("backing_queue_status") or {}
    row.setdefault("disk_reads", bs.get("disk_reads", 0))
    row.setdefault("disk_writes", bs.get("disk_writes", 0))
    return row


@command("list_queues", "monitoring", "Lists queues and their properties",
         "[--vhost <vhost>] [--online] [--offline] [--local] [--no-table-headers] [<column>, ...] "
         "[--timeout <timeout>]", nargs=(0, None), options=("online", "offline", "local"),
         columns=QUEUE_COLUMNS, default_columns=["name", "messages"])
def cmd_list_queues(ctx):
    cols = select_columns(ctx)
    vhost = ctx.vhost
    ctx.banner(f"Timeout: {float(ctx.opts.get('timeout', 60))} seconds ...")
    ctx.banner(f"Listing queues for vhost {vhost} ...")
    r = ctx.api.get(f"/api/queues/{q(vhost)}", allow=(404,))
    queues = (r.data or []) if r.ok else []
    if "offline" in ctx.opts and "online" not in ctx.opts:
        queues = [x for x in queues if x.get("state") == "down"]
    elif "online" in ctx.opts and "offline" not in ctx.opts:
        queues = [x for x in queues if x.get("state") != "down"]
    ctx.table(cols, [_queue_row(x) for x in queues])


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
         options=("if-empty", "if-unused"))
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
    rows = []
    for p in (r.data or []) if r.ok else []:
        row = dict(p)
        row["definition"] = json.dumps(p.get("definition") or {}, separators=(",", ":"),
                                       ensure_ascii=False)
        rows.append(row)
    ctx.table(["vhost", "name", "pattern", "apply-to", "definition", "priority"], rows,
              empty_line=True, empty_json="[]")


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


# ---- help

@command("help", "help", "Displays usage information for a command",
         "(<command> | [--list-commands])", nargs=(0, 1), options=("list-commands",))
def cmd_help(ctx):
    if "list-commands" in ctx.opts:
        for name in sorted(COMMANDS):
            ctx.print(name)
        return
    if not ctx.args:
        ctx.out.write(general_usage())
        return
    name = ctx.args[0]
    c = COMMANDS.get(name)
    if c is None:
        raise CtlError(f"\nCommand '{name}' not found.", EX_USAGE)
    ctx.out.write(command_help(c))


# --------------------------------------------------------------------------- usage text

def _color() -> bool:
    return sys.stderr.isatty() and not os.environ.get("NO_COLOR")


def bold(s: str) -> str:
    return f"\033[1m{s}\033[0m" if _color() else s


def general_usage() -> str:
    lines = ["", bold("Usage"), "",
             f"{PROG} [--url <url>] [--node <node>] [--timeout <timeout>] [--longnames] [--quiet] "
             "<command> [<command options>]", "",
             "Available commands:", ""]
    for key, title in SECTIONS:
        cmds = sorted((c for c in COMMANDS.values() if c.section == key), key=lambda c: c.name)
        if not cmds:
            continue
        lines.append(bold(title) + ":")
        lines.append("")
        for c in cmds:
            lines.append(f"   {c.name:<29} {c.descr}")
        lines.append("")
    lines.append(f"Use '{PROG} help <command>' to learn more about a specific command")
    lines.append("")
    return "\n".join(lines)


GENERAL_OPTIONS = """The following options are accepted by most or all commands.

short            | long          | description
-----------------|---------------|--------------------------------
-?               | --help        | displays command help
                 | --url <url>   | management API URL, with credentials
                 |               | (default: $USAGI_URL or http://guest:guest@localhost:15672)
-n <node>        | --node <node> | accepted and ignored (the node is the one behind --url)
-l               | --longnames   | accepted and ignored
-t               | --timeout <n> | for commands that support it, operation timeout in seconds
-q               | --quiet       | suppress informational messages
-s               | --silent      | suppress informational messages
                                 | and table header row
-p               | --vhost       | for commands that are scoped to a virtual host,
                 |               | virtual host to use
                 | --formatter   | alternative result formatter to use
                                 | if supported: json, table, csv
"""


def command_help(c: Command) -> str:
    parts = ["", bold("Usage"), "", c.usage, "", c.descr + ".", ""]
    if c.columns:
        parts += ["", bold("Arguments and Options"), "", "<column>",
                  "\tmust be one of " + ", ".join(c.columns), ""]
    parts += ["", bold("General Options"), "", GENERAL_OPTIONS]
    return "\n".join(parts)


# --------------------------------------------------------------------------- argument parsing

class ParsedArgs:
    def __init__(self):
        self.opts: dict[str, str | bool] = {}
        self.positional: list[str] = []
        self.bad_options: list[str] = []   # options given without their value
        self.shorts: dict[str, str] = {}   # command-specific short flags, resolved later


def parse_argv(argv: list[str]) -> ParsedArgs:
    p = ParsedArgs()
    i = 0
    while i < len(argv):
        a = argv[i]
        i += 1
        if a == "--":
            p.positional.extend(argv[i:])
            break
        if a.startswith("--") and len(a) > 2:
            name, eq, val = a[2:].partition("=")
            if name in VALUE_OPTS:
                if eq:
                    p.opts[name] = val
                elif i < len(argv):
                    p.opts[name] = argv[i]
                    i += 1
                else:
                    p.bad_options.append(a)
            else:
                p.opts[name] = val if eq else True
            continue
        if a.startswith("-") and len(a) >= 2 and not a[1].isdigit():
            letter, rest = a[1], a[2:]
            if letter in SHORT:
                name = SHORT[letter]
                if name in VALUE_OPTS:
                    if rest:
                        p.opts[name] = rest
                    elif i < len(argv):
                        p.opts[name] = argv[i]
                        i += 1
                    else:
                        p.bad_options.append(a)
                else:
                    p.opts[name] = True
                    for extra in rest:           # -qs
                        if extra in SHORT and SHORT[extra] not in VALUE_OPTS:
                            p.opts[SHORT[extra]] = True
                        else:
                            p.shorts[a] = a
                continue
            p.shorts[a] = a
            continue
        p.positional.append(a)
    return p


def _validation(err, argv, message, cmd: Command | None, code=EX_USAGE) -> int:
    err.write(f"Error (argument validation): {message}\nArguments given:\n\t{' '.join(argv)}\n")
    if cmd is not None:
        err.write(f"\n{bold('Usage')}\n\n{cmd.usage}\n")
    return code


def run(argv: list[str], out=None, err=None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    p = parse_argv(argv)
    if not p.positional:
        if "help" in p.opts:
            out.write(general_usage())
            return EX_OK
        err.write(general_usage())
        return EX_USAGE
    name, args = p.positional[0], p.positional[1:]
    cmd = COMMANDS.get(name)
    if cmd is None:
        err.write(f"\nCommand '{name}' not found. \n")
        err.write(general_usage())
        return EX_USAGE
    if "help" in p.opts:
        out.write(command_help(cmd))
        return EX_OK
    # Command-specific short options (-e/-u for delete_queue).
    invalid = list(p.bad_options)
    for s in p.shorts:
        mapped = CMD_SHORT.get(name, {}).get(s[1:]) if len(s) == 2 else None
        if mapped:
            p.opts[mapped] = True
        else:
            invalid.append(s)
    for o in p.opts:
        if o not in GLOBAL_OPTS and o not in cmd.options:
            invalid.append("--" + o)
    if invalid:
        return _validation(err, argv, "Invalid options for this command:\n"
                           + "".join(f"{o} : \n" for o in invalid).rstrip("\n"), cmd)
    if len(args) < cmd.min_args:
        return _validation(err, argv, "not enough arguments.", cmd)
    if cmd.max_args is not None and len(args) > cmd.max_args:
        return _validation(err, argv, "too many arguments.", cmd)
    fmt = p.opts.get("formatter", "table")
    if fmt not in ("table", "json", "csv", "pretty_table", "erlang"):
        return _validation(err, argv, f"Bad argument: unsupported formatter {fmt!r}", cmd)
    try:
        timeout = float(p.opts.get("timeout", 60))
        if timeout <= 0:
            raise ValueError
    except ValueError:
        return _validation(err, argv, "Bad argument: --timeout must be a positive number", cmd)
    url = p.opts.get("url") if isinstance(p.opts.get("url"), str) else None
    url = url or os.environ.get("USAGI_URL") or DEFAULT_URL
    try:
        api = Api(url, timeout)
        ctx = Ctx(cmd, args, p.opts, api, out, err)
        cmd.handler(ctx)
        out.flush()
        return EX_OK
    except ValidationError as e:
        out.flush()
        return _validation(err, argv, e.message, cmd, e.code)
    except CtlError as e:
        out.flush()
        err.write(("Error:\n" if e.prefix else "") + e.message + "\n")
        return e.code
    except Unreachable as e:
        out.flush()
        err.write(f"Error: unable to perform an operation on the management API at {api.display} "
                  f"({e}).\n\nMost common reasons for this are:\n\n"
                  f" * The broker is not running\n"
                  f" * Its management listener is disabled or on another port or host: point "
                  f"--url or USAGI_URL at it (now {api.display})\n")
        return EX_UNAVAILABLE
    except TimedOut:
        out.flush()
        err.write(f"Error: operation {name} on node behind {api.display} timed out. "
                  f"Timeout value used: {int(timeout * 1000)}\n")
        return EX_TEMPFAIL
    except BrokenPipeError:
        return EX_OK


def main(argv=None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    try:
        return run(list(argv))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
