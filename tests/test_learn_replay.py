"""Issue 14: parameters are tuned through the function itself (replaying labelled calls with
candidate values), direction and scale discovered, judged on held-back labels; where calls
cannot be replayed, the decision parameter is not learned and ``status`` says so."""

from __future__ import annotations

import json
import math
import random

from learn_helpers import audit, events_of, learn_env, module_dir, params  # noqa: F401
from poet_runtime.learn import config
from poet_runtime.learn.replay import ReplayTuner


def _tuner(function, parameters, objective="accuracy", **overrides):
    return ReplayTuner(function, parameters, objective, config.LearnSettings(**overrides))


def _feed(tuner, rng, n, make, truth, noise=0.1):
    for i in range(n):
        args = make(rng)
        tuner.add(f"abc-{i + 1}", args, {}, truth(*args) != (rng.random() < noise))


def _tune(tuner):
    """One tuning from the declared defaults: (the values it would put in force, its evidence)."""
    values = {name: tuner.parameters[name]["default"] for name in tuner.names}
    changes, evidence = tuner.tune(values)
    return {**values, **changes}, evidence


def test_the_parameter_is_learned_on_the_scale_the_function_compares_it_on():
    # The issue's own shape: shift > threshold, the output reports 1 - e^-shift.
    def detect(shift, threshold=0.25):
        return {"drift_detected": shift > threshold, "score": 1 - math.exp(-shift)}

    tuner = _tuner(detect, {"threshold": {"default": 0.25, "min": 0.0, "max": 1.0}})
    _feed(tuner, random.Random(3), 100, lambda r: (r.uniform(0, 1),), lambda s: s > 0.45)
    learned, evidence = _tune(tuner)
    assert abs(learned["threshold"] - 0.45) < 0.04  # not 0.36, the boundary in the score's scale
    assert evidence["method"] == "replay" and evidence["held_back"] >= 20 and evidence["train"] >= 60
    assert evidence["held_back_candidate"] > evidence["held_back_start"]
    assert evidence["decision"].startswith("promoted")


def test_a_reversed_direction_and_a_log_scale_range_are_found():
    def drift(z, alpha=0.3):
        p = math.erfc(z / math.sqrt(2))
        return {"drift_detected": p < alpha, "score": 1 - p}

    boundary = math.erfc(3.0 / math.sqrt(2))  # 0.0027: far below a linear grid's first step over [1e-4, 0.5]
    tuner = _tuner(drift, {"alpha": {"default": 0.3, "min": 0.0001, "max": 0.5}})
    _feed(tuner, random.Random(5), 120, lambda r: (r.uniform(0, 5),), lambda z: z > 3.0)
    learned, _ = _tune(tuner)
    assert 0.0015 < learned["alpha"] < 0.005, (learned, boundary)
    assert drift(3.2, **learned)["drift_detected"] and not drift(2.8, **learned)["drift_detected"]


def test_an_integer_count_is_tuned_as_an_integer():
    def burst(count, window=50):
        return {"alert": count >= window, "score": count / 200}

    tuner = _tuner(burst, {"window": {"default": 50, "min": 1, "max": 100000}})
    _feed(tuner, random.Random(7), 100, lambda r: (r.randint(0, 40),), lambda c: c >= 12)
    learned, _ = _tune(tuner)
    assert learned["window"] == 12 and isinstance(learned["window"], int)


def test_nothing_is_promoted_that_does_not_beat_the_start_on_held_back_labels():
    def detect(x, threshold=0.5):
        return {"drift_detected": x > threshold}

    tuner = _tuner(detect, {"threshold": {"default": 0.5, "min": 0.0, "max": 1.0}})
    rng = random.Random(9)
    for i in range(100):  # labels are coin flips: whatever fits the tuning share is noise
        tuner.add(f"abc-{i + 1}", (rng.random(),), {}, rng.random() < 0.5)
    changes, evidence = tuner.tune({"threshold": 0.5})
    if changes:  # only if it really beat the start on the labels it was not tuned on
        assert evidence["held_back_candidate"] > evidence["held_back_start"]
    else:
        assert evidence["decision"].startswith(("not promoted", "kept"))
    # A value in force that is worse than the start on held-back labels goes back to the start.
    good = _tuner(detect, {"threshold": {"default": 0.5, "min": 0.0, "max": 1.0}})
    for i in range(60):
        x = rng.random()
        good.add(f"abc-{i + 1}", (x,), {}, x > 0.5)
    changes, evidence = good.tune({"threshold": 0.95})
    assert changes == {"threshold": 0.5} or evidence["held_back_candidate"] > evidence["held_back_start"]


def test_replays_call_the_caller_positional_value_replaced_and_failures_are_skipped():
    calls = []

    def detect(x, threshold=0.5):
        calls.append((x, threshold))
        if x < 0:
            raise ValueError("no")
        return {"drift_detected": x > threshold}

    tuner = _tuner(detect, {"threshold": {"default": 0.5, "min": 0.0, "max": 1.0}}, min_samples=2, learn_every=1)
    tuner.add("abc-1", (0.7, 0.9), {}, True)  # the caller passed the threshold positionally
    tuner.add("abc-2", (-1.0,), {}, False)
    assert tuner.value({"threshold": 0.6}, list(tuner.samples)) == 1.0  # the failing replay says nothing
    assert (0.7, 0.6) in calls and (0.7, 0.9) not in calls


# -- through the runtime ----------------------------------------------------------------------

ISSUE = '''\
import math

from poet_runtime import poet

SEEN = []


@poet(domain="ml_monitoring", optimize_for="accuracy", policy="trusted")
def detect_drift(shift: float, threshold: float = 0.25) -> dict:
    return {{"drift_detected": shift > threshold, "score": 1 - math.exp(-shift)}}


@poet(domain="api_operations", optimize_for="accuracy", policy="trusted")
def slow(latency_ms: float, timeout: float = 5.0) -> dict:
    return {{"alert": latency_ms > timeout}}


@poet(domain="api_operations", optimize_for="accuracy", policy="trusted")
def slow_logged(latency_ms: float, timeout: float = 5.0) -> dict:
    SEEN.append(latency_ms)
    return {{"alert": latency_ms > timeout}}
'''


def test_an_enhanced_function_learns_through_itself_and_replays_leave_no_trace(learn_env, module_dir):
    from poet_runtime.learn import config, engine_for, sink

    config.override(replay_seconds=60.0)  # what is learned must not depend on how loaded the machine is
    module = module_dir("rp_issue", ISSUE.format())
    rng = random.Random(11)
    calls = 0
    for _ in range(100):
        shift = rng.uniform(0, 1)
        module.detect_drift(shift)
        calls += 1
        module.detect_drift.feedback(label=(shift > 0.45) != (rng.random() < 0.1))
    learned = params(learn_env, "rp_issue.detect_drift")["threshold"]
    assert abs(learned - 0.45) < 0.05, learned  # the output-only learner settled near 0.36
    engine = engine_for(module.detect_drift)
    assert engine.tuner is not None and engine.tuner.replays > 1000
    state = json.loads((learn_env / "rp_issue.detect_drift" / "v1" / "state.json").read_text())
    last = state["learning"]["last_tuning"]
    assert state["learning"]["replay"] is True and state["learning"]["not_learnable"] == {}
    assert last["method"] == "replay" and "held_back_start" in last and "decision" in last
    entries = audit(learn_env, "rp_issue.detect_drift")
    assert entries and all(e["evidence"]["held_back_candidate"] > e["evidence"]["held_back_start"] for e in entries)
    # Thousands of replays, yet only the caller's own calls were recorded.
    sink.flush()
    executions = [e for e in events_of(learn_env, "function.execution")
                  if e["payload"]["function"] == "rp_issue:detect_drift"]
    assert len(executions) == calls
    assert module.detect_drift.__poet__.stats.enhanced_calls == calls
    # The learned value is in force for callers that do not pass it.
    assert module.detect_drift(learned + 0.02)["drift_detected"] is True


def test_pure_by_the_purity_check_replays_impure_does_not_and_status_says_so(learn_env, module_dir):
    from poet_runtime.commands.status import _learning
    from poet_runtime.learn import engine_for
    from poet_runtime.store import FunctionStore

    module = module_dir("rp_issue", ISSUE.format())
    rng = random.Random(13)
    for _ in range(40):
        latency = rng.uniform(0, 100)
        module.slow(latency)
        module.slow.feedback(label=latency > 40)
        module.slow_logged(latency)
        module.slow_logged.feedback(label=latency > 40)
    pure = engine_for(module.slow)
    assert pure.tuner is not None and pure.not_learnable == {}  # api_operations is not pure; the function is
    assert 30 < params(learn_env, "rp_issue.slow")["timeout"] < 50
    impure = engine_for(module.slow_logged)
    assert impure.tuner is None and "timeout" in impure.not_learnable
    assert "not pure" in impure.not_learnable["timeout"]
    assert len(module.SEEN) == 40  # never replayed: the function writes to a global
    assert params(learn_env, "rp_issue.slow_logged").get("timeout", 5.0) == 5.0  # no wrong value learned
    assert not [e for e in events_of(learn_env, "learning.updated")
                if e["payload"]["function"] == "rp_issue:slow_logged" and e["payload"]["parameter"] == "timeout"]
    current = FunctionStore(learn_env / "rp_issue.slow_logged", "rp_issue:slow_logged").current()
    assert _learning(current) == "; timeout: not learnable without inputs"
    assert _learning(FunctionStore(learn_env / "rp_issue.slow", "rp_issue:slow").current()) == ""


def test_with_replay_off_the_output_only_learner_runs_as_before(learn_env, module_dir):
    from poet_runtime.learn import engine_for

    config.override(replay=False)
    module = module_dir("rp_issue", ISSUE.format())
    rng = random.Random(17)
    for _ in range(60):
        shift = rng.uniform(0, 1)
        module.detect_drift(shift)
        module.detect_drift.feedback(label=shift > 0.45)
    engine = engine_for(module.detect_drift)
    assert engine.tuner is None and engine.not_learnable == {}
    learned = params(learn_env, "rp_issue.detect_drift")["threshold"]
    assert abs(learned - (1 - math.exp(-0.45))) < 0.05  # the boundary in the score's scale: the old way


def _policy(tmp_path, record_inputs: bool) -> str:
    path = tmp_path / f"policy_{record_inputs}.toml"
    path.write_text(f'version = 1\n[defaults]\nbackend = "none"\nrecord_inputs = {str(record_inputs).lower()}\n',
                    encoding="utf-8")
    return str(path)


DISK = '''\
from poet_runtime import poet


@poet(domain="ml_monitoring", optimize_for="accuracy", policy={policy!r})
def detect(shift: float, threshold: float = 0.9) -> dict:
    return {{"drift_detected": shift > threshold, "score": shift / 3}}
'''


def test_inputs_lost_from_memory_are_replayed_from_disk_only_where_record_inputs_allows(learn_env, module_dir,
                                                                                        tmp_path):
    from poet_runtime.learn import config, engine_for, sink

    config.override(replay_seconds=60.0)  # what is learned must not depend on how loaded the machine is
    for allowed in (True, False):
        name = f"rp_disk_{str(allowed).lower()}"
        module = module_dir(name, DISK.format(policy=_policy(tmp_path, allowed)))
        rng = random.Random(19)
        engine = None
        for _ in range(30):
            shift = rng.uniform(0, 1)
            module.detect(shift)
            engine = engine or engine_for(module.detect)
            sink.flush()
            engine.info.inputs.clear()  # as if the call were made by another process
            module.detect.feedback(label=shift > 0.5)
        assert engine.tuner is not None and engine.learner.seen == 30
        assert len(engine.tuner.samples) == (30 if allowed else 0)
        learned = params(learn_env, f"{name}.detect").get("threshold", 0.9)
        if allowed:
            assert abs(learned - 0.5) < 0.1
        else:
            assert learned == 0.9  # nothing to replay: nothing learned, and no value from the output's look


def test_a_tuning_out_of_time_keeps_the_best_so_far_behind_the_same_gate():
    def detect(x, threshold=0.9):
        return {"drift_detected": x > threshold}

    tuner = _tuner(detect, {"threshold": {"default": 0.9, "min": 0.0, "max": 1.0}}, replay_seconds=0.0)
    rng = random.Random(23)
    for i in range(50):
        x = rng.random()
        tuner.add(f"abc-{i + 1}", (x,), {}, x > 0.4)
    changes, evidence = tuner.tune({"threshold": 0.9})
    assert evidence["out_of_time"] is True and evidence["candidates"] < 20
    assert not changes or evidence["held_back_candidate"] > evidence["held_back_start"]
