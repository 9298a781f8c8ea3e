"""A store on a full disk: no ok for what was not written, a quiet log, service for transient work,
recovery once space is freed, and a stop that completes.

The data dir is on a small tmpfs (mounting one needs root; the tests skip otherwise) that a filler
file fills until writes fail with ENOSPC.
"""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import time

import pika
import pytest

from mgmt.mgmtutil import MGMT_RE, Api
from support.harness import ServerProcess, drain_bodies, external_broker_url, wait_for

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(bool(external_broker_url()), reason="needs Usagi server processes")]

PERSISTENT = pika.BasicProperties(delivery_mode=2)
BODY = 16 * 1024


@pytest.fixture
def small_disk(tmp_path):
    """A directory on an 8 MB tmpfs, unmounted afterwards."""
    path = tmp_path / "disk"
    path.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs for a full disk needs root")
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(path)],
                           capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"cannot mount a tmpfs here: {e}")
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {(r.stderr or r.stdout).strip()}")
    servers = []
    yield path, servers
    for s in servers:
        s.kill()
    subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=10)


def start(disk, servers) -> ServerProcess:
    s = ServerProcess(data_dir=str(disk / "data"), extra_args=["--disk-free-limit", "0"])
    servers.append(s)
    return s.start()


def fill(disk) -> str:
    """Write a filler file until the disk is full; returns its path."""
    path = str(disk / "filler")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 1 << 16, 4096, 512, 1):
            chunk = b"\xa5" * size
            try:
                while True:
                    os.write(fd, chunk)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
    finally:
        os.close(fd)
    return path


def body(i: int) -> bytes:
    return f"{i:08d}".encode().ljust(BODY, b".")


def publish_until_nacked(ch, queue: str, first: int, nacks_wanted: int, limit: int = 2000):
    """Persistent publishes with confirms (one at a time): (acked ids, nacked ids)."""
    acked, nacked = [], []
    for i in range(first, first + limit):
        try:
            ch.basic_publish("", queue, body(i), PERSISTENT)
            acked.append(i)
        except pika.exceptions.NackError:
            nacked.append(i)
            if len(nacked) >= nacks_wanted:
                break
    return acked, nacked


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def store_lines(srv) -> int:
    return sum("store commit" in line for line in list(srv.lines))


def connect(srv):
    return pika.BlockingConnection(pika.URLParameters(srv.url()))


def drain_ids(srv, queue: str) -> list:
    return [int(b[:8]) for b in drain_bodies(srv.url(), queue)]


def test_full_disk_no_ok_for_unwritten_writes_then_recovery(small_disk):
    disk, servers = small_disk
    srv = start(disk, servers)
    api_port = wait_for(lambda: next((int(m.group(2)) for m in map(MGMT_RE.search, list(srv.lines)) if m),
                                     None), message="management listener")
    api = Api(f"http://127.0.0.1:{api_port}")
    conn = connect(srv)
    ch = conn.channel()
    ch.queue_declare("full-q", durable=True)
    ch.confirm_delivery()
    acked, _ = publish_until_nacked(ch, "full-q", 0, 1, limit=5)      # a healthy store first
    assert len(acked) == 5
    filler = fill(disk)

    # publisher confirms: nacks for what the store could not write, never an ack
    more, nacked = publish_until_nacked(ch, "full-q", 5, 10)
    acked += more
    assert len(nacked) == 10, "the store never failed on a full disk"

    # the failing store is retried with a back-off: a quiet log and an idle process
    lines, cpu = store_lines(srv), cpu_seconds(srv.proc.pid)
    time.sleep(3)
    assert store_lines(srv) - lines <= 2, "".join(srv.lines[-20:])
    assert cpu_seconds(srv.proc.pid) - cpu < 1.5

    # a transaction whose commit fails: never tx.commit-ok; 541 naming the store error
    c2 = connect(srv)
    tx = c2.channel()
    tx.tx_select()
    tx.basic_publish("", "full-q", body(10_000), PERSISTENT)
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        tx.tx_commit()
    assert e.value.reply_code == 541
    assert e.value.reply_text.startswith("INTERNAL_ERROR - store commit failed: ")
    # durable declarations: no declare-ok
    for declare in (lambda c: c.queue_declare("full-new-q", durable=True),
                    lambda c: c.exchange_declare("full-new-x", "direct", durable=True)):
        c3 = connect(srv)
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
            declare(c3.channel())
        assert e.value.reply_code == 541
    # ... nor a 2xx from the management API
    r = api.request("PUT", "/api/queues/%2F/full-api-q", {"durable": True})
    assert r.status == 500, r
    assert r.json()["error"] == "internal_server_error" and "store commit failed" in r.json()["reason"]
    assert api.request("GET", "/api/overview").status == 200

    # transient work goes on
    c4 = connect(srv)
    t = c4.channel()
    tq = t.queue_declare("", exclusive=True).method.queue
    t.exchange_declare("full-transient-x", "fanout", durable=False, auto_delete=True)
    t.queue_bind(tq, "full-transient-x")
    t.basic_publish("full-transient-x", "", b"still here")
    assert wait_for(lambda: t.basic_get(tq, auto_ack=True)[2], timeout=5) == b"still here"
    t.queue_delete(tq)
    c4.close()

    # space is freed: the store recovers by itself and publishes confirm again
    os.remove(filler)
    deadline = time.monotonic() + 20
    while True:
        more, nacked = publish_until_nacked(ch, "full-q", 20_000 + len(acked), 1, limit=1)
        acked += more
        if more:
            break
        assert time.monotonic() < deadline, "publishes never confirmed again after space was freed"
        time.sleep(0.2)
    assert any("store commit succeeded again" in line for line in srv.lines)
    conn.close()

    # a stop completes, with everything written
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.proc.wait(20) == 0, "".join(srv.lines[-30:])

    # every acked message is there after a restart (nacked ones may be too)
    srv = start(disk, servers)
    got = drain_ids(srv, "full-q")
    assert set(acked) <= set(got), sorted(set(acked) - set(got))[:10]


def test_stop_completes_while_the_store_keeps_failing(small_disk):
    disk, servers = small_disk
    srv = start(disk, servers)
    conn = connect(srv)
    ch = conn.channel()
    ch.queue_declare("stuck-q", durable=True)
    ch.confirm_delivery()
    filler = fill(disk)
    acked, nacked = publish_until_nacked(ch, "stuck-q", 0, 3)
    assert len(nacked) == 3
    t0 = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    code = srv.proc.wait(30)
    log = "".join(srv.lines)
    assert code != 0, log[-3000:]
    assert time.monotonic() - t0 < 25
    assert "not written:" in log and "messages" in log, log[-3000:]
    # with space again, the node starts on its store, and what was confirmed is there
    os.remove(filler)
    srv = start(disk, servers)
    assert set(acked) <= set(drain_ids(srv, "stuck-q"))
