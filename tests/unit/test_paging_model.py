"""The paging model without a server: segments and their deadlines (in order, or through the
deadline index), paging out in front of what is paged, the spill area and its stubs, stream
segments with their offset index and retention, and the memory alarm's rule."""
from __future__ import annotations

import os
import random

import pytest

from usagi.amqp import properties as P
from usagi.core import alarms
from usagi.core.broker import Broker, Config
from usagi.model import paging
from usagi.model.message import Message
from usagi.model.paging import SpillCount, Spilled, spill
from usagi.model.queue import PAGING, PriorityQueue, Queue
from usagi.model.stream import StreamQueue


@pytest.fixture
def paged(tmp_path, monkeypatch):
    monkeypatch.setitem(PAGING, "dir", str(tmp_path))
    monkeypatch.setitem(PAGING, "count", 10)
    monkeypatch.setitem(PAGING, "bytes", 1 << 30)
    monkeypatch.setitem(PAGING, "batch", 7)
    monkeypatch.setattr(paging, "SEGMENT_COUNT", 50)
    return tmp_path


def msg(i: int, **props) -> Message:
    m = Message("", "q", P.encode(props) if props else b"\x00\x00", b"%d" % i, None, i)
    return m


def bodies(entries) -> list:
    return [int(e[1].body) for e in entries]


def test_a_queue_pages_past_its_budget_and_reads_back_in_order(paged):
    q = Queue("/", "q")
    for i in range(200):
        q.push(msg(i))
    assert q.ram_count() == 10 and q.paged == 190 and q.message_count == 200
    assert len([f for f in os.listdir(paged) if f.startswith("seg-")]) == 4     # 50 entries a segment
    out = []
    while (item := q.pop()) is not None:
        out.append(int(item[1].body))
    assert out == list(range(200))
    assert q.pager is None and not os.listdir(paged)


def test_paged_entries_expire_by_deadline_wherever_they_are(paged):
    """Deadlines out of order: each segment gets a deadline index; the due ones go, the others are
    read back in order, and entries read back before they were due are left to the in-memory heap."""
    q = Queue("/", "q")
    rnd = random.Random(7)
    exps = {}
    for i in range(300):
        e = rnd.choice([0, 1000, 2000, 3000])
        exps[i + 1] = e
        q.push(msg(i), e)
    assert q.next_due() == 1000
    got = q.expire_due(1000, 1 << 30)
    assert sorted(s for s, _m in got) == [s for s, e in exps.items() if e == 1000]
    assert q.message_count == 300 - len(got)
    # read some back (page-in), then expire the 2000 ones: those in memory and those still paged
    head = [q.pop() for _ in range(20)]
    for h in reversed(head):
        q.unpop(*h)
    got2 = q.expire_due(2000, 1 << 30)
    assert sorted(s for s, _m in got2) == [s for s, e in exps.items() if e == 2000]
    assert q.next_due() == 3000
    rest = []
    while (item := q.pop()) is not None:
        rest.append(item[0])
    assert rest == [s for s, e in exps.items() if e in (0, 3000)]


def test_expiry_is_bounded_by_its_budget(paged):
    q = Queue("/", "q")
    for i in range(500):
        q.push(msg(i), 1000 + i % 3)
    n = 0
    while True:
        got = q.expire_due(5000, 64)
        assert len(got) <= 64
        if not got:
            break
        n += len(got)
    assert n == 500 and q.message_count == 0


def test_paging_out_the_in_memory_tail_keeps_the_order(paged):
    q = Queue("/", "q")
    for i in range(10):
        q.push(msg(i))
    for i in range(10, 30):
        q.push(msg(i))                 # paged
    assert q.page_out(4, 1 << 30) == 6
    assert q.ram_count() == 4
    out = []
    while (item := q.pop()) is not None:
        out.append(int(item[1].body))
    assert out == list(range(30))


def test_priority_levels_page_on_their_own(paged):
    q = PriorityQueue("/", "p", max_priority=3)
    for i in range(120):
        q.push(msg(i, priority=i % 4))
    assert q.paged == 110
    out = []
    while (item := q.pop()) is not None:
        out.append(int(item[1].body))
    assert out == sorted(range(120), key=lambda i: (-(i % 4), i))


def test_spilled_stubs_read_back_and_their_file_goes(paged):
    count = SpillCount()
    entries = [(i, msg(i)) for i in range(5)]
    stubs = spill(entries, str(paged), None, False, count)
    assert count.n == 5 and all(isinstance(s, Spilled) for s in stubs)
    assert [int(s.load().body) for s in stubs] == list(range(5))
    files = [f for f in os.listdir(paged) if f.startswith("spill-")]
    assert len(files) == 1 and os.path.getsize(paged / files[0]) > 0
    del stubs
    assert count.n == 0
    assert os.path.getsize(paged / files[0]) == 0     # no stub refers to it: started over


def test_store_backed_stubs_are_read_from_the_store(paged):
    class Store:
        def read_message(self, i):
            return "", "q", b"\x00\x00", b"from-store-%d" % i
    m = msg(3, delivery_mode=2)
    m.stored = True
    count = SpillCount()
    stub, = spill([(3, m)], str(paged), Store(), True, count)
    assert stub.stored and stub.off is None
    assert stub.load().body == b"from-store-3"
    assert not [f for f in os.listdir(paged) if f.startswith("spill-")]


def test_stream_segments_serve_any_offset_and_retention_trims_from_disk(paged):
    class B:
        class store:
            durable = False
        dirty = {}
    s = StreamQueue("/", "s", True, None, False, {"x-queue-type": "stream", "x-max-length-bytes": 1500})
    for i in range(2000):
        m = Message("", "s", b"\x00\x00", b"%04d" % i, None, i)
        s.append(B, m)
    assert s.segs and len(s.log) <= 10
    first = s.first_offset
    assert first == 2000 - 375 and s.log_bytes == 1500
    assert [int(m.body) for _o, m, _t in s.read(first, 1000)] == list(range(first, 2000))
    assert [o for o, _m, _t in s.read(first + 17, 3)] == [first + 17, first + 18, first + 19]
    live = {f for f in os.listdir(paged) if f.startswith("log-")}
    assert len(live) <= 2 * 9      # segments of 50 entries: those holding the last 375, data and index


def test_memory_alarm_counts_what_is_held_and_rss_only_as_a_backstop(monkeypatch):
    b = Broker(Config(memory_high_watermark=0.5))
    limit = b.memory_limit()
    calls = []
    monkeypatch.setattr(alarms, "_malloc_trim", lambda: calls.append(1) or True)
    b.flush_output = lambda: None

    def run(rss, held):
        monkeypatch.setattr(alarms, "rss", lambda: rss)
        b._account = alarms.Account()
        b._account.figures = {"x": held}
        b._account.held = held
        b._memory_pass_done()
        return "memory" in b.alarms
    assert not run(50 << 20, 1 << 20)                       # base: 49 MiB
    assert run(limit + (60 << 20), limit)                   # holds the limit: set
    assert not run(limit * 3, 1 << 20)                      # a burst deleted, RSS kept: cleared
    assert calls, "the allocator was asked to give memory back"
    assert run(int(limit * 1.6), limit // 3)                # RSS far above with a third held: backstop
    assert not run(int(limit * 1.6), limit // 10)           # ... not with little held
