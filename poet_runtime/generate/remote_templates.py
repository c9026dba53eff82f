"""The runtime's client of the service's template registry (``POET_SERVICE_URL``).

With a service configured, the LLM generator's prompt templates come from
``GET /api/v1/templates/{domain}`` instead of the package's files, and the template's
service version is part of an LLM-made version's key (``identity.version_key``), so a
new template version on the service gives a new function version, as a local template
change does.

Why it is shaped like this:
- **A call never waits on the service.** Templates are read only while a version is looked
  up or generated (a function's first resolution, on the generation thread when a model is
  configured); a function already loaded does no HTTP at all. A lookup within ``TTL_S`` of
  the last answer (memory, else the cache file, so a new process inherits it) does no HTTP
  either; after that one revalidation with ``If-None-Match`` (a 304 has no body), bounded by
  ``TIMEOUT_S``. A change on the service is therefore seen within 60 s, the TTL prompt
  registries use.
- **An unreachable or refusing service is never an error for the program.** The last
  template the service gave (the cache) is kept; with none, the package's own template
  is used (and the key is the local one, so those versions are shared with a run without a
  service). One log line per process, one ``templates.fallback`` event; the service is not
  asked again for ``TTL_S``.
- **What the service answers is checked** like a template posted to it
  (``service.registry.check_template``): one that would not render is not used.
- stdlib only (``urllib``): no httpx, no service extra needed on a client, and without
  ``POET_SERVICE_URL`` this module is never imported.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger("poet_runtime")

TTL_S = 60.0  # a cached template is used without asking for this long; then revalidated
TIMEOUT_S = 2.0  # one request's socket timeout; generation may wait this long, a call never
MAX_BODY = 256 * 1024
EVENT_TYPE = "templates.fallback"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is refused, not followed: urllib would send the key's Authorization header to
    wherever the answer points."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def open_url(request, timeout: float):
    """``urlopen`` without redirects (the service's key stays with the service)."""
    return _opener.open(request, timeout=timeout)


@dataclass
class Entry:
    version: int
    text: str
    etag: str | None
    fetched_at: float  # time.time() of the last answer (200 or 304)
    sha256: str


class TemplateClient:
    """One service's templates, cached in memory and in ``cache_file``; safe to share between threads."""

    def __init__(self, url: str, key: str | None, cache_file: Path | None, *, ttl_s: float = TTL_S,
                 timeout_s: float = TIMEOUT_S):
        self.url = url.rstrip("/")
        self.key = key
        self.cache_file = cache_file
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self.requests = 0  # HTTP requests made (tests and benchmarks read it)
        self._memory: dict[str, Entry] = {}
        self._missing: dict[str, float] = {}  # domain -> until when the service said it has none
        self._file_read = False
        self._down_until = 0.0
        self._reported: set[str] = set()
        self._lock = threading.Lock()

    # -- what the runtime asks -----------------------------------------------------------

    def entry(self, domain: str) -> Entry | None:
        """The service's current template for ``domain``, or None: use the local one."""
        with self._lock:
            if not self._file_read:
                self._file_read = True
                self._memory.update(self._read_file())
            cached = self._memory.get(domain)
            now = time.time()
            if cached is not None and 0 <= now - cached.fetched_at < self.ttl_s:
                return cached
            if now < self._down_until or now < self._missing.get(domain, 0.0):
                return cached
            fresh = self._fetch(domain, cached, now)
            if fresh is not None:
                self._memory[domain] = fresh
                self._write_file()
            return fresh if fresh is not None else cached

    # -- HTTP ----------------------------------------------------------------------------

    def _fetch(self, domain: str, cached: Entry | None, now: float) -> Entry | None:
        address = f"{self.url}/api/v1/templates/{urllib.parse.quote(domain, safe='')}"
        request = urllib.request.Request(address, headers={"Accept": "application/json"})
        if self.key:
            request.add_header("Authorization", f"Bearer {self.key}")
        if cached is not None and cached.etag:
            request.add_header("If-None-Match", cached.etag)
        self.requests += 1
        try:
            with open_url(request, self.timeout_s) as response:
                body = response.read(MAX_BODY + 1)
                etag = response.headers.get("ETag")
        except urllib.error.HTTPError as error:
            if error.code == 304 and cached is not None:
                cached.fetched_at = now
                return cached
            if error.code == 404:
                # The service has no such domain: the local template, and the service is fine.
                self._missing[domain] = now + self.ttl_s
                self._report(f"missing:{domain}", f"the service at {self.url} has no template for domain "
                             f"{domain!r} (404)", domain)
                return None
            self._down(now, f"the service at {self.url} answered {error.code} {error.reason}"
                       + (" (check POET_SERVICE_KEY: the key needs scope 'read')" if error.code in (401, 403) else ""),
                       domain)
            return None
        except (OSError, ValueError) as error:  # refused, timed out, DNS, TLS, a bad URL
            reason = getattr(error, "reason", None) or error
            self._down(now, f"the service at {self.url} is unreachable ({type(error).__name__}: {reason})", domain)
            return None
        try:
            entry = _parse(body, etag, now)
        except ValueError as error:
            self._down(now, f"the service at {self.url} sent an unusable template for {domain!r}: {error}", domain)
            return None
        return entry

    def _down(self, now: float, detail: str, domain: str) -> None:
        self._down_until = now + self.ttl_s
        self._report("down", detail, domain)

    def _report(self, what: str, detail: str, domain: str) -> None:
        if what in self._reported:
            return
        self._reported.add(what)
        kept = domain in self._memory
        using = "the last template it gave" if kept else "the local templates"
        log.warning("poet_runtime: %s; using %s (asked again in %.0f s)", detail, using, self.ttl_s)
        from poet_runtime import events

        events.emit(EVENT_TYPE, service=self.url, domain=domain, detail=detail,
                    using="cached" if kept else "local")

    # -- the cache file ------------------------------------------------------------------

    def _read_file(self) -> dict[str, Entry]:
        if self.cache_file is None:
            return {}
        try:
            data = json.loads(self.cache_file.read_text(encoding="utf-8"))
            if data.get("url") != self.url:
                return {}
            found = {}
            for domain, item in (data.get("domains") or {}).items():
                entry = Entry(int(item["version"]), str(item["text"]), item.get("etag"), float(item["fetched_at"]),
                              str(item["sha256"]))
                if hashlib.sha256(entry.text.encode("utf-8")).hexdigest() == entry.sha256:
                    found[domain] = entry
            return found
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            log.info("poet_runtime: %s: template cache not used (%s: %s)", self.cache_file, type(error).__name__,
                     error)
            return {}

    def _write_file(self) -> None:
        if self.cache_file is None:
            return
        try:
            from poet_runtime.store import atomic_write

            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            merged = self._read_file_raw()  # another process's domains are kept
            merged.update({domain: asdict(entry) for domain, entry in self._memory.items()})
            atomic_write(self.cache_file, json.dumps({"url": self.url, "domains": merged}, sort_keys=True) + "\n")
        except OSError as error:  # the memory cache still works
            log.info("poet_runtime: %s: template cache not written (%s)", self.cache_file, error)

    def _read_file_raw(self) -> dict:
        try:
            data = json.loads(self.cache_file.read_text(encoding="utf-8"))
            return dict(data.get("domains") or {}) if data.get("url") == self.url else {}
        except (OSError, ValueError, AttributeError):
            return {}


def _parse(body: bytes, etag: str | None, now: float) -> Entry:
    from poet_runtime.service.registry import TemplateRefused, check_template

    if len(body) > MAX_BODY:
        raise ValueError(f"the answer is larger than {MAX_BODY} bytes")
    data = json.loads(body.decode("utf-8"))
    text, version = data.get("template"), data.get("version")
    if not isinstance(text, str) or isinstance(version, bool) or not isinstance(version, int):
        raise ValueError("the answer has no 'template' text and integer 'version'")
    try:
        check_template(text)
    except TemplateRefused as error:
        raise ValueError(f"it does not render: {error} (placeholder {error.placeholder})") from None
    return Entry(version, text, etag, now, hashlib.sha256(text.encode("utf-8")).hexdigest())


# -- the process's client, from the settings ---------------------------------------------

_client: TemplateClient | None = None
_client_lock = threading.Lock()
# A child forked while another thread held a lock would wait on it forever.
os.register_at_fork(after_in_child=_client_lock._at_fork_reinit)


def _after_fork() -> None:
    if _client is not None:
        _client._lock._at_fork_reinit()


os.register_at_fork(after_in_child=_after_fork)


def client() -> TemplateClient | None:
    """The client for ``POET_SERVICE_URL``, or None when no service is configured."""
    global _client
    from poet_runtime.settings import get_settings

    settings = get_settings()
    url = settings.service_url
    if not url:
        return None
    name = hashlib.sha256(url.rstrip("/").encode("utf-8")).hexdigest()[:16]
    cache_file = settings.cache_path() / "templates" / f"{name}.json"
    with _client_lock:
        if _client is None or (_client.url, _client.key, _client.cache_file) != \
                (url.rstrip("/"), settings.service_key, cache_file):
            _client = TemplateClient(url, settings.service_key, cache_file)
        return _client


def reset() -> None:
    """Forget the process's client (tests; settings changed)."""
    global _client
    with _client_lock:
        _client = None


# Inside the service: its own registry answers, without HTTP (``served_by``). A context
# variable, not a global, so two services in one process (tests) each use their own.
_source: contextvars.ContextVar = contextvars.ContextVar("poet_template_source", default=None)


@contextlib.contextmanager
def served_by(lookup):
    """Within this block (this thread or task), templates come from ``lookup(domain) -> Entry | None``:
    the service wraps its own generations in it, so its LLM prompts use its registry's current templates
    and their versions enter the keys, as they do for a client."""
    token = _source.set(lookup)
    try:
        yield
    finally:
        _source.reset(token)


def active_source():
    return _source.get()


def template_for(domain_name: str) -> Entry | None:
    """The service's template for ``domain_name``, or None: the local one applies."""
    lookup = _source.get()
    if lookup is not None:
        return lookup(domain_name)
    current = client()
    return current.entry(domain_name) if current is not None else None


def key_part(domain_name: str) -> dict | None:
    """What of the service's template enters a version's key; None when the local template is used."""
    entry = template_for(domain_name)
    if entry is None:
        return None
    return {"service_version": entry.version, "sha256": entry.sha256[:16]}
