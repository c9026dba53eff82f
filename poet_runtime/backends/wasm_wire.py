"""The host's side of the WASM boundary: which user globals cross, and how.

The encoding itself (JSON with tagged tuples, bytes, sets and non-string keys;
``decode`` refusing any shape ``encode`` would not produce) is
``poet_sandbox.wire``, shared with the guest.
"""

from __future__ import annotations

import io
import tokenize
import types

from poet_runtime.resources import load_facility

load_facility()  # makes poet_sandbox importable in the host
from poet_sandbox.wire import MAX_DEPTH, NotData, decode, encode, is_data  # noqa: E402,F401


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
