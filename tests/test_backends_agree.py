"""The demo's enhanced function gives the same answers under every backend as under ``none``."""

from __future__ import annotations

import importlib.util
import math
import random
from pathlib import Path

import pytest

from wasm_helpers import wasm_backend  # noqa: F401  (compiles the WASM module once per machine)

import poet_runtime

APP = Path(__file__).resolve().parents[1] / "examples" / "ml_monitoring" / "app.py"


def load_app(name: str):
    spec = importlib.util.spec_from_file_location(name, APP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def answers(policy: str, monkeypatch, tmp_path, edit=False):
    """The demo's answers under ``policy``; with ``edit``, its stored version is first edited by
    hand (one comment line), so that it is not verified and runs in the policy's sandbox."""
    from poet_runtime import settings

    monkeypatch.setenv("POET_POLICY", policy)
    settings.reset()
    name = f"app_{policy}{'_edited' if edit else ''}"
    module = load_app(name)
    if edit:
        version = poet_runtime.enhance(module.detect_drift)
        code = version.path / "code.py"
        code.write_text(code.read_text() + "# reviewed by hand\n")
        module = load_app(name)
    results = []
    for _, current, reference in module.batches():
        results.append(module.detect_drift(current, reference))
        record = poet_runtime.last_execution()
        assert record.status == "ok" and not record.fell_back, (policy, record)
    rng = random.Random(3)
    edge = [rng.gauss(0, 1) for _ in range(50)] + [math.nan, None]
    results.append(module.detect_drift(edge, [0.0, 1.0, 2.0], threshold=0.1))
    return results, poet_runtime.last_execution().backend


def test_every_backend_answers_like_none(poet_home, monkeypatch, tmp_path, wasm_backend):  # noqa: F811
    expected, backend = answers("trusted", monkeypatch, tmp_path)
    assert backend == "none"
    # default trusts the built-in generator: its verified version runs in-process; edited by
    # hand it runs in the restricted worker; strict trusts nothing and runs it in WASM.
    for policy, edit, name in (("default", False, "none"), ("default", True, "restricted"), ("strict", False, "wasm")):
        got, backend = answers(policy, monkeypatch, tmp_path, edit)
        assert backend == name, (policy, edit)
        assert got == expected, (policy, edit)
