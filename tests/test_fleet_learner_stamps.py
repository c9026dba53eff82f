"""The learner's stamps (issue 9): what it signs is ordered per function across learners whose clocks
disagree, and the heartbeats it follows are taken in their signed order (a copied old heartbeat,
re-added under a new stream id, names nothing anew). Real redis-server and learners.
"""

from __future__ import annotations

import json
import time

from redis_helpers import redis_server  # noqa: F401
from test_fleet_sealed_keys import KEY, _backlog, _learner, _state, _stats

from poet_runtime.fleet import wire


def test_outcomes_are_signed_after_the_newest_one_of_their_function_whatever_the_clock(redis_server):  # noqa: F811
    client = redis_server.client()
    ns = "after"
    _backlog(client, ns, ["mod:a"], 20)
    _learner(redis_server.url, ns).run(rounds=3)
    first = [wire.stamp_of(f[b"s"]) for _, f in client.xrange(f"poet:{ns}:outcomes")]
    assert first and _state(client, ns, "mod:a")["signed_ms"] == first[-1].at_ms
    # Another learner, its clock 30 s ahead of this one's, signed the function's last outcome: its state says so.
    key = f"poet:{ns}:learn:state:mod:a"
    text = wire.unseal_json(KEY, key, client.get(key))
    ahead = int(time.time() * 1000) + 30_000
    state = json.loads(text)
    state["signed_ms"] = ahead
    client.set(key, wire.seal_json(KEY, key, json.dumps(state)))
    _backlog(client, ns, ["mod:a"], 40, start=20, boundary=0.75)  # labels that move the threshold again
    _learner(redis_server.url, ns, "b").run(rounds=3)
    later = [wire.stamp_of(f[b"s"]) for _, f in client.xrange(f"poet:{ns}:outcomes")][len(first):]
    assert later, "no outcome signed for the second backlog"
    assert all(stamp.at_ms > ahead for stamp in later), (ahead, later)
    assert [s.order for s in later] == sorted(s.order for s in later)
    assert _state(client, ns, "mod:a")["signed_ms"] == later[-1].at_ms


def test_a_replayed_heartbeat_does_not_move_the_learner_back_to_the_version_it_names(redis_server,  # noqa: F811
                                                                                   caplog):
    client = redis_server.client()
    ns = "beats"
    events = wire.stream(ns, wire.EVENTS)

    def heartbeat(version: int) -> dict:
        spec = {"version": version, "objective": "accuracy", "domain": "ml_monitoring",
                "parameters": {"threshold": {"default": 0.5, "min": 0.0, "max": 1.0}}, "params": {"threshold": 0.5}}
        data = json.dumps({"host": "h", "pid": 1, "process": "p1", "root": None,
                           "functions": {"mod:a": spec}}).encode()
        fields = {b"k": b"hi", b"d": data, b"p": b"p1"}
        fields[b"s"] = wire.sign_entry(KEY, fields)
        client.xadd(events, fields)
        return fields

    old = heartbeat(1)
    learner = _learner(redis_server.url, ns)
    learner.run(rounds=2)
    assert _state(client, ns, "mod:a")["version"] == 1
    heartbeat(2)  # a deploy: p1 runs version 2 now
    time.sleep(0.002)
    heartbeat(2)
    learner.run(rounds=2)
    assert _state(client, ns, "mod:a")["version"] == 2
    with caplog.at_level("WARNING", logger="poet_runtime"):
        client.xadd(events, old)  # the copy, under a new stream id, and under another p ...
        client.xadd(events, {**old, b"p": b"someone"})
        for name in ("a", "b"):  # ... read by this learner and by one that never saw p1 before
            _learner(redis_server.url, ns, name).run(rounds=2)
    assert _state(client, ns, "mod:a")["version"] == 2, "the learner followed a replayed heartbeat"
    # the copy under another p does not verify (p is signed, wire format 3); the other is a replay
    assert (_stats(client, ns)["heartbeats_replayed"], _stats(client, ns)["refused"]) == (1, 1)
    assert len([r for r in caplog.records if "a replay" in r.getMessage()]) == 1
    assert json.loads(wire.unseal_json(KEY, f"poet:{ns}:functions\nmod:a",
                                       client.hget(f"poet:{ns}:functions", "mod:a")))["version"] == 2


def test_an_outcome_entry_too_big_to_read_is_not_followed_and_the_cursor_moves_past_it(redis_server):  # noqa: F811
    from poet_runtime.fleet import learner_versions

    client = redis_server.client()
    ns = "big-outcome"
    learner = _learner(redis_server.url, ns)
    data = json.dumps({"function": "mod:a", "number": 2, "by": "h:1", "files": {"code.py": "#" * (5 << 20)}}).encode()
    last = client.xadd(f"poet:{ns}:outcomes", {"t": b"version.promoted", "m": data,
                                               "s": wire.sign(KEY, b"version.promoted", data)})
    assert learner_versions.follow(learner) == 0
    assert _stats(client, ns)["versions_refused"] == 1
    assert client.get(learner_versions.cursor_key(learner.keys)) == last
    assert not client.exists(f"poet:{ns}:learn:stage:mod:a")
