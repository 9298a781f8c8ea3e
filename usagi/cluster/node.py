"""A node of a Usagi cluster: follower or leader, switching as etcd decides.

One node leads and serves the whole broker; the others follow: they receive every committed
batch of the leader's store, apply it to their own store, and forward the clients that connect to
them to the leader. When the leader's lease ends (crash, pause, cut from etcd), a follower that is
in sync takes over: it opens its store as any broker would at start (every recovered message
flagged redelivered) and serves. A leader that loses its lease stops at once (its clients are
closed with 320, nothing more is confirmed) and starts again as a follower (the process re-execs
itself, so nothing of the old role survives).

    follower:  store opened as a replica; AMQP and HTTP ports forward to the leader;
               replication client; candidacy queued in etcd while this node is in the ISR
    leader:    the store opened and recovered into a Broker; the AMQP server and the management
               API on the same ports; commits replicated before they are confirmed

Startup refuses clearly: etcd unreachable, another live process with this node's identity, a
replication peer that does not know the secret.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import tempfile
import time

from .. import __version__
from ..server import sdnotify
from ..server.app import Server, stop_watchdog
from ..storage.sqlite import SQLiteStore
from . import nodehttp
from . import wire as W
from .coordinator import Coordinator, DuplicateNode, ForgottenNode
from .etcd import EtcdClient, EtcdError, EtcdUnavailable
from .proxy import Forwarder
from .replication import Leader, NotLeader, Replica

log = logging.getLogger("usagi.cluster")

EXIT_LEASE_LOST = 3
REJOIN_ENV = "USAGI_CLUSTER_REJOIN"   # set by a node that restarts itself after losing its lease
EXIT_HANDED_OVER = 4       # internal: leadership handed over on purpose; the process starts again as a follower
HANDOVER_FLUSH_WAIT = 2.0  # seconds for the last confirms to leave the sockets before connections close
MEMBERS_REFRESH = 4        # the membership is read once every this many registry refreshes
TRUSTED_REFRESH = 0.5      # seconds between reads of the registry by the leader (one etcd range read)


class _Applier:
    """The follower's store as the replication client sees it (its calls run in a worker thread)."""

    def __init__(self, store: SQLiteStore):
        self.store = store

    def position(self):
        return self.store.position

    def apply(self, batches):
        self.store.apply_replicated([(e, lsn, W.decode(body)) for e, lsn, body in batches])

    def install_snapshot(self, path, epoch, lsn):
        self.store.install_snapshot(path)


def node_id_of(ident: dict) -> int:
    """The 63-bit id of a node (its etcd lease id) from the node id in node.json."""
    raw = str(ident.get("node_id", ""))
    try:
        n = int(raw[:16], 16)
    except ValueError:
        n = int.from_bytes(raw.encode()[:8].ljust(8, b"\0"), "big")
    return (n & 0x7FFF_FFFF_FFFF_FFFF) or 1


def _advertised(args) -> str:
    if args.advertise_host:
        return args.advertise_host
    if args.host and args.host not in ("0.0.0.0", "::"):
        return args.host
    return socket.gethostname()


class ClusterView:
    """What the leader's management API and `usagictl cluster_status` show of the cluster: the
    registry and the membership in etcd (refreshed every couple of seconds, never per request) and
    the leader's own view of each follower's replication; and the operations on the cluster that
    the management API offers (forget a node, hand leadership over)."""

    def __init__(self, node: "Node", leader: Leader, epoch: int):
        self.node = node
        self.leader = leader
        self.epoch = epoch
        self.registry: list = []        # running nodes (nodes/*, lease-bound)
        self.members: list = []         # every node that joined and was not forgotten (members/*)
        self._replicas_key = None
        self._replicas = ()

    def status(self) -> dict:
        me = self.node
        rep = {f["node"]: f for f in self.leader.status()}
        isr = sorted(self.leader.isr)
        running = {n.get("id"): n for n in self.registry}
        known = dict(running)
        for m in self.members:
            if m.get("id") not in known and m.get("id") not in self.leader.forgotten:
                known[m.get("id")] = dict(m, role="stopped")
        nodes = []
        for n in sorted(known.values(), key=lambda n: str(n.get("name", ""))):
            nid = n.get("id", "")
            r = rep.get(nid)
            leads = nid == me._my_name()
            up = nid in running
            role = "leader" if leads else n.get("role", "follower")
            if role == "candidate":     # queued in the election behind this leader: it follows
                role = "follower"
            nodes.append({"name": n.get("name"), "id": nid, "role": role,
                          "host": n.get("host"), "amqp": n.get("amqp"), "http": n.get("http"),
                          "version": n.get("version"), "in_sync": nid in isr, "running": up,
                          "connected": leads or bool(r and r.get("live")),
                          "epoch": self.epoch if leads or (r and r.get("live")) else n.get("epoch"),
                          "lag": 0 if leads else (r["lag"] if r else None)})
        return {"mode": "cluster", "cluster_name": me.cluster_name, "leader": me.info()["name"],
                "epoch": self.epoch, "lsn": self.leader.lsn, "isr": isr,
                "isr_names": self.names(isr), "min_in_sync": self.leader.min_in_sync, "nodes": nodes,
                "leader_changes": me.leader_changes, "last_leader_change": me.last_leader_change}

    def names(self, ids) -> list:
        """Node names for node ids (the ISR holds ids), as far as the registry knows them."""
        by_id = {m.get("id"): m.get("name") for m in self.members}
        by_id.update({n.get("id"): n.get("name") for n in self.registry})
        return sorted(by_id.get(i) or i for i in ids)

    def running_names(self) -> set:
        return {n.get("name") for n in self.registry}

    def replicas(self) -> tuple:
        """(leader, members, online) as a replicated queue reports them: the leader's name, the
        ISR's names, those of them that run. Cached until the ISR or the registry changes (a
        listing of many queues asks once per queue)."""
        key = (id(self.registry), id(self.members), frozenset(self.leader.isr))
        if self._replicas_key != key:
            members = self.names(self.leader.isr)
            up = self.running_names()
            me = self.node.info()["name"]
            self._replicas = (me, members, [n for n in members if n in up or n == me])
            self._replicas_key = key
        return self._replicas

    async def forget(self, name: str) -> tuple[str, str] | None:
        """rabbitmqctl forget_cluster_node: remove a stopped node for good (membership, ISR; a
        tombstone keeps its identity out). None when done, else (kind, what) of the refusal:
        ("running", ...) for a node that runs, ("unknown", ...) for one that is not a member."""
        coord = self.node.coord
        running = await coord.nodes()
        members = await coord.members()
        if any(n.get("name") == name for n in running):
            return "running", name
        ids = [m.get("id") for m in members if m.get("name") == name and m.get("id")]
        if not ids:
            return "unknown", name
        for nid in ids:
            await self.leader.forget(nid)
            await coord.forget_member(nid, name)
            log.warning("cluster: node %s (%s) removed from the cluster (forget_cluster_node)", name, nid)
        self.members = await coord.members()
        return None

    def quorum_critical(self) -> str | None:
        """Why stopping this leader now would leave the cluster without a node to take over (other
        nodes run, but none of them is in sync), or None."""
        me = self.node._my_name()
        others = [n for n in self.registry if n.get("id") != me]
        if others and not self.leader.successors():
            return ("no other node is in sync: stopping the leader now would leave the cluster without "
                    "a leader until it is back")
        return None

    def step_down(self) -> str | None:
        """Hand leadership over (usagictl step_down): refused (the reason) when no other in-sync
        node is connected to take over; else the hand-over starts and None is returned."""
        ready = self.leader.successors()
        if not ready:
            return "no other in-sync node is connected: there is no node to hand leadership over to"
        self.node.request_handover()
        return None

    def metrics(self) -> dict:
        """This node's cluster figures for Prometheus (see mgmt.metrics.cluster_families)."""
        me = self.node
        isr = self.leader.isr
        names = {n.get("id"): n.get("name") for n in self.members}
        names.update({n.get("id"): n.get("name") for n in self.registry})
        lag = [(names.get(f["node"], f["node"]), f["lag"]) for f in self.leader.status()]
        return {"node": me.info()["name"], "leader": True, "epoch": self.epoch, "isr_size": len(isr),
                "in_sync": True, "lsn": self.leader.lsn, "followers_lag": sorted(lag),
                "leader_changes": me.leader_changes, "members": len(self.status()["nodes"]),
                "running": len(self.registry), "etcd": me.etcd}


DEFAULT_CLUSTER_NAME = "usagi"


class Node:
    def __init__(self, args, tls_ctx=None, mgmt_tls_ctx=None):
        self.args = args
        # --cluster-name, or cluster_name in the configuration file: the cluster's keys in etcd
        self.cluster_name = args.cluster_name or DEFAULT_CLUSTER_NAME
        self.tls_ctx = tls_ctx
        self.mgmt_tls_ctx = mgmt_tls_ctx
        self.host = args.host or None
        self.advertise = _advertised(args)
        self.stop_event = asyncio.Event()
        self.etcd = EtcdClient([e.strip() for e in args.cluster_etcd.split(",") if e.strip()])
        self.coord: Coordinator | None = None
        self.secret = b""
        self.ident = None
        self.store_file = None
        self.leader_info: dict | None = None     # the current leader's registration, as far as known
        self.leader_epoch = 0
        self.role = "starting"
        self.server: Server | None = None
        self.exit_code = 0
        self._peer_ips: set = set()       # addresses of followers that authenticated (as leader)
        self._known_ips: set = set()      # other nodes' addresses seen in the registry (kept)
        self.leader_changes = 0           # leaders this node has seen take over (or became) since it started
        self.last_leader_change: dict | None = None   # the last of them: {time (ms), leader, epoch, previous}
        self.handover = asyncio.Event()   # set by `usagictl step_down` on the leader
        self.replica: Replica | None = None
        self._refreshes = 0
        self._writing_since = None        # when the running local store write began (the lease watchdog)

    def request_handover(self):
        self.handover.set()

    def _leader_changed(self, name, epoch: int):
        """Count a leader this node saw take over (or became), and remember when and who."""
        prev = self.last_leader_change
        self.leader_changes += 1
        self.last_leader_change = {"time": int(time.time() * 1000), "leader": name, "epoch": epoch,
                                   "previous": prev["leader"] if prev else None}

    # ------------------------------------------------------------------ addresses
    def info(self) -> dict:
        a = self.args
        return {"name": a.node_name or f"usagi@{socket.gethostname()}", "host": self.advertise,
                "amqp": [self.advertise, a.port], "http": [self.advertise, a.management_port],
                "repl": [self.advertise, a.replication_port], "version": __version__}

    def _leader_addr(self, what: str):
        info = self.leader_info
        if not info or info.get("id") == self._my_name():
            return None
        addr = info.get(what)
        return (addr[0], addr[1]) if isinstance(addr, list) and len(addr) == 2 else None

    def _my_name(self) -> str:
        return f"{self.coord.node_id:x}"

    # ------------------------------------------------------------------ run
    async def run(self) -> int:
        from ..server.startup import DataDirInUse, NodeIdentityError, open_data_dir, write_node_identity
        loop = asyncio.get_running_loop()
        def stop():
            if not self.stop_event.is_set():
                self.stop_event.set()
                stop_watchdog(loop)
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop)
            except (NotImplementedError, RuntimeError):
                pass
        try:
            self.ident, self.store_file = open_data_dir(self.args)
        except (DataDirInUse, NodeIdentityError) as e:
            log.error("%s", e)
            return 1
        if self.ident is None:
            # a new node: its (empty) store and identity are made before it joins
            store = SQLiteStore(self.args.data_dir, self.store_file)
            store.open_replica()
            store.close(commit=False)
            self.ident = write_node_identity(self.args.data_dir, self.store_file)
        node_id = node_id_of(self.ident)
        self.coord = Coordinator(self.etcd, self.cluster_name, node_id, self.info(),
                                 ttl=self.args.cluster_lease_ttl, progress_ok=self._progress_ok)
        try:
            await self._join()
        except (DuplicateNode, ForgottenNode) as e:
            log.error("%s", e)
            await self.coord.stop(revoke=True)
            await self.etcd.close()
            return 1
        except EtcdError as e:
            log.error("cannot reach etcd at %s: %s", self.args.cluster_etcd, e)
            await self.etcd.close()
            return 1
        if self.stop_event.is_set():
            await self.coord.stop(revoke=True)
            await self.etcd.close()
            return 0
        log.info("cluster %s: node %s (%x) joined; etcd %s", self.cluster_name, self.info()["name"],
                 node_id, self.args.cluster_etcd)
        try:
            while not self.stop_event.is_set():
                epoch = await self._follow()
                if epoch is None:
                    break
                outcome = await self._lead(epoch)
                if outcome == "lost":
                    self.exit_code = EXIT_LEASE_LOST
                    break
                if outcome == "handover":
                    self.exit_code = EXIT_HANDED_OVER
                    break
        finally:
            stopping_gracefully = self.exit_code != EXIT_LEASE_LOST
            try:
                await self.coord.stop(revoke=stopping_gracefully)
            except Exception:  # noqa: BLE001
                pass
            await self.etcd.close()
        if self.exit_code in (EXIT_LEASE_LOST, EXIT_HANDED_OVER) and os.environ.get("USAGI_CLUSTER_NO_REEXEC") != "1":
            # start again as a follower, with nothing of the old role left in the process (after a
            # hand-over the lease was revoked: the next in-sync node was elected at once)
            log.warning("cluster: restarting as a follower")
            logging.shutdown()
            os.environ[REJOIN_ENV] = "1"
            os.execv(sys.executable, sys.orig_argv)
        return self.exit_code

    async def _join(self):
        """Take the lease and register, trying again while etcd does not answer: etcd may be
        electing a leader, or starting along with this node. A node that restarted itself after
        losing its lease (REJOIN_ENV set) tries for as long as it runs; a node started by hand
        gives up after --cluster-join-timeout with the last error."""
        rejoin = os.environ.get(REJOIN_ENV) == "1"
        loop = asyncio.get_running_loop()
        give_up = loop.time() + max(0.0, self.args.cluster_join_timeout)
        delay, said = 0.2, 0.0
        while True:
            try:
                await self.coord.start()
                self.secret = await self.coord.secret()
                return
            except EtcdUnavailable as e:
                self.coord.abandon()
                now = loop.time()
                if not rejoin and now + delay > give_up:
                    raise
                if now - said >= 10.0:
                    said = now
                    log.warning("cannot reach etcd at %s: %s; trying again", self.args.cluster_etcd, e)
                try:
                    await asyncio.wait_for(self.stop_event.wait(), delay)
                    return              # stopped while waiting
                except asyncio.TimeoutError:
                    pass
                delay = min(delay * 2, 2.0)

    # ------------------------------------------------------------------ a follower's own view
    def follower_listeners(self) -> list:
        """(protocol, port) of what this follower listens on."""
        return list(getattr(self, "_listening", []))

    async def _isr(self):
        try:
            return await self.coord.read_isr()
        except EtcdError:
            return None

    async def follower_metrics(self) -> dict:
        """This follower's figures for Prometheus (mgmt.metrics.cluster_families); one etcd read."""
        isr = await self._isr()
        nodes = (isr or {}).get("nodes", [])
        rep = self.replica
        lag = max(0, rep.received - rep.applied) if rep is not None and rep.connected else None
        return {"node": self.info()["name"], "leader": False, "epoch": self.leader_epoch,
                "in_sync": self._my_name() in nodes, "isr_size": len(nodes), "lag": lag,
                "leader_changes": self.leader_changes, "etcd": self.etcd}

    async def quorum_critical(self) -> str | None:
        """Why stopping this follower would stop the cluster's confirms (it is in the ISR, and the
        ISR would fall below min-in-sync without it), or None."""
        isr = await self._isr()
        nodes = (isr or {}).get("nodes", [])
        need = max(1, self.args.cluster_min_in_sync)
        if self._my_name() in nodes and len(nodes) - 1 < need:
            return (f"the in-sync replica set would fall below min-in-sync ({need}) without this node: "
                    f"publishes would not be confirmed until another node is in sync")
        return None

    def _progress_ok(self) -> bool:
        """The lease watchdog: renew only while the loop ticks and commits complete."""
        srv = self.server
        if srv is None:
            return True
        now = time.monotonic()
        ttl = self.args.cluster_lease_ttl
        if now - srv.last_tick > max(1.0, ttl / 3):
            return False
        # the local write only: waiting for a stalled follower's acks is not a stuck node (the
        # follower leaves the ISR after the ack timeout, which may be longer than TTL/2)
        started = self._writing_since
        return started is None or now - started < ttl / 2

    # ------------------------------------------------------------------ follower
    async def _follow(self) -> int | None:
        """Follow until elected (returns the epoch) or stopped (None)."""
        self.role = "follower"
        store = SQLiteStore(self.args.data_dir, self.store_file)
        store.open_replica()
        applier = _Applier(store)
        loop = asyncio.get_running_loop()
        amqp = Forwarder(lambda: self._leader_addr("amqp"), send_proxy_header=True,
                         local_host=self.advertise)
        http = Forwarder(lambda: self._leader_addr("http"), send_proxy_header=False,
                         local_host=self.advertise)
        # health checks are this node's own; the rest of the management API is the leader's
        checks = nodehttp.HealthChecks(self, nodehttp.Users(os.path.join(self.args.data_dir, self.store_file)),
                                       getattr(self.args, "loopback_users", ("guest",)))
        servers = []
        self._listening = []
        metrics_runner = None
        try:
            servers.append(await loop.create_server(amqp.factory, self.host, self.args.port,
                                                    reuse_address=True, backlog=1024))
            self._listening.append(("amqp", self.args.port))
            if self.args.management_port >= 0 and not self.args.no_management:
                servers.append(await loop.create_server(lambda: nodehttp.Sniffer(http.factory, checks), self.host,
                                                        self.args.management_port, reuse_address=True, backlog=1024))
                self._listening.append(("http", self.args.management_port))
        except OSError as e:
            log.error("cluster: cannot listen: %s", e)
            for srv in servers:
                srv.close()
            store.close(commit=False)
            self.stop_event.set()
            return None
        if getattr(self.args, "metrics_port", -1) is not None and self.args.metrics_port >= 0 \
                and not self.args.no_management and self.args.management_port != -1:
            metrics_runner = await nodehttp.start_metrics(self, self.host, self.args.metrics_port)
            if metrics_runner is not None:
                self._listening.append(("http/prometheus", self.args.metrics_port))
        log.info("AMQP listener on %s:%d (follower: forwarding to the leader)", self.host or "*", self.args.port)
        sdnotify.notify("READY=1", "STATUS=cluster node: following")
        await self.coord.register(role="follower", lsn=store.position[1])
        elected = asyncio.ensure_future(self._campaign())
        watcher = asyncio.ensure_future(self._watch_leader([amqp, http]))
        follower = asyncio.ensure_future(self._replicate(applier))
        stop = asyncio.ensure_future(self.stop_event.wait())
        lost = asyncio.ensure_future(self.coord.lost.wait())
        try:
            done, _ = await asyncio.wait({elected, stop, lost}, return_when=asyncio.FIRST_COMPLETED)
            epoch = elected.result() if elected in done and not stop.done() and not lost.done() else None
        finally:
            for t in (elected, watcher, follower, stop, lost):
                t.cancel()
            if stop.done() and not lost.done() and not elected.done():
                # a graceful stop: no new clients; the confirms on their way to the forwarded
                # clients get through before their connections close
                for srv in servers:
                    srv.close()
                try:
                    await amqp.drain()
                except Exception:  # noqa: BLE001 - the drain is a courtesy: the stop goes on
                    pass
            await asyncio.gather(follower, return_exceptions=True)
            amqp.close_all()
            http.close_all()
            for srv in servers:
                srv.close()
            if metrics_runner is not None:
                await metrics_runner.cleanup()      # the port is the leader's next
            try:
                await checks.server.shutdown(0.5)
            except Exception:  # noqa: BLE001
                pass
            self.replica = None
            self._listening = []
            store.close(commit=False)
        if epoch is None and lost.done() and not self.stop_event.is_set():
            self.exit_code = EXIT_LEASE_LOST
        return epoch

    async def _campaign(self) -> int:
        """Queue a candidacy while this node is in the ISR (or there is none yet: a new cluster);
        once elected, check again and resign if it is no longer in sync."""
        me = self._my_name()
        while True:
            try:
                isr = await self.coord.read_isr()
                if isr is not None and me not in isr.get("nodes", []):
                    await asyncio.sleep(0.5)
                    continue
                epoch = await self.coord.campaign()
                isr = await self.coord.read_isr()
                if isr is not None and me not in isr.get("nodes", []):
                    log.info("cluster: elected while out of sync: resigning")
                    await self.coord.resign()
                    continue
                return epoch
            except EtcdError as e:
                log.warning("cluster: campaign: %s", e)
                await asyncio.sleep(0.5)

    async def _watch_leader(self, forwarders):
        """Keep `leader_info` current; close forwarded connections when the leader changes."""
        last = None
        seen_epoch = self.leader_epoch
        while True:
            try:
                cur = await self.coord.current_leader()
            except EtcdError:
                cur = None
            if cur is not None:
                info, epoch = cur
                self.leader_info, self.leader_epoch = info, epoch
                if info.get("host") and info.get("host") != self.advertise:
                    ip = _resolve(info["host"])     # if this node leads next, the old leader's
                    if ip is not None:              # forwarded clients are trusted at once
                        self._known_ips.add(ip)
            else:
                self.leader_info = None
            key = (self.leader_info or {}).get("id"), self.leader_epoch
            if key != last:
                if last is not None:
                    for f in forwarders:
                        f.close_all()
                if key[0] is not None and (last is None or key[1] != last[1]) and key[1] != seen_epoch:
                    seen_epoch = key[1]
                    self._leader_changed(self.leader_info.get("name"), key[1])
                last = key
            await asyncio.sleep(0.2)

    async def _replicate(self, applier):
        """Follow whichever node leads, reconnecting; when etcd names another leader, the stream
        from the old one is dropped at once. A refused or garbled stream is logged (once)."""
        replica = self.replica = Replica(self.coord.node_id, self.secret, applier,
                                         os.path.join(self.args.data_dir, "snapshot"))
        last_error = None
        while True:
            addr = self._leader_addr("repl")
            if addr is None:
                await asyncio.sleep(0.1)
                continue
            run = asyncio.ensure_future(replica.run(addr[0], addr[1], local_host=_ip_of(self.advertise)))
            try:
                while not run.done():
                    await asyncio.wait({run}, timeout=0.2)
                    if not run.done() and self._leader_addr("repl") != addr:
                        run.cancel()
                await asyncio.gather(run, return_exceptions=True)
                exc = None if run.cancelled() else run.exception()
            except asyncio.CancelledError:
                run.cancel()
                raise
            if exc is None:
                last_error = None
            else:
                kind = "refused" if isinstance(exc, W.WireError) else "ended"
                msg = f"replication from {addr[0]}:{addr[1]} {kind}: {type(exc).__name__} {exc}"
                if msg != last_error:
                    (log.error if kind == "refused" else log.info)("cluster: %s", msg)
                last_error = msg
            try:
                await self.coord.register(role="follower", lsn=applier.position()[1])
            except EtcdError:
                pass
            await asyncio.sleep(0.2)

    # ------------------------------------------------------------------ leader
    async def _lead(self, epoch: int) -> str:
        """Serve as the leader until stopped ("stopped") or the lease is lost ("lost")."""
        from ..server.startup import build_broker
        self.role = "leader"
        if epoch != self.leader_epoch:
            self._leader_changed(self.info()["name"], epoch)
        self.leader_epoch = epoch
        self.handover.clear()
        args = self.args
        t0 = time.monotonic()
        store = SQLiteStore(args.data_dir, self.store_file)
        # recovery reads the whole store: off the event loop, so that the lease goes on being
        # renewed however long a large backlog takes to load
        loop = asyncio.get_running_loop()
        broker, counts = await loop.run_in_executor(
            None, lambda: build_broker(args, store, self.ident, self.store_file, redeliver_all=True))
        if self.coord.lost.is_set():
            store.close(commit=False)
            return "lost"
        if getattr(args, "load_definitions", None):
            # rabbitmq.conf's load_definitions: applied by each new leader, replicated with its first batch
            from ..mgmt.bootdefs import DefinitionsError, load_at_boot
            try:
                await loop.run_in_executor(None, lambda: load_at_boot(broker, args.load_definitions, commit=False))
            except DefinitionsError as e:
                log.error("cluster: cannot start as leader: %s", e)
                store.close(commit=False)
                await self.coord.resign()
                return "stopped"
        broker.config.data_dir = args.data_dir
        if "cluster_name" not in broker.global_parameters:
            # the name clients and the dashboard see: the cluster's, whichever node leads
            broker.server_properties["cluster_name"] = self.cluster_name
        last = store.position[1]
        history = list(store.history) + [(epoch, last + 1)]

        async def snapshot():
            fd, path = tempfile.mkstemp(prefix="snapshot-", suffix=".db", dir=args.data_dir)
            os.close(fd)
            e, lsn = await asyncio.get_running_loop().run_in_executor(None, store.snapshot_to, path)
            return path, e, lsn
        leader = Leader(self.coord, self.secret, epoch, history, last, snapshot=snapshot,
                        ack_timeout=args.cluster_ack_timeout, min_in_sync=max(1, args.cluster_min_in_sync),
                        catchup_rate=int(args.cluster_catchup_rate * 1024 * 1024))
        try:
            await leader.start(self.host, args.replication_port)
        except (NotLeader, OSError) as e:
            log.error("cluster: cannot start as leader: %s", e)
            store.close(commit=False)
            await self.coord.resign()
            return "stopped"
        server = self.server = Server(broker, self.host, args.port, tls_context=self.tls_ctx,
                                      tls_port=args.tls_port if self.tls_ctx is not None else None)

        async def commit():
            batches = store.take_batch()
            if batches is None:
                return
            lsn = leader.append(W.encode(batches))
            self._writing_since = time.monotonic()
            try:
                await loop.run_in_executor(None, store.write_batch, batches, (epoch, lsn))
            finally:
                self._writing_since = None
            await leader.wait_durable(lsn)
        server.committer = commit
        self._peer_ips = set()

        def on_peer(ip):        # a follower that proved it knows the secret forwards clients from there
            self._peer_ips.add(ip)
            server.trusted_proxies.add(ip)
            asyncio.ensure_future(self._refresh_trusted(server, view))     # it shows as running at once
        leader.on_peer = on_peer
        view = broker.cluster = ClusterView(self, leader, epoch)
        await self._refresh_trusted(server, view)
        await server.start()
        services = []
        if not args.no_management and args.management_port != -1:
            from ..mgmt.service import management_service
            # the broker serves AMQP whatever happens here: a port that cannot be bound must not
            # leave the cluster without a leader
            for metrics in (args.metrics_port, -1):
                svc = management_service(self.host, args.management_port, metrics, ssl_context=self.mgmt_tls_ctx)
                try:
                    services.append(await svc(broker, server))
                    break
                except OSError as e:
                    log.error("cluster: the management API could not start on this node%s: %s",
                              " (trying again without metrics)" if metrics != -1 else "", e)
        if broker.store_pending():
            server._schedule_commit()            # what recovery changed goes out as the epoch's first batch
        await self.coord.register(role="leader", epoch=epoch, lsn=last)
        log.info("cluster: node %s leads (epoch %d) after %.2fs; recovered %d queues and %d messages",
                 self.info()["name"], epoch, time.monotonic() - t0, counts["queues"], counts["messages"])
        log.info("AMQP listener on %s:%d", *server.listeners[0][1:])
        sdnotify.notify("READY=1", "STATUS=cluster node: leading")
        refresher = asyncio.ensure_future(self._trusted_loop(server, view))
        stop = asyncio.ensure_future(self.stop_event.wait())
        lost = asyncio.ensure_future(self.coord.lost.wait())
        handover = asyncio.ensure_future(self.handover.wait())
        done, _ = await asyncio.wait({stop, lost, handover}, return_when=asyncio.FIRST_COMPLETED)
        refresher.cancel()
        handover.cancel()
        outcome = "lost" if lost in done else "stopped" if stop in done else "handover"
        if outcome == "lost":
            # nothing more may be confirmed: drop every client at once, then give up the role
            leader.lose("lease lost")
            broker.shutdown_connections("broker forced connection closure with reason 'lease lost'")
            broker.flush_output()
        else:
            # leaving on purpose (a stop, or a hand-over): confirm everything taken first
            log.info("cluster: %s: taking no more input; confirming what was taken",
                     "handing leadership over" if outcome == "handover" else "stopping")
            await self._drain(server, broker)
        for s in services:
            try:
                await s.stop()
            except Exception:  # noqa: BLE001
                pass
        if outcome != "lost":
            _resume_input(server)   # (server.stop closes every connection before it reads again)
        await server.stop({"stopped": "shutdown", "handover": "leader hand-over"}.get(outcome, "lease lost"))
        await leader.stop()
        stop.cancel()
        lost.cancel()
        self.server = None
        return outcome

    async def _drain(self, server, broker):
        """Before leadership is given up on purpose: stop listening, read nothing more from any
        client (as a resource alarm does), and wait until everything read so far is committed,
        replicated to the ISR and confirmed; then give the confirms a moment to leave the sockets.
        A publish the client sent but this node never read is not confirmed: the client sees the
        connection close before its confirm, and republishes."""
        for srv in server.servers:
            srv.close()
        for c in list(server.conns):
            tr = getattr(c, "transport", None)
            if c.closed or tr is None or tr.is_closing():
                continue
            c.alarm_paused = True            # nothing resumes reading from here on
            try:
                tr.pause_reading()
            except Exception:  # noqa: BLE001 - a transport already gone
                pass
        deadline = time.monotonic() + self.args.cluster_ack_timeout + 5
        while time.monotonic() < deadline:
            try:
                await asyncio.wait_for(server.commit_barrier(), max(0.1, deadline - time.monotonic()))
            except Exception as e:  # noqa: BLE001 - a commit that failed got its nacks
                log.warning("cluster: the last commit before giving up leadership failed: %s", e)
                break
            # input already read but left for a later turn (a long burst) is handled first
            if not any(getattr(c, "held_frames", None) or getattr(c, "yielded", False) for c in server.conns):
                break
            await asyncio.sleep(0.01)
        broker.flush_output()
        end = time.monotonic() + HANDOVER_FLUSH_WAIT
        while time.monotonic() < end:
            if not any(c.transport is not None and not c.transport.is_closing()
                       and c.transport.get_write_buffer_size() for c in server.conns):
                break
            await asyncio.sleep(0.01)

    async def _refresh_trusted(self, server, view=None):
        """Connections from other nodes' addresses start with a PROXY header (forwarded clients);
        the registry also feeds what the management API shows of the cluster."""
        try:
            nodes = await self.coord.nodes()
        except EtcdError:
            return
        if view is not None:
            view.registry = nodes
            self._refreshes += 1
            if self._refreshes % MEMBERS_REFRESH == 1:
                try:
                    view.members = await self.coord.members()
                except EtcdError:
                    pass
        mine = self.advertise
        trusted = {_resolve(n.get("host")) for n in nodes if n.get("host") and n.get("host") != mine}
        trusted.discard(None)
        # Addresses are added, never dropped while this node leads: a node whose lease ended (the
        # old leader, restarting as a follower) is out of the registry for a moment, and the
        # clients it forwards meanwhile must not be refused. The set object stays (the leader
        # adds to it as followers prove they know the secret).
        self._known_ips |= trusted
        server.trusted_proxies.update(self._known_ips)

    async def _trusted_loop(self, server, view):
        while True:
            await asyncio.sleep(TRUSTED_REFRESH)
            await self._refresh_trusted(server, view)


def _resume_input(server):
    """Read from the clients again after a drain, so that their answers to connection.close are
    read (a connection that is closing takes nothing else)."""
    for c in list(server.conns):
        tr = getattr(c, "transport", None)
        if c.closed or tr is None or tr.is_closing() or not c.alarm_paused:
            continue
        c.alarm_paused = False
        if not c.reading_paused and not c.input_paused:
            try:
                tr.resume_reading()
            except Exception:  # noqa: BLE001 - a transport already gone
                pass


def _ip_of(host: str):
    """An address to bind to: the IP the advertised host name stands for, or None."""
    return _resolve(host)


_resolved: dict = {}     # host name -> address: the registry names a handful of nodes


def _resolve(host: str | None):
    """The address a node's advertised host stands for, looked up once (the lookup blocks)."""
    if not host:
        return None
    ip = _resolved.get(host)
    if ip is None:
        try:
            ip = socket.getaddrinfo(host, None)[0][4][0]
        except OSError:
            return None
        if len(_resolved) < 1024:
            _resolved[host] = ip
    return ip


async def run_node(args, tls_ctx=None, mgmt_tls_ctx=None) -> int:
    return await Node(args, tls_ctx, mgmt_tls_ctx).run()
