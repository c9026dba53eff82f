"""``python -m poet_runtime learn --broker URL``: one member of the fleet's learner group.

Why two steps, *stage* then *apply*: a consumer group hands entries to whichever learner asks
first, so two learners see one function's feedback in interleaved pieces; a learner's result
depends on the order it sees feedback in (it proposes every ``learn_every`` samples, and
among equally good thresholds keeps the one nearest the current value). So:

1. **Stage** (any learner; ``staging``): a batch read with ``XREADGROUP`` (and entries reclaimed with
   ``XAUTOCLAIM`` from a learner that stopped answering, after ``claim_idle`` seconds; both measured
   on the broker, ``wire.group_read``, so an oversize entry arrives as a marker) is
   verified (``wire.verify``; an unsigned or wrongly signed entry is refused, counted, and
   never learned from), its feedback joined with its execution (the entry's ``x`` field, else
   the execution batches indexed by process and number, else the function's store on this
   machine), and written as one sorted-set member per function (its rows keyed by their stream
   ids, the member by its first one), in **one MULTI/EXEC with the XACK** of the same entries.
   Acknowledged therefore means staged.
   The next batch of new entries is read on a thread while a round stages and applies
   (``Staging.read_ahead``): read means delivered to this learner, hence pending, so it is
   reclaimed like any other pending entry if the learner dies before staging it.
2. **Apply** (any learner, one at a time per function through ``WATCH``): the function's state
   (the very learner and monitor one process uses, as JSON: ``learner_state``) takes the staged
   feedback *below the watermark* (the group's oldest pending entry, or past its last
   delivered one: everything before it is acknowledged, hence staged), in stream order (the rows
   of the members whose first row is below it, merged); the new state, the members read replaced
   by one of the rows not applied, the applied feedback event ids, the signed outcomes
   (``params.updated``, ``learning.degraded``/``recovered``) and the counters go in **one
   MULTI/EXEC**, for up to ``APPLY_FUNCTIONS`` functions at once (one fsync and a few pipelined
   reads per round, not per function). A concurrent apply makes the ``WATCH`` fail and the work
   is redone on the new state.

So a learner killed anywhere loses nothing (its pending entries are reclaimed, its unfinished
transaction never happened), nothing counts twice (a redelivered line has a new stream id but
the same event id, and applied event ids are remembered), and N learners learn exactly what
one learner learns from the same stream. Everything lives in Redis: a learner keeps nothing
of its own across a restart. What it keeps in memory meanwhile is only a shortcut, checked
before use: the items it staged, already decoded (``memo``), and the states it wrote last with
their learners' search indexes (``states``: used only while the stored state still starts with
this learner's seal and token for that write).

What it keeps in Redis is sealed with the fleet's key (``wire.seal``, bound to the key it is
written under): staged members, states, the functions hash's specs, the execution index, the
newest version stamp followed (``learner_versions``). Whoever can write to the broker without the
key can delete those (the learner then waits, or starts a function over) but not make it learn or
sign anything: a member that does not unseal is dropped and counted (``unsealed`` in the stats,
logged once per kind), a state that does not unseal is refused (``states_refused``) and nothing
is applied on it until an operator deletes it. Not sealed, because the learner trusts nothing in
them: the applied event ids (``learn:seen``: an addition only skips feedback, which deleting the
entry does as well), the versions cursor (moving it back re-reads outcomes, which are judged by
their stamps; forward skips them, as deleting them does), ``instances`` and ``decisions`` (written
for ``status``, never read by a learner).

What it does not do (said in the README): replay tuning (it has no function to call, so it
learns from outputs, as one process does with replay off), and regeneration: on degradation it
publishes ``learning.degraded``; regenerating, screening and promoting stay with the instances'
own engines, which hold the function.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import socket
import sys
import time

from poet_runtime.fleet import learner_versions, wire
from poet_runtime.fleet.learner_rules import Rules
from poet_runtime.fleet.staging import Staging, _next_padded, _text, member_rows, member_text, merged, padded
from poet_runtime.fleet.learner_state import FunctionLearning

log = logging.getLogger("poet_runtime")

SEEN_DAYS = 7.0  # applied feedback event ids are remembered this long (a redelivery older than that is unlikely)
SEEN_MAX = 200_000  # and at most this many per function (redeliveries come after a crash: recent ones)
APPLY_LIMIT = 5000  # staged feedback applied per function per transaction
STATES_MAX = 256  # states kept in memory between rounds (each holds up to ``memory`` samples and an index)
APPLY_FUNCTIONS = 16  # functions applied in one transaction (one fsync, a few round trips for all of them)
APPLY_MEMBERS = 64  # staged members (one staging transaction's rows of a function each) read per function per apply
_TX = b'{"tx":"'  # a state as apply writes it starts with its writer's token: ``{"tx":"<writer>.<n>",``
_TX_BYTES = 96  # a state's start read to compare with the cached one: its seal (unique per write) and token


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
        self.waiting = f"poet:{ns}:learn:waiting"  # function -> staged rows not applied yet (for status only)
        self.beats = f"poet:{ns}:learn:beats"  # process -> the newest heartbeat stamp staged (sealed)
        self.refused = f"poet:{ns}:learn:refused"  # function -> digest of the refused state last counted

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
                 batch: int = 4000, block_ms: int = 1000, settings=None):  # batch: as commands/learn.BATCH
        if not key:
            raise LearnerError(f"no fleet key: set {wire.KEY_VAR} or {wire.KEY_FILE_VAR} (a learner that cannot sign "
                               "its outcomes or check its input does not start)")
        import redis

        from poet_runtime.learn import config

        self.redis = redis
        self.client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=5)
        self.key = key
        previous = wire.previous_key()
        # seals are made with the key, opened with it or, after a rotation, with the previous one
        self.open_keys = (key, previous) if previous and previous != key else key
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
        self.memo: dict = {}  # (function, staged member) -> its rows: members this learner staged, not yet applied
        self.states: dict = {}  # function -> (the state's first bytes as this learner wrote it, the state object)
        self.writer = os.urandom(8).hex()  # names this learner's state writes (the cache's check)
        self.writes = 0

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
        if self.stopping:
            try:
                self.finish_ahead()
            except (self.redis.RedisError, OSError) as error:  # left pending: reclaimed by the group later
                log.warning("poet_runtime: learner %s: what it read ahead stays pending (%s)", self.name, error)
        return failed

    def stop(self, *_):
        self.stopping = True

    def round(self) -> None:
        try:
            entries = self.read()
            if entries:
                self.read_ahead()  # the next round's new entries, read while this one stages and applies
                self.stage(entries)
            learner_versions.follow(self)  # the fleet's promotions and rollbacks, staged in order (learner_versions)
            functions = sorted(_text(f) for f in self.client.smembers(self.keys.staged))
            for start in range(0, len(functions), APPLY_FUNCTIONS):
                self.apply(*functions[start:start + APPLY_FUNCTIONS])
        except BaseException:
            self.resync = True  # what this consumer holds pending is no longer known here: read it all again
            raise
        self.counts["rounds"] += 1

    # -- apply -----------------------------------------------------------------------------------

    def watermark(self, reads) -> str:
        """The padded stream id below which every entry is acknowledged (hence staged)."""
        reads.xinfo_groups(self.keys.events)
        reads.xpending(self.keys.events, wire.LEARNERS)
        reads.get(learner_versions.cursor_key(self.keys))  # not past a version switch no learner staged yet
        wire.last_id(self.client, self.keys.outcomes, pipe=reads)  # its id only: anyone can add a huge entry
        groups, pending, cursor, newest = reads.execute()
        last = "0-0"
        for group in groups:
            if _text(group["name"]) == wire.LEARNERS:
                last = _text(group["last-delivered-id"])
        mark = _next_padded(last)
        if pending and pending.get("pending"):
            mark = min(padded(pending["min"]), mark)
        return learner_versions.capped(mark, cursor, newest)

    def apply(self, *functions: str) -> int:
        """Apply these functions' staged feedback below the watermark, in stream order, in one transaction;
        returns how many feedback were applied.

        Under ``WATCH`` of the functions' states (on the transaction's connection), everything is read
        through a second connection in three pipelined round trips (watermark; staged members and the
        states' first bytes; seen ids and any state not held here), whatever the number of functions.
        A state this learner wrote last (its seal and token lead the stored JSON) is taken from memory with its
        learner's search index, not decoded again; a failed transaction drops those objects."""
        keys = self.keys
        functions = [f for f in functions]
        for _ in range(50):
            pipe = self.client.pipeline(transaction=True)
            held = {}
            try:
                pipe.watch(*(keys.state(f) for f in functions))
                reads = self.client.pipeline(transaction=False)  # its own connection, after the WATCH
                mark = self.watermark(reads)
                for function in functions:
                    reads.zrangebylex(keys.stage(function), "-", f"({mark}", start=0, num=APPLY_MEMBERS + 1)
                    reads.getrange(keys.state(function), 0, _TX_BYTES - 1)
                answers = reads.execute()
                work = []  # (function, staged members)
                for function, members, head in zip(functions, answers[::2], answers[1::2]):
                    cached = self.states.pop(function, None)
                    if members:
                        work.append((function, members))
                        if cached is not None and head and head == cached[0]:
                            held[function] = cached[1]
                    elif cached is not None:
                        self.states[function] = cached  # untouched
                empty = [f for f, (members, _) in zip(functions, zip(answers[::2], answers[1::2])) if not members]
                if empty:
                    self._unlist(empty)
                if not work:
                    return 0
                decoded, forged = {}, {}
                for index, (function, members) in enumerate(work):
                    bound = mark
                    if len(members) > APPLY_MEMBERS:  # rows from the next member on may come before some read here
                        bound = min(mark, _text(members[APPLY_MEMBERS]).partition("|")[0])
                        members = members[:APPLY_MEMBERS]
                        work[index] = (function, members)
                    memo, batches, context = self.memo, [], keys.stage(function)
                    for member in members:
                        text = _text(member)  # anyone can add members, not all of them text
                        rows = memo.get((function, text))  # this learner staged it there: sealed by it, not checked
                        if rows is None:
                            plain = wire.unseal(self.open_keys, context, member)
                            rows = member_rows(plain) if plain is not None else None
                            if rows is None:  # not sealed with the fleet's key for this function: dropped
                                forged.setdefault(function, []).append(member)
                                continue
                        batches.append(rows)
                    below, rest = merged(batches, bound)
                    ids = [item["e"] for _, item in below if item.get("e")]
                    decoded[function] = below, rest, ids
                    reads.zmscore(keys.seen(function), ids) if ids else reads.echo(b"")
                    if function not in held:
                        reads.get(keys.state(function))
                if forged:
                    self._unsealed(sum(len(m) for m in forged.values()), "staged feedback")
                answers = iter(reads.execute())
                plans = []
                for function, members in work:
                    rows, _, ids = decoded[function]
                    scores = next(answers)
                    known = {i for i, score in zip(ids, scores) if score is not None} if ids else set()
                    if function in held:
                        state = held[function]
                    else:
                        raw = next(answers)
                        state = self._state(function, raw) if raw is not None else None
                        if state is False:  # a state that does not unseal: nothing applied on it
                            continue
                    plan = self._learn(function, state, rows, known)
                    if plan is not None:
                        plans.append((function, members, plan))
                        held[function] = plan[0]
                if not plans and not forged:
                    return 0
                pipe.multi()
                for function, members in forged.items():
                    pipe.zrem(keys.stage(function), *members)
                if self.unsealed:
                    pipe.hincrby(keys.stats, "unsealed", self.unsealed)
                heads, total, kept = {}, 0, {}
                for function, members, (state, done, applied, duplicates, outcomes, learned) in plans:
                    heads[function] = self._write(pipe, function, state, applied, outcomes)
                    # the members read, replaced by one holding the rows not applied (members are
                    # removed by name: one staged meanwhile, by any learner, has rows at the watermark
                    # or past it, and stays)
                    below, rest, _ = decoded[function]
                    context = keys.stage(function)
                    pipe.zrem(context, *members)
                    remainder = below[done:] + rest
                    if remainder:
                        text = wire.seal(self.key, context, member_text(remainder))
                        pipe.zadd(context, {text: 0})
                        kept[(function, text)] = remainder
                    pipe.hincrby(keys.waiting, function, -done)
                    pipe.hincrby(keys.stats, "applied", learned)
                    if duplicates:
                        pipe.hincrby(keys.stats, "duplicates", duplicates)
                    if outcomes:
                        pipe.hincrby(keys.stats, "outcomes", len(outcomes))
                    total += learned
                pipe.execute()
                self.unsealed = 0
                for function, members, _plan in plans:
                    self.states[function] = (heads[function], _plan[0])  # popped above: now the newest
                    if len(self.states) > STATES_MAX:
                        del self.states[next(iter(self.states))]  # the least recently applied one
                    for member in members:
                        self.memo.pop((function, _text(member)), None)
                self.remember(kept)
                self.counts["applied"] += total
                return total
            except self.redis.WatchError:
                continue  # another learner applied meanwhile: redo on its state
            finally:
                pipe.reset()
        return 0

    def _learn(self, function: str, state, rows: list, known: set):
        """Run the staged rows through the function's state (``learner_rules``), in stream order:
        (state, rows done, applied event ids, duplicates, outcomes, feedback learned), or None."""
        keys = self.keys
        outcomes, applied, duplicates, done, learned = [], {}, 0, 0, 0
        for position, item in rows:
            spec = item.get("spec")
            if spec is not None:  # a heartbeat: the version in force from here on
                if state is not None and not learner_versions.newer(state, spec):
                    done += 1  # a fleet switch not newer than the one the state followed: a replay
                    continue
                if state is None:
                    state = FunctionLearning(function, spec, self.settings)
                elif spec.get("version") != state.version:
                    state.version_changed(spec)
                done += 1
                continue
            if state is None:  # feedback before any heartbeat of its function: the latest one known
                latest = self.function_spec(function)
                if latest is None:
                    self._once(("no spec", function), "poet_runtime: learner %s: %s: feedback waits for "
                               "the function's first heartbeat (its parameters and objective)",
                               self.name, function)
                    break
                state = FunctionLearning(function, latest, self.settings)
            done += 1
            learned += 1
            event_id = item.get("e")
            # at or before the last applied: a sealed member re-added after it was applied (staged feedback
            # is applied in stream order, everything below the watermark at once; one feedback entry makes
            # one member, one execution batch may make several of a function at its position)
            if event_id in known or event_id in applied or position < state.last_id or (
                    position == state.last_id and "m" not in item):
                duplicates += 1
                learned -= 1
                continue
            applied[event_id] = item.get("t") or time.time()
            if "m" in item:
                self._measured(state, item, outcomes)
            else:
                self._labelled(state, item, outcomes)
            state.last_id = position
        if not done:
            return None
        return state, done, applied, duplicates, outcomes, learned

    def _write(self, pipe, function: str, state, applied: dict, outcomes: list) -> bytes:
        """Queue one function's writes in the transaction; returns the first bytes of the state written."""
        keys = self.keys
        self.writes += 1
        token = f"{self.writer}.{self.writes}"
        # Signed after the newest message of this function (any learner's, in the state) and the version
        # switch it follows: the instances admit a function's messages in stamp order, so one learner's
        # clock behind another's (or the promoting instance's) must not make its outcomes look older.
        followed = wire.Stamp.parse(state.stamp) if state.stamp else None
        after = max(state.signed_ms or 0, followed.at_ms if followed is not None else 0)
        signed = []
        for kind, message in outcomes:
            data_out = json.dumps(message, sort_keys=True, default=str).encode()
            signature = wire.sign(self.key, kind.encode(), data_out, after_ms=after or None)
            after = wire.stamp_of(signature).at_ms
            signed.append((kind, message, data_out, signature))
        if signed:
            state.signed_ms = after
        body = json.dumps(state.to_json(), default=str)
        data = f'{_TX.decode()}{token}",{body[1:]}' if body != "{}" else f'{_TX.decode()}{token}"}}'
        # sealed for this function's key: a state someone else wrote (or moved here) is refused, not learned on
        data = wire.seal_json(self.key, keys.state(function), data)
        pipe.set(keys.state(function), data)
        applied = {k: v for k, v in applied.items() if k}
        if applied:
            seen_key = keys.seen(function)
            pipe.zadd(seen_key, applied)
            pipe.zremrangebyscore(seen_key, "-inf", time.time() - SEEN_DAYS * 86400)
            pipe.zremrangebyrank(seen_key, 0, -SEEN_MAX - 1)
        for kind, message, data_out, signature in signed:
            pipe.xadd(keys.outcomes if kind in wire.OUTCOME_TYPES else keys.learning,
                      {"t": kind, "m": data_out, "s": signature, "l": self.name})
            pipe.hset(keys.decisions, function, json.dumps({
                "type": kind, "version": message.get("version"), "at": message.get("at"),
                "by": f"learner {self.name}",
                "detail": message.get("params") or message.get("rolling")}, default=str))
        return data.encode()[:_TX_BYTES]

    def _state(self, function: str, raw):
        """The stored state of ``function`` when its seal holds, else False (refused; counted in
        ``states_refused`` once per stored value, not per round or learner; logged once per function
        by each learner: delete the key to start over)."""
        text = wire.unseal_json(self.open_keys, self.keys.state(function), raw)
        if text is not None:
            return FunctionLearning.from_json(json.loads(text), self.settings)
        digest = hashlib.sha256(bytes(raw)).hexdigest()[:32]
        if ("state refused", function, digest) not in self.noted:
            self.noted.add(("state refused", function, digest))
            # counted once per stored value, whichever learners refuse it how often: the refused hash
            # names the value last counted (unsealed itself: a change there only miscounts)
            refused = self.keys.refused
            if _text(self.client.hget(refused, function) or b"") != digest:
                pipe = self.client.pipeline(transaction=True)
                pipe.hset(refused, function, digest)
                pipe.hincrby(self.keys.stats, "states_refused", 1)
                pipe.execute()
        self._once(("state refused", function), "poet_runtime: learner %s: the state of %s in Redis (%s) is not "
                   "sealed with the fleet's key (written by someone without it, by an older learner, or moved "
                   "from another function): nothing is applied on it; delete the key to start that function over",
                   self.name, function, self.keys.state(function))
        return False

    def _unlist(self, functions: list) -> None:
        """Take drained functions off the staged set, unless something was staged for them meanwhile
        (the stage key is watched: a concurrent stage's members make this transaction fail)."""
        keys = self.keys
        for function in functions:
            pipe = self.client.pipeline(transaction=True)
            try:
                pipe.watch(keys.stage(function))
                if not pipe.zcard(keys.stage(function)):
                    pipe.multi()
                    pipe.srem(keys.staged, function)
                    pipe.hdel(keys.waiting, function)  # nothing waits: a count off by a key deleted by hand starts over
                    pipe.execute()
            except self.redis.WatchError:
                pass  # staged meanwhile: it stays listed
            finally:
                pipe.reset()

    def _once(self, key, message: str, *args) -> None:
        if key not in self.noted:
            self.noted.add(key)
            log.warning(message, *args)


GC_YOUNG = 50_000  # allocations between collections of the youngest generation in a learner process (Python: 700)
SWITCH_INTERVAL_S = 0.05  # how long a learner's thread keeps the interpreter when another wants it (Python: 0.005)


def tune_interpreter() -> None:
    """Fit the interpreter to a learner process (the ``learn`` command calls this once, before learning).

    The garbage collector: a round allocates tens of objects per feedback (entries as read, decoded
    events, staged rows) that die within the round, none of them in cycles, while the process holds
    many long-lived ones (each function's state, its samples and search index, the memo of staged
    rows). At the default threshold the collector runs every 700 allocations and its older
    generations walk the long-lived objects again and again. What the process made before learning
    is frozen out of its walks; young objects are collected every ``GC_YOUNG`` allocations. Garbage
    in cycles is still collected, later.

    The switch interval: the read ahead's thread (``Staging.read_ahead``) wakes as each chunk of
    its read arrives and asks the round's thread for the interpreter, which gives it up within the
    switch interval; at 5 ms that is a handover every few milliseconds all through the read. The
    read is a round ahead of its use, so it can wait ``SWITCH_INTERVAL_S`` (signals are still handled
    at once: the main thread takes them between bytecodes).

    Paired runs (``benchmarks/bench_fleet.py`` calls this as the command does): the collector
    ~12.8k -> ~14.9k feedback/s, the switch interval ~1.07x on top. Process-wide, so never called
    on an instance's behalf."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG, *gc.get_threshold()[1:])
    sys.setswitchinterval(SWITCH_INTERVAL_S)


def default_namespace(environ=None) -> str:
    """What an instance of this folder would use: ``POET_BROKER_NAMESPACE``, else its store root's."""
    environ = os.environ if environ is None else environ
    if (environ.get(wire.NAMESPACE_VAR) or "").strip():
        return wire.namespace(None, environ)
    from poet_runtime.settings import get_settings

    return wire.namespace(get_settings().fallback_home(), environ)
