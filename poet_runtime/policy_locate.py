"""Line numbers for errors in policy files.

Why: ``tomllib`` (Python 3.11) reports no positions for values, yet an error that
says ``policies/x.toml:12: defaults.memory_mb: must be > 0`` is what lets a user fix
a file in seconds. This locator scans the text for the table header and the key,
which is enough for the flat files policies are (tables ``[defaults]`` and
``[[rule]]``, one key per line). Unknown shapes fall back to the table's header
line, then to line 1.
"""

from __future__ import annotations

import difflib
import os
import re

_ARRAY_HEADER = re.compile(r"^\s*\[\[\s*([A-Za-z0-9_.\-]+)\s*\]\]\s*(#.*)?$")
_TABLE_HEADER = re.compile(r"^\s*\[\s*([A-Za-z0-9_.\-]+)\s*\]\s*(#.*)?$")
_KEY = re.compile(r'^\s*("?)([A-Za-z0-9_\-]+)\1\s*=')


def locate(text: str, loc: tuple) -> int:
    """The 1-based line of ``loc``: ("version",), ("defaults", key), ("rule", i, key)."""
    if not loc:
        return 1
    if loc[0] == "rule" and len(loc) >= 2 and isinstance(loc[1], int):
        table, index, rest = "rule", loc[1], loc[2:]
    elif len(loc) >= 2 and not isinstance(loc[0], int):
        table, index, rest = loc[0], None, loc[1:]
    else:
        table, index, rest = None, None, loc
    key = next((part for part in rest if isinstance(part, str)), None)
    current, seen, header_line = None, -1, None
    for number, line in enumerate(text.splitlines(), start=1):
        array = _ARRAY_HEADER.match(line)
        plain = None if array else _TABLE_HEADER.match(line)
        if array or plain:
            name = (array or plain).group(1)
            if array and name == table:
                seen += 1
            current = (name, seen if array else None)
            if current == (table, index):
                header_line = number
            continue
        match = _KEY.match(line)
        if not match:
            continue
        if table is None and current is None and match.group(2) == key:
            return number
        if current == (table, index) and match.group(2) == key:
            return number
        if table is not None and current is None and match.group(2) == table:
            return number  # an inline table: `defaults = { ... }`
    return header_line or 1


def display_path(path) -> str:
    """The path as a user would type it: relative to the working directory when below it."""
    text = os.fspath(path)
    try:
        relative = os.path.relpath(text)
    except ValueError:
        return text
    return relative if not relative.startswith("..") else text


def field_name(loc: tuple) -> str:
    """("rule", 2, "wall_ms") -> "rule[2].wall_ms"."""
    parts = []
    for part in loc:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        else:
            parts.append(("." if parts else "") + str(part))
    return "".join(parts) or "(file)"


def suggestion(unknown: str, known) -> str:
    close = difflib.get_close_matches(unknown, list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


_MESSAGES = {
    "literal_error": lambda e: f"must be {e['ctx']['expected']} (got {e['input']!r})",
    "int_type": lambda e: f"must be an integer (got {e['input']!r})",
    "bool_type": lambda e: f"must be true or false (got {e['input']!r})",
    "string_type": lambda e: f"must be a string (got {e['input']!r})",
    "list_type": lambda e: f"must be a list (got {e['input']!r})",
    "missing": lambda e: "is required",
    "model_type": lambda e: f"must be a table (got {e['input']!r})",
}


def message_for(error: dict, known_fields) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown field" + suggestion(str(error["loc"][-1]), known_fields)
    if kind == "value_error":
        return str(error["ctx"]["error"]) if "ctx" in error else error["msg"].removeprefix("Value error, ")
    make = _MESSAGES.get(kind)
    if make is not None:
        try:
            return make(error)
        except (KeyError, TypeError):
            pass
    return error["msg"]


def clean_loc(loc: tuple) -> tuple:
    """Pydantic adds union member names to locations (`wall_ms.int`); drop them."""
    noise = {"int", "bool", "str", "list[str]", "literal[False]", "function-after[_positive(), int]"}
    kept = []
    for part in loc:
        if isinstance(part, str) and (part in noise or part.startswith(("literal[", "function-", "list["))):
            continue
        kept.append(part)
    return tuple(kept)
