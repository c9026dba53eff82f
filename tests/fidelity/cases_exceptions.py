"""Exceptions: the user's own classes and builtin ones reach the caller as the original raises them."""
import collections
import threading

from poet_runtime import poet
from fidelity_kit import case

RUNS = collections.Counter()
LAST = {}


class CartError(Exception):
    """The module's own exception."""


class OutOfStock(CartError):
    def __init__(self, item: str, wanted: int):
        super().__init__(f"{item}: {wanted} wanted")
        self.item = item
        self.wanted = wanted


class Missing(KeyError):
    pass


class Unpicklable(Exception):
    def __init__(self, message):
        super().__init__(message)
        self.lock = threading.Lock()


@poet
def checkout(items: dict[str, int]) -> int:
    RUNS["checkout"] += 1
    for item, wanted in items.items():
        if wanted > 3:
            raise OutOfStock(item, wanted)
    return sum(items.values())


@poet
def parse_quantity(text: str) -> int:
    RUNS["parse_quantity"] += 1
    try:
        return int(text)
    except ValueError as error:
        raise CartError(f"bad quantity {text!r}") from error


@poet
def lookup_price(prices: dict, item: str) -> float:
    RUNS["lookup_price"] += 1
    try:
        return prices[item]
    except KeyError:
        raise Missing(item)


@poet
def quiet_failure(text: str) -> int:
    RUNS["quiet_failure"] += 1
    try:
        return int(text)
    except ValueError:
        raise CartError("no context shown") from None


@poet
def divide(a: float, b: float) -> float:
    RUNS["divide"] += 1
    return a / b


@poet
def raise_builtin(kind: str):
    RUNS["raise_builtin"] += 1
    if kind == "value":
        raise ValueError("bad value", 42)
    if kind == "type":
        raise TypeError("bad type")
    if kind == "key":
        return {}["nope"]
    if kind == "index":
        return [][3]
    if kind == "attribute":
        return None.missing
    if kind == "assert":
        assert kind == "never", "assertion message"
    if kind == "runtime":
        raise RuntimeError()
    if kind == "stop":
        raise StopIteration("done")
    if kind == "notimplemented":
        raise NotImplementedError
    return kind


@poet
def raise_remembered(code: int):
    RUNS["raise_remembered"] += 1
    error = CartError("remembered", code)
    LAST["error"] = error
    raise error


@poet
def raise_with_note(x: int):
    RUNS["raise_with_note"] += 1
    error = ValueError(x)
    error.add_note("checked against the catalogue")
    raise error


@poet
def raise_group():
    RUNS["raise_group"] += 1
    raise ExceptionGroup("several", [ValueError(1), CartError(2)])


@poet
def raise_unpicklable():
    RUNS["raise_unpicklable"] += 1
    raise Unpicklable("holds a lock")


@poet
def swallows_its_own(text: str) -> str:
    RUNS["swallows_its_own"] += 1
    try:
        return parse_helper(text)
    except Exception as error:  # noqa: BLE001 - the user's own broad handler
        return f"error value: {type(error).__name__}"


def parse_helper(text):
    return str(int(text) * 2)


@poet
def raise_system_exit(code: int):
    RUNS["raise_system_exit"] += 1
    raise SystemExit(code)


@poet
def error_in_finally(x: int) -> int:
    RUNS["error_in_finally"] += 1
    try:
        return 10 // x
    finally:
        LAST["finally_ran"] = True


@case()
def own_exception_with_attributes(o):
    try:
        o.call(checkout, {"pear": 1, "plum": 9})
    except OutOfStock as error:
        return {"error": error, "item": error.item, "wanted": error.wanted, "is_cart_error": isinstance(error, CartError)}


@case()
def own_exception_success_path(o):
    return {"result": o.call(checkout, {"pear": 1, "plum": 2})}


@case(note="raise ... from error: __cause__")
def explicit_cause(o):
    o.call(parse_quantity, "three")


@case(note="raise inside except: __context__")
def implicit_context(o):
    try:
        o.call(lookup_price, {"a": 1.0}, "b")
    except KeyError as error:
        return {"error": error, "type": type(error), "context": type(error.__context__)}


@case()
def from_none_suppresses_context(o):
    try:
        o.call(quiet_failure, "x")
    except CartError as error:
        return {"error": error, "suppress": error.__suppress_context__, "cause": error.__cause__}


@case()
def zero_division(o):
    o.call(divide, 1.0, 0.0)


@case()
def builtin_value_error_with_args(o):
    o.call(raise_builtin, "value")


@case()
def builtin_type_error(o):
    o.call(raise_builtin, "type")


@case()
def builtin_key_error(o):
    o.call(raise_builtin, "key")


@case()
def builtin_index_error(o):
    o.call(raise_builtin, "index")


@case()
def builtin_attribute_error(o):
    o.call(raise_builtin, "attribute")


@case()
def assertion_error(o):
    o.call(raise_builtin, "assert")


@case()
def runtime_error_without_args(o):
    o.call(raise_builtin, "runtime")


@case()
def stop_iteration_from_a_plain_function(o):
    o.call(raise_builtin, "stop")


@case()
def not_implemented(o):
    o.call(raise_builtin, "notimplemented")


@case(note="the caller catches the very object the function raised")
def exception_identity(o):
    LAST.clear()
    try:
        o.call(raise_remembered, 7)
    except CartError as error:
        return {"same_object": error is LAST["error"], "args": error.args}


@case()
def exception_notes(o):
    try:
        o.call(raise_with_note, 5)
    except ValueError as error:
        return {"notes": error.__notes__, "error": error}


@case()
def exception_group(o):
    try:
        o.call(raise_group)
    except ExceptionGroup as group:
        return {"message": group.message, "members": [type(e) for e in group.exceptions], "error": group}


@case(note="an exception holding a lock (cannot be pickled)")
def unpicklable_exception(o):
    try:
        o.call(raise_unpicklable)
    except Unpicklable as error:
        return {"error": error, "has_lock": hasattr(error, "lock")}


@case(note="the user's own `except Exception` sees only the user's errors")
def broad_handler_inside(o):
    return {"ok": o.call(swallows_its_own, "21"), "bad": o.call(swallows_its_own, "x")}


@case()
def system_exit_passes_through(o):
    try:
        o.call(raise_system_exit, 3)
    except SystemExit as error:
        return {"code": error.code, "error": error}


@case()
def finally_block_runs(o):
    LAST.clear()
    try:
        o.call(error_in_finally, 0)
    except ZeroDivisionError as error:
        return {"error": error, "finally": LAST.get("finally_ran")}
