"""Closures and nested functions: @poet functions made inside factories and methods, and inner helpers."""
import collections

from poet_runtime import poet
from fidelity_kit import case

RUNS = collections.Counter()


def make_multiplier(factor: int):
    @poet
    def multiply(x: int) -> int:
        RUNS["multiply"] += 1
        return x * factor

    return multiply


def make_counter():
    count = 0

    @poet
    def tick(step: int = 1) -> int:
        nonlocal count
        RUNS["tick"] += 1
        count += step
        return count

    return tick


def make_collector(sink: list):
    @poet
    def collect(item) -> int:
        RUNS["collect"] += 1
        sink.append(item)
        return len(sink)

    return collect


@poet
def with_inner_helper(words: list[str]) -> list[str]:
    RUNS["with_inner_helper"] += 1

    def shout(word):
        return word.upper() + "!"

    return [shout(word) for word in words]


@poet
def returns_a_closure(base: int):
    RUNS["returns_a_closure"] += 1

    def add(x):
        return base + x

    return add


@poet
def lambda_inside(items: list[int], threshold: int) -> list[int]:
    RUNS["lambda_inside"] += 1
    return sorted(filter(lambda item: item > threshold, items), key=lambda item: -item)


@poet
def comprehension_scopes(n: int) -> dict:
    RUNS["comprehension_scopes"] += 1
    squares = {i: i * i for i in range(n)}
    if (total := sum(squares.values())) > 10:
        return {"total": total, "squares": squares}
    return {"total": total}


class Widget:
    def __init__(self, label):
        self.label = label

    def renderer(self, prefix):
        @poet
        def render(suffix: str) -> str:
            RUNS["render"] += 1
            return f"{prefix}{self.label}{suffix}"

        return render


def make_late_binding():
    functions = []
    for i in range(3):
        @poet
        def late(x: int) -> int:
            RUNS["late"] += 1
            return x + i

        functions.append(late)
    return functions


@case()
def closure_over_a_factory_argument(o):
    double, triple = make_multiplier(2), make_multiplier(3)
    return {"double": o.call(double, 5), "triple": o.call(triple, 5)}


@case()
def nonlocal_counter(o):
    tick = make_counter()
    o.call(tick)
    o.call(tick, 5)
    return {"third": o.call(tick)}


@case()
def closure_over_a_mutable_list(o):
    sink = []
    collect = make_collector(sink)
    o.call(collect, "a")
    return {"count": o.call(collect, "b"), "sink": sink}


@case()
def inner_helper_function(o):
    return {"result": o.call(with_inner_helper, ["hi", "yo"])}


@case()
def returned_closure_works(o):
    add = o.call(returns_a_closure, 10)
    return {"call": add(5), "name": add.__qualname__, "cell": add.__closure__[0].cell_contents}


@case()
def lambdas_and_sorting(o):
    return {"result": o.call(lambda_inside, [5, 1, 9, 3, 7], 4)}


@case()
def walrus_and_dict_comprehension(o):
    return {"small": o.call(comprehension_scopes, 3), "big": o.call(comprehension_scopes, 5)}


@case()
def closure_over_self_in_a_method(o):
    widget = Widget("W")
    render = widget.renderer("<")
    widget.label = "V"  # the closure sees the live object
    return {"result": o.call(render, ">")}


@case()
def late_binding_loop_variable(o):
    return {"results": [o.call(function, 10) for function in make_late_binding()]}
