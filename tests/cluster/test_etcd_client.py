"""The etcd gateway client against a real etcd: KV, txn fencing, leases, election, watch, failover."""
from __future__ import annotations

import asyncio
import json

import pytest

from etcdutil import EtcdCluster, need_etcd, free_port
from usagi.cluster import etcd as E


@pytest.fixture(scope="module")
def etcd1():
    need_etcd()
    c = EtcdCluster(1).start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def etcd3():
    need_etcd()
    c = EtcdCluster(3).start()
    yield c
    c.stop()


def run(coro):
    return asyncio.run(coro)


def test_kv_and_prefix(etcd1):
    async def go():
        c = E.EtcdClient(etcd1.endpoints)
        try:
            await c.put("/t/kv/a", "1")
            await c.put("/t/kv/b", b"\xff\x00")
            await c.put("/t/kw", "other")
            assert (await c.get("/t/kv/a")).value == b"1"
            kvs = await c.range("/t/kv/", prefix=True)
            assert [(k.key, k.value) for k in kvs] == [(b"/t/kv/a", b"1"), (b"/t/kv/b", b"\xff\x00")]
            assert await c.delete("/t/kv/", prefix=True) == 2
            assert await c.get("/t/kv/a") is None
            assert (await c.get("/t/kw")).value == b"other"
        finally:
            await c.close()
    run(go())


def test_create_once_txn(etcd1):
    async def go():
        c = E.EtcdClient(etcd1.endpoints)
        try:
            k = "/t/secret"
            r1 = await c.txn([E.cmp_create_revision(k, 0)], [E.op_put(k, "first")], [E.op_get(k)])
            r2 = await c.txn([E.cmp_create_revision(k, 0)], [E.op_put(k, "second")], [E.op_get(k)])
            assert r1.succeeded and not r2.succeeded
            assert r2.responses[0][0].value == b"first"
        finally:
            await c.close()
    run(go())


def test_lease_fencing_of_a_stale_leader(etcd1):
    """An ISR write fenced on the leader's lease fails once that lease is gone."""
    async def go():
        c = E.EtcdClient(etcd1.endpoints)
        try:
            lid, ttl = await c.lease_grant(5)
            assert ttl == 5
            lk = await c.campaign("/t/elect1", lid, json.dumps({"node": "n1"}))
            ok = await c.txn([E.cmp_lease(lk.key, lid)], [E.op_put("/t/isr1", "n1,n2")])
            assert ok.succeeded
            await c.lease_revoke(lid)
            stale = await c.txn([E.cmp_lease(lk.key, lid)], [E.op_put("/t/isr1", "n1")])
            assert not stale.succeeded
            assert (await c.get("/t/isr1")).value == b"n1,n2"
            assert await c.lease_keepalive(lid) == 0
            assert await c.lease_ttl(lid) == -1
        finally:
            await c.close()
    run(go())


def test_same_lease_id_twice_is_refused(etcd1):
    async def go():
        c = E.EtcdClient(etcd1.endpoints)
        try:
            await c.lease_grant(5, 0x5ABC)
            with pytest.raises(E.EtcdError) as ei:
                await c.lease_grant(5, 0x5ABC)
            assert "exists" in str(ei.value)
            await c.lease_revoke(0x5ABC)
        finally:
            await c.close()
    run(go())


def test_election_hands_over_when_the_leader_lease_ends(etcd1):
    async def go():
        c = E.EtcdClient(etcd1.endpoints)
        try:
            l1, _ = await c.lease_grant(2)
            l2, _ = await c.lease_grant(30)
            first = await c.campaign("/t/elect2", l1, "n1")
            second = asyncio.ensure_future(c.campaign("/t/elect2", l2, "n2"))
            await asyncio.sleep(0.3)
            assert not second.done()
            assert (await c.leader("/t/elect2")).value == b"n1"
            # n1 stops renewing: its lease expires and n2 is elected, with a higher revision (epoch)
            won = await asyncio.wait_for(second, 6)
            assert won.rev > first.rev
            assert (await c.leader("/t/elect2")).value == b"n2"
            await c.resign(won)
            assert await c.leader("/t/elect2") is None
            await c.lease_revoke(l2)
        finally:
            await c.close()
    run(go())


def test_watch_sees_puts_and_deletes(etcd1):
    async def go():
        c = E.EtcdClient(etcd1.endpoints)
        seen = []

        async def watcher():
            async for rev, events in c.watch("/t/w/", prefix=True):
                for ev in events:
                    seen.append((ev.type, ev.kv.key, ev.kv.value))
                if len(seen) >= 3:
                    return
        try:
            t = asyncio.ensure_future(watcher())
            await asyncio.sleep(0.2)
            await c.put("/t/w/a", "1")
            await c.put("/t/w/b", "2")
            await c.delete("/t/w/a")
            await asyncio.wait_for(t, 5)
            assert seen == [("PUT", b"/t/w/a", b"1"), ("PUT", b"/t/w/b", b"2"), ("DELETE", b"/t/w/a", b"")]
        finally:
            await c.close()
    run(go())


def test_fails_over_to_a_live_endpoint(etcd3):
    async def go():
        dead = f"http://127.0.0.1:{free_port()}"
        c = E.EtcdClient([dead] + etcd3.endpoints)
        c.endpoints.sort(key=lambda e: e != dead)       # start on the dead one
        c.current = 0
        try:
            await c.put("/t/fo", "x")
            assert (await c.get("/t/fo")).value == b"x"
            assert c.endpoint != dead
        finally:
            await c.close()
    run(go())


def test_unavailable_when_nothing_answers():
    async def go():
        c = E.EtcdClient([f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"], timeout=0.5)
        try:
            with pytest.raises(E.EtcdUnavailable):
                await c.get("/x")
        finally:
            await c.close()
    run(go())


def test_survives_losing_one_of_three_members(etcd3):
    async def go():
        c = E.EtcdClient(etcd3.endpoints)
        try:
            victim = etcd3.members[0]
            victim.kill()
            try:
                for i in range(20):
                    await c.put("/t/one-down", str(i))
                assert (await c.get("/t/one-down")).value == b"19"
            finally:
                etcd3.restart(victim)
        finally:
            await c.close()
    run(go())
