"""Names a generator may define, used by the user: parameters and globals; multi-line strings; odd names."""
import collections
import os
import sys
import textwrap

from poet_runtime import poet
from fidelity_kit import case

RUNS = collections.Counter()
PARAMS = {"user": "params"}
DOMAIN = "the user's domain"
FUNCTION = "the user's FUNCTION"
OBJECTIVE = "user objective"
PARAMETERS = ["user", "parameters"]
UNSET = "user unset"
validate = "user validate"  # noqa: N816


def logic(x):
    return f"user logic({x})"


@poet
def retrying(attempt: int, result: str = "none") -> str:
    RUNS["retrying"] += 1
    return f"attempt={attempt} result={result}"


@poet
def checks(validate: bool, logic: str, state: dict) -> list:
    RUNS["checks"] += 1
    return [validate, logic, sorted(state.items())]


@poet
def starred_names(args: tuple, kwargs: dict, time: float = 1.5) -> list:
    RUNS["starred_names"] += 1
    return [args, sorted(kwargs.items()), time]


@poet
def generator_names(PARAMS: dict, DOMAIN: str, FUNCTION: str = "given") -> list:  # noqa: N803
    RUNS["generator_names"] += 1
    return [sorted(PARAMS.items()), DOMAIN, FUNCTION]


@poet
def phase_names(perceive: int, enforce: int, operate_prime: int, configure: int = 0, train: int = 0) -> int:
    RUNS["phase_names"] += 1
    return perceive + enforce + operate_prime + configure + train


@poet
def more_names(call: str, metrics: list, params: dict, notes: str = "n", self: str = "s", cls: str = "c") -> str:
    RUNS["more_names"] += 1
    return "|".join([call, repr(metrics), repr(params), notes, self, cls])


@poet
def reads_user_globals() -> list:
    RUNS["reads_user_globals"] += 1
    return [PARAMS, DOMAIN, FUNCTION, OBJECTIVE, PARAMETERS, UNSET, validate, logic(1)]


@poet
def unset_parameter(UNSET: str = "mine") -> str:  # noqa: N803
    RUNS["unset_parameter"] += 1
    return UNSET


@poet
def report(name: str) -> str:
    RUNS["report"] += 1
    text = """Report for {name}
    indented line
        more indented
last line"""
    return text.format(name=name)


@poet
def dedented(name: str) -> str:
    RUNS["dedented"] += 1
    return textwrap.dedent(f"""\
        Dear {name},
            thanks.
        Bye
    """)


@poet
def continued(a: int, b: int) -> str:
    RUNS["continued"] += 1
    text = "first " \
        "second"
    total = a + \
        b
    tail = '''tri
ple'''
    return f"{text} {total} {tail}"


@poet
def _private_helper(x: int) -> int:
    RUNS["_private_helper"] += 1
    return -x


@poet
def __dunder_like(x: int) -> int:
    RUNS["__dunder_like"] += 1
    return x * 100


@poet
def größe(länge: int, breite: int = 2) -> int:
    RUNS["größe"] += 1
    return länge * breite


@poet
def _underscore_params(_x: int, __y: int = 1, _: int = 0) -> int:
    RUNS["_underscore_params"] += 1
    return _x + __y + _


@poet
def frame_facts() -> list:
    RUNS["frame_facts"] += 1
    frame = sys._getframe()
    return [__name__, os.path.basename(__file__), frame.f_code.co_name, os.path.basename(frame.f_code.co_filename),
            __spec__.name if __spec__ else None]


@poet
def uses_locals(a: int, b: int = 2) -> list:
    RUNS["uses_locals"] += 1
    c = a + b
    return sorted(locals())


@poet
def uses_globals_builtin() -> list:
    RUNS["uses_globals_builtin"] += 1
    g = globals()
    return [g["__name__"], "PARAMS" in g, g["DOMAIN"], type(g["__builtins__"]).__name__]


@poet
def shadows_builtins(list: str, len: int = 3, type: str = "t") -> str:  # noqa: A002
    RUNS["shadows_builtins"] += 1
    return list * len + type


@poet
def keyword_only_names(*, attempt: int, result: int = 0) -> int:
    RUNS["keyword_only_names"] += 1
    return attempt * 10 + result


@case(note="a parameter named attempt is the caller's, not a retry counter")
def attempt_and_result_parameters(o):
    return {"positional": o.call(retrying, 7), "keyword": o.call(retrying, attempt=3, result="r")}


@case()
def validate_logic_state_parameters(o):
    return {"result": o.call(checks, False, "mine", {"s": 1})}


@case()
def args_kwargs_time_parameters(o):
    return {"result": o.call(starred_names, (1, 2), {"k": 3}), "time": o.call(starred_names, (), {}, time=9)}


@case()
def generator_constant_names_as_parameters(o):
    return {"result": o.call(generator_names, {"p": 1}, "dom"), "full": o.call(generator_names, {}, "d", "f")}


@case()
def phase_function_names_as_parameters(o):
    return {"result": o.call(phase_names, 1, 2, 3, train=4)}


@case()
def other_generator_names_as_parameters(o):
    return {"result": o.call(more_names, "c", [1], {"p": 2}, self="me")}


@case(note="user globals PARAMS, DOMAIN, FUNCTION, ... are the user's")
def user_globals_with_generator_names(o):
    return {"result": o.call(reads_user_globals)}


@case()
def unset_named_parameter(o):
    return {"missing": o.call(unset_parameter), "given": o.call(unset_parameter, "yours")}


@case(note="multi-line string literals keep their indentation")
def multiline_string_literal(o):
    return {"result": o.call(report, "Q3")}


@case()
def dedented_fstring(o):
    return {"result": o.call(dedented, "Ann")}


@case()
def backslash_continuations(o):
    return {"result": o.call(continued, 1, 2)}


@case()
def underscore_function_name(o):
    return {"result": o.call(_private_helper, 3)}


@case()
def double_underscore_function_name(o):
    return {"result": o.call(__dunder_like, 2)}


@case()
def unicode_identifiers(o):
    return {"result": o.call(größe, 3), "kw": o.call(größe, länge=2, breite=5)}


@case()
def underscore_parameters(o):
    return {"result": o.call(_underscore_params, 1, 2, 3), "defaults": o.call(_underscore_params, 5)}


@case(note="__name__, __file__ and the frame are the module's own")
def module_identity_inside(o):
    return {"result": o.call(frame_facts)}


@case()
def locals_inside(o):
    return {"result": o.call(uses_locals, 1)}


@case()
def globals_inside(o):
    return {"result": o.call(uses_globals_builtin)}


@case()
def parameters_shadowing_builtins(o):
    return {"result": o.call(shadows_builtins, "ab"), "kw": o.call(shadows_builtins, list="x", len=1, type="!")}


@case()
def keyword_only_generator_names(o):
    return {"result": o.call(keyword_only_names, attempt=2), "both": o.call(keyword_only_names, attempt=1, result=5)}
