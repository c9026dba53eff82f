"""Settings of the learning subsystem: durability, sampling, limits, learning windows.

They live here rather than in ``poet_runtime.settings`` because only the events and
learning path reads them, and that path is off for most processes. Each value comes
from an environment variable (read once) or from ``override(...)`` (tests, benchmarks).
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass, field, replace

from poet_runtime.errors import PoetConfigError

ENV_VARS = {
    "events": "POET_EVENTS",  # 1: record execution events of every enhanced function, not only objective ones
    "flush_interval_s": "POET_EVENTS_FLUSH_MS",  # milliseconds in the environment
    "sample": "POET_EVENTS_SAMPLE",  # default fraction of executions recorded, 0..1
    "retention_days": "POET_EVENTS_RETENTION_DAYS",
    "max_mb": "POET_EVENTS_MAX_MB",  # disk cap of one store's events, megabytes
    "feedback_rate": "POET_FEEDBACK_RATE",  # feedback events per second per function (token bucket)
    "environment": "POET_ENVIRONMENT",
    "service": "POET_SERVICE",
}

# Numeric settings: (low, high, low included, what it means). NaN and infinities are never valid:
# POET_EVENTS_RETENTION_DAYS=-1 once deleted every event file, acknowledged feedback included.
_RANGES = {
    "flush_interval_s": (0.0, 60.0, False, "milliseconds between flushes, > 0 and <= 60000"),
    "sample": (0.0, 1.0, True, "a fraction between 0 and 1"),
    "retention_days": (0.0, 36_500.0, False, "days to keep event files, > 0 and <= 36500"),
    "max_mb": (0.0, 1_000_000.0, False, "megabytes of events per store, > 0 and <= 1000000"),
    "feedback_rate": (0.0, 1_000_000.0, False, "feedback events per second per function, > 0 and <= 1000000"),
}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


@dataclass(frozen=True)
class LearnSettings:
    events: bool = False
    flush_interval_s: float = 0.1  # execution events are durable within this delay
    sample: float = 1.0
    sample_by_function: dict = field(default_factory=dict)  # function id -> fraction
    max_event_bytes: int = 1_000_000  # an event bigger than this is never written whole
    max_output_bytes: int = 16_384  # outputs kept for objectives beyond this are dropped (noted in the event)
    max_input_bytes: int = 16_384  # a call's inputs (policy record_inputs) as JSON beyond this are dropped (noted)
    input_samples: int = 8  # recorded calls (distinct, most recent) a regeneration probes the model's answer on
    retention_days: float = 30.0
    max_mb: float = 512.0  # a store's events beyond this: the oldest files go first (never feedback, nor
    # executions feedback still refers to); checked by the flusher while the process runs
    segment_bytes: int = 32 * 1024 * 1024  # an execution segment this big is closed and moved to processed/
    feedback_rate: float = 200.0
    feedback_burst: int = 1000
    max_text: int = 4096  # comments, each suggestion, a string label
    recent_executions: int = 20_000  # per function, kept in memory for feedback correlation
    window: int = 50  # labelled samples in the rolling objective value
    degradation_drop: float = 0.05  # absolute drop of the objective (0..1) that counts as degradation
    recover_margin: float = 0.025  # the episode ends when the value is back within this of the baseline
    learn_every: int = 5  # labelled samples between parameter proposals
    min_samples: int = 10
    memory: int = 500  # labelled samples a learner keeps
    latency_quantile: float = 0.8  # timeout = this quantile of attempt durations x latency_headroom
    latency_headroom: float = 1.5
    latency_samples: int = 50
    min_precision: float = 0.5  # recall learner: keep precision above this
    min_recall: float = 0.5  # precision learner: keep recall above this
    alert_rate_penalty: float = 0.1
    auto_regenerate: bool = True
    shadow_samples: int = 20  # labelled live calls a candidate runs in shadow before it is judged (0: no shadow)
    replay: bool = True  # tune a pure function's own parameters by replaying labelled calls (False: output-only)
    replay_inputs: int = 2000  # recent calls' inputs kept in memory (pure functions with an objective) for replay
    held_back: float = 0.3  # share of labelled calls kept out of tuning, to judge a candidate value on
    replay_seconds: float = 2.0  # a tuning's search stops after this (it runs in the thread that gave feedback)
    environment: str = "development"
    service: str = ""


def check_environment(environ) -> None:
    """Raise ``PoetConfigError`` (one line naming the variable) for a bad learning setting in
    ``environ``: for the start-up checks of every setting (``settings.load_settings``)."""
    _from_env(environ)


def _from_env(environ=None) -> LearnSettings:
    values: dict = {}
    env = os.environ if environ is None else environ
    raw = env.get("POET_EVENTS", "").strip()
    if raw:
        if raw.lower() not in _TRUE + _FALSE:
            raise PoetConfigError(f"POET_EVENTS: {raw!r} is not valid: expected 1/true/yes/on or 0/false/no/off")
        values["events"] = raw.lower() in _TRUE
    for name in _RANGES:
        variable = ENV_VARS[name]
        raw = env.get(variable, "").strip()
        if not raw:
            continue
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not _in_range(name, value * (1e-3 if name == "flush_interval_s" else 1.0)):
            raise PoetConfigError(f"{variable}: {raw!r} is not valid: expected {_RANGES[name][3]}")
        values[name] = value / 1000.0 if name == "flush_interval_s" else value
    for name in ("environment", "service"):
        if env.get(ENV_VARS[name]):
            values[name] = env[ENV_VARS[name]]
    settings = LearnSettings(**values)
    _validate(settings)
    return settings


def _in_range(name: str, value) -> bool:
    low, high, low_included, _ = _RANGES[name]
    if type(value) not in (int, float) or not math.isfinite(value):
        return False
    return (low <= value if low_included else low < value) and value <= high


def _validate(settings: LearnSettings) -> None:
    for name in _RANGES:
        if not _in_range(name, getattr(settings, name)):
            raise PoetConfigError(f"{ENV_VARS[name]}: {getattr(settings, name)!r} is not valid: "
                                  f"expected {_RANGES[name][3]}")
    if not all(_in_range("sample", value) for value in settings.sample_by_function.values()):
        raise PoetConfigError("POET_EVENTS_SAMPLE: a fraction between 0 and 1 for every function")


_current: LearnSettings | None = None
_lock = threading.Lock()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_lock._at_fork_reinit)


def get() -> LearnSettings:
    global _current
    if _current is None:
        with _lock:
            if _current is None:
                _current = _from_env()
    return _current


def override(**changes) -> LearnSettings:
    global _current
    with _lock:
        updated = replace(_current or _from_env(), **changes)
        _validate(updated)
        _current = updated
        return updated


def reset() -> None:
    global _current
    with _lock:
        _current = None


def sample_for(function_id: str) -> float:
    settings = get()
    return settings.sample_by_function.get(function_id, settings.sample)
