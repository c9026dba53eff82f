"""What the restricted worker's OS layers cost per call, next to the raw pipe floor.

Why: the worker confines itself (``sandbox/harness/confine.py``: namespaces, no new
privileges, hard rlimits, Landlock, a seccomp allow-list). seccomp runs a filter on
every system call, so a call's round trip could get slower; the bar (issue 13) is
the confined worker within 2.5x of the raw pipe floor. Measured in the same run:

- raw pipe + JSON, one round trip and two. Two is the fair floor and the one the
  bar is measured against: a call under contract 2 makes two crossings each way
  (the call line, the worker's request for the user's logic, the logic's answer,
  the final reply), so one raw round trip leaves half the message pattern out;
- the restricted worker with every layer on (what the default policy gets), and
  with every layer turned off (``POET_SANDBOX_LAYERS_OFF``), same code, same pool;
- all four in alternating blocks, so the machine's drifting load hits each alike;
- the worker's start-up time, both ways (it happens in the background).

Run: ``.venv/bin/python benchmarks/bench_worker_confinement.py [--quick]``. Prints medians, p95, ratios.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_restricted import PIPE_CHILD, TINY, add, percentiles  # noqa: E402

from poet_runtime.backends import LoadRequest, os_sandbox  # noqa: E402
from poet_runtime.backends.base import Limits  # noqa: E402
from poet_runtime.backends.restricted import harness_module  # noqa: E402
from poet_runtime.backends.restricted_worker import WorkerEnhancement  # noqa: E402
from poet_runtime.backends.workers import Worker, WorkerPool  # noqa: E402

LIMITS = Limits(wall_ms=1000, cpu_ms=500, memory_mb=128)
ALL_OFF = ",".join(os_sandbox.LAYERS)


def _enhancement(layers_off: str | None):
    """A pool of one worker (started with these layers off) and the tiny enhancement in it."""
    if layers_off:
        os.environ[os_sandbox.OFF_VARIABLE] = layers_off
    else:
        os.environ.pop(os_sandbox.OFF_VARIABLE, None)
    try:
        pool = WorkerPool(harness_module("worker_codec"), 1)
        request = LoadRequest(function_id="bench:add", version=1, code=TINY, filename="<bench>", logic_name="",
                              params={}, user_globals={}, limits=LIMITS)
        enhancement = WorkerEnhancement(pool, request)
        worker = pool.acquire()
        layers = sorted(name for name in os_sandbox.LAYERS if worker.layers.get(name))
        pool.release(worker)
        return pool, enhancement, layers
    finally:
        os.environ.pop(os_sandbox.OFF_VARIABLE, None)


def _raw_pipe():
    """A raw child answering JSON lines, and a function doing ``trips`` round trips with it."""
    proc = subprocess.Popen([sys.executable, "-I", "-c", PIPE_CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    w, r = proc.stdin.fileno(), proc.stdout.fileno()
    poller = select.poll()
    poller.register(r, select.POLLIN)

    def trips(count):
        for _ in range(count):
            os.write(w, (json.dumps({"op": "call", "args": [1, 2]}) + "\n").encode())
            poller.poll(1000)
            json.loads(os.read(r, 65536))

    return proc, trips


def measured(n):
    """The floors and both workers, measured in alternating blocks of 250 calls (the
    machine's load drifts: a block of each in turn keeps the ratios fair).
    {name: (median, p95)} and the layers of the on and off workers."""
    on_pool, on, on_layers = _enhancement(None)
    off_pool, off, off_layers = _enhancement(ALL_OFF)
    raw, trips = _raw_pipe()
    runs = {
        "one": lambda: trips(1),
        "two": lambda: trips(2),
        "on": lambda: on.call(add, (1, 2), {}),
        "off": lambda: off.call(add, (1, 2), {}),
    }
    samples = {name: [] for name in runs}
    clock = time.perf_counter_ns
    try:
        for run in runs.values():
            for _ in range(200):
                run()
        for _ in range(max(1, n // 250)):
            for name, run in runs.items():
                for _ in range(250):
                    started = clock()
                    run()
                    samples[name].append(clock() - started)
    finally:
        on_pool.close()
        off_pool.close()
        raw.kill()
        raw.wait()
    return {name: percentiles(values) for name, values in samples.items()}, on_layers, off_layers


def start_times(n, layers_off: str | None):
    codec = harness_module("worker_codec")
    options = [f"--skip={layers_off}"] if layers_off else []
    samples = []
    for _ in range(n):
        started = time.perf_counter_ns()
        worker = Worker(codec, options or ["--skip="])  # options given: the hello is not checked
        samples.append(time.perf_counter_ns() - started)
        worker.kill()
    return percentiles(samples)


def main():
    quick = "--quick" in sys.argv
    n, starts = (1000, 5) if quick else (5000, 15)
    results, on, off = measured(n)
    floor, floor2, confined, unconfined = (results[name] for name in ("one", "two", "on", "off"))
    rows = [
        ("raw pipe, one round trip", floor),
        ("raw pipe, two round trips", floor2),
        ("worker, every layer on", confined),
        ("worker, every layer off", unconfined),
    ]
    print(f"per-call latency (us), {os.cpu_count()} cpus; layers on: {', '.join(on) or 'none'}; "
          f"layers in the off run: {', '.join(off) or 'none'}")
    print("  fair floor: two raw round trips (a call is two crossings each way: the call, the logic's request,")
    print("  the logic's answer, the reply); the one-round-trip ratio is shown for comparison")
    print(f"  {'':30s} {'median':>9s} {'p95':>9s}  vs fair floor  vs one trip")
    for name, (median, p95) in rows:
        print(f"  {name:30s} {median:9.2f} {p95:9.2f}  {median / floor2[0]:12.2f}x  {median / floor[0]:9.2f}x")
    ratio = confined[0] / floor2[0]
    print(f"  layers on vs off: {confined[0] / unconfined[0]:.2f}x; confined vs the fair floor: {ratio:.2f}x "
          f"(bar: 2.5x, {'met' if ratio <= 2.5 else 'NOT met'}); vs one raw round trip: {confined[0] / floor[0]:.2f}x")
    on_start, off_start = start_times(starts, None), start_times(starts, ALL_OFF)
    print(f"worker start-up (ms, median of {starts}): layers on {on_start[0] / 1000:.1f}, "
          f"off {off_start[0] / 1000:.1f}")


if __name__ == "__main__":
    main()
