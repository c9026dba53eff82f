"""The dashboard at ``/``: functions, a function's versions with diffs, rollback and learning, live events.

Why server-rendered pages with one small script of our own (no htmx, no framework): every
number comes from the store on the server (``dashboard_data``) and is written into the HTML
(``dashboard_render``), so the page needs no build step and no third-party code to ship or
review; the script (``static/dashboard.js``) only signs in, rolls back and follows events.

Authentication. A page load cannot send ``Authorization``, and ``EventSource`` cannot send
headers at all, so signing in trades a key for a session: the sign-in page posts the key as
``Authorization: Bearer`` to ``POST /dashboard/session`` (checked by the service's own
``context.require("read")``: same keys, same rate limit), which sets an HttpOnly,
SameSite=Strict cookie signed with a secret this process made at start. The cookie carries the
key's name, a prefix of its digest and an expiry: it only ever grants ``read`` (pages and the
event stream), and dies with the key (revoked or replaced) or after ``SESSION_SECONDS``.
Writes never ride on the cookie (no CSRF surface): the rollback button sends the key the
person typed, kept in the tab's sessionStorage, as ``Authorization: Bearer`` to the API's
``PUT /api/v1/functions/{id}/current``, which checks ``write``.

Every page is sent with a Content-Security-Policy that allows only this origin's script and
style (no inline script, no inline style, no framing).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse

from poet_runtime.service import dashboard_data as data
from poet_runtime.service import dashboard_render as render
from poet_runtime.service.context import ServiceContext
from poet_runtime.service.problems import Problem

log = logging.getLogger("poet_runtime")

COOKIE = "poet_dashboard"
SESSION_SECONDS = 8 * 3600
STATIC = Path(__file__).parent / "static"
ASSETS = {"dashboard.js": "text/javascript; charset=utf-8", "dashboard.css": "text/css; charset=utf-8"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
PAGE_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                "Cache-Control": "no-store", "X-Frame-Options": "DENY"}
RECENT_EVENTS = 50
STREAM_POLL = 0.3  # seconds between looks at the journal
STREAM_SECONDS = 300.0  # a stream ends after this; EventSource reconnects (and the page passes `since`)


class Sessions:
    """Signed session cookies: ``base64(json).hmac``; the secret lives in this process only."""

    def __init__(self, keys):
        self.keys = keys  # the service's KeyStore (auth.KeyStore)
        self.secret = secrets.token_bytes(32)

    def _mac(self, body: bytes) -> str:
        return hmac.new(self.secret, body, hashlib.sha256).hexdigest()

    def issue(self, record, now: float | None = None) -> str:
        claims = {"n": record.name, "d": record.digest[:16], "e": int((now or time.time()) + SESSION_SECONDS)}
        body = base64.urlsafe_b64encode(json.dumps(claims, separators=(",", ":")).encode()).rstrip(b"=")
        return body.decode() + "." + self._mac(body)

    def check(self, cookie: str | None, now: float | None = None):
        """The key record behind a valid, unexpired session whose key still exists, else None."""
        if not cookie or "." not in cookie or len(cookie) > 1024:
            return None
        body, mac = cookie.rsplit(".", 1)
        if not hmac.compare_digest(self._mac(body.encode()), mac):
            return None
        try:
            claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except ValueError:
            return None
        if not isinstance(claims, dict) or not isinstance(claims.get("e"), int) or claims["e"] < (now or time.time()):
            return None
        if self.keys is None:
            return None
        for record in self.keys.records():
            if record.name == claims.get("n") and hmac.compare_digest(record.digest[:16], str(claims.get("d"))):
                return record
        return None  # revoked, or replaced by a new key of that name


def _html(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers=PAGE_HEADERS)


def _int(value) -> int | None:
    try:
        return int(str(value).lstrip("v"))
    except (TypeError, ValueError):
        return None


def build_router(context: ServiceContext) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    sessions = Sessions(context.extras.get("keys"))
    limiter = context.extras.get("limiter")
    journal_cache = data.EventCache(context.store_root)

    def session(request: Request):
        """The signed-in key (a read session), rate-limited like the key itself; None when signed out."""
        record = sessions.check(request.cookies.get(COOKIE))
        wait = limiter.hit(record.name, record.rate_limit) if record is not None and limiter is not None else 0
        if wait:
            raise Problem(429, "rate-limited", f"key {record.name!r} made more than {limiter.limit} requests "
                          f"in {limiter.window:g} s", headers={"Retry-After": str(max(1, int(wait + 0.999)))})
        return record

    def signed_in(record) -> str:
        return (f'signed in as <strong>{render.text(record.name)}</strong> ({render.text(record.scope)}) · '
                '<button type="button" id="sign-out" class="link">sign out</button>')

    def to_login(request: Request) -> RedirectResponse:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        from urllib.parse import quote

        return RedirectResponse("/login?next=" + quote(target, safe=""), status_code=303, headers=PAGE_HEADERS)

    def with_session(html_text: str, record) -> str:
        return html_text.replace('<span class="session"></span>', f'<span class="session">{signed_in(record)}</span>', 1)

    # -- signing in -----------------------------------------------------------------------

    @router.get("/login")
    def login_page(next: str = "/") -> HTMLResponse:
        # only a path on this server: never an open redirect
        target = next if next.startswith("/") and not next.startswith("//") and "\\" not in next else "/"
        return _html(render.login(target))

    @router.post("/dashboard/session")
    def open_session(request: Request, key=Depends(context.require("read"))) -> JSONResponse:
        response = JSONResponse({"name": key.name, "scope": key.scope, "expires_in": SESSION_SECONDS})
        response.set_cookie(COOKIE, sessions.issue(key), max_age=SESSION_SECONDS, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https", path="/")
        log.info("poet service: dashboard session opened for key %r", key.name)
        return response

    @router.post("/dashboard/logout")
    def close_session() -> JSONResponse:
        response = JSONResponse({"signed_out": True})
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response

    @router.get("/static/{name}")
    def asset(name: str) -> Response:
        if name not in ASSETS:
            raise Problem(404, "not-found", f"no dashboard asset {name!r}")
        return Response((STATIC / name).read_bytes(), media_type=ASSETS[name],
                        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"})

    # -- pages ----------------------------------------------------------------------------

    @router.get("/")
    def functions_page(request: Request):
        record = session(request)
        if record is None:
            return to_login(request)
        return _html(with_session(render.functions(data.summaries(context.store_root), context.store_root), record))

    @router.get("/functions/{function_id}")
    def function_page(request: Request, function_id: str, a: str | None = None, b: str | None = None):
        record = session(request)
        if record is None:
            return to_login(request)
        store = data.find_store(context.store_root, function_id)
        if store is None:
            body = (f'<h1>Not found</h1><p class="problem">No function {render.text(function_id)} in the store at '
                    f'<code>{render.text(context.store_root)}</code>.</p><p><a href="/">all functions</a></p>')
            return _html(with_session(render.page("Not found", body, page_name="function"), record), status=404)
        summary = data.summary(store)
        rows = data.version_rows(store)
        numbers = [row.number for row in rows if not row.damaged]
        old, new = _int(a), _int(b)
        if a is None and b is None and len(numbers) >= 2:
            # by default: what changed when the current version came, or since it (the oldest is current)
            new = summary.current_number if summary.current_number in numbers else numbers[-1]
            older = [n for n in numbers if n < new]
            old, new = (older[-1], new) if older else (new, next(n for n in numbers if n > new))
        diff_html = ""
        if a is not None or b is not None or (old is not None and new is not None):
            if old is None or new is None:
                diff_html = render.diff_view(old or 0, new or 0, None,
                                             f"choose two versions to compare (got a={a!r}, b={b!r})")
            else:
                old_text, problem = data.code_of(store, old)
                new_text, problem2 = data.code_of(store, new)
                problem = problem or problem2
                diff_html = render.diff_view(old, new, None if problem else data.diff(old_text, new_text), problem)
        events, _, since = journal_cache.snapshot(store.function_id)
        plot_html = render.plot_view(data.objective_series(events, summary.objective),
                                     data.parameter_series(store, events), data.version_marks(store))
        recent = list(reversed(events[-20:]))
        html_text = render.function(summary, rows, diff_html, plot_html,
                                    render.function_events_view(recent, store.function_id, since))
        return _html(with_session(html_text, record))

    @router.get("/events")
    def events_page(request: Request, function: str | None = None, type: str | None = None):
        record = session(request)
        if record is None:
            return to_login(request)
        from poet_runtime.service import events_api

        types = _types(type)
        source, seen_types, since = journal_cache.snapshot(function or None)
        try:
            events_api.check_types(types, [{"type": t} for t in seen_types])
        except Problem as error:  # shown on the page, not as JSON
            body = f'<h1>Live events</h1><p class="problem">{render.text(getattr(error, "detail", error))}</p>'
            return _html(with_session(render.page("Live events", body, page_name="events"), record), status=422)
        found = [e for e in source if events_api.matches(e, types, None, None)]
        events = list(reversed(found[-RECENT_EVENTS:]))
        return _html(with_session(render.events_page(events, function or None, type, since), record))

    # -- the live stream (EventSource: the session cookie authenticates it) ----------------

    @router.get("/dashboard/events/stream")
    async def stream(request: Request, function: str | None = None, type: str | None = None,
                     since: str | None = None):
        """The API's event stream (``events_api``: its reader, filters and ``since``) with the session
        cookie for a key, since EventSource cannot send one; each message is the short, visible-text
        line the page shows (``event: poet``), never a whole payload (no recorded inputs)."""
        from poet_runtime.service import events_api
        if session(request) is None:
            raise Problem(401, "no-session", "sign in on /login first: the event stream is read with the dashboard's "
                          "session cookie (EventSource cannot send an Authorization header)")
        types = _types(type)
        events_api.check_types(types, [{"type": t} for t in journal_cache.snapshot()[1]])
        after = events_api.parse_since(since)
        resumed = request.headers.get("last-event-id")  # EventSource reconnecting: after the last one it got
        if resumed:
            after = max(after or 0.0, events_api.parse_since(resumed, "Last-Event-ID"))
        reader = events_api.Reader(context.store_root)
        stopping = context.extras.get("stopping")

        async def lines():
            started = last_beat = time.monotonic()
            yield "retry: 1000\n\n"
            fresh = await asyncio.to_thread(reader.read)
            pause = STREAM_POLL
            if after is None:
                fresh = []  # without `since`, only what is written from now on: the page shows the rest
            while True:
                for event in fresh:
                    if events_api.matches(event, types, function or None, after):
                        line = render.event_line(event)
                        yield f"id: {_stamp(event)!r}\nevent: poet\ndata: {json.dumps(line)}\n\n"
                        last_beat = time.monotonic()
                if time.monotonic() - last_beat > 10:
                    last_beat = time.monotonic()
                    yield ": keep-alive\n\n"
                if (await request.is_disconnected() or time.monotonic() - started > STREAM_SECONDS
                        or (stopping is not None and stopping.is_set())):
                    return  # the client went, or the server is stopping (uvicorn waits for open responses)
                await asyncio.sleep(pause)
                took = time.monotonic()
                fresh = await asyncio.to_thread(reader.read)
                # listing a journal of thousands of files takes a while: an open view costs at most ~20% of a core
                pause = min(max(STREAM_POLL, 4 * (time.monotonic() - took)), 5.0)

        return StreamingResponse(lines(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    return router


def _types(value: str | None) -> list[str]:
    return [t.strip() for t in (value or "").split(",") if t.strip()]


def _stamp(event: dict) -> float:
    value = event.get("timestamp")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0
