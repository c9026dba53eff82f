"""From the in-process bus to the durable queue, without making the call path wait.

The call path's listener only puts the call's values in a list (well under a microsecond);
a background flusher turns them into ``function.execution`` events, appends them to this
process's segment and fsyncs, every ``flush_interval_s`` (100 ms by default).
So a hot function never pays an fsync per call, and an event is durable at most one
interval after the call. ``flush()`` forces that now (feedback does, so the execution
it refers to is durable before the feedback is).

Only functions registered with ``register`` are recorded: those with an objective, or
every enhanced function when ``POET_EVENTS=1``.
"""

from __future__ import annotations

import atexit
import itertools
import operator
import os
import random
import sys
import threading
import time
from collections import deque
from pathlib import Path

from poet_runtime import events, records
from poet_runtime import journal
from poet_runtime.learn import config

SCHEMA_VERSION = "1"
_NO_RESULT = object()
_counter = itertools.count(1)  # event seqs; the flusher takes a block per group
_next_event = _counter.__next__


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
        self.recent: deque = deque()  # (column group, batch line) of recent executions, for feedback
        self.recent_count = 0  # executions in ``recent``
        self.direct = False  # True when the call path hands executions to ``record`` itself
        self.last_number: int | None = None  # of the last execution written
        self.engine = None  # learn.engine.Learning when the function has an objective
        self.state = None  # the FunctionState, when the function lives in this process
        self.record_inputs = False  # set (for good) once its policy let this process record its calls' inputs
        self.inputs = None  # deque of (number, args, kwargs): recent calls' inputs kept in memory for replay

    @property
    def last_execution(self) -> str | None:
        return records.execution_id(self.last_number) if self.last_number is not None else None


_functions: dict[str, FunctionInfo] = {}
# root -> [bytes written since the limits were last applied, when (monotonic)]: retention and the
# size cap run in the flusher while the process runs, every LIMITS_EVERY_S or after a tenth of the cap.
_limits: dict = {}
_feedback_names: dict = {}  # root -> {feedback file name: execution id} (journal.referenced_executions)
LIMITS_EVERY_S = 60.0
# Buffered executions, flat: ``_WIDTH`` values per execution, the call path's entry (state, number,
# status, reason, detail, t0..t3; see ``enhanced``) then its result, the wall time and the FunctionInfo.
# Flat, so that a buffered call leaves no container of its own for the cyclic GC to track and
# promote (a tuple per call would, and a buffer of thousands of them triggers full collections);
# ``list.extend`` with a tuple adds all its values at once, so concurrent calls never interleave.
_buffer: list = []
_ENTRY = 9  # fields of the call path's entry
_WIDTH = _ENTRY + 3
_flush_lock = threading.RLock()
_segments: dict[Path, journal.Segment] = {}
_decision_segments: dict[Path, journal.Segment] = {}
_flusher: threading.Thread | None = None
_stop = threading.Event()
_unsubscribe = None
acknowledged = 0  # execution events made durable by this process so far
unencodable_details = 0  # notes' details and execution details JSON could not take, written as their text
flush_cpu_s = 0.0  # CPU time (of the flushing thread) spent in flush() so far: the recording's cost off the call path
_cpu_mark = (time.monotonic(), time.process_time())


def _metadata() -> dict:
    settings = config.get()
    service = settings.service or os.path.basename(sys.argv[0] or "") or "python"
    return {"version": SCHEMA_VERSION, "environment": settings.environment, "service": service}


# Events a domain's generated code reported (``validate.note`` with a dotted kind such as
# ``domain.advisory``): (type, function, version, field, detail, execution id, wall time, info),
# written by the flusher ahead of its batch line, in the same fsync.
_notes: list = []


def _listener(event: dict) -> None:
    """Bus path: fallbacks (and executions of functions without the direct hook), domain notes."""
    kind = event["type"]
    if "." in kind and "field" in event and "execution_id" in event and not kind.startswith("function."):
        info = _functions.get(event.get("function"))
        if info is not None:
            _notes.append((kind, event["function"], event.get("version"), event["field"], event.get("detail"),
                           event["execution_id"], time.time(), info))
        return
    if kind == "function.execution" or kind == "function.fallback":
        entry = records.last.get()  # set by the call path just before it emitted, in this thread
        info = _functions.get(entry[0].function_id) if entry is not None else None
        if info is None or (kind == "function.execution" and info.direct):
            return
        if info.sample < 1.0 and random.random() >= info.sample:
            return
        _buffer.extend(entry + (event.get("result", _NO_RESULT), time.time(), info))


def bus_wants_execution(function_id: str) -> bool:
    """Whether a ``function.execution`` event of this function, and the record built for it, has
    a use: False only when this sink is the bus's one listener and does not record the function
    (no objective, ``POET_EVENTS`` unset), so the call path skips building the record."""
    for listener in events._listeners:
        if listener is not _listener:
            return True
    info = _functions.get(function_id)
    return info is not None and not info.direct


def recorder_for(info: FunctionInfo):
    """The call path's direct hook (``FunctionState.recorder``): buffer the raw values, nothing more.

    Building the ExecutionRecord costs more than everything else here, so it is built by
    the flusher. The values go into the buffer flat (see ``_buffer``), so the GC has no
    per-call tuple to track. Returns True when no other bus listener needs the record.
    Its ``inline`` (itself) is what the in-process fast path calls, with
    ``(entry, result, args, kwargs, call)`` (see ``remembering_inputs``).
    """
    extend, now, listeners, rand = _buffer.extend, time.time, events._listeners, random.random

    def record(entry, result, args=None, kwargs=None, call=None) -> bool:
        if info.sample >= 1.0 or rand() < info.sample:
            extend(entry + (result, now(), info))
        return len(listeners) == 1

    record.inline = record
    record.poet_buffers = (info, False)
    info.direct = True
    return record


class _Inputs:
    """A buffered result together with the call's inputs (only for functions whose policy has record_inputs)."""

    __slots__ = ("result", "args", "kwargs")

    def __init__(self, result, args, kwargs):
        self.result, self.args, self.kwargs = result, args, kwargs


def recorder_with_inputs(info: FunctionInfo):
    """``recorder_for``, for a function whose effective policy has ``record_inputs = true``.

    The call path passes such a recorder ``(entry, result, args, kwargs)``;
    the inputs ride in the result's slot of the buffer (so the buffer's shape, and the
    default recorder, stay as they are) and are encoded, size-checked, by the flusher.
    A call without inputs (``args`` None) is recorded as ``recorder_for`` records it.
    The recorder function carries ``takes_inputs = True``: the call path reads it from
    the recorder it holds, so a recorder swapped meanwhile is never called with the wrong arguments.
    """
    extend, now, listeners, rand = _buffer.extend, time.time, events._listeners, random.random

    def record(entry, result, args=None, kwargs=None, call=None) -> bool:
        if info.sample >= 1.0 or rand() < info.sample:
            extend(entry + (result if args is None else _Inputs(result, args, kwargs), now(), info))
        return len(listeners) == 1

    record.takes_inputs = True
    record.inline = record
    record.poet_buffers = (info, True)
    info.direct = True
    info.record_inputs = True
    return record


_calls = threading.local()  # .call: (args, kwargs) the logic just got, from the train phase (this thread)


def watch_train(state) -> bool:
    """Let the in-process train phase hand over the call's (args, kwargs) as the logic got them.

    The generated ``train(call, result, metrics)`` runs in the caller's thread right before
    the call is recorded, so the recorder (``remembering_inputs``) pairs what it saw with
    the execution's number. The enhancement's own ``train`` runs as before.
    """
    enhancement = getattr(state.loaded, "enhancement", None)  # None: the phases run in a sandbox
    train = getattr(enhancement, "train", None)
    if train is None:
        return False
    if getattr(train, "poet_watched", False):
        return True
    local = _calls

    def watched(call, result, metrics):
        local.call = call
        return train(call, result, metrics)

    watched.poet_watched = True
    # The in-process fast path calls this one itself and hands the call to the recorder's ``inline``.
    watched.poet_train = train
    try:
        enhancement.train = watched
    except AttributeError:
        return False
    return True


def remembering_inputs(info: FunctionInfo, inner, cap: int, width: int = 1):
    """A recorder that keeps recent calls' inputs in memory (about the last ``cap``) for replay,
    then hands the call to ``inner``. The inputs are what the logic got (from the train phase,
    ``watch_train``), else the caller's when the call path passes them (policy ``record_inputs``);
    they go on to ``inner`` (and so to disk) only when ``inner`` takes them, i.e. only where the
    policy allows. The returned recorder takes inputs exactly when ``inner`` does.

    Kept flat, like ``_buffer``: per call ``number, *args, kwargs or None, len(args)`` go
    into one bounded deque, read back from its right end (``remembered_inputs``); so a call
    leaves no container of its own for the cyclic GC (a tuple per call would).
    """
    kept = info.inputs = deque(maxlen=max(cap, 1) * (3 + max(width, 1)))
    extend = kept.extend
    local = _calls

    def remember(number, args, kwargs) -> None:
        call = getattr(local, "call", None)
        if call is not None:
            local.call = None
            args, kwargs = call
        if args is not None:
            extend((number, *args, kwargs or None, len(args)))

    takes_inputs = getattr(inner, "takes_inputs", False)
    if takes_inputs:
        def record(entry, result, args=None, kwargs=None) -> bool:
            remember(entry[1], args, kwargs)
            return inner(entry, result, args, kwargs)

        record.takes_inputs = True
    else:
        def record(entry, result) -> bool:
            remember(entry[1], None, None)
            return inner(entry, result)

    record.inline = _remembering_inline(info, inner, takes_inputs, extend)
    return record


def _remembering_inline(info: FunctionInfo, inner, takes_inputs: bool, keep):
    """The in-process fast path's form of a ``remembering_inputs`` recorder, in one frame:
    ``(entry, result, args, kwargs, call)``, where ``call`` is the (args, kwargs) the logic got
    (the fast path ran the train phase itself, ``watch_train``'s ``poet_train``), or None (then
    the hand-over from the watched train, if any, is read as ``record`` reads it), and
    ``args``/``kwargs`` the caller's where the policy lets them be recorded, else None. When
    ``inner`` is this module's own buffering recorder of the same function, its body is inlined."""
    local = _calls
    own = getattr(inner, "poet_buffers", None)
    if own is not None and own[0] is info:
        extend, now, listeners, rand = _buffer.extend, time.time, events._listeners, random.random
        with_inputs = own[1]

        def inline(entry, result, args, kwargs, call) -> bool:
            if call is None:
                call = getattr(local, "call", None)
                if call is not None:
                    local.call = None
            if call is not None:
                given, named = call
                keep((entry[1], *given, named or None, len(given)))
            elif args is not None:
                keep((entry[1], *args, kwargs or None, len(args)))
            if info.sample >= 1.0 or rand() < info.sample:
                extend(entry + (result if args is None or not with_inputs else _Inputs(result, args, kwargs),
                                now(), info))
            return len(listeners) == 1

        return inline

    def composed(entry, result, args, kwargs, call) -> bool:
        if call is None:
            call = getattr(local, "call", None)
            if call is not None:
                local.call = None
        if call is not None:
            given, named = call
            keep((entry[1], *given, named or None, len(given)))
        elif args is not None:
            keep((entry[1], *args, kwargs or None, len(args)))
        return inner(entry, result, args, kwargs) if takes_inputs else inner(entry, result)

    return composed


def remembered_inputs(info: FunctionInfo, execution_id: str):
    """(args, kwargs) of a recent execution of this process whose inputs were kept in memory, or None."""
    process, _, number = execution_id.rpartition("-")
    kept = info.inputs
    if not kept or process != records.PROCESS_ID or not number.isdigit():
        return None
    number = int(number)
    flat = list(kept)  # a copy: calls append meanwhile
    end = len(flat)
    while end >= 3:
        count = flat[end - 1]
        first = end - 3 - count  # where this call's number is
        if type(count) is not int or first < 0:
            return None
        if flat[first] == number:
            return tuple(flat[first + 1:end - 2]), dict(flat[end - 2] or {})
        if flat[first] < number:
            return None  # numbers only grow towards the right end
        end = first
    return None


def register(function_id: str, root: Path, objective: str | None, needs_output: bool) -> FunctionInfo:
    global _unsubscribe, _flusher
    with _flush_lock:
        info = _functions.get(function_id)
        if info is None or info.root != root:
            info = FunctionInfo(function_id, root, objective, needs_output)
            _functions[function_id] = info
        info.objective, info.needs_output = objective, needs_output
        try:
            journal.ensure_dirs(root)
        except OSError as error:  # a read-only or full store: said once; the program is not affected
            report_write_error(root, error)
        if root not in _limits:  # retention and the size cap: by the flusher, off the call path, at once
            _limits[root] = [float("inf"), 0.0]
        if _unsubscribe is None:
            _unsubscribe = events.subscribe(_listener)
        _ensure_flusher()
    _join_fleet(root)
    return info


_fleet = None  # fleet.publisher.Publisher when a broker is set (POET_BROKER): the flusher hands it what it wrote


def _join_fleet(root: Path) -> None:
    """With a broker set, this store's journal is also forwarded to it (``fleet.publisher``).

    Without one nothing is imported: no thread, no connection, no ``redis``.
    """
    global _fleet
    from poet_runtime.settings import get_settings

    if not get_settings().broker:
        return
    from poet_runtime.fleet import publisher

    _fleet = publisher.get()
    if _fleet is not None:
        _fleet.add_root(root)


def _ensure_flusher() -> None:
    global _flusher
    if _flusher is None or not _flusher.is_alive():
        _stop.clear()
        _flusher = threading.Thread(target=_run, name="poet-events-flusher", daemon=True)
        _flusher.start()


# Fallbacks of functions whose executions are not recorded (no objective, POET_EVENTS unset, or an
# enhancement that never loaded): counted per reason by the call path (FunctionState.stats), written
# by the flusher as one ``function.fallback`` event per function and reason per round with calls.
_watched: dict = {}  # id(state) -> [state, events root, {reason: count written}]


def watch_fallbacks(state) -> None:
    """Record ``state``'s fallbacks from now on (the call path asks at its first fallback)."""
    with _flush_lock:
        if id(state) in _watched:
            return
        _watched[id(state)] = [state, _root_of(state), {}]
        _ensure_flusher()


def _root_of(state) -> Path:
    from poet_runtime.store import store_root

    version = state.version
    if version is not None:
        return journal.events_root(Path(version.path).parent.parent)
    module = sys.modules.get(state.original.__module__)
    return journal.events_root(store_root(getattr(module, "__file__", None)))


def _fallback_lines(settings) -> dict:
    """root -> ``function.fallback`` count events of the watched functions since the last round."""
    if not _watched:
        return {}
    lines: dict = {}
    metadata = None
    now = time.time()
    for state, root, written in list(_watched.values()):
        info = _functions.get(state.function_id)
        if info is not None and info.state is state:
            continue  # its fallbacks are recorded as executions
        counts = state.stats.fallbacks
        for reason, total in list(counts.items()):
            delta = total - written.get(reason, 0)
            if delta <= 0:
                continue
            written[reason] = total
            metadata = metadata or _metadata()
            detail = (getattr(state, "fallback_details", None) or {}).get(reason)
            redact = getattr(state, "redactor", None)
            if redact is not None and detail is not None:
                detail = redact(detail)
            event = {"id": new_event_id(), "type": "function.fallback", "timestamp": now, "correlation_id": None,
                     "causation_id": None, "metadata": metadata,
                     "payload": {"function": state.function_id, "version": state.version_number, "reason": reason,
                                 "detail": None if detail is None else str(detail)[:_MAX_DETAIL], "count": delta,
                                 "total": total}}
            line = journal.encode(event, settings.max_event_bytes)
            if line is not None:
                lines.setdefault(root, []).append(line)
    return lines


def registered(function_id: str) -> FunctionInfo | None:
    return _functions.get(function_id)


def roots() -> set[Path]:
    return {info.root for info in _functions.values()}


_reported: set = set()  # (root, cause) already said: once per cause, never a traceback per round
_failing: set = set()  # roots whose last write failed (said again when they work again)


def report_write_error(root: Path, error: BaseException) -> None:
    """Say once per store and cause (read-only, no space, ...) that events cannot be written there."""
    import errno
    import logging

    cause = errno.errorcode.get(getattr(error, "errno", None) or 0) or type(error).__name__
    _failing.add(root)
    if (root, cause) in _reported:
        return
    _reported.add((root, cause))
    where = getattr(error, "filename", None) or root
    reason = getattr(error, "strerror", None) or str(error)
    logging.getLogger("poet_runtime").warning(
        "poet_runtime: cannot write events to %s (%s: %s); events are dropped until it can be written, "
        "the program is not affected", where, cause, reason)


def _written(root: Path) -> None:
    if root in _failing:
        import logging

        _failing.discard(root)
        logging.getLogger("poet_runtime").info("poet_runtime: writing events to %s again", root)


def _run() -> None:
    interval = config.get().flush_interval_s
    while not _stop.wait(interval):
        try:
            flush()
            if _limits and _limits_due(config.get()):
                apply_limits()  # also without writes: retention while the process runs
        except Exception as error:  # never kill the flusher, never a traceback per round; the next round retries
            report_write_error(Path("<events>"), error)


def cap_bytes(settings) -> int:
    return int(settings.max_mb * 1024 * 1024)


def _segment_bytes(settings) -> int:
    """Segments rotate at an eighth of the cap (at most ``segment_bytes``): only a closed one can go."""
    return max(64 * 1024, min(settings.segment_bytes, cap_bytes(settings) // 8))


def apply_limits(force: bool = False) -> dict:
    """Apply retention and the size cap to every store this process writes, where due (or ``force``).

    Due when a tenth of the cap was written since the last time, or ``LIMITS_EVERY_S`` passed.
    Returns root -> what was removed (``journal.enforce_limits``).
    """
    settings = config.get()
    cap = cap_bytes(settings)
    now = time.monotonic()
    done = {}
    for root, (written, last) in list(_limits.items()):
        if not force and written < cap / 10 and now - last < LIMITS_EVERY_S:
            continue
        _limits[root] = [0, now]
        with _flush_lock:
            open_paths = [segment.path for segment in (_segments.get(root), _decision_segments.get(root))
                          if segment is not None and segment.path is not None and segment.handle is not None]
        try:
            done[root] = journal.enforce_limits(root, retention_days=settings.retention_days, max_bytes=cap,
                                                open_paths=open_paths, cache=_feedback_names.setdefault(root, {}),
                                                event_limit=settings.max_event_bytes)
        except OSError as error:
            report_write_error(root, error)
    return done


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


def _process_tag() -> str:
    return records.PROCESS_ID


def _header() -> bytes:
    return journal.encode({"segment": {"process": records.PROCESS_ID, "pid": os.getpid(), "metadata": _metadata()}},
                          1 << 20)


def flush() -> int:
    """Write and fsync every buffered execution event now; returns how many were written.

    Events are written in the column layout of ``journal.encode_columns``, one checksummed
    line per batch: per execution the flusher only moves a few integers and the output
    from column to column (zip, map and one JSON encoding per batch do the work in C), so
    recording costs far less than encoding a full event per call would. A batch is
    acknowledged only after its fsync, so a batch torn by a crash holds no acknowledged event.
    """
    global acknowledged, _cpu_mark, flush_cpu_s
    started = time.thread_time()
    with _flush_lock:
        size = len(_buffer)  # always a multiple of _WIDTH: each call extends it by _WIDTH at once
        if not size and not _notes and not _watched:
            return 0
        settings = config.get()
        noted = _note_lines(settings)
        for root, lines in _fallback_lines(settings).items():
            noted.setdefault(root, []).extend(lines)
        if not size and not noted:
            return 0
        count = size // _WIDTH
        by_root: dict[Path, list] = {}
        learned: list = []
        batch = None
        if size:
            if size % _WIDTH or type(_buffer[size - 1]) is not FunctionInfo:  # the entry's shape changed
                del _buffer[:size]
                raise RuntimeError(f"poet_runtime: execution buffer of {size} values is not {_WIDTH} per call")
            columns = [_buffer[field:size:_WIDTH] for field in range(_WIDTH)]  # one list per field, in call order
            del _buffer[:size]  # calls appended meanwhile stay for the next round
            now, cpu = time.monotonic(), time.process_time()
            cpu_percent = round(100.0 * (cpu - _cpu_mark[1]) / max(now - _cpu_mark[0], 1e-6), 1)
            _cpu_mark = (now, cpu)
            batch = ["C", _memory_mb(), cpu_percent]
            for info, state, columns in _groups(columns, count):
                group = _group(info, state, columns, settings)
                rows = by_root.get(info.root)
                if rows is None:
                    rows = by_root[info.root] = []
                rows.append((info, group))
                if info.engine is not None and info.engine.measured:
                    learned.append((info, group))
        for root in {**noted, **by_root}:
            groups = by_root.get(root, ())
            data = b"".join(noted.get(root, ()))
            if groups:
                data += journal.encode_columns(batch, [group for _, group in groups], _unencodable)
            try:
                segment = _segments.get(root)
                if segment is None:
                    segment = _segments[root] = journal.Segment(root, "ex", _segment_bytes(settings), _header,
                                                                _process_tag)
                segment.write(data)
                written_at = (segment.path, segment.handle.tell()) if _fleet is not None else None
                segment.sync()
                limits = _limits.get(root)
                if limits is not None:
                    limits[0] += len(data)
            except OSError as error:
                # A read-only or full store: these executions are not acknowledged (nothing refers
                # to them yet), said once per cause; a half-written batch ends its file, the next
                # batch starts another. Other stores are written as usual.
                broken = _segments.pop(root, None)
                if broken is not None and broken.handle is not None:
                    try:
                        broken.handle.close()
                    except OSError:
                        pass
                    broken.handle = None
                count -= sum(len(group[5]) for _, group in groups)
                report_write_error(root, error)
                continue
            _written(root)
            if written_at is not None:  # the broker's copy: handed over, sent by its own thread (no I/O here)
                _fleet.notify(root, written_at[0], written_at[1] - len(data), data)
            # Only now, durable, may an execution be found in memory for feedback: feedback on it
            # must never be stored while the execution itself could still be lost.
            for info, group in groups:
                if info.objective:  # only executions that may get feedback are kept for it in memory
                    _remember(info, group, batch, settings.recent_executions)
        acknowledged += count
    if learned:
        header = {"process": records.PROCESS_ID, "pid": os.getpid(), "metadata": _metadata()}
        for info, group in learned:
            info.engine.on_executions([journal.expand(row, header, batch)["payload"]
                                       for row in journal.group_rows(group)])
    if _limits and _limits_due(settings):
        apply_limits()
    flush_cpu_s += time.thread_time() - started
    return count


def _limits_due(settings) -> bool:
    cap, now = cap_bytes(settings), time.monotonic()
    return any(written >= cap / 10 or now - last >= LIMITS_EVERY_S for written, last in list(_limits.values()))


def _note_lines(settings) -> dict:
    """root -> encoded lines of the domain notes buffered so far (see ``_notes``), oldest first."""
    size = len(_notes)
    if not size:
        return {}
    taken = _notes[:size]
    del _notes[:size]
    lines: dict = {}
    metadata = _metadata()
    for kind, function, version, field, detail, execution_id, wall, info in taken:
        payload = {"function": function, "version": version, "field": field, "detail": detail,
                   "execution_id": execution_id}
        event = {"id": new_event_id(), "type": kind, "timestamp": wall, "correlation_id": execution_id,
                 "causation_id": None, "metadata": metadata, "payload": payload}
        try:
            line = journal.encode(event, settings.max_event_bytes)
        except Exception:  # a detail (or field) JSON cannot take: the note stays, as text
            payload["field"] = field if type(field) is str else journal.text_of(field, 200)
            payload["detail"] = journal.plain_notes(detail)
            payload["detail_unencodable"] = True
            _unencodable(1)
            line = journal.encode(event, settings.max_event_bytes)
        if line is None:  # a detail over the size of one event: the note stays, its detail is cut
            payload["detail"] = str(detail)[:_MAX_DETAIL] + "..."
            payload["detail_truncated"] = True
            line = journal.encode(event, settings.max_event_bytes)
        if line is not None:
            lines.setdefault(info.root, []).append(line)
    return lines


def _unencodable(count: int) -> None:
    """Details JSON could not take (a cycle, a ``__str__`` that raises) were written as text:
    counted, and said once per process; the calls and the rest of their batch are written."""
    global unencodable_details
    unencodable_details += count
    if ("unencodable",) not in _reported:
        _reported.add(("unencodable",))
        import logging

        logging.getLogger("poet_runtime").warning(
            "poet_runtime: %d recorded detail(s) (a note's detail or an execution's) could not be encoded "
            "as JSON and were written as their text (sink.unencodable_details counts them); said once", count)


def _groups(columns: list, count: int):
    """(info, state, columns) per function version; calls keep their order within a group."""
    states, infos = columns[0], columns[_ENTRY + 2]
    state, info = states[0], infos[0]
    if states.count(state) == count and infos.count(info) == count:  # the common case: one hot function
        info.last_number = columns[1][-1]
        yield info, state, columns
        return
    groups: dict = {}
    for index, state, info, number in zip(range(count), states, infos, columns[1]):
        key = id(state), id(info)
        part = groups.get(key)
        if part is None:
            part = groups[key] = []
        part.append(index)
        info.last_number = number
    for part in groups.values():
        take = operator.itemgetter(*part) if len(part) > 1 else (lambda column, i=part[0]: (column[i],))
        yield infos[part[0]], states[part[0]], [take(column) for column in columns]


def _group(info: FunctionInfo, state, columns: list, settings) -> list:
    """The column group of one function version's executions (see ``journal.group_rows``).

    Mostly the buffer's own columns: the flusher neither converts times nor subtracts
    phase marks (readers do), it only checks what is not the common case.
    """
    _, numbers, statuses, reasons, details, t0, t1, t2, t3, results, walls, _ = (
        column if type(column) is list else list(column) for column in columns)
    rows = len(numbers)
    seqs = list(itertools.islice(_counter, rows))
    first = seqs[0] if seqs[-1] - seqs[0] == rows - 1 else seqs  # contiguous unless another thread took one
    status = statuses[0] if statuses.count(statuses[0]) == rows else statuses
    reason = None if reasons.count(None) == rows else reasons
    detail = None
    if details.count(None) != rows:
        detail = [d if d is None or len(d) <= _MAX_DETAIL else d[:_MAX_DETAIL] + "..." for d in details]
    redact = getattr(state, "redactor", None)  # the domain says pii = "redact": nothing written unredacted
    if redact is not None and detail is not None:
        detail = [None if d is None else redact(d) for d in detail]
    inputs = None
    if info.record_inputs:
        results, inputs = _inputs(results, settings, redact)
    if redact is not None and info.needs_output:
        results = [redact(result) if result is not _NO_RESULT else result for result in results]
    flag, output = _outputs(results, settings) if info.needs_output else (0, None)
    group = [info.function_id, state.version_number, info.objective, first, walls, numbers, t0, t1, t2, t3,
             status, reason, detail, flag, output]
    if inputs is not None:
        group.append(inputs)  # only then: a group without inputs keeps the 15 fields older readers know
    return group


INPUTS_NONE, INPUTS_TOO_LARGE, INPUTS_NOT_JSON = 0, 2, 3  # see journal.expand
# Strict: an input that JSON cannot represent is dropped, never stored as its str() (a probe
# run on such a stand-in would call the function with something it was never called with).
_encode_inputs = __import__("json").JSONEncoder(separators=(",", ":")).encode


def _inputs(results: list, settings, redact=None) -> tuple[list, list | None]:
    """(results without their inputs, inputs column or None when no call in the group has inputs).

    A column entry is the JSON text of ``{"args": [...], "kwargs": {...}}``, or an int:
    0 not recorded (a call without inputs), 2 over ``max_input_bytes``, 3 not JSON-encodable.
    """
    if _Inputs not in set(map(type, results)):
        return results, None
    cap = settings.max_input_bytes
    plain, column = [], []
    for value in results:
        if type(value) is not _Inputs:
            plain.append(value)
            column.append(INPUTS_NONE)
            continue
        plain.append(value.result)
        try:
            args, kwargs = (value.args, value.kwargs) if redact is None else (redact(value.args), redact(value.kwargs))
            text = _encode_inputs({"args": args, "kwargs": kwargs})
        except (TypeError, ValueError, RecursionError):
            column.append(INPUTS_NOT_JSON)
            continue
        column.append(text if len(text) <= cap else INPUTS_TOO_LARGE)  # ASCII: characters are bytes
    return plain, column


_SCALARS = frozenset(_SCALAR)
_SHORT = frozenset((*_SCALAR, str))


def _outputs(results: tuple, settings) -> tuple:
    """(flag, output) of a group, as ``journal.group_rows`` reads them; ``_output`` per result when
    the results do not share one simple shape (scalars, short strings, or dicts with the same keys)."""
    kinds = set(map(type, results))
    if kinds <= _SCALARS:
        return 1, list(results)
    if kinds == _STR and max(map(len, results)) <= settings.max_output_bytes:
        return 1, list(results)
    if kinds == _DICT:
        shapes = set(map(tuple, results))
        if len(shapes) == 1:
            keys = shapes.pop()
            if len(keys) <= 16 and all(type(key) is str for key in keys):
                columns = []
                for key in keys:
                    column = list(map(operator.itemgetter(key), results))
                    kinds = set(map(type, column))
                    if not kinds <= _SCALARS and not (
                            kinds <= _SHORT and max(len(v) for v in column if type(v) is str) <= 256):
                        break
                    columns.append(column)
                else:
                    return 1, {"k": list(keys), "c": columns}
    flags, outputs = [], []
    for result in results:
        flag, output = _output(result, settings)
        flags.append(flag)
        outputs.append(output)
    if flags.count(flags[0]) == len(flags):
        flags = flags[0]
    if not any(map(operator.is_not, outputs, itertools.repeat(None))):  # by identity: a result's == may raise
        outputs = None
    return flags, outputs


_STR, _DICT = {str}, {dict}


def _remember(info: FunctionInfo, group: list, batch: list, cap: int) -> None:
    """Keep a group for feedback correlation: at least the last ``cap`` executions, whole groups."""
    recent = info.recent
    recent.append((group, batch))
    info.recent_count += len(group[5])
    while info.recent_count - len(recent[0][0][5]) >= cap:
        info.recent_count -= len(recent.popleft()[0][5])


def _recent_row(info: FunctionInfo, number: int):
    """(row, batch) of a recent execution of this function, or None."""
    for group, batch in reversed(list(info.recent)):  # a copy: the flusher appends meanwhile
        try:
            index = group[5].index(number)
        except ValueError:
            continue
        return journal.group_row(group, index), batch
    return None


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
        try:
            segment = _decision_segments.get(root)
            if segment is None:
                segment = _decision_segments[root] = journal.Segment(root, "lr", _segment_bytes(config.get()))
            if line is not None:
                segment.write(line)
                written_at = (segment.path, segment.handle.tell()) if _fleet is not None else None
                segment.sync()
                if written_at is not None:
                    _fleet.notify(root, written_at[0], written_at[1] - len(line), line)
        except OSError as error:  # the decision stands (it is applied); its record could not be written
            _decision_segments.pop(root, None)
            report_write_error(root, error)
    events.emit(event_type, event=event, **payload)
    return event


def find_execution(execution_id: str, extra_roots=()) -> tuple[dict, Path] | None:
    """(execution payload, events root) for an id: from memory, else from the durable events on disk."""
    process, _, number = execution_id.rpartition("-")
    if process == records.PROCESS_ID and number.isdigit():
        header = {"process": process, "pid": os.getpid(), "metadata": _metadata()}
        for attempt in range(2):
            for info in list(_functions.values()):
                found = _recent_row(info, int(number))
                if found is not None:
                    return journal.expand(found[0], header, found[1])["payload"], info.root
            if attempt == 0:
                flush()  # it may still be in the buffer
    seen = set()
    for root in [*(info.root for info in list(_functions.values())), *map(Path, extra_roots)]:
        if root in seen or not root.is_dir():
            continue
        seen.add(root)
        event = journal.find_execution_event(root, execution_id)
        if event is not None:
            return event["payload"], root
    return None


def recent_execution(execution_id: str) -> dict | None:
    """The payload of an execution of this process still kept in memory (durable), else None;
    never flushes nor reads the disk (the fleet publisher's thread asks)."""
    process, _, number = execution_id.rpartition("-")
    if process != records.PROCESS_ID or not number.isdigit():
        return None
    for info in list(_functions.values()):
        found = _recent_row(info, int(number))
        if found is not None:
            header = {"process": process, "pid": os.getpid(), "metadata": _metadata()}
            return journal.expand(found[0], header, found[1])["payload"]
    return None


def shutdown() -> None:
    """Flush, close segments, stop the flusher and forget registrations (tests; interpreter exit)."""
    global _unsubscribe, _flusher, _fleet
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
            _limits.clear()
            _feedback_names.clear()
            _watched.clear()
            _fleet = None  # the publisher (if any) keeps what it was given; nothing more is handed to it
        if _flusher is not None and _flusher is not threading.current_thread():
            _flusher.join(timeout=2)
        _flusher = None


def _exit_flush() -> None:
    if _functions or _watched:
        try:
            flush()
        except Exception as error:  # never the program's concern at exit
            report_write_error(Path("<events>"), error)


atexit.register(_exit_flush)


class _ForkMark:
    """A weakly referenced object ``multiprocessing.util.register_after_fork`` needs (see below)."""


_fork_mark = _ForkMark()


def _after_fork_in_child() -> None:
    """A forked child (``os.fork``, a prefork server, ``multiprocessing``) gets its own sink.

    The lock may have been held by the parent's flusher at the fork (nobody would ever
    release it here); the buffered calls are the parent's (it writes them); the open
    segments are the parent's files (their header names the parent); the flusher thread
    did not come along. The child starts a fresh lock and flusher, and writes its own
    segments. ``multiprocessing`` children leave through ``os._exit`` after their
    finalizers, skipping atexit: a finalizer flushes there too.
    """
    global _flush_lock, _stop, _flusher, acknowledged
    _flush_lock = threading.RLock()
    del _buffer[:]
    del _notes[:]
    for segment in (*_segments.values(), *_decision_segments.values()):
        handle, segment.handle = segment.handle, None
        if handle is not None:
            try:
                handle.close()  # this process's descriptor only; the parent's file stays open there
            except OSError:
                pass
    _segments.clear()
    _decision_segments.clear()
    _stop = threading.Event()
    _flusher = None
    acknowledged = 0
    for info in list(_functions.values()):
        info.last_number = None  # the parent's last execution is not this process's
        info.recent.clear()
        info.recent_count = 0
        if info.inputs is not None:
            info.inputs.clear()
        engine = info.engine
        if engine is not None:
            engine.lock = threading.RLock()
            if getattr(engine, "shadow", None) is not None and hasattr(engine.shadow, "lock"):
                engine.shadow.lock = threading.Lock()
    for watched in _watched.values():
        watched[2] = {}  # the child's counters start at zero (runtime._after_fork_in_child)
    if not _functions and not _watched:
        return
    _flusher = threading.Thread(target=_run, name="poet-events-flusher", daemon=True)
    _flusher.start()
    _flush_at_os_exit()
    util = sys.modules.get("multiprocessing.util")
    if util is not None:
        # multiprocessing clears its finalizers in the child after this hook, then runs its
        # after-fork callbacks: the finalizer is installed from one of those.
        util.register_after_fork(_fork_mark, _install_multiprocessing_flush)


def _install_multiprocessing_flush(_mark) -> None:
    util = sys.modules.get("multiprocessing.util")
    if util is not None:
        util.Finalize(None, _exit_flush, exitpriority=1_000_000)


EXIT_FLUSH_TIMEOUT_S = 2.0  # the longest os._exit waits for the last calls to reach the journal


def _flush_at_os_exit() -> None:
    """Make a forked child's ``os._exit`` write the calls still in the buffer first.

    A plain ``os.fork()`` child, or a prefork server's worker, often ends with ``os._exit``:
    no atexit, no finalizer, and the flusher thread dies mid-interval, so the calls of the
    last ``flush_interval_s`` would be lost. In the child (never in the parent), ``os._exit``
    becomes a function that flushes when there is something to write (or waits for the flush
    under way: the flusher may hold calls it took from the buffer), in a thread it waits
    for at most ``EXIT_FLUSH_TIMEOUT_S`` (a flusher stuck on a full or slow disk cannot make
    the exit hang), then calls the real ``os._exit`` with the same status, whatever happened.
    """
    if getattr(os._exit, "_poet_flushes", False):
        return  # a grandchild: the wrapper came along with the fork
    real_exit = os._exit

    def _exit(status):
        try:
            if _busy():
                writer = threading.Thread(target=_exit_flush, name="poet-exit-flush", daemon=True)
                writer.start()
                writer.join(EXIT_FLUSH_TIMEOUT_S)
        except BaseException:  # noqa: BLE001 - leaving is all that matters now
            pass
        real_exit(status)

    _exit._poet_flushes = True
    _exit.__doc__ = real_exit.__doc__
    os._exit = _exit


def _busy() -> bool:
    """Whether the sink has calls to write, or is writing some (the flusher took them from the
    buffer and holds the lock until they are on disk)."""
    if not _flush_lock.acquire(blocking=False):
        return True
    try:
        return bool(_buffer or _notes or _watched)
    finally:
        _flush_lock.release()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
