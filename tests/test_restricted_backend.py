"""The restricted backend: normal code runs, limits stop what they state, workers recover.

Real RestrictedPython and real worker processes; nothing mocked.
"""

from __future__ import annotations

import asyncio
import datetime
import decimal
import os
import signal
import time

import pytest

from poet_runtime.backends import get_backend
from poet_runtime.backends.base import Limits
from poet_runtime.errors import PoetViolation
from poet_runtime.resources import load_facility
from sandbox_helpers import load, module_text

PhaseError = load_facility().PhaseError

IN_PROCESS = Limits(max_output_kb=4, imports=("math", "json", "collections", "time"))
WORKER = Limits(wall_ms=1500, cpu_ms=300, memory_mb=128, max_output_kb=16,
                imports=("math", "json", "collections", "time"))
MODES = [pytest.param(IN_PROCESS, id="in-process"), pytest.param(WORKER, id="worker")]

TYPICAL = """
import math
from collections import defaultdict
from poet_sandbox.validate import as_list

class Summary:
    def __init__(self, name):
        self.name = name
        self.total = 0

def probe(rows, label):
    rows = as_list(rows, "rows")
    groups = defaultdict(list)
    for key, value in rows:
        groups[key].append(value)
    out = {}
    for key, values in sorted(groups.items()):
        summary = Summary(key)
        for v in values:
            summary.total += v
        out[key] = {"n": len(values), "total": summary.total, "root": round(math.sqrt(summary.total), 3)}
    counts = {"seen": 0}
    counts["seen"] += len(rows)
    first, *rest = [k for k in out]
    text = "{} groups, first {}".format(len(out), first) + f" ({label})"
    return {"groups": out, "seen": counts["seen"], "text": text, "pair": (first, len(rest)), "keys": set(out)}

def perceive(rows, label):
    return (rows, label)

def operate_prime(*perceived):
    return probe(*perceived)

def enforce(result):
    return result
"""
HEADER = 'FUNCTION = "tests.probe:probe"\nLOGIC = "probe"\nPARAMETERS = {}\ndef configure(params):\n    pass\n'


@pytest.fixture(scope="module", autouse=True)
def close_backend():
    yield
    get_backend("restricted").close()


@pytest.mark.parametrize("limits", MODES)
def test_typical_code_matches_native(limits):
    loaded = load(HEADER + TYPICAL, limits)
    rows = [("b", 4), ("a", 1), ("a", 8)]
    result, t0, t1, t2, t3 = loaded.call((rows, "x"), {})
    assert result == {"groups": {"a": {"n": 2, "total": 9, "root": 3.0}, "b": {"n": 1, "total": 4, "root": 2.0}},
                      "seen": 3, "text": "2 groups, first a (x)", "pair": ("a", 1), "keys": {"a", "b"}}
    assert type(result["pair"]) is tuple and type(result["keys"]) is set
    assert t0 <= t1 <= t2 <= t3


@pytest.mark.parametrize("limits", MODES)
def test_types_cross_unchanged(limits):
    code = module_text("return value", logic_args="value")
    loaded = load(code, limits)
    for value in [(1, (2, "x")), {1: "a", (2, 3): None}, b"\x00\xff", frozenset({1}), {"$t": 1},
                  decimal.Decimal("1.10"), datetime.datetime(2024, 1, 2, 3, 4, 5), 2**100, float("inf"), 1 + 2j]:
        got = loaded.call((value,), {})[0]
        assert got == value and type(got) is type(value)


@pytest.mark.parametrize("limits", MODES)
def test_configure_reaches_code(limits):
    code = ("FUNCTION = 'tests.probe:probe'\nLOGIC = 'probe'\nPARAMETERS = {}\nSCALE = 1\n"
            "def configure(params):\n    global SCALE\n    SCALE = params.get('scale', 1)\n"
            "def probe(x):\n    return x * SCALE\n"
            "def perceive(x):\n    return (x,)\ndef operate_prime(*p):\n    return probe(*p)\n"
            "def enforce(r):\n    return r\n")
    loaded = load(code, limits, params={"scale": 3})
    assert loaded.call((2,), {})[0] == 6
    loaded.configure({"scale": 5})
    assert loaded.call((2,), {})[0] == 10


def test_user_exception_passes_through_in_process():
    loaded = load(module_text("raise KeyError(key)", logic_args="key"), IN_PROCESS)
    with pytest.raises(KeyError, match="k1"):
        loaded.call(("k1",), {})


def test_user_exception_from_worker_is_phase_error():
    loaded = load(module_text("raise KeyError(key)", logic_args="key"), WORKER)
    before = set(worker_pids())
    for _ in range(3):
        with pytest.raises(PhaseError, match="KeyError") as caught:
            loaded.call(("k1",), {})
        assert type(caught.value).__name__ == "UserLogicError"  # the host re-runs the original for it
    assert set(worker_pids()) == before  # a user's exception does not cost a worker
    ok = load(module_text("return key", logic_args="key"), WORKER)
    assert ok.call(("k2",), {})[0] == "k2"


@pytest.mark.parametrize("limits", MODES)
def test_print_is_written_only_on_success(limits, capsys):
    loaded = load(module_text("print('hello', x)\nif x < 0:\n    raise ValueError('neg')\nreturn x",
                              logic_args="x"), limits)
    assert loaded.call((1,), {})[0] == 1
    assert capsys.readouterr().out == "hello 1\n"
    with pytest.raises((ValueError, PhaseError)):
        loaded.call((-1,), {})
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("limits", MODES)
def test_output_flood_stopped(limits):
    loaded = load(module_text("while True:\n    print('x' * 1000)"), limits)
    started = time.monotonic()
    with pytest.raises(PoetViolation) as caught:
        loaded.call((), {})
    assert caught.value.limit == "max_output_kb" and time.monotonic() - started < 2.0


def test_large_result_from_worker_is_an_output_violation():
    loaded = load(module_text("return 'x' * (n * 1024)", logic_args="n"), WORKER)
    assert len(loaded.call((4,), {})[0]) == 4096
    with pytest.raises(PoetViolation) as caught:
        loaded.call((WORKER.max_output_kb + 1,), {})
    assert caught.value.limit == "max_output_kb"
    assert loaded.call((1,), {})[0] == "x" * 1024  # the worker is fine afterwards


def test_globals_are_copied_and_filtered():
    import json as json_module
    import os as os_module

    table = {"rate": 2}
    code = module_text("TABLE['rate'] = 99\nreturn helper(x) + json.loads('1')", logic_args="x")
    user_globals = {"TABLE": table, "json": json_module, "helper": _helper, "unused": os_module}
    loaded = load(code, IN_PROCESS, user_globals=user_globals, function_id=f"{__name__}:probe")
    assert loaded.call((1,), {})[0] == 3
    assert table == {"rate": 2}  # the host's dict is untouched
    with pytest.raises(PoetViolation, match="'os'"):
        load(module_text("return os.getcwd()"), IN_PROCESS, user_globals={"os": os_module})
    with pytest.raises(PhaseError, match="helper"):
        load(code, WORKER, user_globals=user_globals, function_id=f"{__name__}:probe")
    loaded = load(module_text("return TABLE['rate'] * x", logic_args="x"), WORKER, user_globals={"TABLE": table})
    assert loaded.call((4,), {})[0] == 8


def _helper(x):
    return x + 1


def test_argument_that_cannot_cross_falls_back():
    loaded = load(module_text("return x", logic_args="x"), WORKER)
    with pytest.raises(PhaseError, match="cannot cross"):
        loaded.call((object(),), {})


def test_async_logic_in_process_and_worker():
    code = (HEADER + "async def probe(x):\n    return x + 1\n"
            "def perceive(x):\n    return (x,)\n"
            "async def operate_prime(*p):\n    return await probe(*p)\n"
            "def enforce(r):\n    return r\n")
    for limits in (IN_PROCESS, WORKER):
        loaded = load(code, limits)
        assert asyncio.run(loaded.call_async((1,), {}))[0] == 2


# -- limits in workers -------------------------------------------------------------------

def timed_violation(loaded, limit):
    started = time.monotonic()
    with pytest.raises(PoetViolation) as caught:
        loaded.call((), {})
    assert caught.value.limit == limit, caught.value
    return time.monotonic() - started


def test_cpu_loop_stopped_near_cpu_ms():
    elapsed = timed_violation(load(module_text("n = 0\nwhile True:\n    n += 1"), WORKER), "cpu_ms")
    # cpu_ms counts CPU time: on a busy machine it takes longer in wall time, never past wall_ms.
    assert elapsed < WORKER.wall_ms / 1000 + 0.5


def test_cpu_loop_that_swallows_the_stop_is_still_stopped():
    body = "while True:\n    try:\n        while True:\n            pass\n    except BaseException:\n        pass"
    elapsed = timed_violation(load(module_text(body), WORKER), "cpu_ms")
    assert elapsed < WORKER.wall_ms / 1000 + 0.5


def test_blocking_sleep_stopped_at_wall_ms():
    elapsed = timed_violation(load(module_text("import time\ntime.sleep(60)"), WORKER), "wall_ms")
    assert WORKER.wall_ms / 1000 - 0.05 < elapsed < WORKER.wall_ms / 1000 + 0.5


def test_memory_bomb_and_growth_stopped():
    assert timed_violation(load(module_text("x = 'a' * (10 ** 10)\nreturn len(x)"), WORKER), "memory_mb") < 1.0
    body = "chunks = []\nwhile True:\n    chunks.append(bytearray(16 * 1024 * 1024))"
    assert timed_violation(load(module_text(body), WORKER), "memory_mb") < 2.5


def test_memory_within_limit_is_fine():
    loaded = load(module_text("return len(bytearray(64 * 1024 * 1024))"), WORKER)
    assert loaded.call((), {})[0] == 64 * 1024 * 1024


def test_worker_death_is_replaced():
    loaded = load(module_text("return 7"), WORKER)
    assert loaded.call((), {})[0] == 7
    pool = get_backend("restricted").pool()
    deadline = time.monotonic() + 10
    while len(pool.idle) < pool.size and time.monotonic() < deadline:
        time.sleep(0.02)
    for worker in list(pool.idle):
        os.kill(worker.proc.pid, signal.SIGKILL)
        worker.proc.wait(timeout=5)  # dead for sure (a kill is asynchronous)
    # Dead idle workers are noticed when a request cannot be sent; nothing ran there,
    # so the call moves on to a fresh worker instead of falling back.
    assert [loaded.call((), {})[0] for _ in range(pool.size + 1)] == [7] * (pool.size + 1)
    assert all(worker.proc.poll() is None for worker in pool.idle)


def test_nothing_leaks_to_the_next_call():
    """State a violating call left behind (a huge list, a spinning timeout thread) is gone."""
    body = ("from poet_sandbox.timeouts import call_with_timeout\n"
            "def spin():\n    while True:\n        pass\n"
            "if mode == 'thread':\n    call_with_timeout(spin, (), {}, 0.01)\n"
            "if mode == 'memory':\n    HOLD.append(bytearray(100 * 1024 * 1024))\n    HOLD.append(bytearray(100 * 1024 * 1024))\n"
            "return len(HOLD)")
    code = module_text(body, logic_args="mode", prelude="HOLD = []")
    loaded = load(code, WORKER)
    with pytest.raises(PoetViolation):
        loaded.call(("memory",), {})
    for _ in range(4):
        assert loaded.call(("none",), {})[0] == 0
    with pytest.raises((PhaseError, PoetViolation)):
        loaded.call(("thread",), {})  # TimeoutError in the logic; the spinning thread retires the worker
    started = time.monotonic()
    for _ in range(4):
        assert loaded.call(("none",), {})[0] == 0
    assert time.monotonic() - started < 3.0  # includes waiting for a replacement worker


def test_closed_enhancement_refuses_calls():
    loaded = load(module_text("return 1"), WORKER)
    loaded.close()
    with pytest.raises(PhaseError):
        loaded.call((), {})


# -- end to end: the built-in generator's code under the restricted backend -------------------

DRIFT = '''\
import statistics
from poet_runtime import poet


@poet(domain="ml_monitoring", optimize_for="accuracy")
def detect_drift(current: list[float], reference: list[float], threshold: float = 0.5) -> dict:
    gap = abs(statistics.fmean(current) - statistics.fmean(reference))
    return {"drift_detected": gap > threshold, "score": gap}


@poet(domain="api_operations", retries=2)
def double(x: int) -> int:
    return x * 2


@poet(domain="api_operations")
def shout(x: int) -> int:
    print("shout", x)
    return x
'''


@pytest.mark.parametrize("policy", ["default", "in-process"])
def test_generated_code_runs_restricted_end_to_end(policy, poet_home, write_module, monkeypatch, tmp_path, capsys):
    import poet_runtime

    if policy == "in-process":
        path = tmp_path / "inproc.toml"
        path.write_text('version = 1\n[defaults]\nbackend = "restricted"\nmax_output_kb = 64\n'
                        'imports = ["statistics", "math", "time", "random"]\n')
        policy = str(path)
    monkeypatch.setenv("POET_POLICY", policy)
    module = write_module(f"drift_restricted_{abs(hash(policy))}", DRIFT)
    assert module.detect_drift([1.0, 2.0], [1.0, 2.0]) == {"drift_detected": False, "score": 0.0}
    record = poet_runtime.last_execution()
    assert (record.backend, record.status, record.fell_back) == ("restricted", "ok", False), record
    assert module.double(3) == 6 and poet_runtime.last_execution().backend == "restricted"
    assert module.double("4") == 8  # Perceive repaired the input inside the sandbox
    assert module.detect_drift.__poet__.loaded.observations()["calls"] >= 1  # Train's STATS
    capsys.readouterr()
    assert module.shout(3) == 3 and poet_runtime.last_execution().backend == "restricted"
    assert capsys.readouterr().out == "shout 3\n"  # printed once, by the enhanced call


def worker_pids() -> list[int]:
    """Our worker processes, found through /proc (the pool does not track busy ones)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                command = f.read()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == os.getpid() and b"harness/worker.py" in command:
            found.append(int(entry))
    return found


def _sleeping(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/wchan") as f:
            return "nanosleep" in f.read()
    except OSError:
        return False


def test_worker_killed_mid_call_falls_back_and_is_replaced():
    import threading

    loaded = load(module_text("import time\ntime.sleep(1.2)\nreturn 1"), WORKER)
    outcome = []

    def run():
        try:
            outcome.append(loaded.call((), {})[0])
        except PhaseError as error:
            outcome.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    # Kill only once a worker is inside the call's sleep: a fixed delay races a loaded machine
    # (a request that has not reached its worker yet is retried elsewhere, by design).
    deadline = time.monotonic() + 1.0
    busy = []
    while time.monotonic() < deadline and not busy:
        busy = [pid for pid in worker_pids() if _sleeping(pid)]
        time.sleep(0.01)
    for pid in busy or worker_pids():
        os.kill(pid, signal.SIGKILL)
    thread.join(5)
    assert len(outcome) == 1 and isinstance(outcome[0], PhaseError) and "died" in str(outcome[0])
    fine = load(module_text("return 5"), WORKER)
    assert fine.call((), {})[0] == 5


def test_a_worker_killed_while_idle_is_passed_over():
    loaded = load(module_text("return 7"), WORKER)
    assert loaded.call((), {})[0] == 7
    for pid in worker_pids():  # every idle worker dies (an OOM killer, an operator)
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 2
    while worker_pids() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert loaded.call((), {})[0] == 7  # nothing ran on the dead ones: a fresh worker answers
    assert load(module_text("return 8"), WORKER).call((), {})[0] == 8


def test_more_concurrent_calls_than_workers():
    import threading

    loaded = load(module_text("import time\ntime.sleep(0.05)\nreturn x", logic_args="x"), WORKER)
    results = {}

    def run(i):
        results[i] = loaded.call((i,), {})[0]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == {i: i for i in range(6)}
