"""The service's application factory: one ``ServiceContext``, every router on it, errors as problems.

``create_app`` is the only place that knows all the parts: it builds the context (folders, the
key check ``context.require(scope)``), installs the problem-document handlers, the request
metrics, health, and includes each router from ``build_router(context)``: this package's own
(``api``), the template registry (``registry_api``) and the dashboard (``dashboard``). A part
whose module is not installed is skipped and logged; a part that fails to import is an error
the server does not start with, so a broken router is never silently missing.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from poet_runtime.service import limits, metrics, problems
from poet_runtime.service.auth import KeyFileError, KeyRecord, KeyStore, RateLimiter
from poet_runtime.service.context import SCOPES, ServiceContext
from poet_runtime.service.problems import Problem

logger = logging.getLogger("poet_runtime")

DEFAULT_RATE_LIMIT = 100  # requests per minute per key (the design's figure)
# Routers of other parts, by module name under poet_runtime.service, in inclusion order.
OPTIONAL_ROUTERS = ("registry_api", "dashboard")

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <key>")
_header_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="X-API-Key: <key>")


def _key_checker(keys: KeyStore, limiter: RateLimiter):
    """``require(scope)``: a dependency that authenticates (401), rate-limits (429), then checks the scope (403)."""
    cache: dict = {}

    def require(scope: str):
        if scope not in SCOPES:
            raise ValueError(f"unknown scope {scope!r}; one of {', '.join(SCOPES)}")
        if scope in cache:
            return cache[scope]

        async def dependency(request: Request,
                             bearer: HTTPAuthorizationCredentials | None = Depends(_bearer),
                             header_key: str | None = Depends(_header_key)) -> KeyRecord:
            presented = header_key or (bearer.credentials if bearer is not None else None)
            challenge = {"WWW-Authenticate": 'Bearer realm="poet"'}
            if not presented:
                raise Problem(401, "missing-key", "this route needs an API key: send 'Authorization: Bearer <key>' "
                              "or 'X-API-Key: <key>'", headers=challenge)
            try:
                record = keys.check(presented)
            except KeyFileError as error:
                logger.error("poet service: %s", error)
                raise Problem(500, "key-file-damaged", str(error)) from None
            if record is None:
                raise Problem(401, "unknown-key", "the API key is not one this service knows (revoked or mistyped)",
                              headers=challenge)
            wait = limiter.hit(record.name, record.rate_limit)
            if wait:
                raise Problem(429, "rate-limited",
                              f"key {record.name!r} made more than {record.rate_limit or limiter.limit} requests "
                              f"in {limiter.window:g} s",
                              headers={"Retry-After": str(max(1, int(wait + 0.999)))})
            if not record.allows(scope):
                raise Problem(403, "insufficient-scope",
                              f"this route needs scope {scope!r}; key {record.name!r} has {record.scope!r}",
                              required_scope=scope, key_scope=record.scope)
            request.state.key = record
            return record

        cache[scope] = dependency
        return dependency

    return require


def _include_optional(app: FastAPI, context: ServiceContext, name: str) -> bool:
    full = f"poet_runtime.service.{name}"
    try:
        module = importlib.import_module(full)
    except ModuleNotFoundError as error:
        if error.name != full:
            raise  # the module is there but something it imports is not: fail loudly
        logger.info("poet service: %s is not installed; its routes are not served", full)
        return False
    app.include_router(module.build_router(context))
    return True


def create_app(*, data_dir: Path, store_root: Path, keys: KeyStore | None = None,
               rate_limit: int = DEFAULT_RATE_LIMIT, rate_window: float = 60.0,
               model: str | None = None, routers=OPTIONAL_ROUTERS,
               max_body_bytes: int = limits.MAX_BODY_BYTES) -> FastAPI:
    """The service on ``data_dir`` (keys, answer cache, templates) serving the store at ``store_root``.

    ``rate_limit`` requests per ``rate_window`` seconds per key; ``model``: an LLM (litellm name)
    for ``/api/v1/enhance`` instead of the built-in generator.
    """
    data_dir = Path(data_dir)
    store_root = Path(store_root)
    keys = keys if keys is not None else KeyStore(data_dir)
    limiter = RateLimiter(rate_limit, rate_window)
    context = ServiceContext(data_dir=data_dir, store_root=store_root, require=_key_checker(keys, limiter))
    counters = metrics.Counters()
    # stopping: set when the server is asked to exit; long responses (event streams) end on it
    context.extras.update(keys=keys, limiter=limiter, model=model, routers=[], counters=counters,
                          stopping=threading.Event())

    app = FastAPI(title="POET service", version="1",
                  description="Templates, generation, feedback, functions and events of a poet_runtime store.")
    problems.install(app)
    app.add_middleware(limits.BodyLimit, limit=max_body_bytes)
    metrics.install(app, counters)  # added last, so outermost: it counts the 413s too
    app.state.context = context

    from poet_runtime.service import api, health

    app.include_router(health.build_router(context))
    app.include_router(metrics.build_router(context))
    app.include_router(api.build_router(context))
    context.extras["routers"].extend(["health", "metrics", "api"])
    for name in routers:
        if _include_optional(app, context, name):
            context.extras["routers"].append(name)
    context.extras["ready"] = True
    return app


def data_dir_default() -> Path:
    """``$XDG_DATA_HOME/poet/service`` (``~/.local/share/poet/service``): where ``serve`` keeps its data."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "poet" / "service"
