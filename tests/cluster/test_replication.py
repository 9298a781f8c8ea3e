"""The replication stream and the confirm rule, leader and followers in one process, real etcd.

Stores are stand-ins here (a list of applied batches); the store-backed applier and whole nodes
are tested elsewhere. What is checked: a confirm waits for every ISR member; a follower that stops
acking leaves the ISR through a fenced write before confirms go on without it; a follower that
returns catches up from the window or a snapshot; wrong secrets and garbage are refused.
"""
from __future__ import annotations

import asyncio
import json
import os
import tempfile

import pytest

from etcdutil import EtcdCluster, need_etcd
from usagi.cluster import etcd as E
from usagi.cluster import wire as W
from usagi.cluster.coordinator import Coordinator
from usagi.cluster.replication import Leader, Replica, epoch_at


@pytest.fixture(scope="module")
def etcd1():
    need_etcd()
    c = EtcdCluster(1).start()
    yield c
    c.stop()


class MemApplier:
    def __init__(self):
        self.batches = []        # (epoch, lsn, body)
        self.delay = 0.0

    def position(self):
        return (self.batches[-1][0], self.batches[-1][1]) if self.batches else (0, 0)

    def apply(self, batches):
        import time
        if self.delay:
            time.sleep(self.delay)
        self.batches.extend(batches)

    def install_snapshot(self, path, epoch, lsn):
        with open(path) as f:
            self.batches = [tuple(x[:2]) + (bytes.fromhex(x[2]),) for x in json.load(f)]
        assert self.position()[1] == lsn


def run(coro):
    return asyncio.run(coro)


async def make_leader(etcd, cluster, nid=0x1, ttl=3, **kw):
    c = Coordinator(E.EtcdClient(etcd.endpoints), cluster, nid, {"name": "leader"}, ttl=ttl)
    await c.start()
    epoch = await c.campaign()
    secret = await c.secret()
    log = []

    async def snapshot():
        fd, path = tempfile.mkstemp()
        with os.fdopen(fd, "w") as f:
            json.dump([[e, lsn, b.hex()] for e, lsn, b in log], f)
        return path, (log[-1][0] if log else 0), (log[-1][1] if log else 0)
    leader = Leader(c, secret, epoch, [(epoch, 1)], 0, snapshot=snapshot, ack_timeout=1.0, **kw)
    await leader.start("127.0.0.1", 0)
    orig = leader.append

    def append(body):
        lsn = orig(body)
        log.append((leader.epoch, lsn, body))
        return lsn
    leader.append = append
    return leader, c, secret


async def follow(leader, secret, nid, applier=None):
    applier = applier or MemApplier()
    r = Replica(nid, secret, applier, tempfile.mkdtemp())
    task = asyncio.ensure_future(r.run("127.0.0.1", leader.port))
    return r, applier, task


async def until(pred, timeout=5.0):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            raise AssertionError("timed out")
        await asyncio.sleep(0.02)


def test_confirms_wait_for_every_isr_member(etcd1):
    async def go():
        leader, coord, secret = await make_leader(etcd1, "r1")
        r, app, task = await follow(leader, secret, 0x2)
        try:
            lsn = leader.append(b"one")
            await asyncio.wait_for(leader.wait_durable(lsn), 3)
            await until(lambda: "2" in leader.isr)
            assert json.loads((await coord.etcd.get(coord.isr_key)).value)["nodes"] == ["1", "2"]
            app.delay = 0.5                     # the follower is slow: the confirm waits for it
            lsn = leader.append(b"two")
            t0 = asyncio.get_running_loop().time()
            await asyncio.wait_for(leader.wait_durable(lsn), 3)
            assert asyncio.get_running_loop().time() - t0 >= 0.4
            assert [b for _e, _l, b in app.batches] == [b"one", b"two"]
        finally:
            task.cancel()
            await leader.stop()
            await coord.stop()
            await coord.etcd.close()
    run(go())


def test_a_silent_follower_leaves_the_isr_before_confirms_go_on(etcd1):
    async def go():
        leader, coord, secret = await make_leader(etcd1, "r2")
        r, app, task = await follow(leader, secret, 0x2)
        try:
            await asyncio.wait_for(leader.wait_durable(leader.append(b"a")), 3)
            await until(lambda: "2" in leader.isr)
            app.delay = 30                       # the follower hangs (its apply never returns)
            lsn = leader.append(b"b")
            t0 = asyncio.get_running_loop().time()
            await asyncio.wait_for(leader.wait_durable(lsn), 5)
            waited = asyncio.get_running_loop().time() - t0
            assert 0.9 <= waited <= 2.5, waited
            # the ISR in etcd no longer holds the follower: it was written before the confirm
            assert json.loads((await coord.etcd.get(coord.isr_key)).value)["nodes"] == ["1"]
        finally:
            task.cancel()
            await leader.stop()
            await coord.stop()
            await coord.etcd.close()
    run(go())


def test_a_returning_follower_catches_up_from_the_window_and_rejoins(etcd1):
    async def go():
        leader, coord, secret = await make_leader(etcd1, "r3")
        r, app, task = await follow(leader, secret, 0x2)
        try:
            await asyncio.wait_for(leader.wait_durable(leader.append(b"a")), 3)
            task.cancel()
            await until(lambda: 0x2 not in leader.followers)
            for i in range(50):
                leader.append(b"x%d" % i)
            await asyncio.wait_for(leader.wait_durable(leader.lsn), 5)
            r, app2, task = await follow(leader, secret, 0x2, app)
            await until(lambda: app.position()[1] == leader.lsn and "2" in leader.isr, 5)
            assert [b for _e, _l, b in app.batches][:2] == [b"a", b"x0"]
        finally:
            task.cancel()
            await leader.stop()
            await coord.stop()
            await coord.etcd.close()
    run(go())


def test_a_catch_up_keeps_its_pace_and_ends_while_the_live_stream_runs(etcd1):
    """The backlog goes at --cluster-catchup-rate (not faster: the follower's apply would take the
    machine from the in-sync nodes), on top of the live stream, which cannot keep it from ending."""
    async def go():
        rate = 2 * 1024 * 1024
        leader, coord, secret = await make_leader(etcd1, "r6", catchup_rate=rate)
        r, app, task = await follow(leader, secret, 0x2)
        try:
            await asyncio.wait_for(leader.wait_durable(leader.append(b"a")), 3)
            task.cancel()
            await until(lambda: 0x2 not in leader.followers)
            chunk = b"x" * 65536
            for _ in range(80):                         # 5 MiB missed
                leader.append(chunk)
            loop = asyncio.get_running_loop()
            r, app2, task = await follow(leader, secret, 0x2, app)
            t0 = loop.time()
            live = 0
            while not (app.position()[1] == leader.lsn and "2" in leader.isr):
                leader.append(chunk)                    # a live stream of 1.3 MiB/s meanwhile
                live += 1
                assert loop.time() - t0 < 30, "the catch-up never ended"
                await asyncio.sleep(0.05)
            took = loop.time() - t0
            # 5 MiB less the first 1 MiB burst, at 2 MiB/s: 2 s at the least
            assert took >= (5 - 1) / 2 - 0.1, took
            assert live > 0 and len(app.batches) == leader.lsn
        finally:
            task.cancel()
            await leader.stop()
            await coord.stop()
            await coord.etcd.close()
    run(go())


def test_a_diverged_follower_gets_a_snapshot(etcd1):
    async def go():
        leader, coord, secret = await make_leader(etcd1, "r4")
        try:
            for i in range(5):
                leader.append(b"b%d" % i)
            stale = MemApplier()
            stale.batches = [(1, 1, b"old")] + [(1, i, b"tail") for i in range(2, 8)]   # another epoch's tail
            r, app, task = await follow(leader, secret, 0x3, stale)
            await until(lambda: app.position()[1] == leader.lsn, 5)
            assert [b for _e, _l, b in app.batches] == [b"b%d" % i for i in range(5)]
            task.cancel()
        finally:
            await leader.stop()
            await coord.stop()
            await coord.etcd.close()
    run(go())


def test_wrong_secret_and_garbage_are_refused(etcd1):
    async def go():
        leader, coord, secret = await make_leader(etcd1, "r5")
        try:
            r, app, task = await follow(leader, os.urandom(32), 0x4)
            with pytest.raises(W.WireError) as ei:
                await asyncio.wait_for(task, 5)
            assert "secret" in str(ei.value)
            assert 0x4 not in leader.followers
            # raw garbage on the port
            rd, wr = await asyncio.open_connection("127.0.0.1", leader.port)
            wr.write(b"GET / HTTP/1.1\r\n\r\n" * 100)
            await asyncio.sleep(0.3)
            assert await asyncio.wait_for(rd.read(), 5) is not None
            # the leader still serves well-behaved followers
            r, app, task = await follow(leader, secret, 0x5)
            await asyncio.wait_for(leader.wait_durable(leader.append(b"ok")), 3)
            task.cancel()
        finally:
            await leader.stop()
            await coord.stop()
            await coord.etcd.close()
    run(go())


def test_confirms_stall_when_the_isr_cannot_be_written(etcd1):
    async def go():
        leader, coord, secret = await make_leader(etcd1, "r6", ttl=30)
        r, app, task = await follow(leader, secret, 0x2)
        try:
            await asyncio.wait_for(leader.wait_durable(leader.append(b"a")), 3)
            await until(lambda: "2" in leader.isr)
            task.cancel()                               # the follower goes away
            etcd1.members[0].pause()                    # and etcd cannot be written
            try:
                lsn = leader.append(b"b")
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(leader.wait_durable(lsn)), 3)
            finally:
                etcd1.members[0].resume()
            await asyncio.wait_for(leader.wait_durable(lsn), 10)      # once etcd is back: ISR={1}
            assert leader.isr == {"1"}
        finally:
            await leader.stop()
            await coord.stop()
            await coord.etcd.close()
    run(go())


def test_history_lookup():
    h = [(3, 1), (9, 101), (15, 180)]
    assert [epoch_at(h, x) for x in (0, 1, 100, 101, 179, 180, 999)] == [0, 3, 3, 9, 9, 15, 15]
