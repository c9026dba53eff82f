"""Staged members hold a batch of rows (one member per function per staging transaction): apply
merges the members below the watermark by position and writes back what it did not apply.

What could go wrong: rows applied out of stream order when members overlap (a deferred feedback
staged after newer ones, two learners' interleaved reads), rows lost or applied twice when a
member straddles the watermark or more members wait than one apply reads, and a member's JSON
that does not read back as what was staged (orjson writes NaN as null). The oracle is one learner
that stages and applies the same backlog in one read.
"""

from __future__ import annotations

import json
import math

import pytest
from redis_helpers import redis_server  # noqa: F401
from test_fleet_sealed_keys import KEY, _backlog, _learner, _state, _stats

from poet_runtime.fleet import learner as learner_module
from poet_runtime.fleet import staging, wire

_LEARNED = ("params", "learner", "monitor", "feedback", "unmatched", "failures", "version")  # not last_id: a stream id


def _learned(client, ns: str, function: str) -> dict:
    state = _state(client, ns, function)
    return {name: state.get(name) for name in _LEARNED}


def _oracle(url: str, client, ns: str, function: str, per_function: int, boundary: float) -> dict:
    _backlog(client, ns, [function], per_function, boundary=boundary)
    _learner(url, ns, "oracle").run(rounds=3)
    return _learned(client, ns, function)


def _members(client, ns: str, function: str) -> list:
    return client.zrange(f"poet:{ns}:learn:stage:{function}", 0, -1)


def _drain(learner, client, ns: str, function: str, rounds: int = 20) -> None:
    for _ in range(rounds):
        learner.run(rounds=1)
        if not _members(client, ns, function):
            return


def test_many_small_members_from_two_learners_apply_as_one_read_would(redis_server):  # noqa: F811
    client = redis_server.client()
    expected = _oracle(redis_server.url, client, "one-read", "mod:a", 300, 0.35)
    ns = "small-reads"
    _backlog(client, ns, ["mod:a"], 300, boundary=0.35)
    a, b = _learner(redis_server.url, ns, "a"), _learner(redis_server.url, ns, "b")
    a.batch, b.batch = 3, 2  # reads of a few entries each, interleaved: members whose rows alternate
    while True:
        staged_a, staged_b = a.read(), b.read()
        if not staged_a and not staged_b:
            break
        a.stage(staged_a)
        b.stage(staged_b)
    members = _members(client, ns, "mod:a")
    assert len(members) > learner_module.APPLY_MEMBERS  # more than one apply reads: bounded by the next member
    assert int(client.hget(f"poet:{ns}:learn:waiting", "mod:a")) == 301  # the heartbeat's spec item and 300
    _drain(b, client, ns, "mod:a", rounds=40)  # b applies a's members too: not from its memo, unsealed
    assert not _members(client, ns, "mod:a")
    assert _learned(client, ns, "mod:a") == expected
    stats = _stats(client, ns)
    assert stats["applied"] == 300 and not stats.get("duplicates") and not stats.get("unsealed"), stats
    assert int(client.hget(f"poet:{ns}:learn:waiting", "mod:a") or 0) == 0


@pytest.mark.parametrize("apply_between", [True, False], ids=["applied-up-to-it", "staged-late"])
def test_a_row_staged_after_newer_rows_of_its_function_is_applied_in_its_place(redis_server,  # noqa: F811
                                                                               apply_between):
    client = redis_server.client()
    expected = _oracle(redis_server.url, client, f"late-oracle-{apply_between}", "mod:a", 40, 0.6)
    ns = f"late-{apply_between}"
    _backlog(client, ns, ["mod:a"], 40, boundary=0.6)
    learner = _learner(redis_server.url, ns, "a")
    entries = learner.read()
    assert len(entries) == 41
    held = entries[20]  # delivered, not staged: pending, so the watermark stays at it
    learner.stage(entries[:20] + entries[21:])
    assert len(_members(client, ns, "mod:a")) == 1  # one member for the function: rows on both sides of it
    if apply_between:  # the member straddles the watermark: its later rows are written back, as a member
        learner.apply("mod:a")
        assert _state(client, ns, "mod:a")["feedback"] == 19  # the rows before the held entry (and the spec item)
        [rest] = _members(client, ns, "mod:a")
        rows = staging.member_rows(wire.unseal(KEY, f"poet:{ns}:learn:stage:mod:a", rest))
        assert [position for position, _ in rows] == [staging.padded(i) for i, _ in entries[21:]]
    fresh = _learner(redis_server.url, ns, "b")  # applies from Redis, not from a memo
    fresh.stage([held])  # now staged, in a member of its own: its row comes before rows of the other member
    fresh.run(rounds=1)  # follows the outcomes stream (the watermark stops at what it has not) and applies
    assert not _members(client, ns, "mod:a")
    assert _learned(client, ns, "mod:a") == expected
    assert _stats(client, ns)["applied"] == 40 and not _stats(client, ns).get("duplicates")


def test_a_member_reads_back_as_staged_whatever_its_json_holds():
    rows = [["000000000000001-0000000000", {"o": {"score": math.nan, "big": 2**70, "inf": -math.inf}, "e": "x"}],
            ["000000000000002-0000000000", {"o": {"score": 0.1, "text": "caf\u00e9 \u2603"}, "e": "y"}]]
    text = staging.member_text(rows)
    assert text.startswith("000000000000001-0000000000|")
    again = staging.member_rows(text)
    assert math.isnan(again[0][1]["o"]["score"]) and again[0][1]["o"]["big"] == 2**70
    assert again[0][1]["o"]["inf"] == -math.inf and again[1] == rows[1]
    plain = [["000000000000003-0000000000", {"o": {"score": 0.25}, "l": True, "c": None}]]
    assert staging.member_rows(staging.member_text(plain)) == plain
    assert json.loads(staging.member_text(plain).partition("|")[2]) == plain  # orjson's text, read by json too
    # a member of one item (as learners before batches staged) is a batch of one row at its position
    assert staging.member_rows('000000000000004-0000000000|{"spec":{"version":2}}') == [
        ["000000000000004-0000000000", {"spec": {"version": 2}}]]
    for garbage in ("000-0|[1,2]", "000-0|[[1,{}]]", "000-0|\"text\"", "000-0|{", "000-0|" + "[" * 5000):
        assert staging.member_rows(garbage) is None, garbage


def test_a_member_that_is_not_text_is_dropped_and_counted_not_a_crash(redis_server):  # noqa: F811
    client = redis_server.client()
    ns = "not-text"
    _backlog(client, ns, ["mod:a"], 10)
    learner = _learner(redis_server.url, ns, "a")
    learner.stage(learner.read())
    client.zadd(f"poet:{ns}:learn:stage:mod:a", {b"000000000000000-0000000000|\xff\xfe[]": 0})  # anyone can add one
    learner.run(rounds=2)
    assert _state(client, ns, "mod:a")["feedback"] == 10
    assert _stats(client, ns)["unsealed"] == 1
    assert not _members(client, ns, "mod:a")


def test_an_unsigned_entry_whose_fields_are_not_text_is_refused_not_a_crash(redis_server):  # noqa: F811
    client = redis_server.client()
    ns = "not-text-entry"
    _backlog(client, ns, ["mod:a"], 5)
    client.xadd(wire.stream(ns, wire.EVENTS), {"k": b"fb", "d": b"\xff\xfe", "p": b"\xff", "s": b"\xfe"})
    _backlog(client, ns, ["mod:a"], 5, start=5)
    learner = _learner(redis_server.url, ns, "a")
    learner.run(rounds=3)
    assert _state(client, ns, "mod:a")["feedback"] == 10
    assert _stats(client, ns)["refused"] == 1
