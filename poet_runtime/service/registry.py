"""The service's template registry on disk: every version of every domain's prompt template.

Why a folder per version (``templates/<domain>/vN/{template.txt, metadata.json}``) and a
pointer file per label (``templates/<domain>/current`` holding ``vN``): a version is never
rewritten, only its ``updated_at``, so a rollback is one atomic pointer write and a reader
never sees half a template. Versions are written like the ``.poet/`` store: into a temporary
folder, fsynced, renamed into place; pointers by temporary file, fsync, rename. Two writers
(threads or processes) take the domain's ``.lock`` (``flock``) so they get distinct numbers.

A template is checked before it is stored (``check_template``): it must render with the
fields the LLM generator fills (``generate/llm_prompt.FIELDS``), name the required ones and
hold no hidden characters; ``TemplateRefused`` names the placeholder, line and column.
No FastAPI here: the HTTP side is ``registry_api``; the runtime's client may use the check.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import string
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

# The .poet/ store's durable writes: the registry is written the same way (temporary file, fsync, rename).
from poet_runtime.store import _fsync_dir, _write_file as _write_durable, atomic_write as _atomic_write

LABELS = ("current", "production", "staging")  # pointers a version may carry; "current" is what clients read
# Without these the prompt cannot work: the function to enhance, and what the answer must be.
REQUIRED_FIELDS = ("original_code", "output_contract")
MAX_TEMPLATE_BYTES = 64 * 1024  # the shipped ones are ~1.5 KB; a prompt is budgeted to small contexts
MAX_DESCRIPTION = 2000
SHIPPED_AUTHOR = "poet_runtime (shipped)"
_DOMAIN_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_VERSION_FOLDER = re.compile(r"^v([1-9][0-9]*)$")
_TEMP_PREFIX = ".tmp-"
_MALFORMED = re.compile(r"\$(\{[^}\n]{0,40}\}?|\w*)")  # what to name of a "$" that starts no placeholder
_thread_locks: dict[str, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


class TemplateRefused(ValueError):
    """A template that would not render; names the placeholder (and where it is)."""

    def __init__(self, placeholder: str, detail: str, line: int | None = None, column: int | None = None):
        where = f" (line {line}, column {column})" if line is not None else ""
        super().__init__(f"{detail}{where}")
        self.placeholder = placeholder
        self.detail = detail
        self.line = line
        self.column = column


class UnknownTemplate(LookupError):
    """No such domain, version or label in the registry (the API's 404)."""


@dataclass(frozen=True)
class TemplateVersion:
    domain: str
    version: int
    text: str
    metadata: dict  # created_at, updated_at, author, description, sha256

    def public_metadata(self) -> dict:
        return {key: self.metadata.get(key) for key in ("created_at", "updated_at", "author", "description")}


def _fields() -> tuple[str, ...]:
    from poet_runtime.generate.llm_prompt import FIELDS

    return FIELDS


def _position(text: str, index: int) -> tuple[int, int]:
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def check_template(text: str) -> list[str]:
    """The fields ``text`` uses, or ``TemplateRefused`` naming what stops it from rendering."""
    from poet_runtime.safe_text import hidden_characters

    if not isinstance(text, str) or not text.strip():
        raise TemplateRefused("template", "the template is empty")
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_TEMPLATE_BYTES:
        raise TemplateRefused("template", f"the template is {size} bytes; at most {MAX_TEMPLATE_BYTES}")
    hidden = hidden_characters(text)
    if hidden:
        line, column, name = hidden[0]
        raise TemplateRefused("template", f"the template holds a hidden character {name}", line, column)
    known = _fields()
    used: list[str] = []
    for match in string.Template.pattern.finditer(text):
        if match.group("escaped") is not None:
            continue  # "$$": a literal dollar sign
        line, column = _position(text, match.start())
        if match.group("invalid") is not None:
            following = _MALFORMED.match(text, match.start()).group(0)
            raise TemplateRefused(following, f"malformed placeholder {following!r}: write ${{field}} with "
                                  "one of the known fields, or $$ for a dollar sign", line, column)
        name = match.group("named") or match.group("braced")
        if name not in known:
            raise TemplateRefused(name, f"unknown placeholder ${{{name}}}; known: {', '.join(known)}", line, column)
        if name not in used:
            used.append(name)
    for name in REQUIRED_FIELDS:
        if name not in used:
            raise TemplateRefused(name, f"the template must contain ${{{name}}}")
    try:  # the proof: it renders with every field filled
        string.Template(text).substitute({name: "x" for name in known})
    except (KeyError, ValueError) as error:  # not reached after the checks above; kept as the last word
        raise TemplateRefused(str(error), f"the template does not render: {error}") from None
    return used


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _json(data: dict) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


class Registry:
    """The templates under ``root`` (the service's ``<data>/templates``); safe across threads and processes."""

    def __init__(self, root: Path):
        self.root = Path(root)

    # -- seeding -------------------------------------------------------------------------

    def seed(self) -> list[str]:
        """Give every shipped domain that has no folder yet its template as v1; returns those seeded."""
        from poet_runtime.domains import all_domains, get_domain

        self.root.mkdir(parents=True, exist_ok=True)
        seeded = []
        for name, domain in sorted(all_domains().items()):
            if (self.root / name).is_dir() and self._numbers(name):
                continue
            path = domain.template_path if domain.template_path.is_file() else get_domain("base").template_path
            text = path.read_text(encoding="utf-8")
            self.create(name, text, f"shipped with poet_runtime (domain {name}, template_version "
                                    f"{domain.template_version})", SHIPPED_AUTHOR, seeding=True)
            seeded.append(name)
        return seeded

    # -- reading -------------------------------------------------------------------------

    def domains(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(entry.name for entry in self.root.iterdir() if _DOMAIN_NAME.match(entry.name) and entry.is_dir())

    def _folder(self, domain: str) -> Path:
        if not isinstance(domain, str) or not _DOMAIN_NAME.match(domain):
            raise UnknownTemplate(f"no domain {domain!r} (a domain is lower-case letters, digits and _)")
        folder = self.root / domain
        if not folder.is_dir():
            raise UnknownTemplate(f"no domain {domain!r}; known: {', '.join(self.domains()) or 'none'}")
        return folder

    def _numbers(self, domain: str) -> list[int]:
        folder = self.root / domain
        try:
            names = os.listdir(folder)
        except OSError:
            return []
        found = []
        for name in names:
            match = _VERSION_FOLDER.match(name)
            if match and (folder / name / "metadata.json").is_file():
                found.append(int(match.group(1)))
        return sorted(found)

    def label(self, domain: str, label: str = "current") -> int:
        if label not in LABELS:
            raise UnknownTemplate(f"no label {label!r}; labels: {', '.join(LABELS)}")
        folder = self._folder(domain)
        try:
            text = (folder / label).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise UnknownTemplate(f"domain {domain!r} has no {label!r} version yet") from None
        match = _VERSION_FOLDER.match(text)
        if not match:
            raise UnknownTemplate(f"{folder / label}: holds {text[:20]!r}, not vN")
        return int(match.group(1))

    def get(self, domain: str, version: int | None = None, label: str = "current") -> TemplateVersion:
        number = self.label(domain, label) if version is None else version
        folder = self._folder(domain) / f"v{number}"
        try:
            metadata = json.loads((folder / "metadata.json").read_text(encoding="utf-8"))
            text = (folder / "template.txt").read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UnknownTemplate(f"domain {domain!r} has no version {number}") from None
        return TemplateVersion(domain, number, text, metadata)

    def versions(self, domain: str) -> list[TemplateVersion]:
        self._folder(domain)
        return [self.get(domain, number) for number in self._numbers(domain)]

    def template_entry(self, domain: str):
        """``domain``'s current template as the runtime's generators take it (``remote_templates.served_by``),
        or None (a domain the registry does not have: the package's template)."""
        from poet_runtime.generate.remote_templates import Entry

        try:
            found = self.get(domain)
        except UnknownTemplate:
            return None
        return Entry(found.version, found.text, None, time.time(),
                     hashlib.sha256(found.text.encode("utf-8")).hexdigest())

    def labels_of(self, domain: str) -> dict[str, int]:
        found = {}
        for label in LABELS:
            with contextlib.suppress(UnknownTemplate):
                found[label] = self.label(domain, label)
        return found

    # -- writing -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _lock(self, domain: str):
        """One writer per domain across threads (a lock) and processes (``flock`` on ``.lock``)."""
        import fcntl

        folder = self.root / domain
        folder.mkdir(parents=True, exist_ok=True)
        with _thread_locks_guard:
            local = _thread_locks.setdefault(os.fspath(folder), threading.Lock())
        with local:
            fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
                         | getattr(os, "O_CLOEXEC", 0), 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield folder
            finally:
                os.close(fd)  # closing releases the flock

    def create(self, domain: str, text: str, description: str, author: str, *, make_current: bool = True,
               seeding: bool = False) -> TemplateVersion:
        """Store ``text`` as the domain's next version (and make it current); raises ``TemplateRefused``."""
        check_template(text)
        if not seeding:
            self._folder(domain)  # only domains the registry has (the shipped ones) take new versions
        elif not _DOMAIN_NAME.match(domain):
            raise UnknownTemplate(f"no domain {domain!r}")
        with self._lock(domain) as folder:
            numbers = self._numbers(domain)
            if seeding and numbers:  # another process seeded it meanwhile
                return self.get(domain, numbers[-1])
            number = (numbers[-1] + 1) if numbers else 1
            now = _now()
            metadata = {"version": number, "created_at": now, "updated_at": now, "author": author,
                        "description": description,
                        "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}
            temp = Path(tempfile.mkdtemp(dir=folder, prefix=f"{_TEMP_PREFIX}v{number}-{os.getpid()}-"))
            try:
                _write_durable(temp / "template.txt", text)
                _write_durable(temp / "metadata.json", _json(metadata))
                _fsync_dir(temp)
                os.rename(temp, folder / f"v{number}")
            except BaseException:
                shutil.rmtree(temp, ignore_errors=True)
                raise
            _fsync_dir(folder)
            if make_current or not numbers:
                _atomic_write(folder / "current", f"v{number}\n")
            return TemplateVersion(domain, number, text, metadata)

    def set_label(self, domain: str, version: int, label: str = "current") -> str:
        """Point ``label`` at ``version`` (a rollback when it is older); returns the version's new updated_at."""
        if label not in LABELS:
            raise UnknownTemplate(f"no label {label!r}; labels: {', '.join(LABELS)}")
        self._folder(domain)
        with self._lock(domain) as folder:
            target = self.get(domain, version)
            metadata = dict(target.metadata)
            metadata["updated_at"] = _now()
            _atomic_write(folder / f"v{version}" / "metadata.json", _json(metadata))
            _atomic_write(folder / label, f"v{version}\n")
            return metadata["updated_at"]
