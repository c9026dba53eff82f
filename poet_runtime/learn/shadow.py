"""A candidate version running in shadow: beside the current one on live calls, its result never returned.

Replaying recorded labelled executions can only model a candidate (its decision
parameter applied to the recorded scores); a candidate whose code differs, as a model's
may, has to be run. So while a candidate is in shadow, every successful live call of
the current version is repeated on the candidate with the same arguments, and its
output is kept by execution id. When labelled feedback arrives for that execution,
both answers are scored against the label; after enough labelled pairs the engine
promotes the candidate only if it did at least as well.

Running the user's logic twice is only safe where calls have no side effects, so the
engine shadows live calls only for domains that declare ``pure = true`` and for
synchronous functions. The shadow's own failures count against the candidate and never
reach the caller.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections import OrderedDict

from poet_runtime import records
from poet_runtime.learn.objectives import objective_value, prediction_of

log = logging.getLogger("poet_runtime")
FAILED = object()  # the candidate raised or was refused: a wrong answer
_MISSING = object()
_KEEP = 5000  # shadow outputs waiting for feedback, per function


class Shadow:
    def __init__(self, state, candidate, needed: int):
        from poet_runtime.resolve import load_version

        module = sys.modules.get(state.original.__module__)
        self.state = state
        self.candidate = candidate
        self.needed = needed
        self.loaded = load_version(
            candidate, function_id=state.function_id, original=state.original,
            user_globals=state.original.__globals__, package=getattr(module, "__package__", None),
            policy=state.policy, spec=state.spec(), config=state.config,
        )
        self.lock = threading.Lock()
        self.outputs: OrderedDict = OrderedDict()  # execution id -> candidate output
        self.pairs: list[tuple] = []  # (current prediction, candidate prediction or FAILED, label)
        self.runs = 0
        self.failures = 0
        self._serving = None

    # -- on the call path --------------------------------------------------------------------

    def install(self) -> None:
        """Wrap the current fast path; a reload (promotion, rollback) replaces it and ends the shadow."""
        state = self.state
        serving = state.cell[0]
        last = records.last.get
        shadow = self

        def shadowed(args, kwargs):
            result = serving(args, kwargs)
            entry = last()
            if entry is not None and entry[0] is state and entry[2] == records.OK:
                shadow.run(entry[1], args, kwargs)
            return result

        self._serving = serving
        state.cell[0] = shadowed
        self._shadowed = shadowed

    def uninstall(self) -> None:
        if self._serving is not None and self.state.cell[0] is self._shadowed:
            self.state.cell[0] = self._serving
        self._serving = None
        try:
            self.loaded.close()
        except Exception:
            pass

    def configure(self, params: dict) -> None:
        """Learning moved a value of the current version: the candidate runs with it too."""
        try:
            self.loaded.configure(params)
        except Exception:
            pass

    def run(self, number: int, args, kwargs) -> None:
        try:
            output = self.loaded.call(self.state.original, args, kwargs)[0]
        except Exception as error:  # never the caller's concern
            output = FAILED
            with self.lock:
                self.failures += 1
            if self.failures == 1:
                log.info("poet_runtime: %s: candidate v%d failed in shadow: %s: %s", self.state.function_id,
                         self.candidate.number, type(error).__name__, error)
        with self.lock:
            self.runs += 1
            self.outputs[records.execution_id(number)] = output
            while len(self.outputs) > _KEEP:
                self.outputs.popitem(last=False)

    # -- on feedback -------------------------------------------------------------------------

    def label(self, execution_id: str, current_output, label) -> bool:
        """Pair a labelled execution's two answers; True once enough pairs are in."""
        with self.lock:
            candidate_output = self.outputs.pop(execution_id, _MISSING)
            if candidate_output is _MISSING:
                return False  # not shadowed (before the shadow began, another process, or evicted)
            predicted = FAILED if candidate_output is FAILED else bool(prediction_of(candidate_output))
            self.pairs.append((bool(prediction_of(current_output)), predicted, bool(label)))
            return len(self.pairs) >= self.needed

    def scores(self, objective: str, beta: float, settings) -> dict:
        current = [(c, a) for c, _, a in self.pairs]
        # A failed candidate answer counts as the wrong answer.
        candidate = [((not a) if p is FAILED else p, a) for _, p, a in self.pairs]
        return {
            "current": round(objective_value(objective, current, beta=beta, settings=settings), 6),
            "candidate": round(objective_value(objective, candidate, beta=beta, settings=settings), 6),
            "samples": len(self.pairs), "shadow_runs": self.runs, "shadow_failures": self.failures,
        }
