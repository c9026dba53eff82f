"""One live WASM guest: a CPython-on-WASI instance on its own thread, fed requests.

Why a thread per guest: the guest stays inside its ``run`` export for its whole
life, looping in ``sandbox/harness/wasm_guest.py``; each time it wants work it
calls the host import ``host.call`` (the door), which hands its previous reply to
the waiting caller and blocks until the next request. Per request that is two
queue hand-offs instead of a fresh interpreter (~20 ms).

A call may take several requests: when generated code calls the user's logic, the
guest's intermediate reply asks the host to run it, and the host's next request
(``resume``) answers; the call's limits then go on where they were, so they count
the guest's own time in the call and not the host's time in the logic.

Limits, armed in the door for each call's first request (so they are per call, not
per guest) and carried over by every request that resumes it:
- CPU: fuel, refilled to the call's budget (cpu_ms x FUEL_PER_MS); a resumed
  request has what was left;
- wall time: the epoch callback (``wasm_epoch``; the shared ticker advances the
  epoch) stops a running guest once the request's deadline has passed, and our own
  ``poll_oneoff`` never sleeps past it, so a blocking ``time.sleep`` ends too; the
  caller also stops waiting shortly after the deadline, whatever the guest does; a
  resumed request gets the wall time that was left when the guest asked the host;
- memory: ``store.set_limits`` re-armed per request to ``memory_base`` (the
  started guest, before the generated module was loaded) plus the policy's
  ``memory_mb``, so what the module's body and earlier calls kept counts against
  the call (limits hold from the first byte); before ``memory_base`` is set, the
  guest's current size plus ``memory_mb``. Surfaces as MemoryError in the guest,
  which the harness reports. Wasm memory never shrinks, so the caller also
  replaces a guest that has grown by more than that overall;
- output: per call, stdout plus each encoded reply. stdout goes to a callback that
  fails writes past the cap (the guest sees EIO) and flags the violation; stderr is
  not connected, it goes nowhere (a sink: costs the guest CPU, nothing else).

The host functions are defined once per process on one linker and find their guest
through a thread-local (each guest runs on its own thread). They never raise into
wasmtime-py (its exception slot is process-wide): errors become WASI errno values.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import queue
import struct
import sys
import threading
import time
import weakref

from poet_runtime.backends import wasm_engine, wasm_epoch, wasm_poll
from poet_runtime.backends.wasm_wire import NotData

MASK32 = 0xFFFFFFFF
MIB = 1 << 20

# Fuel per millisecond of guest CPU time, measured on the machine this was written
# on (2 shared cores, x86-64, wasmtime 49) with ``wasm_fresh.calibrate()``, which
# reads the guest thread's CPU clock. It varies with the code and with how busy
# the core's sibling is: 4.5-7.6 M/ms for mixed dict/string work, 4.7-8.3 M/ms for
# json, 6.9-13.2 M/ms for a bare ``while True: pass``. We take 5 M/ms, the low end
# of typical code, so that a call is stopped at 0.4-1.1 x its cpu_ms: a limit that
# is met, seldom overshot. Override with POET_WASM_FUEL_PER_MS after calibrating
# other hardware.
def env_int(variable: str, default: int, low: int, high: int) -> int:
    """A whole-number tuning variable; ``default`` when unset or bad (settings.py reports a bad one at start-up)."""
    try:
        value = int((os.environ.get(variable) or "").strip() or default)
    except ValueError:
        return default
    return value if low <= value <= high else default


FUEL_PER_MS = env_int("POET_WASM_FUEL_PER_MS", 5_000_000, 1, 10**12)
UNLIMITED_FUEL = (1 << 63) - 1
NO_DEADLINE_TICKS = 1 << 40
# Starting a guest and loading the generated module: a budget of its own, since it
# is not a call (the snapshot starts on ~55 M fuel and 40 MB; numpy costs more).
START_WALL_MS = 30_000
START_CPU_MS = 20_000
START_MEMORY_MB = 1024
# How long the caller waits past a request's deadline for the guest to trap.
GRACE_S = 1.0
MAX_FRAME = 64 * MIB

# WASI preview1 errno values.
EINVAL, EIO, EFAULT = 28, 29, 21
NO_HOST, HOST_FAULT = -1, -2  # what the harness's ``_host.call`` turns into exceptions

_QUIT = object()
_DIED = object()
_local = threading.local()
# wasmtime-py keeps custom-output callbacks in an unlocked table that stores use
# when they are configured and closed; we do both under this lock.
_table_lock = threading.Lock()
_linker = None
# Every custom stdout wasmtime still holds. wasmtime-wasi drops a store's stdout on one
# of its tokio worker threads, some time after the store is closed, and calls our
# finalizer (Python) there: if the interpreter is finalizing by then, that thread is
# ended by pthread_exit inside Rust code that cannot unwind, and the process aborts
# (SIGABRT, "panic in a function that cannot unwind"). So at exit we wait for these.
_outputs: "weakref.WeakSet" = weakref.WeakSet()


class _Output:
    """A custom stdout callback, tracked until wasmtime has finalized (dropped) it.

    Nothing but wasmtime's table may hold it (a reference from the guest would make a
    cycle, freed only by the garbage collector, so ``settle_outputs`` would wait for it)."""

    __slots__ = ("write", "__weakref__")

    def __init__(self, write):
        self.write = write

    def __call__(self, data: bytes):
        return self.write(data)


def tracked_output(write) -> _Output:
    """``write`` as a custom stdout (``WasiConfig.stdout_custom``) that ``settle_outputs`` waits for."""
    output = _Output(write)
    _outputs.add(output)
    return output


def _in_wasmtime_callback(own: int) -> bool:
    """True while a thread other than ``own`` runs one of wasmtime-py's output callbacks."""
    for ident, frame in sys._current_frames().items():
        if ident == own:
            continue
        while frame.f_back is not None:
            frame = frame.f_back
        code = frame.f_code
        if code.co_name in ("custom_call", "custom_finalize") and "wasmtime" in code.co_filename:
            return True
    return False


def settle_outputs(timeout: float = 2.0) -> bool:
    """Wait until wasmtime has finalized every custom stdout of a closed store and no
    thread of its runs our callbacks any more; False if that took longer than ``timeout``.

    Call after the guests' stores are closed (their threads joined), before the
    interpreter finalizes."""
    own = threading.get_ident()
    deadline = time.monotonic() + timeout
    while len(_outputs) or _in_wasmtime_callback(own):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.002)  # lets the tokio worker take the GIL and finish
    return True


class GuestFailure(Exception):
    """The guest broke a limit or died; ``limit`` names which (``wall_ms``, ``cpu_ms``, ...)."""

    def __init__(self, limit: str, detail: str):
        super().__init__(f"{limit}: {detail}")
        self.limit = limit
        self.detail = detail


def fuel_for(cpu_ms):
    return UNLIMITED_FUEL if cpu_ms is None else max(1, int(cpu_ms * FUEL_PER_MS))


class Guest:
    """A started guest, ready for ``request``. Not thread-safe: one request at a time."""

    def __init__(self, argv, preopens, *, memory_mb=None, max_output_kb=None, start_wall_ms=START_WALL_MS):
        import wasmtime as wt

        self._requests = queue.SimpleQueue()
        self._replies = queue.SimpleQueue()
        self.output_len = 0  # bytes written to stdout during the current request
        self.output_cap = None if max_output_kb is None else int(max_output_kb * 1024)
        self.output_exceeded = False
        self.memory_mb = memory_mb  # what one call may add to the guest's memory
        self.memory_bytes = 0  # the guest's linear memory when it last answered
        self.memory_base = None  # what memory_mb counts from (set by the caller before loading)
        self.deadline = None  # monotonic seconds at which the current request's wall time ends
        self.wall_left_s = None  # what was left of it when the guest last answered
        self.failure = None  # GuestFailure once the guest has died
        self.wall_exceeded = False  # set by the epoch callback when it stops the guest
        self.calls = 0  # calls served (not counting load/configure)
        self._sent = 0  # requests sent; each reply must carry its request's id
        self._armed = False
        self._closed = False
        self._memory = self._alloc = None  # the guest's exports, found at its first door call

        self._store = wt.Store(wasm_engine.engine())
        wasi = wt.WasiConfig()
        wasi.argv = argv
        wasi.env = []  # nothing of the host's environment
        if os.environ.get("POET_WASM_DEBUG"):
            wasi.inherit_stderr()  # for debugging the harness only
        for host_path, guest_path in preopens:
            wasi.preopen_dir(host_path, guest_path, False)  # read-only
        with _table_lock:
            wasi.stdout_custom = tracked_output(self._write_stdout)  # the guest does not keep it: no cycle
            # wasmtime's monotonic clock for the guest counts from about here: the
            # origin turns the guest's absolute sleeps (clock_nanosleep) into waits.
            self._origin_ns = time.perf_counter_ns()
            self._store.set_wasi(wasi)
        try:
            if memory_mb is not None:
                self._store.set_limits(memory_size=(START_MEMORY_MB + memory_mb) * MIB)
            self._watched = wasm_epoch.watch(self._store, _current_guest)
            self._thread = threading.Thread(target=self._main, name="poet-wasm-guest", daemon=True)
            self._start = (fuel_for(START_CPU_MS), start_wall_ms, None, False)
            self._thread.start()
        except BaseException:
            with _table_lock:  # never left to the garbage collector (see _table_lock)
                self._store.close()
            raise
        reply = self._wait(start_wall_ms)
        if reply.get("status") != "ready":
            self.kill()
            raise GuestFailure("crash", f"the guest did not start: {reply!r:.200}")

    # --- caller side ---------------------------------------------------------------------

    def request(self, message: dict, *, wall_ms=None, cpu_ms=None, limited=True) -> dict:
        """Send one request and return the guest's reply; raise GuestFailure on a violation.

        ``limited=False`` (loading) gives the request the start-up memory budget and
        no output cap."""
        memory = self.memory_mb if limited else (None if self.memory_mb is None else START_MEMORY_MB + self.memory_mb)
        self.calls += message.get("op") == "call"
        return self._exchange(message, (fuel_for(cpu_ms), wall_ms, memory, False), wall_ms, limited)

    def resume(self, message: dict) -> dict:
        """Answer the guest's intermediate reply (a logic request) within the same call.

        The call's budgets go on where the guest left them when it asked: the fuel it
        has left, the wall time it had left (the host's time in between is not the
        guest's), the memory limit and the output count of the call's first request."""
        wall_ms = None if self.wall_left_s is None else max(0.0, self.wall_left_s * 1000)
        return self._exchange(message, (None, wall_ms, None, True), wall_ms, True)

    def _exchange(self, message: dict, budget: tuple, wall_ms, capped: bool) -> dict:
        if self.failure is not None:
            raise self.failure
        try:
            frame = json.dumps({**message, "id": self._sent + 1}, allow_nan=True).encode()
        except (ValueError, TypeError, RecursionError) as error:  # e.g. an int too long for text
            raise NotData(f"cannot be sent to the sandbox: {error}") from None
        self._sent += 1
        self._requests.put((frame, *budget))
        try:
            reply = self._wait(wall_ms, capped=capped)
        except GuestFailure:
            raise
        except BaseException:
            # Interrupted while waiting (Ctrl-C in the caller): this guest's answer
            # would arrive for nobody. Stop it; the next call starts another.
            if self.failure is None:
                self.failure = GuestFailure("crash", "the caller stopped waiting")
            self.kill()
            raise
        if reply.get("id") != self._sent:
            # Generated code called the door itself: the guest is out of step with us.
            self.failure = GuestFailure("crash", "the guest answered out of turn")
            self.kill()
            raise self.failure
        return reply

    def _wait(self, wall_ms, capped=False) -> dict:
        timeout = None if wall_ms is None else wall_ms / 1000 + GRACE_S
        try:
            frame = self._replies.get(timeout=timeout)
        except queue.Empty:
            # The epoch deadline should have trapped it long ago: give up on this guest.
            self.failure = GuestFailure("wall_ms", f"no answer within {wall_ms} ms")
            self.kill()
            raise self.failure from None
        if frame is _DIED:
            raise self.failure
        if frame is None or len(frame) > MAX_FRAME:
            self.failure = GuestFailure("crash", "the guest sent a malformed frame")
            self.kill()
            raise self.failure
        if capped and self.output_cap is not None and (
            self.output_exceeded or self.output_len + len(frame) > self.output_cap
        ):
            self.failure = GuestFailure("max_output_kb", f"more than {self.output_cap // 1024} KB of output and result")
            self.kill()
            raise self.failure
        try:
            reply = json.loads(frame)
        except (ValueError, RecursionError):
            reply = None
        if not isinstance(reply, dict):
            self.failure = GuestFailure("crash", "the guest sent a reply that is not a JSON object")
            self.kill()
            raise self.failure
        return reply

    @property
    def alive(self) -> bool:
        return self.failure is None and not self._closed

    def kill(self) -> None:
        """Stop the guest: a waiting guest quits now, a running one is stopped at the next
        epoch tick (its deadline moves to now); its store is closed by its own thread
        when ``run`` returns. Safe from any thread."""
        if self._closed:
            return
        if self.failure is None:
            self.failure = GuestFailure("crash", "the guest was closed")
        self._closed = True
        self.deadline = 0.0
        self._requests.put(_QUIT)

    close = kill

    def join(self, timeout=None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # --- guest thread --------------------------------------------------------------------

    def _main(self) -> None:
        import wasmtime as wt

        _local.guest = self
        store = self._store
        try:
            self._arm(*self._start)
            instance = linker().instantiate(store, wasm_engine.module())
            instance.exports(store)["run"](store)
            self._died("crash", "the guest's interpreter exited")
        except wt.ExitTrap as error:
            self._died("crash", f"the guest exited with status {error.code}")
        except wt.Trap as error:
            self._died(*_trap_limit(error, self))
        except wt.WasmtimeError as error:
            text = str(error)
            if self.wall_exceeded:
                self._died("wall_ms", "the call ran past its wall-time deadline")
            elif "memory" in text and "limit" in text:
                self._died("memory_mb", text.strip().splitlines()[0])
            else:
                self._died("crash", text.strip().splitlines()[0] if text.strip() else "wasmtime error")
        except BaseException as error:  # noqa: BLE001 - the host thread must end cleanly
            self._died("crash", f"{type(error).__name__}: {error}")
        finally:
            self._disarm()
            with _table_lock:
                store.close()
            self._closed = True
            self._replies.put(_DIED)

    def _died(self, limit: str, detail: str) -> None:
        if self.output_exceeded:
            limit, detail = "max_output_kb", f"more than {self.output_cap // 1024} KB written"
        if self.failure is None:  # the first cause wins (a kill or a timeout came first)
            self.failure = GuestFailure(limit, detail)

    def _arm(self, fuel, wall_ms, memory_mb, resumed=False) -> None:
        if not resumed:  # a resumed request keeps the fuel left and the output counted
            self._store.set_fuel(fuel)
            self.output_len = 0
        if memory_mb is not None:
            base = self.memory_bytes if self.memory_base is None else self.memory_base
            self._store.set_limits(memory_size=base + int(memory_mb * MIB))
        self.deadline = None if wall_ms is None else time.monotonic() + wall_ms / 1000
        if self._watched:
            self._store.set_epoch_deadline(1)  # the callback decides at every tick
        elif wall_ms is None:
            self._store.set_epoch_deadline(NO_DEADLINE_TICKS)
        else:
            self._store.set_epoch_deadline(max(1, math.ceil(wall_ms / 1000 / wasm_engine.TICK_S)) + 1)
        if not self._armed:
            wasm_engine.ticker.__enter__()
            self._armed = True

    def _disarm(self) -> None:
        if self._armed:
            wasm_engine.ticker.__exit__()
            self._armed = False
        self.deadline = None

    def door(self, caller, ptr, length, out_ptr_ptr, out_len_ptr) -> int:
        """The guest hands over its reply and gets the next request (blocking).

        Guest memory is read and written through its raw pointer (bounds-checked
        here), and the guest's ``memory`` and ``host_alloc`` exports are looked up
        once per guest: wasmtime-py's general accessors cost ~100 us a request."""
        deadline = self.deadline
        self.wall_left_s = None if deadline is None else deadline - time.monotonic()
        self._disarm()
        if self._memory is None:
            self._memory, alloc = caller.get("memory"), caller.get("host_alloc")
            if self._memory is None or alloc is None:
                self._replies.put(None)
                return HOST_FAULT
            self._alloc = _i32_to_i32(alloc, caller)
        memory = self._memory
        ptr, length = ptr & MASK32, length & MASK32
        out_ptr_ptr, out_len_ptr = out_ptr_ptr & MASK32, out_len_ptr & MASK32
        size = memory.data_len(caller)
        self.memory_bytes = size
        if ptr + length > size or out_ptr_ptr + 4 > size or out_len_ptr + 4 > size or length > MAX_FRAME:
            self._replies.put(None)
        else:
            self._replies.put(ctypes.string_at(_address(memory, caller) + ptr, length))
        if self._closed:
            return NO_HOST  # killed while running: the harness ends its loop on this
        item = self._requests.get()
        if item is _QUIT:
            return NO_HOST
        frame, fuel, wall_ms, memory_mb, resumed = item
        self._arm(fuel, wall_ms, memory_mb, resumed)
        address = self._alloc(caller, len(frame)) & MASK32
        # The allocation may have grown (and so moved) the memory: size and base again.
        if not address or address + len(frame) > memory.data_len(caller):
            return HOST_FAULT
        base = _address(memory, caller)
        ctypes.memmove(base + address, frame, len(frame))
        ctypes.memmove(base + out_ptr_ptr, struct.pack("<I", address), 4)
        ctypes.memmove(base + out_len_ptr, struct.pack("<I", len(frame)), 4)
        return 0

    def poll_oneoff(self, caller, in_ptr, out_ptr, count, nevents_ptr) -> int:
        """WASI's wait, cut short at the request's deadline (the epoch callback then
        stops the guest at its next check). Decoding is ``wasm_poll.plan``'s."""
        memory = caller.get("memory")
        in_ptr, out_ptr, count, nevents_ptr = (v & MASK32 for v in (in_ptr, out_ptr, count, nevents_ptr))
        if count > wasm_poll.MAX_SUBSCRIPTIONS:
            return wasm_poll.ENOMEM
        size = memory.data_len(caller)
        if in_ptr + 48 * count > size or out_ptr + 32 * count > size or nevents_ptr + 4 > size:
            return EFAULT
        errno, wait_s, events = wasm_poll.plan(bytes(memory.read(caller, in_ptr, in_ptr + 48 * count)), self._origin_ns)
        if errno is not None:
            return errno
        if wait_s > 0:
            self._sleep(wait_s)
        memory.write(caller, wasm_poll.encode_events(events), out_ptr)
        memory.write(caller, struct.pack("<I", len(events)), nevents_ptr)
        return 0

    def _sleep(self, seconds: float) -> None:
        """Sleep in slices, re-reading the deadline (``kill`` moves it to now)."""
        until = time.monotonic() + seconds
        while not self._closed:
            end = until
            if self.deadline is not None:
                # Past the deadline, wait one more tick so the epoch is surely past it too.
                end = min(end, self.deadline + 2 * wasm_engine.TICK_S)
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.05))

    def _write_stdout(self, data: bytes):
        # Only counted, never kept: nobody reads a guest's prints.
        if self.output_cap is not None and self.output_len + len(data) > self.output_cap:
            self.output_exceeded = True
            return -EIO  # the guest's write fails; the caller reports the violation
        self.output_len += len(data)
        return None


def _address(memory, caller) -> int:
    """Where the guest's linear memory starts in this process, now."""
    return ctypes.cast(memory.data_ptr(caller), ctypes.c_void_p).value


def _i32_to_i32(func, caller):
    """A faster way to call an exported ``(i32) -> i32`` function from a host call.

    wasmtime-py's ``Func.__call__`` reads the function's type again and builds its
    argument arrays on every call (~40 us of a request here); this makes the same
    call through the private binding ``wasm_epoch`` already relies on, with arrays
    made once. Without that binding, or for another type, the public call it is."""
    try:
        import wasmtime
        from wasmtime import _ffi as ffi
        from wasmtime._func import enter_wasm

        kind = func.type(caller)
        if [str(t) for t in kind.params] != ["i32"] or [str(t) for t in kind.results] != ["i32"]:
            return func
        params, results = (ffi.wasmtime_val_t * 1)(), (ffi.wasmtime_val_t * 1)()
        target = ctypes.byref(func._func)
        call_raw, error_from = ffi.wasmtime_func_call, wasmtime.WasmtimeError._from_ptr
        i32 = getattr(ffi.WASMTIME_I32, "value", ffi.WASMTIME_I32)
    except (ImportError, AttributeError, TypeError):
        return func

    def call(caller, value):
        params[0].kind = i32
        params[0].of.i32 = value
        with enter_wasm(caller) as trap:  # raises the guest's trap, as Func.__call__ does
            error = call_raw(caller._context(), target, params, 1, results, 1, trap)
            if error:
                raise error_from(error)
        return results[0].of.i32

    call.func = func  # keeps the export alive as long as the call
    return call


def _current_guest():
    return getattr(_local, "guest", None)


def _trap_limit(error, guest) -> tuple[str, str]:
    import wasmtime as wt

    code = error.trap_code
    if guest.wall_exceeded:
        return "wall_ms", "the call ran past its wall-time deadline"
    if code == wt.TrapCode.OUT_OF_FUEL:
        return "cpu_ms", "the call used up its CPU budget (fuel)"
    if code == wt.TrapCode.INTERRUPT:
        return "wall_ms", "the call ran past its wall-time deadline"
    if code == wt.TrapCode.STACK_OVERFLOW:
        return "crash", "the guest overflowed its stack"
    name = code.name.lower() if code is not None else "trap"
    return "crash", f"the guest trapped: {name}"


# --- the shared linker ---------------------------------------------------------------------


def _shared(method: str, fallback: int):
    """A host function that finds the guest of the calling thread and never raises."""

    def call(caller, *args):
        guest = getattr(_local, "guest", None)
        if guest is None:
            return fallback
        try:
            return getattr(guest, method)(caller, *args)
        except Exception:  # noqa: BLE001 - an exception must not cross into wasmtime-py
            return fallback

    return call


def linker():
    """One linker per process: WASI, our poll_oneoff over WASI's, and the door."""
    global _linker
    with _table_lock:
        if _linker is None:
            import wasmtime as wt

            made = wt.Linker(wasm_engine.engine())
            made.define_wasi()
            made.allow_shadowing = True
            i32 = wt.ValType.i32()
            four = wt.FuncType([i32] * 4, [i32])
            made.define_func("wasi_snapshot_preview1", "poll_oneoff", four, _shared("poll_oneoff", EINVAL), True)
            made.define_func("host", "call", four, _shared("door", HOST_FAULT), True)
            _linker = made
        return _linker


def release_linker() -> None:
    global _linker
    with _table_lock:
        if _linker is not None:
            _linker.close()
            _linker = None
