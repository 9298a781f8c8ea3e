"""The store's side of replication: batches taken and written with a position, applied by a
follower to an identical store, snapshots, delayed messages in the store, the old delayed.db."""
from __future__ import annotations

import os
import sqlite3

from usagi.cluster import wire as W
from usagi.storage.sqlite import SQLiteStore


def dump(path):
    db = sqlite3.connect(path)
    try:
        out = {}
        for t in ("definitions", "messages", "queue_entries", "delayed"):
            out[t] = sorted(db.execute(f"SELECT * FROM {t}").fetchall())
        return out
    finally:
        db.close()


def fill(store, base=0):
    store.put_definition("vhost", ("/",), {"name": "/"})
    store.put_definition("queue", ("/", "q"), {"name": "q", "vhost": "/", "durable": True})
    for i in range(1, 6):
        mid = base + i
        store.add_message(mid, "", "q", b"\x80\x00\x02", b"body%d" % mid)
        store.enqueue("/", "q", mid, mid, None)
    store.add_delayed((base + 1, 5000, "/", "dx", "dx", "k", b"\x00\x00", b"later"))


def test_follower_applying_the_leaders_batches_ends_identical(tmp_path):
    leader = SQLiteStore(str(tmp_path / "l"))
    leader.open()
    follower = SQLiteStore(str(tmp_path / "f"))
    assert follower.open_replica() == (0, 0)
    sent = []
    for lsn, base in ((1, 0), (2, 100), (3, 200)):
        fill(leader, base)
        if lsn == 3:
            leader.dequeue("/", "q", 102, 102)          # removals travel too
            leader.remove_delayed(1)
        batches = leader.take_batch()
        body = W.encode(batches)
        leader.write_batch(batches, (7, lsn))
        sent.append((7, lsn, W.decode(body)))
    follower.apply_replicated(sent[:2])
    follower.apply_replicated(sent[2:])
    assert leader.position == follower.position == (7, 3)
    assert follower.history == leader.history == [(7, 1)]
    leader.close()
    follower.close()
    assert dump(leader.path) == dump(follower.path)


def test_position_and_history_survive_reopen(tmp_path):
    s = SQLiteStore(str(tmp_path))
    s.open()
    fill(s)
    s.write_batch(s.take_batch(), (3, 10))
    fill(s, 50)
    s.write_batch(s.take_batch(), (9, 11))
    s.close()
    s2 = SQLiteStore(str(tmp_path))
    s2.open()
    assert s2.position == (9, 11) and s2.history == [(3, 10), (9, 11)]
    s2.close()


def test_snapshot_copies_a_consistent_store_with_its_position(tmp_path):
    s = SQLiteStore(str(tmp_path / "l"))
    s.open()
    fill(s)
    s.write_batch(s.take_batch(), (2, 40))
    snap = str(tmp_path / "snap.db")
    assert s.snapshot_to(snap) == (2, 40)
    f = SQLiteStore(str(tmp_path / "f"))
    f.open_replica()
    f.put_definition("vhost", ("stale",), {"name": "stale"})    # something of another history
    f.commit()
    f.install_snapshot(snap)
    assert f.position == (2, 40)
    s.close()
    f.close()
    assert dump(s.path) == dump(f.path)


def test_a_failed_write_is_kept_and_written_first(tmp_path):
    s = SQLiteStore(str(tmp_path))
    s.open()
    fill(s)
    batches = s.take_batch()
    conn, s.conn = s.conn, None
    try:
        s.write_batch(batches, (1, 1))
    except RuntimeError:
        pass
    s.conn = conn
    s.put_definition("vhost", ("/two",), {"name": "/two"})
    again = s.take_batch()
    assert again[:len(batches)] == batches and len(again) == len(batches) + 1
    s.write_batch(again, (1, 2))
    s.close()
    assert len(dump(s.path)["messages"]) == 5


def test_delayed_window_sees_pending_and_written_rows(tmp_path):
    s = SQLiteStore(str(tmp_path))
    s.open()
    s.add_delayed((1, 100, "/", "x", "x", "a", b"", b"1"))
    s.add_delayed((2, 200, "/", "x", "x", "b", b"", b"2"))
    s.commit()
    s.add_delayed((3, 150, "/", "x", "x", "c", b"", b"3"))     # pending, not written
    s.remove_delayed(1)                                       # written, removal pending
    assert [r[0] for r in s.delayed_window(0, 1000, None)] == [3, 2]
    assert [r[0] for r in s.delayed_window(0, 1000, 1)] == [3]
    s.drop_delayed_vhost("/")
    assert s.delayed_window(0, 1000, None) == []
    s.commit()
    assert s.delayed_stats() == (0, 0)
    s.close()


def test_an_old_delayed_db_is_moved_into_the_store(tmp_path):
    from usagi.server.startup import import_delayed_db
    old = sqlite3.connect(str(tmp_path / "delayed.db"))
    old.execute("CREATE TABLE delayed (id INTEGER PRIMARY KEY, due INTEGER NOT NULL, vhost TEXT NOT NULL, "
                "xname TEXT NOT NULL, exchange TEXT NOT NULL, routing_key TEXT NOT NULL, props BLOB NOT NULL, "
                "body BLOB NOT NULL)")
    old.execute("INSERT INTO delayed VALUES (4, 123, '/', 'dx', 'dx', 'k', x'0000', x'6869')")
    old.commit()
    old.close()
    s = SQLiteStore(str(tmp_path))
    s.open()
    import_delayed_db(str(tmp_path), s)
    assert not os.path.exists(tmp_path / "delayed.db")
    assert s.delayed_window(0, 1000, None) == [(4, 123, "/", "dx", "dx", "k", b"\x00\x00", b"hi")]
    s.close()
