"""One function's learning state as JSON, so that it can live in Redis between learners and restarts.

Why a snapshot of the very objects one process uses (``objectives.make_learner``'s learner and
``monitor.Monitor``), not a model of our own: the fleet must learn what one local learner learns
from the same feedback, so the state is those objects' fields, restored field by field. Every
learner of a group loads it, applies a run of feedback in stream order and writes it back in
the same transaction as its acknowledgements (``learner``), so no learner holds an island.

Which version the state learns for: the first heartbeat's, then each heartbeat's that names
another one (a deploy), until the fleet promotes or rolls back a version (``learner_versions``):
from then on only the fleet's own outcomes move it, since heartbeats name instances' local
numbers and a lagging instance would otherwise pull the state back. ``numbering`` says how
``version`` is counted, and every message the learner signs carries it: ``"local"`` (a version
the fleet never promoted, known by its number in each instance's store) or ``"fleet"`` (a number
the fleet allocated when it promoted the version: ``metadata.json`` ``fleet.number`` in every
store that holds it).
"""

from __future__ import annotations

from collections import deque

from poet_runtime.learn.monitor import Monitor
from poet_runtime.learn.objectives import make_learner

FORMAT = 1
LOCAL, FLEET = "local", "fleet"  # how a version number is counted (``numbering``)
_MONITOR_FIELDS = ("history", "count", "in_episode", "baseline")


def _beta(domain: str | None) -> float:
    try:
        from poet_runtime.domains import get_domain

        return float(get_domain(domain).alert_quality_beta) if domain else 1.0
    except Exception:  # an unknown domain learns with the neutral beta
        return 1.0


class FunctionLearning:
    """The learner, monitor and current values of one function, as the fleet learner keeps them."""

    def __init__(self, function: str, spec: dict, settings):
        self.function = function
        self.settings = settings
        self.objective = spec.get("objective")
        self.domain = spec.get("domain")
        self.beta = _beta(self.domain)
        self.version = spec.get("version")
        self.parameters = dict(spec.get("parameters") or {})
        self.params = dict(spec.get("params") or {})
        self.learner = make_learner(self.objective, self.parameters, settings, self.beta)
        self.monitor = Monitor(self.objective, settings, self.beta)
        self.failures: deque = deque(maxlen=10)
        self.comments: deque = deque(maxlen=10)
        self.feedback = 0  # feedback entries applied (labelled or not)
        self.unmatched = 0  # feedback whose execution was never found
        self.last_id = "0-0"  # the last stream entry applied
        fleet = spec.get("fleet") if type(spec.get("fleet")) is dict else {}
        self.numbering = spec.get("numbering") or fleet.get("numbering") or LOCAL
        self.followed = spec.get("followed") or fleet.get("outcome")  # the last fleet outcome followed
        self.stamp = spec.get("stamp") or fleet.get("stamp")  # its signature's stamp (wire.Stamp.text())
        # when the newest message signed for this function was signed (ms): the next is signed after it
        # (and after ``stamp``), whichever learner signs it, whatever its clock says
        self.signed_ms = spec.get("signed_ms") if type(spec.get("signed_ms")) is int else None

    def version_changed(self, spec: dict) -> bool:
        """A new version serves (as ``engine.version_loaded``): its parameters, the evidence kept.
        ``spec["fleet"]``: the fleet promoted or rolled back (``learner_versions``); the monitor
        starts over as the engine's does then. A heartbeat's version is not followed once the
        state has followed the fleet (see the module's docstring). True when the state changed."""
        fleet = spec.get("fleet") if type(spec.get("fleet")) is dict else None
        if fleet is None and self.followed:
            return False
        old = self.learner
        self.version = spec.get("version")
        if spec.get("parameters") or fleet is None:
            self.parameters = dict(spec.get("parameters") or {})
        if spec.get("params") is not None or fleet is None:
            self.params = dict(spec.get("params") or {})
        self.learner = make_learner(self.objective, self.parameters, self.settings, self.beta)
        if hasattr(old, "samples") and hasattr(self.learner, "samples"):
            self.learner.samples.extend(old.samples)
        if fleet is not None:
            self.numbering = fleet.get("numbering") or LOCAL
            self.followed = fleet.get("outcome")
            self.stamp = fleet.get("stamp")
            baseline = fleet.get("baseline")
            self.monitor.restart(baseline if type(baseline) in (int, float) else None)
        return True

    # -- JSON ----------------------------------------------------------------------------------

    def to_json(self) -> dict:
        learner = self.learner
        saved = {"seen": learner.seen}
        for name in ("samples", "durations", "outcomes"):
            if hasattr(learner, name):
                saved[name] = [list(item) if isinstance(item, tuple) else item for item in getattr(learner, name)]
        monitor = self.monitor
        return {"format": FORMAT, "function": self.function, "objective": self.objective, "domain": self.domain,
                "version": self.version, "parameters": self.parameters, "params": self.params,
                "learner": saved,
                "monitor": {"pairs": [list(p) for p in monitor.pairs], "trend": list(monitor.trend),
                            **{name: getattr(monitor, name) for name in _MONITOR_FIELDS}},
                "failures": list(self.failures), "comments": list(self.comments),
                "feedback": self.feedback, "unmatched": self.unmatched, "last_id": self.last_id,
                "numbering": self.numbering, "followed": self.followed, "stamp": self.stamp,
                "signed_ms": self.signed_ms}

    @classmethod
    def from_json(cls, data: dict, settings) -> "FunctionLearning":
        if data.get("format") != FORMAT:
            raise ValueError(f"learner state of {data.get('function')!r} has format {data.get('format')!r}, "
                             f"not {FORMAT}")
        state = cls(data["function"], data, settings)
        saved = data.get("learner") or {}
        learner = state.learner
        learner.seen = int(saved.get("seen", 0))
        for name in ("samples", "durations", "outcomes"):
            if hasattr(learner, name) and name in saved:
                getattr(learner, name).extend(tuple(item) if isinstance(item, list) else item
                                              for item in saved[name])
        monitor, saved_monitor = state.monitor, data.get("monitor") or {}
        monitor.pairs.extend(tuple(p) for p in saved_monitor.get("pairs", ()))
        monitor.trend.extend(saved_monitor.get("trend", ()))
        for name in _MONITOR_FIELDS:
            if name in saved_monitor:
                setattr(monitor, name, saved_monitor[name])
        state.failures.extend(data.get("failures", ()))
        state.comments.extend(data.get("comments", ()))
        state.feedback = int(data.get("feedback", 0))
        state.unmatched = int(data.get("unmatched", 0))
        state.last_id = data.get("last_id", "0-0")
        return state
