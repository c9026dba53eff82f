"""``python -m poet_runtime learn --broker URL``: one member of the fleet's learner group.

Why two steps, *stage* then *apply*: a consumer group hands entries to whichever learner asks
first, so two learners see one function's feedback in interleaved pieces; a learner's result
depends on the order it sees feedback in (it proposes every ``learn_every`` samples, and
among equally good thresholds keeps the one nearest the current value). So:

1. **Stage** (any learner): a batch read with ``XREADGROUP`` (and entries reclaimed with
   ``XAUTOCLAIM`` from a learner that stopped answering, after ``claim_idle`` seconds) is
   verified (``wire.verify``; an unsigned or wrongly signed entry is refused, counted, and
   never learned from), its feedback joined with its execution (the entry's ``x`` field, else
   the execution batches indexed by process and number, else the function's store on this
   machine), and written as one sorted-set member per feedback keyed by its stream id, in
   **one MULTI/EXEC with the XACK** of the same entries. Acknowledged therefore means staged.
2. **Apply** (any learner, one at a time per function through ``WATCH``): the function's state
   (the very learner and monitor one process uses, as JSON: ``learner_state``) takes the staged
   feedback *below the watermark* (the group's oldest pending entry, or past its last
   delivered one: everything before it is acknowledged, hence staged), in stream order; the new
   state, the removal of what was applied, the applied feedback event ids, the signed outcomes
   (``params.updated``, ``learning.degraded``/``recovered``) and the counters go in **one
   MULTI/EXEC**. A concurrent apply makes the ``WATCH`` fail and the work is redone on the new
   state.

So a learner killed anywhere loses nothing (its pending entries are reclaimed, its unfinished
transaction never happened), nothing counts twice (a redelivered line has a new stream id but
the same event id, and applied event ids are remembered), and N learners learn exactly what
one learner learns from the same stream. Everything lives in Redis: a learner keeps nothing
of its own across a restart.

What it does not do (said in the README): replay tuning (it has no function to call, so it
learns from outputs, as one process does with replay off), and regeneration: on degradation it
publishes ``learning.degraded``; regenerating, screening and promoting stay with the instances'
own engines, which hold the function.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path

from poet_runtime import journal
from poet_runtime.fleet import learner_fast, wire
from poet_runtime.fleet.learner_state import FunctionLearning
from poet_runtime.learn.objectives import LABELLED, MEASURED, clamp, correct, prediction_of

log = logging.getLogger("poet_runtime")

DEFER_S = 10.0  # feedback whose execution is nowhere yet waits this long (pending) before it counts as unmatched
SEEN_DAYS = 7.0  # applied feedback event ids are remembered this long (a redelivery older than that is unlikely)
SEEN_MAX = 200_000  # and at most this many per function (redeliveries come after a crash: recent ones)
INDEX_TTL_S = 7 * 86400  # a process's execution index outlives it by this much (process ids change on restart)
APPLY_LIMIT = 5000  # staged feedback applied per function per transaction


class Keys:
    """Every Redis key of one namespace (``poet:NS:...``)."""

    def __init__(self, ns: str):
        self.ns = ns
        self.events = wire.stream(ns, wire.EVENTS)
        self.outcomes = wire.stream(ns, wire.OUTCOMES)
        # learning.degraded / learning.recovered: signed like outcomes, but on a stream of their own, since
        # instances apply only wire.OUTCOME_TYPES (status shows them; an instance may follow it to regenerate)
        self.learning = wire.stream(ns, "learning")
        self.instances = f"poet:{ns}:instances"  # process id -> last heartbeat (JSON)
        self.functions = f"poet:{ns}:functions"  # function id -> spec from the last heartbeat (JSON)
        self.decisions = f"poet:{ns}:decisions"  # function id -> last decision (JSON)
        self.stats = f"poet:{ns}:learn:stats"  # counters
        self.staged = f"poet:{ns}:learn:staged"  # set of function ids with staged feedback

    def state(self, function: str) -> str:
        return f"poet:{self.ns}:learn:state:{function}"

    def stage(self, function: str) -> str:
        return f"poet:{self.ns}:learn:stage:{function}"

    def seen(self, function: str) -> str:
        return f"poet:{self.ns}:learn:seen:{function}"

    def index(self, process: str) -> str:
        return f"poet:{self.ns}:learn:exidx:{process}"


def padded(entry_id) -> str:
    """A stream id whose text sorts as the id does (sorted-set members are compared as bytes)."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return f"{int(ms):015d}-{int(seq or 0):010d}"


def _next_padded(entry_id) -> str:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return f"{int(ms):015d}-{int(seq or 0) + 1:010d}"


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _lines(data: bytes):
    """The JSON values of an entry's ``d`` (one journal line, or a flusher's notes and batch line)."""
    for line in data.splitlines(keepends=True):
        value = journal.decode(line)
        if value is not None:
            yield value


class LearnerError(Exception):
    """A learner that cannot start (no key, no broker client)."""


class Learner:
    def __init__(self, url: str, key: bytes, *, namespace: str, name: str | None = None, claim_idle: float = 30.0,
                 batch: int = 1000, block_ms: int = 1000, settings=None):
        if not key:
            raise LearnerError(f"no fleet key: set {wire.KEY_VAR} or {wire.KEY_FILE_VAR} (a learner that cannot sign "
                               "its outcomes or check its input does not start)")
        import redis

        from poet_runtime.learn import config

        self.redis = redis
        self.client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=5)
        self.key = key
        self.keys = Keys(namespace)
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.claim_idle = float(claim_idle)
        self.batch = int(batch)
        self.block_ms = int(block_ms)
        self.settings = settings or config.get()
        self.stopping = False
        self.deferred: dict = {}  # stream id -> first time this learner could not find its execution
        self.noted: set = set()  # what was logged once
        self.last_claim = 0.0
        self.counts = {"staged": 0, "applied": 0, "refused": 0, "rounds": 0}

    # -- the loop --------------------------------------------------------------------------------

    def ensure_group(self) -> None:
        try:
            self.client.xgroup_create(self.keys.events, wire.LEARNERS, id="0", mkstream=True)
        except self.redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    def run(self, rounds: int | None = None) -> int:
        """Learn until ``stop()`` (SIGTERM) or ``rounds`` rounds (tries, when the broker is away);
        survives the broker going away. Returns how many rounds failed for want of a broker."""
        delay, down_since, done, failed = 0.1, None, 0, 0
        while not self.stopping and (rounds is None or done < rounds):
            done += 1
            try:
                if down_since is not None or done == 1:
                    self.ensure_group()
                self.round()
                if down_since is not None:
                    log.warning("poet_runtime: learner %s: broker back after %.1f s", self.name,
                                time.monotonic() - down_since)
                    down_since, delay = None, 0.1
            except (self.redis.ConnectionError, self.redis.TimeoutError, self.redis.BusyLoadingError,
                    OSError) as error:
                failed += 1
                if down_since is None:
                    down_since = time.monotonic()
                    log.warning("poet_runtime: learner %s: broker unreachable (%s); retrying", self.name, error)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
            except self.redis.ResponseError as error:
                if "NOGROUP" in str(error):  # the broker lost its data (or the stream was deleted): start over
                    down_since = down_since or time.monotonic()
                    continue
                raise
        return failed

    def stop(self, *_):
        self.stopping = True

    def read(self) -> list:
        """Entries to stage: this learner's own pending ones, those reclaimed from silent learners, new ones."""
        stream, group = self.keys.events, wire.LEARNERS
        entries: dict = {}
        own = self.client.xreadgroup(group, self.name, {stream: "0"}, count=self.batch + len(self.deferred))
        for _, items in own or ():
            for entry_id, fields in items:
                entries[entry_id] = fields
        now = time.monotonic()
        if now - self.last_claim >= min(self.claim_idle / 2, 5.0):
            self.last_claim = now
            start = "0-0"
            while len(entries) < self.batch * 2:
                answer = self.client.xautoclaim(stream, group, self.name, int(self.claim_idle * 1000), start,
                                                count=self.batch)
                start, claimed = answer[0], answer[1]
                for entry_id, fields in claimed:
                    entries[entry_id] = fields
                if _text(start) == "0-0" or not claimed:
                    break
        waiting = {i for i in entries if i not in self.deferred}
        block = None if waiting else self.block_ms
        fresh = self.client.xreadgroup(group, self.name, {stream: ">"}, count=self.batch, block=block)
        for _, items in fresh or ():
            for entry_id, fields in items:
                entries[entry_id] = fields
        return sorted(entries.items(), key=lambda item: padded(item[0]))

    def round(self) -> None:
        entries = self.read()
        if entries:
            self.stage(entries)
        for function in sorted(_text(f) for f in self.client.smembers(self.keys.staged)):
            self.apply(function)
        self.counts["rounds"] += 1

    # -- stage -----------------------------------------------------------------------------------

    def stage(self, entries: list) -> None:
        keys = self.keys
        acks, refused, malformed, deferred = [], 0, 0, 0
        instances, functions, decisions = {}, {}, {}
        index: dict = {}  # process -> {member: first number}
        staged: dict = {}  # function -> {member: 0}
        local: dict = {}  # (process, number) -> payload, from execution batches in this read
        feedback = []
        for entry_id, fields in entries:
            if fields is None:  # deleted from the stream before it was read (trimmed)
                acks.append(entry_id)
                continue
            kind, data = fields.get(b"k"), fields.get(b"d")
            if kind not in wire.ENTRY_KINDS or data is None:
                malformed += 1
                acks.append(entry_id)
                continue
            if not wire.verify(self.key, kind, data, fields.get(b"s")):
                refused += 1
                self._once(("refused", _text(fields.get(b"p", b"?"))), "poet_runtime: learner %s: refused %s entry "
                           "%s from process %s: %s (refused entries are counted in status, never learned from)",
                           self.name, _text(kind), _text(entry_id), _text(fields.get(b"p", b"?")),
                           "unsigned" if not fields.get(b"s") else "signature does not verify")
                acks.append(entry_id)
                continue
            process = _text(fields.get(b"p", b""))
            try:
                if kind == b"hi":
                    beat = json.loads(data)
                    seen_ms = int(_text(entry_id).partition("-")[0])
                    instances[process] = json.dumps({k: beat.get(k) for k in (
                        "host", "pid", "process", "root", "started", "last_event")} | {"seen_ms": seen_ms})
                    for function, spec in (beat.get("functions") or {}).items():
                        functions[function] = json.dumps({**spec, "root": beat.get("root")})
                        if spec.get("objective") and spec.get("version") is not None:
                            # In the function's own order too: a new version takes over at this point
                            # of its feedback, for every learner alike.
                            item = {"spec": {k: spec.get(k) for k in (
                                "version", "objective", "domain", "parameters", "params")}}
                            staged.setdefault(function, {})[f"{padded(entry_id)}|{json.dumps(item)}"] = 0
                    acks.append(entry_id)
                elif kind == b"ex":
                    for value in _lines(data):
                        self._index_batch(entry_id, process, value, index, staged, local)
                    acks.append(entry_id)
                elif kind == b"lr":
                    for event in _lines(data):
                        if type(event) is dict and type(event.get("payload")) is dict and event["payload"].get("function"):
                            decisions[event["payload"]["function"]] = json.dumps({
                                "type": event.get("type"), "version": event["payload"].get("version"),
                                "at": event.get("timestamp"), "by": f"instance {process}"})
                    acks.append(entry_id)
                else:
                    feedback.append((entry_id, fields, process))
            except (ValueError, TypeError, KeyError, AttributeError) as error:
                malformed += 1
                self._once(("malformed", type(error).__name__), "poet_runtime: learner %s: entry %s is malformed "
                           "(%s: %s); acknowledged, not learned from", self.name, _text(entry_id),
                           type(error).__name__, error)
                acks.append(entry_id)
        if functions:  # a feedback in this read may need its function's store root
            self.client.hset(keys.functions, mapping=functions)
        for entry_id, fields, process in feedback:
            outcome = self._feedback(entry_id, fields, process, local)
            if outcome is None:
                deferred += 1
                continue
            self.deferred.pop(entry_id, None)
            acks.append(entry_id)
            if outcome is False:
                malformed += 1
                continue
            function, member = outcome
            staged.setdefault(function, {})[member] = 0
        if not acks:
            return
        pipe = self.client.pipeline(transaction=True)
        if instances:
            pipe.hset(keys.instances, mapping=instances)
        if functions:
            pipe.hset(keys.functions, mapping=functions)
        if decisions:
            pipe.hset(keys.decisions, mapping=decisions)
        for process, members in index.items():
            pipe.zadd(keys.index(process), members)
            pipe.zremrangebyrank(keys.index(process), 0, -100_001)  # the newest 100 000 batches per process
            pipe.expire(keys.index(process), INDEX_TTL_S)
        for function, members in staged.items():
            pipe.zadd(keys.stage(function), members)
            pipe.sadd(keys.staged, function)
        count = sum(1 for members in staged.values() for member in members if '|{"spec":' not in member)
        for name, value in (("staged", count), ("refused", refused), ("malformed", malformed), ("entries", len(acks))):
            if value:
                pipe.hincrby(keys.stats, name, value)
        pipe.xack(keys.events, wire.LEARNERS, *acks)
        pipe.execute()
        self.counts["staged"] += count
        self.counts["refused"] += refused

    def _index_batch(self, entry_id, process: str, value, index: dict, staged: dict, local: dict) -> None:
        """An execution batch line: where its executions are (for feedback without ``x``); measured
        objectives' executions are staged as they are (they learn from executions, not labels)."""
        if type(value) is not list or len(value) != 4 or value[0] not in ("C", "B"):
            return
        groups = value[3] if value[0] == "C" else []
        header = {"process": process, "pid": 0, "metadata": {}}
        for group in groups:
            if not group[2]:  # no objective: nobody gives feedback on it
                continue
            numbers = journal.unpack(group[5])
            index.setdefault(process, {})[f"{_text(entry_id)}:{max(numbers)}"] = min(numbers)
            rows = journal.group_rows(group)
            if group[2] in MEASURED:
                measured = []
                for row in rows:
                    payload = journal.expand(row, header, value)["payload"]
                    measured.append([payload["status"], (payload.get("phase_ms") or {}).get("operate"),
                                     payload["metrics"].get("duration_ms"), payload.get("version")])
                first = journal.expand(rows[0], header, value)["id"]
                member = f"{padded(entry_id)}|{json.dumps({'m': measured, 'e': first, 't': time.time()})}"
                staged.setdefault(group[0], {})[member] = 0
            elif len(local) < 200_000:
                for row in rows:
                    local[(process, row[3])] = (row, value)

    def _feedback(self, entry_id, fields, process: str, local: dict):
        """(function, staged member) for a feedback entry; None: wait (its execution is not here yet);
        False: not a feedback event."""
        event = journal.decode(fields[b"d"]) if fields[b"d"].endswith(b"\n") else None
        if event is None:
            event = next(iter(_lines(fields[b"d"])), None)
        if type(event) is not dict or type(event.get("payload")) is not dict:
            return False
        payload = event["payload"]
        function, execution_id = payload.get("function"), payload.get("execution_id")
        if not isinstance(function, str) or not isinstance(execution_id, str):
            return False
        execution = None
        if fields.get(b"x"):
            execution = json.loads(fields[b"x"])
        if execution is None:
            execution = self._find_execution(function, execution_id, local)
        found = execution is not None and "output" in execution
        if execution is None:
            first = self.deferred.setdefault(entry_id, time.monotonic())
            age = time.time() - int(_text(entry_id).partition("-")[0]) / 1000.0
            if max(age, time.monotonic() - first) < DEFER_S:
                return None
            self._once(("unmatched", function), "poet_runtime: learner %s: feedback %s on %s: execution %s not found "
                       "on the broker nor in the function's store; counted as unmatched", self.name, event.get("id"),
                       function, execution_id)
        item = {"e": event.get("id"), "t": event.get("timestamp"), "x": execution_id, "k": found,
                "o": execution.get("output") if found else None, "l": payload.get("label"),
                "c": payload.get("comments"), "v": (execution or {}).get("version", payload.get("version")),
                "u": execution is None}
        return function, f"{padded(entry_id)}|{json.dumps(item, default=str)}"

    def _find_execution(self, function: str, execution_id: str, local: dict):
        process, _, number = execution_id.rpartition("-")
        if not number.isdigit():
            return None
        number = int(number)
        header = {"process": process, "pid": 0, "metadata": {}}
        found = local.get((process, number))
        if found is not None:
            return journal.expand(found[0], header, found[1])["payload"]
        for member in self.client.zrevrangebyscore(self.keys.index(process), number, "-inf", start=0, num=3):
            batch_id, _, last = _text(member).rpartition(":")
            if int(last) < number:
                continue
            for _, fields in self.client.xrange(self.keys.events, batch_id, batch_id):
                for value in _lines(fields.get(b"d", b"")):
                    if type(value) is not list or len(value) != 4 or value[0] != "C":
                        continue
                    for group in value[3]:
                        numbers = journal.unpack(group[5])
                        if number in numbers:
                            row = journal.group_row(group, numbers.index(number))
                            return journal.expand(row, header, value)["payload"]
        spec = self.client.hget(self.keys.functions, function)
        root = json.loads(spec).get("root") if spec else None
        if root and Path(root).is_dir():  # the function's store is reachable from here (same machine, shared path)
            event = journal.find_execution_event(journal.events_root(Path(root)), execution_id)
            if event is not None:
                return event["payload"]
        return None

    # -- apply -----------------------------------------------------------------------------------

    def watermark(self, pipe) -> str:
        """The padded stream id below which every entry is acknowledged (hence staged)."""
        last = "0-0"
        for group in pipe.xinfo_groups(self.keys.events):
            if _text(group["name"]) == wire.LEARNERS:
                last = _text(group["last-delivered-id"])
        pending = pipe.xpending(self.keys.events, wire.LEARNERS)
        if pending and pending.get("pending"):
            return min(padded(pending["min"]), _next_padded(last))
        return _next_padded(last)

    def apply(self, function: str) -> int:
        """Apply this function's staged feedback below the watermark, in stream order; returns how many."""
        keys = self.keys
        state_key, stage_key, seen_key = keys.state(function), keys.stage(function), keys.seen(function)
        for _ in range(50):
            pipe = self.client.pipeline(transaction=True)
            try:
                pipe.watch(state_key)
                mark = self.watermark(pipe)
                items = pipe.zrangebylex(stage_key, "-", f"({mark}", start=0, num=APPLY_LIMIT)
                if not items:
                    if not pipe.zcard(stage_key):
                        pipe.multi()
                        pipe.srem(keys.staged, function)
                        pipe.execute()
                    return 0
                raw = pipe.get(state_key)
                state = FunctionLearning.from_json(json.loads(raw), self.settings) if raw is not None else None
                decoded = [(_text(m).partition("|")[0], json.loads(_text(m).partition("|")[2])) for m in items]
                ids = [item["e"] for _, item in decoded if item.get("e")]
                known = set()
                if ids:
                    known = {i for i, score in zip(ids, pipe.zmscore(seen_key, ids)) if score is not None}
                outcomes, applied, duplicates, done = [], {}, 0, 0
                for position, item in decoded:
                    spec = item.get("spec")
                    if spec is not None:  # a heartbeat: the version in force from here on
                        if state is None:
                            state = FunctionLearning(function, spec, self.settings)
                        elif spec.get("version") != state.version:
                            state.version_changed(spec)
                        done += 1
                        continue
                    if state is None:  # feedback before any heartbeat of its function: the latest one known
                        latest = pipe.hget(keys.functions, function)
                        if latest is None:
                            self._once(("no spec", function), "poet_runtime: learner %s: %s: feedback waits for "
                                       "the function's first heartbeat (its parameters and objective)",
                                       self.name, function)
                            break
                        state = FunctionLearning(function, json.loads(latest), self.settings)
                    done += 1
                    event_id = item.get("e")
                    if event_id in known or event_id in applied:
                        duplicates += 1
                        continue
                    applied[event_id] = item.get("t") or time.time()
                    if "m" in item:
                        self._measured(state, item, outcomes)
                    else:
                        self._labelled(state, item, outcomes)
                    state.last_id = position
                if not done:
                    return 0
                decoded = [item for _, item in decoded[:done] if "spec" not in item]
                pipe.multi()
                pipe.set(state_key, json.dumps(state.to_json(), default=str))
                pipe.zremrangebylex(stage_key, "-", b"[" + items[done - 1])
                applied = {k: v for k, v in applied.items() if k}
                if applied:
                    pipe.zadd(seen_key, applied)
                    pipe.zremrangebyscore(seen_key, "-inf", time.time() - SEEN_DAYS * 86400)
                    pipe.zremrangebyrank(seen_key, 0, -SEEN_MAX - 1)
                for kind, message in outcomes:
                    data = json.dumps(message, sort_keys=True, default=str).encode()
                    pipe.xadd(keys.outcomes if kind in wire.OUTCOME_TYPES else keys.learning,
                              {"t": kind, "m": data, "s": wire.sign(self.key, kind.encode(), data), "l": self.name})
                    pipe.hset(keys.decisions, function, json.dumps({
                        "type": kind, "version": message.get("version"), "at": message.get("at"),
                        "by": f"learner {self.name}",
                        "detail": message.get("params") or message.get("rolling")}, default=str))
                pipe.hincrby(keys.stats, "applied", len(decoded) - duplicates)
                if duplicates:
                    pipe.hincrby(keys.stats, "duplicates", duplicates)
                if outcomes:
                    pipe.hincrby(keys.stats, "outcomes", len(outcomes))
                pipe.execute()
                self.counts["applied"] += len(decoded) - duplicates
                return len(decoded) - duplicates
            except self.redis.WatchError:
                continue  # another learner applied meanwhile: redo on its state
            finally:
                pipe.reset()
        return 0

    def _labelled(self, state: FunctionLearning, item: dict, outcomes: list) -> None:
        """One feedback, as ``engine.Learning.on_feedback`` learns from it (without replay)."""
        state.feedback += 1
        if item.get("u"):
            state.unmatched += 1
        if item.get("c"):
            state.comments.append(item["c"])
        label, output = item.get("l"), item.get("o")
        if state.objective not in LABELLED or label is None or not item.get("k"):
            return
        if not correct(output, label):
            state.failures.append({"execution_id": item.get("x"), "output": output, "label": label,
                                   "version": item.get("v")})
        learner = state.learner
        learner.observe(output, label)
        changes = learner_fast.propose(learner, self._current(state))  # the learner's own answer, faster
        if changes:
            value = getattr(learner, "value_for", None)
            name = getattr(learner, "parameter", None)
            evidence = {"samples": learner.seen}
            if value is not None and name is not None:
                evidence["objective_now"] = round(value(changes.get(name, self._current(state).get(name))), 4)
            self._update(state, changes, evidence, item.get("e"), outcomes)
        verdict = state.monitor.add(bool(prediction_of(output)), bool(label))
        if verdict == "degraded":
            evidence = {"objective": state.objective, "rolling": state.monitor.rolling(),
                        "baseline": state.monitor.baseline, "trend": list(state.monitor.trend),
                        "recent_failures": list(state.failures), "comments": list(state.comments)}
            outcomes.append(("learning.degraded", {
                "function": state.function, "version": state.version, "objective": state.objective,
                "rolling": evidence["rolling"], "baseline": evidence["baseline"], "evidence": evidence,
                "cause": item.get("e"), "at": time.time(), "learner": self.name}))
        elif verdict == "recovered":
            outcomes.append(("learning.recovered", {
                "function": state.function, "version": state.version, "objective": state.objective,
                "rolling": state.monitor.rolling(), "cause": item.get("e"), "at": time.time(),
                "learner": self.name}))

    def _measured(self, state: FunctionLearning, item: dict, outcomes: list) -> None:
        """Executions of a latency/cost function, as ``engine.Learning.on_executions`` learns from them."""
        learner = state.learner
        if not hasattr(learner, "observe_execution"):
            return
        for status, operate, duration, version in item["m"]:
            if version != state.version:
                continue
            learner.observe_execution({"status": status, "phase_ms": {"operate": operate} if operate is not None
                                       else {}, "metrics": {"duration_ms": duration}})
            changes = learner.propose(self._current(state))
            if changes:
                self._update(state, changes, {"samples": learner.seen}, item.get("e"), outcomes)

    @staticmethod
    def _current(state: FunctionLearning) -> dict:
        return {name: state.params.get(name, spec.get("default")) for name, spec in state.parameters.items()}

    def _update(self, state: FunctionLearning, changes: dict, evidence: dict, cause, outcomes: list) -> None:
        current = self._current(state)
        applied, audit = {}, []
        for name, value in changes.items():
            spec = state.parameters.get(name)
            if spec is None:
                continue
            new = clamp(value, spec)
            if new == current.get(name):
                continue
            applied[name] = new
            audit.append({"parameter": name, "old": current.get(name), "new": new})
        if not applied:
            return
        state.params.update(applied)
        outcomes.append(("params.updated", {
            "function": state.function, "version": state.version, "params": applied, "changes": audit,
            "evidence": evidence, "cause": cause, "objective": state.objective, "at": time.time(),
            "learner": self.name}))

    def _once(self, key, message: str, *args) -> None:
        if key not in self.noted:
            self.noted.add(key)
            log.warning(message, *args)


def default_namespace(environ=None) -> str:
    """What an instance of this folder would use: ``POET_BROKER_NAMESPACE``, else its store root's."""
    environ = os.environ if environ is None else environ
    if (environ.get(wire.NAMESPACE_VAR) or "").strip():
        return wire.namespace(None, environ)
    from poet_runtime.settings import get_settings

    return wire.namespace(get_settings().fallback_home(), environ)
