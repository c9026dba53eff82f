"""``async def`` functions, run with asyncio.run by the kit (each driver is its own event loop)."""
import asyncio
import collections
import contextvars
import inspect

from poet_runtime import poet
from fidelity_kit import case

RUNS = collections.Counter()
REQUEST = contextvars.ContextVar("request", default="none")


class FetchError(Exception):
    pass


@poet
async def fetch(key: str) -> dict:
    RUNS["fetch"] += 1
    await asyncio.sleep(0)
    return {"key": key, "len": len(key)}


@poet
async def fetch_fails(key: str) -> dict:
    RUNS["fetch_fails"] += 1
    await asyncio.sleep(0)
    raise FetchError(key)


@poet
async def current_request() -> str:
    RUNS["current_request"] += 1
    await asyncio.sleep(0)
    return REQUEST.get()


@poet(timeout=5)
async def current_request_with_timeout() -> str:
    RUNS["current_request_with_timeout"] += 1
    await asyncio.sleep(0)
    return REQUEST.get()


@poet
async def append_later(items: list, value) -> int:
    RUNS["append_later"] += 1
    await asyncio.sleep(0)
    items.append(value)
    return len(items)


async def _helper(x):
    await asyncio.sleep(0)
    return x * 3


@poet
async def uses_helper(x: int) -> int:
    RUNS["uses_helper"] += 1
    return await _helper(x) + 1


@poet
async def same_loop() -> bool:
    RUNS["same_loop"] += 1
    return asyncio.get_running_loop() is LOOPS[-1]


LOOPS = []


@poet
async def sets_context(value: str) -> str:
    RUNS["sets_context"] += 1
    REQUEST.set(value)
    return REQUEST.get()


class Client:
    def __init__(self):
        self.sent = []

    @poet
    async def send(self, message: str) -> int:
        RUNS["Client.send"] += 1
        await asyncio.sleep(0)
        self.sent.append(message)
        return len(self.sent)


@case()
async def async_result(o):
    return {"result": await o.acall(fetch, "abc"), "is_coroutine_function": inspect.iscoroutinefunction(fetch)}


@case()
async def async_own_exception(o):
    try:
        await o.acall(fetch_fails, "k")
    except FetchError as error:
        return {"error": error}


@case(note="a contextvar set by the caller's task is visible")
async def async_contextvar(o):
    REQUEST.set("req-1")
    return {"result": await o.acall(current_request)}


@case(note="@poet(timeout=5) on async: the event loop, the caller's context")
async def async_contextvar_with_timeout(o):
    REQUEST.set("req-2")
    return {"result": await o.acall(current_request_with_timeout)}


@case()
async def async_mutates_argument(o):
    items = []
    await o.acall(append_later, items, 1)
    return {"len": await o.acall(append_later, items, 2), "items": items}


@case()
async def async_calls_a_helper(o):
    return {"result": await o.acall(uses_helper, 2)}


@case()
async def async_runs_on_the_callers_loop(o):
    LOOPS.append(asyncio.get_running_loop())
    try:
        return {"same": await o.acall(same_loop)}
    finally:
        LOOPS.clear()


@case()
async def async_gather(o):
    results = await asyncio.gather(o.acall(fetch, "a"), o.acall(fetch, "bb"), o.acall(uses_helper, 5))
    return {"results": results}


@case(note="a contextvar the function sets stays inside the caller's task, as in the original")
async def async_context_set_inside(o):
    REQUEST.set("outer")
    inner = await o.acall(sets_context, "inner")
    return {"inner": inner, "after": REQUEST.get()}


@case()
async def async_method(o):
    client = Client()
    await o.acall(client.send, "hi")
    return {"count": await o.acall(client.send, "yo"), "sent": client.sent}


@case(note="the coroutine is made first and awaited later: the body runs only when awaited")
async def async_awaited_later(o):
    coroutine = fetch("lazy")
    is_coroutine = inspect.iscoroutine(coroutine)
    runs_before = RUNS["fetch"]
    await asyncio.sleep(0)
    ran_before_await = RUNS["fetch"] - runs_before
    result = await o.acall_as("cases_async:fetch", lambda: coroutine)
    return {"is_coroutine": is_coroutine, "ran_before_await": ran_before_await, "result": result}
