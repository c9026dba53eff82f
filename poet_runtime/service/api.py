"""``/api/v1``: generation, feedback, functions and their versions, events (filled in below)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from poet_runtime.service.context import ServiceContext


def build_router(context: ServiceContext) -> APIRouter:
    router = APIRouter(prefix="/api/v1")

    @router.get("/whoami", tags=["keys"], summary="The name and scope of the key used")
    def whoami(key=Depends(context.require("read"))) -> dict:
        return {"name": key.name, "scope": key.scope}

    return router
