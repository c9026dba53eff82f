"""Backends run generated code: ``none`` in-process, ``restricted`` and ``wasm`` in sandboxes.

``get_backend(name)`` returns the shared instance for a name; each backend module is
imported only when first asked for, so ``wasmtime`` and RestrictedPython cost nothing
to programs that never use them.
"""

from __future__ import annotations

import importlib
import threading

from poet_runtime.backends.base import Backend, Limits, LoadedEnhancement, LoadRequest

__all__ = ["Backend", "Limits", "LoadRequest", "LoadedEnhancement", "get_backend", "BACKENDS"]

# name -> "module:attribute" of a zero-argument factory.
BACKENDS = {
    "none": "poet_runtime.backends.inprocess:InProcessBackend",
    "restricted": "poet_runtime.backends.restricted:RestrictedBackend",
    "wasm": "poet_runtime.backends.wasm:WasmBackend",
}

_instances: dict[str, Backend] = {}
_lock = threading.Lock()


def get_backend(name: str) -> Backend:
    with _lock:
        backend = _instances.get(name)
        if backend is None:
            try:
                target = BACKENDS[name]
            except KeyError:
                raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(BACKENDS)}") from None
            module_name, _, attribute = target.partition(":")
            backend = getattr(importlib.import_module(module_name), attribute)()
            _instances[name] = backend
        return backend


def shutdown_backends() -> None:
    """Close every backend that was started (worker pools, WASM engines)."""
    with _lock:
        for backend in _instances.values():
            close = getattr(backend, "close", None)
            if close is not None:
                close()
        _instances.clear()
