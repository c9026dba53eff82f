"""Bounded resources (issue 12, items 7, 8, 9): event disk use in a long-lived process, large inputs
to a sandboxed function, feedback on an unknown execution in a large journal.

Real files under tmp_path, the real sink and flusher, the real restricted worker.
"""

from __future__ import annotations

import time

import pytest

from learn_helpers import detector_source, events_of, learn_env, module_dir  # noqa: F401
from poet_runtime import journal

PADDED = '''\
from poet_runtime import poet


@poet(domain="ml_monitoring", optimize_for="accuracy", policy="trusted")
def detect(score: float, threshold: float = 0.9) -> dict:
    return {"drift_detected": score > threshold, "score": score, "note": "n" * 40}
'''


def test_a_long_lived_process_stays_under_its_cap_dropping_the_oldest_never_feedback(learn_env, module_dir):
    import poet_runtime
    from poet_runtime.learn import config, sink

    config.override(max_mb=0.25, flush_interval_s=60.0, recent_executions=10)  # the test flushes
    module = module_dir("cap_detect", PADDED)
    root = journal.events_root(learn_env)
    cap = 0.25 * 1024 * 1024
    ids, labelled, peak = [], [], 0
    for i in range(12_000):
        module.detect((i % 100) / 100.0)
        ids.append(poet_runtime.last_execution().execution_id)
        if i in (3, 150, 2500):
            labelled.append((ids[-1], poet_runtime.feedback(ids[-1], label=True)))
        if i % 250 == 249:
            sink.flush()
            peak = max(peak, journal.disk_bytes(root))
    sink.flush()
    assert peak <= cap + 3 * 64 * 1024  # the cap, plus the open segment and what one round adds
    assert journal.disk_bytes(root) <= cap + 2 * 64 * 1024
    for execution_id, feedback_id in labelled:  # what feedback refers to stays, and the feedback itself
        found = sink.find_execution(execution_id)
        assert found is not None and found[0]["execution_id"] == execution_id, execution_id
        assert [e["id"] for e in events_of(learn_env, "function.feedback") if e["id"] == feedback_id]
    on_disk = {e["correlation_id"] for e in events_of(learn_env, "function.execution")}
    assert ids[4] not in on_disk and ids[200] not in on_disk  # the oldest went first
    assert all(execution_id in on_disk for execution_id in ids[-500:])  # the newest stay


def test_retention_is_applied_while_the_process_runs_not_only_at_start(learn_env, module_dir):
    from poet_runtime.learn import config, sink

    config.override(max_mb=0.5)
    module = module_dir("cap_retention", PADDED)
    module.detect(0.1)
    time.sleep(0.3)  # the flusher applied the limits once at start
    root = journal.events_root(learn_env)
    old = root / "processed" / "ex-1-1.jsonl"
    old.write_bytes(journal.encode({"id": "old", "type": "t"}, 1000))
    stamp = time.time() - 31 * 86400
    import os

    os.utime(old, (stamp, stamp))
    deadline = time.monotonic() + 20
    while old.exists() and time.monotonic() < deadline:  # the process keeps running and recording
        for i in range(500):
            module.detect(i / 500.0)
        time.sleep(0.05)
    assert not old.exists()
    sink.flush()


def _synthetic_journal(root, processes: int, per_process: int, batch: int = 20_000) -> list[str]:
    """Segments as the sink writes them (column batches), ``per_process`` executions per writer."""
    import os

    journal.ensure_dirs(root)
    made = []
    for p in range(processes):
        process = f"{p + 1:012x}"
        path = root / "processed" / f"ex-{4000 + p}-{1_700_000_000_000_000_000 + p}-{process}.jsonl"
        header = journal.encode({"segment": {"process": process, "pid": 4000 + p, "metadata": {
            "version": "1", "environment": "t", "service": "t"}}}, 10_000)
        with open(path, "wb") as handle:
            handle.write(header)
            for start in range(1, per_process + 1, batch):
                numbers = list(range(start, min(start + batch, per_process + 1)))
                rows = len(numbers)
                group = ["m:f", 1, "accuracy", start, [1.7e9 + n / 1e4 for n in numbers], numbers,
                         numbers, numbers, numbers, numbers, "ok", None, None, 1, [n % 2 == 0 for n in numbers]]
                handle.write(journal.encode_columns(["C", 10.0, 1.0], [group]))
                assert rows
        os.utime(path, (1.7e9 + p, 1.7e9 + p))
        made.append(process)
    return made


def test_feedback_on_an_unknown_execution_answers_fast_in_a_large_journal(learn_env):
    import poet_runtime
    from poet_runtime.learn.feedback import FeedbackError

    root = journal.events_root(learn_env)
    # 200,000 executions: reading them all (what the lookup used to do for an unknown id) takes
    # several seconds; python benchmarks/bench_events.py --lookup-events 2000000 measures 2 M.
    processes = _synthetic_journal(root, processes=4, per_process=50_000)
    for unknown in ("0123456789ab-5", f"{processes[2]}-999999999"):
        started = time.perf_counter()
        with pytest.raises(FeedbackError, match="unknown execution"):
            poet_runtime.feedback(unknown, label=True)
        took = time.perf_counter() - started
        assert took < 1.0, (unknown, took)
    found = journal.find_execution_event(root, f"{processes[3]}-43210")  # a known one is still found
    assert found is not None and found["payload"]["output"] is True  # 43210 is even


MEAN = '''\
from poet_runtime import poet


@poet(domain="ml_monitoring", policy="default")
def mean(values: list) -> float:
    return sum(values) / len(values)
'''


def test_an_input_too_large_for_the_sandbox_falls_back_in_milliseconds_not_at_the_wall_limit(poet_home,
                                                                                              write_module):
    """A version that is not the built-in's own runs in the restricted worker (default policy);
    five million floats fit neither its memory_mb (256) nor its wall_ms: refused before sending,
    every time. (A million floats, on a quiet machine, cross in 0.6 s: within the limits, sent.)"""
    import poet_runtime
    from poet_runtime.store import FunctionStore

    module = write_module("big_mean", MEAN)
    assert module.mean([1.0, 2.0]) == 1.5
    store = FunctionStore(poet_home / "big_mean.mean", "big_mean:mean")
    code = store.current().path / "code.py"
    code.write_text(code.read_text() + "\n# edited by hand: not verified, so it runs in the worker\n")
    module = write_module("big_mean", MEAN)
    assert module.mean([1.0, 2.0, 3.0]) == 2.0
    assert poet_runtime.last_execution().backend == "restricted"
    data = [float(i) for i in range(5_000_000)]
    for _ in range(3):
        started = time.perf_counter()
        assert module.mean(data) == 2499999.5
        took = time.perf_counter() - started
        record = poet_runtime.last_execution()
        assert record.fell_back and record.reason == "violation:input_size", record
        assert took < 1.5, took  # the wall limit (2 s) and a killed worker took 5 s
    assert module.mean([float(i) for i in range(1000)]) == 499.5  # a small input is sent as before
    assert poet_runtime.last_execution().status == "ok"
