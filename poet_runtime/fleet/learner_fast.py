"""``LabelledLearner.propose`` with the same answer, from an index kept up to date as samples come and go.

Why: a learner of the fleet serves every process's feedback, and the labelled learner's search
scores each candidate threshold by walking all remembered samples (``value_for``): with 500
samples that is ~250 000 steps every ``learn_every`` feedbacks, about 50 feedbacks a second.
Here an ``Index`` per learner keeps the distinct scores sorted with how many positive and
negative samples sit at each (updated per sample: a bisect and a list insert or delete), so a
proposal is a handful of C-level passes (``map``, ``itertools.accumulate``, ``max``) over the
candidates: the midpoints between neighbouring scores have the confusion counts of the scores
below them, running sums away. The candidates are those ``propose`` builds, the key it ranks
them by (objective rounded to 9 places, then nearness to the current value) is computed with
the same arithmetic (``objectives.value_from_counts``'s, for accuracy its exact integer
numerator), and when two candidates tie on the key the winner is found by building
``propose``'s own set and walking it as ``max`` does: the answer is the original's, bit for bit
(``tests/test_fleet_throughput.py`` and ``tests/test_fleet_learner.py`` check it on random
streams for every labelled objective and direction). What the index does not cover (non-finite
scores, a midpoint that rounds onto a neighbour, an inverted range, huge memories) goes to the
learner's own ``propose``.
"""

from __future__ import annotations

import math
import weakref
from bisect import bisect_left, bisect_right
from itertools import accumulate, islice, repeat
from operator import neg, sub

from poet_runtime.learn.objectives import LabelledLearner, clamp

_EXACT_N = 10**8  # below this many samples, k/n rounded to 9 places orders as the integer k does
_INDEXES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


class Index:
    """A labelled learner's scored samples: distinct scores ascending (``points``), per score how many
    are positive (``pos``) and negative (``neg``) and their difference (``dif``, negatives minus
    positives), and the midpoints between neighbours (``mids``). Follows ``learner.samples`` (a
    bounded deque) by ``learner.seen``: new samples are its last ``seen`` - ``self.seen`` entries."""

    def __init__(self, learner: LabelledLearner):
        self.points: list = []
        self.pos: list = []
        self.neg: list = []
        self.dif: list = []
        self.mids: list = []
        self.bad = 0  # midpoints not strictly between their neighbours (scores one ulp apart, overflow)
        self.mirror: list = []  # the samples included, oldest first (the same tuple objects)
        self.head = 0  # mirror[head:] are live (popping the front of a list is O(n); compacted now and then)
        self.nonfinite = 0
        self.p = self.q = 0  # sum(pos), sum(neg): kept as samples come and go, not summed per proposal
        self.seen = learner.seen
        for sample in learner.samples:
            self._add(sample)

    def _mid(self, k: int) -> float:
        a, b = self.points[k], self.points[k + 1]
        mid = (a + b) / 2  # propose's expression
        self.bad += not a < mid < b
        return mid

    def _unmid(self, k: int) -> None:
        self.bad -= not self.points[k] < self.mids[k] < self.points[k + 1]

    def _add(self, sample) -> None:
        self.mirror.append(sample)
        score = sample[0]
        if score is None:
            return
        if not math.isfinite(score):
            self.nonfinite += 1
            return
        points = self.points
        at = bisect_left(points, score)
        if at == len(points) or points[at] != score:
            m = len(points)
            if 0 < at < m:
                self._unmid(at - 1)
            points.insert(at, score)
            self.pos.insert(at, 0)
            self.neg.insert(at, 0)
            self.dif.insert(at, 0)
            if m:
                if at == 0:
                    self.mids.insert(0, self._mid(0))
                elif at == m:
                    self.mids.append(self._mid(m - 1))
                else:
                    self.mids[at - 1] = self._mid(at - 1)
                    self.mids.insert(at, self._mid(at))
        if sample[2]:
            self.pos[at] += 1
            self.dif[at] -= 1
            self.p += 1
        else:
            self.neg[at] += 1
            self.dif[at] += 1
            self.q += 1

    def _drop(self) -> None:
        sample = self.mirror[self.head]
        self.head += 1
        if self.head > 4096 and self.head * 2 > len(self.mirror):
            del self.mirror[:self.head]
            self.head = 0
        score = sample[0]
        if score is None:
            return
        if not math.isfinite(score):
            self.nonfinite -= 1
            return
        at = bisect_left(self.points, score)
        if sample[2]:
            self.pos[at] -= 1
            self.dif[at] += 1
            self.p -= 1
        else:
            self.neg[at] -= 1
            self.dif[at] -= 1
            self.q -= 1
        if self.pos[at] or self.neg[at]:
            return
        m = len(self.points)
        if m > 1:
            if at == 0:
                self._unmid(0)
                del self.mids[0]
            elif at == m - 1:
                self._unmid(m - 2)
                del self.mids[-1]
            else:
                self._unmid(at - 1)
                self._unmid(at)
                del self.mids[at]
        del self.points[at], self.pos[at], self.neg[at], self.dif[at]
        if 0 < at < m - 1:
            self.mids[at - 1] = self._mid(at - 1)

    def live(self) -> int:
        return len(self.mirror) - self.head

    def follow(self, learner: LabelledLearner) -> bool:
        """Catch up with the learner's samples; False when they changed in a way not followed."""
        samples = learner.samples
        new = learner.seen - self.seen
        if new < 0 or new > len(samples):
            return False
        if new:
            for sample in islice(samples, len(samples) - new, None):
                self._add(sample)
            self.seen = learner.seen
        while self.live() > len(samples):
            self._drop()
        return self.live() == len(samples) and (not samples or (
            self.mirror[self.head] is samples[0] and self.mirror[-1] is samples[-1]))


def index_of(learner: LabelledLearner) -> Index:
    index = _INDEXES.get(learner)
    if index is None or not index.follow(learner):
        index = _INDEXES[learner] = Index(learner)
    return index


def _values(learner: LabelledLearner, tps, fps, p: int, q: int) -> list:
    """The objective for each (tp, fp), with ``value_from_counts``'s arithmetic (fn = p - tp, tn = q - fp)."""
    objective, settings, n = learner.objective, learner.settings, p + q
    recall = [tp / p for tp in tps] if p else [1.0] * len(tps)
    if objective == "precision":
        floor = settings.min_recall if settings else 0.5
        out = []
        for tp, fp, r in zip(tps, fps, recall):
            precision = tp / (tp + fp) if tp + fp else 1.0
            out.append(precision if r >= floor else precision * r / floor)
        return out
    if objective == "recall":
        floor = settings.min_precision if settings else 0.5
        out = []
        for tp, fp, r in zip(tps, fps, recall):
            precision = tp / (tp + fp) if tp + fp else 1.0
            out.append(r if precision >= floor else r * precision / floor)
        return out
    # alert_quality
    b2 = learner.beta * learner.beta
    weight = settings.alert_rate_penalty if settings else 0.1
    base_rate = p / n
    out = []
    for tp, fp in zip(tps, fps):
        denominator = (1 + b2) * tp + b2 * (p - tp) + fp
        fbeta = (1 + b2) * tp / denominator if denominator else 1.0
        penalty = weight * max(0.0, (tp + fp) / n - base_rate)
        out.append(max(0.0, fbeta - penalty))
    return out


def idle(learner) -> bool:
    """True when ``propose`` answers {} whatever ``current`` is (a labelled learner between its proposals):
    the caller need not build ``current`` for every feedback."""
    if type(learner) is not LabelledLearner:
        return False
    settings = learner.settings
    return learner.parameter is None or learner.seen < settings.min_samples or bool(learner.seen % settings.learn_every)


def propose(learner, current: dict) -> dict:
    """``learner.propose(current)``, fast for a labelled learner with scores (the others as they are)."""
    if type(learner) is not LabelledLearner:
        return learner.propose(current)
    settings = learner.settings
    if learner.parameter is None or learner.seen < settings.min_samples or learner.seen % settings.learn_every:
        return {}
    index = index_of(learner)
    points, mids = index.points, index.mids
    p, q = index.p, index.q
    if index.nonfinite or index.bad or not points or p + q < settings.min_samples or p + q >= _EXACT_N:
        return learner.propose(current)  # the nudge (too few scores), or what the index does not cover
    spec = learner.parameters[learner.parameter]
    value = current.get(learner.parameter, spec["default"])
    lo, hi = spec["min"], spec["max"]
    if not lo <= hi:
        return learner.propose(current)
    # mids[:i] clamp to lo, mids[j:] to hi, mids[i:j] are themselves (clamp returns them as they are)
    i, j = bisect_left(mids, lo), bisect_right(mids, hi)
    inner = mids[i:j]
    first_mid = clamp(mids[0], spec) if mids else None
    extras = [clamp(value, spec)]  # propose's insertion order: clamp(value), the mids, the two ends
    if mids and i > 0:
        extras.append(first_mid)
    if mids and j < len(mids):
        extras.append(clamp(mids[-1], spec))
    extras += [clamp(points[0] - 1e-9, spec), clamp(points[-1] + 1e-9, spec)]
    candidates = inner + extras
    above = learner.direction == "above"
    # Where each extra falls: the samples at points[:at] are at or below it ("above": positive when
    # score > x) or strictly below it ("below": positive when score < x). A midpoint mids[k] has points[:k + 1].
    ats = [bisect_right(points, x) if above else bisect_left(points, x) for x in extras]
    if learner.objective in ("precision", "recall", "alert_quality"):
        below_p, below_n = list(accumulate(index.pos)), list(accumulate(index.neg))
        lows_p = below_p[i:j] + [below_p[at - 1] if at else 0 for at in ats]
        lows_n = below_n[i:j] + [below_n[at - 1] if at else 0 for at in ats]
        if above:
            tps, fps = list(map(sub, repeat(p), lows_p)), list(map(sub, repeat(q), lows_n))
        else:
            tps, fps = lows_p, lows_n
        raw = _values(learner, tps, fps, p, q)
        # round(v, 9) is monotone: only values within 1e-9 of the best can round to the best's rounding
        best_raw = max(raw)
        score = [round(v, 9) if v >= best_raw - 2e-9 else -1.0 for v in raw]
        top = max(score)
    else:
        # accuracy (and the legacy names): round((tp + tn) / n, 9) orders as tp + tn does (n < 10**8), and
        # tp + tn is, up to a constant, the running sum of dif ("above") or of -dif ("below") up to the threshold
        cum = list(accumulate(index.dif))
        score = cum[i:j] + [cum[at - 1] if at else 0 for at in ats]
        if not above:
            score = list(map(neg, score))
        top = max(score)
    tied, at = [], -1
    while True:  # every candidate on the best objective (a few, usually side by side)
        try:
            at = score.index(top, at + 1)
        except ValueError:
            break
        tied.append(candidates[at])
    near = max([-abs(c - value) for c in tied])
    winners = {c for c in tied if -abs(c - value) == near}
    if len(winners) == 1:
        best = winners.pop()
        # the very object propose's set holds for this value (its first insertion: 0 and 0.0 are one member)
        best = next(c for c in [extras[0], *([first_mid] if i > 0 else []), *inner, *extras[1:]] if c == best)
    else:  # a true tie (value - d and value + d): the first in propose's own set, as max finds it
        best = _first_in_propose_order(learner, spec, value, winners)
    if isinstance(spec["default"], int) and not isinstance(spec["default"], bool):
        best = int(round(best))
    return {learner.parameter: best} if not math.isclose(best, value, rel_tol=1e-9, abs_tol=1e-12) else {}


def _first_in_propose_order(learner, spec: dict, value, winners: set):
    scored = [s for s, _, _ in learner.samples if s is not None]
    points = sorted(set(scored))
    candidates = {clamp(value, spec)}
    candidates.update(clamp((a + b) / 2, spec) for a, b in zip(points, points[1:]))
    candidates.update(clamp(p, spec) for p in (points[0] - 1e-9, points[-1] + 1e-9))
    return next(c for c in candidates if c in winners)
