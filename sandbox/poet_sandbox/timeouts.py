"""A wall-clock timeout for synchronous user logic.

Python cannot stop a running thread, so a timed-out call keeps running in its
daemon thread while the caller gets ``TimeoutError`` at once. Only used when a
timeout is configured: the plain path pays nothing for it.
"""

import threading

_pool_lock = threading.Lock()
_pool = None


def _executor():
    global _pool
    with _pool_lock:
        if _pool is None:
            from concurrent.futures import ThreadPoolExecutor

            _pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="poet-timeout")
        return _pool


def call_with_timeout(fn, args, kwargs, seconds: float):
    """Run ``fn(*args, **kwargs)``; raise ``TimeoutError`` after ``seconds``."""
    from concurrent.futures import TimeoutError as FutureTimeout

    future = _executor().submit(fn, *args, **kwargs)
    try:
        return future.result(timeout=seconds)
    except FutureTimeout:
        future.cancel()
        raise TimeoutError(f"call exceeded its timeout of {seconds:g} s") from None
