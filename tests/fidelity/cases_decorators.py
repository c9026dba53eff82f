"""Decorators applied below @poet: the function @poet receives is the decorated one."""
import collections
import functools

from poet_runtime import poet
from fidelity_kit import case

RUNS = collections.Counter()
TRACE = []


def traced(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        TRACE.append(("enter", fn.__name__, args))
        result = fn(*args, **kwargs)
        TRACE.append(("exit", fn.__name__, result))
        return result

    return wrapper


def doubled(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return 2 * fn(*args, **kwargs)

    return wrapper


def plus_one_unwrapped(fn):
    def inner(*args, **kwargs):
        return fn(*args, **kwargs) + 1

    return inner


MEMO = {}


def memoized(fn):
    @functools.wraps(fn)
    def wrapper(n):
        if n not in MEMO:
            MEMO[n] = fn(n)
        return MEMO[n]

    return wrapper


def checked_positive(fn):
    @functools.wraps(fn)
    def wrapper(x):
        if x < 0:
            raise ValueError(f"{fn.__name__} needs x >= 0, got {x}")
        return fn(x)

    return wrapper


@poet
@traced
def add(a: int, b: int) -> int:
    RUNS["add"] += 1
    return a + b


@poet
@doubled
def area(w: int, h: int) -> int:
    RUNS["area"] += 1
    return w * h


@poet
@plus_one_unwrapped
def base(x: int) -> int:
    RUNS["base"] += 1
    return x


@poet
@memoized
def slow_square(n: int) -> int:
    RUNS["slow_square"] += 1
    return n * n


@poet
@checked_positive
def root(x: float) -> float:
    RUNS["root"] += 1
    return x ** 0.5


@poet
@doubled
@traced
def stacked(x: int) -> int:
    RUNS["stacked"] += 1
    return x + 1


@case(note="a functools.wraps-style decorator below @poet runs")
def wraps_decorator_below_poet(o):
    TRACE.clear()
    return {"result": o.call(add, 1, 2), "trace": list(TRACE)}


@case(note="a behaviour-changing decorator below @poet")
def behaviour_changing_decorator(o):
    return {"result": o.call(area, 2, 3)}


@case(note="a decorator without functools.wraps: the record may name the def or the wrapper")
def unwrapped_decorator(o):
    return {"result": o.call_as(("cases_decorators:base", "cases_decorators:plus_one_unwrapped.<locals>.inner"),
                                base, 41)}


@case(note="a memoizing decorator below @poet: the second call is a cache hit (the body runs once)")
def memoizing_decorator_below_poet(o):
    MEMO.clear()
    first = o.call(slow_square, 9)
    second = o.call(slow_square, 9)
    return {"first": first, "second": second, "memo": dict(MEMO)}


@case()
def validating_decorator_raises(o):
    good = o.call(root, 9.0)
    try:
        o.call(root, -1.0)
    except ValueError as error:
        return {"good": good, "error": error}


@case()
def stacked_decorators(o):
    TRACE.clear()
    return {"result": o.call(stacked, 4), "trace": list(TRACE)}
