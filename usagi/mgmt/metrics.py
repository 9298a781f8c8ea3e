"""Prometheus text exposition with rabbitmq_prometheus's metric names, types, help texts and labels,
so that RabbitMQ's Grafana dashboards and alerts work unchanged against Usagi.

The endpoints are RabbitMQ's:
- `/metrics`: every family, aggregated over objects (one sample per family, or per label set such
  as `protocol` where RabbitMQ keeps one).
- `/metrics/per-object`: the same families with a sample per queue, channel, connection and
  exchange, labelled as RabbitMQ labels them.
- `/metrics/detailed?family=F&vhost=V` (both repeatable, or comma-separated): only the groups
  named (RabbitMQ's table names, `DETAILED_GROUPS`), per object, prefixed `rabbitmq_detailed_`
  (`rabbitmq_cluster_` for vhost_status, exchange_bindings and exchange_names); `vhost` keeps the
  queue-level groups and those three to the vhosts named.
- `/metrics/memory-breakdown`: the memory figures of core/memory.py under RabbitMQ 4's names.

The groups and their metrics are RabbitMQ 4.0's (prometheus_rabbitmq_core_metrics_collector and
rabbit_global_counters), with 3.10's process_open_tcp_sockets and process_max_tcp_sockets kept, and
RabbitMQ 4.1's additions that its current dashboards query: `rabbitmq_endpoint` on
rabbitmq_identity_info and the rabbitmq_message_size_bytes histogram. What a Python broker has no
counterpart for is reported as RabbitMQ reports a feature that is idle: Erlang reductions are 0,
the Erlang process count is the one /api/nodes shows. The erlang_vm_* and erlang_mnesia_* families
of the Erlang runtime are not emitted. Where Usagi counts a figure per channel but RabbitMQ per
channel and queue or exchange (channel_queue_metrics, channel_exchange_metrics), the sample is per
channel (labels channel and vhost); queue_messages_published_total is per queue.

Quorum queues have one member here and no Raft log: the raft_* metrics give term 1, a log index
that counts the queue's operations (enqueues, settlements, returns), a snapshot index that leaves
the messages still held as the entries in the log, and the store's last commit time as the commit
latency.

Cost: with 100,000 queues an exposition is some 10^6 lines. Everything is gathered a slice at a
time (mgmt.slices: one object per step, SLICE_SECONDS of work per loop turn) and written out in
chunks of CHUNK_LINES lines as it is made, so neither the event loop nor memory holds a whole
exposition; only the per-object records of one kind of object (a tuple each) are kept while their
families are written.
"""
from __future__ import annotations

import gc
import platform
from operator import add
import resource
import time

from .. import RABBITMQ_COMPAT_VERSION, __version__
from ..core.counters import MSG_SIZE_BOUNDS, QUEUE_COUNTERS, QUEUE_TYPES
from ..core.counters import SUM as SIZE_SUM
from . import ops, slices
from ..core.memory import QUEUE_BYTES
from .formats import NO_UNACKED, View, queue_memory, unacked_by_queue_sliced

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "rabbitmq_"
DETAILED_PREFIX = "rabbitmq_detailed_"
CLUSTER_PREFIX = "rabbitmq_cluster_"
CONTENTS_WALK = 4_096       # a queue's ready messages walked for its persistent count and head timestamp
#                             (more: what the last look found, as /api/queues does)
WALK_BUDGET = 1_000_000     # ... and at most this many in all per exposition
CHUNK_LINES = 2_000         # lines encoded and written at a time
CHECK_EVERY = 256           # lines made between two looks at the clock (~0.1 ms)


# ---------------------------------------------------------------------------------------- text format

def _esc(v) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(v) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, float):
        if v != v:
            return "NaN"
        if v in (float("inf"), float("-inf")):
            return "+Inf" if v > 0 else "-Inf"
        return repr(v)
    return str(int(v))


def labels(**kw) -> str:
    """Label text: k1="v1",k2="v2" in the order given, values escaped."""
    return ",".join(f'{k}="{_esc(v)}"' for k, v in kw.items())


class Out:
    """The exposition as it is made: lines gathered and handed to `write` (an async callable taking
    bytes) CHUNK_LINES at a time; the pacer yields a loop turn whenever its slice is over."""

    def __init__(self, write, pacer: slices.Pacer):
        self.write = write
        self.pacer = pacer
        self.buf: list = []
        self.size = 0

    async def family(self, name: str, kind: str, help_: str, samples=()):
        """samples: (label text, value) pairs; a None value is left out (RabbitMQ leaves out
        undefined ones)."""
        buf = self.buf
        buf.append(f"# TYPE {name} {kind}\n# HELP {name} {help_}\n")
        pacer = self.pacer
        n = 0
        for lab, value in samples:
            n += 1
            if value is not None:
                v = str(value) if type(value) is int else _num(value)
                buf.append(f"{name}{{{lab}}} {v}\n" if lab else f"{name} {v}\n")
            if n == CHECK_EVERY:
                n = 0
                if len(buf) >= CHUNK_LINES:
                    await self.flush()
                if pacer.due():
                    await pacer.pause()
        if len(buf) >= CHUNK_LINES:
            await self.flush()

    async def flush(self):
        if self.buf:
            data = "".join(self.buf).encode("utf-8")
            self.buf.clear()            # in place: family() holds the list while it adds to it
            self.size += len(data)
            await self.write(data)


# ---------------------------------------------------------------------------------------- groups
# A group is one of RabbitMQ's tables: (table name, object kind, metrics). A metric is
# (name, type, help, field): `field` names a value of the object's record (the records below).

NODE, QUEUE, RAFT, CHANNEL, CONNECTION, EXCHANGE, AUTH, AUTH_DETAILED, QUEUE_EXCHANGE, CHANNEL_QUEUE_EXCHANGE = (
    "node", "queue", "raft", "channel", "connection", "exchange", "auth", "auth_detailed", "queue_exchange",
    "channel_queue_exchange")

GROUPS = (
    ("connection_churn_metrics", NODE, (
        ("connections_opened_total", "counter", "Total number of connections opened", "connections_opened"),
        ("connections_closed_total", "counter", "Total number of connections closed or terminated",
         "connections_closed"),
        ("channels_opened_total", "counter", "Total number of channels opened", "channels_opened"),
        ("channels_closed_total", "counter", "Total number of channels closed", "channels_closed"),
        ("queues_declared_total", "counter", "Total number of queues declared", "queues_declared"),
        ("queues_created_total", "counter", "Total number of queues created", "queues_created"),
        ("queues_deleted_total", "counter", "Total number of queues deleted", "queues_deleted"))),
    ("node_coarse_metrics", NODE, (
        ("process_open_fds", "gauge", "Open file descriptors", "fd_used"),
        ("process_open_tcp_sockets", "gauge", "Open TCP sockets", "sockets_used"),
        ("process_resident_memory_bytes", "gauge", "Memory used in bytes", "mem_used"),
        ("disk_space_available_bytes", "gauge", "Disk space available in bytes", "disk_free"),
        ("erlang_processes_used", "gauge", "Erlang processes used", "proc_used"),
        ("erlang_gc_runs_total", "counter", "Total number of Erlang garbage collector runs", "gc_num"),
        ("erlang_gc_reclaimed_bytes_total", "counter",
         "Total number of bytes of memory reclaimed by Erlang garbage collector", "gc_bytes_reclaimed"),
        ("erlang_scheduler_context_switches_total", "counter",
         "Total number of Erlang scheduler context switches", "context_switches"))),
    ("node_metrics", NODE, (
        ("process_max_fds", "gauge", "Open file descriptors limit", "fd_total"),
        ("process_max_tcp_sockets", "gauge", "Open TCP sockets limit", "sockets_total"),
        ("resident_memory_limit_bytes", "gauge", "Memory high watermark in bytes", "mem_limit"),
        ("disk_space_available_limit_bytes", "gauge", "Free disk space low watermark in bytes",
         "disk_free_limit"),
        ("erlang_processes_limit", "gauge", "Erlang processes limit", "proc_total"),
        ("erlang_scheduler_run_queue", "gauge", "Erlang scheduler run queue", "run_queue"),
        ("erlang_net_ticktime_seconds", "gauge", "Inter-node heartbeat interval", "net_ticktime"),
        ("erlang_uptime_seconds", "gauge", "Node uptime", "uptime"))),
    ("node_persister_metrics", NODE, (
        ("io_read_ops_total", "counter", "Total number of I/O read operations", "io_read_count"),
        ("io_read_bytes_total", "counter", "Total number of I/O bytes read", "io_read_bytes"),
        ("io_write_ops_total", "counter", "Total number of I/O write operations", "io_write_count"),
        ("io_write_bytes_total", "counter", "Total number of I/O bytes written", "io_write_bytes"),
        ("io_sync_ops_total", "counter", "Total number of I/O sync operations", "io_sync_count"),
        ("io_seek_ops_total", "counter", "Total number of I/O seek operations", "io_seek_count"),
        ("io_reopen_ops_total", "counter", "Total number of times files have been reopened", "io_reopen_count"),
        ("schema_db_ram_tx_total", "counter", "Total number of Schema DB memory transactions",
         "mnesia_ram_tx_count"),
        ("schema_db_disk_tx_total", "counter", "Total number of Schema DB disk transactions",
         "mnesia_disk_tx_count"),
        ("msg_store_read_total", "counter", "Total number of Message Store read operations",
         "msg_store_read_count"),
        ("msg_store_write_total", "counter", "Total number of Message Store write operations",
         "msg_store_write_count"),
        ("queue_index_read_ops_total", "counter", "Total number of Queue Index read operations",
         "queue_index_read_count"),
        ("queue_index_write_ops_total", "counter", "Total number of Queue Index write operations",
         "queue_index_write_count"),
        ("io_read_time_seconds_total", "counter", "Total I/O read time", "io_read_time"),
        ("io_write_time_seconds_total", "counter", "Total I/O write time", "io_write_time"),
        ("io_sync_time_seconds_total", "counter", "Total I/O sync time", "io_sync_time"),
        ("io_seek_time_seconds_total", "counter", "Total I/O seek time", "io_seek_time"))),
    ("ra_metrics", RAFT, (
        ("raft_term_total", "counter", "Current Raft term number", "term"),
        ("raft_log_snapshot_index", "gauge", "Raft log snapshot index", "snapshot_index"),
        ("raft_log_last_applied_index", "gauge", "Raft log last applied index", "last_applied"),
        ("raft_log_commit_index", "gauge", "Raft log commit index", "commit_index"),
        ("raft_log_last_written_index", "gauge", "Raft log last written index", "last_written"),
        ("raft_entry_commit_latency_seconds", "gauge", "Time taken for a log entry to be committed",
         "commit_latency"))),
    ("auth_attempt_metrics", AUTH, (
        ("auth_attempts_total", "counter", "Total number of authentication attempts", "total"),
        ("auth_attempts_succeeded_total", "counter", "Total number of successful authentication attempts",
         "succeeded"),
        ("auth_attempts_failed_total", "counter", "Total number of failed authentication attempts", "failed"))),
    ("auth_attempt_detailed_metrics", AUTH_DETAILED, (
        ("auth_attempts_detailed_total", "counter",
         "Total number of authentication attempts with source info", "total"),
        ("auth_attempts_detailed_succeeded_total", "counter",
         "Total number of successful authentication attempts with source info", "succeeded"),
        ("auth_attempts_detailed_failed_total", "counter",
         "Total number of failed authentication attempts with source info", "failed"))),
    ("queue_coarse_metrics", QUEUE, (
        ("queue_messages_ready", "gauge", "Messages ready to be delivered to consumers", "ready"),
        ("queue_messages_unacked", "gauge", "Messages delivered to consumers but not yet acknowledged",
         "unacked"),
        ("queue_messages", "gauge", "Sum of ready and unacknowledged messages - total queue depth", "messages"),
        ("queue_process_reductions_total", "counter", "Total number of queue process reductions",
         "reductions"))),
    ("queue_consumer_count", QUEUE, (
        ("queue_consumers", "gauge", "Consumers on a queue", "consumers"),)),
    ("queue_metrics", QUEUE, (
        ("queue_consumers", "gauge", "Consumers on a queue", "consumers"),
        ("queue_consumer_capacity", "gauge", "Consumer capacity", "consumer_capacity"),
        ("queue_consumer_utilisation", "gauge", "Same as consumer capacity", "consumer_utilisation"),
        ("queue_process_memory_bytes", "gauge", "Memory in bytes used by the Erlang queue process", "memory"),
        ("queue_messages_ram", "gauge", "Ready and unacknowledged messages stored in memory", "messages_ram"),
        ("queue_messages_ram_bytes", "gauge", "Size of ready and unacknowledged messages stored in memory",
         "message_bytes_ram"),
        ("queue_messages_ready_ram", "gauge", "Ready messages stored in memory", "messages_ready_ram"),
        ("queue_messages_unacked_ram", "gauge", "Unacknowledged messages stored in memory",
         "messages_unacknowledged_ram"),
        ("queue_messages_persistent", "gauge", "Persistent messages", "messages_persistent"),
        ("queue_messages_persistent_bytes", "gauge", "Size in bytes of persistent messages",
         "message_bytes_persistent"),
        ("queue_messages_bytes", "gauge", "Size in bytes of ready and unacknowledged messages", "message_bytes"),
        ("queue_messages_ready_bytes", "gauge", "Size in bytes of ready messages", "message_bytes_ready"),
        ("queue_messages_unacked_bytes", "gauge", "Size in bytes of all unacknowledged messages",
         "message_bytes_unacknowledged"),
        ("queue_messages_paged_out", "gauge", "Messages paged out to disk", "messages_paged_out"),
        ("queue_messages_paged_out_bytes", "gauge", "Size in bytes of messages paged out to disk",
         "message_bytes_paged_out"),
        ("queue_head_message_timestamp", "gauge", "Timestamp of the first message in the queue, if any",
         "head_message_timestamp"),
        ("queue_disk_reads_total", "counter", "Total number of times queue read messages from disk",
         "disk_reads"),
        ("queue_disk_writes_total", "counter", "Total number of times queue wrote messages to disk",
         "disk_writes"),
        ("stream_segments", "counter", "Total number of stream segment files", "segments"))),
    ("channel_metrics", CHANNEL, (
        ("channel_consumers", "gauge", "Consumers on a channel", "consumer_count"),
        ("channel_messages_unacked", "gauge", "Delivered but not yet acknowledged messages",
         "messages_unacknowledged"),
        ("channel_messages_unconfirmed", "gauge", "Published but not yet confirmed messages",
         "messages_unconfirmed"),
        ("channel_messages_uncommitted", "gauge", "Messages received in a transaction but not yet committed",
         "messages_uncommitted"),
        ("channel_acks_uncommitted", "gauge", "Message acknowledgements in a transaction not yet committed",
         "acks_uncommitted"),
        ("consumer_prefetch", "gauge", "Limit of unacknowledged messages for each consumer", "prefetch_count"),
        ("channel_prefetch", "gauge", "Deprecated and will be removed in a future version",
         "global_prefetch_count"))),
    ("channel_exchange_metrics", CHANNEL, (
        ("channel_messages_published_total", "counter",
         "Total number of messages published into an exchange on a channel", "published"),
        ("channel_messages_confirmed_total", "counter",
         "Total number of messages published into an exchange and confirmed on the channel", "confirmed"),
        ("channel_messages_unroutable_returned_total", "counter",
         "Total number of messages published as mandatory into an exchange and returned to the publisher as "
         "unroutable", "returned"),
        ("channel_messages_unroutable_dropped_total", "counter",
         "Total number of messages published as non-mandatory into an exchange and dropped as unroutable",
         "dropped"))),
    ("channel_process_metrics", CHANNEL, (
        ("channel_process_reductions_total", "counter", "Total number of channel process reductions",
         "reductions"),)),
    ("channel_queue_metrics", CHANNEL, (
        ("channel_get_ack_total", "counter",
         "Total number of messages fetched with basic.get in manual acknowledgement mode", "get_ack"),
        ("channel_get_total", "counter",
         "Total number of messages fetched with basic.get in automatic acknowledgement mode", "get_auto"),
        ("channel_messages_delivered_ack_total", "counter",
         "Total number of messages delivered to consumers in manual acknowledgement mode", "deliver_ack"),
        ("channel_messages_delivered_total", "counter",
         "Total number of messages delivered to consumers in automatic acknowledgement mode", "deliver_auto"),
        ("channel_messages_redelivered_total", "counter", "Total number of messages redelivered to consumers",
         "redelivered"),
        ("channel_messages_acked_total", "counter", "Total number of messages acknowledged by consumers",
         "acked"),
        ("channel_get_empty_total", "counter", "Total number of times basic.get operations fetched no message",
         "get_empty"))),
    ("connection_coarse_metrics", CONNECTION, (
        ("connection_incoming_bytes_total", "counter", "Total number of bytes received on a connection",
         "recv_oct"),
        ("connection_outgoing_bytes_total", "counter", "Total number of bytes sent on a connection", "send_oct"),
        ("connection_process_reductions_total", "counter", "Total number of connection process reductions",
         "reductions"))),
    ("connection_metrics", CONNECTION, (
        ("connection_incoming_packets_total", "counter", "Total number of packets received on a connection",
         "recv_cnt"),
        ("connection_outgoing_packets_total", "counter", "Total number of packets sent on a connection",
         "send_cnt"),
        ("connection_pending_packets", "gauge", "Number of packets waiting to be sent on a connection",
         "send_pend"),
        ("connection_channels", "gauge", "Channels on a connection", "channels"))),
    ("channel_queue_exchange_metrics", CHANNEL_QUEUE_EXCHANGE, (
        ("queue_messages_published_total", "counter",
         "Total number of messages published into a queue through an exchange on a channel", "published"),)),
    ("exchange_metrics", EXCHANGE, (
        ("exchange_messages_published_total", "counter", "Total number of messages published into an exchange",
         "published"),
        ("exchange_messages_confirmed_total", "counter",
         "Total number of messages published into an exchange and confirmed", "confirmed"),
        ("exchange_messages_unroutable_returned_total", "counter",
         "Total number of messages published as mandatory into an exchange and returned to the publisher as "
         "unroutable", "returned"),
        ("exchange_messages_unroutable_dropped_total", "counter",
         "Total number of messages published as non-mandatory into an exchange and dropped as unroutable",
         "dropped"))),
    ("queue_delivery_metrics", QUEUE, (
        ("queue_get_ack_total", "counter",
         "Total number of messages fetched from a queue with basic.get in manual acknowledgement mode",
         "get_ack"),
        ("queue_get_total", "counter",
         "Total number of messages fetched from a queue with basic.get in automatic acknowledgement mode",
         "get_auto"),
        ("queue_messages_delivered_ack_total", "counter",
         "Total number of messages delivered from a queue to consumers in manual acknowledgement mode",
         "deliver_ack"),
        ("queue_messages_delivered_total", "counter",
         "Total number of messages delivered from a queue to consumers in automatic acknowledgement mode",
         "deliver_auto"),
        ("queue_messages_redelivered_total", "counter",
         "Total number of messages redelivered from a queue to consumers", "redelivered"),
        ("queue_messages_acked_total", "counter", "Total number of messages acknowledged by consumers on a queue",
         "acked"),
        ("queue_get_empty_total", "counter",
         "Total number of times basic.get operations fetched no message on a queue", "get_empty"))),
    ("queue_exchange_metrics", QUEUE_EXCHANGE, (
        ("queue_exchange_messages_published_total", "counter",
         "Total number of messages published into a queue through an exchange", "published"),)),
)
GROUP_BY_NAME = {g[0]: g for g in GROUPS}

CLUSTER_GROUPS = ("vhost_status", "exchange_bindings", "exchange_names")
CHANNEL_WITH_VHOST = {"channel_exchange_metrics", "channel_queue_metrics"}     # labelled channel and vhost
DETAILED_GROUPS = tuple(GROUP_BY_NAME) + CLUSTER_GROUPS
VHOST_FILTERED = {"queue_coarse_metrics", "queue_consumer_count", "queue_metrics", "queue_delivery_metrics",
                  "queue_exchange_metrics"}

TOTALS = (("connections", "Connections currently open"), ("channels", "Channels currently open"),
          ("consumers", "Consumers currently connected"), ("queues", "Queues available"))

# record fields of each kind of object, in order (a record is a tuple of these)
QUEUE_FIELDS = ("ready", "unacked", "messages", "reductions", "consumers", "consumer_capacity",
                "consumer_utilisation", "memory", "messages_ram", "message_bytes_ram", "messages_ready_ram",
                "messages_unacknowledged_ram", "messages_persistent", "message_bytes_persistent", "message_bytes",
                "message_bytes_ready", "message_bytes_unacknowledged", "messages_paged_out",
                "message_bytes_paged_out", "disk_reads", "disk_writes", "get_ack", "get_auto", "deliver_ack",
                "deliver_auto", "redelivered", "acked", "get_empty",
                "head_message_timestamp", "segments")     # these two may be undefined (None): last
QUEUE_SUMMED = len(QUEUE_FIELDS) - 2
RAFT_FIELDS = ("term", "snapshot_index", "last_applied", "commit_index", "last_written", "commit_latency")
CHANNEL_FIELDS = ("consumer_count", "messages_unacknowledged", "messages_unconfirmed", "messages_uncommitted",
                  "acks_uncommitted", "prefetch_count", "global_prefetch_count", "published", "confirmed",
                  "returned", "dropped", "reductions", "get_ack", "get_auto", "deliver_ack", "deliver_auto",
                  "redelivered", "acked", "get_empty")
CONNECTION_FIELDS = ("recv_oct", "send_oct", "reductions", "recv_cnt", "send_cnt", "send_pend", "channels")
EXCHANGE_FIELDS = ("published", "confirmed", "returned", "dropped")
AUTH_FIELDS = ("total", "succeeded", "failed")
FIELDS = {QUEUE: QUEUE_FIELDS, RAFT: RAFT_FIELDS, CHANNEL: CHANNEL_FIELDS, CONNECTION: CONNECTION_FIELDS,
          EXCHANGE: EXCHANGE_FIELDS, AUTH: AUTH_FIELDS, AUTH_DETAILED: AUTH_FIELDS,
          QUEUE_EXCHANGE: ("published",), CHANNEL_QUEUE_EXCHANGE: ("published",)}
_INDEX = {kind: {f: i for i, f in enumerate(fields)} for kind, fields in FIELDS.items()}

GLOBAL_PROTOCOL = (
    ("messages_received_total", "counter", "Total number of messages received from publishers"),
    ("messages_received_confirm_total", "counter",
     "Total number of messages received from publishers expecting confirmations"),
    ("messages_routed_total", "counter", "Total number of messages routed to queues or streams"),
    ("messages_unroutable_dropped_total", "counter",
     "Total number of messages published as non-mandatory into an exchange and dropped as unroutable"),
    ("messages_unroutable_returned_total", "counter",
     "Total number of messages published as mandatory into an exchange and returned to the publisher as "
     "unroutable"),
    ("messages_confirmed_total", "counter", "Total number of messages confirmed to publishers"),
    ("publishers", "gauge", "Current number of publishers"),
    ("consumers", "gauge", "Current number of consumers"),
)
GLOBAL_QUEUE_TYPE = (
    ("messages_delivered_total", "counter", "Total number of messages delivered to consumers"),
    ("messages_delivered_consume_manual_ack_total", "counter",
     "Total number of messages delivered to consumers using basic.consume with manual acknowledgment"),
    ("messages_delivered_consume_auto_ack_total", "counter",
     "Total number of messages delivered to consumers using basic.consume with automatic acknowledgment"),
    ("messages_delivered_get_manual_ack_total", "counter",
     "Total number of messages delivered to consumers using basic.get with manual acknowledgment"),
    ("messages_delivered_get_auto_ack_total", "counter",
     "Total number of messages delivered to consumers using basic.get with automatic acknowledgment"),
    ("messages_get_empty_total", "counter", "Total number of times basic.get operations fetched no message"),
    ("messages_redelivered_total", "counter", "Total number of messages redelivered to consumers"),
    ("messages_acknowledged_total", "counter", "Total number of messages acknowledged by consumers"),
)
GLOBAL_DEAD_LETTERED = (
    ("messages_dead_lettered_confirmed_total", "Total number of messages dead-lettered and confirmed by "
     "target queues", "confirmed", (("quorum", "at_least_once"),)),
    ("messages_dead_lettered_delivery_limit_total", "Total number of messages dead-lettered due to "
     "delivery-limit exceeded", "delivery_limit",
     (("quorum", "disabled"), ("quorum", "at_most_once"), ("quorum", "at_least_once"))),
    ("messages_dead_lettered_expired_total", "Total number of messages dead-lettered due to message TTL "
     "exceeded", "expired", (("classic", "disabled"), ("classic", "at_most_once"), ("quorum", "disabled"),
                             ("quorum", "at_most_once"), ("quorum", "at_least_once"))),
    ("messages_dead_lettered_maxlen_total", "Total number of messages dead-lettered due to overflow drop-head "
     "or reject-publish-dlx", "maxlen", (("classic", "disabled"), ("classic", "at_most_once"),
                                         ("quorum", "disabled"), ("quorum", "at_most_once"))),
    ("messages_dead_lettered_rejected_total", "Total number of messages dead-lettered due to basic.reject or "
     "basic.nack", "rejected", (("classic", "disabled"), ("classic", "at_most_once"), ("quorum", "disabled"),
                                ("quorum", "at_most_once"), ("quorum", "at_least_once"))),
)
QUEUE_KINDS = ("classic", "quorum", "stream")

MEMORY_BREAKDOWN = (
    ("memory_code_module_bytes", "Code module memory footprint", ("base",)),
    ("memory_client_connection_reader_bytes", "Client connection reader processes footprint in bytes", ()),
    ("memory_client_connection_writer_bytes", "Client connection writer processes footprint in bytes", ()),
    ("memory_client_connection_channel_bytes", "Client connection channel processes footprint in bytes",
     ("unacked",)),
    ("memory_client_connection_other_bytes", "Client connection other processes footprint in bytes",
     ("connections",)),
    ("memory_classic_queue_erlang_process_bytes", "Classic queue processes footprint in bytes",
     ("queues", "entries")),
    ("memory_quorum_queue_erlang_process_bytes", "Quorum queue processes footprint in bytes", ()),
    ("memory_quorum_queue_dlx_erlang_process_bytes", "Quorum queue DLX worker processes footprint in bytes", ()),
    ("memory_stream_erlang_process_bytes", "Stream processes footprint in bytes", ()),
    ("memory_stream_replica_reader_erlang_process_bytes", "Stream replica reader processes footprint in bytes",
     ()),
    ("memory_stream_coordinator_erlang_process_bytes", "Stream coordinator processes footprint in bytes", ()),
    ("memory_plugin_bytes", "Total plugin footprint in bytes", ()),
    ("memory_modern_metadata_store_bytes", "Modern metadata store footprint in bytes", ()),
    ("memory_other_erlang_process_bytes", "Other processes footprint in bytes", ("delayed", "dead_letter")),
    ("memory_metrics_bytes", "Metric table footprint in bytes", ()),
    ("memory_management_stats_db_bytes", "Management stats database footprint in bytes", ()),
    ("memory_classic_metadata_store_bytes", "Classic metadata store footprint in bytes", ("entities",)),
    ("memory_quorum_queue_ets_table_bytes", "Quorum queue ETS tables footprint in bytes", ()),
    ("memory_modern_metadata_store_ets_table_bytes", "Modern metadata store ETS tables footprint in bytes", ()),
    ("memory_other_ets_table_bytes", "Other ETS tables footprint in bytes", ()),
    ("memory_binary_heap_bytes", "Binary heap size in bytes", ()),
    ("memory_message_index_bytes", "Message index footprint in bytes", ("store",)),
    ("memory_atom_table_bytes", "Atom table size in bytes", ()),
    ("memory_other_system_bytes", "Other runtime footprint in bytes", ()),
    ("memory_runtime_allocated_unused_bytes", "Runtime allocated but unused blocks size in bytes", ("unused",)),
    ("memory_runtime_reserved_unallocated_bytes", "Runtime reserved but unallocated blocks size in bytes", ()),
)

PROC_TOTAL = 1048576        # the Erlang process limit and use /api/nodes reports (proc_total, proc_used)
NET_TICKTIME = 60


# ---------------------------------------------------------------------------------------- records

def _proc_io() -> dict:
    """The process's I/O so far (/proc/self/io: system calls and bytes, sockets included)."""
    out = {}
    try:
        with open("/proc/self/io") as f:
            for line in f:
                k, _, v = line.partition(":")
                out[k.strip()] = int(v)
    except (OSError, ValueError):
        pass
    return out


def node_record(m) -> dict:
    """The node-level figures, by RabbitMQ's field names."""
    b = m.broker
    st = b.stats
    conns = [c for c in b.connections if not c.closed]
    created = m.sampler.connections_created()
    channels = sum(len(c.channels) for c in conns)
    fd_used, fd_total = m.fds()
    io = _proc_io()
    try:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        switches = ru.ru_nvcsw + ru.ru_nivcsw
    except (OSError, ValueError):
        switches = 0
    commits, commit_seconds, _last = b.commit_stats
    return {
        "connections_opened": created, "connections_closed": max(created - len(b.connections), 0),
        "channels_opened": st.get("channel_created", 0),
        "channels_closed": max(st.get("channel_created", 0) - channels, 0),
        "queues_declared": st.get("queue_declared", 0), "queues_created": st.get("queue_created", 0),
        "queues_deleted": st.get("queue_deleted", 0),
        "fd_used": fd_used, "sockets_used": len(conns), "mem_used": b.memory_usage(),
        "disk_free": m.disk_free(), "proc_used": 1,
        "gc_num": sum(s.get("collections", 0) for s in gc.get_stats()), "gc_bytes_reclaimed": 0,
        "context_switches": switches,
        "fd_total": fd_total, "sockets_total": fd_total, "mem_limit": b.memory_limit(),
        "disk_free_limit": b.disk_free_limit(), "proc_total": PROC_TOTAL, "run_queue": 0,
        "net_ticktime": NET_TICKTIME, "uptime": round(time.time() - b.started_at, 3),
        "io_read_count": io.get("syscr", 0), "io_read_bytes": io.get("rchar", 0),
        "io_write_count": io.get("syscw", 0), "io_write_bytes": io.get("wchar", 0),
        "io_sync_count": commits, "io_seek_count": 0, "io_reopen_count": 0,
        "mnesia_ram_tx_count": 0, "mnesia_disk_tx_count": 0, "msg_store_read_count": 0,
        "msg_store_write_count": 0, "queue_index_read_count": 0, "queue_index_write_count": 0,
        "io_read_time": 0.0, "io_write_time": 0.0, "io_sync_time": round(commit_seconds, 6), "io_seek_time": 0.0,
    }


def _queue_label(q) -> str:
    return f'vhost="{_esc(q.vhost)}",queue="{_esc(q.name)}"'


def queue_record(q, ua, view: View, walk: int = CONTENTS_WALK) -> tuple:
    """A queue's values in QUEUE_FIELDS order; ua: its unacked figures (formats.unacked_by_queue);
    its ready messages are walked if there are at most `walk` in memory (formats.queue_contents)."""
    ready, unacked = q.message_count, q.unacked
    n_consumers = len(q.consumers)
    capacity = 1.0 if n_consumers else 0
    consume_auto = q.delivered_auto
    deliveries = (q.get_ack, q.get_auto, max(q.delivered - consume_auto - q.get_ack - q.get_auto, 0),
                  consume_auto, q.redelivered_count, max(q.acked - consume_auto - q.get_auto, 0), q.get_empty)
    segments = len(q.segs) if q.kind == "stream" else None
    if not ready and not unacked:           # most queues of a large broker: nothing to look at
        return (0, 0, 0, 0, n_consumers, capacity, capacity, QUEUE_BYTES, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                0, 0) + deliveries + (None, segments)
    mem = queue_memory(q, ua)
    persistent, persistent_bytes, head_ts = view.queue_contents(q, False, walk)
    return (ready, unacked, ready + unacked, 0, n_consumers, capacity, capacity, mem["memory"],
            mem["messages_ram"], mem["ram_bytes"], mem["ready_ram"], mem["unacked_ram"], persistent + ua[1],
            persistent_bytes + ua[2], q.message_bytes + ua[0], q.message_bytes, ua[0], mem["paged_out"],
            mem["paged_out_bytes"], 0, 0) + deliveries + (head_ts if isinstance(head_ts, int) else None, segments)


def raft_record(q, ready_unacked: int, latency: float) -> tuple:
    """A quorum queue as one Raft member (see the module's docstring)."""
    written = q.published + q.acked + q.redelivered_count
    return (1, max(written - ready_unacked, 0), written, written, written, latency)


def channel_record(ch) -> tuple:
    return (len(ch.consumers), len(ch.unacked), len(ch.waiting) - len(ch.early) + len(ch.acks_ready), len(ch.tx_publishes),
            sum(len(items) for items, _r in ch.tx_acks), ch.prefetch_count, ch.global_prefetch, ch.published,
            ch.confirmed, ch.returned, ch.dropped, 0, ch.get_ack, ch.get_auto,
            max(ch.delivered - ch.delivered_auto, 0), ch.delivered_auto, ch.redelivered, ch.acked, ch.get_empty)


def connection_record(c) -> tuple:
    return (c.recv_oct, c.send_oct, 0, c.recv_cnt, c.send_cnt, len(c.out), len(c.channels))


class Scrape:
    """What one exposition reads, gathered a slice at a time and kept for its length."""

    def __init__(self, m, pacer: slices.Pacer, vhosts=None):
        self.m = m
        self.broker = m.broker
        self.pacer = pacer
        self.vhosts = set(vhosts) if vhosts else None
        self.view = View(m)
        self.walk_left = WALK_BUDGET
        self._ua = None
        self._queues: dict = {}
        self._agg = None

    async def tick(self):
        if self.pacer.due():
            await self.pacer.pause()

    def _vhost_list(self, filtered: bool):
        vs = sorted(self.broker.vhosts.items())
        if filtered and self.vhosts is not None:
            vs = [(n, v) for n, v in vs if n in self.vhosts]
        return [v for _n, v in vs]

    async def unacked(self) -> dict:
        if self._ua is None:
            self._ua = await unacked_by_queue_sliced(self.broker, self.pacer)
        return self._ua

    async def queues(self, filtered: bool) -> list:
        """The queues (of the vhosts asked for), by vhost and name."""
        out = self._queues.get(filtered)
        if out is None:
            out = []
            for v in self._vhost_list(filtered):
                out += await slices.sort(list(v.queues.values()), _by_name, self.pacer)
                await self.tick()
            self._queues[filtered] = out
        return out

    def queue_record(self, q, ua: dict) -> tuple:
        """queue_record, walking the queue's messages within CONTENTS_WALK and what is left of
        WALK_BUDGET (past them: what the last look found)."""
        limit = min(CONTENTS_WALK, self.walk_left)
        if q.ram_count() <= limit:
            self.walk_left -= q.ram_count()
        return queue_record(q, ua.get(id(q), NO_UNACKED), self.view, limit)

    async def queue_records(self, filtered: bool) -> list:
        """[(label, record)] of every queue (of the vhosts asked for), by vhost and name."""
        ua = await self.unacked()
        out = []
        pacer = self.pacer
        for q in await self.queues(filtered):
            out.append((_queue_label(q), self.queue_record(q, ua)))
            if pacer.due():
                await pacer.pause()
        return out

    async def queue_published(self, filtered: bool):
        """(label, (published,)) per queue, labelled queue_vhost and queue: made as they are
        written (Out.family paces the work)."""
        return ((f'queue_vhost="{_esc(q.vhost)}",queue="{_esc(q.name)}"', (q.published,))
                for q in await self.queues(filtered))

    async def raft_records(self, filtered: bool) -> list:
        latency = round(self.broker.commit_stats[2], 6)
        out = []
        pacer = self.pacer
        for q in await self.queues(filtered):
            if q.kind == "quorum":
                out.append((_queue_label(q), raft_record(q, q.message_count + q.unacked, latency)))
            if pacer.due():
                await pacer.pause()
        return out

    async def aggregate(self) -> dict:
        """One walk over every queue for /metrics: the queue records summed, the Raft records
        summed, QUEUE_COUNTERS by queue kind (deleted queues' included), queues and consumers."""
        if self._agg is not None:
            return self._agg
        ua = await self.unacked()
        qsum, rsum = [0] * QUEUE_SUMMED, _Sum(RAFT)
        segments = None
        by_kind = {k: list(v) for k, v in self.broker.counters.retired.items()}
        names = QUEUE_COUNTERS
        latency = round(self.broker.commit_stats[2], 6)
        n_queues = consumers = 0
        pacer = self.pacer
        for v in self._vhost_list(False):
            for q in list(v.queues.values()):
                rec = self.queue_record(q, ua)
                qsum = list(map(add, qsum, rec[:QUEUE_SUMMED]))
                if rec[-1] is not None:
                    segments = (segments or 0) + rec[-1]
                if q.kind == "quorum":
                    rsum.add(raft_record(q, q.message_count + q.unacked, latency))
                t = by_kind.get(q.kind)
                if t is None:
                    t = by_kind[q.kind] = [0] * len(names)
                for i, name in enumerate(names):
                    t[i] += getattr(q, name)
                n_queues += 1
                consumers += len(q.consumers)
                if pacer.due():
                    await pacer.pause()
        # a sum of head timestamps means nothing: left out, as RabbitMQ leaves it out
        self._agg = {"queue": tuple(qsum) + (None, segments), "raft": rsum.total(),
                     "by_kind": {k: dict(zip(names, t)) for k, t in by_kind.items()},
                     "queues": n_queues, "consumers": consumers}
        return self._agg

    async def queue_totals(self) -> dict:
        """QUEUE_COUNTERS summed by queue kind over live and deleted queues (aggregate() has them
        when it ran; else a walk of their counters only)."""
        if self._agg is not None:
            return self._agg["by_kind"]
        by_kind = {k: list(v) for k, v in self.broker.counters.retired.items()}
        names = QUEUE_COUNTERS
        pacer = self.pacer
        for v in self._vhost_list(False):
            for q in list(v.queues.values()):
                t = by_kind.get(q.kind)
                if t is None:
                    t = by_kind[q.kind] = [0] * len(names)
                for i, name in enumerate(names):
                    t[i] += getattr(q, name)
                if pacer.due():
                    await pacer.pause()
        return {k: dict(zip(names, t)) for k, t in by_kind.items()}

    async def channel_records(self) -> list:
        out = []
        for c in await slices.sort(list(self.broker.connections), _by_name, self.pacer):
            vhost = c.vhost or ""
            for ch in list(c.channels.values()):
                lab = f'channel="{_esc(View.channel_name(ch))}"'
                out.append(((lab, f'{lab},vhost="{_esc(vhost)}"'), channel_record(ch)))
            await self.tick()
        return out

    async def connection_records(self) -> list:
        out = []
        for c in await slices.sort(list(self.broker.connections), _by_name, self.pacer):
            out.append((f'channel="{_esc(c.name)}"', connection_record(c)))
            await self.tick()
        return out

    async def exchange_records(self, filtered: bool) -> list:
        out = []
        for v in self._vhost_list(filtered):
            for x in await slices.sort(list(v.exchanges.values()), _by_name, self.pacer):
                out.append((f'vhost="{_esc(v.name)}",exchange="{_esc(x.name)}"',
                            (x.publish_in, None, x.returned, x.dropped)))
            await self.tick()
        return out

    def auth_records(self) -> list:
        out = []
        for proto, (ok, failed) in sorted(self.broker.counters.auth.items(), key=lambda kv: kv[0] != "http"):
            out.append((f'protocol="{proto}"', (ok + failed, ok, failed)))
        return out

    async def object_totals(self) -> dict:
        b = self.broker
        if self._agg is not None:
            n_queues, consumers = self._agg["queues"], self._agg["consumers"]
        else:
            n_queues = consumers = 0
            for v in self._vhost_list(False):
                for q in list(v.queues.values()):
                    n_queues += 1
                    consumers += len(q.consumers)
                    await self.tick()
        conns = [c for c in b.connections if not c.closed]
        return {"connections": len(conns), "channels": sum(len(c.channels) for c in conns),
                "consumers": consumers, "queues": n_queues}


def _by_name(obj):
    return obj.name


class _Sum:
    """Records of one kind summed field by field (None: undefined, left out; a field undefined in
    every record stays None). The raft commit latency is averaged, as RabbitMQ does."""

    def __init__(self, kind: str):
        self.kind = kind
        self.sums = [None] * len(FIELDS[kind])
        self.n = 0

    def add(self, rec):
        sums = self.sums
        self.n += 1
        for i, v in enumerate(rec):
            if v is not None:
                s = sums[i]
                sums[i] = v if s is None else s + v

    def total(self) -> tuple:
        sums = list(self.sums)
        if self.kind == RAFT and self.n:
            i = _INDEX[RAFT]["commit_latency"]
            sums[i] = sums[i] / self.n if sums[i] is not None else None
        return tuple(sums)


def _sum_records(records, kind: str) -> tuple:
    acc = _Sum(kind)
    for _lab, rec in records:
        acc.add(rec)
    return acc.total()


def _delivery_totals(by_kind: dict) -> dict:
    """Node-wide delivery counters (QUEUE_FIELDS names) from queue_totals()."""
    t = dict.fromkeys(("get_ack", "get_auto", "deliver_ack", "deliver_auto", "redelivered", "acked", "get_empty",
                       "published"), 0)
    for c in by_kind.values():
        d = _kind_deliveries(c)
        t["get_ack"] += c["get_ack"]
        t["get_auto"] += c["get_auto"]
        t["deliver_ack"] += d["consume_manual"]
        t["deliver_auto"] += c["delivered_auto"]
        t["redelivered"] += c["redelivered_count"]
        t["acked"] += d["acked"]
        t["get_empty"] += c["get_empty"]
        t["published"] += c["published"]
    return t


def _kind_deliveries(c: dict) -> dict:
    return {"consume_manual": max(c["delivered"] - c["delivered_auto"] - c["get_ack"] - c["get_auto"], 0),
            "acked": max(c["acked"] - c["delivered_auto"] - c["get_auto"], 0)}


# ---------------------------------------------------------------------------------------- the families

async def _groups(out: Out, scrape: Scrape, names, per_object: bool, prefix: str, node: dict | None = None):
    """The families of the groups named, per object or aggregated. The groups of one kind of object
    are written one after the other, and the records of that kind dropped after them (a family's
    place in an exposition means nothing)."""
    filtered = prefix == DETAILED_PREFIX
    records: dict = {}          # kind -> [(label, record)] (per object) or [("", sums)] (aggregated)
    by_kind = None
    wanted = []
    for gname in names:
        g = GROUP_BY_NAME.get(gname)
        if g is None or (gname == "queue_consumer_count" and "queue_metrics" in names):
            continue            # (a subset of queue_metrics: RabbitMQ leaves it out then too)
        wanted.append((gname, (g[1], filtered and gname in VHOST_FILTERED)))
    first = {}
    for i, (_gname, key) in enumerate(wanted):
        first.setdefault(key, i)
    wanted.sort(key=lambda gk: first[gk[1]])           # stable: the groups of a kind in their order
    last = {key: i for i, (_gname, key) in enumerate(wanted)}
    for pos, (gname, key) in enumerate(wanted):
        _name, kind, metrics = GROUP_BY_NAME[gname]
        vf = key[1]
        if key not in records:
            if kind == NODE:
                records[key] = [("", node if node is not None else node_record(scrape.m))]
            elif kind == AUTH:
                records[key] = scrape.auth_records()
            elif kind == AUTH_DETAILED:
                records[key] = []       # source tracking is off, as RabbitMQ's default
            elif per_object:
                if kind == QUEUE:
                    records[key] = await scrape.queue_records(vf)
                elif kind == RAFT:
                    records[key] = await scrape.raft_records(vf)
                elif kind == CHANNEL:
                    records[key] = await scrape.channel_records()
                elif kind == CONNECTION:
                    records[key] = await scrape.connection_records()
                elif kind == EXCHANGE:
                    records[key] = await scrape.exchange_records(False)
                elif kind == CHANNEL_QUEUE_EXCHANGE:
                    records[key] = await scrape.queue_published(vf)
                else:                   # QUEUE_EXCHANGE: not counted per queue and exchange pair
                    records[key] = []
            else:
                if by_kind is None and kind in (QUEUE, CHANNEL, EXCHANGE, QUEUE_EXCHANGE, CHANNEL_QUEUE_EXCHANGE):
                    by_kind = _delivery_totals(await scrape.queue_totals())
                records[key] = [("", await _aggregate(scrape, kind, by_kind))]
        recs = records[key]
        if kind == NODE:
            idx = None
            rec = recs[0][1]
        else:
            idx = _INDEX[kind]
        alt = 1 if gname in CHANNEL_WITH_VHOST else 0
        for mname, mtype, help_, field in metrics:
            if kind == NODE:
                samples = (("", rec[field]),)
            elif kind == CHANNEL and per_object:
                i = idx[field]
                samples = ((lab[alt], r[i]) for lab, r in recs)
            else:
                i = idx[field]
                samples = ((lab, r[i]) for lab, r in recs)
            await out.family(prefix + mname, mtype, help_, samples)
        if last[key] == pos:
            del records[key]

async def _aggregate(scrape: Scrape, kind: str, by_kind: dict | None) -> tuple:
    """One record of a kind for /metrics: live objects summed, node-wide counters where RabbitMQ's
    per-object rows would lose what closed channels and deleted queues counted."""
    b = scrape.broker
    st = b.stats
    if kind == QUEUE:
        rec = list((await scrape.aggregate())["queue"])
        for f in ("get_ack", "get_auto", "deliver_ack", "deliver_auto", "redelivered", "acked", "get_empty"):
            rec[_INDEX[QUEUE][f]] = by_kind[f]
        return tuple(rec)
    if kind == RAFT:
        return (await scrape.aggregate())["raft"]
    if kind == CHANNEL:
        rec = list(_sum_records(await scrape.channel_records(), CHANNEL))
        ix = _INDEX[CHANNEL]
        for f, v in (("published", st.get("publish", 0)), ("confirmed", st.get("confirm", 0)),
                     ("returned", st.get("return_unroutable", 0)), ("dropped", st.get("drop_unroutable", 0)),
                     ("reductions", 0)):
            rec[ix[f]] = v
        for f in ("get_ack", "get_auto", "deliver_ack", "deliver_auto", "redelivered", "acked", "get_empty"):
            rec[ix[f]] = by_kind[f]
        return tuple(0 if v is None else v for v in rec)
    if kind == CONNECTION:
        return tuple(0 if v is None else v for v in _sum_records(await scrape.connection_records(), CONNECTION))
    if kind == EXCHANGE:
        return (st.get("publish", 0), st.get("confirm", 0), st.get("return_unroutable", 0),
                st.get("drop_unroutable", 0))
    return (by_kind["published"],)          # QUEUE_EXCHANGE, CHANNEL_QUEUE_EXCHANGE


async def _totals(out: Out, scrape: Scrape):
    t = await scrape.object_totals()
    for name, help_ in TOTALS:
        await out.family(PREFIX + name, "gauge", help_, (("", t[name]),))


async def _queue_info(out: Out, scrape: Scrape, prefix: str, filtered: bool):
    samples = ((f'{_queue_label(q)},queue_type="{QUEUE_TYPES.get(q.kind, q.kind)}",membership="leader"', 1)
               for q in await scrape.queues(filtered))         # made as they are written (Out paces)
    await out.family(prefix + "queue_info", "gauge",
                     "A metric with a constant '1' value and labels that provide some queue details", samples)


async def _identity(out: Out, m, endpoint: str):
    b = m.broker
    await out.family("rabbitmq_build_info", "untyped", "RabbitMQ & Erlang/OTP version info", ((labels(
        rabbitmq_version=RABBITMQ_COMPAT_VERSION, prometheus_plugin_version=RABBITMQ_COMPAT_VERSION,
        prometheus_client_version="4.11.0", erlang_version=platform.python_version(),
        product_name="Usagi", product_version=__version__), 1),))
    await out.family("rabbitmq_identity_info", "untyped", "RabbitMQ node & cluster identity info", ((labels(
        rabbitmq_node=m.node, rabbitmq_cluster=b.server_properties.get("cluster_name", m.node),
        rabbitmq_cluster_permanent_id=ops.cluster_id(b), rabbitmq_endpoint=endpoint), 1),))


async def _global(out: Out, scrape: Scrape):
    """rabbit_global_counters' families (rabbitmq_global_*), with their labels."""
    b = scrape.broker
    st = b.stats
    conns = [c for c in b.connections if not c.closed]
    publishers = sum(1 for c in conns for ch in list(c.channels.values()) if ch.published)
    consumers = sum(len(ch.consumers) for c in conns for ch in list(c.channels.values()))
    routed = max(st.get("publish", 0) - st.get("drop_unroutable", 0) - st.get("return_unroutable", 0), 0)
    proto = 'protocol="amqp091"'
    values = (st.get("publish", 0), st.get("publish_confirm", 0), routed, st.get("drop_unroutable", 0),
              st.get("return_unroutable", 0), st.get("confirm", 0), publishers, consumers)
    for (name, kind, help_), v in zip(GLOBAL_PROTOCOL, values):
        await out.family("rabbitmq_global_" + name, kind, help_, ((proto, v),))
    by_kind = await scrape.queue_totals()
    rows = []
    for k in QUEUE_KINDS:
        c = by_kind.get(k) or dict.fromkeys(QUEUE_COUNTERS, 0)
        d = _kind_deliveries(c)
        rows.append((f'{proto},queue_type="{QUEUE_TYPES[k]}"',
                     (c["delivered"], d["consume_manual"], c["delivered_auto"], c["get_ack"], c["get_auto"],
                      c["get_empty"], c["redelivered_count"], d["acked"])))
    for i, (name, kind, help_) in enumerate(GLOBAL_QUEUE_TYPE):
        await out.family("rabbitmq_global_" + name, kind, help_, ((lab, r[i]) for lab, r in rows))
    deaths = b.counters.deaths
    for name, help_, reason, label_sets in GLOBAL_DEAD_LETTERED:
        samples = []
        for k, strategy in label_sets:
            n = deaths.get((k, strategy, reason), 0) if reason != "confirmed" else 0
            samples.append((f'queue_type="{QUEUE_TYPES[k]}",dead_letter_strategy="{strategy}"', n))
        await out.family("rabbitmq_global_" + name, "counter", help_, samples)


async def _alarms(out: Out, b):
    for name, help_, key in (
            ("file_descriptor_limit", "is 1 if file descriptor limit alarm is in effect", "fd"),
            ("free_disk_space_watermark", "is 1 if free disk space watermark alarm is in effect", "disk"),
            ("memory_used_watermark", "is 1 if VM memory watermark alarm is in effect", "memory")):
        await out.family("rabbitmq_alarms_" + name, "untyped", help_, (("", int(key in b.alarms)),))


async def _message_sizes(out: Out, b):
    """rabbitmq_message_size_bytes: the sizes of messages received, a cumulative histogram."""
    sizes = list(b.counters.sizes)
    name = "rabbitmq_message_size_bytes"
    lines = [f"# TYPE {name} histogram\n# HELP {name} Size of messages received from publishers\n"]
    acc = 0
    for bound, n in zip(MSG_SIZE_BOUNDS + (None,), sizes[:SIZE_SUM]):
        acc += n
        le = "+Inf" if bound is None else _le(bound)
        lines.append(f'{name}_bucket{{protocol="amqp091",le="{le}"}} {acc}\n')
    lines.append(f'{name}_sum{{protocol="amqp091"}} {sizes[SIZE_SUM]}\n')
    lines.append(f'{name}_count{{protocol="amqp091"}} {acc}\n')
    out.buf += lines


def _le(bound: int) -> str:
    """A bucket bound as the Erlang prometheus client writes it: 100.0, 1000.0, ..., 1e+06."""
    return f"{float(bound):.1f}" if bound < 1_000_000 else f"{float(bound):.0e}"


async def _process(out: Out, b):
    await out.family("process_start_time_seconds", "gauge",
                     "Start time of the process since unix epoch in seconds.", (("", int(b.started_at)),))


async def _telemetry(out: Out, m):
    """telemetry_scrape_*: the count, size and duration of the scrapes done so far, by endpoint."""
    tel = getattr(m, "scrape_telemetry", None) or {}
    ct = "text/plain; version=0.0.4"
    rows = sorted(tel.items())
    size_lines, enc_lines, dur_lines = [], [], []
    for registry, (count, size, seconds) in rows:
        lab = f'registry="{registry}",content_type="{ct}"'
        enc = f'{lab},encoding="identity"'
        enc_lines += [f"telemetry_scrape_encoded_size_bytes_count{{{enc}}} {count}\n",
                      f"telemetry_scrape_encoded_size_bytes_sum{{{enc}}} {size}\n"]
        size_lines += [f"telemetry_scrape_size_bytes_count{{{lab}}} {count}\n",
                       f"telemetry_scrape_size_bytes_sum{{{lab}}} {size}\n"]
        dur_lines += [f"telemetry_scrape_duration_seconds_count{{{lab}}} {count}\n",
                      f"telemetry_scrape_duration_seconds_sum{{{lab}}} {_num(round(seconds, 9))}\n"]
    for name, help_, lines in (("telemetry_scrape_encoded_size_bytes", "Scrape size, encoded", enc_lines),
                               ("telemetry_scrape_size_bytes", "Scrape size, not encoded", size_lines),
                               ("telemetry_scrape_duration_seconds", "Scrape duration", dur_lines)):
        out.buf.append(f"# TYPE {name} summary\n# HELP {name} {help_}\n")
        out.buf += lines


def _note_scrape(m, registry: str, size: int, started: float):
    tel = getattr(m, "scrape_telemetry", None)
    if tel is None:
        tel = m.scrape_telemetry = {}
    count, total, seconds = tel.get(registry, (0, 0, 0.0))
    tel[registry] = (count + 1, total + size, seconds + time.perf_counter() - started)


# ---------------------------------------------------------------------------------------- endpoints

def cluster_families(fig: dict) -> list:
    """usagi_cluster_*: a cluster node's own figures (its role, the epoch it knows, the ISR, the
    replication lag in batches, leader changes seen, etcd round trips), from a dict of figures a
    leader (cluster.node.ClusterView.metrics) or a follower (cluster.node.Node.follower_metrics)
    gives. A handful of lines: the followers of one leader at most."""
    node = labels(node=fig.get("node", ""))
    out = []

    def fam(name, kind, help_, samples):
        out.append(f"# TYPE {name} {kind}\n# HELP {name} {help_}\n")
        for lab, v in samples:
            out.append(f"{name}{{{lab}}} {_num(v)}\n" if lab else f"{name} {_num(v)}\n")
    fam("usagi_cluster_leader", "gauge", "1 if this node leads the cluster, else 0",
        ((node, 1 if fig.get("leader") else 0),))
    fam("usagi_cluster_epoch", "gauge", "The epoch of the leader this node knows (its election's etcd revision)",
        ((node, fig.get("epoch") or 0),))
    fam("usagi_cluster_in_sync", "gauge", "1 if this node is in the in-sync replica set, else 0",
        ((node, 1 if fig.get("in_sync") else 0),))
    fam("usagi_cluster_isr_size", "gauge", "Nodes in the in-sync replica set", ((node, fig.get("isr_size") or 0),))
    if fig.get("leader"):
        fam("usagi_cluster_members", "gauge", "Nodes of the cluster, running or not", ((node, fig.get("members", 0)),))
        fam("usagi_cluster_running_members", "gauge", "Nodes of the cluster that run", ((node, fig.get("running", 0)),))
        fam("usagi_cluster_replication_lag", "gauge",
            "Commit batches the leader has that a connected follower has not acknowledged",
            [(labels(node=fig.get("node", ""), follower=name), lag) for name, lag in fig.get("followers_lag", ())])
    else:
        fam("usagi_cluster_replication_lag", "gauge",
            "Commit batches this follower has received but not yet applied and synced",
            ((node, fig.get("lag") or 0),))
    fam("usagi_cluster_leader_changes_total", "counter", "Leader changes this node has seen since it started",
        ((node, fig.get("leader_changes", 0)),))
    etcd = fig.get("etcd")
    if etcd is not None:
        name = "usagi_cluster_etcd_request_duration_seconds"
        out.append(f"# TYPE {name} histogram\n# HELP {name} Round-trip time of this node's requests to etcd\n")
        acc = 0
        for bound, n in zip(tuple(etcd.rtt_bounds) + (None,), etcd.rtt_buckets):
            acc += n
            le = "+Inf" if bound is None else repr(float(bound))
            out.append(f'{name}_bucket{{{node},le="{le}"}} {acc}\n')
        out.append(f"{name}_sum{{{node}}} {_num(float(etcd.rtt_sum))}\n")
        out.append(f"{name}_count{{{node}}} {acc}\n")
    return out


async def _cluster(out: Out, b):
    c = getattr(b, "cluster", None)
    if c is not None:
        out.buf += cluster_families(c.metrics())


async def _common(out: Out, scrape: Scrape, m):
    b = m.broker
    await _global(out, scrape)
    await _alarms(out, b)
    await _message_sizes(out, b)
    await _process(out, b)
    await _cluster(out, b)


async def render_metrics(m, write, pacer: slices.Pacer):
    """GET /metrics: every family aggregated over objects, as rabbitmq_prometheus by default."""
    started = time.perf_counter()
    out = Out(write, pacer)
    scrape = Scrape(m, pacer)
    await _groups(out, scrape, [g[0] for g in GROUPS if g[1] != AUTH_DETAILED], False, PREFIX)
    await _totals(out, scrape)
    await _identity(out, m, "aggregated")
    await _common(out, scrape, m)
    await _telemetry(out, m)
    await out.flush()
    _note_scrape(m, "default", out.size, started)


async def render_per_object(m, write, pacer: slices.Pacer):
    """GET /metrics/per-object: every family, with a sample per object."""
    started = time.perf_counter()
    out = Out(write, pacer)
    scrape = Scrape(m, pacer)
    await _groups(out, scrape, [g[0] for g in GROUPS], True, PREFIX)
    await _totals(out, scrape)
    await _queue_info(out, scrape, PREFIX, False)
    await _identity(out, m, "per-object")
    await _common(out, scrape, m)
    await _telemetry(out, m)
    await out.flush()
    _note_scrape(m, "per-object", out.size, started)


async def render_detailed(m, families: list, vhosts: list, write, pacer: slices.Pacer):
    """GET /metrics/detailed?family=F&vhost=V: the groups named, per object."""
    started = time.perf_counter()
    out = Out(write, pacer)
    scrape = Scrape(m, pacer, vhosts)
    wanted = [g[0] for g in GROUPS if g[0] in families]
    await _groups(out, scrape, wanted, True, DETAILED_PREFIX)
    b = m.broker
    vnames = [n for n in sorted(b.vhosts) if scrape.vhosts is None or n in scrape.vhosts]
    if "vhost_status" in families:
        await out.family(CLUSTER_PREFIX + "vhost_status", "gauge", "Whether a given vhost is running",
                         [(f'vhost="{_esc(n)}"', 1) for n in vnames])
    for fam, mname, help_, count in (
            ("exchange_bindings", "exchange_bindings",
             "Number of bindings for an exchange. This value is cluster-wide.", True),
            ("exchange_names", "exchange_name", "Enumerates exchanges without any additional info. This value "
             "is cluster-wide. A cheaper alternative to `exchange_bindings`", False)):
        if fam not in families:
            continue
        samples = []
        for n in vnames:
            v = b.vhosts.get(n)
            if v is None:
                continue
            for x in await slices.sort(list(v.exchanges.values()), _by_name, pacer):
                samples.append((f'vhost="{_esc(n)}",exchange="{_esc(x.name)}",type="{_esc(x.type)}"',
                                len(x.bindings) if count else 1))
            await scrape.tick()
        await out.family(CLUSTER_PREFIX + mname, "gauge", help_, samples)
    if {"queue_coarse_metrics", "queue_consumer_count", "queue_metrics"} & set(families):
        await _queue_info(out, scrape, DETAILED_PREFIX, True)
    await _identity(out, m, "detailed")
    await _telemetry(out, m)
    await out.flush()
    _note_scrape(m, "detailed", out.size, started)


async def render_memory_breakdown(m, write, pacer: slices.Pacer):
    """GET /metrics/memory-breakdown: what core/memory.py counts, under RabbitMQ 4's names."""
    started = time.perf_counter()
    out = Out(write, pacer)
    d = m.broker.memory_breakdown()
    d = dict(d, unused=max(d.get("rss", 0) - d.get("used", 0), 0))
    for name, help_, keys in MEMORY_BREAKDOWN:
        await out.family(PREFIX + name, "gauge", help_, (("", sum(d.get(k, 0) for k in keys)),))
    await _identity(out, m, "memory-breakdown")
    await out.flush()
    _note_scrape(m, "memory-breakdown", out.size, started)

