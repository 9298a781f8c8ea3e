"""A peek at the head of a queue (the management API's get with requeue) returns what a full walk
would, in delivery order, whatever the mix of levels, requeued and dead entries; with a limit it
stops at the entries it returns (PriorityQueue.peek_all used to sort and copy every entry)."""
from __future__ import annotations

import random

from usagi.amqp import properties as P
from usagi.model.message import Message
from usagi.model.queue import PriorityQueue, Queue


def message(i: int, priority: int | None) -> Message:
    props = P.encode({"priority": priority} if priority is not None else {})
    return Message("", "q", props, b"m%d" % i, P.scan(props), i)


def build(kind, rng):
    q = PriorityQueue("/", "q", max_priority=5) if kind == "priority" else Queue("/", "q")
    for i in range(rng.randint(0, 60)):
        q.push(message(i, rng.choice([None, 0, 1, 3, 5, 9])))
    taken = []
    for _ in range(rng.randint(0, 20)):
        item = q.pop()
        if item is None:
            break
        taken.append(item)
    rng.shuffle(taken)
    for seq, msg, _red in taken[:rng.randint(0, len(taken))]:
        q.requeue(seq, msg)
    return q


def order(entries):
    return [(s, m.id, red) for s, m, red in entries]


def test_a_limited_peek_is_the_head_of_the_full_one():
    rng = random.Random(7)
    for kind in ("plain", "priority"):
        for _ in range(300):
            q = build(kind, rng)
            full = order(q.peek_all())
            for limit in (1, 2, 3, 5, 10, 1000):
                assert order(q.peek_all(limit)) == full[:limit], (kind, limit)
            # and it is the order in which the queue hands them out
            out = []
            while True:
                item = q.pop()
                if item is None:
                    break
                out.append(item)
            assert order(out) == full, kind
