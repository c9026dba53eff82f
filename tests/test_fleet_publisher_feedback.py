"""The publisher's scan and feedback files it cannot read (yet).

Why: a feedback file the scan finds empty or without an intact line may be one its writer has
not finished; marking it done at once lost that feedback for the fleet (the '239 of 240' flake,
commit 33ccd56, whose first layer is journal.write_single). A young such file is looked at
again; an old one is counted, logged and reported in the heartbeat, never dropped unsaid.
Real parts: a real redis-server and the real publisher thread on a real journal folder.
"""

from __future__ import annotations

import json
import logging
import os
import time

from redis_helpers import redis_server  # noqa: F401

from poet_runtime import journal
from poet_runtime.fleet import publisher, wire

KEY = b"publisher-feedback-key"


def _feedback_line(number: int) -> bytes:
    return journal.encode({"id": f"ev-fbtest-{number}", "type": "function.feedback", "timestamp": time.time(),
                           "correlation_id": f"fbtest-{number}", "payload": {"label": True}}, 1 << 20)


def _forwarded(client, stream) -> set:
    return {journal.decode(fields[b"d"])["id"] for _, fields in client.xrange(stream) if fields[b"k"] == b"fb"}


def _wait(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_unreadable_feedback_waits_while_young_and_is_reported_when_old(tmp_path, redis_server, caplog,
                                                                       monkeypatch):  # noqa: F811
    monkeypatch.delenv(wire.NAMESPACE_VAR, raising=False)
    store = tmp_path / "store"
    root = journal.events_root(store)
    journal.ensure_dirs(root)
    fleet = publisher.fleet_dir(root)
    (fleet / "cursors").mkdir(parents=True)
    # The store has had a broker for an hour: files of the last hour are not history.
    (fleet / "since").write_text("%.6f\n" % (time.time() - 3600))
    pending = root / journal.PENDING
    # A writer that created its file and has not written it yet (as write_single did before 33ccd56).
    young = pending / "fb-ev-fbtest-1.jsonl"
    young.write_bytes(b"")
    # Two left long ago: one empty, one whose line is damaged. And one good file.
    old_empty, old_damaged = pending / "fb-ev-fbtest-2.jsonl", pending / "fb-ev-fbtest-3.jsonl"
    old_empty.write_bytes(b"")
    line = _feedback_line(3)
    old_damaged.write_bytes(line[:20] + b"X" + line[21:])
    for path in (old_empty, old_damaged):
        stamp = time.time() - 60
        os.utime(path, (stamp, stamp))
    journal.write_single(root, "fb-ev-fbtest-4.jsonl", _feedback_line(4))

    stream = wire.stream(wire.namespace(store), wire.EVENTS)
    client = redis_server.client()
    caplog.set_level(logging.INFO, logger="poet_runtime")
    publisher._said.discard(("unforwarded-fb",))
    sender = publisher.Publisher(redis_server.url, KEY)
    try:
        sender.add_root(root)
        assert _wait(lambda: "ev-fbtest-4" in _forwarded(client, stream)), "the good file is forwarded"
        assert _wait(lambda: sender.unforwarded_feedback == 2), sender.unforwarded_feedback
        # Several scans later the young empty file is still waiting, not marked done.
        scans_until = time.monotonic() + 2.5 * publisher.SCAN_EVERY_S
        while time.monotonic() < scans_until:
            time.sleep(0.1)
        assert "fb-ev-fbtest-1.jsonl" not in (fleet / "forwarded-fb").read_text().split()
        # Its writer finishes: the next scan forwards it.
        young.write_bytes(_feedback_line(1))
        assert _wait(lambda: "ev-fbtest-1" in _forwarded(client, stream)), "the finished file is forwarded"
        assert _wait(lambda: any(
            json.loads(fields[b"d"]).get("unforwarded_feedback") == 2
            for _, fields in client.xrange(stream) if fields[b"k"] == b"hi"), timeout=3 * publisher.HEARTBEAT_S)
    finally:
        sender.close()
    assert _forwarded(client, stream) == {"ev-fbtest-1", "ev-fbtest-4"}
    done = set((fleet / "forwarded-fb").read_text().split())
    # The two old ones are done (not retried every scan) and stay in the journal for readers.
    assert {"fb-ev-fbtest-2.jsonl", "fb-ev-fbtest-3.jsonl", "fb-ev-fbtest-1.jsonl"} <= done
    assert old_empty.exists() and old_damaged.exists()
    said = [record.getMessage() for record in caplog.records if "not forwarded" in record.getMessage()]
    assert any(str(old_empty) in text and "is empty" in text for text in said), said
    assert any(str(old_damaged) in text and "no intact line" in text for text in said), said
    assert not any(str(young) in text for text in said), said
    # each said once: the first at warning, the next at info (it used to be logged at both)
    assert [sum(str(path) in text for text in said) for path in (old_empty, old_damaged)] == [1, 1], said
