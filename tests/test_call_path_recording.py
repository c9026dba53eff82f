"""Recording a call never fails the call, nor feedback, nor the rest of the batch.

Why: what the checks note during a call (``poet_sandbox.validate.note``: a mismatch, a domain's
evidence) is recorded with the call, and its detail is whatever the code passed. A detail JSON
cannot take (a cycle, an object whose ``__str__`` raises) made ``sink.flush`` raise: the
flusher dropped the whole batch of executions each round, and ``feedback()``, which flushes
first, raised to its caller. Now such a detail is written as its text, counted
(``sink.unencodable_details``) and said once. Real parts: a real @poet function run in process,
the real sink and journal; nothing mocked.
"""

from __future__ import annotations

import logging

import pytest

from learn_helpers import events_of, learn_env, module_dir  # noqa: F401

SOURCE = '''\
from poet_runtime import poet
from poet_sandbox import validate


class Unprintable:
    def __str__(self):
        raise RuntimeError("no text for you")

    __repr__ = __str__


@poet(domain="ml_monitoring", optimize_for="accuracy", policy="trusted")
def detect(score: float, threshold: float = 0.5) -> dict:
    cycle = []
    cycle.append(cycle)
    validate.note("domain.evidence", "score", cycle)  # a domain note: its own event
    validate.note("mismatch", "score", Unprintable())  # rides with the execution's row
    return {"drift_detected": score > threshold, "score": score}
'''

CALLS = 5


def test_an_unencodable_note_costs_neither_the_call_nor_feedback_nor_the_batch(learn_env, module_dir, caplog):  # noqa: F811
    import poet_runtime
    from poet_runtime.learn import sink

    caplog.set_level(logging.WARNING, logger="poet_runtime")
    mod = module_dir("recmod", SOURCE)
    before = sink.unencodable_details
    results = [mod.detect(0.7 if i % 2 else 0.2) for i in range(CALLS)]
    assert results == [{"drift_detected": bool(i % 2), "score": 0.7 if i % 2 else 0.2} for i in range(CALLS)]
    execution_id = poet_runtime.last_execution().execution_id
    poet_runtime.feedback(execution_id, label=True)  # flushes first: must not raise
    sink.flush()
    executions = events_of(learn_env, "function.execution")
    assert len(executions) == CALLS
    assert execution_id in {event["payload"]["execution_id"] for event in executions}
    notes = events_of(learn_env, "domain.evidence")
    assert len(notes) == CALLS
    assert all(note["payload"]["detail_unencodable"] and note["payload"]["detail"] == "[[...]]" for note in notes)
    assert len(events_of(learn_env, "function.feedback")) == 1
    assert sink.unencodable_details - before >= CALLS
    said = [record.getMessage() for record in caplog.records if "could not be encoded" in record.getMessage()]
    assert len(said) == 1, said
    assert not [record for record in caplog.records if "cannot write events" in record.getMessage()]


UNHASHABLE = '''\
from poet_runtime import poet
from poet_sandbox import validate


@poet(domain="ml_monitoring", optimize_for="accuracy", policy="trusted")
def detect(score: float, threshold: float = 0.5) -> dict:
    validate.note("mismatch", ["score"], "a field that is a list")
    return {"drift_detected": score > threshold, "score": score}
'''


def test_a_note_with_an_unhashable_field_does_not_fail_the_call(learn_env, module_dir):  # noqa: F811
    from poet_runtime.learn import sink

    mod = module_dir("recmod2", UNHASHABLE)
    assert [mod.detect(0.7), mod.detect(0.2)] == [{"drift_detected": True, "score": 0.7},
                                                  {"drift_detected": False, "score": 0.2}]
    sink.flush()
    executions = events_of(learn_env, "function.execution")
    assert len(executions) == 2  # counted under the field's text; the call's record is kept too
