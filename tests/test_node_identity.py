"""A data dir knows it held a store (DATA_DIR/node.json): a store found missing or empty there is
reported, and the node refuses to start afresh (which would re-create a deleted `guest` and lose
every definition and message). A fresh data dir, and one from before node.json, start as they did.
"""
from __future__ import annotations

import json
import os
import sqlite3

import pika
import pytest

from support.harness import ServerProcess, external_broker_url

pytestmark = [pytest.mark.timeout(60),
              pytest.mark.skipif(bool(external_broker_url()), reason="needs Usagi server processes")]


@pytest.fixture
def data_dir(tmp_path):
    servers = []

    def run(path=None):
        s = ServerProcess(data_dir=path or str(tmp_path / "data"))
        servers.append(s)
        return s.start()

    yield str(tmp_path / "data"), run
    for s in servers:
        s.stop()


def node_file(d: str) -> dict:
    with open(os.path.join(d, "node.json")) as f:
        return json.load(f)


def refused(d: str) -> str:
    """Start a server on `d`, expect it to refuse: returns its log."""
    s = ServerProcess(data_dir=d)
    with pytest.raises(RuntimeError) as e:
        s.start(timeout=15)
    assert s.proc.returncode == 1
    return str(e.value)


def test_fresh_data_dir_gets_a_node_identity_that_stays(data_dir):
    d, run = data_dir
    srv = run()
    ident = node_file(d)
    assert ident["store"] == "usagi.db" and len(ident["node_id"]) == 32 and ident["created_at"]
    assert srv.stop() == 0
    run()
    assert node_file(d) == ident


@pytest.mark.parametrize("damage", ["empty", "missing", "no tables"])
def test_missing_or_empty_store_is_refused(data_dir, damage):
    d, run = data_dir
    srv = run()
    conn = pika.BlockingConnection(pika.URLParameters(srv.url()))
    conn.channel().queue_declare("precious", durable=True)
    conn.close()
    assert srv.stop() == 0
    db = os.path.join(d, "usagi.db")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(db + suffix):
            os.remove(db + suffix)
    if damage == "empty":
        open(db, "wb").close()
    elif damage == "no tables":
        c = sqlite3.connect(db)
        c.execute("CREATE TABLE unrelated (x)")
        c.commit()
        c.close()
    text = refused(d)
    assert db in text and os.path.join(d, "node.json") in text
    assert "restore usagi.db from a backup, or move the data dir" in text
    assert os.path.exists(os.path.join(d, "node.json"))
    # nothing was created in its place
    if damage == "missing":
        assert not os.path.exists(db)
    elif damage == "empty":
        assert os.path.getsize(db) == 0
    else:
        c = sqlite3.connect(db)
        assert [r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")] == ["unrelated"]
        c.close()


def test_data_dir_from_before_node_identity_keeps_working(data_dir):
    d, run = data_dir
    srv = run()
    conn = pika.BlockingConnection(pika.URLParameters(srv.url()))
    conn.channel().queue_declare("kept", durable=True)
    conn.close()
    assert srv.stop() == 0
    os.remove(os.path.join(d, "node.json"))     # as a data dir made by an older Usagi
    srv = run()
    conn = pika.BlockingConnection(pika.URLParameters(srv.url()))
    conn.channel().queue_declare("kept", passive=True)
    conn.close()
    assert node_file(d)["store"] == "usagi.db"


def test_empty_store_without_node_identity_is_refused(data_dir):
    d, _run = data_dir
    os.makedirs(d)
    open(os.path.join(d, "usagi.db"), "wb").close()
    text = refused(d)
    assert os.path.join(d, "usagi.db") in text and "is empty (0 bytes)" in text
    assert not os.path.exists(os.path.join(d, "node.json"))


def test_unreadable_node_identity_is_refused(data_dir):
    d, run = data_dir
    assert run().stop() == 0
    with open(os.path.join(d, "node.json"), "w") as f:
        f.write("{not json")
    text = refused(d)
    assert os.path.join(d, "node.json") in text and "unreadable" in text
