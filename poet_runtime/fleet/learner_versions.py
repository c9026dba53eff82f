"""The learner follows the versions the fleet promotes and rolls back.

Why: regeneration happens in one elected instance (``fleet.regenerate``), which publishes a
signed ``version.promoted`` / ``version.rolled_back`` on ``poet:NS:outcomes``, and every instance
moves to that version. A learner still learning for the old one would publish ``params.updated``
that the instances, now on the new one, ignore. So each round a learner reads the outcomes
stream past the group's cursor (``poet:NS:learn:versions``) and, for each ``version.*`` entry:

- verifies it with the fleet's key (``wire.verify``) and checks it is an instance's (``by``
  names one) and well formed, then judges it as the instances' ``wire.admit`` does
  (``wire.judge``: fresh, and newer than the newest switch followed for its function, kept sealed
  in ``poet:NS:learn:vstamp:<function>``, written with the cursor, and in the state as ``stamp``,
  which ``apply`` checks again: ``newer``), so a copy of an old promotion re-added under a new
  stream id is not followed; anything else is refused, counted (``versions_refused`` in the
  learner's stats), logged once per cause, and never followed; one that the instances refuse as
  out of order (signed before an outcome for its function that got in ahead of it:
  ``regenerate.newer_before``; its sender signs it again) is not followed either
  (``versions_superseded``);
- stages the switch in the function's own order, as heartbeats are staged (``staging``): a
  ``spec`` item keyed by the outcome's stream id among the function's staged feedback. Both
  streams' ids are the broker's clock, so ``apply`` switches the state at that point
  (``learner_state.FunctionLearning.version_changed``): feedback whose events entry is older
  than the outcome is learned for the old version, later feedback for the new one, the
  evidence kept across, and the monitor starts over as the engine's does on a promotion or
  rollback. That order is the streams', not a learner's, so two learners learn what one learns.

Staging and moving the cursor are one MULTI/EXEC under ``WATCH`` of the cursor, so a switch is
staged once even when two learners read the same entries (the second one's transaction fails
and it reads on from the new cursor). The switch takes effect once the events group's
watermark passes the outcome's id: within a heartbeat interval (``publisher.HEARTBEAT_S``).

While the outcomes stream holds entries past the cursor (one a learner has not looked at yet:
maybe a switch), ``apply`` applies nothing past the cursor (``capped``, on the watermark), or
another learner's later feedback could be applied before a switch no learner has staged yet,
and two learners would learn other than one. Every round follows before it applies, so this
holds feedback back only for the moment between an outcome's arrival and the next round; a
round with nothing new on the outcomes stream writes nothing here.
"""

from __future__ import annotations

import json
import logging

from poet_runtime.fleet import regenerate, wire
from poet_runtime.fleet.learner_state import FLEET, LOCAL
from poet_runtime.fleet.staging import _next_padded, _text, member_text, padded

log = logging.getLogger("poet_runtime")

TYPES = (b"version.promoted", b"version.rolled_back")
READ = 200  # outcome entries read per round


def cursor_key(keys) -> str:
    return f"poet:{keys.ns}:learn:versions"


def stamp_key(keys, function: str) -> str:
    """The newest stamp of a version switch the learners followed for ``function`` (sealed)."""
    return f"poet:{keys.ns}:learn:vstamp:{function}"


def newer(state, spec: dict) -> bool:
    """Whether a staged spec item may move ``state``: a heartbeat's always (``version_changed`` decides),
    a fleet switch only when its stamp is newer than the one the state followed last (a sealed member
    re-added after it was applied, or one staged while the stamp key was gone, is not)."""
    fleet = spec.get("fleet") if type(spec.get("fleet")) is dict else None
    if fleet is None or not state.stamp:
        return True
    mine, theirs = wire.Stamp.parse(state.stamp), wire.Stamp.parse(fleet.get("stamp"))
    return mine is None or (theirs is not None and theirs.order > mine.order)


def capped(mark: str, cursor, newest) -> str:
    """``mark`` (a padded watermark), held below anything past the cursor when the outcomes stream
    has entries no learner has looked at (``cursor``: the cursor key's value; ``newest``: the
    stream's last entry's id, ``wire.last_id``, or None)."""
    if not newest:
        return mark
    if cursor is not None and _text(cursor) == _text(newest):
        return mark
    return min(mark, _next_padded(_text(cursor) if cursor is not None else "0-0"))


def switch(kind: str, message: dict, entry_id: str) -> tuple[str, dict] | str:
    """(function, the staged spec item) for a verified ``version.*`` message, or why it is refused."""
    function = message.get("function")
    if type(function) is not str:
        return "no function named"
    if type(message.get("by")) is not str:
        return "not an instance's (no 'by')"  # the learners publish no version.*; an instance names itself
    if kind == "version.promoted":
        number, numbering = message.get("number"), FLEET
    else:
        number, numbering = message.get("to"), message.get("numbering") or LOCAL
    if type(number) is not int or numbering not in (LOCAL, FLEET):
        return "no version number"
    spec = {"version": number, "fleet": {"outcome": entry_id, "type": kind, "numbering": numbering}}
    for name in ("objective", "domain"):
        if type(message.get(name)) is str:
            spec[name] = message[name]
    if type(message.get("parameters")) is dict:
        spec["parameters"] = message["parameters"]
    if type(message.get("params")) is dict:
        spec["params"] = message["params"]
    scores = message.get("scores") if type(message.get("scores")) is dict else {}
    baseline = scores.get("candidate") if kind == "version.promoted" else message.get("baseline")
    if type(baseline) in (int, float):
        spec["fleet"]["baseline"] = baseline
    return function, {"spec": spec}


def follow(learner) -> int:
    """Stage the fleet's version switches published since the cursor; returns how many."""
    client, keys = learner.client, learner.keys
    key = cursor_key(keys)
    for _ in range(20):
        pipe = client.pipeline(transaction=True)
        try:
            pipe.watch(key)
            last = _text(pipe.get(key) or b"0-0")
            # measured on the broker (wire.range_bounded): an outcome entry over wire.MAX_ENTRY_BYTES never
            # reaches this process (anyone can add one; instances read the stream the same way)
            entries = wire.range_bounded(pipe, keys.outcomes, f"({last}", "+", count=READ)
            if not entries:
                return 0
            staged, refused, superseded, newest = {}, 0, 0, {}
            for entry_id, fields in entries:
                kind = fields.get(b"t")
                if wire.oversize(fields) is not None:
                    refused += 1
                    learner._once(("version oversize",), "poet_runtime: learner %s: outcome %s on %s: %s; not "
                                  "followed, counted as versions_refused", learner.name, _text(entry_id),
                                  keys.outcomes, wire.oversize(fields))
                    continue
                if kind not in TYPES:
                    continue  # params.updated: the learners' own
                entry_id = _text(entry_id)
                data = fields.get(b"m")
                reason = None
                if data is None or not wire.verify(learner.key, kind, data, fields.get(b"s")):
                    reason = "unsigned" if not fields.get(b"s") else "signature does not verify"
                else:
                    try:
                        message = json.loads(data)
                    except (ValueError, RecursionError):
                        message = None
                    made = switch(kind.decode(), message, entry_id) if type(message) is dict else "not JSON"
                    if type(made) is str:
                        reason = made
                    elif regenerate.newer_before(client, learner.key, keys.outcomes, entry_id, made[0],
                                                 wire.stamp_of(fields.get(b"s"))) is not None:
                        superseded += 1  # refused by every instance as out of order; signed again after it
                        continue
                    else:
                        function, item = made
                        if function not in newest:
                            newest[function] = _newest(learner, pipe, function)
                        # as the instances' wire.admit: fresh, and newer than the newest followed for the
                        # function, so a copy of an old promotion re-added under a new stream id is refused
                        stamp, reason = wire.judge(learner.key, kind, data, fields.get(b"s"), newest[function])
                        if reason is None:
                            newest[function] = stamp.text()
                            item["spec"]["fleet"]["stamp"] = stamp.text()
                            staged.setdefault(function, []).append([padded(entry_id), item])  # in stream order
                if reason is not None:
                    refused += 1
                    learner._once(("version refused", reason), "poet_runtime: learner %s: refused %s %s on %s: %s "
                                  "(not followed; counted as versions_refused)", learner.name, _text(kind),
                                  entry_id, keys.outcomes, reason)
            pipe.multi()
            for function, rows in staged.items():
                context = keys.stage(function)  # one member of its rows, sealed as staging seals its members
                pipe.zadd(context, {wire.seal(learner.key, context, member_text(rows)): 0})
                pipe.sadd(keys.staged, function)
                pipe.hincrby(keys.waiting, function, len(rows))
                pipe.set(stamp_key(keys, function), wire.seal(learner.key, stamp_key(keys, function),
                                                               newest[function]))
            if refused:
                pipe.hincrby(keys.stats, "versions_refused", refused)
            if superseded:
                pipe.hincrby(keys.stats, "versions_superseded", superseded)
            if staged:
                pipe.hincrby(keys.stats, "versions_followed", sum(len(m) for m in staged.values()))
            pipe.set(key, _text(entries[-1][0]))
            pipe.execute()
            return sum(len(m) for m in staged.values())
        except learner.redis.WatchError:
            continue  # another learner moved the cursor: read on from there
        finally:
            pipe.reset()
    return 0


def _newest(learner, pipe, function: str) -> str | None:
    """The sealed newest stamp followed for ``function`` (read on the watching connection: every
    write of it is in a transaction under the cursor's ``WATCH``); None when absent or not sealed
    (then ``apply`` still refuses a switch not newer than its state's, ``newer``)."""
    key = stamp_key(learner.keys, function)
    raw = pipe.get(key)
    if raw is None:
        return None
    text = wire.unseal(learner.open_keys, key, raw)
    if text is None:
        learner._unsealed(1, "version stamps")
    return text
