"""Fleet regeneration (issue 9): on the learner's signed ``learning.degraded``, one instance of the
fleet regenerates, screens and publishes a signed ``version.promoted`` that every instance applies;
a degradation of the promoted version rolls it back everywhere; an unsigned verdict does nothing.

Real parts only: a real redis-server (``redis_helpers``), two app processes started as real
subprocesses with ``POET_BROKER`` and the fleet's key, each with its own store (two hosts). The
test plays the learner: it publishes the verdicts on ``poet:NS:learning``, signed as a learner signs.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from redis_helpers import app_line, redis_server  # noqa: F401

from poet_runtime import journal
from poet_runtime.fleet import wire

NS = "fleet-regen-test"
KEY = "fleet-regen-secret"

MODULE = '''\
from poet_runtime import poet


@poet(domain="ml_monitoring", optimize_for="accuracy", policy="trusted")
def detect(score: float, threshold: float = 0.5) -> dict:
    return {"drift_detected": score > threshold, "score": score}
'''

MAIN = '''\
import json, os, time
from poet_runtime import events
from mod import detect

def seen(event):
    if event["type"] == "fleet.refused":
        print(json.dumps({"refused": event.get("reason")}), flush=True)

events.subscribe(seen)
detect(0.3)
print(json.dumps({"ready": True}), flush=True)
deadline = time.time() + 60
while not os.path.exists("stop") and time.time() < deadline:
    detect(0.3)
    time.sleep(0.01)
'''


def _app(tmp_path: Path, name: str) -> Path:
    app = tmp_path / name
    app.mkdir()
    (app / "mod.py").write_text(MODULE)
    (app / "main.py").write_text(MAIN)
    return app


def _start(app: Path, broker: str, *args: str) -> subprocess.Popen:
    env = {name: value for name, value in os.environ.items() if not name.startswith("POET_")}
    env.update(POET_ENABLED="1", POET_HOME=str(app / ".poet"), POET_CACHE_DIR=str(app / "cache"), POET_LOG="info",
               PYTHONPATH=str(Path(__file__).resolve().parents[1]), POET_BROKER=broker,
               POET_BROKER_NAMESPACE=NS, POET_BROKER_KEY=KEY)
    return subprocess.Popen([sys.executable, "main.py", *args], cwd=app, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _line(process, predicate) -> dict:
    return app_line(process, predicate, timeout=15.0)


def _verdict(client, message: dict, key: bytes | None) -> None:
    data = json.dumps(message).encode()
    fields = {"t": "learning.degraded", "m": data, "l": "test-learner"}
    if key is not None:
        fields["s"] = wire.sign(key, b"learning.degraded", data)
    client.xadd(wire.stream(NS, "learning"), fields)


def _current(app: Path) -> str:
    return os.readlink(app / ".poet" / "mod.detect" / "current")


def _wait(predicate, timeout: float = 10.0, detail=None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out" + (f": {detail()}" if detail else ""))
        time.sleep(0.05)


def _degraded(version: int, numbering: str = "local") -> dict:
    failures = [{"execution_id": f"x-{i}", "output": {"drift_detected": False, "score": 0.45}, "label": True,
                 "version": version} for i in range(3)]
    # The labelled executions a candidate is screened on (a fleet instance has none of its own).
    samples = [{"output": {"drift_detected": score > 0.5, "score": score}, "label": score > 0.4}
               for score in (i / 20 for i in range(20))]
    evidence = {"objective": "accuracy", "rolling": 0.41, "baseline": 0.9, "trend": [0.9, 0.6, 0.41],
                "recent_failures": failures, "comments": ["misses drift at 0.45"], "samples": samples}
    return {"function": "mod:detect", "version": version, "numbering": numbering, "objective": "accuracy",
            "rolling": 0.41,
            "baseline": 0.9, "evidence": evidence, "cause": "fb-test", "at": time.time(), "learner": "test-learner"}


def test_one_instance_regenerates_for_the_fleet_and_a_degraded_promotion_rolls_back(tmp_path,
                                                                                  redis_server):  # noqa: F811
    apps = [_app(tmp_path, "host-a"), _app(tmp_path, "host-b")]
    processes = [_start(app, redis_server.url) for app in apps]
    client = redis_server.client()
    outcomes = wire.stream(NS, wire.OUTCOMES)
    try:
        for process in processes:
            _line(process, lambda v: v.get("ready"))
        # Unsigned, then wrongly signed: refused by both, nothing regenerated, nothing published.
        _verdict(client, _degraded(1), None)
        _verdict(client, _degraded(1), b"not-the-fleet-key")
        for process in processes:
            assert _line(process, lambda v: "refused" in v)["refused"] == "unsigned"
            assert _line(process, lambda v: "refused" in v)["refused"].startswith("bad signature")
        assert client.xlen(outcomes) == 0
        assert [_current(app) for app in apps] == ["v1", "v1"]
        assert not client.keys(f"poet:{NS}:regen:*")

        # Signed, but nothing to screen a candidate on: nothing is generated, nothing published.
        unjudged = _degraded(1)
        del unjudged["evidence"]["samples"]
        _verdict(client, unjudged, KEY.encode())
        root = [app / ".poet" / "events" for app in apps]
        _wait(lambda: sum(len(list(journal.read(r, {"version.regeneration_failed"}))) for r in root) == 1)
        assert client.xlen(outcomes) == 0 and [_current(app) for app in apps] == ["v1", "v1"]

        # Signed as a learner signs: exactly one instance regenerates; both run what it promotes.
        _verdict(client, _degraded(1), KEY.encode())
        _wait(lambda: [_current(app) for app in apps] == ["v2", "v2"])
        promoted = client.xrange(outcomes)
        assert [fields[b"t"] for _, fields in promoted] == [b"version.promoted"]
        fields = promoted[0][1]
        assert wire.verify(KEY.encode(), fields[b"t"], fields[b"m"], fields[b"s"])
        message = json.loads(fields[b"m"])
        assert message["number"] == 2 and message["previous"] == 1 and message["files"]["code.py"]
        decided = [[e["type"] for e in journal.read(app / ".poet" / "events", {"version.candidate"})] for app in apps]
        assert sorted(len(d) for d in decided) == [0, 1], decided  # one regenerated, the other did not
        elected = client.get(f"poet:{NS}:regen:mod:detect:1").decode()
        assert elected == message["by"]
        for app in apps:
            metadata = json.loads((app / ".poet" / "mod.detect" / "v2" / "metadata.json").read_text())
            assert metadata["fleet"]["number"] == 2
            assert (app / ".poet" / "mod.detect" / "v2" / "code.py").read_text() == message["files"]["code.py"]
        # The candidate was made from the learner's evidence, not the instance's own monitor.
        regenerated = apps[[len(d) for d in decided].index(1)]
        candidate = json.loads((regenerated / ".poet" / "mod.detect" / "v2" / "metadata.json").read_text())
        assert candidate["evidence"]["comments"] == ["misses drift at 0.45"]
        assert candidate["evidence"]["rolling"] == 0.41
        assert candidate["scores"]["samples"] == 20  # screened on the labelled executions the verdict carries

        # The promoted version degrades while on probation: rolled back in both, published once.
        _verdict(client, _degraded(2, "fleet"), KEY.encode())
        _wait(lambda: [_current(app) for app in apps] == ["v1", "v1"])
        kinds = [fields[b"t"] for _, fields in client.xrange(outcomes)]
        assert kinds == [b"version.promoted", b"version.rolled_back"]
        rolled = json.loads(client.xrange(outcomes)[-1][1][b"m"])
        assert rolled["function"] == "mod:detect" and rolled["to"] == 1
    finally:
        for app in apps:
            (app / "stop").write_text("")
        errors = []
        for process in processes:
            try:
                errors.append(process.communicate(timeout=20)[1])
            finally:
                if process.poll() is None:
                    process.kill()
    for err in errors:
        assert "Traceback" not in err, err[-3000:]


# -- a real fleet: two instances, a real learner, feedback that degrades ---------------------------

DRIVEN = '''\
import json, os, random, sys, time
from pathlib import Path
from mod import detect
from poet_runtime.fleet import follower

rng = random.Random(int(sys.argv[1]))
detect(0.3)
print(json.dumps({"ready": True}), flush=True)
phase, reported, deadline = 0, 0, time.time() + 120
while not os.path.exists("stop") and time.time() < deadline:
    go = Path(f"go-{phase}")
    if go.exists():  # the test's next phase: this many calls, each labelled by the phase's rule
        rule = json.loads(go.read_text())
        for _ in range(rule["count"]):
            score = rng.random()
            detect(score)
            detect.feedback(label=(score > rule["boundary"]) == rule["above"])
        print(json.dumps({"done": phase}), flush=True)
        phase += 1
    applied = follower.get().applied if follower.get() is not None else []
    for entry_id, kind, _function, _lag in applied[reported:]:
        print(json.dumps({"applied": entry_id, "kind": kind}), flush=True)
    reported = len(applied)
    time.sleep(0.01)
'''


class _Reader:
    """Every JSON line an app prints, collected by a thread (the test waits on several at once)."""

    def __init__(self, process):
        import threading

        self.process, self.lines = process, []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.process.stdout:
            with contextlib.suppress(ValueError):
                self.lines.append(json.loads(line))

    def has(self, predicate) -> bool:
        return any(predicate(line) for line in list(self.lines))


def _learn(url: str, tmp_path: Path) -> subprocess.Popen:
    env = {name: value for name, value in os.environ.items() if not name.startswith("POET_")}
    env.update(PYTHONPATH=str(Path(__file__).resolve().parents[1]), POET_BROKER_KEY=KEY)
    return subprocess.Popen([sys.executable, "-m", "poet_runtime", "learn", "--broker", url, "--namespace", NS,
                             "--name", "the-learner", "--claim-idle", "1"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_real_fleet_regenerates_on_the_learners_verdict_follows_the_promotion_and_rolls_it_back(
        tmp_path, redis_server):  # noqa: F811
    """Two instances and a real ``learn`` process. Labels that agree with the function, then flip:
    the learner's verdict (with its labelled samples) makes exactly one instance regenerate; both
    move to the promoted version; the learner follows it and its next ``params.updated`` names the
    fleet's number, which both instances apply; the promoted version degrades too: rolled back
    everywhere, and the learner follows that as well."""
    apps = [_app(tmp_path, "host-a"), _app(tmp_path, "host-b")]
    for app in apps:
        (app / "main.py").write_text(DRIVEN)
    client = redis_server.client()
    outcomes = wire.stream(NS, wire.OUTCOMES)
    # A version.promoted that no instance signed: the learner refuses it (and so do the instances).
    forged = json.dumps({"function": "mod:detect", "number": 7, "by": "someone", "files": {"code.py": "x = 1"}})
    client.xadd(outcomes, {"t": "version.promoted", "m": forged, "s": "0" * 64, "l": "forger"})
    learner = _learn(redis_server.url, tmp_path)
    processes = [_start(app, redis_server.url, str(seed)) for seed, app in enumerate(apps)]
    readers = [_Reader(process) for process in processes]
    state_key = f"poet:{NS}:learn:state:mod:detect"

    def state() -> dict:
        raw = client.get(state_key)
        return json.loads(raw) if raw else {}

    def kinds() -> list:
        return [fields[b"t"] for _, fields in client.xrange(outcomes)][1:]  # after the forged one

    def published(kind: bytes) -> list:
        """Each message of that kind once (one an instance signed again, being out of order, is one)."""
        messages = []
        for _, fields in client.xrange(outcomes)[1:]:
            if fields[b"t"] == kind and json.loads(fields[b"m"]) not in messages:
                messages.append(json.loads(fields[b"m"]))
        return messages

    given = [0]

    def phase(number: int, count: int, boundary: float, above: bool) -> None:
        for app in apps:  # whole or not at all: the app may look at any moment
            (app / "go.tmp").write_text(json.dumps({"count": count, "boundary": boundary, "above": above}))
            os.replace(app / "go.tmp", app / f"go-{number}")
        given[0] += count * len(apps)
        _wait(lambda: all(r.has(lambda v: v.get("done") == number) for r in readers), 30)

    try:
        _wait(lambda: all(r.has(lambda v: v.get("ready")) for r in readers), 30)
        # Labels agree with the function's threshold (0.5): the objective's baseline.
        phase(0, 40, 0.5, True)
        _wait(lambda: state().get("feedback") == given[0], 20, lambda: f"the learner has {state().get('feedback')} "
              f"of {given[0]} feedback")
        assert b"version.promoted" not in kinds()
        # The labels flip: the learner's verdict; one instance regenerates, both run what it promotes.
        phase(1, 15, 0.5, False)
        _wait(lambda: b"version.promoted" in kinds(), 20)
        [promoted] = published(b"version.promoted")
        assert promoted["number"] == 2 and promoted["previous"] == 1 and promoted["previous_numbering"] == "local"
        _wait(lambda: [_current(app) for app in apps] == ["v2", "v2"])
        verdicts = [json.loads(f[b"m"]) for _, f in client.xrange(wire.stream(NS, "learning"))
                    if f[b"t"] == b"learning.degraded"]
        assert verdicts[0]["version"] == 1 and verdicts[0]["numbering"] == "local"
        samples = verdicts[0]["evidence"]["samples"]
        assert len(samples) >= 80 and all(len(s) == 3 for s in samples)  # [score, predicted, actual]: no inputs
        decided = [len(list(journal.read(app / ".poet" / "events", {"version.candidate"}))) for app in apps]
        assert sorted(decided) == [0, 1], decided  # exactly one instance regenerated
        regenerated = apps[decided.index(1)]
        candidate = json.loads((regenerated / ".poet" / "mod.detect" / "v2" / "metadata.json").read_text())
        assert candidate["scores"]["samples"] == len(samples)  # screened on the learner's samples
        # The learner follows the promotion: its state learns for the fleet's v2 from here on ...
        _wait(lambda: (state().get("version"), state().get("numbering")) == (2, "fleet"), 20)
        phase(2, 40, 0.3, True)  # ... new labels: it learns a new threshold for v2
        _wait(lambda: any(json.loads(f[b"m"]).get("version") == 2 for _, f in client.xrange(outcomes)
                          if f[b"t"] == b"params.updated"), 20)
        [(update_id, update)] = [(i.decode(), json.loads(f[b"m"])) for i, f in client.xrange(outcomes)
                                 if f[b"t"] == b"params.updated" and json.loads(f[b"m"])["version"] == 2][:1]
        assert update["numbering"] == "fleet"
        _wait(lambda: all(r.has(lambda v: v.get("applied") == update_id) for r in readers), 20)  # both, on v2
        for app in apps:
            params = json.loads((app / ".poet" / "mod.detect" / "v2" / "params.json").read_text())
            assert params["threshold"] != promoted["params"]["threshold"]
        # The promoted version degrades while on probation: rolled back everywhere, and followed.
        phase(3, 15, 0.3, False)
        _wait(lambda: b"version.rolled_back" in kinds(), 20)
        _wait(lambda: [_current(app) for app in apps] == ["v1", "v1"])
        rolled = published(b"version.rolled_back")
        assert [(r["to"], r["numbering"], r["previous"]) for r in rolled] == [(1, "local", 2)]
        _wait(lambda: (state().get("version"), state().get("numbering")) == (1, "local"), 20)
        _wait(lambda: state().get("feedback") == given[0], 20)
        assert len(published(b"version.promoted")) == 1 and len(published(b"version.rolled_back")) == 1
        stats = {k.decode(): int(v) for k, v in client.hgetall(f"poet:{NS}:learn:stats").items()}
        assert stats["versions_followed"] == 2 and stats["versions_refused"] == 1
        _two_learners_learn_what_the_live_one_learned(client, redis_server.url, state())
    finally:
        for app in apps:
            (app / "stop").write_text("")
        errors = []
        for process in processes:  # stdout is the readers'
            try:
                process.wait(timeout=20)
            finally:
                if process.poll() is None:
                    process.kill()
            errors.append(process.stderr.read())
        learner.terminate()
        try:
            learner_err = learner.communicate(timeout=20)[1]
        finally:
            if learner.poll() is None:
                learner.kill()
        for name, err in zip(("host-a", "host-b", "learner"), errors + [learner_err]):
            print(f"--- {name} stderr:\n{err[-4000:]}")  # shown when the test fails
        for app, reader in zip(apps, readers):
            print(f"--- {app.name} said: {reader.lines[-20:]}")
    for err in errors + [learner_err]:
        assert "Traceback" not in err, err[-3000:]


def _two_learners_learn_what_the_live_one_learned(client, url: str, live: dict) -> None:
    """The same streams (their ids kept, so feedback and switches keep their order), two learners
    in one group taking turns: the state, version and numbering included, is the live learner's."""
    from poet_runtime.fleet.learner import Learner

    copy = "fleet-regen-copy"
    for which in (wire.OUTCOMES, wire.EVENTS):  # outcomes first: what a learner sees staged ahead of feedback
        pipe = client.pipeline(transaction=False)
        for entry_id, fields in client.xrange(wire.stream(NS, which)):
            pipe.xadd(wire.stream(copy, which), fields, id=entry_id)
        pipe.execute()
    a = Learner(url, KEY.encode(), namespace=copy, name="a", batch=9, block_ms=10, claim_idle=0.3)
    b = Learner(url, KEY.encode(), namespace=copy, name="b", batch=13, block_ms=10, claim_idle=0.3)
    feedback = len([1 for _, f in client.xrange(wire.stream(copy, wire.EVENTS)) if f[b"k"] == b"fb"])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        a.run(rounds=1)
        b.run(rounds=1)
        if (client.xpending(wire.stream(copy, wire.EVENTS), "poet-learners")["pending"] == 0
                and int(client.hget(f"poet:{copy}:learn:stats", "applied") or 0) >= feedback):
            a.run(rounds=1)  # the last heartbeats' switch point passed by now
            break
    assert a.counts["staged"] and b.counts["staged"]  # both did part of the work
    raw = client.get(f"poet:{copy}:learn:state:mod:detect")
    two = json.loads(raw)
    for field in ("version", "numbering", "params", "parameters", "feedback", "learner", "monitor"):
        assert two[field] == live[field], field

    def published(ns: str, names: tuple) -> list:  # the params.updated those learners signed
        return [[json.loads(f[b"m"])[k] for k in ("version", "numbering", "params")]
                for _, f in client.xrange(wire.stream(ns, wire.OUTCOMES))
                if f[b"t"] == b"params.updated" and f[b"l"] in names]

    live_updates = published(NS, (b"the-learner",))
    assert published(copy, (b"a", b"b")) == live_updates and any(version == 2 for version, _, _ in live_updates)


def test_a_promotion_signed_before_an_outcome_that_got_in_ahead_of_it_is_signed_again_and_followed_once(
        tmp_path, redis_server):  # noqa: F811
    """Instances take a function's outcomes only in signed order: a learner's params.updated signed
    after the elected instance signed its promotion, but added first, would make every instance refuse
    the promotion. The instance signs it again after; the learner follows that copy only."""
    from poet_runtime.fleet import follower as follower_module, regenerate
    from poet_runtime.fleet.learner import Learner
    from poet_runtime.fleet.staging import padded

    key = KEY.encode()
    follower = follower_module.Follower(redis_server.url, key)
    try:
        _wait(lambda: follower.client is not None)
        ns = follower_module._Namespace(tmp_path / "events")
        later = json.dumps({"function": "mod:detect", "version": 1, "numbering": "local",
                            "params": {"threshold": 0.4}}).encode()
        ahead = time.time() + 5  # a learner's params.updated, signed 5 s after what follows, added before it
        follower.client.xadd(ns.stream, {"t": "params.updated", "m": later, "l": "a-learner",
                                         "s": wire.sign(key, b"params.updated", later, at=ahead)})
        message = {"function": "mod:detect", "number": 2, "version": 2, "numbering": "fleet", "previous": 1,
                   "previous_numbering": "local", "files": {"code.py": "x = 1\n"}, "by": "host:1"}
        entry = regenerate.publish(follower, ns, "version.promoted", message)
    finally:
        follower.close()
    copies = [(i, f) for i, f in redis_server.client().xrange(ns.stream) if f[b"t"] == b"version.promoted"]
    assert len(copies) == 2 and copies[-1][0].decode() == entry
    first, last = (wire.stamp_of(f[b"s"]) for _, f in copies)
    assert first.at_ms < int(ahead * 1000) < last.at_ms  # the copy every instance takes is signed after it
    learner = Learner(redis_server.url, key, namespace=ns.name, name="a", block_ms=10)
    learner.run(rounds=1)
    stats = {k.decode(): int(v) for k, v in redis_server.client().hgetall(f"poet:{ns.name}:learn:stats").items()}
    assert stats["versions_superseded"] == 1 and stats["versions_followed"] == 1
    [staged] = redis_server.client().zrange(f"poet:{ns.name}:learn:stage:mod:detect", 0, -1)
    assert staged.decode().startswith(f"{padded(entry)}|")  # the switch at the copy the instances take
