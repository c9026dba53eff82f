"""The wasm backend with real wasmtime: the crossing to the host's logic, each limit,
guest reuse and isolation.

Generated modules here are written by hand to contract 2 (``wasm_helpers.generated_module``):
the user's logic is a host function given to each call; generated code runs in the
guest and calls it through the proxy.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from poet_runtime.backends.base import Limits
from poet_runtime.errors import PoetViolation
from poet_runtime.resources import load_facility
from wasm_helpers import TEST_LIMITS, generated_module, load_request, require_wasm, wasm_backend  # noqa: F401

facility = load_facility()
PhaseError = facility.PhaseError
from poet_sandbox.driver import AfterLogic  # noqa: E402


def never(*args, **kwargs):
    raise AssertionError("generated code that does not call the logic called it")


def identity(x):
    return x


class Counting:
    """A logic that counts its runs and the threads it ran on."""

    def __init__(self, fn=identity):
        self.fn = fn
        self.runs = 0
        self.threads = []

    def __call__(self, *args, **kwargs):
        self.runs += 1
        self.threads.append(threading.get_ident())
        return self.fn(*args, **kwargs)


@pytest.fixture
def load(wasm_backend):
    """``load(code, **request)``: a loaded enhancement, closed after the test."""
    loaded = []

    def make(code, **kwargs):
        enhancement = wasm_backend.load(load_request(code, **kwargs))
        loaded.append(enhancement)
        return enhancement

    yield make
    for enhancement in loaded:
        enhancement.close()


# --- the logic runs in the host, as itself ------------------------------------------------


def test_a_list_argument_mutated_by_the_logic_is_the_callers(load):
    loaded = load(generated_module())
    cart = ["apple"]

    def add_pear(items):
        items.append("pear")
        return len(items)

    result, t0, t1, t2, t3, notes = loaded.call(add_pear, (cart,), {})
    assert result == 2 and cart == ["apple", "pear"]
    assert t0 <= t1 <= t2 <= t3 and notes is None
    assert loaded.backend == "wasm"


def test_the_result_is_the_logics_own_object(load):
    loaded = load(generated_module())
    registry = {"a": [1, 2]}
    assert loaded.call(identity, (registry,), {})[0] is registry
    made = []
    result = loaded.call(lambda x: made.append([x]) or made[-1], (3,), {})[0]
    assert result is made[0]
    keyword = load(generated_module(parameters="a, b=None"))
    assert keyword.call(lambda a, b=None: b, (1,), {"b": registry})[0] is registry  # a keyword's token


def test_values_that_are_not_data_cross_as_references_and_come_back_as_themselves(load):
    class Basket:
        def __init__(self):
            self.items = []

    # perceive and enforce see HostRefs: only the type's names crossed.
    code = generated_module(
        perceive="""
        if type(x).__name__ != 'HostRef' or not x.type_names[0].endswith('Basket'):
            raise ValueError('expected a reference to a Basket, got ' + repr(x))
        return None
        """,
        enforce="""
        if not validate.is_a(result, dict, 'builtins.dict') or 'collections.Counter' not in result.type_names:
            raise ValueError('expected a reference to a Counter, got ' + repr(result))
        return result
        """,
    )
    loaded = load(code)
    basket = Basket()
    made = []

    def count(b):
        b.items.append("x")
        made.append(collections.Counter("aab"))
        return made[-1]

    result, *_, notes = loaded.call(count, (basket,), {})
    assert result is made[0] and type(result) is collections.Counter and result.most_common(1) == [("a", 2)]
    assert basket.items == ["x"]
    assert load(generated_module()).call(identity, (basket,), {})[0] is basket


def test_the_users_own_exception_object_reaches_the_caller(load):
    class OutOfStock(LookupError):
        pass

    raised = []

    def logic(x):
        raised.append(OutOfStock(f"no {x}"))
        raise raised[-1]

    loaded = load(generated_module())
    with pytest.raises(OutOfStock) as caught:
        loaded.call(logic, ("pears",), {})
    assert caught.value is raised[0]
    assert caught.value.__context__ is None and caught.value.__cause__ is None
    assert loaded.call(identity, (1,), {})[0] == 1  # the guest is fine afterwards


def test_generated_code_replacing_the_users_exception_still_raises_the_users(load):
    body = """
    try:
        return logic(*args, **kwargs)
    except ValueError as error:
        raise RuntimeError('wrapped by generated code') from error
    """
    loaded = load(generated_module(body))
    own = ValueError("bad input")

    def logic(x):
        raise own

    with pytest.raises(ValueError) as caught:
        loaded.call(logic, (1,), {})
    assert caught.value is own


RETRYING = """
attempt = 0
while True:
    try:
        return logic(*args, **kwargs)
    except (ConnectionError, TimeoutError) as error:
        attempt += 1
        if attempt > PARAMS.get('retries', 2):
            raise
        validate.note('retry', 'operate_prime', type(error).__name__)
        time.sleep(0.01)
"""


def test_the_guest_retries_on_a_connection_error_from_the_host_logic(load):
    loaded = load(generated_module(RETRYING, params="import time"), params={"retries": 3})
    failures = [ConnectionResetError("reset"), ConnectionRefusedError("refused")]

    def flaky(x):
        if failures:
            raise failures.pop(0)
        return {"ok": x}

    logic = Counting(flaky)
    result, *_, notes = loaded.call(logic, (7,), {})
    assert result == {"ok": 7} and logic.runs == 3
    assert [n[0] for n in notes] == ["retry", "retry"]

    always = Counting(lambda x: (_ for _ in ()).throw(ConnectionError("down")))
    with pytest.raises(ConnectionError, match="down"):
        loaded.call(always, (1,), {})
    assert always.runs == 4  # the first attempt and three retries, never more


def test_the_logic_runs_in_the_callers_thread(load):
    loaded = load(generated_module())
    local = threading.local()
    local.name = "main"
    assert loaded.call(lambda x: (threading.get_ident(), local.name), (0,), {})[0] == (threading.get_ident(), "main")
    seen = {}

    def other():
        local.name = "worker"
        seen["result"] = loaded.call(lambda x: (threading.get_ident(), local.name), (0,), {})[0]
        seen["thread"] = threading.get_ident()

    thread = threading.Thread(target=other)
    thread.start()
    thread.join(30)
    assert seen["result"] == (seen["thread"], "worker")


def test_the_logics_own_time_does_not_count_against_the_guests_wall_time(load):
    limits = replace(TEST_LIMITS, wall_ms=300)
    loaded = load(generated_module(RETRYING, params="import time"), limits=limits)
    failures = [ConnectionError("once")]

    def slow(x):
        time.sleep(0.45)  # twice, 3x wall_ms in all: the guest's own time stays tiny
        if failures:
            raise failures.pop()
        return x

    started = time.monotonic()
    assert loaded.call(slow, (5,), {})[0] == 5
    assert time.monotonic() - started >= 0.9


def test_the_guests_own_time_after_the_logic_still_counts(load):
    limits = replace(TEST_LIMITS, wall_ms=400, cpu_ms=None)
    body = """
    result = logic(*args, **kwargs)
    while x == 1:
        pass
    return result
    """
    loaded = load(generated_module(body), limits=limits)
    mine = ["the logic's result"]
    started = time.monotonic()
    with pytest.raises(PoetViolation) as caught:
        loaded.call(lambda x: mine, (1,), {})
    assert caught.value.limit == "wall_ms" and time.monotonic() - started < 0.4 + 0.5
    after = caught.value.after_logic  # the logic ran: the caller can have its result
    assert isinstance(after, AfterLogic) and after.result is mine
    assert loaded.call(identity, (2,), {})[0] == 2  # a fresh guest


def test_async_logic_is_awaited_in_the_callers_task(load):
    loaded = load(generated_module(is_async=True), is_async=True)
    request_id = contextvars.ContextVar("request_id")

    async def logic(x):
        await asyncio.sleep(0.01)
        return (request_id.get(), asyncio.current_task(), threading.get_ident(), x)

    async def caller():
        request_id.set("req-42")
        outcome = await loaded.call_async(logic, (21,), {})
        return outcome, asyncio.current_task()

    (result, *_), task = asyncio.run(caller())
    assert result[0] == "req-42" and result[1] is task and result[2] == threading.get_ident() and result[3] == 21


def test_async_retries_sleep_and_timeouts_work_without_a_loop_in_the_guest(load):
    body = """
    attempt = 0
    while True:
        try:
            return await call_with_timeout_async(logic, args, kwargs, 0.5)
        except (ConnectionError, TimeoutError):
            attempt += 1
            if attempt > 2:
                raise
            await sleep_async(0.01)
            await asyncio_sleep_zero()
    """
    params = (
        "from poet_sandbox.timeouts import call_with_timeout_async, sleep_async\n"
        "import types\n"
        "@types.coroutine\n"
        "def asyncio_sleep_zero():\n"
        "    yield\n"
    )
    limits = replace(TEST_LIMITS, imports=TEST_LIMITS.imports + ("types",))
    loaded = load(generated_module(body, params=params, is_async=True), limits=limits, is_async=True)
    calls = []

    async def logic(x):
        calls.append(x)
        if len(calls) == 1:
            raise ConnectionError("first")
        if len(calls) == 2:
            await asyncio.sleep(5)  # cut by asyncio.timeout in the caller's task
        return x * 2

    started = time.monotonic()
    assert asyncio.run(loaded.call_async(logic, (4,), {}))[0] == 8
    assert len(calls) == 3 and time.monotonic() - started < 2.5


def test_concurrent_async_calls_of_one_function_share_its_guest(load):
    loaded = load(generated_module(is_async=True), is_async=True)

    async def logic(x):
        await asyncio.sleep(0.02)
        return x

    async def many():
        return await asyncio.gather(*(loaded.call_async(logic, (i,), {}) for i in range(6)))

    assert [outcome[0] for outcome in asyncio.run(many())] == list(range(6))


def test_a_cancelled_async_caller_retires_the_guest_mid_call(load):
    loaded = load(generated_module(is_async=True), is_async=True)

    async def echo(x):
        return x

    async def scenario():
        entered = asyncio.Event()

        async def slow(x):
            entered.set()
            await asyncio.sleep(30)

        task = asyncio.ensure_future(loaded.call_async(slow, (1,), {}))
        await entered.wait()
        guest = loaded._guest
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not guest.alive
        return (await loaded.call_async(echo, (2,), {}))[0]

    assert asyncio.run(scenario()) == 2


def test_keyboard_interrupt_in_the_logic_reaches_the_caller_and_retires_the_guest(load):
    loaded = load(generated_module(RETRYING, params="import time"))
    guest = loaded._guest

    def interrupted(x):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        loaded.call(interrupted, (1,), {})
    assert not guest.alive
    assert loaded.call(identity, (3,), {})[0] == 3


def test_a_timeout_of_the_generated_code_runs_around_the_host_logic(load):
    body = "return call_with_timeout(logic, args, kwargs, 0.2)"
    loaded = load(generated_module(body, params="from poet_sandbox.timeouts import call_with_timeout"))
    local = threading.local()
    local.value = "caller's"
    assert loaded.call(lambda x: local.value, (0,), {})[0] == "caller's"
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        loaded.call(lambda x: time.sleep(3), (0,), {})
    assert time.monotonic() - started < 1.5


def test_the_logic_prints_in_the_host_and_generated_code_does_not(load, capsys):
    loaded = load(generated_module("print('from the guest')\nreturn logic(*args, **kwargs)"))
    assert loaded.call(lambda x: print("from the logic", x) or x, (1,), {})[0] == 1
    out = capsys.readouterr().out
    assert "from the logic 1" in out and "from the guest" not in out


# --- what generated code decides --------------------------------------------------------------


def test_perceive_refusing_raises_before_the_logic_runs(load):
    code = generated_module(
        perceive="raise PerceiveError('x: expected int', field='x')", params="from poet_sandbox.errors import PerceiveError"
    )
    loaded = load(code)
    logic = Counting()
    with pytest.raises(facility.PerceiveError, match="x: expected int"):
        loaded.call(logic, ("nope",), {})
    assert logic.runs == 0


def test_repairs_and_notes_reach_the_logic_and_the_caller(load):
    code = generated_module(
        perceive="""
        validate.note('repair', 'x', 'str -> int')
        return {'x': int(x)}
        """,
        parameters="x, y",
    )
    loaded = load(code)
    marker = object()
    result, *_, notes = loaded.call(lambda x, y: (x, y), ("3", marker), {})
    assert result == (3, marker)  # the repaired value as data, the other as the caller's own object
    assert result[1] is marker
    assert notes == (("repair", "x", "str -> int"),)


def test_a_failure_after_the_logic_ran_returns_the_logics_own_result(load):
    code = generated_module(
        enforce="raise EnforceError('score out of range')", params="from poet_sandbox.errors import EnforceError"
    )
    loaded = load(code)
    mine = {"score": 7}
    logic = Counting(lambda x: mine)
    with pytest.raises(AfterLogic) as caught:
        loaded.call(logic, (1,), {})
    assert caught.value.reason == "enforce_rejected" and caught.value.result is mine and logic.runs == 1

    broken = load(generated_module("result = logic(*args, **kwargs)\nreturn undefined_name"))
    with pytest.raises(AfterLogic) as caught:
        broken.call(lambda x: mine, (1,), {})
    assert caught.value.result is mine


def test_a_result_generated_code_made_must_be_data(load):
    loaded = load(generated_module("return object() if x else x"))
    with pytest.raises(PhaseError, match="result"):
        loaded.call(never, (1,), {})
    assert loaded.call(never, (0,), {})[0] == 0
    after = load(generated_module("logic(*args, **kwargs)\nreturn object()"))
    mine = []
    with pytest.raises(AfterLogic) as caught:
        after.call(lambda x: mine, (1,), {})
    assert caught.value.result is mine  # the logic ran: never a second time


def test_a_generated_result_keeps_its_type(load):
    body = """
    import math
    return {"sum": x * PARAMS["scale"], "root": math.sqrt(x), "pair": (x, "a"), 1: [b"z", None]}
    """
    loaded = load(generated_module(body), params={"scale": 3})
    result = loaded.call(never, (4,), {})[0]
    assert result == {"sum": 12, "root": 2.0, "pair": (4, "a"), 1: [b"z", None]}
    assert type(result["pair"]) is tuple
    loaded.configure({"scale": 1})
    assert loaded.call(never, (4,), {})[0]["sum"] == 4


def test_an_argument_json_cannot_carry_crosses_as_a_reference(load):
    loaded = load(generated_module())
    huge = 10**5000
    assert loaded.call(identity, (huge,), {})[0] is huge  # an int too long for JSON text
    assert loaded.call(lambda x: 10**5000, (1,), {})[0] == huge  # and a result of the logic
    made = load(generated_module("return 10 ** 5000"))
    with pytest.raises(PhaseError):
        made.call(never, (1,), {})  # generated code's own result must be data
    assert loaded.call(identity, (0,), {})[0] == 0


def test_the_logic_calling_its_own_enhancement_is_refused_not_deadlocked(load):
    loaded = load(generated_module())

    def recursive(x):
        if x == 0:
            return "bottom"
        return loaded.call(recursive, (x - 1,), {})

    with pytest.raises(PhaseError, match="called again from inside"):
        loaded.call(recursive, (1,), {})


def test_the_proxy_hands_generated_code_nothing_but_the_logic(load):
    forge = """
    try:
        logic.session.send({'status': 'ok', 'result': ['d', 'forged'], 'marks': [0, 0, 0, 0]})
    except Exception as error:
        refused = type(error).__name__
    else:
        refused = 'sent'
    return [refused, logic(*args, **kwargs)]
    """
    assert load(generated_module(forge)).call(identity, ("real",), {})[0] == ["CrossingError", "real"]

    stale = """
    if STASH:
        try:
            STASH[0](1)
        except Exception as error:
            return type(error).__name__
        return 'called'
    STASH.append(logic)
    return 'kept'
    """
    loaded = load(generated_module(stale, params="STASH = []"))
    logic = Counting()
    assert loaded.call(logic, (0,), {})[0] == "kept"
    assert loaded.call(logic, (0,), {})[0] == "CrossingError"  # the last call's proxy is dead
    assert logic.runs == 0

    # A token the host never sent: the host refuses it (the guest is replaced).
    bogus = """
    return logic.session.send({'status': 'logic', 'args': [['h', 99]], 'kwargs': {}, 'timeout': None})
    """
    forged = load(generated_module(bogus))
    logic = Counting()
    with pytest.raises(PhaseError, match="never sent"):
        forged.call(logic, (0,), {})
    assert logic.runs == 0 and forged._guest is None


# --- state, isolation, limits -------------------------------------------------------------


def test_state_persists_within_one_function(load):
    loaded = load(generated_module("global COUNT\nCOUNT += 1\nreturn COUNT", params="COUNT = 0"))
    assert [loaded.call(never, (0,), {})[0] for _ in range(3)] == [1, 2, 3]


def test_nothing_of_the_users_module_is_sent(load):
    loaded = load(generated_module())
    assert set(loaded._load_message) == {"op", "code", "filename", "module_name", "params", "imports", "builtins"}
    settings = {"threshold": 1}
    assert loaded.call(lambda x: x > settings["threshold"], (5,), {})[0] is True
    settings["threshold"] = 10  # the logic reads its module's live state, as the original does
    assert loaded.call(lambda x: x > settings["threshold"], (5,), {})[0] is False


def test_state_cannot_reach_a_call_of_another_function(load):
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
    a = load(polluter, limits=limits, function="tests:a")
    b = load(observer, limits=limits, function="tests:b")
    assert b.call(never, (0,), {})[0] == [None, None, 2]
    assert a.call(never, (0,), {})[0] == "polluted"
    assert b.call(never, (0,), {})[0] == [None, None, 2]


def test_an_error_of_generated_code_is_a_phase_error_not_the_users(load):
    loaded = load(generated_module("raise ValueError('bad input')"))
    with pytest.raises(PhaseError, match="ValueError: bad input") as caught:
        loaded.call(never, (1,), {})
    assert type(caught.value).__name__ != "UserLogicError"
    assert loaded.call.__self__ is loaded


def _violation(loaded, *args, logic=never):
    started = time.monotonic()
    with pytest.raises(PoetViolation) as caught:
        loaded.call(logic, args or (0,), {})
    return caught.value, time.monotonic() - started


@pytest.mark.slow
def test_cpu_loop_is_stopped_by_fuel(load):
    limits = replace(TEST_LIMITS, cpu_ms=300, wall_ms=10_000)
    loaded = load(generated_module("while True:\n    x += 1"), limits=limits)
    error, elapsed = _violation(loaded)
    assert error.limit == "cpu_ms" and error.function == "tests:logic" and error.after_logic is None
    assert elapsed < 0.3 * 1.5 + 0.5


@pytest.mark.slow
def test_fuel_left_carries_over_the_logic_call(load):
    """The CPU budget is the call's, not each turn's: work before and after the logic
    call adds up, and is stopped as if it were one stretch."""
    from poet_runtime.backends.wasm_instance import fuel_for

    limits = replace(TEST_LIMITS, cpu_ms=300, wall_ms=10_000)
    probe = load(generated_module("logic(0)\nfor i in range(x):\n    pass\nlogic(1)\nreturn 1"), limits=limits)
    left = []
    probe.call(lambda k: left.append(probe._guest._store.get_fuel()), (100_000,), {})
    assert left[0] < fuel_for(300)  # the guest had used some before its first logic call
    per_iteration = (left[0] - left[1]) / 100_000
    n = int(0.6 * fuel_for(300) / per_iteration)  # one loop: 60 % of the budget
    loop = "for i in range(x):\n    pass\n"
    once = load(generated_module(loop + "logic(*args, **kwargs)\nreturn 'done'"), limits=limits)
    assert once.call(identity, (n,), {})[0] == "done"
    twice = load(generated_module(loop + "logic(*args, **kwargs)\n" + loop + "return 'done'"), limits=limits)
    logic = Counting()
    error, _ = _violation(twice, n, logic=logic)
    assert error.limit == "cpu_ms" and logic.runs == 1
    assert error.after_logic.result == n  # the logic ran: its result is the caller's


@pytest.mark.slow
def test_busy_loop_is_stopped_by_the_wall_clock(load):
    limits = replace(TEST_LIMITS, cpu_ms=None, wall_ms=400)
    loaded = load(generated_module("while True:\n    pass"), limits=limits)
    error, elapsed = _violation(loaded)
    assert error.limit == "wall_ms"
    assert 0.35 < elapsed < 0.4 + 0.4


@pytest.mark.slow
def test_blocking_sleep_is_stopped_at_the_deadline(load):
    limits = replace(TEST_LIMITS, wall_ms=500)
    loaded = load(generated_module("import time\ntime.sleep(3600)"), limits=limits)
    error, elapsed = _violation(loaded)
    assert error.limit == "wall_ms"
    assert elapsed < 0.5 + 0.4


def test_short_sleep_within_the_deadline_works(load):
    loaded = load(generated_module("import time\ntime.sleep(0.05)\nreturn x"))
    started = time.monotonic()
    assert loaded.call(never, (7,), {})[0] == 7
    assert 0.04 < time.monotonic() - started < 1.0


@pytest.mark.slow
def test_memory_bomb_is_stopped(load):
    limits = replace(TEST_LIMITS, memory_mb=128)
    bomb = generated_module("chunks = []\nwhile True:\n    chunks.append(bytearray(16 * 1024 * 1024))")
    loaded = load(bomb, limits=limits)
    error, elapsed = _violation(loaded)
    assert error.limit == "memory_mb"
    assert elapsed < 2.0
    one_shot = load(generated_module("return len(bytearray(300 * 1024 * 1024))"), limits=limits)
    assert _violation(one_shot)[0].limit == "memory_mb"


@pytest.mark.slow
def test_output_flood_is_stopped(load):
    limits = replace(TEST_LIMITS, max_output_kb=64, wall_ms=5000)
    loaded = load(generated_module("while True:\n    print('x' * 65536)"), limits=limits)
    error, elapsed = _violation(loaded)
    assert error.limit == "max_output_kb"
    assert elapsed < 1.0


def test_output_counts_over_the_whole_call(load):
    """print() of generated code before and after the logic call adds up to one cap."""
    limits = replace(TEST_LIMITS, max_output_kb=16)
    body = "print('x' * 10000)\nlogic(*args, **kwargs)\nprint('y' * 10000)\nreturn 1"
    loaded = load(generated_module(body), limits=limits)
    assert _violation(loaded, logic=identity)[0].limit == "max_output_kb"


def test_small_output_is_allowed(load):
    loaded = load(generated_module("print('hello')\nreturn x"))
    assert loaded.call(never, (1,), {})[0] == 1


def test_import_outside_the_allowlist_is_a_violation(load):
    limits = replace(TEST_LIMITS, imports=("math",))
    swallowing = generated_module("try:\n    import os\nexcept ImportError:\n    pass\nreturn 1")
    error, _ = _violation(load(swallowing, limits=limits))
    assert error.limit == "imports" and "os" in error.detail
    allowed = load(generated_module("import math\nreturn math.floor(x)"), limits=limits)
    assert allowed.call(never, (2.5,), {})[0] == 2


def test_third_party_packages_are_not_mounted_unless_allowed(load):
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
    assert load(code).call(never, (0,), {})[0] != "imported"


@pytest.mark.slow
def test_an_allowed_bundled_package_can_be_imported_in_the_guest(load):
    code = generated_module("import numpy as np\nreturn float(np.mean(np.array(x)))")
    loaded = load(code, limits=replace(TEST_LIMITS, imports=("numpy",)))
    assert loaded.call(never, ([1.0, 2.0, 4.0],), {})[0] == pytest.approx(7 / 3)
    refused = load(code)  # numpy not allowed
    assert _violation(refused, [1.0])[0].limit == "imports"


@pytest.mark.slow
def test_guest_is_replaced_after_a_violation(load):
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
    loaded = load(code, limits=replace(TEST_LIMITS, cpu_ms=200))
    assert loaded.call(never, (0,), {})[0] == 1
    assert loaded.call(never, (0,), {})[0] == 2
    assert _violation(loaded, "spin")[0].limit == "cpu_ms"
    assert loaded.call(never, (0,), {})[0] == 1  # a fresh guest: the module was loaded again


def test_guest_is_recycled_after_n_calls(load, monkeypatch):
    from poet_runtime.backends import wasm

    monkeypatch.setattr(wasm, "MAX_CALLS_PER_GUEST", 3)
    loaded = load(generated_module("global COUNT\nCOUNT += 1\nlogic(*args, **kwargs)\nreturn COUNT", params="COUNT = 0"))
    assert [loaded.call(identity, (0,), {})[0] for _ in range(5)] == [1, 2, 3, 1, 2]


def test_exit_and_host_escape_attempts_leave_the_host_healthy(load):
    loaded = load(generated_module("import sys\nsys.exit(3)"), limits=replace(TEST_LIMITS, imports=("sys",)))
    with pytest.raises((PhaseError, PoetViolation)):
        loaded.call(never, (0,), {})
    hard_exit = load(generated_module("import os\nos._exit(0)"), limits=replace(TEST_LIMITS, imports=("os",)))
    assert _violation(hard_exit)[0].limit == "crash"


def test_async_generated_code_without_the_logic(load):
    loaded = load(generated_module("return x * 2", is_async=True), is_async=True)
    assert asyncio.run(loaded.call_async(never, (21,), {}))[0] == 42


def test_async_generated_code_needs_an_async_call(load):
    loaded = load(generated_module(is_async=True), is_async=True)
    logic = Counting()
    with pytest.raises(PhaseError, match="async"):
        loaded.call(logic, (1,), {})
    assert logic.runs == 0


def test_async_code_awaiting_what_needs_a_loop_is_reported(load):
    code = generated_module("import asyncio\nawait asyncio.sleep(0.01)\nreturn x", is_async=True)
    loaded = load(code, limits=replace(TEST_LIMITS, imports=("asyncio",), wall_ms=5000, cpu_ms=4000), is_async=True)
    with pytest.raises(PhaseError):
        asyncio.run(loaded.call_async(never, (1,), {}))


def test_load_failure_is_a_phase_error(wasm_backend):
    with pytest.raises(PhaseError, match="loading"):
        wasm_backend.load(load_request("def perceive(:\n"))


def test_no_limits_stated_still_runs(load):
    loaded = load(generated_module(), limits=Limits())
    assert loaded.call(lambda x: x + 1, (1,), {})[0] == 2


def test_a_large_result_counts_toward_the_output_cap(load):
    limits = replace(TEST_LIMITS, max_output_kb=16)
    loaded = load(generated_module("return 'y' * x"), limits=limits)
    assert len(loaded.call(never, (1000,), {})[0]) == 1000
    assert _violation(loaded, 64 * 1024)[0].limit == "max_output_kb"
    assert loaded.call(never, (10,), {})[0] == "y" * 10  # a fresh guest serves the next call
    # The logic's own result does not cross back as text: the host keeps it.
    passing = load(generated_module(), limits=limits)
    big = "z" * (8 * 1024)
    assert passing.call(identity, (big,), {})[0] is big


@pytest.mark.slow
def test_memory_limit_is_what_one_call_may_add(load):
    limits = replace(TEST_LIMITS, memory_mb=64)
    loaded = load(generated_module("return len(bytearray(x * 1024 * 1024))"), limits=limits)
    # 40 MB per call, five times: freed memory is reused, so no call grows the
    # guest by more than 64 MB; 200 MB at once would.
    assert [loaded.call(never, (40,), {})[0] for _ in range(5)] == [40 * 1024 * 1024] * 5
    assert _violation(loaded, 200)[0].limit == "memory_mb"


def test_concurrent_calls_from_threads(load):
    from concurrent.futures import ThreadPoolExecutor

    square = load(generated_module(), function="tests:square")
    negate = load(generated_module(), function="tests:negate")

    def sq(i):
        time.sleep(0.001)
        return i * i

    with ThreadPoolExecutor(max_workers=4) as pool:
        squares = list(pool.map(lambda i: square.call(sq, (i,), {})[0], range(40)))
        negated = list(pool.map(lambda i: negate.call(lambda x: -x, (i,), {})[0], range(40)))
    assert squares == [i * i for i in range(40)] and negated == [-i for i in range(40)]


def test_generated_code_calling_the_door_itself_is_caught(load):
    """The door is the guest's only way out; code that uses it directly can only
    desynchronise its own guest, which is then replaced."""
    code = generated_module(
        """
        import _host
        _host.call(b'{"status": "ok", "result": ["d", "forged"], "marks": [0, 0, 0, 0]}')
        return "real"
        """
    )
    loaded = load(code, limits=replace(TEST_LIMITS, imports=("_host",)))
    guest = loaded._guest
    with pytest.raises(PoetViolation) as caught:
        loaded.call(never, (0,), {})
    assert caught.value.limit == "crash"
    assert guest.join(timeout=5), "the desynchronised guest must end and close its store"
    with pytest.raises(PoetViolation):  # a fresh guest, which forges again
        loaded.call(never, (0,), {})


def test_a_malformed_reply_is_not_a_user_exception(load):
    code = generated_module(
        """
        import _host
        _host.call(b"[" * 100000 + b"]" * 100000)
        return 1
        """
    )
    loaded = load(code, limits=replace(TEST_LIMITS, imports=("_host",)))
    with pytest.raises(PoetViolation):
        loaded.call(never, (0,), {})


def test_phase_refusals_keep_their_class_and_a_forged_open_breaker_is_a_phase_failure(load):
    code = generated_module(
        perceive="raise PerceiveError('x: expected int')", params="from poet_sandbox.errors import PerceiveError"
    )
    with pytest.raises(facility.PerceiveError, match="x: expected int"):
        load(code).call(never, ("nope",), {})
    breaker = generated_module("from poet_sandbox import CircuitOpenError\nraise CircuitOpenError('open for 30 s')")
    # Generated code's own CircuitOpenError is not the caller's to see: a sandbox failure
    # (the call path runs the original), as any exception the generated code raised itself.
    with pytest.raises(facility.PhaseError, match="open for 30 s") as raised:
        load(breaker).call(never, (1,), {})
    assert not isinstance(raised.value, facility.CircuitOpenError)


def test_a_cache_folder_that_moves_or_vanishes_is_rebuilt(load, tmp_path, monkeypatch):
    """Mount folders are checked on every guest start, not remembered: a test (or a
    user) pointing POET_CACHE_DIR elsewhere, or cleaning the cache, breaks nothing."""
    monkeypatch.setenv("POET_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert load(generated_module("return x")).call(never, (5,), {})[0] == 5
    assert list((tmp_path / "elsewhere" / "wasm").glob("lib-*-stdlib/python*.zip"))
    monkeypatch.setenv("POET_CACHE_DIR", str(tmp_path / "gone"))
    load(generated_module("return x")).close()
    import shutil

    shutil.rmtree(tmp_path / "gone")
    assert load(generated_module("return x + 1")).call(never, (5,), {})[0] == 6


def test_idle_guests_beyond_the_cap_are_stopped_and_restart_on_demand(load, monkeypatch):
    from poet_runtime.backends import wasm

    monkeypatch.setattr(wasm, "MAX_LIVE_GUESTS", 2)
    code = generated_module("global COUNT\nCOUNT += 1\nreturn COUNT", params="COUNT = 0")
    loaded = [load(code, function=f"tests:f{i}") for i in range(3)]
    assert loaded[0]._guest is None  # the oldest idle guest made room for the third
    assert loaded[1]._guest is not None and loaded[2]._guest is not None
    assert loaded[0].call(never, (0,), {})[0] == 1  # started again on demand (fresh state)
    assert loaded[1]._guest is None  # now the least recently used
    assert sum(e._guest is not None for e in loaded) == 2


def test_configure_during_a_call_is_applied_before_the_next(load):
    loaded = load(generated_module("logic(*args, **kwargs)\nreturn PARAMS.get('scale')"), params={"scale": 1})
    assert loaded.call(lambda x: loaded.configure({"scale": 5}), (0,), {})[0] == 1
    assert loaded.call(identity, (0,), {})[0] == 5


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_a_forked_child_falls_back_instead_of_hanging(load):
    import os

    loaded = load(generated_module())
    assert loaded.call(identity, (1,), {})[0] == 1
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the call must fall back (PhaseError) at once
        code = 1
        try:
            loaded.call(identity, (2,), {})
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
    assert loaded.call(identity, (3,), {})[0] == 3  # the parent is unaffected


def test_closing_ends_the_guest_and_its_store(wasm_backend):
    loaded = wasm_backend.load(load_request(generated_module("return x")))
    guest = loaded._guest
    loaded.close()
    assert guest.join(timeout=5) and not guest.alive
    with pytest.raises(ValueError):  # wasmtime-py: the store is closed
        guest._store.ptr()


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


CACHE_IN_CHILD = """
import json, sys, time
from pathlib import Path
from poet_runtime.backends import wasm, wasm_engine

tiny = Path(sys.argv[1])
wasm_engine.binary_path = lambda: tiny  # a tiny module stands in for the 100 MB one
path = wasm_engine.compiled_path()
if sys.argv[2] == "compile":
    wasm_engine.module(lambda message: None)
    print(json.dumps({"path": str(path), "problem": wasm_engine.cache_problem(path)}))
else:
    started = time.monotonic()
    first = wasm.ready()
    took = time.monotonic() - started
    deadline = time.monotonic() + 60
    while not wasm.ready() and time.monotonic() < deadline:
        time.sleep(0.05)
    print(json.dumps({"first": first, "took": took, "later": wasm.ready(), "problem": wasm_engine.cache_problem(path)}))
"""


def test_a_damaged_compiled_module_is_discarded_and_rebuilt_in_the_background(tmp_path):
    """Issue 12, item 5: a truncated or altered .cwasm is never mapped; the first call
    is told at once that the sandbox is not ready (it runs the original), and the
    entry is compiled again behind it, with a new record of its size and digest."""
    import json
    import os

    require_wasm()
    import wasmtime

    tiny = tmp_path / "tiny.wasm"
    tiny.write_bytes(wasmtime.wat2wasm('(module (func (export "f")) (func (export "g") (param i32) (result i32) '
                                       'local.get 0 i32.const 7 i32.add))'))
    env = {**os.environ, "POET_CACHE_DIR": str(tmp_path / "cache")}

    def child(step):
        done = subprocess.run([sys.executable, "-c", CACHE_IN_CHILD, str(tiny), step], env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr

    made, _ = child("compile")
    path = Path(made["path"])
    assert made["problem"] is None and Path(str(path) + ".sum").is_file()
    whole = path.read_bytes()
    for damage in ("truncate", "flip"):
        if damage == "truncate":
            path.write_bytes(whole[: len(whole) // 2])
        else:
            flipped = bytearray(whole)
            flipped[len(flipped) // 2] ^= 0x40
            path.write_bytes(bytes(flipped))
        seen, stderr = child("ready")
        assert seen["first"] is False and seen["took"] < 5, (damage, seen)  # no stall: the original runs
        assert seen["later"] is True and seen["problem"] is None, (damage, seen, stderr)
        assert "not using the compiled WASM sandbox" in stderr, stderr  # logged, naming the file
        assert path.read_bytes() == whole  # rebuilt (the compile is deterministic)


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
def test_a_module_from_the_builtin_generator_runs(load, objective):
    from poet_runtime.decorator import PoetConfig
    from poet_runtime.domains import get_domain
    from poet_runtime.generate.builtin import BuiltinGenerator
    from poet_runtime.generate.spec import spec_from_source

    spec = spec_from_source("app", "detect_drift", BUILTIN_SOURCE, "app.py")
    config = PoetConfig.from_kwargs("app:detect_drift", domain="ml_monitoring", optimize_for=objective)
    generated = BuiltinGenerator().generate(spec, config, get_domain(config.domain))
    if "def operate_prime(logic, args, kwargs)" not in generated.code:
        pytest.skip("the built-in generator does not write contract 2 yet")
    limits = replace(TEST_LIMITS, imports=("math", "statistics", "json", "collections"))
    loaded = load(generated.code, limits=limits, function="app:detect_drift")
    namespace = {}
    exec(BUILTIN_SOURCE, namespace)
    detect_drift = Counting(namespace["detect_drift"])
    batch = [1.0, 2.0, None, 3.0]
    result, *_, notes = loaded.call(detect_drift, (batch, [1.0, 2.0, 3.5]), {"threshold": 0.1})
    assert result == {"drift_detected": True, "score": pytest.approx(1 / 6)}
    assert batch == [1.0, 2.0, None, 3.0] and notes and any(kind == "repair" for kind, *_ in notes)
    assert loaded.call(detect_drift, ([1.0], [1.05]), {})[0]["drift_detected"] is False  # the logic's own default
    assert detect_drift.runs == 2
    observed = loaded.observations()
    if objective is None:
        assert observed == {}
    else:
        assert observed["calls"] == 2
    assert loaded.train_error is None


def test_a_failure_of_generated_code_names_its_phase(load):
    from poet_sandbox.driver import InternalError

    loaded = load(generated_module(parameters="x, *, flag"))
    with pytest.raises(InternalError) as caught:
        loaded.call(never, (1,), {})  # perceive cannot bind: the call path reports perceive_error
    assert caught.value.phase == "perceive" and "flag" in str(caught.value)


def test_a_forked_child_drops_the_parents_guests_without_hanging(load):
    """Issue 12, item 1 (the guests' part): a child forked while a guest is live (and
    its lock possibly held) neither uses nor stops the parent's guest; wasmtime's own
    threads did not survive the fork, so its calls fail at once and run the original."""
    import json
    import os

    enhancement = load(generated_module("return x + 1"))
    assert enhancement.call(never, (1,), {})[0] == 2
    parent_guest = enhancement._guest
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(read)
            import signal

            signal.alarm(20)  # a hang would end the child, not the test run
            started = time.monotonic()
            try:
                enhancement.call(never, (1,), {})
                outcome = "called"
            except PhaseError as error:
                outcome = f"PhaseError: {error}"
            os.write(write, json.dumps([outcome, time.monotonic() - started, enhancement._guest is None]).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write)
    with os.fdopen(read) as pipe:
        output = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, output
    outcome, took, dropped = json.loads(output)
    assert outcome.startswith("PhaseError") and "forked" in outcome and took < 2 and dropped, output
    assert enhancement._guest is parent_guest and parent_guest.alive  # the parent's, untouched
    assert enhancement.call(never, (4,), {})[0] == 5
