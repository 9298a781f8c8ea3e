"""Dead-lettering headers: x-death and the x-first-death-* / x-last-death-* headers, as RabbitMQ writes them.

The headers table is edited entry by entry on the raw bytes so that every other header keeps its
exact wire type. `x-death` is an array of tables, most recent death first; a death of a message
that already died in the same queue for the same reason increments that entry's `count` and moves
it to the front, keeping its first `time`, `exchange` and `routing-keys`.
"""
from __future__ import annotations

from ..amqp import properties as P
from ..amqp.table import Timestamp, Typed, decode_table, encode_value, join_entries, table_entries

CC_KEYS = (b"\x02CC", b"\x03BCC")


def _s(v) -> Typed:
    return Typed("S", v)


def routing_keys(msg, bcc: bool = True) -> list:
    """The message's routing key followed by those in its CC (and BCC) headers."""
    keys = [msg.routing_key]
    if msg.scan.headers_span is not None and (b"\x02CC" in msg.props or b"\x03BCC" in msg.props):
        h = msg.headers
        for k in (("CC", "BCC") if bcc else ("CC",)):
            v = h.get(k)
            if isinstance(v, list):
                keys += [x.decode("utf-8", "surrogateescape") if isinstance(x, bytes) else x
                         for x in v if isinstance(x, (str, bytes))]
    return keys


def strip_bcc(props: bytes, scan) -> bytes:
    if scan.headers_span is None:
        return props
    a, b = scan.headers_span
    entries = table_entries(props[a:b])
    kept = [(k, v) for k, v in entries if k != "BCC"]
    if len(kept) == len(entries):
        return props
    return P.replace_headers(props, join_entries(kept))


def queue_field(queue: str) -> bytes:
    """How the `queue` field of an x-death entry naming this queue is encoded. Properties without
    these bytes hold no death in that queue: a byte search that spares decoding x-death."""
    raw = queue.encode("utf-8", "surrogateescape")
    return b"\x05queueS" + len(raw).to_bytes(4, "big") + raw


def is_cycle(deaths: list, queue: str) -> bool:
    """A message going back to a queue it died in would loop forever, unless one of the deaths
    since (and including) its last death in that queue was a rejection by a consumer."""
    for d in deaths:                      # most recent first
        if not isinstance(d, dict):
            continue
        if d.get("reason") == "rejected":
            return False
        if d.get("queue") == queue:
            return True
    return False


def cycling_queues(deaths: list) -> set:
    """The queues a message with these deaths may not go back to: `is_cycle` for every queue at
    once, in one pass over the deaths (a message routed to many queues checks each in O(1))."""
    out = set()
    for d in deaths:                      # most recent first
        if not isinstance(d, dict):
            continue
        if d.get("reason") == "rejected":
            break
        out.add(d.get("queue"))
    return out


def bcc_keys(msg) -> list | None:
    v = msg.headers.get("BCC") if msg.scan.headers_span is not None else None
    if not isinstance(v, list):
        return None
    return [x.decode("utf-8", "surrogateescape") if isinstance(x, bytes) else x
            for x in v if isinstance(x, (str, bytes))]


def deaths_of(msg) -> list:
    if msg.scan.headers_span is None:
        return []
    v = msg.headers.get("x-death")
    return v if isinstance(v, list) else []


def record_death(msg, queue: str, reason: str, now_ms: int) -> bytes:
    """The message's properties after dying in `queue` for `reason` (expiration moved into x-death)."""
    props = msg.props
    scan = msg.scan
    expiration = scan.expiration
    if scan.headers_span is not None:
        a, b = scan.headers_span
        entries = table_entries(props[a:b])
    else:
        entries = []
    current = dict(entries)
    old = []
    kept = None
    raw = current.get("x-death")
    if raw is not None and raw[:1] == b"A" and queue_field(queue) not in raw:
        # no death in this queue yet (the common case, and every hop of a chain of queues): the
        # new entry goes in front and the others keep their bytes, copied rather than decoded
        kept = raw
    elif raw is not None:
        t, _ = decode_table(join_entries([("x", raw)]), 0)
        old = t.get("x") if isinstance(t.get("x"), list) else []
    deaths = []
    found = None
    keys = routing_keys(msg, bcc=False)
    for d in old:
        if not isinstance(d, dict):
            continue
        if found is None and d.get("queue") == queue and d.get("reason") == reason:
            found = d
        else:
            d = dict(d)
            if isinstance(d.get("count"), int):
                d["count"] = Typed("l", d["count"])
            deaths.append(d)
    if found is not None:
        entry = dict(found)
        c = entry.get("count", 0)
        entry["count"] = Typed("l", (c if isinstance(c, int) else 0) + 1)
    else:
        entry = {"count": Typed("l", 1), "reason": _s(reason), "queue": _s(queue),
                 "time": Timestamp(now_ms // 1000), "exchange": _s(msg.exchange),
                 "routing-keys": [_s(k) for k in keys]}
        if expiration is not None:
            entry["original-expiration"] = _s(expiration)
    deaths.insert(0, entry)
    if kept is not None:
        first = encode_value(entry)
        updates = {"x-death": b"A" + (len(kept) - 5 + len(first)).to_bytes(4, "big") + first + kept[5:]}
    else:
        updates = {"x-death": encode_value(deaths)}
    if "x-first-death-reason" not in current:
        updates["x-first-death-reason"] = encode_value(_s(reason))
        updates["x-first-death-queue"] = encode_value(_s(queue))
        updates["x-first-death-exchange"] = encode_value(_s(msg.exchange))
    updates["x-last-death-reason"] = encode_value(_s(reason))
    updates["x-last-death-queue"] = encode_value(_s(queue))
    updates["x-last-death-exchange"] = encode_value(_s(msg.exchange))
    out = [(k, updates.pop(k) if k in updates else v) for k, v in entries]
    out += list(updates.items())
    new_props = P.replace_headers(props, join_entries(out))
    if expiration is not None:
        d = P.decode(new_props)
        d.pop("expiration", None)
        s2 = P.scan(new_props)
        a, b = s2.headers_span
        new_props = P.encode(d, raw_headers=new_props[a:b])
    return new_props


def with_header(msg, name: str, value) -> bytes:
    """Properties with one header set (used for x-delivery-count and x-stream-offset)."""
    props = msg.props
    scan = msg.scan
    if scan.headers_span is not None:
        a, b = scan.headers_span
        entries = [(k, v) for k, v in table_entries(props[a:b]) if k != name]
    else:
        entries = []
    entries.append((name, encode_value(value)))
    return P.replace_headers(props, join_entries(entries))
