"""Network partitions: a cluster whose nodes and etcd members each run in a network namespace,
links cut silently with nftables while publishers and consumers run. 0 confirmed messages lost,
0 unexpected, and no confirm from a leader past its lease deadline or after a later leader's
election (the split-brain probe, from the nodes' own account of each election and each end).
tools/cluster_faults.py --partitions runs the long one."""
from __future__ import annotations

import os
import warnings

import pytest

from etcdutil import need_etcd
from faults import PARTITIONS, run_with_workload, split_brain, summary
from harness import Cluster
from netns import need_netns
from support.reports import FaultRunReport
from workload import Workload

FAULTS = int(os.environ.get("USAGI_CLUSTER_PARTITIONS", "10"))

pytestmark = pytest.mark.timeout(60 * 15)


def test_the_split_brain_probe_sees_a_confirm_past_the_deadline_or_after_a_later_election():
    ok = ["cluster: node 1 elected leader, epoch 5 (monotonic 100.000)",
          "replication: leader of epoch 5 stops (the lease is no longer valid); last confirm at monotonic "
          "104.100, lease deadline 104.500",
          "cluster: node 2 elected leader, epoch 9 (monotonic 105.200)"]
    assert split_brain(["\n".join(ok)]) == {"elections": 2, "leader_ends": 1, "violations": []}
    late = ok[1].replace("104.100", "104.600")
    v = split_brain(["\n".join([ok[0], late, ok[2]])])["violations"]
    assert len(v) == 1 and "after the lease deadline" in v[0]
    after = ok[1].replace("104.100", "105.300").replace("104.500", "106.000")
    v = split_brain(["\n".join(ok[:1] + ok[2:]), after])["violations"]
    assert len(v) == 1 and "after epoch 9 was elected" in v[0]


def test_partitions_lose_no_confirmed_message_and_no_deposed_leader_confirms():
    need_etcd()
    need_netns()
    cluster = Cluster(3, etcd_members=3, ttl=2, netns=True)
    try:
        cluster.start(timeout=60)
        wl = Workload(cluster.urls(), publishers=2, consumers=2, window=20)
        run = run_with_workload(cluster, wl, FAULTS, kinds=PARTITIONS, seed=FAULTS)
        result = wl.check()
        fo = summary(run.failovers())
        logs = [open(n.log_path, errors="replace").read() for n in cluster.nodes]
        probe = split_brain(logs)
        warnings.warn(FaultRunReport(f"cluster partition run: {FAULTS} partitions, {result['ok']} confirmed "
                                     f"publishes, lost {result['lost_count']}, unexpected "
                                     f"{result['unexpected_count']}, duplicated {result['duplicated']}, "
                                     f"unknown {result['unknown']}; elections {probe['elections']}; "
                                     f"failover {fo}"))
        assert result["lost_count"] == 0, result
        assert result["unexpected_count"] == 0, result
        assert result["ok"] > 100, result
        assert probe["violations"] == [], probe
        # isolating the leader, or cutting it from etcd, makes another node lead
        assert probe["elections"] >= 3, probe
    finally:
        cluster.cleanup()
