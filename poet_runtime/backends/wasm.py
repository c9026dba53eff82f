"""The ``wasm`` backend: generated code runs in CPython-on-WASI inside wasmtime.

This is the strongest sandbox poet_runtime has: the generated module sees no host
file (only read-only mounts of the standard library and ``poet_sandbox``), no
network, no process, no environment, and every call is bounded in CPU (fuel),
wall time (epoch deadline + a deadline-aware ``poll_oneoff``), memory (store
limits) and output (a capped stdout).

Design, and why:
- One warm guest per loaded enhancement (``WasmEnhancement``). A call is a JSON
  request through a blocking host import: 0.2-0.4 ms here, against 20-50 ms for a
  fresh interpreter per call (``benchmarks/bench_wasm.py``). One guest never serves two functions, so nothing one function's
  code leaves behind (globals, patched builtins, imported modules) can reach
  another's call; within one function, state persists across calls as it does
  in-process, which the generated breaker and train phases rely on.
- A guest is replaced after any violation, after a crash, and after
  ``MAX_CALLS_PER_GUEST`` calls (bounding slow leaks). The replacement starts on
  the next call.
- Each live guest costs about 9 MB of resident memory and a thread, so at most
  ``MAX_LIVE_GUESTS`` stay up: starting one more stops the least recently used
  idle guest (its function's next call starts it again, ~0.1 s).
- Results are data: a result that is not JSON-able plain data, or any exception in
  the guest, makes the call raise ``PhaseError`` (``PerceiveError``/``EnforceError``
  when a phase refused) and the host runs the original function, which then
  returns or raises for real. One exception crosses as itself: the breaker's
  ``CircuitOpenError``, which must fail fast as it does in-process.

Limits come from ``LoadRequest.limits`` and apply to every call (the policy file's
meanings, ``policy_schema.py``): ``cpu_ms`` (fuel, see ``wasm_instance.FUEL_PER_MS``),
``wall_ms``, ``memory_mb`` (what one call may add to the guest's memory; the
interpreter itself takes 40 MB), ``max_output_kb`` (stdout plus the encoded result,
per call), ``imports`` (top-level modules generated code may import, plus
``poet_sandbox``; none stated means ``poet_sandbox`` only, as in the restricted
backend) and ``builtins`` (added to the
harness's safe set: every builtin but ``open``/``exec``/``eval``/``compile``/
``globals``/``vars``/...). A limit that is ``None`` is not enforced.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import weakref
from collections import OrderedDict

from poet_runtime.backends import wasm_engine, wasm_mounts, wasm_wire
from poet_runtime.backends.base import Limits, LoadRequest
from poet_runtime.errors import PoetViolation
from poet_runtime.resources import load_facility

__all__ = ["WasmBackend", "WasmEnhancement", "warmup", "ready", "MAX_CALLS_PER_GUEST", "MAX_LIVE_GUESTS"]

MAX_CALLS_PER_GUEST = 1000
MAX_LIVE_GUESTS = int(os.environ.get("POET_WASM_MAX_GUESTS") or 32)


def warmup(progress=None):
    """Compile (or find) the WASM module and prepare the mounts; return the cache path.

    The first time on a machine this takes 1-2 minutes and about 2 GB of memory;
    afterwards it returns in well under a second.
    """
    path = wasm_engine.warmup(progress)
    wasm_mounts.library_dir(False)
    return path


def ready() -> bool:
    """True when a guest can start without the one-time compile (cached or loaded).

    The call path can use it to fall back to the original while ``warmup()`` runs
    in a background thread, instead of blocking a first call for a minute or two."""
    try:
        return wasm_engine._module is not None or wasm_engine.compiled_path().is_file()
    except (RuntimeError, OSError):
        return False


def _data_defaults(original) -> dict:
    """The original's argument defaults that are plain data (configure's second
    argument, as the in-process backend passes it); the others cannot cross."""
    import inspect

    if original is None:
        return {}
    try:
        parameters = inspect.signature(original, follow_wrapped=False).parameters
    except (TypeError, ValueError):
        return {}
    return {
        name: p.default
        for name, p in parameters.items()
        if p.default is not inspect.Parameter.empty and wasm_wire.is_data(p.default)
    }


class _LiveGuests:
    """The enhancements that have a live guest, least recently used first."""

    def __init__(self):
        self._lock = threading.Lock()
        self._order = OrderedDict()  # id -> weakref to WasmEnhancement

    def touch(self, enhancement) -> None:
        key = id(enhancement)
        with self._lock:
            if key in self._order:
                self._order.move_to_end(key)
            else:
                self._order[key] = weakref.ref(enhancement)

    def forget(self, enhancement) -> None:
        self.forget_key(id(enhancement))

    def forget_key(self, key) -> None:
        with self._lock:
            self._order.pop(key, None)

    def evict_beyond(self, limit: int, keep) -> None:
        """Stop idle guests, oldest first, until at most ``limit`` are live."""
        with self._lock:
            candidates = [(key, ref()) for key, ref in self._order.items()]
        live = len(candidates)
        for key, enhancement in candidates:
            if live <= limit:
                return
            if enhancement is None:
                self.forget_key(key)
                live -= 1
            elif enhancement is not keep and enhancement._lock.acquire(blocking=False):
                try:  # idle: nobody is in a call on it
                    enhancement._retire()
                finally:
                    enhancement._lock.release()
                live -= 1


_live = _LiveGuests()


class WasmBackend:
    name = "wasm"

    def __init__(self):
        self._loaded = weakref.WeakSet()
        self._lock = threading.Lock()
        wasm_engine.on_exit(self.close)  # an open store at interpreter exit can panic wasmtime

    def load(self, request: LoadRequest) -> "WasmEnhancement":
        enhancement = WasmEnhancement(request)
        with self._lock:
            self._loaded.add(enhancement)
        return enhancement

    def close(self) -> None:
        with self._lock:
            loaded = list(self._loaded)
            self._loaded.clear()
        for enhancement in loaded:
            enhancement.close()
        for enhancement in loaded:
            enhancement.join(timeout=2.0)


class WasmEnhancement:
    """One generated module loaded into its own guest; ``call`` runs one call there."""

    backend = "wasm"

    def __init__(self, request: LoadRequest):
        self.function_id = request.function_id
        self.limits: Limits = request.limits
        facility = load_facility()
        self._phase_error = facility.PhaseError
        # Phase refusals keep their class across the boundary (the call path reports them).
        self._errors = {"PerceiveError": facility.PerceiveError, "EnforceError": facility.EnforceError}
        self._user_error = facility.UserLogicError
        self._circuit_open = facility.CircuitOpenError
        imports = tuple(request.limits.imports)
        data, modules = wasm_wire.split_globals(
            request.user_globals or {}, wasm_wire.referenced_names(request.code)
        )
        self._load_message = {
            "op": "load",
            "code": request.code,
            "filename": request.filename,
            "logic": request.logic_name,
            "module_name": request.function_id.partition(":")[0],
            "params": wasm_wire.encode(dict(request.params or {})),
            "defaults": wasm_wire.encode(_data_defaults(request.original)),
            "data": wasm_wire.encode(data),
            "modules": modules,
            "imports": list(imports),
            "builtins": list(request.limits.builtins),
        }
        self._user_globals = request.user_globals if request.user_globals is not None else {}
        self._sent_globals = data  # name -> the value last sent, to see rebinding cheaply
        self._preopens = wasm_mounts.preopens(imports)
        self._lock = threading.Lock()
        self._guest = None
        self._retired = []
        self._closed = False
        self._train_error = None
        with self._lock:
            self._guest = self._start()

    # --- the LoadedEnhancement interface -------------------------------------------------

    def call(self, args: tuple, kwargs: dict) -> tuple:
        try:
            message = {"op": "call", "args": wasm_wire.encode(list(args)), "kwargs": wasm_wire.encode(dict(kwargs))}
        except (wasm_wire.NotData, RecursionError) as error:
            raise self._phase_error(f"arguments cannot enter the sandbox: {error}") from None
        limits = self.limits
        with self._lock:
            if self._closed or not wasm_engine.usable():
                raise self._phase_error("the wasm sandbox is closed, or this process was forked after it started")
            changed = wasm_wire.rebound(self._user_globals, self._sent_globals) if self._sent_globals else None
            if changed:
                # The user's module rebound a global the logic reads: the live guest gets
                # it with this call, a future guest with its load.
                message["globals"] = wasm_wire.encode(changed)
                self._load_message["data"] = wasm_wire.encode(self._sent_globals)
            guest = self._guest if self._guest is not None and self._guest.alive else self._start()
            _live.touch(self)
            reply = self._request(guest, message, wall_ms=limits.wall_ms, cpu_ms=limits.cpu_ms)
            if guest.calls >= MAX_CALLS_PER_GUEST or self._grown(guest):
                self._retire()  # not a violation: the next call starts a fresh guest
        if reply.get("train_error"):
            self._train_error = RuntimeError(str(reply["train_error"])[:500])
        try:
            result = wasm_wire.decode(reply.get("result"))
            marks = [int(m) for m in reply["marks"]]
            if len(marks) != 4:
                raise ValueError("four marks expected")
        except (wasm_wire.NotData, KeyError, TypeError, ValueError, RecursionError) as error:
            raise self._phase_error(f"the sandbox answered with malformed data: {error}") from None
        return (result, *marks)

    async def call_async(self, args: tuple, kwargs: dict) -> tuple:
        # The guest is single-threaded and the wait is a blocking queue: off the loop.
        return await asyncio.to_thread(self.call, args, kwargs)

    def configure(self, params: dict) -> None:
        """New tuned values: applied in the live guest, and kept for any later guest.
        Never raises for the guest's sake: a guest that fails here is replaced."""
        self._load_message["params"] = wasm_wire.encode(dict(params))
        with self._lock:
            if self._guest is not None and self._guest.alive:
                message = {"op": "configure", "params": self._load_message["params"]}
                try:
                    self._request(self._guest, message, wall_ms=self.limits.wall_ms, cpu_ms=self.limits.cpu_ms)
                except (PoetViolation, self._phase_error):
                    self._retire()

    @property
    def train_error(self):
        """The last failure of train() in the guest (as text in a RuntimeError), or None."""
        return self._train_error

    def observations(self) -> dict:
        """What train() has observed in the current guest (its ``STATS``); {} if unknown.
        A guest replaced after a violation or N calls starts its counters again."""
        with self._lock:
            guest = self._guest
            if guest is None or not guest.alive:
                return {}
            try:
                reply = self._request(guest, {"op": "observe"}, wall_ms=self.limits.wall_ms, cpu_ms=self.limits.cpu_ms)
                observed = wasm_wire.decode(reply.get("result"))
            except (PoetViolation, self._phase_error, wasm_wire.NotData):
                return {}
        return observed if isinstance(observed, dict) else {}

    def close(self) -> None:
        """Stop the guest now, even in the middle of a call (that call then raises
        ``PoetViolation``); later calls raise ``PhaseError``. No lock: a running call
        holds it, and closing at interpreter exit must not wait for it."""
        self._closed = True
        self._retire()

    def join(self, timeout=None) -> None:
        """Wait for retired guests' threads (and so their stores) to finish."""
        for guest in self._retired:
            guest.join(timeout)
        self._retired = [g for g in self._retired if not g.join(0)]

    # --- internals -------------------------------------------------------------------------

    def _start(self):
        """A new guest with the generated module loaded; the old one (if any) retired."""
        from poet_runtime.backends.wasm_instance import START_CPU_MS, START_WALL_MS, Guest, GuestFailure

        self._retire()
        argv = ["python", "-I", wasm_mounts.HARNESS_SCRIPT]
        try:
            guest = Guest(
                argv,
                self._preopens,
                memory_mb=self.limits.memory_mb,
                max_output_kb=self.limits.max_output_kb,
            )
        except GuestFailure as failure:
            raise PoetViolation(self.function_id, failure.limit, failure.detail) from None
        self._guest = guest
        self._request(guest, self._load_message, wall_ms=START_WALL_MS, cpu_ms=START_CPU_MS, limited=False)
        self._loaded_bytes = guest.memory_bytes
        _live.touch(self)
        _live.evict_beyond(MAX_LIVE_GUESTS, keep=self)
        return guest

    def _grown(self, guest) -> bool:
        """Memory kept across calls (wasm memory never shrinks) beyond what one call may add."""
        limit_mb = self.limits.memory_mb
        return limit_mb is not None and guest.memory_bytes - self._loaded_bytes > limit_mb * (1 << 20)

    def _retire(self) -> None:
        guest, self._guest = self._guest, None
        _live.forget(self)
        if guest is not None:
            guest.kill()
            self._retired = [g for g in self._retired if not g.join(0)] + [guest]

    def _request(self, guest, message: dict, *, wall_ms, cpu_ms, limited=True) -> dict:
        """One round trip; a violation or failure retires the guest and raises."""
        from poet_runtime.backends.wasm_instance import GuestFailure

        try:
            reply = guest.request(message, wall_ms=wall_ms, cpu_ms=cpu_ms, limited=limited)
        except GuestFailure as failure:
            self._retire()
            raise PoetViolation(self.function_id, failure.limit, failure.detail) from None
        except wasm_wire.NotData as error:  # nothing was sent: the guest is fine
            raise self._phase_error(str(error)) from None
        status = reply.get("status")
        if status == "ok":
            return reply
        if status == "violation":
            self._retire()
            limit = str(reply.get("limit") or "crash")[:40]  # the guest's word: bounded
            raise PoetViolation(self.function_id, limit, str(reply.get("detail") or "")[:500])
        where = "loading" if message.get("op") == "load" else "the call"
        kind = str(reply.get("type"))[:100]
        if status == "error" and kind == "CircuitOpenError" and message.get("op") == "call":
            raise self._circuit_open(str(reply.get("message"))[:2000])
        if status == "error":
            # The user's logic raised inside the guest. Exceptions do not cross as
            # objects: the host runs the original, which raises it for real.
            text = f"{where} raised {kind}: {reply.get('message')}"
            if message.get("op") == "call":
                raise self._user_error(text[:2000])
        elif status == "phase":
            text = f"{where}: {kind}: {reply.get('message')}"
        else:
            self._retire()
            text = f"unexpected reply from the sandbox: {json.dumps(reply)[:200]}"
        if message.get("op") == "load":
            self._retire()
        raise self._errors.get(kind, self._phase_error)(text[:2000])
