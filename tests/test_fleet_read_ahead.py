"""A learner reads the next batch while it stages this one (``Staging.read_ahead``): nothing is lost,
nothing counted twice, and what it holds pending is what it knows of.

A real redis-server; the learner's own rounds. Read ahead, entries are delivered to the learner
(pending) before it stages them, and the own-pending read that follows takes only what it
deferred: these tests check a stopping learner stages what it read ahead, that deferred feedback
is read again (and once) between batches read ahead, and that a learner restarted under the same
name after a crash takes back what its predecessor had read ahead.
"""

from __future__ import annotations

import json
import time

from redis_helpers import redis_server  # noqa: F401
from test_fleet_throughput import BROKER_KEY, FUNCTIONS, PER_FUNCTION, _backlog

from poet_runtime.fleet import staging, wire

TOTAL = FUNCTIONS * PER_FUNCTION


def _stats(client, ns: str) -> dict:
    return {k.decode(): int(v) for k, v in client.hgetall(f"poet:{ns}:learn:stats").items()}


def _pending(client, ns: str) -> dict:
    """consumer -> how many entries it holds pending."""
    return {row["name"].decode(): row["pending"] for row in
            client.xinfo_consumers(wire.stream(ns, wire.EVENTS), wire.LEARNERS)}


def _learned(client, ns: str) -> int:
    total = 0
    for i in range(FUNCTIONS):
        raw = client.get(f"poet:{ns}:learn:state:mod:detect{i}")
        total += json.loads(raw)["feedback"] if raw else 0
    return total


def _one_round(server, ns: str, name: str, batch: int):
    """A backlog in ``ns`` and a learner that has run one round on it, its read ahead finished: (client, learner)."""
    from poet_runtime.fleet.learner import Learner

    client = server.client()
    _backlog(client, ns)
    learner = Learner(server.url, BROKER_KEY, namespace=ns, name=name, batch=batch, block_ms=5)
    learner.ensure_group()
    learner.round()  # stages the first batch and reads the next one meanwhile
    assert learner._ahead is not None
    learner._ahead[0].join(10)
    return client, learner


def test_a_stopping_learner_stages_what_it_read_ahead(redis_server):  # noqa: F811
    ns = "ahead-stop"
    client, learner = _one_round(redis_server, ns, "a", 50)
    assert _pending(client, ns) == {"a": 50}  # delivered to it, not staged: pending, not lost
    assert _stats(client, ns)["entries"] == 50
    learner.stop()
    learner.run()  # stopping at once: what was read ahead is staged on the way out
    assert _pending(client, ns) == {"a": 0}
    assert _stats(client, ns)["entries"] == 100
    assert _stats(client, ns)["staged"] == 99  # the heartbeat is an entry, not a staged feedback


def test_deferred_feedback_is_read_again_between_batches_read_ahead_and_staged_once(redis_server):  # noqa: F811
    from poet_runtime import journal
    from poet_runtime.fleet.learner import Learner

    client = redis_server.client()
    ns = "ahead-deferred"
    _backlog(client, ns)
    stream = wire.stream(ns, wire.EVENTS)
    lonely = 7  # feedback on executions the broker never saw (no x, no batch, no store): deferred, then unmatched
    pipe = client.pipeline(transaction=False)
    for n in range(lonely):
        event = {"id": f"lonely-{n}", "type": "function.feedback", "timestamp": time.time(),
                 "payload": {"function": "mod:detect0", "version": 1, "execution_id": f"{'c' * 12}-{n}",
                             "label": True}}
        fields = {"k": b"fb", "d": journal.encode(event, 1 << 20), "p": b"c" * 12}
        pipe.xadd(stream, {**fields, "s": wire.sign_entry(BROKER_KEY, fields)})
    pipe.execute()
    _backlog(client, ns)  # more feedback after them (new event ids): read ahead while the lonely ones wait
    learner = Learner(redis_server.url, BROKER_KEY, namespace=ns, name="a", batch=64, block_ms=5)
    learner.ensure_group()
    deadline = time.monotonic() + staging.DEFER_S + 20
    rounds = 0
    while _stats(client, ns).get("staged", 0) < 2 * TOTAL + lonely:
        learner.round()
        rounds += 1
        ahead = 0
        if learner._ahead is not None:
            learner._ahead[0].join(10)
            ahead = len(learner._ahead[1].entries if learner._ahead[1] else [])
        # what it holds pending is what it deferred and what it read ahead: nothing it has lost track of
        assert _pending(client, ns)["a"] == len(learner.deferred) + ahead, (learner.deferred, ahead)
        assert time.monotonic() < deadline, _stats(client, ns)
    learner.stop()
    learner.run()
    stats = _stats(client, ns)
    assert stats["staged"] == 2 * TOTAL + lonely, stats  # each once: the deferred ones after their wait
    assert stats["entries"] == 2 * TOTAL + lonely + 2, stats  # and two heartbeats
    assert not client.xpending(stream, wire.LEARNERS)["pending"]
    assert rounds > (2 * TOTAL) // 64  # batches came read ahead while the lonely ones waited
    while learner.counts["applied"] < TOTAL + lonely and time.monotonic() < deadline:
        learner.round()
    # learned once each: the second backlog repeats the first's event ids (duplicates, not learned again)
    assert _learned(client, ns) == TOTAL + lonely
    assert int(client.hget(f"poet:{ns}:learn:stats", "duplicates") or 0) == TOTAL


def test_a_learner_restarted_under_its_name_takes_back_what_it_had_read_ahead(redis_server):  # noqa: F811
    from poet_runtime.fleet.learner import Learner

    ns = "ahead-restart"
    client, _ = _one_round(redis_server, ns, "same", 40)
    assert _pending(client, ns) == {"same": 40}
    # the first one is gone (as if killed): its read ahead was never staged; a new process, same name
    second = Learner(redis_server.url, BROKER_KEY, namespace=ns, name="same", batch=40, block_ms=5)
    second.round()  # its first read takes all it holds pending (40), then 40 new ones: not after claim_idle
    assert _stats(client, ns)["entries"] == 120, _stats(client, ns)
    while _stats(client, ns).get("entries", 0) < TOTAL + 1:
        second.round()
    second.stop()
    second.run()
    stats = _stats(client, ns)
    assert stats["entries"] == TOTAL + 1 and stats["staged"] == TOTAL, stats
    assert not client.xpending(wire.stream(ns, wire.EVENTS), wire.LEARNERS)["pending"]


def test_a_learner_restarted_holding_more_than_a_batch_reads_all_of_it_before_new_entries(redis_server):  # noqa: F811
    from poet_runtime.fleet.learner import Learner

    client = redis_server.client()
    ns = "ahead-held"
    _backlog(client, ns)
    first = Learner(redis_server.url, BROKER_KEY, namespace=ns, name="same", batch=100, block_ms=5)
    first.ensure_group()
    held = [entry_id for entry_id, _ in first.read()]  # delivered to it, then it died: 100 pending
    assert _pending(client, ns) == {"same": 100}
    second = Learner(redis_server.url, BROKER_KEY, namespace=ns, name="same", batch=40, block_ms=5)
    for _ in range(3):  # 40 + 40 + 20 of what it held, read in its first three rounds (not after claim_idle)
        second.round()
    pending = {row["message_id"] for row in client.xpending_range(wire.stream(ns, wire.EVENTS), wire.LEARNERS,
                                                                     "-", "+", 1000)}
    assert not pending & set(held), len(pending & set(held))
    second.stop()
    second.run()
    assert not client.xpending(wire.stream(ns, wire.EVENTS), wire.LEARNERS)["pending"]
