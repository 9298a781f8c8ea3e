"""Dead-lettering headers: x-death and the x-first-death-* / x-last-death-* headers, as RabbitMQ writes them.

The headers table is edited entry by entry on the raw bytes so that every other header keeps its
exact wire type. `x-death` is an array of tables, most recent death first; a death of a message
that already died in the same queue for the same reason increments that entry's `count` and moves
it to the front, keeping its first `time`, `exchange` and `routing-keys`. The other deaths are kept
as their bytes: when the message has no death in this queue yet (no `queue` field naming it, a
byte search) the new entry is put in front of the array as it is; otherwise only the `queue`,
`reason` and `count` of each entry are read.

Headers are not checked at publish, so these edits must work on any table (a poison message must
still be dead-lettered, never close the connection of whoever rejected it): an entry that cannot
be followed ends the part that is edited, and the rest is kept after it as it came; an x-death
that is not an array counts as absent and a fresh one replaces it (what RabbitMQ 4 does with any
x-death it did not write); items of it that cannot be read are kept after those that can; a count
that does not fit a long saturates. (The lenient reader reads an array up to an item it cannot, so
the deaths put in front are always seen by the cycle check.)
"""
from __future__ import annotations

from ..amqp import properties as P
from ..amqp.table import (TYPE_NAMES, Timestamp, Typed, array_items, decode_table_lenient, encode_value,
                          join_entries, join_items, table_entries_lenient)

CC_KEYS = (b"\x02CC", b"\x03BCC")
LONG_MAX = 2 ** 63 - 1      # x-death count is a long: it stops there
_REWRITTEN = ("x-death", "x-last-death-reason", "x-last-death-queue", "x-last-death-exchange")


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


def cc_type_error(props: bytes, scan) -> str | None:
    """RabbitMQ's complaint about a CC or BCC header that is not an array, or None. Only an array
    routes; any other type makes the message invalid (406 at publish). One pass over the headers'
    entries, without decoding their values."""
    if scan.headers_span is None or not (b"\x02CC" in props or b"\x03BCC" in props):
        return None
    a, b = scan.headers_span
    entries, _rest = table_entries_lenient(props[a:b])
    for k, v in entries:
        if (k == "CC" or k == "BCC") and v[:1] != b"A":
            return f'invalid message: {{unacceptable_type_in_header,"{k}",{TYPE_NAMES.get(v[0], "void")}}}'
    return None


def strip_bcc(props: bytes, scan) -> bytes:
    if scan.headers_span is None:
        return props
    a, b = scan.headers_span
    entries, rest = table_entries_lenient(props[a:b])
    kept = [(k, v) for k, v in entries if k != "BCC"]
    if len(kept) == len(entries):
        return props
    return P.replace_headers(props, join_entries(kept, rest))


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


def _death_field(entries: list, name: str):
    """The decoded value of one entry of a death's table ([(name, raw value)]), or None."""
    for k, v in entries:
        if k == name:
            return decode_table_lenient(join_entries([("v", v)])).get("v")
    return None


def record_death(msg, queue: str, reason: str, now_ms: int) -> bytes:
    """The message's properties after dying in `queue` for `reason` (expiration moved into x-death).
    Total over whatever headers the message carries: it does not raise for any table."""
    props = msg.props
    scan = msg.scan
    expiration = scan.expiration
    if scan.headers_span is not None:
        a, b = scan.headers_span
        entries, rest = table_entries_lenient(props[a:b])
    else:
        entries, rest = [], b""
    current = dict(entries)
    raw = current.get("x-death")
    items, tail = (), b""
    if raw is not None and raw[:1] == b"A" and queue_field(queue) not in raw:
        # no death in this queue yet (the common case, and every hop of a chain of queues): the
        # new entry goes in front and the others keep their bytes, copied rather than walked
        pass
    elif raw is not None:
        items, tail = array_items(raw) or ((), b"")
        raw = None
    deaths = []
    found = None
    for item in items:
        if found is None and item[:1] == b"F":
            fields, broken = table_entries_lenient(item[1:])
            if not broken and _death_field(fields, "queue") == queue and _death_field(fields, "reason") == reason:
                found = fields
                continue
        deaths.append(item)
    if found is not None:
        c = _death_field(found, "count")
        c = c if isinstance(c, int) and not isinstance(c, bool) else 0
        count = encode_value(Typed("l", max(-LONG_MAX - 1, min(LONG_MAX, c + 1))))
        fields = [(k, count if k == "count" else v) for k, v in found]
        if "count" not in dict(found):
            fields.append(("count", count))
        entry = b"F" + join_entries(fields)
    else:
        keys = routing_keys(msg, bcc=False)
        d = {"count": Typed("l", 1), "reason": _s(reason), "queue": _s(queue),
             "time": Timestamp(now_ms // 1000), "exchange": _s(msg.exchange),
             "routing-keys": [_s(k) for k in keys]}
        if expiration is not None:
            d["original-expiration"] = _s(expiration)
        entry = encode_value(d)
    if raw is not None:
        updates = {"x-death": b"A" + (len(raw) - 5 + len(entry)).to_bytes(4, "big") + entry + raw[5:]}
    else:
        updates = {"x-death": join_items([entry] + deaths, tail)}
    if "x-first-death-reason" not in current:
        updates["x-first-death-reason"] = encode_value(_s(reason))
        updates["x-first-death-queue"] = encode_value(_s(queue))
        updates["x-first-death-exchange"] = encode_value(_s(msg.exchange))
    updates["x-last-death-reason"] = encode_value(_s(reason))
    updates["x-last-death-queue"] = encode_value(_s(queue))
    updates["x-last-death-exchange"] = encode_value(_s(msg.exchange))
    out = []
    for k, v in entries:                  # in place, once (a repeated name would shadow the update)
        if k in updates:
            v = updates.pop(k)
        elif k in _REWRITTEN:
            continue
        out.append((k, v))
    out += list(updates.items())
    new_props = P.replace_headers(props, join_entries(out, rest))
    if expiration is not None:
        new_props = P.without_expiration(new_props)
    return new_props


def with_header(msg, name: str, value) -> bytes:
    """Properties with one header set (used for x-delivery-count and x-stream-offset)."""
    props = msg.props
    scan = msg.scan
    rest = b""
    if scan.headers_span is not None:
        a, b = scan.headers_span
        entries, rest = table_entries_lenient(props[a:b])
        entries = [(k, v) for k, v in entries if k != name]
    else:
        entries = []
    entries.append((name, encode_value(value)))
    return P.replace_headers(props, join_entries(entries, rest))
