"""Running pytest the way a project that installed Usagi runs it: in a child process whose Python
sees usagi-mq as an installed distribution, so that pytest finds the plugin through its `pytest11`
entry point as declared in pyproject.toml (not through `-p`).

The distribution's metadata is written to a temporary directory as pip writes it (METADATA,
entry_points.txt from pyproject.toml, RECORD naming the package's files, which also makes pytest
mark the package for assertion rewriting, as it does for an installed plugin); the code is this
worktree's, on PYTHONPATH.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tomllib

from support.harness import ROOT


def installed_usagi(where: str) -> str:
    """Write usagi-mq's metadata under `where`; returns the directory to put on PYTHONPATH."""
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    from usagi import __version__
    info = os.path.join(where, f"usagi_mq-{__version__}.dist-info")
    os.makedirs(info, exist_ok=True)
    with open(os.path.join(info, "METADATA"), "w") as f:
        f.write(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {__version__}\n")
    with open(os.path.join(info, "entry_points.txt"), "w") as f:
        for group, points in project.get("entry-points", {}).items():
            f.write(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in points.items()) + "\n")
    with open(os.path.join(info, "RECORD"), "w") as f:
        for dirpath, _dirs, files in os.walk(os.path.join(ROOT, "usagi")):
            for name in files:
                if name.endswith(".py"):
                    f.write(os.path.relpath(os.path.join(dirpath, name), ROOT) + ",,\n")
    return where


def run_pytest(args: list, cwd: str, site: str, env: dict | None = None,
               timeout: float = 100.0) -> subprocess.CompletedProcess:
    """`python -m pytest ARGS` in `cwd`, with no pytest settings inherited from this test run."""
    child = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    child["PYTHONPATH"] = os.pathsep.join([site, ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    child["PYTHONDONTWRITEBYTECODE"] = "1"     # leave no __pycache__ in examples/
    if env:
        child.update(env)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=cwd,
                          env=child, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout)
