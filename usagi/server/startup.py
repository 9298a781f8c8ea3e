"""Start-up of a node: the data dir (its lock, the node's identity, the store that must be there),
the broker's configuration from the command line, and the broker built on its recovered store.

Used by `usagi-server` for a single node and by a cluster node each time it becomes the leader.
"""
from __future__ import annotations

import json
import logging
import os
import time

from .. import __version__

def apply_limit_options(cfg, args):
    cfg.connection_max = args.max_connections if args.max_connections >= 0 else None
    cfg.consumer_timeout = args.consumer_timeout / 1000.0 if args.consumer_timeout > 0 else 0.0
    cfg.handshake_timeout = max(0.001, args.handshake_timeout / 1000.0)
    cfg.ssl_cert_login_from = args.tls_cert_login_from
    cfg.ssl_cert_login_san_type = args.tls_cert_login_san_type
    cfg.ssl_cert_login_san_index = args.tls_cert_login_san_index
    if args.vm_memory_high_watermark_absolute > 0:
        # kept as set: Broker.memory_limit() gives it, to the alarm and to what reports it
        cfg.memory_high_watermark_absolute = args.vm_memory_high_watermark_absolute



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


_memory_paging_dir = None      # the private temp dir of in-memory brokers: one per process


def setup_paging(data_dir):
    """Long queues page messages out to DATA_DIR/paging (when in memory: a private temp dir, removed
    at exit and shared by all the in-memory brokers of the process (usagi.testing starts several);
    page files have names unique in the process)."""
    import shutil
    import tempfile
    from ..model.queue import PAGING
    global _memory_paging_dir
    if data_dir:
        path = os.path.join(data_dir, "paging")
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path, exist_ok=True)
    elif _memory_paging_dir is not None and os.path.isdir(_memory_paging_dir):
        path = _memory_paging_dir
    else:
        path = _memory_paging_dir = tempfile.mkdtemp(prefix="usagi-paging-")
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


def broker_config(args):
    from ..core.broker import Config
    cfg = Config(frame_max=args.frame_max, channel_max=args.channel_max, heartbeat=args.heartbeat,
                 max_message_size=args.max_message_size, default_user=args.default_user,
                 default_pass=args.default_pass, disk_free_limit=args.disk_free_limit,
                 memory_high_watermark=args.vm_memory_high_watermark)
    # what a configuration file may also set (rabbitmq.conf; see cli/serverconf.py)
    for name, attr in (("default_vhost", "default_vhost"), ("default_user_tags", "default_user_tags"),
                       ("default_permissions", "default_permissions"), ("loopback_users", "loopback_users"),
                       ("auth_mechanisms", "auth_mechanisms")):
        value = getattr(args, name, None)
        if value is not None:
            setattr(cfg, attr, tuple(value) if isinstance(value, (list, tuple)) else value)
    if getattr(args, "node_name", None):
        cfg.node_name = args.node_name
    apply_limit_options(cfg, args)
    return cfg


def open_data_dir(args) -> tuple:
    """Lock the data dir and read the node's identity: (identity or None, store file name)."""
    from ..storage.sqlite import DB_NAME
    os.makedirs(args.data_dir, exist_ok=True)
    lock_data_dir(args.data_dir)
    ident = read_node_identity(args.data_dir)
    store_file = ident["store"] if ident is not None else DB_NAME
    check_store_of_node(args.data_dir, ident, store_file)
    return ident, store_file


def build_broker(args, store, ident, store_file, redeliver_all: bool = False):
    """A broker on an opened data dir (or in memory): the store opened and recovered."""
    from ..core.broker import Broker
    from ..core.recovery import restore
    setup_paging(None if args.in_memory else args.data_dir)
    broker = Broker(broker_config(args), store)
    rec = store.open()
    if ident is None and not args.in_memory:
        # the store exists now (a new one has its tables): from here on, losing it is noticed
        write_node_identity(args.data_dir, store_file)
    if not args.in_memory:
        from ..core.delayed import DelayedMessages
        import_delayed_db(args.data_dir, store)
        broker.delayed = DelayedMessages(store)
    counts = restore(broker, rec, redeliver_all=redeliver_all)
    if broker.resume_reset():            # a reset a crash interrupted is completed, not left half done
        counts["queues"] = counts["messages"] = 0
    broker.bootstrap(seed=not getattr(args, "load_definitions", None))
    return broker, counts


def make_broker(args):
    from ..storage import MemoryStore
    if args.in_memory:
        return build_broker(args, MemoryStore(), None, None)
    from ..storage.sqlite import SQLiteStore
    ident, store_file = open_data_dir(args)
    return build_broker(args, SQLiteStore(args.data_dir, store_file), ident, store_file)
