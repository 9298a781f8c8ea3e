"""usagi/amqp/methods.py is exactly what tools/gen_methods.py makes from the specification."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GENERATOR = os.path.join(ROOT, "tools", "gen_methods.py")
GENERATED = os.path.join(ROOT, "usagi", "amqp", "methods.py")
SPEC = os.path.normpath(os.path.join(ROOT, "..", "shared", "spec", "amqp-rabbitmq-0.9.1.json"))
if not os.path.exists(SPEC):
    SPEC = "/work/shared/spec/amqp-rabbitmq-0.9.1.json"


def run_generator(out_path, *args):
    with open(out_path, "wb") as out:
        subprocess.run([sys.executable, GENERATOR, *args], stdout=out, check=True, timeout=60, cwd=ROOT)
    with open(out_path, "rb") as f:
        return f.read()


def test_generated_file_is_up_to_date(tmp_path):
    generated = run_generator(tmp_path / "methods.py", SPEC)
    with open(GENERATED, "rb") as f:
        committed = f.read()
    assert generated == committed, "usagi/amqp/methods.py is stale: rerun tools/gen_methods.py"


def test_default_spec_path_gives_the_same_output(tmp_path):
    gen = _load_generator()
    if not os.path.exists(gen.DEFAULT_SPEC):
        pytest.skip("default spec location not present")
    assert run_generator(tmp_path / "m.py") == run_generator(tmp_path / "m2.py", SPEC)


def _load_generator():
    spec = importlib.util.spec_from_file_location("gen_methods_under_test", GENERATOR)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_in_process_generation_matches_and_compiles():
    text = _load_generator().gen(SPEC)
    with open(GENERATED, encoding="utf-8") as f:
        assert text == f.read()
    compile(text, "methods.py", "exec")


def test_generator_follows_the_spec(tmp_path):
    """A changed specification gives a changed file (so the up-to-date check can fail)."""
    with open(SPEC) as f:
        spec = json.load(f)
    for cls in spec["classes"]:
        if cls["name"] == "basic":
            for m in cls["methods"]:
                if m["name"] == "ack":
                    m["arguments"][1]["name"] = "multiple-renamed"
    changed = tmp_path / "spec.json"
    changed.write_text(json.dumps(spec))
    text = run_generator(tmp_path / "out.py", str(changed)).decode()
    with open(GENERATED, encoding="utf-8") as f:
        committed = f.read()
    assert text != committed
    assert "FIELDS = ('delivery_tag', 'multiple_renamed')" in text
