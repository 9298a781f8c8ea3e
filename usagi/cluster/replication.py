"""Replication of the store's commit batches from the leader to its followers, and the confirm rule.

The leader numbers every store commit (its LSN), stamps it with its epoch, and streams it to each
follower; a follower applies batches in order, each group of them in one transaction that also
records its position, syncs, and acks the last LSN applied (cumulative). The leader keeps the
last `retain_bytes` of batches so that a follower that returns can catch up from where it was;
one that is too far behind, or whose history diverged (it holds a tail of a deposed leader that
was never confirmed), gets a snapshot first. The leader never pauses its writes for a follower.

The confirm rule (`wait_durable`): a commit is durable for the cluster when it is on the leader's
disk (the caller's part) and every member of the in-sync replica set (ISR), as last written to
etcd, has acked it. A member that has not acked data for `ack_timeout` is removed from the ISR
by a fenced etcd write BEFORE any confirm relies on its absence; if etcd cannot be written the
confirm waits (never a false ack); if the write is refused, leadership is gone and waiters fail.
A follower joins the ISR when it has acked everything sent, again by a fenced write.

Bounds: the retained window (bytes), a follower's unsent output (`max_lag_bytes`: past it the
follower is dropped and resyncs), frame sizes (wire.MAX_FRAME).
"""
from __future__ import annotations

import asyncio
import collections
import logging
import os
import time

from . import wire as W

log = logging.getLogger("usagi.cluster.replication")


class NotLeader(Exception):
    """Leadership was lost: nothing may be confirmed any more."""


def epoch_at(history: list, lsn: int) -> int:
    """The epoch that wrote `lsn`, from a history of (epoch, first lsn) in order; 0 if before it."""
    e = 0
    for epoch, first in history:
        if first <= lsn:
            e = epoch
        else:
            break
    return e


class Follower:
    """The leader's view of one connected follower."""

    __slots__ = ("node_id", "name", "writer", "acked", "sent", "last_ack_at", "behind_since", "live",
                 "in_isr", "task")

    def __init__(self, node_id: int, writer):
        self.node_id = node_id
        self.name = f"{node_id:x}"
        self.writer = writer
        self.acked = 0                 # highest LSN the follower has synced
        self.sent = 0                  # highest LSN written to it
        self.last_ack_at = time.monotonic()
        self.behind_since = None       # when it first had unacked data outstanding
        self.live = False              # streaming live batches (caught up with the window)
        self.in_isr = False
        self.task = None


DEFAULT_CATCHUP_RATE = 16 * 1024 * 1024    # bytes/s: 256 MiB (the default retained window) in 16 s
CATCHUP_BURST = 1024 * 1024                # sent before the pace first holds back


class Pace:
    """The pace of a catch-up: `rate` bytes a second of backlog, after a first burst; with a
    leader, the batches it appended meanwhile are added to what may go (the backlog shrinks at
    `rate` however fast the live stream runs, so the follower always catches up). Rate 0: no pace."""

    __slots__ = ("rate", "leader", "start", "base", "sent_bytes")

    def __init__(self, rate: int, leader):
        self.rate = rate
        self.leader = leader
        self.start = time.monotonic()
        self.base = leader.appended_bytes if leader is not None else 0
        self.sent_bytes = 0

    async def sent(self, n: int):
        self.sent_bytes += n
        if not self.rate:
            return
        allowed = self.rate * (time.monotonic() - self.start) + CATCHUP_BURST
        if self.leader is not None:
            allowed += self.leader.appended_bytes - self.base
        if self.sent_bytes > allowed:
            await asyncio.sleep((self.sent_bytes - allowed) / self.rate)


class Leader:
    """The replication server on the leader: sessions, the retained window, the ISR, confirms."""

    def __init__(self, coordinator, secret: bytes, epoch: int, history: list, last_lsn: int,
                 snapshot=None, retain_bytes: int = 256 * 1024 * 1024, ack_timeout: float = 3.0,
                 max_lag_bytes: int = 64 * 1024 * 1024, min_in_sync: int = 1,
                 catchup_rate: int = DEFAULT_CATCHUP_RATE):
        self.coord = coordinator
        self.secret = secret
        self.epoch = epoch
        self.history = list(history)         # [(epoch, first lsn)], this epoch included
        self.lsn = last_lsn                  # last LSN written by this leader (or before it)
        self.snapshot = snapshot             # async () -> (path, epoch, lsn) of a consistent copy
        self.retain_bytes = retain_bytes
        self.ack_timeout = ack_timeout
        self.max_lag_bytes = max_lag_bytes
        self.min_in_sync = min_in_sync
        self.catchup_rate = catchup_rate     # bytes/s a returning follower's backlog is sent at; 0: no pacing
        self.appended_bytes = 0              # batch bytes appended so far (a catch-up adds them to its pace)
        self.window: collections.deque = collections.deque()    # (lsn, epoch, frame bytes)
        self.window_bytes = 0
        self.followers: dict[int, Follower] = {}
        self.isr: set[str] = {f"{coordinator.node_id:x}"}     # as written to etcd
        self._waiters: list = []                               # (lsn, future)
        self._changed = asyncio.Event()
        self._server = None
        self._tasks = []
        self.closed = False
        self.lost_reason = None
        self.last_confirm = 0.0       # time.monotonic() of the last confirm this leader let go
        self.on_peer = None           # called with the address of each follower that authenticated
        self.forgotten: set[str] = set()   # nodes removed for good: kept out of the ISR, refused

    # ------------------------------------------------------------------ lifecycle
    async def start(self, host: str, port: int):
        self._server = await asyncio.start_server(self._session, host, port, reuse_address=True)
        ok = await self.coord.write_isr(sorted(self.isr), self.lsn)
        if not ok:
            raise NotLeader("the first ISR write after the election was refused")
        self._tasks.append(asyncio.ensure_future(self._watch()))
        return self

    @property
    def port(self) -> int:
        return self._server.sockets[0].getsockname()[1]

    async def stop(self):
        if not self.closed:
            # the last moment this leader let a confirm go, against its lease's deadline (both on
            # the machine's monotonic clock): a deposed leader must never confirm past it
            log.info("replication: leader of epoch %d stops (%s); last confirm at monotonic %.3f, lease "
                     "deadline %.3f", self.epoch, self.lost_reason or "stopped", self.last_confirm,
                     self.coord.deadline)
        self.closed = True
        for t in self._tasks:
            t.cancel()
        if self._server is not None:
            self._server.close()
        for f in list(self.followers.values()):
            self._drop(f, "the leader is stopping")
        self._fail_waiters(NotLeader(self.lost_reason or "the leader stopped"))

    def lose(self, reason: str):
        """Leadership is gone (lease lost): fail every waiter, drop every follower."""
        self.lost_reason = reason
        asyncio.ensure_future(self.stop())

    # ------------------------------------------------------------------ writing
    def append(self, body: bytes) -> int:
        """Number a committed batch and stream it to every live follower. Returns its LSN."""
        self.lsn += 1
        lsn = self.lsn
        fr = W.batch_frame(self.epoch, lsn, body)
        self.window.append((lsn, self.epoch, fr))
        self.window_bytes += len(fr)
        self.appended_bytes += len(fr)
        while self.window_bytes > self.retain_bytes and len(self.window) > 1:
            _l, _e, old = self.window.popleft()
            self.window_bytes -= len(old)
        for f in list(self.followers.values()):
            if f.live:
                self._send(f, fr, lsn)
        return lsn

    def _send(self, f: Follower, fr: bytes, lsn: int):
        tr = f.writer.transport
        if tr.is_closing():
            return
        if tr.get_write_buffer_size() > self.max_lag_bytes:
            self._drop(f, f"its unsent backlog passed {self.max_lag_bytes} bytes")
            return
        f.writer.write(fr)
        f.sent = lsn
        if f.behind_since is None:
            f.behind_since = time.monotonic()

    # ------------------------------------------------------------------ the confirm rule
    async def wait_durable(self, lsn: int):
        """Return when every ISR member has acked `lsn` (the leader's own fsync is the caller's)."""
        if self.closed:
            raise NotLeader(self.lost_reason or "not the leader")
        if self._durable(lsn):
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((lsn, fut))
        await fut

    def _durable(self, lsn: int) -> bool:
        if not self.coord.lease_valid():
            return False
        if len(self.isr) < self.min_in_sync:
            return False
        me = f"{self.coord.node_id:x}"
        for name in self.isr:
            if name == me:
                continue
            f = self._by_name(name)
            if f is None or f.acked < lsn:
                return False
        self.last_confirm = time.monotonic()
        return True

    def _by_name(self, name: str):
        for f in self.followers.values():
            if f.name == name:
                return f
        return None

    def _release(self):
        if not self._waiters:
            return
        keep = []
        for lsn, fut in self._waiters:
            if fut.done():
                continue
            if self._durable(lsn):
                fut.set_result(None)
            else:
                keep.append((lsn, fut))
        self._waiters = keep

    def _fail_waiters(self, exc: Exception):
        for _lsn, fut in self._waiters:
            if not fut.done():
                fut.set_exception(exc)
        self._waiters = []

    async def _watch(self):
        """Every 100 ms: drop ISR members that stopped acking, add caught-up followers, release
        confirms. ISR changes are written (fenced) before anything relies on them."""
        me = f"{self.coord.node_id:x}"
        last_hb = time.monotonic()
        while not self.closed:
            await asyncio.sleep(0.1)
            try:
                if time.monotonic() - last_hb >= 1.0:
                    last_hb = time.monotonic()
                    hb = W.frame(W.HEARTBEAT)
                    for f in self.followers.values():
                        if f.live and not f.writer.transport.is_closing():
                            f.writer.write(hb)
                if not self.coord.lease_valid():
                    self.lose("the lease is no longer valid")
                    return
                now = time.monotonic()
                want = set(self.isr)
                for name in list(want):
                    if name == me:
                        continue
                    f = self._by_name(name)
                    if f is None:
                        if self._waiters or self.lsn > self._isr_lsn_floor():
                            want.discard(name)           # gone, and data is waiting on it
                    elif f.acked < f.sent and f.behind_since is not None and now - f.behind_since > self.ack_timeout:
                        log.warning("replication: follower %s has not acked for %.1fs: leaving the ISR",
                                    f.name, now - f.behind_since)
                        want.discard(name)
                        self._drop(f, "ack timeout")
                for f in self.followers.values():
                    if f.live and f.name not in want and f.acked >= self.lsn and f.name not in self.forgotten:
                        want.add(f.name)
                want -= self.forgotten
                if want != self.isr:
                    ok = await self.coord.write_isr(sorted(want), self.lsn)
                    if ok:
                        log.info("replication: ISR is now %s", ",".join(sorted(want)))
                        self.isr = want
                        for f in self.followers.values():
                            f.in_isr = f.name in want
                    elif not self.coord.lease_valid() or self.coord.lost.is_set():
                        self.lose("the ISR write was refused")
                        return
                self._release()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - etcd unreachable: confirms wait, the loop goes on
                log.warning("replication: ISR upkeep failed: %s", e)

    async def forget(self, name: str, timeout: float = 10.0) -> bool:
        """Take a node (by id) out of the ISR for good: the upkeep loop writes the ISR without it
        (fenced); True once the ISR as written no longer holds it."""
        self.forgotten.add(name)
        f = self._by_name(name)
        if f is not None:
            self._drop(f, "it was removed from the cluster")
        deadline = time.monotonic() + timeout
        while name in self.isr and not self.closed and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return name not in self.isr

    def successors(self) -> list[str]:
        """Connected followers in the ISR: who could take over now."""
        return sorted(f.name for f in self.followers.values() if f.live and f.name in self.isr)

    def _isr_lsn_floor(self) -> int:
        return min((f.acked for f in self.followers.values() if f.name in self.isr), default=self.lsn)

    # ------------------------------------------------------------------ sessions
    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        peer = writer.get_extra_info("peername")
        f = None
        fs = FrameStream(reader)
        try:
            l_nonce = os.urandom(16)
            writer.write(W.frame(W.CHALLENGE, W.challenge(l_nonce)))
            ftype, payload = await fs.next(10)
            if ftype != W.HELLO:
                raise W.WireError(f"expected hello, got {W.NAMES.get(ftype)}")
            h = W.parse_hello(payload)
            if h["version"] != W.VERSION:
                writer.write(W.frame(W.REFUSE, f"replication protocol version {h['version']} is not "
                                               f"{W.VERSION}".encode()))
                raise W.WireError(f"follower speaks protocol version {h['version']}")
            if not W.hello_ok(h, l_nonce, self.secret):
                writer.write(W.frame(W.REFUSE, b"wrong cluster secret"))
                raise W.WireError("follower did not prove it knows the cluster secret")
            if self.closed:
                writer.write(W.frame(W.REFUSE, b"not the leader"))
                raise W.WireError("not the leader any more")
            if f"{h['node_id']:x}" in self.forgotten:
                writer.write(W.frame(W.REFUSE, b"this node was removed from the cluster (forget_cluster_node)"))
                raise W.WireError(f"node {h['node_id']:x} was removed from the cluster")
            old = self.followers.get(h["node_id"])
            if old is not None:
                self._drop(old, "it connected again")
            if self.on_peer is not None and peer:
                self.on_peer(peer[0])
            f = Follower(h["node_id"], writer)
            f.in_isr = f.name in self.isr
            self.followers[f.node_id] = f
            mode, start = self._catch_up_mode(h["epoch"], h["lsn"])
            writer.write(W.frame(W.WELCOME, W.welcome(mode, self.epoch, self.lsn, h["nonce"], l_nonce,
                                                      self.secret)))
            log.info("replication: follower %s from %s at (epoch %d, lsn %d): %s", f.name, peer,
                     h["epoch"], h["lsn"], "streaming" if mode == W.MODE_STREAM else "snapshot")
            if mode == W.MODE_SNAPSHOT:
                start = await self._send_snapshot(f, writer)
            f.acked = f.sent = start
            await self._catch_up(f)
            while True:
                ftype, payload = await fs.next(3 * self.ack_timeout + 10)
                if ftype == W.ACK:
                    lsn = W.parse_ack(payload)
                    if lsn > f.sent:
                        raise W.WireError(f"ack of lsn {lsn} that was never sent (last sent {f.sent})")
                    if lsn > f.acked:
                        f.acked = lsn
                        f.last_ack_at = time.monotonic()
                        f.behind_since = None if lsn >= f.sent else f.last_ack_at
                        self._release()
                elif ftype == W.HEARTBEAT:
                    pass                         # an answer to ours: the follower is alive
                else:
                    raise W.WireError(f"unexpected {W.NAMES.get(ftype)} frame from a follower")
        except (W.WireError, asyncio.IncompleteReadError, ConnectionError, asyncio.TimeoutError, OSError) as e:
            log.warning("replication: follower %s (%s) dropped: %s", f.name if f else "?", peer, e)
        except asyncio.CancelledError:
            pass
        finally:
            if f is not None and self.followers.get(f.node_id) is f:
                del self.followers[f.node_id]
            writer.close()

    def _catch_up_mode(self, f_epoch: int, f_lsn: int) -> tuple[int, int]:
        first = self.window[0][0] if self.window else self.lsn + 1
        if f_lsn > self.lsn:
            return W.MODE_SNAPSHOT, 0                 # it holds a tail this leader never had
        if f_lsn and epoch_at(self.history, f_lsn) != f_epoch:
            return W.MODE_SNAPSHOT, 0                 # diverged: an unconfirmed tail of another epoch
        if f_lsn + 1 < first:
            return W.MODE_SNAPSHOT, 0                 # older than the retained window
        return W.MODE_STREAM, f_lsn

    async def _catch_up(self, f: Follower):
        """Send the retained batches after f.sent, draining as it goes (the window may be large),
        until the follower has everything; then it gets live batches as they are appended. The
        last check and `live = True` happen with no await between them, so no batch is missed.
        The backlog goes at `catchup_rate` (Pace): applying it costs the follower's machine CPU
        and disk that the leader and the in-sync followers need to keep confirming at their pace."""
        pace = Pace(self.catchup_rate, self)
        while True:
            todo = [(lsn, fr) for lsn, _e, fr in self.window if lsn > f.sent]
            if not todo:
                f.live = True
                return
            if todo[0][0] != f.sent + 1:
                raise W.WireError(f"the follower fell out of the retained window (needs {f.sent + 1})")
            for lsn, fr in todo:
                f.writer.write(fr)
                f.sent = lsn
                if f.behind_since is None:
                    f.behind_since = time.monotonic()
                if f.writer.transport.get_write_buffer_size() > 4 * 1024 * 1024:
                    await f.writer.drain()
                await pace.sent(len(fr))

    async def _send_snapshot(self, f: Follower, writer) -> int:
        if self.snapshot is None:
            raise W.WireError("this leader cannot make snapshots")
        path, epoch, lsn = await self.snapshot()
        try:
            import hashlib
            h = hashlib.sha256()
            size = os.path.getsize(path)
            writer.write(W.frame(W.SNAP_BEGIN, W.encode([epoch, lsn, size])))
            pace = Pace(self.catchup_rate, None)
            with open(path, "rb") as fh:
                while True:
                    chunk = fh.read(1024 * 1024)
                    if not chunk:
                        break
                    h.update(chunk)
                    writer.write(W.frame(W.SNAP_CHUNK, chunk))
                    await writer.drain()
                    await pace.sent(len(chunk))
            writer.write(W.frame(W.SNAP_END, h.digest()))
            await writer.drain()
            return lsn
        finally:
            try:
                os.unlink(path)
            except OSError:
                pass

    def _drop(self, f: Follower, why: str):
        log.warning("replication: dropping follower %s: %s", f.name, why)
        f.live = False
        if self.followers.get(f.node_id) is f:
            del self.followers[f.node_id]
        try:
            f.writer.close()
        except Exception:  # noqa: BLE001
            pass

    def status(self) -> list[dict]:
        return [{"node": f.name, "acked": f.acked, "sent": f.sent, "lag": self.lsn - f.acked,
                 "in_isr": f.name in self.isr, "live": f.live} for f in self.followers.values()]


class FrameStream:
    """Frames from an asyncio stream, one at a time, with a timeout per wait."""

    def __init__(self, reader: asyncio.StreamReader):
        self.reader = reader
        self.fr = W.FrameReader()
        self.pending: collections.deque = collections.deque()

    async def next(self, timeout: float | None):
        while not self.pending:
            read = self.reader.read(1 << 20)
            data = await (asyncio.wait_for(read, timeout) if timeout else read)
            if not data:
                raise ConnectionError("the peer closed the connection")
            self.pending.extend(self.fr.feed(data))
        return self.pending.popleft()


class Replica:
    """The follower's side: connect to the leader, authenticate, receive, apply, ack.

    `applier` has `position() -> (epoch, lsn)`, `apply(batches)` (a list of (epoch, lsn, body),
    applied in one transaction with the position, synced; run in a worker thread) and
    `install_snapshot(path, epoch, lsn)` (run in a worker thread)."""

    def __init__(self, node_id: int, secret: bytes, applier, snapshot_dir: str):
        self.node_id = node_id
        self.secret = secret
        self.applier = applier
        self.snapshot_dir = snapshot_dir
        self.leader_epoch = 0
        self.connected = False
        self.applied = 0
        self.received = 0           # last LSN received (applied or not): received - applied is the lag

    async def run(self, host: str, port: int, local_host: str | None = None):
        """Follow one leader until the connection ends (raises on refusal or a bad stream). With
        `local_host`, connect from that address (the node's own: the leader then trusts the PROXY
        headers of the clients this node forwards from it)."""
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(
                host, port, local_addr=(local_host, 0) if local_host else None), 5)
        except OSError:
            if not local_host:
                raise
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
        fs = FrameStream(reader)
        try:
            ftype, payload = await fs.next(10)
            if ftype != W.CHALLENGE:
                raise W.WireError(f"expected challenge, got {W.NAMES.get(ftype)}")
            version, l_nonce = W.parse_challenge(payload)
            if version != W.VERSION:
                raise W.WireError(f"leader speaks replication protocol version {version}, this node {W.VERSION}")
            epoch, lsn = self.applier.position()
            f_nonce = os.urandom(16)
            writer.write(W.frame(W.HELLO, W.hello(self.node_id, epoch, lsn, f_nonce, l_nonce, self.secret)))
            ftype, payload = await fs.next(10)
            if ftype == W.REFUSE:
                raise W.WireError(f"the leader refused this node: {payload.decode('utf-8', 'replace')}")
            if ftype != W.WELCOME:
                raise W.WireError(f"expected welcome, got {W.NAMES.get(ftype)}")
            mode, self.leader_epoch, _leader_lsn = W.parse_welcome(payload, f_nonce, l_nonce, self.secret)
            if mode == W.MODE_SNAPSHOT:
                await self._receive_snapshot(fs)
            self.connected = True
            await self._follow(fs, writer)
        finally:
            self.connected = False
            writer.close()

    async def _receive_snapshot(self, fs):
        import hashlib
        ftype, payload = await fs.next(60)
        if ftype != W.SNAP_BEGIN:
            raise W.WireError(f"expected snapshot-begin, got {W.NAMES.get(ftype)}")
        epoch, lsn, size = W.decode(payload)
        os.makedirs(self.snapshot_dir, exist_ok=True)
        path = os.path.join(self.snapshot_dir, "snapshot.tmp")
        h = hashlib.sha256()
        got = 0
        with open(path, "wb") as out:
            while True:
                ftype, payload = await fs.next(60)
                if ftype == W.SNAP_CHUNK:
                    got += len(payload)
                    if got > size:
                        raise W.WireError("snapshot longer than announced")
                    h.update(payload)
                    out.write(payload)
                elif ftype == W.SNAP_END:
                    if payload != h.digest() or got != size:
                        raise W.WireError("snapshot checksum mismatch")
                    out.flush()
                    os.fsync(out.fileno())
                    break
                else:
                    raise W.WireError(f"unexpected {W.NAMES.get(ftype)} in a snapshot")
        await asyncio.get_running_loop().run_in_executor(None, self.applier.install_snapshot, path, epoch, lsn)
        log.info("replication: installed a snapshot at (epoch %d, lsn %d), %d bytes", epoch, lsn, size)

    async def _follow(self, fs, writer):
        loop = asyncio.get_running_loop()
        expect = self.applier.position()[1] + 1
        while True:
            # the leader sends a heartbeat every second when idle: 10 s of silence means it is gone
            ftype, payload = await fs.next(10)
            batches = []
            while True:
                if ftype == W.BATCH:
                    epoch, lsn, body = W.parse_batch(payload)
                    if lsn != expect:
                        raise W.WireError(f"batch lsn {lsn} out of order (expected {expect})")
                    expect += 1
                    self.received = lsn
                    batches.append((epoch, lsn, body))
                elif ftype == W.HEARTBEAT:
                    writer.write(W.frame(W.HEARTBEAT))
                else:
                    raise W.WireError(f"unexpected {W.NAMES.get(ftype)} frame from the leader")
                if not fs.pending:
                    break
                ftype, payload = fs.pending.popleft()
            if batches:
                # everything that arrived together is applied in one transaction: one sync
                await loop.run_in_executor(None, self.applier.apply, batches)
                self.applied = batches[-1][1]
                writer.write(W.ack_frame(self.applied))
