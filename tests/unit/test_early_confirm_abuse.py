"""Early publisher confirms under attack, sans-IO (the harness of test_confirm_consumed.py: the engine
with a real SQLite store, commits by hand).

A persistent message may be confirmed before its commit only when every durable queue it went to has
had it acknowledged by a consumer. Each case below tries to get a confirm for a message some durable
queue still holds (or to get a seq confirmed twice, or covered by a `multiple` ack while unconfirmed),
and checks what a crash right then would keep: the store, reopened, must hold every message confirmed
and not consumed.
"""
from __future__ import annotations

import pytest

from test_confirm_consumed import Pair, acks, confirmed, deliveries
from test_held_replies import replies
from usagi.amqp import methods as M
from usagi.amqp.frames import method_frame
from usagi.storage.sqlite import SQLiteStore


@pytest.fixture(params=[True, False], ids=["hot", "general"])
def fast(request):
    return request.param


def declare(p: Pair, *methods):
    p.pub.data_received(b"".join(method_frame(1, m.encode()) for m in methods))
    p.node.settle()
    p.take_pub()


def stored_entries(p: Pair, tmp_path) -> dict:
    """What a crash now would leave: the store's committed entries, by queue, read from a second
    connection to the same file (what a restart would recover)."""
    import sqlite3
    conn = sqlite3.connect(str(p.node.store.path))
    try:
        rows = conn.execute("SELECT queue, COUNT(*) FROM queue_entries GROUP BY queue").fetchall()
    finally:
        conn.close()
    return {q if isinstance(q, str) else bytes(q).decode(): n for q, n in rows}


def test_a_zero_ttl_queue_delivering_at_once_does_not_confirm_what_another_queue_holds(tmp_path, fast):
    # "z" has x-message-ttl 0 and a consumer: the message goes straight to it. "keep" holds it with
    # no consumer. The ack from "z" must not confirm the publish: "keep" has not written it yet.
    p = Pair(tmp_path, fast, queues=("z",))
    declare(p, M.QueueDeclare(queue="keep", durable=True),
            M.QueueBind(queue="keep", exchange="fan"))
    # "z" again with a TTL of 0: a fresh queue (the Pair's "z" consumer is re-created on it)
    p.consumer_says(M.BasicCancel("c0"))
    declare(p, M.QueueDelete(queue="z"),
            M.QueueDeclare(queue="z", durable=True, arguments={"x-message-ttl": 0}),
            M.QueueBind(queue="z", exchange="fan"))
    p.consumer_says(M.BasicConsume(queue="z", consumer_tag="cz"))
    p.ct.data = b""
    p.publish(b"x", exchange="fan")
    tags = deliveries(p.ct.data)
    assert len(tags) == 1
    p.consumer_says(M.BasicAck(tags[0], False))
    got = p.take_pub()
    assert acks(got) == [], "confirmed while queue 'keep' holds the message unwritten"
    assert p.node.commit()
    assert confirmed(p.take_pub()) == {1}
    assert stored_entries(p, tmp_path).get("keep") == 1


def test_a_zero_ttl_delivery_survives_a_crash_until_acked(tmp_path, fast):
    # a persistent message delivered at once by a durable zero-TTL queue and not yet acked is in
    # the store (redelivered after a restart), as any other delivered, unacked message
    p = Pair(tmp_path, fast, queues=())
    declare(p, M.QueueDeclare(queue="z", durable=True, arguments={"x-message-ttl": 0}),
            M.QueueBind(queue="z", exchange="fan"))
    p.consumer_says(M.BasicConsume(queue="z", consumer_tag="cz"))
    p.ct.data = b""
    p.publish(b"x", exchange="fan")
    assert len(deliveries(p.ct.data)) == 1
    p.node.commit()
    assert confirmed(p.take_pub()) == {1}
    assert stored_entries(p, tmp_path).get("z") == 1


def test_acked_in_one_queue_rejected_in_the_other_waits_for_the_commit(tmp_path, fast):
    p = Pair(tmp_path, fast, queues=("q1", "q2"))
    p.publish(b"x", exchange="fan")
    t1, t2 = deliveries(p.ct.data)
    p.consumer_says(M.BasicReject(t2, True))        # requeued: q2 still holds it
    p.consumer_says(M.BasicAck(t1, False))
    assert acks(p.take_pub()) == []
    t3 = deliveries(p.ct.data)[-1]
    p.consumer_says(M.BasicReject(t3, False))       # discarded (not consumed): the commit decides
    assert acks(p.take_pub()) == []
    assert p.node.commit()
    assert confirmed(p.take_pub()) == {1}


def test_a_multiple_ack_never_covers_a_seq_still_waiting(tmp_path, fast):
    p = Pair(tmp_path, fast)
    p.publish(*[b"m%d" % i for i in range(8)])
    # acks in a scattered order, some multiple: after each, every seq confirmed so far was
    # consumed, and none twice
    seen: list = []
    done = set()
    for tag, multiple in [(5, False), (2, False), (7, False), (4, True), (8, False)]:
        p.consumer_says(M.BasicAck(tag, multiple))
        done |= set(range(1, tag + 1)) if multiple else {tag}
        for t, mul in acks(p.take_pub()):
            got = set(range(1, t + 1)) - set(seen) if mul else {t}
            assert got <= done, f"ack {t} multiple={mul} covers {sorted(got - done)}, not consumed"
            assert not (set([t]) & set(seen)), f"seq {t} confirmed twice"
            seen.extend(sorted(got))
    assert sorted(seen) == sorted(done - {6}) or sorted(seen) == sorted(done)
    p.node.commit()
    rest = confirmed(p.take_pub()) - set(seen)
    assert sorted(seen) + sorted(rest) and set(seen) | rest == set(range(1, 9))


def test_a_dead_lettered_copy_does_not_confirm_the_original(tmp_path, fast):
    # rejected right after publish into a durable DLX queue; the DLX copy acked: the original's
    # confirm still waits for its commit, and the copy is in the store after it
    p = Pair(tmp_path, fast, queues=())
    declare(p, M.ExchangeDeclare(exchange="dlx", type="fanout", durable=True),
            M.QueueDeclare(queue="dlq", durable=True), M.QueueBind(queue="dlq", exchange="dlx"),
            M.QueueDeclare(queue="src", durable=True, arguments={"x-dead-letter-exchange": "dlx"}),
            M.QueueBind(queue="src", exchange="fan"),
            M.QueueDeclare(queue="other", durable=True), M.QueueBind(queue="other", exchange="fan"))
    p.consumer_says(M.BasicConsume(queue="src", consumer_tag="cs"))
    p.ct.data = b""
    p.publish(b"x", exchange="fan")
    (t,) = deliveries(p.ct.data)
    p.consumer_says(M.BasicReject(t, False))
    p.consumer_says(M.BasicConsume(queue="dlq", consumer_tag="cd"))
    t2 = deliveries(p.ct.data)[-1]
    p.consumer_says(M.BasicAck(t2, False))
    assert acks(p.take_pub()) == []
    assert p.node.commit()
    assert confirmed(p.take_pub()) == {1}
    assert stored_entries(p, tmp_path) == {"other": 1}


def test_no_confirm_twice_after_the_channel_is_reopened(tmp_path, fast):
    p = Pair(tmp_path, fast)
    p.publish(b"a", b"b")
    p.pub.data_received(method_frame(1, M.ChannelClose(200, "bye", 0, 0).encode()))
    p.node.settle()
    p.pub.data_received(method_frame(1, M.ChannelOpen().encode()) + method_frame(1, M.ConfirmSelect().encode()))
    p.node.settle()
    p.take_pub()
    p.publish(b"c")                                  # seq 1 of the new channel
    p.consumer_says(M.BasicAck(1, False))            # the old channel's seq 1
    assert acks(p.take_pub()) == []
    p.consumer_says(M.BasicAck(3, False))            # the new channel's seq 1
    assert acks(p.take_pub()) == [(1, False)]
    p.node.commit()
    assert acks(p.take_pub()) == []
    assert [n for _c, n, _f in replies(p.take_pub())] == []


def test_the_store_reopened_after_early_confirms_holds_what_was_not_consumed(tmp_path, fast):
    p = Pair(tmp_path, fast, queues=("q1", "q2"))
    p.publish(*[b"m%d" % i for i in range(6)], exchange="fan")
    tags = deliveries(p.ct.data)
    # q1's copies are the odd tags, q2's the even ones (fanout order): ack all of q1, half of q2
    for t in tags[0::2] + tags[1:6:2]:
        p.consumer_says(M.BasicAck(t, False))
    early = confirmed(p.take_pub())
    assert early == {1, 2, 3}
    p.node.commit()
    data = p.take_pub()
    assert all(t > 3 for t, _m in acks(data)) and confirmed(data) - early == {4, 5, 6}
    p.node.store.close()
    s = SQLiteStore(str(tmp_path))
    rec = s.open()
    try:
        assert stored_entries(p, tmp_path) == {"q2": 3}
    finally:
        s.close()
    assert rec is not None


def test_basic_get_acks_confirm_only_when_every_queue_acked(tmp_path, fast):
    p = Pair(tmp_path, fast, queues=())
    declare(p, M.QueueDeclare(queue="g1", durable=True), M.QueueBind(queue="g1", exchange="fan"),
            M.QueueDeclare(queue="g2", durable=True), M.QueueBind(queue="g2", exchange="fan"))
    p.publish(b"x", exchange="fan")
    p.consumer_says(M.BasicGet(queue="g1"))
    p.consumer_says(M.BasicAck(1, False))
    assert acks(p.take_pub()) == []
    p.consumer_says(M.BasicGet(queue="g2", no_ack=True))
    assert acks(p.take_pub()) == [(1, False)]
    p.node.commit()
    assert acks(p.take_pub()) == []
    assert stored_entries(p, tmp_path) == {}


def test_a_queue_deleted_with_a_delivery_unacked_does_not_confirm_what_another_holds(tmp_path, fast):
    p = Pair(tmp_path, fast, queues=("q1",))
    declare(p, M.QueueDeclare(queue="hold", durable=True), M.QueueBind(queue="hold", exchange="fan"))
    others = [p.node.connect()[0] for _ in range(2)]
    p.publish(b"x", exchange="fan")
    (t,) = deliveries(p.ct.data)
    # others delete q1 and purge "hold" (their replies wait for the commit; no commit runs here)
    for other, m in zip(others, (M.QueueDelete(queue="q1"), M.QueuePurge(queue="hold"))):
        other.data_received(method_frame(1, m.encode()))
        p.node.run_later()
    p.consumer_says(M.BasicAck(t, False))           # the delivery of the deleted queue
    assert acks(p.take_pub()) == []                 # "hold" lost it to a purge: not consumed
    assert p.node.commit()
    assert confirmed(p.take_pub()) == {1}
    assert stored_entries(p, tmp_path) == {}


def _one_entry_in_q1_and_one_held(p, tmp_path):
    """One delivery from q1; its ack confirms nothing ("hold" keeps its entry) until the commit."""
    tags = deliveries(p.ct.data)
    assert len(tags) == 1
    p.consumer_says(M.BasicAck(tags[0], False))
    assert acks(p.take_pub()) == []
    p.node.commit()
    assert confirmed(p.take_pub()) == {1}
    assert stored_entries(p, tmp_path) == {"hold": 1}


def test_a_queue_reached_twice_by_one_publish_holds_one_entry(tmp_path, fast):
    # the fanout reaches q1 directly and through an exchange-to-exchange binding, and "hold" too:
    # one entry in q1 (one ref), so its ack leaves "hold"'s ref and confirms nothing early
    p = Pair(tmp_path, fast, queues=("q1",))
    declare(p, M.ExchangeDeclare(exchange="fan2", type="fanout", durable=True),
            M.ExchangeBind(destination="fan2", source="fan"), M.QueueBind(queue="q1", exchange="fan2"),
            M.QueueDeclare(queue="hold", durable=True), M.QueueBind(queue="hold", exchange="fan"))
    p.publish(b"x", exchange="fan")
    _one_entry_in_q1_and_one_held(p, tmp_path)


def test_cc_naming_the_same_queue_again_holds_one_entry(tmp_path, fast):
    from usagi.amqp import properties
    from usagi.amqp.frames import content_frames
    p = Pair(tmp_path, fast, queues=("q1",))
    declare(p, M.QueueDeclare(queue="hold", durable=True))
    props = properties.encode({"delivery_mode": 2, "headers": {"CC": ["q1", "hold"], "BCC": ["q1"]}})
    p.pub.data_received(method_frame(1, M.BasicPublish(0, "", "q1").encode())
                        + b"".join(content_frames(1, 60, props, b"x", 131072)))
    p.node.run_later()
    _one_entry_in_q1_and_one_held(p, tmp_path)


def test_a_zero_ttl_delivery_unacked_at_a_crash_expires_at_the_restart(tmp_path):
    # stored with a deadline of now: the restarted broker drops (or dead-letters) it, as a queue
    # with a zero TTL would any message it could not hand over at once; the other queue keeps it
    p = Pair(tmp_path, True, queues=())
    declare(p, M.QueueDeclare(queue="z", durable=True, arguments={"x-message-ttl": 0}),
            M.QueueBind(queue="z", exchange="fan"),
            M.QueueDeclare(queue="keep", durable=True), M.QueueBind(queue="keep", exchange="fan"))
    p.consumer_says(M.BasicConsume(queue="z", consumer_tag="cz"))
    p.publish(b"x", exchange="fan")
    p.node.commit()
    assert stored_entries(p, tmp_path) == {"z": 1, "keep": 1}
    p.node.store.close()
    from usagi.core.broker import Broker
    from usagi.core.recovery import restore
    store = SQLiteStore(str(tmp_path))
    broker = Broker(store=store)
    restore(broker, store.open())
    qs = broker.vhosts["/"].queues
    assert qs["keep"].message_count == 1
    z = qs["z"]
    assert z.message_count == 0 or broker.take(z) is None   # expired when reached
    store.close()
