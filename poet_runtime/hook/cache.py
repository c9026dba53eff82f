"""Bytecode cache for rewritten modules: own pyc tag, source-hash validated, atomic writes.

Why not the standard pyc: a rewritten module must never be mistaken for the plain
one (a run without the hook would pick up our bytecode, or we theirs), so ours live
beside them under a tag that names the runtime and transform version, e.g.
``__pycache__/app.cpython-311.poet-0.1.0-t1.pyc``. Validation is by a hash of the
source and the module name (the name is baked into the bind calls), never by mtime,
so a copied tree, a checkout or a same-second edit cannot serve stale code.

Each file also carries an HMAC of its key and bytecode, made with the per-user key kept
outside any repository (``store.store_key``): a ``__pycache__`` folder comes with a
checkout, and the source hash alone can be matched by anyone, so a planted file could
otherwise run other bytecode than the reviewed source. An unsigned or forged file is a
miss and is overwritten by a fresh compile.

Writes go to a unique temporary file in the same folder and are renamed into place,
so two threads or processes importing the same module at once each see either no
file or a whole one. ``sys.dont_write_bytecode`` and unwritable folders are respected:
we then simply recompile next time.
"""

from __future__ import annotations

import hashlib
import hmac
import marshal
import os
import sys
from importlib.util import MAGIC_NUMBER, source_hash

TRANSFORM_VERSION = 1  # bump when the rewrite changes shape
_FLAGS = (0b11).to_bytes(4, "little")  # "hash-based, checked" in the standard pyc header layout
_HEADER = 16
_MAC = 32  # HMAC-SHA256 after the standard header


def _secret() -> bytes | None:
    try:
        from poet_runtime.store import store_key

        return store_key(create=True)
    except Exception:
        return None


def _mac(secret: bytes, key_bytes: bytes, data) -> bytes:
    return hmac.new(secret, bytes(key_bytes) + b"\0" + bytes(data), hashlib.sha256).digest()


def tag() -> str:
    """The cache tag naming the runtime version and the transform version."""
    version = getattr(sys.modules.get("poet_runtime"), "__version__", None) or "0"
    safe = "".join(c if c.isalnum() or c in "._" else "_" for c in str(version))
    return f"poet-{safe}-t{TRANSFORM_VERSION}"


_TAG = None


def cache_file(source_path: str, prefix: str | None = None) -> str:
    """``<dir>/__pycache__/<stem>.<impl tag>.<poet tag>[.opt-N].pyc`` for ``source_path``."""
    global _TAG
    if _TAG is None:
        _TAG = tag()
    head, tail = os.path.split(source_path)
    stem = tail.rpartition(".")[0] or tail
    opt = f".opt-{sys.flags.optimize}" if sys.flags.optimize else ""
    name = f"{stem}.{sys.implementation.cache_tag}.{_TAG}{opt}.pyc"
    return os.path.join(head, "__pycache__", name)


def spec_index_file(cached: str) -> str:
    """Beside a module's pyc (``cache_file``): what ``generate.spec`` read from the module's AST."""
    return (cached[:-4] if cached.endswith(".pyc") else cached) + ".spec"


def key(source: bytes, module: str) -> bytes:
    """What a cached file must match: the source text and the module name baked into it."""
    return source_hash(source + b"\0" + module.encode("utf-8", "surrogatepass"))


def load(path: str, expected_key: bytes, source_path: str | None = None):
    """The cached code object, or None when missing, foreign or stale.

    With ``source_path``, the code's filenames are set to it, as importlib does for a
    standard pyc: a tree copied or moved elsewhere reports (and is found by) its real path.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    if len(data) < _HEADER + _MAC or data[:4] != MAGIC_NUMBER or data[4:8] != _FLAGS or data[8:16] != expected_key:
        return None
    secret = _secret()
    body = memoryview(data)[_HEADER + _MAC:]
    if secret is None or not hmac.compare_digest(data[_HEADER:_HEADER + _MAC], _mac(secret, expected_key, body)):
        return None  # not signed by this user: compiled again, never run
    try:
        code = marshal.loads(body)
    except (ValueError, EOFError, TypeError):
        return None
    if source_path is not None and getattr(code, "co_filename", source_path) != source_path:
        import _imp

        _imp._fix_co_filename(code, source_path)
    return code


def store(path: str, key_bytes: bytes, code, source_mode: int | None = None) -> bool:
    """Write atomically; False (silently) when bytecode writing is off or the folder is read-only."""
    if sys.dont_write_bytecode:
        return False
    secret = _secret()
    if secret is None:
        return False  # nothing to sign with: no cache rather than an unverifiable one
    body = marshal.dumps(code)
    data = MAGIC_NUMBER + _FLAGS + key_bytes + _mac(secret, key_bytes, body) + body
    return write_atomic(path, data, source_mode)


def write_atomic(path: str, data: bytes, source_mode: int | None = None) -> bool:
    import tempfile  # only on the (rare) write path

    folder = os.path.dirname(path)
    try:
        os.makedirs(folder, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    except OSError:
        return False
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        if source_mode is not None:
            # like importlib: readable as the source is, and always writable by us
            os.chmod(temporary, (source_mode & 0o666) | 0o200)
        os.replace(temporary, path)
        return True
    except OSError:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        return False
