"""Process-wide runtime state: whether POET is on, and what the enhanced functions did.

Kept tiny and import-free so that the decorator can ask ``is_enabled()`` without
pulling in the generator, the store or any backend.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import Counter
from dataclasses import dataclass, field

_enabled = False
_lock = threading.Lock()


def fresh_lock(lock) -> None:
    """Make a lock inherited by a forked child usable again, in place (another thread of
    the parent may have held it at the fork: in the child nobody ever releases it)."""
    lock._at_fork_reinit()


def is_enabled() -> bool:
    return _enabled


def set_enabled(value: bool) -> None:
    global _enabled
    _enabled = value


@dataclass
class FunctionStats:
    """Counters of one enhanced function, for the exit summary and ``stats()``."""

    function_id: str
    version: int | None = None
    backend: str | None = None
    enhanced_calls: int = 0  # P -> O' -> E completed
    errors: int = 0  # the user's logic raised and the exception reached the caller
    fallbacks: Counter = field(default_factory=Counter)  # reason -> count
    # (kind, field) -> count: values reported as not matching their hint ("mismatch"),
    # repairs the domain or repair="coerce" made ("repair"), retries ("retry").
    notes: Counter = field(default_factory=Counter)

    @property
    def calls(self) -> int:
        # Derived, so the hot path increments one counter, not two.
        return self.enhanced_calls + self.errors + sum(self.fallbacks.values())


_stats: dict[str, FunctionStats] = {}

# The file names of generated modules loaded in this process (their frames are POET's
# own: a user's traceback does not show them).
generated_files: set[str] = set()
# The code objects of enhanced callables' wrappers (they report the user's file and line).
wrapper_codes: set = set()

# Set by the import hook while it is installed: called with a module's name when one of
# its @poet functions reaches the call path without the hook having bound it.
on_unhooked = None


# Every enhanced function's state in this process (weakly: a function that goes away goes).
states: "weakref.WeakSet" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """The child starts with its own counters and usable locks; a generation the parent's
    thread was running did not come along, so the child's next call starts its own."""
    fresh_lock(_lock)
    for entry in _stats.values():
        entry.enhanced_calls = entry.errors = 0
        entry.fallbacks.clear()
        entry.notes.clear()
    for state in list(states):
        fresh_lock(state.lock)
        thread = state.background
        if thread is not None and not thread.is_alive() and state.loaded is None and state.disabled is None:
            state.background = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def stats_for(function_id: str) -> FunctionStats:
    with _lock:
        entry = _stats.get(function_id)
        if entry is None:
            entry = _stats[function_id] = FunctionStats(function_id)
        return entry


def rename_stats(old: str, new: str) -> FunctionStats:
    """The import hook told us a function's real identity (a script's functions are not ``__main__``'s)."""
    with _lock:
        entry = _stats.pop(old, None) or FunctionStats(new)
        entry.function_id = new
        merged = _stats.setdefault(new, entry)
        return merged


def stats() -> dict[str, FunctionStats]:
    """A snapshot of every enhanced function's counters in this process."""
    with _lock:
        return dict(_stats)


def reset_stats() -> None:
    with _lock:
        _stats.clear()


def state_of(obj):
    """The runtime state behind an enhanced callable (or a static/class method around
    one), or None. Here, below the call path, so that learning and the CLI can ask
    without importing ``enhanced``."""
    target = getattr(obj, "__func__", obj)
    return getattr(target, "__poet__", None)
