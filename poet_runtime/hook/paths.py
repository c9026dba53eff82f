"""Module names for files, found statically (nothing is imported or executed).

Shared by the runner (the identity of the ``__main__`` script) and the CLI
(``enhance``, ``status``, ``show``): both must name a function the same way, or the
store written ahead of time would not be the one the program reads.
"""

from __future__ import annotations

import os
from importlib.machinery import PathFinder

_SKIP_DIRS = {"__pycache__", ".poet", ".git", ".hg", ".tox", ".nox", "node_modules", "build", "dist"}


def module_name_for_path(path: str) -> str:
    """Dotted name of the module in ``path``: its file stem, prefixed by every enclosing package."""
    path = os.path.abspath(path)
    folder, filename = os.path.split(path)
    stem = filename.rpartition(".")[0] or filename
    parts = [] if stem == "__init__" else [stem]
    while os.path.isfile(os.path.join(folder, "__init__.py")):
        parts.insert(0, os.path.basename(folder))
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    return ".".join(parts) or stem


def is_environment(folder: str) -> bool:
    """A virtualenv or an installed-packages folder: never walked into."""
    name = os.path.basename(folder)
    return (
        name in ("site-packages", "dist-packages")
        or os.path.isfile(os.path.join(folder, "pyvenv.cfg"))
    )


def python_files(path: str):
    """Every ``.py`` file under ``path`` (a file or a folder), skipping caches, VCS and virtualenvs."""
    if os.path.isfile(path):
        yield os.path.abspath(path)
        return
    for folder, subfolders, files in os.walk(path):
        subfolders[:] = sorted(
            name for name in subfolders
            if name not in _SKIP_DIRS and not name.startswith(".") and not is_environment(os.path.join(folder, name))
        )
        for name in sorted(files):
            if name.endswith(".py"):
                yield os.path.abspath(os.path.join(folder, name))


def file_for_module(name: str, search_path=None) -> str | None:
    """The source file of module ``name``, found without importing any package along the way."""
    locations = search_path
    origin = None
    parts = name.split(".")
    for index in range(len(parts)):
        spec = PathFinder.find_spec(".".join(parts[: index + 1]), locations)
        if spec is None:
            return None
        origin = spec.origin if spec.has_location else None
        locations = list(spec.submodule_search_locations or [])
        if index < len(parts) - 1 and not locations:
            return None
    return origin
