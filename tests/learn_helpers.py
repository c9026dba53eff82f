"""Helpers for the events, feedback and learning tests: a private store per test, modules on disk.

Kept out of conftest.py on purpose (other engineers own it); tests import the fixtures
from here. Everything lives under pytest's tmp_path; settings are overridden in-process
and reset afterwards; the event sink is shut down so no flusher outlives its test.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

DETECTOR = '''\
from poet_runtime import poet


@poet(domain="ml_monitoring", optimize_for="{objective}", policy="trusted")
def detect(score: float, threshold: float = {threshold}) -> dict:
    return {{"drift_detected": score > threshold, "score": score}}


@poet(domain="ml_monitoring", policy="trusted")
def plain(score: float, threshold: float = 0.5) -> dict:
    return {{"drift_detected": score > threshold, "score": score}}
'''


@pytest.fixture
def learn_env(tmp_path, monkeypatch):
    """Runtime on (no import hook), store and cache under tmp_path, fresh learning settings."""
    import poet_runtime
    from poet_runtime import runtime, settings
    from poet_runtime.learn import config, sink

    for variable in list(os.environ):
        if variable.startswith("POET_"):
            monkeypatch.delenv(variable)
    home, cache = tmp_path / "poet_home", tmp_path / "poet_cache"
    settings.reset()
    settings.override(home=home, cache_dir=cache)
    config.reset()
    poet_runtime.enable(hook=False)
    yield home
    sink.shutdown()
    poet_runtime.disable()
    config.reset()
    settings.reset()
    runtime.reset_stats()
    from poet_runtime import cache as code_cache

    code_cache.close()


@pytest.fixture
def module_dir(tmp_path):
    folder = tmp_path / "mods"
    folder.mkdir(exist_ok=True)
    sys.path.insert(0, str(folder))
    created = []

    def write(name: str, source: str):
        (folder / f"{name}.py").write_text(source, encoding="utf-8")
        sys.modules.pop(name, None)
        importlib.invalidate_caches()
        created.append(name)
        return importlib.import_module(name)

    write.folder = folder
    yield write
    sys.path.remove(str(folder))
    for name in created:
        sys.modules.pop(name, None)


def detector_source(objective: str = "accuracy", threshold: float = 0.9) -> str:
    return DETECTOR.format(objective=objective, threshold=threshold)


def events_of(home: Path, kind: str | None = None) -> list[dict]:
    from poet_runtime.learn import journal

    return [e for e in journal.read(journal.events_root(home)) if kind is None or e["type"] == kind]


def run_child(code: str, home: Path, cache: Path, *extra_path: str, env: dict | None = None, **kwargs):
    """Start a Python child with the repo and ``extra_path`` importable and POET pointed at ``home``."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("POET_")}
    environment.update({"POET_HOME": str(home), "POET_CACHE_DIR": str(cache), "PYTHONDONTWRITEBYTECODE": "1",
                        "PYTHONPATH": os.pathsep.join([str(REPO), *extra_path])})
    environment.update(env or {})
    return subprocess.Popen([sys.executable, "-c", code], env=environment, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def audit(home: Path, folder: str, version: int = 1) -> list[dict]:
    return json.loads((home / folder / f"v{version}" / "state.json").read_text())["audit"]


def params(home: Path, folder: str, version: int = 1) -> dict:
    return json.loads((home / folder / f"v{version}" / "params.json").read_text())
