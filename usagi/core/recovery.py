"""Rebuild the engine's state from what a store recovered at start."""
from __future__ import annotations

import logging
import time


log = logging.getLogger("usagi.recovery")


def restore(broker, rec) -> dict:
    """Load definitions and messages into `broker` without writing them back. Returns counts."""
    store = broker.store
    saved_store_calls = store.put_definition
    store.put_definition = lambda *a, **k: None      # replaying: nothing new to write
    try:
        for name, meta in rec.vhosts:
            broker.add_vhost(name, meta.get("description", ""), meta.get("tags"),
                             meta.get("default_queue_type", "classic"))
        for u in rec.users:
            user = broker.users.add_user(u["name"], None, u.get("tags", []),
                                         password_hash=u.get("password_hash", ""),
                                         hashing_algorithm=u.get("hashing_algorithm") or "rabbit_password_hashing_sha256")
            user.limits = dict(u.get("limits") or {})
        for p in rec.permissions:
            if p["user"] in broker.users.users and p["vhost"] in broker.vhosts:
                broker.users.set_permission(p["user"], p["vhost"], p["configure"], p["write"], p["read"])
        for x in rec.exchanges:
            v = broker.vhosts.get(x["vhost"])
            if v is None or x["name"] in v.exchanges:
                continue
            broker.declare_exchange(v, x["name"], x["type"], x.get("durable", True), x.get("auto_delete", False),
                                    x.get("internal", False), x.get("arguments") or {})
        for q in rec.queues:
            v = broker.vhosts.get(q["vhost"])
            if q.get("auto_delete"):
                # auto-delete queues do not outlive the node, as in RabbitMQ
                store.delete_definition("queue", (q["vhost"], q["name"]))
                store.drop_queue_messages(q["vhost"], q["name"])
                continue
            if v is None or q["name"] in v.queues:
                continue
            v.queues[q["name"]] = broker.make_queue(q["vhost"], q["name"], True, None, False,
                                                    q.get("arguments") or {})
        for b in rec.bindings:
            v = broker.vhosts.get(b["vhost"])
            if v is None:
                continue
            src = v.exchanges.get(b["source"])
            dst = (v.queues if b["destination_type"] == "queue" else v.exchanges).get(b["destination"])
            if src is None or dst is None:
                continue
            broker.bind(v, src, dst, b["routing_key"], b.get("arguments") or {})
        for p in rec.policies:
            broker.policies[(p["vhost"], p["name"])] = p
        for p in getattr(rec, "operator_policies", []):
            broker.operator_policies[(p["vhost"], p["name"])] = p
        for p in rec.parameters:
            broker.parameters[(p.get("vhost", ""), p.get("component", ""), p["name"])] = p
    finally:
        store.put_definition = saved_store_calls
    for name in broker.vhosts:
        broker.apply_policies(name)
    # messages: shared bodies are loaded once per message id
    count = 0
    by_id = {}
    refs = getattr(rec.messages, "refs", None)
    for (vname, qname), entries in rec.messages.items():
        v = broker.vhosts.get(vname)
        q = v.queues.get(qname) if v is not None else None
        if q is None:
            continue
        for entry in entries:
            seq, exchange, routing_key, props, body, redelivered = entry[:6]
            msg_id = entry[6] if len(entry) > 6 else None
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
            if q.kind == "stream":
                q.restore(seq - 1, msg, int(time.time() * 1000))
                count += 1
                continue
            q.restore(seq, msg, bool(redelivered))
            count += 1
    max_id = getattr(store, "max_msg_id", 0) or 0
    broker.next_msg_id = max(broker.next_msg_id, max_id + 1)
    return {"vhosts": len(rec.vhosts), "queues": len(rec.queues), "messages": count}
