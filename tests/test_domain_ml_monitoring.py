"""ml_monitoring's statistical evidence, through the real runtime: data quality, KS/PSI/KL beside the
function's own verdict, advisories when they disagree, a rolling reference for streams of batches.

Each test runs in-process (verified built-in code under ``trusted``) and in the RestrictedPython worker
(the shipped default policy with ``trust = []``, so the same built-in code is not trusted and runs
sandboxed). The same function under the ``base`` domain checks and emits none of it.
"""

from __future__ import annotations

import random
import re

import poet_runtime
from poet_runtime import runtime
from poet_runtime.resources import load_facility

from domain_helpers import policy, domain_events  # noqa: F401  (fixtures)

load_facility()
from poet_sandbox import stats  # noqa: E402

GAP = '''\
import statistics
from poet_runtime import poet


@poet(domain="{domain}")
def detect_drift(current_data: list[float], reference_data: list[float], threshold: float = 3.0) -> dict:
    """The user's rule: drift when the means are more than `threshold` apart (far too lax)."""
    gap = abs(statistics.fmean(current_data) - statistics.fmean(reference_data))
    return {{"drift_detected": gap > threshold, "score": min(gap / 10.0, 1.0)}}
'''

STREAM = '''\
from poet_runtime import poet


@poet(domain="ml_monitoring")
def batch_alert(batch: list[float]) -> bool:
    """The user's rule: alert on any value above 100 (it never fires here)."""
    return max(batch) > 100
'''


def detail_of(item):
    """A note's detail: structured evidence stays a dict, in-process and from the worker."""
    assert isinstance(item["detail"], dict), item
    return item["detail"]


def samples(seed=3, shift=1.0, n_current=60, n_reference=80):
    rng = random.Random(seed)
    return ([rng.gauss(shift, 1.0) for _ in range(n_current)], [rng.gauss(0.0, 1.0) for _ in range(n_reference)])


def test_evidence_and_an_advisory_when_the_verdict_ignores_a_large_drift(policy, write_module, domain_events):
    current, reference = samples()
    module = write_module("mlm_gap", GAP.format(domain="ml_monitoring"))
    result = module.detect_drift(current, reference)
    assert result["drift_detected"] is False  # the function's own answer, unchanged
    record = poet_runtime.last_execution()
    assert record.status == "ok" and record.backend == policy, record
    kinds = [(item["kind"], item["field"]) for item in record.evidence]
    assert kinds == [("domain.advisory", "verdict"), ("domain.evidence", "two_sample")]
    expected = stats.ks_2samp(current, reference)
    assert expected["method"] == "exact" and expected["p_value"] < 1e-4  # 4800 cells: the exact distribution
    advisory, evidence = (detail_of(item) for item in record.evidence)
    assert evidence["reference"]["p_value"] == expected["p_value"]
    assert evidence["reference"]["ks_statistic"] == round(expected["statistic"], 12)
    assert evidence["reference"]["psi"] == round(stats.psi(current, reference), 12) > 0.25
    assert evidence["verdict"] is False and evidence["quality"]["score"] == 1.0
    assert advisory["says"] == "no drift" and advisory["test"] == "drift with a large effect"
    assert [event["type"] for event in domain_events] == ["domain.advisory", "domain.evidence"]
    assert domain_events[0]["version"] == 1 and domain_events[0]["execution_id"] == record.execution_id
    assert runtime.stats()["mlm_gap:detect_drift"].notes[("domain.advisory", "verdict")] == 1


def test_poor_data_quality_is_a_warning_and_counted(policy, write_module, domain_events):
    current, reference = samples(shift=0.0)
    current[::2] = [None] * len(current[::2])  # half the readings missing
    current[1] = float("inf")
    module = write_module("mlm_quality", GAP.format(domain="ml_monitoring"))
    module.detect_drift(current, reference)  # (the infinite reading makes the mean infinite: the logic says drift)
    warnings = [event for event in domain_events if event["type"] == "domain.warning"]
    assert len(warnings) == 1 and warnings[0]["field"] == "data_quality"
    report = warnings[0]["detail"]  # the report as data, from the worker as in-process
    assert report["score"] < 0.7
    assert report["samples"]["current_data"]["missing"] == 30 and report["samples"]["current_data"]["non_finite"] == 1
    assert runtime.stats()["mlm_quality:detect_drift"].notes[("domain.warning", "data_quality")] == 1


def test_a_stream_of_batches_is_tested_against_its_rolling_reference(policy, write_module, domain_events):
    rng = random.Random(9)
    module = write_module("mlm_stream", STREAM)
    for _ in range(3):
        assert module.batch_alert([rng.gauss(10.0, 1.0) for _ in range(40)]) is False
    first = [detail_of(e) for e in domain_events if e["type"] == "domain.evidence"]
    assert len(first) == 3 and not any(e["type"] == "domain.advisory" for e in domain_events)
    assert module.batch_alert([rng.gauss(14.0, 1.0) for _ in range(40)]) is False  # a shift the rule misses
    advisories = [detail_of(e) for e in domain_events if e["type"] == "domain.advisory"]
    assert len(advisories) == 1
    assert first[0].get("rolling") is None and first[2]["rolling"]["n_reference"] == 80  # two batches so far
    assert advisories[0]["says"] == "no drift" and advisories[0]["p_value"] < 0.001


def test_the_same_function_in_the_base_domain_checks_and_emits_none_of_it(poet_home, write_module, domain_events):
    current, reference = samples()
    module = write_module("mlm_base", GAP.format(domain="base"))
    assert module.detect_drift(current, reference)["drift_detected"] is False
    assert poet_runtime.last_execution().evidence == [] and domain_events == []
    code = next(poet_home.glob("mlm_base.detect_drift/v*/code.py")).read_text()
    assert "stats" not in code and "evidence" not in code
    ml_code = GAP.format(domain="ml_monitoring")
    module = write_module("mlm_ml", ml_code)
    module.detect_drift(current, reference)
    code = next(poet_home.glob("mlm_ml.detect_drift/v*/code.py")).read_text()
    assert re.search(r"from poet_sandbox import .*\bstats\b", code) and "domain.advisory" in code


def test_a_threshold_learned_on_the_ks_evidence_beats_a_lax_verdict_on_labelled_calls():
    from poet_runtime.learn import config
    from poet_runtime.learn.objectives import FeatureThreshold, evidence_feature

    rng = random.Random(4)
    learner = FeatureThreshold("accuracy", config.get(), "ks_statistic")
    held = []
    for index in range(160):
        drifted = rng.random() < 0.5
        current, reference = samples(seed=index, shift=rng.uniform(0.5, 1.5) if drifted else 0.0, n_current=50,
                                     n_reference=50)
        evidence = [{"kind": "domain.evidence", "field": "two_sample",
                     "detail": {"reference": stats.two_sample_evidence(current, reference)}}]
        verdict = {"drift_detected": False}  # the lax rule above never fires on these shifts
        if index >= 100:
            held.append((evidence, drifted))
        if index < 100:
            learner.observe(evidence, verdict, drifted)
    assert evidence_feature(held[0][0]) == held[0][0][0]["detail"]["reference"]["ks_statistic"]
    mine, own = learner.beats()
    assert mine > 0.8 and own < 0.65
    accuracy = sum(learner.predict(evidence) == label for evidence, label in held) / len(held)
    assert accuracy > 0.75 and 0.1 < learner.learned() < 0.5
    assert evidence_feature([{"kind": "domain.evidence", "field": "two_sample", "detail": "text"}]) is None
