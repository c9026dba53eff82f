"""Fleet regeneration (issue 9): on the learner's signed ``learning.degraded``, one instance of the
fleet regenerates, screens and publishes a signed ``version.promoted`` that every instance applies;
a degradation of the promoted version rolls it back everywhere; an unsigned verdict does nothing.

Real parts only: a real redis-server (``redis_helpers``), two app processes started as real
subprocesses with ``POET_BROKER`` and the fleet's key, each with its own store (two hosts). The
test plays the learner: it publishes the verdicts on ``poet:NS:learning``, signed as a learner signs.
"""

from __future__ import annotations

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


def _start(app: Path, broker: str) -> subprocess.Popen:
    env = {name: value for name, value in os.environ.items() if not name.startswith("POET_")}
    env.update(POET_ENABLED="1", POET_HOME=str(app / ".poet"), POET_CACHE_DIR=str(app / "cache"), POET_LOG="info",
               PYTHONPATH=str(Path(__file__).resolve().parents[1]), POET_BROKER=broker,
               POET_BROKER_NAMESPACE=NS, POET_BROKER_KEY=KEY)
    return subprocess.Popen([sys.executable, "main.py"], cwd=app, env=env, stdout=subprocess.PIPE,
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


def _wait(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
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
