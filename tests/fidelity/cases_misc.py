"""Odds and ends of ordinary code: environment, files, eval/exec, local imports, new globals, dunder methods."""
import collections
import os
import tempfile
import weakref

from poet_runtime import poet
from fidelity_kit import case

RUNS = collections.Counter()
LIMIT = 42
IDS = {}


@poet
def read_env(name: str) -> str:
    RUNS["read_env"] += 1
    return os.environ.get(name, "<unset>")


@poet
def read_file(path: str) -> str:
    RUNS["read_file"] += 1
    with open(path, encoding="utf-8") as f:
        return f.read().upper()


@poet
def write_file(path: str, text: str) -> int:
    RUNS["write_file"] += 1
    with open(path, "w", encoding="utf-8") as f:
        return f.write(text)


@poet
def evaluate(expression: str) -> object:
    RUNS["evaluate"] += 1
    return eval(expression)  # noqa: S307 - on the module's globals, as the original


@poet
def local_imports(values: list[float]) -> list:
    RUNS["local_imports"] += 1
    import json
    import statistics
    from collections import OrderedDict

    return [json.dumps(values), statistics.median(values), OrderedDict(a=1)]


@poet
def make_global(value: int) -> int:
    RUNS["make_global"] += 1
    global CREATED_LATER
    CREATED_LATER = value
    return value


@poet
def same_object(thing) -> list:
    RUNS["same_object"] += 1
    return [id(thing) == IDS["thing"], weakref.ref(thing)() is thing]


@poet
def builds_a_class(name: str):
    RUNS["builds_a_class"] += 1

    class Local:
        label = name

        def __repr__(self):
            return f"Local({self.label})"

    return Local()


class Temperature:
    @poet
    def __init__(self, celsius: float) -> None:
        RUNS["Temperature.__init__"] += 1
        self.celsius = celsius

    @poet
    def __repr__(self) -> str:
        RUNS["Temperature.__repr__"] += 1
        return f"Temperature({self.celsius:g})"

    @poet
    def __call__(self, delta: float) -> float:
        RUNS["Temperature.__call__"] += 1
        self.celsius += delta
        return self.celsius

    @poet
    def __eq__(self, other) -> bool:
        RUNS["Temperature.__eq__"] += 1
        return isinstance(other, Temperature) and other.celsius == self.celsius

    __hash__ = None


@poet
def gen_expression(n: int):
    RUNS["gen_expression"] += 1
    return (i * 2 for i in range(n))


@poet
def with_exec(code: str) -> dict:
    RUNS["with_exec"] += 1
    namespace = {"LIMIT": LIMIT}
    exec(code, namespace)  # noqa: S102
    return {key: value for key, value in namespace.items() if key != "__builtins__"}


@case(note="the process environment of the caller")
def environment_variable(o):
    os.environ["FIDELITY_FLAG"] = "on"
    try:
        return {"set": o.call(read_env, "FIDELITY_FLAG"), "unset": o.call(read_env, "FIDELITY_NOT_SET")}
    finally:
        del os.environ["FIDELITY_FLAG"]


@case(note="a file the caller wrote, read and written by the function")
def file_io(o):
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "note.txt")
        written = o.call(write_file, path, "hello")
        return {"written": written, "read": o.call(read_file, path)}


@case(note="eval sees the module's globals")
def eval_on_module_globals(o):
    return {"result": o.call(evaluate, "LIMIT + 1")}


@case()
def imports_inside_the_body(o):
    return {"result": o.call(local_imports, [3.0, 1.0, 2.0])}


@case(note="a global created by the function appears in its module")
def creates_a_module_global(o):
    globals().pop("CREATED_LATER", None)
    result = o.call(make_global, 5)
    return {"result": result, "global": globals().get("CREATED_LATER")}


@case()
def argument_identity_and_weakref(o):
    thing = Temperature.__new__(Temperature)
    IDS["thing"] = id(thing)
    return {"result": o.call(same_object, thing)}


@case()
def class_defined_in_the_body(o):
    result = o.call(builds_a_class, "x")
    return {"result": result, "type_name": type(result).__qualname__}


@case(note="@poet on __init__, __repr__, __call__, __eq__ used through the language")
def dunder_methods(o):
    made = o.call_as("cases_misc:Temperature.__init__", Temperature, 20.0)
    text = o.call_as("cases_misc:Temperature.__repr__", repr, made)
    after = o.call_as("cases_misc:Temperature.__call__", made, 1.5)
    equal = o.call_as("cases_misc:Temperature.__eq__", lambda: made == Temperature(21.5))
    return {"type": type(made), "text": text, "after": after, "equal": equal, "celsius": made.celsius}


@case(note="a function returning a generator expression is not a generator function")
def returns_a_generator_expression(o):
    import inspect

    result = o.call(gen_expression, 3)
    return {"isgeneratorfunction": inspect.isgeneratorfunction(gen_expression), "items": list(result)}


@case()
def exec_in_a_namespace(o):
    return {"result": o.call(with_exec, "y = LIMIT * 2")}
