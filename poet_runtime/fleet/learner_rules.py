"""What one staged item does to a function's learning state: the fleet's copy of the engine's rules.

Why a module of its own: ``learner.Learner.apply`` is transaction mechanics (watermark, WATCH,
one MULTI/EXEC per run of items); this is the learning itself, as ``engine.Learning`` does it in
one process (``on_feedback`` with replay off, ``on_executions``): observe, propose, clamp,
publish ``params.updated``; feed the monitor, publish ``learning.degraded``/``recovered``.
``Rules`` is a mixin of ``learner.Learner`` (it uses the learner's name and settings).

A ``learning.degraded`` verdict carries, besides the evidence one process's verdict has, the
labelled samples the learner remembers (``evidence.samples``: ``[score, predicted, actual]``
each, newest last, at most ``SAMPLES_BYTES`` of JSON): what the elected instance screens a
candidate on (``engine.Learning.regenerate_for_fleet``), since no instance sees the fleet's
labels. A reader of ``poet:NS:learning`` sees those scores and labels, the recent failures'
outputs and labels, and comments: never a call's inputs.
"""

from __future__ import annotations

import json
import time

from poet_runtime.fleet import learner_fast
from poet_runtime.fleet.learner_state import FunctionLearning
from poet_runtime.learn.objectives import LABELLED, clamp, correct, prediction_of

SAMPLES_BYTES = 64 * 1024  # the labelled samples a verdict carries, as JSON (500 samples take ~18 KiB)


def verdict_samples(learner, limit: int = SAMPLES_BYTES) -> list:
    """The learner's remembered samples, newest last, as many of the newest as fit in ``limit`` bytes."""
    samples = [[score, bool(predicted), bool(actual)] for score, predicted, actual in getattr(learner, "samples", ())]
    # Usually all of them fit: one dumps of the list says so. The loop below counts 2 + (len + 2) per sample,
    # and a list's dumps is 2 + the samples' lengths + 2 per separator: the loop's total is that plus 2.
    if not samples or len(json.dumps(samples)) + 2 <= limit:
        return samples
    kept, size = [], 2
    for sample in reversed(samples):
        size += len(json.dumps(sample)) + 2
        if size > limit:
            break
        kept.append(sample)
    return kept[::-1]


class Rules:
    """Learning from one item (mixed into ``learner.Learner``)."""

    def _labelled(self, state: FunctionLearning, item: dict, outcomes: list) -> None:
        """One feedback, as ``engine.Learning.on_feedback`` learns from it (without replay)."""
        state.feedback += 1
        if item.get("u"):
            state.unmatched += 1
        if item.get("c"):
            state.comments.append(item["c"])
        label, output = item.get("l"), item.get("o")
        if state.objective not in LABELLED or label is None or not item.get("k"):
            return
        if not correct(output, label):
            state.failures.append({"execution_id": item.get("x"), "output": output, "label": label,
                                   "version": item.get("v")})
        learner = state.learner
        learner.observe(output, label)
        # the learner's own answer, faster (and no current parameters built between its proposals)
        changes = {} if learner_fast.idle(learner) else learner_fast.propose(learner, self._current(state))
        if changes:
            value = getattr(learner, "value_for", None)
            name = getattr(learner, "parameter", None)
            evidence = {"samples": learner.seen}
            if value is not None and name is not None:
                evidence["objective_now"] = round(value(changes.get(name, self._current(state).get(name))), 4)
            self._update(state, changes, evidence, item.get("e"), outcomes)
        verdict = state.monitor.add(bool(prediction_of(output)), bool(label))
        if verdict == "degraded":
            evidence = {"objective": state.objective, "rolling": state.monitor.rolling(),
                        "baseline": state.monitor.baseline, "trend": list(state.monitor.trend),
                        "recent_failures": list(state.failures), "comments": list(state.comments),
                        "samples": verdict_samples(learner)}
            outcomes.append(("learning.degraded", {
                "function": state.function, "version": state.version, "numbering": state.numbering,
                "objective": state.objective,
                "rolling": evidence["rolling"], "baseline": evidence["baseline"], "evidence": evidence,
                "cause": item.get("e"), "at": time.time(), "learner": self.name}))
        elif verdict == "recovered":
            outcomes.append(("learning.recovered", {
                "function": state.function, "version": state.version, "numbering": state.numbering,
                "objective": state.objective,
                "rolling": state.monitor.rolling(), "cause": item.get("e"), "at": time.time(),
                "learner": self.name}))

    def _measured(self, state: FunctionLearning, item: dict, outcomes: list) -> None:
        """Executions of a latency/cost function, as ``engine.Learning.on_executions`` learns from them."""
        learner = state.learner
        if not hasattr(learner, "observe_execution"):
            return
        for status, operate, duration, version in item["m"]:
            if version != state.version:
                continue
            learner.observe_execution({"status": status, "phase_ms": {"operate": operate} if operate is not None
                                       else {}, "metrics": {"duration_ms": duration}})
            changes = learner.propose(self._current(state))
            if changes:
                self._update(state, changes, {"samples": learner.seen}, item.get("e"), outcomes)

    @staticmethod
    def _current(state: FunctionLearning) -> dict:
        return {name: state.params.get(name, spec.get("default")) for name, spec in state.parameters.items()}

    def _update(self, state: FunctionLearning, changes: dict, evidence: dict, cause, outcomes: list) -> None:
        current = self._current(state)
        applied, audit = {}, []
        for name, value in changes.items():
            spec = state.parameters.get(name)
            if spec is None:
                continue
            new = clamp(value, spec)
            if new == current.get(name):
                continue
            applied[name] = new
            audit.append({"parameter": name, "old": current.get(name), "new": new})
        if not applied:
            return
        state.params.update(applied)
        outcomes.append(("params.updated", {
            "function": state.function, "version": state.version, "numbering": state.numbering,
            "params": applied, "changes": audit,
            "evidence": evidence, "cause": cause, "objective": state.objective, "at": time.time(),
            "learner": self.name}))
