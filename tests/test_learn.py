"""Learners on scripted feedback streams; degradation episodes; candidates, shadow, promotion, rollback."""

from __future__ import annotations

import json
import random
import time

import pytest

from learn_helpers import audit, detector_source, events_of, learn_env, module_dir, params  # noqa: F401
from poet_runtime.learn import config
from poet_runtime.learn.monitor import Monitor
from poet_runtime.learn.objectives import CostLearner, LabelledLearner, LatencyLearner

THRESHOLD = {"threshold": {"default": 0.9, "min": 0.0, "max": 1.0, "description": ""}}


def _stream(learner, rng, n, label_of, threshold_of):
    value = None
    for _ in range(n):
        score = rng.random()
        value = threshold_of()
        learner.observe({"drift_detected": score > value, "score": score}, label_of(score, rng))
        proposal = learner.propose({"threshold": value})
        if proposal:
            holder["threshold"] = proposal["threshold"]
    return holder["threshold"]


holder: dict = {}


def _learn(objective, start, label_of, n=300, seed=1, beta=1.0):
    settings = config.LearnSettings()
    learner = LabelledLearner(objective, {"threshold": {**THRESHOLD["threshold"], "default": start}}, settings, beta)
    holder["threshold"] = start
    return _stream(learner, random.Random(seed), n, label_of, lambda: holder["threshold"])


def test_accuracy_learner_finds_the_boundary():
    learned = _learn("accuracy", 0.9, lambda s, rng: s > 0.4)
    assert abs(learned - 0.4) < 0.03


def calibrated(score, rng):
    return rng.random() < score  # P(positive | score) = score


def test_precision_learner_raises_the_threshold_and_recall_learner_lowers_it():
    assert _learn("precision", 0.3, calibrated, n=400) > 0.6  # precision subject to recall >= 0.5: ~0.71
    assert _learn("recall", 0.6, calibrated, n=400) < 0.2  # recall subject to precision >= 0.5: as low as allowed


def test_alert_quality_favours_recall_with_beta_2_but_stays_in_range():
    learned = _learn("alert_quality", 0.9, calibrated, n=400, beta=2.0)
    accuracy = _learn("accuracy", 0.9, calibrated, n=400)
    assert 0.0 <= learned < accuracy


def test_learned_values_never_leave_the_declared_range():
    settings = config.LearnSettings()
    alpha = {"alpha": {"default": 0.05, "min": 0.0001, "max": 0.5, "description": ""}}
    learner = LabelledLearner("accuracy", alpha, settings)
    rng, value = random.Random(2), 0.05
    for _ in range(200):
        p = rng.random()
        learner.observe({"drift_detected": p < value, "p_value": p}, p < 0.8)  # wants alpha 0.8 > max
        value = learner.propose({"alpha": value}).get("alpha", value)
        assert 0.0001 <= value <= 0.5
    assert value == 0.5


def test_without_a_score_the_threshold_is_nudged_by_false_positives():
    settings = config.LearnSettings()
    learner = LabelledLearner("accuracy", THRESHOLD, settings)
    value = 0.5
    for _ in range(40):
        learner.observe({"drift_detected": True}, False)
        value = learner.propose({"threshold": value}).get("threshold", value)
    assert value > 0.5 and value <= 1.0


def test_latency_learner_sets_a_timeout_from_measured_durations():
    settings = config.LearnSettings()
    parameters = {"timeout_s": {"default": 2.0, "min": 0.001, "max": 3600.0},
                  "retries": {"default": 0, "min": 0, "max": 10},
                  "retry_base_delay_s": {"default": 0.1, "min": 0.0, "max": 10.0}}
    learner, current = LatencyLearner("latency", parameters, settings), {}
    rng = random.Random(4)
    for _ in range(100):
        duration = 30.0 if rng.random() < 0.1 else 1.0
        learner.observe_execution({"status": "ok", "phase_ms": {"operate": duration}, "metrics": {}})
        current.update(learner.propose(current))
    assert 0.001 <= current["timeout_s"] < 0.01 and current["retries"] == 1
    assert current["retry_base_delay_s"] <= current["timeout_s"]


def test_cost_learner_lowers_retries_when_most_calls_fail_anyway():
    settings = config.LearnSettings(window=10)
    learner = CostLearner("cost", {"retries": {"default": 2, "min": 0, "max": 10}}, settings)
    current = {"retries": 2}
    for i in range(60):
        learner.observe_execution({"status": "error" if i % 5 else "ok"})
        current.update(learner.propose(current))
    assert current["retries"] == 0


def test_degradation_is_reported_once_per_episode():
    monitor = Monitor("accuracy", config.LearnSettings(window=10))
    verdicts = []
    for ok in [True] * 30 + [False] * 40 + [True] * 30 + [False] * 40:
        verdict = monitor.add(ok, True)
        if verdict:
            verdicts.append(verdict)
    assert verdicts == ["degraded", "recovered", "degraded"]


# -- end to end through the runtime --------------------------------------------------------


def _drive(module, rng, n, label_of):
    for _ in range(n):
        score = rng.random()
        result = module.detect(score)
        module.detect.feedback(label=label_of(score, result), comments=None)


def test_learning_moves_the_parameter_live_with_an_audit_trail(learn_env, module_dir):
    module = module_dir("lr_live", detector_source(threshold=0.9))
    _drive(module, random.Random(1), 120, lambda s, r: s > 0.4)
    learned = params(learn_env, "lr_live.detect")["threshold"]
    assert abs(learned - 0.4) < 0.05
    entries = audit(learn_env, "lr_live.detect")
    assert entries and entries[0]["old"] == 0.9 and entries[-1]["new"] == learned
    assert all(0.0 <= e["new"] <= 1.0 and e["event_id"].startswith("ev-") and e["evidence"] for e in entries)
    updates = events_of(learn_env, "learning.updated")
    assert [e["id"] for e in updates] == [e["event_id"] for e in entries]
    # Applied live: the default the function uses now is the learned one.
    assert module.detect((learned + 0.9) / 2)["drift_detected"] is True


def test_degradation_regenerates_a_candidate_that_is_promoted_then_rolled_back(learn_env, module_dir):
    from poet_runtime.learn import engine_for
    from poet_runtime.store import FunctionStore

    config.override(window=20)
    module = module_dir("lr_cycle", detector_source(threshold=0.9))
    rng = random.Random(5)
    _drive(module, rng, 100, lambda s, r: s > 0.4)
    engine = engine_for(module.detect)
    assert "learning.degraded" not in engine.decisions
    for _ in range(200):  # the world changed: drive until the engine has acted on it
        _drive(module, rng, 1, lambda s, r: s > 0.8)
        if "version.promoted" in engine.decisions:
            break
    decisions = [d for d in engine.decisions if d != "learning.updated"]
    # ml_monitoring is pure: the candidate ran in shadow beside live calls before its promotion.
    assert decisions == ["learning.degraded", "version.candidate", "version.shadow", "version.promoted"]
    kinds = [e["type"] for e in events_of(learn_env) if e["type"].startswith(("learning.degraded", "version."))]
    assert kinds == decisions  # every decision is a durable event
    store = FunctionStore(learn_env / "lr_cycle.detect", "lr_cycle:detect")
    assert store.current_number() == 2
    v2 = store.get(2)
    assert v2.metadata["status"] == "current" and v2.metadata["parent"] == 1
    assert store.get(1).metadata["status"] == "superseded"
    evidence = v2.metadata["evidence"]
    assert evidence["recent_failures"] and evidence["objective"] == "accuracy" and evidence["trend"]
    # The built-in generator baked the learned value in as the new default.
    baked = v2.metadata["parameters"]["threshold"]["default"]
    assert any(abs(entry["new"] - baked) < 1e-9 for entry in audit(learn_env, "lr_cycle.detect", 1))
    # Values learned while v2 ran in shadow carried over when it was promoted.
    assert params(learn_env, "lr_cycle.detect", 2)["threshold"] == params(learn_env, "lr_cycle.detect", 1)["threshold"]
    assert module.detect.__poet__.version_number == 2  # this process serves the promoted version
    # A quiet period: answers confirmed; no new episode.
    live = lambda: params(learn_env, "lr_cycle.detect", 2)["threshold"]  # noqa: E731
    _drive(module, rng, 40, lambda s, r: s > live())
    assert engine.decisions.count("learning.degraded") == 1
    # Now the promoted version goes wrong: every answer is contradicted.
    for _ in range(100):
        _drive(module, rng, 1, lambda s, r: not r["drift_detected"])
        if "version.rolled_back" in engine.decisions:
            break
    rolled = events_of(learn_env, "version.rolled_back")
    assert len(rolled) == 1 and rolled[0]["payload"]["version"] == 1 and rolled[0]["payload"]["previous"] == 2
    assert engine.decisions.count("learning.degraded") == 2  # one report per episode
    assert store.current_number() == 1 and store.get(2).metadata["status"] == "rejected"
    assert module.detect.__poet__.version_number == 1


def test_a_worse_candidate_is_rejected_with_its_reason(learn_env, module_dir):
    from poet_runtime.learn import engine_for

    module = module_dir("lr_reject", detector_source(threshold=0.9))
    _drive(module, random.Random(7), 60, lambda s, r: s > 0.4)
    engine = engine_for(module.detect)
    current = engine.store.current()
    candidate = engine.store.create(current.code(), {"threshold": 0.97}, {"observations": {}, "audit": []},
                                    {**current.metadata, "status": "candidate"}, make_current=False)
    assert engine.evaluate(candidate) is False
    assert engine.store.current_number() == 1
    metadata = engine.store.get(candidate.number).metadata
    assert metadata["status"] == "rejected" and "worse" in metadata["reason"]
    assert metadata["scores"]["candidate"] < metadata["scores"]["current"]
    [rejected] = events_of(learn_env, "version.rejected")
    assert rejected["payload"]["version"] == candidate.number
    # Rolling back by hand stays available.
    engine.store.rollback(1)
    assert engine.store.current_number() == 1


def test_a_candidate_whose_code_answers_worse_is_rejected_in_shadow_on_live_calls(learn_env, module_dir):
    """Replaying recorded scores cannot see a code change; running the candidate beside live calls does."""
    from poet_runtime.learn import engine_for

    config.override(shadow_samples=15)
    module = module_dir("lr_shadow", detector_source(threshold=0.9))
    rng = random.Random(11)
    _drive(module, rng, 60, lambda s, r: s > 0.4)
    engine = engine_for(module.detect)
    current = engine.store.current()
    # Same parameters (the replay screen passes), but the candidate's code answers the opposite: its
    # operate_prime turns the logic's answer around (as a transformed or tampered version might).
    flipped = current.code().replace(
        "    return logic(*args, **kwargs)",
        "    answer = logic(*args, **kwargs)\n    return {**answer, 'drift_detected': not answer['drift_detected']}")
    assert flipped != current.code()
    candidate = engine.store.create(flipped, current.params(), {"observations": {}, "audit": []},
                                    {**current.metadata, "status": "candidate"}, make_current=False)
    assert engine.evaluate(candidate) is None  # in shadow now
    assert engine.store.get(candidate.number).metadata["status"] == "shadow"
    answers = []
    for _ in range(40):
        score = rng.random()
        answers.append((score, module.detect(score)))
        module.detect.feedback(label=score > 0.4)
        if "version.rejected" in engine.decisions:
            break
    # Callers only ever saw the current version's answers (the flipped candidate's would be mostly wrong).
    agree = sum(answer["drift_detected"] == (score > 0.4) for score, answer in answers) / len(answers)
    assert agree > 0.8
    metadata = engine.store.get(candidate.number).metadata
    assert metadata["status"] == "rejected" and metadata["reason"] == "worse than the current version on live calls in shadow"
    assert metadata["scores"]["candidate"] < metadata["scores"]["current"] and metadata["scores"]["samples"] == 15
    assert engine.store.current_number() == current.number and engine.shadow is None
    assert module.detect.__poet__.cell[0].__name__ != "shadowed"  # the shadow is off the call path again


@pytest.mark.slow
def test_latency_objective_cuts_the_slow_tail(learn_env, module_dir):
    from poet_runtime.learn import sink

    config.override(latency_samples=40)
    module = module_dir("lr_latency", '''\
import random
import time

from poet_runtime import poet

RNG = random.Random(3)


@poet(domain="api_operations", optimize_for="latency", timeout=2.0, policy="trusted")
def fetch(key: str) -> dict:
    time.sleep(0.04 if RNG.random() < 0.15 else 0.001)
    return {"status": "success", "key": key}
''')

    def p95(n):
        durations = []
        for i in range(n):
            start = time.perf_counter()
            module.fetch(str(i))
            durations.append(time.perf_counter() - start)
        sink.flush()
        return sorted(durations)[int(0.95 * n)]

    before = p95(80)
    learned = params(learn_env, "lr_latency.fetch")
    assert 0.001 <= learned["timeout_s"] < 0.02, learned
    after = p95(80)
    assert after < before / 2, (before, after)
    assert any(e["parameter"] == "timeout_s" for e in audit(learn_env, "lr_latency.fetch"))


@pytest.mark.parametrize("garbage, field", [
    (b"\x00\x01 not json {", None),
    (b'["a", "list"]', None),
    (b'{"audit": "not a list", "observations": {}}', "audit"),
])
def test_garbage_in_state_json_is_reported_once_and_learning_rebuilds_it(learn_env, module_dir, caplog, garbage,
                                                                         field):
    module = module_dir("lr_state", detector_source(threshold=0.9))
    module.detect(0.5)
    state_path = learn_env / "lr_state.detect" / "v1" / "state.json"
    state_path.write_bytes(garbage)
    with caplog.at_level("WARNING", logger="poet_runtime"):
        _drive(module, random.Random(1), 120, lambda s, r: s > 0.4)
    learned = params(learn_env, "lr_state.detect")["threshold"]
    assert abs(learned - 0.4) < 0.05  # learning went on
    state = json.loads(state_path.read_text())  # rebuilt: valid again, with the audit of what was learned
    assert type(state) is dict and state["audit"] and state["audit"][-1]["new"] == learned
    said = [m for m in caplog.messages if "state.json" in m]
    assert len(said) == 1 and "rebuilds" in said[0] and (field is None or field in said[0]), caplog.messages
    pending = learn_env / "events" / "pending"
    assert not list(pending.glob("fb-*")), "feedback learned from stays pending"
    assert len(list((learn_env / "events" / "processed").glob("fb-*"))) == 120


def test_feedback_that_could_not_be_learned_is_never_consumed(learn_env, module_dir, caplog):
    from poet_runtime.learn import engine_for

    module = module_dir("lr_unlearned", detector_source(threshold=0.9))
    module.detect(0.5)
    folder = learn_env / "lr_unlearned.detect" / "v1"
    (folder / "state.json").unlink()
    (folder / "state.json").mkdir()  # learning cannot write its audit there
    (folder / "state.json" / "keep").write_text("x")
    with caplog.at_level("WARNING", logger="poet_runtime"):
        _drive(module, random.Random(3), 30, lambda s, r: s > 0.4)
    pending = learn_env / "events" / "pending"
    stuck = list(pending.glob("fb-*"))
    assert stuck, "feedback whose learning failed was consumed"
    assert len([m for m in caplog.messages if "stays pending" in m]) == 1, caplog.messages
    assert "Traceback" not in caplog.text
    # Once the version can be written again, the feedback is learned and only then consumed.
    (folder / "state.json" / "keep").unlink()
    (folder / "state.json").rmdir()
    assert engine_for(module.detect).catch_up() == len(stuck)
    assert not list(pending.glob("fb-*"))
    assert len(list((learn_env / "events" / "processed").glob("fb-*"))) == 30
