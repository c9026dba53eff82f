"""Per-call latency of a tiny enhanced function under the wasm backend, in one run:

(a) ours: a warm guest per enhancement, the user's logic called once back in the
    host (contract 2: one JSON request, one intermediate "logic" reply, the host
    runs the logic, one resume, the final reply);
(a') the same warm guest when generated code does not call the logic (a
    transformed version): one request, one reply; (a) - (a') is the price of one
    logic round trip;
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
DOMAIN = "base"
OBJECTIVE = None
PARAMETERS = {}
PARAMS = {}
from poet_sandbox import validate
def configure(params, defaults=None):
    pass
def perceive(x, y):
    validate.as_int(x, "x")
    validate.as_int(y, "y")
    return None
def operate_prime(logic, args, kwargs):
    return logic(*args, **kwargs)
def enforce(result):
    return validate.as_int(result, "result", error=validate.EnforceError)
'''

# Generated code that computes the result itself: no logic round trip.
TRANSFORMED = GENERATED.replace("return logic(*args, **kwargs)", "return args[0] + args[1]")

# The fresh-interpreter baseline: the same module and driver, one interpreter per call.
FRESH = '''
import json, sys
sys.path.append("/poet")
from poet_sandbox.driver import Enhancement
namespace = {{"__name__": "bench"}}
exec(compile({code!r}, "code.py", "exec"), namespace)
args = json.loads({args!r})
print(json.dumps(Enhancement(namespace).call(lambda x, y: x + y, tuple(args), {{}})[0]))
'''


def plain(x: int, y: int) -> int:
    return x + y


def request(LoadRequest, function_id: str, code: str, limits):
    """A LoadRequest with the fields it has (contract 1's ``logic_name`` and
    ``user_globals`` may still be required while the call path is rewritten)."""
    import dataclasses

    fields = {f.name for f in dataclasses.fields(LoadRequest)}
    extra = {name: value for name, value in (("logic_name", ""), ("user_globals", {})) if name in fields}
    return LoadRequest(function_id=function_id, version=1, code=code, filename="code.py", params={}, limits=limits,
                       **extra)


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
    loaded = backend.load(request(LoadRequest, "bench:add", GENERATED, limits))
    print(f"guest started and module loaded in {(time.perf_counter() - started) * 1000:.1f} ms")
    transformed = backend.load(request(LoadRequest, "bench:add_transformed", TRANSFORMED, limits))

    warm, alone = [], []
    for enhancement, samples in ((loaded, warm), (transformed, alone)):
        for i in range(50):  # warm up both sides
            enhancement.call(plain, (i, 1), {})
    for i in range(options.calls):  # interleaved, so that both see the same machine
        for enhancement, samples in ((loaded, warm), (transformed, alone)):
            t = time.perf_counter()
            result = enhancement.call(plain, (i, 2), {})[0]
            samples.append(time.perf_counter() - t)
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
    transformed.close()
    backend.close()

    rows = [
        ("wasm, warm guest, one logic call", warm),
        ("wasm, warm guest, no logic call", alone),
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
    print(f"one logic round trip: +{(warm50 - summary(alone)[0]) * 1e6:.1f} us at the median")
    print(f"fuel per ms of guest CPU here: {wasm_fresh.calibrate() / 1e6:.1f} M "
          f"(FUEL_PER_MS = {wasm_instance.FUEL_PER_MS / 1e6:.1f} M)")
    ok = warm50 <= 0.002 and fresh50 / warm50 >= 10
    print(f"targets (warm p50 <= 2 ms, >= 10x faster than fresh): {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
