"""A disk cache of what can be rebuilt: compiled code objects of generated modules.

Keyed by the content (source, file name, Python version), so a stale entry can
never be returned; losing the cache costs only a compile. Any cache trouble is
treated as a miss: derived data must never make a call fail.

Why every entry carries an HMAC: ``marshal`` data is bytecode, and whoever can write
the cache folder (a repository could once name it in ``[tool.poet] cache_dir``) could
plant an entry under the key of a reviewed ``code.py`` and run other code in its
place. An entry is used only when its HMAC, made with the per-user key kept outside
any repository (``store.store_key``), matches the key it is stored under and its bytes;
anything else is a miss, said once, and is overwritten by a fresh compile.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import marshal
import sys
import os
import threading
from types import CodeType

_cache = None
_lock = threading.Lock()
# A child forked while another thread held this lock would wait on it forever.
os.register_at_fork(after_in_child=_lock._at_fork_reinit)
_TAG = f"{sys.implementation.cache_tag}-{sys.version_info.releaselevel}"
_MAGIC = b"PC1"  # entry layout: magic, 32-byte HMAC-SHA256, marshal data
_MAC = 32
log = logging.getLogger("poet_runtime")
_warned = False


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


def _mac(secret: bytes, key: str, data: bytes) -> bytes:
    return hmac.new(secret, key.encode("ascii") + b"\0" + data, hashlib.sha256).digest()


def _unpack(secret: bytes, key: str, blob) -> bytes | None:
    """The marshal data of a verified entry, else None (and said once per process)."""
    global _warned
    if isinstance(blob, (bytes, bytearray)) and blob[:len(_MAGIC)] == _MAGIC and len(blob) > len(_MAGIC) + _MAC:
        mac, data = bytes(blob[len(_MAGIC):len(_MAGIC) + _MAC]), bytes(blob[len(_MAGIC) + _MAC:])
        if hmac.compare_digest(mac, _mac(secret, key, data)):
            return data
    if not _warned:
        _warned = True
        log.warning("poet_runtime: compiled-code cache: an entry that this user's key did not sign was ignored "
                    "and compiled again (entry %s in %s)", key[:16], getattr(_cache, "directory", "?"))
    return None


def compile_cached(source: str, filename: str) -> CodeType:
    from poet_runtime.store import store_key

    key = hashlib.sha256(f"{_TAG}\0{filename}\0{source}".encode("utf-8")).hexdigest()
    secret = None
    try:
        secret = store_key(create=True)
        cache = _open() if secret is not None else None  # no key: no cache, never unverified bytecode
        if cache is not None:
            blob = cache.get(key)
            if blob is not None:
                data = _unpack(secret, key, blob)
                if data is not None:
                    return marshal.loads(data)
    except Exception:
        cache = None
    code = compile(source, filename, "exec", dont_inherit=True)
    if cache is not None:
        try:
            data = marshal.dumps(code)
            cache.set(key, _MAGIC + _mac(secret, key, data) + data)
        except Exception:
            pass
    return code
