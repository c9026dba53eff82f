"""``GET /api/v1/events``: the journal as JSON, or as server-sent events that keep coming.

The same reader as the ``events`` command (``journal.files``/``read_file``), the same filters
(``--type`` with families like ``learning``, ``--function``) plus ``since`` (Unix seconds or an
ISO 8601 time; events strictly after it). With ``Accept: text/event-stream`` or ``follow=1`` the
answer is a stream: what matches now, then each new event as it is written (the folder is
polled every ``POLL_S``; a segment whose size and mtime did not change is not read again). Each
SSE message has ``id: <timestamp>``, so a client that reconnects with ``Last-Event-ID`` resumes
after the last event it saw.

Recorded inputs (policy ``record_inputs``: the payload's ``inputs``) are the program's data:
served only to an ``admin`` key; others get ``"inputs_withheld": true`` in their place.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from datetime import datetime
from pathlib import Path

from poet_runtime.service.problems import Problem

POLL_S = 0.25
HEARTBEAT_S = 15.0
MAX_EVENTS = 10_000


def parse_since(value: str | None, field: str = "since") -> float | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise Problem(422, "bad-since", f"{field}: {value!r} is neither Unix seconds nor an ISO 8601 time",
                          field=field) from None
        if moment.tzinfo is None:
            raise Problem(422, "bad-since", f"{field}: {value!r} has no time zone (add Z or +00:00)", field=field)
        return moment.timestamp()
    if not math.isfinite(number):
        raise Problem(422, "bad-since", f"{field}: {value!r} is not a finite number", field=field)
    return number


def check_types(types: list[str], events=()) -> None:
    """A ``type`` must name a known event type or family, or one found in the journal (as ``events --type``)."""
    from poet_runtime.commands.events import unknown_types

    bad = unknown_types(types, {e.get("type") for e in events})
    if bad:
        raise Problem(422, "unknown-event-type", f"type: unknown event type {', '.join(map(repr, bad))}",
                      field="type")


def _timestamp(event: dict) -> float:
    value = event.get("timestamp")
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else 0.0


def matches(event: dict, types: list[str], function: str | None, since: float | None) -> bool:
    kind = str(event.get("type", ""))
    if types and not any(kind == t or kind.startswith(t.rstrip(".*") + ".") for t in types):
        return False
    payload = event.get("payload") if isinstance(event.get("payload"), dict) else {}
    if function and payload.get("function") != function:
        return False
    return since is None or _timestamp(event) > since


def for_scope(event: dict, admin: bool) -> dict:
    payload = event.get("payload")
    if admin or not isinstance(payload, dict) or "inputs" not in payload:
        return event
    payload = {k: v for k, v in payload.items() if k != "inputs"}
    payload["inputs_withheld"] = True
    return {**event, "payload": payload}


class Reader:
    """New events of a store's journal since the last ``read()``, cheaply."""

    def __init__(self, store_root: Path):
        from poet_runtime import journal

        self.root = journal.events_root(Path(store_root))
        self._seen: dict[str, tuple[tuple, int]] = {}  # segment name -> ((size, mtime), events read)

    def read(self) -> list[dict]:
        from poet_runtime import journal

        fresh = []
        for path in journal.files(self.root):
            try:
                stat = path.stat()
            except OSError:
                continue
            stamp = (stat.st_size, stat.st_mtime_ns)
            known = self._seen.get(path.name)
            if known is not None and known[0] == stamp:
                continue
            done = known[1] if known is not None else 0
            events = list(journal.read_file(path))
            self._seen[path.name] = (stamp, len(events))
            fresh.extend(events[done:])
        fresh.sort(key=_timestamp)
        return fresh


def listing(found: list[dict], types, function, since, limit: int, admin: bool) -> dict:
    events = [for_scope(e, admin) for e in found if matches(e, types, function, since)]
    total = len(events)
    events = events[-limit:]
    last = _timestamp(events[-1]) if events else since
    return {"events": events, "count": len(events), "matched": total, "next_since": last}


def _sse(event: dict) -> bytes:
    data = json.dumps(event, default=str, separators=(",", ":"))
    kind = str(event.get("type", "message")).replace("\n", " ")
    return f"id: {_timestamp(event)!r}\nevent: {kind}\ndata: {data}\n\n".encode()


async def stream(request, reader: Reader, found: list[dict], types, function, since, admin: bool, limit: int,
                 stopping=None):
    """An async iterator of SSE messages: the last ``limit`` matching events of ``found`` (what
    ``reader`` read first), then new ones until the client goes or the server stops (``stopping``,
    a threading.Event)."""
    from starlette.concurrency import run_in_threadpool

    yield b"retry: 1000\n\n"
    quiet_since = time.monotonic()
    fresh = [e for e in found if matches(e, types, function, since)][-limit:]
    while stopping is None or not stopping.is_set():
        for event in fresh:
            yield _sse(for_scope(event, admin))
        if fresh:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > HEARTBEAT_S:
            yield b": keep-alive\n\n"  # a comment: proxies and clients see the stream is alive
            quiet_since = time.monotonic()
        if await request.is_disconnected():
            return
        await asyncio.sleep(POLL_S)
        fresh = [e for e in await run_in_threadpool(reader.read) if matches(e, types, function, since)]
