"""A short fault run (every kind of fault, 24 in all) with publishers and consumers on real clients:
0 confirmed messages lost, 0 unexpected. tools/cluster_faults.py runs the long one."""
from __future__ import annotations

import asyncio
import os
import warnings

import pytest

from etcdutil import need_etcd
from support.reports import FaultRunReport
from faults import FaultRun, summary
from harness import Cluster
from workload import Workload

FAULTS = int(os.environ.get("USAGI_CLUSTER_FAULTS", "24"))

pytestmark = pytest.mark.timeout(60 * 15)


def test_fault_run_loses_no_confirmed_message():
    need_etcd()
    cluster = Cluster(3, etcd_members=3, ttl=2).start()
    try:
        wl = Workload(cluster.urls(), publishers=2, consumers=2, window=20)

        async def go():
            await wl.setup()
            wl.start()
            run = FaultRun(cluster, wl, FAULTS, settle=0.5, seed=FAULTS)
            await run.run()
            await asyncio.sleep(1)
            await wl.stop()
            await wl.drain()
            return run
        run = asyncio.run(go())
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
