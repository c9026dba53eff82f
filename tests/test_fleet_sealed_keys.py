"""The learner's own Redis keys are sealed with the fleet's key (issue 9): what a writer without the
key does to them (moves a genuine member to another function, forges or replaces a state, a
function's spec, an execution index member, re-adds an applied member) is dropped or refused,
counted in the learner's stats and logged once, never learned from. Real redis-server, real
learners; the attacker is this test writing to the broker without the key.
"""

from __future__ import annotations

import json
import random
import time

from redis_helpers import redis_server  # noqa: F401

from poet_runtime import journal
from poet_runtime.fleet import wire
from poet_runtime.fleet.staging import member_rows

KEY = b"sealed-keys-secret"
SPEC = {"version": 1, "objective": "accuracy", "domain": "ml_monitoring",
        "parameters": {"threshold": {"default": 0.9, "min": 0.0, "max": 1.0, "description": ""}}, "params": {}}


def _backlog(client, ns: str, functions: list, per_function: int, *, with_x: bool = True, start: int = 0,
             boundary: float = 0.3) -> None:
    """A signed heartbeat naming ``functions``, then signed feedback on each (with ``x`` or not), whose
    labels say the threshold is ``boundary``."""
    stream = wire.stream(ns, wire.EVENTS)
    beat = json.dumps({"host": "h", "pid": 1, "process": "p" * 12, "root": None, "started": time.time(),
                       "last_event": time.time(), "functions": {f: SPEC for f in functions}}).encode()
    pipe = client.pipeline(transaction=False)
    fields = {"k": b"hi", "d": beat, "p": b"p" * 12}
    pipe.xadd(stream, {**fields, "s": wire.sign_entry(KEY, fields)})
    rng = random.Random(start + 3)
    for n in range(start, start + per_function * len(functions)):
        function = functions[n % len(functions)]
        score = round(rng.random(), 3)
        execution = {"function": function, "version": 1, "execution_id": f"{'b' * 12}-{n}", "status": "ok",
                     "output": {"drift_detected": score > 0.9, "score": score}}
        event = {"id": f"ev-{n}", "type": "function.feedback", "timestamp": time.time(),
                 "payload": {"function": function, "version": 1, "execution_id": execution["execution_id"],
                             "feedback_type": "user", "label": score > boundary}}
        line = journal.encode(event, 1 << 20)
        fields = {"k": b"fb", "d": line, "p": b"b" * 12}
        if with_x:
            fields["x"] = json.dumps(execution).encode()
        pipe.xadd(stream, {**fields, "s": wire.sign_entry(KEY, fields)})
    pipe.execute()


def _learner(url: str, ns: str, name: str = "a"):
    from poet_runtime.fleet.learner import Learner

    learner = Learner(url, KEY, namespace=ns, name=name, block_ms=5)
    learner.ensure_group()
    return learner


def _stats(client, ns: str) -> dict:
    return {k.decode(): int(v) for k, v in client.hgetall(f"poet:{ns}:learn:stats").items()}


def _state(client, ns: str, function: str) -> dict:
    return json.loads(client.get(f"poet:{ns}:learn:state:{function}"))


def test_members_moved_to_another_function_or_forged_are_dropped_counted_and_said_once(redis_server,  # noqa: F811
                                                                                     caplog):
    client = redis_server.client()
    ns = "moved"
    _backlog(client, ns, ["mod:a", "mod:b"], 30)
    stager = _learner(redis_server.url, ns, "stager")
    stager.stage(stager.read())  # staged, not applied
    a_members = client.zrange(f"poet:{ns}:learn:stage:mod:a", 0, -1)
    # one member per function per staging transaction, sealed: the heartbeat's spec item and 30 feedback
    [member] = a_members
    assert len(member_rows(wire.unseal(KEY, f"poet:{ns}:learn:stage:mod:a", member))) == 31
    # The attacker copies mod:a's genuine members into mod:b's stage and adds members of its own.
    forged = {f"{0:015d}-{i:010d}|" + json.dumps({"e": f"forged-{i}", "t": time.time(), "x": f"p-{i}", "k": True,
                                                  "v": 1, "u": False, "o": {"drift_detected": True, "score": 0.99},
                                                  "l": False}): 0 for i in range(10)}
    client.zadd(f"poet:{ns}:learn:stage:mod:b", {**{m: 0 for m in a_members}, **forged})
    with caplog.at_level("WARNING", logger="poet_runtime"):
        stager.run(rounds=3)  # the learner that staged them: its memo does not vouch for a moved member
        _learner(redis_server.url, ns, "other").run(rounds=2)
    assert _state(client, ns, "mod:a")["feedback"] == 30
    assert _state(client, ns, "mod:b")["feedback"] == 30  # its own 30: none of the 31 moved or 10 forged ones
    assert _stats(client, ns)["unsealed"] == 11  # the moved member and the 10 forged ones
    assert not client.zcard(f"poet:{ns}:learn:stage:mod:b")  # dropped from the stage, not read again each round
    said = [r.getMessage() for r in caplog.records if "not sealed" in r.getMessage()]
    assert len(said) == 1, said


def test_a_state_not_sealed_with_the_key_is_refused_and_nothing_is_applied_on_it(redis_server, caplog):  # noqa: F811
    client = redis_server.client()
    ns = "state"
    _backlog(client, ns, ["mod:a"], 20)
    _learner(redis_server.url, ns).run(rounds=3)
    genuine = client.get(f"poet:{ns}:learn:state:mod:a")
    assert wire.unseal_json(KEY, f"poet:{ns}:learn:state:mod:a", genuine) is not None
    # A forged state: the genuine one with its threshold changed, seal kept (as copied) ...
    forged = json.loads(genuine)
    forged["params"] = {"threshold": 0.01}
    client.set(f"poet:{ns}:learn:state:mod:a", json.dumps(forged))
    _backlog(client, ns, ["mod:a"], 20, start=20)
    with caplog.at_level("WARNING", logger="poet_runtime"):
        for _ in range(2):
            _learner(redis_server.url, ns, "b").run(rounds=3)  # fresh learners: nothing cached
    assert json.loads(client.get(f"poet:{ns}:learn:state:mod:a"))["params"] == {"threshold": 0.01}  # untouched
    assert not any(json.loads(f[b"m"]).get("params", {}).get("threshold") == 0.01
                   for _, f in client.xrange(f"poet:{ns}:outcomes"))
    waiting = [r for m in client.zrange(f"poet:{ns}:learn:stage:mod:a", 0, -1)
               for r in member_rows(wire.unseal(KEY, f"poet:{ns}:learn:stage:mod:a", m))]
    assert len(waiting) == 21  # waits (the new heartbeat's item and 20)
    assert int(client.hget(f"poet:{ns}:learn:waiting", "mod:a")) == 21  # as status counts them
    stats = _stats(client, ns)
    assert stats["states_refused"] == 1 and stats["applied"] == 20, stats  # once, not per round or learner
    assert len([r for r in caplog.records if "is not sealed" in r.getMessage()]) == 2  # once per learner
    # ... and a state moved from another function (sealed, but for another key) is refused too.
    _backlog(client, ns, ["mod:c"], 5, start=100)
    _learner(redis_server.url, ns, "c").run(rounds=3)
    client.set(f"poet:{ns}:learn:state:mod:c", genuine)
    _backlog(client, ns, ["mod:c"], 5, start=200)
    _learner(redis_server.url, ns, "d").run(rounds=3)
    assert client.get(f"poet:{ns}:learn:state:mod:c") == genuine
    assert _stats(client, ns)["states_refused"] == 2
    # An operator deletes the refused state: the function starts over from what is staged.
    client.delete(f"poet:{ns}:learn:state:mod:a")
    _learner(redis_server.url, ns, "e").run(rounds=3)
    assert _state(client, ns, "mod:a")["feedback"] == 20


def test_a_forged_function_spec_or_execution_index_member_is_not_used(redis_server, tmp_path):  # noqa: F811
    client = redis_server.client()
    ns = "spec"
    # Feedback without x, before any heartbeat of its function: the learner looks its execution up
    # in the index and its spec in the functions hash; the attacker wrote both.
    stream = wire.stream(ns, wire.EVENTS)
    batch = client.xadd(stream, {"k": b"zz", "d": b"not a batch"})  # an entry the index may point at
    client.zadd(f"poet:{ns}:learn:exidx:{'b' * 12}", {f"{batch.decode()}:99": 0})
    client.hset(f"poet:{ns}:functions", "mod:a", json.dumps({**SPEC, "root": str(tmp_path)}))
    line = journal.encode({"id": "ev-x", "type": "function.feedback", "timestamp": time.time(),
                           "payload": {"function": "mod:a", "version": 1, "execution_id": f"{'b' * 12}-5",
                                       "label": True}}, 1 << 20)
    fields = {"k": b"fb", "d": line, "p": b"b" * 12}
    client.xadd(stream, {**fields, "s": wire.sign_entry(KEY, fields)})
    learner = _learner(redis_server.url, ns)
    learner.run(rounds=2)
    assert learner.function_spec("mod:a") is None  # not sealed: not taken
    stats = _stats(client, ns)
    assert stats.get("unsealed", 0) >= 1, stats  # the index member (the spec counts when it is read)
    assert not client.exists(f"poet:{ns}:learn:state:mod:a")  # no spec it can trust: nothing learned
    # The genuine heartbeat replaces the spec, sealed, and the index the learner writes is sealed.
    _backlog(client, ns, ["mod:a"], 0)
    learner.run(rounds=2)
    assert learner.function_spec("mod:a")["objective"] == "accuracy"
    raw = client.hget(f"poet:{ns}:functions", "mod:a")
    assert json.loads(raw)["objective"] == "accuracy"  # still JSON for readers that only show it
    assert wire.unseal_json(KEY, f"poet:{ns}:functions\nmod:b", raw) is None  # bound to its field


def test_a_sealed_member_re_added_after_it_was_applied_is_not_learned_again(redis_server):  # noqa: F811
    client = redis_server.client()
    ns = "replay"
    _backlog(client, ns, ["mod:a"], 10)
    learner = _learner(redis_server.url, ns)
    learner.stage(learner.read())
    members = client.zrange(f"poet:{ns}:learn:stage:mod:a", 0, -1)
    learner.run(rounds=2)
    assert _state(client, ns, "mod:a")["feedback"] == 10
    client.delete(f"poet:{ns}:learn:seen:mod:a")  # what would show they were applied, gone ...
    client.zadd(f"poet:{ns}:learn:stage:mod:a", {m: 0 for m in members})  # ... and the members back
    client.sadd(f"poet:{ns}:learn:staged", "mod:a")
    _learner(redis_server.url, ns, "b").run(rounds=2)
    assert _state(client, ns, "mod:a")["feedback"] == 10
    assert _stats(client, ns)["duplicates"] == 10


def test_seal_and_seal_json_bind_their_context_and_refuse_changes():
    sealed = wire.seal(KEY, "poet:n:learn:stage:f", "000-0|{}")
    assert wire.unseal(KEY, "poet:n:learn:stage:f", sealed) == "000-0|{}"
    assert wire.unseal(KEY, "poet:n:learn:stage:g", sealed) is None
    assert wire.unseal(b"other", "poet:n:learn:stage:f", sealed) is None
    assert wire.unseal(KEY, "poet:n:learn:stage:f", "000-1|{}" + sealed[8:]) is None
    for text in ("{}", '{"a":1,"b":[2]}'):
        sealed = wire.seal_json(KEY, "c", text)
        assert json.loads(sealed)["seal"] and wire.unseal_json(KEY, "c", sealed) == text
        assert wire.unseal_json(KEY, "d", sealed) is None
        assert wire.unseal_json(KEY, "c", sealed.replace('"b":[2]', '"b":[3]')) == (None if "b" in text else text)
    for junk in (None, b"", "{}", '{"seal":"zz"}', "x" * 100, json.dumps({"seal": "0" * 32, "a": 1})):
        assert wire.unseal_json(KEY, "c", junk) is None
        assert wire.unseal(KEY, "c", junk) is None


def test_after_a_key_rotation_the_previous_key_opens_the_old_seals_and_new_ones_use_the_new_key(  # noqa: F811
        redis_server, monkeypatch):
    from poet_runtime.fleet.learner import Learner

    client = redis_server.client()
    ns = "rotated"
    _backlog(client, ns, ["mod:a"], 20)
    old = _learner(redis_server.url, ns)
    old.stage(old.read())
    old.apply("mod:a")
    assert _state(client, ns, "mod:a")["feedback"] == 20
    _backlog(client, ns, ["mod:a"], 10, start=20)
    old.stage(old.read())  # staged with the old key, not applied yet
    new_key = b"rotated-secret"
    without = Learner(redis_server.url, new_key, namespace=ns, name="without", block_ms=5)
    assert without._state("mod:a", client.get(f"poet:{ns}:learn:state:mod:a")) is False  # the new key alone
    monkeypatch.setenv(wire.PREVIOUS_KEY_VAR, KEY.decode())
    rotated = Learner(redis_server.url, new_key, namespace=ns, name="rotated", block_ms=5)
    rotated.run(rounds=2)
    assert _state(client, ns, "mod:a")["feedback"] == 30  # went on where the old key left it
    raw = client.get(f"poet:{ns}:learn:state:mod:a")
    assert wire.unseal_json(new_key, f"poet:{ns}:learn:state:mod:a", raw) is not None  # sealed anew
    assert wire.unseal_json(KEY, f"poet:{ns}:learn:state:mod:a", raw) is None
