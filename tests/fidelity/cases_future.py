"""A module with ``from __future__ import annotations``: every hint is a string until evaluated."""
from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Optional

from poet_runtime import poet
from fidelity_kit import case

if TYPE_CHECKING:
    from decimal import Decimal  # only for type checkers: not importable at run time here

RUNS = collections.Counter()


class Node:
    def __init__(self, value, children=()):
        self.value = value
        self.children = list(children)

    @poet
    def total(self) -> int:
        RUNS["Node.total"] += 1
        return self.value + sum(child.value for child in self.children)

    @poet
    def adopt(self, other: Node) -> Node:
        RUNS["Node.adopt"] += 1
        self.children.append(other)
        return self


@poet
def scaled(values: list[float], factor: float = 2) -> list[float]:
    RUNS["scaled"] += 1
    return [v * factor for v in values]


@poet
def maybe(x: Optional[int]) -> str:
    RUNS["maybe"] += 1
    return repr(x)


@poet
def price(amount: Decimal) -> str:
    RUNS["price"] += 1
    return f"{amount}!"


@poet
def pep604_future(x: int | str | None) -> str:
    RUNS["pep604_future"] += 1
    return type(x).__name__


@poet
def counts(words: list[str]) -> collections.Counter[str]:
    RUNS["counts"] += 1
    return collections.Counter(words)


@case()
def future_method_with_self_type(o):
    root = Node(1)
    result = o.call(root.adopt, Node(2))
    return {"is_root": result is root, "total": o.call(root.total)}


@case()
def future_list_hint_mismatch(o):
    return {"ints": o.call(scaled, [1, 2]), "tuple": o.call(scaled, (1.5,)), "factor": o.call(scaled, [1.0], True)}


@case()
def future_optional(o):
    return {"none": o.call(maybe, None), "str": o.call(maybe, "s"), "int": o.call(maybe, 1)}


@case(note="a hint naming something imported only under TYPE_CHECKING")
def future_unresolvable_hint(o):
    return {"str": o.call(price, "3"), "int": o.call(price, 3)}


@case()
def future_pep604(o):
    return {"none": o.call(pep604_future, None), "float": o.call(pep604_future, 1.5)}


@case()
def future_counter_return(o):
    result = o.call(counts, ["a", "b", "a"])
    return {"type": type(result), "most": result.most_common(1)}
