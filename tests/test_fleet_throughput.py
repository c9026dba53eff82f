"""The fleet learner's fast paths give exactly the answers of the code they stand in for.

``learner_fast.propose`` keeps an index of a labelled learner's samples up to date and proposes
from it; here it is compared, call after call, with ``LabelledLearner.propose`` itself (the value
and its type, as JSON would write it) on random streams built to reach the corners: many equal
scores, midpoints clamped into a narrow range, an integer parameter, the memory overflowing,
outputs without a score, non-finite scores, exact ties on the objective and the distance.
And the learner's round (``learner.Learner.apply``) against a real redis-server: one transaction
for all the functions it applies, and learners that take turns learn what one learns.
"""

from __future__ import annotations

import json
import random
import time
import zlib

import pytest

from redis_helpers import redis_server  # noqa: F401

from poet_runtime.fleet import learner_fast
from poet_runtime.learn import config
from poet_runtime.learn.objectives import LabelledLearner

OBJECTIVES = ["accuracy", "precision", "recall", "alert_quality", "drift_sensitivity"]


def _stream(rng: random.Random, steps: int, digits: int | None, bad: bool):
    boundary = rng.random()
    for step in range(steps):
        if step % 40 == 39:
            boundary = rng.random()  # the labels move: the search keeps finding new thresholds
        score = rng.random() * 1.2 - 0.1
        if digits is not None:
            score = round(score, digits)
        roll = rng.random()
        if roll < 0.05:
            score = None
        elif bad and roll < 0.07:
            score = rng.choice([float("nan"), float("inf"), -float("inf")])
        noisy = rng.random() < 0.1
        yield score, ((score or 0) > boundary) != noisy, rng.random() < 0.5


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("parameter", ["threshold", "alpha"])
def test_the_indexed_search_proposes_what_the_labelled_learner_proposes_value_and_type(objective, parameter):
    rng = random.Random(zlib.crc32(f"{objective}/{parameter}/indexed".encode()))
    key = "p_value" if parameter == "alpha" else "score"
    moved = 0
    for case in range(7):
        settings = config.LearnSettings(memory=rng.choice([30, 64]), min_samples=rng.choice([4, 8]),
                                        learn_every=rng.choice([1, 3]), min_recall=rng.choice([0.3, 0.6]),
                                        min_precision=rng.choice([0.3, 0.6]))
        if case == 5:  # an integer parameter over integer scores: ints and floats side by side
            spec = {parameter: {"default": 2, "min": 0, "max": 4, "description": ""}}
            digits = 0
        elif case == 6:  # a float parameter with integer bounds: a clamped candidate is the int 0 or 1
            spec = {parameter: {"default": 0.5, "min": 0, "max": 1, "description": ""}}
            digits = 1
        else:
            narrow = case % 2 == 1  # a narrow range: most midpoints are clamped to its ends
            spec = {parameter: {"default": 0.5, "min": 0.4 if narrow else 0.0, "max": 0.6 if narrow else 1.0,
                                "description": ""}}
            digits = [1, 2, None, 2, 1][case]
        learner = LabelledLearner(objective, spec, settings, beta=rng.choice([0.5, 2.0]))
        current = {parameter: spec[parameter]["default"]}
        for score, label, predicted in _stream(rng, 90, digits, bad=case == 2):
            if case == 5 and score is not None and score == score and abs(score) != float("inf"):
                score = int(score * 4)
            learner.observe({"drift_detected": predicted, key: score}, label)
            slow, fast = learner.propose(current), learner_fast.propose(learner, current)
            assert json.dumps(fast) == json.dumps(slow), (case, learner.seen, fast, slow)
            moved += bool(slow)
            current.update(slow)
    assert moved >= 5  # the search ran, and moved the value


def test_an_exact_tie_on_objective_and_distance_goes_where_the_original_sends_it():
    # Two candidates equally good and equally far from the current value: max keeps the first in
    # propose's set, whichever side that is.
    settings = config.LearnSettings(memory=50, min_samples=4, learn_every=1)
    spec = {"threshold": {"default": 0.5, "min": 0.0, "max": 1.0, "description": ""}}
    ties = 0
    for seed in range(40):
        rng = random.Random(seed)
        learner = LabelledLearner("accuracy", spec, settings)
        current = {"threshold": 0.5}
        # Symmetric scores around 0.5: positives at 0.5 + d and 0.5 - d alike, so both sides score the same.
        for _ in range(12):
            d = rng.choice([0.125, 0.25, 0.375])
            for score in (0.5 + d, 0.5 - d):
                learner.observe({"drift_detected": False, "score": score}, rng.random() < 0.5)
                slow, fast = learner.propose(current), learner_fast.propose(learner, current)
                assert json.dumps(fast) == json.dumps(slow), (seed, fast, slow)
                ties += bool(slow) and abs(slow["threshold"] - 0.5) in (0.0625, 0.1875, 0.3125)
    assert ties  # the tie case was met


def test_the_index_follows_the_learner_across_memory_overflow_and_a_fresh_learner():
    settings = config.LearnSettings(memory=25, min_samples=5, learn_every=5)
    spec = {"threshold": {"default": 0.5, "min": 0.0, "max": 1.0, "description": ""}}
    rng = random.Random(7)
    learner = LabelledLearner("accuracy", spec, settings)
    for _ in range(400):
        score = round(rng.random(), 2)
        learner.observe({"drift_detected": False, "score": score}, score > 0.3)
        learner_fast.propose(learner, {"threshold": 0.5})
    index = learner_fast.index_of(learner)
    live = [s for s, _, _ in learner.samples]
    assert index.live() == len(learner.samples) == 25
    assert sorted(set(live)) == index.points
    assert sum(index.pos) == sum(1 for _, _, a in learner.samples if a) == index.p
    assert sum(index.neg) == sum(1 for s, _, a in learner.samples if s is not None and not a) == index.q
    # A learner restored from JSON (as each transaction does) starts its own index from its samples.
    twin = LabelledLearner("accuracy", spec, settings)
    twin.seen = learner.seen
    twin.samples.extend(learner.samples)
    assert learner_fast.propose(twin, {"threshold": 0.9}) == twin.propose({"threshold": 0.9})


def test_the_answer_is_the_very_member_of_proposes_set_an_int_bound_stays_an_int():
    # Scores -0.3, -0.1, 0.1, 0.3 labelled "above 0": every threshold in [-0.1, 0.1) is perfect, and with
    # the range starting at the int 0 the candidates there are 0 (clamped, inserted first) and 0.0 (a midpoint).
    settings = config.LearnSettings(memory=50, min_samples=4, learn_every=4)
    spec = {"threshold": {"default": 0.5, "min": 0, "max": 1, "description": ""}}
    learner = LabelledLearner("accuracy", spec, settings)
    for score in (-0.3, -0.1, 0.1, 0.3):
        learner.observe({"drift_detected": False, "score": score}, score > 0)
    slow = learner.propose({"threshold": 0.5})
    assert json.dumps(slow) == '{"threshold": 0}'
    assert json.dumps(learner_fast.propose(learner, {"threshold": 0.5})) == json.dumps(slow)


def test_scores_one_ulp_apart_and_huge_scores_go_to_the_original_search():
    import math

    settings = config.LearnSettings(memory=20, min_samples=4, learn_every=1)
    spec = {"threshold": {"default": 0.5, "min": 0.0, "max": 1.79e308, "description": ""}}
    learner = LabelledLearner("accuracy", spec, settings)
    current = {"threshold": 0.5}
    scores = [0.3, math.nextafter(0.3, 1), 0.7, 0.1, 0.9, 1.5e308, 1.7e308, 0.2, 0.6, 0.8]
    for n, score in enumerate(scores * 3):
        learner.observe({"drift_detected": False, "score": score}, n % 3 == 0)
        slow, fast = learner.propose(current), learner_fast.propose(learner, current)
        assert json.dumps(fast) == json.dumps(slow), (n, fast, slow)
        current.update(slow)
    assert learner_fast.index_of(learner).bad  # (0.3 + next) / 2 is one of them; 1.5e308 + 1.7e308 overflows


# -- the learner: one transaction per round for every function, the same learning ------------------

BROKER_KEY = b"fleet-throughput-key"
FUNCTIONS, PER_FUNCTION = 8, 60


def _backlog(client, ns: str) -> list:
    """A heartbeat naming FUNCTIONS functions, then PER_FUNCTION signed feedback on each (with ``x``),
    interleaved: the events stream's entries, in order."""
    from poet_runtime import journal
    from poet_runtime.fleet import wire

    spec = {"version": 1, "objective": "accuracy", "domain": "ml_monitoring",
            "parameters": {"threshold": {"default": 0.9, "min": 0.0, "max": 1.0, "description": ""}}, "params": {}}
    names = [f"mod:detect{i}" for i in range(FUNCTIONS)]
    stream = wire.stream(ns, wire.EVENTS)
    beat = json.dumps({"host": "h", "pid": 1, "process": "0" * 12, "root": None, "started": time.time(),
                       "last_event": time.time(), "functions": {n: spec for n in names}}).encode()
    pipe = client.pipeline(transaction=False)
    hello = {"k": b"hi", "d": beat, "p": b"0" * 12}
    pipe.xadd(stream, {**hello, "s": wire.sign_entry(BROKER_KEY, hello)})  # format 3: every field signed
    rng = random.Random(11)
    for n in range(FUNCTIONS * PER_FUNCTION):
        function = names[n % FUNCTIONS]
        score = round(rng.random(), 3)
        execution = {"function": function, "version": 1, "execution_id": f"{'b' * 12}-{n}", "status": "ok",
                     "output": {"drift_detected": score > 0.9, "score": score}}
        event = {"id": f"ev-{n}", "type": "function.feedback", "timestamp": time.time(),
                 "correlation_id": execution["execution_id"], "causation_id": None, "metadata": {},
                 "payload": {"function": function, "version": 1, "execution_id": execution["execution_id"],
                             "feedback_type": "user", "label": score > 0.2 + 0.08 * (n % FUNCTIONS)}}
        line = journal.encode(event, 1 << 20)
        fields = {"k": b"fb", "d": line, "p": b"b" * 12, "x": json.dumps(execution).encode()}
        pipe.xadd(stream, {**fields, "s": wire.sign_entry(BROKER_KEY, fields)})
    pipe.execute()
    return client.xrange(stream)


def _transactions(client) -> int:
    return client.info("commandstats").get("cmdstat_exec", {}).get("calls", 0)


def _states(client, ns: str) -> dict:
    out = {}
    for i in range(FUNCTIONS):
        state = json.loads(client.get(f"poet:{ns}:learn:state:mod:detect{i}"))
        out[i] = {field: state[field] for field in ("params", "feedback", "learner", "monitor")}
    return out


def test_a_round_applies_every_function_in_one_transaction_and_alternating_learners_learn_what_one_learns(
        redis_server):  # noqa: F811
    from poet_runtime.fleet.learner import Learner
    from poet_runtime.learn.objectives import clamp, make_learner

    client = redis_server.client()
    entries = _backlog(client, "one")
    one = Learner(redis_server.url, BROKER_KEY, namespace="one", name="one", batch=5000, block_ms=5)
    one.ensure_group()
    before = _transactions(client)
    one.round()  # reads, stages and applies the whole backlog
    transactions = _transactions(client) - before
    assert one.counts["applied"] == FUNCTIONS * PER_FUNCTION
    assert transactions == 2  # staging's and one apply for all eight functions (each an fsync)
    learned = _states(client, "one")
    # What one local learner learns from each function's feedback, in stream order (the original search).
    for i in range(FUNCTIONS):
        parameters = {"threshold": {"default": 0.9, "min": 0.0, "max": 1.0, "description": ""}}
        local, params = make_learner("accuracy", parameters, config.LearnSettings(), 1.0), {"threshold": 0.9}
        for _, fields in entries[1:][i::FUNCTIONS]:
            execution = json.loads(fields[b"x"])
            local.observe(execution["output"], json.loads(fields[b"d"][9:])["payload"]["label"])
            for name, value in local.propose(params).items():
                params[name] = clamp(value, parameters[name])
        assert learned[i]["params"].get("threshold", 0.9) == params["threshold"]
        assert learned[i]["feedback"] == PER_FUNCTION
    # Two learners of one group taking turns in an uneven order, in small rounds: each finds the other's
    # writes (its own state in memory is stale then), and together they learn what the one learned.
    pipe = client.pipeline(transaction=False)
    for _, fields in entries:
        pipe.xadd("poet:two:events", fields)
    pipe.execute()
    a = Learner(redis_server.url, BROKER_KEY, namespace="two", name="a", batch=41, block_ms=5)
    b = Learner(redis_server.url, BROKER_KEY, namespace="two", name="b", batch=53, block_ms=5)
    a.ensure_group()
    turns = "aabab" "bbaba"
    for turn in range(400):
        (a if turns[turn % len(turns)] == "a" else b).round()
        if a.counts["applied"] + b.counts["applied"] >= FUNCTIONS * PER_FUNCTION:
            break
    assert a.counts["applied"] and b.counts["applied"]
    assert _states(client, "two") == learned
