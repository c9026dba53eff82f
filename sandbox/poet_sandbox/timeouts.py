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
        guard.start()
        try:
            return fn(*args, **kwargs)
        finally:
            guard.stop()
    except _Expired:
        pass
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
        if signal.getsignal(signal.SIGALRM) not in (signal.SIG_DFL, None) or signal.getitimer(signal.ITIMER_REAL)[0]:
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
        with self.lock:
            self.done = True
            fired = self.fired
        self.timer.cancel()
        if fired:
            # Fired just as the call ended: take back an exception not yet delivered.
            _set_async_exc(self.thread_id, None)


def _set_async_exc(thread_id, exc_type) -> bool:
    try:
        import ctypes
    except ImportError:
        return False
    target = ctypes.py_object(exc_type) if exc_type is not None else None
    changed = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), target)
    return changed == 1
