"""Find ``@poet`` functions in files and packages without executing them (``enhance``, ``status``).

Uses the hook's own pieces, so the CLI sees exactly what the import hook would bind:
the ``poet`` marker pre-filter, the decorator detection of ``transform``, the module
naming of ``paths`` and the user's ``POET_EXCLUDE`` globs. Decorator arguments are
read with ``ast.literal_eval``; a non-literal one is reported, never evaluated.
"""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass, field

from poet_runtime.hook.paths import file_for_module, module_name_for_path, python_files
from poet_runtime.hook.transform import MARKER, find_poet_functions


@dataclass
class Found:
    module: str
    qualname: str
    file: str
    lineno: int
    kwargs: dict
    skipped: list[str]  # decorator arguments that are not literals
    module_source: str = field(repr=False, default="")

    @property
    def function_id(self) -> str:
        return f"{self.module}:{self.qualname}"


@dataclass
class Problem:
    file: str
    message: str


def _targets(paths: list[str]) -> tuple[list[str], list[Problem]]:
    files, problems = [], []
    for path in paths:
        if os.path.exists(path):
            files.extend(python_files(path))
            continue
        origin = file_for_module(path)  # a dotted module or package name
        if origin is None:
            problems.append(Problem(path, "no such file, folder or module"))
        elif os.path.basename(origin) == "__init__.py":
            files.extend(python_files(os.path.dirname(origin)))
        else:
            files.append(origin)
    seen, unique = set(), []
    for file in files:
        if file not in seen:
            seen.add(file)
            unique.append(file)
    return unique, problems


def _excluded(module: str) -> bool:
    try:
        from poet_runtime.hook.select import _compile
        from poet_runtime.settings import get_settings

        pattern = _compile(get_settings().exclude)
    except Exception:
        return False
    return pattern is not None and pattern.fullmatch(module) is not None


def scan_file(path: str) -> tuple[list[Found], list[Problem]]:
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        return [], [Problem(path, f"cannot read: {error.strerror}")]
    if MARKER not in data:
        return [], []
    from poet_runtime.generate.sources import decode  # the text the runtime reads (as linecache): same keys

    try:
        text = decode(data)
        tree = ast.parse(text, path)
    except (SyntaxError, ValueError, UnicodeDecodeError) as error:
        return [], [Problem(path, f"cannot parse: {error}")]
    module = module_name_for_path(path)
    if _excluded(module):
        return [], []
    found = []
    for function in find_poet_functions(tree):
        kwargs, skipped = function.decorator_kwargs()
        found.append(Found(module, function.qualname, path, function.node.lineno, kwargs, skipped, text))
    return found, []


def discover(paths: list[str]) -> tuple[list[Found], list[Problem]]:
    """Every ``@poet`` function under ``paths`` (files, folders or dotted module names)."""
    files, problems = _targets(paths)
    found: list[Found] = []
    for file in files:
        more, trouble = scan_file(file)
        found.extend(more)
        problems.extend(trouble)
    return found, problems


def resolve_target(target: str) -> tuple[str, str, str | None]:
    """``MODULE:QUALNAME`` or ``path/to/file.py:QUALNAME`` -> (module, qualname, module file)."""
    module, sep, qualname = target.rpartition(":")
    if not sep or not module or not qualname:
        raise ValueError(f"{target!r}: expected MODULE:QUALNAME (e.g. app:fetch or pkg.mod:Class.method)")
    if module.endswith(".py") or os.sep in module:
        path = os.path.abspath(module)
        return module_name_for_path(path), qualname, path
    return module, qualname, file_for_module(module)
