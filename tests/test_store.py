"""The .poet/ store: layout, versioning, retention, and consistency when a writer is killed."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from poet_runtime.store import FILES, MAX_VERSIONS, FunctionStore

DRIFT = '''\
import statistics
from poet_runtime import poet


@poet(domain="ml_monitoring")
def detect_drift(current: list[float], reference: list[float]) -> dict:
    gap = abs(statistics.fmean(current) - statistics.fmean(reference))
    return {"drift_detected": gap > 0.5, "score": min(gap, 1.0)}
'''


def test_layout_beside_the_module(poet_home, write_module, tmp_path, monkeypatch):
    from poet_runtime import settings

    monkeypatch.delenv("POET_HOME")
    settings.reset()
    module = write_module("drift_layout", DRIFT)
    assert module.detect_drift([1.0, 2.0], [1.0, 2.0]) == {"drift_detected": False, "score": 0.0}
    folder = Path(module.__file__).parent / ".poet" / "drift_layout.detect_drift"
    assert sorted(p.name for p in (folder / "v1").iterdir()) == sorted(FILES)
    assert os.readlink(folder / "current") == "v1"
    assert (folder / "feedback" / "pending").is_dir() and (folder / "feedback" / "processed").is_dir()
    metadata = json.loads((folder / "v1" / "metadata.json").read_text())
    for field in ("key", "generator", "domain", "objective", "created_at", "parent", "checks"):
        assert field in metadata, field
    assert metadata["domain"] == "ml_monitoring" and metadata["checks"][-1] == "compile"
    from poet_runtime.generate.builtin import GENERATOR_ID, GENERATOR_VERSION

    assert metadata["generator"] == f"{GENERATOR_ID}-{GENERATOR_VERSION}" and "hygiene" in metadata["checks"]
    assert metadata["integrity"]["code_sha256"] == metadata["integrity"]["files"]["code.py"]  # digests at creation
    assert metadata["integrity"]["hmac"]  # what this runtime wrote is signed with the user's key
    code = (folder / "v1" / "code.py").read_text()
    assert "def operate_prime(logic, args, kwargs):" in code and "statistics" not in code  # no copy of the body
    declared = {name: entry["default"] for name, entry in (metadata.get("parameters") or {}).items()}
    assert json.loads((folder / "v1" / "params.json").read_text()) == declared


def test_changed_source_makes_a_new_version_and_unchanged_makes_none(poet_home, write_module):
    module = write_module("drift_versions", DRIFT)
    module.detect_drift([1.0], [1.0])
    store = FunctionStore(poet_home / "drift_versions.detect_drift", "drift_versions:detect_drift")
    first = store.current()
    assert first.number == 1

    module = write_module("drift_versions", DRIFT)  # same source, new import
    module.detect_drift([1.0], [1.0])
    assert [v.number for v in store.versions()] == [1]

    module = write_module("drift_versions", DRIFT.replace("gap > 0.5", "gap > 0.25"))
    assert module.detect_drift([1.0], [1.5])["drift_detected"] is True  # the new body is what runs
    assert store.current().number == 2
    assert store.current().metadata["parent"] == 1
    assert store.current().metadata["key"] != first.metadata["key"]
    assert store.current().code() == first.code()  # the body is not in code.py: same phases, new key

    module = write_module("drift_versions", DRIFT.replace('domain="ml_monitoring"', 'domain="base"'))
    module.detect_drift([1.0], [1.5])
    assert store.current().number == 3  # a changed config is a new version too

    module = write_module("drift_versions", DRIFT)  # back to the first source: v1 serves again
    module.detect_drift([1.0], [1.0])
    assert store.current().number == 1 and len(store.versions()) == 3


def test_retention_keeps_ten_and_never_removes_current(tmp_path):
    store = FunctionStore(tmp_path / "m.f", "m:f")
    store.create("x = 1\n", {}, {}, {"key": "k1"})
    store.set_current(1)
    for index in range(2, 15):
        store.create(f"x = {index}\n", {}, {}, {"key": f"k{index}"}, make_current=False)
    numbers = [v.number for v in store.versions()]
    assert len(numbers) == MAX_VERSIONS
    assert 1 in numbers and numbers[-1] == 14
    assert store.current().number == 1
    assert store.rollback(13).number == 13
    assert store.rollback().number == 12


def test_status_comes_from_the_pointer_for_current(tmp_path):
    store = FunctionStore(tmp_path / "m.f", "m:f")
    first = store.create("x = 1\n", {}, {}, {"key": "k1", "status": "current"})
    second = store.create("x = 2\n", {}, {}, {"key": "k2", "status": "current"})
    rejected = store.create("x = 3\n", {}, {}, {"key": "k3", "status": "rejected"}, make_current=False)
    assert [store.status_of(v) for v in (first, second, rejected)] == ["superseded", "current", "rejected"]
    store.rollback(1)
    assert [store.status_of(store.get(n)) for n in (1, 2)] == ["current", "superseded"]


WRITER = '''\
import sys
from poet_runtime.store import FunctionStore
store = FunctionStore(__import__("pathlib").Path(sys.argv[1]), "m:f")
big = "x = 1\\n" * 20000
index = 0
while True:
    index += 1
    store.create(big + f"# {index}\\n", {"n": index}, {"s": index}, {"key": f"k{index}"})
    print(index, flush=True)
'''


@pytest.mark.slow
def test_killing_a_writer_mid_version_never_leaves_the_store_inconsistent(tmp_path):
    folder = tmp_path / "m.f"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    rng = random.Random(7)
    acknowledged = 0
    for _ in range(12):
        process = subprocess.Popen([sys.executable, str(script), str(folder)], stdout=subprocess.PIPE, env=env, text=True)
        process.stdout.readline()  # it has written at least one version: now kill it somewhere in the next
        time.sleep(rng.uniform(0.0, 0.05))
        process.send_signal(signal.SIGKILL)
        process.wait()
        acknowledged += 1
        store = FunctionStore(folder, "m:f")
        versions = store.versions()
        for number in store._numbers():
            files = sorted(p.name for p in (folder / f"v{number}").iterdir())
            assert files == sorted(FILES), f"v{number} is incomplete: {files}"
            meta = json.loads((folder / f"v{number}" / "metadata.json").read_text())
            assert meta["version"] == number
            assert (folder / f"v{number}" / "params.json").read_text().endswith("}\n")
        current = store.current()
        assert current is not None, "current must point to a complete version"
        # Killed between renaming a version into place and moving ``current``: the new version
        # exists, complete, and ``current`` still names the previous one. Both are consistent.
        assert current.number in {v.number for v in versions}
        assert current.number >= max(v.number for v in versions) - 1
        assert len(versions) <= MAX_VERSIONS + 1  # at most one not yet trimmed when killed between steps
    store = FunctionStore(folder, "m:f")
    store.create("y = 2\n", {}, {}, {"key": "after"})
    leftovers = [name for name in os.listdir(folder) if name.startswith((".tmp-", ".trash-"))]
    assert leftovers == [], "a later writer removes what dead writers left"
    assert acknowledged == 12


def test_identical_code_under_the_same_key_is_not_a_new_version(tmp_path):
    """A second process that writes the same built-in module (it could not reach the model,
    or lost the race) finds the version already there: no v2 identical to v1."""
    from poet_runtime.decorator import PoetConfig
    from poet_runtime.generate.spec import spec_from_source
    from poet_runtime.resolve import generate_version

    source = "def total(prices: list[float], rate: float = 0.2) -> float:\n    return sum(prices) * (1 + rate)\n"
    spec = spec_from_source("shop", "total", source, str(tmp_path / "shop.py"))
    config = PoetConfig.from_kwargs("shop:total")
    store = FunctionStore(tmp_path / ".poet" / "shop.total", "shop:total")
    with store.lock():
        first = generate_version(store, spec, config)
    with store.lock():
        again = generate_version(store, spec, config)
    assert again.number == first.number == 1 and [v.number for v in store.versions()] == [1]
    other = PoetConfig.from_kwargs("shop:total", retries=5)  # another key: a new version
    with store.lock():
        assert generate_version(store, spec, other).number == 2
