"""One learner per objective: what it measures, and which parameter it moves.

Each learner is small and explicit, so a reviewer can predict what it will do:

- accuracy, precision, recall, alert_quality learn from labelled feedback. They move a
  decision threshold (``threshold``, ``drift_threshold``, ``alpha``, ...) declared in the
  version's PARAMETERS. With a score in the output they pick the value that maximises
  the objective on the labelled samples they remember; without one they nudge the
  threshold a step after each false positive or false negative.
- latency learns a per-attempt timeout (a quantile of measured durations with headroom),
  at least one retry, and a backoff no longer than the timeout, so a slow tail is cut.
- cost lowers retries when the dependency mostly fails anyway (each retry is paid for).

Every proposal stays inside the parameter's declared range.
"""

from __future__ import annotations

import math
from collections import deque

LABELLED = ("accuracy", "precision", "recall", "alert_quality", "performance", "drift_sensitivity")
MEASURED = ("latency", "cost")
# Parameters that decide "positive when the score is above" and those that decide "when below" (p-values).
ABOVE = ("threshold", "drift_threshold", "score_threshold", "alert_threshold")
BELOW = ("alpha", "p_threshold")
_SCORE_KEYS = ("score", "probability", "confidence")
_DECISION_KEYS = ("drift_detected", "alert", "anomaly", "positive", "prediction", "label", "detected")


def clamp(value: float, spec: dict) -> float:
    return min(max(value, spec["min"]), spec["max"])


def prediction_of(output):
    """The function's answer, as a label to compare with feedback."""
    if isinstance(output, dict):
        for key in _DECISION_KEYS:
            if key in output:
                return output[key]
        return None
    return output


def score_of(output, direction: str):
    if isinstance(output, dict):
        keys = ("p_value",) if direction == "below" else _SCORE_KEYS
        for key in keys:
            value = output.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
        return None
    if isinstance(output, float):
        return output
    return None


def correct(output, label) -> bool:
    predicted = prediction_of(output)
    if isinstance(label, bool) or isinstance(predicted, bool):
        return bool(predicted) == bool(label)
    return predicted == label


def confusion(pairs) -> tuple[int, int, int, int]:
    tp = fp = fn = tn = 0
    for predicted, actual in pairs:
        if predicted and actual:
            tp += 1
        elif predicted:
            fp += 1
        elif actual:
            fn += 1
        else:
            tn += 1
    return tp, fp, fn, tn


def objective_value(objective: str, pairs, *, beta: float = 1.0, settings=None) -> float:
    """The objective (0..1, higher is better) on (predicted, actual) boolean pairs."""
    pairs = list(pairs)
    if not pairs:
        return 0.0
    return value_from_counts(objective, *confusion(pairs), beta=beta, settings=settings)


def value_from_counts(objective: str, tp: int, fp: int, fn: int, tn: int, *, beta: float = 1.0,
                      settings=None) -> float:
    """The objective from confusion counts: what ``objective_value`` computes, for learners that count."""
    n = tp + fp + fn + tn
    if not n:
        return 0.0
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    if objective == "precision":
        floor = settings.min_recall if settings else 0.5
        return precision if recall >= floor else precision * recall / floor
    if objective == "recall":
        floor = settings.min_precision if settings else 0.5
        return recall if precision >= floor else recall * precision / floor
    if objective == "alert_quality":
        b2 = beta * beta
        denominator = (1 + b2) * tp + b2 * fn + fp
        fbeta = (1 + b2) * tp / denominator if denominator else 1.0
        alert_rate = (tp + fp) / n
        base_rate = (tp + fn) / n
        penalty = (settings.alert_rate_penalty if settings else 0.1) * max(0.0, alert_rate - base_rate)
        return max(0.0, fbeta - penalty)
    return (tp + tn) / n  # accuracy (and the legacy "performance")


def decision_parameter(parameters: dict) -> tuple[str, str] | None:
    """(name, direction) of the threshold-like parameter a labelled learner tunes."""
    for name in parameters:
        if name in ABOVE:
            return name, "above"
        if name in BELOW:
            return name, "below"
    return None


class LabelledLearner:
    """Learns a decision threshold from (output, label) feedback."""

    kind = "labelled"

    def __init__(self, objective: str, parameters: dict, settings, beta: float = 1.0):
        self.objective = objective
        self.parameters = parameters
        self.settings = settings
        self.beta = beta
        found = decision_parameter(parameters)
        self.parameter, self.direction = found if found else (None, "above")
        self.samples: deque = deque(maxlen=settings.memory)  # (score or None, predicted bool, actual bool)
        self.seen = 0

    def observe(self, output, label) -> None:
        self.samples.append((score_of(output, self.direction), bool(prediction_of(output)), bool(label)))
        self.seen += 1

    def _decide(self, score: float, value: float) -> bool:
        return score > value if self.direction == "above" else score < value

    def value_for(self, value: float, samples=None) -> float:
        samples = self.samples if samples is None else samples
        pairs = [(self._decide(s, value), a) for s, _, a in samples if s is not None]
        return objective_value(self.objective, pairs, beta=self.beta, settings=self.settings)

    def propose(self, current: dict) -> dict:
        """New values for the parameters it owns (empty when nothing should change)."""
        if self.parameter is None or self.seen < self.settings.min_samples or self.seen % self.settings.learn_every:
            return {}
        spec = self.parameters[self.parameter]
        value = current.get(self.parameter, spec["default"])
        scored = [s for s, _, _ in self.samples if s is not None]
        if len(scored) >= self.settings.min_samples:
            points = sorted(set(scored))
            candidates = {clamp(value, spec)}
            candidates.update(clamp((a + b) / 2, spec) for a, b in zip(points, points[1:]))
            candidates.update(clamp(p, spec) for p in (points[0] - 1e-9, points[-1] + 1e-9))
            # Best objective; among equals the one nearest the current value (no needless moves).
            best = max(candidates, key=lambda c: (round(self.value_for(c), 9), -abs(c - value)))
        else:
            step = (spec["max"] - spec["min"]) * 0.02
            recent = list(self.samples)[-self.settings.learn_every:]
            false_pos = sum(1 for _, p, a in recent if p and not a)
            false_neg = sum(1 for _, p, a in recent if a and not p)
            sign = 1 if self.direction == "above" else -1
            best = clamp(value + sign * step * (false_pos - false_neg), spec)
        if isinstance(spec["default"], int) and not isinstance(spec["default"], bool):
            best = int(round(best))
        return {self.parameter: best} if not math.isclose(best, value, rel_tol=1e-9, abs_tol=1e-12) else {}


class LatencyLearner:
    """Learns timeout_s (and retries, backoff) from measured attempt durations."""

    kind = "measured"

    def __init__(self, objective: str, parameters: dict, settings, beta: float = 1.0):
        self.objective = objective
        self.parameters = parameters
        self.settings = settings
        self.durations: deque = deque(maxlen=settings.memory)
        self.seen = 0
        self.parameter = "timeout_s" if "timeout_s" in parameters else None

    def observe_execution(self, payload: dict) -> None:
        if payload.get("status") == "ok":
            phases = payload.get("phase_ms") or {}
            duration = phases.get("operate")
            if duration is None:
                duration = payload.get("metrics", {}).get("duration_ms")
            if duration is None:
                return
            self.durations.append(duration)
            self.seen += 1

    def propose(self, current: dict) -> dict:
        n = self.settings.latency_samples
        if self.parameter is None or self.seen < n or self.seen % n:
            return {}
        ordered = sorted(self.durations)
        quantile = ordered[min(len(ordered) - 1, int(self.settings.latency_quantile * len(ordered)))]
        spec = self.parameters["timeout_s"]
        timeout = clamp(quantile * self.settings.latency_headroom / 1000.0, spec)
        old = current.get("timeout_s", spec["default"])
        changes = {}
        if abs(timeout - old) > 0.2 * old:  # small wobbles are not worth a write
            changes["timeout_s"] = timeout
        if "retries" in self.parameters and current.get("retries", self.parameters["retries"]["default"]) < 1:
            changes["retries"] = 1
        if "retry_base_delay_s" in self.parameters:
            base_spec = self.parameters["retry_base_delay_s"]
            base = current.get("retry_base_delay_s", base_spec["default"])
            wanted = clamp(min(base, timeout / 2), base_spec)
            if wanted < base:
                changes["retry_base_delay_s"] = wanted
        return changes


class CostLearner:
    """Lowers retries when most calls fail after retrying: those attempts are paid for nothing."""

    kind = "measured"

    def __init__(self, objective: str, parameters: dict, settings, beta: float = 1.0):
        self.objective = objective
        self.parameters = parameters
        self.settings = settings
        self.outcomes: deque = deque(maxlen=settings.window)
        self.seen = 0
        self.parameter = "retries" if "retries" in parameters else None

    def observe_execution(self, payload: dict) -> None:
        self.outcomes.append(payload.get("status") == "ok")
        self.seen += 1

    def propose(self, current: dict) -> dict:
        if self.parameter is None or self.seen < self.settings.window or self.seen % self.settings.window:
            return {}
        failure_rate = 1.0 - sum(self.outcomes) / len(self.outcomes)
        retries = current.get("retries", self.parameters["retries"]["default"])
        if failure_rate > 0.5 and retries > self.parameters["retries"]["min"]:
            return {"retries": retries - 1}
        return {}


def make_learner(objective: str, parameters: dict, settings, beta: float = 1.0):
    if objective == "latency":
        return LatencyLearner(objective, parameters, settings, beta)
    if objective == "cost":
        return CostLearner(objective, parameters, settings, beta)
    return LabelledLearner(objective, parameters, settings, beta)


# Evidence a domain records with each call that can stand in for the function's own score
# (ml_monitoring's domain.evidence: the KS statistic grows with drift, the p-value falls).
EVIDENCE_FEATURES = {"ks_statistic": "above", "psi": "above", "kl_divergence": "above", "p_value": "below"}


def evidence_feature(evidence, name: str = "ks_statistic"):
    """``name`` from an execution's ml_monitoring evidence (against the reference, else the rolling one), or None."""
    for item in evidence or ():
        detail = item.get("detail") if isinstance(item, dict) else None
        if not (isinstance(detail, dict) and item.get("kind") == "domain.evidence"):
            continue
        test = detail.get("reference") or detail.get("rolling")
        value = test.get(name) if isinstance(test, dict) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    return None


class FeatureThreshold:
    """Learns a threshold on one evidence feature from labelled calls: "positive when the feature is above"
    (or below, for a p-value) the value that maximises the objective on what it remembers.

    It moves no parameter of the function (the caller's answer is the function's): what it learns is a
    rule to compare with the function's own verdict (``beats``), e.g. for an advisory or a suggestion.
    """

    kind = "feature"

    def __init__(self, objective: str, settings, feature: str = "ks_statistic", beta: float = 1.0):
        if feature not in EVIDENCE_FEATURES:
            raise ValueError(f"unknown evidence feature {feature!r}; known: {', '.join(EVIDENCE_FEATURES)}")
        self.objective, self.settings, self.feature, self.beta = objective, settings, feature, beta
        self.direction = EVIDENCE_FEATURES[feature]
        self.samples: deque = deque(maxlen=settings.memory)  # (feature, function's verdict, label)
        self.threshold = None

    def observe(self, evidence, output, label) -> None:
        value = evidence_feature(evidence, self.feature)
        if value is not None:
            self.samples.append((value, bool(prediction_of(output)), bool(label)))
            self.threshold = None

    def _decide(self, value: float, threshold: float) -> bool:
        return value > threshold if self.direction == "above" else value < threshold

    def learned(self) -> float | None:
        """The threshold that scores best on the remembered samples (the middle of the best gap)."""
        if self.threshold is None and len(self.samples) >= self.settings.min_samples:
            points = sorted({value for value, _, _ in self.samples})
            candidates = [(a + b) / 2 for a, b in zip(points, points[1:])] + [points[0] - 1e-9, points[-1] + 1e-9]
            self.threshold = max(candidates, key=lambda t: (round(self.value_for(t), 9), -t))
        return self.threshold

    def value_for(self, threshold: float) -> float:
        return objective_value(self.objective, ((self._decide(v, threshold), a) for v, _, a in self.samples),
                               beta=self.beta, settings=self.settings)

    def predict(self, evidence) -> bool | None:
        threshold, value = self.learned(), evidence_feature(evidence, self.feature)
        if threshold is None or value is None:
            return None
        return self._decide(value, threshold)

    def beats(self) -> tuple[float, float] | None:
        """(the learned rule's objective, the function's own) on the remembered samples."""
        threshold = self.learned()
        if threshold is None:
            return None
        own = objective_value(self.objective, ((p, a) for _, p, a in self.samples), beta=self.beta,
                              settings=self.settings)
        return self.value_for(threshold), own
