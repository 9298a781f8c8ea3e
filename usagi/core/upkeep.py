"""Upkeep that survives its own failures.

Every periodic task and callback of the broker (the server's ticks, the dead-letter worklist, the
limits and management timers) runs each of its steps so that an exception in one step is logged
and swallowed: the other steps still run and the timer is rescheduled. A step that fails on every
tick must not flood the log either, so `failed` logs a failure with its traceback at most once per
LOG_EVERY seconds per step, and counts the ones it left out.

Step names are fixed strings chosen by the code, never user data (queue or connection names go in
`detail`), so the table of recent failures stays as small as the number of steps.
"""
from __future__ import annotations

import logging
import time

log = logging.getLogger("usagi.upkeep")

LOG_EVERY = 30.0        # seconds between two reports of the same failing step

_recent: dict = {}      # step -> [monotonic time of the last report, failures not reported since]


def failed(step: str, logger: logging.Logger | None = None, detail: str = ""):
    """Call from an `except` block: log the exception being handled for `step`, rate-limited."""
    now = time.monotonic()
    rec = _recent.get(step)
    if rec is not None and now - rec[0] < LOG_EVERY:
        rec[1] += 1
        return
    skipped = rec[1] if rec is not None else 0
    _recent[step] = [now, 0]
    more = f" ({skipped} more failures of this step in the last {LOG_EVERY:.0f} s not logged)" if skipped else ""
    (logger or log).error("%s failed%s%s; it carries on", step, f" ({detail})" if detail else "", more,
                          exc_info=True)


def warn(step: str, logger: logging.Logger, msg: str, *args):
    """A warning that users can trigger at will (a dead-letter cycle, say): logged at most once per
    LOG_EVERY seconds per step, with the count of those left out, so that it cannot flood the log."""
    now = time.monotonic()
    rec = _recent.get(step)
    if rec is not None and now - rec[0] < LOG_EVERY:
        rec[1] += 1
        return
    skipped = rec[1] if rec is not None else 0
    _recent[step] = [now, 0]
    if skipped:
        msg += f" ({skipped} more in the last {LOG_EVERY:.0f} s not logged)"
    logger.warning(msg, *args)


def guard(step: str, fn, *args, logger: logging.Logger | None = None):
    """Run fn(*args); on an exception log it as a failure of `step` and return None."""
    try:
        return fn(*args)
    except Exception:
        failed(step, logger)
        return None
