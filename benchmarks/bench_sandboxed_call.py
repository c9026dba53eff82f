"""Per-call latency of an UNVERIFIED version (an LLM answer, a hand edit) in the sandboxes.

A verified built-in version runs in-process under every policy that trusts it
(``bench_call_overhead.py`` measures that). Anything else runs where its policy says:
``default`` in a restricted worker process, ``strict`` in a WASM guest. Under contract 2
the user's logic stays in the host, so one call is two crossings: the call into the
sandbox (Perceive, the retry policy) and the logic call back to the host, then Enforce
in the sandbox and the reply.

Measured in one run, p50 and p90 per call:
- the plain function;
- the enhanced function under ``default`` and ``strict``, its stored built-in version
  edited by hand (one comment line) so that it is not verified;
- the floor of a process hop: a raw pipe to a child echoing JSON lines, one round trip
  and two (what a crossing call needs at least);
and, as a published reference, pydantic-monty's 0.08 ms warm call.

    python benchmarks/bench_sandboxed_call.py [--calls 400] [--skip-wasm]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MONTY_PUBLISHED_MS = 0.08  # pydantic-monty's published warm call (not measured here)

MODULE = textwrap.dedent('''
    from poet_runtime import poet

    @poet(policy="{policy}")
    def add(x: int, y: int) -> int:
        return x + y
''')

ECHO = "import sys\nfor line in sys.stdin:\n    sys.stdout.write(line)\n    sys.stdout.flush()\n"


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(len(ordered) * 0.9)]


def time_calls(function, calls: int) -> list[float]:
    for _ in range(20):  # warm: workers started, guest loaded
        function(1, 2)
    samples = []
    for index in range(calls):
        started = time.perf_counter()
        function(index, 2)
        samples.append(time.perf_counter() - started)
    return samples


def pipe_floor(calls: int, trips: int) -> list[float]:
    child = subprocess.Popen([sys.executable, "-c", ECHO], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    line = (json.dumps({"op": "call", "args": [["d", 1], ["d", 2]], "kwargs": {}}) + "\n").encode()
    samples = []
    try:
        for _ in range(calls + 20):
            started = time.perf_counter()
            for _ in range(trips):
                child.stdin.write(line)
                child.stdin.flush()
                child.stdout.readline()
            samples.append(time.perf_counter() - started)
    finally:
        child.stdin.close()
        child.wait()
    return samples[20:]


def unverified(home: Path, policy: str):
    """The enhanced ``add`` under ``policy``, its version hand-edited (so not verified)."""
    import importlib.util

    import poet_runtime

    folder = home / policy
    folder.mkdir()
    path = folder / f"bench_{policy}.py"
    path.write_text(MODULE.format(policy=policy))
    spec = importlib.util.spec_from_file_location(f"bench_{policy}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    version = poet_runtime.enhance(module.add)
    code = version.path / "code.py"
    code.write_text(code.read_text() + "# reviewed by hand\n")  # no longer byte-identical: unverified
    module = importlib.util.module_from_spec(spec)  # a fresh function object loads the edited code
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    assert module.add(1, 2) == 3
    record = poet_runtime.last_execution()
    assert not record.fell_back, f"{policy}: {record.reason}: {record.detail}"
    expected = {"default": "restricted", "strict": "wasm"}[policy]
    assert record.backend == expected, f"{policy}: ran on {record.backend}, expected {expected}"
    return module.add


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--skip-wasm", action="store_true", help="leave out strict (the WASM sandbox)")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        # The default cache: the WASM interpreter compiled once per machine is reused.
        os.environ.update(POET_HOME=str(home / "store"), POET_GENERATE="sync")
        import poet_runtime

        poet_runtime.enable(hook=False)

        def plain(x, y):
            return x + y

        rows = {"plain": time_calls(plain, options.calls)}
        rows["default: restricted worker, unverified"] = time_calls(unverified(home, "default"), options.calls)
        if not options.skip_wasm:
            rows["strict: wasm guest, unverified"] = time_calls(unverified(home, "strict"), options.calls)
        rows["raw pipe, 1 round trip (floor)"] = pipe_floor(options.calls, 1)
        rows["raw pipe, 2 round trips"] = pipe_floor(options.calls, 2)
    one = percentiles(rows["raw pipe, 1 round trip (floor)"])[0]
    two = percentiles(rows["raw pipe, 2 round trips"])[0]
    print(f"{'candidate':42} {'p50':>9} {'p90':>9} {'p50/pipe':>9} {'p50/2 pipes':>12} {'p50/monty':>10}")
    for name, samples in rows.items():
        p50, p90 = percentiles(samples)
        print(f"{name:42} {p50 * 1e3:7.3f}ms {p90 * 1e3:7.3f}ms {p50 / one:9.2f} {p50 / two:12.2f} "
              f"{p50 * 1e3 / MONTY_PUBLISHED_MS:10.2f}")
    print(f"{'pydantic-monty (published, warm call)':42} {MONTY_PUBLISHED_MS:7.3f}ms")


if __name__ == "__main__":
    main()
