"""The log's outputs (usagi.config.logs): levels per output and per category, JSON lines with
RabbitMQ's fields, rotation by size (with old files kept, or the file emptied), on request, and
reopening after an external tool moved the file."""
from __future__ import annotations

import json
import logging
import os

import pytest

from usagi.config import logs


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    levels = {n: logging.getLogger(n).level for n in ("usagi", "usagi.connection", "usagi.broker")}
    yield
    for h in list(logs._handlers):
        root.removeHandler(h)
        h.close()
    logs._handlers.clear()
    logs._file.clear()
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    for n, lvl in levels.items():
        logging.getLogger(n).setLevel(lvl)


def test_json_lines_and_levels_per_output_and_category(tmp_path, restore_logging):
    path = tmp_path / "u.log"
    logs.setup(logs.LogSettings(console=False, file=str(path), file_level="warning", file_format="json",
                                categories={"usagi.connection": "debug"}))
    logging.getLogger("usagi.broker").info("not shown: below the file's level")
    logging.getLogger("usagi.broker").warning("shown %d", 1)
    logging.getLogger("usagi.connection").debug("shown: its category is at debug")
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["msg"] for r in recs] == ["shown 1", "shown: its category is at debug"]
    assert recs[0]["level"] == "warning" and recs[0]["logger"] == "usagi.broker"
    assert recs[0]["pid"] == os.getpid() and len(recs[0]["time"]) >= len("2026-01-01 00:00:00.000000+00:00")


def test_rotation_by_size_keeps_count_files(tmp_path, restore_logging):
    path = tmp_path / "u.log"
    logs.setup(logs.LogSettings(console=False, file=str(path), rotation_size=500, rotation_count=2))
    log = logging.getLogger("usagi.broker")
    for i in range(100):
        log.info("line %03d %s", i, "x" * 40)
    assert path.exists() and (tmp_path / "u.log.1").exists() and (tmp_path / "u.log.2").exists()
    assert not (tmp_path / "u.log.3").exists()
    assert all(os.path.getsize(p) <= 500 for p in (path, tmp_path / "u.log.1", tmp_path / "u.log.2"))
    assert "line 099" in path.read_text()


def test_rotation_with_no_old_files_empties_the_file(tmp_path, restore_logging):
    path = tmp_path / "u.log"
    logs.setup(logs.LogSettings(console=False, file=str(path), rotation_size=300, rotation_count=0))
    log = logging.getLogger("usagi.broker")
    for i in range(50):
        log.info("line %03d %s", i, "y" * 40)
    assert os.path.getsize(path) <= 300 and "line 049" in path.read_text()
    assert os.listdir(tmp_path) == ["u.log"]


def test_rotate_and_reopen_on_request(tmp_path, restore_logging):
    path = tmp_path / "u.log"
    assert logs.rotate() is False and logs.reopen() is False      # no file: nothing to do
    logs.setup(logs.LogSettings(console=False, file=str(path), rotation_count=3))
    assert logs.file_path() == str(path)
    logging.getLogger("usagi.broker").info("before")
    assert logs.rotate() is True
    assert "before" in (tmp_path / "u.log.1").read_text() and "before" not in path.read_text()
    os.rename(path, tmp_path / "moved.log")
    assert logs.reopen() is True
    logging.getLogger("usagi.broker").info("after")
    assert "after" in path.read_text() and "after" not in (tmp_path / "moved.log").read_text()


def test_none_turns_an_output_off(tmp_path, restore_logging):
    path = tmp_path / "u.log"
    logs.setup(logs.LogSettings(console=False, file=str(path), file_level="none",
                                categories={"usagi.connection": "debug"}))
    logging.getLogger("usagi.connection").error("not shown")
    assert path.read_text() == ""
