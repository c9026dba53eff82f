"""Fixtures the domain tests share: each domain is run in-process and in the restricted worker.

Imported by name (``from domain_helpers import policy, domain_events``), as
``wasm_helpers`` is, so that a test module says which of them it uses.
"""

from __future__ import annotations

import pytest

from poet_runtime import events, settings
from poet_runtime.resources import policies_dir


@pytest.fixture(params=["trusted", "sandboxed"])
def policy(request, poet_home, monkeypatch, tmp_path):
    """``trusted``: the verified built-in version in-process. ``sandboxed``: the default
    policy trusting no generator, so the same version runs in the restricted worker.
    Returns the backend the calls should report."""
    if request.param == "sandboxed":
        text = (policies_dir() / "default.toml").read_text().replace('trust = ["builtin"]', "trust = []")
        assert "trust = []" in text
        path = tmp_path / "default_untrusted.toml"
        path.write_text(text)
        monkeypatch.setenv("POET_POLICY", str(path))
        settings.reset()
    return "none" if request.param == "trusted" else "restricted"


@pytest.fixture
def domain_events():
    """The ``domain.*`` events emitted while the test runs."""
    seen = []
    unsubscribe = events.subscribe(lambda event: seen.append(event) if event["type"].startswith("domain.") else None)
    yield seen
    unsubscribe()


@pytest.fixture
def all_events():
    """Every event emitted while the test runs."""
    seen = []
    unsubscribe = events.subscribe(seen.append)
    yield seen
    unsubscribe()
