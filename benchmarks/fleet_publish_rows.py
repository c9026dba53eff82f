"""Rows for ``bench_fleet.py``: what publishing to the broker costs an instance, against its floors.

Why a module, not a ``bench_`` script: ``bench_fleet.py`` (F2) prints one table for the whole
fleet; this measures the instances' side in the same run and prints nothing. ``rows(url)``:

- ``per call, local journal`` and ``per call, journal + broker``: the same hot loop of an
  enhanced function with an objective, each in a fresh process (settings are per process),
  alternating, medians of the repeats, in CPU time of the whole process (the flusher's and the
  publisher's threads included: on a shared machine wall time measures the neighbours); the
  difference is what publishing adds to a call (goal: at most 3 µs).
- ``published events/s per process, while calling``: executions counted on the stream per wall
  second from the loop's start until the publisher's outbox is empty (bounded by how fast the
  loop calls); ``... a finished process's journal forwarded``: the local run's journal sent by
  a publisher of this process, start to last segment done (goal: 50 000 events/s).
- ``publisher capacity``: the same events per CPU second of the publisher's thread (what it
  could forward with a core of its own; the wall rate above is bounded by the call rate).
- ``bare redis-py pipelined XADD``: one event per entry, pipelined 1 000 at a time, the floor
  a client-side publisher of single events would have.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

MODULE = '''\
from poet_runtime import poet


@poet(domain="ml_monitoring", optimize_for="accuracy", policy="trusted")
def detect(score: float, threshold: float = 0.5) -> dict:
    return {"drift_detected": score > threshold, "score": score}
'''

LOOP = '''\
import json, os, sys, time
import poet_runtime
from poet_runtime.learn import sink
from mod import detect

seconds = float(sys.argv[1])
detect(0.1)  # loaded
sink.flush()
if os.environ.get("POET_BROKER"):  # the client's import and connections are start-up, not per call
    from poet_runtime.fleet import follower, publisher
    deadline = time.monotonic() + 60
    while (publisher.get().client is None or follower.get().client is None) and time.monotonic() < deadline:
        time.sleep(0.01)
calls = 0
cpu = time.process_time()
started = time.perf_counter()
end = started + seconds
while True:
    for i in range(1000):
        detect(0.25)
    calls += 1000
    if time.perf_counter() >= end:
        break
sink.flush()
if os.environ.get("POET_BROKER"):
    from poet_runtime.fleet import publisher
    fleet = publisher.get()
    deadline = time.monotonic() + 60
    while (fleet.outbox or fleet.overflowed) and time.monotonic() < deadline:
        time.sleep(0.002)
elapsed = time.perf_counter() - started
cpu = time.process_time() - cpu  # every thread's: the flusher's and the publisher's work count
result = {"calls": calls, "seconds": elapsed, "cpu_ns_per_call": cpu / calls * 1e9}
if os.environ.get("POET_BROKER"):
    result["publisher_cpu_s"] = fleet.cpu_s
print(json.dumps(result))
'''


def _env(folder: Path, url: str | None, namespace: str) -> dict:
    env = {name: value for name, value in os.environ.items() if not name.startswith("POET_")}
    env.update(POET_ENABLED="1", POET_HOME=str(folder / ".poet"), POET_CACHE_DIR=str(folder / "cache"),
               POET_LOG="error", PYTHONPATH=str(REPO))
    if url:
        env.update(POET_BROKER=url, POET_BROKER_NAMESPACE=namespace, POET_BROKER_KEY="bench-key")
    return env


def _run(folder: Path, url: str | None, namespace: str, seconds: float) -> dict:
    result = subprocess.run([sys.executable, "main.py", str(seconds)], cwd=folder, env=_env(folder, url, namespace),
                            capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"benchmark process failed: {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _stream_events(client, stream: str) -> int:
    from poet_runtime import journal

    count = 0
    last = "-"
    while True:
        entries = client.xrange(stream, min=last, count=5000)
        if last != "-" and entries and entries[0][0] == last:
            entries = entries[1:]
        if not entries:
            return count
        for _, fields in entries:
            if fields.get(b"k") == b"ex":
                value = journal.decode(fields[b"d"])
                if type(value) is list:
                    count += sum(len(group[5]) if type(group[5]) is list else len(journal.unpack(group[5]))
                                 for group in value[3])
        last = entries[-1][0]


def _forward_backlog(url: str, store: Path, namespace: str) -> tuple[int, float]:
    """(executions, seconds) for a publisher to forward a journal a finished process left (here: the
    local run's): events/s through the broker without the call rate as the bound."""
    from poet_runtime import journal
    from poet_runtime.fleet import publisher

    root = journal.events_root(store)
    executions = sum(1 for _ in journal.read(root, {"function.execution"}))
    (root / "fleet").mkdir(parents=True, exist_ok=True)
    (root / "fleet" / "since").write_text("0\n")  # everything in it is to be sent
    saved = os.environ.get("POET_BROKER_NAMESPACE")
    os.environ["POET_BROKER_NAMESPACE"] = namespace
    try:
        started = time.perf_counter()
        sender = publisher.Publisher(url, b"bench-key")
        sender.add_root(root)
        segments = {path.name for path in journal.files(root) if path.name.startswith("ex-")}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            state = sender.roots.get(root)
            if state is not None and segments <= state.finished:
                break
            time.sleep(0.002)
        elapsed = time.perf_counter() - started
        sender.close()
    finally:
        if saved is None:
            os.environ.pop("POET_BROKER_NAMESPACE", None)
        else:
            os.environ["POET_BROKER_NAMESPACE"] = saved
    return executions, elapsed


def _floor(client, seconds: float) -> float:
    """Events/s of a bare pipelined XADD loop, one small event per entry."""
    event = json.dumps({"id": "ev-0-1", "type": "function.execution", "payload": {"function": "bench:detect",
                        "version": 1, "status": "ok", "output": {"drift_detected": False, "score": 0.5}}}).encode()
    stream = f"poet:bench-floor-{os.getpid()}:events"
    sent = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        pipe = client.pipeline(transaction=False)
        for _ in range(1000):
            pipe.xadd(stream, {"k": b"ex", "d": event})
        pipe.execute()
        sent += 1000
    elapsed = time.perf_counter() - started
    client.delete(stream)
    return sent / elapsed


def rows(url: str, seconds: float = 2.0, repeats: int = 3) -> list[dict]:
    import redis

    client = redis.Redis.from_url(url)
    local, broker, rates, floors, capacity, backlog = [], [], [], [], [], []
    with tempfile.TemporaryDirectory(prefix="poet-bench-fleet-") as temp:
        for repeat in range(repeats):
            for mode in ("local", "broker"):
                folder = Path(temp) / f"{mode}-{repeat}"
                folder.mkdir()
                (folder / "mod.py").write_text(MODULE)
                (folder / "main.py").write_text(LOOP)
                namespace = f"bench-{os.getpid()}-{repeat}"
                result = _run(folder, url if mode == "broker" else None, namespace, seconds)
                if mode == "local":
                    local.append(result["cpu_ns_per_call"])
                    backlog_ns = f"bench-backlog-{os.getpid()}-{repeat}"
                    executions, elapsed = _forward_backlog(url, folder / ".poet", backlog_ns)
                    published = _stream_events(client, f"poet:{backlog_ns}:events")
                    client.delete(f"poet:{backlog_ns}:events")
                    if published < executions:
                        raise RuntimeError(f"{executions - published} of {executions} executions not forwarded")
                    backlog.append(executions / elapsed)
                    continue
                broker.append(result["cpu_ns_per_call"])
                stream = f"poet:{namespace}:events"
                published = _stream_events(client, stream)
                client.delete(stream, f"poet:{namespace}:outcomes")
                if published < result["calls"]:
                    raise RuntimeError(f"{result['calls'] - published} of {result['calls']} executions not on {stream}")
                rates.append(published / result["seconds"])
                capacity.append(published / max(result["publisher_cpu_s"], 1e-9))
            floors.append(_floor(client, min(seconds, 1.0)))
    local_ns, broker_ns = statistics.median(local), statistics.median(broker)
    rate, floor = statistics.median(rates), statistics.median(floors)
    return [
        {"name": "per call, local journal", "median": round(local_ns, 1), "unit": "CPU ns/call", "runs": len(local)},
        {"name": "per call, journal + broker", "median": round(broker_ns, 1), "unit": "CPU ns/call", "runs": len(broker),
         "added_ns": round(broker_ns - local_ns, 1), "ratio": round(broker_ns / local_ns, 3),
         "goal": "added <= 3000 ns", "met": broker_ns - local_ns <= 3000},
        {"name": "published events/s per process, while calling (bounded by the call rate)", "median": round(rate),
         "unit": "events/s", "runs": len(rates), "ratio_to_floor": round(rate / floor, 2)},
        {"name": "published events/s, a finished process's journal forwarded", "median": round(statistics.median(backlog)),
         "unit": "events/s", "runs": len(backlog), "goal": ">= 50000", "met": statistics.median(backlog) >= 50_000,
         "ratio_to_floor": round(statistics.median(backlog) / floor, 2)},
        {"name": "publisher capacity, events per CPU second of its thread",
         "median": round(statistics.median(capacity)), "unit": "events/CPU s", "runs": len(capacity),
         "ratio_to_floor": round(statistics.median(capacity) / floor, 2)},
        {"name": "bare redis-py pipelined XADD (floor)", "median": round(floor), "unit": "events/s",
         "runs": len(floors)},
    ]


if __name__ == "__main__":  # for a quick look; bench_fleet.py prints these rows in its table
    print(json.dumps(rows(sys.argv[1]), indent=1))
