"""The restricted backend: normal code runs, limits stop what they state, workers recover,
and the user's logic runs as itself (contract 2): in the host, in the caller's thread, on the
caller's own objects, whether the generated phases run in-process or in a worker.

Real RestrictedPython and real worker processes; nothing mocked. Generated modules are
written by hand to contract 2 (``sandbox_helpers.module_text``).
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import decimal
import os
import signal
import threading
import time

import pytest

from poet_runtime.backends import get_backend
from poet_runtime.backends.base import Limits
from poet_runtime.errors import PoetViolation
from poet_runtime.resources import load_facility
from sandbox_helpers import load, module_text

facility = load_facility()
PhaseError = facility.PhaseError
from poet_sandbox.driver import AfterLogic  # noqa: E402
from poet_sandbox.errors import CircuitOpenError  # noqa: E402

IMPORTS = ("math", "json", "collections", "time")
IN_PROCESS = Limits(max_output_kb=4, imports=IMPORTS)
WORKER = Limits(wall_ms=1500, cpu_ms=300, memory_mb=128, max_output_kb=16, imports=IMPORTS)
MODES = [pytest.param(IN_PROCESS, id="in-process"), pytest.param(WORKER, id="worker")]
PASS_THROUGH = "return logic(*args, **kwargs)"


@pytest.fixture(scope="module", autouse=True)
def close_backend():
    yield
    get_backend("restricted").close()


def identity(value):
    return value


def constant(value):
    return lambda *args, **kwargs: value


def counted(logic):
    """The logic as the host passes it where the driver must know whether it returned
    (poet_sandbox.driver reads ``returned`` and ``result``); a worker knows by itself."""
    def run(*args, **kwargs):
        result = logic(*args, **kwargs)
        run.returned, run.result = True, result
        return result

    run.returned = False
    return run


TYPICAL = """
import math
from collections import defaultdict
from poet_sandbox.validate import as_list

class Summary:
    def __init__(self, name):
        self.name = name
        self.total = 0

def summarize(rows, label):
    rows = as_list(rows, "rows")
    groups = defaultdict(list)
    for key, value in rows:
        groups[key].append(value)
    out = {}
    for key, values in sorted(groups.items()):
        summary = Summary(key)
        for v in values:
            summary.total += v
        out[key] = {"n": len(values), "total": summary.total, "root": round(math.sqrt(summary.total), 3)}
    counts = {"seen": 0}
    counts["seen"] += len(rows)
    first, *rest = [k for k in out]
    text = "{} groups, first {}".format(len(out), first) + f" ({label})"
    return {"groups": out, "seen": counts["seen"], "text": text, "pair": (first, len(rest)), "keys": set(out)}
"""


@pytest.mark.parametrize("limits", MODES)
def test_typical_code_matches_native(limits):
    loaded = load(module_text("return summarize(logic(*args, **kwargs), 'x')", params="rows", prelude=TYPICAL),
                  limits)
    rows = [("b", 4), ("a", 1), ("a", 8)]
    result, t0, t1, t2, t3, notes = loaded.call(identity, (rows,), {})
    assert result == {"groups": {"a": {"n": 2, "total": 9, "root": 3.0}, "b": {"n": 1, "total": 4, "root": 2.0}},
                      "seen": 3, "text": "2 groups, first a (x)", "pair": ("a", 1), "keys": {"a", "b"}}
    assert type(result["pair"]) is tuple and type(result["keys"]) is set
    assert t0 <= t1 <= t2 <= t3 and notes is None


VALUES = [(1, (2, "x")), {1: "a", (2, 3): None}, b"\x00\xff", frozenset({1}), {"$t": 1},
          decimal.Decimal("1.10"), datetime.datetime(2024, 1, 2, 3, 4, 5), 2**100, float("inf"), 1 + 2j]


@pytest.mark.parametrize("limits", MODES)
def test_values_come_back_as_the_callers_objects_and_data_keeps_its_types(limits):
    # The logic's result returned untouched is the host's own object; a value the code
    # rebuilt comes back as data with its exact type.
    loaded = load(module_text("value = logic(*args, **kwargs)\nreturn [value, args[0]]", params="value"), limits)
    for value in VALUES:
        got = loaded.call(identity, (value,), {})[0]
        assert got == [value, value] and all(type(g) is type(value) for g in got)
    plain = load(module_text(PASS_THROUGH, params="value"), limits)
    for value in VALUES:
        assert plain.call(identity, (value,), {})[0] is value


@pytest.mark.parametrize("limits", MODES)
def test_configure_reaches_code(limits):
    code = module_text("return logic(*args, **kwargs) * SCALE", params="x", prelude="SCALE = 1").replace(
        "def configure(params, defaults=None):\n    pass",
        "def configure(params, defaults=None):\n    global SCALE\n    SCALE = params.get('scale', 1)")
    loaded = load(code, limits, params={"scale": 3})
    assert loaded.call(identity, (2,), {})[0] == 6
    loaded.configure({"scale": 5})
    assert loaded.call(identity, (2,), {})[0] == 10


# -- the logic runs as itself --------------------------------------------------------------

@pytest.mark.parametrize("limits", MODES)
def test_mutation_of_an_argument_is_seen_by_the_caller(limits):
    def add_to_cart(cart, item):
        cart.append(item)
        return cart

    loaded = load(module_text(PASS_THROUGH, params="cart, item"), limits)
    cart = ["apple"]
    result = loaded.call(add_to_cart, (cart,), {"item": "pear"})[0]
    assert cart == ["apple", "pear"] and result is cart
    table = {"n": 1}
    loaded = load(module_text(PASS_THROUGH, params="table"), limits)
    assert loaded.call(lambda t: t.update(n=2) or t, (table,), {})[0] is table and table == {"n": 2}


class Basket:
    def __init__(self, items):
        self.items = items


@pytest.mark.parametrize("limits", MODES)
def test_objects_that_are_not_data_cross_as_references(limits):
    """A user object, a Counter, a function and an array go in and come out as themselves."""
    import numpy

    checks = ("from poet_sandbox import validate\n"
              "def perceive(basket, counts, fn, array):\n"
              "    validate.as_dict(counts, 'counts')\n"
              "    validate.as_list(array, 'array')\n"
              "    return None\n")
    code = module_text(PASS_THROUGH, params="basket, counts, fn, array",
                       enforce="validate.as_dict(result, 'result', error=EnforceError)\nreturn result",
                       prelude="from poet_sandbox.errors import EnforceError")
    code = code.replace("def perceive(basket, counts, fn, array):\n    return None\n", checks)
    loaded = load(code, limits)
    basket, counts, array = Basket(["a", "b", "a"]), collections.Counter(), numpy.arange(3)

    def tally(basket, counts, fn, array):
        assert basket is expected[0] and counts is expected[1] and fn is len and array is expected[2]
        counts.update(basket.items)
        return counts

    expected = (basket, counts, array)
    result, *_, notes = loaded.call(tally, (basket, counts, len, array), {})
    assert result is counts and result.most_common(1) == [("a", 2)]
    assert notes is None  # a Counter is a dict, an array a sequence: nothing to report


@pytest.mark.parametrize("limits", MODES)
def test_the_users_own_exception_reaches_the_caller(limits):
    class OwnError(Exception):
        pass

    raised = []
    serving = set()
    pool = get_backend("restricted").pool()

    def logic(key):
        idle = {worker.proc.pid for worker in pool.idle}
        serving.update(pid for pid in worker_pids() if pid not in idle)
        raised.append(OwnError(key))
        raise raised[-1]

    loaded = load(module_text(PASS_THROUGH, params="key"), limits)
    for _ in range(3):
        with pytest.raises(OwnError) as caught:
            loaded.call(logic, ("k1",), {})
        assert caught.value is raised[-1] and caught.value.__context__ is None
    if limits is WORKER:
        assert serving and serving <= set(worker_pids())  # the user's exception does not cost a worker
    with pytest.raises(KeyError) as caught:
        loaded.call(lambda key: {}[key], ("missing",), {})
    assert caught.value.args == ("missing",)


RETRYING = """
import time
from poet_sandbox import validate

def operate_prime(logic, args, kwargs):
    attempt = 0
    while True:
        try:
            return logic(*args, **kwargs)
        except (ConnectionError, TimeoutError) as error:
            attempt = attempt + 1
            if attempt > 3:
                raise
            validate.note('retry', 'operate_prime', type(error).__name__)
            time.sleep(0.001)
"""


def retrying_module(params: str = "") -> str:
    code = module_text(params=params)
    start = code.index("def operate_prime")
    end = code.index("def enforce")
    return code[:start] + RETRYING + "\n" + code[end:]


@pytest.mark.parametrize("limits", MODES)
def test_retries_on_the_hosts_connection_error_happen_in_the_generated_loop(limits):
    loaded = load(retrying_module("x"), limits)
    runs = []
    errors = []

    def flaky(x):
        runs.append(x)
        if len(runs) < 3:
            errors.append(ConnectionRefusedError(f"attempt {len(runs)}"))
            raise errors[-1]
        return x * 2

    result, *_, notes = loaded.call(flaky, (21,), {})
    assert result == 42 and runs == [21, 21, 21]
    assert notes == (("retry", "operate_prime", "ConnectionRefusedError"),) * 2  # a builtin class in both modes
    runs.clear()
    errors.clear()

    def down(x):
        runs.append(x)
        errors.append(ConnectionRefusedError("down"))
        raise errors[-1]

    with pytest.raises(ConnectionRefusedError) as caught:
        loaded.call(down, (1,), {})
    assert len(runs) == 4 and caught.value is errors[-1]  # the last attempt's own object

    class ServiceDown(ConnectionError):  # the user's own class: retried as the builtin it extends
        pass

    runs.clear()

    def own(x):
        runs.append(x)
        if len(runs) < 2:
            raise ServiceDown("down")
        return "up"

    assert loaded.call(own, (1,), {})[0] == "up" and len(runs) == 2


@pytest.mark.parametrize("limits", MODES)
def test_the_logic_runs_in_the_callers_thread(limits):
    loaded = load(retrying_module(), limits)
    local = threading.local()
    seen = []

    def logic():
        seen.append((threading.get_ident(), getattr(local, "name", None)))
        if len(seen) == 1:
            raise ConnectionError("once")
        return len(seen)

    def run(name):
        local.name = name
        assert loaded.call(logic, (), {})[0] == len(seen)

    run("main")
    worker = threading.Thread(target=run, args=("other",))
    worker.start()
    worker.join(10)
    assert seen[0] == seen[1] == (threading.get_ident(), "main")
    assert seen[2] == (worker.ident, "other")


TIMED = """
from poet_sandbox.timeouts import call_with_timeout

def operate_prime(logic, args, kwargs):
    return call_with_timeout(logic, args, kwargs, 0.05)
"""


def timed_module() -> str:
    code = module_text()
    return code[:code.index("def operate_prime")] + TIMED + "\n" + code[code.index("def enforce"):]


@pytest.mark.parametrize("limits", MODES)
def test_a_timeout_from_the_policys_code_stops_a_logic_that_loops(limits):
    loaded = load(timed_module(), limits)
    spins = []

    def spin():
        spins.append(1)
        while True:
            pass

    def run_many(results):
        for _ in range(15):
            started = time.monotonic()
            try:
                loaded.call(spin, (), {})
            except TimeoutError as error:
                results.append(("timeout", time.monotonic() - started, error))
            except BaseException as error:  # noqa: B902 - reported below
                results.append(("other", 0, error))

    results = []
    run_many(results)  # main thread: SIGALRM
    thread = threading.Thread(target=run_many, args=(results,))  # another thread: the watchdog
    thread.start()
    thread.join(30)
    assert len(results) == 30 and all(kind == "timeout" for kind, _, _ in results), results
    assert max(elapsed for _, elapsed, _ in results) < 1.0
    assert loaded.call(constant(5), (), {})[0] == 5


def test_wall_ms_does_not_count_the_logics_own_time():
    limits = Limits(wall_ms=150, cpu_ms=300, memory_mb=128, imports=IMPORTS)
    loaded = load(retrying_module("x"), limits)
    calls = []

    def slow(x):
        calls.append(x)
        time.sleep(0.45)  # 3x wall_ms, each time
        if x % 5 == 0 and calls.count(x) == 1:
            raise ConnectionError("again")  # and once in a while a retry: two logic runs in one call
        return x

    settle()
    for i in range(30):
        assert loaded.call(slow, (i,), {})[0] == i
    assert len(calls) == 36
    # The worker's own time still counts: generated code that sleeps past wall_ms is stopped.
    sleeper = load(module_text("import time\ntime.sleep(0.3)\nreturn 1"), limits)
    with pytest.raises(PoetViolation) as caught:
        sleeper.call(constant(1), (), {})
    assert caught.value.limit == "wall_ms"


def test_cpu_ms_does_not_count_the_logics_cpu():
    limits = Limits(wall_ms=2000, cpu_ms=100, memory_mb=128, imports=IMPORTS)
    loaded = load(module_text(PASS_THROUGH), limits)

    def burn():
        end = time.process_time() + 0.3  # 3x cpu_ms
        while time.process_time() < end:
            pass
        return "done"

    for _ in range(5):
        assert loaded.call(burn, (), {})[0] == "done"


@pytest.mark.parametrize("limits", MODES)
def test_phases_before_and_after_the_logic(limits):
    refusing = module_text(PASS_THROUGH, params="x", perceive="raise PerceiveError('no')",
                           prelude="from poet_sandbox.errors import PerceiveError, EnforceError")
    runs = []
    with pytest.raises(PhaseError) as caught:
        load(refusing, limits).call(lambda x: runs.append(x), (1,), {})
    assert not isinstance(caught.value, AfterLogic) and runs == []  # the host runs the original once

    result = ["the logic's own"]
    rejecting = module_text(PASS_THROUGH, params="x", enforce="raise EnforceError('bad')",
                            prelude="from poet_sandbox.errors import EnforceError")
    with pytest.raises(AfterLogic) as caught:
        load(rejecting, limits).call(constant(result), (1,), {})
    assert caught.value.reason == "enforce_rejected" and caught.value.result is result

    failing = module_text("value = logic(*args, **kwargs)\nraise RuntimeError('generated code broke')", params="x")
    with pytest.raises(AfterLogic) as caught:
        load(failing, limits).call(counted(constant(result)), (1,), {})
    assert caught.value.result is result
    if limits is WORKER:  # the worker knows the logic ran without being told
        with pytest.raises(AfterLogic) as caught:
            load(failing, limits).call(constant(result), (1,), {})
        assert caught.value.result is result

    repaired = module_text(PASS_THROUGH, params="x",
                           perceive="from poet_sandbox import validate\n"
                                    "validate.note('repair', 'x', 'text -> int')\nreturn {'x': int(x)}")
    value, *_, notes = load(repaired, limits).call(identity, ("7",), {})
    assert value == 7 and notes == (("repair", "x", "text -> int"),)


@pytest.mark.parametrize("limits", MODES)
def test_a_swallowed_refusal_after_the_logic_is_a_violation_carrying_the_result(limits):
    enforce = "try:\n    getattr(result, '__class__')\nexcept Exception:\n    pass\nreturn result"
    result = ["own"]
    with pytest.raises(PoetViolation) as caught:
        load(module_text(PASS_THROUGH, enforce=enforce), limits).call(constant(result), (), {})
    assert caught.value.limit == "attribute" and caught.value.after_logic.result is result


@pytest.mark.parametrize("limits", MODES)
@pytest.mark.parametrize("name", ["CircuitOpenError", "TimeoutError", "KeyboardInterrupt", "SystemExit"])
def test_what_generated_code_raises_by_itself_is_a_fallback(name, limits):
    """Only the user's own exception crosses: a breaker's CircuitOpenError or a TimeoutError that
    generated code made up is no answer of the original (before the logic ran: PhaseError, the host
    runs the original; after: AfterLogic with the logic's own result). KeyboardInterrupt and
    SystemExit are Exception stand-ins for generated code: it cannot end the user's program."""
    from poet_sandbox.driver import AfterLogic

    prelude = "from poet_sandbox.errors import CircuitOpenError"
    with pytest.raises(PhaseError) as caught:
        load(module_text(f"raise {name}('open')", prelude=prelude), limits).call(constant(1), (), {})
    assert not isinstance(caught.value, AfterLogic) and name in str(caught.value)
    result = ["own"]
    after = module_text(f"logic(*args, **kwargs)\nraise {name}('open')", prelude=prelude)
    with pytest.raises(AfterLogic) as caught:
        load(after, limits).call(constant(result), (), {})
    assert caught.value.result is result


def test_a_keyboard_interrupt_in_the_logic_reaches_the_caller_and_retires_the_worker():
    loaded = load(module_text(PASS_THROUGH), WORKER)
    assert loaded.call(constant(1), (), {})[0] == 1
    busy = []
    pool = settle()

    def interrupted():
        idle = {worker.proc.pid for worker in pool.idle}
        busy.extend(pid for pid in worker_pids() if pid not in idle)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        loaded.call(interrupted, (), {})
    assert len(busy) == 1
    deadline = time.monotonic() + 5
    while busy[0] in worker_pids() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert busy[0] not in worker_pids()  # mid-call: never reused
    assert loaded.call(constant(2), (), {})[0] == 2


@pytest.mark.parametrize("limits", MODES)
def test_globals_of_the_users_module_are_not_given(limits):
    """Contract 2: generated code needs none of the user's globals and gets none."""
    loaded = load(module_text("return TABLE['rate'] * logic(*args, **kwargs)", params="x"), limits)
    with pytest.raises(PhaseError, match="TABLE") as caught:
        loaded.call(identity, (4,), {})
    assert not isinstance(caught.value, AfterLogic)  # the logic never ran: the original runs once


# -- async ----------------------------------------------------------------------------------

ASYNC_PASS = "return await logic(*args, **kwargs)"


@pytest.mark.parametrize("limits", MODES)
def test_async_logic_is_awaited_in_the_callers_task(limits):
    loaded = load(module_text(ASYNC_PASS, params="cart", is_async=True), limits, is_async=True)
    tasks = []

    async def logic(cart):
        await asyncio.sleep(0.01)
        tasks.append(asyncio.current_task())
        cart.append(1)
        return cart

    async def main():
        cart = []
        result = (await loaded.call_async(logic, (cart,), {}))[0]
        assert result is cart and cart == [1] and tasks == [asyncio.current_task()]

    asyncio.run(main())


@pytest.mark.parametrize("limits", MODES)
def test_async_timeout_and_own_exception(limits):
    code = module_text("return await call_with_timeout_async(logic, args, kwargs, 0.05)", is_async=True,
                       prelude="from poet_sandbox.timeouts import call_with_timeout_async")
    loaded = load(code, limits, is_async=True)
    own = ValueError("mine")

    async def hangs():
        await asyncio.sleep(10)

    async def raises():
        raise own

    async def main():
        with pytest.raises(TimeoutError):
            await loaded.call_async(hangs, (), {})
        with pytest.raises(ValueError) as caught:
            await loaded.call_async(raises, (), {})
        assert caught.value is own

    asyncio.run(main())


def test_cancelled_async_call_retires_its_worker():
    slow_worker = load(module_text("import time\ntime.sleep(0.5)\nreturn await logic(*args, **kwargs)",
                                   is_async=True), WORKER, is_async=True)
    slow_logic = load(module_text(ASYNC_PASS, is_async=True), WORKER, is_async=True)

    async def value():
        return 3

    async def sleeps():
        await asyncio.sleep(10)

    async def main():
        for loaded, logic in ((slow_worker, value), (slow_logic, sleeps)):  # cancelled in a leg / in the logic
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(loaded.call_async(logic, (), {}), 0.1)
        assert (await slow_logic.call_async(value, (), {}))[0] == 3

    asyncio.run(main())
    assert (load(module_text(PASS_THROUGH), WORKER).call(constant(4), (), {}))[0] == 4


# -- output -----------------------------------------------------------------------------------

@pytest.mark.parametrize("limits", MODES)
def test_print_is_written_only_on_success(limits, capsys):
    loaded = load(module_text("x = args[0]\nprint('hello', x)\nif x < 0:\n    raise ValueError('neg')\n"
                              "return logic(*args, **kwargs)", params="x"), limits)
    assert loaded.call(identity, (1,), {})[0] == 1
    assert capsys.readouterr().out == "hello 1\n"
    with pytest.raises(PhaseError):
        loaded.call(identity, (-1,), {})
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("limits", MODES)
def test_the_logic_prints_as_it_always_does(limits, capsys):
    loaded = load(module_text(PASS_THROUGH), limits)
    assert loaded.call(lambda: print("from the logic") or 1, (), {})[0] == 1
    assert capsys.readouterr().out == "from the logic\n"


@pytest.mark.parametrize("limits", MODES)
def test_output_flood_stopped(limits):
    loaded = load(module_text("while True:\n    print('x' * 1000)"), limits)
    started = time.monotonic()
    with pytest.raises(PoetViolation) as caught:
        loaded.call(constant(1), (), {})
    assert caught.value.limit == "max_output_kb" and time.monotonic() - started < 2.0


def test_large_result_from_worker_is_an_output_violation():
    loaded = load(module_text("return 'x' * (logic(*args, **kwargs) * 1024)", params="n"), WORKER)
    assert len(loaded.call(identity, (4,), {})[0]) == 4096
    with pytest.raises(PoetViolation) as caught:
        loaded.call(identity, (WORKER.max_output_kb + 1,), {})
    assert caught.value.limit == "max_output_kb"
    assert loaded.call(identity, (1,), {})[0] == "x" * 1024  # the worker is fine afterwards
    # The logic's own large result is not output: it never leaves the host.
    big = ["y" * 1024] * (WORKER.max_output_kb * 4)
    assert load(module_text(PASS_THROUGH), WORKER).call(constant(big), (), {})[0] is big


# -- limits in workers -------------------------------------------------------------------

def settle(timeout: float = 20.0):
    """Wait until the pool's workers are all started and idle (a test before may have retired
    some): timings and 'which worker is busy' then measure only the call."""
    pool = get_backend("restricted").pool()
    deadline = time.monotonic() + timeout
    while (len(pool.idle) < pool.size or pool.count < pool.size) and time.monotonic() < deadline:
        if pool.count < pool.size:
            pool.prestart()
        time.sleep(0.01)
    return pool


def timed_violation(loaded, limit):
    settle()
    started = time.monotonic()
    with pytest.raises(PoetViolation) as caught:
        loaded.call(constant(1), (), {})
    assert caught.value.limit == limit, caught.value
    return time.monotonic() - started


def test_cpu_loop_stopped_near_cpu_ms():
    elapsed = timed_violation(load(module_text("n = 0\nwhile True:\n    n += 1"), WORKER), "cpu_ms")
    # cpu_ms counts CPU time: on a busy machine it takes longer in wall time, never past wall_ms.
    assert elapsed < WORKER.wall_ms / 1000 + 0.5


def test_cpu_loop_that_swallows_the_stop_is_still_stopped():
    body = "while True:\n    try:\n        while True:\n            pass\n    except BaseException:\n        pass"
    elapsed = timed_violation(load(module_text(body), WORKER), "cpu_ms")
    assert elapsed < WORKER.wall_ms / 1000 + 0.5


def test_a_limit_hit_after_the_logic_ran_carries_the_logics_result():
    body = "value = logic(*args, **kwargs)\nwhile True:\n    pass"
    result = ["own"]
    started = time.monotonic()
    with pytest.raises(PoetViolation) as caught:
        load(module_text(body), WORKER).call(constant(result), (), {})
    assert time.monotonic() - started < WORKER.wall_ms / 1000 + 0.5
    after = caught.value.after_logic  # a fallback can return this instead of running the logic again
    assert caught.value.limit == "cpu_ms" and isinstance(after, AfterLogic) and after.result is result
    assert after.reason == "violation:cpu_ms"
    with pytest.raises(PoetViolation) as caught:
        load(module_text("import time\ntime.sleep(60)"), WORKER).call(constant(result), (), {})
    assert not hasattr(caught.value, "after_logic")  # the logic never ran


def test_blocking_sleep_stopped_at_wall_ms():
    elapsed = timed_violation(load(module_text("import time\ntime.sleep(60)"), WORKER), "wall_ms")
    assert WORKER.wall_ms / 1000 - 0.05 < elapsed < WORKER.wall_ms / 1000 + 0.5


def test_memory_bomb_and_growth_stopped():
    assert timed_violation(load(module_text("x = 'a' * (10 ** 10)\nreturn len(x)"), WORKER), "memory_mb") < 1.0
    # Filling 128 MB costs CPU too (page faults): on a loaded machine that can pass WORKER's
    # 300 ms of CPU first, so this one has room to show the memory limit.
    roomy = Limits(wall_ms=3000, cpu_ms=2000, memory_mb=128, imports=IMPORTS)
    body = "chunks = []\nwhile True:\n    chunks.append(bytearray(16 * 1024 * 1024))"
    assert timed_violation(load(module_text(body), roomy), "memory_mb") < 2.5


def test_memory_within_limit_is_fine():
    loaded = load(module_text("return len(bytearray(64 * 1024 * 1024))"), WORKER)
    assert loaded.call(constant(1), (), {})[0] == 64 * 1024 * 1024


def test_worker_death_is_replaced():
    loaded = load(module_text(PASS_THROUGH), WORKER)
    assert loaded.call(constant(7), (), {})[0] == 7
    pool = get_backend("restricted").pool()
    deadline = time.monotonic() + 10
    while len(pool.idle) < pool.size and time.monotonic() < deadline:
        time.sleep(0.02)
    for worker in list(pool.idle):
        os.kill(worker.proc.pid, signal.SIGKILL)
        worker.proc.wait(timeout=5)  # dead for sure (a kill is asynchronous)
    # Dead idle workers are noticed when a request cannot be sent; nothing ran there,
    # so the call moves on to a fresh worker instead of falling back.
    assert [loaded.call(constant(7), (), {})[0] for _ in range(pool.size + 1)] == [7] * (pool.size + 1)
    assert all(worker.proc.poll() is None for worker in pool.idle)


def test_nothing_leaks_to_the_next_call():
    """State a violating call left behind (a huge list, a spinning timeout thread) is gone."""
    body = ("from poet_sandbox.timeouts import call_with_timeout\n"
            "def spin():\n    while True:\n        pass\n"
            "mode = args[0]\n"
            "if mode == 'thread':\n    call_with_timeout(spin, (), {}, 0.01)\n"
            "if mode == 'memory':\n    HOLD.append(bytearray(100 * 1024 * 1024))\n    HOLD.append(bytearray(100 * 1024 * 1024))\n"
            "return len(HOLD)")
    loaded = load(module_text(body, params="mode", prelude="HOLD = []"), WORKER)
    with pytest.raises(PoetViolation):
        loaded.call(identity, ("memory",), {})
    for _ in range(4):
        assert loaded.call(identity, ("none",), {})[0] == 0
    with pytest.raises((PhaseError, PoetViolation, TimeoutError)):
        loaded.call(identity, ("thread",), {})  # the timed-out code is the worker's own
    started = time.monotonic()
    for _ in range(4):
        assert loaded.call(identity, ("none",), {})[0] == 0
    assert time.monotonic() - started < 3.0  # includes waiting for a replacement worker


def test_closed_enhancement_refuses_calls():
    loaded = load(module_text(PASS_THROUGH), WORKER)
    loaded.close()
    with pytest.raises(PhaseError):
        loaded.call(constant(1), (), {})


def worker_pids() -> list[int]:
    """Our worker processes, found through /proc (the pool does not track busy ones)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                command = f.read()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == os.getpid() and b"harness/worker.py" in command:
            found.append(int(entry))
    return found


def _wchan(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/wchan") as f:
            return f.read()
    except OSError:
        return ""


def _sleeping(pid: int) -> bool:
    return "nanosleep" in _wchan(pid)


def test_worker_killed_mid_call_falls_back_and_is_replaced():
    loaded = load(module_text("import time\ntime.sleep(1.2)\nreturn 1"), WORKER)
    outcome = []

    def run():
        try:
            outcome.append(loaded.call(constant(1), (), {})[0])
        except PhaseError as error:
            outcome.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    # Kill only once a worker is inside the call's sleep: a fixed delay races a loaded machine
    # (a request that has not reached its worker yet is retried elsewhere, by design).
    deadline = time.monotonic() + 1.0
    busy = []
    while time.monotonic() < deadline and not busy:
        busy = [pid for pid in worker_pids() if _sleeping(pid)]
        time.sleep(0.01)
    for pid in busy or worker_pids():
        os.kill(pid, signal.SIGKILL)
    thread.join(5)
    assert len(outcome) == 1 and isinstance(outcome[0], PhaseError) and "died" in str(outcome[0])
    assert not isinstance(outcome[0], AfterLogic)  # the logic never ran
    fine = load(module_text(PASS_THROUGH), WORKER)
    assert fine.call(constant(5), (), {})[0] == 5


def test_worker_killed_after_the_logic_ran_returns_the_logics_result():
    loaded = load(module_text("value = logic(*args, **kwargs)\nimport time\ntime.sleep(1.2)\nreturn value"), WORKER)
    result = ["own"]
    pids = []

    def logic():
        pids.extend(worker_pids())
        return result

    thread_outcome = []

    def run():
        try:
            thread_outcome.append(loaded.call(logic, (), {})[0])
        except BaseException as error:  # noqa: B902 - checked below
            thread_outcome.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 1.0
    busy = []
    while time.monotonic() < deadline and not busy:
        busy = [pid for pid in worker_pids() if _sleeping(pid)]
        time.sleep(0.01)
    for pid in busy:
        os.kill(pid, signal.SIGKILL)
    thread.join(5)
    assert busy and len(thread_outcome) == 1
    error = thread_outcome[0]
    assert isinstance(error, AfterLogic) and error.result is result  # never run twice


def test_a_worker_killed_while_idle_is_passed_over():
    loaded = load(module_text(PASS_THROUGH), WORKER)
    assert loaded.call(constant(7), (), {})[0] == 7
    for pid in worker_pids():  # every idle worker dies (an OOM killer, an operator)
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 2
    while worker_pids() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert loaded.call(constant(7), (), {})[0] == 7  # nothing ran on the dead ones: a fresh worker answers
    assert load(module_text(PASS_THROUGH), WORKER).call(constant(8), (), {})[0] == 8


def test_more_concurrent_calls_than_workers():
    loaded = load(module_text("import time\ntime.sleep(0.05)\nreturn logic(*args, **kwargs)", params="x"), WORKER)
    results = {}
    threads_seen = {}

    def logic(x):
        threads_seen[x] = threading.get_ident()
        return x

    def run(i):
        results[i] = (loaded.call(logic, (i,), {})[0], threading.get_ident())

    threads = [threading.Thread(target=run, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert {i: r[0] for i, r in results.items()} == {i: i for i in range(6)}
    assert all(threads_seen[i] == results[i][1] for i in range(6))


# -- end to end: the built-in generator's code under the restricted backend -------------------

DRIFT = '''\
import statistics
from collections import Counter
from poet_runtime import poet

CALLS = []


@poet(domain="ml_monitoring", optimize_for="accuracy")
def detect_drift(current: list[float], reference: list[float], threshold: float = 0.5) -> dict:
    gap = abs(statistics.fmean(current) - statistics.fmean(reference))
    return {"drift_detected": gap > threshold, "score": gap}


@poet(domain="api_operations", retries=2)
def fetch(cart: list, item: str) -> list:
    CALLS.append(item)
    if len(CALLS) == 1:
        raise ConnectionError("flaky")
    cart.append(item)
    return cart


@poet()
def tally(words: list[str]) -> dict[str, int]:
    return Counter(words)


@poet(domain="api_operations")
def shout(x: int) -> int:
    print("shout", x)
    return x


ATTEMPTS = []


@poet(domain="api_operations", timeout=5.0)
async def lookup(key: str, seen: list) -> dict:
    ATTEMPTS.append(key)
    if len(ATTEMPTS) == 1:
        raise ConnectionResetError("flaky")
    seen.append(key)
    return {"status": "success", "key": key}
'''


@pytest.mark.parametrize("mode", ["worker", "in-process"])
def test_generated_code_runs_restricted_end_to_end(mode, poet_home, write_module, monkeypatch, tmp_path, capsys):
    """A policy trusting no generator: even the built-in version runs in the restricted backend."""
    import poet_runtime

    limits = "wall_ms = 2000\ncpu_ms = 1000\nmemory_mb = 256\n" if mode == "worker" else ""
    path = tmp_path / f"{mode}.toml"
    path.write_text(f'version = 1\n[defaults]\nbackend = "restricted"\n{limits}max_output_kb = 64\n'
                    'imports = ["statistics", "math", "time", "random"]\ntrust = []\n')
    monkeypatch.setenv("POET_POLICY", str(path))
    module = write_module(f"drift_restricted_{mode.replace('-', '_')}", DRIFT)
    assert module.detect_drift([1.0, 2.0], [1.0, 2.0]) == {"drift_detected": False, "score": 0.0}
    record = poet_runtime.last_execution()
    assert (record.backend, record.status, record.fell_back) == ("restricted", "ok", False), record
    cart = []
    assert module.fetch(cart, "pear") is cart and cart == ["pear"] and module.CALLS == ["pear", "pear"]
    record = poet_runtime.last_execution()
    assert (record.backend, record.fell_back) == ("restricted", False), record
    counts = module.tally(["a", "b", "a"])
    assert type(counts).__name__ == "Counter" and counts.most_common(1) == [("a", 2)]
    assert module.detect_drift.__poet__.loaded.observations()["calls"] >= 1  # Train's STATS
    capsys.readouterr()
    assert module.shout(3) == 3 and poet_runtime.last_execution().backend == "restricted"
    assert capsys.readouterr().out == "shout 3\n"  # printed once, by the logic itself
    seen = []
    assert asyncio.run(module.lookup("k", seen)) == {"status": "success", "key": "k"}
    record = poet_runtime.last_execution()
    assert (record.backend, record.fell_back) == ("restricted", False), record
    assert module.ATTEMPTS == ["k", "k"] and seen == ["k"]  # retried once, in the generated loop


@pytest.mark.parametrize("limits", MODES)
def test_the_builtins_generated_code_names_exist(limits):
    """A builtin missing in the sandbox would be a NameError the original never raises."""
    import builtins

    names = sorted(name for name in dir(builtins) if not name.startswith("_") and name not in (
        "copyright", "credits", "license", "print", "exit", "quit", "help", "input", "breakpoint", "open",
        "exec", "eval", "compile", "globals", "locals", "vars", "dir", "memoryview", "getattr", "hasattr",
        "setattr", "delattr", "type"))
    body = "return [" + ", ".join(f"{name!r} if {name} is {name} else 0" for name in names) + "]"
    assert load(module_text(body), limits).call(constant(1), (), {})[0] == names
    converted = load(module_text("return tuple(logic(*args, **kwargs))", params="x"), limits)
    assert converted.call(identity, ([1, 2],), {})[0] == (1, 2)


def test_a_logic_calling_other_enhanced_functions_does_not_wait_for_workers():
    """Each level holds a worker while its logic runs; nesting deeper than the pool must not
    wait for one to come free (it never would, before a timeout)."""
    pool = settle()
    levels = [load(module_text(PASS_THROUGH, params="n"), WORKER) for _ in range(pool.size + 3)]

    def logic(n):
        if n + 1 == len(levels):
            return [n]
        return [n] + levels[n + 1].call(logic, (n + 1,), {})[0]

    for _ in range(3):
        started = time.monotonic()
        assert levels[0].call(logic, (0,), {})[0] == list(range(len(levels)))
        assert time.monotonic() - started < 10.0
    deadline = time.monotonic() + 10
    while pool.count > pool.size and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pool.count == pool.size and pool.parked == 0  # the extras were retired


def test_concurrent_async_calls_do_not_queue_behind_logics_awaiting_io():
    loaded = load(module_text(ASYNC_PASS, params="x", is_async=True), WORKER, is_async=True)
    pool = settle()
    in_flight = [0, 0]  # now, most

    async def waits(x):
        in_flight[0] += 1
        in_flight[1] = max(in_flight)
        await asyncio.sleep(1.0)
        in_flight[0] -= 1
        return x

    async def main():
        results = await asyncio.gather(*(loaded.call_async(waits, (i,), {}) for i in range(6)))
        return [r[0] for r in results]

    assert asyncio.run(main()) == list(range(6))
    assert in_flight[1] > pool.size  # more logics awaited at once than there are workers


def test_the_worker_codec_writes_what_the_json_module_writes_and_reads_only_utf8():
    """The codec builds its C encoder once (speed); its lines must stay exactly the
    standard encoder's, and a line that is not UTF-8 is refused, not guessed at."""
    import json

    from poet_runtime.backends.restricted import harness_module

    codec = harness_module("worker_codec")
    reference = json.JSONEncoder(separators=(",", ":"))
    values = [0, -1, 2 ** 70, 1.5, float("nan"), float("inf"), -float("inf"), "", "plain", "é ü 漢字 🙂",
              "\ud800 lone", "quote \" backslash \\ newline \n", None, True, [1, [2, [3]]],
              {"t": "d", "v": {"nested": ["x", {"y": 1.25}]}}, {"op": "call", "args": [["d", 1]], "kwargs": {}}]
    for value in values:
        assert codec.dumps_value(value) == reference.encode(value).encode(), value
    assert codec.dumps({"ok": True}) == b'{"ok":true}\n'
    assert codec.loads(codec.dumps({"s": "\ud800 lone é"})) == {"s": "\ud800 lone é"}
    with pytest.raises(ValueError):
        codec.loads(b'{"s": "\xff\xfe"}\n')
    with pytest.raises(ValueError):
        codec.loads(b"[1, 2]\n")  # a protocol line is an object
