"""A disk cache of what can be rebuilt: compiled code objects of generated modules.

Keyed by the content (source, file name, Python version), so a stale entry can
never be returned; losing the cache costs only a compile. Any cache trouble is
treated as a miss: derived data must never make a call fail.
"""

from __future__ import annotations

import hashlib
import marshal
import sys
import threading
from types import CodeType

_cache = None
_lock = threading.Lock()
_TAG = f"{sys.implementation.cache_tag}-{sys.version_info.releaselevel}"


def _open():
    global _cache
    with _lock:
        if _cache is None:
            import diskcache

            from poet_runtime.settings import get_settings

            _cache = diskcache.Cache(str(get_settings().cache_path() / "code"), size_limit=256 * 2**20)
        return _cache


def close() -> None:
    global _cache
    with _lock:
        if _cache is not None:
            _cache.close()
            _cache = None


def compile_cached(source: str, filename: str) -> CodeType:
    key = hashlib.sha256(f"{_TAG}\0{filename}\0{source}".encode("utf-8")).hexdigest()
    try:
        cache = _open()
        blob = cache.get(key)
        if blob is not None:
            return marshal.loads(blob)
    except Exception:
        cache = None
    code = compile(source, filename, "exec", dont_inherit=True)
    if cache is not None:
        try:
            cache.set(key, marshal.dumps(code))
        except Exception:
            pass
    return code
