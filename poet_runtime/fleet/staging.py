"""The learner's first step, *stage*: read the events stream as a consumer group member, verify,
join each feedback with its execution, and stage it with its ``XACK`` in one transaction.

Why a module of its own: staging is where a learner meets the network (reads, reclaims, lookups
of executions in other processes' batches) and untrusted entries (every one is measured on the
broker, ``wire.group_read``, and verified with the fleet's key before anything else, every field
it uses signed with the rest, ``wire.check_entry``; a heartbeat must also be newer than the last
one taken from its process); applying (``learner``) is pure
learning on what is staged. What staging writes for later (staged members, specs, the execution
index, heartbeat stamps) is sealed (``wire.seal``) and unsealed where it is read back: the
learner's own keys are as open to a writer as the streams.
``learner``'s docstring tells how the two steps together make a group of learners lose nothing
and count nothing twice. ``Staging`` is a mixin of ``learner.Learner``: it uses the learner's
client, keys, key, name, batch size and counters.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from bisect import bisect_left
from operator import itemgetter
from pathlib import Path

from poet_runtime import journal
from poet_runtime.fleet import wire
from poet_runtime.learn.objectives import MEASURED

try:  # the fleet extra's: a staged member's JSON about ten times faster (``_dumps`` checks it)
    from orjson import dumps as _orjson_dumps, loads as _orjson_loads
except ImportError:  # pragma: no cover - the fleet extra installs it
    _orjson_dumps = _orjson_loads = None

_encode = json.JSONEncoder(default=str, separators=(",", ":")).encode  # one encoder for every member
MEMO_MAX = 200_000  # staged rows this learner keeps decoded for its own apply (else apply decodes the member)
DEFER_S = 10.0  # feedback whose execution is nowhere yet waits this long (pending) before it counts as unmatched
ENTRY_MAX_AGE_S = 3600.0  # an entry signed longer than this before the broker took it is a copy (``_copied``)
INDEX_TTL_S = 7 * 86400  # a process's execution index outlives it by this much (process ids change on restart)


@functools.lru_cache(maxsize=32_768)  # read sorts by it, stage writes it: worked out once per entry
def padded(entry_id) -> str:
    """A stream id whose text sorts as the id does (sorted-set members are compared as bytes)."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    if ms.isdigit() and seq.isdigit() and len(ms) <= 15 and len(seq) <= 10:  # a broker's id: no int() needed
        return f"{ms:0>15}-{seq:0>10}"
    return f"{int(ms):015d}-{int(seq or 0):010d}"


def _next_padded(entry_id) -> str:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return f"{int(ms):015d}-{int(seq or 0) + 1:010d}"


def _text(value) -> str:
    # anyone can write to the broker: what is not UTF-8 is shown replaced (and unseals or verifies as nothing)
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


# -- staged members --------------------------------------------------------------------------------
#
# One member per function per staging transaction: ``<padded position of its first row>|<JSON rows>``,
# sealed for the function's stage key, the rows ``[[padded position, item], ...]`` in stream order.
# A member per feedback cost, per feedback, a JSON encoding call, a seal and a sorted-set member to
# add, read back and remove; a batch costs those once. Apply merges the rows of the members below
# the watermark by position (``merged``) and writes back what it did not apply as one member
# (``remainder``). A member of one item (``<position>|<item>``, as learners before this format
# staged) is a batch of one row.

_position = itemgetter(0)


def _dumps(value) -> str:
    """JSON text of staged rows: orjson's when it reads back as the very value (it writes NaN and
    infinities as null, and refuses integers past 64 bits and non-text keys), else ``json``'s."""
    if _orjson_dumps is not None:
        try:
            text = _orjson_dumps(value)
        except TypeError:  # orjson.JSONEncodeError is one
            text = None
        if text is not None and _orjson_loads(text) == value:
            return text.decode()
    return _encode(value)


def member_text(rows: list) -> str:
    """The text of a staged member holding ``rows`` (sorted by position, not empty), before its seal."""
    return f"{rows[0][0]}|{_dumps(rows)}"


def member_rows(text: str) -> list | None:
    """The rows of an unsealed member's text (a batch, or one item at the member's position), or None
    when it holds neither (sealed, so written by a key holder: a bug, not an attack)."""
    position, _, body = text.partition("|")
    try:
        value = journal.loads(body.encode("utf-8", "surrogatepass"))
    except (ValueError, RecursionError):
        return None
    if type(value) is dict:
        return [[position, value]]
    if type(value) is not list or not all(type(r) is list and len(r) == 2 and type(r[0]) is str
                                          and type(r[1]) is dict for r in value):
        return None
    return value


def merged(batches: list, bound: str) -> tuple[list, list]:
    """(rows below ``bound`` in stream order, the rest): the rows of several members merged by
    position, stably (rows of one position keep their order, and members come in key order)."""
    rows = [row for batch in batches for row in batch]
    rows.sort(key=_position)
    below = bisect_left(rows, bound, key=_position)
    return rows[:below], rows[below:]


def _lines(data: bytes):
    """The JSON values of an entry's ``d`` (one journal line, or a flusher's notes and batch line)."""
    for line in data.splitlines(keepends=True):
        value = journal.decode(line)
        if value is not None:
            yield value


def _event(data: bytes):
    """A feedback entry's event: its ``d`` is one journal line (or a flusher's notes and that line)."""
    event = journal.decode(data) if data.endswith(b"\n") else None
    return event if event is not None else next(iter(_lines(data)), None)


def _candidates(members: list, number: int, key, context: str) -> tuple[list, int]:
    """(the batch ids of a process's index members (``<batch id>:<its last number>``, sealed for the
    index key ``context``, newest first) that may hold execution ``number``, how many members were
    not sealed with the fleet's key): an unsealed member is passed over, so a writer without the
    key cannot point a feedback at an entry of its choosing."""
    ids, forged = [], 0
    for member in members:
        text = wire.unseal(key, context, member)
        if text is None:
            forged += 1
            continue
        batch_id, _, last = text.rpartition(":")
        if last.isdigit() and int(last) >= number:
            ids.append(batch_id)
    return ids, forged


def _in_batches(key: tuple, batches: list):
    """The payload of execution ``key`` (process, number) in the first of ``batches`` (``XRANGE`` answers
    for one id each) that holds it, or None."""
    process, number = key
    header = {"process": process, "pid": 0, "metadata": {}}
    for entries in batches:
        for _, fields in entries:
            for value in _lines(fields.get(b"d", b"")):
                if type(value) is not list or len(value) != 4 or value[0] != "C":
                    continue
                for group in value[3]:
                    numbers = journal.unpack(group[5])
                    if number in numbers:
                        row = journal.group_row(group, numbers.index(number))
                        return journal.expand(row, header, value)["payload"]
    return None


def _copied(entry_id, signature: bytes) -> bool:
    """Whether a verified entry was signed more than ``ENTRY_MAX_AGE_S`` before the broker took it (its
    stream id's time). A publisher signs each entry as it sends it, so only a copy re-added later (by
    anyone: it still verifies) or a signer's clock that far behind is that old. Without this a copy of
    a feedback added after its event id left ``learn:seen`` (7 days, or SEEN_MAX ids) counted again."""
    text = entry_id if type(entry_id) is bytes else str(entry_id).encode()
    taken_ms = text.partition(b"-")[0]
    if type(signature) is not bytes:  # as verify_entry takes it (a caller's own dict)
        signature = str(signature).encode()
    signed_ms = signature[2:signature.find(b".", 2)]  # format 3, verified: b"3.<ms>.<sender>.<seq>.<mac>"
    if not taken_ms.isdigit() or not signed_ms.isdigit():
        return False
    return int(taken_ms) - int(signed_ms) > ENTRY_MAX_AGE_S * 1000


def _beat_process(beat, sent_by: str) -> str:
    """Whose heartbeat it is: the process it names (signed), else the entry's ``p`` (not signed)."""
    named = beat.get("process") if type(beat) is dict else None
    return named if type(named) is str and named else sent_by


def spec_context(keys, function: str) -> str:
    """What a function's spec in the functions hash is sealed for: the hash and the field."""
    return f"{keys.functions}\n{function}"


def beat_context(keys, process: str) -> str:
    """What the newest heartbeat stamp taken from ``process`` is sealed for: the hash and the field."""
    return f"{keys.beats}\n{process}"


class Staging:
    """Reading and staging (mixed into ``learner.Learner``)."""

    unsealed = 0  # members / values of the learner's own keys that did not unseal, not yet counted in stats
    x_ignored = 0  # feedback whose x is about another execution (looked up instead), not yet counted in stats

    def _unsealed(self, count: int, what: str) -> None:
        """Count (in the stats' ``unsealed``, with the next write) and log once what did not unseal."""
        self.unsealed += count
        self._once(("unsealed", what), "poet_runtime: learner %s: %s: %d value(s) in Redis not sealed with the "
                   "fleet's key (written by someone without it, or moved from another key); ignored, counted as "
                   "unsealed in the learner's stats", self.name, what, count)

    def function_spec(self, function: str) -> dict | None:
        """A function's spec from the functions hash (the last heartbeat's), when its seal holds."""
        raw = self.client.hget(self.keys.functions, function)
        if raw is None:
            return None
        text = wire.unseal_json(self.open_keys, spec_context(self.keys, function), raw)
        if text is None:
            self._unsealed(1, "functions hash")
            return None
        return json.loads(text)

    def read(self) -> list:
        """Entries to stage: this learner's own pending ones, those reclaimed from silent learners, new ones.

        Every read is measured on the broker (``wire.group_read``): an entry bigger than
        ``wire.MAX_ENTRY_BYTES`` reaches this process as an ``oversize`` marker only (staged as
        refused), and one read brings about ``wire.READ_BUDGET_BYTES`` at most, whatever a writer
        without the key added. A script cannot block: an idle learner polls every ``wire.POLL_S``.

        The new entries may have been read already, while the previous round staged (``read_ahead``).
        This learner's own pending entries are then those it deferred and those read ahead, the
        deferred ones first (delivered earlier, so lower ids): only as many as it deferred are read
        again. At the start, after a round that failed and after a read cut at its byte budget
        (``resync``), it reads its pending entries from the oldest, a batch a round, and no new ones
        besides those read ahead until it has all it holds in hand."""
        stream, group = self.keys.events, wire.LEARNERS
        entries: dict = {}
        ahead = self._take_ahead() or []  # pending for it: a full read below may bring them again (one entry)
        resyncing, self.resync = self.resync, False
        own_count = self.batch + len(self.deferred) if resyncing else len(self.deferred)
        if own_count:
            own, cut = wire.group_read(self.client, stream, group, self.name, "0", count=own_count)[1:]
            self.resync |= cut  # entries delivered past its byte budget are pending here, in no list
            for entry_id, fields in own:
                entries[entry_id] = fields
            if resyncing and len(own) >= own_count:
                in_hand = len(entries) + sum(1 for entry_id, _ in ahead if entry_id not in entries)
                if self._held() > in_hand:
                    self.resync = True  # it holds more than it has in hand (nothing is being read ahead now)
        now = time.monotonic()
        if now - self.last_claim >= min(self.claim_idle / 2, 5.0):
            self.last_claim = now
            start = "0-0"
            while len(entries) < self.batch * 2:
                start, claimed, cut = wire.group_read(self.client, stream, group, self.name, start,
                                                      count=self.batch, claim_idle_ms=int(self.claim_idle * 1000))
                self.resync |= cut
                for entry_id, fields in claimed:
                    entries[entry_id] = fields
                if _text(start) == "0-0" or not claimed:
                    break
        fresh = ahead
        if not ahead and not self.resync:  # new entries only once all it holds is in hand
            waiting = {i for i in entries if i not in self.deferred}
            deadline = time.monotonic() + (0 if waiting else self.block_ms / 1000.0)
            while True:
                fresh, cut = wire.group_read(self.client, stream, group, self.name, ">", count=self.batch)[1:]
                self.resync |= cut
                if fresh or self.stopping or time.monotonic() >= deadline:
                    break
                time.sleep(min(wire.POLL_S, max(0.0, deadline - time.monotonic())))
        if not entries:
            return list(fresh)  # one read of new entries: in stream order already
        for entry_id, fields in fresh:
            entries[entry_id] = fields
        return sorted(entries.items(), key=lambda item: padded(item[0]))

    # -- reading ahead -----------------------------------------------------------------------------

    resync = True  # read all of this consumer's pending entries next (at the start, after a failed round)
    _ahead = None  # the read ahead in flight: [thread, its GroupRead or None, error or None]

    def read_ahead(self) -> None:
        """Start the next round's read of new entries (``">"``) on a thread of its own (its own pooled
        connection), to overlap the broker's work and the wait for it with this round's staging and
        applying. What it reads is delivered to this consumer, hence pending: if this learner dies
        before staging it, it is reclaimed (``XAUTOCLAIM``) as any pending entry is. Nothing is
        acknowledged or counted from here: ``read`` takes the entries, ``stage`` stages them."""
        if self._ahead is not None or self.stopping:
            return
        slot = [None, None, None]

        def fetch():
            try:
                slot[1] = wire.group_read(self.client, self.keys.events, wire.LEARNERS, self.name, ">",
                                          count=self.batch)
            except BaseException as error:  # handed to the round that takes the read, raised there
                slot[2] = error

        slot[0] = threading.Thread(target=fetch, name=f"poet-learner-read-{self.name}", daemon=True)
        self._ahead = slot
        slot[0].start()

    def _take_ahead(self) -> list | None:
        """The entries read ahead (waiting for the read to finish), or None when none was started;
        a read that failed raises its error here, in the round, as a read made there would."""
        slot, self._ahead = self._ahead, None
        if slot is None:
            return None
        slot[0].join()
        if slot[2] is not None:
            self.resync = True
            raise slot[2]
        self.resync |= slot[1].cut
        return slot[1].entries

    def _held(self) -> int:
        """How many entries the group holds pending for this consumer."""
        for consumer in self.client.xpending(self.keys.events, wire.LEARNERS).get("consumers") or ():
            if _text(consumer["name"]) == self.name:
                return int(consumer["pending"])
        return 0

    def finish_ahead(self) -> None:
        """On the way out: stage what was read ahead, so that it does not wait for a reclaim."""
        entries = self._take_ahead()
        if entries:
            self.stage(entries)  # one read of new entries: in stream order already

    # -- stage -----------------------------------------------------------------------------------

    def stage(self, entries: list) -> None:
        keys = self.keys
        acks, refused, malformed, deferred, oversize = [], 0, 0, 0, 0
        instances, functions, decisions = {}, {}, {}
        index: dict = {}  # process -> {member: first number}
        staged: dict = {}  # function -> its rows, [padded position, item] (one member each: member_text)
        local: dict = {}  # (process, number) -> payload, from execution batches in this read
        feedback = []
        beats, replayed = self._beat_stamps(entries), 0  # process -> newest heartbeat stamp taken (order)
        copies = 0  # entries signed long before the broker took them (_copied)
        newer_beats = {}  # process -> the stamp text to keep, sealed, with this read's transaction
        for entry_id, fields in entries:
            if fields is None:  # deleted from the stream before it was read (trimmed)
                acks.append(entry_id)
                continue
            why = wire.oversize(fields)
            if why is not None:  # measured on the broker, never read here (wire.group_read)
                oversize += 1
                self._once(("oversize",), "poet_runtime: learner %s: entry %s is %s bytes: %s; acknowledged, "
                           "counted as oversize, not learned from", self.name, _text(entry_id),
                           _text(fields[b"oversize"]), why)
                acks.append(entry_id)
                continue
            kind, data = fields.get(b"k"), fields.get(b"d")
            if kind not in wire.ENTRY_KINDS or data is None:
                malformed += 1
                acks.append(entry_id)
                continue
            # Every field staging uses (p, x; m, h, i, o besides) is signed with k and d (format 3):
            # a copy re-added under another process, or with another execution, does not verify.
            if not wire.verify_entry(self.key, fields):
                refused += 1
                why = wire.check_entry(self.key, fields)[1]  # the words: once per cause, not per p
                self._once(("refused", why), "poet_runtime: learner %s: refused %s entry "
                           "%s from process %s: %s (refused entries are counted in status, never learned from)",
                           self.name, _text(kind), _text(entry_id), _text(fields.get(b"p", b"?")), why)
                acks.append(entry_id)
                continue
            if _copied(entry_id, fields[b"s"]):
                copies += 1
                self._once(("entry copied",), "poet_runtime: learner %s: %s entry %s from process %s was signed "
                           "more than %d s before the broker took it: a copy of an old entry re-added (an instance "
                           "signs as it sends), or a clock that far behind the broker's; ignored, counted as "
                           "entries_replayed", self.name, _text(kind), _text(entry_id),
                           _text(fields.get(b"p", b"?")), int(ENTRY_MAX_AGE_S))
                acks.append(entry_id)
                continue
            process = _text(fields.get(b"p", b""))
            try:
                if kind == b"hi":
                    beat = json.loads(data)
                    who = _beat_process(beat, process)
                    stamp = wire.stamp_of(fields.get(b"s"))  # verified just above
                    if who in beats and beats[who] is not None and stamp.order <= beats[who]:
                        # signed before the newest heartbeat taken from that process: a copy re-added
                        # under a new stream id (it would name an older version or spec), or out of order
                        replayed += 1
                        self._once(("heartbeat replayed",), "poet_runtime: learner %s: heartbeat %s of process %s "
                                   "is not newer than the last one taken from it (a replay); ignored, counted as "
                                   "heartbeats_replayed", self.name, _text(entry_id), who)
                        acks.append(entry_id)
                        continue
                    beats[who] = stamp.order
                    newer_beats[who] = stamp.text()
                    seen_ms = int(_text(entry_id).partition("-")[0])
                    # status shows these; a function's "numbering" here describes its fleet_version
                    # (the heartbeat's), never the learner state's spec (learner_state reads that one)
                    instances[process] = json.dumps({k: beat.get(k) for k in (
                        "host", "pid", "process", "root", "started", "last_event", "unforwarded_feedback")}
                        | {"seen_ms": seen_ms, "functions": {
                            n: {k: v.get(k) for k in ("version", "fleet_version", "numbering")}
                            for n, v in (beat.get("functions") or {}).items() if type(v) is dict}})
                    for function, spec in (beat.get("functions") or {}).items():
                        # sealed: apply takes a function's parameters from here, _find_execution its store root
                        functions[function] = wire.seal_json(self.key, spec_context(keys, function),
                                                             json.dumps({**spec, "root": beat.get("root")}))
                        if spec.get("objective") and spec.get("version") is not None:
                            # In the function's own order too: a new version takes over at this point
                            # of its feedback, for every learner alike.
                            item = {"spec": {k: spec.get(k) for k in (
                                "version", "objective", "domain", "parameters", "params")}}
                            staged.setdefault(function, []).append([padded(entry_id), item])
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
            except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as error:
                malformed += 1
                self._once(("malformed", type(error).__name__), "poet_runtime: learner %s: entry %s is malformed "
                           "(%s: %s); acknowledged, not learned from", self.name, _text(entry_id),
                           type(error).__name__, error)
                acks.append(entry_id)
        # measured executions staged as they are count as staged too (heartbeats' spec items do not)
        count = sum(1 for rows in staged.values() for _, item in rows if "spec" not in item)
        if functions:  # a feedback in this read may need its function's store root
            self.client.hset(keys.functions, mapping=functions)
        events = {entry_id: _event(fields[b"d"]) for entry_id, fields, _ in feedback}
        found = self._prefetch(feedback, events, local)
        for entry_id, fields, process in feedback:
            outcome = self._feedback(entry_id, fields, process, local, events[entry_id], found)
            if outcome is None:
                deferred += 1
                continue
            self.deferred.pop(entry_id, None)
            acks.append(entry_id)
            if outcome is False:
                malformed += 1
                continue
            function, position, item = outcome
            staged.setdefault(function, []).append([position, item])
            count += 1
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
            context = keys.index(process)
            pipe.zadd(context, {wire.seal(self.key, context, member): first for member, first in members.items()})
            pipe.zremrangebyrank(keys.index(process), 0, -100_001)  # the newest 100 000 batches per process
            pipe.expire(keys.index(process), INDEX_TTL_S)
        memo = {}  # (function, sealed member) -> its rows, decoded already (apply takes them from self.memo)
        for function, rows in staged.items():
            # sealed for this function's key: a writer without the fleet's key cannot add a member, nor
            # move one to another function; apply drops what does not unseal
            rows.sort(key=_position)  # stable: an entry's rows keep their order
            context = keys.stage(function)
            text = wire.seal(self.key, context, member_text(rows))
            pipe.zadd(context, {text: 0})
            pipe.sadd(keys.staged, function)
            pipe.hincrby(keys.waiting, function, len(rows))
            memo[(function, text)] = rows  # bound to its function as the seal is
        if newer_beats:
            pipe.hset(keys.beats, mapping={who: wire.seal(self.key, beat_context(keys, who), text)
                                           for who, text in newer_beats.items()})
        if replayed:
            pipe.hincrby(keys.stats, "heartbeats_replayed", replayed)
        if copies:
            pipe.hincrby(keys.stats, "entries_replayed", copies)
        if self.unsealed:
            pipe.hincrby(keys.stats, "unsealed", self.unsealed)
        if self.x_ignored:
            pipe.hincrby(keys.stats, "x_ignored", self.x_ignored)
        counted = (("staged", count), ("refused", refused), ("malformed", malformed), ("oversize", oversize),
                   ("entries", len(acks)))
        for name, value in counted:
            if value:
                pipe.hincrby(keys.stats, name, value)
        pipe.xack(keys.events, wire.LEARNERS, *acks)
        pipe.execute()
        if self.deferred:  # acknowledged: no longer this consumer's (a trimmed one, say, comes back with no fields)
            for entry_id in acks:
                self.deferred.pop(entry_id, None)
        self.unsealed = self.x_ignored = 0
        self.remember(memo)  # staged now: apply may use these (after a failed transaction, nothing is kept)
        self.counts["staged"] += count
        self.counts["refused"] += refused

    def remember(self, memo: dict) -> None:
        """Keep members' decoded rows for this learner's apply, up to ``MEMO_MAX`` rows in all."""
        held = sum(len(rows) for rows in self.memo.values()) + sum(len(rows) for rows in memo.values())
        if held > MEMO_MAX:
            self.memo.clear()
        self.memo.update(memo)

    def _beat_stamps(self, entries: list) -> dict:
        """process -> the order of the newest heartbeat stamp taken from it (by any learner), for the
        processes whose heartbeats are among ``entries``: one read, only when there are heartbeats."""
        names = []
        for _, fields in entries:
            if fields is not None and fields.get(b"k") == b"hi":
                try:
                    names.append(_beat_process(json.loads(fields.get(b"d") or b""), _text(fields.get(b"p", b""))))
                except (ValueError, TypeError, RecursionError):
                    continue  # judged (and counted) in stage
        names = list(dict.fromkeys(names))
        if not names:
            return {}
        found = {}
        for who, raw in zip(names, self.client.hmget(self.keys.beats, names)):
            text = wire.unseal(self.open_keys, beat_context(self.keys, who), raw) if raw is not None else None
            if raw is not None and text is None:
                self._unsealed(1, "heartbeat stamps")
            stamp = wire.Stamp.parse(text) if text else None
            found[who] = stamp.order if stamp is not None else None
        return found

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
                staged.setdefault(group[0], []).append([padded(entry_id), {"m": measured, "e": first,
                                                                           "t": time.time()}])
            elif len(local) < 200_000:
                for row in rows:
                    local[(process, row[3])] = (row, value)

    def _prefetch(self, feedback: list, events: dict, local: dict) -> dict:
        """(process, number) -> the execution's payload, or None when the broker has not got it, for the
        feedback of this read that needs a lookup (no ``x``, not in this read's batches): every index
        and every batch they name read in two pipelined round trips, not two per feedback."""
        wanted = []
        for entry_id, fields, _ in feedback:
            event = events[entry_id]
            if fields.get(b"x") or type(event) is not dict or type(event.get("payload")) is not dict:
                continue  # x present (a malformed one is looked up alone, in _find_execution) or not feedback
            process, _, number = str(event["payload"].get("execution_id")).rpartition("-")
            if number.isdigit() and (process, int(number)) not in local:
                wanted.append((process, int(number)))
        wanted = list(dict.fromkeys(wanted))
        if not wanted:
            return {}
        reads = self.client.pipeline(transaction=False)
        for process, number in wanted:
            reads.zrevrangebyscore(self.keys.index(process), number, "-inf", start=0, num=3)
        candidates = {}  # (process, number) -> batch ids that may hold it, newest first
        for key, members in zip(wanted, reads.execute()):
            candidates[key], forged = _candidates(members, key[1], self.open_keys, self.keys.index(key[0]))
            if forged:
                self._unsealed(forged, "execution index")
        batch_ids = list(dict.fromkeys(i for ids in candidates.values() for i in ids))
        for batch_id in batch_ids:
            reads.xrange(self.keys.events, batch_id, batch_id)
        batches = dict(zip(batch_ids, reads.execute())) if batch_ids else {}
        return {key: _in_batches(key, [batches[i] for i in ids]) for key, ids in candidates.items()}

    def _feedback(self, entry_id, fields, process: str, local: dict, event=None, found=None):
        """(function, its padded position, its staged item) for a feedback entry; None: wait (its execution is not
        here yet); False: not a feedback event. ``event``: its ``d`` decoded (``_event``), ``found``:
        what ``_prefetch`` found."""
        if event is None:
            event = _event(fields[b"d"])
        if type(event) is not dict or type(event.get("payload")) is not dict:
            return False
        payload = event["payload"]
        function, execution_id = payload.get("function"), payload.get("execution_id")
        if not isinstance(function, str) or not isinstance(execution_id, str):
            return False
        execution = None
        if fields.get(b"x"):
            execution = wire.unsigned_json(fields[b"x"])  # the sender's: a malformed one must not stop the learner
            if execution is not None and (execution.get("execution_id") != execution_id
                                          or execution.get("function") != function):
                # signed with the feedback, yet about another execution (a sender's bug, or a key
                # holder's doing): learned against the execution the feedback names, looked up
                if entry_id not in self.deferred:  # counted once, not on every re-read while it waits
                    self.x_ignored += 1
                self._once(("x of another execution",), "poet_runtime: learner %s: feedback %s on %s names "
                           "execution %s but its x is execution %r of %r; x ignored (counted as x_ignored), the "
                           "execution is looked up", self.name, event.get("id"), function, execution_id,
                           execution.get("execution_id"), execution.get("function"))
                execution = None
        if execution is None:
            execution = self._find_execution(function, execution_id, local, found)
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
        return function, padded(entry_id), item

    def _find_execution(self, function: str, execution_id: str, local: dict, prefetched=None):
        process, _, number = execution_id.rpartition("-")
        if not number.isdigit():
            return None
        number = int(number)
        header = {"process": process, "pid": 0, "metadata": {}}
        found = local.get((process, number))
        if found is not None:
            return journal.expand(found[0], header, found[1])["payload"]
        if prefetched and (process, number) in prefetched:
            payload = prefetched[(process, number)]
            if payload is not None:
                return payload
        else:
            members = self.client.zrevrangebyscore(self.keys.index(process), number, "-inf", start=0, num=3)
            ids, forged = _candidates(members, number, self.open_keys, self.keys.index(process))
            if forged:
                self._unsealed(forged, "execution index")
            payload = _in_batches((process, number), [self.client.xrange(self.keys.events, i, i) for i in ids])
            if payload is not None:
                return payload
        spec = self.function_spec(function)
        root = spec.get("root") if spec else None
        if root and Path(root).is_dir():  # the function's store is reachable from here (same machine, shared path)
            event = journal.find_execution_event(journal.events_root(Path(root)), execution_id)
            if event is not None:
                return event["payload"]
        return None
