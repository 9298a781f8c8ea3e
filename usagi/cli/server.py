"""usagi-server: run the broker.

Every option can also be given as an environment variable: --data-dir is USAGI_DATA_DIR, and so on.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time

from .. import RABBITMQ_COMPAT_VERSION, __version__


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


def _port(text: str) -> int:
    v = _int(text)
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range 0-65535: {v}")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="usagi-server", description="Usagi: an AMQP 0-9-1 message broker "
                                "that RabbitMQ clients use unchanged.")
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
    p.add_argument("--no-management", action="store_true",
                   default=_env("NO_MANAGEMENT", "") not in ("", "0"),
                   help="do not start the management API and metrics listeners")
    p.add_argument("--log-level", default=_env("LOG_LEVEL", "info"),
                   choices=["debug", "info", "warning", "error", "critical"],
                   help="log verbosity (default info; env USAGI_LOG_LEVEL)")
    p.add_argument("--frame-max", type=_int, default=_env("FRAME_MAX", "131072"))
    p.add_argument("--channel-max", type=_int, default=_env("CHANNEL_MAX", "2047"))
    p.add_argument("--heartbeat", type=_int, default=_env("HEARTBEAT", "60"))
    p.add_argument("--max-message-size", type=_int, default=_env("MAX_MESSAGE_SIZE", str(16 * 1024 * 1024)))
    p.add_argument("--disk-free-limit", type=_int, default=_env("DISK_FREE_LIMIT", str(50 * 1000 * 1000)),
                   help="block publishers when the data dir's disk has less free space, in bytes "
                        "(default 50000000; env USAGI_DISK_FREE_LIMIT)")
    p.add_argument("--vm-memory-high-watermark", type=float,
                   default=_env("VM_MEMORY_HIGH_WATERMARK", "0.4"),
                   help="block publishers when the process uses more than this fraction of RAM "
                        "(default 0.4; env USAGI_VM_MEMORY_HIGH_WATERMARK)")
    p.add_argument("--vm-memory-high-watermark-absolute", type=_int,
                   default=_env("VM_MEMORY_HIGH_WATERMARK_ABSOLUTE", "0"),
                   help="block publishers when the process uses more than this many bytes; overrides "
                        "--vm-memory-high-watermark (vm_memory_high_watermark.absolute; env "
                        "USAGI_VM_MEMORY_HIGH_WATERMARK_ABSOLUTE)")
    add_limit_and_tls_options(p)
    p.add_argument("--default-user", default=_env("DEFAULT_USER", "guest"))
    p.add_argument("--default-pass", default=_env("DEFAULT_PASS", "guest"))
    p.add_argument("--no-uvloop", action="store_true", help="use the standard asyncio event loop")
    p.add_argument("--version", action="version", version=f"usagi-server {__version__}")
    return p


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


def apply_limit_options(cfg, args):
    cfg.connection_max = args.max_connections if args.max_connections >= 0 else None
    cfg.consumer_timeout = args.consumer_timeout / 1000.0 if args.consumer_timeout > 0 else 0.0
    cfg.handshake_timeout = max(0.001, args.handshake_timeout / 1000.0)
    cfg.ssl_cert_login_from = args.tls_cert_login_from
    cfg.ssl_cert_login_san_type = args.tls_cert_login_san_type
    cfg.ssl_cert_login_san_index = args.tls_cert_login_san_index
    if args.vm_memory_high_watermark_absolute > 0:
        # the alarm compares RSS with a fraction of RAM: express the absolute limit as that fraction
        try:
            total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
            cfg.memory_high_watermark = args.vm_memory_high_watermark_absolute / total
        except (ValueError, OSError):
            pass


def tls_contexts(args):
    """(AMQPS context or None, management HTTPS context or None); raises TLSConfigError."""
    from ..server.tls import TLSConfigError, server_context
    if not args.tls_cert:
        if args.management_tls:
            raise TLSConfigError("--management-tls needs --tls-cert")
        return None, None
    amqps = server_context(args.tls_cert, args.tls_key, args.tls_ca, args.tls_verify)
    mgmt = server_context(args.tls_cert, args.tls_key, args.tls_ca, "none") if args.management_tls else None
    return amqps, mgmt


class DataDirInUse(Exception):
    pass


_lock_file = None


def lock_data_dir(path: str):
    """One server per data dir: hold an exclusive lock on DATA_DIR/usagi.lock while running."""
    import fcntl
    global _lock_file
    f = open(os.path.join(path, "usagi.lock"), "a+")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        pid = f.read().strip() or "?"
        f.close()
        raise DataDirInUse(f"data dir {path} is in use by another usagi-server (pid {pid}); "
                           f"stop it or choose another --data-dir") from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    _lock_file = f


def setup_paging(data_dir):
    """Long queues page messages out to DATA_DIR/paging (a private temp dir when in memory)."""
    import shutil
    import tempfile
    from ..model.queue import PAGING
    if data_dir:
        path = os.path.join(data_dir, "paging")
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path, exist_ok=True)
    else:
        path = tempfile.mkdtemp(prefix="usagi-paging-")
        import atexit
        atexit.register(shutil.rmtree, path, True)
    PAGING["dir"] = path
    # the in-memory budget of one queue before it pages (settable for tests and small machines)
    PAGING["count"] = int(os.environ.get("USAGI_QUEUE_MEMORY_MESSAGES", PAGING["count"]))
    PAGING["bytes"] = int(os.environ.get("USAGI_QUEUE_MEMORY_BYTES", PAGING["bytes"]))


NODE_FILE = "node.json"


class NodeIdentityError(Exception):
    """The data dir's node identity and its store disagree: the message says what to do."""


def read_node_identity(data_dir: str) -> dict | None:
    """DATA_DIR/node.json, written at a node's first start: its id, its store's file name and when
    it was created. None in a fresh data dir (or one made before node.json existed)."""
    path = os.path.join(data_dir, NODE_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            ident = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise NodeIdentityError(f"{path} is unreadable ({e}); restore it from a backup, or move the data "
                                f"dir {data_dir} away to start a new node") from None
    store = ident.get("store") if isinstance(ident, dict) else None
    if not isinstance(store, str) or not store or os.sep in store or store in (".", ".."):
        raise NodeIdentityError(f"{path} does not name its store file; restore it from a backup, or move "
                                f"the data dir {data_dir} away to start a new node")
    return ident


def write_node_identity(data_dir: str, store_file: str) -> dict:
    """Write DATA_DIR/node.json for a new node (atomically: a crash leaves the old state or the new)."""
    import uuid
    ident = {"node_id": uuid.uuid4().hex, "store": store_file,
             "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
             "created_by": f"usagi {__version__}"}
    path = os.path.join(data_dir, NODE_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(ident, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(data_dir, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return ident


def check_store_of_node(data_dir: str, ident: dict | None, store_file: str):
    """Refuse to start afresh where a store existed: node.json names a store that is missing, empty
    or has no tables (restored data dir without its database, a truncated file), or a store file
    left empty. A fresh data dir, and one made before node.json existed, pass."""
    from ..storage.sqlite import probe_file
    path = os.path.join(data_dir, store_file)
    state = probe_file(path)
    if state == "present":
        return
    if ident is not None and state in ("missing", "empty", "no tables"):
        what = {"missing": "is missing", "empty": "is empty (0 bytes)",
                "no tables": "holds no store (no tables)"}[state]
        raise NodeIdentityError(
            f"the store {path} {what}, but {os.path.join(data_dir, NODE_FILE)} says this data dir holds the "
            f"store of node {ident.get('node_id', '?')} (created {ident.get('created_at', '?')}); refusing "
            f"to start afresh, which would lose its definitions and messages: restore {store_file} from a "
            f"backup, or move the data dir {data_dir} away to start a new node")
    if state == "empty":
        raise NodeIdentityError(
            f"the store {path} is empty (0 bytes); refusing to start afresh, which would lose its "
            f"definitions and messages: restore it from a backup, or move it (or the data dir "
            f"{data_dir}) away to start a new node")


def import_delayed_db(data_dir: str, store):
    """Delayed messages used to live in DATA_DIR/delayed.db, outside the store: move them into it
    (one commit), then remove the old file, so that an upgrade keeps them."""
    import sqlite3
    path = os.path.join(data_dir, "delayed.db")
    if not os.path.exists(path):
        return
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT id, due, vhost, xname, exchange, routing_key, props, body FROM delayed").fetchall()
    except sqlite3.Error:
        rows = []
    finally:
        db.close()
    for r in rows:
        store.add_delayed((r[0], r[1], r[2], r[3], r[4], r[5], bytes(r[6]), bytes(r[7])))
    store.commit()
    for suffix in ("", "-wal", "-shm"):
        try:
            os.unlink(path + suffix)
        except FileNotFoundError:
            pass
    logging.getLogger("usagi").info("moved %d delayed messages from %s into the store", len(rows), path)


def make_broker(args):
    from ..core.broker import Broker, Config
    from ..core.recovery import restore
    from ..storage import MemoryStore
    cfg = Config(frame_max=args.frame_max, channel_max=args.channel_max, heartbeat=args.heartbeat,
                 max_message_size=args.max_message_size, default_user=args.default_user,
                 default_pass=args.default_pass, disk_free_limit=args.disk_free_limit,
                 memory_high_watermark=args.vm_memory_high_watermark)
    apply_limit_options(cfg, args)
    ident = None
    if args.in_memory:
        store = MemoryStore()
    else:
        from ..storage.sqlite import DB_NAME, SQLiteStore
        os.makedirs(args.data_dir, exist_ok=True)
        lock_data_dir(args.data_dir)
        ident = read_node_identity(args.data_dir)
        store_file = ident["store"] if ident is not None else DB_NAME
        check_store_of_node(args.data_dir, ident, store_file)
        store = SQLiteStore(args.data_dir, store_file)
    setup_paging(None if args.in_memory else args.data_dir)
    broker = Broker(cfg, store)
    rec = store.open()
    if ident is None and not args.in_memory:
        # the store exists now (a new one has its tables): from here on, losing it is noticed
        write_node_identity(args.data_dir, store_file)
    if not args.in_memory:
        from ..core.delayed import DelayedMessages
        import_delayed_db(args.data_dir, store)
        broker.delayed = DelayedMessages(store)
    counts = restore(broker, rec)
    broker.bootstrap()
    return broker, counts


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                        format="%(asctime)s [%(levelname)s] %(name)s: %(message)s", stream=sys.stderr)
    log = logging.getLogger("usagi")
    for name, value, lo, hi in (("frame-max", args.frame_max, 4096, 2 ** 31 - 1),
                                ("channel-max", args.channel_max, 1, 65535),
                                ("heartbeat", args.heartbeat, 0, 65535),
                                ("max-message-size", args.max_message_size, 1, 512 * 1024 * 1024)):
        if not lo <= value <= hi:
            print(f"usagi-server: error: --{name} must be between {lo} and {hi}, got {value}", file=sys.stderr)
            return 2
    if not args.no_uvloop:
        try:
            import uvloop
            uvloop.install()
        except ImportError:
            pass
    try:
        tls_ctx, mgmt_tls_ctx = tls_contexts(args)
    except Exception as e:
        log.error("%s", e)
        return 1
    t0 = time.monotonic()
    try:
        broker, counts = make_broker(args)
    except DataDirInUse as e:
        log.error("%s", e)
        return 1
    except Exception as e:
        log.error("cannot start with data dir %s: %s", args.data_dir, e)
        return 1
    counts["seconds"] = time.monotonic() - t0
    broker.config.data_dir = None if args.in_memory else args.data_dir
    from ..server import serve

    services = []
    if not args.no_management and args.management_port != -1:
        try:
            from ..mgmt.service import management_service
            if mgmt_tls_ctx is not None:
                services.append(management_service(args.host or None, args.management_port, args.metrics_port,
                                                   ssl_context=mgmt_tls_ctx))
            else:
                services.append(management_service(args.host or None, args.management_port, args.metrics_port))
        except ImportError:
            pass

    def started(server, svcs):
        hosts = ", ".join(f"{h}:{p}" for _, h, p in server.listeners)
        log.info("Usagi %s (RabbitMQ %s compatible) started; data dir %s; recovered %d queues and %d "
                 "messages in %.2fs", __version__, RABBITMQ_COMPAT_VERSION,
                 "(in memory)" if args.in_memory else args.data_dir, counts["queues"], counts["messages"],
                 counts["seconds"])
        log.info("AMQP listener on %s:%d", *server.listeners[0][1:])
        for proto, h, p in server.listeners:
            if proto == "amqps":
                log.info("AMQPS listener on %s:%d", h, p)
        for s in svcs:
            for line in getattr(s, "describe", lambda: [])():
                log.info("%s", line)
        del hosts

    try:
        return asyncio.run(serve(broker, args.host or None, args.port, started, services,
                                 tls_context=tls_ctx, tls_port=args.tls_port if tls_ctx is not None else None))
    except OSError as e:
        log.error("cannot listen on port %s: %s", args.port, e)
        return 1
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
