"""The target of the decorator the transform injects: forwards to ``poet_runtime.enhanced.bind``.

A thin indirection so that a user's module never fails to import because of us:
if the core is missing (half-installed package, older version) or its ``bind``
raises, the function is returned as the decorator chain produced it, and the
problem is logged once per kind.
"""

from __future__ import annotations

_core_bind = None
_unavailable = False  # the core could not be imported: stop trying
_warned: set[str] = set()


def _warn_once(kind: str, identity: dict, error: BaseException) -> None:
    if kind in _warned:
        return
    _warned.add(kind)
    import logging  # only on this rare path: user modules import this module at definition time

    logging.getLogger("poet_runtime").warning(
        "poet_runtime: cannot bind %s:%s (%s: %s); @poet functions run without static identity",
        identity.get("module"), identity.get("qualname"), type(error).__name__, error,
    )


def bind(**identity):
    """Decorator factory: ``@bind(module=..., qualname=..., source=..., lineno=...)``."""

    def apply(target):
        global _core_bind, _unavailable
        if _unavailable:
            return target
        if _core_bind is None:
            try:
                from poet_runtime.enhanced import bind as core_bind
            except Exception as error:
                _unavailable = True
                _warn_once("import", identity, error)
                return target
            _core_bind = core_bind
        try:
            return _core_bind(target, **identity)
        except Exception as error:  # never break the user's import
            _warn_once("call", identity, error)
            return target

    return apply
