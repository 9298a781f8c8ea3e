"""Persistent entries staged until a commit begins (DeliveryMixin.save_staged), sans-IO on a real
SQLite store, commits driven by hand: an entry acknowledged before the next commit never reaches
the disk and its confirm goes at once; one still held when a commit begins is written, with its
delivered mark, and confirmed after that commit; a queue deleted meanwhile leaves nothing; a
second entry and paging find the message in the store."""
from __future__ import annotations

import os
import sqlite3

from usagi.amqp import methods as M
from usagi.amqp.frames import content_frames, method_frame
from usagi.core import fastpath
from usagi.storage.sqlite import DB_NAME

from support.sansio import PERSISTENT, StoreNode, publish, replies

SETUP = b"".join((
    method_frame(1, M.QueueDeclare(queue="q", durable=True).encode()),
    method_frame(1, M.ConfirmSelect().encode()),
))
CONSUME = method_frame(1, M.BasicConsume(queue="q", consumer_tag="c").encode())


def on_disk(node) -> tuple:
    """(queue entries as (queue, seq, msg_id, delivered), message ids) written so far."""
    db = sqlite3.connect(os.path.join(node.store.data_dir, DB_NAME))
    try:
        entries = db.execute("SELECT queue, seq, msg_id, delivered FROM queue_entries ORDER BY seq").fetchall()
        ids = [r[0] for r in db.execute("SELECT id FROM messages ORDER BY id")]
    finally:
        db.close()
    return entries, ids


def start(tmp_path, consume=True):
    node = StoreNode(tmp_path)
    conn, t = node.connect()
    conn.data_received(SETUP + (CONSUME if consume else b""))
    node.settle()
    t.data = bytearray()
    return node, conn, t


def sent(t) -> list:
    got = [(name, f) for _ch, name, f in replies(t.data)]
    t.data = bytearray()
    return got


def confirmed(got) -> int:
    """The highest publish confirmed in these replies (0: none)."""
    return max([f["delivery_tag"] for name, f in got if name == "basic.ack"], default=0)


def test_an_entry_acked_before_the_commit_is_never_written_and_confirmed_at_once(tmp_path):
    node, conn, t = start(tmp_path)
    conn.data_received(publish("q", b"a"))
    node.broker.flush_output()
    got = sent(t)
    assert [n for n, _ in got] == ["basic.deliver"]     # no confirm yet: nothing is durable
    assert len(node.broker.staged) == 1
    assert node.broker.store_pending() and node.broker.commit_needed()
    conn.data_received(method_frame(1, M.BasicAck(delivery_tag=1).encode()))
    node.broker.flush_output()
    assert confirmed(sent(t)) == 1                    # consumed: confirmed without a commit
    assert node.broker.staged == {}
    node.settle()
    assert on_disk(node) == ([], [])


def test_an_entry_held_when_a_commit_begins_is_written_delivered_and_confirmed_after_it(tmp_path):
    node, conn, t = start(tmp_path)
    conn.data_received(publish("q", b"a") + publish("q", b"b"))
    node.broker.flush_output()
    assert confirmed(sent(t)) == 0
    assert on_disk(node) == ([], [])
    assert node.commit()
    assert confirmed(sent(t)) == 2
    entries, ids = on_disk(node)
    assert [(e[0], e[1], e[3]) for e in entries] == [("q", 1, 1), ("q", 2, 1)]    # delivered
    assert len(ids) == 2 and node.broker.staged == {}
    # acked after it was written: the next commit takes it out
    conn.data_received(method_frame(1, M.BasicAck(delivery_tag=1).encode()))
    node.settle()
    assert [e[1] for e in on_disk(node)[0]] == [2]
    # after a restart the one still unacknowledged comes back redelivered
    node.store.close()
    node = StoreNode(tmp_path)
    conn, t = node.connect()
    conn.data_received(method_frame(1, M.BasicGet(queue="q", no_ack=True).encode()))
    node.settle()
    (name, f), = [(n, f) for n, f in sent(t) if n.startswith("basic.get")]
    assert name == "basic.get-ok" and f["redelivered"] is True and f["message_count"] == 0


def test_a_queued_entry_is_written_undelivered(tmp_path):
    node, conn, t = start(tmp_path, consume=False)
    conn.data_received(publish("q", b"a"))
    node.settle()
    assert confirmed(sent(t)) == 1
    entries, ids = on_disk(node)
    assert [(e[1], e[3]) for e in entries] == [(1, 0)] and len(ids) == 1


def test_a_transaction_holding_only_staged_entries_waits_for_its_commit(tmp_path):
    node = StoreNode(tmp_path)
    conn, t = node.connect()
    conn.data_received(method_frame(1, M.QueueDeclare(queue="q", durable=True).encode())
                       + method_frame(1, M.TxSelect().encode()))
    node.settle()
    t.data = bytearray()
    conn.data_received(publish("q", b"a") + method_frame(1, M.TxCommit().encode()))
    node.broker.flush_output()
    assert sent(t) == [] and node.broker.staged       # commit-ok waits for the store
    node.settle()
    assert [n for n, _ in sent(t)] == ["tx.commit-ok"]
    assert len(on_disk(node)[0]) == 1


def test_a_queue_deleted_with_staged_entries_leaves_none_behind(tmp_path):
    node, conn, t = start(tmp_path)
    conn.data_received(publish("q", b"a") + publish("q", b"b"))
    node.broker.flush_output()
    assert len(node.broker.staged) == 2
    conn.data_received(method_frame(1, M.QueueDelete(queue="q").encode())
                       + method_frame(1, M.QueueDeclare(queue="q", durable=True).encode()))
    node.settle()
    assert on_disk(node) == ([], [])
    node.store.close()
    node = StoreNode(tmp_path)
    assert node.broker.vhosts["/"].queues["q"].message_count == 0


def test_a_second_entry_and_paging_find_the_message_in_the_store(tmp_path):
    node, conn, t = start(tmp_path)
    conn.data_received(method_frame(1, M.QueueDeclare(queue="q2", durable=True).encode()))
    node.settle()
    conn.data_received(publish("q", b"a") + publish("q", b"b"))
    node.broker.flush_output()
    b = node.broker
    q, q2 = b.vhosts["/"].queues["q"], b.vhosts["/"].queues["q2"]
    first = next(iter(b.staged.values()))[3]
    b.persist(q2, first)                                # a second entry of a staged message
    q2.push(first)
    assert first.id not in b.staged and first.refs == 2
    assert b.store.read_message(first.id) is not None
    second = next(iter(b.staged.values()))[3]
    b._stubs(q, [(2, second)])                          # paging out reads it back from the store
    assert b.staged == {} and b.store.read_message(second.id) is not None
    node.settle()
    entries, ids = on_disk(node)
    assert sorted((e[0], e[2]) for e in entries) == [("q", first.id), ("q", second.id), ("q2", first.id)]


def test_a_message_routed_to_two_queues_is_not_staged(tmp_path):
    node, conn, t = start(tmp_path, consume=False)
    conn.data_received(method_frame(1, M.QueueDeclare(queue="q2", durable=True).encode())
                       + method_frame(1, M.QueueBind(queue="q", exchange="amq.fanout").encode())
                       + method_frame(1, M.QueueBind(queue="q2", exchange="amq.fanout").encode()))
    node.settle()
    conn.data_received(method_frame(1, M.BasicPublish(0, "amq.fanout", "").encode())
                       + b"".join(content_frames(1, 60, PERSISTENT, b"x", 131072)))
    node.broker.flush_output()
    assert node.broker.staged == {} and node.store.pending()
    node.settle()
    assert sorted(e[0] for e in on_disk(node)[0]) == ["q", "q2"]


def test_the_staged_set_is_bounded_and_hands_over_its_oldest(tmp_path):
    node, conn, t = start(tmp_path, consume=False)
    conn.data_received(method_frame(1, M.QueueDeclare(queue="nc", durable=True).encode()))
    node.settle()
    # a publisher without confirms: nothing asks for a commit between its publishes
    n = fastpath.STAGED_MAX + 10
    data = b"".join(method_frame(1, M.BasicPublish(0, "", "nc").encode())
                    + b"".join(content_frames(1, 60, PERSISTENT, b"%d" % i, 131072)) for i in range(n))
    for i in range(0, len(data), 65536):
        conn.data_received(data[i:i + 65536])
        node.run_later()
    b = node.broker
    assert len(b.staged) == fastpath.STAGED_MAX
    assert b.vhosts["/"].queues["nc"].message_count == n
    staged_ids = sorted(b.staged)
    assert staged_ids == list(range(staged_ids[0], staged_ids[0] + fastpath.STAGED_MAX))    # the newest
    assert b.store.pending()                   # the 10 oldest are in the store already
    node.settle()
    assert len(on_disk(node)[0]) == n
