"""``poet_runtime.feedback(execution_id, ...)``: tell POET how a call went, durably.

Why it is strict: feedback drives learning, so a typo'd id or a wrong type must be a
clear error with nothing recorded rather than silent noise. The execution is found in
this process's memory or, for an execution recorded by an earlier process, in the
durable execution events. The feedback event is fsynced before this returns; if the
function lives in this process its learner then learns from it at once, otherwise the
event waits in ``pending/`` for the next process that loads the function. With a broker
set (``POET_BROKER``) it is handed to the fleet's publisher instead (no network I/O here)
and stays in ``pending/``: the fleet's learner learns from it, not this process.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

from poet_runtime.errors import PoetError

_ID = re.compile(r"[0-9a-f]{12}-\d+")
FEEDBACK_TYPES = ("performance", "error", "user", "system")
_buckets: dict[str, list[float]] = {}
_bucket_lock = threading.Lock()
if hasattr(__import__("os"), "register_at_fork"):
    __import__("os").register_at_fork(after_in_child=_bucket_lock._at_fork_reinit)


class FeedbackError(PoetError, ValueError):
    """Feedback that was refused; nothing was recorded."""


def _roots(extra, only: bool = False) -> list[Path]:
    from poet_runtime import journal
    from poet_runtime.settings import get_settings

    found = [Path(r) for r in extra]
    if only:
        return found
    settings = get_settings()
    for base in (settings.home, Path.cwd() / ".poet", settings.fallback_home()):
        if base is not None:
            found.append(journal.events_root(base))
    return found


def _take_token(function_id: str) -> bool:
    from poet_runtime.learn import config

    settings = config.get()
    now = time.monotonic()
    with _bucket_lock:
        tokens, last = _buckets.get(function_id, (float(settings.feedback_burst), now))
        tokens = min(float(settings.feedback_burst), tokens + (now - last) * settings.feedback_rate)
        if tokens < 1.0:
            _buckets[function_id] = [tokens, now]
            return False
        _buckets[function_id] = [tokens - 1.0, now]
        return True


def _feedback_type(label, rating, metrics, comments, suggestions) -> str:
    if label is None and rating is None and metrics and not comments and not suggestions:
        return "performance"
    return "user"


def feedback(execution_id: str, *, label=None, rating=None, metrics=None, comments=None, suggestions=None,
             feedback_type: str | None = None, roots=(), only_roots: bool = False) -> str:
    """Record feedback on one execution; returns the feedback event's id.

    ``label``: the right answer (for accuracy, precision, recall, alert_quality);
    ``rating``: 0..5; ``metrics``: name -> number; ``comments``: text; ``suggestions``:
    list of text. Raises ``FeedbackError`` (nothing recorded) for an unknown execution,
    a function without ``optimize_for``, wrong types, oversized text or too much feedback.
    ``only_roots``: look for the execution in ``roots`` alone (the service serves one store and must
    never write feedback into another that happens to hold the id), not also in POET_HOME, ./.poet
    and the fallback store.
    """
    if not isinstance(execution_id, str) or not _ID.fullmatch(execution_id):
        raise FeedbackError(f"feedback: {execution_id!r} is not an execution id (expected '<process>-<n>', "
                            "as in poet_runtime.last_execution().execution_id)")
    if feedback_type is not None and feedback_type not in FEEDBACK_TYPES:
        raise FeedbackError(f"feedback: feedback_type={feedback_type!r}; allowed: {', '.join(FEEDBACK_TYPES)}")
    from pydantic import ValidationError

    from poet_runtime import journal
    from poet_runtime.learn import models, sink
    from poet_runtime.learn import config as learn_config

    fields = dict(label=label, rating=rating, metrics=metrics, comments=comments, suggestions=suggestions)
    _refuse_non_finite(execution_id, label, rating, metrics)
    try:
        checked = models.FeedbackInput(**fields)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'feedback'}: {e['msg']}" for e in error.errors())
        raise FeedbackError(f"feedback on {execution_id}: {problems}") from None
    if all(value is None for value in fields.values()):
        raise FeedbackError(f"feedback on {execution_id}: nothing to record (give a label, rating, metrics, "
                            "comments or suggestions)")
    found = sink.find_execution(execution_id, extra_roots=_roots(roots, only_roots))
    if found is None:
        raise FeedbackError(f"feedback: unknown execution {execution_id} (not in this process and not in the "
                            "durable execution events; was the function's optimize_for set when it ran?)")
    execution, root = found
    function_id = execution["function"]
    if not execution.get("objective"):
        raise FeedbackError(f"feedback: {function_id} has no optimize_for, so POET does not learn from feedback "
                            "and stores none")
    if not _take_token(function_id):
        raise FeedbackError(f"feedback: too much feedback for {function_id} (more than "
                            f"{learn_config.get().feedback_rate:g}/s); not recorded")
    kind = feedback_type or _feedback_type(label, rating, metrics, comments, suggestions)
    payload = models.FeedbackPayload(function=function_id, version=execution.get("version"),
                                     execution_id=execution_id, feedback_type=kind,
                                     **checked.model_dump()).model_dump()
    event_id = sink.new_event_id()
    event = {"id": event_id, "type": "function.feedback", "timestamp": time.time(),
             "correlation_id": execution_id, "causation_id": None, "metadata": sink._metadata(), "payload": payload}
    line = journal.encode(event, learn_config.get().max_event_bytes)
    if line is None:
        raise FeedbackError(f"feedback on {execution_id}: larger than the {learn_config.get().max_event_bytes} byte "
                            "limit of one event")
    try:
        path = journal.write_single(root, f"fb-{event_id}.jsonl", line)
    except OSError as error:
        raise FeedbackError(f"feedback on {execution_id}: cannot be stored in {error.filename or root} "
                            f"({error.strerror or error}); not recorded") from None
    from poet_runtime import events

    events.emit("function.feedback", event=event)
    _to_fleet(root, path, line, execution)
    info = sink.registered(function_id)
    if info is not None and info.engine is not None and info.root == root:
        info.engine.process(path)
    return event_id


def _to_fleet(root: Path, path: Path, line: bytes, execution: dict) -> None:
    """With a broker set, the feedback (and the execution it is about, ``x``) goes to the fleet's
    learners by the publisher's thread; this returns at once. Unsent (the process ends first, the
    broker is away), the file stays unforwarded in the journal and an instance forwards it."""
    from poet_runtime.settings import get_settings

    if not get_settings().broker:
        return
    from poet_runtime.fleet import publisher

    fleet = publisher.get()
    if fleet is not None:
        fleet.notify(root, path, 0, line, {"x": publisher.encode_json(execution)})


def _refuse_non_finite(execution_id: str, label, rating, metrics) -> None:
    """NaN and infinities are no label, rating or metric (a NaN label is never equal to anything)."""
    import math

    def bad(value) -> bool:
        return type(value) is float and not math.isfinite(value)

    if bad(label):
        raise FeedbackError(f"feedback on {execution_id}: label: {label!r} is not a value (NaN or infinite)")
    if bad(rating):
        raise FeedbackError(f"feedback on {execution_id}: rating: {rating!r} is not a number between 0 and 5")
    if isinstance(metrics, dict):
        for name, value in metrics.items():
            if bad(value):
                raise FeedbackError(f"feedback on {execution_id}: metrics.{name}: {value!r} is not a finite number")


def feedback_for(state, **fields) -> str:
    """``fn.feedback(...)``: feedback on the most recent execution of this function."""
    from poet_runtime import records
    from poet_runtime.learn import sink

    entry = records.last.get()
    if entry is not None and entry[0] is state:
        execution_id = records.execution_id(entry[1])
    else:
        sink.flush()
        info = sink.registered(state.function_id)
        execution_id = info.last_execution if info is not None else None
    if execution_id is None:
        raise FeedbackError(f"feedback: {state.function_id} has no recorded execution yet")
    return feedback(execution_id, **fields)
