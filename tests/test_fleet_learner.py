"""The fleet's learner group against a real redis-server, real instances and real learner processes.

The stream every test learns from is made once (module fixture): four instance processes call one
``optimize_for="accuracy"`` function and send feedback while one ``python -m poet_runtime learn``
runs. Other tests copy that stream's entries, in order, into a namespace of their own, so each
sees the very same feedback. The reference everywhere is what one local learner learns today from
the same feedback in the same order: ``objectives.make_learner``'s learner, fed (output, label)
and asked to propose after each, as ``engine.Learning.on_feedback`` does with replay off.
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

from redis_helpers import RedisServer, wait_until

pytest.importorskip("redis")

REPO = Path(__file__).resolve().parents[1]
KEY = "fleet-test-key"
SOURCE_NS = "live"
PROCESSES, CALLS = 4, 60
APP = textwrap.dedent('''\
    import random
    import sys

    from poet_runtime import poet
    from poet_runtime.learn import config

    # What the fleet learns here is compared with one local learner that never regenerates: an early
    # learning.degraded (the first windows at the default threshold) must not make an instance
    # regenerate (tests/test_fleet_regeneration.py covers that path).
    config.override(auto_regenerate=False)

    @poet(domain="ml_monitoring", optimize_for="accuracy", policy="trusted")
    def detect(score: float, threshold: float = 0.9) -> dict:
        return {"drift_detected": score > threshold, "score": score}


    if __name__ == "__main__":
        rng = random.Random(int(sys.argv[1]))
        for _ in range(int(sys.argv[2])):
            score = rng.random()
            detect(score)
            detect.feedback(label=score > 0.4)
        # Stay up until every process's feedback is learned from, then until this process uses what was
        # learned (the follower applies the learner's params.updated; this process learns nothing itself).
        import json
        import os
        import time

        import redis

        client = redis.Redis.from_url(os.environ["POET_BROKER"])
        ns, total = os.environ["POET_BROKER_NAMESPACE"], int(sys.argv[3])
        deadline, state = time.monotonic() + 40, {}
        while time.monotonic() < deadline and state.get("feedback") != total:
            time.sleep(0.05)
            raw = client.get(f"poet:{ns}:learn:state:__main__:detect")
            state = json.loads(raw) if raw else {}
        if state.get("feedback") != total:
            print("not converged: the learner has", state.get("feedback"), "of", total, "feedback", flush=True)
            sys.exit(0)
        learned = state["params"]["threshold"]
        while time.monotonic() < deadline:
            if detect(learned)["drift_detected"] is False and detect(learned + 1e-9)["drift_detected"] is True:
                print("converged", repr(learned), flush=True)
                break
            time.sleep(0.02)
        else:
            print("not converged to", repr(learned), flush=True)
''')


def _env(tmp: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POET_")}
    env.update(PYTHONPATH=os.pathsep.join([str(REPO), str(tmp)]), PYTHONDONTWRITEBYTECODE="1", **extra)
    return env


def _learner(url: str, ns: str, name: str, tmp: Path, *extra: str, key: str | None = KEY) -> subprocess.Popen:
    env = _env(tmp)
    if key is not None:
        env["POET_BROKER_KEY"] = key
    return subprocess.Popen([sys.executable, "-m", "poet_runtime", "learn", "--broker", url, "--namespace", ns,
                             "--name", name, *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _stats(client, ns: str) -> dict:
    return {k.decode(): int(v) for k, v in client.hgetall(f"poet:{ns}:learn:stats").items()}




def _diagnose(client, ns: str, learner=None) -> str:
    """What the broker holds when a wait times out (and the learner's log, if it has ended)."""
    parts = [f"stats {_stats(client, ns)}", f"pending {client.xpending(f'poet:{ns}:events', 'poet-learners')}",
             f"functions {list(client.hkeys(f'poet:{ns}:functions'))}",
             f"kinds {[f[b'k'] for _, f in client.xrange(f'poet:{ns}:events')].count(b'fb')} fb"]
    if learner is not None and learner.poll() is None:
        learner.send_signal(signal.SIGTERM)
        parts.append(learner.communicate(timeout=20)[1][-3000:])
    return "; ".join(parts)


def _state(client, ns: str, function: str) -> dict:
    raw = client.get(f"poet:{ns}:learn:state:{function}")
    return json.loads(raw) if raw else {}


def _feedback_entries(client, ns: str) -> list:
    return [(i, f) for i, f in client.xrange(f"poet:{ns}:events") if f.get(b"k") == b"fb"]


def reference(client, ns: str, function: str) -> float:
    """The threshold one local learner learns from the stream's feedback, in the stream's order."""
    from poet_runtime import journal
    from poet_runtime.learn import config
    from poet_runtime.learn.objectives import clamp, make_learner

    spec = json.loads(client.hget(f"poet:{ns}:functions", function))
    parameters = spec["parameters"]
    learner = make_learner("accuracy", parameters, config.LearnSettings(), 1.0)
    params = {name: p["default"] for name, p in parameters.items()}
    outputs = {}  # execution id -> output, from the stream's execution batches (feedback without ``x``)
    for _, fields in client.xrange(f"poet:{ns}:events"):
        if fields[b"k"] == b"ex":
            header = {"process": fields[b"p"].decode(), "pid": 0, "metadata": {}}
            batch = journal.decode(fields[b"d"])
            for group in batch[3]:
                for row in journal.group_rows(group):
                    payload = journal.expand(row, header, batch)["payload"]
                    outputs[payload["execution_id"]] = payload.get("output")
    seen = set()
    for _, fields in _feedback_entries(client, ns):
        event = journal.decode(fields[b"d"])
        if event["id"] in seen:
            continue
        seen.add(event["id"])
        output = json.loads(fields[b"x"])["output"] if fields.get(b"x") else outputs[event["correlation_id"]]
        learner.observe(output, event["payload"]["label"])
        for name, value in learner.propose(params).items():
            params[name] = clamp(value, parameters[name])
    return params["threshold"]


def _copy(client, source: str, target: str, entries=None) -> int:
    entries = client.xrange(f"poet:{source}:events") if entries is None else entries
    pipe = client.pipeline(transaction=False)
    for _, fields in entries:
        pipe.xadd(f"poet:{target}:events", fields)
    pipe.execute()
    return len(entries)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """Four instances send CALLS labelled feedback each while one learner process runs."""
    tmp = tmp_path_factory.mktemp("fleet")
    server = RedisServer(tmp / "redis").start()
    (tmp / "fleet_app.py").write_text(APP)
    learner = _learner(server.url, SOURCE_NS, "one", tmp, "--claim-idle", "1")
    # A store per process (as on separate hosts), one namespace: the fleet, not a shared folder, joins them.
    env = _env(tmp, POET_CACHE_DIR=str(tmp / "cache"), POET_ENABLED="1", POET_BROKER=server.url,
               POET_BROKER_KEY=KEY, POET_BROKER_NAMESPACE=SOURCE_NS)
    children = [subprocess.Popen([sys.executable, str(tmp / "fleet_app.py"), str(seed), str(CALLS),
                                  str(PROCESSES * CALLS)], env={**env, "POET_HOME": str(tmp / f"home{seed}")},
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for seed in range(PROCESSES)]
    try:
        said = []
        for child in children:
            out, err = child.communicate(timeout=120)
            assert child.returncode == 0 and out.startswith("converged"), (out, err[-3000:])
            said.append(out)
        client = server.client()
        sent = PROCESSES * CALLS
        wait_until(lambda: _stats(client, SOURCE_NS).get("applied", 0) >= sent, 30, "the learner to apply all feedback",
              lambda: _diagnose(client, SOURCE_NS, learner))
        yield {"server": server, "client": client, "tmp": tmp, "sent": sent, "learner": learner,
               "function": "__main__:detect", "said": said}
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
        if learner.poll() is None:
            learner.send_signal(signal.SIGTERM)
            try:
                learner.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                learner.kill()
        server.stop()


def test_four_processes_feedback_reaches_one_learner_which_learns_what_one_local_learner_learns(fleet):
    client, function, sent = fleet["client"], fleet["function"], fleet["sent"]
    assert len(_feedback_entries(client, SOURCE_NS)) == sent
    instances = client.hgetall(f"poet:{SOURCE_NS}:instances")
    assert len(instances) == PROCESSES  # every process's heartbeat was seen
    state = _state(client, SOURCE_NS, function)
    assert state["feedback"] == sent and state["learner"]["seen"] == sent and state["unmatched"] == 0
    learned = reference(client, SOURCE_NS, function)
    assert abs(learned - 0.4) < 0.05  # the labels say: positive above 0.4
    # Every process converged to it: each one's calls answer with exactly this threshold.
    assert fleet["said"] == [f"converged {learned!r}\n"] * PROCESSES
    assert state["params"]["threshold"] == learned
    updates = [f for _, f in client.xrange(f"poet:{SOURCE_NS}:outcomes") if f[b"t"] == b"params.updated"]
    assert len(updates) == client.xlen(f"poet:{SOURCE_NS}:outcomes")  # no instance regenerated (see APP)
    last = json.loads(updates[-1][b"m"])
    assert last["function"] == function and last["params"] == {"threshold": learned}
    from poet_runtime.fleet import wire

    assert all(wire.verify(KEY.encode(), f[b"t"], f[b"m"], f[b"s"]) for f in updates)  # signed, every one
    # The learner stops cleanly on SIGTERM, after its batch.
    learner = fleet["learner"]
    learner.send_signal(signal.SIGTERM)
    _, err = learner.communicate(timeout=20)
    assert learner.returncode == 0 and "stopped" in err, err[-2000:]


def test_a_learner_killed_mid_stream_loses_nothing_and_counts_nothing_twice(fleet):
    client, function, sent, tmp = fleet["client"], fleet["function"], fleet["sent"], fleet["tmp"]
    url, ns = fleet["server"].url, "killed"
    entries = client.xrange(f"poet:{SOURCE_NS}:events")
    first = _learner(url, ns, "k1", tmp, "--batch", "7", "--claim-idle", "1")
    try:
        half = len(entries) // 2
        for start in range(0, half, 20):  # the stream arrives while the learner works
            _copy(client, SOURCE_NS, ns, entries[start:min(start + 20, half)])
            time.sleep(0.01)
        wait_until(lambda: _stats(client, ns).get("applied", 0) > 0, 20, "the first learner to apply something")
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
        _copy(client, SOURCE_NS, ns, entries[half:])
        # Redelivered lines (a publisher that crashed after XADD, before its cursor): new stream ids, same events.
        redelivered = _feedback_entries(client, SOURCE_NS)[:5]
        _copy(client, SOURCE_NS, ns, redelivered)
        second = _learner(url, ns, "k2", tmp, "--batch", "50", "--claim-idle", "1")
        try:
            wait_until(lambda: _stats(client, ns).get("applied", 0) >= sent, 30, "the second learner to catch up")
            time.sleep(1.5)  # anything pending from the dead learner is reclaimed by now (claim idle 1 s)
            wait_until(lambda: client.xpending(f"poet:{ns}:events", "poet-learners")["pending"] == 0, 20,
                  "nothing pending")
        finally:
            second.send_signal(signal.SIGTERM)
            second.communicate(timeout=20)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(10)
    stats = _stats(client, ns)
    state = _state(client, ns, function)
    assert state["feedback"] == sent and state["learner"]["seen"] == sent  # samples seen == feedback sent
    assert stats["applied"] == sent and stats.get("duplicates", 0) == 5 and stats["staged"] == sent + 5
    assert state["params"]["threshold"] == reference(client, SOURCE_NS, function)


def test_two_learners_in_one_group_learn_what_one_learns_and_reclaim_a_silent_ones_entries(fleet):
    from poet_runtime.fleet.learner import Learner

    client, function, url = fleet["client"], fleet["function"], fleet["server"].url
    ns = "pair"
    _copy(client, SOURCE_NS, ns)
    # A third member reads a batch and then falls silent (as if it hung or died before staging it).
    silent = Learner(url, KEY.encode(), namespace=ns, name="silent", batch=25, block_ms=10)
    silent.ensure_group()
    taken = silent.read()
    assert taken and client.xpending(f"poet:{ns}:events", "poet-learners")["pending"] == len(taken)
    a = Learner(url, KEY.encode(), namespace=ns, name="a", batch=9, block_ms=10, claim_idle=0.3)
    b = Learner(url, KEY.encode(), namespace=ns, name="b", batch=13, block_ms=10, claim_idle=0.3)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        a.run(rounds=1)  # interleaved rounds: each function's feedback is split between them
        b.run(rounds=1)
        if (client.xpending(f"poet:{ns}:events", "poet-learners")["pending"] == 0
                and _stats(client, ns).get("applied", 0) >= fleet["sent"]):
            break
        time.sleep(0.02)
    assert a.counts["staged"] and b.counts["staged"]  # both did part of the work
    one, two = _state(client, SOURCE_NS, function), _state(client, ns, function)
    for field in ("params", "feedback", "learner", "monitor"):
        assert two[field] == one[field], field
    published = [json.loads(f[b"m"])["params"] for _, f in client.xrange(f"poet:{ns}:outcomes")
                 if f[b"t"] == b"params.updated"]
    assert published == [json.loads(f[b"m"])["params"] for _, f in client.xrange(f"poet:{SOURCE_NS}:outcomes")
                         if f[b"t"] == b"params.updated"]


def test_a_learner_without_the_key_refuses_to_start_and_unsigned_entries_are_not_learned_from(fleet):
    from poet_runtime.fleet.learner import Learner

    client, function, tmp, url = fleet["client"], fleet["function"], fleet["tmp"], fleet["server"].url
    keyless = _learner(url, "nokey", "n", tmp, key=None)
    _, err = keyless.communicate(timeout=30)
    assert keyless.returncode == 2
    assert len(err.strip().splitlines()) == 1 and "POET_BROKER_KEY" in err and "POET_BROKER_KEY_FILE" in err
    ns = "forged"
    entries = client.xrange(f"poet:{SOURCE_NS}:events")
    beats = [(i, f) for i, f in entries if f[b"k"] == b"hi"][:1]
    feedback = _feedback_entries(client, SOURCE_NS)
    _copy(client, SOURCE_NS, ns, beats)
    unsigned = {k: v for k, v in feedback[0][1].items() if k != b"s"}
    forged = {**feedback[1][1], b"s": b"0" * 64}
    _copy(client, SOURCE_NS, ns, [(None, unsigned), (None, forged)])
    learner = Learner(url, KEY.encode(), namespace=ns, name="a", block_ms=10)
    learner.run(rounds=3)
    stats = _stats(client, ns)
    assert stats["refused"] == 2 and stats.get("staged", 0) == 0
    assert _state(client, ns, function)["feedback"] == 0  # nothing learned
    assert client.xpending(f"poet:{ns}:events", "poet-learners")["pending"] == 0  # refused, acknowledged, counted
    _copy(client, SOURCE_NS, ns, feedback[:1])  # the same feedback, signed: learned
    learner.run(rounds=3)
    assert _state(client, ns, function)["feedback"] == 1


def test_status_broker_shows_instances_learner_lag_and_the_last_decision(fleet):
    url, tmp, function = fleet["server"].url, fleet["tmp"], fleet["function"]
    env = _env(tmp)
    command = [sys.executable, "-m", "poet_runtime", "status", "--broker", url, "--namespace", SOURCE_NS]
    done = subprocess.run([*command, "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert len(report["instances"]) == PROCESSES
    assert all(i["host"] and i["pid"] and i["last_event"] for i in report["instances"])
    assert report["group"]["name"] == "poet-learners" and report["group"]["pending"] == 0
    assert report["group"]["lag"] == 0 and report["length"] > 0
    assert [c["name"] for c in report["consumers"]] == ["one"]
    [row] = [f for f in report["functions"] if f["function"] == function]
    assert row["samples"] == fleet["sent"] and row["staged"] == 0
    assert row["params"] == _state(fleet["client"], SOURCE_NS, function)["params"]
    decision = row["last_decision"]  # the learner's last outcome, or an instance's own later decision
    assert decision["type"].startswith(("params.", "learning.", "version.")) and decision["by"].split()[0] in (
        "learner", "instance") and decision["version"] == 1
    table = subprocess.run(command, env={**env, "COLUMNS": "300"}, capture_output=True, text=True, timeout=60)
    assert table.returncode == 0 and "poet-learners" in table.stdout and decision["type"] in table.stdout


@pytest.mark.parametrize("objective", ["accuracy", "precision", "recall", "alert_quality", "drift_sensitivity"])
@pytest.mark.parametrize("parameter", ["threshold", "alpha"])
def test_the_fleet_learners_fast_search_proposes_exactly_what_the_labelled_learner_proposes(objective, parameter):
    import random

    from poet_runtime.fleet import learner_fast
    from poet_runtime.learn import config
    from poet_runtime.learn.objectives import LabelledLearner

    import zlib

    rng = random.Random(zlib.crc32(f"{objective}/{parameter}".encode()))
    settings = config.LearnSettings(memory=60, min_samples=6, learn_every=3)
    spec = {parameter: {"default": 0.5, "min": 0.05, "max": 0.95, "description": ""}}
    learner = LabelledLearner(objective, spec, settings, beta=2.0)
    current, moved = {parameter: 0.5}, 0
    for step in range(150):
        score = round(rng.random(), 2) if rng.random() > 0.05 else None  # ties, and outputs without a score
        boundary = 0.3 if step < 70 else 0.7
        key = "p_value" if parameter == "alpha" else "score"
        learner.observe({"drift_detected": rng.random() < 0.5, key: score}, (score or 0) > boundary)
        slow, fast = learner.propose(current), learner_fast.propose(learner, current)
        assert fast == slow, (step, fast, slow)
        moved += bool(slow)
        current.update(slow)
    assert moved >= 1  # the search ran, and moved the value


def test_the_learner_survives_the_broker_going_away_and_loses_nothing(fleet, tmp_path):
    from poet_runtime.fleet.learner import Learner

    server = RedisServer(tmp_path / "redis").start()
    try:
        client = server.client()
        entries = fleet["client"].xrange(f"poet:{SOURCE_NS}:events")
        half = len(entries) // 2
        pipe = client.pipeline(transaction=False)
        for _, fields in entries[:half]:
            pipe.xadd(f"poet:{SOURCE_NS}:events", fields)
        pipe.execute()
        learner = Learner(server.url, KEY.encode(), namespace=SOURCE_NS, name="a", block_ms=10)
        learner.run(rounds=3)
        server.stop()  # the broker goes away (its append-only file keeps what it acknowledged)
        started = time.monotonic()
        assert learner.run(rounds=3) == 3  # three tries, none possible; nothing raised
        assert time.monotonic() - started < 30
        server.start()
        pipe = client.pipeline(transaction=False)
        for _, fields in entries[half:]:
            pipe.xadd(f"poet:{SOURCE_NS}:events", fields)
        pipe.execute()
        sent = len(_feedback_entries(client, SOURCE_NS))
        wait_until(lambda: learner.run(rounds=1) == 0 and _stats(client, SOURCE_NS).get("applied", 0) >= sent, 30,
              "the learner to catch up after the broker came back")
        state = _state(client, SOURCE_NS, fleet["function"])
        assert state["feedback"] == sent == fleet["sent"] and _stats(client, SOURCE_NS)["applied"] == sent
        assert state["params"] == _state(fleet["client"], SOURCE_NS, fleet["function"])["params"]
    finally:
        server.stop()


def test_feedback_without_its_execution_is_joined_with_the_execution_batches_on_the_broker(fleet):
    from poet_runtime.fleet.learner import Learner

    client, function, url = fleet["client"], fleet["function"], fleet["server"].url
    ns = "joined"
    from poet_runtime.fleet import wire

    entries = []
    for i, fields in client.xrange(f"poet:{SOURCE_NS}:events"):
        fields = {k: v for k, v in fields.items() if k not in (b"x", b"s")}
        if fields[b"k"] == b"hi":  # instances on other hosts: their stores are out of the learner's reach
            beat = json.loads(fields[b"d"])
            fields[b"d"] = json.dumps({**beat, "root": "/nonexistent/store"}).encode()
        fields[b"s"] = wire.sign_entry(KEY.encode(), fields)  # signed anew: x is a signed field (format 3)
        entries.append((i, fields))
    # The batches first (as a learner that reads them in an earlier round indexes them), then the feedback.
    _copy(client, SOURCE_NS, ns, [e for e in entries if e[1][b"k"] != b"fb"])
    learner = Learner(url, KEY.encode(), namespace=ns, name="a", block_ms=10)
    learner.run(rounds=2)
    _copy(client, SOURCE_NS, ns, [e for e in entries if e[1][b"k"] == b"fb"])
    wait_until(lambda: learner.run(rounds=1) == 0 and _stats(client, ns).get("applied", 0) >= fleet["sent"], 30,
          "the learner to join and apply the feedback")
    state, source = _state(client, ns, function), _state(client, SOURCE_NS, function)
    assert state["unmatched"] == 0 and state["learner"]["seen"] == fleet["sent"]
    assert sorted(map(tuple, state["learner"]["samples"])) == sorted(map(tuple, source["learner"]["samples"]))
