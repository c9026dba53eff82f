"""Plain data across the WASM boundary: the host's half of the JSON encoding.

Arguments, results and the user's data globals cross as JSON, never pickle: a
guest can send nothing but numbers, strings, lists and dicts back. Tuples, bytes,
sets and dicts with non-string keys are tagged so that a result keeps its type.
The guest's half (``sandbox/harness/wasm_guest.py``) is a twin of this file: it
cannot import ``poet_runtime``, so keep the two in step.

What comes back from a guest is untrusted: ``decode`` raises ``NotData`` for any
shape this encoder would not have produced.
"""

from __future__ import annotations

import base64
import binascii
import io
import tokenize
import types

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


def referenced_names(code: str) -> set[str]:
    """Every identifier in the generated module's text (an over-approximation: a few
    unused globals may be sent). Tokenized, not compiled: untrusted code is never
    compiled in the host, not even to read its names."""
    names: set[str] = set()
    try:
        for token in tokenize.generate_tokens(io.StringIO(code).readline):
            if token.type == tokenize.NAME:
                names.add(token.string)
    except (tokenize.TokenError, SyntaxError, ValueError):
        pass  # the guest reports the broken module when it loads it
    return names


def split_globals(user_globals: dict, wanted: set[str]) -> tuple[dict, dict]:
    """(data, modules): the wanted globals that are plain data (name -> the value
    itself, not yet encoded); and those that are modules, as alias -> module name, to
    be imported again inside the guest. Anything else (functions, classes, objects)
    stays behind: if the logic needs it, the call fails in the guest and the host
    runs the original."""
    data, modules = {}, {}
    for name in sorted(wanted):
        if name.startswith("__") or name not in user_globals:
            continue
        value = user_globals[name]
        if isinstance(value, types.ModuleType):
            modules[name] = value.__name__
        elif is_data(value):
            data[name] = value
    return data, modules


def rebound(user_globals: dict, sent: dict) -> dict:
    """The data globals rebound since they were sent (``X = new`` in the user's
    module), updating ``sent``; an identity test per name, so a call pays almost
    nothing. In-place changes (``X.append``) are not seen: the guest has a copy."""
    changed = {}
    for name, value in sent.items():
        current = user_globals.get(name, value)
        if current is not value and is_data(current):
            changed[name] = sent[name] = current
    return changed
