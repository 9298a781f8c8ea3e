"""The node coordinator against a real etcd: identity, lease watchdog, election, fenced ISR."""
from __future__ import annotations

import asyncio
import time

import pytest

from etcdutil import EtcdCluster, need_etcd
from usagi.cluster import etcd as E
from usagi.cluster.coordinator import Coordinator, DuplicateNode


@pytest.fixture(scope="module")
def etcd1():
    need_etcd()
    c = EtcdCluster(1).start()
    yield c
    c.stop()


def run(coro):
    return asyncio.run(coro)


def coord(etcd, node_id, cluster="c1", ttl=2, **kw):
    return Coordinator(E.EtcdClient(etcd.endpoints), cluster, node_id, {"name": f"n{node_id:x}"}, ttl=ttl, **kw)


def test_duplicate_identity_is_refused_while_the_other_lives(etcd1):
    async def go():
        a = coord(etcd1, 0x111)
        b = coord(etcd1, 0x111)
        try:
            await a.start()
            t0 = time.monotonic()
            with pytest.raises(DuplicateNode) as ei:
                await b.start(wait_for_stale=3)
            assert time.monotonic() - t0 >= 3
            assert "111" in str(ei.value)
        finally:
            await a.stop()
            await b.etcd.close()
            await a.etcd.close()
    run(go())


def test_a_crashed_incarnations_lease_is_waited_out(etcd1):
    async def go():
        a = coord(etcd1, 0x222)
        await a.start()
        for t in a._tasks:           # "kill -9": nothing renews or revokes the lease any more
            t.cancel()
        await a.etcd.close()
        b = coord(etcd1, 0x222)
        try:
            t0 = time.monotonic()
            await b.start()
            assert time.monotonic() - t0 <= 2 + 2.5
            assert any(n["incarnation"] == b.incarnation for n in await b.nodes())
        finally:
            await b.stop()
            await b.etcd.close()
    run(go())


def test_lease_is_kept_while_progressing_and_lost_when_stuck(etcd1):
    async def go():
        stuck = {"v": False}
        a = coord(etcd1, 0x333, progress_ok=lambda: not stuck["v"])
        lost = []
        a.on_lease_lost = lambda role, why: lost.append(why)
        try:
            await a.start()
            await asyncio.sleep(3)           # 1.5 TTLs: renewed
            assert a.lease_valid() and not lost
            assert a.renewals >= 2
            stuck["v"] = True                 # the node stops making progress
            await asyncio.wait_for(a.lost.wait(), 4)
            assert lost and not a.lease_valid()
            await asyncio.sleep(1)
            assert await a.etcd.lease_ttl(a.lease) == -1      # gone for etcd too
        finally:
            await a.stop()
            await a.etcd.close()
    run(go())


def test_isr_writes_are_fenced_on_leadership(etcd1):
    async def go():
        a = coord(etcd1, 0x444, cluster="c2")
        b = coord(etcd1, 0x555, cluster="c2")
        try:
            await a.start()
            await b.start()
            ea = await a.campaign()
            assert await a.write_isr(["444", "555"], 10)
            assert (await b.read_isr())["nodes"] == ["444", "555"]
            waiting = asyncio.ensure_future(b.campaign())
            await asyncio.sleep(0.3)
            assert not waiting.done()
            # a freezes: its lease runs out, b is elected with a higher epoch
            for t in a._tasks:
                t.cancel()
            eb = await asyncio.wait_for(waiting, 6)
            assert eb > ea
            assert await b.write_isr(["555"], 11)
            # the deposed leader's write is refused and leaves the ISR as b wrote it
            a.deadline = time.monotonic() + 10          # even if it believes its lease is fine
            assert not await a.write_isr(["444"], 12)
            isr = await b.read_isr()
            assert isr["nodes"] == ["555"] and isr["epoch"] == eb
            info, epoch = await b.current_leader()
            assert info["id"] == "555" and epoch == eb
        finally:
            await b.stop()
            for c in (a, b):
                await c.etcd.close()
    run(go())


def test_graceful_stop_hands_over_at_once(etcd1):
    async def go():
        a = coord(etcd1, 0x666, cluster="c3", ttl=10)
        b = coord(etcd1, 0x777, cluster="c3", ttl=10)
        try:
            await a.start()
            await b.start()
            await a.campaign()
            waiting = asyncio.ensure_future(b.campaign())
            await asyncio.sleep(0.2)
            t0 = time.monotonic()
            await a.stop()
            await asyncio.wait_for(waiting, 3)
            assert time.monotonic() - t0 < 1.5
        finally:
            await b.stop()
            for c in (a, b):
                await c.etcd.close()
    run(go())


def test_secret_is_created_once(etcd1):
    async def go():
        a = coord(etcd1, 0x888, cluster="c4")
        b = coord(etcd1, 0x999, cluster="c4")
        try:
            s1 = await a.secret()
            s2 = await b.secret()
            assert s1 == s2 and len(s1) == 32
        finally:
            for c in (a, b):
                await c.etcd.close()
    run(go())
