"""The scaling and memory benchmarks run end to end against a Usagi server, so that they cannot
rot unnoticed between the runs that produce BENCHMARKS.md.

Tiny points and windows, Usagi only (no RabbitMQ): what is checked is that every curve's driver
connects, publishes, consumes, drains, checks for loss and cleans up, that the table and the
plots are written (or skipped with a message without matplotlib), and that the memory figures
come out.  No figure is compared with any bound: speed is shown by benchmarks, not tests.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

from support.harness import ROOT

BENCH = os.path.join(ROOT, "benchmarks")


def _bench_dir():
    for d in (os.environ.get("USAGI_BENCH_DIR"), os.path.join(ROOT, "..", "shared", "bench"),
              os.path.join(ROOT, "..", "..", "shared", "bench")):
        if d and os.path.isfile(os.path.join(d, "amqp_bench.py")):
            return d
    return None


def _run(args, timeout=120, env=None):
    return subprocess.run([sys.executable] + args, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=env)


def _results(path):
    with open(path) as f:
        recs = [json.loads(line) for line in f if line.strip()]
    return recs[0], [r for r in recs if r.get("type") == "result"]


def test_scaling_curves_run_against_usagi(fresh_server, tmp_path):
    server = fresh_server()
    bench_dir = _bench_dir()
    # the multiplexed driver's curves always; the load generator's when the shared bench folder is here
    curves = ["queues", "depth"] + (["size", "latency"] if bench_dir else [])
    out = str(tmp_path / "s.jsonl")
    args = [os.path.join(BENCH, "scaling.py"), "--brokers", "usagi", "--usagi-url", server.url(),
            "--curves", ",".join(curves), "--points", "queues=3", "--points", "depth=500",
            "--points", "size=1024", "--points", "latency=500", "--runs", "1", "--duration", "0.5",
            "--warmup", "0.3", "--settle", "0", "--out", out]
    if bench_dir:
        args += ["--bench-dir", bench_dir]
    r = _run(args)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    meta, results = _results(out)
    assert meta["type"] == "meta" and meta["tool"] == "scaling"
    assert sorted(x["curve"] for x in results) == sorted(curves)
    for x in results:
        res = x["res"]
        assert res["ok"], (x["curve"], res)
        assert res["lost"] == 0
        assert res["consumed"] > 0
        assert (res.get("cpu") or {}).get("broker_pct") is not None
    queues = next(x["res"] for x in results if x["curve"] == "queues")
    assert queues["queues"] == 3 and queues["consumers"] == 3 and queues["publishers"] == 4
    depth = next(x["res"] for x in results if x["curve"] == "depth")
    assert depth["fill"]["queued"] == 500
    assert depth["consumed"] + depth["left_in_queues"] == depth["published"] + 500
    assert depth["consumed"] >= 500              # the backlog came out first, then the new messages
    if bench_dir:
        lat = next(x["res"] for x in results if x["curve"] == "latency")
        assert lat["latency"]["p99_us"] > 0
    md = open(str(tmp_path / "s.md")).read()
    assert "### Throughput vs number of queues (`queues`)" in md
    assert "| 3 |" in md and "| 500 |" in md
    if importlib.util.find_spec("matplotlib"):
        for c in curves:
            with open(str(tmp_path / ("s-%s.png" % c)), "rb") as f:
                assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    else:
        assert "plots skipped" in r.stderr

    # without matplotlib: the table again from the data, the plots skipped with a message
    hide = tmp_path / "hide"
    (hide / "matplotlib").mkdir(parents=True)
    (hide / "matplotlib" / "__init__.py").write_text("raise ImportError('hidden for the test')\n")
    env = dict(os.environ, PYTHONPATH=str(hide))
    r = _run([os.path.join(BENCH, "scaling.py"), "--from", out], env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "plots skipped: matplotlib is not installed" in r.stderr
    assert "Throughput vs number of queues" in r.stdout


def test_memory_units_run_against_usagi(fresh_server, tmp_path):
    server = fresh_server()
    out = str(tmp_path / "m.jsonl")
    r = _run([os.path.join(BENCH, "memory_units.py"), "--brokers", "usagi", "--usagi-url", server.url(),
              "--kinds", "msg1k,queue,conn,channel", "--messages", "600", "--queues", "300", "--conns", "30",
              "--channels", "300", "--runs", "1", "--settle", "0.2", "--out", out])
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    _meta, results = _results(out)
    assert [x["kind"] for x in results] == ["msg1k", "queue", "conn", "channel"]
    for x in results:
        res = x["res"]
        assert res["ok"], (x["kind"], res)
        assert res["rss2_kib"] is not None and res["bytes_per_unit"] is not None
    assert results[0]["res"]["queued"] == 600
    assert "| idle queue | 300 |" in open(str(tmp_path / "m.md")).read()
