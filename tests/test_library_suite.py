"""A real library's own test suite passes alike with every public function under ``@poet`` (issue 15, Tests).

The library: ``inflection`` 0.5.1 (pure Python, typed hints, functions calling each
other through module globals), from its sdist on PyPI, which ships its own
``test_inflection.py``. The sdist is fetched once with ``pip download`` and kept under
``$TMPDIR/poet-test-cache/sdists`` (checked by its sha256), so reruns do not fetch it.

Its suite runs with pytest in a subprocess: once plain, then once per policy
(``trusted``, ``default``, ``strict``) with ``poet_runtime.enable()`` and every public
function of ``inflection`` replaced by ``poet_runtime.poet(policy=...)(function)`` in the
module, so the tests' calls and the library's calls between its own functions are
enhanced calls (``POET_HOME`` in tmp, ``POET_GENERATE=sync``). Each policy must pass
the same tests as plain: the same count and the same set of test ids. How many calls
ran enhanced and how many fell back (and why), from ``poet_runtime.runtime.stats()``,
is printed per policy (``pytest -s`` shows it for a passing run; a failing one has it
in its message), with the tests that differ and their assertion lines.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import textwrap
from pathlib import Path

import pytest

from hook_helpers import PYTHON, child_env
from wasm_helpers import wasm_backend  # noqa: F401  (compiles the WASM module once per machine)

pytestmark = pytest.mark.slow

LIBRARY, VERSION = "inflection", "0.5.1"
SDIST = f"{LIBRARY}-{VERSION}.tar.gz"
SDIST_SHA256 = "1a29730d366e996aaacffb2f1f1cb9593dc38e2ddd30c91250c6dde09ea9b417"
CACHE = Path(os.environ.get("TMPDIR", "/tmp")) / "poet-test-cache" / "sdists"
SUITE = "test_inflection.py"
RUN_TIMEOUT_S = 600

# Loaded into the suite's pytest with -p: wraps the library (unless plain) and writes what happened.
PLUGIN = '''
import inspect, json, os

POLICY = os.environ.get("POET_SUITE_POLICY") or None
OUT = os.environ["POET_SUITE_OUT"]
LIBRARY = os.environ["POET_SUITE_LIBRARY"]
_outcomes = {}
_failures = {}
_wrapped = []


def pytest_configure(config):
    if POLICY is None:
        return
    import importlib
    import poet_runtime

    poet_runtime.enable()
    module = importlib.import_module(LIBRARY)
    for name, value in sorted(vars(module).items()):
        if not name.startswith("_") and inspect.isfunction(value) and value.__module__ == module.__name__:
            setattr(module, name, poet_runtime.poet(policy=POLICY)(value))
            _wrapped.append(name)


def pytest_runtest_logreport(report):
    previous = _outcomes.get(report.nodeid)
    if report.failed:
        _outcomes[report.nodeid] = "failed"
        text = report.longreprtext or ""
        lines = [line for line in text.splitlines() if line.startswith("E ")][:4]
        _failures.setdefault(report.nodeid, f"{report.when}: " + " | ".join(line[1:].strip() for line in lines))
    elif report.skipped and previous is None:
        _outcomes[report.nodeid] = "skipped"
    elif report.when == "call" and report.passed and previous is None:
        _outcomes[report.nodeid] = "passed"


def pytest_sessionfinish(session, exitstatus):
    stats = {}
    if POLICY is not None:
        from poet_runtime import runtime

        for function_id, entry in sorted(runtime.stats().items()):
            stats[function_id] = {
                "calls": entry.calls, "enhanced": entry.enhanced_calls, "errors": entry.errors,
                "fallbacks": dict(entry.fallbacks), "backend": entry.backend, "version": entry.version,
                "notes": {f"{kind}:{field}": count for (kind, field), count in entry.notes.items()},
            }
    with open(OUT, "w", encoding="utf-8") as handle:
        json.dump({"policy": POLICY, "wrapped": _wrapped, "outcomes": _outcomes, "failures": _failures,
                   "stats": stats, "exitstatus": int(exitstatus)}, handle)
'''


def _fetch_sdist() -> Path:
    """The sdist, from the cache or from the package registry (``pip download``), checked by sha256."""
    cached = CACHE / SDIST
    if cached.is_file() and hashlib.sha256(cached.read_bytes()).hexdigest() == SDIST_SHA256:
        return cached
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as scratch:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-binary", ":all:", "--no-deps",
             "--disable-pip-version-check", f"{LIBRARY}=={VERSION}", "-d", scratch],
            capture_output=True, text=True, timeout=300,
        )
        fetched = Path(scratch) / SDIST
        if done.returncode != 0 or not fetched.is_file():
            message = f"cannot download the {LIBRARY} {VERSION} sdist: {done.stderr.strip()[-800:]}"
            if os.environ.get("CI"):
                pytest.fail(message)  # CI reaches the registry: a missing suite must not pass as skipped
            pytest.skip(message)
        digest = hashlib.sha256(fetched.read_bytes()).hexdigest()
        assert digest == SDIST_SHA256, f"{SDIST}: sha256 {digest}, expected {SDIST_SHA256}"
        os.replace(fetched, cached)  # atomic: a concurrent run sees no file or a whole one
    return cached


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    """The unpacked sdist (the library and its own test file) with the recording plugin beside them."""
    archive = _fetch_sdist()
    root = tmp_path_factory.mktemp("library")
    with tarfile.open(archive) as tar:
        tar.extractall(root, filter="data")
    folder = root / f"{LIBRARY}-{VERSION}"
    assert (folder / SUITE).is_file() and (folder / LIBRARY / "__init__.py").is_file()
    shutil.rmtree(folder / "docs", ignore_errors=True)  # its conf.py is not part of the suite
    (folder / "poet_suite_plugin.py").write_text(textwrap.dedent(PLUGIN))
    return folder


def _cache_for(folder: Path) -> Path:
    """A fresh cache folder whose ``wasm`` entry is the machine's compiled interpreter (no 60-100 s recompile)."""
    from poet_runtime.backends import wasm_engine

    shared = wasm_engine.cache_dir() / "wasm"
    (folder / "cache").mkdir(parents=True)
    if shared.is_dir():
        (folder / "cache" / "wasm").symlink_to(shared, target_is_directory=True)
    return folder / "cache"


def run_suite(library: Path, work: Path, policy: str | None) -> dict:
    """The library's suite in a fresh interpreter; what the plugin recorded, and the run's output."""
    work.mkdir(parents=True)
    out = work / "outcomes.json"
    environment = child_env(
        False, POET_HOME=str(work / "home"), POET_CACHE_DIR=str(_cache_for(work)), POET_GENERATE="sync",
        POET_SUITE_OUT=str(out), POET_SUITE_LIBRARY=LIBRARY, POET_SUITE_POLICY=policy or "",
    )
    environment["PYTHONPATH"] = os.pathsep.join([str(library), environment["PYTHONPATH"]])
    done = subprocess.run(
        [PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "poet_suite_plugin", SUITE],
        cwd=str(library), env=environment, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )
    assert out.is_file(), f"the suite did not finish (exit {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    result = json.loads(out.read_text())
    result["output"] = done.stdout[-2000:] + done.stderr[-2000:]
    return result


def public_functions(library: Path) -> list[str]:
    """The library's public functions, read from its source (what the plugin must have wrapped)."""
    import ast

    tree = ast.parse((library / LIBRARY / "__init__.py").read_text(encoding="utf-8"))
    return sorted(node.name for node in tree.body if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"))


def passing(result: dict) -> set[str]:
    return {test for test, outcome in result["outcomes"].items() if outcome == "passed"}


def report(policy: str, plain: dict, result: dict) -> str:
    """Pass counts, then calls enhanced / fell back (by reason) and values reported against hints, per function."""
    lines = [f"{LIBRARY} {VERSION} suite under {policy}: {len(passing(result))} passed "
             f"(plain {len(passing(plain))} of {len(plain['outcomes'])}); "
             f"{len(result['wrapped'])} functions wrapped: {', '.join(result['wrapped'])}"]
    calls = enhanced = errors = 0
    reasons: dict = {}
    for function_id, entry in result["stats"].items():
        calls += entry["calls"]
        enhanced += entry["enhanced"]
        errors += entry["errors"]
        for reason, count in entry["fallbacks"].items():
            reasons[reason] = reasons.get(reason, 0) + count
    fell_back = sum(reasons.values())
    share = f"{100.0 * (enhanced + errors) / calls:.1f} %" if calls else "-"
    lines.append(f"  calls {calls}: ran enhanced {enhanced + errors} ({share}; {errors} raised the user's error), "
                 f"fell back {fell_back}" + (f" ({', '.join(f'{r} x{n}' for r, n in sorted(reasons.items()))})"
                                             if reasons else ""))
    for function_id, entry in result["stats"].items():
        notes = ", ".join(f"{note} x{count}" for note, count in sorted(entry["notes"].items()))
        fallbacks = ", ".join(f"{reason} x{count}" for reason, count in sorted(entry["fallbacks"].items()))
        lines.append(f"  {function_id:28} v{entry['version']} {entry['backend'] or '-':10} calls {entry['calls']:>5} "
                     f"enhanced {entry['enhanced']:>5}" + (f"  fell back: {fallbacks}" if fallbacks else "")
                     + (f"  reported: {notes}" if notes else ""))
    differing = sorted(passing(plain) ^ passing(result))
    for test in differing[:40]:
        lines.append(f"  differs: {test}: {result['outcomes'].get(test, 'not run')}"
                     + (f" -- {result['failures'][test]}" if test in result["failures"] else ""))
    if len(differing) > 40:
        lines.append(f"  ... and {len(differing) - 40} more")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def plain(library, tmp_path_factory) -> dict:
    result = run_suite(library, tmp_path_factory.mktemp("plain") / "run", None)
    assert result["exitstatus"] == 0, f"the library's suite fails without POET:\n{result['output']}"
    assert len(passing(result)) >= 100  # the whole suite ran (0.5.1 has a few hundred tests)
    return result


@pytest.mark.parametrize("policy", ["trusted", "default", "strict"])
def test_the_librarys_suite_passes_alike_under_every_policy(policy, library, plain, tmp_path, request):
    if policy == "strict":
        request.getfixturevalue("wasm_backend")  # skips when the wasm extra is missing; compiles once per machine
    result = run_suite(library, tmp_path / policy, policy)
    summary = report(policy, plain, result)
    print(summary)
    assert result["wrapped"] == public_functions(library), summary
    assert sum(entry["calls"] for entry in result["stats"].values()) > 0, summary
    assert len(passing(result)) == len(passing(plain)), summary
    assert passing(result) == passing(plain), summary
