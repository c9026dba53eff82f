"""Plain data across the WASM boundary, for both sides: the host and the guest.

Arguments, results and the user's data globals cross as JSON, never pickle: a
guest can send nothing but numbers, strings, lists and dicts back. Tuples, bytes,
sets and dicts with non-string keys are tagged so that a value keeps its type.
One module serves both halves (the host loads it through ``load_facility``, the
guest finds it in the read-only ``/poet`` mount), so the two cannot drift apart.

What comes back from a guest is untrusted: ``decode`` raises ``NotData`` for any
shape this encoder would not have produced.
"""

import base64
import binascii


MAX_DEPTH = 200


class NotData(TypeError):
    """A value that cannot cross the boundary as plain data."""


def encode(value, depth: int = 0):
    if depth > MAX_DEPTH:
        raise NotData("nested too deeply")
    kind = type(value)
    if value is None or kind in (bool, int, float, str):
        return value
    if kind is list:
        return [encode(v, depth + 1) for v in value]
    if kind is tuple:
        return {"__tuple__": [encode(v, depth + 1) for v in value]}
    if kind is dict:
        if all(type(k) is str for k in value) and not any(k.startswith("__") and k.endswith("__") for k in value):
            return {k: encode(v, depth + 1) for k, v in value.items()}
        return {"__dict__": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]}
    if kind is bytes:
        return {"__bytes__": base64.b64encode(value).decode("ascii")}
    if kind in (set, frozenset):
        return {"__set__": [encode(v, depth + 1) for v in value], "frozen": kind is frozenset}
    raise NotData(f"{kind.__name__} is not plain data")


def decode(value, depth: int = 0):
    if depth > MAX_DEPTH:
        raise NotData("nested too deeply")
    kind = type(value)
    if value is None or kind in (bool, int, float, str):
        return value
    if kind is list:
        return [decode(v, depth + 1) for v in value]
    if kind is not dict:
        raise NotData(f"unexpected {kind.__name__}")
    try:
        if "__tuple__" in value:
            return tuple(decode(v, depth + 1) for v in _list(value["__tuple__"]))
        if "__dict__" in value:
            return {_key(decode(k, depth + 1)): decode(v, depth + 1) for k, v in _list(value["__dict__"])}
        if "__bytes__" in value:
            return base64.b64decode(value["__bytes__"], validate=True)
        if "__set__" in value:
            items = [_key(decode(v, depth + 1)) for v in _list(value["__set__"])]
            return frozenset(items) if value.get("frozen") else set(items)
    except (TypeError, ValueError, binascii.Error) as error:
        raise NotData(f"malformed tagged value: {error}") from None
    return {k: decode(v, depth + 1) for k, v in value.items()}


def _list(value):
    if type(value) is not list:
        raise NotData("a tagged value must hold a list")
    return value


def _key(value):
    if type(value) is list:
        value = tuple(value)
    try:
        hash(value)
    except TypeError:
        raise NotData("unhashable key") from None
    return value


def is_data(value) -> bool:
    try:
        encode(value)
    except (NotData, RecursionError):
        return False
    return True
