"""What the most recent call did: ``poet_runtime.last_execution()``.

The call path stores a small tuple in a context variable (cheap enough for every
call); the readable ``ExecutionRecord`` is built only when someone asks. A context
variable gives each thread and each asyncio task its own "last call".

Nested calls: an enhanced call whose logic makes enhanced calls of its own is the one the
caller sees; the inner ones are its ``children``. While such a call runs, the variable holds
an ``Open`` marker; the inner calls, finding it (or a sibling that found it), hand it their
entries (``settle``). A function whose calls never nest stops setting the marker after
``QUIET_CALLS`` calls (the marker is a context-variable set, about 3% of a call), so a plain
call pays two reads of the variable and a comparison.
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

CHILDREN_KEPT = 100  # per call, the first inner calls kept; the rest are only counted (children_dropped)
QUIET_CALLS = 1000  # calls without an inner call after which a function stops marking its calls (see settle)

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
    # The enhanced calls its logic (or its original, on a fallback) made in this thread or task,
    # and in the tasks it started, in the order they finished: the first CHILDREN_KEPT of them.
    children: tuple = ()
    children_dropped: int = 0  # inner calls beyond CHILDREN_KEPT, counted only

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
    while type(entry) is Open:  # asked from inside a call before it made an inner call
        entry = entry.before
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
        children=tuple(build(child) for child in getattr(entry, "children", ())),
        children_dropped=getattr(entry, "dropped", 0),
    )


def last_execution() -> ExecutionRecord | None:
    """The record of the most recent enhanced call in this thread or task, or None."""
    return build(last.get())


# -- nested calls ------------------------------------------------------------------------


class Open:
    """An enhanced call under way, as ``last`` holds it: it collects the entries of the calls
    made inside it. Indexing answers as the entry before it would (``None`` fields when there
    was none), so code that reads ``last`` as an entry finds no call of its own there."""

    __slots__ = ("before", "children", "dropped", "closed")

    def __init__(self, before):
        self.before = before
        self.children = []
        self.dropped = 0
        self.closed = False

    def __getitem__(self, index):
        return None if self.before is None else self.before[index]

    def adopt(self, entry) -> None:
        if self.closed:
            return  # a task it started, finishing after it did
        if len(self.children) < CHILDREN_KEPT:
            self.children.append(entry)
        else:
            self.dropped += 1


class Nested(tuple):
    """An entry with what nesting adds: ``children`` and ``dropped`` (the inner calls), and,
    in the copy ``last`` holds, ``parent``: the open call it ran in, which the next call in
    the same thread or task (its sibling) finds there."""

    children = ()
    dropped = 0
    parent = None


def parent_of(before):
    """The open call that a call is inside, from what ``last`` held when it started."""
    kind = type(before)
    if kind is Open:
        return None if before.closed else before
    if kind is Nested:
        parent = before.parent
        return None if parent is None or parent.closed else parent
    return None


def settle(before, marker) -> None:
    """After a call set its own entry in ``last``: give it the inner calls ``marker`` collected
    (when the call set one), hand it to the open call it ran in, and leave in ``last`` what the
    next call needs. A call that set no entry of its own (an interruption went through) leaves
    ``last`` as it was before it."""
    own = last.get()
    children, dropped = (), 0
    if marker is not None:
        marker.closed = True
        if own is marker or (type(own) is Nested and own.parent is marker):
            last.set(before)
            return
        children, dropped = tuple(marker.children), marker.dropped
    elif own is before:
        return
    parent = parent_of(before)
    if not children and parent is None:
        return
    record = Nested(own)
    if children:
        record.children, record.dropped = children, dropped
    if parent is not None:
        parent.adopt(record)
        held = Nested(own)
        held.children, held.dropped, held.parent = record.children, record.dropped, parent
        record = held
    last.set(record)
