"""Durable events: format, torn writes, SIGKILL durability, sampling, caps, retention, the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from learn_helpers import REPO, detector_source, events_of, learn_env, module_dir, run_child  # noqa: F401
from poet_runtime.learn import journal


def test_lines_round_trip_and_torn_or_damaged_lines_are_skipped(tmp_path):
    root = tmp_path / "events"
    journal.ensure_dirs(root)
    good = [journal.encode({"id": f"e{i}", "type": "t"}, 1000) for i in range(3)]
    damaged = bytearray(good[1])
    damaged[15] ^= 0x01  # one flipped bit inside the JSON
    path = root / "pending" / "ex-1-1.jsonl"
    path.write_bytes(good[0] + bytes(damaged) + good[2] + good[2][:-7])  # last write torn mid-line
    assert [e["id"] for e in journal.read(root)] == ["e0", "e2"]
    assert journal.count_torn(root) == 2
    assert journal.encode({"x": "y" * 2000}, 1000) is None  # over the per-event cap: never written


def test_a_torn_batch_of_execution_rows_is_skipped_whole(tmp_path):
    root = tmp_path / "events"
    journal.ensure_dirs(root)
    header = journal.encode({"segment": {"process": "0123456789ab", "pid": 1,
                                         "metadata": {"version": "1", "environment": "t", "service": "t"}}}, 10_000)

    def row(number):
        return ["X", number, 1_700_000_000_000_000, number, "m:f", 1, "ok", 1000, 2000, 3000, None, None,
                "accuracy", 1, {"score": 0.5}]

    first = journal.encode_batch(["B", 10.0, 5.0], [row(1), row(2)])
    second = journal.encode_batch(["B", 10.0, 5.0], [row(3), row(4)])
    (root / "pending" / "ex-1-1.jsonl").write_bytes(header + first + second[: len(second) // 2])
    events = list(journal.read(root))
    assert [e["correlation_id"] for e in events] == ["0123456789ab-1", "0123456789ab-2"]
    assert events[0]["payload"]["phase_ms"] == {"perceive": 0.001, "operate": 0.002, "enforce": 0.003}
    assert journal.count_torn(root) == 1


def test_execution_events_are_durable_within_the_interval_without_flush(learn_env, module_dir):
    from poet_runtime.learn import models

    module = module_dir("ev_basic", detector_source())
    for score in (0.2, 0.95):
        module.detect(score)
    time.sleep(0.4)  # the flusher's interval is 100 ms; nothing calls flush() here
    found = events_of(learn_env, "function.execution")
    assert [e["payload"]["output"]["drift_detected"] for e in found] == [False, True]
    for event in found:
        models.validate_event(event)  # the schema the pydantic models describe
        assert event["payload"]["function"] == "ev_basic:detect" and event["payload"]["status"] == "ok"
        assert event["payload"]["metrics"]["duration_ms"] > 0 and event["metadata"]["version"] == "1"
    last = __import__("poet_runtime").last_execution()
    assert found[-1]["correlation_id"] == last.execution_id


def test_no_objective_means_no_train_phase_no_events_no_feedback(learn_env, module_dir):
    import poet_runtime
    from poet_runtime.learn.feedback import FeedbackError

    module = module_dir("ev_plain", detector_source())
    module.plain(0.7)
    code = (learn_env / "ev_plain.plain" / "v1" / "code.py").read_text()
    assert "def train(" not in code
    execution_id = poet_runtime.last_execution().execution_id
    with pytest.raises(FeedbackError, match="unknown execution|no optimize_for"):
        poet_runtime.feedback(execution_id, label=True)
    assert not (learn_env / "events").exists()


def test_outputs_over_the_cap_are_dropped_but_the_execution_is_kept(learn_env, module_dir):
    from poet_runtime.learn import config, sink

    config.override(max_output_bytes=100)
    module = module_dir("ev_big", '''\
from poet_runtime import poet


@poet(optimize_for="accuracy", policy="trusted")
def echo(text: str) -> str:
    return text
''')
    module.echo("small")
    module.echo("x" * 1000)
    sink.flush()
    payloads = [e["payload"] for e in events_of(learn_env, "function.execution")]
    assert payloads[0]["output"] == "small"
    assert "output" not in payloads[1] and payloads[1]["output_truncated"] is True


def test_sampling_per_function(learn_env, module_dir):
    from poet_runtime.learn import config, sink

    config.override(sample_by_function={"ev_sampled:detect": 0.0})
    module = module_dir("ev_sampled", detector_source())
    for _ in range(20):
        module.detect(0.5)
    sink.flush()
    assert events_of(learn_env, "function.execution") == []


def test_retention_removes_old_files(tmp_path):
    root = tmp_path / "events"
    journal.ensure_dirs(root)
    old, new = root / "processed" / "ex-1-1.jsonl", root / "pending" / "ex-2-2.jsonl"
    for path in (old, new):
        path.write_bytes(journal.encode({"id": path.name, "type": "t"}, 1000))
    stamp = time.time() - 31 * 86400
    os.utime(old, (stamp, stamp))
    assert journal.prune(root, 30) == 1
    assert [p.name for p in journal.files(root)] == [new.name]


def test_old_event_files_are_pruned_when_a_function_registers(learn_env, module_dir):
    root = learn_env / "events"
    journal.ensure_dirs(root)
    old = root / "processed" / "ex-1-1.jsonl"
    old.write_bytes(journal.encode({"id": "old", "type": "t"}, 1000))
    stamp = time.time() - 31 * 86400
    os.utime(old, (stamp, stamp))
    module = module_dir("ev_prune", detector_source())
    module.detect(0.5)
    assert not old.exists()


WRITER = '''
import sys, time
sys.path.insert(0, {folder!r})
import poet_runtime
poet_runtime.enable(hook=False)
import ev_kill
from poet_runtime.learn import sink
mode = {mode!r}
seen = 0
i = 0
while True:
    i += 1
    ev_kill.detect((i % 100) / 100)
    if mode == "feedback" and i % 3 == 0:
        print("FB", ev_kill.detect.feedback(label=True, comments="c" * 50), flush=True)
    if sink.acknowledged != seen:
        seen = sink.acknowledged
        print("ACK", seen, flush=True)
'''


def _kill_after(process, seconds: float) -> list[str]:
    lines = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line.strip())
    process.send_signal(signal.SIGKILL)
    rest, _ = process.communicate(timeout=10)
    # Lines still in the pipe were written before the kill: they were acknowledged too.
    return lines + [line.strip() for line in rest.splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.6, 1.1, 1.7])
def test_sigkill_loses_no_acknowledged_execution_event(tmp_path, module_dir, delay):
    module_dir.folder.joinpath("ev_kill.py").write_text(detector_source(), encoding="utf-8")
    home = tmp_path / "home"
    child = run_child(WRITER.format(folder=str(module_dir.folder), mode="executions"), home, tmp_path / "cache")
    lines = _kill_after(child, delay)
    acknowledged = max([int(line.split()[1]) for line in lines if line.startswith("ACK")], default=0)
    assert acknowledged > 0, lines[-5:]
    on_disk = len(events_of(home, "function.execution"))
    assert on_disk >= acknowledged
    ids = [e["id"] for e in events_of(home)]
    assert len(ids) == len(set(ids))


@pytest.mark.slow
def test_sigkill_loses_no_feedback_that_returned(tmp_path, module_dir):
    module_dir.folder.joinpath("ev_kill.py").write_text(detector_source(), encoding="utf-8")
    home = tmp_path / "home"
    child = run_child(WRITER.format(folder=str(module_dir.folder), mode="feedback"), home, tmp_path / "cache",
                      env={"POET_FEEDBACK_RATE": "100000"})
    lines = _kill_after(child, 1.5)
    returned = {line.split()[1] for line in lines if line.startswith("FB")}
    assert returned
    stored = {e["id"] for e in events_of(home, "function.feedback")}
    assert returned <= stored


def test_events_command_filters_and_prints_json(learn_env, module_dir, capsys):
    import argparse

    from poet_runtime.commands import events as command
    from poet_runtime.learn import sink

    module = module_dir("ev_cli", detector_source())
    module.detect(0.3)
    module.detect.feedback(label=False, comments="fine")
    sink.flush()
    parser = argparse.ArgumentParser()
    command.register(parser.add_subparsers())
    args = parser.parse_args(["events", "--json", "--type", "function.feedback", "--root", str(learn_env)])
    assert args.handler(args) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["type"] for e in printed] == ["function.feedback"]
    args = parser.parse_args(["events", "--function", "ev_cli:detect", "--root", str(learn_env)])
    assert args.handler(args) == 0
    text = capsys.readouterr().out
    assert "function.execution" in text and "function.feedback" in text


@pytest.mark.slow
def test_events_command_through_the_cli(learn_env, module_dir, tmp_path):
    from poet_runtime.learn import sink

    module = module_dir("ev_cli2", detector_source())
    module.detect(0.3)
    sink.flush()
    result = subprocess.run([sys.executable, "-m", "poet_runtime", "events", "--json", "--root", str(learn_env)],
                            capture_output=True, text=True, cwd=tmp_path, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["type"] for line in result.stdout.splitlines()] == ["function.execution"]


def test_importing_the_package_loads_neither_pydantic_nor_the_learning_path(tmp_path):
    code = ("import sys, time; t = time.perf_counter(); import poet_runtime; ms = (time.perf_counter() - t) * 1000; "
            "print('pydantic' in sys.modules, 'poet_runtime.learn' in sys.modules, round(ms))")
    child = run_child(code, tmp_path / "home", tmp_path / "cache")
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    pydantic_loaded, learn_loaded, _ms = out.split()
    assert (pydantic_loaded, learn_loaded) == ("False", "False")
