"""Errors as RFC 7807 problem documents, for every error the service answers.

A client (the runtime's, the dashboard, curl) gets one shape whatever went wrong:
``application/problem+json`` with ``type``, ``title``, ``status``, ``detail`` and ``instance``,
also for FastAPI's own validation errors (422, with each refused field under ``errors``) and
for routes that do not exist (404). ``raise Problem(...)`` anywhere in a handler.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from poet_runtime.safe_text import visible

logger = logging.getLogger("poet_runtime")

MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "https://poet-runtime.invalid/problems/"  # a name, not a page: RFC 7807 allows any URI


class Problem(StarletteHTTPException):
    """An error a handler answers with: ``raise Problem(403, "insufficient-scope", "...")``.

    An HTTPException, so that FastAPI passes it through where it wraps other errors (a body
    reader that refuses a body raises it: ``limits.BodyLimit``)."""

    def __init__(self, status: int, kind: str, detail: str, *, title: str | None = None,
                 headers: dict | None = None, **extra):
        super().__init__(status_code=status, detail=detail, headers=headers)
        self.status = status
        self.kind = kind
        self.detail = detail
        self.title = title or HTTPStatus(status).phrase
        self.headers = headers or {}
        self.extra = extra


def problem_response(request: Request, status: int, kind: str, detail: str, *, title: str | None = None,
                     headers: dict | None = None, **extra) -> JSONResponse:
    body = {
        "type": TYPE_BASE + kind,
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def _kind_of(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "-").replace("'", "")
    except ValueError:
        return "error"


def _field(location) -> str:
    """``body.config.domain`` from FastAPI's ``("body", "config", "domain")``."""
    return ".".join(str(part) for part in location)


def install(app: FastAPI) -> None:
    """Route every error of ``app`` through a problem document."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, error: Problem):
        return problem_response(request, error.status, error.kind, error.detail, title=error.title,
                                headers=error.headers, **error.extra)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException):
        detail = error.detail if isinstance(error.detail, str) else str(error.detail)
        if error.status_code == 404 and detail == "Not Found":
            detail = f"no route {request.method} {visible(request.url.path, allow_newlines=False)}"
        elif error.status_code == 405 and detail == "Method Not Allowed":
            allowed = (getattr(error, "headers", None) or {}).get("Allow") or (getattr(error, "headers", None) or {}).get("allow")
            detail = f"{request.method} is not allowed on {visible(request.url.path, allow_newlines=False)}" + \
                (f" (allowed: {allowed})" if allowed else "")
        return problem_response(request, error.status_code, _kind_of(error.status_code), detail,
                                headers=getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, error: RequestValidationError):
        errors = []
        for item in error.errors():
            errors.append({"field": _field(item.get("loc", ())), "message": str(item.get("msg", "")),
                           "type": str(item.get("type", ""))})
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors) or "the request is not valid"
        return problem_response(request, 422, "validation-error", detail, title="Request not valid", errors=errors)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception):
        logger.exception("poet service: %s %s failed", request.method, request.url.path)
        return problem_response(request, 500, "internal-error",
                                f"the service failed on this request ({type(error).__name__}); see its log")
