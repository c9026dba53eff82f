"""Result types: the caller receives the very object the logic returned, of its own type."""
import collections
import dataclasses
import datetime
import decimal
import enum
import fractions
import types
from typing import NamedTuple

from poet_runtime import poet
from fidelity_kit import case

RUNS = collections.Counter()
Pair = collections.namedtuple("Pair", "left right")
SHARED = ["shared"]


class Color(enum.IntEnum):
    RED = 1
    GREEN = 2


class Mode(enum.Enum):
    FAST = "fast"
    SAFE = "safe"


class Span(NamedTuple):
    start: int
    end: int


@dataclasses.dataclass
class Order:
    item: str
    quantity: int = 1
    tags: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Frozen:
    key: str


class MyDict(dict):
    pass


@poet
def word_counts(text: str) -> dict[str, int]:
    RUNS["word_counts"] += 1
    return collections.Counter(text.split())


@poet
def grouped(pairs: list[tuple[str, int]]) -> dict:
    RUNS["grouped"] += 1
    groups = collections.defaultdict(list)
    for key, value in pairs:
        groups[key].append(value)
    return groups


@poet
def ordered(keys: list[str]) -> dict:
    RUNS["ordered"] += 1
    return collections.OrderedDict((key, len(key)) for key in keys)


@poet
def pair(a: int, b: int) -> tuple:
    RUNS["pair"] += 1
    return Pair(a, b)


@poet
def span(a: int, b: int) -> Span:
    RUNS["span"] += 1
    return Span(a, b)


@poet
def as_tuple(values: list[int]) -> list[int]:
    RUNS["as_tuple"] += 1
    return tuple(values)


@poet
def color(n: int) -> int:
    RUNS["color"] += 1
    return Color(n)


@poet
def mode(name: str) -> Mode:
    RUNS["mode"] += 1
    return Mode(name)


@poet
def order(item: str, quantity: int) -> Order:
    RUNS["order"] += 1
    return Order(item, quantity)


@poet
def frozen(key: str) -> Frozen:
    RUNS["frozen"] += 1
    return Frozen(key)


@poet
def shared_list() -> list[str]:
    RUNS["shared_list"] += 1
    return SHARED


@poet
def my_dict() -> dict:
    RUNS["my_dict"] += 1
    return MyDict(a=1)


@poet
def money(amount: str) -> decimal.Decimal:
    RUNS["money"] += 1
    return decimal.Decimal(amount) * 3


@poet
def ratio(a: int, b: int) -> fractions.Fraction:
    RUNS["ratio"] += 1
    return fractions.Fraction(a, b)


@poet
def deadline(days: int) -> datetime.date:
    RUNS["deadline"] += 1
    return datetime.date(2024, 1, 1) + datetime.timedelta(days=days)


@poet
def namespace(x: int) -> types.SimpleNamespace:
    RUNS["namespace"] += 1
    return types.SimpleNamespace(x=x, doubled=2 * x)


@poet
def frozen_set(values: list[int]) -> frozenset:
    RUNS["frozen_set"] += 1
    return frozenset(values)


@poet
def complex_number(re: float, im: float) -> complex:
    RUNS["complex_number"] += 1
    return complex(re, im)


@poet
def a_range(n: int) -> range:
    RUNS["a_range"] += 1
    return range(n)


@poet
def a_bytes(text: str) -> bytes:
    RUNS["a_bytes"] += 1
    return text.encode()


@case(note="Counter is a dict[str, int]: never rebuilt; .most_common() works")
def counter_returned(o):
    result = o.call(word_counts, "a b a c a b")
    return {"type": type(result), "most_common": result.most_common(2), "result": result}


@case()
def defaultdict_returned(o):
    result = o.call(grouped, [("x", 1), ("y", 2), ("x", 3)])
    result["new"].append(0)  # still a defaultdict
    return {"type": type(result), "result": result}


@case()
def ordereddict_returned(o):
    result = o.call(ordered, ["bb", "a", "ccc"])
    result.move_to_end("bb")
    return {"type": type(result), "result": result}


@case()
def namedtuple_returned(o):
    result = o.call(pair, 1, 2)
    return {"type": type(result), "left": result.left, "result": result}


@case()
def typed_namedtuple_returned(o):
    result = o.call(span, 3, 9)
    return {"type": type(result), "end": result.end}


@case(note="a tuple returned where list[int] is hinted stays a tuple")
def tuple_for_list_hint(o):
    result = o.call(as_tuple, [1, 2])
    return {"type": type(result), "result": result}


@case(note="an IntEnum is an int")
def intenum_returned(o):
    result = o.call(color, 2)
    return {"type": type(result), "name": result.name, "result": result}


@case()
def enum_returned(o):
    result = o.call(mode, "safe")
    return {"is_member": result is Mode.SAFE}


@case()
def dataclass_returned(o):
    result = o.call(order, "tea", 2)
    result.tags.append("hot")
    return {"type": type(result), "result": result}


@case()
def frozen_dataclass_returned(o):
    result = o.call(frozen, "k")
    return {"result": result, "hash_equal": hash(result) == hash(Frozen("k"))}


@case()
def module_list_identity(o):
    return {"is_shared": o.call(shared_list) is SHARED}


@case()
def dict_subclass_returned(o):
    result = o.call(my_dict)
    return {"type": type(result), "result": result}


@case()
def decimal_returned(o):
    return {"result": o.call(money, "0.10")}


@case()
def fraction_returned(o):
    return {"result": o.call(ratio, 2, 6)}


@case()
def date_returned(o):
    return {"result": o.call(deadline, 45)}


@case()
def simple_namespace_returned(o):
    return {"result": o.call(namespace, 4)}


@case()
def frozenset_returned(o):
    return {"result": o.call(frozen_set, [3, 1, 3])}


@case()
def complex_returned(o):
    return {"result": o.call(complex_number, 1.5, -2.0)}


@case()
def range_returned(o):
    return {"result": o.call(a_range, 4)}


@case()
def bytes_returned(o):
    return {"result": o.call(a_bytes, "hé")}
