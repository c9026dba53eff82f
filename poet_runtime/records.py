"""What the most recent call did: ``poet_runtime.last_execution()``.

The call path stores a small tuple in a context variable (cheap enough for every
call); the readable ``ExecutionRecord`` is built only when someone asks. A context
variable gives each thread and each asyncio task its own "last call".
"""

from __future__ import annotations

import contextvars
import itertools
import os
import time
from dataclasses import dataclass, field

# Execution ids are "<process>-<n>": unique across processes without a uuid per call.
PROCESS_ID = os.urandom(6).hex()  # 48 random bits, as a uuid4 prefix would give, without importing uuid
next_number = itertools.count(1).__next__
clock = time.perf_counter_ns
last = contextvars.ContextVar("poet_last_execution", default=None)


def _after_fork_in_child() -> None:
    """A forked child is another process: its ids get a prefix of their own (the counter goes
    on, so a number the parent gave out is never reused here either), and the forking
    thread's last call was the parent's, not this process's."""
    global PROCESS_ID
    PROCESS_ID = os.urandom(6).hex()
    last.set(None)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

OK = "ok"
ERROR = "error"  # the user's logic raised; the exception reached the caller
FALLBACK = "fallback"  # the original function ran instead


@dataclass(frozen=True)
class ExecutionRecord:
    execution_id: str
    function: str  # "module:qualname"
    version: int | None
    backend: str | None
    status: str  # "ok", "error" or "fallback"
    fell_back: bool
    reason: str | None  # why it fell back (a short code), or the error type
    detail: str | None
    phase_ms: dict = field(default_factory=dict)  # perceive, operate, enforce (train included in enforce's tail)
    pid: int = 0
    # What the checks reported: (kind, field, detail) with kind "mismatch" (left as it was),
    # "repair" (changed, as the domain or repair="coerce" declares) or "retry".
    notes: tuple = ()

    @property
    def duration_ms(self) -> float:
        return sum(self.phase_ms.values())

    @property
    def evidence(self) -> list:
        """What the domain's checks reported with a dotted kind (``domain.advisory``, ...), as dicts."""
        return evidence_of(self.notes)


def evidence_of(notes) -> list:
    """``[{kind, field, detail}]`` of the notes whose kind has a dot (a domain's own reports)."""
    return [{"kind": kind, "field": field, "detail": detail}
            for kind, field, detail in notes or () if type(kind) is str and "." in kind]


def execution_id(number: int) -> str:
    return f"{PROCESS_ID}-{number}"


def build(entry) -> ExecutionRecord | None:
    """Turn the call path's tuple into a record. See ``enhanced`` for the tuple's shape."""
    if entry is None:
        return None
    state, number, status, reason, detail, t0, t1, t2, t3 = entry
    notes = ()
    if type(detail) is tuple:  # an ok call's notes ride in the detail slot (see enhanced)
        notes, detail = detail, None
    phases = {}
    if t0 is not None:
        phases = {"perceive": (t1 - t0) / 1e6, "operate": (t2 - t1) / 1e6, "enforce": (t3 - t2) / 1e6}
    return ExecutionRecord(
        execution_id=execution_id(number),
        function=state.function_id,
        version=state.version_number,
        backend=state.backend_name,
        status=status,
        fell_back=status == FALLBACK,
        reason=reason,
        detail=detail,
        phase_ms=phases,
        pid=os.getpid(),
        notes=notes,
    )


def last_execution() -> ExecutionRecord | None:
    """The record of the most recent enhanced call in this thread or task, or None."""
    return build(last.get())
