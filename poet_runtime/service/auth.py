"""API keys with scopes, stored hashed, and a per-key rate limit.

Why this shape: the service serves code and recorded inputs, so every route but health needs
a key. Keys are random (32 bytes from ``secrets``), so one SHA-256 of the key is as strong as a
slow password hash and costs microseconds per request; the key file holds only those digests
(``keys.json`` in the data dir, written atomically with mode 0600). A presented key is compared
against every stored digest with ``hmac.compare_digest``, so neither timing nor an early exit
says which digest came close. Scopes are ordered: ``read`` < ``write`` < ``admin``.

Keys are made with ``python -m poet_runtime serve --data DIR --add-key NAME --scope write``
(printed once, never stored) or ``KeyStore(DIR).add(NAME, scope)``.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from poet_runtime.service.context import SCOPES

KEY_FILE = "keys.json"
KEY_PREFIX = "poet_"


class KeyFileError(ValueError):
    """keys.json cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class KeyRecord:
    name: str
    scope: str
    digest: str  # sha256 hex of the key
    created_at: str
    rate_limit: int | None = None  # requests per window for this key; None: the service's default

    def allows(self, scope: str) -> bool:
        return SCOPES.index(self.scope) >= SCOPES.index(scope)


def digest_of(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class KeyStore:
    """The keys of one data dir, re-read when the file changes (a key added while serving works)."""

    def __init__(self, data_dir: Path):
        self.path = Path(data_dir) / KEY_FILE
        self._lock = threading.Lock()
        self._stamp = None
        self._records: list[KeyRecord] = []

    # -- reading -------------------------------------------------------------------------

    def records(self) -> list[KeyRecord]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return []
        stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        with self._lock:
            if stamp != self._stamp:
                self._records = self._read()
                self._stamp = stamp
            return list(self._records)

    def _read(self) -> list[KeyRecord]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise KeyFileError(f"{self.path}: cannot be read as JSON ({error})") from None
        if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
            raise KeyFileError(f"{self.path}: expected an object with a list under \"keys\"")
        found = []
        for index, item in enumerate(data["keys"]):
            where = f"{self.path}: keys[{index}]"
            if not isinstance(item, dict):
                raise KeyFileError(f"{where}: expected an object")
            name, scope, digest = item.get("name"), item.get("scope"), item.get("sha256")
            if not isinstance(name, str) or not name:
                raise KeyFileError(f"{where}.name: expected a non-empty string")
            if scope not in SCOPES:
                raise KeyFileError(f"{where}.scope: {scope!r} is not one of {', '.join(SCOPES)}")
            if not isinstance(digest, str) or len(digest) != 64:
                raise KeyFileError(f"{where}.sha256: expected 64 hex digits")
            limit = item.get("rate_limit")
            if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
                raise KeyFileError(f"{where}.rate_limit: expected a whole number of requests of at least 1")
            found.append(KeyRecord(name, scope, digest, str(item.get("created_at", "")), limit))
        return found

    def check(self, key: str) -> KeyRecord | None:
        """The record of ``key``, or None; every stored digest is compared, in constant time."""
        presented = digest_of(key)
        match = None
        for record in self.records():
            if hmac.compare_digest(presented, record.digest):
                match = record
        return match

    # -- writing -------------------------------------------------------------------------

    def add(self, name: str, scope: str, rate_limit: int | None = None) -> str:
        """A new key for ``name`` with ``scope`` (replacing that name's key); returns the key,
        which is never stored. ``rate_limit``: this key's requests per window instead of the service's."""
        if rate_limit is not None and rate_limit < 1:
            raise ValueError(f"rate limit must be at least 1 request per window, not {rate_limit}")
        if scope not in SCOPES:
            raise ValueError(f"scope {scope!r} is not one of {', '.join(SCOPES)}")
        if not name or any(ch.isspace() or not ch.isprintable() for ch in name):
            raise ValueError(f"key name {name!r}: use printable characters without spaces")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        with self._exclusive():
            records = [r for r in self.records() if r.name != name]
            records.append(KeyRecord(name, scope, digest_of(key), _now(), rate_limit))
            self._write(records)
        return key

    def revoke(self, name: str) -> bool:
        with self._exclusive():
            records = self.records()
            kept = [r for r in records if r.name != name]
            if len(kept) == len(records):
                return False
            self._write(kept)
        return True

    @contextlib.contextmanager
    def _exclusive(self):
        """One writer of keys.json at a time (two ``--add-key`` at once must not lose one)."""
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.parent / ".keys.lock", os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            with self._lock:
                self._stamp = None  # read the file again under the lock
            yield
        finally:
            os.close(fd)

    def _write(self, records: list[KeyRecord]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"keys": [{"name": r.name, "scope": r.scope, "sha256": r.digest, "created_at": r.created_at,
                                     **({"rate_limit": r.rate_limit} if r.rate_limit else {})}
                                    for r in records]}, indent=2) + "\n"
        # mkstemp creates the file 0600; the replace is atomic, so a reader sees the old or the new list
        fd, temp = tempfile.mkstemp(dir=self.path.parent, prefix=".keys.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temp, 0o600)
            os.replace(temp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise


class RateLimiter:
    """At most ``limit`` requests per ``window`` seconds per key (a sliding window of timestamps).

    ``hit(name)`` returns 0 when the request may go, else the seconds until it could (Retry-After).
    """

    def __init__(self, limit: int, window: float = 60.0):
        if limit < 1:
            raise ValueError(f"rate limit must be at least 1 request per window, not {limit}")
        self.limit = limit
        self.window = window
        self._lock = threading.Lock()
        self._seen: dict[str, deque] = {}

    def hit(self, name: str, limit: int | None = None, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        limit = limit or self.limit
        with self._lock:
            times = self._seen.setdefault(name, deque())
            while times and times[0] <= now - self.window:
                times.popleft()
            if len(times) >= limit:
                return max(times[0] + self.window - now, 0.001)
            times.append(now)
            return 0.0
