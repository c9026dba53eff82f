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
from poet_runtime import journal


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


def test_old_event_files_are_pruned_soon_after_a_function_registers(learn_env, module_dir):
    root = learn_env / "events"
    journal.ensure_dirs(root)
    old = root / "processed" / "ex-1-1.jsonl"
    old.write_bytes(journal.encode({"id": "old", "type": "t"}, 1000))
    stamp = time.time() - 31 * 86400
    os.utime(old, (stamp, stamp))
    module = module_dir("ev_prune", detector_source())
    module.detect(0.5)
    deadline = time.monotonic() + 5
    while old.exists() and time.monotonic() < deadline:  # by the flusher, off the call path
        time.sleep(0.02)
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


def _old_row(seq, end, number, status="ok", phases=(1000, 2000, 3000), reason=None, detail=None, flag=1,
             output=None):
    return ["X", seq, end, number, "m:f", 3, status, *phases, reason, detail, "accuracy", flag, output]


def test_column_batches_read_back_as_the_same_events_as_row_batches(tmp_path):
    root = tmp_path / "events"
    journal.ensure_dirs(root)
    header = journal.encode({"segment": {"process": "0123456789ab", "pid": 7,
                                         "metadata": {"version": "1", "environment": "t", "service": "t"}}}, 10_000)
    rows = [_old_row(5, 1_700_000_000_000_001, 11, output={"score": 0.1, "ok": True}),
            _old_row(6, 1_700_000_000_000_002, 12, output={"score": 1 / 3, "ok": False}),
            _old_row(7, 1_700_000_000_000_003, 14, status="fallback", phases=(None, None, None), reason="policy",
                     detail="why", flag=0),
            _old_row(8, 1_700_000_000_000_004, 15, status="error", reason="ValueError", detail="bad", output=[1, 2.5])]
    # The same executions as column groups: shared values once, per-row values as (packed) columns;
    # end as time.time() gave it, and the perf_counter marks instead of the phase durations.
    marks = [[40_000, 41_000, 43_000, 46_000], [50_000, 51_000, 53_000, 56_000]]
    same = ["m:f", 3, "accuracy", 5, [1_700_000_000.000001, 1_700_000_000.000002], [11, 12],
            *map(list, zip(*marks)), "ok", None, None, 1,
            {"k": ["score", "ok"], "c": [[0.1, 1 / 3], [True, False]]}]
    mixed = ["m:f", 3, "accuracy", [7, 8], [1_700_000_000.000003, 1_700_000_000.000004], [14, 15],
             [None, 1], [None, 1001], [None, 3001], [None, 6001], ["fallback", "error"], ["policy", "ValueError"],
             ["why", "bad"], [0, 1], [None, [1, 2.5]]]
    # A group as the first column writer wrote it (14 fields: end in µs, phase durations): still read.
    first = ["m:f", 3, "accuracy", 5, [1_700_000_000_000_001], [11], [1000], [2000], [3000], "ok", None, None, 1,
             {"k": ["score", "ok"], "c": [[0.1], [True]]}]
    (root / "pending" / "ex-1-1.jsonl").write_bytes(header + journal.encode_batch(["B", 10.0, 5.0], rows))
    columns = journal.encode_columns(["C", 10.0, 5.0], [same, mixed])
    assert b"0.1" not in columns and b"1700000000" not in columns  # numbers packed, not written as text
    (root / "pending" / "ex-1-2.jsonl").write_bytes(header + columns + columns[:-9])  # the last write torn
    old = list(journal.read_file(root / "pending" / "ex-1-1.jsonl"))
    new = list(journal.read_file(root / "pending" / "ex-1-2.jsonl"))
    assert new == old and len(new) == 4
    assert [journal.group_row(same, i) for i in range(2)] + [journal.group_row(mixed, i) for i in range(2)] == rows
    assert journal.group_rows(same) + journal.group_rows(mixed) == rows
    assert journal.group_rows(first) == rows[:1] and journal.group_row(first, 0) == rows[0]
    assert new[2]["payload"]["fallback_reason"] == "policy" and new[2]["payload"]["phase_ms"] == {}
    assert new[3]["payload"]["error"] == {"type": "ValueError", "message": "bad"}
    assert journal.count_torn(root) == 1


def test_packed_columns_are_exact():
    values = [0.1, 1 / 3, float("inf"), -0.0, 1e-300, 123456789.123456789]
    assert journal.unpack(journal.pack(values, "d")) == values
    nan = journal.unpack(journal.pack([float("nan")], "d"))[0]
    assert nan != nan
    ints = [0, -1, 2**63 - 1, -(2**63)]
    assert journal.unpack(journal.pack(ints, "q")) == ints
    assert journal.pack([2**64], "q") == [2**64] and journal.pack([1, None], "q") == [1, None]  # stay lists
    assert journal._pack_column([1, 2.0]) == [1, 2.0] and journal._pack_column([True, False]) == [True, False]


def test_an_output_the_encoder_cannot_take_is_dropped_alone(tmp_path):
    looped: list = []
    looped.append(looped)
    group = ["m:f", 1, "accuracy", 1, [1.0, 2.0], [1, 2], [1, 1], [2, 2], [3, 3], [4, 4], "ok", None, None, 1,
             [looped, "fine"]]
    line = journal.encode_columns(["C", None, 0.0], [group])
    value = journal.decode(line)
    assert value[3][0][13:] == [[2, 1], [None, "fine"]]


def _fake_entry(state, number, status="ok", reason=None, detail=None, phases=(0, 10, 30, 60)):
    return (state, number, status, reason, detail, *phases)


def test_flush_groups_interleaved_functions_and_mixed_outcomes(tmp_path):
    from types import SimpleNamespace

    from poet_runtime.learn import config, sink

    config.override(flush_interval_s=60.0)
    root = tmp_path / "events"
    try:
        first = sink.register("mix:first", root, "accuracy", True)
        second = sink.register("mix:second", root, None, False)
        state_a, state_b = SimpleNamespace(version_number=1), SimpleNamespace(version_number=2)
        record_a, record_b = sink.recorder_for(first), sink.recorder_for(second)
        outputs = [{"score": 0.5}, [1, 2], "text", {"score": 0.75, "extra": "x"}, None, 3.5, {"nested": {"a": 1}}]
        for number in range(1, 15):
            if number % 2:
                record_a(_fake_entry(state_a, number), outputs[number // 2])
            else:
                record_b(_fake_entry(state_b, number), {"ignored": True})
        record_a(_fake_entry(state_a, 15, "fallback", "policy", "d" * 5000, (None,) * 4), {"score": 0.0})
        assert sink.flush() == 15 and sink._buffer == []
        events = {e["payload"]["execution_id"].rpartition("-")[2]: e for e in journal.read(root)}
        assert sorted(map(int, events)) == list(range(1, 16))
        for number, event in events.items():
            payload = event["payload"]
            if int(number) % 2 == 0:
                assert (payload["function"], payload["version"], payload["objective"]) == ("mix:second", 2, None)
                assert "output" not in payload
            elif int(number) < 15:
                assert (payload["function"], payload["version"]) == ("mix:first", 1)
                assert payload["output"] == outputs[int(number) // 2]
                assert payload["phase_ms"] == {"perceive": 1e-05, "operate": 2e-05, "enforce": 3e-05}
        fell_back = events["15"]["payload"]
        assert fell_back["fallback_reason"] == "policy" and fell_back["phase_ms"] == {}
        assert len(fell_back["error"] or {}) == 0 and fell_back["output"] == {"score": 0.0}
        assert len({e["id"] for e in events.values()}) == 15
        assert first.last_number == 15 and second.last_number == 14
        # Feedback correlation from memory: only the function with an objective keeps executions.
        found = sink.find_execution(f"{__import__('poet_runtime').records.PROCESS_ID}-13")
        assert found is not None and found[0]["output"] == {"nested": {"a": 1}}
        assert not second.recent
    finally:
        sink.shutdown()
        config.reset()


class _Opaque:
    """A result the flusher must not compare: == raises, as for an array."""

    def __eq__(self, other):
        raise ValueError("ambiguous")

    __hash__ = object.__hash__

    def __str__(self):
        return "opaque"


def test_results_that_cannot_be_compared_are_kept_as_text(tmp_path):
    from types import SimpleNamespace

    from poet_runtime.learn import config, sink

    config.override(flush_interval_s=60.0)
    root = tmp_path / "events"
    try:
        info = sink.register("odd:f", root, "accuracy", True)
        state, record = SimpleNamespace(version_number=1), sink.recorder_for(info)
        for number, result in enumerate([_Opaque(), None, {"a": _Opaque()}], 1):
            record(_fake_entry(state, number), result)
        assert sink.flush() == 3
        outputs = [e["payload"].get("output", "-") for e in journal.read(root)]
        assert outputs == ["opaque", None, {"a": "opaque"}]
    finally:
        sink.shutdown()
        config.reset()


def test_recent_executions_are_bounded_and_older_ones_are_found_on_disk(tmp_path):
    from types import SimpleNamespace

    from poet_runtime import records
    from poet_runtime.learn import config, sink

    config.override(flush_interval_s=60.0, recent_executions=10)
    root = tmp_path / "events"
    try:
        info = sink.register("cap:f", root, "accuracy", True)
        state, record = SimpleNamespace(version_number=1), sink.recorder_for(info)
        for number in range(1, 61):
            record(_fake_entry(state, number), {"score": number / 100})
            if number % 4 == 0:
                sink.flush()
        assert 10 <= info.recent_count <= 14 and info.recent_count == sum(len(g[5]) for g, _ in info.recent)
        assert sink._recent_row(info, 60) is not None and sink._recent_row(info, 5) is None
        payload, found_root = sink.find_execution(f"{records.PROCESS_ID}-5")  # from the files
        assert payload["output"] == {"score": 0.05} and found_root == root
    finally:
        sink.shutdown()
        config.reset()


def test_buffered_calls_leave_no_container_for_the_gc_to_track(learn_env, module_dir):
    import gc

    from poet_runtime.learn import config, sink

    config.override(flush_interval_s=60.0)
    module = module_dir("ev_gc", detector_source())
    module.detect(0.1)
    sink.flush()
    grown = []
    # Twice: a tuple per buffered call would add 5000 tracked objects both times, while
    # another thread of the test process (a pool, a guest) allocating meanwhile is transient.
    for attempt in range(2):
        gc.collect()
        before = len(gc.get_objects())
        for i in range(5000):
            module.detect(i / 5000)
        assert len(sink._buffer) == 5000 * sink._WIDTH
        grown.append(len(gc.get_objects()) - before)
        assert sink.flush() == 5000
        if grown[-1] < 500:
            break
    assert min(grown) < 500, grown
    outputs = [e["payload"]["output"]["score"] for e in events_of(learn_env, "function.execution")]
    assert outputs == [0.1] + [i / 5000 for i in range(5000)] * len(grown)


ADVISING = '''\
from poet_runtime import poet


@poet(domain="ml_monitoring", optimize_for="accuracy")
def detect(score: float, threshold: float = 0.9) -> dict:
    return {"drift_detected": score > threshold, "score": score}
'''


@pytest.mark.parametrize("policy", ["trusted", "default"])
def test_a_dotted_note_of_generated_code_is_its_own_event_and_the_executions_evidence(learn_env, module_dir,
                                                                                         monkeypatch, policy):
    """A domain's generated code reports through validate.note(kind, field, detail); a dotted kind is
    emitted as that exact type, written to the journal, attached to the execution, counted."""
    import poet_runtime
    from poet_runtime import events, runtime, settings
    from poet_runtime.learn import sink

    monkeypatch.setenv("POET_POLICY", policy)
    settings.reset()
    detail = {"why": "score is high", "limit": 0.9}  # structured evidence crosses the sandbox as data
    module = module_dir("ev_advice", ADVISING)
    module.detect(0.1)
    code = learn_env / "ev_advice.detect" / "v1" / "code.py"
    text = code.read_text()
    marker = "def enforce(result):\n"
    assert marker in text
    body = text.index('"""', text.index('"""', text.index(marker)) + 3) + 3  # after enforce's docstring
    text = (text[:body] + f"\n    validate.note('domain.advisory', 'result', {detail!r})"
            + "\n    validate.note('domain.audit', 'score', 'checked')" + text[body:])
    code.write_text(text)
    from poet_runtime.store import FunctionStore

    FunctionStore(code.parent.parent, "ev_advice:detect").accept(1)  # a reviewed hand edit: signed
    sink.shutdown()
    module = module_dir("ev_advice", ADVISING)
    seen = []
    unsubscribe = events.subscribe(lambda event: seen.append(event) if event["type"].startswith("domain.") else None)
    try:
        assert module.detect(0.95) == {"drift_detected": True, "score": 0.95}
    finally:
        unsubscribe()
    record = poet_runtime.last_execution()
    assert record.status == "ok" and record.notes, record
    assert record.evidence == [{"kind": "domain.advisory", "field": "result", "detail": detail},
                               {"kind": "domain.audit", "field": "score", "detail": "checked"}]
    assert [e["type"] for e in seen] == ["domain.advisory", "domain.audit"]
    assert seen[0]["function"] == "ev_advice:detect" and seen[0]["version"] == 1 and seen[0]["field"] == "result"
    assert seen[0]["detail"] == detail
    assert seen[0]["execution_id"] == record.execution_id
    assert runtime.stats()["ev_advice:detect"].notes[("domain.advisory", "result")] == 1
    sink.flush()
    advisory = events_of(learn_env, "domain.advisory")
    assert len(advisory) == 1 and advisory[0]["correlation_id"] == record.execution_id
    assert advisory[0]["payload"] == {"function": "ev_advice:detect", "version": 1, "field": "result",
                                      "detail": detail,
                                      "execution_id": record.execution_id}
    assert len(events_of(learn_env, "domain.audit")) == 1
    execution = [e for e in events_of(learn_env, "function.execution") if e["correlation_id"] == record.execution_id]
    assert execution[0]["payload"]["evidence"] == record.evidence
    first = [e for e in events_of(learn_env, "function.execution") if e["correlation_id"] != record.execution_id]
    assert first and "evidence" not in first[0]["payload"]


NEVER_LOADS = '''\
from poet_runtime import poet


@poet(domain="api_operations", policy="trusted")
def total(items: list) -> int:
    return sum(items)
'''


def test_fallbacks_are_always_recorded_counted_per_reason_even_when_nothing_loads(learn_env, module_dir,
                                                                                  monkeypatch):
    """No POET_EVENTS, no objective, and an enhancement that never loads (generation off, no version):
    every one of its fallbacks is counted into the journal, and ``events --json`` shows them."""
    from poet_runtime import settings
    from poet_runtime.learn import sink

    monkeypatch.setenv("POET_GENERATE", "off")
    settings.reset()
    module = module_dir("ev_never", NEVER_LOADS)
    for i in range(156):
        assert module.total([i, 1]) == i + 1
    assert poet_runtime_last().fell_back
    sink.flush()
    found = events_of(learn_env, "function.fallback")
    assert found and {e["payload"]["function"] for e in found} == {"ev_never:total"}
    assert sum(e["payload"]["count"] for e in found) == 156
    reasons = {e["payload"]["reason"] for e in found}
    assert len(reasons) == 1 and found[-1]["payload"]["total"] == 156
    for i in range(10):
        module.total([i])
    sink.flush()
    assert sum(e["payload"]["count"] for e in events_of(learn_env, "function.fallback")) == 166
    result = subprocess.run([sys.executable, "-m", "poet_runtime", "events", "--json", "--type", "function.fallback"],
                            env={**{k: v for k, v in os.environ.items() if not k.startswith("POET_")},
                                 "POET_HOME": str(learn_env), "PYTHONPATH": str(REPO)},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    shown = [json.loads(line) for line in result.stdout.splitlines()]
    assert sum(e["payload"]["count"] for e in shown) == 166


def poet_runtime_last():
    import poet_runtime

    return poet_runtime.last_execution()
