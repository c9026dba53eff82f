"""From the in-process bus to the durable queue, without making the call path wait.

The call path's listener only appends a tuple to a list (well under a microsecond);
a background flusher turns the tuples into ``function.execution`` events, appends them
to this process's segment and fsyncs, every ``flush_interval_s`` (100 ms by default).
So a hot function never pays an fsync per call, and an event is durable at most one
interval after the call. ``flush()`` forces that now (feedback does, so the execution
it refers to is durable before the feedback is).

Only functions registered with ``register`` are recorded: those with an objective, or
every enhanced function when ``POET_EVENTS=1``.
"""

from __future__ import annotations

import atexit
import itertools
import os
import random
import sys
import threading
import time
from collections import OrderedDict
from pathlib import Path

from poet_runtime import events, records
from poet_runtime.learn import config, journal

SCHEMA_VERSION = "1"
_NO_RESULT = object()
_next_event = itertools.count(1).__next__


def new_event_id() -> str:
    return f"ev-{records.PROCESS_ID}-{_next_event()}"


class FunctionInfo:
    """What the sink and the learner keep about one recorded function."""

    def __init__(self, function_id: str, root: Path, objective: str | None, needs_output: bool):
        self.function_id = function_id
        self.root = root
        self.objective = objective
        self.needs_output = needs_output
        self.sample = config.sample_for(function_id)
        self.recent: OrderedDict[int, tuple] = OrderedDict()  # execution number -> (row, batch row)
        self.direct = False  # True when the call path hands executions to ``record`` itself
        self.last_number: int | None = None  # of the last execution written
        self.engine = None  # learn.engine.Learning when the function has an objective
        self.state = None  # the FunctionState, when the function lives in this process

    @property
    def last_execution(self) -> str | None:
        return records.execution_id(self.last_number) if self.last_number is not None else None


_functions: dict[str, FunctionInfo] = {}
_pruned: set = set()
_buffer: list = []
_flush_lock = threading.RLock()
_segments: dict[Path, journal.Segment] = {}
_decision_segments: dict[Path, journal.Segment] = {}
_flusher: threading.Thread | None = None
_stop = threading.Event()
_unsubscribe = None
acknowledged = 0  # execution events made durable by this process so far
_cpu_mark = (time.monotonic(), time.process_time())


def _metadata() -> dict:
    settings = config.get()
    service = settings.service or os.path.basename(sys.argv[0] or "") or "python"
    return {"version": SCHEMA_VERSION, "environment": settings.environment, "service": service}


def _listener(event: dict) -> None:
    """Bus path: fallbacks (and executions of functions without the direct hook)."""
    kind = event["type"]
    if kind == "function.execution" or kind == "function.fallback":
        entry = records.last.get()  # set by the call path just before it emitted, in this thread
        info = _functions.get(entry[0].function_id) if entry is not None else None
        if info is None or (kind == "function.execution" and info.direct):
            return
        if info.sample < 1.0 and random.random() >= info.sample:
            return
        _buffer.append((info, entry, event.get("result", _NO_RESULT), time.time()))


def recorder_for(info: FunctionInfo):
    """The call path's direct hook (``FunctionState.recorder``): append the raw tuple, nothing more.

    Building the ExecutionRecord costs more than everything else here, so it is built by
    the flusher. Returns True when no other bus listener needs the record.
    """
    append, now, listeners, rand = _buffer.append, time.time, events._listeners, random.random

    def record(entry, result) -> bool:
        if info.sample >= 1.0 or rand() < info.sample:
            append((info, entry, result, now()))
        return len(listeners) == 1

    info.direct = True
    return record


def register(function_id: str, root: Path, objective: str | None, needs_output: bool) -> FunctionInfo:
    global _unsubscribe, _flusher
    with _flush_lock:
        info = _functions.get(function_id)
        if info is None or info.root != root:
            info = FunctionInfo(function_id, root, objective, needs_output)
            _functions[function_id] = info
        info.objective, info.needs_output = objective, needs_output
        journal.ensure_dirs(root)
        if root not in _pruned:  # retention: once per store root per process, off the call path
            _pruned.add(root)
            try:
                journal.prune(root, config.get().retention_days)
            except OSError:
                pass
        if _unsubscribe is None:
            _unsubscribe = events.subscribe(_listener)
        if _flusher is None or not _flusher.is_alive():
            _stop.clear()
            _flusher = threading.Thread(target=_run, name="poet-events-flusher", daemon=True)
            _flusher.start()
    return info


def registered(function_id: str) -> FunctionInfo | None:
    return _functions.get(function_id)


def roots() -> set[Path]:
    return {info.root for info in _functions.values()}


def _run() -> None:
    interval = config.get().flush_interval_s
    while not _stop.wait(interval):
        try:
            flush()
        except Exception:  # a full disk must not kill the flusher; the next round retries
            import logging

            logging.getLogger("poet_runtime").exception("poet_runtime: writing execution events failed")


_SCALAR = (bool, int, float, type(None))
_MAX_DETAIL = 2000  # an error message longer than this is cut: a row stays far below the 1 MB cap


def _output(result, settings) -> tuple[int, object]:
    """(flag, output): 0 not kept, 1 kept, 2 dropped (over max_output_bytes, or not JSON).

    The common small result (a scalar, or a short dict/list of scalars and short strings)
    is kept without encoding it twice; anything else is encoded once here to check its size.
    """
    if result is _NO_RESULT:
        return 0, None
    kind = type(result)
    if kind in _SCALAR:
        return 1, result
    if kind is str:
        return (1, result) if len(result) <= settings.max_output_bytes else (2, None)
    if kind is dict and len(result) <= 16:
        for key, value in result.items():
            if type(key) is not str or (type(value) not in _SCALAR and (type(value) is not str or len(value) > 256)):
                break
        else:
            return 1, result
    elif kind in (list, tuple) and len(result) <= 16:
        for value in result:
            if type(value) not in _SCALAR and (type(value) is not str or len(value) > 256):
                break
        else:
            return 1, result
    try:
        size = len(_encode_one(result))
    except (TypeError, ValueError):
        return 2, None
    return (1, result) if size <= settings.max_output_bytes else (2, None)


_encode_one = __import__("json").JSONEncoder(separators=(",", ":"), default=str).encode


def _header() -> bytes:
    return journal.encode({"segment": {"process": records.PROCESS_ID, "pid": os.getpid(), "metadata": _metadata()}},
                          1 << 20)


def flush() -> int:
    """Write and fsync every buffered execution event now; returns how many were written.

    Events are written as compact rows in one checksummed line per batch (see
    ``journal.expand`` for what a row means): encoding the full event per call would
    cost more than the call itself. A batch is acknowledged only after its fsync, so a
    batch torn by a crash holds no acknowledged event.
    """
    global acknowledged, _cpu_mark
    with _flush_lock:
        count = len(_buffer)
        if not count:
            return 0
        items = _buffer[:count]
        del _buffer[:count]  # calls appended meanwhile stay for the next round
        settings = config.get()
        now, cpu = time.monotonic(), time.process_time()
        cpu_percent = round(100.0 * (cpu - _cpu_mark[1]) / max(now - _cpu_mark[0], 1e-6), 1)
        _cpu_mark = (now, cpu)
        batch = ["B", _memory_mb(), cpu_percent]
        by_root: dict[Path, list] = {}
        learned: dict[FunctionInfo, list] = {}
        touched = set()
        next_event = _next_event
        for info, entry, result, wall in items:
            state, number, status, reason, detail, t0, t1, t2, t3 = entry
            flag, output = _output(result, settings) if info.needs_output else (0, None)
            if detail is not None and len(detail) > _MAX_DETAIL:
                detail = detail[:_MAX_DETAIL] + "..."
            row = ["X", next_event(), int(wall * 1e6), number, info.function_id, state.version_number, status,
                   None if t0 is None else t1 - t0, None if t0 is None else t2 - t1,
                   None if t0 is None else t3 - t2, reason, detail, info.objective, flag, output]
            rows = by_root.get(info.root)
            if rows is None:
                rows = by_root[info.root] = []
            rows.append(row)
            if info.objective:  # only executions that may get feedback are kept for it in memory
                info.recent[number] = (row, batch)
                touched.add(info)
            info.last_number = number
            if info.engine is not None and info.engine.measured:
                learned.setdefault(info, []).append((row, batch))
        cap = settings.recent_executions
        for info in touched:
            recent = info.recent
            while len(recent) > cap:
                recent.popitem(last=False)
        for root, rows in by_root.items():
            segment = _segments.get(root)
            if segment is None:
                segment = _segments[root] = journal.Segment(root, "ex", settings.segment_bytes, _header)
            try:
                segment.write(journal.encode_batch(batch, rows))
                segment.sync()
            except OSError:
                _segments.pop(root, None)  # a half-written batch ends this file; the next batch starts another
                raise
        acknowledged += count
    header = {"process": records.PROCESS_ID, "pid": os.getpid(), "metadata": _metadata()}
    for info, rows in learned.items():
        info.engine.on_executions([journal.expand(row, header, batch)["payload"] for row, batch in rows])
    return count


def _memory_mb() -> float | None:
    try:
        import resource

        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)
    except Exception:
        return None


def write_decision(root: Path, event_type: str, payload: dict, *, correlation_id: str | None = None,
                   causation_id: str | None = None) -> dict:
    """A learning.* or version.* event: durable at once (decisions are rare), and on the bus."""
    event = {"id": new_event_id(), "type": event_type, "timestamp": time.time(),
             "correlation_id": correlation_id, "causation_id": causation_id,
             "metadata": _metadata(), "payload": payload}
    line = journal.encode(event, config.get().max_event_bytes)
    with _flush_lock:
        segment = _decision_segments.get(root)
        if segment is None:
            segment = _decision_segments[root] = journal.Segment(root, "lr", config.get().segment_bytes)
        if line is not None:
            segment.write(line)
            segment.sync()
    events.emit(event_type, event=event, **payload)
    return event


def find_execution(execution_id: str, extra_roots=()) -> tuple[dict, Path] | None:
    """(execution payload, events root) for an id: from memory, else from the durable events on disk."""
    process, _, number = execution_id.rpartition("-")
    if process == records.PROCESS_ID and number.isdigit():
        header = {"process": process, "pid": os.getpid(), "metadata": _metadata()}
        for attempt in range(2):
            for info in list(_functions.values()):
                found = info.recent.get(int(number))
                if found is not None:
                    return journal.expand(found[0], header, found[1])["payload"], info.root
            if attempt == 0:
                flush()  # it may still be in the buffer
    seen = set()
    for root in [*(info.root for info in list(_functions.values())), *map(Path, extra_roots)]:
        if root in seen or not root.is_dir():
            continue
        seen.add(root)
        for path in journal.files(root):
            if not path.name.startswith("ex-"):
                continue
            for event in journal.read_file(path):
                if event.get("correlation_id") == execution_id and event.get("type") == "function.execution":
                    return event["payload"], root
    return None


def shutdown() -> None:
    """Flush, close segments, stop the flusher and forget registrations (tests; interpreter exit)."""
    global _unsubscribe, _flusher
    _stop.set()
    try:
        flush()
    finally:
        with _flush_lock:
            for segment in (*_segments.values(), *_decision_segments.values()):
                try:
                    segment.close()
                except OSError:
                    pass
            _segments.clear()
            _decision_segments.clear()
            if _unsubscribe is not None:
                _unsubscribe()
                _unsubscribe = None
            _functions.clear()
        if _flusher is not None and _flusher is not threading.current_thread():
            _flusher.join(timeout=2)
        _flusher = None


atexit.register(lambda: flush() if _functions else None)
