"""Plain helpers, with and without hints; keyword-only, positional-only, *args and **kwargs."""
import collections
import math

from poet_runtime import poet
from fidelity_kit import case

RUNS = collections.Counter()


@poet
def add(a: int, b: int) -> int:
    RUNS["add"] += 1
    return a + b


@poet
def greet(name):
    RUNS["greet"] += 1
    return f"hello {name}"


@poet()
def scale(values: list[float], factor: float = 2.0) -> list[float]:
    RUNS["scale"] += 1
    return [value * factor for value in values]


@poet
def describe_point(x: float, y: float, *, unit: str = "m") -> str:
    RUNS["describe_point"] += 1
    return f"({x:g}, {y:g}) {unit}, r={math.hypot(x, y):.3f}"


@poet
def clamp(value, low=0, high=10, /):
    RUNS["clamp"] += 1
    return max(low, min(high, value))


@poet
def joined(*parts: str, sep: str = "-") -> str:
    RUNS["joined"] += 1
    return sep.join(parts)


@poet
def options(**settings: int) -> list:
    RUNS["options"] += 1
    return sorted(settings.items())


@poet
def nothing(x: int) -> None:
    RUNS["nothing"] += 1


@poet
def maybe_none(flag):
    RUNS["maybe_none"] += 1
    if flag:
        return None
    return 0


@poet
def stats(numbers: list[int]) -> tuple:
    RUNS["stats"] += 1
    return min(numbers), max(numbers), sum(numbers) / len(numbers)


@poet
def float_sum(values: list[float]) -> float:
    RUNS["float_sum"] += 1
    return sum(values)


@poet
def no_arguments() -> str:
    RUNS["no_arguments"] += 1
    return "constant"


@case()
def add_ints(o):
    return {"result": o.call(add, 1, 2)}


@case()
def greet_untyped(o):
    return {"result": o.call(greet, "ann"), "other": o.call(greet, 42)}


@case()
def scale_with_and_without_default(o):
    return {"default": o.call(scale, [1.0, 2.5]), "given": o.call(scale, [1.0], factor=3.0)}


@case()
def keyword_only(o):
    return {"result": o.call(describe_point, 3.0, 4.0, unit="km"), "default": o.call(describe_point, 1, 1)}


@case()
def positional_only_defaults(o):
    return {"one": o.call(clamp, 42), "three": o.call(clamp, -5, -2, 2)}


@case()
def star_args(o):
    return {"parts": o.call(joined, "a", "b", "c"), "sep": o.call(joined, "x", sep="+"), "none": o.call(joined)}


@case()
def star_kwargs(o):
    return {"result": o.call(options, b=2, a=1)}


@case()
def returns_none(o):
    return {"result": o.call(nothing, 3), "maybe": o.call(maybe_none, True), "zero": o.call(maybe_none, False)}


@case()
def tuple_of_stats(o):
    return {"result": o.call(stats, [3, 1, 2])}


@case(note="sum() of floats: the exact bits of the host's CPython")
def float_sum_exact(o):
    values = [0.1] * 10 + [1e16, 1.0, -1e16]
    return {"result": o.call(float_sum, values), "hex": float.hex(o.call(float_sum, values))}


@case()
def no_arguments_at_all(o):
    return {"result": o.call(no_arguments)}


@case()
def wrong_argument_count_raises_typeerror(o):
    o.call(add, 0, 0)
    try:
        o.call(add, 1)
    except TypeError as error:
        return {"error": error}
