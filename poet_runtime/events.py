"""An in-process event bus: the call path says what happened, listeners decide what to keep.

The call path emits plain dicts (``type`` plus fields) and never waits on storage.
The durable queue under ``.poet/events/`` (the learning subsystem) subscribes here;
tests and the CLI summary subscribe too. A listener that raises is dropped from the
call path's concern: it is logged once and never breaks a user's call.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

Listener = Callable[[dict[str, Any]], None]

_listeners: list[Listener] = []
_lock = threading.Lock()
_broken: set[int] = set()
log = logging.getLogger("poet_runtime")


def _after_fork_in_child() -> None:
    _lock._at_fork_reinit()  # another thread may have held it at the fork


if hasattr(__import__("os"), "register_at_fork"):
    __import__("os").register_at_fork(after_in_child=_after_fork_in_child)


def subscribe(listener: Listener) -> Callable[[], None]:
    """Add a listener; returns a function that removes it."""
    with _lock:
        _listeners.append(listener)

    def unsubscribe() -> None:
        with _lock:
            if listener in _listeners:
                _listeners.remove(listener)

    return unsubscribe


def has_listeners() -> bool:
    return bool(_listeners)


def emit(event_type: str, **fields: Any) -> None:
    if not _listeners:
        return
    event = {"type": event_type, **fields}
    for listener in tuple(_listeners):
        try:
            listener(event)
        except Exception:  # a broken listener must never break a user's call
            if id(listener) not in _broken:
                _broken.add(id(listener))
                log.exception("poet_runtime: event listener %r failed", listener)
