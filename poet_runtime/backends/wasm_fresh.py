"""Fresh, one-shot guests: ``python -c code`` in a new store, then gone.

Not the call path (that is ``wasm_instance.Guest``, kept warm): used to ask the
guest interpreter one question (its standard library's names), to calibrate
fuel against CPU time, and as the benchmark's baseline (a fresh interpreter per
call, as other WASM sandboxes run code).
"""

from __future__ import annotations

import math
import time

from poet_runtime.backends import wasm_engine
from poet_runtime.backends.wasm_instance import (MIB, NO_DEADLINE_TICKS, UNLIMITED_FUEL, _table_lock, fuel_for, linker,
                                                 tracked_output)


def run_snippet(code: str, preopens=(), *, wall_ms=30_000, cpu_ms=None, memory_mb=None) -> str:
    """Run ``python -c code`` in a fresh guest and return its stdout (text).

    A fresh interpreter per call, as other WASM sandboxes do: used for one-off
    questions to the guest (its stdlib names) and as the benchmark's baseline.
    """
    import wasmtime as wt

    out = bytearray()
    store = wt.Store(wasm_engine.engine())
    wasi = wt.WasiConfig()
    wasi.argv = ["python", "-I", "-c", code]
    wasi.env = []
    for host_path, guest_path in preopens:
        wasi.preopen_dir(host_path, guest_path, False)
    try:
        with _table_lock:
            wasi.stdout_custom = tracked_output(out.extend)  # waited for at exit (wasm_instance)
            store.set_wasi(wasi)
        if memory_mb is not None:
            store.set_limits(memory_size=int(memory_mb * MIB))
        store.set_fuel(fuel_for(cpu_ms))
        store.set_epoch_deadline(max(1, math.ceil(wall_ms / 1000 / wasm_engine.TICK_S)) + 1)
        with wasm_engine.ticker:
            instance = linker().instantiate(store, wasm_engine.module())
            try:
                instance.exports(store)["run"](store)
            except wt.ExitTrap:
                pass
    finally:
        with _table_lock:
            store.close()
    return out.decode(errors="replace")


CALIBRATION_LOAD = """
data = {}
n = 0
while True:
    n += 1
    data[n % 997] = str(n) * 3
    total = sum(range(n % 50))
"""


def calibrate(fuel: int = 2_000_000_000) -> float:
    """Fuel per millisecond of guest CPU time on this machine (a mix of loops, dict
    and string work), minus the interpreter's start-up; measured with the thread's
    CPU clock, so other processes on the machine do not skew it. Used to check
    ``FUEL_PER_MS``."""
    import wasmtime as wt

    def timed(code: str, budget: int) -> float:
        store = wt.Store(wasm_engine.engine())
        wasi = wt.WasiConfig()
        wasi.argv = ["python", "-I", "-c", code]
        with _table_lock:
            store.set_wasi(wasi)
        try:
            store.set_fuel(budget)
            store.set_epoch_deadline(NO_DEADLINE_TICKS)
            instance = linker().instantiate(store, wasm_engine.module())
            started = time.thread_time()  # CPU time of this thread, which runs the guest
            try:
                instance.exports(store)["run"](store)
            except (wt.Trap, wt.ExitTrap):
                pass
            return time.thread_time() - started
        finally:
            with _table_lock:
                store.close()

    idle = timed("pass", UNLIMITED_FUEL)
    busy = timed(CALIBRATION_LOAD, fuel)
    return fuel / max(1e-6, (busy - idle) * 1000)
