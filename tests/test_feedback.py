"""Feedback: validation (nothing recorded on refusal), fn.feedback, rate limits, across processes, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from learn_helpers import REPO, detector_source, events_of, learn_env, module_dir, run_child  # noqa: F401


def _pending(home):
    folder = home / "events" / "pending"
    return sorted(p.name for p in folder.glob("fb-*")) if folder.is_dir() else []


@pytest.mark.parametrize("call, message", [
    (lambda f, eid: f("not-an-id", label=True), "not an execution id"),
    (lambda f, eid: f(12345, label=True), "not an execution id"),
    (lambda f, eid: f("0123456789ab-99999999", label=True), "unknown execution"),
    (lambda f, eid: f(eid, label=[1, 2]), "label"),
    (lambda f, eid: f(eid, rating=9), "rating"),
    (lambda f, eid: f(eid, rating="good"), "rating"),
    (lambda f, eid: f(eid, comments="x" * 5000), "comments"),
    (lambda f, eid: f(eid, suggestions=["y" * 5000]), "suggestion"),
    (lambda f, eid: f(eid, metrics={"ms": "fast"}), "metrics"),
    (lambda f, eid: f(eid), "nothing to record"),
    (lambda f, eid: f(eid, label=True, feedback_type="praise"), "feedback_type"),
    (lambda f, eid: f(eid, label=float("nan")), "label"),
    (lambda f, eid: f(eid, label=float("inf")), "label"),
    (lambda f, eid: f(eid, rating=float("nan")), "rating"),
    (lambda f, eid: f(eid, metrics={"a": float("nan")}), "metrics.a"),
    (lambda f, eid: f(eid, metrics={"ms": 3.0, "b": float("-inf")}), "metrics.b"),
])
def test_invalid_feedback_is_refused_and_nothing_is_recorded(learn_env, module_dir, call, message):
    import poet_runtime
    from poet_runtime.learn.feedback import FeedbackError

    module = module_dir("fb_invalid", detector_source())
    module.detect(0.5)
    execution_id = poet_runtime.last_execution().execution_id
    with pytest.raises(FeedbackError, match=message):
        call(poet_runtime.feedback, execution_id)
    assert _pending(learn_env) == [] and events_of(learn_env, "function.feedback") == []


def test_fn_feedback_targets_the_last_execution_and_is_stored(learn_env, module_dir):
    import poet_runtime
    from poet_runtime.learn import models

    module = module_dir("fb_last", detector_source())
    module.detect(0.1)
    module.detect(0.95)
    wanted = poet_runtime.last_execution().execution_id
    event_id = module.detect.feedback(label=True, rating=4, comments="right call", suggestions=["keep it"],
                                      metrics={"review_s": 3.5})
    [event] = events_of(learn_env, "function.feedback")
    models.validate_event(event)
    assert event["id"] == event_id and event["correlation_id"] == wanted
    payload = event["payload"]
    assert payload["execution_id"] == wanted and payload["label"] is True and payload["feedback_type"] == "user"
    assert payload["function"] == "fb_last:detect" and payload["version"] == 1
    # Learned from at once (the function lives here): moved to processed/.
    assert _pending(learn_env) == []
    assert list((learn_env / "events" / "processed").glob("fb-*"))


def test_rate_limit_per_function(learn_env, module_dir):
    import poet_runtime
    from poet_runtime.learn import config
    from poet_runtime.learn.feedback import FeedbackError

    config.override(feedback_rate=0.01, feedback_burst=2)
    module = module_dir("fb_rate", detector_source())
    ids = []
    for _ in range(3):
        module.detect(0.5)
        ids.append(poet_runtime.last_execution().execution_id)
    poet_runtime.feedback(ids[0], label=True)
    poet_runtime.feedback(ids[1], label=True)
    with pytest.raises(FeedbackError, match="too much feedback"):
        poet_runtime.feedback(ids[2], label=True)
    assert len(events_of(learn_env, "function.feedback")) == 2


CHILD = '''
import sys
sys.path.insert(0, {folder!r})
import poet_runtime
poet_runtime.enable(hook=False)
import fb_cross
for score in (0.2, 0.5, 0.8):
    fb_cross.detect(score)
    print(poet_runtime.last_execution().execution_id, flush=True)
'''


@pytest.mark.slow
def test_feedback_across_processes_is_correlated_and_learned_by_the_next_process(learn_env, module_dir, tmp_path):
    from poet_runtime.learn import engine_for

    module_dir.folder.joinpath("fb_cross.py").write_text(detector_source(), encoding="utf-8")
    child = run_child(CHILD.format(folder=str(module_dir.folder)), learn_env, tmp_path / "poet_cache")
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    first, second, third = out.split()
    # This process never ran the function: the execution is found in the durable events.
    import poet_runtime

    poet_runtime.feedback(first, label=False, comments="no drift there")
    # ... and from another process, through the command line.
    result = subprocess.run([sys.executable, "-m", "poet_runtime", "feedback", second, "--label", "true",
                             "--comments", "missed", "--root", str(learn_env)], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    result = subprocess.run([sys.executable, "-m", "poet_runtime", "feedback", "0123456789ab-1", "--label", "true",
                             "--root", str(learn_env)], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 1 and "unknown execution" in result.stderr
    feedback = events_of(learn_env, "function.feedback")
    assert [e["payload"]["execution_id"] for e in feedback] == [first, second]
    assert len(_pending(learn_env)) == 2  # nobody here has learned from them yet
    module = module_dir("fb_cross", detector_source())
    module.detect(0.3)  # loads the function: its learner catches up on pending feedback
    assert _pending(learn_env) == []
    engine = engine_for(module.detect)
    assert engine.learner.seen == 2 and list(engine.comments) == ["no drift there", "missed"]
