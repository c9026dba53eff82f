"""Limits hold from the first byte: load-time work counts against the policy (issue 13, item 4).

A stored ``code.py`` is tampered with (as a hostile repository would) so that its
module level sleeps, spins or allocates; the version then runs only in the
policy's sandbox, and its load must stop at the policy's ``wall_ms``, ``cpu_ms``
and ``memory_mb`` (not at a loading budget of its own), the caller getting the
original's answer each time, quickly. Memory the module keeps counts against its
calls. Both sandboxing backends, through the whole call path.
"""

from __future__ import annotations

import textwrap
import time

import pytest

from poet_runtime.backends.restricted import harness_module
from poet_runtime.backends.workers import Worker
from wasm_helpers import wasm_backend  # noqa: F401

DRIFT = '''\
from poet_runtime import poet

@poet(domain="base")
def detect_drift(current: list[float], reference: list[float]) -> float:
    """Absolute gap between the two means."""
    return abs(sum(current) / len(current) - sum(reference) / len(reference))
'''
POLICY = '''\
version = 1
[defaults]
backend = "{backend}"
wall_ms = {wall_ms}
cpu_ms = 500
memory_mb = 128
max_output_kb = 64
imports = ["math", "statistics", "json", "time", "collections"]
trust = []
'''
SLEEP = "import time\ntime.sleep(9)\n"
SPIN = "N = 0\nwhile N < 10 ** 9:\n    N += 1\n"  # far more than 8 s of CPU
HOLD = "KEEP = b'k' * (120 * 1024 * 1024)\n"  # ~120 MB kept by the module, under a 128 MB policy
BIG = "KEEP = b'k' * (900 * 1024 * 1024)\n"  # ~900 MB


def _tampered(name, prelude, body, poet_home, write_module, monkeypatch, tmp_path, backend, wall_ms=1500):
    """A function whose stored version's module level runs ``prelude`` (and whose
    operate_prime starts with ``body``); returns the reloaded module."""
    import poet_runtime
    from poet_runtime.store import FunctionStore

    policy = tmp_path / f"{backend}.toml"
    policy.write_text(POLICY.format(backend=backend, wall_ms=wall_ms))
    monkeypatch.setenv("POET_POLICY", str(policy))
    module = write_module(name, DRIFT)
    assert module.detect_drift([1.0], [1.0]) == 0.0
    assert poet_runtime.last_execution().backend == backend, poet_runtime.last_execution()
    code = FunctionStore(poet_home / f"{name}.detect_drift", f"{name}:detect_drift").current().path / "code.py"
    text = code.read_text()
    signature = "def operate_prime(logic, args, kwargs):\n"
    assert signature in text
    if body:
        text = text.replace(signature, signature + textwrap.indent(body, "    ") + "\n", 1)
    code.write_text(prelude + text)
    return write_module(name, DRIFT)


def _calls(module, n=2):
    import poet_runtime

    times, records = [], []
    for _ in range(n):
        started = time.monotonic()
        assert module.detect_drift([3.0], [1.0]) == 2.0  # the original's answer
        times.append(time.monotonic() - started)
        records.append(poet_runtime.last_execution())
    return times, records


# The wasm tests ask for ``wasm_backend`` (session-scoped, so set up before
# ``poet_home`` points POET_CACHE_DIR at a temporary folder): the machine's compiled
# interpreter, loaded once per session.


def _spins(backend, *fixtures):
    # A wall limit well above the CPU one, so that CPU is what stops it even on a busy machine.
    module = _tampered(f"spin_{backend}", SPIN, "", *fixtures, backend, wall_ms=6000)
    times, records = _calls(module)
    assert all(record.fell_back for record in records), records
    assert "violation:cpu_ms" in {record.reason for record in records}, records
    # Under a 500 ms CPU limit, not a loading budget of 20 s CPU / 30 s wall (a loaded machine
    # stretches the guest's start and its 500 ms of fuel, hence the margin).
    assert max(times) < 15.0, times


def test_a_module_that_spins_at_load_is_stopped_at_cpu_ms_restricted(poet_home, write_module, monkeypatch, tmp_path):
    _spins("restricted", poet_home, write_module, monkeypatch, tmp_path)


def test_a_module_that_spins_at_load_is_stopped_at_cpu_ms_wasm(wasm_backend, poet_home, write_module, monkeypatch,
                                                               tmp_path):
    _spins("wasm", poet_home, write_module, monkeypatch, tmp_path)


def test_a_module_that_sleeps_at_load_is_stopped_at_wall_ms_restricted(poet_home, write_module, monkeypatch, tmp_path):
    module = _tampered("sleep_restricted", SLEEP, "", poet_home, write_module, monkeypatch, tmp_path, "restricted")
    times, records = _calls(module)
    assert all(record.fell_back for record in records), records
    assert "violation:wall_ms" in {record.reason for record in records}, records
    assert max(times) < 6.0, times  # 9 s of sleep under a 1.5 s wall limit


def test_a_module_that_sleeps_at_load_is_stopped_at_wall_ms_wasm(wasm_backend, poet_home, write_module, monkeypatch,
                                                                 tmp_path):
    module = _tampered("sleep_wasm", SLEEP, "", poet_home, write_module, monkeypatch, tmp_path, "wasm")
    times, records = _calls(module)
    assert all(record.fell_back for record in records), records
    assert "violation:wall_ms" in {record.reason for record in records}, records
    assert max(times) < 6.0, times  # 9 s of sleep under a 1.5 s wall limit


def test_a_module_that_allocates_at_load_is_stopped_at_memory_mb_wasm(wasm_backend, poet_home, write_module,
                                                                      monkeypatch, tmp_path):
    module = _tampered("big_wasm", BIG, "", poet_home, write_module, monkeypatch, tmp_path, "wasm")
    times, records = _calls(module)
    assert all(record.fell_back for record in records), records
    assert "violation:memory_mb" in {record.reason for record in records}, records


def _keeps(backend, *fixtures):
    """120 MB kept at load plus 60 MB more in the call is over 128 MB: a call may not
    start counting after the load."""
    grow = "MORE = b'm' * (60 * 1024 * 1024)\n"
    module = _tampered(f"keep_{backend}", HOLD, grow, *fixtures, backend)
    times, records = _calls(module)
    assert all(record.fell_back for record in records), records
    assert "violation:memory_mb" in {record.reason for record in records}, records


def test_memory_the_module_keeps_counts_against_its_calls_restricted(poet_home, write_module, monkeypatch, tmp_path):
    _keeps("restricted", poet_home, write_module, monkeypatch, tmp_path)


def test_memory_the_module_keeps_counts_against_its_calls_wasm(wasm_backend, poet_home, write_module, monkeypatch,
                                                               tmp_path):
    _keeps("wasm", poet_home, write_module, monkeypatch, tmp_path)


def test_the_worker_stops_a_sleeping_load_at_wall_ms():
    """The worker's side: a load's module body runs under the message's wall_ms."""
    from sandbox_helpers import module_text

    codec = harness_module("worker_codec")
    worker = Worker(codec)
    try:
        code = SLEEP + module_text()
        message = {"op": "load", "key": "k", "code": code, "filename": "<tampered>", "params": {},
                   "imports": ["time"], "builtins": [], "module": "poet_enhanced.t", "cpu_ms": 500,
                   "memory_mb": 128, "max_output_kb": 64, "wall_ms": 1000}
        started = time.monotonic()
        reply = worker.request(codec.dumps(message), time.monotonic() + 15, 1 << 20)
        took = time.monotonic() - started
    finally:
        worker.kill()
    assert (reply.get("ok"), reply.get("limit")) == (False, "wall_ms"), reply
    assert took < 4.0, took
