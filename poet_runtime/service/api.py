"""``/api/v1``: generation, feedback, functions and their versions, events.

Scopes: reading anything needs ``read``; generating, feedback and rollback need ``write``;
recorded inputs in events are served only with ``admin`` (``events_api.for_scope``). The
handlers are thin: the store is read and changed through ``functions`` (``FunctionStore``),
feedback goes through ``learn.feedback.feedback`` (the validation and the durable write of the
``feedback`` command), generation through ``generation.Generations``.
"""

from __future__ import annotations

from typing import Any, Optional

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from poet_runtime.service import events_api, functions
from poet_runtime.service.context import ServiceContext
from poet_runtime.service.generation import EnhanceRequest, EnhanceResponse, Generations
from poet_runtime.service.problems import Problem


class FeedbackRequest(BaseModel):
    """Feedback on one execution; the values are checked by ``poet_runtime.feedback``'s own rules."""

    model_config = ConfigDict(extra="forbid")

    execution_id: str = Field(..., description="as in poet_runtime.last_execution().execution_id")
    label: Any = Field(None, description="the right answer: bool, int, float or text")
    rating: Any = Field(None, description="0..5")
    comments: Any = None
    suggestions: Any = None
    metrics: Any = Field(None, description="name -> finite number")
    feedback_type: Optional[str] = Field(None, description="performance, error, user or system")


class FeedbackResponse(BaseModel):
    event_id: str
    execution_id: str


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(..., ge=1, description="the version to make current")


def _feedback_status(message: str) -> tuple[int, str]:
    """The HTTP status of a refusal by ``learn.feedback`` (it raises one error type for all)."""
    if "unknown execution" in message:
        return 404, "unknown-execution"
    if "too much feedback" in message:
        return 429, "feedback-rate"
    if "no optimize_for" in message:
        return 409, "no-objective"
    if "cannot be stored" in message:
        return 503, "feedback-not-stored"
    if "byte limit" in message:
        return 413, "feedback-too-large"
    return 422, "feedback-not-valid"


def _field_of(message: str) -> str | None:
    """``label`` from ``feedback on X: label: ...`` (the field a validation refusal names)."""
    _, sep, rest = message.partition(": ")
    if not sep:
        return None
    head, sep, _ = rest.partition(": ")
    return head if sep and head.replace(".", "").replace("_", "").isalnum() else None


def build_router(context: ServiceContext) -> APIRouter:
    router = APIRouter(prefix="/api/v1")
    counters = context.extras["counters"]
    generations = Generations(context.data_dir, context.extras.get("model"), counters)
    context.extras["generations"] = generations
    store_root = context.store_root

    @router.get("/whoami", tags=["keys"], summary="The name and scope of the key used")
    def whoami(key=Depends(context.require("read"))) -> dict:
        return {"name": key.name, "scope": key.scope}

    @router.post("/enhance", tags=["generation"], response_model=EnhanceResponse,
                 summary="Generate the enhancement of a function (one generation per version key, shared)")
    async def enhance(body: EnhanceRequest, key=Depends(context.require("write"))) -> dict:
        return await generations.enhance(body)

    @router.post("/feedback", tags=["feedback"], response_model=FeedbackResponse, status_code=201,
                 summary="Record feedback on an execution (as `python -m poet_runtime feedback` does)")
    def feedback(body: FeedbackRequest, key=Depends(context.require("write"))) -> dict:
        from poet_runtime import journal
        from poet_runtime.learn.feedback import FeedbackError
        from poet_runtime.learn.feedback import feedback as record

        try:
            event_id = record(body.execution_id, label=body.label, rating=body.rating, metrics=body.metrics,
                              comments=body.comments, suggestions=body.suggestions,
                              feedback_type=body.feedback_type, roots=[journal.events_root(store_root)],
                              only_roots=True)
        except FeedbackError as error:
            message = str(error)
            status, kind = _feedback_status(message)
            counters.inc("poet_service_feedback_total", {"outcome": kind})
            field = _field_of(message) if status == 422 else None
            raise Problem(status, kind, message, **({"field": field} if field else {})) from None
        counters.inc("poet_service_feedback_total", {"outcome": "accepted"})
        return {"event_id": event_id, "execution_id": body.execution_id}

    @router.get("/functions", tags=["functions"], summary="Every function in the store")
    def list_functions(key=Depends(context.require("read"))) -> dict:
        return {"functions": [functions.summary(store) for store in functions.list_stores(store_root)]}

    @router.get("/functions/{function_id}", tags=["functions"], summary="One function (module:qualname)")
    def get_function(function_id: str, key=Depends(context.require("read"))) -> dict:
        return functions.summary(functions.open_function(store_root, function_id))

    @router.get("/functions/{function_id}/versions", tags=["functions"], summary="A function's stored versions")
    def list_versions(function_id: str, key=Depends(context.require("read"))) -> dict:
        return functions.versions(functions.open_function(store_root, function_id))

    @router.get("/functions/{function_id}/versions/{number}", tags=["functions"],
                summary="One version: code, metadata, params, state")
    def get_version(function_id: str, number: int, key=Depends(context.require("read"))) -> dict:
        return functions.version_detail(functions.open_function(store_root, function_id), number)

    @router.put("/functions/{function_id}/current", tags=["functions"],
                summary="Make a version current (rollback or roll forward; needs write)")
    def set_current(function_id: str, body: RollbackRequest, key=Depends(context.require("write"))) -> dict:
        return functions.rollback(functions.open_function(store_root, function_id), body.version)

    @router.get("/events", tags=["events"],
                summary="Journal events (JSON); with Accept: text/event-stream or follow=1, a live SSE stream")
    async def events(request: Request,
                     function: Optional[str] = Query(None, description="module:qualname"),
                     type: list[str] = Query([], description="an event type or family (learning, learning.*)"),
                     since: Optional[str] = Query(None, description="Unix seconds or ISO 8601: events after it"),
                     limit: int = Query(1000, ge=1, le=events_api.MAX_EVENTS),
                     follow: bool = Query(False, description="stream new events (server-sent events)"),
                     key=Depends(context.require("read"))):
        from starlette.concurrency import run_in_threadpool

        after = events_api.parse_since(since)
        resume = request.headers.get("last-event-id")
        if resume:
            after = max(after or 0.0, events_api.parse_since(resume, "Last-Event-ID"))
        reader = events_api.Reader(store_root)
        found = await run_in_threadpool(reader.read)
        events_api.check_types(type, found)
        admin = key.allows("admin")
        if follow or "text/event-stream" in request.headers.get("accept", ""):
            return StreamingResponse(events_api.stream(request, reader, found, type, function, after, admin, limit,
                                                       context.extras.get("stopping")),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return await run_in_threadpool(events_api.listing, found, type, function, after, limit, admin)

    return router
