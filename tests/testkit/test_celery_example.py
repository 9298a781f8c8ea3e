"""The sample Celery project (examples/celery_project) runs its own tests with `pytest` and nothing
else: its broker is the usagi_broker fixture, which pytest finds through Usagi's entry point; no
RabbitMQ anywhere (the project's default broker URL points at a port where nothing listens)."""
from __future__ import annotations

import os
import re
import socket
import xml.etree.ElementTree as ET

import pytest

from support.harness import ROOT
from testkitutil import installed_usagi, run_pytest

pytestmark = pytest.mark.timeout(150)
PROJECT = os.path.join(ROOT, "examples", "celery_project")


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_sample_celery_project_passes_on_usagi(tmp_path, mode):
    site = installed_usagi(str(tmp_path))
    report = tmp_path / "report.xml"
    nowhere = f"amqp://guest:guest@127.0.0.1:{closed_port()}//"
    res = run_pytest([f"--usagi-mode={mode}", "-p", "no:xdist", f"--junitxml={report}"], cwd=PROJECT,
                     site=site, env={"CELERY_BROKER_URL": nowhere})
    out = res.stdout
    assert res.returncode == 0, out
    assert re.search(r"^plugins:.*\busagi-mq-", out, re.M), out       # loaded as an installed plugin
    cases = ET.parse(report).getroot().iter("testcase")
    outcomes = {c.get("name"): [child.tag for child in c if child.tag in ("failure", "error", "skipped")]
                for c in cases}
    assert len(outcomes) == 7 and "test_chain_order_total_then_invoice" in outcomes, out
    assert all(not bad for bad in outcomes.values()), outcomes
