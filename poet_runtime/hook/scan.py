"""Remember which source files contain no ``poet`` at all, so that they are not even read.

The pre-filter (does the source contain ``poet``?) would otherwise cost one extra
read of every selected module on every start-up, about 15% of a warm import. The
verdicts live per folder in ``__pycache__/poet-scan.<impl>.<poet tag>.idx`` (one
marshal'ed dict ``file name -> (mtime_ns, size, has_poet)``), validated by the stat
the import system would do anyway. This is only a filter: a module that does hold
``poet`` is always read and its rewritten bytecode is validated by source hash.

Concurrent writers may overwrite each other's additions; that only costs a re-read
of those files next time, never a wrong answer, because every entry is checked
against the file's current stat.
"""

from __future__ import annotations

import marshal
import os
import sys
import threading

from poet_runtime.hook import cache

MARKER = b"poet"  # a module whose source lacks it cannot hold a @poet function

_lock = threading.Lock()
_folders: dict[str, dict] = {}  # folder -> {file name: (mtime_ns, size, has_poet)}


def _index_file(folder: str) -> str:
    if cache._TAG is None:
        cache._TAG = cache.tag()
    return os.path.join(folder, "__pycache__", f"poet-scan.{sys.implementation.cache_tag}.{cache._TAG}.idx")


def _load(folder: str) -> dict:
    entries = _folders.get(folder)
    if entries is None:
        try:
            with open(_index_file(folder), "rb") as handle:
                entries = marshal.loads(handle.read())
            if not isinstance(entries, dict):
                entries = {}
        except (OSError, ValueError, EOFError, TypeError):
            entries = {}
        _folders[folder] = entries
    return entries


def has_poet(path: str, folder: str | None = None, name: str | None = None) -> bool:
    """Whether the file at ``path`` contains the marker, reading it only when the index cannot say."""
    if folder is None or name is None:
        folder, _, name = path.rpartition(os.sep)
    try:
        status = os.stat(path)
    except OSError:
        return True  # let the loader report the real error
    entries = _folders.get(folder)
    if entries is None:
        with _lock:
            entries = _load(folder)
    entry = entries.get(name)  # a plain dict read: atomic, no lock needed
    if entry is not None and entry[0] == status.st_mtime_ns and entry[1] == status.st_size:
        return entry[2]
    stamp = (status.st_mtime_ns, status.st_size)
    try:
        with open(path, "rb") as handle:
            found = MARKER in handle.read()
    except OSError:
        return True
    with _lock:
        entries = _load(folder)
        entries[name] = (stamp[0], stamp[1], found)
        snapshot = dict(entries)
    if not sys.dont_write_bytecode:
        cache.write_atomic(_index_file(folder), marshal.dumps(snapshot))
    return found


def forget() -> None:
    """Drop the in-memory indexes (tests)."""
    with _lock:
        _folders.clear()
