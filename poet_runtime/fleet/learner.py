"""``python -m poet_runtime learn --broker URL``: one member of the fleet's learner group.

Why two steps, *stage* then *apply*: a consumer group hands entries to whichever learner asks
first, so two learners see one function's feedback in interleaved pieces; a learner's result
depends on the order it sees feedback in (it proposes every ``learn_every`` samples, and
among equally good thresholds keeps the one nearest the current value). So:

1. **Stage** (any learner; ``staging``): a batch read with ``XREADGROUP`` (and entries reclaimed with
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

from poet_runtime.fleet import learner_versions, wire
from poet_runtime.fleet.learner_rules import Rules
from poet_runtime.fleet.staging import Staging, _next_padded, _text, padded
from poet_runtime.fleet.learner_state import FunctionLearning

log = logging.getLogger("poet_runtime")

SEEN_DAYS = 7.0  # applied feedback event ids are remembered this long (a redelivery older than that is unlikely)
SEEN_MAX = 200_000  # and at most this many per function (redeliveries come after a crash: recent ones)
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


class LearnerError(Exception):
    """A learner that cannot start (no key, no broker client)."""


class Learner(Staging, Rules):
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

    def round(self) -> None:
        entries = self.read()
        if entries:
            self.stage(entries)
        learner_versions.follow(self)  # the fleet's promotions and rollbacks, staged in order (learner_versions)
        for function in sorted(_text(f) for f in self.client.smembers(self.keys.staged)):
            self.apply(function)
        self.counts["rounds"] += 1

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
