"""Where an instance's follower stands on the outcomes and learning streams, across a crash.

Why: the follower keeps its position on ``poet:NS:outcomes`` in ``fleet/outcomes.last`` so that
a restart neither skips an outcome nor applies one twice; it is written once per batch read
(after the batch's effects are written), not once per entry. Its position on the learners'
verdicts (``poet:NS:learning``) is kept the same way in ``fleet/learning.last``: a restart that
read every verdict again from 0-0 refused each one as stale or a replay. Real parts: a real
redis-server, an app process following the broker, SIGKILL mid-stream, a restart.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from redis_helpers import app_line, redis_server, wait_until  # noqa: F401

from poet_runtime import journal
from poet_runtime.fleet import wire

pytest.importorskip("redis")

NS = "follower-position"
KEY = "follower-position-key"
OUTCOMES = 300

MODULE = '''\
from poet_runtime import poet


@poet(domain="ml_monitoring", optimize_for="accuracy", policy="trusted")
def detect(score: float, threshold: float = 0.5) -> dict:
    return {"drift_detected": score > threshold, "score": score}
'''

# Follows the broker while calling detect, until ``stop`` appears; then prints what its follower
# did: positions written, and every fleet.refused it saw (the bus gets one per refused entry).
APP = '''\
import json, os, time
from poet_runtime import events
from poet_runtime.fleet import follower
from mod import detect

refused = []
events.subscribe(lambda event: refused.append(event.get("reason")) if event["type"] == "fleet.refused" else None)
detect(0.3)
print(json.dumps({"ready": True}), flush=True)
deadline = time.time() + 90
while not os.path.exists("stop") and time.time() < deadline:
    detect(0.3)
    time.sleep(0.01)
ns = next(iter(follower.get().namespaces.values()))
print(json.dumps({"saves": ns.saves, "refused": refused}), flush=True)
'''


def _env(app: Path, url: str) -> dict:
    env = {name: value for name, value in os.environ.items() if not name.startswith("POET_")}
    env.update(POET_ENABLED="1", POET_HOME=str(app / ".poet"), POET_CACHE_DIR=str(app / "cache"),
               POET_BROKER=url, POET_BROKER_NAMESPACE=NS, POET_BROKER_KEY=KEY,
               PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    return env


@pytest.fixture
def app(tmp_path):
    folder = tmp_path / "app"
    folder.mkdir()
    (folder / "mod.py").write_text(MODULE)
    (folder / "main.py").write_text(APP)
    return folder


def _start(app: Path, url: str) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "main.py"], cwd=app, env=_env(app, url), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    app_line(process, lambda value: value.get("ready"), timeout=60)
    return process


def _finish(app: Path, process: subprocess.Popen) -> dict:
    (app / "stop").write_text("")
    out, err = process.communicate(timeout=60)
    (app / "stop").unlink()
    assert process.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def _publish(client, stream: str, kind: str, messages: list) -> list:
    """All at once (one transaction), so the follower finds them waiting and reads them in batches."""
    pipe = client.pipeline(transaction=True)
    for message in messages:
        data = json.dumps(message).encode()
        pipe.xadd(stream, {"t": kind, "m": data, "l": "test", "s": wire.sign(KEY.encode(), kind.encode(), data)})
    return [entry.decode() for entry in pipe.execute()]




def _causes(app: Path) -> list:
    path = app / ".poet" / "mod.detect" / "v1" / "state.json"
    try:
        return [entry.get("cause") for entry in json.loads(path.read_text()).get("audit", [])]
    except (OSError, ValueError):
        return []


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def test_outcomes_position_is_written_per_batch_and_a_crash_re_reads_rather_than_skips(app, redis_server):  # noqa: F811
    client = redis_server.client()
    last_file = app / ".poet" / "events" / "fleet" / "outcomes.last"
    process = _start(app, redis_server.url)
    values = [round(0.1 + i * 0.002, 6) for i in range(OUTCOMES)]
    ids = _publish(client, wire.stream(NS, wire.OUTCOMES), "params.updated",
                   [{"function": "mod:detect", "version": 1, "params": {"threshold": value}} for value in values])
    try:
        wait_until(lambda: len(_causes(app)) >= OUTCOMES // 2, 60, "half of the outcomes to be applied (mid-batch)")
    finally:
        process.send_signal(signal.SIGKILL)  # mid-stream: no exit hook runs
        process.communicate(timeout=30)
    # Whatever position the killed process kept, every outcome up to it had its effect written.
    kept = _read(last_file)
    before = set(_causes(app))
    assert len(before) < OUTCOMES, "killed before it read everything"
    upto = ids.index(kept) + 1 if kept else 0
    assert set(ids[:upto]) <= before, "the position went past an outcome whose effect was not written"

    process = _start(app, redis_server.url)
    wait_until(lambda: _read(last_file) == ids[-1], 60, "the restarted process to read to the end")
    said = _finish(app, process)
    applied = _causes(app)
    assert before == set(ids[:len(before)]), "applied in order"
    # No outcome skipped. One may lack its audit entry: the one the kill interrupted between its
    # params.json and its state.json writes, whose value a restart then finds already in force.
    assert set(ids) - set(applied) <= {ids[len(before)]}, sorted(set(ids) - set(applied))[:3]
    # None applied twice, but for the newest taken before the kill: a restart may take it once more
    # (wire.Ledger's floor), and its audit entry may have been written before its params.json.
    twice = {cause for cause in applied if applied.count(cause) > 1}
    assert twice <= {ids[len(before) - 1]}, sorted(twice)[:3]
    params = json.loads((app / ".poet" / "mod.detect" / "v1" / "params.json").read_text())
    assert params == {"threshold": values[-1]}
    # Read again after the crash: only what lay between the kept position and the crash, refused as
    # already taken (the ledger) rather than applied again.
    # (The newest taken before the restart may be taken once more: applying it again changes nothing.)
    refused = said["refused"]
    assert len(refused) <= len(before - set(ids[:upto])), (len(refused), len(before), upto)
    assert all("not newer" in reason for reason in refused), refused[:3]
    print(f"killed after {len(before)} applied, position kept at {upto}; after the restart "
          f"{len(refused)} read again and refused, {said['saves']} position writes")
    # One position write per batch read (reads of at most 100 entries), not one per entry.
    assert 1 <= said["saves"] <= (OUTCOMES - upto) // 100 + 3, said["saves"]


def test_the_learning_position_survives_a_restart(app, redis_server):  # noqa: F811
    client = redis_server.client()
    learning_file = app / ".poet" / "events" / "fleet" / "learning.last"
    process = _start(app, redis_server.url)
    # Verdicts the learners published for this function (recovered: nothing to regenerate).
    ids = _publish(client, wire.stream(NS, "learning"), "learning.recovered",
                   [{"function": "mod:detect", "version": 1, "numbering": "local", "n": n} for n in range(20)])
    wait_until(lambda: _read(learning_file) == ids[-1], 30, "the follower to read every verdict")
    first = _finish(app, process)
    assert first["refused"] == [] and first["saves"] <= 5, first
    assert not list(journal.read(app / ".poet" / "events", {"fleet.refused"}))
    # A restart starts after the last verdict read: none is read (and refused as a replay) again.
    process = _start(app, redis_server.url)
    time.sleep(1.5)  # several of the follower's polls
    again = _finish(app, process)
    assert again["refused"] == [], again["refused"][:3]
    assert not list(journal.read(app / ".poet" / "events", {"fleet.refused"}))
    assert _read(learning_file) == ids[-1]
    # A new verdict is still read after the restart's position.
    process = _start(app, redis_server.url)
    [later] = _publish(client, wire.stream(NS, "learning"), "learning.recovered",
                       [{"function": "mod:detect", "version": 1, "numbering": "local", "n": 20}])
    wait_until(lambda: _read(learning_file) == later, 30, "the follower to read the new verdict")
    assert _finish(app, process)["refused"] == []
