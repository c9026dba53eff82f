"""Is the objective getting worse? A rolling value against its own history.

The rolling value is the objective over the last ``window`` labelled samples; the
baseline is the mean of the last few completed windows before it. A drop of more than
``degradation_drop`` starts an episode and is reported once; the episode ends when the
value is back within ``recover_margin`` of the baseline or a new version takes over
(``restart``). Why a frozen baseline during an episode: otherwise the bad windows would
pull the baseline down and the episode would "recover" by forgetting.

The window's confusion counts are kept as pairs come and go (``add`` counts the new pair and
uncounts the one the full window drops) rather than recounted over the window on every sample:
a fleet learner calls ``add`` once per feedback, and the recount was ~7% of its time. The value
is ``objectives.value_from_counts`` on the same counts, so it is the recounted one exactly. If
``pairs`` is changed from outside (a saved state restored into it), the counts are recounted once.
"""

from __future__ import annotations

from collections import deque

from poet_runtime.learn.objectives import confusion, value_from_counts

HISTORY = 5


class Monitor:
    def __init__(self, objective: str, settings, beta: float = 1.0):
        self.objective = objective
        self.settings = settings
        self.beta = beta
        self.pairs: deque = deque(maxlen=settings.window)  # (predicted, actual)
        self.history: list[float] = []
        self.count = 0
        self.in_episode = False
        self.baseline: float | None = None
        self.trend: deque = deque(maxlen=20)
        # tp, fp, fn, tn of ``pairs``, indexed by (not predicted) * 2 + (not actual), as ``confusion`` orders them
        self._counts = [0, 0, 0, 0]
        self._last = None  # the newest pair counted: another one at the end means pairs changed from outside

    def _counted(self) -> list:
        """The counts of ``pairs``, recounted when pairs changed other than through ``add``/``restart``."""
        pairs = self.pairs
        if (pairs[-1] if pairs else None) is not self._last or sum(self._counts) != len(pairs):
            self._counts = list(confusion(pairs))
            self._last = pairs[-1] if pairs else None
        return self._counts

    def rolling(self) -> float | None:
        if len(self.pairs) < self.settings.window:
            return None
        if not self.pairs:
            return 0.0  # a window of 0: what objective_value answers on no pairs
        return value_from_counts(self.objective, *self._counted(), beta=self.beta, settings=self.settings)

    def add(self, predicted: bool, actual: bool) -> str | None:
        """Returns "degraded" when an episode starts, "recovered" when it ends, else None."""
        pair = (bool(predicted), bool(actual))
        pairs, counts = self.pairs, self._counted()
        if pairs.maxlen and len(pairs) == pairs.maxlen:  # the full window drops its oldest
            old_p, old_a = pairs[0]
            counts[(not old_p) * 2 + (not old_a)] -= 1
        pairs.append(pair)
        counts[(not pair[0]) * 2 + (not pair[1])] += 1
        self._last = pair
        self.count += 1
        if len(pairs) < self.settings.window:
            return None
        value = value_from_counts(self.objective, *counts, beta=self.beta, settings=self.settings)  # rolling()
        if self.count % self.settings.window == 0:
            self.trend.append(round(value, 4))
            if not self.in_episode:
                self.history = (self.history + [value])[-HISTORY:]
        if not self.history:
            return None
        baseline = self.baseline if self.in_episode else sum(self.history) / len(self.history)
        if not self.in_episode and value < baseline - self.settings.degradation_drop:
            self.in_episode, self.baseline = True, baseline
            return "degraded"
        if self.in_episode and value >= baseline - self.settings.recover_margin:
            self.in_episode, self.baseline = False, None
            return "recovered"
        return None

    def restart(self, baseline: float | None) -> None:
        """A new version serves from now on: its own history, starting at ``baseline``."""
        self.pairs.clear()
        self._counts, self._last = [0, 0, 0, 0], None
        self.count = 0
        self.in_episode = False
        self.baseline = None
        self.history = [baseline] if baseline is not None else []
