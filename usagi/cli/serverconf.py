"""How usagi-server combines its three sources of settings: the command line, USAGI_* environment
variables, and a RabbitMQ configuration file (`--config FILE`, USAGI_CONFIG_FILE, or RabbitMQ's
RABBITMQ_CONFIG_FILE).

Precedence: an option given on the command line, then its environment variable, then the file,
then the built-in default. For the listeners: `--host` and `--port` (or their variables), when
given, replace that part of each of the file's `listeners.tcp.*`; `--tls-port` likewise for
`listeners.ssl.*`. With a file that sets `ssl_options.certfile` but no `listeners.ssl.*`, there is
no TLS listener, as with RabbitMQ (`--tls-port` adds one).

`apply()` writes the file's values into the argparse namespace for every option that was not
given, and the settings only the file has (default permissions, loopback users, log outputs...)
under their own names (see `CONFIG_ONLY`).
"""
from __future__ import annotations

import argparse
import os

from ..config import logs, rabbitconf
from ..config.rabbitconf import ConfigError

EX_CONFIG = 78      # sysexits' EX_CONFIG: the unit file does not restart a node whose files are wrong

# settings only the configuration file has, and their defaults (set on the parser)
CONFIG_ONLY = {
    "amqp_listeners": None, "amqps_listeners": None, "default_vhost": "/",
    "default_permissions": (".*", ".*", ".*"), "default_user_tags": ("administrator",),
    "loopback_users": ("guest",), "auth_mechanisms": None, "tls_password": None,
    "management_tls_cert": None, "management_tls_key": None, "management_tls_ca": None,
    "management_tls_password": None, "management_host": None, "metrics_host": None,
    "load_definitions": None, "cluster_name": None, "collect_statistics_interval": None,
    "total_memory": None, "disk_free_limit_relative": None,
    "log_dir": None, "log_file": None, "log_file_level": "info", "log_file_rotation_size": 0,
    "log_file_rotation_count": 0, "log_file_formatter": "plaintext", "log_console": True,
    "log_console_level": None, "log_console_formatter": "plaintext", "log_console_stdio": "stderr",
    "log_categories": None,
}

# file settings that have a command-line option of the same name
WITH_OPTION = ("heartbeat", "frame_max", "channel_max", "max_message_size", "consumer_timeout",
               "handshake_timeout", "max_connections", "default_user", "default_pass", "tls_cert", "tls_key",
               "tls_ca", "tls_verify", "tls_cert_login_from", "tls_cert_login_san_type",
               "tls_cert_login_san_index", "management_port", "metrics_port", "management_max_body_size",
               "disk_free_limit")

# options whose environment variable is not USAGI_ + the option's name
ENV_NAMES = {"config": "USAGI_CONFIG_FILE"}


def config_path(args) -> str | None:
    """The configuration file to read: --config, USAGI_CONFIG_FILE, else RABBITMQ_CONFIG_FILE (which,
    as with RabbitMQ, may leave out the .conf extension)."""
    path = args.config or os.environ.get("RABBITMQ_CONFIG_FILE") or ""
    if not path:
        return None
    if not os.path.exists(path) and not path.endswith(".conf") and os.path.exists(path + ".conf"):
        path += ".conf"
    if path.endswith(".config"):
        raise ConfigError(path, None, "this is the classic Erlang-term format (rabbitmq.config); Usagi reads "
                                      "the rabbitmq.conf format: key = value")
    return path


def explicit_options(build_parser, argv) -> set:
    """The options given on the command line or by their environment variable."""
    p = build_parser()
    for a in p._actions:
        if a.dest != "help":
            a.default = argparse.SUPPRESS
    ns, _ = p.parse_known_args(argv)
    given = set(vars(ns))
    for a in p._actions:
        env = ENV_NAMES.get(a.dest, "USAGI_" + a.dest.upper())
        if os.environ.get(env):
            given.add(a.dest)
    return given


def total_memory(args) -> int:
    if args.total_memory:
        return args.total_memory
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 0


def apply(args, s: rabbitconf.Settings, explicit: set):
    """The file's settings into `args`, where no option said otherwise."""
    for dest in WITH_OPTION:
        if dest in s and dest not in explicit:
            setattr(args, dest, s.get(dest))
    for dest in CONFIG_ONLY:
        if dest in s:
            setattr(args, dest, s.get(dest))
    if not {"vm_memory_high_watermark", "vm_memory_high_watermark_absolute"} & explicit:
        if "vm_memory_high_watermark_absolute" in s:
            args.vm_memory_high_watermark_absolute = s.get("vm_memory_high_watermark_absolute")
        elif "vm_memory_high_watermark" in s:
            args.vm_memory_high_watermark = s.get("vm_memory_high_watermark")
            args.vm_memory_high_watermark_absolute = 0
            if args.total_memory:
                # a fraction of the memory the file says there is: an absolute limit
                args.vm_memory_high_watermark_absolute = int(args.total_memory * args.vm_memory_high_watermark)
    if args.disk_free_limit_relative is not None and "disk_free_limit" not in explicit:
        args.disk_free_limit = int(args.disk_free_limit_relative * total_memory(args))
    if args.log_categories:
        args.log_categories = {rabbitconf.LOG_CATEGORIES[c]: lvl for c, lvl in args.log_categories.items()}


def _merge(conf_list, host, port, host_given: bool, port_given: bool) -> list:
    if conf_list is None or (host_given and port_given) or (not conf_list and (host_given or port_given)):
        return [(host or None, port)]
    out = []
    for h, p in conf_list:
        item = ((host or None) if host_given else h, port if port_given else p)
        if item not in out:
            out.append(item)
    return out


def listeners(args, explicit: set) -> list:
    """(proto, host, port) of the AMQP and AMQPS listeners."""
    host_given = "host" in explicit
    out = [("amqp", h, p) for h, p in _merge(args.amqp_listeners, args.host, args.port, host_given,
                                             "port" in explicit)]
    if args.tls_cert:
        conf = args.amqps_listeners
        if conf is None and args.config_used and not {"tls_port", "tls_cert"} & explicit:
            conf = []                      # a file with certificates but no listeners.ssl: no TLS listener
        if conf == [] and "tls_port" not in explicit:
            tls = []
        else:
            tls = _merge(conf, args.host, args.tls_port, host_given, "tls_port" in explicit)
        out += [("amqps", h, p) for h, p in tls]
    return out


def log_settings(args, explicit: set) -> logs.LogSettings:
    """The log's outputs: --log-level (when given) sets every output's level."""
    level = args.log_level if "log_level" in explicit or args.log_console_level is None else args.log_console_level
    file_level = args.log_level if "log_level" in explicit else args.log_file_level
    path = args.log_file or None
    if path and not os.path.isabs(path):
        path = os.path.join(args.log_dir or os.getcwd(), path)
    return logs.LogSettings(console=bool(args.log_console), console_level=level,
                            console_format=args.log_console_formatter, console_stream=args.log_console_stdio,
                            file=path, file_level=file_level, file_format=args.log_file_formatter,
                            rotation_size=args.log_file_rotation_size, rotation_count=args.log_file_rotation_count,
                            categories=args.log_categories or {})


def load(args, build_parser, argv) -> tuple:
    """Read the configuration file, if one is named, into `args`. Returns (Settings or None, the
    set of options given explicitly). Raises ConfigError."""
    explicit = explicit_options(build_parser, argv)
    args.config_used = None
    path = config_path(args)
    if path is None:
        return None, explicit
    s = rabbitconf.load(path)
    rabbitconf.check_paths(s)
    args.config_used = path
    apply(args, s, explicit)
    return s, explicit
