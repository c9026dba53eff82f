"""Binding edge cases: sentinels, positional-only names in **kwargs, keyword-only without defaults, partials."""
import collections
import functools

from poet_runtime import poet
from fidelity_kit import case

RUNS = collections.Counter()
_MISSING = object()
DEFAULT_OPTIONS = {"depth": 1}


@poet
def sentinel_default(x=_MISSING) -> bool:
    RUNS["sentinel_default"] += 1
    return x is _MISSING


@poet
def positional_only_and_kwargs(x, /, **named) -> list:
    RUNS["positional_only_and_kwargs"] += 1
    return [x, sorted(named.items())]


@poet
def keyword_only_required(*, key: str, value: int) -> str:
    RUNS["keyword_only_required"] += 1
    return f"{key}={value}"


@poet
def options_default(name: str, options: dict = DEFAULT_OPTIONS) -> bool:
    RUNS["options_default"] += 1
    return options is DEFAULT_OPTIONS


@poet
def collect(**named) -> list:
    RUNS["collect"] += 1
    return sorted(named.items())


@poet
def everything(a, b=2, *rest, c, d=4, **more) -> list:
    RUNS["everything"] += 1
    return [a, b, rest, c, d, sorted(more.items())]


@poet
def undefined_string_hint(x: "NotDefinedAnywhere") -> str:  # noqa: F821 - an unresolvable hint
    RUNS["undefined_string_hint"] += 1
    return repr(x)


@poet
def power(base: int, exponent: int = 2) -> int:
    RUNS["power"] += 1
    return base ** exponent


@poet
def key_length(word: str) -> int:
    RUNS["key_length"] += 1
    return len(word)


@poet
def none_default_dict(mapping: dict = None) -> str:
    RUNS["none_default_dict"] += 1
    return "none" if mapping is None else f"{len(mapping)} keys"


@case(note="a sentinel default is the very object")
def sentinel_default_object(o):
    return {"missing": o.call(sentinel_default), "given": o.call(sentinel_default, None)}


@case(note="f(x, /, **kw) called as f(1, x=2): kw gets x")
def positional_only_name_in_kwargs(o):
    return {"result": o.call(positional_only_and_kwargs, 1, x=2, y=3)}


@case()
def required_keyword_only(o):
    good = o.call(keyword_only_required, key="k", value=1)
    try:
        o.call(keyword_only_required, key="k")
    except TypeError as error:
        return {"good": good, "error": error}


@case(note="a dict default is the module's own object")
def dict_default_identity(o):
    return {"missing": o.call(options_default, "n"), "given": o.call(options_default, "n", {"depth": 1})}


@case(note="**kwargs with names a wrapper may use itself")
def kwargs_with_internal_names(o):
    return {"result": o.call(collect, attempt=1, logic=2, args=3, kwargs=4, self=5, fn=6, function=7,
                             func=8, result=9, state=10, call=11)}


@case()
def full_signature_binding(o):
    return {"min": o.call(everything, 1, c=3), "full": o.call(everything, 1, 5, 6, 7, c=8, d=9, e=10),
            "unpacked": o.call(everything, *[1, 2, 3], **{"c": 4, "z": 5})}


@case(note="an annotation naming nothing: the call still works as the original")
def unresolvable_string_hint(o):
    return {"result": o.call(undefined_string_hint, 5)}


@case()
def partial_of_a_poet_function(o):
    cube = functools.partial(power, exponent=3)
    return {"result": o.call_as("cases_signatures:power", cube, 2)}


@case(note="a @poet function as sorted()'s key")
def poet_function_as_a_key(o):
    return {"result": o.call_as("cases_signatures:key_length", sorted, ["ccc", "a", "bb"], key=key_length)}


@case()
def none_default_for_a_dict_hint(o):
    return {"missing": o.call(none_default_dict), "none": o.call(none_default_dict, None),
            "given": o.call(none_default_dict, {"a": 1})}


@case()
def too_many_arguments(o):
    o.call(power, 2)
    try:
        o.call(power, 1, 2, 3)
    except TypeError as error:
        return {"error": error}


@case()
def unknown_keyword(o):
    o.call(power, 3)
    try:
        o.call(power, 1, power=2)
    except TypeError as error:
        return {"error": error}
