"""Which consumer gets the next message when some of them are full: round-robin as RabbitMQ turns it.

RabbitMQ's queue takes the first consumer of its rotation, delivers, and puts it back at the end;
a consumer found without room leaves the rotation and comes back at the end once it has room (an
ack under its prefetch, or under its channel's global prefetch). These sequences pin that order,
and they run against RabbitMQ too (differential mode).
"""
from __future__ import annotations

import pytest

from itutil import drain, settle, uname


def _consumers(conn, q, names, prefetch=1, global_qos=False, shared_channel=False):
    """One consumer per name (each on a channel of its own unless shared_channel), in that order.
    Returns (got, channels): got is a list of (name, body, delivery tag) in delivery order."""
    got = []
    chans = {}
    shared = None
    for name in names:
        if shared_channel:
            if shared is None:
                shared = conn.channel()
                shared.basic_qos(prefetch_count=prefetch, global_qos=global_qos)
            ch = shared
        else:
            ch = conn.channel()
            ch.basic_qos(prefetch_count=prefetch, global_qos=global_qos)
        ch.basic_consume(q, lambda c, m, p, b, n=name: got.append((n, b, m.delivery_tag)), consumer_tag=name)
        chans[name] = ch
    return got, chans


def _who(got) -> dict:
    """body -> consumer (the client library hands deliveries of different channels over in channel
    order, not in the order they came, so the tests look at who got what)."""
    return {b.decode(): n for n, b, _t in got}


def _publish(ch, q, *bodies):
    for b in bodies:
        ch.basic_publish("", q, b)


def _ack(conn, chans, got, body, pause=0.3):
    name, _b, tag = next(g for g in got if g[1] == body)
    chans[name].basic_ack(tag)
    if pause:
        settle(conn, pause)      # the broker has taken the ack in before what follows


@pytest.fixture
def queue(conn):
    ch = conn.channel()
    q = uname("rot")
    ch.queue_declare(q, auto_delete=True)
    yield q, ch


def test_full_consumers_rejoin_the_rotation_at_its_end(conn, queue):
    q, pub = queue
    got, chans = _consumers(conn, q, ["A", "B", "C"])
    _publish(pub, q, b"m1", b"m2", b"m3")
    drain(conn, lambda: len(got) == 3)
    assert _who(got) == {"m1": "A", "m2": "B", "m3": "C"}
    _publish(pub, q, b"m4", b"m5")          # everyone is full: they wait in the queue
    settle(conn, 0.3)
    assert len(got) == 3
    _ack(conn, chans, got, b"m3", pause=0)
    drain(conn, lambda: len(got) == 4)
    _ack(conn, chans, got, b"m1", pause=0)
    drain(conn, lambda: len(got) == 5)
    assert _who(got[3:]) == {"m4": "C", "m5": "A"}
    _publish(pub, q, b"m6")
    settle(conn, 0.3)
    _ack(conn, chans, got, b"m2", pause=0)
    drain(conn, lambda: len(got) == 6)
    assert got[5][:2] == ("B", b"m6")
    # B got m6 and stayed in the rotation; A and C left it when they were found full, and come
    # back at its end in the order they get room
    for body in (b"m5", b"m6", b"m4"):
        _ack(conn, chans, got, body)
    _publish(pub, q, b"m7", b"m8", b"m9")
    drain(conn, lambda: len(got) == 9)
    assert _who(got[6:]) == {"m7": "B", "m8": "A", "m9": "C"}


def test_global_prefetch_turns_round_the_channels_consumers(conn, queue):
    q, pub = queue
    got, chans = _consumers(conn, q, ["X1", "X2", "X3"], prefetch=1, global_qos=True, shared_channel=True)
    _publish(pub, q, *[b"m%d" % i for i in range(1, 8)])
    drain(conn, lambda: len(got) == 1)
    for i in range(2, 8):
        settle(conn, 0.1)
        assert len(got) == i - 1          # one at a time: the channel's window is full
        _ack(conn, chans, got, got[-1][1], pause=0)
        drain(conn, lambda: len(got) == i)
    assert [n for n, _b, _t in got] == ["X1", "X2", "X3", "X1", "X2", "X3", "X1"]


def test_higher_priority_consumer_that_gets_room_goes_first(conn, queue):
    q, pub = queue
    got = []
    chans = {}
    for name, prio in (("L1", 0), ("H", 5), ("L2", 0)):
        ch = conn.channel()
        ch.basic_qos(prefetch_count=1)
        ch.basic_consume(q, lambda c, m, p, b, n=name: got.append((n, b, m.delivery_tag)), consumer_tag=name,
                         arguments={"x-priority": prio})
        chans[name] = ch
    _publish(pub, q, b"m1", b"m2", b"m3", b"m4")
    drain(conn, lambda: len(got) == 3)
    assert _who(got) == {"m1": "H", "m2": "L1", "m3": "L2"}
    _ack(conn, chans, got, b"m2", pause=0)
    drain(conn, lambda: len(got) == 4)
    assert got[3][:2] == ("L1", b"m4")
    _ack(conn, chans, got, b"m3")               # L2 has room first, then H: H goes first all the same
    _ack(conn, chans, got, b"m1")
    _publish(pub, q, b"m5", b"m6")
    drain(conn, lambda: len(got) == 6)
    assert _who(got[4:]) == {"m5": "H", "m6": "L2"}


def test_many_consumers_one_with_room(conn, queue):
    """200 full consumers and one that acks: every message goes to the one with room, at once."""
    q, pub = queue
    names = [f"c{i:03d}" for i in range(200)]
    got, chans = _consumers(conn, q, names)
    _publish(pub, q, *[b"fill%d" % i for i in range(200)])
    drain(conn, lambda: len(got) == 200)
    assert sorted(n for n, _b, _t in got) == names
    lucky = "c137"
    for i in range(50):
        tag = next(t for n, _b, t in reversed(got) if n == lucky)
        chans[lucky].basic_ack(tag)
        _publish(pub, q, b"x%d" % i)
        drain(conn, lambda: len(got) == 201 + i)
        assert got[-1][:2] == (lucky, b"x%d" % i)
