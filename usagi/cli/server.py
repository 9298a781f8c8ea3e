"""usagi-server: run the broker.

Every option can also be given as an environment variable: --data-dir is USAGI_DATA_DIR, and so on.
A RabbitMQ configuration file (rabbitmq.conf) can be given with --config; options and variables win
over it (see serverconf.py). Sizes take units: 1GB, 500MB, 2GiB.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time

from .. import RABBITMQ_COMPAT_VERSION, __version__
from ..config.units import parse_bytesize, parse_information_unit
from . import serverconf
from ..server.startup import (DataDirInUse, NodeIdentityError, apply_limit_options, build_broker,  # noqa: F401
                              import_delayed_db, make_broker, open_data_dir, read_node_identity,
                              write_node_identity)


def default_data_dir() -> str:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "usagi")


def _env(name, default):
    return os.environ.get("USAGI_" + name, default)


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def _size(text: str) -> int:
    """A number of bytes, with RabbitMQ's information units (1GB, 500MB, 2GiB)."""
    try:
        return parse_information_unit(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} ({e})") from None


def _bytesize(text: str) -> int:
    """A number of bytes as frame_max takes it in rabbitmq.conf (128KB is 131072)."""
    try:
        return parse_bytesize(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} ({e})") from None


def _port(text: str) -> int:
    v = _int(text)
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range 0-65535: {v}")
    return v


MAX_CATCHUP_RATE = 1 << 20      # MiB/s (1 TiB/s): above it, in bytes, the pace's arithmetic overflows


def _catchup_rate(text: str) -> float:
    """A rate in MiB/s: 0 (no limit), or at least one byte a second and at most MAX_CATCHUP_RATE
    (a tiny positive rate would round to 0 bytes, which means no limit; a huge one overflows)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= v <= MAX_CATCHUP_RATE:
        raise argparse.ArgumentTypeError(f"must be 0 (no limit) or a number of MiB/s up to "
                                         f"{MAX_CATCHUP_RATE}: {text!r}")
    if v and v * 1024 * 1024 < 1:
        raise argparse.ArgumentTypeError(f"must be 0 (no limit) or at least one byte a second "
                                         f"({1 / (1024 * 1024):.3g} MiB/s): {text!r}")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="usagi-server", description="Usagi: an AMQP 0-9-1 message broker "
                                "that RabbitMQ clients use unchanged.")
    p.add_argument("--config", default=_env("CONFIG_FILE", ""), metavar="FILE",
                   help="a RabbitMQ configuration file (rabbitmq.conf format); options and environment "
                        "variables win over it (env USAGI_CONFIG_FILE, else RABBITMQ_CONFIG_FILE)")
    p.add_argument("--host", default=_env("HOST", ""),
                   help="interface to listen on (default: all interfaces; env USAGI_HOST)")
    p.add_argument("--port", type=_port, default=_env("PORT", "5672"),
                   help="AMQP port; 0 picks a free one (default 5672; env USAGI_PORT)")
    p.add_argument("--data-dir", default=_env("DATA_DIR", default_data_dir()),
                   help="where durable state lives (default ~/.local/share/usagi; env USAGI_DATA_DIR)")
    p.add_argument("--in-memory", action="store_true", default=_env("IN_MEMORY", "") not in ("", "0"),
                   help="keep nothing on disk (env USAGI_IN_MEMORY=1)")
    p.add_argument("--management-port", type=_int, default=_env("MANAGEMENT_PORT", "15672"),
                   help="HTTP management API and dashboard port; 0 picks a free one, -1 disables "
                        "(default 15672; env USAGI_MANAGEMENT_PORT)")
    p.add_argument("--metrics-port", type=_port, default=_env("METRICS_PORT", "15692"),
                   help="Prometheus metrics port (default 15692; env USAGI_METRICS_PORT)")
    p.add_argument("--management-max-body-size", type=_size, default=_env("MANAGEMENT_MAX_BODY_SIZE", "20000000"),
                   help="largest request body the management API reads, in bytes; a larger one is refused "
                        "(413) before it is read (management.http.max_body_size; default 20000000; env "
                        "USAGI_MANAGEMENT_MAX_BODY_SIZE)")
    p.add_argument("--no-management", action="store_true",
                   default=_env("NO_MANAGEMENT", "") not in ("", "0"),
                   help="do not start the management API and metrics listeners")
    p.add_argument("--log-level", default=_env("LOG_LEVEL", "info"),
                   choices=["debug", "info", "warning", "error", "critical"],
                   help="log verbosity (default info; env USAGI_LOG_LEVEL)")
    p.add_argument("--frame-max", type=_bytesize, default=_env("FRAME_MAX", "131072"),
                   help="largest frame offered in connection.tune, in bytes; 128KB is 131072 (frame_max)")
    p.add_argument("--channel-max", type=_int, default=_env("CHANNEL_MAX", "2047"))
    p.add_argument("--heartbeat", type=_int, default=_env("HEARTBEAT", "60"))
    p.add_argument("--max-message-size", type=_size, default=_env("MAX_MESSAGE_SIZE", str(16 * 1024 * 1024)),
                   help="larger messages are refused with 406 (bytes, or a size such as 64MiB)")
    p.add_argument("--disk-free-limit", type=_size, default=_env("DISK_FREE_LIMIT", str(50 * 1000 * 1000)),
                   help="block publishers when the data dir's disk has less free space: bytes, or a size "
                        "such as 1GB or 500MiB (default 50MB; env USAGI_DISK_FREE_LIMIT)")
    p.add_argument("--vm-memory-high-watermark", type=float,
                   default=_env("VM_MEMORY_HIGH_WATERMARK", "0.4"),
                   help="block publishers when the process uses more than this fraction of RAM "
                        "(default 0.4; env USAGI_VM_MEMORY_HIGH_WATERMARK)")
    p.add_argument("--vm-memory-high-watermark-absolute", type=_size,
                   default=_env("VM_MEMORY_HIGH_WATERMARK_ABSOLUTE", "0"),
                   help="block publishers when the process uses more than this many bytes (or 2GiB, "
                        "1500MB...); overrides "
                        "--vm-memory-high-watermark (vm_memory_high_watermark.absolute; env "
                        "USAGI_VM_MEMORY_HIGH_WATERMARK_ABSOLUTE)")
    add_limit_and_tls_options(p)
    add_cluster_options(p)
    p.add_argument("--default-user", default=_env("DEFAULT_USER", "guest"))
    p.add_argument("--default-pass", default=_env("DEFAULT_PASS", "guest"))
    p.add_argument("--no-uvloop", action="store_true", help="use the standard asyncio event loop")
    p.add_argument("--version", action="version", version=f"usagi-server {__version__}")
    p.set_defaults(**serverconf.CONFIG_ONLY)
    return p


def add_cluster_options(p: argparse.ArgumentParser):
    """Cluster mode (off unless etcd endpoints are given): several nodes, one leader, replicated."""
    p.add_argument("--cluster-etcd", default=_env("CLUSTER_ETCD", ""),
                   help="etcd endpoints (host:port, comma-separated): run as a node of a cluster "
                        "(env USAGI_CLUSTER_ETCD)")
    p.add_argument("--cluster-name", default=_env("CLUSTER_NAME", "usagi"),
                   help="the cluster's name: its keys in etcd (default usagi; env USAGI_CLUSTER_NAME)")
    p.add_argument("--node-name", default=_env("NODE_NAME", ""),
                   help="this node's name (default usagi@<hostname>; env USAGI_NODE_NAME)")
    p.add_argument("--advertise-host", default=_env("ADVERTISE_HOST", ""),
                   help="the address other nodes and clients reach this node at (default: --host, else "
                        "this host's name; env USAGI_ADVERTISE_HOST)")
    p.add_argument("--replication-port", type=_port, default=_env("REPLICATION_PORT", "25672"),
                   help="port of the replication stream between nodes (default 25672; env "
                        "USAGI_REPLICATION_PORT)")
    p.add_argument("--cluster-lease-ttl", type=_int, default=_env("CLUSTER_LEASE_TTL", "10"),
                   help="seconds without renewal after which a node's etcd lease ends and, for a leader, "
                        "another node takes over (default 10; env USAGI_CLUSTER_LEASE_TTL)")
    p.add_argument("--cluster-min-in-sync", type=_int, default=_env("CLUSTER_MIN_IN_SYNC", "1"),
                   help="confirm only while at least this many nodes (the leader included) are in sync "
                        "(default 1; env USAGI_CLUSTER_MIN_IN_SYNC)")
    p.add_argument("--cluster-join-timeout", type=float, default=_env("CLUSTER_JOIN_TIMEOUT", "60"),
                   help="seconds a starting node keeps trying to reach etcd before it gives up (default 60; "
                        "a node that restarts itself after losing its lease never gives up; env "
                        "USAGI_CLUSTER_JOIN_TIMEOUT)")
    p.add_argument("--cluster-ack-timeout", type=float, default=_env("CLUSTER_ACK_TIMEOUT", "3"),
                   help="seconds a follower may hold up confirms before it leaves the in-sync set "
                        "(default 3; env USAGI_CLUSTER_ACK_TIMEOUT)")
    p.add_argument("--cluster-catchup-rate", type=_catchup_rate, default=_env("CLUSTER_CATCHUP_RATE", "16"),
                   help="MiB per second at which a returning follower is sent what it missed, on top of "
                        "the live stream, so its catch-up leaves the others the machine's CPU and disk; "
                        "0 for no limit (default 16; env USAGI_CLUSTER_CATCHUP_RATE)")


def add_limit_and_tls_options(p: argparse.ArgumentParser):
    """Limits (RabbitMQ's connection_max, consumer_timeout, handshake_timeout) and TLS (ssl_options)."""
    p.add_argument("--max-connections", type=_int, default=_env("MAX_CONNECTIONS", "-1"),
                   help="node-wide connection limit, -1 for none (connection_max; env USAGI_MAX_CONNECTIONS)")
    p.add_argument("--consumer-timeout", type=_int, default=_env("CONSUMER_TIMEOUT", "1800000"),
                   help="close a channel whose delivery stays unacknowledged this long, in ms; 0 disables "
                        "(default 1800000, 30 minutes; env USAGI_CONSUMER_TIMEOUT)")
    p.add_argument("--handshake-timeout", type=_int, default=_env("HANDSHAKE_TIMEOUT", "10000"),
                   help="time a client has from connecting to connection.open, in ms "
                        "(default 10000; env USAGI_HANDSHAKE_TIMEOUT)")
    p.add_argument("--tls-cert", default=_env("TLS_CERT", ""),
                   help="PEM certificate (chain) of the AMQPS listener; enables it "
                        "(ssl_options.certfile; env USAGI_TLS_CERT)")
    p.add_argument("--tls-key", default=_env("TLS_KEY", ""),
                   help="PEM private key, if not in --tls-cert (ssl_options.keyfile; env USAGI_TLS_KEY)")
    p.add_argument("--tls-ca", default=_env("TLS_CA", ""),
                   help="PEM CA certificates that client certificates are verified against "
                        "(ssl_options.cacertfile; env USAGI_TLS_CA)")
    p.add_argument("--tls-port", type=_port, default=_env("TLS_PORT", "5671"),
                   help="AMQPS port when --tls-cert is given; 0 picks a free one (default 5671; env USAGI_TLS_PORT)")
    p.add_argument("--tls-verify", nargs="?", const="require", default=_env("TLS_VERIFY", "none"),
                   help="client certificates: none; peer (verify_peer: verified if sent); require (verify_peer "
                        "and fail_if_no_peer_cert, the default when the option is given without a value). "
                        "SASL EXTERNAL is offered when they are asked for (env USAGI_TLS_VERIFY)")
    p.add_argument("--tls-cert-login-from", default=_env("TLS_CERT_LOGIN_FROM", "common_name"),
                   choices=["common_name", "distinguished_name", "subject_alternative_name"],
                   help="where SASL EXTERNAL takes the user name from (ssl_cert_login_from; default "
                        "common_name; env USAGI_TLS_CERT_LOGIN_FROM)")
    p.add_argument("--tls-cert-login-san-type", default=_env("TLS_CERT_LOGIN_SAN_TYPE", "dns"),
                   choices=["dns", "ip", "email", "uri", "other_name"],
                   help="SAN type for --tls-cert-login-from subject_alternative_name (default dns)")
    p.add_argument("--tls-cert-login-san-index", type=_int, default=_env("TLS_CERT_LOGIN_SAN_INDEX", "0"),
                   help="which SAN of that type (default 0, the first)")
    p.add_argument("--management-tls", action="store_true",
                   default=_env("MANAGEMENT_TLS", "") not in ("", "0"),
                   help="serve the management API over HTTPS with the --tls-cert/--tls-key certificate "
                        "(env USAGI_MANAGEMENT_TLS=1)")


def tls_contexts(args):
    """(AMQPS context or None, management HTTPS context or None); raises TLSConfigError."""
    from ..server.tls import TLSConfigError, server_context
    mgmt = None
    if args.management_tls_cert:        # management.ssl.* of a configuration file
        mgmt = server_context(args.management_tls_cert, args.management_tls_key, args.management_tls_ca, "none",
                              password=args.management_tls_password)
    if not args.tls_cert:
        if args.management_tls:
            raise TLSConfigError("--management-tls needs --tls-cert")
        return None, mgmt
    amqps = server_context(args.tls_cert, args.tls_key, args.tls_ca, args.tls_verify, password=args.tls_password)
    if args.management_tls and mgmt is None:
        mgmt = server_context(args.tls_cert, args.tls_key, args.tls_ca, "none", password=args.tls_password)
    return amqps, mgmt


def _describe_config(log, path, settings):
    log.info("configuration file(s): %s", ", ".join(settings.files) or path)
    for e, text in settings.warnings:
        log.warning("%s:%d: %s", e.file, e.line, text)


def range_error(args, configured: bool = False) -> str | None:
    """Why an option's value is out of its range, or None: checked by main and by usagi.testing's
    brokers in a thread, which are built from these options without main."""
    for name, value, lo, hi in (("frame-max", args.frame_max, 4096, 2 ** 31 - 1),
                                ("channel-max", args.channel_max, 0 if configured else 1, 65535),
                                ("heartbeat", args.heartbeat, 0, 65535),
                                ("max-message-size", args.max_message_size, 1, 512 * 1024 * 1024)):
        if not lo <= value <= hi:
            return f"--{name} must be between {lo} and {hi}, got {value}"
    if not 0.0 <= args.vm_memory_high_watermark <= 1.0:       # also refuses nan
        return (f"--vm-memory-high-watermark must be a fraction between 0.0 and 1.0, got "
                f"{args.vm_memory_high_watermark}")
    return None


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings, explicit = serverconf.load(args, build_parser, argv)
    except serverconf.ConfigError as e:
        print(f"usagi-server: error: {e}", file=sys.stderr)
        return serverconf.EX_CONFIG
    from ..config import logs
    ls = serverconf.log_settings(args, explicit)
    try:
        logs.setup(ls)
    except OSError as e:
        where = settings.where("log_file") if settings is not None else ""
        print(f"usagi-server: error: {where + ': ' if where else ''}cannot open the log file {ls.file}: "
              f"{e.strerror or e}", file=sys.stderr)
        return serverconf.EX_CONFIG
    log = logging.getLogger("usagi")
    if settings is not None:
        _describe_config(log, args.config_used, settings)
    error = range_error(args, settings is not None)
    if error:
        print(f"usagi-server: error: {error}", file=sys.stderr)
        return 2
    if not args.no_uvloop:
        try:
            import uvloop
            uvloop.install()
        except ImportError:
            pass
    from ..core import hot
    if hot.WARNING:
        log.warning("%s", hot.WARNING)
    log.info("hot path: %s", hot.DESCRIPTION)
    try:
        tls_ctx, mgmt_tls_ctx = tls_contexts(args)
    except Exception as e:
        # certificates named by the configuration file: a bad configuration (exit 78, at the file's line)
        keys = [k for k in ("tls_cert", "tls_key", "tls_ca", "management_tls_cert", "management_tls_key",
                            "management_tls_ca") if settings is not None and k in settings and k not in explicit]
        if keys:
            log.error("cannot start: %s (%s)", e, ", ".join(f"{k} at {settings.where(k)}" for k in keys))
            return serverconf.EX_CONFIG
        log.error("%s", e)
        return 1
    listeners = serverconf.listeners(args, explicit)
    if args.cluster_etcd:
        if args.in_memory:
            print("usagi-server: error: a cluster node keeps its store on disk: --in-memory cannot be "
                  "used with --cluster-etcd", file=sys.stderr)
            return 2
        amqp = [x for x in listeners if x[0] == "amqp"]
        tls = [x for x in listeners if x[0] == "amqps"]
        if len(amqp) != 1 or len(tls) > 1:
            print("usagi-server: error: a cluster node listens on one AMQP address (and one AMQPS port): "
                  "give one listeners.tcp (and at most one listeners.ssl)", file=sys.stderr)
            return serverconf.EX_CONFIG
        args.host = amqp[0][1] or args.host
        args.port = amqp[0][2]
        if tls:
            args.tls_port = tls[0][2]
        from ..cluster.node import run_node
        try:
            return asyncio.run(run_node(args, tls_ctx, mgmt_tls_ctx))
        except KeyboardInterrupt:
            return 0
    t0 = time.monotonic()
    try:
        broker, counts = make_broker(args)
    except DataDirInUse as e:
        log.error("%s", e)
        return 1
    except Exception as e:
        log.error("cannot start with data dir %s: %s", args.data_dir, e)
        return 1
    if args.load_definitions:
        from ..mgmt.bootdefs import DefinitionsError, load_at_boot
        try:
            load_at_boot(broker, args.load_definitions)
        except DefinitionsError as e:
            where = settings.where("load_definitions") if settings is not None else ""
            log.error("cannot start: %s%s", e, f" (load_definitions at {where})" if where else "")
            return serverconf.EX_CONFIG
    if args.cluster_name:
        broker.set_global_parameter("cluster_name", args.cluster_name)
        broker.store.commit()
    counts["seconds"] = time.monotonic() - t0
    broker.config.data_dir = None if args.in_memory else args.data_dir
    from ..server import sdnotify, serve

    services = []
    if not args.no_management and args.management_port != -1:
        try:
            from ..mgmt.service import management_service
            mgmt_host = args.host or None if "host" in explicit or args.management_host is None \
                else args.management_host
            metrics_host = args.host or None if "host" in explicit or args.metrics_host is None \
                else args.metrics_host
            interval = args.collect_statistics_interval / 1000.0 if args.collect_statistics_interval else None
            services.append(management_service(mgmt_host, args.management_port, args.metrics_port,
                                               sample_interval=interval, ssl_context=mgmt_tls_ctx,
                                               max_body_size=args.management_max_body_size,
                                               metrics_host=metrics_host))
        except ImportError:
            pass

    def started(server, svcs):
        log.info("Usagi %s (RabbitMQ %s compatible) started; data dir %s; recovered %d queues and %d "
                 "messages in %.2fs", __version__, RABBITMQ_COMPAT_VERSION,
                 "(in memory)" if args.in_memory else args.data_dir, counts["queues"], counts["messages"],
                 counts["seconds"])
        for proto, h, p in server.listeners:
            log.info("%s listener on %s:%d", "AMQPS" if proto == "amqps" else "AMQP", h, p)
        for s in svcs:
            for line in getattr(s, "describe", lambda: [])():
                log.info("%s", line)
        _limits(log, broker)
        try:
            import signal
            asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, logs.reopen)
        except (NotImplementedError, RuntimeError, AttributeError):
            pass
        sdnotify.notify("READY=1", f"STATUS=serving on {len(server.listeners)} AMQP listener(s)")

    try:
        return asyncio.run(serve(broker, args.host or None, args.port, started, services,
                                 tls_context=tls_ctx, listeners=listeners,
                                 on_stopping=lambda: sdnotify.notify("STOPPING=1")))
    except OSError as e:
        if "listener on" in str(e):        # the management or metrics port: the text names it
            log.error("cannot listen: %s", e)
        else:
            log.error("cannot listen on %s: %s", ", ".join(f"{h or '*'}:{p}" for _x, h, p in listeners), e)
        return 1
    except KeyboardInterrupt:
        return 0


def _limits(log, broker):
    """The resource limits the broker acts on, as RabbitMQ logs them at start."""
    from ..config.units import format_bytes
    from ..core.alarms import total_memory
    limit = broker.memory_limit()
    if broker.memory_limited():
        log.info("Memory high watermark set to %d MiB (%d bytes) of %d MiB (%d bytes) total", limit >> 20, limit,
                 total_memory() >> 20, total_memory())
    disk = broker.disk_free_limit()
    if disk:
        log.info("Disk free limit set to %s", format_bytes(disk))


if __name__ == "__main__":
    sys.exit(main())
