"""``status --broker`` shows how the fleet knows each function's version (number and numbering).

Why: an instance's local version number means nothing on another host; what the fleet knows a
version by is ``regenerate.identity`` (a fleet number once the fleet promoted it, else the local
number, numbering "local"). Heartbeats carry it per function, the learner state carries the
numbering it learns under, and status shows both. Real parts: a real redis-server, a real app
process publishing, a real ``python -m poet_runtime learn`` and a real ``status`` run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from redis_helpers import redis_server, wait_until  # noqa: F401

pytest.importorskip("redis")

REPO = Path(__file__).resolve().parents[1]
KEY = "status-test-key"
NS = "status-test"
FUNCTION = "__main__:detect"
CALLS = 20
APP = textwrap.dedent('''\
    from poet_runtime import poet
    from poet_runtime.learn import config

    config.override(auto_regenerate=False)

    @poet(domain="ml_monitoring", optimize_for="accuracy", policy="trusted")
    def detect(score: float, threshold: float = 0.9) -> dict:
        return {"drift_detected": score > threshold, "score": score}

    for i in range(%d):
        detect(i / %d)
        detect.feedback(label=i %% 2 == 0)

    # Stay until the publisher forwarded every feedback: at exit it has 1.5 s (EXIT_DRAIN_S), which a
    # loaded machine may not give a thread that has not connected yet; what is left would wait in
    # the journal for the next instance of this store, and this test runs no other.
    import os, time, redis
    client = redis.Redis.from_url(os.environ["POET_BROKER"])
    stream = "poet:%%s:events" %% os.environ["POET_BROKER_NAMESPACE"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        kinds = [fields.get(b"k") for _, fields in client.xrange(stream)]
        if kinds.count(b"fb") >= %d and b"hi" in kinds:
            break
        time.sleep(0.05)
''' % (CALLS, CALLS, CALLS))


def _env(tmp: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POET_")}
    env.update(PYTHONPATH=str(REPO), PYTHONDONTWRITEBYTECODE="1", POET_BROKER_KEY=KEY, **extra)
    return env




@pytest.fixture
def learned(tmp_path, redis_server):  # noqa: F811
    """One instance ran detect with feedback and exited; one learner learned from all of it."""
    (tmp_path / "app.py").write_text(APP)
    app = subprocess.run([sys.executable, str(tmp_path / "app.py")], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120, env=_env(tmp_path, POET_ENABLED="1", POET_BROKER=redis_server.url,
                                              POET_BROKER_NAMESPACE=NS, POET_HOME=str(tmp_path / "home"),
                                              POET_CACHE_DIR=str(tmp_path / "cache")))
    assert app.returncode == 0, app.stderr[-3000:]
    learner = subprocess.Popen([sys.executable, "-m", "poet_runtime", "learn", "--broker", redis_server.url,
                                "--namespace", NS, "--name", "one"], env=_env(tmp_path),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    client = redis_server.client()
    try:
        def state():
            raw = client.get(f"poet:{NS}:learn:state:{FUNCTION}")
            return json.loads(raw) if raw else {}

        try:
            wait_until(lambda: state().get("feedback") == CALLS and client.hlen(f"poet:{NS}:instances"), 60,
                  "the learner to learn every feedback")
        except AssertionError as error:  # say what the learner and the broker saw, not only that it waited
            learner.send_signal(signal.SIGTERM)
            out, err = learner.communicate(timeout=20)
            stats = {k.decode(): v.decode() for k, v in client.hgetall(f"poet:{NS}:learn:stats").items()}
            raise AssertionError(f"{error}; state feedback {state().get('feedback')}, stats {stats}, "
                                 f"learner stderr: {err[-3000:]}; app stderr: {app.stderr[-2000:]}") from None
        yield {"url": redis_server.url, "client": client, "tmp": tmp_path, "state": state()}
    finally:
        learner.send_signal(signal.SIGTERM)
        try:
            learner.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            learner.kill()


def _status(learned, *extra) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "poet_runtime", "status", "--broker", learned["url"],
                           "--namespace", NS, *extra], env={**_env(learned["tmp"]), "COLUMNS": "400"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done


def test_status_shows_the_fleet_version_and_numbering_of_each_function(learned):
    # The heartbeat the learner kept for the function says how the fleet knows its version.
    spec = json.loads(learned["client"].hget(f"poet:{NS}:functions", FUNCTION))
    assert (spec["version"], spec["fleet_version"], spec["numbering"]) == (1, 1, "local")
    report = json.loads(_status(learned, "--json").stdout)
    [row] = [f for f in report["functions"] if f["function"] == FUNCTION]
    assert learned["state"]["numbering"] == "local"
    assert (row["version"], row["numbering"]) == (learned["state"]["version"], "local") == (1, "local")
    assert row["serving"] == {"version": 1, "fleet_version": 1, "numbering": "local"}
    table = _status(learned).stdout
    line = [text for text in table.splitlines() if FUNCTION in text][-1]  # the functions table comes last
    assert line.count("v1 (local)") == 2, line  # learns for, and what the last heartbeat ran
    assert "last heartbeat ran" in table


def test_status_shows_each_instances_versions_and_unforwarded_feedback(learned):
    report = json.loads(_status(learned, "--json").stdout)
    [instance] = report["instances"]
    assert instance["versions"] == {FUNCTION: {"version": 1, "fleet_version": 1, "numbering": "local"}}
    assert instance["unforwarded_feedback"] == 0
