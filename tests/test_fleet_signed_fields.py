"""Every field of an events entry that the learner trusts is signed (issue 9): a writer with broker
access but without the key copies signed entries and changes what the old signature left open (an
``fb`` entry's ``x``, an ``ex`` batch's ``p`` or ``m``), or re-adds an entry signed the old way;
each copy is refused (counted, logged once per cause, acknowledged) and never learned from. A
sender's signed ``x`` about another execution is ignored and the execution looked up instead.
Real redis-server, real learners; the attacker is this test writing to the broker without the key.
"""

from __future__ import annotations

import json
import time

import pytest
from redis_helpers import redis_server  # noqa: F401

from poet_runtime import journal
from poet_runtime.fleet import wire

KEY = b"signed-fields-secret"
FUNCTION = "mod:detect"


def _signed(fields: dict) -> dict:
    return {**fields, "s": wire.sign_entry(KEY, fields)}


def _feedback(execution_id: str, event_id: str) -> bytes:
    return journal.encode({"id": event_id, "type": "function.feedback", "timestamp": time.time(),
                           "payload": {"function": FUNCTION, "version": 1, "execution_id": execution_id,
                                       "label": True}}, 1 << 20)


def _execution(execution_id: str, output) -> bytes:
    return json.dumps({"function": FUNCTION, "version": 1, "execution_id": execution_id, "status": "ok",
                       "output": output}).encode()


def _batch(number: int, output) -> bytes:
    """An execution batch line holding execution ``number`` of ``FUNCTION`` (process: the entry's ``p``)."""
    group = [FUNCTION, 1, "accuracy", 1, [time.time()], [number], [1], [2], [3], [4], "ok", None, None, 1, [output]]
    return journal.encode_columns(["C", None, 0.0], [group])


def _header(process: str) -> bytes:
    return json.dumps({"process": process, "pid": 1, "metadata": {}}).encode()


def _stage(server, ns: str):
    """One learner read and stage of everything on the stream; (learner, staged items by event id, stats)."""
    from poet_runtime.fleet.learner import Learner

    learner = Learner(server.url, KEY, namespace=ns, name="a", block_ms=10)
    learner.ensure_group()
    learner.stage(learner.read())
    staged: dict = {}
    for rows in learner.memo.values():  # each staged member's rows, decoded
        for _, item in rows:
            staged.setdefault(item["e"], []).append(item)
    client = server.client()
    stats = {k.decode(): int(v) for k, v in client.hgetall(f"poet:{ns}:learn:stats").items()}
    assert not client.xpending(wire.stream(ns, wire.EVENTS), wire.LEARNERS)["pending"], "all acknowledged"
    return learner, staged, stats


def _copy(client, stream: str, entry_id, **changes) -> None:
    """What a keyless writer does: re-add a signed entry it read, some fields changed (None: removed)."""
    (_, fields), = client.xrange(stream, entry_id, entry_id)
    fields = {k.decode(): v for k, v in fields.items()}
    for name, value in changes.items():
        if value is None:
            fields.pop(name, None)
        else:
            fields[name] = value
    client.xadd(stream, fields)


def test_a_copied_feedback_with_another_output_in_x_is_refused(redis_server, caplog):  # noqa: F811
    client = redis_server.client()
    ns = "signed-x"
    stream = wire.stream(ns, wire.EVENTS)
    genuine = client.xadd(stream, _signed({"k": b"fb", "d": _feedback("aaaa-1", "fb-a"), "p": b"aaaa",
                                           "h": b"h", "i": 1, "o": b"fb-a.jsonl:0",
                                           "x": _execution("aaaa-1", {"drift_detected": False})}))
    # the same signed feedback, now said to be about an output that would teach the opposite
    _copy(client, stream, genuine, x=_execution("aaaa-1", {"drift_detected": True}))
    _copy(client, stream, genuine, x=None)  # x removed: absent is not what was signed either
    _copy(client, stream, genuine, x=b"")  # nor empty
    with caplog.at_level("WARNING", logger="poet_runtime"):
        _, staged, stats = _stage(redis_server, ns)
    assert [item["o"] for item in staged["fb-a"]] == [{"drift_detected": False}], staged
    assert stats["refused"] == 3 and stats["entries"] == 4, stats
    said = [r.getMessage() for r in caplog.records if "refused fb entry" in r.getMessage()]
    assert len(said) == 1 and wire.ENTRY_BAD in said[0], said  # once per cause


def test_a_copied_execution_batch_under_another_process_is_refused(redis_server):  # noqa: F811
    """An ``ex`` batch is indexed under its ``p``: a copy of process bbbb's batch re-added as aaaa's
    would make aaaa's feedback find bbbb's execution of the same number."""
    client = redis_server.client()
    ns = "signed-p"
    stream = wire.stream(ns, wire.EVENTS)
    client.xadd(stream, _signed({"k": b"ex", "d": _batch(1, {"drift_detected": False}), "p": b"aaaa",
                                 "m": _header("aaaa")}))
    theirs = client.xadd(stream, _signed({"k": b"ex", "d": _batch(1, {"drift_detected": True}), "p": b"bbbb",
                                          "m": _header("bbbb")}))
    _copy(client, stream, theirs, p=b"aaaa")
    _copy(client, stream, theirs, p=b"aaaa", m=_header("aaaa"))  # its header changed to match as well
    client.xadd(stream, _signed({"k": b"fb", "d": _feedback("aaaa-1", "fb-a"), "p": b"aaaa"}))  # no x: looked up
    _, staged, stats = _stage(redis_server, ns)
    assert [item["o"] for item in staged["fb-a"]] == [{"drift_detected": False}], staged
    assert stats["refused"] == 2, stats
    index = client.zrange(f"poet:{ns}:learn:exidx:aaaa", 0, -1)
    assert len(index) == 1, index  # the copies were not indexed under aaaa


def test_a_copied_execution_batch_with_another_header_is_refused(redis_server):  # noqa: F811
    client = redis_server.client()
    ns = "signed-m"
    stream = wire.stream(ns, wire.EVENTS)
    batch = client.xadd(stream, _signed({"k": b"ex", "d": _batch(1, {"drift_detected": False}), "p": b"aaaa",
                                         "m": _header("aaaa")}))
    _copy(client, stream, batch, m=_header("bbbb"))
    _copy(client, stream, batch, m=None)
    _copy(client, stream, batch, h=b"elsewhere")  # host, pid and origin are signed too
    _, _, stats = _stage(redis_server, ns)
    assert stats["refused"] == 3 and stats["entries"] == 4, stats


def test_an_entry_signed_the_old_way_is_refused_and_the_log_says_upgrade(redis_server, caplog):  # noqa: F811
    """Upgrade rule: an events entry with a format-2 signature (kind and data only) is refused, even
    one whose unsigned fields are untouched: this reader cannot tell, and its p is always trusted."""
    client = redis_server.client()
    ns = "signed-old"
    stream = wire.stream(ns, wire.EVENTS)
    line = _feedback("aaaa-1", "fb-old")
    client.xadd(stream, {"k": b"fb", "d": line, "p": b"aaaa", "s": wire.sign(KEY, b"fb", line),
                         "x": _execution("aaaa-1", {"drift_detected": False})})
    batch = _batch(2, {"drift_detected": False})
    client.xadd(stream, {"k": b"ex", "d": batch, "p": b"aaaa", "s": wire.sign(KEY, b"ex", batch)})
    with caplog.at_level("WARNING", logger="poet_runtime"):
        _, staged, stats = _stage(redis_server, ns)
    assert staged == {} and stats["refused"] == 2, (staged, stats)
    said = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(said) == 1 and "signed by an older version of poet_runtime: upgrade that instance" in said[0], said
    assert not client.exists(f"poet:{ns}:learn:exidx:aaaa")


def test_a_signed_x_about_another_execution_is_ignored_and_the_execution_looked_up(redis_server,  # noqa: F811
                                                                                   caplog):
    client = redis_server.client()
    ns = "signed-x-other"
    stream = wire.stream(ns, wire.EVENTS)
    client.xadd(stream, _signed({"k": b"ex", "d": _batch(1, {"drift_detected": False}), "p": b"aaaa"}))
    # signed by a key holder (a sender's bug): the feedback is on aaaa-1, its x is bbbb-7's execution
    client.xadd(stream, _signed({"k": b"fb", "d": _feedback("aaaa-1", "fb-a"), "p": b"aaaa",
                                 "x": _execution("bbbb-7", {"drift_detected": True})}))
    with caplog.at_level("WARNING", logger="poet_runtime"):
        _, staged, stats = _stage(redis_server, ns)
    assert [(item["x"], item["o"]) for item in staged["fb-a"]] == [("aaaa-1", {"drift_detected": False})], staged
    assert stats["x_ignored"] == 1 and "refused" not in stats, stats
    assert any("x ignored" in r.getMessage() for r in caplog.records)


def test_the_signed_bytes_are_unambiguous_and_absent_is_not_empty():
    fields = {"k": b"fb", "d": b"ab", "p": b"c"}
    signature = wire.sign_entry(KEY, fields)
    as_read = {k.encode(): v for k, v in {**fields, "s": signature}.items()}
    assert wire.check_entry(KEY, as_read)[1] is None
    for changed in ({b"d": b"a", b"p": b"bc"},  # a byte moved from one field to the next
                    {b"p": b"c", b"h": b""},  # an empty field added
                    {b"x": b""}, {b"m": b""}, {b"i": b"7"},
                    {b"k": b"lr"}):
        assert wire.check_entry(KEY, {**as_read, **changed})[1] == wire.ENTRY_BAD, changed
    assert wire.check_entry(b"another key", as_read)[1] == wire.ENTRY_BAD
    # str and int values are signed as Redis holds them (redis-py's encoding)
    typed = {"k": b"ex", "d": b"line", "p": "proc", "i": 1234, "o": "ex-1.jsonl:0"}
    read = {b"k": b"ex", b"d": b"line", b"p": b"proc", b"i": b"1234", b"o": b"ex-1.jsonl:0",
            b"s": wire.sign_entry(KEY, typed)}
    assert wire.verify_entry(KEY, read)
    stamp = wire.stamp_of(read[b"s"])
    assert stamp is not None and wire.check_entry(KEY, read)[0] == stamp
    # an outcome's signature never stands for an entry's (another prefix), nor the other way round
    outcome = wire.sign(KEY, b"fb", b"ab")
    assert wire.check_entry(KEY, {**as_read, b"s": outcome})[1] == wire.OLD_ENTRY
    assert not wire.verify(KEY, b"fb", b"ab", signature)
    assert "another wire format" in wire.check_entry(KEY, {**as_read, b"s": b"4." + signature[2:]})[1]
    with pytest.raises(TypeError):
        wire.sign_entry(KEY, {"k": b"fb", "d": 1.5})
