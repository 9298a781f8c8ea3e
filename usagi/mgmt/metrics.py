"""Prometheus text exposition with rabbitmq_prometheus's metric names.

`/metrics` gives node-wide aggregates (RabbitMQ's default), `/metrics/per-object` the queue metrics
labelled by vhost and queue, and `/metrics/detailed?family=...&vhost=...` the families RabbitMQ
names `queue_coarse_metrics`, `queue_consumer_count`, `queue_metrics`, `exchange_names`,
`exchange_bindings` and `vhost_status` with the `rabbitmq_detailed_` prefix.

With 100,000 queues an exposition is ~10^5-10^6 lines: it is gathered, sorted and written a slice
at a time (mgmt.slices), one queue or one line per step, and handed out as chunks.
"""
from __future__ import annotations

import platform

from .. import RABBITMQ_COMPAT_VERSION, __version__
from . import ops, slices
from .formats import NO_UNACKED, queue_memory, unacked_by_queue_sliced

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _esc(v) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(v) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, float):
        return repr(v) if v == v else "NaN"
    return str(int(v))


class Exposition:
    LINES_PER_CHUNK = 5_000

    def __init__(self, pacer: slices.Pacer):
        self.lines: list[str] = []
        self.pacer = pacer

    def family(self, name: str, kind: str, help_: str, samples):
        """samples: [(labels dict, value)], a few (see family_sliced for one per object)"""
        self.lines.append(f"# TYPE {name} {kind}")
        self.lines.append(f"# HELP {name} {help_}")
        for labels, value in samples:
            self.lines.append(_line(name, labels, value))

    async def family_sliced(self, name: str, kind: str, help_: str, samples):
        """A family with a sample per object: samples is an iterable of (labels dict, value)."""
        self.lines.append(f"# TYPE {name} {kind}")
        self.lines.append(f"# HELP {name} {help_}")
        pacer = self.pacer
        for labels, value in samples:
            self.lines.append(_line(name, labels, value))
            if pacer.due():
                await pacer.pause()

    async def chunks(self) -> list[bytes]:
        out = []
        lines, n = self.lines, self.LINES_PER_CHUNK
        for start in range(0, len(lines), n):
            out.append(("\n".join(lines[start:start + n]) + "\n").encode("utf-8"))
            await self.pacer.tick()
        return out


def _line(name, labels, value) -> str:
    if labels:
        lab = ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items())
        return f"{name}{{{lab}}} {_num(value)}"
    return f"{name} {_num(value)}"


async def _queues(broker, pacer, vhosts=None) -> list:
    """(vhost, queue) of every queue, by vhost and queue name (sorted a slice at a time)."""
    rows = []
    for vname, v in sorted(broker.vhosts.items()):
        if vhosts and vname not in vhosts:
            continue
        qs = await slices.sort(list(v.queues.values()), _by_name, pacer)
        rows += [(v, q) for q in qs]
        await pacer.tick()
    return rows


def _by_name(obj):
    return obj.name


def _ub(ub, q) -> int:
    return ub.get(id(q), NO_UNACKED)[0]


def _mem(ub, q, key):
    return queue_memory(q, ub.get(id(q), NO_UNACKED))[key]


def _identity(m, ex: Exposition):
    b = m.broker
    ex.family("rabbitmq_identity_info", "untyped", "RabbitMQ node & cluster identity info",
              [({"rabbitmq_node": m.node, "rabbitmq_cluster": b.server_properties.get("cluster_name", m.node),
                 "rabbitmq_cluster_permanent_id": ops.cluster_id(b)}, 1)])


def _queue_samples(rows, ub, fn):
    return (({"vhost": v.name, "queue": q.name}, fn(q, ub)) for v, q in rows)


QUEUE_GAUGES = (
    ("queue_messages_ready", "Messages ready to be delivered to consumers", lambda q, ub: q.message_count),
    ("queue_messages_unacked", "Messages delivered to consumers but not yet acknowledged",
     lambda q, ub: q.unacked),
    ("queue_messages", "Sum of ready and unacknowledged messages - total queue depth",
     lambda q, ub: q.message_count + q.unacked),
    ("queue_messages_ready_bytes", "Size in bytes of ready messages", lambda q, ub: q.message_bytes),
    ("queue_messages_unacked_bytes", "Size in bytes of all unacknowledged messages",
     lambda q, ub: _ub(ub, q)),
    ("queue_messages_bytes", "Size in bytes of ready and unacknowledged messages",
     lambda q, ub: q.message_bytes + _ub(ub, q)),
    ("queue_consumers", "Consumers on a queue", lambda q, ub: len(q.consumers)),
) + tuple((name, help_, (lambda key: lambda q, ub: _mem(ub, q, key))(key)) for name, help_, key in (
    ("queue_messages_ram", "Ready and unacknowledged messages stored in memory", "messages_ram"),
    ("queue_messages_ready_ram", "Ready messages stored in memory", "ready_ram"),
    ("queue_messages_unacked_ram", "Unacknowledged messages stored in memory", "unacked_ram"),
    ("queue_messages_ram_bytes", "Size of ready and unacknowledged messages stored in memory", "ram_bytes"),
    ("queue_messages_paged_out", "Messages paged out to disk", "paged_out"),
    ("queue_messages_paged_out_bytes", "Size in bytes of messages paged out to disk", "paged_out_bytes"),
    ("queue_process_memory_bytes", "Memory in bytes used by the Erlang queue process", "memory"),
))


async def render_metrics(m, pacer: slices.Pacer) -> list[bytes]:
    """GET /metrics: aggregated across all objects, as rabbitmq_prometheus does by default."""
    b = m.broker
    ex = Exposition(pacer)
    conns = [c for c in b.connections if not c.closed]
    channels = sum(len(c.channels) for c in conns)
    ub = await unacked_by_queue_sliced(b, pacer)
    sums = [0] * len(QUEUE_GAUGES)
    n_queues = consumers = 0
    for v in list(b.vhosts.values()):
        for q in list(v.queues.values()):
            n_queues += 1
            consumers += len(q.consumers)
            for i, (_name, _help, fn) in enumerate(QUEUE_GAUGES):
                sums[i] += fn(q, ub)
            if pacer.due():
                await pacer.pause()
    publishers = sum(1 for c in conns for ch in c.channels.values() if ch.published)
    tot = await pacer.drain(m.sampler.totals_steps())      # counters as of now, as RabbitMQ's
    st = b.stats

    ex.family("rabbitmq_connections", "gauge", "Connections currently open", [({}, len(conns))])
    ex.family("rabbitmq_channels", "gauge", "Channels currently open", [({}, channels)])
    ex.family("rabbitmq_consumers", "gauge", "Consumers currently connected", [({}, consumers)])
    ex.family("rabbitmq_queues", "gauge", "Queues available", [({}, n_queues)])
    ex.family("rabbitmq_connections_opened_total", "counter", "Total number of connections opened",
              [({}, tot["connection_created"])])
    ex.family("rabbitmq_connections_closed_total", "counter",
              "Total number of connections closed or terminated", [({}, tot["connection_closed"])])
    for (name, help_, _fn), total in zip(QUEUE_GAUGES, sums):
        ex.family("rabbitmq_" + name, "gauge", help_, [({}, total)])

    proto = {"protocol": "amqp091"}
    routed = max(st.get("publish", 0) - st.get("drop_unroutable", 0) - st.get("return_unroutable", 0), 0)
    for name, help_, value in (
        ("global_messages_received_total", "Total number of messages received from publishers",
         st.get("publish", 0)),
        ("global_messages_received_confirm_total",
         "Total number of messages received from publishers expecting confirmations", st.get("confirm", 0)),
        ("global_messages_routed_total", "Total number of messages routed to queues or streams", routed),
        ("global_messages_unroutable_dropped_total",
         "Total number of messages published as non-mandatory into an exchange and dropped as unroutable",
         st.get("drop_unroutable", 0)),
        ("global_messages_unroutable_returned_total",
         "Total number of messages published as mandatory into an exchange and returned to the publisher "
         "as unroutable", st.get("return_unroutable", 0)),
        ("global_messages_confirmed_total", "Total number of messages confirmed to publishers",
         st.get("confirm", 0)),
        ("global_messages_delivered_total", "Total number of messages delivered to consumers",
         tot["deliver_get"]),
        ("global_messages_delivered_get_manual_ack_total",
         "Total number of messages fetched with basic.get in manual acknowledgement mode", tot["get"]),
        ("global_messages_redelivered_total",
         "Total number of messages redelivered to consumers", tot["redeliver"]),
        ("global_messages_acknowledged_total", "Total number of messages acknowledged by consumers",
         tot["ack"]),
    ):
        ex.family("rabbitmq_" + name, "counter", help_, [(proto, value)])
    ex.family("rabbitmq_global_publishers", "gauge", "Current number of publishers", [(proto, publishers)])
    ex.family("rabbitmq_global_consumers", "gauge", "Current number of consumers", [(proto, consumers)])

    ex.family("rabbitmq_channel_messages_published_total", "counter",
              "Total number of messages published into an exchange on a channel", [({}, st.get("publish", 0))])
    ex.family("rabbitmq_channel_messages_confirmed_total", "counter",
              "Total number of messages published into an exchange and confirmed on the channel",
              [({}, st.get("confirm", 0))])
    ex.family("rabbitmq_channel_messages_unroutable_dropped_total", "counter",
              "Total number of messages published as non-mandatory into an exchange and dropped as unroutable",
              [({}, st.get("drop_unroutable", 0))])
    ex.family("rabbitmq_channel_messages_unroutable_returned_total", "counter",
              "Total number of messages published as mandatory into an exchange and returned to the publisher "
              "as unroutable", [({}, st.get("return_unroutable", 0))])
    ex.family("rabbitmq_channel_messages_delivered_ack_total", "counter",
              "Total number of messages delivered to consumers in manual acknowledgement mode",
              [({}, tot["deliver"])])
    ex.family("rabbitmq_channel_get_ack_total", "counter",
              "Total number of messages fetched with basic.get in manual acknowledgement mode",
              [({}, tot["get"])])
    ex.family("rabbitmq_channel_messages_acked_total", "counter",
              "Total number of messages acknowledged by consumers", [({}, tot["ack"])])
    ex.family("rabbitmq_channel_messages_redelivered_total", "counter",
              "Total number of messages redelivered to consumers", [({}, tot["redeliver"])])

    fd_used, fd_total = m.fds()
    mem = b.memory_usage()          # the figure the memory alarm uses (core/alarms.py)
    ex.family("rabbitmq_process_resident_memory_bytes", "gauge", "Memory used in bytes", [({}, mem)])
    ex.family("rabbitmq_resident_memory_limit_bytes", "gauge", "Memory high watermark in bytes",
              [({}, b.memory_limit())])
    ex.family("rabbitmq_process_open_fds", "gauge", "Open file descriptors", [({}, fd_used)])
    ex.family("rabbitmq_process_max_fds", "gauge", "Open file descriptors limit", [({}, fd_total)])
    ex.family("rabbitmq_process_open_tcp_sockets", "gauge", "Open TCP sockets", [({}, len(conns))])
    ex.family("rabbitmq_disk_space_available_bytes", "gauge", "Disk space available in bytes",
              [({}, m.disk_free())])
    ex.family("rabbitmq_disk_space_available_limit_bytes", "gauge", "Free disk space low watermark in bytes",
              [({}, b.config.disk_free_limit)])
    ex.family("rabbitmq_alarms_memory_used_watermark", "gauge",
              "is 1 if VM memory watermark alarm is in effect", [({}, int("memory" in b.alarms))])
    ex.family("rabbitmq_alarms_free_disk_space_watermark", "gauge",
              "is 1 if free disk space watermark alarm is in effect", [({}, int("disk" in b.alarms))])
    ex.family("rabbitmq_alarms_file_descriptor_limit", "gauge",
              "is 1 if file descriptor limit alarm is in effect", [({}, 0)])
    import time
    ex.family("rabbitmq_erlang_uptime_seconds", "gauge", "Node uptime",
              [({}, round(time.time() - b.started_at, 3))])
    ex.family("rabbitmq_build_info", "untyped", "RabbitMQ & Erlang/OTP version info",
              [({"rabbitmq_version": RABBITMQ_COMPAT_VERSION, "prometheus_plugin_version": RABBITMQ_COMPAT_VERSION,
                 "prometheus_client_version": "4.11.0", "erlang_version": platform.python_version(),
                 "usagi_version": __version__}, 1)])
    _identity(m, ex)
    return await ex.chunks()


async def render_per_object(m, pacer: slices.Pacer) -> list[bytes]:
    """GET /metrics/per-object: the queue gauges labelled by vhost and queue."""
    b = m.broker
    ex = Exposition(pacer)
    ub = await unacked_by_queue_sliced(b, pacer)
    rows = await _queues(b, pacer)
    for name, help_, fn in QUEUE_GAUGES:
        await ex.family_sliced("rabbitmq_" + name, "gauge", help_, _queue_samples(rows, ub, fn))
    _identity(m, ex)
    return await ex.chunks()


DETAILED_FAMILIES = ("queue_coarse_metrics", "queue_consumer_count", "queue_metrics", "exchange_names",
                     "exchange_bindings", "vhost_status")


async def render_detailed(m, families: list, vhosts: list, pacer: slices.Pacer) -> list[bytes]:
    """GET /metrics/detailed?family=F&vhost=V (both repeatable)."""
    b = m.broker
    ex = Exposition(pacer)
    vset = set(vhosts) if vhosts else None
    ub = await unacked_by_queue_sliced(b, pacer) if "queue_metrics" in families else {}
    per_queue = {"queue_coarse_metrics", "queue_consumer_count", "queue_metrics"} & set(families)
    rows = await _queues(b, pacer, vset) if per_queue else []
    p = "rabbitmq_detailed_"
    fam = ex.family_sliced
    if "queue_coarse_metrics" in families:
        await fam(p + "queue_messages_ready", "gauge", "Messages ready to be delivered to consumers",
                  _queue_samples(rows, ub, lambda q, _u: q.message_count))
        await fam(p + "queue_messages_unacked", "gauge",
                  "Messages delivered to consumers but not yet acknowledged",
                  _queue_samples(rows, ub, lambda q, _u: q.unacked))
        await fam(p + "queue_messages", "gauge", "Sum of ready and unacknowledged messages - total queue depth",
                  _queue_samples(rows, ub, lambda q, _u: q.message_count + q.unacked))
        await fam(p + "queue_process_reductions_total", "counter",
                  "Total number of queue process reductions", _queue_samples(rows, ub, lambda q, _u: 0))
    if "queue_consumer_count" in families:
        await fam(p + "queue_consumers", "gauge", "Consumers on a queue",
                  _queue_samples(rows, ub, lambda q, _u: len(q.consumers)))
    if "queue_metrics" in families:
        await fam(p + "queue_messages_ready_bytes", "gauge", "Size in bytes of ready messages",
                  _queue_samples(rows, ub, lambda q, _u: q.message_bytes))
        await fam(p + "queue_messages_unacked_bytes", "gauge", "Size in bytes of all unacknowledged messages",
                  _queue_samples(rows, ub, lambda q, u: _ub(u, q)))
        await fam(p + "queue_messages_bytes", "gauge", "Size in bytes of ready and unacknowledged messages",
                  _queue_samples(rows, ub, lambda q, u: q.message_bytes + _ub(u, q)))
        for name, help_, fn in QUEUE_GAUGES[7:]:
            await fam(p + name, "gauge", help_, _queue_samples(rows, ub, fn))
        await fam(p + "queue_messages_published_total", "counter", "Total number of messages published to queues",
                  _queue_samples(rows, ub, lambda q, _u: q.published))
    if "exchange_names" in families or "exchange_bindings" in families:
        xs = []
        for vn, v in sorted(b.vhosts.items()):
            if not vset or vn in vset:
                for x in await slices.sort(list(v.exchanges.values()), _by_name, pacer):
                    xs.append((v, x))
        if "exchange_names" in families:
            await fam(p + "exchange_name", "gauge", "Enumerates exchanges without any additional info. "
                      "This value is cluster-wide. A cheaper alternative to `exchange_bindings`",
                      (({"vhost": v.name, "exchange": x.name, "type": x.type}, 1) for v, x in xs))
        if "exchange_bindings" in families:
            await fam(p + "exchange_bindings", "gauge", "Number of bindings for an exchange. This value is "
                      "cluster-wide.",
                      (({"vhost": v.name, "exchange": x.name, "type": x.type}, len(x.bindings))
                       for v, x in xs))
    if "vhost_status" in families:
        ex.family(p + "vhost_status", "gauge", "Whether a given vhost is running",
                  [({"vhost": vn}, 1) for vn in sorted(b.vhosts) if not vset or vn in vset])
    _identity(m, ex)
    return await ex.chunks()
