"""Backends run generated code: ``none`` in-process, ``restricted`` and ``wasm`` in sandboxes.

``get_backend(name)`` returns the shared instance for a name; each backend module is
imported only when first asked for, so ``wasmtime`` and RestrictedPython cost nothing
to programs that never use them.
"""

from __future__ import annotations

import importlib
import threading

from poet_runtime.backends.base import Backend, Limits, LoadedEnhancement, LoadRequest

__all__ = ["Backend", "Limits", "LoadRequest", "LoadedEnhancement", "get_backend", "load_code", "BACKENDS"]

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


def load_code(code: str, *, filename: str, version: int, params: dict, is_async: bool, function_id: str,
              original=None, policy=None, logic_name: str | None = None, user_globals: dict | None = None,
              package: str | None = None):
    """Load generated module text into the backend ``policy`` names (none when no policy).

    Versions (``resolve.load_version``) and candidates not stored yet (probe runs)
    load the same way. ``logic_name``, ``user_globals`` and ``package`` are contract 1's
    and only passed along: the logic is the original function object, given per call.
    """
    from poet_runtime import runtime

    runtime.generated_files.add(filename)  # its frames are POET's in a user's traceback
    backend_name = policy.backend if policy is not None else "none"
    limits = policy.limits if policy is not None else Limits()
    request = LoadRequest(
        function_id=function_id,
        version=version,
        code=code,
        filename=filename,
        logic_name=logic_name or function_id.rpartition(":")[2].rpartition(".")[2],
        params=params,
        user_globals=user_globals or {},
        is_async=is_async,
        limits=limits,
        original=original,
        package=package,
    )
    return get_backend(backend_name).load(request)
