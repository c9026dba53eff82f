"""Per-call latency of a tiny enhanced function under the wasm backend, in one run:

(a) ours: a warm guest per enhancement, one JSON request through the host import;
(b) a fresh interpreter per call with the same binary and mounts (what other WASM
    sandboxes do): instantiate, run the generated module, answer, exit; and, for
    reference, a fresh interpreter that runs nothing (the floor of that approach);
(c) the plain function called in the host.

Prints median and p95 of each, and the ratios. Targets: (a) p50 <= 2 ms and at
least 10x faster than (b).

    python benchmarks/bench_wasm.py [--calls 500] [--fresh 40]

The first run on a machine compiles the module (1-2 minutes, cached).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GENERATED = '''
FUNCTION = "bench:add"
LOGIC = "add"
PARAMETERS = {}
from poet_sandbox import validate
def configure(params):
    pass
def add(x, y):
    return x + y
def perceive(x, y):
    if type(x) is not int:
        x = validate.as_int(x, "x")
    if type(y) is not int:
        y = validate.as_int(y, "y")
    return (x, y)
def operate_prime(x, y):
    return add(x, y)
def enforce(result):
    if type(result) is not int:
        result = validate.as_int(result, "result")
    return result
'''

# The fresh-interpreter baseline: the same module and driver, one interpreter per call.
FRESH = '''
import json, sys
sys.path.append("/poet")
from poet_sandbox.driver import Enhancement
namespace = {{"__name__": "bench"}}
exec(compile({code!r}, "code.py", "exec"), namespace)
args = json.loads({args!r})
print(json.dumps(Enhancement(namespace, "add").call(tuple(args), {{}})[0]))
'''


def plain(x: int, y: int) -> int:
    return x + y


def summary(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=500, help="warm calls to time")
    parser.add_argument("--fresh", type=int, default=40, help="fresh-interpreter calls to time")
    options = parser.parse_args(argv)

    from poet_runtime.backends import wasm_fresh, wasm_instance, wasm_mounts
    from poet_runtime.backends.base import Limits, LoadRequest
    from poet_runtime.backends.wasm import WasmBackend, warmup

    started = time.perf_counter()
    warmup()
    print(f"module ready in {time.perf_counter() - started:.2f} s")
    limits = Limits(wall_ms=2000, cpu_ms=1000, memory_mb=128, max_output_kb=64)
    backend = WasmBackend()
    started = time.perf_counter()
    loaded = backend.load(LoadRequest("bench:add", 1, GENERATED, "code.py", "add", {}, {}, limits=limits))
    print(f"guest started and module loaded in {(time.perf_counter() - started) * 1000:.1f} ms")

    for i in range(50):  # warm up both sides
        loaded.call((i, 1), {})
    warm = []
    for i in range(options.calls):
        t = time.perf_counter()
        result = loaded.call((i, 2), {})[0]
        warm.append(time.perf_counter() - t)
        assert result == i + 2

    preopens = wasm_mounts.preopens(limits.imports)
    fresh = []
    for i in range(options.fresh):
        code = FRESH.format(code=GENERATED, args=json.dumps([i, 2]))
        t = time.perf_counter()
        out = wasm_fresh.run_snippet(code, preopens, wall_ms=5000, cpu_ms=5000, memory_mb=256)
        fresh.append(time.perf_counter() - t)
        assert json.loads(out) == i + 2, out

    floor = []  # a fresh interpreter that does nothing: the least any per-call guest costs
    for _ in range(options.fresh):
        t = time.perf_counter()
        wasm_fresh.run_snippet("pass", preopens, wall_ms=5000)
        floor.append(time.perf_counter() - t)

    direct = []
    for i in range(20_000):
        t = time.perf_counter()
        plain(i, 2)
        direct.append(time.perf_counter() - t)
    loaded.close()
    backend.close()

    rows = [
        ("wasm, warm guest", warm),
        ("wasm, fresh interpreter per call", fresh),
        ("  (fresh interpreter, empty program)", floor),
        ("plain call", direct),
    ]
    print(f"\n{'':37} {'median':>12} {'p95':>12} {'calls':>7}")
    for name, samples in rows:
        p50, p95 = summary(samples)
        print(f"{name:37} {p50 * 1e6:9.1f} us {p95 * 1e6:9.1f} us {len(samples):7}")
    warm50, warm95 = summary(warm)
    fresh50, fresh95 = summary(fresh)
    direct50, _ = summary(direct)
    print(f"\nfresh / warm: {fresh50 / warm50:.1f}x at the median, {fresh95 / warm95:.1f}x at p95")
    print(f"empty fresh interpreter / warm: {summary(floor)[0] / warm50:.1f}x at the median")
    print(f"warm / plain: {warm50 / direct50:.0f}x at the median")
    print(f"fuel per ms of guest CPU here: {wasm_fresh.calibrate() / 1e6:.1f} M "
          f"(FUEL_PER_MS = {wasm_instance.FUEL_PER_MS / 1e6:.1f} M)")
    ok = warm50 <= 0.002 and fresh50 / warm50 >= 10
    print(f"targets (warm p50 <= 2 ms, >= 10x faster than fresh): {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
