"""Recursion through the function's own name: inner calls go straight to the logic, one record per outer call."""
import collections

from poet_runtime import poet
from fidelity_kit import case

RUNS = collections.Counter()
MEMO = {}


@poet
def factorial(n: int) -> int:
    RUNS["factorial"] += 1
    return 1 if n <= 1 else n * factorial(n - 1)


@poet
def sum_to(n: int) -> int:
    RUNS["sum_to"] += 1
    return 0 if n == 0 else n + sum_to(n - 1)


@poet
def is_even(n: int) -> bool:
    RUNS["is_even"] += 1
    return True if n == 0 else is_odd(n - 1)


@poet
def is_odd(n: int) -> bool:
    RUNS["is_odd"] += 1
    return False if n == 0 else is_even(n - 1)


@poet
def fib(n: int) -> int:
    RUNS["fib"] += 1
    if n in MEMO:
        return MEMO[n]
    value = n if n < 2 else fib(n - 1) + fib(n - 2)
    MEMO[n] = value
    return value


@poet
def flatten(nested: list) -> list:
    RUNS["flatten"] += 1
    out = []
    for item in nested:
        out.extend(flatten(item) if isinstance(item, list) else [item])
    return out


@poet
def countdown_fails(n: int) -> int:
    RUNS["countdown_fails"] += 1
    if n == 0:
        raise LookupError("bottom reached")
    return countdown_fails(n - 1)


class Tree:
    def __init__(self, *children):
        self.children = children

    @poet
    def depth(self) -> int:
        RUNS["Tree.depth"] += 1
        return 1 + max((child.depth() for child in self.children), default=0)


@case(one_record=True, note="factorial(10): one last_execution() record per outer call")
def factorial_ten(o):
    return {"first": o.call(factorial, 10), "second": o.call(factorial, 10)}


@case(one_record=True, note="a depth of 200 the original reaches must not raise RecursionError")
def recursion_depth_200(o):
    return {"first": o.call(sum_to, 200), "second": o.call(sum_to, 200)}


@case(one_record=True, note="a depth of 400: at most one extra frame per level fits in the default limit")
def recursion_depth_400(o):
    return {"first": o.call(sum_to, 400), "second": o.call(sum_to, 400)}


@case(note="mutual recursion between two @poet functions")
def mutual_recursion(o):
    return {"even": o.call(is_even, 30), "odd": o.call(is_odd, 7)}


@case(one_record=True)
def memoized_recursion_with_a_global_cache(o):
    MEMO.clear()
    first = o.call(fib, 30)
    second = o.call(fib, 31)
    return {"first": first, "second": second, "memo_size": len(MEMO)}


@case(one_record=True)
def recursive_flatten(o):
    return {"first": o.call(flatten, [1, [2, [3, [4]]], 5]), "second": o.call(flatten, [[[]]])}


@case(note="the user's exception from the bottom of a recursion")
def recursion_raises_at_the_bottom(o):
    try:
        o.call(countdown_fails, 5)
    except LookupError as error:
        return {"error": error}


@case(one_record=True)
def recursive_method(o):
    tree = Tree(Tree(Tree()), Tree())
    return {"first": o.call(tree.depth), "second": o.call(tree.depth)}
