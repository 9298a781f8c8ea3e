"""RabbitMQ's configuration file (`rabbitmq.conf`), read as RabbitMQ reads it, for Usagi.

So that a deployment moves from RabbitMQ to Usagi with its configuration file unchanged, Usagi
reads the same sysctl-like format with the same names and value syntax:

    # a comment
    listeners.tcp.default = 5672
    listeners.ssl.1       = 0.0.0.0:5671
    ssl_options.certfile  = /etc/usagi/server.pem
    default_pass          = 'a value with a # in it'
    vm_memory_high_watermark.absolute = 2GiB

A line is `key = value`: a key is words of letters, digits, `_` and `-` joined by dots (`\\.` is a
dot inside a word); a value runs to the end of the line or to a `#`, unless it is in single
quotes. `include FILE` reads another file (a glob; relative to the including file).

Each key RabbitMQ knows falls in one of three kinds, decided key by key (see the tables below and
the README):

- applied: it means in Usagi what it means in RabbitMQ;
- accepted and ignored, with a warning in the log: RabbitMQ tunes something Usagi does not have
  (Erlang VM, Mnesia/Khepri, quorum queue Raft logs, acceptor pools...), and leaving it out
  changes nothing a client or an operator can observe beyond what the warning says;
- refused: ignoring it would silently change security or behaviour (another authentication
  backend, CRL checks, a management path prefix, MQTT...).

An unknown key, a bad value or a refused key stops the start: `ConfigError` names the file, the
line and what is wrong. Parsing is pure (text in, `Settings` out); `check_paths` then checks that
the files named can be read, with the same file:line reporting.
"""
from __future__ import annotations

import difflib
import glob
import ipaddress
import math
import os
import re
from dataclasses import dataclass, field

from .units import INFORMATION_UNIT_HELP, parse_bytesize, parse_information_unit

MAX_FILES = 64            # include: files read in all (each include may be a glob)
MAX_LINES = 100_000       # lines read in all
MAX_BYTES = 64 * 1024 * 1024   # bytes read of one file


class ConfigError(Exception):
    """A configuration file that cannot be used: str() is `file:line: reason`."""

    def __init__(self, file: str, line: int | None, reason: str):
        super().__init__(reason)
        self.file = file
        self.line = line
        self.reason = reason

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.reason}"


@dataclass(frozen=True)
class Entry:
    """One `key = value` line."""
    words: tuple
    value: str
    file: str
    line: int

    @property
    def key(self) -> str:
        return ".".join(w.replace(".", "\\.") for w in self.words)

    def error(self, reason: str) -> ConfigError:
        return ConfigError(self.file, self.line, reason)

    def bad(self, why: str) -> ConfigError:
        return self.error(f"{self.key}: invalid value '{shown(self.value)}': {why}")


def shown(text: str, limit: int = 200) -> str:
    """A value as an error message quotes it: control characters escaped, at most `limit` characters."""
    if len(text) > limit:
        text = text[:limit] + "..."
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


@dataclass
class Settings:
    """What a file says, by destination (the names of usagi-server's options where one exists).

    `values[dest]` is the typed value; `origin[dest]` the Entry it came from (for errors found
    later, and for the log); `warnings` the (entry, text) of keys accepted but ignored."""
    values: dict = field(default_factory=dict)
    origin: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    files: list = field(default_factory=list)

    def get(self, dest, default=None):
        return self.values.get(dest, default)

    def __contains__(self, dest) -> bool:
        return dest in self.values

    def where(self, dest) -> str:
        e = self.origin.get(dest)
        return f"{e.file}:{e.line}" if e is not None else ""


# ------------------------------------------------------------------------------------------ syntax

_WORD = r"(?:[A-Za-z0-9_-]|\\\.)+"
_KEY_RE = re.compile(rf"({_WORD}(?:\.{_WORD})*)[ \t]*=[ \t]*")
_INCLUDE_RE = re.compile(r"include[ \t]+([A-Za-z0-9\-_.*/]+)[ \t]*(?:#.*)?")


def _words(key: str) -> tuple:
    out, cur, i = [], [], 0
    while i < len(key):
        c = key[i]
        if c == "\\" and key[i + 1:i + 2] == ".":
            cur.append(".")
            i += 2
            continue
        if c == ".":
            out.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    out.append("".join(cur))
    return tuple(out)


def parse_text(text: str, file: str = "rabbitmq.conf") -> list:
    """The lines of one file: a list of Entry, and ('include', pattern, line) for include lines."""
    out = []
    # lines end at \n only (a \r before it is dropped), as RabbitMQ reads them: str.splitlines() would
    # also break at \v, \f, \x1c-\x1e, \x85, \u2028 and \u2029, and line numbers would not be the editor's
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for n, raw in enumerate(lines, 1):
        if n > MAX_LINES:
            raise ConfigError(file, n, f"more than {MAX_LINES} lines")
        line = raw.strip(" \t\r\ufeff" if n == 1 else " \t\r")
        if not line or line.startswith("#"):
            continue
        if n == 1 or not out:
            if line.startswith(("[", "%", "{")):
                raise ConfigError(file, n, "this is the classic Erlang-term format (rabbitmq.config, "
                                  "advanced.config); Usagi reads the rabbitmq.conf format: key = value")
        m = _INCLUDE_RE.fullmatch(line)
        if m:
            out.append(("include", m.group(1), n))
            continue
        m = _KEY_RE.match(line)
        if m is None:
            raise ConfigError(file, n, f"expected 'key = value', got '{shown(line, 80)}'")
        rest = line[m.end():]
        if rest.startswith("'"):
            end = rest.find("'", 1)
            if end < 0:
                raise ConfigError(file, n, "a quoted value has no closing quote (')")
            value = rest[1:end]
            tail = rest[end + 1:].strip(" \t")
            if tail and not tail.startswith("#"):
                raise ConfigError(file, n, f"unexpected text after the quoted value: '{shown(tail, 40)}'")
        else:
            value = rest.split("#", 1)[0].rstrip(" \t")
            if not value:
                raise ConfigError(file, n, f"{m.group(1)}: no value after '='")
        out.append(Entry(_words(m.group(1)), value, file, n))
    return out


def read_file(path: str) -> list:
    """The entries of a configuration file and of the files it includes, in order (a later line
    overrides an earlier one for the same key). At most MAX_FILES files; an include cycle is an error."""
    entries = []
    files: list = []
    stack = [(os.path.abspath(path), None)]          # (file, (includer, line)), read in order
    seen = set()
    while stack:
        p, by = stack.pop()
        if p in seen:
            raise ConfigError(by[0], by[1], f"include of {p}: already read (an include cycle)")
        seen.add(p)
        if len(seen) > MAX_FILES:
            raise ConfigError(by[0], by[1], f"more than {MAX_FILES} configuration files included")
        try:
            with open(p, "rb") as f:
                data = f.read(MAX_BYTES + 1)
        except OSError as e:
            if by is None:
                raise ConfigError(path, None, f"cannot read the configuration file: {e.strerror or e}") from None
            raise ConfigError(by[0], by[1], f"cannot read included file {p}: {e.strerror or e}") from None
        name = path if by is None else p
        if len(data) > MAX_BYTES:         # never a file cut at some byte and read as if whole
            raise ConfigError(name, None, f"larger than {MAX_BYTES} bytes")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            line = data[:e.start].count(b"\n") + 1
            raise ConfigError(name, line, "not UTF-8 text") from None
        files.append(name)
        includes = []
        for item in parse_text(text, name):
            if isinstance(item, Entry):
                entries.append(item)
                continue
            _, pattern, line = item
            full = pattern if os.path.isabs(pattern) else os.path.join(os.path.dirname(p), pattern)
            matches = sorted(glob.glob(full)) if any(c in pattern for c in "*?[") else [full]
            if not matches and not any(c in pattern for c in "*?["):
                raise ConfigError(name, line, f"include {pattern}: no such file")
            if matches == [full] and os.path.isdir(full):
                raise ConfigError(name, line, f"include {pattern}: is a directory (include DIR/*.conf reads "
                                  f"the files in it)")
            includes += [(os.path.abspath(m), (name, line)) for m in matches if not os.path.isdir(m)]
        # included files are read after the file that includes them, in the order named
        stack.extend(reversed(includes))
    return entries, files


# ------------------------------------------------------------------------------------------ value types

# ASCII digits only: Python's int() and float() also take other scripts' digits (`٣`, `１２`) and
# `1_000`, which RabbitMQ refuses; a value must mean the same to both
_INT_RE = re.compile(r"[+-]?[0-9]+")
_FLOAT_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _int(lo=None, hi=None, what="an integer"):
    def conv(e: Entry):
        text = e.value.strip()
        if not _INT_RE.fullmatch(text):
            raise e.bad(f"expected {what}")
        v = int(text)
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            rng = f"between {lo} and {hi}" if lo is not None and hi is not None else \
                (f"at least {lo}" if lo is not None else f"at most {hi}")
            raise e.bad(f"must be {rng}")
        return v
    return conv


def _int_or_infinity(lo=0):
    inner = _int(lo, None)

    def conv(e: Entry):
        if e.value.strip() == "infinity":
            return None
        return inner(e)
    return conv


def _float(lo_excl=None, hi=None, lo=None):
    def conv(e: Entry):
        text = e.value.strip()
        if not _FLOAT_RE.fullmatch(text):
            raise e.bad("expected a number such as 0.4")
        v = float(text)
        if not math.isfinite(v) or (lo_excl is not None and v <= lo_excl) or (lo is not None and v < lo) \
                or (hi is not None and v > hi):
            low = f"must be above {lo_excl}" if lo is None else f"must be at least {lo}"
            raise e.bad(low + (f" and at most {hi}" if hi is not None else ""))
        return v
    return conv


def _bool(e: Entry):
    v = e.value.strip().lower()
    if v in ("true", "on", "yes"):
        return True
    if v in ("false", "off", "no"):
        return False
    raise e.bad("expected true or false")


def _enum(*choices):
    def conv(e: Entry):
        v = e.value.strip()
        if v not in choices:
            raise e.bad("expected one of " + ", ".join(choices))
        return v
    return conv


def _string(e: Entry):
    return e.value


def _info_unit(e: Entry):
    try:
        return parse_information_unit(e.value)
    except ValueError as err:
        raise e.bad(str(err)) from None


def _bytesize(lo=None, hi=None):
    def conv(e: Entry):
        try:
            v = parse_bytesize(e.value)
        except ValueError as err:
            raise e.bad(str(err)) from None
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise e.bad(f"must be between {lo} and {hi} bytes")
        return v
    return conv


def _port(e: Entry):
    return _int(0, 65535, "a port number")(e)


def _host(text: str):
    h = text.strip()
    if h.startswith("[") and h.endswith("]"):
        h = h[1:-1]
    try:
        ipaddress.ip_address(h)
    except ValueError:
        return None
    return h


def _ip(e: Entry):
    h = _host(e.value)
    if h is None:
        raise e.bad("expected an IP address such as 0.0.0.0, 127.0.0.1 or ::")
    return h


def _listener(e: Entry):
    """A port (all interfaces), or IP:port (`0.0.0.0:5672`, `::1:5672`, `[::1]:5672`)."""
    v = e.value.strip()
    if _INT_RE.fullmatch(v):
        return (None, _port(e))
    host, sep, port = v.rpartition(":")
    h = _host(host) if sep else None
    if h is None or not (port.isascii() and port.isdigit()):
        raise e.bad("expected a port (5672) or an address and a port (0.0.0.0:5672, :::5672)")
    p = int(port)
    if p > 65535:
        raise e.bad("port out of range 0-65535")
    return (h, p)


def _regex(e: Entry):
    try:
        re.compile(e.value)
    except re.error as err:
        raise e.bad(f"not a valid regular expression: {err}") from None
    return e.value


LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency", "none")
_FILE_LEVELS = LEVELS + ("=debug", "!=info", "<=notice", "<warning")


def _level(e: Entry):
    v = e.value.strip()
    if v not in _FILE_LEVELS:
        raise e.bad("expected one of " + ", ".join(LEVELS))
    return v.lstrip("=!<")


def _any(e: Entry):
    return e.value


# ------------------------------------------------------------------------------------------ the keys
# `$` stands for any one word (a listener's name, a user, a tag). Applied keys are translated by
# `_translate` below; IGNORED keys are checked for their type where one is given and logged.

APPLIED = {
    "listeners.tcp": _enum("none"),
    "listeners.tcp.$": _listener,
    "listeners.ssl": _enum("none"),
    "listeners.ssl.$": _listener,
    "ssl_options": _enum("none"),
    "ssl_options.cacertfile": _string,
    "ssl_options.certfile": _string,
    "ssl_options.keyfile": _string,
    "ssl_options.password": _string,
    "ssl_options.verify": _enum("verify_peer", "verify_none"),
    "ssl_options.fail_if_no_peer_cert": _bool,
    "ssl_options.crl_check": _enum("true", "false", "peer", "best_effort"),
    "ssl_cert_login_from": _enum("distinguished_name", "common_name", "subject_alternative_name",
                                 "subject_alt_name"),
    "ssl_cert_login_san_type": _enum("dns", "ip", "email", "uri", "other_name"),
    "ssl_cert_login_san_index": _int(0, None),
    "auth_mechanisms.$": _string,
    "auth_backends.$": _string,
    "auth_backends.$.authn": _string,
    "auth_backends.$.authz": _string,
    "default_vhost": _string,
    "default_user": _string,
    "default_pass": _string,
    "default_permissions.configure": _regex,
    "default_permissions.read": _regex,
    "default_permissions.write": _regex,
    "default_user_tags.$": _bool,
    "loopback_users": _enum("none"),
    "loopback_users.$": _bool,
    "heartbeat": _int(0, 65535),
    "frame_max": _bytesize(4096, 2 ** 31 - 1),
    "channel_max": _int(0, 65535),
    "max_channels_per_connection": _int(0, 65535),
    "max_message_size": _int(1, 536870912),
    "max_connections": _int_or_infinity(0),
    "connection_max": _int_or_infinity(0),
    "handshake_timeout": _int_or_infinity(1),
    "consumer_timeout": _int(1, None),
    # 0 is allowed, as in RabbitMQ: the memory alarm is then set at once and blocks every publisher
    "vm_memory_high_watermark.relative": _float(hi=1.0, lo=0),
    "vm_memory_high_watermark.absolute": _info_unit,
    "total_memory_available_override_value": _info_unit,
    "disk_free_limit.absolute": _info_unit,
    "disk_free_limit.relative": _float(0, 1000.0),     # times the RAM: as set_disk_free_limit's bound
    "cluster_name": _string,
    "load_definitions": _string,
    "definitions.local.path": _string,
    "definitions.import_backend": _string,
    "management.load_definitions": _string,
    "management.tcp.port": _port,
    "management.tcp.ip": _ip,
    "management.listener.port": _port,
    "management.listener.ip": _ip,
    "management.listener.ssl": _bool,
    "management.ssl.port": _port,
    "management.ssl.ip": _ip,
    "management.ssl.certfile": _string,
    "management.ssl.keyfile": _string,
    "management.ssl.cacertfile": _string,
    "management.ssl.password": _string,
    "management.http.max_body_size": _int(0, None),
    "prometheus.tcp.port": _port,
    "prometheus.tcp.ip": _ip,
    "prometheus.path": _string,
    "prometheus.authentication.enabled": _bool,
    "proxy_protocol": _bool,
    "collect_statistics_interval": _int(1, None),
    "log.dir": _string,
    "log.file": _string,
    "log.file.level": _level,
    "log.file.rotation.size": _int(0, None),
    "log.file.rotation.count": _int(0, 10_000),
    "log.file.formatter": _enum("plaintext", "json"),
    "log.console": _bool,
    "log.console.level": _level,
    "log.console.formatter": _enum("plaintext", "json"),
    "log.console.stdio": _enum("stdout", "stderr"),
    "log.$.level": _level,
}

# RabbitMQ settings Usagi accepts and ignores (a warning is logged), with why. A key matches an
# entry when it equals it or continues it with more words; `$` matches one word.
IGNORED = {
    "num_acceptors": "Usagi's listeners accept on the event loop",
    "socket_writer.gc_threshold": "an Erlang VM setting",
    "reverse_dns_lookups": "Usagi shows addresses",
    "erlang": "an Erlang VM setting",
    "tcp_listen_options": "Usagi sets TCP_NODELAY and its own backlog",
    "ssl_handshake_timeout": "Usagi's TLS handshake timeout is 5 seconds, RabbitMQ's default",
    "ssl_allow_poodle_attack": "Usagi offers TLS 1.2 and 1.3 only",
    "ssl_options.versions": "Usagi offers TLS 1.2 and 1.3",
    "ssl_options.ciphers": "Usagi uses the TLS library's default cipher suites",
    "ssl_options.honor_cipher_order": "Usagi always prefers its own cipher order",
    "ssl_options.honor_ecc_order": "the TLS library's default",
    "ssl_options.client_renegotiation": "the TLS library's default (TLS 1.3 has no renegotiation)",
    "ssl_options.secure_renegotiate": "the TLS library's default",
    "ssl_options.reuse_sessions": "the TLS library's default",
    "ssl_options.depth": "the TLS library's default verification depth",
    "ssl_options.log_alert": "an Erlang ssl setting",
    "ssl_options.log_level": "an Erlang ssl setting",
    "ssl_options.bypass_pem_cache": "an Erlang ssl setting",
    "metadata_store": "Usagi keeps its metadata in its own store",
    "default_worker_pool_size": "an Erlang VM setting",
    "password_hashing_module": "Usagi hashes new passwords with SHA-256, RabbitMQ's default",
    "credential_validator": "Usagi does not check password strength",
    "anonymous_login_user": "Usagi does not offer the ANONYMOUS mechanism",
    "anonymous_login_pass": "Usagi does not offer the ANONYMOUS mechanism",
    "initial_frame_max": "Usagi accepts handshake frames up to 8192 bytes",
    "channel_max_per_node": "not enforced by Usagi",
    "consumer_max_per_channel": "not enforced by Usagi",
    "session_max_per_connection": "an AMQP 1.0 setting",
    "link_max_per_session": "an AMQP 1.0 setting",
    "ranch_connection_max": "use max_connections",
    "vhost_max": "not enforced by Usagi",
    "cluster_exchange_limit": "not enforced by Usagi",
    "cluster_queue_limit": "not enforced by Usagi",
    "vm_memory_high_watermark_paging_ratio": "queues page by their own in-memory budget",
    "memory_monitor_interval": "Usagi measures memory every 25 ms, a step at a time",
    "vm_memory_calculation_strategy": "Usagi counts what it holds, with RSS as a backstop",
    "cluster_partition_handling": "a Usagi cluster elects its leader through etcd",
    "delegate_count": "an Erlang cluster setting",
    "mirroring_sync_batch_size": "classic queue mirroring does not exist in Usagi (nor in RabbitMQ 4)",
    "mirroring_sync_max_throughput": "classic queue mirroring does not exist in Usagi (nor in RabbitMQ 4)",
    "cluster_formation": "a Usagi cluster is formed with --cluster-etcd",
    "cluster_keepalive_interval": "an Erlang cluster setting",
    "queue_master_locator": "a single node serves every queue",
    "queue_leader_locator": "a single node serves every queue",
    "collect_statistics": "Usagi always collects coarse statistics",
    "hipe_compile": "an Erlang VM setting",
    "mnesia_table_loading_retry_timeout": "a Mnesia setting",
    "mnesia_table_loading_retry_limit": "a Mnesia setting",
    "message_store_shutdown_timeout": "Usagi's store flushes at every stop",
    "queue_index_embed_msgs_below": "Usagi's store keeps every body with its message",
    "background_gc_enabled": "an Erlang VM setting",
    "background_gc_target_interval": "an Erlang VM setting",
    "vhost_restart_strategy": "an Erlang supervision setting",
    "consumer_disconnected_timeout": "a quorum queue cluster setting",
    "product": "Usagi announces itself as RabbitMQ 4.0.5 so that clients take their tested paths",
    "motd_file": "Usagi shows no message of the day",
    "prevent_startup_if_node_was_reset": "Usagi refuses to start on a data dir that lost its store",
    "net_ticktime": "an Erlang distribution setting",
    "distribution": "an Erlang distribution setting",
    "sysmon_handler": "an Erlang VM setting",
    "raft": "a Raft log setting of quorum queues",
    "default_queue_type": "a vhost's default queue type is set when the vhost is created",
    "exchange_types": "Usagi has every exchange type",
    "queue_types": "Usagi has every queue type",
    "classic_queue": "a classic queue storage setting",
    "quorum_queue": "a quorum queue Raft setting",
    "stream": "a stream replication setting",
    "runtime_parameters": "not enforced by Usagi",
    "channel_interceptor": "a RabbitMQ plugin interface",
    "message_interceptors": "a RabbitMQ plugin interface",
    "cluster_tags": "shown by RabbitMQ's CLI only",
    "node_tags": "shown by RabbitMQ's CLI only",
    "amqp10_client": "a setting of RabbitMQ's AMQP 1.0 client",
    "amqp_client": "a setting of RabbitMQ's Erlang client",
    "deprecated_features": "Usagi has no deprecated features to permit or deny",
    "definitions.skip_if_unchanged": "Usagi applies the definitions at every start",
    "definitions.hashing": "Usagi applies the definitions at every start",
    "log.summarize_process_state": "an Erlang logger setting",
    "log.error_logger_format_depth": "an Erlang logger setting",
    "log.console.use_colors": "Usagi does not colour its output",
    "log.console.color_esc_seqs": "Usagi does not colour its output",
    "log.console.formatter.$": "Usagi's format is fixed: plaintext or json",
    "log.file.formatter.$": "Usagi's format is fixed: plaintext or json",
    "log.file.rotation.date": "Usagi rotates by size (log.file.rotation.size) or on request",
    "log.file.rotation.compress": "Usagi does not compress rotated files",
    "log.$.file": "Usagi writes every category to log.file",
    "log.$.rotation": "Usagi writes every category to log.file",
    "log.exchange": "Usagi does not publish its log to amq.rabbitmq.log",
    "log.syslog": "Usagi logs to the console and log.file (journald gets the console under systemd)",
    "log.journald": "under systemd, the console goes to the journal",
    "management.http_log_dir": "Usagi writes no HTTP access log",
    "management.delegate_count": "an Erlang cluster setting",
    "management.tcp": "an Erlang web server setting",
    "management.listener.server": "an Erlang web server setting",
    "management.ssl": "an Erlang web server setting",
    "management.listener.ssl_opts": "an Erlang web server setting",
    "management.login_session_timeout": "the dashboard keeps its login for the browser session",
    "management.db_cache_multiplier": "Usagi caches nothing between requests",
    "management.cors": "Usagi's API sends no CORS headers",
    "management.csp": "Usagi's dashboard sends its own headers",
    "management.hsts": "Usagi's dashboard sends its own headers",
    "management.headers": "Usagi's dashboard sends its own headers",
    "management.http.hide_allow_header": "Usagi's dashboard sends its own headers",
    "management.rates_mode": "Usagi samples basic rates",
    "management.sample_retention_policies": "Usagi keeps its own sample window",
    "management.disable_stats": "Usagi always serves statistics",
    "management.enable_queue_totals": "Usagi always serves statistics",
    "management.definitions.require_json_extension": "Usagi accepts any definitions file name",
    "management.restrictions": "not enforced by Usagi",
    "management.require_auth_for_api_reference": "Usagi serves no API reference page",
    "management.oauth_enabled": "the dashboard logs in with a user and password",
    "prometheus.return_per_object_metrics": "per-object metrics are at /metrics/per-object",
    "prometheus.tcp": "an Erlang web server setting",
    "prometheus.filter_aggregated_queue_metrics_pattern": "Usagi aggregates every queue",
}

# Keys refused with a reason: ignoring them would change security or behaviour silently.
REFUSED = {
    "ssl_options.crl_sources": "Usagi does not check certificate revocation lists",
    "ssl_options.cert": "give the certificate in a file (ssl_options.certfile)",
    "ssl_options.key": "give the private key in a file (ssl_options.keyfile)",
    "ssl_options.dh": "Usagi uses the TLS library's key exchange groups",
    "ssl_options.dhfile": "Usagi uses the TLS library's key exchange groups",
    "ssl_options.psk_identity": "Usagi does not offer pre-shared keys",
    "default_users": "Usagi creates one default user (default_user, default_pass); add others with "
                     "load_definitions",
    "default_policies": "Usagi does not create default operator policies; add them with load_definitions",
    "default_limits": "Usagi does not set default vhost limits; set them with load_definitions",
    "definitions.https": "Usagi loads definitions from a local file or directory (load_definitions)",
    "definitions.tls": "Usagi loads definitions from a local file or directory (load_definitions)",
    "management.path_prefix": "Usagi serves the management API at /api",
    "management.disable_basic_auth": "Usagi's management API authenticates with HTTP basic auth",
    "management.oauth_disable_basic_auth": "Usagi's management API authenticates with HTTP basic auth",
    "management.oauth_provider_url": "Usagi's management API has no OAuth 2 login",
    "management.oauth_client_id": "Usagi's management API has no OAuth 2 login",
    "management.oauth_client_secret": "Usagi's management API has no OAuth 2 login",
    "management.oauth_resource_servers": "Usagi's management API has no OAuth 2 login",
    "management.oauth_scopes": "Usagi's management API has no OAuth 2 login",
    "management.oauth_metadata_url": "Usagi's management API has no OAuth 2 login",
    "management.oauth_response_type": "Usagi's management API has no OAuth 2 login",
    "management.oauth_authorization_endpoint_params": "Usagi's management API has no OAuth 2 login",
    "management.oauth_token_endpoint_params": "Usagi's management API has no OAuth 2 login",
    "management.oauth_initiated_logon_type": "Usagi's management API has no OAuth 2 login",
    "management.credential_encryption_secret": "Usagi stores no encrypted credentials",
    "prometheus.ssl": "Usagi serves /metrics over plain HTTP only",
}

# Settings of RabbitMQ plugins Usagi does not have: refused, naming the plugin.
PLUGINS = {
    "mqtt": "rabbitmq_mqtt", "web_mqtt": "rabbitmq_web_mqtt", "stomp": "rabbitmq_stomp",
    "web_stomp": "rabbitmq_web_stomp", "shovel": "rabbitmq_shovel",
    "federation": "rabbitmq_federation", "federation-upstream": "rabbitmq_federation",
    "auth_ldap": "rabbitmq_auth_backend_ldap", "auth_http": "rabbitmq_auth_backend_http",
    "auth_oauth2": "rabbitmq_auth_backend_oauth2", "auth_cache": "rabbitmq_auth_backend_cache",
    "trust_store": "rabbitmq_trust_store", "tracing": "rabbitmq_tracing",
    "event_exchange": "rabbitmq_event_exchange", "peer_discovery": "a peer discovery plugin",
    "consul": "rabbitmq_peer_discovery_consul", "etcd": "rabbitmq_peer_discovery_etcd",
    "web_dispatch": "rabbitmq_web_dispatch", "aws": "rabbitmq_aws", "amqp1_0": "rabbitmq_amqp1_0",
}


def _match(pattern: str, words: tuple, prefix: bool) -> bool:
    p = pattern.split(".")
    if len(words) < len(p) or (not prefix and len(words) != len(p)):
        return False
    return all(a == "$" or a == b for a, b in zip(p, words))


def _lookup(table: dict, words: tuple, prefix: bool):
    for pattern, v in table.items():
        if _match(pattern, words, prefix):
            return pattern, v
    return None, None


def _unknown(e: Entry) -> ConfigError:
    key = shown(e.key)
    plugin = PLUGINS.get(e.words[0])
    if plugin is not None:
        return e.error(f"{key}: a setting of {plugin}, which Usagi does not have")
    known = [k.replace("$", "default") for k in APPLIED]
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.8) if len(e.key) <= 200 else None
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return e.error(f"unknown setting '{key}'{hint}")


# ------------------------------------------------------------------------------------------ meaning

def interpret(entries) -> Settings:
    """Check every entry (known key, valid value) and translate the file into Settings. Raises
    ConfigError for the first problem, in file order."""
    typed: dict = {}            # key -> (value, entry); the last line for a key wins
    s = Settings()
    for e in entries:
        pattern, conv = _lookup(APPLIED, e.words, prefix=False)
        if pattern is not None:
            typed[e.key] = (conv(e), e)
            continue
        pattern, why = _lookup(REFUSED, e.words, prefix=True)
        if pattern is not None:
            raise e.error(f"{e.key}: not supported by Usagi: {why}")
        pattern, why = _lookup(IGNORED, e.words, prefix=True)
        if pattern is not None:
            s.warnings.append((e, f"{e.key}: a RabbitMQ setting that does not apply to Usagi ({why}); ignored"))
            continue
        raise _unknown(e)
    _translate(typed, s)
    return s


def _prefixed(typed: dict, prefix: str) -> list:
    """(last word, value, entry) of the keys `prefix.X`, in file order."""
    n = prefix.count(".") + 2
    out = [(e.words[-1], v, e) for k, (v, e) in typed.items()
           if k.startswith(prefix + ".") and len(e.words) == n]
    return sorted(out, key=lambda t: (t[2].file, t[2].line))


def _set(s: Settings, dest: str, value, e: Entry):
    s.values[dest] = value
    s.origin[dest] = e


def _translate(typed: dict, s: Settings):
    get = typed.get

    def warn(e, text):
        s.warnings.append((e, text))

    # listeners
    for proto, dest in (("tcp", "amqp_listeners"), ("ssl", "amqps_listeners")):
        none = get(f"listeners.{proto}")
        items = _prefixed(typed, f"listeners.{proto}")
        if none is not None:
            _set(s, dest, [], none[1])
        elif items:
            out = []
            for _name, hp, e in items:
                if hp not in out:
                    out.append(hp)
            _set(s, dest, out, items[0][2])

    # TLS
    if get("ssl_options") is None:
        for k, dest in (("certfile", "tls_cert"), ("keyfile", "tls_key"), ("cacertfile", "tls_ca"),
                        ("password", "tls_password")):
            if get(f"ssl_options.{k}") is not None:
                _set(s, dest, *get(f"ssl_options.{k}"))
        verify = get("ssl_options.verify")
        fail = get("ssl_options.fail_if_no_peer_cert")
        if verify is not None:
            if verify[0] == "verify_none":
                _set(s, "tls_verify", "none", verify[1])
            else:
                _set(s, "tls_verify", "require" if fail is not None and fail[0] else "peer", verify[1])
                if "tls_ca" not in s:
                    raise verify[1].error("ssl_options.verify = verify_peer needs ssl_options.cacertfile: the "
                                          "CA certificates client certificates are verified against")
        elif fail is not None and fail[0]:
            raise fail[1].error("ssl_options.fail_if_no_peer_cert = true needs ssl_options.verify = verify_peer")
        crl = get("ssl_options.crl_check")
        if crl is not None and crl[0] != "false":
            raise crl[1].error("ssl_options.crl_check: not supported by Usagi: Usagi does not check "
                               "certificate revocation lists")
        if "tls_key" in s and "tls_cert" not in s:
            raise s.origin["tls_key"].error("ssl_options.keyfile needs ssl_options.certfile")
    if s.get("amqps_listeners") and "tls_cert" not in s:
        raise s.origin["amqps_listeners"].error(
            "a TLS listener (listeners.ssl) needs ssl_options.certfile and ssl_options.keyfile")
    for k, dest in (("ssl_cert_login_from", "tls_cert_login_from"),
                    ("ssl_cert_login_san_type", "tls_cert_login_san_type"),
                    ("ssl_cert_login_san_index", "tls_cert_login_san_index")):
        if get(k) is not None:
            v, e = get(k)
            _set(s, dest, "subject_alternative_name" if v == "subject_alt_name" else v, e)

    # authentication
    mechs = _prefixed(typed, "auth_mechanisms")
    if mechs:
        allowed = []
        for _n, m, e in sorted(mechs, key=lambda t: t[0]):
            if m in ("PLAIN", "AMQPLAIN", "EXTERNAL"):
                allowed.append(m)
            elif m == "ANONYMOUS":
                warn(e, "auth_mechanisms: Usagi does not offer ANONYMOUS; it is left out")
            else:
                raise e.bad("Usagi offers PLAIN, AMQPLAIN and EXTERNAL")
        _set(s, "auth_mechanisms", tuple(allowed), mechs[0][2])
    for k, (v, e) in typed.items():
        if k.startswith("auth_backends.") and v not in ("internal", "rabbit_auth_backend_internal"):
            raise e.error(f"{k}: not supported by Usagi: Usagi authenticates with its internal user "
                          f"database only (auth_backends.1 = internal)")

    # the default user and vhost
    for k in ("default_user", "default_pass", "default_vhost", "cluster_name"):
        if get(k) is not None:
            _set(s, k, *get(k))
    perms = [get(f"default_permissions.{k}") for k in ("configure", "write", "read")]
    if any(perms):
        first = next(p for p in perms if p)
        _set(s, "default_permissions", tuple(p[0] if p else ".*" for p in perms), first[1])
    tags = _prefixed(typed, "default_user_tags")
    if tags:
        _set(s, "default_user_tags", [t for t, on, _e in tags if on], tags[0][2])
    if get("loopback_users") is not None:
        _set(s, "loopback_users", (), get("loopback_users")[1])
    else:
        users = _prefixed(typed, "loopback_users")
        if users:
            _set(s, "loopback_users", tuple(u for u, on, _e in users if on), users[0][2])

    # the protocol
    for k, dest in (("heartbeat", "heartbeat"), ("frame_max", "frame_max"), ("max_message_size", "max_message_size"),
                    ("consumer_timeout", "consumer_timeout"), ("collect_statistics_interval",
                                                               "collect_statistics_interval")):
        if get(k) is not None:
            _set(s, dest, *get(k))
    for k in ("max_channels_per_connection", "channel_max"):
        if get(k) is not None:
            _set(s, "channel_max", *get(k))
    for k in ("connection_max", "max_connections"):
        if get(k) is not None:
            v, e = get(k)
            _set(s, "max_connections", -1 if v is None else v, e)
    if get("handshake_timeout") is not None:
        v, e = get("handshake_timeout")
        _set(s, "handshake_timeout", 2 ** 31 if v is None else v, e)
    if get("proxy_protocol") is not None and get("proxy_protocol")[0]:
        raise get("proxy_protocol")[1].error(
            "proxy_protocol: not supported by Usagi: its listeners take AMQP clients directly")

    # resource limits
    absolute, relative = get("vm_memory_high_watermark.absolute"), get("vm_memory_high_watermark.relative")
    if absolute is not None:
        if absolute[0] <= 0:
            # 0 would read as "not set" and leave the default fraction in force, silently
            raise absolute[1].bad("must be at least 1 byte; " + INFORMATION_UNIT_HELP)
        _set(s, "vm_memory_high_watermark_absolute", *absolute)
        if relative is not None:
            warn(relative[1], "both vm_memory_high_watermark.absolute and vm_memory_high_watermark.relative are "
                 "configured; vm_memory_high_watermark.absolute has precedence")
    elif relative is not None:
        _set(s, "vm_memory_high_watermark", *relative)
    if get("total_memory_available_override_value") is not None:
        v, e = get("total_memory_available_override_value")
        if v <= 0:
            raise e.bad("must be a positive size; " + INFORMATION_UNIT_HELP)
        _set(s, "total_memory", v, e)
    absolute, relative = get("disk_free_limit.absolute"), get("disk_free_limit.relative")
    if absolute is not None:
        _set(s, "disk_free_limit", *absolute)
        if relative is not None:
            warn(relative[1], "both disk_free_limit.absolute and disk_free_limit.relative are configured; "
                 "disk_free_limit.absolute has precedence")
    elif relative is not None:
        _set(s, "disk_free_limit_relative", *relative)

    # definitions
    backend = get("definitions.import_backend")
    if backend is not None and backend[0] not in ("local_filesystem", "local",
                                                   "rabbit_definitions_import_local_filesystem",
                                                   "rabbitmq_definitions_import_local_filesystem"):
        raise backend[1].error(f"definitions.import_backend: not supported by Usagi: '{backend[0]}' (Usagi "
                               f"loads definitions from a local file or directory)")
    for k in ("management.load_definitions", "definitions.local.path", "load_definitions"):
        if get(k) is not None:
            _set(s, "load_definitions", *get(k))

    # management and metrics
    tcp_port = get("management.tcp.port") or get("management.listener.port")
    tcp_ip = get("management.tcp.ip") or get("management.listener.ip")
    ssl_port = get("management.ssl.port")
    legacy_ssl = get("management.listener.ssl")
    if legacy_ssl is not None and legacy_ssl[0]:
        raise legacy_ssl[1].error("management.listener.ssl: give the HTTPS listener with management.ssl.port, "
                                  "management.ssl.certfile and management.ssl.keyfile")
    if ssl_port is not None:
        if tcp_port is not None:
            raise ssl_port[1].error("Usagi serves the management API on one listener: set management.tcp.port "
                                    "or management.ssl.port, not both")
        if get("management.ssl.certfile") is None:
            raise ssl_port[1].error("management.ssl.port needs management.ssl.certfile (and keyfile)")
        _set(s, "management_port", *ssl_port)
        for k, dest in (("certfile", "management_tls_cert"), ("keyfile", "management_tls_key"),
                        ("cacertfile", "management_tls_ca"), ("password", "management_tls_password")):
            if get(f"management.ssl.{k}") is not None:
                _set(s, dest, *get(f"management.ssl.{k}"))
        if get("management.ssl.ip") is not None:
            _set(s, "management_host", *get("management.ssl.ip"))
    else:
        for k in ("certfile", "keyfile", "cacertfile", "password", "ip"):
            if get(f"management.ssl.{k}") is not None:
                warn(get(f"management.ssl.{k}")[1], f"management.ssl.{k} without management.ssl.port; ignored")
        if tcp_port is not None:
            _set(s, "management_port", *tcp_port)
    if tcp_ip is not None and ssl_port is None:
        _set(s, "management_host", *tcp_ip)
    if get("management.http.max_body_size") is not None:
        _set(s, "management_max_body_size", *get("management.http.max_body_size"))
    if get("prometheus.tcp.port") is not None:
        _set(s, "metrics_port", *get("prometheus.tcp.port"))
    if get("prometheus.tcp.ip") is not None:
        _set(s, "metrics_host", *get("prometheus.tcp.ip"))
    path = get("prometheus.path")
    if path is not None and path[0].rstrip("/") != "/metrics":
        raise path[1].error("prometheus.path: not supported by Usagi: metrics are served at /metrics")
    auth = get("prometheus.authentication.enabled")
    if auth is not None and auth[0]:
        raise auth[1].error("prometheus.authentication.enabled: not supported by Usagi: /metrics is served "
                            "without authentication")

    # logging
    for k, dest in (("log.dir", "log_dir"), ("log.file.level", "log_file_level"),
                    ("log.file.rotation.size", "log_file_rotation_size"),
                    ("log.file.rotation.count", "log_file_rotation_count"),
                    ("log.file.formatter", "log_file_formatter"), ("log.console", "log_console"),
                    ("log.console.level", "log_console_level"), ("log.console.formatter", "log_console_formatter"),
                    ("log.console.stdio", "log_console_stdio")):
        if get(k) is not None:
            _set(s, dest, *get(k))
    if get("log.file") is not None:
        v, e = get("log.file")
        _set(s, "log_file", False if v.strip() == "false" else v, e)
    categories = {}
    for k, (level, e) in typed.items():
        if len(e.words) == 3 and e.words[0] == "log" and e.words[2] == "level" and \
                e.words[1] not in ("file", "console"):
            cat = e.words[1]
            if cat in LOG_CATEGORIES:
                categories[cat] = level
            else:
                warn(e, f"{k}: Usagi has no '{cat}' log category; ignored")
    if categories:
        _set(s, "log_categories", categories, None)


# log.CATEGORY.level -> the logger it sets (None: every logger, the default level)
LOG_CATEGORIES = {"connection": "usagi.connection", "channel": "usagi.channel", "default": None,
                  "queue": "usagi.broker", "upgrade": "usagi.recovery", "mirroring": None,
                  "federation": None, "user": None, "ra": None}


def load(path: str) -> Settings:
    """Read and interpret a configuration file (and what it includes)."""
    entries, files = read_file(path)
    s = interpret(entries)
    s.files = files
    return s


def check_paths(s: Settings):
    """The files the settings name exist and can be read (ConfigError at the line naming one)."""
    for dest, what in (("tls_cert", "ssl_options.certfile"), ("tls_key", "ssl_options.keyfile"),
                       ("tls_ca", "ssl_options.cacertfile"), ("management_tls_cert", "management.ssl.certfile"),
                       ("management_tls_key", "management.ssl.keyfile"),
                       ("management_tls_ca", "management.ssl.cacertfile")):
        p = s.get(dest)
        if p and not (os.path.isfile(p) and os.access(p, os.R_OK)):
            e = s.origin[dest]
            raise e.error(f"{what}: '{p}': file does not exist or cannot be read")
    p = s.get("load_definitions")
    if p and not os.access(p, os.R_OK):
        e = s.origin["load_definitions"]
        raise e.error(f"{e.key}: '{p}': file does not exist or cannot be read by the node")
    d = s.get("log_dir")
    if d and not os.path.isdir(d):
        e = s.origin["log_dir"]
        raise e.error(f"log.dir: '{d}' is not a directory")
