"""``status --broker`` with the fleet key says which learner values are the learners' own.

Why: a state or spec in Redis that does not carry the fleet key's seal was written by someone
without the key; the learners refuse it (a state) or ignore it (a spec), so status must not show
its params as what the fleet learned. Real parts: a real redis-server, a real learner applying
signed feedback, and real ``python -m poet_runtime status --broker`` runs; the forger is this test
writing to Redis without the key.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from redis_helpers import redis_server  # noqa: F401
from test_fleet_sealed_keys import KEY, _backlog, _learner

REPO = Path(__file__).resolve().parents[1]
FUNCTION = "mod:detect"


def _status(url: str, ns: str, *, key: bytes | None, table: bool = False):
    env = {k: v for k, v in os.environ.items() if not k.startswith("POET_")}
    env.update(PYTHONPATH=str(REPO), PYTHONDONTWRITEBYTECODE="1", COLUMNS="400")  # a table row on one line
    if key is not None:
        env["POET_BROKER_KEY"] = key.decode()
    command = [sys.executable, "-m", "poet_runtime", "status", "--broker", url, "--namespace", ns]
    done = subprocess.run(command + ([] if table else ["--json"]), env=env, capture_output=True, text=True,
                          timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    if table:
        return done.stdout
    return {f["function"]: f for f in json.loads(done.stdout)["functions"]}


def test_status_checks_the_learners_seals_and_does_not_show_a_forged_state_as_learned(redis_server):  # noqa: F811
    client = redis_server.client()
    ns = "status-seals"
    _backlog(client, ns, [FUNCTION], 120)
    _learner(redis_server.url, ns).run(rounds=4)
    learned = json.loads(client.get(f"poet:{ns}:learn:state:{FUNCTION}"))["params"]

    genuine = _status(redis_server.url, ns, key=KEY)[FUNCTION]
    assert genuine["sealed"] == {"state": True, "spec": True}
    assert genuine["params"] == learned and genuine["samples"] > 0

    unchecked = _status(redis_server.url, ns, key=None)[FUNCTION]
    assert unchecked["sealed"] == {"state": None, "spec": None}  # no key: shown as held, not judged

    # A writer without the key replaces the state: the same JSON, other params, no valid seal.
    state_key = f"poet:{ns}:learn:state:{FUNCTION}"
    forged = json.loads(client.get(state_key))
    forged["params"] = {"threshold": 0.01}
    client.set(state_key, json.dumps(forged))
    judged = _status(redis_server.url, ns, key=KEY)[FUNCTION]
    assert judged["sealed"]["state"] is False
    assert judged["params"] != {"threshold": 0.01}  # what the learners refuse is not shown as learned
    assert "state not sealed by the fleet key" in _status(redis_server.url, ns, key=KEY, table=True)
    # with another fleet's key nothing here is the learners' own
    assert _status(redis_server.url, ns, key=b"another-key")[FUNCTION]["sealed"] == {"state": False, "spec": False}
