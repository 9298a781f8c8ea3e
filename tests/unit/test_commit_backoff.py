"""The retries of a failing store: a capped exponential back-off, and one log line per period."""
from __future__ import annotations

import logging

from usagi.server.app import CommitBackoff


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_backoff_grows_to_its_cap_and_logs_once_per_period(caplog):
    clock = Clock()
    b = CommitBackoff(clock)
    caplog.set_level(logging.INFO, logger="usagi.server")
    delays = []
    for _ in range(20):
        delays.append(b.failed(OSError(28, "No space left on device")))
        clock.t += delays[-1]
    assert delays[:6] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.0]
    assert set(delays[5:]) == {CommitBackoff.CAP}
    # 20 attempts over 45 s: the first failure, then one line per 10 s
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4, lines
    assert lines[0].startswith("store commit failed: [Errno 28] No space left on device; retrying")
    assert all(line.startswith("store commit still failing after ") for line in lines[1:])
    assert lines[1].startswith("store commit still failing after 12s: 8 attempts failed since the last "
                               "report, 9 in all; last error: [Errno 28] No space left on device")
    caplog.clear()
    b.succeeded()
    b.succeeded()
    assert [r.getMessage() for r in caplog.records] == [
        "store commit succeeded again after 20 failed attempts over 48.1s"]
    # failing again starts from the first delay, and says so at once
    caplog.clear()
    assert b.failed(OSError("again")) == CommitBackoff.FIRST
    assert len(caplog.records) == 1
