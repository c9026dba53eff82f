"""Tune a function's own parameters by replaying its labelled calls through it.

A decision parameter (``threshold``, ``alpha``, ``window``, ...) is compared inside the
user's function on a scale only the function knows: a z-score, a p-value (positive when
*below*), a count, a distance the output reports rescaled. Learning from the output's
look assumes that scale; replaying does not. For a function whose calls can be replayed
safely (a pure domain, or ``generate.purity`` finds the function pure), the engine keeps
the inputs of recent calls (in memory, bounded; on disk only where ``record_inputs``
allows), and when a call is labelled its inputs become a sample here. Tuning calls the
*original* function object (``state.original``: no phases, no execution record, no
event) with each candidate value passed explicitly as a keyword, and chooses by the
objective on the samples not held back.

Candidates: a grid over the declared [min, max] range (linear, plus logarithmic where
the range spans two orders of magnitude or more, so that 0.0015 in [0.0001, 0.5] or 12
in [1, 100000] is reachable), the current and default values and the values callers
passed themselves, then two rounds of a finer grid between the best one's neighbours.
Direction and scale are thus found, never assumed. A held-back share of the labels
(chosen by execution id, so a sample stays on its side) judges the result: a value is
promoted only if it beats the untrained start (the declared default) on them, and is
not worse than the value in force; a value in force that turns out worse than the start
goes back to the start. Every tuning's evidence is kept (``last``) for state.json.
"""

from __future__ import annotations

import inspect
import math
import time
import zlib
from collections import deque

from poet_runtime.learn.objectives import objective_value, prediction_of

_GRID = 41
_REFINE = 11
_CACHE = 512  # predictions remembered per sample (the fixed grid recurs from one tuning to the next)


def replayable_names(function, parameters: dict) -> list[str]:
    """Declared parameters that are the function's own keyword-passable parameters."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return []
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [name for name in parameters
            if name in signature.parameters and signature.parameters[name].kind in kinds]


class _Sample:
    __slots__ = ("args", "kwargs", "label", "held", "passed", "cache")

    def __init__(self, args, kwargs, label, held, passed):
        self.args, self.kwargs, self.label, self.held, self.passed = args, kwargs, label, held, passed
        self.cache: dict = {}


class ReplayTuner:
    """Labelled samples with their inputs, and the search that tunes the parameters on them."""

    def __init__(self, function, parameters: dict, objective: str, settings, beta: float = 1.0):
        self.function = function
        self.parameters = parameters
        self.objective = objective
        self.settings = settings
        self.beta = beta
        self.names = replayable_names(function, parameters)
        try:
            self.signature = inspect.signature(function)
        except (TypeError, ValueError):
            self.signature = None
        self.positions = {}  # parameter -> its index when it can be passed positionally
        if self.signature is not None:
            for index, parameter in enumerate(self.signature.parameters.values()):
                if parameter.kind == inspect.Parameter.POSITIONAL_OR_KEYWORD:
                    self.positions[parameter.name] = index
        self.samples: deque = deque(maxlen=settings.memory)
        self.seen = 0
        self.replays = 0  # calls of the function made by tuning (the cost of learning)
        self.last: dict | None = None  # evidence of the last tuning
        self.deadline = math.inf  # a tuning stops searching then (settings.replay_seconds)
        self.out_of_time = False

    def retarget(self, parameters: dict) -> None:
        """A new version was loaded: same logic, perhaps other declared defaults and ranges."""
        self.parameters = parameters
        self.names = replayable_names(self.function, parameters)
        for sample in self.samples:
            sample.cache.clear()

    # -- samples ---------------------------------------------------------------------------

    def add(self, execution_id: str, args, kwargs, label) -> bool:
        """A labelled call's inputs as a sample; False when they do not bind (nothing kept)."""
        args, kwargs = tuple(args), dict(kwargs)
        if self.signature is not None:
            try:
                passed = frozenset(self.signature.bind(*args, **kwargs).arguments)
            except TypeError:
                return False
        else:
            passed = frozenset(kwargs)
        share = int(round(self.settings.held_back * 1000))
        # By the execution's number (its process id is random): the same calls are held back on every run.
        key = execution_id.rpartition("-")[2] or execution_id
        held = zlib.crc32(key.encode("utf-8", "replace")) % 1000 < share
        self.samples.append(_Sample(args, kwargs, bool(label), held, passed))
        self.seen += 1
        return True

    def _predict(self, sample: _Sample, values: dict):
        key = tuple(sorted(values.items()))
        cache = sample.cache
        if key in cache:
            return cache[key]
        # The candidate replaces the value the logic got (the learned default perceive filled in,
        # or the caller's own): the label is about the inputs, the question is what this value answers.
        args, kwargs = list(sample.args), dict(sample.kwargs)
        for name, value in key:
            index = self.positions.get(name)
            if index is not None and index < len(args):
                args[index] = value
            else:
                kwargs[name] = value
        self.replays += 1
        try:
            predicted = bool(prediction_of(self.function(*args, **kwargs)))
        except Exception:
            predicted = None  # a call that fails on replay says nothing about the value
        if len(cache) >= _CACHE:
            cache.clear()
        cache[key] = predicted
        return predicted

    def value(self, values: dict, samples) -> float:
        pairs = []
        for sample in samples:
            predicted = self._predict(sample, values)
            if predicted is not None:
                pairs.append((predicted, sample.label))
        return objective_value(self.objective, pairs, beta=self.beta, settings=self.settings)

    def value_for(self, values: dict) -> float:
        """The objective on every sample with these values (the candidate screen's measure)."""
        return self.value(values, list(self.samples))

    # -- search ------------------------------------------------------------------------------

    def _grid(self, spec: dict, current, extra) -> list:
        low, high = float(spec["min"]), float(spec["max"])
        points = {low + (high - low) * i / (_GRID - 1) for i in range(_GRID)} if high > low else {low}
        floor = low if low > 0 else high * 1e-4
        if high > 0 and floor > 0 and high / floor >= 100:
            ratio = math.log(high / floor)
            points.update(floor * math.exp(ratio * i / (_GRID - 1)) for i in range(_GRID))
        points.update(v for v in (current, spec["default"], *extra) if isinstance(v, (int, float)))
        return self._shape(points, spec)

    @staticmethod
    def _shape(points, spec: dict) -> list:
        integer = isinstance(spec["default"], int) and not isinstance(spec["default"], bool)
        low, high = spec["min"], spec["max"]
        shaped = {min(max(int(round(p)) if integer else float(p), low), high) for p in points}
        return sorted(shaped)

    def _best(self, name: str, values: dict, candidates: list, train: list):
        current = values[name]
        span = (self.parameters[name]["max"] - self.parameters[name]["min"]) or 1.0

        def score(candidate):
            value = self.value({**values, name: candidate}, train)
            return round(value, 9), -abs(candidate - current) / span  # equals: the nearest to the current

        scored = {current: score(current)} if current in candidates else {}
        for candidate in candidates:
            if candidate not in scored:
                if time.monotonic() > self.deadline and scored:
                    self.out_of_time = True  # the best so far; the next tuning goes on from the cache
                    break
                scored[candidate] = score(candidate)
        return max(scored, key=scored.get), scored

    def _tune_one(self, name: str, values: dict, train: list) -> tuple:
        spec = self.parameters[name]
        seen = {s.kwargs.get(name) for s in train if name in s.kwargs}
        candidates = self._grid(spec, values[name], seen)
        best, scored = self._best(name, values, candidates, train)
        integer = isinstance(spec["default"], int) and not isinstance(spec["default"], bool)
        for _ in range(2):  # refine between the best one's neighbours
            ordered = sorted(scored)
            index = ordered.index(best)
            low, high = ordered[max(index - 1, 0)], ordered[min(index + 1, len(ordered) - 1)]
            if high <= low:
                break
            if integer and high - low <= 2 * _REFINE:
                finer = list(range(int(low), int(high) + 1))
            elif low > 0 and high / low > 3:
                finer = [low * (high / low) ** (i / (_REFINE - 1)) for i in range(_REFINE)]
            else:
                finer = [low + (high - low) * i / (_REFINE - 1) for i in range(_REFINE)]
            finer = [c for c in self._shape(finer, spec) if c not in scored]
            if not finer:
                break
            scored.update(self._best(name, values, finer, train)[1])
            best = max(scored, key=scored.get)
        # The middle of the best plateau (the run of equally good neighbours around the best),
        # not its edge: the boundary lies somewhere between the samples on either side.
        ordered = sorted(scored)
        top = scored[best][0]
        low = high = ordered.index(best)
        while low > 0 and scored[ordered[low - 1]][0] == top:
            low -= 1
        while high < len(ordered) - 1 and scored[ordered[high + 1]][0] == top:
            high += 1
        a, b = ordered[low], ordered[high]
        middle = math.sqrt(a * b) if a > 0 and b / a > 3 else (a + b) / 2
        middle = self._shape([middle], spec)[0]
        if middle not in scored:
            scored.update(self._best(name, values, [middle], train)[1])
        if scored[middle][0] == top:
            best = middle
        return best, len(scored)

    def tune(self, current: dict) -> tuple[dict, dict | None]:
        """(changes, evidence): new values for the replayable parameters, or {} with the reason why not."""
        settings = self.settings
        if not self.names or self.seen < settings.min_samples or self.seen % settings.learn_every:
            return {}, None
        samples = list(self.samples)
        train = [s for s in samples if not s.held]
        held = [s for s in samples if s.held]
        if len(train) < 5 or len(held) < 3:
            return {}, None
        self.deadline, self.out_of_time = time.monotonic() + settings.replay_seconds, False
        start = {n: self.parameters[n]["default"] for n in self.names}
        values = {n: current.get(n, start[n]) for n in self.names}
        def search(on):
            found, tried = dict(values), 0
            for name in self.names:  # one parameter at a time, each with the others at their proposed values
                found[name], count = self._tune_one(name, found, on)
                tried += count
            return found, tried

        chosen, tried = search(train)  # chosen without the held-back labels, judged on them
        held_start, held_current, held_chosen = (self.value(v, held) for v in (start, values, chosen))
        # It generalises: refit on every label (more of them near the boundary), judged on the same gate.
        proposed, more = search(samples)
        tried += more
        held_new = self.value(proposed, held)
        if not (held_chosen > held_start + 1e-9 and held_new > held_start + 1e-9):
            proposed, held_new = chosen, held_chosen
        evidence = {
            "method": "replay", "objective": self.objective, "samples": len(samples), "train": len(train),
            "held_back": len(held), "candidates": tried, "start": start, "current": values, "candidate": proposed,
            "tuned_on_share": chosen, "held_back_tuned_on_share": round(held_chosen, 4),
            "train_candidate": round(self.value(proposed, train), 4), "held_back_start": round(held_start, 4),
            "held_back_current": round(held_current, 4), "held_back_candidate": round(held_new, 4),
            "out_of_time": self.out_of_time}
        changes: dict = {}
        if proposed != values and held_new > held_start + 1e-9 and held_new + 1e-9 >= held_current:
            changes = {n: v for n, v in proposed.items() if v != values[n]}
            evidence["decision"] = "promoted: beats the untrained start on held-back labels"
        elif held_current + 1e-9 < held_start:
            changes = {n: v for n, v in start.items() if v != values[n]}
            evidence["decision"] = "back to the start: the value in force is worse than it on held-back labels"
        elif proposed == values:
            evidence["decision"] = "kept: the value in force is the best on the tuning share"
        elif held_new <= held_start + 1e-9:
            evidence["decision"] = "not promoted: does not beat the untrained start on held-back labels"
        else:
            evidence["decision"] = "not promoted: worse than the value in force on held-back labels"
        self.last = evidence
        return changes, evidence
