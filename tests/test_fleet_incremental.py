"""What the learners keep incrementally is what recomputing would give, on random sequences.

``monitor.Monitor`` keeps its window's confusion counts as pairs come and go; here it runs beside
a monitor that recounts the window on every sample (``objective_value`` over ``pairs``, as the
monitor did before) through random feedback with window wraps, restarts (with and without a
baseline) and a saved window restored into ``pairs`` from outside (as ``learner_state`` does):
the verdicts, rolling values, trends and baselines must be the same, bit for bit.
``learner_rules.verdict_samples`` answers from one ``json.dumps`` when everything fits: checked
against the per-sample count it stands in for, at limits around every cut.
"""

from __future__ import annotations

import json
import random
import zlib

import pytest

from poet_runtime.fleet.learner_rules import verdict_samples
from poet_runtime.learn import config
from poet_runtime.learn.monitor import Monitor
from poet_runtime.learn.objectives import LabelledLearner, objective_value

OBJECTIVES = ["accuracy", "precision", "recall", "alert_quality", "drift_sensitivity"]


class Recounting(Monitor):
    """The monitor as it was: the rolling value recounted over the whole window each time."""

    def rolling(self):
        if len(self.pairs) < self.settings.window:
            return None
        return objective_value(self.objective, self.pairs, beta=self.beta, settings=self.settings)

    def add(self, predicted, actual):
        self.pairs.append((bool(predicted), bool(actual)))
        self.count += 1
        value = self.rolling()
        if value is None:
            return None
        if self.count % self.settings.window == 0:
            self.trend.append(round(value, 4))
            if not self.in_episode:
                self.history = (self.history + [value])[-5:]
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


def _view(monitor: Monitor) -> tuple:
    return (monitor.rolling(), list(monitor.pairs), monitor.history, monitor.count, monitor.in_episode,
            monitor.baseline, list(monitor.trend))


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_the_incremental_monitor_says_what_recounting_says_through_wraps_restarts_and_restores(objective):
    rng = random.Random(zlib.crc32(objective.encode()))
    verdicts = 0
    for case in range(6):
        settings = config.LearnSettings(window=rng.choice([1, 2, 5, 13, 50]), min_recall=rng.choice([0.3, 0.6]),
                                        min_precision=rng.choice([0.3, 0.6]))
        beta = rng.choice([0.5, 1.0, 2.0])
        fast, slow = Monitor(objective, settings, beta), Recounting(objective, settings, beta)
        quality = rng.random()
        for step in range(3000):
            roll = rng.random()
            if roll < 0.003:
                baseline = rng.choice([None, rng.random()])
                fast.restart(baseline)
                slow.restart(baseline)
            elif roll < 0.005:  # a saved window put back from outside, as learner_state restores one
                saved = [[rng.random() < 0.5, rng.random() < 0.5] for _ in range(rng.randrange(settings.window + 3))]
                for monitor in (fast, slow):
                    monitor.pairs.clear()
                    monitor.pairs.extend(tuple(p) for p in saved)
            if step % 200 == 0:
                quality = rng.random()  # the function gets better or worse: episodes start and end
            actual = rng.random() < 0.4
            predicted = actual if rng.random() < quality else not actual
            said = fast.add(predicted, actual)
            assert said == slow.add(predicted, actual), (case, step)
            verdicts += said is not None
            assert _view(fast) == _view(slow), (case, step)
    assert verdicts > 20  # the sequences do reach episodes (the comparison covers verdicts, not just values)


def test_a_monitor_restored_into_a_fresh_one_recounts_once_then_follows():
    settings = config.LearnSettings(window=4)
    monitor = Monitor("accuracy", settings)
    monitor.pairs.extend([(True, True), (True, False), (False, False), (False, False)])
    assert monitor.rolling() == 0.75
    monitor.add(False, True)  # drops (True, True): 2 of 4 right
    assert monitor.rolling() == 0.5 == objective_value("accuracy", monitor.pairs)


def _per_sample(learner, limit):
    """The newest samples whose per-sample count (2, then len + 2 each) stays within ``limit``."""
    kept, size = [], 2
    for score, predicted, actual in reversed(learner.samples):
        size += len(json.dumps([score, bool(predicted), bool(actual)])) + 2
        if size > limit:
            break
        kept.append([score, bool(predicted), bool(actual)])
    return kept[::-1]


def test_verdict_samples_keeps_what_the_per_sample_count_keeps_at_every_cut():
    rng = random.Random(9)
    parameters = {"threshold": {"default": 0.5, "min": 0.0, "max": 1.0, "description": ""}}
    learner = LabelledLearner("accuracy", parameters, config.LearnSettings(memory=60))
    assert verdict_samples(learner) == []
    for n in range(60):
        score = rng.choice([None, rng.random(), 1e300, float("nan"), round(rng.random(), 2)])
        learner.observe({"drift_detected": rng.random() < 0.5, "score": score}, rng.random() < 0.5)
    whole = len(json.dumps(_per_sample(learner, 10**9))) + 2
    for limit in [0, 1, 2, 3, 10, 50, *range(whole - 120, whole + 5)]:
        assert verdict_samples(learner, limit) == _per_sample(learner, limit), limit
    assert verdict_samples(learner, whole) == _per_sample(learner, 10**9)
    assert len(verdict_samples(learner, whole - 1)) == 59


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_an_idle_learner_is_one_whose_proposal_is_empty_whatever_the_current_values(objective):
    from poet_runtime.fleet import learner_fast

    rng = random.Random(zlib.crc32(f"{objective}/idle".encode()))
    idle = busy = 0
    for parameters in ({"threshold": {"default": 0.5, "min": 0.0, "max": 1.0, "description": ""}}, {}):
        settings = config.LearnSettings(memory=40, min_samples=rng.choice([3, 10]), learn_every=rng.choice([1, 4]))
        learner = LabelledLearner(objective, parameters, settings)
        for _ in range(120):
            score = rng.random()
            learner.observe({"drift_detected": score > 0.5, "score": score}, score > 0.3)
            current = {"threshold": rng.choice([0.0, 0.31, 0.9, 1.0])}
            if learner_fast.idle(learner):
                idle += 1
                assert learner.propose(current) == {} == learner_fast.propose(learner, current)
            else:
                busy += 1
    assert idle and busy
