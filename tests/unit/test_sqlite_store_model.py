"""The SQLite store against a model, under random work: rows written many to a statement (across the
chunk bounds), messages in several queues, names and routing keys in bytes that are not UTF-8, a
message consumed before it was written (it leaves the pending set at once, for `_limbo`) and put in a
queue again before and after the next commit, a failed write retried. After each commit, the store
reopened (what a crash would leave) holds exactly what the model says."""
from __future__ import annotations

import random
import sqlite3

import pytest

from usagi.storage.sqlite import SQLiteStore

PROPS = b"\x10\x00\x02"
ODD = b"\xff\xfe".decode("utf-8", "surrogateescape")
QUEUES = ["qa", "qb" + ODD, "q\u00e9", "qd"]
KEYS = ["k", "k" + ODD, "\u00e9" + ODD, ""]


def recovered(path):
    s = SQLiteStore(path)
    rec = s.open()
    out = {}
    try:
        for (v, q), entries in rec.messages.items():      # read lazily: before the close
            for seq, x, rk, props, body, _red, mid, _exp in entries:
                out[(q, seq)] = (mid, x, rk, body)
    finally:
        s.close()
    return out


@pytest.mark.parametrize("seed", range(6))
def test_the_store_holds_what_the_model_says_after_every_commit(tmp_path, seed):
    rng = random.Random(seed)
    s = SQLiteStore(tmp_path)
    s.open()
    model: dict = {}             # (queue, seq) -> msg id
    rows: dict = {}              # msg id -> (exchange, routing key, body)
    zero_since: dict = {}        # msg id -> batches taken since its last entry went (re-enqueue
    #                              allowed: 0, or 1 for a message never written: `_limbo_prev`)
    written: set = set()         # ids a commit wrote
    seqs = {q: 0 for q in QUEUES}
    next_id = 1
    committed = {}
    for step in range(1200):
        op = rng.random()
        if op < 0.45:                                   # a publish: a new message, 1-3 queues
            mid = next_id
            next_id += 1
            rows[mid] = ("x" + rng.choice(["", ODD]), rng.choice(KEYS), b"m%d" % mid)
            qs = rng.sample(QUEUES, rng.randint(1, 3))
            for i, q in enumerate(qs):
                seqs[q] += 1
                if i == 0:
                    s.add_with_entry(mid, *rows[mid][:2], PROPS, rows[mid][2], "/", q, seqs[q])
                else:
                    s.enqueue("/", q, seqs[q], mid)
                model[(q, seqs[q])] = mid
        elif op < 0.75 and model:                       # an ack (often of the newest: before its write)
            key = max(model) if rng.random() < 0.3 else rng.choice(list(model))
            mid = model.pop(key)
            s.dequeue("/", key[0], key[1], mid)
            if mid not in model.values():
                zero_since[mid] = 0
        elif op < 0.85 and zero_since:                  # a consumed message put in a queue again
            mid = rng.choice(list(zero_since))
            if zero_since[mid] == 0 or mid not in written:
                q = rng.choice(QUEUES)
                seqs[q] += 1
                s.enqueue("/", q, seqs[q], mid)
                model[(q, seqs[q])] = mid
                del zero_since[mid]
        elif op < 0.9 and model:
            q, seq = rng.choice(list(model))
            s.mark_delivered("/", q, seq)
        else:                                           # a commit, one in five failing first
            if rng.random() < 0.2:
                batches = s.take_batch()
                if batches is not None:
                    real = s.conn
                    s.conn = None
                    with pytest.raises(RuntimeError):
                        s.write_batch(batches)
                    s.conn = real
                    for mid in list(zero_since):    # a take is a generation of `_limbo`
                        zero_since[mid] += 1
            s.commit()
            written.update(model.values())
            for mid in list(zero_since):
                zero_since[mid] += 1
                if zero_since[mid] > 1 or mid in written:
                    del zero_since[mid]
            committed = {k: (m, *rows[m][:2], rows[m][2]) for k, m in model.items()}
            assert recovered(tmp_path) == committed, f"step {step}"
    s.commit()
    committed = {k: (m, *rows[m][:2], rows[m][2]) for k, m in model.items()}
    assert recovered(tmp_path) == committed
    s.close()
    db = sqlite3.connect(str(tmp_path / "usagi.db"))
    try:
        live = {m for m in model.values()}
        stored = {r[0] for r in db.execute("SELECT id FROM messages")}
        assert stored == live, f"orphans {sorted(stored - live)[:10]}, missing {sorted(live - stored)[:10]}"
    finally:
        db.close()
