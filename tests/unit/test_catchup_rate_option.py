"""--cluster-catchup-rate (env USAGI_CLUSTER_CATCHUP_RATE): a bad value is refused when the server
starts, with a message that says what is accepted; 0 means no limit. A value the pace cannot use (one
that overflows once in bytes, or rounds to 0 bytes a second, which would mean no limit) is bad."""
from __future__ import annotations

import subprocess
import sys

import pytest

from usagi.cli import server


def parse(value):
    return server.build_parser().parse_args([f"--cluster-catchup-rate={value}"]).cluster_catchup_rate


@pytest.mark.parametrize("value", ["-1", "-0.5", "nan", "inf", "-inf", "1e400", "1e305", "2e6",
                                   "abc", "", "16MiB", "1e-9", "0x10"])
def test_bad_rates_are_refused(value, capsys):
    with pytest.raises(SystemExit) as e:
        parse(value)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--cluster-catchup-rate" in err and ("must be" in err or "not a number" in err)


@pytest.mark.parametrize("value,rate", [("0", 0.0), ("16", 16.0), ("0.5", 0.5), ("1048576", 1048576.0),
                                        ("1e-6", 1e-6)])
def test_good_rates(value, rate):
    got = parse(value)
    assert got == rate
    assert got == 0 or int(got * 1024 * 1024) >= 1      # what cluster/node.py hands to the pace


def test_the_environment_variable_is_checked_too(monkeypatch, capsys):
    monkeypatch.setenv("USAGI_CLUSTER_CATCHUP_RATE", "nan")
    with pytest.raises(SystemExit):
        server.build_parser().parse_args([])
    assert "--cluster-catchup-rate" in capsys.readouterr().err


def test_the_server_refuses_to_start_with_a_huge_rate(tmp_path):
    r = subprocess.run([sys.executable, "-m", "usagi", "--data-dir", str(tmp_path),
                        "--cluster-catchup-rate", "1e305"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "--cluster-catchup-rate" in r.stderr and "Traceback" not in r.stderr
