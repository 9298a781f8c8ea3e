"""Celery end to end: a real worker subprocess (celery worker --pool=solo) on the broker under test.

The app (tests/support/celery_app.py) uses the rpc:// result backend and a retry-via-DLX
topology: a task that raises Reject(requeue=False) is dead-lettered to a retry queue whose
x-message-ttl sends it back to the work queue, and counts its attempts from x-death.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pika
import pytest

from itutil import uname

pytestmark = pytest.mark.timeout(60)

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUPPORT = os.path.join(TESTS_DIR, "support")
if SUPPORT not in sys.path:
    sys.path.insert(0, SUPPORT)

import celery_app  # noqa: E402  (tests/support/celery_app.py)


class Worker:
    def __init__(self, broker_url: str, prefix: str, queues: list, log_path: str):
        env = dict(os.environ)
        env["PYTHONPATH"] = SUPPORT + os.pathsep + env.get("PYTHONPATH", "")
        env["USAGI_CELERY_BROKER"] = broker_url
        env["USAGI_CELERY_PREFIX"] = prefix
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "celery_app", "worker", "--pool=solo", "-c", "1",
             "-Q", ",".join(queues), "-n", f"{prefix}@localhost", "--without-gossip",
             "--without-mingle", "--without-heartbeat", "-l", "info"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=SUPPORT)

    def text(self) -> str:
        with open(self.log_path) as f:
            return f.read()

    def wait_consuming(self, ch, queues: list, timeout: float = 20.0):
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError("celery worker exited:\n" + self.text())
            probe = ch.connection.channel()     # a 404 (not declared yet) closes the channel
            try:
                counts = [probe.queue_declare(q, passive=True).method.consumer_count for q in queues]
                probe.close()
            except pika.exceptions.ChannelClosedByBroker:
                counts = [0]
            if all(counts):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"worker not consuming {queues} ({counts}):\n" + self.text())
            time.sleep(0.1)

    def stop(self, sig=signal.SIGQUIT):
        """Cold shutdown (a warm one takes ~10 s with the solo pool); nothing is in flight by then."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def admin_channel(broker):
    params = pika.URLParameters(broker.url)
    params.connection_attempts = 1
    conn = pika.BlockingConnection(params)
    return conn, conn.channel()


def cleanup(broker, queues=(), exchanges=()):
    conn, ch = admin_channel(broker)
    try:
        for q in queues:
            ch.queue_delete(q)
        for x in exchanges:
            ch.exchange_delete(x)
    finally:
        conn.close()


@pytest.fixture(scope="module")
def celery_env(broker, tmp_path_factory):
    prefix = uname("cel")
    n = celery_app.names(prefix)
    conn, ch = admin_channel(broker)
    celery_app.declare_topology(ch, prefix)
    worker = Worker(broker.url, prefix, [n["work"], n["work2"]],
                    str(tmp_path_factory.mktemp("celery") / "worker.log"))
    app = celery_app.make_app(broker.url, prefix)
    try:
        worker.wait_consuming(ch, [n["work"], n["work2"]])
        yield app, n, worker, conn, ch
    finally:
        worker.stop()
        app.close()
        if conn.is_open:
            conn.close()
        # (Celery also declares an exchange named after the default queue)
        cleanup(broker, [n["work"], n["work2"], n["retry"], n["parked"]], [n["dlx"], n["work"]])


def collect_states(ch, reply_queue: str, timeout: float = 15.0) -> list:
    """rpc:// backend state messages sent to reply_queue, up to and including SUCCESS."""
    out = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m, props, body = ch.basic_get(reply_queue, auto_ack=True)
        if m is None:
            time.sleep(0.05)
            continue
        out.append((props, json.loads(body)))
        if out[-1][1]["status"] == "SUCCESS":
            return out
    raise AssertionError(f"no SUCCESS state on {reply_queue}; got {[s for _, s in out]}")


def test_task_result_over_rpc_backend(celery_env):
    app, n, worker, _, _ = celery_env
    add = app.tasks_by_role["add"]
    results = [add.delay(i, 100) for i in range(20)]
    assert [r.get(timeout=15) for r in results] == [i + 100 for i in range(20)]


def test_retry_via_dlx_succeeds_on_third_attempt(celery_env):
    app, n, worker, conn, ch = celery_env
    flaky = app.tasks_by_role["flaky"]
    reply_q = ch.queue_declare(uname("celery-reply"), exclusive=True).method.queue
    t0 = time.monotonic()
    res = flaky.apply_async(args=(3,), reply_to=reply_q)
    states = collect_states(ch, reply_q)
    elapsed = time.monotonic() - t0
    statuses = [s["status"] for _, s in states]
    # Celery >= 5.5 also reports each Reject(requeue=False) as FAILURE; older ones stay silent
    assert statuses in (["SUCCESS"], ["FAILURE", "FAILURE", "SUCCESS"]), statuses
    for props, s in states:
        assert props.correlation_id == res.id
        assert s["task_id"] == res.id
    result = states[-1][1]["result"]
    assert result["attempt"] == 3
    # most recent death first: the expiry from the retry queue, then the rejection from work
    assert result["deaths"] == [[n["retry"], "expired", 2], [n["work"], "rejected", 2]]
    assert result["redelivered"] is False
    # two trips through the retry queue, each at least its TTL
    assert elapsed >= 2 * celery_app.RETRY_TTL_MS / 1000.0
    for q in (n["work"], n["retry"]):
        assert ch.queue_declare(q, passive=True).method.message_count == 0


def test_retry_many_tasks_each_counted_separately(celery_env):
    app, n, worker, conn, ch = celery_env
    flaky = app.tasks_by_role["flaky"]
    results = [flaky.apply_async(args=(k,)) for k in (1, 2, 3, 2, 1)]
    got = []
    for r in results:
        try:
            got.append(r.get(timeout=15)["attempt"])
        except Exception as e:      # Celery >= 5.5 reports the Reject as a FAILURE first
            assert type(e).__name__ == "Reject", repr(e)
            got.append(None)
    # every task that needed a retry reports FAILURE through rpc:// first (or, on older
    # Celery, the final attempt); the ones that succeed at once report attempt 1
    assert got[0] == 1 and got[4] == 1
    assert all(g in (None, k) for g, k in zip(got, (1, 2, 3, 2, 1)))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        counts = [ch.queue_declare(q, passive=True).method.message_count for q in (n["work"], n["retry"])]
        if counts == [0, 0]:
            break
        time.sleep(0.1)
    assert counts == [0, 0]


def test_failed_task_with_acks_late_is_dead_lettered(celery_env):
    app, n, worker, conn, ch = celery_env
    failing = app.tasks_by_role["failing"]
    res = failing.apply_async(args=("t-1",))
    deadline = time.monotonic() + 15
    while True:
        m, props, body = ch.basic_get(n["parked"], auto_ack=True)
        if m is not None:
            break
        assert time.monotonic() < deadline, "failed task never reached the parking queue:\n" + worker.text()
        time.sleep(0.05)
    assert (m.exchange, m.routing_key) == (n["dlx"], n["parked"])
    h = props.headers
    assert h["id"] == res.id and h["task"] == failing.name
    [d] = h["x-death"]
    assert (d["count"], d["reason"], d["queue"], d["exchange"], d["routing-keys"]) == (
        1, "rejected", n["work2"], "", [n["work2"]])
    assert json.loads(body)[0] == ["t-1"]
    assert props.correlation_id == res.id and props.content_type == "application/json"
    assert ch.queue_declare(n["work2"], passive=True).method.message_count == 0


def test_unacked_task_is_redelivered_after_worker_is_killed(broker, tmp_path):
    """acks_late: a worker killed mid-task leaves the message unacked; the next worker gets it
    again with redelivered set."""
    prefix = uname("celk")
    n = celery_app.names(prefix)
    conn, ch = admin_channel(broker)
    celery_app.declare_topology(ch, prefix)
    app = celery_app.make_app(broker.url, prefix)
    w1 = Worker(broker.url, prefix, [n["work"]], str(tmp_path / "w1.log"))
    w2 = None
    try:
        w1.wait_consuming(ch, [n["work"]])
        res = app.tasks_by_role["slow"].apply_async(args=(30,))
        # the worker has taken the message (not ready any more) and sleeps in the task: kill it
        deadline = time.monotonic() + 10
        while ch.queue_declare(n["work"], passive=True).method.message_count:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.2)
        w1.proc.kill()
        w1.proc.wait()
        w2 = Worker(broker.url, prefix, [n["work"]], str(tmp_path / "w2.log"))
        assert res.get(timeout=20) == {"redelivered": True}
    finally:
        if w1.proc.poll() is None:
            w1.proc.kill()
        w1.log.close()
        if w2 is not None:
            w2.stop()
        app.close()
        conn.close()
        # (Celery also declares an exchange named after the default queue)
        cleanup(broker, [n["work"], n["work2"], n["retry"], n["parked"]], [n["dlx"], n["work"]])
