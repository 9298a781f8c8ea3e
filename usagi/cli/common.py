"""What usagictl and usagi-diagnostics share: RabbitMQ's CLI conventions over the management API.

Both tools are thin clients of the RabbitMQ-compatible management HTTP API that take the command
names, options and positional arguments of rabbitmqctl and rabbitmq-diagnostics and print what those
print (banners, tab-separated tables, ``--formatter json``), with the same exit codes (64 usage,
65 data error, 67 no such user, 69 unavailable, 70 software error, 75 timeout). Keeping the HTTP
client, the option parser, the formatters, the help texts and the checks every command makes in one
place keeps the two tools alike; each tool module only registers its commands on its `Tool`.

Where the broker is: ``--url URL``, else the environment variable ``USAGI_URL``, else
``http://guest:guest@localhost:15672``. The URL's user and password are sent with HTTP basic
authentication; a path after the port is kept as a prefix (for a proxy). ``-n/--node`` and
``-l/--longnames`` are accepted and ignored: the node is the one behind the URL.

The rabbit app: like rabbitmqctl, a command that needs the node's AMQP side running (every listing,
every change) first asks the node (GET /api/nodes) and refuses with exit code 64 and rabbitmqctl's
text while it is stopped (`usagictl stop_app`); reset and force_reset need it stopped. A management
API that does not say (a user without the monitoring tag) is taken at its word when the command runs.
"""
from __future__ import annotations

import base64
import codecs
import html
import itertools
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request

DEFAULT_URL = "http://guest:guest@localhost:15672"
CTL = "usagictl"               # the tool that starts and stops the app (named in messages)

EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_NOUSER = 67
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_TEMPFAIL = 75

# what a command needs of the node's rabbit app (Command.app)
RUNNING = "running"
STOPPED = "stopped"


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


def _network_error(e: OSError) -> Exception:
    """TimedOut or Unreachable for what urllib raised on the way to the API (HTTP errors aside)."""
    if isinstance(e, urllib.error.URLError):
        if isinstance(e.reason, TimeoutError) or "timed out" in str(e.reason):
            return TimedOut(str(e.reason))
        return Unreachable(str(e.reason))
    if isinstance(e, TimeoutError):
        return TimedOut(str(e))
    return Unreachable(str(e))


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
                r = _elixir_term(r)
            if r is not None:
                return html.unescape(str(r))
        text = self.body.decode("utf-8", "replace").strip()
        return text or f"HTTP {self.status}"


def _elixir_term(x) -> str:
    """An Erlang term from a JSON reason (["invalid_regexp", "(", [[109, ...], 1]]) as rabbitmqctl
    prints it ({:invalid_regexp, "(", {'missing )', 1}}): lists as tuples, lists of character codes
    as charlists, words as atoms. Bounded by the reason's size."""
    if isinstance(x, str):
        return ":" + x if x.isidentifier() else json.dumps(x, ensure_ascii=False)
    if isinstance(x, list):
        if x and all(isinstance(c, int) and not isinstance(c, bool) and 32 <= c < 0x110000 for c in x):
            return "'" + "".join(map(chr, x)) + "'"
        return "{" + ", ".join(_elixir_term(e) for e in x) + "}"
    return json.dumps(x) if x is None or isinstance(x, bool) else str(x)


class Api:
    def __init__(self, url: str, timeout: float):
        parts = urllib.parse.urlsplit(url if "://" in url else "http://" + url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValidationError(f"Bad argument: invalid management URL {url!r}", EX_USAGE)
        self.user = urllib.parse.unquote(parts.username) if parts.username is not None else "guest"
        self.password = urllib.parse.unquote(parts.password) if parts.password is not None else "guest"
        self.host = parts.hostname
        host = parts.hostname
        if ":" in host:
            host = f"[{host}]"
        netloc = host + (f":{parts.port}" if parts.port else "")
        self.base = f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}"
        self.display = f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}/"
        self.timeout = timeout
        self._overview = None
        self._node_name = None

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
        except OSError as e:        # timeouts, refused or reset connections, names not found
            raise _network_error(e) from None

    def stream_list(self, path: str, allow=()):
        """The items of a JSON array listing (GET `path`), decoded one at a time as the reply
        arrives, so that memory holds one item and a chunk whatever the listing's length. A status
        in `allow` lists nothing; other errors raise as call() raises them."""
        token = base64.b64encode(f"{self.user}:{self.password}".encode("utf-8")).decode("ascii")
        req = urllib.request.Request(self.base + path, headers={"Authorization": "Basic " + token})
        try:
            resp = urllib.request.urlopen(req, timeout=self.timeout)
        except urllib.error.HTTPError as e:
            e.close()
            self.call("GET", path, allow=allow)      # the error as call() reports it (or an allowed status)
            return
        except OSError as e:        # timeouts, refused or reset connections, names not found
            raise _network_error(e) from None
        try:
            with resp:
                yield from json_array_items(resp.read1 if hasattr(resp, "read1") else resp.read)
        except TimeoutError as e:
            raise TimedOut(str(e)) from None
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
        if self._node_name:
            return self._node_name
        return str(self.overview().get("node") or "rabbit@localhost")

    def node_info(self) -> dict:
        """GET /api/nodes/{node} (an empty dict where the API will not say)."""
        r = self.request("GET", f"/api/nodes/{q(self.node())}")
        return r.data if r.ok and isinstance(r.data, dict) else {}

    def app_running(self) -> bool | None:
        """Whether the node's rabbit app runs (False after stop_app), from GET /api/nodes: its one
        node, or in a cluster the one the overview names; None when the API does not say."""
        r = self.request("GET", "/api/nodes")
        if not r.ok or not isinstance(r.data, list) or not r.data:
            return None
        nodes = [n for n in r.data if isinstance(n, dict)]
        if len(nodes) == 1:
            me = nodes[0]
        else:
            name = self.node()
            me = next((n for n in nodes if n.get("name") == name), None)
            if me is None:
                return None
        if me.get("name"):
            self._node_name = str(me["name"])
        return bool(me.get("running", True))


def q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


STREAM_CHUNK = 64 * 1024
_JSON = json.JSONDecoder()


def json_array_items(read):
    """The items of a JSON array read with `read(n)` (bytes), one at a time: an item is decoded
    once the bytes that hold it have arrived; what was decoded is dropped. The cost per item is
    bounded by its size times the chunks it spans. ValueError for what is not a JSON array."""
    text = codecs.getincrementaldecoder("utf-8")()
    buf, pos, eof, started, need = "", 0, False, False, False

    def more() -> bool:
        nonlocal buf, pos, eof
        if eof:
            return False
        data = read(STREAM_CHUNK)
        buf = buf[pos:] + text.decode(data or b"", final=not data)
        pos = 0
        eof = not data
        return True

    while True:
        while pos < len(buf) and buf[pos] in " \t\r\n":
            pos += 1
        if need or pos >= len(buf):
            need = False
            if not more():
                raise ValueError("the listing ended before its closing ]")
            continue
        c = buf[pos]
        if not started:
            if c != "[":
                raise ValueError("the reply is not a JSON array")
            started, pos = True, pos + 1
            continue
        if c == "]":
            return
        if c == ",":
            pos += 1
            continue
        try:
            item, end = _JSON.raw_decode(buf, pos)
        except json.JSONDecodeError:
            if eof:
                raise ValueError("the listing holds malformed JSON") from None
            need = True                      # the item's end has not arrived yet
            continue
        if isinstance(item, (int, float)) and not isinstance(item, bool) and not eof and \
                (end >= len(buf) or buf[end] not in ",] \t\r\n"):
            need = True                      # a number may go on in the next chunk ("2" of "2.5")
            continue
        pos = end
        yield item


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


# the words of a node's environment that RabbitMQ's are atoms (other strings are shown as binaries)
ERLANG_ATOMS = frozenset((
    "infinity", "undefined", "none", "administrator", "monitoring", "management", "policymaker", "allocated",
    "rss", "erlang", "debug", "info", "warning", "error", "critical", "common_name", "distinguished_name",
    "subject_alternative_name", "dns", "ip", "email", "uri", "other_name", "rabbit_password_hashing_sha256",
    "rabbit_password_hashing_sha512", "rabbit_password_hashing_md5", "classic", "quorum", "stream"))


def erlang_term(v, indent: int = 0) -> str:
    """A JSON value as the Erlang term rabbitmqctl prints for an application environment: objects
    as proplists, lists as lists, ERLANG_ATOMS as atoms, other strings as binaries. Nesting is
    bounded by the JSON the node sent (its own configuration)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "undefined"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, str):
        return v if v in ERLANG_ATOMS else "<<" + json.dumps(v, ensure_ascii=False) + ">>"
    if isinstance(v, dict):
        if not v:
            return "[]"
        items = [f"{{{_atom(k)},{erlang_term(x, indent + 2 + len(str(k)))}}}" for k, x in v.items()]
        return _erl_list(items, indent)
    if isinstance(v, list):
        return _erl_list([erlang_term(x, indent + 1) for x in v], indent)
    return str(v)


def _atom(k) -> str:
    k = str(k)
    return k if k[:1].islower() and k.isascii() and all(c.isalnum() or c == "_" for c in k) else \
        "'" + k.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _erl_list(items: list, indent: int) -> str:
    one = "[" + ",".join(items) + "]"
    if len(one) + indent <= 80 and "\n" not in one:
        return one
    return "[" + (",\n" + " " * (indent + 1)).join(items) + "]"


def listener_interface(ip) -> str:
    """A listener's address as rabbitmq-diagnostics prints it: IPv6 in brackets."""
    ip = str(ip or "")
    return f"[{ip}]" if ":" in ip and not ip.startswith("[") else ip


def listener_purpose(proto) -> str:
    return {"amqp": "AMQP 0-9-1 and AMQP 1.0", "amqp/ssl": "AMQP 0-9-1 and AMQP 1.0 over TLS",
            "http": "HTTP API", "https": "HTTP API over TLS",
            "clustering": "inter-node and CLI tool communication",
            "http/prometheus": "Prometheus exporter API over HTTP"}.get(proto or "", proto or "")


def listeners(api: Api) -> list[dict]:
    """The node's listeners (GET /api/overview), as rabbitmq-diagnostics lists them: interface,
    port, protocol and purpose, in its order (by port, compared as text)."""
    node = api.node()
    out = []
    for l in api.overview().get("listeners") or []:
        if l.get("node") not in (None, node):
            continue
        out.append({"interface": listener_interface(l.get("ip_address")), "node": l.get("node") or node,
                    "port": l.get("port"), "protocol": l.get("protocol"),
                    "purpose": listener_purpose(l.get("protocol"))})
    out.sort(key=lambda l: str(l["port"]))
    return out


def listener_line(l: dict) -> str:
    return (f"Interface: {l['interface']}, port: {l['port']}, protocol: {l['protocol']}, "
            f"purpose: {l['purpose']}")


# --------------------------------------------------------------------------- commands

COMMON = "[--node <node>] [--longnames] [--quiet]"

# Options every command accepts (rabbitmqctl's general options and --url).
GLOBAL_OPTS = {"node", "quiet", "silent", "timeout", "longnames", "formatter", "vhost", "url",
               "help", "no-table-headers", "erlang-cookie"}
# Options that take a value (whatever the command).
VALUE_OPTS = {"node", "timeout", "formatter", "vhost", "url", "description", "tags",
              "default-queue-type", "priority", "apply-to", "format", "limit",
              "per-connection-delay", "user", "unit", "erlang-cookie", "queue-timeout", "number"}
SHORT = {"n": "node", "q": "quiet", "s": "silent", "t": "timeout", "l": "longnames", "p": "vhost",
         "?": "help"}


# options RabbitMQ's CLI types as integers: anything else is an invalid option, as there
INTEGER_OPTS = {"queue-timeout"}
INTEGER_RE = re.compile(r"[0-9]+")
MAX_TIMEOUT = 10 ** 7       # seconds: a socket timeout larger than the platform takes is an error


class Command:
    def __init__(self, name, section, descr, usage, nargs, handler, options=(), columns=None,
                 default_columns=None, app=RUNNING, shorts=None, extra_help=(), validate=None):
        self.name = name
        self.section = section
        self.descr = descr
        self.usage_tail = usage
        self.min_args, self.max_args = nargs
        self.handler = handler
        self.options = set(options)
        self.columns = columns
        self.default_columns = default_columns
        self.app = app                  # RUNNING, STOPPED or None: what it needs of the rabbit app
        self.shorts = shorts or {}      # its own short options: letter -> long option
        self.extra_help = extra_help    # (argument, description) pairs for its help
        self.validate = validate        # checks of its arguments, before the node is asked anything

    def usage(self, prog: str) -> str:
        return f"{prog} {COMMON} {self.name}" + (f" {self.usage_tail}" if self.usage_tail else "")


class Tool:
    """A command-line tool: its name, its help sections and its commands."""

    def __init__(self, prog: str, sections: list, general_options: str):
        self.prog = prog
        self.sections = sections
        self.general_options = general_options
        self.commands: dict[str, Command] = {}

    def command(self, name, section, descr, usage="", nargs=(0, 0), options=(), columns=None,
                default_columns=None, app=RUNNING, shorts=None, extra_help=(), validate=None):
        def deco(fn):
            self.commands[name] = Command(name, section, descr, usage, nargs, fn, options, columns,
                                          default_columns, app, shorts, extra_help, validate)
            return fn
        return deco

    def add(self, cmd: Command, section: str | None = None):
        """Offer another tool's command as well (in `section` of this tool's help)."""
        if section is not None and section != cmd.section:
            c = Command(cmd.name, section, cmd.descr, cmd.usage_tail, (cmd.min_args, cmd.max_args),
                        cmd.handler, cmd.options, cmd.columns, cmd.default_columns, cmd.app, cmd.shorts,
                        cmd.extra_help, cmd.validate)
            self.commands[cmd.name] = c
        else:
            self.commands[cmd.name] = cmd

    # ------------------------------------------------------------------ help texts
    def general_usage(self) -> str:
        lines = ["", bold("Usage"), "",
                 f"{self.prog} [--url <url>] [--node <node>] [--timeout <timeout>] [--longnames] [--quiet] "
                 "<command> [<command options>]", "",
                 "Available commands:", ""]
        for key, title in self.sections:
            cmds = sorted((c for c in self.commands.values() if c.section == key), key=lambda c: c.name)
            if not cmds:
                continue
            width = max(29, max(len(c.name) for c in cmds))
            lines.append(bold(title) + ":")
            lines.append("")
            for c in cmds:
                lines.append(f"   {c.name:<{width}} {c.descr}")
            lines.append("")
        lines.append(f"Use '{self.prog} help <command>' to learn more about a specific command")
        lines.append("")
        return "\n".join(lines)

    def command_help(self, c: Command) -> str:
        parts = ["", bold("Usage"), "", c.usage(self.prog), "", c.descr + ".", ""]
        if c.columns or c.extra_help:
            parts += ["", bold("Arguments and Options"), ""]
            if c.columns:
                parts += ["<column>", "\tmust be one of " + ", ".join(c.columns), ""]
            for arg, text in c.extra_help:
                parts += [arg, "\t" + text, ""]
        parts += ["", bold("General Options"), "", self.general_options]
        return "\n".join(parts)

    # ------------------------------------------------------------------ running a command
    def run(self, argv: list[str], out=None, err=None) -> int:
        out = out or sys.stdout
        err = err or sys.stderr
        p = parse_argv(argv, self)
        if not p.positional:
            if "help" in p.opts:
                out.write(self.general_usage())
                return EX_OK
            err.write(self.general_usage())
            return EX_USAGE
        name, args = p.positional[0], p.positional[1:]
        cmd = self.commands.get(name)
        if cmd is None:
            err.write(f"\nCommand '{name}' not found. \n")
            err.write(self.general_usage())
            return EX_USAGE
        if "help" in p.opts:
            out.write(self.command_help(cmd))
            return EX_OK
        invalid = [f"{o} : " for o in list(p.bad_options) + list(p.shorts)]
        for o in p.opts:
            if o not in GLOBAL_OPTS and o not in cmd.options:
                invalid.append(f"--{o} : ")
            elif o in INTEGER_OPTS and not (isinstance(p.opts[o], str) and INTEGER_RE.fullmatch(p.opts[o])):
                invalid.append(f"--{o} : {p.opts[o] if isinstance(p.opts[o], str) else ''}")
        usage = cmd.usage(self.prog)
        if invalid:
            return _validation(err, argv, "Invalid options for this command:\n"
                               + "".join(f"{o}\n" for o in invalid).rstrip("\n"), usage)
        if len(args) < cmd.min_args:
            return _validation(err, argv, "not enough arguments.", usage)
        if cmd.max_args is not None and len(args) > cmd.max_args:
            return _validation(err, argv, "too many arguments.", usage)
        fmt = p.opts.get("formatter", "table")
        if fmt not in ("table", "json", "csv", "pretty_table", "erlang"):
            return _validation(err, argv, f"Bad argument: unsupported formatter {fmt!r}", usage)
        try:
            timeout = float(p.opts.get("timeout", 60))
            if not 0 < timeout <= MAX_TIMEOUT:         # also refuses nan and inf
                raise ValueError
        except ValueError:
            return _validation(err, argv, "Bad argument: --timeout must be a positive number", usage)
        url = p.opts.get("url") if isinstance(p.opts.get("url"), str) else None
        url = url or os.environ.get("USAGI_URL") or DEFAULT_URL
        api = None
        try:
            api = Api(url, timeout)
            ctx = Ctx(self, cmd, args, p.opts, api, out, err)
            if cmd.columns and cmd.default_columns is not None:
                select_columns(ctx)
            if cmd.validate is not None:
                cmd.validate(ctx)
            if cmd.app is not None:
                running = api.app_running()
                if cmd.app == RUNNING and running is False:
                    return _validation(err, argv, "this command requires the 'rabbit' app to be running on "
                                       f"the target node. Start it with '{CTL} start_app'.", usage,
                                       prefix="Error: ")
                if cmd.app == STOPPED and running is True:
                    return _validation(err, argv, "this command requires the 'rabbit' app to be stopped on "
                                       f"the target node. Stop it with '{CTL} stop_app'.", usage,
                                       prefix="Error: ")
            cmd.handler(ctx)
            out.flush()
            return EX_OK
        except ValidationError as e:
            out.flush()
            return _validation(err, argv, e.message, usage, e.code)
        except CtlError as e:
            out.flush()
            err.write(("Error:\n" if e.prefix else "") + e.message + "\n")
            return e.code
        except Unreachable as e:
            out.flush()
            where = api.display if api is not None else url
            err.write(f"Error: unable to perform an operation on the management API at {where} "
                      f"({e}).\n\nMost common reasons for this are:\n\n"
                      f" * The broker is not running\n"
                      f" * Its management listener is disabled or on another port or host: point "
                      f"--url or USAGI_URL at it (now {where})\n")
            return EX_UNAVAILABLE
        except TimedOut:
            out.flush()
            where = api.display if api is not None else url
            err.write(f"Error: operation {name} on node behind {where} timed out. "
                      f"Timeout value used: {int(timeout * 1000)}\n")
            return EX_TEMPFAIL
        except BrokenPipeError:
            return EX_OK

    def main(self, argv=None) -> int:
        if argv is None:
            argv = sys.argv[1:]
        try:
            return self.run(list(argv))
        except KeyboardInterrupt:
            return 130


class Ctx:
    """What a command handler gets: parsed options, the API client and output helpers."""

    def __init__(self, tool: Tool, cmd: Command, args: list[str], opts: dict, api: Api, out, err):
        self.tool = tool
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

    @property
    def json(self) -> bool:
        return self.formatter == "json"

    def banner(self, text: str):
        if not self.quiet:
            self.out.write(text + "\n")

    def print(self, text: str = ""):
        self.out.write(text + "\n")

    def print_json(self, obj):
        self.out.write(json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n")

    def ok(self):
        """A command that changed something and has nothing to show: with --formatter json,
        rabbitmqctl says so ({"node": ..., "result": "ok"})."""
        if self.json:
            self.print_json({"node": self.api.node(), "result": "ok"})

    def table(self, columns: list[str], rows, empty_line: bool = False,
              empty_json: str = "[\n]"):
        """rows are dicts keyed by column, values as the API gives them: a list, or an iterable
        written out as it yields (a listing fetched a page at a time is never held whole)."""
        it = iter(rows)
        first = next(it, None)
        if first is not None:
            rows = itertools.chain((first,), it)
        else:
            rows = []
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


# --------------------------------------------------------------------------- usage text

def _color() -> bool:
    return sys.stderr.isatty() and not os.environ.get("NO_COLOR")


def bold(s: str) -> str:
    return f"\033[1m{s}\033[0m" if _color() else s


def general_options(url_line: str = "management API URL, with credentials") -> str:
    return f"""The following options are accepted by most or all commands.

short            | long          | description
-----------------|---------------|--------------------------------
-?               | --help        | displays command help
                 | --url <url>   | {url_line}
                 |               | (default: $USAGI_URL or {DEFAULT_URL})
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


# --------------------------------------------------------------------------- argument parsing

class ParsedArgs:
    def __init__(self):
        self.opts: dict[str, str | bool] = {}
        self.positional: list[str] = []
        self.bad_options: list[str] = []   # options given without their value
        self.shorts: list[str] = []        # short options no one knows


def _command_shorts(argv: list[str], tool: Tool | None) -> dict:
    """The short options of the command named in argv (its first positional argument)."""
    if tool is None:
        return {}
    i = 0
    while i < len(argv):
        a = argv[i]
        i += 1
        if a == "--":
            break
        if a.startswith("--"):
            if a[2:] in VALUE_OPTS:
                i += 1
            continue
        if a.startswith("-") and len(a) >= 2 and not a[1].isdigit():
            if len(a) == 2 and SHORT.get(a[1]) in VALUE_OPTS:
                i += 1
            continue
        c = tool.commands.get(a)
        return c.shorts if c is not None else {}
    return {}


def parse_argv(argv: list[str], tool: Tool | None = None) -> ParsedArgs:
    p = ParsedArgs()
    shorts = dict(SHORT)
    shorts.update(_command_shorts(argv, tool))
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
            if letter in shorts:
                name = shorts[letter]
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
                        if extra in shorts and shorts[extra] not in VALUE_OPTS:
                            p.opts[shorts[extra]] = True
                        else:
                            p.shorts.append(a)
                            break
                continue
            p.shorts.append(a)
            continue
        p.positional.append(a)
    return p


def _validation(err, argv, message, usage: str | None, code=EX_USAGE,
                prefix: str = "Error (argument validation): ") -> int:
    err.write(f"{prefix}{message}\nArguments given:\n\t{' '.join(argv)}\n")
    if usage is not None:
        err.write(f"\n{bold('Usage')}\n\n{usage}\n")
    return code
