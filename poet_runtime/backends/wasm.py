"""The ``wasm`` backend: generated code runs in CPython-on-WASI inside wasmtime.

This is the strongest sandbox poet_runtime has: the generated module sees no host
file (only read-only mounts of the standard library and ``poet_sandbox``), no
network, no process, no environment, and every call is bounded in CPU (fuel),
wall time (epoch deadline + a deadline-aware ``poll_oneoff``), memory (store
limits) and output (a capped stdout).

The user's logic never runs in the guest (contract 2, docs/CONTRACTS.md). The
generated module (Perceive, the retry policy of Operate', Enforce, Train) runs
there; when ``operate_prime`` calls the logic it was given (a
``poet_sandbox.crossing.LogicProxy``), the guest answers its request with an
intermediate reply, ``{"status": "logic", ...}``, and the host runs the user's own
function object in the caller's thread on the caller's own objects
(``backends/crossing.HostCall``), then resumes the guest with the logic's result
or exception. A call is therefore a short conversation, all of it in the caller's
thread (``call_async``: the guest's turns in a worker thread, the logic awaited in
the caller's task). What the guest passes back unchanged is the host's own object
again, by token: mutations of an argument land in the caller's object, a result
Enforce left alone is the logic's own object, and the logic's own exception object
reaches the caller.

Design, and why:
- One warm guest per loaded enhancement (``WasmEnhancement``). A call is a JSON
  request through a blocking host import: 0.2-0.4 ms here, against 20-50 ms for a
  fresh interpreter per call (``benchmarks/bench_wasm.py``). One guest never serves two functions, so nothing one function's
  code leaves behind (globals, patched builtins, imported modules) can reach
  another's call; within one function, state persists across calls as it does
  in-process, which the generated breaker and train phases rely on.
- One call at a time per guest: a second caller of the same function waits for
  the guest, also while the first caller's logic runs in the host.
- A guest is replaced after any violation, after a crash, when a call is
  abandoned mid-way (the logic raised ``KeyboardInterrupt``, an async caller was
  cancelled), and after ``MAX_CALLS_PER_GUEST`` calls (bounding slow leaks). The
  replacement starts on the next call.
- Each live guest costs about 9 MB of resident memory and a thread, so at most
  ``MAX_LIVE_GUESTS`` stay up: starting one more stops the least recently used
  idle guest (its function's next call starts it again, ~0.1 s).
- Values that are not plain data (user objects, a ``Counter``, arrays) stay in the
  host; the guest sees a ``crossing.HostRef`` with their type's names. Nothing of
  the user's module is sent: the generated module does not contain the logic.

Outcomes of ``call(logic, args, kwargs)`` (and ``call_async``): returns
``(result, t0, t1, t2, t3, notes)``; raises ``PhaseError`` when the call failed
before the logic ran (the host runs the original once), ``driver.AfterLogic`` when
something failed after it ran (it carries the host's logic result or exception),
``PoetViolation`` for a limit (with ``after_logic`` set to such an ``AfterLogic``
when the logic had run, else None), or the logic's own exception object. A
``CircuitOpenError`` or ``TimeoutError`` the generated code raised itself is a
``PhaseError`` like any other exception of its own: only the user's exception crosses.

Limits come from ``LoadRequest.limits`` and apply to every call (the policy file's
meanings, ``policy_schema.py``): ``cpu_ms`` (fuel, see ``wasm_instance.FUEL_PER_MS``),
``wall_ms``, ``memory_mb`` (what the generated module, its state and one call
together may add to the started guest's memory; the
interpreter itself takes 40 MB), ``max_output_kb`` (stdout plus the encoded reply,
per call), ``imports`` (top-level modules generated code may import, plus
``poet_sandbox``; none stated means ``poet_sandbox`` only, as in the restricted
backend) and ``builtins`` (added to the
harness's safe set: every builtin but ``open``/``exec``/``eval``/``compile``/
``globals``/``vars``/...). A limit that is ``None`` is not enforced. CPU and wall
time count the guest's own time in a call, not the host's time in the logic: each
time the guest resumes after a logic call it gets what was left of its budgets.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import weakref
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

from poet_runtime.backends import wasm_engine, wasm_instance, wasm_mounts, wasm_wire
from poet_runtime.backends.base import Limits, LoadRequest
from poet_runtime.backends.crossing import HostCall, type_names
from poet_runtime.errors import PoetViolation
from poet_runtime.safe_text import visible
from poet_runtime.resources import load_facility

_facility = load_facility()
from poet_sandbox.driver import AfterLogic, InternalError  # noqa: E402

__all__ = ["WasmBackend", "WasmEnhancement", "warmup", "ready", "MAX_CALLS_PER_GUEST", "MAX_LIVE_GUESTS"]

MAX_CALLS_PER_GUEST = 1000
MAX_LIVE_GUESTS = wasm_instance.env_int("POET_WASM_MAX_GUESTS", 32, 1, 10_000)
_IN_CALL = ("call", "logic_return", "logic_raise")  # the requests of one call's conversation
_CONVERSATION = ("ok", "logic", "logic_raised", "after_logic")  # replies a call may get
_PHASES = frozenset({"perceive", "operate_prime", "enforce", "train", "internal"})

PhaseError = _facility.PhaseError
_legs = None  # the threads that wait for a guest on behalf of async callers
_legs_lock = threading.Lock()


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
    in a background thread, instead of blocking a first call for a minute or two.
    A damaged cache entry counts as not ready: it is discarded and rebuilt in the
    background (``wasm_engine.cached_ready``)."""
    try:
        return wasm_engine.cached_ready()
    except (RuntimeError, OSError):
        return False


def _leg_executor() -> ThreadPoolExecutor:
    """Our own pool, not the loop's: a leg's completion must release its guest even
    when the loop that asked for it is gone. Legs never wait for one another, so a
    full pool only queues them."""
    global _legs
    with _legs_lock:
        if _legs is None:
            _legs = ThreadPoolExecutor(max_workers=max(4, MAX_LIVE_GUESTS), thread_name_prefix="poet-wasm-leg")
        return _legs


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


class _Leg:
    """An async call's worker-thread turn that its caller stopped waiting for."""

    __slots__ = ("pending",)

    def __init__(self):
        self.pending = None  # the concurrent future still running, if any


class WasmEnhancement:
    """One generated module loaded into its own guest; ``call`` runs one call there."""

    backend = "wasm"

    def __init__(self, request: LoadRequest):
        self.function_id = request.function_id
        self.limits: Limits = request.limits
        # Phase refusals keep their class across the boundary (the call path reports them).
        self._errors = {"PerceiveError": _facility.PerceiveError, "EnforceError": _facility.EnforceError}
        imports = tuple(request.limits.imports)
        self._load_message = {
            "op": "load",
            "code": request.code,
            "filename": request.filename,
            "module_name": "poet_generated." + request.function_id.replace(":", "."),
            "params": wasm_wire.encode(dict(request.params or {})),
            "imports": list(imports),
            "builtins": list(request.limits.builtins),
        }
        self._preopens = wasm_mounts.preopens(imports)
        self._lock = threading.Lock()  # held for a whole call (all its legs)
        self._owner_thread = None  # the thread in a call (an async call: its loop's thread)
        self._owner_task = None  # the task in an async call
        self._guest = None
        self._call_guest = None  # the guest the current call started on
        self._retired = []
        self._closed = False
        self._reconfigure = False  # params changed while a call held the guest
        self._train_error = None
        self._loaded_bytes = 0
        _all.add(self)
        with self._lock:
            self._guest = self._start()

    # --- the LoadedEnhancement interface -------------------------------------------------

    def call(self, logic, args: tuple, kwargs: dict) -> tuple:
        """One call: the guest runs the phases, the logic runs here, in this thread."""
        host = HostCall(logic, wasm_wire.encode, wasm_wire.decode)
        message = self._call_message(host, args, kwargs, False)
        if self._owner_thread == threading.get_ident():
            raise self._reentered()
        failure = None
        with self._lock:
            self._owner_thread = threading.get_ident()
            try:
                reply = self._first_leg(host, message)
                while reply.get("status") == "logic":
                    answer = self._run_logic(host, reply)
                    reply = self._next_leg(host, answer)
                self._after_call()
            except (PoetViolation, PhaseError) as error:
                failure = error
            finally:
                self._owner_thread = self._call_guest = None
        if failure is not None:  # raised outside the handler: nothing of ours as context
            raise self._settled(host, failure)
        outcome = self._outcome(host, reply)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def call_async(self, logic, args: tuple, kwargs: dict) -> tuple:
        """The guest's turns in a worker thread; the logic awaited in the caller's task
        (its context variables, its event loop, ``asyncio.timeout`` for a timeout)."""
        host = HostCall(logic, wasm_wire.encode, wasm_wire.decode)
        message = self._call_message(host, args, kwargs, True)
        me, task = threading.get_ident(), asyncio.current_task()
        if (task is not None and self._owner_task is task) or (self._owner_task is None and self._owner_thread == me):
            raise self._reentered()
        await self._acquire_async()
        self._owner_thread, self._owner_task = me, task
        leg = _Leg()
        failure = None
        try:
            reply = await self._in_thread(leg, self._first_leg, host, message)
            while reply.get("status") == "logic":
                try:
                    answer = await host.run_logic_async(reply)
                except BaseException:
                    self._retire()  # the guest waits for an answer that will never come
                    raise
                reply = await self._in_thread(leg, self._next_leg, host, answer)
            self._after_call()
        except (PoetViolation, PhaseError) as error:
            failure = error
        finally:
            self._owner_thread = self._owner_task = self._call_guest = None
            if leg.pending is None:
                self._lock.release()
            else:  # a turn still runs in its thread: the guest is free once it ends
                leg.pending.add_done_callback(self._abandoned)
        if failure is not None:
            raise self._settled(host, failure)
        outcome = self._outcome(host, reply)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def configure(self, params: dict) -> None:
        """New tuned values: applied in the live guest, and kept for any later guest.
        Never raises for the guest's sake (a guest that fails here is replaced) and
        never waits for a call in progress: then the next call applies them first."""
        self._load_message["params"] = wasm_wire.encode(dict(params))
        if not self._lock.acquire(blocking=False):
            self._reconfigure = True
            return
        try:
            self._apply_params()
        finally:
            self._lock.release()

    @property
    def train_error(self):
        """The last failure of train() in the guest (as text in a RuntimeError), or None."""
        return self._train_error

    def observations(self) -> dict:
        """What train() has observed in the current guest (its ``STATS``); {} if unknown.
        A guest replaced after a violation or N calls starts its counters again."""
        inside = self._owner_thread == threading.get_ident()  # asked from within a call: never wait
        if not (self._lock.acquire(blocking=False) if inside else self._lock.acquire(timeout=2.0)):
            return {}
        try:
            guest = self._guest
            if guest is None or not guest.alive:
                return {}
            try:
                reply = self._request(guest, {"op": "observe"}, wall_ms=self.limits.wall_ms, cpu_ms=self.limits.cpu_ms)
                observed = wasm_wire.decode(reply.get("result"))
            except (PoetViolation, PhaseError, wasm_wire.NotData):
                return {}
        finally:
            self._lock.release()
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

    # --- one call's conversation -----------------------------------------------------------

    def _call_message(self, host: HostCall, args, kwargs, is_async: bool) -> dict:
        sent_args, sent_kwargs = host.start(args, kwargs)
        return {"op": "call", "args": sent_args, "kwargs": sent_kwargs, "async": is_async}

    def _reentered(self):
        return PhaseError(
            f"{self.function_id} was called again from inside its own call (its guest is busy with the outer one)"
        )

    def _first_leg(self, host: HostCall, message: dict) -> dict:
        """Send the call to the guest (starting one if needed); its first reply."""
        if self._closed or not wasm_engine.usable():
            raise PhaseError("the wasm sandbox is closed, or this process was forked after it started")
        guest = self._guest if self._guest is not None and self._guest.alive else self._start()
        if self._reconfigure:
            self._apply_params()
            guest = self._guest if self._guest is not None and self._guest.alive else self._start()
        self._call_guest = guest
        _live.touch(self)
        limits = self.limits
        try:
            return self._request(guest, message, wall_ms=limits.wall_ms, cpu_ms=limits.cpu_ms)
        except wasm_wire.NotData:
            pass  # some argument's data is no JSON text (a huge int): it stays in the host
        _refs_where_text_fails(host, message)
        try:
            return self._request(guest, message, wall_ms=limits.wall_ms, cpu_ms=limits.cpu_ms)
        except wasm_wire.NotData as error:
            raise PhaseError(f"arguments cannot enter the sandbox: {error}") from None

    def _run_logic(self, host: HostCall, reply: dict) -> dict:
        """The user's logic, here and now; the answer for the guest."""
        try:
            return host.run_logic(reply)
        except BaseException:
            # KeyboardInterrupt, SystemExit from the logic (or a malformed request): the
            # guest waits mid-call for an answer that will never come.
            self._retire()
            raise

    def _next_leg(self, host: HostCall, answer: dict) -> dict:
        """Resume the guest with the logic's outcome; its next reply."""
        guest = self._call_guest
        try:
            return self._request(guest, answer, resume=True)
        except wasm_wire.NotData:
            pass
        if answer.get("op") == "logic_return":  # a result JSON cannot carry stays in the host
            answer["result"] = ["r", type_names(host.values[answer["token"]])]
        try:
            return self._request(guest, answer, resume=True)
        except wasm_wire.NotData as error:
            self._retire()
            raise PhaseError(f"the logic's outcome cannot enter the sandbox: {error}") from None

    def _after_call(self) -> None:
        guest = self._call_guest
        if guest is not None and guest is self._guest and (guest.calls >= MAX_CALLS_PER_GUEST or self._grown(guest)):
            self._retire()  # not a violation: the next call starts a fresh guest

    def _settled(self, host: HostCall, failure):
        """A failure, as the caller must see it: once the logic has run, never a plain
        ``PhaseError`` (that would run the original, so the logic, a second time)."""
        if isinstance(failure, PoetViolation):
            failure.after_logic = host.after_logic(f"violation:{failure.limit}", failure.detail) if host.runs else None
            return failure
        if host.runs == 0 or isinstance(failure, AfterLogic):
            return failure
        return host.after_logic("sandbox_failed", str(failure))

    def _outcome(self, host: HostCall, reply: dict):
        """The call's final reply: ``(result, t0, t1, t2, t3, notes)``, or the exception
        to raise (the logic's own, or ``AfterLogic``)."""
        status = reply.get("status")
        try:
            if status == "logic_raised":
                return host.raised(reply.get("token"))
            if status == "after_logic":
                if not host.runs:
                    raise PhaseError(f"the sandbox reported a failure after the logic, which never ran: "
                                     f"{str(reply.get('detail'))[:500]}")
                return host.after_logic(str(reply.get("reason") or "after_logic"), str(reply.get("detail") or ""))
            result = host.result(reply.get("result"))
            marks = host.marks(reply.get("marks"))  # forged marks must not overflow the host's arithmetic
            notes = host.notes(reply.get("notes"))  # bounded, and shown visibly in logs and events
        except PhaseError as error:
            return self._settled(host, error)
        if reply.get("train_error"):
            self._train_error = RuntimeError(str(reply["train_error"])[:500])
        return (result, marks[0], marks[1], marks[2], marks[3], notes)

    # --- async helpers ----------------------------------------------------------------------

    async def _acquire_async(self) -> None:
        """The guest, without blocking the event loop (another task may hold it while
        its logic is awaited on this very loop) and without tying up a thread."""
        delay = 0.0002
        while not self._lock.acquire(blocking=False):
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.01)

    async def _in_thread(self, leg: _Leg, fn, *args):
        future = _leg_executor().submit(fn, *args)
        try:
            return await asyncio.shield(asyncio.wrap_future(future))
        except asyncio.CancelledError:
            if not future.done():
                leg.pending = future
                self._retire()  # the caller is gone: cut the guest's turn short
            elif not future.cancelled() and future.exception() is None and future.result().get("status") == "logic":
                self._retire()
            raise

    def _abandoned(self, future) -> None:
        """A cancelled async call's last turn ended: free the guest (retired if it was
        left waiting for a logic answer)."""
        try:
            if not future.cancelled() and future.exception() is None and future.result().get("status") == "logic":
                self._retire()
        finally:
            self._lock.release()

    # --- internals -------------------------------------------------------------------------

    def _apply_params(self) -> None:
        self._reconfigure = False
        if self._guest is not None and self._guest.alive:
            message = {"op": "configure", "params": self._load_message["params"]}
            try:
                self._request(self._guest, message, wall_ms=self.limits.wall_ms, cpu_ms=self.limits.cpu_ms)
            except (PoetViolation, PhaseError, wasm_wire.NotData):
                self._retire()

    def _start(self):
        """A new guest with the generated module loaded; the old one (if any) retired."""
        from poet_runtime.backends.wasm_instance import Guest, GuestFailure

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
        # The interpreter's own start (above) has the start-up budget; the generated
        # module's body is untrusted code and runs under the policy's per-call limits:
        # its wall and CPU time, memory_mb over the started guest, max_output_kb for
        # its output and the load reply. What it keeps counts against later calls
        # (the baseline is the guest before the load, never after it).
        booted = guest.memory_base = guest.memory_bytes
        try:
            self._request(guest, self._load_message, wall_ms=self.limits.wall_ms, cpu_ms=self.limits.cpu_ms)
        except wasm_wire.NotData as error:
            self._retire()
            raise PhaseError(f"loading: {error}") from None
        self._loaded_bytes = booted
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

    def _request(self, guest, message: dict, *, wall_ms=None, cpu_ms=None, limited=True, resume=False) -> dict:
        """One round trip; a violation or failure retires the guest and raises.
        ``NotData`` (nothing could be sent; the guest is fine) is the caller's to handle."""
        from poet_runtime.backends.wasm_instance import GuestFailure

        try:
            if resume:
                reply = guest.resume(message)
            else:
                reply = guest.request(message, wall_ms=wall_ms, cpu_ms=cpu_ms, limited=limited)
        except GuestFailure as failure:
            self._retire()
            raise PoetViolation(self.function_id, failure.limit, failure.detail) from None
        op = message.get("op")
        in_call = op in _IN_CALL
        status = reply.get("status")
        if status == "ok" or (in_call and status in _CONVERSATION):
            return reply
        if status == "violation":
            self._retire()
            # The guest's words: bounded, and shown visibly (they reach logs and events).
            limit = visible(str(reply.get("limit") or "crash")[:40], allow_newlines=False)
            raise PoetViolation(self.function_id, limit, visible(str(reply.get("detail") or "")[:500], allow_newlines=False))
        where = "loading" if op == "load" else "the call" if in_call else op
        kind = str(reply.get("type"))[:100]
        text = visible(str(reply.get("message"))[:2000], allow_newlines=False)
        if status in ("error", "phase"):
            # Generated code failed on its own (the user's logic never runs here): a
            # sandbox failure, never the user's error.
            text = f"{where}: {kind}: {text}"
        else:
            self._retire()
            text = f"unexpected reply from the sandbox: {json.dumps(reply)[:200]}"
        if op == "load":
            self._retire()
        if kind == "InternalError" and status == "phase":
            raise _internal_error(str(reply.get("phase"))[:40], text[:2000])
        raise self._errors.get(kind, PhaseError)(text[:2000])


def _internal_error(phase: str, text: str):
    """Generated code failed on its own in ``phase``, as the driver says in-process
    (the call path reports it as ``<phase>_error``)."""
    error = InternalError.__new__(InternalError)
    PhaseError.__init__(error, text)
    error.phase = phase if phase in _PHASES else "internal"
    return error


def _refs_where_text_fails(host: HostCall, message: dict) -> None:
    """Send as references the arguments whose data JSON text cannot hold."""
    args, kwargs = message["args"], message["kwargs"]
    for token, item in enumerate(args):
        if item[0] == "d" and not wasm_wire.fits_json(item[1]):
            args[token] = ["r", type_names(host.values[token])]
    for offset, name in enumerate(kwargs):
        item = kwargs[name]
        if item[0] == "d" and not wasm_wire.fits_json(item[1]):
            kwargs[name] = ["r", type_names(host.values[len(args) + offset])]


# Fork safety. A forked child has none of the parent's threads: not its guests' (each
# guest runs on one), not the legs' pool, maybe not a lock's holder. The child drops
# the parent's guests (never stops them: they are the parent's) and takes fresh locks;
# a child of a process that had started wasmtime cannot run guests at all (wasmtime's
# own threads are gone too: ``wasm_engine.usable``), so its calls run the original;
# one forked before wasmtime started starts its own guests on demand.
_all: "weakref.WeakSet[WasmEnhancement]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    global _legs, _legs_lock
    _legs, _legs_lock = None, threading.Lock()
    _live._lock = threading.Lock()
    _live._order.clear()
    for enhancement in list(_all):
        enhancement._lock = threading.Lock()
        enhancement._guest = enhancement._call_guest = None
        enhancement._retired = []
        enhancement._owner_thread = enhancement._owner_task = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
