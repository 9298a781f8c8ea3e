"""Structures users build are walked without recursion, and dead lettering works in bounded turns.

The engine is driven in-process here (a real Broker, no server) where the wire cannot show the
property: how much work one loop turn does, or that a walk never nests Python frames.
"""
from __future__ import annotations

import json
import sys

import pytest

from usagi.amqp import properties as P
from usagi.amqp.table import MAX_DEPTH, decode_table, encode_table, table_entries
from usagi.core import deadlettering
from usagi.core.broker import Broker
from usagi.mgmt.util import jsonable
from usagi.model import deadletter as DL
from usagi.storage.sqlite import _enc, decode_json, encode_json

DEEP = sys.getrecursionlimit() * 20


def nested_list(depth: int, leaf=1):
    v = leaf
    for _ in range(depth):
        v = [v]
    return v


def depth_of(v) -> int:
    n = 0
    while isinstance(v, list):
        v, n = v[0], n + 1
    return n


@pytest.fixture
def broker():
    b = Broker()
    b.bootstrap()
    return b


def test_jsonable_and_definition_encoding_are_iterative():
    deep = {"a": nested_list(DEEP), "b": {"c": nested_list(DEEP, b"x")}}
    out = jsonable(deep)
    assert depth_of(out["a"]) == DEEP and depth_of(out["b"]["c"]) == DEEP
    enc = _enc(deep)
    assert depth_of(enc["a"]) == DEEP
    v = enc["b"]["c"]
    while isinstance(v, list):
        v = v[0]
    assert v == {"__bytes__": "eA=="}
    # what json itself can nest round-trips through the store's encoding
    shallow = {"k": nested_list(200, {"__ts__": 1})}
    assert decode_json(encode_json(shallow)) == shallow
    assert json.loads(encode_json(shallow))["k"] == _enc(shallow)["k"]


def test_table_entries_steps_over_values_without_decoding_them():
    inner = nested_list(MAX_DEPTH + 50)              # deeper than the decoder accepts
    raw = b"\x05first" + b"I\x00\x00\x00\x01"
    v = b"I\x00\x00\x00\x02"
    for _ in range(MAX_DEPTH + 50):
        v = b"A" + len(v).to_bytes(4, "big") + v
    raw += b"\x04deep" + v + b"\x04last" + b"S\x00\x00\x00\x02ok"
    table = len(raw).to_bytes(4, "big") + raw
    assert [k for k, _ in table_entries(table)] == ["first", "deep", "last"]
    assert depth_of(inner) == MAX_DEPTH + 50


def death_message(b, headers=None, expiration=None):
    props = {"delivery_mode": 2}
    if headers is not None:
        props["headers"] = headers
    if expiration is not None:
        props["expiration"] = expiration
    return b.new_message("ex", "rk", P.encode(props), b"body")


def test_record_death_copying_and_decoding_agree(broker, monkeypatch):
    """A death in a new queue is prepended to x-death by copying bytes; it must give what the
    decoding path gives (which a death in a queue already in x-death takes)."""
    msg = death_message(broker, {"x-death": [{"queue": "q0", "reason": "rejected", "count": 3,
                                              "exchange": "", "routing-keys": ["q0"]}],
                                 "other": "kept"})
    fast = DL.record_death(msg, "q1", "expired", 1_700_000_000_000)
    monkeypatch.setattr(DL, "queue_field", lambda queue: b"")      # every queue looks present
    slow = DL.record_death(msg, "q1", "expired", 1_700_000_000_000)
    assert P.headers_of(fast) == P.headers_of(slow)
    h = P.headers_of(fast)
    assert [(d["queue"], d["reason"], d["count"]) for d in h["x-death"]] == [("q1", "expired", 1),
                                                                            ("q0", "rejected", 3)]
    assert h["other"] == "kept" and h["x-last-death-queue"] == "q1"


def test_record_death_again_in_the_same_queue(broker):
    msg = death_message(broker)
    for queue in ("a", "b", "a"):
        msg = broker.new_message("ex", "rk", DL.record_death(msg, queue, "rejected", 0), b"body")
    h = msg.headers
    assert [(d["queue"], d["count"]) for d in h["x-death"]] == [("a", 2), ("b", 1)]
    assert h["x-first-death-queue"] == "a" and h["x-last-death-queue"] == "a"


def chain(b, n, ttl0=True, name="dl"):
    v = b.vhosts["/"]
    for i in range(n):
        args = {"x-message-ttl": 0} if ttl0 and i < n - 1 else {}
        if i < n - 1:
            args.update({"x-dead-letter-exchange": "", "x-dead-letter-routing-key": f"{name}-{i + 1}"})
        b.declare_queue(v, f"{name}-{i}", arguments=args)
    return v


def test_dead_letter_chain_runs_in_bounded_turns(broker):
    turns = []
    broker.on_defer = turns.append
    n = 3000
    v = chain(broker, n)
    broker.enqueue(v.queues["dl-0"], death_message(broker))
    hops_first_turn = sum(q.published for q in v.queues.values() if q.name.startswith("dl-"))
    # the first turn stopped at its budget: small hops cost about HOP_COST each
    assert hops_first_turn <= deadlettering.TURN_BUDGET // deadlettering.HOP_COST + 2
    assert len(turns) == 1
    done = 1
    while turns:
        turns.pop()()
        done += 1
    assert done > n // (deadlettering.TURN_BUDGET // deadlettering.HOP_COST + 2)
    last = v.queues[f"dl-{n - 1}"]
    assert last.message_count == 1
    _, msg, _ = last.pop()
    deaths = msg.headers["x-death"]
    assert len(deaths) == n - 1 and deaths[0]["queue"] == f"dl-{n - 2}" and deaths[-1]["queue"] == "dl-0"


def test_dead_letter_without_an_event_loop_finishes_at_once(broker):
    n = 2000
    v = chain(broker, n)
    broker.enqueue(v.queues["dl-0"], death_message(broker))
    assert v.queues[f"dl-{n - 1}"].message_count == 1


def test_dead_letter_keeps_the_order_messages_died_in(broker):
    turns = []
    broker.on_defer = turns.append
    v = chain(broker, 400)
    for i in range(20):
        broker.enqueue(v.queues["dl-0"], broker.new_message("", "dl-0", P.encode({}), b"%d" % i))
    while turns:
        turns.pop()()
    last = v.queues["dl-399"]
    assert [last.pop()[1].body for _ in range(20)] == [b"%d" % i for i in range(20)]


def test_dead_letter_cycle_is_dropped(broker):
    v = broker.vhosts["/"]
    for i in range(300):
        broker.declare_queue(v, f"cy-{i}", arguments={"x-message-ttl": 0, "x-dead-letter-exchange": "",
                                                      "x-dead-letter-routing-key": f"cy-{(i + 1) % 300}"})
    broker.enqueue(v.queues["cy-0"], death_message(broker))
    assert sum(q.message_count for q in v.queues.values()) == 0
    assert v.queues["cy-0"].published == 1 and v.queues["cy-299"].published == 1    # not back into cy-0


def test_auto_delete_cascade_and_exchange_walks_are_iterative(broker):
    v = broker.vhosts["/"]
    n = DEEP // 4
    names = [f"x{i}" for i in range(n)]
    for name in names:
        broker.declare_exchange(v, name, "fanout", auto_delete=True)
    for a, b in zip(names, names[1:]):
        broker.bind(v, v.exchanges[a], v.exchanges[b], "", {})
    q = broker.declare_queue(v, "end")
    broker.bind(v, v.exchanges[names[-1]], q, "", {})
    msg = broker.new_message("x0", "", P.encode({}), b"m")
    assert broker.route(v, v.exchanges["x0"], msg) == [q]
    broker.bind(v, v.exchanges[names[-1]], v.exchanges["x0"], "", {})      # close the ring
    assert broker.route(v, v.exchanges["x0"], msg) == [q]
    broker.unbind(v, v.exchanges[names[-1]], v.exchanges["x0"], "", {})
    broker.delete_queue(q)
    assert not any(name in v.exchanges for name in names)
    assert all(not x.incoming for x in v.exchanges.values())


def test_alternate_exchange_chain_is_iterative(broker):
    v = broker.vhosts["/"]
    n = DEEP // 4
    for i in range(n):
        broker.declare_exchange(v, f"ae{i}", "direct", arguments={"alternate-exchange": f"ae{(i + 1) % n}"})
    q = broker.declare_queue(v, "ae-end")
    broker.bind(v, v.exchanges[f"ae{n - 1}"], q, "k", {})
    assert broker.route_publish(v, v.exchanges["ae0"], broker.new_message("ae0", "k", P.encode({}), b"m")) == [q]
    assert broker.route_publish(v, v.exchanges["ae0"], broker.new_message("ae0", "z", P.encode({}), b"m")) == []


def test_headers_tables_bounded_by_max_depth():
    ok = {"k": nested_list(MAX_DEPTH - 1)}
    assert decode_table(encode_table(ok))[0] == ok
    with pytest.raises(ValueError):
        encode_table({"k": nested_list(MAX_DEPTH + 5)})
