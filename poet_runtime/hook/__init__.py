"""The import hook: rewrite the user's ``@poet`` functions as their modules are imported.

Public API (the core and the runner call these; keep imports here light because the
``.pth`` activation imports this package in every POET-enabled process):

- ``install(roots=None)``: put the finder on ``sys.meta_path`` (before ``PathFinder``).
  Idempotent: a second call only refreshes the selection from the current settings
  (and ``roots`` when given). Registration is done under a lock.
- ``uninstall()``: take it off again; modules already imported stay as they are.
- ``installed() -> bool``; ``selects(name, origin) -> bool``: whether the installed hook would rewrite a module.
- ``note_unhooked(module_name)``: the core calls this when it sees a ``@poet`` function
  that was not bound by the rewrite (``bind`` never ran for it). We log once per module,
  on logger ``poet_runtime``, why that happened: imported before the hook was installed
  (WARNING), not selected by include/exclude or outside the project (INFO), the
  ``__main__`` script under ``POET_ENABLED=1`` (INFO: use ``python -m poet_runtime``),
  or loaded by another import hook such as pytest's assertion rewriter (INFO).
"""

from __future__ import annotations

import sys
import threading

_lock = threading.RLock()
_finder = None
_preexisting: frozenset[str] = frozenset()
_noted: set[str] = set()


def _selection(roots):
    from poet_runtime.hook.select import Selection
    from poet_runtime.settings import get_settings

    settings = get_settings()
    return Selection(settings.include, settings.exclude, roots)


def install(roots=None) -> None:
    """Put the hook on ``sys.meta_path``; a no-op (besides refreshing the selection) when already there.

    ``roots``: folders whose modules are rewritten by default (the runner passes the
    script's folder); None keeps the current ones, or follows ``sys.path[0]`` lazily.
    """
    global _finder, _preexisting
    with _lock:
        if _finder is not None and _finder in sys.meta_path:
            # Settings may have changed (the runner's options): rebuild the selection, keep the place.
            keep = roots if roots is not None else _finder.selection._explicit_roots
            _finder.selection = _selection(keep)
            return
        from importlib.machinery import PathFinder

        from poet_runtime.hook.finder import PoetFinder

        _finder = PoetFinder(_selection(roots))
        _preexisting = frozenset(sys.modules)
        try:
            index = sys.meta_path.index(PathFinder)
        except ValueError:
            index = len(sys.meta_path)
        sys.meta_path.insert(index, _finder)
        from poet_runtime import runtime

        runtime.on_unhooked = note_unhooked  # the call path reports to it without importing the hook


def uninstall() -> None:
    """Take the hook off ``sys.meta_path``. Already imported modules keep their code."""
    global _finder
    with _lock:
        if _finder is not None:
            while _finder in sys.meta_path:
                sys.meta_path.remove(_finder)
        _finder = None
        from poet_runtime import runtime

        runtime.on_unhooked = None


def installed() -> bool:
    with _lock:
        return _finder is not None and _finder in sys.meta_path


def selects(name: str, origin: str | None) -> bool:
    """Whether the installed hook would rewrite module ``name`` loaded from ``origin``."""
    finder = _finder
    return finder is not None and finder.selection.selects(name, origin)


def note_unhooked(module_name: str) -> None:
    """Log once per module why a ``@poet`` function there was not bound by the hook."""
    with _lock:
        if module_name in _noted:
            return
        _noted.add(module_name)
        finder = _finder
    import logging  # lazily: the .pth start-up path should not pay for it

    log = logging.getLogger("poet_runtime")
    module = sys.modules.get(module_name)
    origin = getattr(module, "__file__", None)
    if module_name == "__main__":
        log.info(
            "poet_runtime: @poet functions in the __main__ script are not rewritten by the import hook "
            "(run the program with `python -m poet_runtime script.py` for that); they are enhanced without "
            "static identity"
        )
    elif finder is None or finder not in sys.meta_path:
        log.warning("poet_runtime: %s: the import hook is not installed; @poet functions there are not rewritten", module_name)
    elif module_name in _preexisting:
        log.warning(
            "poet_runtime: %s was imported before the import hook was installed; its @poet functions are "
            "not rewritten (enable poet_runtime earlier, or run with `python -m poet_runtime`)", module_name,
        )
    elif not finder.selection.selects(module_name, origin):
        log.info("poet_runtime: %s is not rewritten: %s", module_name, finder.selection.reason(module_name, origin))
    else:
        log.info(
            "poet_runtime: %s was loaded by another import hook (%s); its @poet functions are not rewritten",
            module_name, type(getattr(module, "__loader__", None)).__name__,
        )
