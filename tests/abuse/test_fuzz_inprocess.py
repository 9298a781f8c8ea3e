"""A short run of tools/fuzz_long.py in process (the long run is recorded in docs/soak-and-fuzz.md):
FrameReader, the method codec and the sans-IO Connection give frames or a protocol error, never
another exception, and the Connection never logs an internal error. Saved crashing inputs in
fuzz_regressions/ are replayed first."""
from __future__ import annotations

import glob
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools"))

import fuzz_long  # noqa: E402

pytestmark = pytest.mark.timeout(120)
SECONDS = float(os.environ.get("USAGI_FUZZ_SECONDS", "12"))


@pytest.fixture(scope="module")
def runner():
    fuzz_long._import_usagi()
    return fuzz_long.Runner("all")


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(HERE, "fuzz_regressions", "*.bin"))) or [None])
def test_saved_inputs(runner, path):
    if path is None:
        pytest.skip("no saved crashing inputs")
    with open(path, "rb") as f:
        runner(f.read())


def test_corpus_seeds(runner):
    for seed in fuzz_long.corpus():
        runner(seed)


def test_random_mutations(runner, tmp_path):
    res = fuzz_long.run_random(runner, 10 ** 9, SECONDS, seed=int(os.environ.get("USAGI_FUZZ_SEED", "1")),
                               crash_dir=str(tmp_path), log=lambda s: None)
    assert res["inputs"] > 1000
    assert res["crashes"] == 0, open(res["crash_files"][0] + ".txt").read()


def test_hypothesis(runner, tmp_path):
    res = fuzz_long.run_hypothesis(runner, 3000, SECONDS / 2, seed=2, crash_dir=str(tmp_path), log=lambda s: None)
    assert res["crashes"] == 0, open(res["crash_files"][0] + ".txt").read()


@pytest.mark.parametrize("target", fuzz_long.TARGETS)
def test_each_target_takes_garbage(target):
    fuzz_long._import_usagi()
    r = fuzz_long.Runner(target)
    for data in (b"", b"\x00", b"\xff" * 3, os.urandom(64), b"\x0f\x07" + b"AMQP\x00\x00\x09\x01" + os.urandom(200)):
        r(data)
