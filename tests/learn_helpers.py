"""Helpers for the events, feedback and learning tests: a private store per test, modules on disk.

Tests import the fixtures from here; they build on conftest's ``poet_home`` and
``write_module``. Everything lives under pytest's tmp_path; settings are reset
afterwards; the event sink is shut down so no flusher outlives its test.
"""

from __future__ import annotations

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
def learn_env(poet_home, monkeypatch):
    """``poet_home`` (runtime on, store and cache under tmp_path) with fresh learning settings.

    No default policy: each test module names its policy in the decorator.
    """
    from poet_runtime import settings
    from poet_runtime.learn import config, sink

    monkeypatch.delenv("POET_POLICY")
    settings.reset()
    config.reset()
    yield poet_home
    sink.shutdown()
    config.reset()


@pytest.fixture
def module_dir(write_module):
    return write_module


def detector_source(objective: str = "accuracy", threshold: float = 0.9) -> str:
    return DETECTOR.format(objective=objective, threshold=threshold)


def events_of(home: Path, kind: str | None = None) -> list[dict]:
    from poet_runtime import journal

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
