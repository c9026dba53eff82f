"""Generators: inspect answers as for the original; the stream is the original's, lazily."""
import collections
import inspect

from poet_runtime import poet
from fidelity_kit import case

RUNS = collections.Counter()


@poet
def count_up(n: int):
    RUNS["count_up"] += 1
    yield from range(n)


@poet
def squares(values: list[int]):
    RUNS["squares"] += 1
    for value in values:
        yield value * value


@poet
def drain(queue: list):
    RUNS["drain"] += 1
    while queue:
        yield queue.pop(0)


@poet
def fails_midway(n: int):
    RUNS["fails_midway"] += 1
    yield 1
    raise ValueError(f"stopped after one of {n}")


@poet
def delegating(n: int):
    RUNS["delegating"] += 1
    result = yield from inner(n)
    yield ("returned", result)


def inner(n):
    for i in range(n):
        yield i
    return n * 10


@poet
def accumulator():
    RUNS["accumulator"] += 1
    total = 0
    while True:
        value = yield total
        if value is None:
            return
        total += value


@poet
async def async_numbers(n: int):
    RUNS["async_numbers"] += 1
    for i in range(n):
        yield i


@case(note="inspect.isgeneratorfunction answers as for the original")
def generator_introspection(o):
    items = o.consume(count_up, 3)
    return {"isgeneratorfunction": inspect.isgeneratorfunction(count_up), "items": items}


@case(note="a generator's body runs only when iterated")
def generator_is_lazy(o):
    before = RUNS["squares"]

    def use(generator):
        ran_at_call = RUNS["squares"] - before
        first = next(generator)
        return {"ran_at_call": ran_at_call, "first": first, "rest": list(generator),
                "is_generator": inspect.isgenerator(generator)}

    return o.call_then(use, squares, [1, 2, 3])


@case()
def generator_mutates_its_argument(o):
    queue = ["a", "b"]
    return {"items": o.consume(drain, queue), "queue": queue}


@case()
def generator_raises_midway(o):
    seen = []

    def use(generator):
        for item in generator:
            seen.append(item)

    try:
        o.call_then(use, fails_midway, 5)
    except ValueError as error:
        return {"seen": seen, "error": error}


@case()
def generator_with_yield_from_return(o):
    return {"items": o.consume(delegating, 2)}


@case()
def generator_send(o):
    def use(generator):
        values = [next(generator), generator.send(5), generator.send(2)]
        try:
            generator.send(None)
        except StopIteration as stop:
            values.append(("stopped", stop.value))
        return values

    return {"values": o.call_then(use, accumulator)}


@case(note="an async generator: inspect.isasyncgenfunction and the items")
async def async_generator(o):
    async def use(stream):
        return inspect.isasyncgen(stream), [item async for item in stream]

    isasyncgen, items = await o.acall_then(use, async_numbers, 3)
    return {"isasyncgenfunction": inspect.isasyncgenfunction(async_numbers), "items": items,
            "isasyncgen": isasyncgen}
