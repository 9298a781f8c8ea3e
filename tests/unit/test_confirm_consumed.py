"""Publisher confirms of persistent messages consumed before their commit, sans-IO: the engine with a
real SQLite store, commits driven by hand (tests/unit/test_held_replies.py's Node).

A persistent message in a durable queue is confirmed once the commit holding it is on disk, or once
every queue it went to has had it acknowledged by a consumer, whichever comes first (as RabbitMQ
confirms such a message once it is persisted or consumed everywhere): nothing is left to make
durable. Each seq is confirmed exactly once; one still held by a queue waits for its commit; the
hot path and the general path say the same.
"""
from __future__ import annotations

import itertools

import pytest

from test_held_replies import Node, publish, replies
from usagi.amqp import methods as M
from usagi.amqp.frames import method_frame


def acks(data: bytes) -> list:
    """The basic.ack methods in `data`: [(tag, multiple)]."""
    return [(f["delivery_tag"], f["multiple"]) for _ch, name, f in replies(data) if name == "basic.ack"]


def confirmed(data: bytes) -> set:
    """The seqs the basic.acks in `data` confirm, given seqs 1..100 were published."""
    out = set()
    for tag, multiple in acks(data):
        out |= set(range(1, tag + 1)) if multiple else {tag}
    return out


def deliveries(data: bytes) -> list:
    return [f["delivery_tag"] for _ch, name, f in replies(data) if name == "basic.deliver"]


class Pair:
    """A publisher in confirm mode and a consumer (manual acks) on their own connections."""

    def __init__(self, tmp_path, fast: bool, queues=("q1",), no_ack=False):
        self.node = n = Node(tmp_path)
        self.pub, self.pt = n.connect()
        self.cons, self.ct = n.connect()
        self.pub.fast_path = self.cons.fast_path = fast
        setup = method_frame(1, M.ExchangeDeclare(exchange="fan", type="fanout", durable=True).encode())
        for q in queues:
            setup += method_frame(1, M.QueueDeclare(queue=q, durable=True).encode())
            setup += method_frame(1, M.QueueBind(queue=q, exchange="fan").encode())
        self.pub.data_received(setup + method_frame(1, M.ConfirmSelect().encode()))
        n.settle()
        cons = method_frame(1, M.BasicQos(prefetch_count=100).encode())
        for i, q in enumerate(queues):
            cons += method_frame(1, M.BasicConsume(queue=q, consumer_tag=f"c{i}", no_ack=no_ack).encode())
        self.cons.data_received(cons)
        n.settle()
        self.pt.data = self.ct.data = b""

    def publish(self, *bodies, exchange=""):
        from usagi.amqp.frames import content_frames
        data = b""
        for b in bodies:
            if exchange:
                data += method_frame(1, M.BasicPublish(0, exchange, "").encode())
                data += b"".join(content_frames(1, 60, b"\x10\x00\x02", b, 131072))
            else:
                data += publish("q1", b)
        self.pub.data_received(data)
        self.node.run_later()

    def consumer_says(self, *methods):
        self.cons.data_received(b"".join(method_frame(1, m.encode()) for m in methods))
        self.node.run_later()

    def take_pub(self) -> bytes:
        out, self.pt.data = self.pt.data, b""
        return out


@pytest.fixture(params=[True, False], ids=["hot", "general"])
def fast(request):
    return request.param


def test_a_message_acked_before_its_commit_is_confirmed_without_the_commit(tmp_path, fast):
    p = Pair(tmp_path, fast)
    p.publish(b"a", b"b", b"c")
    assert deliveries(p.ct.data) == [1, 2, 3]
    assert acks(p.take_pub()) == []                 # nothing committed, nothing consumed yet
    p.consumer_says(M.BasicAck(2, True))
    assert acks(p.take_pub()) == [(2, True)]        # consumed: confirmed with no commit
    ch = p.pub.channels[1]
    assert len(ch.waiting) == 1 and not ch.early
    assert p.node.commit()
    assert acks(p.take_pub()) == [(3, False)]       # the commit confirms only what was left
    p.consumer_says(M.BasicAck(3, False))
    assert acks(p.take_pub()) == []                 # once only
    assert not ch.waiting and not ch.early


def test_acks_out_of_order_confirm_each_seq_once(tmp_path, fast):
    p = Pair(tmp_path, fast)
    p.publish(b"a", b"b", b"c", b"d")
    p.consumer_says(M.BasicAck(3, False))
    assert acks(p.take_pub()) == [(3, False)]
    p.consumer_says(M.BasicAck(1, False))
    got = p.take_pub()
    assert confirmed(got) == {1}
    p.consumer_says(M.BasicAck(2, False))
    assert acks(p.take_pub()) == [(2, False)]
    ch = p.pub.channels[1]
    assert [w[0] for w in ch.waiting] == [4] and not ch.early
    assert p.node.commit()
    assert acks(p.take_pub()) == [(4, False)]


def test_a_message_still_held_by_another_queue_waits_for_its_commit(tmp_path, fast):
    p = Pair(tmp_path, fast, queues=("q1", "q2"))
    p.publish(b"x", exchange="fan")
    tags = deliveries(p.ct.data)
    assert len(tags) == 2
    p.consumer_says(M.BasicAck(tags[0], False))
    assert acks(p.take_pub()) == []                 # one queue still holds it
    p.consumer_says(M.BasicAck(tags[1], False))
    assert acks(p.take_pub()) == [(1, False)]
    assert p.node.commit() is not None
    assert acks(p.take_pub()) == []


def test_requeued_then_acked_is_confirmed_but_discarded_waits_for_the_commit(tmp_path, fast):
    p = Pair(tmp_path, fast)
    p.publish(b"a", b"b")
    p.consumer_says(M.BasicNack(1, False, True))    # back to the queue, delivered again as tag 3
    assert acks(p.take_pub()) == []
    p.consumer_says(M.BasicAck(3, False))
    assert acks(p.take_pub()) == [(1, False)]
    p.consumer_says(M.BasicReject(2, False))        # discarded, not consumed: the commit confirms it
    assert acks(p.take_pub()) == []
    assert p.node.commit()
    assert acks(p.take_pub()) == [(2, False)]


def test_an_automatic_ack_delivery_confirms_at_once(tmp_path, fast):
    p = Pair(tmp_path, fast, no_ack=True)
    p.publish(b"a", b"b")
    assert deliveries(p.ct.data) == [1, 2]
    assert confirmed(p.take_pub()) == {1, 2}
    assert not p.node.commit() or acks(p.take_pub()) == []


def test_the_publisher_gone_before_the_ack_is_no_error(tmp_path, fast):
    p = Pair(tmp_path, fast)
    p.publish(b"a")
    p.pub.data_received(method_frame(1, M.ChannelClose(200, "bye", 0, 0).encode()))
    p.node.settle()
    p.take_pub()
    p.consumer_says(M.BasicAck(1, False))
    assert acks(p.take_pub()) == []
    assert p.cons.channels[1].state == 0 and not p.cons.closed


def test_a_commit_that_fails_nacks_only_what_was_not_consumed(tmp_path, fast):
    p = Pair(tmp_path, fast)
    p.publish(b"a", b"b")
    p.consumer_says(M.BasicAck(1, False))
    assert acks(p.take_pub()) == [(1, False)]
    p.node.commit(error=OSError("disk"))
    nacks = [f["delivery_tag"] for _c, name, f in replies(p.take_pub()) if name == "basic.nack"]
    assert nacks == [2]


def test_acks_out_of_order_in_one_input_confirm_every_seq(tmp_path, fast):
    # acks 1, 3, 2 in one read: the confirms come out as [1, 3, 2] (3 early, behind 2; then 2 takes
    # the head and 3 with it), and the multiple ack sent for them must cover 3, the highest, not
    # the last (a soak run's raw publisher waited forever for such a seq)
    p = Pair(tmp_path, fast)
    p.publish(b"a", b"b", b"c")
    p.consumer_says(M.BasicAck(1, False), M.BasicAck(3, False), M.BasicAck(2, False))
    assert confirmed(p.take_pub()) == {1, 2, 3}
    ch = p.pub.channels[1]
    assert not ch.waiting and not ch.early
    assert p.node.commit() is not None
    assert acks(p.take_pub()) == []


def test_acks_in_any_order_in_one_input_confirm_every_seq(tmp_path, fast):
    for order in itertools.permutations(range(1, 6)):
        (tmp_path / "".join(map(str, order))).mkdir()
        p = Pair(tmp_path / "".join(map(str, order)), fast)
        p.publish(*(b"m%d" % i for i in range(5)))
        p.consumer_says(*(M.BasicAck(t, False) for t in order))
        got = p.take_pub()
        assert confirmed(got) == {1, 2, 3, 4, 5}, (order, acks(got))
        ch = p.pub.channels[1]
        assert not ch.waiting and not ch.early
        p.node.store.close()


def test_random_interleavings_of_publishes_acks_and_commits_confirm_every_seq(tmp_path, fast):
    # publishes, consumer acks in random order and batches, and commits, interleaved at random: at
    # the end every seq is confirmed, none is named alone twice, and nothing is left waiting
    import random
    for seed in range(30):
        rng = random.Random(seed)
        (tmp_path / str(seed)).mkdir()
        p = Pair(tmp_path / str(seed), fast)
        published = 0
        delivered: list = []
        got = b""
        for _step in range(40):
            k = rng.random()
            if k < 0.35:
                n = rng.randint(1, 4)
                before = len(p.ct.data)
                p.publish(*(b"m%d" % (published + i) for i in range(n)))
                published += n
                delivered += deliveries(p.ct.data[before:])
            elif k < 0.8 and delivered:
                batch = rng.sample(delivered, rng.randint(1, min(4, len(delivered))))
                delivered = [t for t in delivered if t not in batch]
                p.consumer_says(*(M.BasicAck(t, False) for t in batch))
            else:
                p.node.commit()
            got += p.take_pub()
        p.node.settle()
        got += p.take_pub()
        singles = [tag for tag, multiple in acks(got) if not multiple]
        assert len(singles) == len(set(singles)), (seed, acks(got))
        assert confirmed_upto(got, published) == set(range(1, published + 1)), (seed, acks(got))
        ch = p.pub.channels[1]
        assert not ch.waiting and not ch.early
        p.node.store.close()


def confirmed_upto(data: bytes, top: int) -> set:
    out = set()
    for tag, multiple in acks(data):
        assert tag <= top
        out |= set(range(1, tag + 1)) if multiple else {tag}
    return out
