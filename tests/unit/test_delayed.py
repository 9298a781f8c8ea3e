"""The delayed-message store: due order, a bounded in-memory window, and restarts."""
from __future__ import annotations

import random

from usagi.core import delayed as D
from usagi.model.message import Message


def msg(i):
    return Message("", "rk", b"\x00\x00", str(i).encode())


def make(ex, rk, props, body):
    return Message(ex, rk, props, body)


def drain(store, until_ms):
    out = []
    for t in range(0, until_ms + 1, 1000):
        out += [int(m.body) for _v, _x, m in store.due(t, make)]
    return out


def test_in_memory_order():
    s = D.DelayedMessages(None)
    assert not s.add(1, "/", "x", msg(-1)) and len(s.due(1, make)) == 1
    rng = random.Random(1)
    dues = {i: rng.randrange(0, 50_000) for i in range(500)}
    for i, due in dues.items():
        s.add(due, "/", "x", msg(i))
    got = drain(s, 50_000)
    assert got == sorted(dues, key=lambda i: (dues[i], i))
    assert len(s) == 0


def test_disk_window_is_bounded_and_survives_reopen(tmp_path, monkeypatch):
    monkeypatch.setattr(D, "MAX_IN_MEMORY", 100)
    monkeypatch.setattr(D, "HORIZON_MS", 10_000)
    from usagi.storage.sqlite import SQLiteStore
    store = SQLiteStore(str(tmp_path))
    store.open()
    s = D.DelayedMessages(store)
    s.due(0, make)                      # sets the first horizon
    rng = random.Random(2)
    dues = {i: rng.randrange(0, 200_000) for i in range(2000)}
    for i, due in dues.items():
        s.add(due, "/", "x", msg(i))
    assert len(s) == 2000
    store.commit()
    peak = 0
    first = []
    for t in range(0, 100_001, 1000):
        first += [int(m.body) for _v, _x, m in s.due(t, make)]
        peak = max(peak, len(s.heap))
    assert peak <= 101      # the window, plus the add that triggers a shrink
    store.close()
    store = SQLiteStore(str(tmp_path))
    store.open()
    s2 = D.DelayedMessages(store)
    rest = []
    for t in range(100_000, 200_001, 1000):
        rest += [int(m.body) for _v, _x, m in s2.due(t, make)]
    store.close()
    order = sorted(dues, key=lambda i: (dues[i], i))
    assert sorted(first + rest) == sorted(dues)            # nothing lost, nothing twice
    assert first == [i for i in order if dues[i] <= 100_000]
    assert rest == [i for i in order if dues[i] > 100_000]
