"""Replies held until the store commits, sans-IO: the engine with a real SQLite store, bytes fed in
by hand (split at every offset), commits driven by hand as the server's commit loop drives them.

A reply that promises durability comes out only after the commit; nothing behind it is handled
before; every reply comes once, in order, however the input is split; a failed commit closes the
connection with 541 and no ok.
"""
from __future__ import annotations

import pytest

from usagi.amqp import methods as M
from usagi.amqp.frames import method_frame

from support.sansio import StoreNode as Node, publish, replies

PIPELINE = b"".join((
    method_frame(1, M.QueueDeclare(queue="q1", durable=True).encode()),
    method_frame(1, M.QueueBind(queue="q1", exchange="amq.direct", routing_key="k").encode()),
    publish("q1", b"first"),
    method_frame(1, M.QueuePurge(queue="q1").encode()),
    method_frame(1, M.TxSelect().encode()),
    publish("q1", b"second"),
    method_frame(1, M.TxCommit().encode()),
    method_frame(1, M.BasicGet(queue="q1", no_ack=True).encode()),
    method_frame(1, M.QueueDeclare(queue="q2", durable=True).encode()),
    method_frame(1, M.BasicConsume(queue="q2", consumer_tag="c2").encode()),
    method_frame(1, M.QueueDelete(queue="q2").encode()),
    method_frame(1, M.BasicGet(queue="q1").encode()),
))
EXPECTED = ["queue.declare-ok", "queue.bind-ok", "queue.purge-ok", "tx.select-ok", "tx.commit-ok",
            "basic.get-ok", "queue.declare-ok", "basic.consume-ok", "queue.delete-ok", "basic.cancel",
            "basic.get-empty"]
# (the purge takes out a message that was never written: nothing to wait for, its ok goes at once)
HELD = {"queue.declare-ok", "queue.bind-ok", "tx.commit-ok", "queue.delete-ok"}


def test_each_held_reply_comes_after_its_commit_and_nothing_overtakes_it(tmp_path):
    node = Node(tmp_path)
    conn, t = node.connect()
    conn.data_received(PIPELINE)
    node.broker.flush_output()
    assert replies(t.data) == [] and t.paused          # the declare waits: nothing else is handled
    names = []
    while True:
        committed = node.commit()
        ran = node.run_later()          # the input goes on after the held reply
        if not (committed or ran):
            break
        got = [name for _ch, name, _f in replies(t.data)]
        t.data = b""
        # after each commit: one held reply, then what follows it up to the next held one
        assert got and got[0] in HELD and not HELD & set(got[1:]), got
        names += got
    assert names == EXPECTED
    assert not t.paused


@pytest.mark.parametrize("step", [1, 7, 13, 64])
def test_any_split_of_the_input_gives_the_same_replies(tmp_path, step):
    node = Node(tmp_path)
    conn, t = node.connect()
    for i in range(0, len(PIPELINE), step):
        conn.data_received(PIPELINE[i:i + step])
        node.settle()
    node.settle()
    got = replies(t.data)
    assert [name for _ch, name, _f in got] == EXPECTED
    assert got[2][2]["message_count"] == 1                 # purge-ok: "first"
    assert node.broker.store_pending() is False


def test_a_failed_commit_closes_the_connection_with_541_and_no_ok(tmp_path):
    node = Node(tmp_path)
    conn, t = node.connect()
    conn.data_received(method_frame(1, M.TxSelect().encode()) + publish("", b"x")
                       + method_frame(1, M.QueueDeclare(queue="qf", durable=True).encode())
                       + method_frame(1, M.QueueDeclare(queue="after").encode()))
    node.broker.flush_output()
    assert [name for _c, name, _f in replies(t.data)] == ["tx.select-ok"]
    assert node.commit(error=OSError(28, "No space left on device"))
    node.run_later()
    got = replies(t.data)
    assert [name for _c, name, _f in got] == ["tx.select-ok", "connection.close"]
    assert got[-1][2]["reply_code"] == 541
    assert got[-1][2]["reply_text"] == "INTERNAL_ERROR - store commit failed: [Errno 28] No space left on device"
    assert "after" not in node.broker.vhosts["/"].queues    # nothing behind the failed reply ran
    assert not t.paused                                      # close-ok can be read
