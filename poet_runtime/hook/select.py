"""Which modules the hook rewrites: the user's own code, never the stdlib or installed packages.

Rules, in order:
1. a module matching an exclude glob (``POET_EXCLUDE`` / ``[tool.poet] exclude``) is skipped;
2. poet_runtime itself and the sandbox facility library are skipped, as is anything in the stdlib;
3. when include globs are set (``POET_INCLUDE`` / ``[tool.poet] include``), exactly the modules
   matching them are selected, wherever they live (so an installed package can be opted in);
4. otherwise a module is selected when its file lies under a root folder and not in a
   site-packages folder. The root is the folder of the script being run (``sys.path[0]``),
   or the current directory for ``-m``, ``-c``, the REPL and installed console scripts
   (``POET_ENABLED=1 pytest``: the script lives in the environment's ``bin``); the
   runner sets it explicitly.

Globs match module names with ``fnmatch``; ``pkg.*`` also matches ``pkg`` itself.
The location verdict is cached per folder so a decision costs a dict lookup.
"""

from __future__ import annotations

import os
import sys


def _compile(globs):
    """One regex for a list of module globs, or None for an empty list."""
    if not globs:
        return None
    import fnmatch
    import re

    patterns = []
    for glob in globs:
        patterns.append(fnmatch.translate(glob))
        if glob.endswith(".*"):
            patterns.append(fnmatch.translate(glob[:-2]))
    return re.compile("|".join(patterns))


def _norm(path: str) -> str:
    return os.path.normcase(os.path.abspath(path))


def _system_folders() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(site-packages folders, stdlib folders), as absolute and real paths."""
    site_dirs = set()
    for entry in sys.path:
        if os.path.basename(entry.rstrip(os.sep)) in ("site-packages", "dist-packages"):
            site_dirs.add(entry)
    site = sys.modules.get("site")
    if site is not None:
        try:
            site_dirs.update(site.getsitepackages())
            site_dirs.add(site.getusersitepackages())
        except Exception:  # some embedders' site modules lack these
            pass
    stdlib = {os.path.dirname(os.__file__)}
    own = {os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}  # the poet_runtime package

    def expand(paths):
        out = set()
        for path in paths:
            if path:
                out.add(_norm(path))
                out.add(os.path.normcase(os.path.realpath(path)))
        return tuple(sorted(out))

    return expand(site_dirs), expand(stdlib | own)


_OWN_NAMES = ("poet_runtime.", "poet_sandbox")  # (poet_runtime itself lives in an excluded folder)


def _under(path: str, folders) -> bool:
    return any(path == folder or path.startswith(folder + os.sep) for folder in folders)


class Selection:
    """Decides, from a module's name and file, whether the hook rewrites it."""

    def __init__(self, include=(), exclude=(), roots=None):
        self.include = tuple(include)
        self.exclude = tuple(exclude)
        self._include_re = _compile(self.include)
        self._exclude_re = _compile(self.exclude)
        self._explicit_roots = tuple(_norm(root) for root in roots) if roots else None
        self._site, self._stdlib = _system_folders()
        self._folders: dict[str, str] = {}  # folder -> "root" | "site" | "stdlib" | "other"
        self._roots_key = None
        self._roots: tuple[str, ...] = ()

    def roots(self) -> tuple[str, ...]:
        if self._explicit_roots is not None:
            return self._explicit_roots
        # Lazily from sys.path[0]: at .pth time it is not set yet; the cache is keyed on it.
        first = sys.path[0] if sys.path and not sys.flags.safe_path else None
        if first != self._roots_key:
            base = first or os.getcwd()
            if _under(_norm(base), tuple(_norm(p) for p in {sys.prefix, sys.base_prefix, sys.exec_prefix})):
                base = os.getcwd()  # an installed console script (venv/bin/pytest): the project is the cwd
            self._roots_key = first
            self._roots = (_norm(base), os.path.normcase(os.path.realpath(base)))
            self._folders.clear()
        return self._roots

    def _place(self, folder: str) -> str:
        place = self._folders.get(folder)
        if place is None:
            path = _norm(folder)
            if _under(path, self._site):
                place = "site"
            elif _under(path, self._stdlib):
                place = "stdlib"
            elif _under(path, self.roots()):
                place = "root"
            else:
                place = "other"
            self._folders[folder] = place
        return place

    def selects(self, name: str, origin: str | None, folder: str | None = None) -> bool:
        """Whether to rewrite module ``name`` loaded from ``origin`` (``folder``: its folder, if known).

        On every import of the process: string methods and dict lookups only.
        """
        if not origin:
            return False
        if self._exclude_re is not None and self._exclude_re.fullmatch(name):
            return False
        if name.startswith(_OWN_NAMES):
            return False
        if self._explicit_roots is None:
            self.roots()  # follows sys.path[0]; clears the folder cache when it changed
        if folder is None:
            folder = origin.rpartition(os.sep)[0]
        place = self._folders.get(folder) or self._place(folder)
        if place == "stdlib":
            return False
        if self._include_re is not None:
            return self._include_re.fullmatch(name) is not None
        return place == "root"

    def reason(self, name: str, origin: str | None) -> str:
        """Why ``selects`` says no, for the log."""
        if self._exclude_re is not None and self._exclude_re.fullmatch(name):
            return "it matches POET_EXCLUDE / [tool.poet] exclude"
        if self._include_re is not None:
            return "it does not match POET_INCLUDE / [tool.poet] include"
        if origin is None:
            return "it has no source file"
        place = self._place(origin.rpartition(os.sep)[0])
        if place in ("site", "stdlib"):
            return "it is installed (site-packages / stdlib); add it to POET_INCLUDE to opt in"
        return f"it lies outside {self.roots()[0]}; add it to POET_INCLUDE to opt in"
