"""``/metrics``: Prometheus text exposition (format 0.0.4), written by hand.

Why by hand: the format is a few lines of text per sample, and the service's numbers come from
two places a client library would not know anyway: the store (each function's ``reports.json``
for calls and fallbacks by reason, the journal's ``function.execution`` events for call latency,
``generation.attempt`` events, the versions on disk) and the service's own counters (requests
by route and status, request latency, generations and answer-cache outcomes).

The journal is read incrementally: a segment whose size and mtime did not change since the last
scrape is not read again, so a scrape costs what was written since the one before.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path

# Seconds; a call through POET is microseconds to seconds, a request milliseconds, a generation up to minutes.
CALL_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0)
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
GENERATION_BUCKETS = (0.001, 0.01, 0.1, 1.0, 10.0, 60.0, 300.0)

HELP = {
    "poet_service_requests_total": ("counter", "HTTP requests the service answered, by route template, method and status"),
    "poet_service_request_seconds": ("histogram", "time to answer a request, by route template"),
    "poet_service_generations_total": ("counter", "generations the service ran for /api/v1/enhance, by generator and outcome"),
    "poet_service_generation_seconds": ("histogram", "time one generation took, by generator"),
    "poet_service_enhance_answers_total": ("counter", "/api/v1/enhance answers by cache: miss (generated), hit, shared (waited for one generation)"),
    "poet_service_feedback_total": ("counter", "feedback the service recorded (accepted) or refused, by reason"),
    "poet_calls_total": ("counter", "recorded calls of each function by outcome (enhanced, errors: the logic raised), from reports.json"),
    "poet_fallbacks_total": ("counter", "calls that ran the original function instead, by function and reason, from reports.json"),
    "poet_reports_total": ("counter", "what calls' checks reported (mismatch, repair, retry, ...), by function and kind"),
    "poet_versions": ("gauge", "stored versions of each function, by generator"),
    "poet_current_version": ("gauge", "the current version number of each function"),
    "poet_call_duration_seconds": ("histogram", "duration of recorded calls (function.execution events), by function and status"),
    "poet_generation_attempts_total": ("counter", "generation attempts recorded in the journal (generation.attempt), by function"),
}
BUCKETS = {"poet_service_request_seconds": REQUEST_BUCKETS, "poet_service_generation_seconds": GENERATION_BUCKETS,
           "poet_call_duration_seconds": CALL_BUCKETS}


def _escape(value) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: dict) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{name}="{_escape(value)}"' for name, value in sorted(labels.items())) + "}"


def _number(value: float) -> str:
    if isinstance(value, float) and math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)


class Histogram:
    __slots__ = ("buckets", "counts", "sum", "count")

    def __init__(self, buckets):
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        for index, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[index] += 1
                break
        self.sum += value
        self.count += 1

    def merge(self, other: "Histogram") -> None:
        for index, n in enumerate(other.counts):
            self.counts[index] += n
        self.sum += other.sum
        self.count += other.count

    def lines(self, name: str, labels: dict) -> list[str]:
        out, running = [], 0
        for bound, n in zip(self.buckets, self.counts):
            running += n
            out.append(f"{name}_bucket{_labels({**labels, 'le': _number(float(bound))})} {running}")
        out.append(f"{name}_bucket{_labels({**labels, 'le': '+Inf'})} {self.count}")
        out.append(f"{name}_sum{_labels(labels)} {_number(float(self.sum))}")
        out.append(f"{name}_count{_labels(labels)} {self.count}")
        return out


class Counters:
    """The service's own counters and histograms (thread-safe; one per service)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.values: dict[tuple, float] = {}
        self.histograms: dict[tuple, Histogram] = {}

    def inc(self, name: str, labels: dict, value: float = 1) -> None:
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            self.values[key] = self.values.get(key, 0) + value

    def observe(self, name: str, labels: dict, value: float) -> None:
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            histogram = self.histograms.get(key)
            if histogram is None:
                histogram = self.histograms[key] = Histogram(BUCKETS[name])
            histogram.observe(value)

    def get(self, name: str, **labels) -> float:
        with self._lock:
            return self.values.get((name, tuple(sorted(labels.items()))), 0)

    def snapshot(self) -> tuple[dict, dict]:
        with self._lock:
            histograms = {}
            for key, histogram in self.histograms.items():
                copy = Histogram(histogram.buckets)
                copy.merge(histogram)
                histograms[key] = copy
            return dict(self.values), histograms


class JournalScan:
    """Call latencies and generation attempts from the journal, read incrementally per segment."""

    def __init__(self, store_root: Path):
        self.store_root = Path(store_root)
        self._lock = threading.Lock()
        self._files: dict[str, tuple[tuple, dict, dict]] = {}  # name -> (stamp, histograms, attempts)

    def collect(self) -> tuple[dict, dict]:
        from poet_runtime import journal

        root = journal.events_root(self.store_root)
        with self._lock:
            seen = set()
            for path in journal.files(root):
                seen.add(path.name)
                try:
                    stat = path.stat()
                except OSError:
                    continue
                stamp = (stat.st_size, stat.st_mtime_ns)
                known = self._files.get(path.name)
                if known is not None and known[0] == stamp:
                    continue
                self._files[path.name] = (stamp, *self._read(journal, path))
            for name in set(self._files) - seen:  # pruned: its calls leave the histograms
                del self._files[name]
            histograms: dict = {}
            attempts: dict = {}
            for _, file_histograms, file_attempts in self._files.values():
                for key, histogram in file_histograms.items():
                    histograms.setdefault(key, Histogram(CALL_BUCKETS)).merge(histogram)
                for key, n in file_attempts.items():
                    attempts[key] = attempts.get(key, 0) + n
            return histograms, attempts

    @staticmethod
    def _read(journal, path: Path) -> tuple[dict, dict]:
        histograms: dict = {}
        attempts: dict = {}
        for event in journal.read_file(path):
            kind = event.get("type")
            payload = event.get("payload") if isinstance(event.get("payload"), dict) else {}
            function = str(payload.get("function", ""))
            if kind == "function.execution":
                metrics = payload.get("metrics") if isinstance(payload.get("metrics"), dict) else {}
                duration = metrics.get("duration_ms")
                if isinstance(duration, (int, float)) and math.isfinite(duration) and duration >= 0:
                    key = (("function", function), ("status", str(payload.get("status", ""))))
                    histograms.setdefault(key, Histogram(CALL_BUCKETS)).observe(duration / 1000.0)
            elif kind == "generation.attempt":
                key = (("function", function),)
                attempts[key] = attempts.get(key, 0) + 1
        return histograms, attempts


def _int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def store_samples(store_root: Path) -> dict[str, list[tuple[dict, float]]]:
    """Samples from each function's folder: reports.json counts, versions by generator, current version."""
    from poet_runtime.service.functions import list_stores

    samples: dict[str, list] = {name: [] for name in
                                ("poet_calls_total", "poet_fallbacks_total", "poet_reports_total", "poet_versions",
                                 "poet_current_version")}
    for store in list_stores(store_root):
        function = store.function_id
        reports = store.reports()
        for kind, fields in sorted(reports.items()):
            if not isinstance(fields, dict):
                continue
            for field, count in sorted(fields.items()):
                if _int(count) is None:
                    continue
                if kind == "calls":
                    samples["poet_calls_total"].append(({"function": function, "outcome": field}, count))
                elif kind == "fallback":
                    samples["poet_fallbacks_total"].append(({"function": function, "reason": field}, count))
                else:
                    samples["poet_reports_total"].append(({"function": function, "kind": kind}, count))
        by_generator: dict = {}
        for version in store.versions():
            generator = str(version.metadata.get("generator", "unknown"))
            by_generator[generator] = by_generator.get(generator, 0) + 1
        for generator, count in sorted(by_generator.items()):
            samples["poet_versions"].append(({"function": function, "generator": generator}, count))
        current = store.current_number()
        if current is not None:
            samples["poet_current_version"].append(({"function": function}, current))
    # reports_total sums fields per kind
    merged: dict = {}
    for labels, count in samples["poet_reports_total"]:
        key = tuple(sorted(labels.items()))
        merged[key] = merged.get(key, 0) + count
    samples["poet_reports_total"] = [(dict(key), count) for key, count in merged.items()]
    return samples


def render(counters: Counters, scan: JournalScan, store_root: Path) -> str:
    values, histograms = counters.snapshot()
    by_name: dict[str, list[str]] = {}
    for (name, labels), value in sorted(values.items()):
        by_name.setdefault(name, []).append(f"{name}{_labels(dict(labels))} {_number(float(value))}")
    for (name, labels), histogram in sorted(histograms.items(), key=lambda item: (item[0][0], item[0][1])):
        by_name.setdefault(name, []).extend(histogram.lines(name, dict(labels)))
    for name, rows in store_samples(store_root).items():
        for labels, value in rows:
            by_name.setdefault(name, []).append(f"{name}{_labels(labels)} {_number(float(value))}")
    call_histograms, attempts = scan.collect()
    for key, histogram in sorted(call_histograms.items()):
        by_name.setdefault("poet_call_duration_seconds", []).extend(
            histogram.lines("poet_call_duration_seconds", dict(key)))
    for key, n in sorted(attempts.items()):
        by_name.setdefault("poet_generation_attempts_total", []).append(
            f"poet_generation_attempts_total{_labels(dict(key))} {n}")
    lines = []
    for name, (kind, text) in HELP.items():
        lines.append(f"# HELP {name} {text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(by_name.get(name, []))
    return "\n".join(lines) + "\n"


def route_of(scope: dict, app) -> str:
    """The route template (``/api/v1/functions/{function_id}``), never the raw path: ids would
    make one series per function and a scanner one per URL it tried."""
    path = getattr(scope.get("route"), "path", None)
    if isinstance(path, str):
        return path
    from starlette.routing import Match

    for route in getattr(app, "routes", ()):  # plain Starlette routes (/docs) do not record themselves
        try:
            if route.matches(scope)[0] != Match.NONE and isinstance(getattr(route, "path", None), str):
                return route.path
        except Exception:
            continue
    return "unmatched"


def install(app, counters: Counters) -> None:
    """Count and time every request (a pure ASGI middleware: SSE streams pass through untouched)."""
    import time

    class RequestMetrics:
        def __init__(self, inner):
            self.inner = inner

        async def __call__(self, scope, receive, send):
            if scope["type"] != "http":
                return await self.inner(scope, receive, send)
            started = time.perf_counter()
            status = {"code": 500}

            async def sending(message):
                if message["type"] == "http.response.start":
                    status["code"] = message["status"]
                await send(message)

            try:
                await self.inner(scope, receive, sending)
            finally:
                route = route_of(scope, app)
                counters.inc("poet_service_requests_total",
                             {"route": route, "method": scope.get("method", ""), "status": str(status["code"])})
                counters.observe("poet_service_request_seconds", {"route": route}, time.perf_counter() - started)

    app.add_middleware(RequestMetrics)


def build_router(context):
    """``GET /metrics`` (scope ``read``: the function names and counts are the store's)."""
    from fastapi import APIRouter, Depends
    from fastapi.responses import PlainTextResponse
    from starlette.concurrency import run_in_threadpool

    router = APIRouter(tags=["metrics"])
    scan = JournalScan(context.store_root)
    counters = context.extras["counters"]

    @router.get("/metrics", response_class=PlainTextResponse, summary="Prometheus text exposition")
    async def metrics(key=Depends(context.require("read"))):
        text = await run_in_threadpool(render, counters, scan, context.store_root)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    return router
