"""Hostile generated code under the restricted backend: the shared escape corpus, run in place,
plus escapes aimed at our own guards (computed attribute names, format strings, module walks).

Each corpus body becomes the user's logic (and so the Operate' body) of a generated module. It runs
under the shipped default policy (restricted in a worker), a tighter worker policy, and in-process
restricted (no resource limits: payloads whose effect is `hang` or `memory` are skipped there, since
such a policy states no limit that could stop them).
"""

from __future__ import annotations

import builtins
import math
import os
import socket
import sys
import time

import pytest

from poet_runtime.backends import get_backend
from poet_runtime.backends.base import Limits
from poet_runtime.errors import PoetViolation
from poet_runtime.policy import load_policy
from poet_runtime.resources import load_facility
from sandbox_helpers import CORPUS, escape_files, escape_header, fill, load, module_text

PhaseError = load_facility().PhaseError
SECRET = "s3cr3t-value-for-escape-tests"
DEFAULT = load_policy("default").effective_for("tests.probe:probe").limits
TIGHT = Limits(wall_ms=1000, cpu_ms=300, memory_mb=128, max_output_kb=16, imports=("math", "json", "time"))
IN_PROCESS = Limits(max_output_kb=16, imports=DEFAULT.imports)
CONFIGS = {"default-policy": DEFAULT, "tight-workers": TIGHT, "in-process": IN_PROCESS}
MARGIN_S = 1.0  # the machine is shared: scheduling delays, worker start-up


@pytest.fixture(scope="module", autouse=True)
def close_backend():
    yield
    get_backend("restricted").close()


@pytest.fixture
def listener():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.setblocking(False)
    yield server
    server.close()


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_payload(code: str, limits: Limits):
    """(outcome, value): outcome is 'refused-load', 'violation', 'phase', 'error' or 'returned'."""
    try:
        loaded = load(code, limits)
    except (PoetViolation, PhaseError) as error:
        return "refused-load", error
    try:
        return "returned", loaded.call((), {})[0]
    except PoetViolation as error:
        return "violation", error
    except PhaseError as error:
        return "phase", error
    except Exception as error:  # in-process: the logic's own exception (e.g. RecursionError)
        return "error", error
    finally:
        loaded.close()


def assert_host_responsive(limits: Limits):
    started = time.monotonic()
    assert load(module_text("return x * 2", logic_args="x"), limits).call((21,), {})[0] == 42
    assert time.monotonic() - started < 5.0


@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"escape corpus not found at {CORPUS}")
@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("path", escape_files(), ids=lambda p: p.stem)
def test_corpus_escape(path, config, tmp_path, listener, monkeypatch):
    limits = CONFIGS[config]
    raw = path.read_text()
    effect = escape_header(raw).get("effect", "")
    if config == "in-process" and effect in ("hang", "memory"):
        pytest.skip("in-process restricted states no wall/cpu/memory limit; the worker configs cover this payload")
    marker = tmp_path / "escaped"
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text(SECRET)
    monkeypatch.setenv("POET_TEST_SECRET", SECRET)
    body = fill(raw, marker=marker, secret_path=secret_file, port=listener.getsockname()[1])
    saved_builtins = dict(vars(builtins))
    modules_before = set(sys.modules)
    rss_before = rss_mb()

    started = time.monotonic()
    outcome, value = run_payload(module_text(body), limits)
    elapsed = time.monotonic() - started

    assert outcome in ("refused-load", "violation", "phase", "error", "returned")
    if outcome == "returned":
        assert SECRET not in repr(value)
    assert not marker.exists(), f"{path.name}: the payload created its marker ({outcome}: {value!r})"
    with pytest.raises(BlockingIOError):
        listener.accept()  # nothing connected
    if limits.wall_ms is not None:
        assert elapsed < limits.wall_ms / 1000 + MARGIN_S, f"{path.name} took {elapsed:.2f}s"
    assert rss_mb() - rss_before < 100, "host memory grew"
    os.kill(os.getppid(), 0)  # parent alive (we are, or this line would not run)
    assert vars(builtins) == saved_builtins and len([1, 2]) == 2
    assert not {"os", "subprocess", "ctypes", "socket"} & (set(sys.modules) - modules_before)
    if effect in ("marker", "returns-secret", "connect", "kill-host", "mutate-host"):
        # Reach escapes must be refused as such, not merely fail.
        assert outcome in ("refused-load", "violation"), f"{path.name}: {outcome}: {value!r}"
    assert_host_responsive(limits)


# -- escapes aimed at our guards --------------------------------------------------------------

GUARD_ESCAPES = {
    "computed-dunder": "def probe2():\n    pass\nreturn getattr(probe2, '__glob' + 'als__')",
    "generator-frame": "g = (x for x in [1])\nreturn getattr(g, 'gi_' + 'frame')",
    "format-attribute": "return '{0.__class__}'.format(1)",
    "format-map": "return '{x.__class__}'.format_map({'x': 1})",
    "format-unbound": "return type('').format('{0.__class__.__mro__}', 1)",
    "format-subclass": "class S(str):\n    pass\nreturn S('{0.__class__}').format(1)",
    "format-super": "class S(str):\n    def go(self):\n        return super().format(1)\nreturn S('{0.__class__}').go()",
    "module-walk": "import statistics\nreturn statistics.sys.modules['os'].getcwd()",
    "from-import-walk": "from statistics import sys\nreturn sys.modules['os'].getcwd()",
    "submodule-not-listed": "import json\nreturn json.decoder.scanstring",
    "dotted-import": "import collections.abc\nreturn 1",
    "host-state-seed": "import random\nrandom.seed(1)\nreturn 1",
    "host-state-decimal": "import decimal\nreturn decimal.getcontext()",
    "module-write": "import math\nmath.pi = 3\nreturn math.pi",
    "module-setattr": "import math\nsetattr(math, 'pi', 3)\nreturn math.pi",
    "class-write": "import math\nX = type(1)\nX.bit_length = None\nreturn 1",
    "hasattr-probe": "return hasattr(1, '__class__')",
    "open-builtin": "return open('/etc/hostname').read()",
    "vars-builtin": "return vars()",
    "print-to-file": "import json\nprint('x', file=json)\nreturn 1",
    "from-import-denied": "from random import seed\nseed(1)\nreturn 1",
    "view-internals": "import math\nreturn getattr(math, '_mod' + 'ule')",
    "stored-module-walk": "import statistics\nbox = [statistics]\nreturn box[0].sys",
    "swallowed-refusal": "try:\n    getattr(1, '__class__')\nexcept Exception:\n    pass\nreturn 'ok'",
}


@pytest.mark.parametrize("limits", [IN_PROCESS, TIGHT], ids=["in-process", "worker"])
@pytest.mark.parametrize("name", list(GUARD_ESCAPES))
def test_guard_escape_is_a_violation(name, limits):
    outcome, value = run_payload(module_text(GUARD_ESCAPES[name]), limits)
    assert outcome in ("refused-load", "violation"), f"{name}: {outcome}: {value!r}"
    assert math.pi > 3.14 and (1).bit_length() == 1


@pytest.mark.parametrize("limits", [IN_PROCESS, TIGHT], ids=["in-process", "worker"])
@pytest.mark.parametrize("body", ["return type('X', (), {'y': 1})", "import math\nimport json\nreturn type(math)(json)"],
                         ids=["three-argument-type", "construct-module-view"])
def test_constructors_not_offered(body, limits):
    outcome, value = run_payload(module_text(body), limits)
    assert outcome in ("phase", "error") and "TypeError" in f"{type(value).__name__} {value}"


@pytest.mark.parametrize("limits", [IN_PROCESS, TIGHT], ids=["in-process", "worker"])
def test_safe_format_still_formats(limits):
    body = "return ['{} {x}'.format(1, x=[2]), '{0[k]}'.format({'k': 3}), '{a}'.format_map({'a': 4})]"
    outcome, value = run_payload(module_text(body), limits)
    assert (outcome, value) == ("returned", ["1 [2]", "3", "4"])


# -- through the call path: the original's result, and an event naming the violation ---------------

DRIFT = '''\
import statistics
from poet_runtime import poet


@poet(domain="ml_monitoring")
def detect_drift(current: list[float], reference: list[float], threshold: float = 0.5) -> dict:
    gap = abs(statistics.fmean(current) - statistics.fmean(reference))
    return {"drift_detected": gap > threshold, "score": gap}
'''
LOGIC_BODY = ('    gap = abs(statistics.fmean(current) - statistics.fmean(reference))\n'
              '    return {"drift_detected": gap > threshold, "score": gap}\n')


@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"escape corpus not found at {CORPUS}")
@pytest.mark.parametrize("payload", ["01_import_os_system", "20_cpu_loop", "23_output_flood"])
def test_escape_through_call_path_falls_back_with_event(payload, poet_home, write_module, monkeypatch, tmp_path):
    import textwrap

    import poet_runtime
    from poet_runtime import events
    from poet_runtime.store import FunctionStore

    monkeypatch.setenv("POET_POLICY", "default")
    name = f"drift_escape_{payload[:2]}"
    module = write_module(name, DRIFT)
    assert module.detect_drift([1.0], [1.0])["score"] == 0.0
    assert poet_runtime.last_execution().backend == "restricted"
    code = FunctionStore(poet_home / f"{name}.detect_drift", f"{name}:detect_drift").current().path / "code.py"
    marker = tmp_path / "escaped"
    body = fill((CORPUS / f"{payload}.py").read_text(), marker=marker, secret_path="/nonexistent", port=1)
    text = code.read_text()
    assert LOGIC_BODY in text
    code.write_text(text.replace(LOGIC_BODY, textwrap.indent(body, "    ") + "\n"))
    seen = []
    unsubscribe = events.subscribe(lambda event: seen.append(event))
    try:
        module = write_module(name, DRIFT)
        assert module.detect_drift([2.0], [1.0]) == {"drift_detected": True, "score": 1.0}  # the original's
    finally:
        unsubscribe()
    record = poet_runtime.last_execution()
    assert record.fell_back and record.reason.startswith("violation:"), record
    assert any(event["type"] == "function.fallback" and event["reason"] == record.reason for event in seen)
    assert not marker.exists()
