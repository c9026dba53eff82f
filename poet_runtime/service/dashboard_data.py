"""What the dashboard shows, read from the store: functions, versions, diffs, learning series, events.

Kept apart from the HTML so each number on a page has one place it comes from, read the way
the CLI reads it: calls and fallbacks from ``reports.json`` (as ``status`` does), versions
and their trust from ``FunctionStore`` and ``versions.trust_of``, learning from the journal
(``learning.updated``, labelled ``function.feedback`` joined with its ``function.execution``)
and each version's ``state.json`` audit. Nothing here writes; nothing raises for a damaged
file (it is shown as damaged instead).
"""

from __future__ import annotations

import difflib
import os
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

# The journal is read whole for a function's plot; keep the series bounded for the page.
MAX_POINTS = 2000
OBJECTIVE_WINDOW = 20  # labelled calls per point of the rolling objective (the monitor's default window)
_VERSION = re.compile(r"v(\d+)")  # a version folder, as the store names them


@dataclass
class FunctionSummary:
    function_id: str
    folder: Path
    current: str  # "v2", "-" when there is none, "v2 (damaged)"
    current_number: int | None
    versions: int
    backend: str
    enhanced: int = 0
    fallbacks: dict = field(default_factory=dict)  # reason -> n, biggest first
    errors: int = 0
    repairs: dict = field(default_factory=dict)  # field -> n
    reported: dict = field(default_factory=dict)  # every other kind the checks reported -> its total
    objective: str | None = None

    @property
    def fell_back(self) -> int:
        return sum(self.fallbacks.values())

    @property
    def total(self) -> int:
        return self.enhanced + self.errors + self.fell_back


def _counts(value) -> dict:
    """``{name: n}`` of a reports.json kind, ints only, biggest first (status reads it the same way)."""
    if not isinstance(value, dict):
        return {}
    found = {str(k): int(n) for k, n in value.items() if isinstance(n, int) and not isinstance(n, bool) and n}
    return dict(sorted(found.items(), key=lambda item: (-item[1], item[0])))


def _reported(reports: dict) -> dict:
    """What else calls' checks reported (mismatches left as they were, retries, a domain's own
    notes such as ``domain.warning``), one total per kind, as ``status``'s "reported" column."""
    totals = {}
    for kind, fields in reports.items():
        if kind not in ("calls", "fallback", "repair"):
            total = sum(_counts(fields).values())
            if total:
                totals[str(kind)] = total
    return dict(sorted(totals.items(), key=lambda item: (-item[1], item[0])))


def _store_for(folder: Path):
    """A ``FunctionStore`` for a store folder, its function id read from a version's metadata."""
    from poet_runtime.store import FunctionStore

    probe = FunctionStore(folder, folder.name)
    for version in reversed(probe.versions()):
        function_id = version.metadata.get("function")
        if isinstance(function_id, str) and function_id:
            return FunctionStore(folder, function_id)
    return probe


def stores(store_root: Path) -> list:
    """Every function folder under the store root (a folder with version folders or a pointer)."""
    try:
        names = sorted(os.listdir(store_root))
    except OSError:
        return []
    found = []
    for name in names:
        folder = Path(store_root) / name
        if name.startswith(".") or name == "events" or os.path.islink(folder) or not folder.is_dir():
            continue
        try:
            inside = os.listdir(folder)
        except OSError:
            continue
        if "current" in inside or any(_VERSION.fullmatch(n) for n in inside):
            found.append(_store_for(folder))
    return found


def find_store(store_root: Path, function_id: str):
    """The store of ``function_id`` among those found (never a path built from the request)."""
    for store in stores(store_root):
        if store.function_id == function_id:
            return store
    return None


def backend_of(store, version) -> str:
    """Where ``version`` runs, as far as the service can tell without the function's source: a
    built-in version whose digest holds runs in-process under a policy trusting ``builtin``
    (it is written again at load), anything else in its policy's backend."""
    if version is None:
        return "-"
    from poet_runtime.store import DamagedFile, is_builtin_generator

    config = version.metadata.get("config") if isinstance(version.metadata.get("config"), dict) else {}
    try:
        from poet_runtime.policy import load_policy

        policy = load_policy(str(config.get("policy") or "default")).effective_for(store.function_id)
    except Exception as error:  # a policy the service cannot read: say so, the page still renders
        return f"unknown (policy: {type(error).__name__}: {error})"
    try:
        check = version.verify_code(store.function_id)
    except (DamagedFile, OSError):
        return "none: damaged, never runs"
    builtin = is_builtin_generator(version.metadata.get("generator")) and not version.metadata.get("transformed")
    if policy.backend == "none" or (builtin and "builtin" in policy.trust and check.digest_ok is not False):
        return "none (in-process)" if policy.backend != "none" else "none"
    return policy.backend


def summary(store) -> FunctionSummary:
    current_number = store.current_number()
    current = store.current()
    if current is not None:
        label = current.name
    elif current_number is not None:
        label = f"v{current_number} (damaged)"
    else:
        label = "-"
    reports = store.reports()
    calls = _counts(reports.get("calls"))
    latest = current or (store.versions() or [None])[-1]
    objective = None
    if latest is not None:
        config = latest.metadata.get("config")
        objective = config.get("optimize_for") if isinstance(config, dict) else None
    return FunctionSummary(
        function_id=store.function_id, folder=store.folder, current=label, current_number=current_number,
        versions=len(store.versions()) + len(store.damaged()), backend=backend_of(store, current), enhanced=calls.get("enhanced", 0),
        errors=calls.get("errors", 0), fallbacks=_counts(reports.get("fallback")),
        repairs=_counts(reports.get("repair")), reported=_reported(reports),
        objective=objective if isinstance(objective, str) else None)


def summaries(store_root: Path) -> list[FunctionSummary]:
    return [summary(store) for store in stores(store_root)]


@dataclass
class VersionRow:
    number: int
    created_at: str
    generator: str
    status: str
    trust: str
    key: str
    params: dict
    current: bool
    damaged: str | None = None


def version_rows(store) -> list[VersionRow]:
    from poet_runtime.commands.versions import trust_of

    current = store.current_number()
    rows = []
    for version in store.versions():
        meta = version.metadata
        params, _ = version.params_problems()
        rows.append(VersionRow(version.number, str(meta.get("created_at", "?")),
                               str(meta.get("generator", "?")) + (" (transformed)" if meta.get("transformed") else ""),
                               store.status_of(version), trust_of(store, version), str(meta.get("key", ""))[:12],
                               params, version.number == current))
    for number, error in store.damaged().items():
        detail = f"metadata.json: {error.field + ': ' if error.field else ''}{error.reason}"
        rows.append(VersionRow(number, "?", "?", "damaged", "damaged: " + detail, "-", {}, number == current, detail))
    rows.sort(key=lambda row: row.number)
    return rows


@dataclass
class DiffLine:
    kind: str  # "same", "add", "del", "skip" (unchanged lines left out)
    old: int | None  # line number in the older text
    new: int | None
    text: str


def code_of(store, number: int) -> tuple[str | None, str | None]:
    """(code.py text, None) or (None, why it cannot be shown)."""
    from poet_runtime.store import DamagedFile

    version = store.get(number)
    if version is None:
        return None, f"v{number} is not a complete version of {store.function_id}"
    try:
        return version.code(), None
    except DamagedFile as error:
        return None, f"v{number}: {error.reason}"
    except OSError as error:
        return None, f"v{number}: code.py cannot be read ({error.strerror or error})"


def diff(old: str, new: str, context: int = 3) -> list[DiffLine]:
    """A unified line diff with line numbers on both sides; runs of unchanged lines beyond
    ``context`` lines around a change become one ``skip`` line."""
    # split on "\n" only: splitlines() would also break at U+2028, form feeds and other separators
    # Python's parser does not treat as line ends, and they would vanish from the view
    a, b = old.split("\n"), new.split("\n")
    lines: list[DiffLine] = []
    for group in difflib.SequenceMatcher(None, a, b, autojunk=False).get_grouped_opcodes(context):
        if lines:
            lines.append(DiffLine("skip", None, None, ""))
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                lines.extend(DiffLine("same", i + 1, j1 + (i - i1) + 1, a[i]) for i in range(i1, i2))
                continue
            lines.extend(DiffLine("del", i + 1, None, a[i]) for i in range(i1, i2))
            lines.extend(DiffLine("add", None, j + 1, b[j]) for j in range(j1, j2))
    return lines


# -- learning over time ------------------------------------------------------------------------

@dataclass
class Series:
    name: str
    points: list  # [(timestamp, value)]
    step: bool = False  # a parameter holds its value until the next change


class EventCache:
    """The journal as the pages need it, read once and then only what is new (``events_api.Reader``
    re-reads a segment only when it changed): the newest ``per_function`` events of each function
    and the newest ``recent`` of all. A page load is then a copy of a list, not a read of every
    segment (a journal of 10,000 events took 1.6 s to read whole). Listing a journal of thousands
    of files still costs a few hundred ms, so the journal is looked at most once a second."""

    def __init__(self, store_root: Path, per_function: int = 20_000, recent: int = 2_000, interval: float = 1.0):
        from poet_runtime.service.events_api import Reader

        self.reader = Reader(store_root)
        self.lock = threading.Lock()
        self.per_function = per_function
        self.functions: dict[str, deque] = {}
        self.recent: deque = deque(maxlen=recent)
        self.types: set = set()
        self.interval = interval
        self.read_at: float | None = None  # monotonic, for the interval
        self.since = 0.0  # wall clock just before the last read: the events after it are not here yet

    def _update(self) -> None:
        if self.read_at is not None and time.monotonic() - self.read_at < self.interval:
            return
        since = time.time()
        fresh = self.reader.read()
        self.read_at, self.since = time.monotonic(), since
        for event in fresh:
            self.recent.append(event)
            self.types.add(event.get("type"))
            payload = event.get("payload")
            function = payload.get("function") if isinstance(payload, dict) else None
            if isinstance(function, str):
                if function not in self.functions:
                    self.functions[function] = deque(maxlen=self.per_function)
                self.functions[function].append(event)

    def snapshot(self, function_id: str | None = None) -> tuple[list[dict], set, float]:
        """(the newest events of ``function_id``, or of all, oldest first; every type seen in the
        journal; the time a live view must follow from so it misses nothing these lack)."""
        with self.lock:
            self._update()
            found = list(self.functions.get(function_id, ()) if function_id else self.recent)
            types, since = set(self.types), self.since
        found.sort(key=lambda e: _number(e.get("timestamp")) or 0.0)
        return found, types, since


def _number(value) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value and abs(value) != float("inf"):
        return float(value)
    return None


def objective_series(events: list[dict], objective: str | None) -> Series | None:
    """The objective over time: for a labelled objective, its value (``objectives.objective_value``,
    what the learner and the monitor compute) on the last ``OBJECTIVE_WINDOW`` labelled calls at
    each feedback; for ``latency``, the median duration of the last window of calls."""
    from poet_runtime.learn.objectives import LABELLED, objective_value, prediction_of

    if not objective:
        return None
    points = []
    if objective in LABELLED:
        outputs = {}
        window: list = []
        for event in events:
            payload = event["payload"]
            if event.get("type") == "function.execution" and payload.get("execution_id"):
                outputs[payload["execution_id"]] = payload.get("output")
            elif event.get("type") == "function.feedback" and payload.get("label") is not None:
                if payload.get("execution_id") not in outputs:
                    continue
                predicted = prediction_of(outputs[payload["execution_id"]])
                window = (window + [(bool(predicted), bool(payload["label"]))])[-OBJECTIVE_WINDOW:]
                when = _number(event.get("timestamp"))
                if when is not None and len(window) >= min(OBJECTIVE_WINDOW, 5):
                    points.append((when, objective_value(objective, window)))
    elif objective == "latency":
        window = []
        for event in events:
            if event.get("type") != "function.execution":
                continue
            duration = _number((event["payload"].get("metrics") or {}).get("duration_ms"))
            when = _number(event.get("timestamp"))
            if duration is None or when is None:
                continue
            window = (window + [duration])[-OBJECTIVE_WINDOW:]
            points.append((when, sorted(window)[len(window) // 2]))
    else:
        return None
    return Series(f"{objective} (last {OBJECTIVE_WINDOW} calls)", _thin(points))


def parameter_series(store, events: list[dict]) -> list[Series]:
    """Each learned parameter over time (one learning changed at least once): its value when
    each version was made, then every audited change (``learning.updated`` events, and the versions' state.json audit where the
    journal has been pruned)."""
    changes: dict[str, dict] = {}  # parameter -> {event id or (at, new): (at, new)}
    for event in events:
        if event.get("type") != "learning.updated":
            continue
        payload = event["payload"]
        when, new = _number(event.get("timestamp")), _number(payload.get("new"))
        if isinstance(payload.get("parameter"), str) and when is not None and new is not None:
            changes.setdefault(payload["parameter"], {})[event.get("id") or (when, new)] = (when, new)
    starts: dict[str, list] = {}
    for version in store.versions():
        try:
            state = version.state()
        except (OSError, ValueError):
            state = {}
        audit = state.get("audit") if isinstance(state.get("audit"), list) else []
        for entry in audit:
            if not isinstance(entry, dict) or not isinstance(entry.get("parameter"), str):
                continue
            when, new = _number(entry.get("at")), _number(entry.get("new"))
            if when is not None and new is not None:
                changes.setdefault(entry["parameter"], {}).setdefault(entry.get("event_id") or (when, new), (when, new))
        created = _created(version.metadata.get("created_at"))
        parameters = version.metadata.get("parameters") if isinstance(version.metadata.get("parameters"), dict) else {}
        for name, spec in parameters.items():
            default = _number(spec.get("default")) if isinstance(spec, dict) else None
            if created is not None and default is not None:
                starts.setdefault(name, []).append((created, default))
    series = []
    for name in sorted(changes):  # a parameter learning never moved is a flat line: left out
        points = sorted(set(changes.get(name, {}).values()) | set(starts.get(name, [])))
        series.append(Series(name, _thin(points), step=True))
    return series


def version_marks(store) -> list[tuple[float, str]]:
    marks = []
    for version in store.versions():
        created = _created(version.metadata.get("created_at"))
        if created is not None:
            marks.append((created, version.name))
    return marks


def _created(text) -> float | None:
    import calendar

    try:
        return float(calendar.timegm(time.strptime(str(text), "%Y-%m-%dT%H:%M:%SZ")))
    except (TypeError, ValueError):
        return None


def _thin(points: list) -> list:
    """At most MAX_POINTS, evenly spread, the last one kept."""
    if len(points) <= MAX_POINTS:
        return points
    step = len(points) / MAX_POINTS
    kept = [points[int(i * step)] for i in range(MAX_POINTS - 1)]
    return kept + [points[-1]]
