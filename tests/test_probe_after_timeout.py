"""A policy's timeout leaves the process as it found it, so later LLM probes still run.

The defect this guards: a timeout of ``poet_sandbox.timeouts`` in a thread other than
the main one took its asynchronous exception back with ``PyThreadState_SetAsyncExc(id,
NULL)``, which leaves CPython's interpreter-wide "async exception pending" flag set
for good. On 3.11 a traced thread then spins at its next function entry: every later
probe run (``generate/probes.run_probes`` traces its thread to enforce its deadline)
hung until its join timeout, and every later answer was refused.

Each scenario runs in a fresh interpreter (``CHILD``), as a long-running program
would: real RestrictedPython in-process and a real worker process, real ``SIGALRM``,
real watchdog threads, real probe runs of the built-in version and of a restricted
module whose ``operate_prime`` itself uses ``call_with_timeout`` inside the probe
thread. The child prints one JSON line per step; the asserts are here.
``POET_TEST_PROBE_ROUNDS`` repeats the scenario more often locally (default 2).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROUNDS = int(os.environ.get("POET_TEST_PROBE_ROUNDS", "2"))

TARGET = '''
def add(a: int, b: int = 2) -> int:
    """Add two numbers.

    >>> add(10, 5)
    15
    """
    return a + b
'''

CHILD = r'''
import collections, json, os, signal, sys, threading, time

tests, folder, scenario, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
sys.path[:0] = [tests, folder]

from poet_runtime.backends import load_code
from poet_runtime.backends.base import Limits
from poet_runtime.decorator import PoetConfig
from poet_runtime.domains import get_domain
from poet_runtime.generate.builtin import BuiltinGenerator
from poet_runtime.generate.probes import run_probes, sample_inputs
from poet_runtime.generate.spec import spec_from_function
from sandbox_helpers import load, module_text
import probe_target

IMPORTS = ("math", "json", "collections", "time")
MODES = {"in-process": Limits(max_output_kb=4, imports=IMPORTS),
         "worker": Limits(wall_ms=1500, cpu_ms=300, memory_mb=128, max_output_kb=16, imports=IMPORTS)}
TIMED = "from poet_sandbox.timeouts import call_with_timeout"


def say(**fields):
    print(json.dumps(fields), flush=True)


def stop(**fields):
    say(**fields)
    os._exit(0)  # a thread may be spinning: do not wait for it


def state():
    """What a timeout must leave as it found it."""
    deadline = time.monotonic() + 10
    while any(t.name == "poet-worker-start" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.01)  # the pool's own start-up threads, not a timeout's
    return {"trace": repr(sys.gettrace()), "profile": repr(sys.getprofile()),
            "thread_trace": repr(threading.gettrace()), "thread_profile": repr(threading.getprofile()),
            "alarm": repr(signal.getsignal(signal.SIGALRM)), "itimer": list(signal.getitimer(signal.ITIMER_REAL)),
            "threads": sorted(t.name for t in threading.enumerate() if t.name != "poet-worker-start"),
            "recursion": sys.getrecursionlimit(), "switch": sys.getswitchinterval()}


def traced_thread_runs() -> bool:
    """A new thread with a trace function can call a function and end (the flag is clear)."""
    done = []

    def tracer(frame, event, arg):
        return tracer

    def entered(value):  # a Python function entry under tracing is where the flag made it spin
        return value

    def work():
        sys.settrace(tracer)
        done.append(entered(1))
        done.append(entered(2))
        sys.settrace(None)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(10.0)  # milliseconds when all is well; a spinning thread never ends
    return len(done) == 2 and not thread.is_alive()


def spin():
    while True:
        pass


def timeouts(loaded, count):
    """``count`` timeouts in the main thread (SIGALRM), then ``count`` in another (watchdog)."""
    seen = []

    def run():
        for _ in range(count):
            started = time.monotonic()
            try:
                loaded.call(spin, (), {})
                seen.append(("returned", 0))
            except TimeoutError:
                seen.append(("timeout", time.monotonic() - started))
            except BaseException as error:
                seen.append((f"{type(error).__name__}: {error}", 0))

    run()
    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    return seen


def race(count):
    """Calls that end about when their timeout fires (in the main thread and another at once):
    an expiry that arrives as the call returns, or inside the guard's stop, is taken back or
    becomes TimeoutError, never anything else."""
    from poet_sandbox.timeouts import call_with_timeout

    seen = collections.Counter()

    def busy(seconds):
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass
        return seconds

    def run():
        for index in range(count):
            try:
                call_with_timeout(busy, (0.0015 + (index % 5) * 0.0002,), {}, 0.002)
                seen["returned"] += 1
            except TimeoutError:
                seen["timeout"] += 1
            except BaseException as error:
                seen[type(error).__name__] += 1

    thread = threading.Thread(target=run)
    thread.start()
    run()
    thread.join(30)
    return dict(seen)


spec = spec_from_function(probe_target.add)
baseline = BuiltinGenerator().generate(spec, PoetConfig.from_kwargs("probe_target:add"), get_domain(None))
samples = sample_inputs(spec)


def in_process(code):
    return lambda: load_code(code, filename="<probe test>", version=0, params={}, is_async=False,
                             function_id="probe_target:add", original=probe_target.add, policy=None)


def timed_candidate():
    body = "return call_with_timeout(logic, args, kwargs, 1.0)"
    return lambda: load(module_text(body, params="a, b=None", prelude=TIMED, function_id="probe_target:add"),
                        MODES["in-process"], function_id="probe_target:add")


def probes(label, candidate, call_s=2.0, load_s=10.0):
    started = time.monotonic()
    try:
        report = run_probes(candidate_loader=candidate, baseline_loader=in_process(baseline.code),
                            original=probe_target.add, is_async=False, samples=samples, call_timeout_s=call_s,
                            load_timeout_s=load_s, parameters=["a", "b"]).as_dict()
    except Exception as error:
        report = {"error": f"{type(error).__name__}: {error}"}
    return {"label": label, "report": report, "seconds": time.monotonic() - started}


in_process(baseline.code)().close()  # first loads (imports, compiling) are not what is timed
if scenario == "stale-flag":
    # Any code in the process may take an async exception back with NULL (a common recipe).
    import ctypes

    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(threading.get_ident()), None)
    say(step="probe", **probes("built-in version, after a NULL take-back", in_process(baseline.code), 0.5, 2.0))
    stop(step="end", traced=traced_thread_runs())

loaded = {mode: load(module_text("return call_with_timeout(logic, args, kwargs, 0.05)", prelude=TIMED), limits)
          for mode, limits in MODES.items()}
for mode in MODES:
    loaded[mode].call(lambda: 5, (), {})  # the worker pool is up before the first look
before = state()
say(step="before", state=before, traced=traced_thread_runs())
for index in range(rounds):
    say(step="race", round=index, seen=race(40))
    for mode in MODES:
        say(step="timeouts", mode=mode, round=index, seen=timeouts(loaded[mode], 3))
        traced = traced_thread_runs()
        say(step="traced", mode=mode, round=index, ok=traced)
        if not traced:
            stop(step="end", state=state())
        say(step="probe", mode=mode, round=index, **probes("built-in version", in_process(baseline.code)))
        say(step="probe", mode=mode, round=index, **probes("timed restricted module", timed_candidate()))
say(step="end", state=state())
'''


def run_child(tmp_path, scenario: str, rounds: int = 1) -> list[dict]:
    folder = tmp_path / "mods"
    folder.mkdir()
    (folder / "probe_target.py").write_text(TARGET, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("POET_")}
    env.update(POET_HOME=str(tmp_path / "home"), POET_CACHE_DIR=str(tmp_path / "cache"), POET_POLICY="trusted")
    done = subprocess.run([sys.executable, "-c", CHILD, str(TESTS), str(folder), scenario, str(rounds)],
                          capture_output=True, text=True, env=env, timeout=240)
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines and lines[-1]["step"] == "end", (done.returncode, done.stdout[-2000:], done.stderr[-4000:])
    return lines


def assert_probes_pass(line: dict) -> None:
    report = line["report"]
    assert "error" not in report, line
    assert report["samples"] >= 3 and report["agreed"] == report["samples"], line
    assert not report["declined"] and not report["skipped"], line
    # Healthy probe runs take milliseconds; a spinning probe thread runs into its join timeout
    # (tens of seconds), so the bound tells the two apart with room for a loaded machine.
    assert line["seconds"] < 5.0, line


def test_probes_run_after_policy_timeouts_and_the_process_is_as_it_was(tmp_path):
    lines = run_child(tmp_path, "timeouts", ROUNDS)
    before = next(line for line in lines if line["step"] == "before")
    assert before["traced"], "a traced thread does not run even before any timeout"
    traced = [line for line in lines if line["step"] == "traced"]
    assert len(traced) == 2 * ROUNDS and all(line["ok"] for line in traced), traced
    for line in (line for line in lines if line["step"] == "timeouts"):
        kinds = [kind for kind, _ in line["seen"]]
        assert kinds == ["timeout"] * 6, line  # three by SIGALRM, three by the watchdog
        assert max(seconds for _, seconds in line["seen"]) < 1.0, line
    for line in (line for line in lines if line["step"] == "race"):
        assert set(line["seen"]) <= {"returned", "timeout"} and sum(line["seen"].values()) == 80, line
    probe_lines = [line for line in lines if line["step"] == "probe"]
    assert len(probe_lines) == 4 * ROUNDS
    for line in probe_lines:
        assert_probes_pass(line)
    # Every hook, the alarm, the timer and the threads are back to what they were.
    assert lines[-1]["state"] == before["state"]
    assert before["state"]["alarm"] == "<Handlers.SIG_DFL: 0>" and before["state"]["itimer"] == [0.0, 0.0]
    assert "poet-timeout" not in before["state"]["threads"] and "poet-probe" not in before["state"]["threads"]


@pytest.mark.skipif(sys.implementation.name != "cpython", reason="PyThreadState_SetAsyncExc is CPython's")
def test_probes_run_when_other_code_left_the_async_exception_flag_set(tmp_path):
    lines = run_child(tmp_path, "stale-flag")
    probe = next(line for line in lines if line["step"] == "probe")
    assert_probes_pass(probe)
    assert lines[-1]["traced"], "the probe thread's clearing should leave a traced thread able to run"


class PassThrough:
    """A loaded candidate to contract 2's ``call``: the logic's own result, unchanged."""

    def call(self, logic, args, kwargs):
        return (logic(*args, **kwargs), 0.0, 0.0, 0.0, 0.0, ())

    def close(self):
        pass


def test_an_abandoned_probe_thread_calls_the_function_no_more():
    import threading
    import time

    from poet_runtime.errors import CheckFailed
    from poet_runtime.generate.probes import run_probes

    started = []

    def slow(x: int) -> int:
        started.append(time.monotonic())
        time.sleep(2.2)  # blocked in C: the tracer cannot stop it, and the join (2.05 s) gives up first
        return x

    earlier = {t for t in threading.enumerate() if t.name == "poet-probe"}
    with pytest.raises(CheckFailed) as failed:
        run_probes(candidate_loader=PassThrough, baseline_loader=None, original=slow, is_async=False,
                   samples=[((1,), {}), ((2,), {}), ((3,), {})], call_timeout_s=0.05, load_timeout_s=0.3)
    given_up = time.monotonic()
    assert failed.value.reason == "probe_timeout"
    ours = [t for t in threading.enumerate() if t.name == "poet-probe" and t not in earlier]
    for thread in ours:
        thread.join(3.0)  # once the sleep returns, the thread ends instead of probing on
    assert not any(thread.is_alive() for thread in ours)
    assert started and all(moment < given_up for moment in started), (started, given_up)
