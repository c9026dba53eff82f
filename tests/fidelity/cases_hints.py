"""Typing hints of every shape, called with values that match them AND values that do not.

By issue 15 a value that does not match its hint is reported, never converted (outside
what a domain declares), so the enhanced call must give exactly what the original gives:
``ordinal(1.0)`` is ``'1.0th'``, ``ordinal('03')`` is ``'03rd'``, ``1`` stays ``1`` for
``-> bool``, a tuple stays a tuple for ``list``.
"""
import collections
import datetime
import enum
import pathlib
from typing import (Annotated, Any, Callable, Dict, Iterable, List, Literal, Mapping, NewType, Optional,
                    Sequence, Tuple, TypedDict, TypeVar, Union)

from poet_runtime import poet
from fidelity_kit import case

RUNS = collections.Counter()
UserId = NewType("UserId", int)
T = TypeVar("T")


class Point(TypedDict):
    x: int
    y: int


class Level(enum.Enum):
    LOW = 1
    HIGH = 2


@poet
def ordinal(n: int) -> str:
    RUNS["ordinal"] += 1
    text = str(n)
    if text.endswith("1") and not text.endswith("11"):
        return text + "st"
    if text.endswith("2") and not text.endswith("12"):
        return text + "nd"
    if text.endswith("3") and not text.endswith("13"):
        return text + "rd"
    return text + "th"


@poet
def yes_no(flag: bool) -> str:
    RUNS["yes_no"] += 1
    return repr(flag) + (" yes" if flag else " no")


@poet
def total(values: list[int]) -> int:
    RUNS["total"] += 1
    count = 0
    for value in values:
        count += value
    return count


@poet
def kinds(values: list[int]) -> list[str]:
    RUNS["kinds"] += 1
    return [type(value).__name__ for value in values]


@poet
def keys_of(mapping: dict[str, int]) -> list:
    RUNS["keys_of"] += 1
    return [(key, type(key).__name__, value) for key, value in mapping.items()]


@poet
def optional_double(x: Optional[int] = None) -> Optional[int]:
    RUNS["optional_double"] += 1
    return None if x is None else x * 2


@poet
def union_describe(x: Union[int, str]) -> str:
    RUNS["union_describe"] += 1
    return f"{type(x).__name__}:{x!r}"


@poet
def pep604(x: int | None) -> str:
    RUNS["pep604"] += 1
    return repr(x)


@poet
def norm(point: Point) -> int:
    RUNS["norm"] += 1
    return abs(point["x"]) + abs(point["y"])


@poet
def point_keys(point: Point) -> list:
    RUNS["point_keys"] += 1
    return sorted(point)


@poet
def seq_len(items: Sequence[int]) -> tuple:
    RUNS["seq_len"] += 1
    return type(items).__name__, len(items), items[0]


@poet
def mapping_sum(prices: Mapping[str, float]) -> float:
    RUNS["mapping_sum"] += 1
    return sum(prices.values())


@poet
def as_int_result(x: float) -> int:
    RUNS["as_int_result"] += 1
    return x * 1.5


@poet
def as_bool_result(x: int) -> bool:
    RUNS["as_bool_result"] += 1
    return x % 2


@poet
def as_list_result(a: int, b: int) -> list:
    RUNS["as_list_result"] += 1
    return a, b


@poet
def as_str_result(x: int) -> str:
    RUNS["as_str_result"] += 1
    return None if x < 0 else str(x)


@poet
def as_float_result(x: int) -> float:
    RUNS["as_float_result"] += 1
    return x * 2


@poet
def tuple_hint(pair: tuple[int, str]) -> str:
    RUNS["tuple_hint"] += 1
    return f"{type(pair).__name__}{pair!r}"


@poet
def var_tuple(values: tuple[int, ...]) -> int:
    RUNS["var_tuple"] += 1
    return len(values)


@poet
def literal_mode(mode: Literal["fast", "safe"]) -> str:
    RUNS["literal_mode"] += 1
    return mode.upper()


@poet
def apply(fn: Callable[[int], int], x: int) -> int:
    RUNS["apply"] += 1
    return fn(x)


@poet
def anything(x: Any) -> Any:
    RUNS["anything"] += 1
    return x


@poet
def consume(values: Iterable[int]) -> int:
    RUNS["consume"] += 1
    return sum(values)


@poet
def halve(x: float) -> float:
    RUNS["halve"] += 1
    return x / 2 if isinstance(x, float) else x // 2


@poet
def shout(text: str) -> str:
    RUNS["shout"] += 1
    return text * 2


@poet
def byte_len(data: bytes) -> tuple:
    RUNS["byte_len"] += 1
    return type(data).__name__, len(data)


@poet
def unique(values: set[int]) -> tuple:
    RUNS["unique"] += 1
    return type(values).__name__, sorted(values)


@poet
def annotated(x: Annotated[int, "units"]) -> int:
    RUNS["annotated"] += 1
    return x + 1


@poet
def user_label(user: UserId) -> str:
    RUNS["user_label"] += 1
    return f"user-{user}"


@poet
def first(values: list[T]) -> T:
    RUNS["first"] += 1
    return values[0]


@poet
def level_name(level: Level) -> str:
    RUNS["level_name"] += 1
    return level.name if isinstance(level, Level) else f"raw {level!r}"


@poet
def weekday(day: datetime.date) -> int:
    RUNS["weekday"] += 1
    return day.weekday()


@poet
def joined_path(base: pathlib.Path, name: str) -> str:
    RUNS["joined_path"] += 1
    return str(base / name)


@poet
def legacy(values: List[int], table: Dict[str, int], pair: Tuple[int, int]) -> int:
    RUNS["legacy"] += 1
    return sum(values) + sum(table.values()) + sum(pair)


@poet
def implicit_optional(x: int = None) -> str:
    RUNS["implicit_optional"] += 1
    return "default" if x is None else str(x)


@poet
def wrong_default(x: int = "fallback") -> str:
    RUNS["wrong_default"] += 1
    return repr(x)


@poet
def star_hints(*values: int, **named: int) -> list:
    RUNS["star_hints"] += 1
    return [repr(v) for v in values] + [f"{k}={v!r}" for k, v in sorted(named.items())]


@poet
def string_annotation(x: "int") -> "str":
    RUNS["string_annotation"] += 1
    return repr(x)


@poet
def forward_reference(item: "Later") -> "Later":
    RUNS["forward_reference"] += 1
    return item


class Later:
    def __repr__(self):
        return "Later()"


@poet
def nested_generic(rows: list[dict[str, list[int]]]) -> int:
    RUNS["nested_generic"] += 1
    return sum(len(values) for row in rows for values in row.values())


@case(note="ordinalize-style: int hint with an int, a float, a string, a bool")
def int_hint_values(o):
    return {"int": o.call(ordinal, 1), "float": o.call(ordinal, 1.0), "text": o.call(ordinal, "03"),
            "bool": o.call(ordinal, True), "big": o.call(ordinal, 112)}


@case()
def bool_hint_values(o):
    return {"true": o.call(yes_no, True), "one": o.call(yes_no, 1), "zero": o.call(yes_no, 0),
            "text": o.call(yes_no, "false"), "none": o.call(yes_no, None)}


@case(note="list[int] with a list, a tuple, a range, floats")
def list_hint_values(o):
    return {"list": o.call(total, [1, 2]), "tuple": o.call(total, (1, 2)), "range": o.call(total, range(4)),
            "floats": o.call(total, [1.5, 2.5]), "kinds": o.call(kinds, [1, 2.0, "3", True])}


@case(note="a generator where list[int] is hinted must reach the logic unconsumed")
def generator_for_list_hint(o):
    return {"result": o.call(total, (i for i in range(5)))}


@case()
def list_hint_with_a_string(o):
    try:
        return {"result": o.call(total, "12")}
    except TypeError as error:
        return {"error": error}


@case(note="dict[str, int] with a dict, a Counter, int keys, float values")
def dict_hint_values(o):
    return {"dict": o.call(keys_of, {"a": 1}), "counter": o.call(keys_of, collections.Counter("aab")),
            "int_keys": o.call(keys_of, {1: 1}), "float_values": o.call(keys_of, {"a": 1.5})}


@case()
def optional_values(o):
    return {"missing": o.call(optional_double), "none": o.call(optional_double, None),
            "five": o.call(optional_double, 5), "text": o.call(optional_double, "5")}


@case()
def union_values(o):
    return {"int": o.call(union_describe, 3), "str": o.call(union_describe, "3"),
            "float": o.call(union_describe, 3.5), "bytes": o.call(union_describe, b"3")}


@case()
def pep604_values(o):
    return {"none": o.call(pep604, None), "int": o.call(pep604, 7), "str": o.call(pep604, "7")}


@case()
def typeddict_values(o):
    good = {"x": 3, "y": -4}
    return {"good": o.call(norm, good), "extra": o.call(point_keys, {"x": 1, "y": 2, "z": 3}),
            "floats": o.call(norm, {"x": 1.5, "y": 2})}


@case()
def typeddict_missing_key(o):
    try:
        o.call(norm, {"x": 1})
    except KeyError as error:
        return {"error": error}


@case()
def sequence_values(o):
    return {"list": o.call(seq_len, [5, 6]), "tuple": o.call(seq_len, (7,)), "range": o.call(seq_len, range(3, 9)),
            "str": o.call(seq_len, "ab")}


@case()
def mapping_values(o):
    return {"dict": o.call(mapping_sum, {"a": 1.5, "b": 2}),
            "ordered": o.call(mapping_sum, collections.OrderedDict(a=1))}


@case(note="-> int returning a float: not converted")
def int_return_gets_a_float(o):
    result = o.call(as_int_result, 2.0)
    return {"result": result, "type": type(result)}


@case(note="-> bool returning 1: not converted")
def bool_return_gets_an_int(o):
    result = o.call(as_bool_result, 3)
    return {"result": result, "type": type(result)}


@case(note="-> list returning a tuple: not converted")
def list_return_gets_a_tuple(o):
    result = o.call(as_list_result, 1, 2)
    return {"result": result, "type": type(result)}


@case()
def str_return_gets_none(o):
    return {"none": o.call(as_str_result, -1), "text": o.call(as_str_result, 4)}


@case(note="-> float returning an int: not converted")
def float_return_gets_an_int(o):
    result = o.call(as_float_result, 3)
    return {"result": result, "type": type(result)}


@case()
def tuple_hint_values(o):
    return {"tuple": o.call(tuple_hint, (1, "a")), "list": o.call(tuple_hint, [1, "a"]),
            "var": o.call(var_tuple, (1, 2, 3)), "var_list": o.call(var_tuple, [1])}


@case()
def literal_values(o):
    return {"ok": o.call(literal_mode, "fast"), "other": o.call(literal_mode, "slow")}


@case()
def callable_values(o):
    return {"lambda": o.call(apply, lambda x: x + 1, 1), "builtin": o.call(apply, abs, -3),
            "class": o.call(apply, str, 5)}


@case()
def any_passes_everything(o):
    thing = object()
    return {"same": o.call(anything, thing) is thing, "none": o.call(anything, None)}


@case(note="Iterable[int] with a generator and a set")
def iterable_values(o):
    return {"generator": o.call(consume, (i * i for i in range(4))), "set": o.call(consume, {1, 2}),
            "dict": o.call(consume, {3: "a", 4: "b"})}


@case(note="float hint with an int, a string, a bool")
def float_hint_values(o):
    return {"float": o.call(halve, 3.0), "int": o.call(halve, 3), "bool": o.call(halve, True)}


@case()
def float_hint_with_a_string(o):
    try:
        return {"result": o.call(halve, "3.0")}
    except TypeError as error:
        return {"error": error}


@case(note="str hint with an int: 5 * 2, not '55'")
def str_hint_values(o):
    return {"int": o.call(shout, 5), "list": o.call(shout, ["a"]), "str": o.call(shout, "ab")}


@case()
def bytes_hint_values(o):
    return {"bytes": o.call(byte_len, b"ab"), "bytearray": o.call(byte_len, bytearray(b"abc")),
            "memoryview": o.call(byte_len, memoryview(b"abcd"))}


@case()
def set_hint_values(o):
    return {"set": o.call(unique, {3, 1}), "frozenset": o.call(unique, frozenset({2})),
            "list": o.call(unique, [2, 2, 1])}


@case()
def annotated_and_newtype(o):
    return {"annotated": o.call(annotated, 1), "annotated_str": o.call(annotated, 1.5),
            "newtype": o.call(user_label, UserId(5)), "newtype_str": o.call(user_label, "abc")}


@case()
def typevar_generic(o):
    return {"int": o.call(first, [1]), "str": o.call(first, ["a"]), "tuple": o.call(first, ("t",))}


@case()
def enum_hint_values(o):
    return {"member": o.call(level_name, Level.HIGH), "raw": o.call(level_name, 2),
            "name": o.call(level_name, "HIGH")}


@case()
def date_hint_values(o):
    return {"date": o.call(weekday, datetime.date(2024, 5, 17)),
            "datetime": o.call(weekday, datetime.datetime(2024, 5, 18, 12))}


@case(note="a str where Path is hinted: the original fails on str / str, so must the enhanced")
def path_hint_with_a_string(o):
    good = o.call(joined_path, pathlib.PurePosixPath("/tmp"), "x")
    try:
        o.call(joined_path, "/tmp", "x")
    except TypeError as error:
        return {"good": good, "error": error}


@case()
def typing_module_aliases(o):
    return {"good": o.call(legacy, [1], {"a": 2}, (3, 4)), "loose": o.call(legacy, (1,), {"a": 2}, [3, 4])}


@case()
def implicit_optional_default(o):
    return {"missing": o.call(implicit_optional), "given": o.call(implicit_optional, 3),
            "none": o.call(implicit_optional, None)}


@case(note="a default that does not match its own hint is the logic's default")
def default_not_matching_hint(o):
    return {"missing": o.call(wrong_default), "given": o.call(wrong_default, 2)}


@case()
def star_args_hints(o):
    return {"result": o.call(star_hints, 1, "2", 3.0, a=1, b="2")}


@case()
def string_annotations(o):
    return {"int": o.call(string_annotation, 3), "str": o.call(string_annotation, "3")}


@case()
def forward_reference_annotation(o):
    later = Later()
    return {"same": o.call(forward_reference, later) is later, "other": o.call(forward_reference, 5)}


@case()
def nested_generic_values(o):
    return {"good": o.call(nested_generic, [{"a": [1, 2]}, {"b": []}]),
            "loose": o.call(nested_generic, ({"a": (1,)},))}
