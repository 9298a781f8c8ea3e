"""The fault run's workload and loss checker (Jepsen's total-queue semantics), on aio-pika.

Publishers send unique integers with publisher confirms to a durable quorum queue, through a
node chosen at random, reconnecting (to any node) whenever their connection breaks. Every publish
ends as `ok` (basic.ack), `fail` (basic.nack or refused) or `unknown` (the connection went away
before the confirm). Consumers take messages with manual acks, reconnecting likewise. At the end
the queue is drained and the checker reports:

    lost        ok publishes never drained           (must be 0)
    unexpected  drained values never published       (must be 0)
    duplicated  values drained more than once        (allowed: at-least-once)
    recovered   unknown publishes that were drained

plus the failover time of each fault: from the fault to the first `ok` publish after it.
"""
from __future__ import annotations

import asyncio
import bisect
import itertools
import random
import time
from dataclasses import dataclass, field

import aio_pika


@dataclass
class Record:
    attempted: set = field(default_factory=set)
    ok: set = field(default_factory=set)
    fail: set = field(default_factory=set)
    unknown: set = field(default_factory=set)
    drained: list = field(default_factory=list)
    ok_times: list = field(default_factory=list)       # (sent, confirmed) monotonic times of each ok
    errors: list = field(default_factory=list)


class Workload:
    def __init__(self, urls: list[str], queue: str = "jepsen", publishers: int = 3, consumers: int = 2,
                 window: int = 50, rate: float | None = None):
        self.urls = list(urls)
        self.queue = queue
        self.n_pub = publishers
        self.n_con = consumers
        self.window = window                # unconfirmed publishes in flight per publisher
        self.rate = rate                    # publishes per second per publisher (None: as fast as confirms)
        self.rec = Record()
        self.counter = itertools.count(1)
        self.stopping = False
        self.consumed_live: list = []
        self._tasks: list = []

    async def _connect(self, always: bool = False):
        while always or not self.stopping:
            url = random.choice(self.urls)
            try:
                return await asyncio.wait_for(aio_pika.connect(url, timeout=3), 5)
            except Exception as e:  # noqa: BLE001 - nodes come and go during a fault run
                self.rec.errors.append(f"connect {url}: {type(e).__name__}")
                await asyncio.sleep(0.2)
        return None

    async def setup(self):
        conn = await self._connect()
        async with conn:
            ch = await conn.channel()
            await ch.declare_queue(self.queue, durable=True, arguments={"x-queue-type": "quorum"})

    async def _publisher(self):
        while not self.stopping:
            conn = await self._connect()
            if conn is None:
                return
            inflight = {}
            broken = []
            try:
                ch = await conn.channel(publisher_confirms=True)
                sem = asyncio.Semaphore(self.window)

                async def one(n):
                    sent = time.monotonic()
                    try:
                        await ch.default_exchange.publish(
                            aio_pika.Message(str(n).encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                            routing_key=self.queue, mandatory=True, timeout=30)
                        self.rec.ok.add(n)
                        self.rec.ok_times.append((sent, time.monotonic()))
                    except aio_pika.exceptions.DeliveryError:
                        self.rec.fail.add(n)
                    except Exception:  # noqa: BLE001 - connection lost: the outcome is unknown
                        self.rec.unknown.add(n)
                        broken.append(n)
                    finally:
                        inflight.pop(n, None)
                        sem.release()
                while not self.stopping and not conn.is_closed and not ch.is_closed and not broken:
                    await sem.acquire()
                    n = next(self.counter)
                    self.rec.attempted.add(n)
                    inflight[n] = asyncio.ensure_future(one(n))
                    if self.rate:
                        await asyncio.sleep(1 / self.rate)
                if inflight:
                    await asyncio.wait(list(inflight.values()), timeout=35)
            except Exception as e:  # noqa: BLE001
                self.rec.errors.append(f"publisher: {type(e).__name__}: {e}")
            finally:
                for t in inflight.values():
                    t.cancel()
                try:
                    await conn.close()
                except Exception:  # noqa: BLE001
                    pass
            await asyncio.sleep(0.1)

    async def _consumer(self):
        while not self.stopping:
            conn = await self._connect()
            if conn is None:
                return
            try:
                ch = await conn.channel()
                await ch.set_qos(prefetch_count=100)
                q = await ch.declare_queue(self.queue, passive=True)
                async with q.iterator() as it:
                    while not self.stopping:
                        try:
                            msg = await asyncio.wait_for(it.__anext__(), 1.0)
                        except asyncio.TimeoutError:
                            continue                 # nothing for a second: look at `stopping`
                        self.rec.drained.append(int(msg.body))
                        await msg.ack()
            except Exception as e:  # noqa: BLE001
                self.rec.errors.append(f"consumer: {type(e).__name__}")
            finally:
                try:
                    await conn.close()
                except Exception:  # noqa: BLE001
                    pass
            await asyncio.sleep(0.1)

    def start(self):
        for _ in range(self.n_pub):
            self._tasks.append(asyncio.ensure_future(self._publisher()))
        for _ in range(self.n_con):
            self._tasks.append(asyncio.ensure_future(self._consumer()))

    async def stop(self):
        """Stop publishing and consuming; consumers close their connections (what they had taken
        but not acked goes back to the queue) before this returns."""
        self.stopping = True
        done, pending = await asyncio.wait(self._tasks, timeout=40)
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.wait(pending, timeout=10)

    async def drain(self, idle: float = 3.0, timeout: float = 120.0):
        """After the faults: read everything left in the queue (from any node)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            conn = await self._connect(always=True)
            try:
                ch = await conn.channel()
                q = await ch.declare_queue(self.queue, passive=True)
                last = time.monotonic()
                while time.monotonic() - last < idle:
                    msg = await q.get(no_ack=False, fail=False, timeout=5)
                    if msg is None:
                        await asyncio.sleep(0.2)
                        continue
                    self.rec.drained.append(int(msg.body))
                    await msg.ack()
                    last = time.monotonic()
                return
            except Exception as e:  # noqa: BLE001
                self.rec.errors.append(f"drain: {type(e).__name__}")
                await asyncio.sleep(0.5)
            finally:
                try:
                    await conn.close()
                except Exception:  # noqa: BLE001
                    pass

    def check(self) -> dict:
        r = self.rec
        drained = set(r.drained)
        dup = len(r.drained) - len(drained)
        return {"attempted": len(r.attempted), "ok": len(r.ok), "fail": len(r.fail), "unknown": len(r.unknown),
                "drained": len(drained), "lost": sorted(r.ok - drained)[:20], "lost_count": len(r.ok - drained),
                "unexpected": sorted(drained - r.attempted)[:20], "unexpected_count": len(drained - r.attempted),
                "duplicated": dup, "recovered": len(r.unknown & drained)}

    def failover_time(self, fault_at: float) -> float | None:
        """Seconds from a fault to the first confirm of a publish sent after it."""
        self._index()
        i = bisect.bisect_right(self._sent, fault_at)
        return self._first_confirm[i] - fault_at if i < len(self._sent) else None

    def _index(self):
        """Oks sorted by when they were sent, with the earliest confirm from each one on."""
        if getattr(self, "_indexed", -1) == len(self.rec.ok_times):
            return
        oks = sorted(self.rec.ok_times)
        self._sent = [s for s, _c in oks]
        first = [0.0] * len(oks)
        best = float("inf")
        for i in range(len(oks) - 1, -1, -1):
            best = min(best, oks[i][1])
            first[i] = best
        self._first_confirm = first
        self._indexed = len(self.rec.ok_times)
