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

Nothing read from here is trusted for being here (README, "What the store trusts"):
every file is opened without following symbolic links, must be a regular file of at
most its cap, and JSON must be an object of finite values (``DamagedFile`` names the
file and field otherwise). ``create`` records a digest of each file in metadata.json
(``integrity``) and an HMAC with a per-user key kept outside any repository
(``store_key``); ``verify_code`` checks both.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import json
import logging
import math
import os
import re
import shutil
import stat
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

MAX_VERSIONS = 10
FILES = ("code.py", "params.json", "state.json", "metadata.json")
_VERSION = re.compile(r"v(\d+)")
_TEMP_PREFIX = ".tmp-"
# Caps, checked before a file is read whole: generated modules are a few KiB; a bigger
# code.py is not ours and would cost the host its compile and scans (issue 13, item 4).
CODE_MAX_BYTES = 256 * 1024
JSON_MAX_BYTES = {"params.json": 256 * 1024, "metadata.json": 1024 * 1024, "state.json": 16 * 1024 * 1024,
                  "reports.json": 1024 * 1024}
KEY_ENV = "POET_STORE_KEY"
log = logging.getLogger("poet_runtime")


class DamagedFile(ValueError):
    """A store file that cannot be used as it is: ``path``, the ``field`` (None: the whole
    file) and the ``reason``. Raised by the store's readers; never a reason to stop a program."""

    def __init__(self, path, field: str | None, reason: str):
        self.path = os.fspath(path)
        self.field = field
        self.reason = reason
        super().__init__(f"{self.path}: {field}: {reason}" if field else f"{self.path}: {reason}")


_reported: set = set()
_reported_lock = threading.Lock()


def report_once(error: DamagedFile, what: str = "damaged") -> bool:
    """Log ``error`` once per process (logger ``poet_runtime``) and emit ``store.<what>``;
    True the first time."""
    marker = (error.path, error.field, error.reason, what)
    with _reported_lock:
        if marker in _reported:
            return False
        _reported.add(marker)
    from poet_runtime.safe_text import visible

    log.warning("poet_runtime: %s: %s", what, visible(str(error), allow_newlines=False))
    try:
        from poet_runtime import events

        events.emit(f"store.{what}", path=error.path, field=error.field, reason=error.reason)
    except Exception:  # reporting must never be the reason a call fails
        pass
    return True


def read_store_file(path: Path, limit: int) -> bytes:
    """The bytes of a store file: a regular file (never through a symbolic link, neither the
    file nor its version folder), at most ``limit`` bytes, checked before reading it whole.

    ``FileNotFoundError`` when it is missing; ``DamagedFile`` for anything else wrong.
    """
    path = Path(path)
    try:
        parent = os.lstat(path.parent)
    except FileNotFoundError:
        raise
    if stat.S_ISLNK(parent.st_mode):
        raise DamagedFile(path.parent, None, "is a symbolic link; a version folder must be a real folder in the store")
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as error:
        if error.errno == errno.ELOOP or (error.errno == errno.EMLINK and os.path.islink(path)):
            raise DamagedFile(path, None, "is a symbolic link; the store holds regular files only") from None
        if isinstance(error, FileNotFoundError):
            raise
        raise DamagedFile(path, None, f"cannot be read: {error.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise DamagedFile(path, None, "is not a regular file; the store holds regular files only")
        if info.st_size > limit:
            raise DamagedFile(path, None, f"is {info.st_size} bytes; the cap is {limit}")
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise DamagedFile(path, None, f"grew past the cap of {limit} bytes while read")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _non_finite(value, where: str = "") -> str | None:
    """The dotted field of the first NaN or infinity in a JSON value, else None."""
    if isinstance(value, float) and not math.isfinite(value):
        return where or "(value)"
    if isinstance(value, dict):
        for key, item in value.items():
            found = _non_finite(item, f"{where}.{key}" if where else str(key))
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _non_finite(item, f"{where}[{index}]")
            if found:
                return found
    return None


def read_json(path: Path, name: str | None = None) -> dict:
    """A store JSON file as a dict of finite values; ``DamagedFile`` naming file and field otherwise."""
    path = Path(path)
    raw = read_store_file(path, JSON_MAX_BYTES.get(name or path.name, 1024 * 1024))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DamagedFile(path, None, f"is not UTF-8 (byte {error.start})") from None
    try:
        data = json.loads(text)
    except ValueError as error:
        reason = "is empty" if not text.strip() else f"is not valid JSON ({error})"
        raise DamagedFile(path, None, reason) from None
    if not isinstance(data, dict):
        raise DamagedFile(path, None, f"must be a JSON object, not {_json_type(data)}")
    bad = _non_finite(data)
    if bad:
        raise DamagedFile(path, bad, "must be a finite number, not NaN or infinity")
    return data


def _json_type(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


# metadata.json fields the runtime relies on, and the JSON types they must have.
_METADATA_TYPES = {
    "key": (str,), "generator": (str,), "status": (str,), "logic_name": (str,), "is_async": (bool,),
    "transformed": (bool,), "parameters": (dict,), "integrity": (dict,), "builtin_hints": (dict,),
    "version": (int,), "function": (str,),
}


def check_metadata(path: Path, data: dict) -> dict:
    for name, types in _METADATA_TYPES.items():
        if name in data and data[name] is not None and (not isinstance(data[name], types)
                                                         or (bool not in types and isinstance(data[name], bool))):
            raise DamagedFile(path, name, f"must be {_json_type(types[0]())}, not {_json_type(data[name])}")
    for name, entry in (data.get("parameters") or {}).items():
        if not isinstance(entry, dict) or "default" not in entry:
            raise DamagedFile(path, f"parameters.{name}", "must be an object with a default")
    return data


def check_params(path: Path, data: dict, parameters: dict | None) -> list[DamagedFile]:
    """Every problem of params.json against the module's PARAMETERS (from metadata.json):
    each value finite, of its default's type, within ``min``/``max``; no unknown names."""
    problems = []
    if not parameters:
        return problems
    for name, value in data.items():
        entry = parameters.get(name)
        if entry is None:
            problems.append(DamagedFile(path, name, "is not a parameter of this version"))
            continue
        default = entry.get("default")
        if isinstance(default, bool) or not isinstance(default, (int, float)):
            if type(value) is not type(default):
                problems.append(DamagedFile(path, name, f"must be {_json_type(default)}, not {_json_type(value)}"))
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(DamagedFile(path, name, f"must be a number, not {_json_type(value)}"))
            continue
        if not math.isfinite(value):
            problems.append(DamagedFile(path, name, "must be a finite number, not NaN or infinity"))
            continue
        if isinstance(default, int) and not float(value).is_integer():
            problems.append(DamagedFile(path, name, f"must be a whole number, not {value!r}"))
            continue
        low, high = entry.get("min"), entry.get("max")
        if isinstance(low, (int, float)) and value < low or isinstance(high, (int, float)) and value > high:
            problems.append(DamagedFile(path, name, f"{value!r} is outside its range [{low}, {high}]"))
    return problems


def _check_code_text(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DamagedFile(path, None, f"is not UTF-8 (byte {error.start})") from None


# Untrusted text is parsed in the host only under these caps (after the size cap of the store).
MAX_CODE_LINES = 20_000
MAX_NESTING = 100


def parse_checked(text: str, filename: str) -> None:
    """Parse ``text`` under a budget: ``DamagedFile`` for too many lines, too deep nesting or a
    syntax error (with its line). The size cap (``store.CODE_MAX_BYTES``) came first."""
    lines = text.count("\n") + 1
    if lines > MAX_CODE_LINES:
        raise DamagedFile(filename, None, f"has {lines} lines; the cap is {MAX_CODE_LINES}")
    depth = deepest = 0
    for char in text:
        if char in "([{":
            depth += 1
            if depth > deepest:
                deepest = depth
        elif char in ")]}":
            depth = max(0, depth - 1)
    if deepest > MAX_NESTING:
        raise DamagedFile(filename, None, f"nests brackets {deepest} deep; the cap is {MAX_NESTING}")
    from poet_runtime.generate.parsing import parse

    try:
        parse(text, filename)
    except SyntaxError as error:
        raise DamagedFile(filename, f"line {error.lineno}", f"syntax error: {error.msg}") from None
    except (ValueError, MemoryError, RecursionError) as error:
        raise DamagedFile(filename, None, f"cannot be parsed: {type(error).__name__}") from None


# -- the per-user key and the integrity record ---------------------------------------------

def key_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "poet_runtime" / "key"


_key_lock = threading.Lock()
_key_cache: dict = {}


def store_key(create: bool = False) -> bytes | None:
    """The per-user signing key: ``$POET_STORE_KEY``, else ``~/.config/poet_runtime/key``
    (``$XDG_CONFIG_HOME``), created 0600 on first need when ``create``. A key file that
    others may read or write, or that is not a regular file of ours, is not used."""
    env = os.environ.get(KEY_ENV)
    if env:
        return env.encode("utf-8")
    path = key_path()
    with _key_lock:
        cached = _key_cache.get(str(path))
        if cached is not None:
            return cached or None  # b"": tried and failed in this process (said once)
        key = _read_key(path)
        if key is None and create:
            key = _create_key(path)
        if key is not None or create:
            _key_cache[str(path)] = key or b""
        return key


def _read_key(path: Path) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None
    except OSError as error:
        log.warning("poet_runtime: %s: signing key not used: %s", path, error.strerror)
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
            log.warning("poet_runtime: %s: signing key not used: it must be a regular file of yours, mode 0600 "
                        "(chmod 600 it); versions are treated as unsigned", path)
            return None
        data = os.read(fd, 4096).strip()
    finally:
        os.close(fd)
    return data or None


def _create_key(path: Path) -> bytes | None:
    import secrets

    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except FileExistsError:
        return _read_key(path)
    except OSError as error:
        log.warning("poet_runtime: %s: cannot create the signing key: %s; versions stay unsigned", path,
                    error.strerror)
        return None
    key = secrets.token_hex(32).encode("ascii")
    try:
        os.write(fd, key + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    return key


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# What the signature covers besides the code: what decides how the code is loaded and checked.
_SIGNED_FIELDS = ("generator", "is_async", "logic_name", "parameters", "transformed")


def _signed_message(function_id: str, code_sha256: str, metadata: dict) -> bytes:
    data = {"function": function_id, "code_sha256": code_sha256,
            **{name: metadata.get(name) for name in _SIGNED_FIELDS}}
    return json.dumps(data, sort_keys=True, default=str).encode("utf-8")


def sign(function_id: str, code_sha256: str, metadata: dict, key: bytes) -> str:
    return hmac.new(key, _signed_message(function_id, code_sha256, metadata), hashlib.sha256).hexdigest()


def mac_of(data: bytes) -> str | None:
    """An HMAC of ``data`` with the per-user key (made on first need), for files that later
    become signed versions (a detached generator's answer): None when there is no key."""
    key = store_key(create=True)
    return hmac.new(key, b"poet-blob\0" + data, hashlib.sha256).hexdigest() if key else None


def mac_ok(data: bytes, mac) -> bool:
    """True when ``mac`` is ``mac_of(data)`` under this user's key."""
    key = store_key()
    return bool(key and isinstance(mac, str)
                and hmac.compare_digest(mac, hmac.new(key, b"poet-blob\0" + data, hashlib.sha256).hexdigest()))


def is_builtin_generator(generator) -> bool:
    from poet_runtime.generate.builtin import GENERATOR_ID, GENERATOR_VERSION

    return generator == f"{GENERATOR_ID}-{GENERATOR_VERSION}"


@dataclass(frozen=True)
class CodeCheck:
    """What ``verify_code`` found: the code as read (load exactly this text), whether its digest
    matches the one recorded at creation (None: none recorded), and whether the signature holds
    (None: the version carries none)."""

    text: str
    sha256: str
    digest_ok: bool | None
    signed: bool | None


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
        """code.py's text (a regular file of at most ``CODE_MAX_BYTES``; ``DamagedFile`` otherwise)."""
        path = self.path / "code.py"
        return _check_code_text(path, read_store_file(path, CODE_MAX_BYTES))

    def params(self) -> dict:
        """params.json, checked against this version's PARAMETERS; ``DamagedFile`` on the first problem."""
        path = self.path / "params.json"
        data = read_json(path)
        problems = check_params(path, data, self.metadata.get("parameters"))
        if problems:
            raise problems[0]
        return data

    def params_problems(self) -> tuple[dict, list[DamagedFile]]:
        """(the usable values, every problem): damaged values are left out (their defaults apply)."""
        path = self.path / "params.json"
        try:
            data = read_json(path)
        except FileNotFoundError:
            return {}, [DamagedFile(path, None, "is missing")]
        except DamagedFile as error:
            return {}, [error]
        problems = check_params(path, data, self.metadata.get("parameters"))
        bad = {problem.field for problem in problems}
        return {name: value for name, value in data.items() if name not in bad}, problems

    def state(self) -> dict:
        return read_json(self.path / "state.json")

    def verify_code(self, function_id: str | None = None) -> CodeCheck:
        """Read code.py once and check it against the integrity record made at creation."""
        path = self.path / "code.py"
        raw = read_store_file(path, CODE_MAX_BYTES)
        text = _check_code_text(path, raw)
        sha = digest(raw)
        integrity = self.metadata.get("integrity") or {}
        recorded = integrity.get("code_sha256")
        digest_ok = None if not isinstance(recorded, str) else hmac.compare_digest(recorded, sha)
        signature = integrity.get("hmac")
        signed = None
        if isinstance(signature, str):
            key = store_key()
            function = function_id or self.metadata.get("function") or ""
            signed = key is not None and hmac.compare_digest(signature, sign(function, sha, self.metadata, key))
        return CodeCheck(text, sha, digest_ok, signed)


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

    def check_folder(self) -> None:
        """``DamagedFile`` when the function's folder is a symbolic link: a checkout could point
        it anywhere, and the store would then read and write there."""
        if os.path.islink(self.folder):
            raise DamagedFile(self.folder, None, "is a symbolic link; a function's store folder must be a real folder")

    def _load(self, number: int) -> StoredVersion | None:
        path = self.folder / f"v{number}"
        try:
            self.check_folder()
            metadata = check_metadata(path / "metadata.json", read_json(path / "metadata.json"))
        except DamagedFile as error:  # damaged by hand or by a tool: said once, never used
            report_once(error)
            return None
        except OSError:
            return None  # not a complete version (removed meanwhile, or being written)
        return StoredVersion(number, path, metadata)

    def versions(self) -> list[StoredVersion]:
        return [v for n in self._numbers() if (v := self._load(n)) is not None]

    def damaged(self) -> dict[int, DamagedFile]:
        """Version folders whose metadata.json cannot be used, by number (``versions`` lists them)."""
        found = {}
        for number in self._numbers():
            path = self.folder / f"v{number}" / "metadata.json"
            try:
                check_metadata(path, read_json(path))
            except DamagedFile as error:
                found[number] = error
            except OSError:
                continue
        return found

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
        self.check_folder()
        local = _thread_locks.setdefault(str(self.folder), threading.Lock())
        if not local.acquire(timeout=-1 if timeout is None else timeout):
            raise TimeoutError(f"{self.folder}: another thread holds the generation lock")
        try:
            # never through a link: a planted .lock must not make us create or open a file elsewhere
            fd = os.open(self.folder / ".lock", os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
                         | getattr(os, "O_CLOEXEC", 0), 0o644)
            with os.fdopen(fd, "a+") as handle:
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
        self.check_folder()
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
                texts = {"code.py": code, "params.json": _json(params), "state.json": _json(state)}
                meta["integrity"] = self._integrity(texts, meta)
                _write_file(temp / "code.py", code)
                _write_file(temp / "params.json", texts["params.json"])
                _write_file(temp / "state.json", texts["state.json"])
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

    def _integrity(self, texts: dict, meta: dict) -> dict:
        """The digests of a new version's files and the HMAC of what this runtime wrote. A built-in
        version is also proven by writing it again (``resolve.verified_builtin``): only that lets
        it run in-process under a policy that trusts ``builtin``."""
        files = {name: digest(text.encode("utf-8")) for name, text in texts.items()}
        record = {"files": files, "code_sha256": files["code.py"]}
        key = store_key(create=True)
        if key is not None:
            record["hmac"] = sign(self.function_id, files["code.py"], meta, key)
        return record

    def accept(self, number: int) -> StoredVersion:
        """Sign version ``number``'s code.py as it is now (a reviewed hand edit): its digest and
        HMAC replace the recorded ones, so it loads as a signed version (in the policy's backend)."""
        version = self._load(number)
        if version is None:
            raise FileNotFoundError(f"{self.function_id}: there is no complete version v{number} in {self.folder}")
        with self.lock(timeout=10.0):
            check = version.verify_code(self.function_id)
            parse_checked(check.text, str(version.path / "code.py"))  # never sign what cannot load
            key = store_key(create=True)
            if key is None:
                raise PermissionError(f"{key_path()}: no signing key (set {KEY_ENV} or make the file creatable)")
            integrity = dict(version.metadata.get("integrity") or {})
            history = list(integrity.get("accepted") or [])[-9:]
            history.append({"at": _now(), "code_sha256": check.sha256, "was": integrity.get("code_sha256")})
            integrity.update(code_sha256=check.sha256, hmac=sign(self.function_id, check.sha256, version.metadata, key),
                             accepted=history)
            metadata = {**version.metadata, "integrity": integrity}
            if os.path.islink(version.path):
                raise DamagedFile(version.path, None, "is a symbolic link; a version folder must be a real folder")
            atomic_write(version.path / "metadata.json", _json(metadata))
        return StoredVersion(number, version.path, metadata)

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
        self.check_folder()
        folder = self.folder / f"v{number}"
        if os.path.islink(folder):
            raise DamagedFile(folder, None, "is a symbolic link; a version folder must be a real folder in the store")
        atomic_write(folder / filename, _json(data))

    # -- what the checks reported ------------------------------------------------------------

    def reports(self) -> dict:
        """Counts of what calls' checks reported, over every process that ran the function:
        ``{"mismatch": {field: n}, "repair": {...}, "retry": {...}}`` (``status`` shows them)."""
        try:
            return read_json(self.folder / "reports.json")
        except (OSError, ValueError):
            return {}

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
# A forked child starts with no lock held: the parent's threads are not there to release them.
os.register_at_fork(after_in_child=_thread_locks.clear)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
