"""Learning for one function: feedback in, audited parameter changes and version decisions out.

Why one object per function: the learner, the degradation monitor, the candidate in
flight and the promoted version on probation are one story, and every decision in it
is written as an event (``learning.*``, ``version.*``) and, for parameter changes, as an
audit entry in the version's state.json (old value, new value, evidence, event id).

Flow: a labelled feedback event is joined with its execution (its output); the learner
may propose new parameter values, which are clamped to their declared ranges, written
to params.json and applied live with ``configure``. When the objective degrades, a
candidate version is generated with the learned values and the evidence as hints,
screened on the recorded labelled executions, run in shadow beside live calls where the
domain is pure (see ``shadow``), and promoted only if it is at least as good; a promoted
version that degrades is rolled back.

With a broker set (``POET_BROKER``) all of that happens once, in the fleet's learner, from
every process's feedback: this engine then learns nothing, decides nothing and claims no
feedback (``fleet``); it stays for what is local: the version's declared parameters, live
``configure``, the audit trail, and ``apply_fleet`` / reloads for what ``fleet.follower``
receives. The monitor is not fed (its verdicts are the learner's).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from pathlib import Path

from poet_runtime import journal
from poet_runtime.learn import config, sink
from poet_runtime.learn.monitor import Monitor
from poet_runtime.learn.objectives import LABELLED, clamp, correct, make_learner, prediction_of

log = logging.getLogger("poet_runtime")


class Learning:
    def __init__(self, info: sink.FunctionInfo, state):
        from poet_runtime.domains import get_domain
        from poet_runtime.store import FunctionStore

        self.info = info
        self.state = state
        self.objective = state.config.optimize_for
        self.settings = config.get()
        self.lock = threading.RLock()
        self.store = FunctionStore(Path(state.version.path).parent, state.function_id)
        self.beta = get_domain(state.config.domain).alert_quality_beta
        self.monitor = Monitor(self.objective, self.settings, self.beta)
        self.failures: deque = deque(maxlen=10)
        self.comments: deque = deque(maxlen=10)
        self.probation: dict | None = None  # {"version", "previous"} after a promotion
        self.shadow = None  # a candidate running beside the current version on live calls
        self.pure = get_domain(state.config.domain).pure
        self.decisions: list[str] = []  # event types, in order (tests and the bench read it)
        self.learner = None
        self.tuner = None  # replay.ReplayTuner, where labelled calls can be replayed through the function
        self.not_learnable: dict = {}  # parameter -> why replay cannot tune it (status shows it)
        self.failed_causes: set = set()  # why learning from feedback failed, each said once
        # With a broker (POET_BROKER) the fleet's learner learns from every process's feedback and
        # publishes what it decides; this engine then neither learns nor claims feedback (that would
        # make islands and apply twice): it keeps the version's parameters and applies what the
        # fleet sends (``apply_fleet``, from ``fleet.follower``). Recording stays as it is.
        from poet_runtime.settings import get_settings

        self.fleet = bool(get_settings().broker)
        self.version_loaded(state)

    # -- versions ----------------------------------------------------------------------------

    def version_loaded(self, state) -> None:
        """A version was (re)loaded: learn its declared parameters, keep the evidence seen so far."""
        with self.lock:
            self.state = state
            self.version = state.version_number
            self.parameters = dict(state.version.metadata.get("parameters") or {})
            old = self.learner
            self.learner = make_learner(self.objective, self.parameters, self.settings, self.beta)
            self.measured = hasattr(self.learner, "observe_execution")  # learns from executions, not labels
            if old is not None and hasattr(old, "samples") and hasattr(self.learner, "samples"):
                self.learner.samples.extend(old.samples)
            self._replay_setup(state)

    def _replay_setup(self, state) -> None:
        """Tune the function's own parameters by replay where that is safe; else say what is not learnable."""
        from poet_runtime.learn import replay_blocker
        from poet_runtime.learn.replay import ReplayTuner, replayable_names

        if self.objective not in LABELLED or not self.settings.replay:  # replay off: output-only, as before
            self.tuner, self.not_learnable = None, {}
            return
        names = replayable_names(state.original, self.parameters)
        blocker = replay_blocker(state) if names else None
        if names and blocker is None and self.info.inputs is None:
            blocker = "inputs not kept: the phases run in a sandbox and the policy has no record_inputs"
        if names and blocker is None:
            if self.tuner is None:
                self.tuner = ReplayTuner(state.original, self.parameters, self.objective, self.settings, self.beta)
            else:  # the same logic: its samples stay valid
                self.tuner.retarget(self.parameters)
            self.not_learnable = {}
        else:
            self.tuner = None
            self.not_learnable = {name: f"not learnable without inputs ({blocker})" for name in names}
        self._note_learning({"replay": self.tuner is not None, "not_learnable": self.not_learnable})

    def _note_learning(self, learning: dict) -> None:
        """What learning can do, and the last tuning's evidence, in the version's state.json."""
        try:
            with self.store.lock():
                version = self.store.get(self.version)
                if version is None:
                    return
                state = self._state(version)
                merged = {**(state.get("learning") or {}), **learning}
                if state.get("learning") == merged:
                    return
                state["learning"] = merged
                self.store.update_json(self.version, "state.json", state)
        except (OSError, ValueError) as error:
            log.warning("poet_runtime: %s: could not note learning state: %s", self.info.function_id, error)

    def _state(self, version) -> dict:
        """The version's state.json, which learning owns: garbage in it (not JSON, not an object,
        a field of the wrong type) is reported once, naming the file and field, and rebuilt
        (what is still good is kept); the next write stores the rebuilt state."""
        from poet_runtime import store as store_module

        path = Path(version.path) / "state.json"
        try:
            state = version.state()
        except FileNotFoundError:
            return {}
        except (ValueError, OSError) as error:  # store.DamagedFile is a ValueError
            damaged = error if isinstance(error, store_module.DamagedFile) else store_module.DamagedFile(
                path, None, f"cannot be read ({type(error).__name__}: {error})")
            store_module.report_once(store_module.DamagedFile(
                damaged.path, damaged.field, f"{damaged.reason}; learning rebuilds it"))
            return {}
        if type(state) is not dict:
            store_module.report_once(store_module.DamagedFile(
                path, None, f"is a JSON {type(state).__name__}, not an object; learning rebuilds it"))
            return {}
        for field, kind in (("audit", list), ("learning", dict), ("observations", dict)):
            if field in state and type(state[field]) is not kind:
                store_module.report_once(store_module.DamagedFile(
                    path, field, f"is a JSON {type(state[field]).__name__}, not a{'n' if kind is dict else ''} "
                    f"{'object' if kind is dict else 'array'}; learning rebuilds it"))
                del state[field]
        if "audit" in state:
            state["audit"] = [entry for entry in state["audit"] if type(entry) is dict]
        return state

    def _owned_by_replay(self, name) -> bool:
        """Whether the output-only learner must leave this parameter alone (replay tunes it, or nothing may)."""
        return name is not None and (name in self.not_learnable
                                     or (self.tuner is not None and name in self.tuner.names))

    def _decide(self, event_type: str, payload: dict, causation_id: str | None = None) -> dict:
        self.decisions.append(event_type)
        return sink.write_decision(self.info.root, event_type, payload, causation_id=causation_id)

    # -- feedback ----------------------------------------------------------------------------

    def catch_up(self) -> int:
        """Learn from feedback left pending by earlier processes (or the feedback CLI)."""
        if self.fleet:
            return 0  # the fleet's learner reads it from the broker; it stays where it is
        pending = self.info.root / journal.PENDING
        mine = []
        for path in pending.glob("fb-*.jsonl") if pending.is_dir() else ():
            event = next(journal.read_file(path), None)
            if event is not None and event.get("payload", {}).get("function") == self.info.function_id:
                mine.append((event.get("timestamp") or 0, path.name, path))
        return sum(self.process(path) for _, _, path in sorted(mine))  # in the order it was given

    def process(self, path: Path) -> int:
        """Claim one pending feedback file (another process may have) and learn from it."""
        if self.fleet:
            return 0  # not claimed: the fleet's learner learns from it (fleet.publisher forwards it)
        with self.lock:
            try:
                claimed = journal.claim(path)
            except OSError as error:  # a read-only store: it stays pending, for a process that can learn
                sink.report_write_error(self.info.root, error)
                return 0
            if claimed is None:
                return 0
            event = next(journal.read_file(claimed), None)
            if event is None or type(event.get("payload")) is not dict:
                return 0
            payload = event["payload"]
            try:
                found = sink.find_execution(payload["execution_id"], extra_roots=(self.info.root,))
                execution = found[0] if found is not None else None
                self.on_feedback(event, execution)
            except Exception as error:  # learning must never make feedback() fail after it was stored
                # Not learned, so not consumed: back to pending/, for this process's next catch-up
                # or the next process that loads the function. Said once per cause, no traceback.
                journal.unclaim(claimed)
                cause = ((type(error).__name__, error.errno, error.filename2) if isinstance(error, OSError)
                         else (type(error).__name__, str(error)[:200]))  # a temporary file's name is no cause
                if cause not in self.failed_causes:
                    self.failed_causes.add(cause)
                    log.warning("poet_runtime: %s: learning from feedback %s failed (%s: %s); it stays pending",
                                self.info.function_id, event.get("id"), type(error).__name__, error)
                return 0
            return 1

    def on_feedback(self, event: dict, execution: dict | None) -> None:
        payload = event["payload"]
        if payload.get("comments"):
            self.comments.append(payload["comments"])
        label = payload.get("label")
        if self.objective not in LABELLED or label is None or execution is None or "output" not in execution:
            return
        output = execution["output"]
        if not correct(output, label):
            self.failures.append({"execution_id": payload["execution_id"], "output": output, "label": label,
                                  "version": execution.get("version")})
        self.learner.observe(output, label)
        if self.tuner is not None:
            self._replay(payload, execution, label, event["id"])
        if not self._owned_by_replay(getattr(self.learner, "parameter", None)):
            changes = self.learner.propose(self._params())
            if changes:
                self.apply(changes, {"samples": self.learner.seen, "objective_now": self._value()}, event["id"])
        if self.shadow is not None and self.shadow.label(payload["execution_id"], output, label):
            self._finish_shadow(event["id"])
        verdict = self.monitor.add(bool(prediction_of(output)), bool(label))
        if verdict == "degraded":
            self.degraded(event["id"])
        elif verdict == "recovered":
            self._decide("learning.recovered", {"function": self.info.function_id, "version": self.version,
                                                "objective": self.objective, "rolling": self.monitor.rolling()})

    def _replay(self, payload: dict, execution: dict, label, cause: str | None) -> None:
        """Add the labelled call's inputs (memory, else its recorded event) as a sample; tune."""
        execution_id = payload["execution_id"]
        inputs = sink.remembered_inputs(self.info, execution_id)
        if inputs is None and isinstance(execution.get("inputs"), dict):
            recorded = execution["inputs"]
            inputs = recorded.get("args", []), recorded.get("kwargs", {})
        if inputs is None or not self.tuner.add(execution_id, inputs[0], inputs[1] or {}, label):
            return
        changes, evidence = self.tuner.tune(self._params())
        if evidence is None:
            return
        if changes:
            self.apply(changes, evidence, cause)
        self._note_learning({"last_tuning": evidence})

    def on_executions(self, payloads: list[dict]) -> None:
        """Measured objectives learn from the execution events themselves (flusher thread)."""
        learner = self.learner
        if self.fleet or not hasattr(learner, "observe_execution"):
            return
        with self.lock:
            for payload in payloads:
                if payload.get("version") != self.version:
                    continue
                learner.observe_execution(payload)
                changes = learner.propose(self._params())
                if changes:
                    self.apply(changes, {"samples": learner.seen, "durations_ms": _summary(learner)},
                               payload["execution_id"])

    # -- parameters --------------------------------------------------------------------------

    def _params(self) -> dict:
        version = self.store.get(self.version)
        try:
            return version.params() if version is not None else {}
        except (OSError, ValueError):
            return {}

    def _value(self) -> float | None:
        """The objective on the remembered samples with the live parameter value."""
        name = getattr(self.learner, "parameter", None)
        if name is None or not hasattr(self.learner, "value_for"):
            return None
        value = self._params().get(name, self.parameters.get(name, {}).get("default", 0.0))
        return round(self.learner.value_for(value), 4)

    def apply(self, changes: dict, evidence: dict, cause: str | None) -> dict:
        """Write new values (within range) to params.json with an audit entry; apply them live."""
        with self.lock, self.store.lock():
            version = self.store.get(self.version)
            params, _ = version.params_problems()  # damaged values are left out: their defaults apply
            state = self._state(version)
            audit = state.setdefault("audit", [])
            applied = {}
            for name, value in changes.items():
                spec = self.parameters.get(name)
                if spec is None:
                    continue
                new = clamp(value, spec)
                old = params.get(name, spec["default"])
                if new == old:
                    continue
                event = self._decide("learning.updated", {
                    "function": self.info.function_id, "version": self.version, "objective": self.objective,
                    "parameter": name, "old": old, "new": new, "evidence": evidence}, cause)
                audit.append({"parameter": name, "old": old, "new": new, "evidence": evidence,
                              "event_id": event["id"], "cause": cause, "at": event["timestamp"]})
                params[name] = applied[name] = new
            if not applied:
                return {}
            loaded = self.state.loaded
            if loaded is not None and hasattr(loaded, "observations"):
                state["observations"] = loaded.observations()
            state["audit"] = audit[-1000:]  # bounded: the events keep the full history
            self.store.update_json(self.version, "params.json", params)
            self.store.update_json(self.version, "state.json", state)
        loaded = self.state.loaded
        if loaded is not None and self.state.version_number == self.version:
            loaded.configure(params)
        if self.shadow is not None:
            # Both versions run with the same learned values, so the shadow compares their code.
            self.shadow.configure(applied)
        return applied

    def apply_fleet(self, number: int, changes: dict, message: dict, outcome_id: str) -> dict:
        """The fleet learner's ``params.updated`` for version ``number`` of this function's store:
        values clamped to that version's declared ranges, written to its params.json with an
        audit entry (cause: the outcome's id), and applied live when this process runs it.
        Values already on disk (another process sharing the store wrote them) are applied live
        all the same. Returns name -> value written or applied; unknown names are left out."""
        with self.lock, self.store.lock():
            version = self.store.get(number)
            if version is None:
                return {}
            declared = dict(version.metadata.get("parameters") or {})
            params, _ = version.params_problems()
            state = self._state(version)
            audit = state.setdefault("audit", [])
            wanted, changed = {}, {}
            for name, value in changes.items():
                spec = declared.get(name)
                if (type(spec) is not dict or type(value) not in (int, float) or not math.isfinite(value)
                        or not all(type(spec.get(bound)) in (int, float) for bound in ("min", "max"))):
                    continue  # only declared numeric parameters with a range; nothing else is taken
                new = clamp(value, spec)
                if type(spec.get("default")) is int and float(new).is_integer():
                    new = int(new)
                wanted[name] = new
                old = params.get(name, spec.get("default"))
                if new != old:
                    audit.append({"parameter": name, "old": old, "new": new, "cause": outcome_id,
                                  "evidence": {"fleet": {key: message.get(key) for key in ("learner", "evidence")
                                                         if key in message}},
                                  "event_id": outcome_id, "at": time.time()})
                    params[name] = changed[name] = new
            if changed:
                state["audit"] = audit[-1000:]
                self.store.update_json(number, "params.json", params)
                self.store.update_json(number, "state.json", state)
        loaded = self.state.loaded
        if wanted and loaded is not None and self.state.version_number == number:
            loaded.configure(params)
            if self.shadow is not None:
                self.shadow.configure(wanted)
        return wanted

    # -- degradation, candidates, promotion, rollback ----------------------------------------

    def evidence(self) -> dict:
        return {"objective": self.objective, "rolling": self.monitor.rolling(), "baseline": self.monitor.baseline,
                "trend": list(self.monitor.trend), "recent_failures": list(self.failures),
                "comments": list(self.comments)}

    def degraded(self, cause: str | None) -> None:
        evidence = self.evidence()
        self._decide("learning.degraded", {"function": self.info.function_id, "version": self.version,
                                           "objective": self.objective, "rolling": evidence["rolling"],
                                           "baseline": evidence["baseline"], "evidence": evidence}, cause)
        if self.probation is not None and self.probation["version"] == self.version:
            self.rollback_promoted(evidence)
        elif self.settings.auto_regenerate and self.shadow is None:  # one candidate at a time
            candidate = self.regenerate(evidence)
            if candidate is not None:
                self.evaluate(candidate)

    def regenerate(self, evidence: dict):
        """A candidate version (not current) from the generator, with learned values and evidence as hints."""
        from poet_runtime.learn import regenerate as make

        try:
            version = make.generate_candidate(self.state, self.store, {"params": self._params(), "evidence": evidence})
        except Exception as error:  # the current version keeps serving
            log.warning("poet_runtime: %s: regeneration failed: %s", self.info.function_id, error)
            self._decide("version.regeneration_failed", {"function": self.info.function_id, "version": self.version,
                                                         "reason": f"{type(error).__name__}: {error}"})
            return None
        self._decide("version.candidate", {"function": self.info.function_id, "version": version.number,
                                           "previous": self.version, "objective": self.objective,
                                           "reason": "objective degraded"})
        return version

    def regenerate_for_fleet(self, evidence: dict):
        """The fleet's regeneration, run by the one instance the fleet elected (``fleet.regenerate``):
        the same candidate (``regenerate``, with the learner's evidence instead of this monitor's)
        and the same screening as ``evaluate``, on the labelled executions the evidence carries
        (``samples``: ``{"output", "label"}`` objects or the learner's ``[score, predicted, actual]``)
        besides this engine's own; no live shadow (this process sees none of the fleet's labels) and
        no local promotion (the instance publishes it; every instance applies it through
        ``fleet.follower``). Fewer than ``min_samples`` labelled executions to screen on: nothing is
        generated (a candidate no one can judge is not promoted), said as
        ``version.regeneration_failed``. Returns ``(candidate, scores)``, or None: not generated, or
        refused by screening (``version.rejected``, as locally)."""
        from poet_runtime.learn.objectives import make_learner

        with self.lock:
            screen = make_learner(self.objective, self.parameters, self.settings, self.beta)
            screen.samples.extend(getattr(self.learner, "samples", ()))
            for sample in evidence.get("samples") or ():
                if type(sample) is dict and "label" in sample:
                    screen.observe(sample.get("output"), sample["label"])
                elif type(sample) in (list, tuple) and len(sample) == 3:
                    screen.samples.append((sample[0], bool(sample[1]), bool(sample[2])))
            if getattr(screen, "parameter", None) is None or not hasattr(screen, "value_for"):
                reason = "no decision parameter to compare on"
            elif len(screen.samples) < self.settings.min_samples:
                reason = (f"{len(screen.samples)} labelled executions to screen a candidate on "
                          f"(fewer than {self.settings.min_samples})")
            else:
                reason = None
            if reason is not None:
                self._decide("version.regeneration_failed", {"function": self.info.function_id,
                                                             "version": self.version, "reason": reason})
                return None
            candidate = self.regenerate(evidence)
            if candidate is None:
                return None
            current, proposed = self.shadow_scores(candidate, screen)
            scores = {"current": round(current, 6), "candidate": round(proposed, 6), "samples": len(screen.samples),
                      "evaluated_on": "labelled executions of the fleet"}
            if proposed + 1e-9 < current:
                self._reject(candidate, "worse than the current version on labelled executions of the fleet", scores)
                return None
            return candidate, scores

    def shadow_scores(self, candidate, learner=None) -> tuple[float, float]:
        """Objective of current and candidate on the recorded labelled executions (``learner``'s,
        else this engine's).

        Replays the decision each version's parameters make on the recorded scores;
        the generated code of both reads that parameter, so this is what it would answer.
        """
        screen = self.learner if learner is None else learner
        name = screen.parameter
        current = self._params().get(name, self.parameters.get(name, {}).get("default"))
        proposed = candidate.params().get(name, current)
        tuner = self.tuner
        if tuner is not None and tuner.names and len(tuner.samples) >= self.settings.min_samples:
            # Replayed through the function itself: both versions call the same logic with these values.
            live = self._params()
            mine = {n: live.get(n, tuner.parameters[n]["default"]) for n in tuner.names}
            theirs = {n: candidate.params().get(n, mine[n]) for n in tuner.names}
            return tuner.value_for(mine), tuner.value_for(theirs)
        if name is None:
            return 0.0, 0.0
        return screen.value_for(current), screen.value_for(proposed)

    def evaluate(self, candidate) -> bool | None:
        """Screen the candidate on the recorded labelled executions; then shadow it on live calls
        where that is safe (True promoted, False rejected, None: in shadow, decided later)."""
        if (getattr(self.learner, "parameter", None) is None or not hasattr(self.learner, "value_for")) and (
                self.tuner is None or not self.tuner.names):
            return self._reject(candidate, "no decision parameter to compare on", {})
        current, proposed = self.shadow_scores(candidate)
        scores = {"current": round(current, 6), "candidate": round(proposed, 6),
                  "samples": len(self.learner.samples), "evaluated_on": "recorded labelled executions"}
        if self.tuner is not None and len(self.tuner.samples) >= self.settings.min_samples:
            scores["replayed"] = len(self.tuner.samples)
        if proposed + 1e-9 < current:
            return self._reject(candidate, "worse than the current version on recorded labelled executions", scores)
        if self._can_shadow():
            from poet_runtime.learn.shadow import Shadow

            try:
                self.shadow = Shadow(self.state, candidate, self.settings.shadow_samples)
            except Exception as error:  # a candidate that cannot even load is no candidate
                return self._reject(candidate, f"does not load: {type(error).__name__}: {error}", scores)
            self.shadow.install()
            self._set_status(candidate.number, "shadow", scores=scores)
            self._decide("version.shadow", {"function": self.info.function_id, "version": candidate.number,
                                            "previous": self.version, "objective": self.objective,
                                            "reason": "at least as good on recorded labelled executions; now "
                                                      "running beside the current version on live calls",
                                            "needed": self.settings.shadow_samples, "scores": scores})
            return None
        return self._promote(candidate, scores)

    def _can_shadow(self) -> bool:
        """Live shadow runs repeat the user's logic: only for pure domains and synchronous functions."""
        return self.pure and not self.state.is_async and self.settings.shadow_samples > 0

    def _finish_shadow(self, cause: str | None) -> None:
        shadow, self.shadow = self.shadow, None
        shadow.uninstall()
        scores = {**shadow.scores(self.objective, self.beta, self.settings), "evaluated_on": "live calls in shadow"}
        if scores["candidate"] + 1e-9 < scores["current"]:
            self._reject(shadow.candidate, "worse than the current version on live calls in shadow", scores)
        else:
            self._promote(shadow.candidate, scores)

    def _promote(self, candidate, scores: dict) -> bool:
        previous = self.version
        # What learning found since the candidate was generated carries over to it.
        declared = candidate.metadata.get("parameters") or {}
        learned = {name: value for name, value in self._params().items() if name in declared}
        if learned:
            self.store.update_json(candidate.number, "params.json", {**candidate.params(), **learned})
        self._set_status(candidate.number, "current", scores=scores)
        self._set_status(previous, "superseded")
        self.store.set_current(candidate.number)
        self._reload()
        self.probation = {"version": candidate.number, "previous": previous}
        self.monitor.restart(scores["candidate"])
        self._decide("version.promoted", {"function": self.info.function_id, "version": candidate.number,
                                          "previous": previous, "objective": self.objective,
                                          "reason": "at least as good as current", "scores": scores})
        return True

    def _reject(self, candidate, reason: str, scores: dict) -> bool:
        self._set_status(candidate.number, "rejected", reason=reason, scores=scores)
        self._decide("version.rejected", {"function": self.info.function_id, "version": candidate.number,
                                          "previous": self.version, "objective": self.objective,
                                          "reason": reason, "scores": scores})
        return False

    def rollback_promoted(self, evidence: dict) -> None:
        bad, previous = self.probation["version"], self.probation["previous"]
        self._set_status(bad, "rejected", reason="rolled back: degraded after promotion")
        self._set_status(previous, "current")
        self.store.rollback(previous)
        self._reload()
        self.probation = None
        self.monitor.restart(evidence.get("baseline"))
        self._decide("version.rolled_back", {"function": self.info.function_id, "version": previous,
                                             "previous": bad, "objective": self.objective,
                                             "reason": "the promoted version degraded",
                                             "scores": {"rolling": evidence.get("rolling")}})

    def _set_status(self, number: int, status: str, **extra) -> None:
        version = self.store.get(number)
        if version is not None:
            self.store.update_json(number, "metadata.json", {**version.metadata, "status": status, **extra})

    def _reload(self) -> None:
        """Serve the store's current version in this process (the fast path is swapped)."""
        with self.state.lock:
            self.state.resolve(generate=False)
        self.version_loaded(self.state)


def _summary(learner) -> dict:
    ordered = sorted(getattr(learner, "durations", ()))
    if not ordered:
        return {}
    return {"p50": ordered[len(ordered) // 2], "p95": ordered[int(0.95 * (len(ordered) - 1))], "n": len(ordered)}
