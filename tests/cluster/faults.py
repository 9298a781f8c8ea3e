"""The fault run: a workload against a 3-node cluster while faults are injected one after another.

Kinds of fault (each healed before the next one starts):

    kill-leader      kill -9 of the leader, started again with its own command line after a moment
    kill-follower    kill -9 of a follower, started again likewise
    pause-leader     SIGSTOP of the leader for longer than the lease (a zombie), then SIGCONT
    term-leader      graceful stop of the leader (hand-over), started again
    kill-etcd        kill -9 of one etcd member (with 3 members), started again
    kill-etcd-leader kill -9 of the etcd leader (its lease TTLs reset), started again

Partitions (a cluster in network namespaces, netns.py), each held a while, then healed:

    isolate-leader       the leader cut from everyone: etcd, the other nodes, the clients
    cut-leader-etcd      the leader cut from etcd only (it still reaches its followers and clients)
    cut-leader-followers the leader cut from the other nodes only (it keeps its lease)
    cut-follower         one follower cut from everyone
    drop-link            the link between the leader and one follower only

For each fault, the failover time is measured from the fault to the first confirmed publish after
it. At the end everything is healed, the queue is drained, and the checker counts lost (confirmed,
never drained), unexpected, duplicated and recovered messages (workload.py).
"""
from __future__ import annotations

import asyncio
import random
import re
import time

# how long a fault may leave the cluster without a serving leader before the run fails: far above
# the failover times the run measures (seconds, with a 2 s lease), so that a loaded machine whose
# etcd elects slowly fails no test; the figures themselves are the run's output, not asserted here
FAILOVER_WAIT = 60

KINDS = ("kill-leader", "kill-follower", "pause-leader", "term-leader", "kill-etcd", "kill-etcd-leader")
# partitions: only with a cluster in network namespaces (Cluster(netns=True)); packets dropped silently
PARTITIONS = ("isolate-leader", "cut-leader-etcd", "cut-leader-followers", "cut-follower", "drop-link")


class FaultRun:
    def __init__(self, cluster, workload, faults: int, kinds=KINDS, settle: float = 1.0, seed: int | None = None,
                 log=print):
        self.cluster = cluster
        self.workload = workload
        self.faults = faults
        self.kinds = [k for k in kinds if (k.startswith("kill-etcd") is False or len(cluster.etcd.members) >= 3)
                      and (k not in PARTITIONS or cluster.net is not None)]
        self.settle = settle
        self.rng = random.Random(seed)
        self.log = log
        self.records: list = []          # (kind, injected at, healed at)
        self.no_successor = 0            # leaders that went with no in-sync node to take over

    async def run(self):
        c = self.cluster
        for i in range(self.faults):
            kind = self.kinds[i % len(self.kinds)]
            await asyncio.to_thread(c.wait_leader, 60)
            await asyncio.sleep(self.settle + self.rng.random())
            self.fault_at = None
            await asyncio.to_thread(self._inject_and_heal, kind)
            t = self.fault_at
            self.records.append((kind, t, time.monotonic()))
            self.log(f"fault {i + 1}/{self.faults}: {kind}, failover "
                     f"{self._fmt(self.workload.failover_time(t))}")
        await asyncio.to_thread(self._heal_all)

    @staticmethod
    def _fmt(x):
        return "n/a" if x is None else f"{x:.2f}s"

    def _inject_and_heal(self, kind: str):
        c = self.cluster
        ttl = c.ttl
        if kind in ("kill-leader", "pause-leader", "term-leader"):
            node = c.wait_leader(60)
            self.fault_at = time.monotonic()
            if kind == "kill-leader":
                node.kill()
                if self._await_successor(node):
                    time.sleep(self.rng.uniform(0, 1.0))
                node.start()
            elif kind == "pause-leader":
                node.pause()
                try:
                    if self._await_successor(node):
                        time.sleep(self.rng.uniform(0, 1.0))
                finally:
                    node.resume()
            else:
                node.term()
                self._await_successor(node)
                node.start()
        elif kind == "kill-follower":
            followers = c.followers()
            node = self.rng.choice(followers) if followers else None
            self.fault_at = time.monotonic()
            if node is not None:
                node.kill()
                time.sleep(self.rng.uniform(0.5, ttl + 1.0))
                node.start()
        elif kind in PARTITIONS:
            self._partition(kind)
        elif kind in ("kill-etcd", "kill-etcd-leader"):
            member = c.etcd.leader() if kind == "kill-etcd-leader" else self.rng.choice(c.etcd.members)
            if member is None:
                member = self.rng.choice(c.etcd.members)
            self.fault_at = time.monotonic()
            member.kill()
            time.sleep(self.rng.uniform(0.5, 2.0))
            c.etcd.restart(member)
        # healed: every node runs again and the ISR is whole before the next fault
        for n in c.nodes:
            if not n.alive:
                n.start()
        c.wait_leader(60)
        try:
            c.wait_isr(len(c.nodes), timeout=60)
        except AssertionError:
            pass            # a slow catch-up is not a failure of the run; the checker decides

    def _await_successor(self, node) -> bool:
        """After the leader `node` went: wait for another node to lead (True). A leader whose ISR
        was itself alone has no successor: only an in-sync node may lead, so the cluster waits for
        it to come back, as an operator would bring it back; that is counted (`no_successor`) and
        False returned, for the caller to restore the node."""
        c = self.cluster
        deadline = time.monotonic() + FAILOVER_WAIT
        while True:
            try:
                c.wait_leader(min(5.0, max(0.1, deadline - time.monotonic())), not_node=node)
                return True
            except AssertionError:
                if not c.in_sync_successors(node):
                    self.no_successor += 1
                    self.log(f"  (no in-sync node besides {node.name}: it is brought back)")
                    return False
                if time.monotonic() >= deadline:
                    raise

    def _partition(self, kind: str):
        c = self.cluster
        net = c.net
        ttl = c.ttl
        etcd = [m.host for m in c.etcd.members]
        leader = c.wait_leader(60)
        others = [n for n in c.nodes if n is not leader]
        # a fault begins once the cut is in place (one nft transaction, when `cut` returns)
        try:
            if kind == "isolate-leader":
                net.cut(leader.host, etcd + [n.host for n in others] + [net.gateway])
                self.fault_at = time.monotonic()
                self._await_successor(leader)
                time.sleep(self.rng.uniform(0.5, 2.0))
            elif kind == "cut-leader-etcd":
                net.cut(leader.host, etcd)
                self.fault_at = time.monotonic()
                self._await_successor(leader)
                time.sleep(self.rng.uniform(0.5, 2.0))
            elif kind == "cut-leader-followers":
                net.cut(leader.host, [n.host for n in others])
                self.fault_at = time.monotonic()
                time.sleep(self.rng.uniform(ttl, ttl + 3.0))
            elif kind == "cut-follower":
                f = self.rng.choice(others)
                net.cut(f.host, etcd + [n.host for n in c.nodes if n is not f] + [net.gateway])
                self.fault_at = time.monotonic()
                time.sleep(self.rng.uniform(ttl, ttl + 2.0))
            else:                       # drop-link
                f = self.rng.choice(others)
                net.cut(leader.host, [f.host])
                self.fault_at = time.monotonic()
                time.sleep(self.rng.uniform(ttl, ttl + 2.0))
        finally:
            net.heal()

    def _heal_all(self):
        c = self.cluster
        if c.net is not None:
            c.net.heal()
        for m in c.etcd.members:
            if m.proc is None or m.proc.poll() is not None:
                c.etcd.restart(m)
        for n in c.nodes:
            if not n.alive:
                n.start()
        c.wait_leader(60)
        c.wait_isr(len(c.nodes), timeout=90)

    def failovers(self) -> dict:
        """Failover times per kind of fault: {kind: [seconds, ...]} (None where none was measured)."""
        out: dict = {}
        for kind, t, _healed in self.records:
            out.setdefault(kind, []).append(self.workload.failover_time(t))
        return out


def run_with_workload(cluster, workload, faults: int, kinds=KINDS, seed: int | None = None, log=print) -> "FaultRun":
    """The whole run: the workload set up and started, the faults one after another, then the
    workload stopped and the queue drained (for workload.check())."""
    async def go():
        await workload.setup()
        workload.start()
        run = FaultRun(cluster, workload, faults, kinds=kinds, settle=0.5, seed=seed, log=log)
        await run.run()
        await asyncio.sleep(1)
        await workload.stop()
        await workload.drain()
        return run
    return asyncio.run(go())


def summary(failovers: dict) -> dict:
    out = {}
    for kind, times in failovers.items():
        ok = sorted(x for x in times if x is not None)
        if not ok:
            out[kind] = {"n": len(times), "p50": None, "max": None}
            continue
        out[kind] = {"n": len(times), "p50": round(ok[len(ok) // 2], 2), "max": round(ok[-1], 2)}
    return out


# ---------------------------------------------------------------------------------------- split brain
_ELECTED = re.compile(r"elected leader, epoch (\d+) \(monotonic ([\d.]+)\)")
_STOPS = re.compile(r"leader of epoch (\d+) stops \((.*)\); last confirm at monotonic ([\d.]+), lease deadline ([\d.-]+)")


def split_brain(log_texts) -> dict:
    """What the nodes' logs say of leadership: every election (epoch, monotonic time), every
    leader's end (its last confirm and its lease deadline), and the violations: a confirm after
    the lease deadline, or after a later leader was elected."""
    elected, stops = [], []
    for text in log_texts:
        elected += [(int(e), float(t)) for e, t in _ELECTED.findall(text)]
        stops += [(int(e), why, float(last), float(dl)) for e, why, last, dl in _STOPS.findall(text)]
    violations = []
    for epoch, why, last, deadline in stops:
        if not last:
            continue                    # it never confirmed anything
        if last > deadline:
            violations.append(f"epoch {epoch}: a confirm at {last:.3f}, after the lease deadline {deadline:.3f}")
        for e2, t2 in elected:
            if e2 > epoch and last >= t2:
                violations.append(f"epoch {epoch}: a confirm at {last:.3f}, after epoch {e2} was elected at {t2:.3f}")
    return {"elections": len(elected), "leader_ends": len(stops), "violations": violations}
