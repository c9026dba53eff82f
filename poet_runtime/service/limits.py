"""A cap on request bodies, before anything reads them.

Why: FastAPI reads a JSON body whole into memory before validating it, so a field's
``max_length`` comes too late against a client that sends a gigabyte. Bodies larger than
``MAX_BODY_BYTES`` (the largest legitimate one is an ``/enhance`` request carrying a module's
text) are answered 413 as a problem document: at once from ``Content-Length``, or as soon as a
chunked body passes the cap.
"""

from __future__ import annotations

import json

MAX_BODY_BYTES = 8 * 1024 * 1024


from poet_runtime.service.problems import TYPE_BASE, Problem

KIND = "body-too-large"
TITLE = "Content Too Large"


def _detail(limit: int) -> str:
    return f"the request body is larger than {limit} bytes"


class _TooLarge(Problem):
    """Raised from the body's reader; the app answers it as the 413 problem document."""

    def __init__(self, limit: int):
        super().__init__(413, KIND, _detail(limit), title=TITLE)


def _problem(path: str, limit: int) -> bytes:
    return json.dumps({"type": TYPE_BASE + KIND, "title": TITLE, "status": 413, "detail": _detail(limit),
                       "instance": path}).encode()


class BodyLimit:
    """ASGI middleware: ``app.add_middleware(BodyLimit, limit=...)``."""

    def __init__(self, app, limit: int = MAX_BODY_BYTES):
        self.app = app
        self.limit = limit

    async def _refuse(self, scope, send) -> None:
        body = _problem(scope.get("path", ""), self.limit)
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/problem+json"),
                                (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    too_large = int(value) > self.limit
                except ValueError:
                    too_large = False
                if too_large:
                    return await self._refuse(scope, send)
        seen = 0
        started = False

        async def receiving():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge(self.limit)
            return message

        async def sending(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receiving, sending)
        except _TooLarge:
            if not started:
                await self._refuse(scope, send)
