"""A short fault run (every kind of fault, 24 in all) with publishers and consumers on real clients:
0 confirmed messages lost, 0 unexpected. tools/cluster_faults.py runs the long one."""
from __future__ import annotations

import os
import warnings

import pytest

from etcdutil import need_etcd
from support.reports import FaultRunReport
from faults import run_with_workload, summary
from harness import Cluster
from workload import Workload

FAULTS = int(os.environ.get("USAGI_CLUSTER_FAULTS", "24"))

pytestmark = pytest.mark.timeout(60 * 15)


def test_fault_run_loses_no_confirmed_message():
    need_etcd()
    cluster = Cluster(3, etcd_members=3, ttl=2).start()
    try:
        wl = Workload(cluster.urls(), publishers=2, consumers=2, window=20)
        run = run_with_workload(cluster, wl, FAULTS, seed=FAULTS)
        result = wl.check()
        fo = summary(run.failovers())
        warnings.warn(FaultRunReport(f"cluster fault run: {FAULTS} faults, {result['ok']} confirmed publishes, "
                                     f"lost {result['lost_count']}, unexpected {result['unexpected_count']}, "
                                     f"duplicated {result['duplicated']}, recovered {result['recovered']}, "
                                     f"unknown {result['unknown']}; failover {fo}"))
        assert result["lost_count"] == 0, result
        assert result["unexpected_count"] == 0, result
        assert result["ok"] > 100, result
    finally:
        cluster.cleanup()
