"""Is the objective getting worse? A rolling value against its own history.

The rolling value is the objective over the last ``window`` labelled samples; the
baseline is the mean of the last few completed windows before it. A drop of more than
``degradation_drop`` starts an episode and is reported once; the episode ends when the
value is back within ``recover_margin`` of the baseline or a new version takes over
(``restart``). Why a frozen baseline during an episode: otherwise the bad windows would
pull the baseline down and the episode would "recover" by forgetting.
"""

from __future__ import annotations

from collections import deque

from poet_runtime.learn.objectives import objective_value

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

    def rolling(self) -> float | None:
        if len(self.pairs) < self.settings.window:
            return None
        return objective_value(self.objective, self.pairs, beta=self.beta, settings=self.settings)

    def add(self, predicted: bool, actual: bool) -> str | None:
        """Returns "degraded" when an episode starts, "recovered" when it ends, else None."""
        self.pairs.append((bool(predicted), bool(actual)))
        self.count += 1
        value = self.rolling()
        if value is None:
            return None
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
        self.count = 0
        self.in_episode = False
        self.baseline = None
        self.history = [baseline] if baseline is not None else []
