"""Event throughput: how many durable execution events one process sustains, and what a call pays.

Why: learning needs every execution recorded, but a hot function must not pay an fsync
(or even a JSON encoding) per call. Compared with a floor measured in the same run:
plain JSON lines appended to one file with an fsync every 100 ms.

    python benchmarks/bench_events.py [--seconds 2] [--repeats 5] [--cap-calls 1000000] [--lookup-events 2000000]

Two more rows: disk bytes per million calls with the per-store cap on (``POET_EVENTS_MAX_MB``, here 16 MB)
against the same calls uncapped, and feedback on an unknown execution id in a journal of
``--lookup-events`` executions against reading the whole journal (what the lookup used to do).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SOURCE = '''\
from poet_runtime import poet


@poet(domain="ml_monitoring", optimize_for="accuracy", policy="trusted")
def detect(score: float, threshold: float = 0.5) -> dict:
    return {"drift_detected": score > threshold, "score": score}
'''


def floor_lines_per_s(folder: Path, seconds: float) -> tuple[float, float]:
    """json.dumps + append + fsync every 100 ms, nothing else: (lines per wall second, per CPU second)."""
    path = folder / "floor.jsonl"
    encode = json.JSONEncoder(separators=(",", ":")).encode
    row = ["X", 1, 1795728685230820, 12345, "bench:detect", 1, "ok", 1200, 800, 900, None, None, "accuracy", 1,
           {"drift_detected": False, "score": 0.5}]
    count = 0
    cpu = time.process_time()
    with open(path, "ab", buffering=0) as handle:
        start = last_sync = time.perf_counter()
        batch = []
        while True:
            batch.append(encode(row).encode() + b"\n")
            count += 1
            now = time.perf_counter() if count % 256 == 0 else last_sync
            if now - last_sync >= 0.1:
                handle.write(b"".join(batch))
                batch.clear()
                os.fsync(handle.fileno())
                last_sync = now
                if now - start >= seconds:
                    break
    return count / (time.perf_counter() - start), count / (time.process_time() - cpu)


def per_call_us(fn, n: int) -> float:
    """CPU microseconds of this process per call (all threads: the flusher's work counts)."""
    from poet_runtime.learn import sink

    start = time.process_time()
    for i in range(n):
        fn(0.25)
    sink.flush()
    return (time.process_time() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--cap-calls", type=int, default=1_000_000)
    parser.add_argument("--cap-mb", type=float, default=16.0)
    parser.add_argument("--lookup-events", type=int, default=2_000_000)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="poet-bench-events-"))
    (folder / "mods").mkdir()
    (folder / "mods" / "bench_events_mod.py").write_text(SOURCE)
    sys.path.insert(0, str(folder / "mods"))
    import poet_runtime
    from poet_runtime import events, settings
    from poet_runtime import journal
    from poet_runtime.learn import config, sink

    settings.override(home=folder / "home", cache_dir=folder / "cache")
    poet_runtime.enable(hook=False)
    import bench_events_mod as mod

    mod.detect(0.25)  # generate and load
    state = mod.detect.__poet__

    floors = [floor_lines_per_s(folder, args.seconds) for _ in range(args.repeats)]

    # Sustained: call as fast as possible for N seconds with the default 100 ms durability; count what is durable.
    rates, flusher = [], []
    for _ in range(args.repeats):
        sink.flush()
        before, flush_cpu = sink.acknowledged, sink.flush_cpu_s
        start, cpu = time.perf_counter(), time.process_time()
        calls = 0
        while time.perf_counter() - start < args.seconds:
            for _ in range(1000):
                mod.detect(0.25)
            calls += 1000
        sink.flush()  # the last <=100 ms of calls
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        rates.append(((sink.acknowledged - before) / elapsed, (sink.acknowledged - before) / cpu))
        flusher.append((sink.flush_cpu_s - flush_cpu) / (sink.acknowledged - before) * 1e6)
    on_disk = sum(1 for _ in journal.read(journal.events_root(folder / "home"), {"function.execution"}))

    # Per call: recording on (flusher at its default interval, its work included) vs recording off.
    with_recording, call_path_only = [], []
    for _ in range(args.repeats):
        with_recording.append(per_call_us(mod.detect, args.calls))
        sink.flush()
    config.override(flush_interval_s=60.0)
    sink.shutdown()
    sink.register(state.function_id, journal.events_root(folder / "home"), "accuracy", True)
    state.recorder = sink.recorder_for(sink.registered(state.function_id))
    for _ in range(args.repeats):
        start = time.process_time()
        for i in range(args.calls):
            mod.detect(0.25)
        call_path_only.append((time.process_time() - start) / args.calls * 1e6)
        sink._buffer.clear()
    sink.shutdown()
    state.recorder = None
    assert not events._listeners
    without = [per_call_us(mod.detect, args.calls) for _ in range(args.repeats)]

    med = statistics.median
    floor_wall, floor_cpu = med(f[0] for f in floors), med(f[1] for f in floors)
    rate_wall, rate_cpu = med(r[0] for r in rates), med(r[1] for r in rates)
    print(f"load average now: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (per-CPU-second rates discount it)")
    print(f"floor: JSON lines appended, fsync every 100 ms     {floor_wall:>12,.0f} lines/s  "
          f"{floor_cpu:>12,.0f} lines per CPU s")
    print(f"sustained durable execution events (one process,   {rate_wall:>12,.0f} events/s "
          f"{rate_cpu:>12,.0f} events per CPU s")
    print(f"  calling the function included)                   ratio to floor {rate_wall / floor_wall:.2f} wall, "
          f"{rate_cpu / floor_cpu:.2f} CPU   (target >= 100,000/s)")
    print(f"flusher work per event (CPU in flush(), sustained) {med(flusher):>12.2f} us")
    print(f"events on disk after the runs                      {on_disk:>12,d}")
    print(f"per call, recording off                            {med(without):>12.2f} us CPU")
    print(f"per call, recording on (flusher's work included)   {med(with_recording):>12.2f} us"
          f"   added {med(with_recording) - med(without):.2f} us   ratio {med(with_recording) / med(without):.2f}")
    print(f"per call, call-path part only (no flushing)        {med(call_path_only):>12.2f} us"
          f"   added {med(call_path_only) - med(without):.2f} us   (target <= 3 us)")
    if args.cap_calls:
        uncapped, capped, peak = disk_per_million(mod, state, folder, args.cap_calls, args.cap_mb)
        print(f"disk per 1,000,000 calls, uncapped                 {uncapped / 1e6:>12.1f} MB")
        print(f"disk per 1,000,000 calls, cap {args.cap_mb:g} MB                {capped / 1e6:>12.1f} MB"
              f"   peak {peak / 1e6:.1f} MB   ratio {capped / uncapped:.3f}")
    if args.lookup_events:
        unknown_s, known_s, full_s = lookup_times(folder, args.lookup_events)
        print(f"feedback lookup, unknown id, {args.lookup_events:,} events  {unknown_s * 1e3:>10.1f} ms"
              f"   reading them all: {full_s * 1e3:,.0f} ms   ratio {unknown_s / full_s:.4f}   (target < 1 s)")
        print(f"feedback lookup, a known id in the same journal     {known_s * 1e3:>10.1f} ms")
    poet_runtime.disable()


def disk_per_million(mod, state, folder: Path, calls: int, cap_mb: float) -> tuple[float, float, float]:
    """(bytes per million calls uncapped, with the cap, peak with the cap), the flusher at 100 ms."""
    from poet_runtime import journal
    from poet_runtime.learn import config, sink

    results = []
    for cap in (1_000_000.0, cap_mb):  # uncapped: the cap far above what the run writes
        root = folder / f"disk-{cap:g}"
        config.override(flush_interval_s=0.1, max_mb=cap)
        sink.shutdown()
        events_root = journal.events_root(root)
        sink.register(state.function_id, events_root, "accuracy", True)
        state.recorder = sink.recorder_for(sink.registered(state.function_id))
        peak = 0
        for done in range(0, calls, 10_000):
            for _ in range(10_000):
                mod.detect(0.25)
            sink.flush()  # as the flusher would on a machine where it gets its share of the CPU
            if done % 100_000 == 0:
                peak = max(peak, journal.disk_bytes(events_root))
        sink.flush()
        sink.apply_limits(force=True)
        peak = max(peak, journal.disk_bytes(events_root))
        results.append((journal.disk_bytes(events_root) * 1_000_000 / calls, peak * 1_000_000 / calls))
        sink.shutdown()
        state.recorder = None
    config.override(max_mb=512.0)
    return results[0][0], results[1][0], results[1][1] * calls / 1_000_000


def lookup_times(folder: Path, count: int) -> tuple[float, float, float]:
    """(unknown id, known id, whole journal read) seconds, in a journal of ``count`` executions
    written as the sink writes them (column batches of 20,000, 8 writers)."""
    from poet_runtime import journal
    from poet_runtime.learn import sink

    root = journal.events_root(folder / "lookup")
    journal.ensure_dirs(root)
    writers, batch = 8, 20_000
    per = count // writers
    for w in range(writers):
        process = f"{w + 1:012x}"
        path = root / "processed" / f"ex-{5000 + w}-{1_700_000_000_000_000_000 + w}-{process}.jsonl"
        with open(path, "wb") as handle:
            handle.write(journal.encode({"segment": {"process": process, "pid": 5000 + w, "metadata": {
                "version": "1", "environment": "bench", "service": "bench"}}}, 10_000))
            for start in range(1, per + 1, batch):
                numbers = list(range(start, min(start + batch, per + 1)))
                group = ["bench:detect", 1, "accuracy", start, [1.7e9 + n / 1e4 for n in numbers], numbers,
                         numbers, numbers, numbers, numbers, "ok", None, None, 1,
                         {"k": ["drift_detected", "score"], "c": [[n % 2 == 0 for n in numbers],
                                                                  [0.25] * len(numbers)]}]
                handle.write(journal.encode_columns(["C", 10.0, 1.0], [group]))
    unknown = []
    for _ in range(3):
        started = time.perf_counter()
        assert sink.find_execution("0123456789ab-12345", extra_roots=(root,)) is None
        assert sink.find_execution(f"{3:012x}-{per * 10}", extra_roots=(root,)) is None
        unknown.append((time.perf_counter() - started) / 2)
    started = time.perf_counter()
    assert sink.find_execution(f"{5:012x}-{per // 2}", extra_roots=(root,)) is not None
    known = time.perf_counter() - started
    started = time.perf_counter()
    total = sum(1 for _ in journal.read(root))
    full = time.perf_counter() - started
    assert total == per * writers
    return statistics.median(unknown), known, full


if __name__ == "__main__":
    main()
