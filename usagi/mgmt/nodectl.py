"""What rabbitmqctl and rabbitmq-diagnostics ask a node over Erlang distribution, for Usagi's CLI tools.

RabbitMQ's management API has no way to read a node's environment, to change its memory or disk
limit at run time, to reset it, to rotate or read its log, to change its log level or to name a
queue's process; its CLI tools do these over Erlang distribution. usagictl and usagi-diagnostics
are HTTP clients, so api.py offers these under /api/usagi/ (administrator tag), and this module
holds what they do that is not the engine's: the node's settings shown under RabbitMQ's names, the
log file (log.file, config/logs.py, and any other file a logging.FileHandler on the root or the
`usagi` logger writes), and the memory figures in the shape of GET /api/nodes/{node}/memory.

Costs are bounded: a log tail reads at most TAIL_MAX_BYTES from the end of the file, and at most
TAIL_MAX_LINES lines; the rest is a walk over a handful of logging handlers or settings.
"""
from __future__ import annotations

import itertools
import logging
import logging.handlers
import os
import platform
import sys
import weakref

from .. import RABBITMQ_COMPAT_VERSION, __version__
from ..config import logs

TAIL_MAX_LINES = 10_000
TAIL_MAX_BYTES = 4 << 20          # a tail reads no more than this from the end of the log file
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR, "critical": logging.CRITICAL, "none": logging.CRITICAL + 10}


# ---------------------------------------------------------------------------------------- log files

def _handlers() -> list:
    seen, out = set(), []
    for name in ("", "usagi"):
        for h in logging.getLogger(name).handlers:
            if id(h) not in seen:
                seen.add(id(h))
                out.append(h)
    return out


def log_files() -> list[str]:
    """The files the node logs to (absolute paths): its log file (log.file) first, then any other a
    file handler writes."""
    first = logs.file_path()
    out = [first] if first else []
    for h in _handlers():
        path = getattr(h, "baseFilename", None)
        if isinstance(path, str) and path not in out:
            out.append(path)
    return out


def log_locations() -> list[str]:
    """Where the node logs, as RabbitMQ's log_files say it: the files, then <stdout>/<stderr>."""
    out = log_files()
    for h in _handlers():
        if isinstance(h, logging.FileHandler) or not isinstance(h, logging.StreamHandler):
            continue
        stream = getattr(h, "stream", None)
        where = "<stdout>" if stream is sys.stdout else "<stderr>" if stream is sys.stderr else None
        if where and where not in out:
            out.append(where)
    return out


def rotate_logs() -> list[str]:
    """Rotate the node's log files: a rotating handler rolls over; a plain file handler closes its
    file and opens the path again (so that a file moved away by logrotate is let go of). Returns
    the files rotated. The log file (log.file) rotates as its settings say (config/logs.py)."""
    done = []
    first = logs.file_path()
    if first and logs.rotate():
        done.append(first)
    for h in _handlers():
        path = getattr(h, "baseFilename", None)
        if not isinstance(path, str) or path in done:
            continue
        h.acquire()
        try:
            if isinstance(h, (logging.handlers.RotatingFileHandler, logging.handlers.TimedRotatingFileHandler)):
                h.doRollover()
            elif isinstance(h, logging.FileHandler):
                if h.stream is not None:
                    h.stream.close()
                h.stream = h._open()
            else:
                continue
        finally:
            h.release()
        done.append(path)
    return done


def tail(path: str, lines: int) -> list[str]:
    """The last `lines` lines of a file (at most TAIL_MAX_LINES, read from its last TAIL_MAX_BYTES)."""
    lines = max(0, min(lines, TAIL_MAX_LINES))
    if lines == 0:
        return []
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        end = f.tell()
        start = max(0, end - TAIL_MAX_BYTES)
        chunk = 64 << 10
        data = b""
        pos = end
        while pos > start and data.count(b"\n") <= lines:
            step = min(chunk, pos - start)
            pos -= step
            f.seek(pos)
            data = f.read(step) + data
    text = data.decode("utf-8", "replace").splitlines()
    if pos > 0 and text:
        text = text[1:]                  # the first line read may be cut
    return text[-lines:]


def set_log_level(level: str):
    """Every output's level (config/logs.py); where logging was set up otherwise, the root logger's."""
    if logs.level() is not None:
        logs.set_level(level)
    else:
        logging.getLogger().setLevel(LEVELS[level])


def log_level() -> str:
    configured = logs.level()
    if configured is not None:
        return configured
    value = logging.getLogger().getEffectiveLevel()
    for name, v in LEVELS.items():
        if v == value:
            return name
    return logging.getLevelName(value).lower()


# ---------------------------------------------------------------------------------------- queue pids

_serials = itertools.count(1)
_pids: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def queue_pid(node: str, started_at: float, q) -> str:
    """A queue's "pid" as rabbitmqctl list_queues shows one (<node.creation.serial.0>): the node, its
    start time and a number the queue keeps for its life in this process (a queue deleted and
    declared again gets a new one, as a new queue process would)."""
    n = _pids.get(q)
    if n is None:
        n = _pids[q] = next(_serials)
    return f"<{node}.{int(started_at)}.{n}.0>"


# ---------------------------------------------------------------------------------------- memory

def memory_breakdown(broker) -> dict:
    """The memory the broker counts (core/alarms.py, core/memory.py) under the categories of
    GET /api/nodes/{node}/memory: queued messages and their records as queue_procs, connection
    buffers as connection_readers, unacknowledged deliveries as connection_channels, the store's
    index and cache as msg_index, definitions as mnesia, delayed and dead-lettered messages on their
    way as other_proc, the interpreter and code as code, and what the allocator keeps beyond the
    figure (RSS above it) as allocated_unused."""
    f = broker.memory_breakdown()
    used, rss = f.get("used", 0), f.get("rss", 0)
    d = {k: 0 for k in ("connection_readers", "connection_writers", "connection_channels", "connection_other",
                        "queue_procs", "queue_slave_procs", "quorum_queue_procs", "quorum_queue_dlx_procs",
                        "stream_queue_procs", "stream_queue_replica_reader_procs",
                        "stream_queue_coordinator_procs", "plugins", "other_proc", "metrics", "mgmt_db",
                        "mnesia", "quorum_ets", "other_ets", "binary", "msg_index", "code", "atom",
                        "other_system", "allocated_unused", "reserved_unallocated")}
    d["queue_procs"] = f.get("queues", 0) + f.get("entries", 0)
    d["connection_readers"] = f.get("connections", 0)
    d["connection_channels"] = f.get("unacked", 0)
    d["msg_index"] = f.get("store", 0)
    d["mnesia"] = f.get("entities", 0)
    d["other_proc"] = f.get("delayed", 0) + f.get("dead_letter", 0)
    d["code"] = f.get("base", 0)
    d["allocated_unused"] = max(0, rss - used)
    d["strategy"] = "rss"
    d["total"] = {"erlang": used, "rss": rss, "allocated": max(rss, used)}
    return d


# ---------------------------------------------------------------------------------------- environment

def _ms(seconds) -> int | str:
    return "infinity" if seconds is None else int(round(seconds * 1000))


def environment(m) -> dict:
    """The node's settings as `rabbitmqctl environment` shows an application environment: those
    with a RabbitMQ name under `rabbit` (and the management and Prometheus listeners under theirs),
    everything the broker's Config holds under `usagi` (never a password)."""
    b = m.broker
    c = b.config
    server = m.server
    amqp = sorted({p for proto, _h, p in getattr(server, "listeners", ()) or () if proto == "amqp"})
    amqps = sorted({p for proto, _h, p in getattr(server, "listeners", ()) or () if proto != "amqp"})
    http = [p for proto, _h, p in m.http_listeners() if proto in ("http", "https")]
    prom = [p for proto, _h, p in m.http_listeners() if proto == "http/prometheus"]
    frac = c.memory_high_watermark
    rabbit = {
        "channel_max": c.channel_max,
        "cluster_name": b.server_properties.get("cluster_name", m.node),
        "connection_max": "infinity" if c.connection_max is None else c.connection_max,
        "consumer_timeout": _ms(c.consumer_timeout) if c.consumer_timeout else "undefined",
        "default_user": c.default_user,
        "default_vhost": c.default_vhost,
        "default_user_tags": list(getattr(c, "default_user_tags", ("administrator",))),
        "default_permissions": list(getattr(c, "default_permissions", (".*", ".*", ".*"))),
        "disk_free_limit": c.disk_free_limit,
        "frame_max": c.frame_max,
        "handshake_timeout": _ms(c.handshake_timeout),
        "heartbeat": c.heartbeat,
        "log_levels": log_level(),
        "log_files": log_locations(),
        "loopback_users": list(c.loopback_users or ()),
        "max_message_size": c.max_message_size,
        "password_hashing_module": "rabbit_password_hashing_sha256",
        "quorum_delivery_limit": c.quorum_delivery_limit,
        "ssl_cert_login_from": c.ssl_cert_login_from,
        "ssl_listeners": amqps,
        "tcp_listeners": amqp,
        "vm_memory_calculation_strategy": "allocated",
        "vm_memory_high_watermark": b.memory_watermark_setting or {"relative": frac},
    }
    usagi = {"version": __version__, "rabbitmq_compatible_version": RABBITMQ_COMPAT_VERSION,
             "python": f"{platform.python_implementation()} {platform.python_version()}",
             "node_name": m.node, "data_dir": m.data_dir() or "undefined"}
    for k, v in sorted(vars(c).items()):
        if "pass" in k or k.startswith("_"):
            continue
        if isinstance(v, (str, int, float, bool)) or v is None:
            usagi.setdefault(k, v)
        elif isinstance(v, (list, tuple, set, frozenset)):
            usagi.setdefault(k, [x if isinstance(x, (str, int, float, bool)) else str(x) for x in v])
    return {"rabbit": rabbit,
            "rabbitmq_management": {"listener": {"port": http[0]} if http else []},
            "rabbitmq_prometheus": {"tcp_config": {"port": prom[0]} if prom else []},
            "usagi": usagi}


def total_ram() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 0
