"""A short soak (tools/soak.py for ~40 s): mixed publish/consume/ack over pika and raw clients, connection
and queue churn, consumer restarts. Nothing lost, and no strong growth of memory or descriptors.
The 30-minute run is recorded in docs/soak-and-fuzz.md."""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))

import soak  # noqa: E402

pytestmark = pytest.mark.timeout(300)
SECONDS = float(os.environ.get("USAGI_SOAK_SECONDS", "40"))


def test_soak_short(capsys):
    if os.environ.get("USAGI_TEST_BROKER_URL"):
        pytest.skip("starts a Usagi server of its own")
    res = soak.run(SECONDS, interval=2.0, log=lambda s: None)
    with capsys.disabled():
        print("\n" + soak.summary(res))
    assert res["server_alive"]
    assert res["lost"] == 0, res["lost_sample"]
    assert res["unexpected"] == 0, (res["unexpected_sample"], res["client_errors"])
    assert not [e for e in res["client_errors"] if "no confirm" in e]    # a publisher left waiting
    assert res["published"] > 1000 and res["consumed"] == res["published"]
    assert res["server_tracebacks"] == 0 and res["server_internal_errors"] == 0
    assert res["counts"]["queues_created"] > 10 and res["counts"]["consumer_restarts"] > 3
    grown = res["rss_end"] - res["rss_after_warmup"]
    assert grown < 40 * 2 ** 20, f"RSS grew {grown / 2 ** 20:.1f} MiB over {res['seconds']} s"
    assert res["fds_end"] - res["fds_start"] <= 10, (res["fds_start"], res["fds_end"])
