"""``LabelledLearner.propose`` with the same answer, in O(n log n) instead of O(n²).

Why: a learner of the fleet serves every process's feedback, and the labelled learner's search
scores each candidate threshold by walking all remembered samples (``value_for``): with 500
samples that is ~250 000 steps every ``learn_every`` feedbacks, about 30 feedbacks a second.
Here each candidate's confusion counts come from two sorted score lists (``bisect``), and the
objective from those counts by the formula ``objectives.objective_value`` applies to pairs.
The candidates are built as ``propose`` builds them, in the same order, so ``max`` breaks ties
the same way: the answer is the original's, bit for bit (``tests/test_fleet_learner.py``
checks it on random streams for every labelled objective).
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right

from poet_runtime.learn.objectives import LabelledLearner, clamp, value_from_counts


class Scorer:
    """The objective of any threshold on a learner's scored samples, by counting (``value_for``'s answer)."""

    def __init__(self, learner: LabelledLearner):
        self.learner = learner
        positives, negatives = [], []
        for score, _, actual in learner.samples:
            if score is not None:
                (positives if actual else negatives).append(score)
        self.positives, self.negatives = sorted(positives), sorted(negatives)

    def __call__(self, value: float) -> float:
        learner, positives, negatives = self.learner, self.positives, self.negatives
        if learner.direction == "above":  # predicted positive when score > value
            tp = len(positives) - bisect_right(positives, value)
            fp = len(negatives) - bisect_right(negatives, value)
        else:  # when score < value
            tp = bisect_left(positives, value)
            fp = bisect_left(negatives, value)
        return value_from_counts(learner.objective, tp, fp, len(positives) - tp, len(negatives) - fp,
                                 beta=learner.beta, settings=learner.settings)


def _below(scores: list, ascending: list, strict: bool) -> list:
    """For each value of ``ascending``, how many of the sorted ``scores`` are below it (``<``) or at most it."""
    counts, i, n = [], 0, len(scores)
    for value in ascending:
        if strict:
            while i < n and scores[i] < value:
                i += 1
        else:
            while i < n and scores[i] <= value:
                i += 1
        counts.append(i)
    return counts


def _keys(learner, candidates, value: float) -> dict:
    """candidate -> propose's sort key (objective rounded to 9 places, then nearness to ``value``),
    the confusion counts of all candidates from one sweep over the sorted scores."""
    scorer = Scorer(learner)
    positives, negatives = scorer.positives, scorer.negatives
    ascending = sorted(candidates)
    above = learner.direction == "above"
    pos = _below(positives, ascending, strict=not above)
    neg = _below(negatives, ascending, strict=not above)
    p, q = len(positives), len(negatives)
    objective, beta, settings = learner.objective, learner.beta, learner.settings
    keys = {}
    if objective in ("precision", "recall", "alert_quality"):
        for c, below_p, below_n in zip(ascending, pos, neg):
            tp, fp = (p - below_p, q - below_n) if above else (below_p, below_n)
            keys[c] = (round(value_from_counts(objective, tp, fp, p - tp, q - fp, beta=beta, settings=settings), 9),
                       -abs(c - value))
        return keys
    n = p + q  # accuracy (and the legacy names): (tp + tn) / n, as objective_value computes it
    for c, below_p, below_n in zip(ascending, pos, neg):
        tp, fp = (p - below_p, q - below_n) if above else (below_p, below_n)
        keys[c] = (round((tp + q - fp) / n, 9) if n else 0.0, -abs(c - value))
    return keys


def propose(learner, current: dict) -> dict:
    """``learner.propose(current)``, fast for a labelled learner with scores (the others as they are)."""
    if type(learner) is not LabelledLearner:
        return learner.propose(current)
    settings = learner.settings
    if learner.parameter is None or learner.seen < settings.min_samples or learner.seen % settings.learn_every:
        return {}
    scored = [s for s, _, _ in learner.samples if s is not None]
    if len(scored) < settings.min_samples:
        return learner.propose(current)  # the nudge: no search
    spec = learner.parameters[learner.parameter]
    value = current.get(learner.parameter, spec["default"])
    points = sorted(set(scored))
    candidates = {clamp(value, spec)}
    candidates.update(clamp((a + b) / 2, spec) for a, b in zip(points, points[1:]))
    candidates.update(clamp(p, spec) for p in (points[0] - 1e-9, points[-1] + 1e-9))
    keys = _keys(learner, candidates, value)
    best = max(candidates, key=keys.__getitem__)  # the set's own order: ties go where propose's go
    if isinstance(spec["default"], int) and not isinstance(spec["default"], bool):
        best = int(round(best))
    return {learner.parameter: best} if not math.isclose(best, value, rel_tol=1e-9, abs_tol=1e-12) else {}
