"""Benchmark of the restricted backend, with its baselines measured in the same run.

Why: the restricted backend promises (a) a worker round trip close to the cost of
any process hop, and (b) in-process guarded code within ~3x of native code. Both
claims only mean something next to a baseline measured on the same machine in the
same minute, so this script measures:

1. per-call latency of a tiny enhanced function: plain call, restricted in-process,
   restricted in a worker (contract 2: every call is the call line plus one logic
   round trip back to the host, where the user's function runs); and two process-hop
   baselines: a worker reached through ``concurrent.futures.ProcessPoolExecutor`` and
   a raw pipe with a JSON loop, one round trip and two (two is the fair floor for the
   worker: a call's message pattern is two round trips);
2. the cost of restricted execution on typical dict/list/attribute code: native,
   ours in-process, and RestrictedPython with its stock guards.

Run: ``.venv/bin/python benchmarks/bench_restricted.py [--quick]``. Prints medians, p95, ratios.
"""

from __future__ import annotations

import json
import os
import select
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from poet_runtime.backends import LoadRequest, get_backend  # noqa: E402
from poet_runtime.backends.base import Limits  # noqa: E402
from poet_runtime.backends.restricted import harness_module  # noqa: E402

TINY = """
FUNCTION = "bench:add"
DOMAIN = "base"
OBJECTIVE = None
PARAMETERS = {}
PARAMS = {}
def configure(params, defaults=None):
    pass
def perceive(a, b):
    return None
def operate_prime(logic, args, kwargs):
    return logic(*args, **kwargs)
def enforce(result):
    return result
"""

TYPICAL = """
class Row:
    def __init__(self, region, amount, tags):
        self.region = region
        self.amount = amount
        self.tags = tags

def work(records):
    rows = [Row(r["region"], r["amount"], r["tags"]) for r in records]
    totals = {}
    counts = {}
    seen = []
    best = None
    for row in rows:
        totals[row.region] = totals.get(row.region, 0) + row.amount
        counts[row.region] = counts.get(row.region, 0) + 1
        for tag in row.tags:
            if tag not in seen:
                seen.append(tag)
        if best is None or row.amount > best.amount:
            best = row
    total = 0
    for region, value in totals.items():
        total += value
    report = {k: {"total": v, "mean": v / counts[k]} for k, v in sorted(totals.items())}
    return {"report": report, "tags": sorted(seen), "best": best.region, "total": total}
"""


def add(a, b):
    return a + b


def identity(x):
    return x


def percentiles(samples_ns):
    samples = sorted(samples_ns)
    return statistics.median(samples) / 1000, samples[int(len(samples) * 0.95)] / 1000


def timed(fn, n, warmup=200):
    for _ in range(warmup):
        fn()
    out = []
    clock = time.perf_counter_ns
    for _ in range(n):
        t = clock()
        fn()
        out.append(clock() - t)
    return percentiles(out)


def load(limits):
    request = LoadRequest(function_id="bench:add", version=1, code=TINY, filename="<bench>", logic_name="",
                          params={}, user_globals={}, limits=limits)
    return get_backend("restricted").load(request)


def pool_baseline(n):
    with ProcessPoolExecutor(max_workers=1) as pool:
        pool.submit(identity, 1).result()
        return timed(lambda: pool.submit(identity, 1).result(), n, warmup=100)


PIPE_CHILD = r"""
import json, os
for line in os.fdopen(0, "rb", buffering=65536):
    m = json.loads(line)
    os.write(1, (json.dumps({"ok": True, "result": m["args"][0] + m["args"][1]}) + "\n").encode())
"""


def pipe_baseline(n, trips=1):
    """A child answering JSON lines; ``trips`` round trips per call (contract 2 needs two:
    the call, and the logic's answer)."""
    proc = subprocess.Popen([sys.executable, "-I", "-c", PIPE_CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    w, r = proc.stdin.fileno(), proc.stdout.fileno()
    poller = select.poll()
    poller.register(r, select.POLLIN)

    def once():
        for _ in range(trips):
            os.write(w, (json.dumps({"op": "call", "args": [1, 2]}) + "\n").encode())
            poller.poll(1000)
            json.loads(os.read(r, 65536))

    try:
        return timed(once, n, warmup=100)
    finally:
        proc.kill()
        proc.wait()


def stock_restricted_namespace():
    from RestrictedPython import safe_builtins
    from RestrictedPython.Eval import default_guarded_getitem, default_guarded_getiter
    from RestrictedPython.Guards import (full_write_guard, guarded_iter_unpack_sequence, guarded_unpack_sequence,
                                         safer_getattr)
    import operator

    ops = {"+=": operator.iadd, "-=": operator.isub, "*=": operator.imul}
    builtins = dict(safe_builtins, sorted=sorted, dict=dict, list=list, min=min, max=max)
    return {
        "__builtins__": builtins, "__name__": "bench", "__metaclass__": type,
        "_getattr_": safer_getattr, "_getitem_": default_guarded_getitem, "_getiter_": default_guarded_getiter,
        "_write_": full_write_guard, "_iter_unpack_sequence_": guarded_iter_unpack_sequence,
        "_unpack_sequence_": guarded_unpack_sequence, "_inplacevar_": lambda op, x, y: ops[op](x, y),
    }


def execution_cost(n):
    from RestrictedPython import compile_restricted

    records = [{"region": f"r{i % 7}", "amount": i * 1.5, "tags": [f"t{i % 5}", f"u{i % 3}"]} for i in range(200)]
    native = {"__name__": "bench"}
    exec(compile(TYPICAL, "<typical>", "exec"), native)
    restrict = harness_module("worker_restrict")
    code, errors = restrict.compile_module(TYPICAL, "<typical>")
    assert not errors, errors
    sandbox = restrict.Sandbox()
    ours = sandbox.namespace("bench", {})
    exec(code, ours)
    stock = stock_restricted_namespace()
    exec(compile_restricted(TYPICAL, "<typical>", "exec"), stock)
    stock["Row"]._guarded_writes = 1  # how the stock write guard lets a class's instances be written
    expected = native["work"](records)
    assert ours["work"](records) == expected and stock["work"](records) == expected
    return {name: timed(lambda fn=ns["work"]: fn(records), n, warmup=20)
            for name, ns in (("native", native), ("ours", ours), ("stock", stock))}


def main():
    quick = "--quick" in sys.argv
    n_fast, n_slow, n_exec = (3000, 1000, 200) if quick else (20000, 5000, 1000)
    in_process = load(Limits())
    worker = load(Limits(wall_ms=1000, cpu_ms=500, memory_mb=128))
    rows = [
        ("plain call", timed(lambda: add(1, 2), n_fast)),
        ("restricted in-process", timed(lambda: in_process.call(add, (1, 2), {}), n_fast)),
        ("restricted worker", timed(lambda: worker.call(add, (1, 2), {}), n_slow)),
        ("ProcessPoolExecutor worker", pool_baseline(n_slow)),
        ("raw pipe, one round trip", pipe_baseline(n_slow)),
        ("raw pipe, two round trips", pipe_baseline(n_slow, trips=2)),
    ]
    get_backend("restricted").close()
    floor = rows[5][1][0]
    print(f"per-call latency (us), {os.cpu_count()} cpus; fair floor: two raw round trips (a worker call is the")
    print("  call line and the logic's request, then the logic's answer and the reply)")
    print(f"  {'':30s} {'median':>9s} {'p95':>9s}  vs fair floor")
    for name, (median, p95) in rows:
        print(f"  {name:30s} {median:9.2f} {p95:9.2f}  {median / floor:12.2f}x")
    print(f"  worker vs ProcessPoolExecutor: {rows[2][1][0] / rows[3][1][0]:.2f}x; "
          f"vs the fair floor: {rows[2][1][0] / floor:.2f}x (bar: 2.5x); "
          f"vs one raw round trip: {rows[2][1][0] / rows[4][1][0]:.2f}x")
    cost = execution_cost(n_exec)
    native = cost["native"][0]
    print("typical dict/list/attribute code, per call (us)")
    for name, label in (("native", "native"), ("ours", "ours (in-process guards)"),
                        ("stock", "RestrictedPython stock guards")):
        median, p95 = cost[name]
        print(f"  {label:30s} {median:9.2f} {p95:9.2f}  {median / native:6.2f}x native")


if __name__ == "__main__":
    main()
