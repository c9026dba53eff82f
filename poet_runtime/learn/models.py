"""The event schema as pydantic models: what every line under ``.poet/events/`` means.

Imported only on the events path (feedback validation, the ``events`` command, tests):
``import poet_runtime`` never pays for pydantic. The hot path writes plain dicts of
this shape; these models validate feedback before it is stored and events when read.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, field_validator

MAX_TEXT = 4096
Label = Union[StrictBool, StrictInt, StrictFloat, StrictStr]


class EventMetadata(BaseModel):
    version: str
    environment: str
    service: str


class POETEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    type: str
    timestamp: datetime
    correlation_id: Optional[str] = None
    causation_id: Optional[str] = None
    metadata: EventMetadata
    payload: dict[str, Any]


class ExecutionMetrics(BaseModel):
    duration_ms: float
    memory_mb: Optional[float] = None
    cpu_percent: Optional[float] = None


class ExecutionError(BaseModel):
    type: Optional[str] = None
    message: Optional[str] = None


class ExecutionPayload(BaseModel):
    """``function.execution``."""

    function: str
    version: Optional[int]
    execution_id: str
    start: datetime
    end: datetime
    status: Literal["ok", "error", "fallback"]
    metrics: ExecutionMetrics
    error: Optional[ExecutionError] = None
    fell_back: bool
    fallback_reason: Optional[str] = None
    phase_ms: dict[str, float] = Field(default_factory=dict)
    objective: Optional[str] = None
    pid: int = 0
    output: Any = None
    output_truncated: bool = False


class FeedbackInput(BaseModel):
    """What a caller may pass to ``feedback()``: strict types, bounded text."""

    model_config = ConfigDict(extra="forbid")

    label: Optional[Label] = None
    rating: Optional[Union[StrictInt, StrictFloat]] = Field(default=None, ge=0, le=5)
    metrics: Optional[dict[StrictStr, Union[StrictInt, StrictFloat]]] = Field(default=None, max_length=50)
    comments: Optional[StrictStr] = Field(default=None, max_length=MAX_TEXT)
    suggestions: Optional[list[StrictStr]] = Field(default=None, max_length=20)

    @field_validator("label")
    @classmethod
    def _label_size(cls, value):
        if isinstance(value, str) and len(value) > 1000:
            raise ValueError("a string label is at most 1000 characters")
        return value

    @field_validator("suggestions")
    @classmethod
    def _suggestion_size(cls, value):
        if value and any(len(item) > MAX_TEXT for item in value):
            raise ValueError(f"each suggestion is at most {MAX_TEXT} characters")
        return value


class FeedbackPayload(FeedbackInput):
    """``function.feedback``."""

    function: str
    version: Optional[int]
    execution_id: str
    feedback_type: Literal["performance", "error", "user", "system"]


class ParameterChange(BaseModel):
    """``learning.updated``: one audited change of a learned parameter."""

    function: str
    version: int
    objective: str
    parameter: str
    old: float
    new: float
    evidence: dict[str, Any]


class LearningDegraded(BaseModel):
    function: str
    version: int
    objective: str
    rolling: float
    baseline: float
    evidence: dict[str, Any]


class VersionDecision(BaseModel):
    """``version.candidate``, ``version.promoted``, ``version.rejected``, ``version.rolled_back``."""

    function: str
    version: int
    previous: Optional[int] = None
    objective: Optional[str] = None
    reason: str
    scores: dict[str, Any] = Field(default_factory=dict)


PAYLOADS = {
    "function.execution": ExecutionPayload,
    "function.feedback": FeedbackPayload,
    "learning.updated": ParameterChange,
    "learning.degraded": LearningDegraded,
    "version.candidate": VersionDecision,
    "version.promoted": VersionDecision,
    "version.rejected": VersionDecision,
    "version.rolled_back": VersionDecision,
}


def validate_event(data: dict) -> POETEvent:
    """Validate an event and, for the known types, its payload; raises pydantic.ValidationError."""
    event = POETEvent.model_validate(data)
    model = PAYLOADS.get(event.type)
    if model is not None:
        model.model_validate(event.payload)
    return event
