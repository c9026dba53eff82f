"""Functions that mutate what they are given or what their module holds: the caller must see it."""
import array
import collections
import random

from poet_runtime import poet
from fidelity_kit import case

RUNS = collections.Counter()
COUNT = 0
CACHE = {}
SEEN = set()
HISTORY = []


@poet
def add_to_cart(cart: list, item: str) -> None:
    RUNS["add_to_cart"] += 1
    cart.append(item)


@poet
def add_to_typed_cart(cart: list[str], item: str) -> int:
    RUNS["add_to_typed_cart"] += 1
    cart.append(item)
    return len(cart)


@poet
def bump(scores: dict[str, int], name: str) -> dict[str, int]:
    RUNS["bump"] += 1
    scores[name] = scores.get(name, 0) + 1
    return scores


@poet
def tag(tags: set[str], new: str) -> bool:
    RUNS["tag"] += 1
    before = len(tags)
    tags.add(new)
    return len(tags) > before


@poet
def next_count() -> int:
    global COUNT
    RUNS["next_count"] += 1
    COUNT += 1
    return COUNT


@poet
def cached_square(n: int) -> int:
    RUNS["cached_square"] += 1
    if n not in CACHE:
        CACHE[n] = n * n
    return CACHE[n]


@poet
def remember(value, bucket=[]):  # noqa: B006 - the mutable default is the point
    RUNS["remember"] += 1
    bucket.append(value)
    return bucket


@poet
def shuffled(deck: list[int]) -> list[int]:
    RUNS["shuffled"] += 1
    random.shuffle(deck)
    return deck


@poet
def draw() -> float:
    RUNS["draw"] += 1
    return random.random()


@poet
def sort_in_place(values: list[int]) -> list[int]:
    RUNS["sort_in_place"] += 1
    values.sort()
    return values


@poet
def nested_append(groups: dict[str, list[int]], key: str, value: int) -> None:
    RUNS["nested_append"] += 1
    groups.setdefault(key, []).append(value)


@poet
def bump_attribute(thing, by: int = 1):
    RUNS["bump_attribute"] += 1
    thing.hits += by
    return thing.hits


@poet
def fill_bytes(buffer: bytearray, value: int) -> int:
    RUNS["fill_bytes"] += 1
    for index in range(len(buffer)):
        buffer[index] = value
    return len(buffer)


@poet
def rotate(queue: collections.deque, steps: int) -> collections.deque:
    RUNS["rotate"] += 1
    queue.rotate(steps)
    return queue


@poet
def pop_first(values: list) -> object:
    RUNS["pop_first"] += 1
    first = values[0]
    del values[0]
    return first


@poet
def half_then_fail(values: list[int]) -> None:
    RUNS["half_then_fail"] += 1
    values.append(1)
    raise ValueError("failed after the first append")


@poet
def record_history(event: str) -> int:
    RUNS["record_history"] += 1
    HISTORY.append(event)
    SEEN.add(event)
    return len(HISTORY)


@poet
def identity(values: list[int]) -> list[int]:
    RUNS["identity"] += 1
    return values


@poet
def fill_array(values: array.array) -> float:
    RUNS["fill_array"] += 1
    values.append(2.5)
    return sum(values)


class Hits:
    def __init__(self):
        self.hits = 0

    def __repr__(self):
        return f"Hits({self.hits})"


@case(note="cart.append(item) must reach the caller's list")
def cart_append(o):
    cart = ["apple"]
    result = o.call(add_to_cart, cart, "pear")
    return {"result": result, "cart": cart}


@case()
def typed_cart_append(o):
    cart = []
    o.call(add_to_typed_cart, cart, "a")
    return {"len": o.call(add_to_typed_cart, cart, "b"), "cart": cart}


@case(note="a dict[str, int] argument is the caller's dict")
def dict_argument_updated(o):
    scores = {"ann": 1}
    result = o.call(bump, scores, "ann")
    o.call(bump, scores, "bob")
    return {"scores": scores, "is_arg": result is scores}


@case()
def set_argument_updated(o):
    tags = {"x"}
    return {"new": o.call(tag, tags, "y"), "again": o.call(tag, tags, "y"), "tags": sorted(tags)}


@case()
def global_counter(o):
    global COUNT
    COUNT = 0
    values = [o.call(next_count) for _ in range(3)]
    return {"values": values, "COUNT": COUNT}


@case()
def module_level_cache(o):
    CACHE.clear()
    o.call(cached_square, 4)
    o.call(cached_square, 4)
    return {"value": o.call(cached_square, 5), "cache": dict(CACHE)}


@case()
def mutable_default_accumulates(o):
    first = o.call(remember, 1)
    second = o.call(remember, 2)
    explicit = o.call(remember, 3, [])
    result = {"first": list(first), "second": second, "same": first is second, "explicit": explicit}
    second.clear()  # leave the default as it was for a second run of the suite
    return result


@case(note="random.shuffle uses the caller's random state and shuffles the caller's list")
def random_shuffle_of_argument(o):
    random.seed(1234)
    deck = list(range(10))
    result = o.call(shuffled, deck)
    return {"deck": deck, "is_arg": result is deck, "after": random.random()}


@case(note="the module random state is the caller's")
def random_state_is_shared(o):
    random.seed(99)
    first = o.call(draw)
    return {"first": first, "second": o.call(draw), "next_here": random.random()}


@case()
def sort_in_place_returns_argument(o):
    values = [3, 1, 2]
    result = o.call(sort_in_place, values)
    return {"values": values, "is_arg": result is values}


@case()
def nested_container_mutation(o):
    groups = {"a": [1]}
    inner = groups["a"]
    o.call(nested_append, groups, "a", 2)
    o.call(nested_append, groups, "b", 3)
    return {"groups": groups, "inner_is_same": groups["a"] is inner}


@case()
def attribute_of_argument(o):
    thing = Hits()
    o.call(bump_attribute, thing)
    return {"hits": o.call(bump_attribute, thing, by=4), "thing": thing}


@case()
def bytearray_in_place(o):
    buffer = bytearray(b"abc")
    return {"len": o.call(fill_bytes, buffer, 120), "buffer": buffer}


@case()
def deque_rotated(o):
    queue = collections.deque([1, 2, 3, 4])
    result = o.call(rotate, queue, 1)
    return {"queue": queue, "is_arg": result is queue}


@case()
def del_item_of_argument(o):
    values = ["x", "y"]
    return {"first": o.call(pop_first, values), "values": values}


@case(note="a mutation made before the user's exception stays visible")
def mutation_then_exception(o):
    values = [0]
    try:
        o.call(half_then_fail, values)
    except ValueError as error:
        return {"error": error, "values": values}


@case()
def module_list_and_set(o):
    HISTORY.clear()
    SEEN.clear()
    o.call(record_history, "start")
    return {"len": o.call(record_history, "stop"), "history": list(HISTORY), "seen": sorted(SEEN)}


@case()
def returns_its_argument(o):
    values = [1, 2]
    result = o.call(identity, values)
    return {"is_arg": result is values, "type": type(result)}


@case()
def list_argument_passed_by_keyword(o):
    cart = []
    o.call(add_to_cart, item="kiwi", cart=cart)
    return {"cart": cart}


@case()
def array_module_array(o):
    values = array.array("d", [1.0])
    return {"sum": o.call(fill_array, values), "values": values}
