"""Unit tests for the SQLite store: round trips, coalescing, refs, concurrency, kill -9."""
from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from decimal import Decimal

import pytest

from usagi.amqp.table import Timestamp, Typed
from usagi.storage.sqlite import SQLiteStore, decode_json, encode_json

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROPS = b"\x10\x00\x02"


def counts(path):
    db = sqlite3.connect(os.path.join(str(path), "usagi.db"))
    try:
        return tuple(db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                     for t in ("definitions", "messages", "queue_entries"))
    finally:
        db.close()


def reopen(store, path):
    store.close()
    s = SQLiteStore(path)
    return s, s.open()


def bodies(rec, vhost, queue):
    return [(e[0], e[4]) for e in rec.messages.get((vhost, queue), [])]


# ------------------------------------------------------------------ definitions

def test_json_round_trip_of_table_values():
    value = {
        "b": b"\x00\xffraw", "ts": Timestamp(1700000000), "dec": Decimal("3.14"),
        "typed": Typed("l", 5), "nested": {"list": [1, 2.5, None, True, b"x", {"deep": [b"y"]}]},
        "tricky": {"__bytes__": "not base64!"}, "tup": (1, "a"), "float": float("inf"),
        "unicode": "häßlich \u2603",
    }
    back = decode_json(encode_json(value))
    assert back == value
    assert type(back["ts"]) is Timestamp and back["ts"] == 1700000000
    assert type(back["b"]) is bytes
    assert back["tricky"] == {"__bytes__": "not base64!"}
    with pytest.raises(TypeError):
        encode_json({"x": object()})


def test_definitions_round_trip(tmp_path):
    s = SQLiteStore(tmp_path)
    rec = s.open()
    assert rec.fresh is True
    assert rec.vhosts == [] and rec.messages == {}
    s.put_definition("vhost", ("/",), {"name": "/", "description": "default", "tags": ["a"],
                                       "default_queue_type": "classic"})
    s.put_definition("vhost", ("gone",), {"name": "gone"})
    s.put_definition("user", ("guest",), {"name": "guest", "password_hash": "h", "tags": ["administrator"]})
    args = {"x-message-ttl": 1000, "bin": b"\x01\x02", "when": Timestamp(42),
            "nested": {"a": [1, b"z", {"b": None}]}, "dec": Decimal("1.5")}
    s.put_definition("queue", ("/", "q1"), {"name": "q1", "vhost": "/", "arguments": args})
    s.put_definition("queue", ("/", "q1"), {"name": "q1", "vhost": "/", "arguments": args, "v": 2})
    bkey = ("/", "amq.direct", "queue", "q1", "rk", repr((("k", b"v"),)))
    s.put_definition("binding", bkey, {"source": "amq.direct", "destination": "q1", "arguments": {"k": b"v"}})
    s.put_definition("exchange", ("/", "x"), {"name": "x", "type": "topic"})
    s.put_definition("permission", ("guest", "/"), {"user": "guest", "vhost": "/", "configure": ".*"})
    s.put_definition("policy", ("/", "p"), {"vhost": "/", "name": "p", "definition": {"max-length": 5}})
    assert s.pending()
    s.commit()
    assert not s.pending()
    s.delete_definition("vhost", ("gone",))
    s.delete_definition("exchange", ("/", "x"))
    s.put_definition("exchange", ("/", "y"), {"name": "y", "type": "fanout"})
    s, rec = reopen(s, tmp_path)   # close() commits what is pending
    assert rec.fresh is False
    assert rec.vhosts == [("/", {"description": "default", "tags": ["a"], "default_queue_type": "classic"})]
    assert rec.users == [{"name": "guest", "password_hash": "h", "tags": ["administrator"]}]
    assert rec.queues == [{"name": "q1", "vhost": "/", "arguments": args, "v": 2}]
    q = rec.queues[0]["arguments"]
    assert type(q["when"]) is Timestamp and q["bin"] == b"\x01\x02" and q["dec"] == Decimal("1.5")
    assert rec.bindings == [{"source": "amq.direct", "destination": "q1", "arguments": {"k": b"v"}}]
    assert rec.exchanges == [{"name": "y", "type": "fanout"}]
    assert rec.permissions == [{"user": "guest", "vhost": "/", "configure": ".*"}]
    assert rec.policies == [{"vhost": "/", "name": "p", "definition": {"max-length": 5}}]
    assert counts(tmp_path)[0] == 7
    s.close()


# ------------------------------------------------------------------ messages

def test_messages_survive_reopen_in_order(tmp_path):
    s = SQLiteStore(tmp_path)
    s.open()
    big = os.urandom(1 << 20)
    for i in range(1, 11):
        s.add_message(i, "amq.direct", f"rk{i}", PROPS, b"body%d" % i if i != 8 else big)
        s.enqueue("/", "q", 100 - i * 3 if i % 2 else i, i)   # seqs out of insertion order
    s.add_message(11, "x", "", PROPS, b"")
    s.enqueue("v2", "q", 1, 11)
    s.commit()
    s, rec = reopen(s, tmp_path)
    entries = rec.messages[("/", "q")]
    seqs = [e[0] for e in entries]
    assert seqs == sorted(seqs) and len(seqs) == 10
    by_seq = {e[0]: e for e in entries}
    assert by_seq[97] == (97, "amq.direct", "rk1", PROPS, b"body1", False, 1, None)
    assert by_seq[8][4] == big
    assert rec.messages[("v2", "q")] == [(1, "x", "", PROPS, b"", False, 11, None)]
    assert s.max_msg_id == 11
    s.close()


def test_coalescing_writes_nothing(tmp_path):
    s = SQLiteStore(tmp_path)
    s.open()
    for i in range(1, 1001):
        s.add_message(i, "", "q", PROPS, b"m")
        s.enqueue("/", "q", i, i)
        s.dequeue("/", "q", i, i)
    s.commit()
    assert counts(tmp_path) == (0, 0, 0)
    # a message on two queues, one entry acked before commit: only the other is written
    s.add_message(2000, "", "", PROPS, b"two")
    s.enqueue("/", "a", 1, 2000)
    s.enqueue("/", "b", 1, 2000)
    s.dequeue("/", "a", 1, 2000)
    s.commit()
    assert counts(tmp_path) == (0, 1, 1)
    s, rec = reopen(s, tmp_path)
    assert list(rec.messages) == [("/", "b")]
    assert rec.messages[("/", "b")][0][4] == b"two"
    s.close()


def test_refs_and_deletion(tmp_path):
    s = SQLiteStore(tmp_path)
    s.open()
    s.add_message(1, "amq.fanout", "", PROPS, b"shared")
    for q in ("a", "b", "c"):
        s.enqueue("/", q, 5, 1)
    s.commit()
    db = sqlite3.connect(os.path.join(str(tmp_path), "usagi.db"))
    assert db.execute("SELECT refs FROM messages WHERE id=1").fetchone() == (3,)
    s.dequeue("/", "a", 5, 1)
    s.dequeue("/", "a", 5, 1)            # twice: no effect the second time
    s.commit()
    assert counts(tmp_path) == (0, 1, 2)
    assert db.execute("SELECT refs FROM messages WHERE id=1").fetchone() == (2,)
    s.dequeue("/", "b", 0, 1)            # seq 0: the entry of message 1 on b
    s.commit()
    assert counts(tmp_path) == (0, 1, 1)
    s, rec = reopen(s, tmp_path)
    assert rec.messages == {("/", "c"): [(5, "amq.fanout", "", PROPS, b"shared", False, 1, None)]}
    s.dequeue("/", "c", 5, 1)
    s.commit()
    assert counts(tmp_path) == (0, 0, 0)
    db.close()
    s.close()


def test_dequeue_seq_zero_after_reopen_and_unknown(tmp_path):
    s = SQLiteStore(tmp_path)
    s.open()
    for i in range(1, 6):
        s.add_message(i, "", "q", PROPS, b"%d" % i)
        s.enqueue("/", "q", i, i)
    s.commit()
    s, rec = reopen(s, tmp_path)
    for e in rec.messages[("/", "q")][:3]:
        s.dequeue("/", "q", 0, e[6])         # purge path after restart, by stored id
    s.dequeue("/", "q", 0, 999)              # unknown: ignored
    s.commit()
    s, rec = reopen(s, tmp_path)
    assert bodies(rec, "/", "q") == [(4, b"4"), (5, b"5")]
    s.close()


def test_drop_queue_messages(tmp_path):
    s = SQLiteStore(tmp_path)
    s.open()
    s.add_message(1, "", "", PROPS, b"both")
    s.enqueue("/", "a", 1, 1)
    s.enqueue("/", "b", 1, 1)
    s.add_message(2, "", "", PROPS, b"only-a")
    s.enqueue("/", "a", 2, 2)
    s.commit()
    s.add_message(3, "", "", PROPS, b"pending-a")
    s.enqueue("/", "a", 3, 3)
    s.drop_queue_messages("/", "a")
    # the queue is declared again under the same name and gets a message with seq 1
    s.add_message(4, "", "", PROPS, b"new-a")
    s.enqueue("/", "a", 1, 4)
    s.commit()
    assert counts(tmp_path) == (0, 2, 2)
    s, rec = reopen(s, tmp_path)
    assert bodies(rec, "/", "a") == [(1, b"new-a")]
    assert bodies(rec, "/", "b") == [(1, b"both")]
    s.close()


def test_a_dequeue_naming_another_message_leaves_the_entry(tmp_path):
    # the seq of a queue deleted and declared again under its name: an ack of a delivery the old
    # queue made names its own message, and the new queue's entry in that place stays
    s = SQLiteStore(tmp_path)
    s.open()
    s.add_with_entry(7, "", "q", PROPS, b"new", "/", "q", 1)
    s.commit()
    s.dequeue("/", "q", 1, 3)
    s.commit()
    s.add_with_entry(8, "", "q", PROPS, b"pending", "/", "q", 2)
    s.dequeue("/", "q", 2, 5)
    s.commit()
    s, rec = reopen(s, tmp_path)
    assert bodies(rec, "/", "q") == [(1, b"new"), (2, b"pending")]
    s.dequeue("/", "q", 1, 7)                # its own message: taken out
    s.commit()
    s, rec = reopen(s, tmp_path)
    assert bodies(rec, "/", "q") == [(2, b"pending")]
    s.close()


def test_mark_delivered(tmp_path):
    s = SQLiteStore(tmp_path)
    s.open()
    for i in range(1, 4):
        s.add_message(i, "", "q", PROPS, b"%d" % i)
        s.enqueue("/", "q", i, i)
    s.mark_delivered("/", "q", 1)        # still pending
    s.commit()
    s.mark_delivered("/", "q", 2)        # already written
    s.commit()
    s, rec = reopen(s, tmp_path)
    assert [(e[0], e[5]) for e in rec.messages[("/", "q")]] == [(1, True), (2, True), (3, False)]
    s.close()


def test_a_mark_taken_back_by_its_dequeue_is_not_written(tmp_path):
    """A written entry delivered then acked before the next commit: the batch deletes it and does
    not first mark it (the common case of a persistent message under confirms)."""
    s = SQLiteStore(tmp_path)
    s.open()
    for i in range(1, 4):
        s.add_message(i, "", "q", PROPS, b"%d" % i)
        s.enqueue("/", "q", i, i)
    s.commit()
    for i in (1, 2):
        s.mark_delivered("/", "q", i)
    s.dequeue("/", "q", 1, 1)
    batch = s.take_batch()[-1]
    marks, del_entries = batch[2], batch[3]
    assert marks == [("/", "q", 2)] and del_entries == [("/", "q", 1)]
    s.write_batch([batch])
    s, rec = reopen(s, tmp_path)
    assert [(e[0], e[5]) for e in rec.messages[("/", "q")]] == [(2, True), (3, False)]
    s.close()


def test_failed_commit_is_retried(tmp_path):
    s = SQLiteStore(tmp_path)
    s.open()
    s.add_message(1, "", "", PROPS, b"a")
    s.enqueue("/", "q", 1, 1)
    real = s.conn
    s.conn = None
    with pytest.raises(RuntimeError):
        s.commit()
    s.conn = real

    class Boom:
        def __getattr__(self, name):
            return getattr(real, name)

        def executemany(self, sql, rows):
            raise sqlite3.OperationalError("disk full")

        def execute(self, sql, *args):
            if sql.split(None, 1)[0] in ("INSERT", "UPDATE", "DELETE"):   # the writes, not BEGIN
                raise sqlite3.OperationalError("disk full")
            return real.execute(sql, *args)
    s.conn = Boom()
    with pytest.raises(sqlite3.OperationalError):
        s.commit()
    s.conn = real
    assert s.pending()
    s.add_message(2, "", "", PROPS, b"b")
    s.enqueue("/", "q", 2, 2)
    s.commit()
    s, rec = reopen(s, tmp_path)
    assert bodies(rec, "/", "q") == [(1, b"a"), (2, b"b")]
    s.close()


# ------------------------------------------------------------------ concurrency

def test_concurrent_commits_while_recording(tmp_path):
    s = SQLiteStore(tmp_path)
    s.open()
    stop = threading.Event()
    errors = []

    def committer():
        try:
            while not stop.is_set():
                s.commit()
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    t = threading.Thread(target=committer)
    t.start()
    rnd = random.Random(7)
    model = {}        # (vhost, queue) -> {seq: (body, delivered)}
    seqs = {}
    live = []         # (queue key, seq, msg_id)
    mid = 0
    ops = 0
    try:
        while ops < 20000:
            r = rnd.random()
            if r < 0.55 or not live:
                mid += 1
                body = b"m%d" % mid
                s.add_message(mid, "", "", PROPS, body)
                for q in rnd.sample(["a", "b", "c"], rnd.randint(1, 2)):
                    k = ("/", q)
                    seq = seqs[k] = seqs.get(k, 0) + 1
                    s.enqueue("/", q, seq, mid)
                    model.setdefault(k, {})[seq] = (body, False)
                    live.append((k, seq, mid))
            elif r < 0.9:
                k, seq, m = live.pop(rnd.randrange(len(live)))
                s.dequeue(k[0], k[1], seq if rnd.random() < 0.8 else 0, m)
                del model[k][seq]
            elif r < 0.995:
                k, seq, m = live[rnd.randrange(len(live))]
                s.mark_delivered(k[0], k[1], seq)
                model[k][seq] = (model[k][seq][0], True)
            else:
                q = rnd.choice(["a", "b", "c"])
                k = ("/", q)
                s.drop_queue_messages("/", q)
                model[k] = {}
                live = [x for x in live if x[0] != k]
            ops += 1
            if ops % 500 == 0:
                time.sleep(0.001)    # let the committer in
    finally:
        stop.set()
        t.join()
    assert not errors
    assert s.commits > 5
    s, rec = reopen(s, tmp_path)
    got = {k: [(e[0], e[4], e[5]) for e in v] for k, v in rec.messages.items()}
    want = {k: [(seq, b, d) for seq, (b, d) in sorted(v.items())] for k, v in model.items() if v}
    assert got == want
    live_ids = {m for _, _, m in live}
    assert counts(tmp_path)[1:] == (len(live_ids), len(live))
    db = sqlite3.connect(os.path.join(str(tmp_path), "usagi.db"))
    refs = dict(db.execute("SELECT id, refs FROM messages"))
    want_refs = {}
    for _, _, m in live:
        want_refs[m] = want_refs.get(m, 0) + 1
    assert refs == want_refs
    db.close()
    s.close()


# ------------------------------------------------------------------ kill -9

CHILD = r"""
import sys
sys.path.insert(0, {root!r})
from usagi.storage.sqlite import SQLiteStore
s = SQLiteStore({path!r})
s.open()
mid = 0
body = b"x" * 2000
while True:
    for _ in range(200):
        mid += 1
        s.add_message(mid, "", "q", b"", body + str(mid).encode())
        s.enqueue("/", "q", mid, mid)
        if mid % 3 == 0:
            s.dequeue("/", "q", mid - 1, mid - 1)
    s.commit()
    print("committed", mid, flush=True)
"""


@pytest.mark.parametrize("run", range(3))
def test_kill_9_keeps_every_committed_message(tmp_path, run):
    child = subprocess.Popen([sys.executable, "-c", CHILD.format(root=ROOT, path=str(tmp_path))],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last = 0
    deadline = time.monotonic() + random.uniform(0.3, 1.5)
    try:
        while time.monotonic() < deadline:
            line = child.stdout.readline()
            assert line.startswith("committed "), child.stderr.read()
            last = int(line.split()[1])
        for _ in range(random.randint(0, 3)):
            line = child.stdout.readline()
            last = int(line.split()[1])
        time.sleep(random.uniform(0, 0.01))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    # lines written before the kill that we had not read yet also count
    for line in child.stdout.read().splitlines():
        if line.startswith("committed "):
            last = int(line.split()[1])
    child.stdout.close()
    child.stderr.close()
    assert last > 0
    s = SQLiteStore(tmp_path)
    rec = s.open()
    entries = rec.messages[("/", "q")]
    got = {e[0]: e[4] for e in entries}
    want = [m for m in range(1, last + 1) if m % 3 != 2]
    missing = [m for m in want if m not in got]
    assert not missing, f"{len(missing)} committed messages lost, first {missing[:5]}"
    assert all(got[m] == b"x" * 2000 + str(m).encode() for m in want)
    assert all(m % 3 != 2 for m in got if m + 1 <= last)   # nothing acked (and committed) is back
    assert s.max_msg_id >= last
    s.close()


# ------------------------------------------------------------------ expiry, formats, names in any bytes

def test_entries_keep_their_deadline(tmp_path):
    s = SQLiteStore(tmp_path)
    s.open()
    s.add_message(1, "x", "", PROPS, b"a")
    s.enqueue("/", "q", 1, 1, 1_700_000_000_123)
    s.add_message(2, "x", "", PROPS, b"b")
    s.enqueue("/", "q", 2, 2)
    s.mark_delivered("/", "q", 1)           # marking keeps the deadline
    s, rec = reopen(s, tmp_path)
    assert [(e[0], e[5], e[7]) for e in rec.messages[("/", "q")]] == [(1, True, 1_700_000_000_123),
                                                                       (2, False, None)]
    s.close()


def make_format_1(path):
    """A store file as format 1 wrote it: queue_entries without expires, user_version 1."""
    db = sqlite3.connect(os.path.join(str(path), "usagi.db"))
    db.executescript("""
        CREATE TABLE definitions (kind TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
                                  PRIMARY KEY (kind, key));
        CREATE TABLE messages (id INTEGER PRIMARY KEY, exchange TEXT NOT NULL, routing_key TEXT NOT NULL,
                               props BLOB NOT NULL, body BLOB NOT NULL, refs INTEGER NOT NULL DEFAULT 0);
        CREATE TABLE queue_entries (vhost TEXT NOT NULL, queue TEXT NOT NULL, seq INTEGER NOT NULL,
                                    msg_id INTEGER NOT NULL, delivered INTEGER NOT NULL DEFAULT 0,
                                    PRIMARY KEY (vhost, queue, seq)) WITHOUT ROWID;
        INSERT INTO definitions VALUES ('vhost', '["/"]', '{"name":"/"}');
        INSERT INTO messages VALUES (7, 'x', 'rk', X'100002', X'6f6c64', 1);
        INSERT INTO queue_entries VALUES ('/', 'q', 3, 7, 1);
        PRAGMA user_version=1;
    """)
    db.close()


def test_a_format_1_file_is_migrated_at_open(tmp_path):
    make_format_1(tmp_path)
    s = SQLiteStore(tmp_path)
    rec = s.open()
    assert rec.vhosts == [("/", {})]
    # its entries did not record a deadline: the engine gives them one (UNKNOWN_EXPIRY)
    assert list(rec.messages[("/", "q")]) == [(3, "x", "rk", PROPS, b"old", True, 7, -1)]
    s.add_message(8, "x", "", PROPS, b"new")
    s.enqueue("/", "q", 4, 8, 123)
    s, rec = reopen(s, tmp_path)
    assert [(e[0], e[7]) for e in rec.messages[("/", "q")]] == [(3, -1), (4, 123)]
    s.close()
    db = sqlite3.connect(os.path.join(str(tmp_path), "usagi.db"))
    assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    db.close()


def test_a_newer_format_is_refused(tmp_path):
    make_format_1(tmp_path)
    db = sqlite3.connect(os.path.join(str(tmp_path), "usagi.db"))
    db.execute("PRAGMA user_version=3")
    db.close()
    from usagi.storage.sqlite import StoreError
    with pytest.raises(StoreError, match="format version 3"):
        SQLiteStore(tmp_path).open()


def test_names_and_keys_in_any_bytes_are_stored(tmp_path):
    """A routing key in bytes that are not UTF-8 (RabbitMQ takes any there) arrives as surrogate
    escapes; it must not fail the commit - and with it every later one - but come back as it was."""
    s = SQLiteStore(tmp_path)
    s.open()
    rk = b"k\xff\xfe".decode("utf-8", "surrogateescape")
    s.put_definition("binding", ("/", "x", "queue", "q\udcff", rk, "{}"), {"routing_key": rk})
    s.add_message(1, "x\udc80", rk, PROPS, b"body")
    s.enqueue("/", "q\udcff", 1, 1)
    s.add_message(2, "x", "plain", PROPS, b"b2")
    s.enqueue("/", "q", 1, 2)
    s.commit()
    s, rec = reopen(s, tmp_path)
    assert rec.bindings == [{"routing_key": rk}]
    assert list(rec.messages[("/", "q\udcff")]) == [(1, "x\udc80", rk, PROPS, b"body", False, 1, None)]
    s.mark_delivered("/", "q\udcff", 1)
    s.dequeue("/", "q\udcff", 1, 1)
    s.delete_definition("binding", ("/", "x", "queue", "q\udcff", rk, "{}"))
    s.commit()
    assert counts(tmp_path) == (0, 1, 1)
    s.close()


def test_a_commit_of_many_rows_writes_each_as_one_statement_per_row_would(tmp_path):
    """A commit writes its rows many to a statement (sqlite.CHUNK): sizes on and across the chunk
    bounds, several queues, a message in two queues, marks and removals, all as recorded."""
    s = SQLiteStore(tmp_path)
    s.open()
    n = 1000
    for i in range(1, n + 1):
        s.add_with_entry(i, "x", "rk%d" % i, PROPS, b"m%d" % i, "/", "qa" if i % 3 else "qb", i)
        if i % 7 == 0:
            s.enqueue("/", "qc", i, i)                  # the same message in a second queue
    s.commit()
    marked = set(range(1, n + 1, 4))
    for i in marked:
        s.mark_delivered("/", "qa" if i % 3 else "qb", i)
    gone = set(range(2, n + 1, 3)) | set(range(250, 520))   # around the 256 bound
    for i in gone:
        s.dequeue("/", "qa" if i % 3 else "qb", i, i)
    s.commit()
    s, rec = reopen(s, tmp_path)
    for q, pick in (("qa", lambda i: i % 3), ("qb", lambda i: not i % 3)):
        want = [i for i in range(1, n + 1) if pick(i) and i not in gone]
        got = rec.messages.get(("/", q), [])
        assert [e[0] for e in got] == want
        assert [e[4] for e in got] == [b"m%d" % i for i in want]
        assert [e[5] for e in got] == [i in marked for i in want]       # redelivered
    assert [e[0] for e in rec.messages.get(("/", "qc"), [])] == list(range(7, n + 1, 7))
    in_messages = {i for i in range(1, n + 1) if i not in gone or i % 7 == 0}
    assert counts(tmp_path)[1] == len(in_messages)
    s.close()
