"""Timeouts that run the logic in the caller's own thread (or task).

The logic must see what the caller's thread sees: thread-locals, context
variables, a sqlite connection the thread opened. So nothing here moves the
call to another thread. Instead the call is interrupted where it runs:

- in the main thread, when nobody else uses ``SIGALRM``: a real-time timer whose
  handler raises. That stops Python code and blocking calls that return on a
  signal (``time.sleep``, most socket and pipe reads);
- in any other thread (or when the alarm is taken): a watchdog thread raises the
  timeout asynchronously in the caller's thread. That stops Python code between
  two bytecodes, but NOT a call blocked in C (a sleep, a socket read): the
  timeout is then raised as soon as that call returns;
- ``async`` logic: ``asyncio.timeout`` in the caller's task (it cancels an await).

Either way the caller gets ``TimeoutError``. Inside a sandbox the logic is a
``crossing.LogicProxy`` and the host applies the timeout around the real call.

A timeout leaves the process as it found it: the ``SIGALRM`` handler and timer
restored, the watchdog thread ended, and no asynchronous exception pending or
*signalled*. The last one matters: CPython keeps one interpreter-wide "an async
exception is pending" flag, cleared only when a thread raises one. Taking an
exception back with ``PyThreadState_SetAsyncExc(id, NULL)`` sets that flag and
nothing ever clears it; on 3.11 every traced thread (the LLM probes' deadline
tracer, a debugger, coverage) then spins forever at its next function entry.
So an exception is taken back by replacing it with a private one and raising
that here, at once (``_take_back``).
"""

import threading
import time

from poet_sandbox.crossing import is_proxy


class _Expired(BaseException):
    """Raised into the logic at its deadline; a BaseException so that the logic's own
    ``except Exception`` does not swallow it. Turned into TimeoutError on the way out."""


def _message(seconds: float) -> str:
    return f"call exceeded its timeout of {seconds:g} s"


def call_with_timeout(fn, args, kwargs, seconds: float):
    """Run ``fn(*args, **kwargs)`` here; raise ``TimeoutError`` after ``seconds``."""
    if is_proxy(fn):
        return fn.with_timeout(args, kwargs, seconds)
    guard = _alarm_guard(seconds) or _WatchdogGuard(seconds)
    try:
        try:
            guard.start()  # inside: whatever interrupts a half-done start, stop() still undoes it
            return fn(*args, **kwargs)
        finally:
            guard.stop()
    except _Expired:
        # The expiry may have cut the first stop short (it arrives at any function entry);
        # it fires once, so this one runs to the end.
        guard.stop()
    raise TimeoutError(_message(seconds))


async def call_with_timeout_async(fn, args, kwargs, seconds: float):
    """Await ``fn(*args, **kwargs)`` in this task; ``TimeoutError`` after ``seconds``."""
    if is_proxy(fn):
        return await fn.with_timeout(args, kwargs, seconds)
    import asyncio

    try:
        async with asyncio.timeout(seconds):
            return await fn(*args, **kwargs)
    except TimeoutError:
        pass
    raise TimeoutError(_message(seconds))


async def sleep_async(seconds: float) -> None:
    """``asyncio.sleep`` where there is an event loop (a WASI guest has none: it blocks)."""
    try:
        import asyncio

        asyncio.get_running_loop()
    except (ImportError, RuntimeError):
        time.sleep(seconds)
        return
    await asyncio.sleep(seconds)


# --- main thread: SIGALRM ----------------------------------------------------------------

def _alarm_guard(seconds):
    try:
        import signal
    except ImportError:
        return None
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        return None
    try:
        # Only when the handler is the default one, which stop() can put back (None is a
        # handler installed from C, which Python cannot restore).
        if signal.getsignal(signal.SIGALRM) is not signal.SIG_DFL or signal.getitimer(signal.ITIMER_REAL)[0]:
            return None  # the program uses the alarm itself, or an outer timeout holds it
    except (ValueError, OSError):
        return None
    return _AlarmGuard(signal, seconds)


class _AlarmGuard:
    def __init__(self, signal, seconds):
        self.signal = signal
        self.seconds = seconds
        self.armed = False

    def _expire(self, signum, frame):
        if self.armed:
            self.armed = False
            raise _Expired()

    def start(self):
        signal = self.signal
        signal.signal(signal.SIGALRM, self._expire)
        self.armed = True
        signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def stop(self):
        """Idempotent: called again when the expiry interrupted it."""
        signal = self.signal
        self.armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)


# --- other threads: an asynchronous exception from a watchdog ----------------------------

class _WatchdogGuard:
    def __init__(self, seconds):
        self.seconds = seconds
        self.lock = threading.Lock()
        self.done = False
        self.fired = False
        self.thread_id = threading.get_ident()
        self.timer = None

    def _fire(self):
        with self.lock:
            if self.done:
                return
            self.fired = _set_async_exc(self.thread_id, _Expired)

    def start(self):
        self.timer = threading.Timer(self.seconds, self._fire)
        self.timer.daemon = True
        self.timer.name = "poet-timeout"
        self.timer.start()

    def stop(self):
        """Idempotent: called again when the expiry interrupted it. After it, the timer
        cannot fire, its thread has ended and nothing is pending for this thread."""
        with self.lock:
            self.done = True
            fired, self.fired = self.fired, False
        if fired:
            # Raised already, or about to be (the call ended just as it fired): either way
            # nothing may stay pending, and nothing may stay signalled.
            _take_back()  # stop() runs in the caller's thread, the one it fired at
        timer = self.timer
        if timer is not None:
            timer.cancel()
            try:
                timer.join()  # it only has to wake up and return: no stray thread per call
            except RuntimeError:
                pass  # never started (start() was interrupted)


class _Revoked(BaseException):
    """Replaces a pending ``_Expired`` in ``_take_back``; raised and caught there."""


def _take_back() -> None:
    """Leave the calling thread with no pending asynchronous exception and the interpreter's
    flag for one cleared (see the module docstring), whether or not ``_Expired`` was raised.

    Setting ``_Revoked`` replaces a pending ``_Expired``; CPython raises it at its next
    check (right after the C call that set it, or at the next function entry), and
    raising it is what clears the flag.
    """
    try:
        if not _set_async_exc(threading.get_ident(), _Revoked):
            return
        _arrive()
        for _ in range(100_000):  # an interpreter that checks only on backward jumps
            pass
    except _Revoked:
        return


def _arrive() -> None:
    """Does nothing: entering it is where a pending asynchronous exception is raised."""


def _set_async_exc(thread_id, exc_type) -> bool:
    try:
        import ctypes

        set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
    except (ImportError, AttributeError):
        return False
    if exc_type is None:
        raise ValueError("never revoke with NULL: it leaves the interpreter's async-exception flag set")
    changed = set_async_exc(ctypes.c_ulong(thread_id), ctypes.py_object(exc_type))
    return changed == 1
