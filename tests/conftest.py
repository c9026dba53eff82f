"""Shared fixtures: every test gets its own store, cache and settings; nothing touches the repo."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus"


def drain_notes():
    """Drop what the checks noted in this thread and nobody took, so no test reads another's notes
    in ``last_execution().notes`` (a call whose logic raised after a retry leaves its notes behind)."""
    from poet_runtime.resources import load_facility

    load_facility()
    from poet_sandbox import validate

    validate.take_notes()


@pytest.fixture
def poet_home(tmp_path, monkeypatch):
    """Runtime on, store and cache in tmp, policy trusted (in-process) unless a test asks for another."""
    import poet_runtime
    from poet_runtime import runtime, settings

    home = tmp_path / "poet_home"
    cache = tmp_path / "poet_cache"
    for variable in list(os.environ):
        if variable.startswith("POET_"):
            monkeypatch.delenv(variable)
    monkeypatch.setenv("POET_HOME", str(home))
    monkeypatch.setenv("POET_CACHE_DIR", str(cache))
    monkeypatch.setenv("POET_POLICY", "trusted")
    settings.reset()
    drain_notes()
    poet_runtime.enable(hook=False)
    yield home
    sink = sys.modules.get("poet_runtime.learn.sink")
    if sink is not None:  # a function with an objective started the event sink: close its files in tmp
        sink.shutdown()
    poet_runtime.disable()
    settings.reset()
    runtime.reset_stats()
    drain_notes()
    from poet_runtime import cache as code_cache

    code_cache.close()


@pytest.fixture
def write_module(tmp_path):
    """Write a module into a fresh folder on sys.path and import it; returns the module."""
    import importlib

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
