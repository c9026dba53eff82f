"""``/health/live`` and ``/health/ready``: for a supervisor or a test waiting on start-up.

Live means the process answers. Ready means it can do its job: the data dir and the store are
folders it can read, and every router was included (``create_app`` sets ``extras["ready"]`` last).
A service that is not ready answers 503 with a problem document saying what is missing.
"""

from __future__ import annotations

import os

from fastapi import APIRouter

from poet_runtime.service.context import ServiceContext
from poet_runtime.service.problems import Problem


def _readable_folder(path) -> str | None:
    if not path.is_dir():
        return f"{path} is not a folder"
    if not os.access(path, os.R_OK | os.X_OK):
        return f"{path} cannot be read"
    return None


def build_router(context: ServiceContext) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/health/live", summary="The process answers")
    def live() -> dict:
        return {"status": "ok"}

    @router.get("/health/ready", summary="The data dir and the store are readable and the routers are loaded")
    def ready() -> dict:
        missing = [m for m in (_readable_folder(context.data_dir), _readable_folder(context.store_root)) if m]
        if not context.extras.get("ready"):
            missing.append("the routers are not loaded yet")
        if missing:
            raise Problem(503, "not-ready", "; ".join(missing))
        return {"status": "ready", "data_dir": str(context.data_dir), "store": str(context.store_root),
                "routers": list(context.extras.get("routers", []))}

    return router
