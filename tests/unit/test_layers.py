"""The layers of DESIGN.md, enforced: an import that points up the stack fails the build.

The contract lives in pyproject.toml ([tool.importlinter]); import-linter reads the real imports of
the installed package, including imports inside functions.
"""
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _lint_imports(cwd: str, env: dict | None = None) -> subprocess.CompletedProcess:
    exe = shutil.which("lint-imports", path=os.path.dirname(sys.executable)) or shutil.which("lint-imports")
    assert exe, "import-linter is part of the test extras"
    return subprocess.run([exe, "--no-cache"], cwd=cwd, capture_output=True, text=True, env=env, timeout=120)


def test_layers_contract_kept():
    r = _lint_imports(ROOT, dict(os.environ, PYTHONPATH=ROOT))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 kept, 0 broken" in r.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    # a copy of the package where the model imports the engine must be refused
    shutil.copytree(os.path.join(ROOT, "usagi"), tmp_path / "usagi")
    shutil.copy(os.path.join(ROOT, "pyproject.toml"), tmp_path / "pyproject.toml")
    with open(tmp_path / "usagi" / "model" / "util.py", "a") as f:
        f.write("\nfrom ..core import broker as _upward  # noqa\n")
    r = _lint_imports(str(tmp_path), dict(os.environ, PYTHONPATH=str(tmp_path)))
    assert r.returncode != 0
    assert "BROKEN" in r.stdout or "broken" in r.stdout
