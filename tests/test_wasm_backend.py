"""The wasm backend with real wasmtime: normal calls, each limit, guest reuse and isolation."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from poet_runtime.backends.base import Limits
from poet_runtime.errors import PoetViolation
from poet_runtime.resources import load_facility
from wasm_helpers import TEST_LIMITS, generated_module, load_request, require_wasm, wasm_backend  # noqa: F401

PhaseError = load_facility().PhaseError


def test_normal_call_returns_the_result_with_its_type(wasm_backend):
    code = generated_module(
        """
        return {"sum": (x + OFFSET) * PARAMS["scale"], "root": math.sqrt(x), "pair": (x, "a"), 1: [b"z", None]}
        """
    )
    import math

    loaded = wasm_backend.load(load_request(code, user_globals={"OFFSET": 10, "math": math}, params={"scale": 3}))
    try:
        result, t0, t1, t2, t3 = loaded.call((4,), {})
        assert result == {"sum": 42, "root": 2.0, "pair": (4, "a"), 1: [b"z", None]}
        assert type(result["pair"]) is tuple
        assert t0 <= t1 <= t2 <= t3
        loaded.configure({"scale": 1})
        assert loaded.call((4,), {})[0]["sum"] == 14
        assert loaded.backend == "wasm"
    finally:
        loaded.close()


def test_state_persists_within_one_function(wasm_backend):
    code = generated_module(
        """
        global COUNT
        COUNT += 1
        return COUNT
        """,
        params="COUNT = 0",
    )
    loaded = wasm_backend.load(load_request(code))
    try:
        assert [loaded.call((0,), {})[0] for _ in range(3)] == [1, 2, 3]
    finally:
        loaded.close()


def test_state_cannot_reach_a_call_of_another_function(wasm_backend):
    """Each loaded enhancement has its own guest: whatever one function's code leaves
    in the interpreter (patched builtins, module attributes, sys state) is invisible
    to another function's calls, before and after."""
    polluter = generated_module(
        """
        import json
        json.LEAK = "secret-of-a"
        __builtins__["len"] = lambda obj: 42
        import sys
        sys.LEAK = "secret-of-a"
        return "polluted"
        """,
        function="tests:a",
    )
    observer = generated_module(
        """
        import json, sys
        return [getattr(json, "LEAK", None), getattr(sys, "LEAK", None), len([1, 2])]
        """,
        function="tests:b",
    )
    limits = replace(TEST_LIMITS, imports=("json", "sys"))
    a = wasm_backend.load(load_request(polluter, limits=limits, function="tests:a"))
    b = wasm_backend.load(load_request(observer, limits=limits, function="tests:b"))
    try:
        assert b.call((0,), {})[0] == [None, None, 2]
        assert a.call((0,), {})[0] == "polluted"
        assert b.call((0,), {})[0] == [None, None, 2]
    finally:
        a.close()
        b.close()


def test_user_exception_falls_back_as_phase_error(wasm_backend):
    loaded = wasm_backend.load(load_request(generated_module("raise ValueError('bad input')")))
    try:
        with pytest.raises(PhaseError, match="ValueError: bad input") as caught:
            loaded.call((1,), {})
        assert type(caught.value).__name__ == "UserLogicError"  # the host re-runs the original for it
        assert loaded.call.__self__ is loaded  # the guest is still usable after a user error
    finally:
        loaded.close()


def test_non_data_result_and_arguments_fall_back(wasm_backend):
    loaded = wasm_backend.load(load_request(generated_module("return object() if x else x")))
    try:
        with pytest.raises(PhaseError, match="not plain data"):
            loaded.call((1,), {})
        with pytest.raises(PhaseError, match="cannot enter the sandbox"):
            loaded.call((object(),), {})
        assert loaded.call((0,), {})[0] == 0
    finally:
        loaded.close()


def _violation(loaded, *args):
    started = time.monotonic()
    with pytest.raises(PoetViolation) as caught:
        loaded.call(args or (0,), {})
    return caught.value, time.monotonic() - started


@pytest.mark.slow
def test_cpu_loop_is_stopped_by_fuel(wasm_backend):
    limits = replace(TEST_LIMITS, cpu_ms=300, wall_ms=10_000)
    loaded = wasm_backend.load(load_request(generated_module("while True:\n    x += 1"), limits=limits))
    try:
        error, elapsed = _violation(loaded)
        assert error.limit == "cpu_ms" and error.function == "tests:logic"
        assert elapsed < 0.3 * 1.5 + 0.5
    finally:
        loaded.close()


@pytest.mark.slow
def test_busy_loop_is_stopped_by_the_wall_clock(wasm_backend):
    limits = replace(TEST_LIMITS, cpu_ms=None, wall_ms=400)
    loaded = wasm_backend.load(load_request(generated_module("while True:\n    pass"), limits=limits))
    try:
        error, elapsed = _violation(loaded)
        assert error.limit == "wall_ms"
        assert 0.35 < elapsed < 0.4 + 0.4
    finally:
        loaded.close()


@pytest.mark.slow
def test_blocking_sleep_is_stopped_at_the_deadline(wasm_backend):
    limits = replace(TEST_LIMITS, wall_ms=500)
    loaded = wasm_backend.load(load_request(generated_module("import time\ntime.sleep(3600)"), limits=limits))
    try:
        error, elapsed = _violation(loaded)
        assert error.limit == "wall_ms"
        assert elapsed < 0.5 + 0.4
    finally:
        loaded.close()


def test_short_sleep_within_the_deadline_works(wasm_backend):
    loaded = wasm_backend.load(load_request(generated_module("import time\ntime.sleep(0.05)\nreturn x")))
    try:
        started = time.monotonic()
        assert loaded.call((7,), {})[0] == 7
        assert 0.04 < time.monotonic() - started < 1.0
    finally:
        loaded.close()


@pytest.mark.slow
def test_memory_bomb_is_stopped(wasm_backend):
    limits = replace(TEST_LIMITS, memory_mb=128)
    bomb = generated_module("chunks = []\nwhile True:\n    chunks.append(bytearray(16 * 1024 * 1024))")
    loaded = wasm_backend.load(load_request(bomb, limits=limits))
    try:
        error, elapsed = _violation(loaded)
        assert error.limit == "memory_mb"
        assert elapsed < 2.0
        one_shot = wasm_backend.load(load_request(generated_module("return len(bytearray(300 * 1024 * 1024))"), limits=limits))
        try:
            assert _violation(one_shot)[0].limit == "memory_mb"
        finally:
            one_shot.close()
    finally:
        loaded.close()


@pytest.mark.slow
def test_output_flood_is_stopped(wasm_backend):
    limits = replace(TEST_LIMITS, max_output_kb=64, wall_ms=5000)
    loaded = wasm_backend.load(load_request(generated_module("while True:\n    print('x' * 65536)"), limits=limits))
    try:
        error, elapsed = _violation(loaded)
        assert error.limit == "max_output_kb"
        assert elapsed < 1.0
    finally:
        loaded.close()


def test_small_output_is_allowed(wasm_backend):
    loaded = wasm_backend.load(load_request(generated_module("print('hello')\nreturn x")))
    try:
        assert loaded.call((1,), {})[0] == 1
    finally:
        loaded.close()


def test_import_outside_the_allowlist_is_a_violation(wasm_backend):
    limits = replace(TEST_LIMITS, imports=("math",))
    swallowing = generated_module("try:\n    import os\nexcept ImportError:\n    pass\nreturn 1")
    loaded = wasm_backend.load(load_request(swallowing, limits=limits))
    try:
        error, _ = _violation(loaded)
        assert error.limit == "imports" and "os" in error.detail
    finally:
        loaded.close()
    allowed = wasm_backend.load(load_request(generated_module("import math\nreturn math.floor(x)"), limits=limits))
    try:
        assert allowed.call((2.5,), {})[0] == 2
    finally:
        allowed.close()


def test_third_party_packages_are_not_mounted_unless_allowed(wasm_backend):
    """The stdlib-only mount has numpy's files blanked: even the real importer fails."""
    code = generated_module(
        """
        lock = [c for c in object.__subclasses__() if c.__name__ == "_ModuleLock"][0]
        real_import = lock.__init__.__globals__["_gcd_import"]  # importlib's own, unguarded
        try:
            real_import("numpy")
        except Exception as error:
            return type(error).__name__
        return "imported"
        """
    )
    loaded = wasm_backend.load(load_request(code))
    try:
        outcome = loaded.call((0,), {})[0]
        assert outcome != "imported"
    finally:
        loaded.close()


@pytest.mark.slow
def test_guest_is_replaced_after_a_violation(wasm_backend):
    code = generated_module(
        """
        global COUNT
        COUNT += 1
        if x == "spin":
            while True:
                pass
        return COUNT
        """,
        params="COUNT = 0",
    )
    limits = replace(TEST_LIMITS, cpu_ms=200)
    loaded = wasm_backend.load(load_request(code, limits=limits))
    try:
        assert loaded.call((0,), {})[0] == 1
        assert loaded.call((0,), {})[0] == 2
        assert _violation(loaded, "spin")[0].limit == "cpu_ms"
        assert loaded.call((0,), {})[0] == 1  # a fresh guest: the module was loaded again
    finally:
        loaded.close()


def test_guest_is_recycled_after_n_calls(wasm_backend, monkeypatch):
    from poet_runtime.backends import wasm

    monkeypatch.setattr(wasm, "MAX_CALLS_PER_GUEST", 3)
    code = generated_module("global COUNT\nCOUNT += 1\nreturn COUNT", params="COUNT = 0")
    loaded = wasm_backend.load(load_request(code))
    try:
        assert [loaded.call((0,), {})[0] for _ in range(5)] == [1, 2, 3, 1, 2]
    finally:
        loaded.close()


def test_exit_and_host_escape_attempts_leave_the_host_healthy(wasm_backend):
    code = generated_module("import sys\nsys.exit(3)", logic_args="x")
    loaded = wasm_backend.load(load_request(code, limits=replace(TEST_LIMITS, imports=("sys",))))
    try:
        with pytest.raises((PhaseError, PoetViolation)):
            loaded.call((0,), {})
    finally:
        loaded.close()
    hard_exit = wasm_backend.load(load_request(generated_module("import os\nos._exit(0)"), limits=replace(TEST_LIMITS, imports=("os",))))
    try:
        assert _violation(hard_exit)[0].limit == "crash"
    finally:
        hard_exit.close()


def test_async_logic_without_real_awaits(wasm_backend):
    import asyncio

    code = generated_module("return x * 2").replace("def operate_prime", "async def operate_prime")
    loaded = wasm_backend.load(load_request(code))
    try:
        assert asyncio.run(loaded.call_async((21,), {}))[0] == 42
    finally:
        loaded.close()


def test_closing_ends_the_guest_and_its_store(wasm_backend):
    loaded = wasm_backend.load(load_request(generated_module("return x")))
    guest = loaded._guest
    loaded.close()
    assert guest.join(timeout=5) and not guest.alive
    with pytest.raises(ValueError):  # wasmtime-py: the store is closed
        guest._store.ptr()


def test_load_failure_is_a_phase_error(wasm_backend):
    with pytest.raises(PhaseError, match="loading"):
        wasm_backend.load(load_request("def perceive(:\n"))


def test_compiled_module_cache_key_and_warmup_command(wasm_backend, capsys):
    from poet_runtime.backends import wasm_engine
    from poet_runtime.commands import sandbox

    path = wasm_engine.compiled_path()
    assert path.is_file()
    assert "wasmtime49" in path.name and wasm_engine.ENGINE_FLAGS in path.name
    assert wasm_engine.file_digest(wasm_engine.binary_path())[:24] in path.name
    assert sandbox.run(None) == 0
    assert "WASM sandbox ready" in capsys.readouterr().out
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp-")]


def test_warmup_from_the_command_line(wasm_backend):
    from poet_runtime.backends.wasm import ready

    assert ready()
    done = subprocess.run(
        [sys.executable, "-m", "poet_runtime", "sandbox", "warmup"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "WASM sandbox ready" in done.stdout


def test_importing_poet_runtime_does_not_import_wasmtime():
    code = "import sys, poet_runtime, poet_runtime.backends, poet_runtime.backends.wasm; print('wasmtime' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_no_limits_stated_still_runs(wasm_backend):
    loaded = wasm_backend.load(load_request(generated_module("return x + 1"), limits=Limits()))
    try:
        assert loaded.call((1,), {})[0] == 2
    finally:
        loaded.close()


def test_a_large_result_counts_toward_the_output_cap(wasm_backend):
    limits = replace(TEST_LIMITS, max_output_kb=16)
    loaded = wasm_backend.load(load_request(generated_module("return 'y' * x"), limits=limits))
    try:
        assert len(loaded.call((1000,), {})[0]) == 1000
        assert _violation(loaded, 64 * 1024)[0].limit == "max_output_kb"
        assert loaded.call((10,), {})[0] == "y" * 10  # a fresh guest serves the next call
    finally:
        loaded.close()


@pytest.mark.slow
def test_memory_limit_is_what_one_call_may_add(wasm_backend):
    limits = replace(TEST_LIMITS, memory_mb=64)
    loaded = wasm_backend.load(load_request(generated_module("return len(bytearray(x * 1024 * 1024))"), limits=limits))
    try:
        # 40 MB per call, five times: freed memory is reused, so no call grows the
        # guest by more than 64 MB; 200 MB at once would.
        assert [loaded.call((40,), {})[0] for _ in range(5)] == [40 * 1024 * 1024] * 5
        assert _violation(loaded, 200)[0].limit == "memory_mb"
    finally:
        loaded.close()


BUILTIN_SOURCE = '''\
import statistics
from typing import TypedDict


class Report(TypedDict):
    drift_detected: bool
    score: float


def detect_drift(current_data: list[float], reference_data: list[float], threshold: float = 0.1) -> Report:
    """Flag drift when the means differ by more than threshold."""
    gap = abs(statistics.fmean(current_data) - statistics.fmean(reference_data))
    return {"drift_detected": gap > threshold, "score": min(gap, 1.0)}
'''


@pytest.mark.parametrize("objective", [None, "accuracy"])
def test_a_module_from_the_builtin_generator_runs(wasm_backend, objective):
    import statistics

    from poet_runtime.decorator import PoetConfig
    from poet_runtime.domains import get_domain
    from poet_runtime.generate.builtin import BuiltinGenerator
    from poet_runtime.generate.spec import spec_from_source

    spec = spec_from_source("app", "detect_drift", BUILTIN_SOURCE, "app.py")
    config = PoetConfig.from_kwargs("app:detect_drift", domain="ml_monitoring", optimize_for=objective)
    generated = BuiltinGenerator().generate(spec, config, get_domain(config.domain))
    limits = replace(TEST_LIMITS, imports=("math", "statistics", "json", "collections"))
    request = load_request(generated.code, limits=limits, user_globals={"statistics": statistics}, function="app:detect_drift")
    request.logic_name = generated.logic_name
    namespace = {}
    exec(BUILTIN_SOURCE, namespace)
    request.original = namespace["detect_drift"]  # its defaults reach configure(params, defaults)
    loaded = wasm_backend.load(request)
    try:
        result = loaded.call(([1.0, 2.0, None, 3.0], [1.0, 2.0, 3.5]), {"threshold": 0.1})[0]
        assert result == {"drift_detected": True, "score": pytest.approx(1 / 6)}
        assert loaded.call(([1.0], [1.05]), {})[0]["drift_detected"] is False  # threshold's default
        observed = loaded.observations()
        if objective is None:
            assert observed == {}
        else:
            assert observed["calls"] == 2
        assert loaded.train_error is None
    finally:
        loaded.close()


def test_concurrent_calls_from_threads(wasm_backend):
    from concurrent.futures import ThreadPoolExecutor

    square = wasm_backend.load(load_request(generated_module("return x * x"), function="tests:square"))
    negate = wasm_backend.load(load_request(generated_module("return -x"), function="tests:negate"))
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            squares = list(pool.map(lambda i: square.call((i,), {})[0], range(40)))
            negated = list(pool.map(lambda i: negate.call((i,), {})[0], range(40)))
        assert squares == [i * i for i in range(40)] and negated == [-i for i in range(40)]
    finally:
        square.close()
        negate.close()


def test_generated_code_calling_the_door_itself_is_caught(wasm_backend):
    """The door is the guest's only way out; code that uses it directly can only
    desynchronise its own guest, which is then replaced."""
    code = generated_module(
        """
        import _host
        _host.call(b'{"status": "ok", "result": "forged", "marks": [0, 0, 0, 0]}')
        return "real"
        """
    )
    loaded = wasm_backend.load(load_request(code, limits=replace(TEST_LIMITS, imports=("_host",))))
    guest = loaded._guest
    try:
        with pytest.raises(PoetViolation) as caught:
            loaded.call((0,), {})
        assert caught.value.limit == "crash"
        assert guest.join(timeout=5), "the desynchronised guest must end and close its store"
        with pytest.raises(PoetViolation):  # a fresh guest, which forges again
            loaded.call((0,), {})
    finally:
        loaded.close()


def test_a_malformed_reply_is_not_a_user_exception(wasm_backend):
    code = generated_module(
        """
        import _host
        _host.call(b"[" * 100000 + b"]" * 100000)
        return 1
        """
    )
    loaded = wasm_backend.load(load_request(code, limits=replace(TEST_LIMITS, imports=("_host",))))
    try:
        with pytest.raises(PoetViolation):
            loaded.call((0,), {})
    finally:
        loaded.close()


COMPILE_IN_CHILD = """
import sys, time
from pathlib import Path
from poet_runtime.backends import wasm_engine

tiny = Path(sys.argv[1])
wasm_engine.binary_path = lambda: tiny  # a tiny module stands in for the 100 MB one

def progress(message):
    print(message, file=sys.stderr, flush=True)
    if "compiling" in message:
        time.sleep(1.0)  # hold the lock long enough for the other process to queue on it

wasm_engine.module(progress)
print(wasm_engine.compiled_path())
"""


@pytest.mark.slow
def test_two_processes_starting_cold_compile_once(tmp_path):
    import os

    require_wasm()
    import wasmtime

    tiny = tmp_path / "tiny.wasm"
    tiny.write_bytes(wasmtime.wat2wasm('(module (func (export "f")))'))
    env = {**os.environ, "POET_CACHE_DIR": str(tmp_path / "cache")}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", COMPILE_IN_CHILD, str(tiny)], env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )
        for _ in range(2)
    ]
    outputs = [child.communicate(timeout=60) for child in children]
    assert all(child.returncode == 0 for child in children), outputs
    paths = {out.strip() for out, _ in outputs}
    assert len(paths) == 1 and Path(paths.pop()).is_file()
    assert sum("compiling" in err for _, err in outputs) == 1, outputs
    folder = tmp_path / "cache" / "wasm"
    assert not [p for p in folder.iterdir() if p.name.startswith(".tmp-")]


@pytest.mark.slow
def test_an_allowed_bundled_package_is_imported_again_in_the_guest(wasm_backend):
    """A module global that is a module (here ``np``) crosses by name and is imported
    again inside the guest, when the policy allows it; numpy is compiled into the binary."""
    import types

    numpy_stand_in = types.ModuleType("numpy")  # only its name crosses; numpy need not be installed here
    code = generated_module("return float(np.mean(np.array(x)))")
    limits = replace(TEST_LIMITS, imports=("numpy",))
    loaded = wasm_backend.load(load_request(code, limits=limits, user_globals={"np": numpy_stand_in}))
    try:
        assert loaded.call(([1.0, 2.0, 4.0],), {})[0] == pytest.approx(7 / 3)
    finally:
        loaded.close()
    refused = wasm_backend.load(load_request(code, user_globals={"np": numpy_stand_in}))  # numpy not allowed
    try:
        with pytest.raises(PhaseError, match="NameError"):
            refused.call(([1.0],), {})
    finally:
        refused.close()


def test_a_compiled_module_others_could_write_is_not_loaded(tmp_path):
    from poet_runtime.backends import wasm_engine

    require_wasm()
    shared = tmp_path / "shared"
    shared.mkdir()
    planted = shared / "python-x.cwasm"
    planted.write_bytes(b"not native code")
    shared.chmod(0o777)
    assert wasm_engine._load(wasm_engine.engine(), planted) is None
    shared.chmod(0o700)
    planted.chmod(0o666)
    assert wasm_engine._load(wasm_engine.engine(), planted) is None


def test_phase_refusals_and_an_open_breaker_keep_their_class(wasm_backend):
    facility = load_facility()
    code = generated_module("return x").replace(
        "def perceive(x):\n    return (x,)",
        "def perceive(x):\n    return (validate.as_int(x, 'x'),)",
    )
    loaded = wasm_backend.load(load_request(code))
    try:
        with pytest.raises(facility.PerceiveError, match="x: expected int"):
            loaded.call(("nope",), {})
    finally:
        loaded.close()
    breaker = generated_module("from poet_sandbox import CircuitOpenError\nraise CircuitOpenError('open for 30 s')")
    loaded = wasm_backend.load(load_request(breaker))
    try:
        with pytest.raises(facility.CircuitOpenError, match="open for 30 s"):
            loaded.call((1,), {})
    finally:
        loaded.close()


def test_a_cache_folder_that_moves_or_vanishes_is_rebuilt(wasm_backend, tmp_path, monkeypatch):
    """Mount folders are checked on every guest start, not remembered: a test (or a
    user) pointing POET_CACHE_DIR elsewhere, or cleaning the cache, breaks nothing."""
    monkeypatch.setenv("POET_CACHE_DIR", str(tmp_path / "elsewhere"))
    loaded = wasm_backend.load(load_request(generated_module("return x")))
    try:
        assert loaded.call((5,), {})[0] == 5
    finally:
        loaded.close()
    assert list((tmp_path / "elsewhere" / "wasm").glob("lib-*-stdlib/python*.zip"))
    monkeypatch.setenv("POET_CACHE_DIR", str(tmp_path / "gone"))
    loaded = wasm_backend.load(load_request(generated_module("return x")))
    loaded.close()
    import shutil

    shutil.rmtree(tmp_path / "gone")
    loaded = wasm_backend.load(load_request(generated_module("return x + 1")))
    try:
        assert loaded.call((5,), {})[0] == 6
    finally:
        loaded.close()


def test_poll_plan_decodes_the_guests_subscriptions():
    import time as clock

    from poet_runtime.backends import wasm_poll as poll

    def sub(userdata, tag, which=0, timeout=0, flags=0):
        return poll.SUBSCRIPTION.pack(userdata, tag, which, timeout, 0, flags)

    assert poll.plan(b"", 0)[0] == poll.EINVAL
    errno, wait, events = poll.plan(sub(1, poll.CLOCK, 1, 50_000_000) + sub(2, poll.CLOCK, 1, 90_000_000), 0)
    assert errno is None and wait == pytest.approx(0.05) and [e[0] for e in events] == [1]
    origin = clock.perf_counter_ns() - 1_000_000_000  # the guest's clock started a second ago
    _, wait, _ = poll.plan(sub(3, poll.CLOCK, 1, 1_200_000_000, poll.ABSTIME), origin)
    assert 0.1 < wait <= 0.2
    _, wait, events = poll.plan(sub(4, poll.CLOCK, 1, 10**12) + sub(5, poll.FD_READ, 0), 0)
    assert wait == 0 and [e[0] for e in events] == [5]  # descriptors never block
    assert poll.plan(sub(6, 9), 0)[0] == poll.EINVAL


def test_idle_guests_beyond_the_cap_are_stopped_and_restart_on_demand(wasm_backend, monkeypatch):
    from poet_runtime.backends import wasm

    monkeypatch.setattr(wasm, "MAX_LIVE_GUESTS", 2)
    code = generated_module("global COUNT\nCOUNT += 1\nreturn COUNT", params="COUNT = 0")
    loaded = [wasm_backend.load(load_request(code, function=f"tests:f{i}")) for i in range(3)]
    try:
        assert loaded[0]._guest is None  # the oldest idle guest made room for the third
        assert loaded[1]._guest is not None and loaded[2]._guest is not None
        assert loaded[0].call((0,), {})[0] == 1  # started again on demand (fresh state)
        assert loaded[1]._guest is None  # now the least recently used
        assert sum(e._guest is not None for e in loaded) == 2
    finally:
        for enhancement in loaded:
            enhancement.close()


def test_a_rebound_user_global_reaches_the_guest(wasm_backend):
    user_globals = {"THRESHOLD": 10, "PARAMS": {"shadowed": True}}
    code = generated_module("return [x > THRESHOLD, sorted(PARAMS)]")
    loaded = wasm_backend.load(load_request(code, user_globals=user_globals, params={"p": 1}))
    try:
        assert loaded.call((5,), {})[0] == [False, ["p"]]
        user_globals["THRESHOLD"] = 1  # the user's module rebinds its global
        user_globals["PARAMS"] = {"clobber": 1}  # the generated module's own name: never replaced
        assert loaded.call((5,), {})[0] == [True, ["p"]]
    finally:
        loaded.close()


def test_values_json_cannot_carry_fall_back(wasm_backend):
    loaded = wasm_backend.load(load_request(generated_module("return 10 ** 5000 if x else x")))
    try:
        with pytest.raises(PhaseError):
            loaded.call((10**5000,), {})  # an int too long for JSON text, on the way in
        with pytest.raises(PhaseError):
            loaded.call((1,), {})  # and on the way out
        assert loaded.call((0,), {})[0] == 0
    finally:
        loaded.close()


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_a_forked_child_falls_back_instead_of_hanging(wasm_backend):
    import os

    loaded = wasm_backend.load(load_request(generated_module("return x")))
    try:
        assert loaded.call((1,), {})[0] == 1
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: the call must fall back (PhaseError) at once
            code = 1
            try:
                loaded.call((2,), {})
            except PhaseError:
                code = 0
            except BaseException:
                code = 2
            os.write(write, bytes([code]))
            os._exit(0)
        os.close(write)
        answer = os.read(read, 1)
        os.waitpid(pid, 0)
        assert answer == b"\x00"
        assert loaded.call((3,), {})[0] == 3  # the parent is unaffected
    finally:
        loaded.close()
