"""First-call cost of ``@poet`` functions in a 20 000-line module, cold and warm store, against a baseline.

Why: the first call of an enhanced function resolves it (reads its spec from the text its
module was compiled from, finds or generates its version, loads it). That must not grow
with the size of the module the function lives in (issue 15, point 14: it took 6-7 s per
function in a 20 000-line module, warm store or not).

Writes a 20 000-line module holding ``--functions`` ``@poet`` functions (hints, defaults,
a TypedDict, methods) among plain helpers and classes, then runs, each in a fresh
interpreter with the import hook on (``poet_runtime.enable()``) and ``POET_GENERATE=sync``:

- cold store: the first call of every function (the built-in generator writes each version);
- warm store: the same in a new process on the filled store (versions found, not written),
  once with the module compiled at import and once imported from the hook's pyc;
- spec alone: ``spec_from_function`` of every function, in a new process.

Each row is the median over functions, with the 90th percentile and the first function
(the one that pays for preparing the module's text: one parse of the whole module).
The baseline, measured in the same run: ``ast.parse`` of the module plus
``inspect.signature`` of one function, the least that reading a function from the
module's source the naive way costs. Targets: warm store <= 50 ms per function, cold
(built-in generation) <= 20 ms per function; ratios to the baseline well below 1.

    python benchmarks/bench_first_call.py [--lines 20000] [--functions 200] [--policy trusted]
    python benchmarks/bench_first_call.py --background [--runs 9]

``--background`` (issue 16, item 11): with a model set and ``POET_GENERATE=background``, how
long the very first call of a process keeps the caller's thread (it only starts the
generation and runs the original), each run a fresh interpreter; against the same first
call with the policy module (and pydantic) already imported before it, which is what is
left when nothing heavy runs on the caller's thread, and the plain function's first call.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

HEADER = '''"""A big module: {functions} @poet functions among {lines} lines of ordinary code."""
from __future__ import annotations

import json
import math
from typing import Optional, TypedDict

from poet_runtime import poet


class Reading(TypedDict, total=False):
    sensor: str
    value: float


LIMIT = 10
'''

POET_FUNCTION = '''
@poet
def scale_{i}(x: int, factor: float = 1.5, *, label: str = "s{i}", tags: Optional[list[str]] = None) -> float:
    """Scaled value number {i}."""
    # the body uses a module constant and an import
    total = x * factor + {i} % LIMIT
    if tags:
        total += len(tags)
    return math.sqrt(abs(total))
'''

POET_TYPED = '''
@poet(domain="base")
def reading_{i}(x: int, unit: str = "c") -> Reading:
    value = float(x) * {i}
    return {{"sensor": unit + str({i}), "value": value}}
'''

POET_METHOD = '''
class Meter{i}:
    offset = {i}

    @poet
    def measure(self, x: int, digits: int = 2) -> float:
        return round(x / 3 + self.offset, digits)


meter_{i} = Meter{i}()
'''

HELPER = '''
def helper_{i}(a, b=2, *rest):
    c = a + b * {i}
    for k in range(3):
        c += k
    return json.dumps([c, *rest])


class Record{i}:
    """Plain class {i}."""

    def __init__(self, name: str, value: int = {i}):
        self.name, self.value = name, value

    def scaled(self, factor: int) -> int:
        return self.value * factor
'''


def build_module(path: Path, lines: int, functions: int) -> list[str]:
    """Write the module; returns the expressions calling each @poet function once."""
    parts = [HEADER.format(functions=functions, lines=lines)]
    calls: list[str] = []
    count = sum(part.count("\n") for part in parts)
    helper_lines = HELPER.count("\n")
    # Spread the @poet functions evenly: helpers fill the space between them.
    per_function = max(0, (lines - count - functions * 9) // max(functions, 1))
    i = 0
    for n in range(functions):
        for _ in range(max(per_function // helper_lines, 0)):
            parts.append(HELPER.format(i=i))
            i += 1
        kind = n % 4
        if kind == 3:
            parts.append(POET_METHOD.format(i=n))
            calls.append(f"meter_{n}.measure(7)")
        elif kind == 2:
            parts.append(POET_TYPED.format(i=n))
            calls.append(f"reading_{n}(3)")
        else:
            parts.append(POET_FUNCTION.format(i=n))
            calls.append(f"scale_{n}(2)")
    text = "".join(parts)
    while text.count("\n") < lines:
        text += HELPER.format(i=i)
        i += 1
    path.write_text(text, encoding="utf-8")
    return calls


DRIVER = r'''
import json, sys, time
mode, calls = sys.argv[1], json.loads(sys.argv[2])
import poet_runtime
poet_runtime.enable()  # the import hook on: the module's text is remembered as it is imported
import tiny
import bigmod

# One-time start-up of the runtime (its own imports, settings, policy) is paid by a function of a
# 3-line module first, so that the rows below show what a function of the big module costs.
start = time.perf_counter()
tiny.tiny(1)
startup = (time.perf_counter() - start) * 1000

def target(expression):
    owner, _, rest = expression.partition("(")
    return eval(owner, vars(bigmod))

out = []
if mode == "spec":
    from poet_runtime.enhanced import state_of
    from poet_runtime.generate.spec import spec_from_function
    for expression in calls:
        state = state_of(target(expression))
        start, cpu = time.perf_counter(), time.process_time()
        spec_from_function(state.original, source=state.static_source, lineno=state.static_lineno, module=state.module)
        out.append(((time.perf_counter() - start) * 1000, (time.process_time() - cpu) * 1000, True, None))
else:
    for expression in calls:
        start, cpu = time.perf_counter(), time.process_time()
        eval(expression, vars(bigmod))
        elapsed, used = (time.perf_counter() - start) * 1000, (time.process_time() - cpu) * 1000
        record = poet_runtime.last_execution()
        out.append((elapsed, used, record is not None and not record.fell_back, record and record.reason))
print(json.dumps({"startup": startup, "rows": out}))
'''

TINY = '''from poet_runtime import poet

@poet
def tiny(x: int) -> int:
    return x + 1
'''


BASELINE = r'''
import ast, inspect, json, sys, time
import bigmod
text = open(bigmod.__file__, encoding="utf-8").read()
function = getattr(bigmod.helper_0, "__wrapped__", bigmod.helper_0)
out = []
for _ in range(int(sys.argv[1])):
    start = time.perf_counter()
    ast.parse(text)
    inspect.signature(function)
    out.append((time.perf_counter() - start) * 1000)
print(json.dumps(out))
'''


BACKGROUND = r'''
import json, sys, time
if sys.argv[1] == "preloaded":
    import poet_runtime.policy  # noqa: F401  (what a background thread would import instead)
import poet_runtime
from poet_runtime import poet
if sys.argv[1] != "plain":
    poet_runtime.enable(hook=False)


@poet()
def add(a: int, b: int = 2) -> int:
    return a + b


start = time.perf_counter()
add(1, 2)
first = (time.perf_counter() - start) * 1000
print(json.dumps({"first_ms": first, "pydantic_on_caller": "pydantic" in sys.modules}))
'''


def background(runs: int) -> None:
    from statistics import median

    with tempfile.TemporaryDirectory(prefix="poet-bench-bg-") as scratch:
        folder = Path(scratch)
        (folder / "bg.py").write_text(BACKGROUND)
        env = {k: v for k, v in os.environ.items() if not k.startswith("POET_")}
        # A model nobody answers (port 9): generation starts in the background and fails there.
        env.update(PYTHONPATH=str(REPO), POET_HOME=str(folder / "home"), POET_CACHE_DIR=str(folder / "cache"),
                   POET_MODEL="openai/bench", POET_API_BASE="http://127.0.0.1:9/v1", POET_GENERATE="background",
                   POET_LLM_WORKER="off", POET_POLICY="trusted")
        results = {}
        for variant in ("as is", "preloaded", "plain"):
            samples = []
            for _ in range(runs):
                shutil.rmtree(folder / "home", ignore_errors=True)
                samples.append(run(folder, env, "bg.py", variant.replace("as is", "asis")))
            results[variant] = samples
    plain = median(r["first_ms"] for r in results["plain"])
    print(f"first call in background mode, caller's thread, median of {runs} fresh processes (ms)")
    for variant, label in (("as is", "ours, as is"), ("preloaded", "ours, policy imported before the call"),
                           ("plain", "baseline: plain function, POET off")):
        value = median(r["first_ms"] for r in results[variant])
        heavy = sum(r["pydantic_on_caller"] for r in results[variant])
        print(f"  {label:40} {value:9.2f}   x{value / max(plain, 1e-6):9.1f} of plain   "
              f"pydantic imported in the process: {heavy}/{runs}")


def run(folder: Path, env: dict, *args: str):
    done = subprocess.run([sys.executable, *args], cwd=folder, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{args[0]} {args[1]} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summary(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
    return statistics.median(samples), p90, samples[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=20_000)
    parser.add_argument("--functions", type=int, default=200)
    parser.add_argument("--policy", default="trusted")
    parser.add_argument("--baseline-runs", type=int, default=7)
    parser.add_argument("--background", action="store_true", help="the first call in background mode (item 11)")
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    if args.background:
        background(args.runs)
        return
    with tempfile.TemporaryDirectory(prefix="poet-bench-first-") as scratch:
        folder = Path(scratch)
        calls = build_module(folder / "bigmod.py", args.lines, args.functions)
        (folder / "driver.py").write_text(DRIVER)
        (folder / "tiny.py").write_text(TINY)
        (folder / "baseline.py").write_text(BASELINE)
        env = {k: v for k, v in os.environ.items() if not k.startswith("POET_")}
        env.update(PYTHONPATH=os.pathsep.join([str(REPO), str(folder)]), POET_HOME=str(folder / "home"),
                   POET_CACHE_DIR=str(folder / "cache"), POET_POLICY=args.policy, POET_GENERATE="sync")
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        compiled = dict(env, PYTHONDONTWRITEBYTECODE="1")  # with no pyc present: the module is compiled at import
        lines = (folder / "bigmod.py").read_text().count("\n")
        encoded = json.dumps(calls)
        # The cold run compiles the module (the hook hands its AST to the spec reader) and writes
        # the hook's pyc; the next run imports from that pyc, so its first call parses the module.
        cold = run(folder, env, "driver.py", "cold", encoded)
        warm_pyc = run(folder, env, "driver.py", "warm", encoded)
        shutil.rmtree(folder / "__pycache__", ignore_errors=True)
        warm = run(folder, compiled, "driver.py", "warm", encoded)
        spec = run(folder, compiled, "driver.py", "spec", encoded)
        baseline = run(folder, compiled, "baseline.py", str(args.baseline_runs))

    base = statistics.median(baseline)
    print(f"module: {lines} lines, {len(calls)} @poet functions, policy {args.policy}")
    print(f"{'per function, ms':38} {'median':>8} {'p90':>8} {'first':>8} {'CPU med':>8} {'enhanced':>9} "
          f"{'median/baseline':>15}")
    print(f"{'baseline: ast.parse(module) + signature':38} {base:8.2f} {'':>8} {'':>8} {'':>8} {'':>9} {1:15.3f}")
    for label, result in (("ours, spec alone", spec), ("ours, first call, cold store", cold),
                          ("ours, first call, warm store", warm), ("ours, first call, warm store, pyc", warm_pyc)):
        rows = result["rows"]
        median, p90, first = summary([row[0] for row in rows])
        cpu = statistics.median(row[1] for row in rows)
        enhanced = sum(1 for row in rows if row[2])
        reasons = sorted({str(row[3]) for row in rows if not row[2]})
        print(f"{label:38} {median:8.2f} {p90:8.2f} {first:8.2f} {cpu:8.2f} {enhanced:>4}/{len(rows):<4} "
              f"{median / base:15.4f}" + (f"  fell back: {', '.join(reasons)}" if reasons else ""))
    print()
    print("first: the big module's first function, which also prepares the module's text: from the AST the import")
    print("       hook parsed as it compiled the module, or, imported from the hook's pyc, from what the first run")
    print("       stored beside it. The runtime's own one-time start-up is paid before, by a 3-line module's function: "
          + ", ".join(f"{name} {result['startup']:.0f} ms" for name, result in
                      (("cold", cold), ("warm", warm), ("warm pyc", warm_pyc), ("spec", spec))))
    print(f"targets: warm store median <= 50 ms ({statistics.median(row[0] for row in warm['rows']):.1f}), "
          f"cold store (built-in generation) median <= 20 ms ({statistics.median(row[0] for row in cold['rows']):.1f})")


if __name__ == "__main__":
    main()
