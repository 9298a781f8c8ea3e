"""The JSON shapes of the management API, field for field as RabbitMQ 3.10/4.x emit them.

A `View` is made per request: it caches what is costly to gather more than once (bytes of
unacknowledged messages per queue, gathered a slice at a time by `prepare`) and knows the node
name and the rate sampler. Rendering one object costs a bounded amount (listings render them one
per step, mgmt.slices); totals over every queue come from the sampler's last sample or from
`queue_sums`, a slice at a time. Values that only have a meaning inside Erlang (reductions,
garbage collection) keep their keys with zeros, so that tools reading them find what they expect.
When a request asks for history (`lengths_age`, `msg_rates_age`, ...: the view's `ranges`), each
figure's `_details` hold RabbitMQ's `samples`, `avg_rate` and `avg` from the sampler's history
(mgmt.stats), a bounded amount of work per figure (at most stats.MAX_RANGE + 1 instants).
"""
from __future__ import annotations

import os
import platform
import time

from .. import RABBITMQ_COMPAT_VERSION, __version__
from ..core.memory import MESSAGE_BYTES, QUEUE_BYTES, UNACKED_BYTES
from ..model.paging import STUB_BYTES, Spilled
from ..model.queue import ENTRY_BYTES, UNLIMITED, Queue
from . import nodectl, ops
from .stats import (CHANNEL_KEYS, CONNECTION_KEYS, EXCHANGE_KEYS, QUEUE_KEYS, VHOST_INDEX, Window,
                    channel_counters, connection_counters, exchange_counters, queue_counters)
from .util import iso_time, jsonable, properties_key

PROTOCOL = "AMQP 0-9-1"

EXCHANGE_TYPES = [
    {"name": "direct", "description": "AMQP direct exchange, as per the AMQP specification", "enabled": True},
    {"name": "fanout", "description": "AMQP fanout exchange, as per the AMQP specification", "enabled": True},
    {"name": "headers", "description": "AMQP headers exchange, as per the AMQP specification", "enabled": True},
    {"name": "topic", "description": "AMQP topic exchange, as per the AMQP specification", "enabled": True},
]

CONTENTS_WALK_LIMIT = 50_000

GC = {"fullsweep_after": 0, "max_heap_size": 0, "min_bin_vheap_size": 0, "min_heap_size": 0, "minor_gcs": 0}

NO_UNACKED = (0, 0, 0, 0, 0)


def _add_unacked(acc: dict, u) -> None:
    """Count one delivery awaiting an ack into acc: id(queue) -> [bytes, persistent count,
    persistent bytes, in-memory count, in-memory bytes]. Persistent: delivery mode 2 in a durable
    queue, as RabbitMQ counts it."""
    e = acc.get(id(u.queue))
    if e is None:
        e = acc[id(u.queue)] = [0, 0, 0, 0, 0]
    m = u.msg
    n = m.size
    e[0] += n
    if u.queue.durable and m.scan.delivery_mode == 2:
        e[1] += 1
        e[2] += n
    if type(m) is not Spilled:
        e[3] += 1
        e[4] += n


def unacked_by_queue(broker) -> dict:
    """id(queue) -> [bytes, persistent count, persistent bytes, in-memory count, in-memory bytes]
    of its deliveries awaiting an ack (a walk over every channel's records)."""
    acc = {}
    for c in list(broker.connections):
        for ch in list(c.channels.values()):
            for u in list(ch.unacked.values()):
                _add_unacked(acc, u)
    return acc


async def unacked_by_queue_sliced(broker, pacer) -> dict:
    """unacked_by_queue, a slice at a time (one delivery per step)."""
    acc = {}
    for c in list(broker.connections):
        for ch in list(c.channels.values()):
            for u in list(ch.unacked.values()):
                _add_unacked(acc, u)
                if pacer.due():
                    await pacer.pause()
    return acc


async def queue_sums(vhosts, pacer) -> dict:
    """Ready and unacknowledged messages, consumers and queues of some vhosts, a slice at a time."""
    ready = unacked = consumers = queues = 0
    for v in vhosts:
        for q in list(v.queues.values()):
            ready += q.message_count
            unacked += q.unacked
            consumers += len(q.consumers)
            queues += 1
            if pacer.due():
                await pacer.pause()
    return {"ready": ready, "unacked": unacked, "consumers": consumers, "queues": queues}


def queue_memory(q, ua) -> dict:
    """Where a queue's messages are, with RabbitMQ's meanings: ready and unacknowledged messages in
    memory (`*_ram`), paged out (RabbitMQ's messages_paged_out counts the transient ones paged
    out, delta's transient count; persistent ones are the store's), and the queue's memory."""
    paged, paged_bytes, paged_p, paged_pb = q.paged_stats()
    ready_ram = max(0, q.message_count - paged - q.returned_stubs)
    ready_ram_bytes = max(0, q.message_bytes - paged_bytes - q.returned_stub_bytes)
    unacked_ram, unacked_ram_bytes = ua[3], ua[4]
    cap = q.cap_count
    return {
        "paged": paged, "paged_out": paged - paged_p, "paged_out_bytes": paged_bytes - paged_pb,
        "ready_ram": ready_ram, "unacked_ram": unacked_ram, "messages_ram": ready_ram + unacked_ram,
        "ram_bytes": ready_ram_bytes + unacked_ram_bytes,
        "target": cap if cap < UNLIMITED else "infinity",
        "memory": QUEUE_BYTES + ready_ram_bytes + unacked_ram_bytes + ENTRY_BYTES * ready_ram
        + UNACKED_BYTES * q.unacked + MESSAGE_BYTES * unacked_ram + STUB_BYTES * (q.unacked - unacked_ram),
    }


def _figures(specs, window: Window | None, rate) -> dict:
    """{"k": v, "k_details": ...} for (k, v, series key) triples: the rate of the series key
    (`rate(key)`), or with a window its history as RabbitMQ gives it for a range; a series key of
    None is a figure Usagi does not count (rate 0, the same value all along)."""
    out = {}
    if window is None:
        for k, v, sk in specs:
            out[k] = v
            out[k + "_details"] = {"rate": rate(sk) if sk else 0.0}
        return out
    for k, v, sk in specs:
        out[k] = v
        out[k + "_details"] = window.details(sk) if sk else window.constant(v)
    return out


class View:
    def __init__(self, m, ranges: dict | None = None):
        self.m = m
        self.broker = m.broker
        self.sampler = m.sampler
        self.node = m.node
        self.ranges = ranges or {}      # kind (stats.RANGE_KINDS) -> stats.Range the request asks for
        self._unacked_bytes = None
        self._vhost_totals = None

    def window(self, kind: str, obj, index: dict, live=None) -> Window | None:
        """An object's history over the range the request asks for `kind`, or None."""
        rng = self.ranges.get(kind)
        return None if rng is None else self.sampler.window(obj, index, rng, live)

    # ------------------------------------------------------------------ helpers
    async def prepare(self, pacer) -> "View":
        """Gather what rendering queues needs from every channel, a slice at a time."""
        if self._unacked_bytes is None:
            self._unacked_bytes = await unacked_by_queue_sliced(self.broker, pacer)
        return self

    def _unacked(self, q) -> list:
        """[bytes, persistent count, persistent bytes, in-memory count, in-memory bytes] of the
        deliveries of `q` awaiting an ack."""
        if self._unacked_bytes is None:
            self._unacked_bytes = unacked_by_queue(self.broker)
        return self._unacked_bytes.get(id(q), NO_UNACKED)

    def unacked_bytes(self, q) -> int:
        return self._unacked(q)[0]

    def rate(self, obj, key) -> float:
        return self.sampler.rate(obj, key)

    # ------------------------------------------------------------------ queues
    def queue_contents(self, q, detail: bool, limit: int = CONTENTS_WALK_LIMIT) -> tuple:
        """(persistent count, persistent bytes, head timestamp) of the ready messages: a walk over
        those in memory (paged-out ones are counted as they go out), so lists skip it for queues
        with more than `limit` in memory and show what the last detailed look found."""
        cache = self.m.contents_cache
        if not detail and q.ram_count() > limit:
            return cache.get(q, (0, 0, None))
        persistent = persistent_bytes = 0
        head_ts = None
        if q.durable:
            persistent, persistent_bytes = q.contents()
        head = q.peek() if q.message_count else None
        if head is not None:
            msg = head[1].load() if isinstance(head[1], Spilled) else head[1]
            props = ops.decode_properties(msg.props) if msg is not None else None
            if isinstance(props, dict) and "timestamp" in props:
                head_ts = props["timestamp"]
        result = (persistent, persistent_bytes, head_ts)
        cache[q] = result
        return result

    def queue(self, q, detail: bool = False) -> dict:
        s = self.sampler
        ready = q.message_count
        unacked = q.unacked
        ready_bytes = q.message_bytes
        ua = self._unacked(q)
        unacked_bytes = ua[0]
        persistent, persistent_bytes, head_ts = self.queue_contents(q, detail)
        mem = queue_memory(q, ua)
        persistent += ua[1]
        persistent_bytes += ua[2]
        qtype = getattr(q, "kind", None)
        if qtype is None:
            qtype = q.arguments.get("x-queue-type", "classic") if q.arguments else "classic"
            if isinstance(qtype, bytes):
                qtype = qtype.decode("utf-8", "replace")
        policy = ops.effective_policy(self.broker, "queue", q)
        excl = None
        for c in q.consumers:
            if c.exclusive:
                excl = c.tag
                break
        n_consumers = len(q.consumers)
        live = queue_counters(q) if self.ranges else None
        lengths = self.window("lengths", q, QUEUE_KEYS, live) if live is not None else None
        counts = _figures([("messages", ready + unacked, "messages"), ("messages_ready", ready, "messages_ready"),
                           ("messages_unacknowledged", unacked, "messages_unacknowledged")],
                          lengths, lambda k: s.rate(q, k))
        d = {
            "arguments": jsonable(q.arguments),
            "auto_delete": q.auto_delete,
            "backing_queue_status": {
                "avg_ack_egress_rate": s.rate(q, "ack"), "avg_ack_ingress_rate": s.rate(q, "deliver_get"),
                "avg_egress_rate": s.rate(q, "deliver_get"), "avg_ingress_rate": s.rate(q, "publish"),
                "delta": ["delta", "undefined", mem["paged"], mem["paged_out"], "undefined"], "len": ready,
                "mode": "default", "next_deliver_seq_id": q.seq, "next_seq_id": q.seq + 1,
                "num_pending_acks": unacked, "num_unconfirmed": 0, "q1": 0, "q2": 0, "q3": 0,
                "q4": mem["ready_ram"], "target_ram_count": mem["target"], "version": 2},
            "consumer_capacity": 1.0 if n_consumers else 0,
            "consumer_utilisation": 1.0 if n_consumers else 0,
            "consumers": n_consumers,
            "durable": q.durable,
            "effective_policy_definition": dict(policy["definition"]) if policy else {},
            "exclusive": q.exclusive_owner is not None,
            "exclusive_consumer_tag": excl,
            "garbage_collection": dict(GC),
            "head_message_timestamp": head_ts,
            "memory": mem["memory"],
            "message_bytes": ready_bytes + unacked_bytes,
            "message_bytes_paged_out": mem["paged_out_bytes"],
            "message_bytes_persistent": persistent_bytes,
            "message_bytes_ram": mem["ram_bytes"],
            "message_bytes_ready": ready_bytes,
            "message_bytes_unacknowledged": unacked_bytes,
            "message_stats": self.queue_message_stats(q, live),
            "messages": ready + unacked,
            "messages_details": counts["messages_details"],
            "messages_paged_out": mem["paged_out"],
            "messages_persistent": persistent,
            "messages_ram": mem["ready_ram"] + mem["unacked_ram"],
            "messages_ready": ready,
            "messages_ready_details": counts["messages_ready_details"],
            "messages_ready_ram": mem["ready_ram"],
            "messages_unacknowledged": unacked,
            "messages_unacknowledged_details": counts["messages_unacknowledged_details"],
            "messages_unacknowledged_ram": mem["unacked_ram"],
            "name": q.name,
            "node": self.node,
            "operator_policy": getattr(q, "operator_policy", None),
            "policy": policy["name"] if policy else None,
            "reductions": 0,
            "reductions_details": self._zero("data_rates"),
            "single_active_consumer_tag": next((c.tag for c in q.consumers if c.active), None)
            if getattr(q, "single_active", False) else None,
            "state": "running",
            "type": qtype,
            "vhost": q.vhost,
        }
        if qtype in ("quorum", "stream"):
            # a replicated queue: in a cluster its leader is the cluster's, its members the in-sync
            # replicas (every durable queue is on each of them), online those of them running; a
            # single node is all three, as a one-node RabbitMQ reports it
            cluster = self.broker.cluster
            leader, members, online = cluster.replicas() if cluster is not None else (
                self.node, (self.node,), (self.node,))
            d["leader"] = leader
            d["members"] = list(members)
            d["online"] = list(online)
        idle = self.sampler.idle_since(q)
        if idle is not None:
            d["idle_since"] = iso_time(idle)
        owner = q.exclusive_owner
        if owner is not None:
            d["owner_pid_details"] = {"name": owner.name, "peer_port": owner.peer[1],
                                      "peer_host": owner.peer[0]}
        if detail:
            d["consumer_details"] = [self.consumer(c) for c in q.consumers]
            d["deliveries"] = []
            d["incoming"] = []
        return d

    def queue_message_stats(self, q, live=None) -> dict:
        s = self.sampler
        w = self.window("msg_rates", q, QUEUE_KEYS, live or queue_counters(q)) if self.ranges else None
        auto = q.delivered_auto
        return _figures([
            ("ack", max(q.acked - auto - q.get_auto, 0), "ack"),
            ("deliver", max(q.delivered - auto - q.get_ack - q.get_auto, 0), "deliver_get"),
            ("deliver_get", q.delivered, "deliver_get"),
            ("deliver_no_ack", auto, None),
            ("get", q.get_ack, None),
            ("get_empty", q.get_empty, None),
            ("get_no_ack", q.get_auto, None),
            ("publish", q.published, "publish"),
            ("redeliver", q.redelivered_count, "redeliver"),
        ], w, lambda k: s.rate(q, k))

    def _zero(self, kind: str) -> dict:
        """The details of a figure Usagi keeps at zero (reductions), for a range of `kind` or not."""
        rng = self.ranges.get(kind)
        if rng is None:
            return {"rate": 0.0}
        return Window(list(rng.instants()), [], {}).constant(0)

    # ------------------------------------------------------------------ exchanges
    def exchange(self, x, detail: bool = False) -> dict:
        d = {"arguments": jsonable(x.arguments), "auto_delete": x.auto_delete, "durable": x.durable,
             "internal": x.internal, "name": x.name, "type": x.type,
             "user_who_performed_action": "rmq-internal" if not x.name or x.name.startswith("amq.") else "",
             "vhost": x.vhost}
        if x.publish_in or x.publish_out:
            s = self.sampler
            w = self.window("msg_rates", x, EXCHANGE_KEYS, exchange_counters(x))
            d["message_stats"] = _figures([("publish_in", x.publish_in, "publish_in"),
                                           ("publish_out", x.publish_out, "publish_out")],
                                          w, lambda k: s.rate(x, k))
        policy = ops.effective_policy(self.broker, "exchange", x)
        if policy:
            d["policy"] = policy["name"]
        if detail:
            d["incoming"] = []
            d["outgoing"] = []
        return d

    # ------------------------------------------------------------------ bindings
    def binding(self, vhost: str, source: str, dest, rk: str, args: dict) -> dict:
        return {"source": source, "vhost": vhost, "destination": dest.name,
                "destination_type": "queue" if isinstance(dest, Queue) else "exchange",
                "routing_key": rk, "arguments": jsonable(args), "properties_key": properties_key(rk, args)}

    # ------------------------------------------------------------------ connections, channels, consumers
    def connection(self, c) -> dict:
        s = self.sampler
        user = c.user.name if c.user is not None else "none"
        w = self.window("data_rates", c, CONNECTION_KEYS, connection_counters(c))
        octets = _figures([("recv_oct", c.recv_oct, "recv_oct"), ("send_oct", c.send_oct, "send_oct")], w,
                          lambda k: s.rate(c, k))
        return {
            "auth_mechanism": c.auth_mechanism or "PLAIN",
            "channel_max": c.channel_max,
            "channels": len(c.channels),
            "client_properties": jsonable(c.client_properties),
            "connected_at": int(c.connected_at * 1000),
            "frame_max": c.frame_max,
            "garbage_collection": dict(GC),
            "host": c.local[0],
            "name": c.name,
            "node": self.node,
            "peer_cert_issuer": None,
            "peer_cert_subject": None,
            "peer_cert_validity": None,
            "peer_host": c.peer[0],
            "peer_port": c.peer[1],
            "port": c.local[1],
            "protocol": PROTOCOL,
            "recv_cnt": c.recv_cnt,
            "recv_oct": c.recv_oct,
            "recv_oct_details": octets["recv_oct_details"],
            "reductions": 0,
            "reductions_details": self._zero("data_rates"),
            "send_cnt": c.send_cnt,
            "send_oct": c.send_oct,
            "send_oct_details": octets["send_oct_details"],
            "send_pend": 0,
            "ssl": c.tls is not None,
            "ssl_cipher": None,
            "ssl_hash": None,
            "ssl_key_exchange": None,
            "ssl_protocol": None,
            "state": c.state_name,
            "timeout": c.heartbeat,
            "type": "network",
            "user": user,
            "user_provided_name": jsonable(c.client_properties.get("connection_name"))
            if isinstance(c.client_properties, dict) and "connection_name" in c.client_properties else None,
            "user_who_performed_action": user,
            "vhost": c.vhost,
        }

    @staticmethod
    def channel_name(ch) -> str:
        return f"{ch.conn.name} ({ch.number})"

    def channel(self, ch) -> dict:
        s = self.sampler
        c = ch.conn
        user = c.user.name if c.user is not None else "none"
        d = {
            "acks_uncommitted": sum(len(items) for items, _r in ch.tx_acks),
            "confirm": ch.confirm,
            "connection_details": {"name": c.name, "peer_host": c.peer[0], "peer_port": c.peer[1]},
            "consumer_count": len(ch.consumers),
            "garbage_collection": dict(GC),
            "global_prefetch_count": ch.global_prefetch,
            "messages_unacknowledged": len(ch.unacked),
            "messages_uncommitted": len(ch.tx_publishes),
            "messages_unconfirmed": len(ch.waiting) - len(ch.early),
            "name": self.channel_name(ch),
            "node": self.node,
            "number": ch.number,
            "pending_raft_commands": 0,
            "prefetch_count": ch.prefetch_count,
            "reductions": 0,
            "reductions_details": self._zero("data_rates"),
            "state": "running" if ch.state == 0 else "closing",
            "transactional": ch.tx,
            "user": user,
            "user_who_performed_action": user,
            "vhost": ch.vhost.name if ch.vhost is not None else c.vhost,
        }
        # RabbitMQ shows the publishing side and the delivering side only once they have happened
        pairs = []
        if ch.published or ch.confirm:
            confirmed = max(ch.publish_seq - len(ch.waiting) + len(ch.early), 0) if ch.confirm else 0
            pairs += [("confirm", confirmed, None), ("drop_unroutable", ch.dropped, None),
                      ("publish", ch.published, "publish"), ("return_unroutable", ch.returned, None)]
        gets = ch.get_ack + ch.get_auto
        if ch.delivered or ch.consumers or ch.acked or gets or ch.get_empty:
            pairs += [("ack", ch.acked, "ack"),
                      ("deliver", ch.delivered - ch.delivered_auto, "deliver_get"),
                      ("deliver_get", ch.delivered + gets, "deliver_get"),
                      ("deliver_no_ack", ch.delivered_auto, None), ("get", ch.get_ack, None),
                      ("get_empty", ch.get_empty, None), ("get_no_ack", ch.get_auto, None),
                      ("redeliver", ch.redelivered, None)]
        if pairs:
            w = self.window("msg_rates", ch, CHANNEL_KEYS, channel_counters(ch))
            d["message_stats"] = _figures(sorted(pairs), w, lambda k: s.rate(ch, k))
        idle = s.idle_since(ch)
        if idle is not None:
            d["idle_since"] = iso_time(idle)
        return d

    def consumer(self, cons) -> dict:
        ch = cons.channel
        c = ch.conn
        return {
            "ack_required": not cons.no_ack,
            "active": cons.active,
            "activity_status": "up" if cons.active else "waiting",
            "arguments": jsonable(cons.arguments or {}),
            "channel_details": {"connection_name": c.name, "name": self.channel_name(ch), "node": self.node,
                                "number": ch.number, "peer_host": c.peer[0], "peer_port": c.peer[1],
                                "user": c.user.name if c.user is not None else "none"},
            "consumer_tag": cons.tag,
            "consumer_timeout": int(self.broker.config.consumer_timeout * 1000),
            "exclusive": cons.exclusive,
            "prefetch_count": cons.prefetch,
            "queue": {"name": cons.queue.name, "vhost": cons.queue.vhost},
        }

    # ------------------------------------------------------------------ vhosts, users
    def vhost(self, v) -> dict:
        s = self.sampler
        if self._vhost_totals is None:
            self._vhost_totals = s.vhost_totals()
        tot = self._vhost_totals.get(v.name, {})
        r = lambda k: s.vhost_rate(v.name, k)  # noqa: E731
        win = {kind: s.vhost_window(v.name, rng) for kind, rng in self.ranges.items()}
        counts = _figures([("messages", tot.get("messages", 0), "messages"),
                           ("messages_ready", tot.get("messages_ready", 0), "messages_ready"),
                           ("messages_unacknowledged", tot.get("messages_unacknowledged", 0),
                            "messages_unacknowledged")], win.get("lengths"), r)
        octets = _figures([("recv_oct", tot.get("recv_oct", 0), "recv_oct"),
                           ("send_oct", tot.get("send_oct", 0), "send_oct")], win.get("data_rates"), r)
        d = {
            "cluster_state": {self.node: "running"},
            "default_queue_type": v.default_queue_type,
            "description": v.description,
            "message_stats": _figures([
                ("ack", tot.get("ack", 0), "ack"),
                ("confirm", 0, None),
                ("deliver", tot.get("deliver_get", 0), "deliver_get"),
                ("deliver_get", tot.get("deliver_get", 0), "deliver_get"),
                ("deliver_no_ack", 0, None),
                ("drop_unroutable", 0, None),
                ("get", 0, None),
                ("get_empty", 0, None),
                ("get_no_ack", 0, None),
                ("publish", tot.get("publish", 0), "publish"),
                ("redeliver", tot.get("redeliver", 0), "redeliver"),
                ("return_unroutable", 0, None),
            ], win.get("msg_rates"), r),
            "messages": tot.get("messages", 0),
            "messages_details": counts["messages_details"],
            "messages_ready": tot.get("messages_ready", 0),
            "messages_ready_details": counts["messages_ready_details"],
            "messages_unacknowledged": tot.get("messages_unacknowledged", 0),
            "messages_unacknowledged_details": counts["messages_unacknowledged_details"],
            "metadata": {"description": v.description, "tags": list(v.tags),
                         "default_queue_type": v.default_queue_type},
            "name": v.name,
            "recv_oct": tot.get("recv_oct", 0),
            "recv_oct_details": octets["recv_oct_details"],
            "send_oct": tot.get("send_oct", 0),
            "send_oct_details": octets["send_oct_details"],
            "tags": list(v.tags),
            "tracing": bool(v.tracing),
        }
        return d

    @staticmethod
    def user(u) -> dict:
        return ops.user_json(u)

    # ------------------------------------------------------------------ node, overview
    def listeners(self) -> list:
        out = []
        for proto, host, port in self.m.amqp_listeners():
            out.append({"node": self.node, "protocol": proto, "ip_address": host, "port": port,
                        "socket_opts": {"backlog": 1024, "nodelay": True, "exit_on_close": False,
                                        "linger": [True, 0]}})
        for proto, host, port in self.m.http_listeners():
            out.append({"node": self.node, "protocol": proto, "ip_address": host, "port": port,
                        "socket_opts": {"port": port}})
        return out

    def contexts(self) -> list:
        return [{"node": self.node, "description": "RabbitMQ Management", "path": "/",
                 "port": str(p), "ssl_opts": []} for _proto, _h, p in self.m.http_listeners()
                if _proto in ("http", "https")]

    def overview(self, vhosts: list, sums: dict, tot: dict) -> dict:
        """GET /api/overview for a user shown `vhosts`; sums: queue_sums(vhosts), tot: the node's
        totals (Sampler.totals_steps)."""
        s = self.sampler
        b = self.broker
        names = {v.name for v in vhosts}
        all_vhosts = len(names) == len(b.vhosts)
        ready, unacked = sums["ready"], sums["unacked"]
        conns = [c for c in b.connections if not c.closed and (all_vhosts or c.vhost in names)]
        channels = sum(len(c.channels) for c in conns)
        consumers = sums["consumers"]
        g = s.global_rate
        rm, rl = self.ranges.get("msg_rates"), self.ranges.get("lengths")
        gm = s.global_window(rm) if rm is not None else None
        # queue totals of the vhosts the user is shown: the node's, else the sum of theirs
        if all_vhosts:
            lw = s.global_window(rl) if rl is not None else None
            qrate = g
        else:
            lw = None if rl is None else Window.total([s.vhost_window(n, rl) for n in sorted(names)],
                                                      VHOST_INDEX, list(rl.instants()))
            qrate = lambda k: round(sum(s.vhost_rate(n, k) for n in names), 1)  # noqa: E731
        return {
            "management_version": RABBITMQ_COMPAT_VERSION,
            "rates_mode": "basic",
            "sample_retention_policies": {"global": [600, 3600, 28800, 86400], "basic": [600, 3600],
                                          "detailed": [600]},
            "exchange_types": EXCHANGE_TYPES,
            "product_version": RABBITMQ_COMPAT_VERSION,
            "product_name": "RabbitMQ",
            "rabbitmq_version": RABBITMQ_COMPAT_VERSION,
            "usagi_version": __version__,
            "cluster_name": b.server_properties.get("cluster_name", self.node),
            "erlang_version": platform.python_version(),
            "erlang_full_version": f"Python {platform.python_version()} ({platform.python_implementation()}), "
                                   f"Usagi {__version__}",
            "release_series_support_status": "supported",
            "disable_stats": False,
            "is_op_policy_updating_enabled": True,
            "enable_queue_totals": False,
            "message_stats": _figures([
                ("ack", tot["ack"], "ack"),
                ("confirm", tot["confirm"], "confirm"),
                ("deliver", tot["deliver"], "deliver"),
                ("deliver_get", tot["deliver_get"], "deliver_get"),
                ("deliver_no_ack", 0, None),
                ("disk_reads", 0, None),
                ("disk_writes", 0, None),
                ("drop_unroutable", tot["drop_unroutable"], "drop_unroutable"),
                ("get", tot["get"], "get"),
                ("get_empty", 0, None),
                ("get_no_ack", 0, None),
                ("publish", tot["publish"], "publish"),
                ("redeliver", tot["redeliver"], "redeliver"),
                ("return_unroutable", tot["return_unroutable"], "return_unroutable"),
            ], gm, g),
            "churn_rates": _figures([
                ("channel_closed", 0, None),
                ("channel_created", 0, None),
                ("connection_closed", tot["connection_closed"], "connection_closed"),
                ("connection_created", tot["connection_created"], "connection_created"),
                ("queue_created", 0, None),
                ("queue_declared", 0, None),
                ("queue_deleted", 0, None),
            ], gm, g),
            "queue_totals": _figures([
                ("messages", ready + unacked, "messages"),
                ("messages_ready", ready, "messages_ready"),
                ("messages_unacknowledged", unacked, "messages_unacknowledged"),
            ], lw, qrate),
            "object_totals": {"channels": channels, "connections": len(conns), "consumers": consumers,
                              "exchanges": sum(len(v.exchanges) for v in vhosts),
                              "queues": sums["queues"]},
            "statistics_db_event_queue": 0,
            "node": self.node,
            "listeners": self.listeners(),
            "contexts": self.contexts(),
        }

    def node_json(self) -> dict:
        b = self.broker
        m = self.m
        mem = b.memory_usage()            # what the memory alarm compares with its limit
        mem_limit = b.memory_limit()
        disk_free = m.disk_free()
        fd_used, fd_total = m.fds()
        uptime = int((time.time() - b.started_at) * 1000)
        conns = len(b.connections)
        s = self.sampler
        rn = self.ranges.get("node_stats")
        # (live: the figures now, in stats.NODE_KEYS order)
        nw = s.node_window(rn, (mem, fd_used, conns, 1, disk_free)) if rn is not None else None
        gw = s.global_window(rn) if rn is not None else None
        d = {
            "applications": [
                {"name": "rabbit", "description": "RabbitMQ (Usagi)", "version": RABBITMQ_COMPAT_VERSION},
                {"name": "rabbitmq_management", "description": "RabbitMQ Management Console",
                 "version": RABBITMQ_COMPAT_VERSION},
                {"name": "rabbitmq_prometheus", "description": "Prometheus metrics for RabbitMQ",
                 "version": RABBITMQ_COMPAT_VERSION},
                {"name": "usagi", "description": "Usagi AMQP 0-9-1 broker", "version": __version__},
            ],
            "auth_mechanisms": [
                {"name": "PLAIN", "description": "SASL PLAIN authentication mechanism", "enabled": True},
                {"name": "AMQPLAIN", "description": "QPid AMQPLAIN mechanism", "enabled": True},
            ],
            "cluster_links": [],
            "config_files": [],
            "contexts": self.contexts(),
            "db_dir": m.data_dir(),
            "disk_free": disk_free,
            "disk_free_alarm": "disk" in b.alarms,
            "disk_free_limit": b.disk_free_limit(),
            "enabled_plugins": ["rabbitmq_management", "rabbitmq_prometheus"],
            "exchange_types": EXCHANGE_TYPES,
            "fd_total": fd_total,
            "fd_used": fd_used,
            "log_files": nodectl.log_locations() or ["<stderr>"],
            "mem_alarm": "memory" in b.alarms,
            "mem_calculation_strategy": "allocated",
            "mem_limit": mem_limit,
            "mem_used": mem,
            "metrics_gc_queue_length": {},
            "name": self.node,
            "net_ticktime": 60,
            "os_pid": str(os.getpid()),
            "partitions": [],
            "proc_total": 1048576,
            "proc_used": 1,
            "processors": os.cpu_count() or 1,
            "rates_mode": "basic",
            "run_queue": 0,
            "running": not getattr(m.server, "app_stopped", False),
            "sockets_total": fd_total,
            "sockets_used": conns,
            "type": "disc",
            "uptime": uptime,
            "being_drained": False,
        }
        node_rate = s.node_series.rate
        d.update(_figures([(k, d[k], k) for k in ("mem_used", "disk_free", "fd_used", "sockets_used", "proc_used")],
                          nw, node_rate))
        d.update(_figures([(k, 0, None) for k in (
            "context_switches", "gc_bytes_reclaimed", "gc_num", "io_read_bytes", "io_read_count",
            "io_reopen_count", "io_seek_count", "io_sync_count", "io_write_bytes", "io_write_count",
            "mnesia_disk_tx_count", "mnesia_ram_tx_count", "msg_store_read_count",
            "msg_store_write_count", "queue_index_read_count", "queue_index_write_count",
            "channel_created", "channel_closed", "queue_declared", "queue_created", "queue_deleted")], nw, node_rate))
        tot = s.totals()
        d.update(_figures([("connection_created", tot["connection_created"], "connection_created"),
                           ("connection_closed", tot["connection_closed"], "connection_closed")],
                          gw, lambda k: 0.0))
        for k in ("io_read_avg_time", "io_seek_avg_time", "io_sync_avg_time", "io_write_avg_time"):
            d[k] = 0.0      # (RabbitMQ's averages of a range have no samples)
            d[k + "_details"] = {"rate": 0.0, "avg_rate": 0.0, "avg": 0.0} if rn is not None else {"rate": 0.0}
        return d
