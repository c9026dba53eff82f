"""The fleet's trust model under attack (issue 9): what whoever can write to the broker, without
the fleet's key, can do to instances and learners.

A broker is a network service: a writer without the key can add, delete and re-add stream
entries under stream ids of its choosing, and read everything. So these tests replay genuinely
signed outcomes and verdicts (copied from the stream, re-added with new ids), send stale, future
and old-format ones, entries of many MB, deeply nested JSON and floods of unsigned entries, to a
real instance process (before and after a restart) and to a real learner, against a real
redis-server (``redis_helpers``). What must hold: nothing refused is acted on, every refusal is
said once per cause, nothing dies or stalls, and an instance's memory does not grow with what an
attacker sized.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from redis_helpers import app_line, redis_server  # noqa: F401

from poet_runtime.fleet import wire

NS = "fleet-attacks"
KEY = b"fleet-attack-secret"

MODULE = '''\
from poet_runtime import poet


@poet(domain="ml_monitoring", optimize_for="accuracy", policy="trusted")
def detect(score: float, threshold: float = 0.5) -> dict:
    return {"drift_detected": score > threshold, "score": score}


@poet(domain="ml_monitoring", optimize_for="accuracy", policy="trusted")
def tag(score: float, note: str = "", threshold: float = 0.5) -> dict:
    return {"drift_detected": score > threshold, "score": score}
'''
SECRET = "s3cr3t-input-7f3a"  # a call's input: on the broker only where the policy sets record_inputs

# Calls detect on two scores until ``stop`` appears, printing each new pair of answers and every
# fleet.refused event; first prints the built-in version a learner would promote (threshold 0.2).
APP = '''\
import json, os, sys, threading, time
from poet_runtime import events
from mod import detect

lock = threading.Lock()

def say(value):  # one write per line, under a lock: the follower's thread reports refusals meanwhile
    with lock:
        sys.stdout.write(json.dumps(value) + "\\n")
        sys.stdout.flush()

def seen(event):
    if event["type"] == "fleet.refused":
        say({"refused": event.get("reason"), "type": event.get("outcome_type")})

events.subscribe(seen)
detect(0.3)
import poet_runtime
from mod import tag
tag(0.7, note="s3cr3t-input-7f3a")
poet_runtime.feedback(poet_runtime.last_execution().execution_id, label=True, comments="fine")
from poet_runtime.domains import get_domain
from poet_runtime.generate.builtin import BuiltinGenerator
from poet_runtime.runtime import state_of
state = state_of(detect)
made = BuiltinGenerator().generate(state.spec(), state.config, get_domain(state.config.domain),
                                   {"params": {"threshold": 0.2}})
say({"candidate": made.code, "generator": made.generator})
last = None
deadline = time.time() + 90
while not os.path.exists("stop") and time.time() < deadline:
    pair = [detect(0.3)["drift_detected"], detect(0.55)["drift_detected"]]
    if pair != last:
        say({"pair": pair})
        last = pair
    time.sleep(0.005)
'''


def _start(app: Path, url: str) -> subprocess.Popen:
    env = {name: value for name, value in os.environ.items() if not name.startswith("POET_")}
    env.update(POET_ENABLED="1", POET_HOME=str(app / ".poet"), POET_CACHE_DIR=str(app / "cache"), POET_LOG="info",
               PYTHONPATH=str(Path(__file__).resolve().parents[1]), POET_BROKER=url, POET_BROKER_NAMESPACE=NS,
               POET_BROKER_KEY=KEY.decode())
    (app / "stop").unlink(missing_ok=True)
    return subprocess.Popen([sys.executable, "main.py"], cwd=app, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _line(process, predicate) -> dict:
    return app_line(process, predicate, timeout=30.0)


def _send(client, stream: str, kind: str, message: dict, *, at: float | None = None, signature=None) -> dict:
    """Publish as a learner does (signed with the fleet's key, now or ``at``); returns the entry's
    fields, which anyone who reads the stream can copy."""
    data = json.dumps(message).encode()
    fields = {b"t": kind.encode(), b"m": data, b"l": b"test-learner",
              b"s": signature if signature is not None else wire.sign(KEY, kind.encode(), data, at=at)}
    client.xadd(stream, fields)
    return fields


def _refusals(process, count: int) -> list[str]:
    return [_line(process, lambda v: "refused" in v)["refused"] for _ in range(count)]


def _peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def _stop(app: Path, process) -> str:
    (app / "stop").write_text("")
    try:
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    return err


def test_replayed_stale_old_format_and_huge_messages_are_refused_by_an_instance_even_after_a_restart(
        tmp_path, redis_server):  # noqa: F811
    app = tmp_path / "app"
    app.mkdir()
    (app / "mod.py").write_text(MODULE)
    (app / "main.py").write_text(APP)
    client = redis_server.client()
    outcomes, learning = wire.stream(NS, wire.OUTCOMES), wire.stream(NS, "learning")
    store = app / ".poet" / "mod.detect"
    process = _start(app, redis_server.url)
    try:
        made = _line(process, lambda v: "candidate" in v)
        assert _line(process, lambda v: "pair" in v)["pair"] == [False, True]  # threshold 0.5
        # The fleet's genuine history: params, a promotion, a rollback, params again.
        p1 = _send(client, outcomes, "params.updated", {"function": "mod:detect", "version": 1,
                                                         "params": {"threshold": 0.6}})
        assert _line(process, lambda v: "pair" in v)["pair"] == [False, False]
        promoted = _send(client, outcomes, "version.promoted", {
            "function": "mod:detect", "number": 2, "generator": made["generator"],
            "files": {"code.py": made["candidate"]}, "params": {"threshold": 0.2},
            "builtin_hints": {"params": {"threshold": 0.2}}})
        assert _line(process, lambda v: "pair" in v)["pair"] == [True, True]
        rolled = _send(client, outcomes, "version.rolled_back", {"function": "mod:detect", "to": 1})
        assert _line(process, lambda v: "pair" in v)["pair"] == [False, False]
        p2 = _send(client, outcomes, "params.updated", {"function": "mod:detect", "version": 1,
                                                         "params": {"threshold": 0.4}})
        assert _line(process, lambda v: "pair" in v)["pair"] == [False, True]

        # Replays: the same signed entries, re-added under new stream ids (today: each one applies).
        for fields in (promoted, rolled, p1):
            client.xadd(outcomes, fields)
        replay = "not newer than what this instance already took for mod:detect (outcomes): a replay, or out of order"
        assert _refusals(process, 3) == [replay] * 3
        # Stale, from the future, and the old wire format (a bare HMAC over type and message).
        lower = {"function": "mod:detect", "version": 1, "params": {"threshold": 0.1}}
        _send(client, outcomes, "params.updated", lower, at=time.time() - 2 * 86400)
        _send(client, outcomes, "params.updated", lower, at=time.time() + 600)
        data = json.dumps(lower).encode()
        old = hmac.new(KEY, b"params.updated\n" + data, hashlib.sha256).hexdigest().encode()
        for _ in range(2):
            _send(client, outcomes, "params.updated", lower, signature=old)
        stale, future, *olds = _refusals(process, 4)
        assert stale.startswith("stale: signed more than 86400 s ago") and "in the future" in future
        assert olds == [wire.OLD_FORMAT] * 2
        # Verdicts: a replayed one and a stale one (its stream id is new: only its signed time tells).
        verdict = _send(client, learning, "learning.degraded", {"function": "mod:detect", "version": 99,
                                                                "rolling": 0.1, "baseline": 0.9})
        client.xadd(learning, verdict)
        _send(client, learning, "learning.degraded", {"function": "mod:detect", "version": 1, "rolling": 0.1,
                                                      "baseline": 0.9}, at=time.time() - 600)
        seen_verdict = "not newer than what this instance already took for mod:detect (verdicts): a replay, or out of order"
        stale_verdict = ("stale: signed more than 300 s ago (a replay, or a reader that was away longer; this process "
                         "keeps what its store has)")
        assert _refusals(process, 2) == [seen_verdict, stale_verdict]

        # Entries of many MB, deeply nested JSON under a signature-looking field, a flood of unsigned
        # entries: refused without being taken into the instance's memory; calls go on; then a genuine
        # message applies at once.
        before = _peak_rss_kb(process.pid)
        for _ in range(2):
            client.xadd(outcomes, {b"t": b"params.updated", b"m": b"x" * (24 << 20), b"s": b"2." + b"0" * 90})
        nested = b"[" * 200_000
        client.xadd(outcomes, {b"t": b"params.updated", b"m": nested, b"s": wire.sign(b"guess", b"params.updated",
                                                                                     nested)})
        pipe = client.pipeline(transaction=False)
        for i in range(1000):
            pipe.xadd(outcomes, {b"t": b"params.updated", b"m": b'{"function": "mod:detect", "params": {}}'})
        pipe.execute()
        p3 = _send(client, outcomes, "params.updated", {"function": "mod:detect", "version": 1,
                                                         "params": {"threshold": 0.25}})
        big = "entry too big"
        seen = _refusals(process, 1003)
        assert [r.split(" (")[0] for r in seen[:2]] == [big, big] and seen[2] == wire.BAD
        assert set(seen[3:]) == {"unsigned"}
        assert _line(process, lambda v: "pair" in v)["pair"] == [True, True]
        grown = _peak_rss_kb(process.pid) - before
        assert grown < 20_000, f"the instance's peak memory grew by {grown} kB reading 48 MB of hostile entries"
    finally:
        err = _stop(app, process)
    assert "Traceback" not in err, err[-3000:]
    assert err.count(wire.OLD_FORMAT) == 1  # said once, for two messages
    assert err.count("refused outcome") == 9, err[-4000:]  # once per cause
    ledger = json.loads((store / wire.LEDGER_FILE).read_text())
    assert ledger["outcomes"] == wire.stamp_of(p3[b"s"]).text()

    # A restarted instance refuses what was superseded before it started, whatever new stream ids they
    # come under (what it catches up on, read live then, is skipped quietly), and applies what is new.
    process = _start(app, redis_server.url)
    try:
        _line(process, lambda v: "candidate" in v)
        assert _line(process, lambda v: "pair" in v)["pair"] == [True, True]  # threshold 0.25, from params.json
        for fields in (p1, promoted, rolled, p2, p3):
            client.xadd(outcomes, fields)
        client.xadd(learning, verdict)
        _send(client, outcomes, "params.updated", {"function": "mod:detect", "version": 1,
                                                   "params": {"threshold": 0.45}})
        refused = []
        changed = _line(process, lambda v: "pair" in v or refused.append(v["refused"]))
        assert changed["pair"] == [False, True]  # the new message, and nothing replayed before it
        # All five: the newest (p3) was taken once more while catching up (no change), then its copy refused.
        assert refused.count(replay) == 5, refused[-20:]
    finally:
        err = _stop(app, process)
    assert "Traceback" not in err, err[-3000:]
    assert os.readlink(store / "current") == "v1"
    assert json.loads((store / "v1" / "params.json").read_text()) == {"threshold": 0.45}
    # What a reader of the broker sees of a call: never its inputs (no policy here sets record_inputs).
    entries = [fields for name in client.keys(f"poet:{NS}:*") if client.type(name) == b"stream"
               for _, fields in client.xrange(name)]
    assert any(b"mod:tag" in fields.get(b"d", b"") for fields in entries if fields.get(b"k") == b"ex")
    assert any(fields.get(b"k") == b"fb" and b"x" in fields for fields in entries)  # the execution went along
    assert not [fields for fields in entries if any(SECRET.encode() in value for value in fields.values())]


# -- the format and the ledger, without a broker --------------------------------------------------


def test_a_signature_binds_time_sender_and_sequence_and_a_forked_child_is_another_sender():
    data = b'{"function": "m:f"}'
    first, second = wire.sign(KEY, b"params.updated", data), wire.sign(KEY, b"params.updated", data)
    a, b = wire.check(KEY, b"params.updated", data, first)[0], wire.check(KEY, b"params.updated", data, second)[0]
    assert a.sender == b.sender and b.sequence == a.sequence + 1 and b.order > a.order  # unique, ordered
    # Moving the signed time (to look fresh) or the sequence breaks the HMAC.
    head, at, sender, sequence, mac = first.split(b".")
    for forged in (b".".join([head, str(int(at) + 10**6).encode(), sender, sequence, mac]),
                   b".".join([head, at, sender, str(int(sequence) + 7).encode(), mac])):
        assert wire.check(KEY, b"params.updated", data, forged) == (None, wire.BAD)
    assert wire.check(KEY, b"version.promoted", data, first) == (None, wire.BAD)  # bound to the type
    assert wire.check(KEY, b"params.updated", data, b"3." + first[2:])[1].startswith("another wire format")
    assert wire.check(KEY, b"params.updated", data, b"[" * 5000)[1].startswith("malformed signature")
    # A signer that knows the newest stamp of a function signs after it, whatever its clock says.
    ahead = wire.check(KEY, b"t", data, wire.sign(KEY, b"t", data, after_ms=a.at_ms + 30_000))[0]
    assert ahead.at_ms == a.at_ms + 30_001
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        os.write(write, wire.sign(KEY, b"t", data))
        os._exit(0)
    os.waitpid(child, 0)
    other = wire.stamp_of(os.read(read, 200))
    assert other.sender != a.sender, "a forked child would repeat its parent's stamps"


def test_the_ledger_refuses_what_was_superseded_in_a_shared_store_and_after_a_restart(tmp_path):
    def stamp(ms: int) -> wire.Stamp:
        return wire.stamp_of(wire.sign(KEY, b"t", b"m", at=ms / 1000))

    m1, m2, m3 = stamp(1_000), stamp(2_000), stamp(3_000)
    long_ago = time.time() - 100
    first, early = wire.Ledger(tmp_path, started=long_ago), wire.Ledger(tmp_path, started=long_ago)  # one store
    early.attach()
    assert first.admit("outcomes", m1) and first.admit("outcomes", m2)
    assert not first.admit("outcomes", m1) and not first.admit("outcomes", m2)
    # A process that started before they were taken (it may have loaded the store before their effect was
    # written) takes them too, in order, and then no copy of them ...
    assert early.admit("outcomes", m1) and early.admit("outcomes", m2) and not early.admit("outcomes", m1)
    # ... one started after (a restart) refuses what was superseded before it started; the newest once.
    restarted = wire.Ledger(tmp_path, started=time.time() + 1)
    restarted.attach()
    assert not restarted.admit("outcomes", m1)
    assert restarted.admit("outcomes", m2) and not restarted.admit("outcomes", m2)
    assert restarted.admit("outcomes", m3) and restarted.admit("learning", m1)  # verdicts: their own order
    assert wire.Ledger(tmp_path).newest("outcomes") == m3.order
    assert abs(wire.process_started() - time.time()) < 3600  # this process's start, by the wall clock
    assert wire.fresh(m3, 300, now=3.0) is None and wire.fresh(m3, 300, now=3.0 - 61).startswith("signed more")
    # A reader keeping its own newest stamp (a learner following versions) judges the same way.
    data = b'{"function": "m:f"}'
    older, newer = wire.sign(KEY, b"version.promoted", data), wire.sign(KEY, b"version.promoted", data)
    taken, why = wire.judge(KEY, b"version.promoted", data, newer, None)
    assert why is None and wire.judge(KEY, b"version.promoted", data, older, taken.text())[1].startswith("not newer")
    assert wire.judge(KEY, b"version.promoted", data, newer, taken.text())[1].startswith("not newer")
    assert wire.judge(KEY, b"version.promoted", data, wire.sign(KEY, b"version.promoted", data, at=1.0),
                      None)[1].startswith("stale")


def test_what_a_learner_seals_cannot_be_forged_changed_or_moved_to_another_key():
    member = '000000000001234-0000000000|{"e": "ev-1", "l": true}'
    sealed = wire.seal(KEY, "poet:ns:learn:stage:m:f", member)
    assert wire.unseal(KEY, "poet:ns:learn:stage:m:f", sealed) == member
    assert wire.unseal(KEY, "poet:ns:learn:stage:m:f", sealed.encode()) == member
    assert wire.unseal(KEY, "poet:ns:learn:stage:m:other", sealed) is None  # moved to another function
    assert wire.unseal(KEY, "poet:ns:learn:stage:m:f", sealed.replace("true", "false")) is None
    assert wire.unseal(KEY, "poet:ns:learn:stage:m:f", wire.seal(b"guess", "poet:ns:learn:stage:m:f", member)) is None
    assert wire.unseal(KEY, "poet:ns:learn:stage:m:f", member) is None  # written by someone without the key


# -- the learner ---------------------------------------------------------------------------------


def _feedback_line(event_id: str) -> bytes:
    from poet_runtime import journal

    return journal.encode({"id": event_id, "type": "function.feedback", "timestamp": time.time(),
                           "payload": {"function": "m:f", "execution_id": "p-1", "label": True}}, 1 << 20)


def test_a_keyless_writer_cannot_stall_the_learner_with_floods_huge_or_malformed_entries(redis_server,  # noqa: F811
                                                                                        caplog):
    from poet_runtime.fleet.learner import Learner

    client = redis_server.client()
    ns = "attack-learner"
    events = wire.stream(ns, wire.EVENTS)
    pipe = client.pipeline(transaction=False)
    for i in range(3000):  # unsigned, each under another process id (the writer picks it)
        pipe.xadd(events, {"k": "fb", "d": _feedback_line(f"e{i}"), "p": f"x{i}"})
    pipe.execute()
    client.xadd(events, {"k": "fb", "d": b"x" * (16 << 20), "s": b"2." + b"0" * 90})
    client.xadd(events, {"k": "zz", "d": b"[" * 200_000})
    client.xadd(events, {"k": "hi", "d": b"[" * 200_000, "s": wire.sign(b"guess", b"hi", b"[" * 200_000)})
    learner = Learner(redis_server.url, KEY, namespace=ns, name="a", block_ms=10)
    started = time.monotonic()
    with caplog.at_level("WARNING", logger="poet_runtime"):
        learner.run(rounds=6)
    took = time.monotonic() - started
    said = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(said) <= 3, said[:5]  # once per cause (unsigned, bad signature), not once per process id
    stats = {k.decode(): int(v) for k, v in client.hgetall(f"poet:{ns}:learn:stats").items()}
    # the 16 MB one never reached the learner (measured on the broker): refused as oversize, acknowledged
    assert stats["entries"] == 3003 and stats["refused"] == 3001 and stats["oversize"] == 1, stats
    assert stats["malformed"] == 1, stats
    assert not client.xpending(events, wire.LEARNERS)["pending"]  # all acknowledged, none learned from
    assert took < 20, took
    assert not client.exists(f"poet:{ns}:outcomes")


def test_a_feedback_entry_with_a_malformed_execution_field_does_not_stop_the_learner(redis_server):  # noqa: F811
    """An ``fb`` entry's ``x`` (the execution it is about) is the sender's: signed (format 3), but
    whatever the sender put there. A malformed one used to kill the learner, and again after every
    restart (the entry stays pending)."""
    from poet_runtime.fleet.learner import Learner

    client = redis_server.client()
    ns = "attack-x"
    for i, x in enumerate((b"[" * 200_000, b"not json", b"[1, 2]")):
        fields = {"k": "fb", "d": _feedback_line(f"e-x{i}"), "p": "p", "x": x}
        client.xadd(wire.stream(ns, wire.EVENTS), {**fields, "s": wire.sign_entry(KEY, fields)})
    Learner(redis_server.url, KEY, namespace=ns, name="a", block_ms=10).run(rounds=2)
    Learner(redis_server.url, KEY, namespace=ns, name="a", block_ms=10).run(rounds=2)  # restarted: its pending ones
    # Without a usable x, each waits for its execution as a feedback without x does (then counts as unmatched).
    assert client.xpending(wire.stream(ns, wire.EVENTS), wire.LEARNERS)["pending"] == 3


@pytest.mark.parametrize("kind", ["fb", "ex", "lr", "hi"])
def test_a_signed_entry_nested_past_the_parsers_depth_is_malformed_not_a_crash_loop(redis_server, kind):  # noqa: F811
    """A journal line is JSON an instance wrote, and feedback comments are the caller's: nested deep
    enough, decoding it raises RecursionError, not ValueError. It used to escape ``stage`` (never
    acknowledged, so every round and every restart crashed on it again)."""
    import zlib

    from poet_runtime.fleet.learner import Learner

    client = redis_server.client()
    ns = f"attack-deep-{kind}"
    deep = "[" * 100_000 + "]" * 100_000
    text = ('{"id": "deep", "type": "function.feedback", "payload": {"function": "m:f", "execution_id": "p-1", '
            f'"label": true, "comments": {deep}}}}}').encode()
    line = b"%08x " % zlib.crc32(text) + text + b"\n"
    fields = {"k": kind, "d": line, "p": "p"}
    client.xadd(wire.stream(ns, wire.EVENTS), {**fields, "s": wire.sign_entry(KEY, fields)})
    after = {"k": "fb", "d": _feedback_line("e-after"), "p": "p", "x": json.dumps(
        {"function": "m:f", "execution_id": "p-1", "version": 1, "output": {"drift_detected": True}})}
    client.xadd(wire.stream(ns, wire.EVENTS), {**after, "s": wire.sign_entry(KEY, after)})
    Learner(redis_server.url, KEY, namespace=ns, name="a", block_ms=10).run(rounds=2)
    stats = {k.decode(): int(v) for k, v in client.hgetall(f"poet:{ns}:learn:stats").items()}
    assert stats["entries"] == 2 and stats["staged"] == 1, stats  # the one after it goes on
    assert stats.get("malformed", 0) == (kind in ("fb", "hi")), stats  # ex/lr lines that do not decode are skipped
    assert not client.xpending(wire.stream(ns, wire.EVENTS), wire.LEARNERS)["pending"]


def test_feedback_written_straight_into_the_learners_stage_is_not_learned_from(redis_server):  # noqa: F811
    from poet_runtime.fleet.learner import Learner

    client = redis_server.client()
    ns = "attack-stage"
    spec = {"version": 1, "objective": "accuracy", "domain": "ml_monitoring",
            "parameters": {"threshold": {"default": 0.5, "min": 0.0, "max": 1.0}}, "params": {"threshold": 0.5}}
    client.hset(f"poet:{ns}:functions", "mod:detect", json.dumps(spec))
    forged = {}
    for i in range(60):  # labels that say the threshold is 0.8, below the watermark of an empty stream
        score = (i % 20) / 20
        item = {"e": f"forged-{i}", "t": time.time(), "x": f"p-{i}", "k": True, "v": 1, "u": False,
                "o": {"drift_detected": score > 0.5, "score": score}, "l": score > 0.8}
        forged[f"{0:015d}-{0:010d}|{json.dumps(item)}"] = 0
    client.zadd(f"poet:{ns}:learn:stage:mod:detect", forged)
    client.sadd(f"poet:{ns}:learn:staged", "mod:detect")
    Learner(redis_server.url, KEY, namespace=ns, name="a", block_ms=10).run(rounds=2)
    signed = [json.loads(f[b"m"]) for _, f in client.xrange(wire.stream(ns, wire.OUTCOMES))]
    assert signed == [], f"the learner signed what nobody signed: {signed}"


def test_the_learner_does_not_follow_a_replayed_promotion(redis_server):  # noqa: F811
    from poet_runtime.fleet.learner import Learner

    client = redis_server.client()
    ns = "attack-versions"
    events, outcomes = wire.stream(ns, wire.EVENTS), wire.stream(ns, wire.OUTCOMES)

    def heartbeat():  # an instance's, signed: it also moves the watermark a switch waits for
        data = json.dumps({"host": "h", "pid": 1, "process": "p1", "root": "/nonexistent", "functions": {
            "mod:detect": {"version": 1, "objective": "accuracy", "domain": "ml_monitoring",
                           "parameters": {"threshold": {"default": 0.5, "min": 0.0, "max": 1.0}},
                           "params": {"threshold": 0.5}}}}).encode()
        time.sleep(0.002)  # a later stream id than the outcomes before it
        fields = {"k": "hi", "d": data, "p": "p1"}
        client.xadd(events, {**fields, "s": wire.sign_entry(KEY, fields)})

    learner = Learner(redis_server.url, KEY, namespace=ns, name="a", block_ms=10)
    heartbeat()
    learner.run(rounds=2)
    promoted = _send(client, outcomes, "version.promoted", {"function": "mod:detect", "number": 2, "by": "h:1",
                                                            "files": {"code.py": "pass"}})
    _send(client, outcomes, "version.rolled_back", {"function": "mod:detect", "to": 1, "numbering": "local",
                                                    "by": "h:1"})
    heartbeat()
    learner.run(rounds=3)

    def version():
        return json.loads(client.get(f"poet:{ns}:learn:state:mod:detect"))["version"]

    assert version() == 1  # promoted, then rolled back: the genuine history
    for entry_id, _ in client.xrange(outcomes):  # the writer deletes what would show the copy is old ...
        client.xdel(outcomes, entry_id)
    client.xadd(outcomes, promoted)  # ... and adds the copy
    heartbeat()
    learner.run(rounds=3)
    assert version() == 1, "the learner followed a replayed promotion"


def test_the_learners_reads_are_measured_on_the_broker_not_in_its_memory(redis_server):  # noqa: F811
    """Entries a writer sized (signed or not) reach a learner as a marker when bigger than
    ``wire.MAX_ENTRY_BYTES``, and one read brings about ``wire.READ_BUDGET_BYTES``: the rest stays
    pending for the learner and comes with its next reads, nothing lost, nothing poisoning the group."""
    import tracemalloc

    from poet_runtime.fleet.learner import Learner

    client = redis_server.client()
    ns = "attack-size"
    events = wire.stream(ns, wire.EVENTS)
    for i in range(3):
        big = b"[" + b"1," * (3 << 20) + b"1]\n"  # 6 MB, signed: the key holder's own mistake, or a copy
        client.xadd(events, {"k": "ex", "d": big, "p": "p", "s": wire.sign_entry(KEY, {"k": "ex", "d": big, "p": "p"})})
    learner = Learner(redis_server.url, KEY, namespace=ns, name="a", block_ms=10)
    learner.ensure_group()
    tracemalloc.start()
    try:
        entries = learner.read()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(entries) == 3 and all(set(fields) == {b"oversize"} for _, fields in entries), entries
    assert peak < 2 << 20, peak
    learner.stage(entries)
    stats = {k.decode(): int(v) for k, v in client.hgetall(f"poet:{ns}:learn:stats").items()}
    assert stats["oversize"] == 3 and not client.xpending(events, wire.LEARNERS)["pending"], stats
    # Under the entry limit but over the read budget together: taken in several reads, all of them.
    execution = json.dumps({"function": "m:f", "execution_id": "p-1", "output": {"score": 0.5}, "version": 1,
                            "pad": "0" * (3 << 20)})
    for i in range(12):
        line = _feedback_line(f"e-budget-{i}")
        fields = {"k": "fb", "d": line, "p": "p", "x": execution}
        client.xadd(events, {**fields, "s": wire.sign_entry(KEY, fields)})
    sizes = []
    for _ in range(8):
        entries = learner.read()
        sizes.append(len(entries))
        learner.stage(entries)
        if sum(sizes) >= 12:
            break
    assert sizes[0] < 12 and sum(sizes) >= 12, sizes  # 3 MB each: about 16 MB a read
    stats = {k.decode(): int(v) for k, v in client.hgetall(f"poet:{ns}:learn:stats").items()}
    assert stats["entries"] == 3 + 12, stats


def test_group_read_answers_as_xreadgroup_and_xautoclaim_with_oversize_entries_held_back(redis_server):  # noqa: F811
    client = redis_server.client()
    client.xgroup_create("s", "g", id="0", mkstream=True)
    ids = [client.xadd("s", {"k": value}) for value in (b"a", b"b" * 2000, b"c", b"d")]
    _, new, _ = wire.group_read(client, "s", "g", "me", ">", count=10, limit=1000)
    assert new == [(ids[0], {b"k": b"a"}), (ids[1], {b"oversize": b"2001"}), (ids[2], {b"k": b"c"}),
                   (ids[3], {b"k": b"d"})]
    assert client.xreadgroup("g", "me", {"s": "0"}, count=10)[0][1][1][0] == ids[1]  # delivered all the same
    client.xdel("s", ids[2])
    _, own, _ = wire.group_read(client, "s", "g", "me", "0", count=10, limit=1000)
    assert own == [(ids[0], {b"k": b"a"}), (ids[1], {b"oversize": b"2001"}), (ids[2], None), (ids[3], {b"k": b"d"})]
    start, claimed, _ = wire.group_read(client, "s", "g", "other", "0-0", count=10, claim_idle_ms=0, limit=1000)
    assert [i for i, _ in claimed] == [ids[0], ids[1], ids[3]] and claimed[1][1] == {b"oversize": b"2001"}
    assert client.xpending_range("s", "g", "-", "+", 10, consumername="other")  # claimed: now other's
    client.xack("s", "g", *ids)
    more = [client.xadd("s", {"k": b"e" * 600}) for _ in range(4)]
    _, first, cut = wire.group_read(client, "s", "g", "me", ">", count=10, budget=1000)
    assert [i for i, _ in first] == more[:2] and cut  # past the budget: the rest pending for this consumer
    _, rest, rest_cut = wire.group_read(client, "s", "g", "me", "0", count=10)
    assert [i for i, _ in rest] == more and not rest_cut


def test_a_forged_future_outcome_does_not_make_an_instance_sign_its_promotion_after_it(redis_server):  # noqa: F811
    """``regenerate.newer_before`` (the elected instance re-signs a promotion that a later-signed
    outcome got in ahead of) counts only outcomes that verify, from a clock readers accept: a
    writer's unsigned or forged entry stamped an hour ahead would otherwise push the promotion's
    signature into the future, where every instance refuses it."""
    from poet_runtime.fleet import regenerate

    client = redis_server.client()
    outcomes = wire.stream("attack-newer", wire.OUTCOMES)
    function = "mod:detect"
    ahead_ms = int((time.time() + 3600) * 1000)
    forged_mac = hmac.new(b"not-the-key", b"x", hashlib.sha256).hexdigest()
    client.xadd(outcomes, {b"t": b"params.updated", b"m": json.dumps({"function": function}).encode(),
                           b"s": f"2.{ahead_ms}.{'e' * 16}.1.{forged_mac}".encode()})  # forged, an hour ahead
    _send(client, outcomes, "params.updated", {"function": function}, at=time.time() + 3600)  # genuine key, clock
    _send(client, outcomes, "params.updated", {"function": "mod:other"}, at=time.time() + 5)  # another function
    promoted = _send(client, outcomes, "version.promoted", {"function": function, "number": 2})
    [(entry_id, _)] = client.xrevrange(outcomes, count=1)
    stamp = wire.stamp_of(promoted[b"s"])
    assert regenerate.newer_before(client, KEY, outcomes, entry_id.decode(), function, stamp) is None
    # A genuine outcome signed after the promotion but added before it still makes it re-sign.
    later = time.time() + 2
    _send(client, outcomes, "params.updated", {"function": function}, at=later)
    promoted = _send(client, outcomes, "version.promoted", {"function": function, "number": 2},
                     at=time.time())
    [(entry_id, _)] = client.xrevrange(outcomes, count=1)
    found = regenerate.newer_before(client, KEY, outcomes, entry_id.decode(), function,
                                    wire.stamp_of(promoted[b"s"]))
    assert found is not None and abs(found - later * 1000) < 2


def test_a_copy_of_an_old_signed_entry_re_added_is_not_learned_from_again(redis_server):  # noqa: F811
    """Signatures do not bind the stream id: a copy of a signed feedback re-added later verifies. Within
    ``learn:seen``'s window its event id makes it a duplicate; past it (7 days, or SEEN_MAX ids) it would
    count again. An instance signs as it sends, so an entry signed over ``ENTRY_MAX_AGE_S`` before the
    broker took it is a copy (or a clock that far behind): ignored, counted as entries_replayed."""
    from poet_runtime.fleet import staging
    from poet_runtime.fleet.learner import Learner

    client = redis_server.client()
    ns = "attack-copy"
    execution = json.dumps({"function": "m:f", "execution_id": "p-1", "version": 1,
                            "output": {"drift_detected": True}})
    for n, age in enumerate((staging.ENTRY_MAX_AGE_S + 60, staging.ENTRY_MAX_AGE_S - 600, 0)):
        fields = {"k": "fb", "d": _feedback_line(f"e-copy{n}"), "p": "p", "x": execution}
        client.xadd(wire.stream(ns, wire.EVENTS),
                    {**fields, "s": wire.sign_entry(KEY, fields, at=time.time() - age)})
    Learner(redis_server.url, KEY, namespace=ns, name="a", block_ms=10).run(rounds=2)
    stats = {k.decode(): int(v) for k, v in client.hgetall(f"poet:{ns}:learn:stats").items()}
    # the old one is refused; one signed within the bound (a clock ten minutes behind, say) is taken
    assert stats["entries_replayed"] == 1 and stats["staged"] == 2 and stats["entries"] == 3, stats
    assert not client.xpending(wire.stream(ns, wire.EVENTS), wire.LEARNERS)["pending"]


def test_looking_for_newer_outcomes_before_a_promotion_is_measured_on_the_broker(redis_server):  # noqa: F811
    """``regenerate.newer_before`` reads the outcomes just before an instance's promotion; anyone can add
    entries of any size there. It read up to 200 of them whole (three of 6 MB took 18 MB); now through
    the broker-side bound, and the genuine newer outcome behind the big ones is still found."""
    import tracemalloc

    from poet_runtime.fleet import regenerate

    client = redis_server.client()
    stream = wire.stream("attack-newer", wire.OUTCOMES)
    before = wire.stamp_of(wire.sign(KEY, b"version.promoted", b"{}"))
    data = json.dumps({"function": "m:f", "params": {"threshold": 0.5}}).encode()
    signature = wire.sign(KEY, b"params.updated", data)
    client.xadd(stream, {"t": b"params.updated", "m": data, "s": signature})
    for _ in range(3):
        client.xadd(stream, {"t": b"params.updated", "m": b"[" + b"1," * (3 << 20) + b"1]", "s": b"x"})
    entry_id = client.xadd(stream, {"t": b"version.promoted", "m": b"{}", "s": b"x"}).decode()
    tracemalloc.start()
    try:
        newest = regenerate.newer_before(client, KEY, stream, entry_id, "m:f", before)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert newest == wire.stamp_of(signature).at_ms
    assert peak < 2 << 20, peak
    # the reverse read answers what XREVRANGE does, newest first, within its bounds
    assert [i for i, _ in wire.revrange_bounded(client, stream, "+", "-", count=2)] == [
        i for i, _ in client.xrevrange(stream, count=2)]


def test_the_learners_watermark_and_status_lag_read_no_entry_whole(redis_server):  # noqa: F811
    """The watermark needs only the outcomes stream's newest id, and ``status`` only how many events
    entries are behind the group: both used to read entries whole (the newest outcome; up to 100,000
    events), and anyone can add entries of any size. Now the broker answers an id and a count."""
    import tracemalloc

    from poet_runtime.fleet import status
    from poet_runtime.fleet.learner import Learner

    client = redis_server.client()
    ns = "attack-whole"
    events, outcomes = wire.stream(ns, wire.EVENTS), wire.stream(ns, wire.OUTCOMES)
    big = b"[" + b"1," * (3 << 20) + b"1]"  # 6 MB
    newest = client.xadd(outcomes, {"t": b"params.updated", "m": big, "s": b"x"})
    learner = Learner(redis_server.url, KEY, namespace=ns, name="a", block_ms=10)
    learner.ensure_group()
    for _ in range(3):
        client.xadd(events, {"k": b"fb", "d": big, "p": b"p"})
    for _ in range(1500):  # more than the count script's chunk
        client.xadd(events, {"k": b"fb", "d": b"x", "p": b"p"})
    assert wire.last_id(client, outcomes) == newest and wire.last_id(client, "poet:none") is None
    tracemalloc.start()
    try:
        learner.watermark(client.pipeline(transaction=False))
        report = status.collect(client, ns)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert report["group"]["lag"] == 1503 and not report["group"]["lag_capped"], report["group"]
    assert peak < 2 << 20, peak
    assert wire.count_after(client, events, "-", 1000) == 1000  # capped at the limit asked
