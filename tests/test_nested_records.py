"""Nested enhanced calls (issue 12, item 16): ``last_execution()`` after a call whose logic made
enhanced calls reports that outer call, the one the caller made; the inner ones are its
``children`` (in the order they finished, each with children of its own), the first
``records.CHILDREN_KEPT`` of them, the rest counted in ``children_dropped``.

Real enhanced functions (the built-in version, in-process), real threads and asyncio tasks.
"""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

import poet_runtime
from poet_runtime import poet, records


def name(record) -> str:
    return record.function.rsplit(":", 1)[-1].rsplit(".", 1)[-1]


def shape(record):
    """(function name, status, children's shapes): what a tree of records looks like."""
    return name(record), record.status, tuple(shape(child) for child in record.children)


@pytest.fixture
def family(poet_home):
    """leaf <- middle (two leaves) <- outer (middle, then a leaf), all enhanced."""

    @poet
    def leaf(x: int) -> int:
        return x + 1

    @poet
    def middle(x: int) -> int:
        return leaf(x) + leaf(x + 1)

    @poet
    def outer(x: int) -> int:
        return middle(x) + leaf(x)

    return leaf, middle, outer


def test_the_outer_call_is_reported_and_its_inner_calls_are_its_children_in_call_order(family):
    leaf, middle, outer = family
    for attempt in range(2):  # the first call (the versions are generated) and a warm one
        assert outer(1) == (2 + 3) + 2
        record = poet_runtime.last_execution()
        assert shape(record) == ("outer", "ok", (("middle", "ok", (("leaf", "ok", ()), ("leaf", "ok", ()))),
                                                 ("leaf", "ok", ()))), attempt
        assert record.children_dropped == 0
        ids = [record.execution_id] + [child.execution_id for child in record.children]
        assert len(set(ids)) == 3
    assert leaf(5) == 6  # a plain call afterwards: no children, the outer's are gone
    assert shape(poet_runtime.last_execution()) == ("leaf", "ok", ())


def test_inside_the_logic_last_execution_sees_the_latest_inner_call(poet_home):
    seen = []

    @poet
    def leaf(x: int) -> int:
        return x * 2

    @poet
    def outer(x: int) -> int:
        seen.append(poet_runtime.last_execution())  # nothing of this call has finished yet
        value = leaf(x)
        seen.append(poet_runtime.last_execution())
        return value

    assert leaf(0) == 0
    before = poet_runtime.last_execution()
    assert outer(3) == 6
    assert seen[0].execution_id == before.execution_id  # what was last before the call
    assert name(seen[1]) == "leaf" and seen[1].execution_id == \
        poet_runtime.last_execution().children[0].execution_id


def test_an_inner_call_that_raised_and_an_inner_fallback_are_children_too(poet_home):
    @poet
    def strict(x: int) -> int:
        if x < 0:
            raise ValueError("negative")
        return x

    @poet
    def loose(x: int) -> int:
        return x

    @poet
    def outer(x: int) -> int:
        try:
            strict(-1)
        except ValueError:
            pass
        return loose("not an int, so perceive falls back" if x else 0) and strict(x)

    strict(1), loose(1)
    outer(2)
    record = poet_runtime.last_execution()
    assert [(name(c), c.status) for c in record.children][0] == ("strict", "error")
    assert record.children[0].reason == "ValueError"
    statuses = [c.status for c in record.children]
    assert len(statuses) == 3 and statuses[0] == "error" and statuses[2] == "ok"

    @poet
    def failing_outer(x: int) -> int:
        loose(x)
        raise KeyError("the outer's own")

    with pytest.raises(KeyError):
        failing_outer(1)
    record = poet_runtime.last_execution()
    assert record.status == "error" and record.reason == "KeyError"
    assert [name(c) for c in record.children] == ["loose"]


FIB = """
from poet_runtime import poet


@poet
def fib(n: int) -> int:
    return n if n < 2 else fib(n - 1) + fib(n - 2)
"""


def test_recursion_through_the_functions_own_name_goes_straight_to_the_logic_no_children(poet_home, write_module):
    module = write_module("nested_fib", FIB)
    assert module.fib(10) == 55
    record = poet_runtime.last_execution()
    assert name(record) == "fib" and record.children == () and record.children_dropped == 0


def test_a_nested_call_in_another_thread_is_not_a_child_of_the_callers_call(poet_home):
    in_thread = []

    @poet
    def leaf(x: int) -> int:
        return x + 1

    @poet
    def outer(x: int) -> int:
        def work():
            leaf(x)
            in_thread.append(poet_runtime.last_execution())

        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
        return leaf(x)

    assert outer(1) == 2
    record = poet_runtime.last_execution()
    assert [name(c) for c in record.children] == ["leaf"]
    assert in_thread[0].children == () and in_thread[0].execution_id != record.children[0].execution_id


def test_async_each_task_reports_its_own_outer_call_with_its_own_children(poet_home):
    @poet
    async def leaf(x: int) -> int:
        await asyncio.sleep(0)
        return x + 1

    @poet
    async def outer(x: int) -> int:
        total = 0
        for i in range(x):
            total += await leaf(i)
        return total

    async def task(x):
        value = await outer(x)
        return value, poet_runtime.last_execution()

    async def main():
        await outer(1)  # generated once, before the tasks race
        return await asyncio.gather(*(task(x) for x in (2, 3, 4)))

    for (value, record), x in zip(asyncio.run(main()), (2, 3, 4)):
        assert value == sum(i + 1 for i in range(x))
        assert name(record) == "outer" and len(record.children) == x
        assert all(name(child) == "leaf" for child in record.children)


def test_an_enhanced_generators_inner_calls_stay_with_the_call_that_iterates_it(poet_home):
    @poet
    def leaf(x: int) -> int:
        return x + 1

    @poet
    def outer(n: int) -> int:
        return sum(leaf(value) for value in numbers(n))

    @poet
    def numbers(n: int):
        for i in range(n):
            yield leaf(i)

    assert outer(3) == (1 + 1) + (2 + 1) + (3 + 1)
    record = poet_runtime.last_execution()
    assert name(record) == "outer"
    names = [name(child) for child in record.children]
    assert names.count("leaf") == 6 and "numbers" in names
    # Used up by the caller itself: the generator's call is the one reported, not its body's last call.
    assert list(numbers(2)) == [1, 2]
    assert name(poet_runtime.last_execution()) == "numbers"
    assert list(numbers(0)) == [] and name(poet_runtime.last_execution()) == "numbers"


def test_a_long_loop_of_inner_calls_keeps_the_first_hundred_and_counts_the_rest(poet_home):
    @poet
    def leaf(x: int) -> int:
        return x

    @poet
    def outer(n: int) -> int:
        total = 0
        for i in range(n):
            total += leaf(i)
        return total

    calls = int(os.environ.get("POET_TEST_NESTED_CALLS", "100000"))  # 10**6 locally: same bound
    assert outer(calls) == calls * (calls - 1) // 2
    record = poet_runtime.last_execution()
    assert len(record.children) == records.CHILDREN_KEPT == 100
    assert record.children_dropped == calls - records.CHILDREN_KEPT
    assert [int(child.execution_id.rsplit("-", 1)[1]) for child in record.children] == sorted(
        int(child.execution_id.rsplit("-", 1)[1]) for child in record.children)  # the first ones, in order


def test_a_function_that_nests_only_after_many_quiet_calls_lists_its_children_from_the_next_call(poet_home):
    """After QUIET_CALLS calls without an inner call a function's calls are no longer marked (the
    plain path's cost); the first call that nests turns marking back on, the calls after it list
    their children."""
    nest = []

    @poet
    def leaf(x: int) -> int:
        return x

    @poet
    def outer(x: int) -> int:
        return leaf(x) if nest else x

    for i in range(records.QUIET_CALLS + 5):
        outer(i)
    assert poet_runtime.last_execution().children == ()
    nest.append(True)
    outer(1)  # unmarked: its inner call is not listed, but it is seen
    assert name(poet_runtime.last_execution()) == "outer"
    outer(2)
    assert [name(child) for child in poet_runtime.last_execution().children] == ["leaf"]
