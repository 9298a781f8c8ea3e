"""A node's part in the cluster's coordination through etcd: lease, election, ISR, registry.

Keys (prefix `/usagi/<cluster>`), none of them written per message:

    leader/<lease hex>   v3election candidacies; the lowest create revision leads. Its create
                         revision is the leader's EPOCH, handed to followers with every batch.
    isr                  {"epoch", "nodes", "lsn"}: the in-sync replicas. Written only by the
                         leader, in a transaction that compares the lease of its own leader key
                         with its lease, so a deposed leader's write fails.
    secret               the cluster secret (random, created once by whoever comes first).
    nodes/<node id>      {"name", "addresses"..., "role", "epoch", "lsn", "incarnation"}, bound
                         to the node's lease: the registry of running nodes, gone when the node is.
    members/<node id>    {"name", "addresses"..., "joined"}: every node that ever joined, running
                         or not (RabbitMQ's disc nodes), kept until `usagictl forget_cluster_node`.
    forgotten/<node id>  {"name", "at"}: a node removed for good; it may not join again with the
                         same identity (its data dir must be reset first, as in RabbitMQ).

The lease: one per node, its id the node's id, so that a second live process with the same
identity cannot hold it. It is renewed every TTL/3 from the event loop, and only while the node
makes progress: `progress_ok()` (set by the server: the loop ticks and no commit has been pending
for longer than TTL/2). A stuck node therefore loses its lease and, with it, leadership. The
`deadline` is when the lease may have ended for etcd at the latest (last renewal sent + TTL): a
leader stops confirming before it.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import time

from . import etcd as E

log = logging.getLogger("usagi.cluster")

ROLE_FOLLOWER, ROLE_CANDIDATE, ROLE_LEADER, ROLE_STOPPED = "follower", "candidate", "leader", "stopped"


class DuplicateNode(Exception):
    """Another live process holds this node's identity."""


class ForgottenNode(Exception):
    """This node was removed from the cluster (forget_cluster_node): it may not join again."""


class Coordinator:
    def __init__(self, client: E.EtcdClient, cluster: str, node_id: int, node_info: dict,
                 ttl: int = 10, progress_ok=None, clock=time.monotonic):
        self.etcd = client
        self.prefix = f"/usagi/{cluster}"
        self.node_id = node_id & 0x7FFF_FFFF_FFFF_FFFF or 1
        self.node_info = dict(node_info)
        self.ttl = ttl
        self.progress_ok = progress_ok or (lambda: True)
        self.clock = clock
        self.incarnation = secrets.token_hex(8)
        self.lease = 0
        self.deadline = 0.0                 # our lease may be gone after this (clock time)
        self.role = ROLE_FOLLOWER
        self.leader_key: E.LeaderKey | None = None
        self.epoch = 0
        self.lost = asyncio.Event()        # set when the lease is (or may be) gone
        self._tasks: list = []
        self.on_lease_lost = None           # callbacks set by the cluster service
        self.renewals = 0
        self.skipped_renewals = 0

    # ------------------------------------------------------------------ keys
    @property
    def election(self) -> str:
        return self.prefix + "/leader"

    @property
    def isr_key(self) -> str:
        return self.prefix + "/isr"

    def node_key(self, node_id: int | None = None) -> str:
        return f"{self.prefix}/nodes/{node_id if node_id is not None else self.node_id:x}"

    def member_key(self, node_id: int | str | None = None) -> str:
        nid = node_id if isinstance(node_id, str) else f"{node_id if node_id is not None else self.node_id:x}"
        return f"{self.prefix}/members/{nid}"

    def forgotten_key(self, node_id: int | str | None = None) -> str:
        nid = node_id if isinstance(node_id, str) else f"{node_id if node_id is not None else self.node_id:x}"
        return f"{self.prefix}/forgotten/{nid}"

    # ------------------------------------------------------------------ lease
    async def start(self, wait_for_stale: float | None = None):
        """Take the node's lease and register. If a lease with our id exists, it is either a
        previous incarnation's (crashed, lease not yet expired) or a live duplicate: wait for it
        to expire; if it is still renewed after that, refuse (DuplicateNode)."""
        gone = await self.etcd.get(self.forgotten_key())
        if gone is not None:
            raise ForgottenNode(f"node {self.node_info.get('name', '')} ({self.node_id:x}) was removed from cluster "
                                f"{self.prefix.rsplit('/', 1)[-1]} with forget_cluster_node: it cannot join "
                                f"again with this data directory; start it with an empty data directory to "
                                f"join as a new node")
        wait = self.ttl + 2 if wait_for_stale is None else wait_for_stale
        deadline = self.clock() + wait
        while True:
            try:
                self.lease, granted = await self.etcd.lease_grant(self.ttl, self.node_id)
                break
            except E.EtcdError as e:
                if "exists" not in str(e):
                    raise
            if self.clock() >= deadline:
                other = await self.etcd.get(self.node_key())
                where = ""
                if other is not None:
                    try:
                        where = " (registered as " + json.dumps(json.loads(other.value)) + ")"
                    except ValueError:
                        pass
                raise DuplicateNode(f"another process holds node id {self.node_id:x} in cluster "
                                    f"{self.prefix}{where}: it keeps renewing its lease, so it is alive; "
                                    f"two nodes must not share a data dir or a node identity")
            await asyncio.sleep(min(1.0, max(0.1, self.ttl / 5)))
        self.deadline = self.clock() + self.ttl - 0.5
        await self.register()
        await self._register_member()
        self._tasks.append(asyncio.ensure_future(self._keepalive_loop()))
        self._tasks.append(asyncio.ensure_future(self._deadline_loop()))

    async def register(self, **fields):
        self.node_info.update(fields)
        info = dict(self.node_info, id=f"{self.node_id:x}", role=self.role, epoch=self.epoch,
                    incarnation=self.incarnation, pid=os.getpid())
        await self.etcd.put(self.node_key(), json.dumps(info), lease=self.lease)

    async def _register_member(self):
        """The lasting membership record (no lease): written when the node starts; an older
        record of the same node name that is not running (the node was given a new data dir, and
        so a new identity) is replaced by this one."""
        me = f"{self.node_id:x}"
        name = self.node_info.get("name")
        running = {n.get("id") for n in await self.nodes()}
        for m in await self.members():
            if m.get("name") == name and m.get("id") != me and m.get("id") not in running:
                await self.etcd.delete(self.member_key(str(m.get("id"))))
        old = await self.etcd.get(self.member_key())
        joined = None
        if old is not None:
            try:
                joined = json.loads(old.value).get("joined")
            except ValueError:
                pass
        info = {k: v for k, v in self.node_info.items() if k in ("name", "host", "amqp", "http", "repl", "version")}
        await self.etcd.put(self.member_key(), json.dumps(dict(info, id=me, joined=joined or int(time.time()))))

    async def members(self) -> list[dict]:
        """Every node that joined and was not forgotten (bounded by the cluster's size)."""
        out = []
        for kv in await self.etcd.range(self.prefix + "/members/", prefix=True):
            try:
                out.append(json.loads(kv.value))
            except ValueError:
                continue
        return out

    async def forget_member(self, node_id: str, name: str):
        """Remove a (stopped) node for good: its membership goes, a tombstone keeps it out. The ISR
        is the leader's to change (replication.Leader.forget)."""
        await self.etcd.txn([], [E.op_delete(self.member_key(node_id)),
                                 E.op_put(self.forgotten_key(node_id), json.dumps({"name": name, "at": int(time.time())}))])

    async def _keepalive_loop(self):
        interval = self.ttl / 3
        while not self.lost.is_set():
            await asyncio.sleep(interval)
            if not self.progress_ok():
                # the node is stuck (loop or commits): let the lease run out rather than renew it
                self.skipped_renewals += 1
                log.warning("cluster: not renewing the lease: this node is not making progress")
                self._check_deadline()
                continue
            sent = self.clock()
            try:
                ttl = await self.etcd.lease_keepalive(self.lease, timeout=interval)
            except E.EtcdError as e:
                log.warning("cluster: lease renewal failed: %s", e)
                self._check_deadline()
                continue
            if ttl <= 0:
                self._lose("the lease expired in etcd")
                return
            self.renewals += 1
            self.deadline = sent + ttl - 0.5

    async def _deadline_loop(self):
        """Step down the moment the lease may have ended, without waiting for the next renewal
        attempt to fail: a leader sends nothing more after its deadline."""
        while not self.lost.is_set():
            left = self.deadline - self.clock()
            if left <= 0:
                self._lose("the lease was not renewed before its deadline")
                return
            await asyncio.sleep(min(left, 0.5))

    def _check_deadline(self):
        if self.clock() >= self.deadline:
            self._lose("the lease could not be renewed before its deadline")

    def lease_valid(self) -> bool:
        return not self.lost.is_set() and self.clock() < self.deadline

    def _lose(self, why: str):
        if self.lost.is_set():
            return
        log.error("cluster: node %x lost its lease: %s; stepping down", self.node_id, why)
        self.lost.set()
        prev = self.role
        self.role = ROLE_STOPPED
        cb = self.on_lease_lost
        if cb is not None:
            try:
                cb(prev, why)
            except Exception:  # noqa: BLE001 - a callback must not kill the coordinator
                log.exception("cluster: lease-lost handler failed")

    # ------------------------------------------------------------------ election
    async def campaign(self) -> int:
        """Wait to be elected; returns the epoch. The caller checks the ISR first (only an in-sync
        node may lead) and again after winning (`resign` if no longer in it)."""
        self.role = ROLE_CANDIDATE
        value = json.dumps(dict(self.node_info, id=f"{self.node_id:x}"))
        lk = await self.etcd.campaign(self.election, self.lease, value)
        if self.lost.is_set():
            raise E.EtcdError("lease lost while campaigning")
        self.leader_key = lk
        self.epoch = lk.rev
        self.role = ROLE_LEADER
        # the monotonic clock (shared by the processes of one machine) lets a test compare this
        # moment with the last confirm of the leader before (Leader.stop's line)
        log.info("cluster: node %x elected leader, epoch %d (monotonic %.3f)", self.node_id, self.epoch,
                 time.monotonic())
        return self.epoch

    async def resign(self):
        lk, self.leader_key = self.leader_key, None
        self.role = ROLE_FOLLOWER
        if lk is not None:
            try:
                await self.etcd.resign(lk)
            except E.EtcdError as e:
                log.warning("cluster: resign failed: %s", e)

    async def current_leader(self) -> tuple[dict, int] | None:
        """(leader's info, epoch) or None while there is none."""
        kv = await self.etcd.leader(self.election)
        if kv is None:
            return None
        try:
            info = json.loads(kv.value)
        except ValueError:
            info = {}
        return info, kv.create_revision

    # ------------------------------------------------------------------ ISR
    async def read_isr(self) -> dict | None:
        kv = await self.etcd.get(self.isr_key)
        if kv is None:
            return None
        try:
            return json.loads(kv.value)
        except ValueError:
            return None

    async def write_isr(self, nodes: list[str], lsn: int) -> bool:
        """Fenced on our leadership: False (and nothing written) if we are no longer the leader."""
        lk = self.leader_key
        if lk is None or not self.lease_valid():
            return False
        value = json.dumps({"epoch": self.epoch, "nodes": sorted(nodes), "lsn": lsn})
        res = await self.etcd.txn([E.cmp_lease(lk.key, self.lease)], [E.op_put(self.isr_key, value)])
        if not res.succeeded:
            self._lose("the ISR write was refused: another node leads")
        return res.succeeded

    # ------------------------------------------------------------------ secret
    async def secret(self) -> bytes:
        """The cluster secret, created by the first node that asks."""
        key = self.prefix + "/secret"
        mine = secrets.token_bytes(32).hex()
        res = await self.etcd.txn([E.cmp_create_revision(key, 0)], [E.op_put(key, mine)], [E.op_get(key)])
        if res.succeeded:
            return bytes.fromhex(mine)
        return bytes.fromhex(res.responses[0][0].value.decode())

    # ------------------------------------------------------------------ registry
    async def nodes(self) -> list[dict]:
        out = []
        for kv in await self.etcd.range(self.prefix + "/nodes/", prefix=True):
            try:
                out.append(json.loads(kv.value))
            except ValueError:
                continue
        return out

    # ------------------------------------------------------------------ stop
    def abandon(self):
        """Forget a start that failed half-way (etcd stopped answering), so that `start` can be
        called again: a lease granted meanwhile is left to expire, never renewed."""
        for t in self._tasks:
            t.cancel()
        self._tasks = []
        self.lease = 0
        self.lost.clear()

    async def stop(self, revoke: bool = True):
        """Graceful: give up leadership at once (the next candidate is elected without waiting for
        the lease to expire) and leave the registry."""
        for t in self._tasks:
            t.cancel()
        self._tasks = []
        if revoke and self.lease and not self.lost.is_set():
            try:
                await self.etcd.lease_revoke(self.lease)
            except E.EtcdError as e:
                log.warning("cluster: revoking the lease failed: %s", e)
        self.lost.set()
        self.role = ROLE_STOPPED
