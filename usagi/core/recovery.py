"""Rebuild the engine's state from what a store recovered at start.

Everything an operator set comes back: vhosts (with their limits), users (with theirs),
permissions and topic permissions, durable exchanges, queues and bindings, policies, operator
policies, parameters and global parameters (the cluster name among them). Definitions that name
something that no longer exists (a binding of a deleted queue, the permission of a deleted user)
or that are not of the types the engine reads (a store written before names were checked) are
dropped from the store with a warning rather than loaded, so they can't break a later read.

Messages keep their expiry: an entry stored with its deadline expires then (dead-lettered if its
queue says so), whether it was ready or delivered but unacknowledged at the stop; an entry of a
store that did not record deadlines gets one from its queue's TTL, counted from this start.
"""
from __future__ import annotations

import itertools
import logging
import time
from types import SimpleNamespace

from ..amqp.errors import ChannelError
from ..amqp.properties import Scan, scan
from ..model.paging import Spilled, stub_scan
from ..model.queue import PAGING, PriorityQueue, Queue
from ..model.util import freeze
from ..storage.base import UNKNOWN_EXPIRY


log = logging.getLogger("usagi.recovery")


def _names(*values) -> bool:
    return all(isinstance(v, str) for v in values)


def _strings(v) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _dict(d) -> bool:
    return isinstance(d, dict)


def _restore_stub(broker, q, entry, now_ms: int):
    """A light entry (no body: see Store rows' `light`) back as a stub of a message left in the
    store, redelivered, in its place."""
    seq, _ex, _rk, props, _body, _red, msg_id, expires, size = entry
    sc = scan(props) if isinstance(q, PriorityQueue) else _PERSISTENT
    if expires == UNKNOWN_EXPIRY:         # stored before deadlines were: its TTL from now
        ttl = broker.message_ttl(q, SimpleNamespace(scan=scan(props)))
        expires = now_ms + ttl if ttl is not None else None
    stub = Spilled(msg_id, True, size, stub_scan(sc), broker.store, None, q.spilled)
    broker.restore_entry(q, seq, stub, True, expires)


def _restore_stubs(broker, q, first, rows, now_ms: int) -> int:
    """`first` and the rest of `rows`, light entries of a plain queue, back as stubs in bulk (about
    a microsecond each: a stub and its slot in the heap). Returns how many."""
    store = broker.store
    sc = stub_scan(_PERSISTENT)
    count = q.spilled
    n = 0
    timed = False
    chunk = []
    for entry in itertools.chain((first,), rows):
        seq, _ex, _rk, props, _body, _red, msg_id, expires, size = entry
        if expires == UNKNOWN_EXPIRY:
            ttl = broker.message_ttl(q, SimpleNamespace(scan=scan(props)))
            expires = now_ms + ttl if ttl is not None else None
        if expires is not None:
            timed = True
        chunk.append((seq, Spilled(msg_id, True, size, sc, store, None, count), expires))
        if len(chunk) >= 8192:
            q.restore_stubs(chunk)
            n += len(chunk)
            chunk = []
    q.restore_stubs(chunk)
    n += len(chunk)
    if timed:
        broker.ttl_queues[id(q)] = q
    return n


PROMOTED_HEAD = 10_000    # entries per queue a promoted leader reads in full; the rest wait in the store

_PERSISTENT = Scan()
_PERSISTENT.delivery_mode = 2             # what the store holds: persistent messages


def restore(broker, rec, redeliver_all: bool = False) -> dict:
    """Load definitions and messages into `broker` without writing them back. Returns counts.
    `redeliver_all`: every message comes back flagged redelivered (a node promoted to leader cannot
    know which of them its predecessor had delivered)."""
    store = broker.store
    dropped = []

    def drop(kind, key, why):
        dropped.append((kind, key, why))
        store.delete_definition(kind, key)

    saved_store_calls = store.put_definition
    store.put_definition = lambda *a, **k: None      # replaying: nothing new to write
    try:
        for name, meta in rec.vhosts:
            if not _names(name) or not _dict(meta):
                drop("vhost", (name,), "not a vhost")
                continue
            description, tags, dqt = meta.get("description"), meta.get("tags"), meta.get("default_queue_type")
            broker.add_vhost(name, description if isinstance(description, str) else "",
                             tags if _strings(tags) else [],
                             dqt if dqt in ("classic", "quorum", "stream") else "classic")
        for u in rec.users:
            if not _dict(u) or not _names(u.get("name")):
                drop("user", (u.get("name") if _dict(u) else None,), "not a user")
                continue
            tags, phash = u.get("tags"), u.get("password_hash")
            user = broker.users.add_user(u["name"], None, tags if _strings(tags) else [],
                                         password_hash=phash if isinstance(phash, str) else "",
                                         hashing_algorithm=u.get("hashing_algorithm") or "rabbit_password_hashing_sha256")
            limits = u.get("limits")
            user.limits = dict(limits) if _dict(limits) else {}
        users, vhosts = broker.users.users, broker.vhosts
        for p in rec.permissions:
            if not _dict(p):
                continue
            if not _names(p.get("user"), p.get("vhost"), p.get("configure"), p.get("write"), p.get("read")):
                drop("permission", (p.get("user"), p.get("vhost")), "not a permission")
                continue
            if p["user"] in users and p["vhost"] in vhosts:
                broker.users.set_permission(p["user"], p["vhost"], p["configure"], p["write"], p["read"])
            else:
                drop("permission", (p["user"], p["vhost"]), "its user or vhost is gone")
        for p in rec.topic_permissions:
            if not _dict(p):
                continue
            if not _names(p.get("user"), p.get("vhost"), p.get("exchange"), p.get("write"), p.get("read")):
                drop("topic_permission", (p.get("user"), p.get("vhost"), p.get("exchange")), "not a topic permission")
                continue
            key = (p["user"], p["vhost"], p["exchange"])
            if p["user"] in users and p["vhost"] in vhosts:
                broker.users.topic_permissions[key] = {k: p[k] for k in ("user", "vhost", "exchange", "write",
                                                                         "read")}
            else:
                drop("topic_permission", key, "its user or vhost is gone")
        for x in rec.exchanges:
            if not _dict(x):
                continue
            if not _names(x.get("vhost"), x.get("name"), x.get("type")):
                drop("exchange", (x.get("vhost"), x.get("name")), "not an exchange")
                continue
            v = vhosts.get(x["vhost"])
            if v is None:
                drop("exchange", (x["vhost"], x["name"]), "its vhost is gone")
                continue
            if x["name"] in v.exchanges:
                continue
            try:
                broker.declare_exchange(v, x["name"], x["type"], x.get("durable", True),
                                        x.get("auto_delete", False), x.get("internal", False),
                                        x.get("arguments") or {})
            except ChannelError as e:       # kept in the store: a later version may know it
                log.error("recovery: exchange '%s' in vhost '%s' not restored: %s", x["name"], x["vhost"],
                          e.text)
        for q in rec.queues:
            if not _dict(q):
                continue
            if not _names(q.get("vhost"), q.get("name")):
                drop("queue", (q.get("vhost"), q.get("name")), "not a queue")
                continue
            v = vhosts.get(q["vhost"])
            if q.get("auto_delete") or v is None:
                # auto-delete queues do not outlive the node, as in RabbitMQ
                store.delete_definition("queue", (q["vhost"], q["name"]))
                store.drop_queue_messages(q["vhost"], q["name"])
                continue
            if q["name"] in v.queues:
                continue
            v.queues[q["name"]] = broker.make_queue(q["vhost"], q["name"], True, None, False,
                                                    q.get("arguments") or {})
        for b in rec.bindings:
            if not _dict(b) or not _names(b.get("vhost"), b.get("source"), b.get("destination"),
                                          b.get("destination_type"), b.get("routing_key")):
                continue
            v = vhosts.get(b["vhost"])
            src = v.exchanges.get(b["source"]) if v is not None else None
            dst = None
            if v is not None:
                dst = (v.queues if b["destination_type"] == "queue" else v.exchanges).get(b["destination"])
            if src is None or dst is None:
                drop("binding", (b["vhost"], b["source"], b["destination_type"], b["destination"],
                                 b["routing_key"], repr(freeze(b.get("arguments") or {}))),
                     "its source or destination is gone")
                continue
            broker.bind(v, src, dst, b["routing_key"], b.get("arguments") or {})
        for table, kind, items in ((broker.policies, "policy", rec.policies),
                                   (broker.operator_policies, "operator_policy", rec.operator_policies)):
            for p in items:
                if not _dict(p):
                    continue
                if not _names(p.get("vhost"), p.get("name")):
                    drop(kind, (p.get("vhost"), p.get("name")), "not a policy")
                    continue
                if p["vhost"] not in vhosts:
                    drop(kind, (p["vhost"], p["name"]), "its vhost is gone")
                    continue
                table[(p["vhost"], p["name"])] = p
        for p in rec.parameters:
            if not _dict(p):
                continue
            if not _names(p.get("vhost", ""), p.get("component", ""), p.get("name")):
                drop("parameter", (p.get("vhost", ""), p.get("component", ""), p.get("name")), "not a parameter")
                continue
            key = (p.get("vhost", ""), p.get("component", ""), p["name"])
            v = vhosts.get(key[0])
            if v is None:
                drop("parameter", key, "its vhost is gone")
                continue
            broker.parameters[key] = p
            if key[1:] == ("vhost-limits", "limits") and _dict(p.get("value")):
                v.limits.update(p["value"])       # vhost limits are kept as this parameter
        for p in rec.global_parameters:
            if not _dict(p):
                continue
            if not _names(p.get("name")):
                drop("global_parameter", (p.get("name"),), "not a global parameter")
                continue
            broker.global_parameters[p["name"]] = p.get("value")
            if p["name"] == "cluster_name" and isinstance(p.get("value"), str):
                broker.server_properties["cluster_name"] = p["value"]
    finally:
        store.put_definition = saved_store_calls
    for kind, key, why in dropped:
        log.warning("recovery: %s %r dropped from the store: %s", kind, key, why)
    for name in broker.vhosts:
        broker.apply_policies(name)
    # messages: shared bodies are loaded once per message id
    count = 0
    by_id = {}
    stubs_ok = bool(PAGING["dir"]) and store.durable
    refs = getattr(rec.messages, "refs", None)
    now_ms = int(time.time() * 1000)
    for (vname, qname), entries in rec.messages.items():
        v = broker.vhosts.get(vname)
        q = v.queues.get(qname) if v is not None else None
        if q is None:
            continue
        # Past the queue's in-memory budget (at most PROMOTED_HEAD), an entry that comes back
        # redelivered stays in the store: its record is a stub read back when it is delivered, so
        # that a promoted leader serves after reading the heads of its queues and the store's
        # index, not every body.
        light = getattr(entries, "light", None)
        if not (redeliver_all and light is not None and stubs_ok and q.kind != "stream"):
            light = None
        for entry in entries:
            if light is not None and entry[4] is None:
                if type(q) is Queue:
                    count += _restore_stubs(broker, q, entry, entries, now_ms)
                    break
                count += 1
                _restore_stub(broker, q, entry, now_ms)
                continue
            seq, exchange, routing_key, props, body, redelivered = entry[:6]
            msg_id = entry[6] if len(entry) > 6 else None
            expires = entry[7] if len(entry) > 7 else None
            shared = refs is None or refs.get(msg_id, 2) > 1      # held by several queues: load once
            msg = by_id.get(msg_id) if msg_id is not None else None
            if msg is None:
                msg = broker.new_message(exchange, routing_key, props, body)
                if msg_id is not None:
                    msg.id = msg_id
                    if shared:
                        by_id[msg_id] = msg
                msg.stored = True
            msg.refs += 1
            if q.kind == "stream":      # a stream entry's time is when it was appended (x-max-age)
                q.restore(seq - 1, msg, expires if expires is not None and expires >= 0 else now_ms)
                count += 1
                continue
            if expires == UNKNOWN_EXPIRY:         # stored before deadlines were: its TTL from now
                ttl = broker.message_ttl(q, msg)
                expires = now_ms + ttl if ttl is not None else None
            # in its place (paged out past the queue's budget); expired ones go at the first timer
            # tick, dead-lettered if the queue says so
            broker.restore_entry(q, seq, msg, bool(redelivered) or redeliver_all, expires)
            count += 1
            if light is not None and (q.ram_count() >= min(q.cap_count, PROMOTED_HEAD) * 9 // 10 or
                                      q.ram_bytes() >= q.cap_bytes * 9 // 10):
                light()
                light = True          # what follows comes without bodies
    max_id = getattr(store, "max_msg_id", 0) or 0
    broker.next_msg_id = max(broker.next_msg_id, max_id + 1)
    return {"vhosts": len(rec.vhosts), "queues": len(rec.queues), "messages": count}
