"""The ``.poet/`` store: every generated version of every function, as reviewable files.

Layout, per function::

    .poet/<module>.<qualname>/
        v1/code.py  params.json  state.json  metadata.json
        v2/...
        current              -> v2 (a symlink; a pointer file where symlinks are impossible)
        feedback/pending/  feedback/processed/

A version is written in a temporary folder and renamed into place, and ``current``
is replaced atomically after that, so a crash at any moment leaves either the old
state or the new one: never a half-written version or a dangling ``current``.
Readers ignore temporary folders; writers remove the ones whose writer is dead.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

MAX_VERSIONS = 10
FILES = ("code.py", "params.json", "state.json", "metadata.json")
_VERSION = re.compile(r"v(\d+)")
_TEMP_PREFIX = ".tmp-"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_file(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def atomic_write(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``: readers see the old content or the new, never a mix."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=_TEMP_PREFIX + path.name + ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    _fsync_dir(path.parent)


def _json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def folder_name(module: str, qualname: str) -> str:
    """``app.Model.predict``; ``<locals>`` becomes ``locals`` so the name is a plain path."""
    return f"{module}.{qualname}".replace("<", "").replace(">", "")


def _writable(folder: Path) -> bool:
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            return False
        probe = probe.parent
    return os.access(probe, os.W_OK | os.X_OK)


def store_root(module_file: str | None) -> Path:
    """``.poet/`` beside the module, or under POET_HOME when set or when that folder is read-only."""
    from poet_runtime.settings import get_settings

    settings = get_settings()
    if settings.home is not None:
        return settings.home
    if module_file:
        beside = Path(module_file).resolve().parent / ".poet"
        if _writable(beside):
            return beside
    return settings.fallback_home()


@dataclass(frozen=True)
class StoredVersion:
    number: int
    path: Path
    metadata: dict

    @property
    def name(self) -> str:
        return f"v{self.number}"

    def code(self) -> str:
        return (self.path / "code.py").read_text(encoding="utf-8")

    def params(self) -> dict:
        return json.loads((self.path / "params.json").read_text(encoding="utf-8"))

    def state(self) -> dict:
        return json.loads((self.path / "state.json").read_text(encoding="utf-8"))


class FunctionStore:
    """All versions of one function."""

    def __init__(self, folder: Path, function_id: str):
        self.folder = folder
        self.function_id = function_id

    @classmethod
    def open(cls, module: str, qualname: str, module_file: str | None) -> "FunctionStore":
        return cls(store_root(module_file) / folder_name(module, qualname), f"{module}:{qualname}")

    # -- reading -------------------------------------------------------------------------

    def _numbers(self) -> list[int]:
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return []
        return sorted(int(m.group(1)) for n in names if (m := _VERSION.fullmatch(n)))

    def _load(self, number: int) -> StoredVersion | None:
        path = self.folder / f"v{number}"
        try:
            metadata = json.loads((path / "metadata.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # not a complete version (removed meanwhile, or damaged by hand)
        return StoredVersion(number, path, metadata)

    def versions(self) -> list[StoredVersion]:
        return [v for n in self._numbers() if (v := self._load(n)) is not None]

    def current_number(self) -> int | None:
        pointer = self.folder / "current"
        try:
            target = os.readlink(pointer)
        except FileNotFoundError:
            return None
        except OSError:  # a pointer file, not a symlink
            try:
                target = pointer.read_text(encoding="utf-8").strip()
            except OSError:
                return None
        match = _VERSION.fullmatch(os.path.basename(target))
        return int(match.group(1)) if match else None

    def current(self) -> StoredVersion | None:
        number = self.current_number()
        return self._load(number) if number is not None else None

    def get(self, number: int) -> StoredVersion | None:
        return self._load(number)

    def status_of(self, version: StoredVersion) -> str:
        """A version's standing: ``current`` comes from the pointer, not from metadata.

        Metadata records lifecycle decisions (candidate, shadow, rejected, ...); a version
        written as current and since replaced (by a newer one or a rollback) is superseded.
        """
        if version.number == self.current_number():
            return "current"
        status = version.metadata.get("status") or "superseded"
        return "superseded" if status == "current" else status

    def find_key(self, key: str) -> StoredVersion | None:
        """The newest usable version generated for exactly this key."""
        for version in reversed(self.versions()):
            if version.metadata.get("key") == key and version.metadata.get("status") != "rejected":
                return version
        return None

    # -- writing -------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, timeout: float | None = None) -> Iterator[None]:
        """One writer per function across threads and processes (an ``flock`` on ``.lock``)."""
        import fcntl
        import threading

        self.folder.mkdir(parents=True, exist_ok=True)
        local = _thread_locks.setdefault(str(self.folder), threading.Lock())
        if not local.acquire(timeout=-1 if timeout is None else timeout):
            raise TimeoutError(f"{self.folder}: another thread holds the generation lock")
        try:
            with open(self.folder / ".lock", "a+") as handle:
                deadline = None if timeout is None else time.monotonic() + timeout
                while True:
                    try:
                        fcntl.flock(handle, fcntl.LOCK_EX | (fcntl.LOCK_NB if deadline else 0))
                        break
                    except BlockingIOError:
                        if time.monotonic() > deadline:
                            raise TimeoutError(f"{self.folder}: another process holds the generation lock") from None
                        time.sleep(0.05)
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
        finally:
            local.release()

    def _clean_temporaries(self) -> None:
        for name in os.listdir(self.folder):
            if not name.startswith(_TEMP_PREFIX) and not name.startswith(".trash-"):
                continue
            match = re.search(r"-(\d+)-", name)
            if name.startswith(".trash-") or (match and not _pid_alive(int(match.group(1)))):
                shutil.rmtree(self.folder / name, ignore_errors=True)
                with contextlib.suppress(OSError):
                    os.unlink(self.folder / name)

    def create(self, code: str, params: dict, state: dict, metadata: dict, *, make_current: bool = True) -> StoredVersion:
        """Write a new version atomically and (by default) make it current."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for sub in ("feedback/pending", "feedback/processed"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        self._clean_temporaries()
        temp = Path(tempfile.mkdtemp(dir=self.folder, prefix=f"{_TEMP_PREFIX}{os.getpid()}-"))
        try:
            while True:
                numbers = self._numbers()
                number = (numbers[-1] if numbers else 0) + 1
                meta = {**metadata, "version": number, "function": self.function_id,
                        "parent": self.current_number(), "created_at": _now()}
                _write_file(temp / "code.py", code)
                _write_file(temp / "params.json", _json(params))
                _write_file(temp / "state.json", _json(state))
                _write_file(temp / "metadata.json", _json(meta))  # written last: marks the version complete
                _fsync_dir(temp)
                try:
                    os.rename(temp, self.folder / f"v{number}")
                    break
                except OSError:  # another writer took that number first
                    if not (self.folder / f"v{number}").exists():
                        raise
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
        _fsync_dir(self.folder)
        if make_current:
            self.set_current(number)
        self._retain()
        return StoredVersion(number, self.folder / f"v{number}", meta)

    def set_current(self, number: int) -> None:
        if self._load(number) is None:
            raise FileNotFoundError(f"{self.function_id}: there is no complete version v{number} in {self.folder}")
        pointer = self.folder / "current"
        temp = self.folder / f"{_TEMP_PREFIX}{os.getpid()}-current-{time.monotonic_ns()}"
        try:
            os.symlink(f"v{number}", temp)
        except OSError:
            atomic_write(pointer, f"v{number}\n")  # no symlinks here: a pointer file
            return
        try:
            os.replace(temp, pointer)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        _fsync_dir(self.folder)

    def rollback(self, number: int | None = None) -> StoredVersion:
        """Make ``number`` current; by default the version before the current one."""
        if number is None:
            current = self.current_number()
            older = [n for n in self._numbers() if current is None or n < current]
            if not older:
                raise FileNotFoundError(f"{self.function_id}: no version before v{current} to roll back to")
            number = older[-1]
        self.set_current(number)
        return self._load(number)

    def update_json(self, number: int, filename: str, data: dict) -> None:
        """Replace params.json or state.json of a version atomically (learning writes here)."""
        if filename not in ("params.json", "state.json", "metadata.json"):
            raise ValueError(filename)
        atomic_write(self.folder / f"v{number}" / filename, _json(data))

    # -- what the checks reported ------------------------------------------------------------

    def reports(self) -> dict:
        """Counts of what calls' checks reported, over every process that ran the function:
        ``{"mismatch": {field: n}, "repair": {...}, "retry": {...}}`` (``status`` shows them)."""
        try:
            data = json.loads((self.folder / "reports.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def add_reports(self, counts: dict) -> None:
        """Add ``{(kind, field): n}`` to ``reports.json`` (under the store's lock, atomically)."""
        if not counts or not self.folder.is_dir():
            return
        with self.lock(timeout=5.0):
            data = self.reports()
            for (kind, field), count in counts.items():
                fields = data.setdefault(str(kind), {})
                if isinstance(fields, dict):
                    fields[str(field)] = int(fields.get(str(field), 0) or 0) + int(count)
            atomic_write(self.folder / "reports.json", _json(data))

    def _retain(self) -> None:
        numbers = self._numbers()
        current = self.current_number()
        excess = len(numbers) - MAX_VERSIONS
        for number in numbers:
            if excess <= 0:
                break
            if number == current:
                continue
            excess -= 1
            trash = self.folder / f".trash-v{number}-{os.getpid()}-{time.monotonic_ns()}"
            try:
                os.rename(self.folder / f"v{number}", trash)
            except OSError:
                continue
            shutil.rmtree(trash, ignore_errors=True)


_thread_locks: dict = {}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
