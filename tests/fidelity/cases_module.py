"""Functions reading their module's constants, live globals, helpers, registry, imports; calling each other."""
import collections
import math as m
from os import path as os_path

from poet_runtime import poet
from fidelity_kit import case

RUNS = collections.Counter()
THRESHOLD = 0.5
RATE = 1
CONFIG = {"unit": "kg", "precision": 2}
REGISTRY = {"alpha": object(), "beta": [1, 2]}
_PRIVATE_TABLE = ("zero", "one", "two")
square = lambda x: x * x  # noqa: E731


def _normalize(text: str) -> str:
    return " ".join(text.split()).lower()


class Limits:
    MAX = 3


@poet
def above_threshold(values: list[float]) -> list[bool]:
    RUNS["above_threshold"] += 1
    return [value > THRESHOLD for value in values]


@poet
def apply_rate(amount: int) -> int:
    RUNS["apply_rate"] += 1
    return amount * RATE


@poet
def formatted(weight: float) -> str:
    RUNS["formatted"] += 1
    return f"{weight:.{CONFIG['precision']}f} {CONFIG['unit']}"


@poet
def clean(text: str) -> str:
    RUNS["clean"] += 1
    return _normalize(text)


@poet
def registry() -> dict:
    RUNS["registry"] += 1
    return REGISTRY


@poet
def lookup(name: str):
    RUNS["lookup"] += 1
    return REGISTRY[name]


@poet
def register(name: str, value) -> int:
    RUNS["register"] += 1
    REGISTRY[name] = value
    return len(REGISTRY)


@poet
def spoken(n: int) -> str:
    RUNS["spoken"] += 1
    return _PRIVATE_TABLE[n]


@poet
def hypotenuse(a: float, b: float) -> float:
    RUNS["hypotenuse"] += 1
    return m.sqrt(square(a) + square(b))


@poet
def extension(filename: str) -> str:
    RUNS["extension"] += 1
    return os_path.splitext(filename)[1]


@poet
def capped(n: int) -> int:
    RUNS["capped"] += 1
    return min(n, Limits.MAX)


@poet
def inner_step(x: int) -> int:
    RUNS["inner_step"] += 1
    return x + 1


@poet
def outer_step(x: int) -> int:
    RUNS["outer_step"] += 1
    return inner_step(x) * 2


@poet
def module_facts() -> dict:
    RUNS["module_facts"] += 1
    return {"name": __name__, "file": os_path.basename(__file__), "has_runs": "RUNS" in globals()}


@case()
def reads_a_module_constant(o):
    return {"result": o.call(above_threshold, [0.2, 0.7])}


@case(note="globals are live: a value changed after import is seen")
def reads_a_live_global(o):
    global RATE
    RATE = 1
    first = o.call(apply_rate, 10)
    RATE = 7
    second = o.call(apply_rate, 10)
    RATE = 1
    return {"first": first, "second": second}


@case()
def reads_a_module_dict(o):
    CONFIG["unit"] = "lb"
    result = o.call(formatted, 2.0)
    CONFIG["unit"] = "kg"
    return {"result": result}


@case()
def calls_a_private_helper(o):
    return {"result": o.call(clean, "  Hello   World ")}


@case(note="result is REGISTRY")
def returns_the_module_registry(o):
    result = o.call(registry)
    return {"is_registry": result is REGISTRY, "type": type(result), "keys": sorted(result)}


@case()
def returns_a_registered_object(o):
    return {"is_alpha": o.call(lookup, "alpha") is REGISTRY["alpha"], "beta_is": o.call(lookup, "beta") is REGISTRY["beta"]}


@case()
def writes_to_the_registry(o):
    REGISTRY.pop("gamma", None)
    size = o.call(register, "gamma", {"g": 1})
    value = REGISTRY.pop("gamma", None)
    return {"size": size, "value": value}


@case()
def underscore_tuple_constant(o):
    return {"result": o.call(spoken, 2)}


@case()
def aliased_imports_and_module_lambda(o):
    return {"hyp": o.call(hypotenuse, 3.0, 4.0), "ext": o.call(extension, "a/b.tar.gz")}


@case()
def class_constant(o):
    return {"result": o.call(capped, 10)}


@case(note="a @poet function calling another @poet function of its module")
def poet_calls_poet(o):
    return {"result": o.call(outer_step, 3)}


@case()
def dunder_name_and_file(o):
    return {"result": o.call(module_facts)}
