"""Test aid: a Python process started with this directory on PYTHONPATH and USAGI_TEST_LOG_FILE set
logs to that file (a rotating file handler on the root logger, at INFO) besides standard error.

The CLI tests use it to give a Usagi server a log file for log_tail, log_location and rotate_logs
whatever way the server itself is configured to write one."""
import logging
import logging.handlers
import os
import sys

_path = os.environ.get("USAGI_TEST_LOG_FILE")
if _path:
    _fmt = logging.Formatter("%(asctime)s [%(levelname)s] %(name)s: %(message)s")
    _root = logging.getLogger()
    for _h in (logging.StreamHandler(sys.stderr), logging.handlers.RotatingFileHandler(_path, backupCount=3)):
        _h.setFormatter(_fmt)
        _root.addHandler(_h)
    _root.setLevel(logging.INFO)
