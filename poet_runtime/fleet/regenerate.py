"""Regeneration in a fleet: one instance regenerates for all, on the learner's signed verdict.

Why an instance and not the learner: regenerating needs the function (its spec, config, domain
and generator), which only the instances load; the learner has outputs and labels only. Why one
instance: N instances regenerating on the same verdict would publish N rival versions.

On a verified ``learning.degraded`` (read by ``fleet.follower`` from ``poet:NS:learning`` and
checked exactly as an outcome is: the fleet's key, HMAC over type and message; anything else is
refused, never acted on) for a function and version this process runs (``identity``: its current
version's fleet number, ``metadata.json`` ``fleet.number``, with numbering ``"fleet"``, else its
own number with numbering ``"local"``; the verdict names both) and whose settings allow it
(``auto_regenerate``, as locally):

- the instance that wins ``SET poet:NS:regen:<function>:<version>:<verdict id> <me> NX EX <ttl>``
  handles the verdict, and acts only if it also wins ``SET poet:NS:regen:<function>:<version> <me>
  NX EX <ttl>`` (``<version>``: ``f<n>`` for a fleet number; one outcome per version: kept once
  something is published, let go when nothing was, so the next verdict may try again); the
  others do nothing (they apply what it publishes);
- if that version is on probation (``poet:NS:regen:probation:<function>`` names it, set when it
  was promoted here), it publishes a signed ``version.rolled_back`` ``{function, to: previous,
  numbering, parameters?, params?, baseline, by}``;
- else it runs the engine's own regeneration and screening (``Learning.regenerate_for_fleet``)
  with the message's evidence (recent failures, rolling objective, baseline, comments) and, for
  an accepted candidate, publishes a signed ``version.promoted`` ``{function, number, files,
  generator, params, parameters, objective, domain, scores, builtin_hints?, previous,
  previous_numbering, by}`` on ``poet:NS:outcomes``. Every instance, this one included, applies
  it through the follower's checked path (this one finds its candidate by its fleet number and
  makes it current), and the learners follow it (``learner_versions``). A refused candidate is a
  ``version.rejected`` decision, as locally, and nothing is published.

Fleet numbers: ``number`` is allocated by the fleet, not taken from the elected instance's store
(other stores may already hold a local version by that number): ``poet:NS:regen:number:<function>``
counts them, and a new one is above both every number allocated before and the version it
replaces, so it is never reused, not even after a rollback. Every store keeps it as
``fleet.number`` of the version it stored (its local number may differ); the learner's
``params.updated`` names it with numbering ``"fleet"``.

An instance without the fleet's key regenerates nothing (the follower refuses every message then,
said once). An old verdict (older than ``MAX_AGE_S``: a process that starts long after) is not
acted on.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time

from poet_runtime.fleet import wire

log = logging.getLogger("poet_runtime")

ELECTION_TTL_S = 600
MAX_AGE_S = 300.0
LEARNING = "learning"
TYPES = ("learning.degraded", "learning.recovered")


def me() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def fleet_number(version) -> int:
    fleet = version.metadata.get("fleet") if version is not None else None
    if type(fleet) is dict and type(fleet.get("number")) is int:
        return fleet["number"]
    return version.number


def identity(version) -> tuple[int, str]:
    """How the fleet knows ``version``: (number, numbering)."""
    fleet = version.metadata.get("fleet") if version is not None else None
    if type(fleet) is dict and type(fleet.get("number")) is int:
        return fleet["number"], "fleet"
    return version.number, "local"


# The next fleet number: above every one allocated before and above the version it replaces.
_ALLOCATE = """
local n = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), tonumber(ARGV[1])) + 1
redis.call('SET', KEYS[1], n)
return n
"""


def allocate(client, ns_name: str, function: str, floor: int) -> int:
    return int(client.eval(_ALLOCATE, 1, f"poet:{ns_name}:regen:number:{function}", int(floor)))


def on_learning(follower, ns, entry_id: str, info, kind: str, message: dict) -> str:
    """A verified ``learning.*`` message for a function this process runs; returns what was done."""
    if kind != "learning.degraded":
        return "skipped: nothing to do on " + kind
    stamp = entry_id.partition("-")[0]
    if stamp.isdigit() and time.time() - int(stamp) / 1000 > MAX_AGE_S:
        return "skipped: an old verdict"
    engine = info.engine
    function = info.function_id
    if not engine.settings.auto_regenerate:
        return "skipped: auto_regenerate is off in this process"
    current = engine.store.current()
    if current is None or (message.get("version"), message.get("numbering") or "local") != identity(current):
        return "skipped: not the version this process runs"
    client = follower.client
    version = message["version"]
    named = version if identity(current)[1] == "local" else f"f{version}"  # fleet numbers apart from local ones
    # One instance per verdict ...
    if not client.set(f"poet:{ns.name}:regen:{function}:{named}:{entry_id}", me(), nx=True, ex=ELECTION_TTL_S):
        return "skipped: another instance handles this verdict"
    # ... and one outcome per version: held while regenerating, kept once something is published,
    # let go when nothing was (the next verdict for that version may try again, as locally).
    elected = f"poet:{ns.name}:regen:{function}:{named}"
    if not client.set(elected, me(), nx=True, ex=ELECTION_TTL_S):
        return "skipped: another instance regenerates this version"
    try:
        done = _act(follower, ns, entry_id, engine, function, current, version, message)
    except BaseException:
        client.delete(elected)
        raise
    if done not in ("promoted", "rolled back"):
        client.delete(elected)
    return done


def _act(follower, ns, entry_id: str, engine, function: str, current, version, message: dict) -> str:
    client = follower.client
    probation_key = f"poet:{ns.name}:regen:probation:{function}"
    probation = client.get(probation_key)
    probation = json.loads(probation) if probation else None
    on_probation = type(probation) is dict and probation.get("version") == version
    if on_probation and (message.get("numbering") or "local") == "fleet":
        to, numbering = probation.get("previous"), probation.get("previous_numbering") or "local"
        body = {"function": function, "to": to, "numbering": numbering, "previous": version,
                "reason": "the promoted version degraded", "rolling": message.get("rolling"),
                "baseline": message.get("baseline"), "objective": message.get("objective"), "by": me()}
        target = _stored(engine, to, numbering)
        if target is not None:  # what the learners learn for from here on (``learner_versions``)
            body["parameters"] = dict(target.metadata.get("parameters") or {})
            try:
                body["params"] = target.params()
            except (OSError, ValueError):
                pass
        publish(follower, ns, "version.rolled_back", body)
        client.delete(probation_key)
        log.info("poet_runtime: fleet: %s: v%s degraded on probation; rollback to v%s published", function,
                 version, probation.get("previous"))
        return "rolled back"
    evidence = dict(message.get("evidence") or {}) if type(message.get("evidence")) is dict else {}
    for name in ("objective", "rolling", "baseline"):
        evidence.setdefault(name, message.get(name))
    evidence["fleet"] = {"cause": message.get("cause"), "learner": message.get("learner"), "outcome": entry_id}
    made = engine.regenerate_for_fleet(evidence)
    if made is None:
        return "rejected"
    candidate, scores = made
    previous, previous_numbering = identity(current)
    number = allocate(client, ns.name, function, previous)
    # Known by its number in the fleet: the follower finds it here and makes it current.
    with engine.store.lock():
        engine.store.update_json(candidate.number, "metadata.json", {
            **candidate.metadata, "status": "current", "fleet": {"number": number, "by": me()}, "scores": scores})
    hints = candidate.metadata.get("builtin_hints")
    body = {"function": function, "number": number, "version": number, "numbering": "fleet",
            "previous": previous, "previous_numbering": previous_numbering,
            "files": {"code.py": candidate.code()}, "generator": candidate.metadata.get("generator"),
            "params": candidate.params(), "parameters": dict(candidate.metadata.get("parameters") or {}),
            "objective": engine.objective, "domain": engine.state.config.domain,
            "scores": scores, "by": me(), "reason": "objective degraded",
            **({"builtin_hints": hints} if type(hints) is dict else {})}
    client.set(probation_key, json.dumps({"version": number, "previous": previous,
                                          "previous_numbering": previous_numbering}))
    publish(follower, ns, "version.promoted", body)
    log.info("poet_runtime: fleet: %s: regenerated v%s for the fleet (previous v%s)", function, number, previous)
    return "promoted"


def _stored(engine, number, numbering: str):
    """The local version the fleet knows as (``number``, ``numbering``), or None."""
    for version in engine.store.versions():
        if identity(version) == (number, numbering):
            return version
    return None


def newer_before(client, key: bytes, stream: str, entry_id: str, function: str, stamp) -> int | None:
    """The newest signed time (ms) among the outcomes for ``function`` just before ``entry_id`` on
    ``stream`` whose stamps are newer than ``stamp``, or None. Instances admit a function's outcomes
    only in signed order (``wire.admit``): a message signed before a learner's ``params.updated``
    but added after it would be refused by all of them as out of order.

    Only outcomes that verify with the fleet's key count, and only those signed no further ahead
    than readers accept (``wire.FUTURE_S``): an entry anyone can add with a far-future stamp and the
    function's name would otherwise make this instance sign its promotion after that time, and
    every reader would refuse it as from the future (or, nearer, lock out genuine messages)."""
    newest = None
    horizon = (time.time() + wire.FUTURE_S) * 1000
    # measured on the broker: anyone can add entries of any size there (a cut read only misses some)
    for other_id, fields in wire.revrange_bounded(client, stream, entry_id, "-", count=200):
        other_id = other_id.decode() if isinstance(other_id, bytes) else other_id
        if other_id == entry_id or wire.oversize(fields) is not None:
            continue
        kind, data = fields.get(b"t") or b"", fields.get(b"m") or b""
        found, _ = wire.check(key, kind, data, fields.get(b"s"))
        if found is None or found.at_ms > horizon:
            continue  # not the fleet's, or from a clock no reader accepts
        if found.at_ms < stamp.at_ms - 60_000:
            break  # signed a minute before this one: what is older than that is not newer
        if found.order > stamp.order and _names(data, function):
            newest = max(newest or 0, found.at_ms)
    return newest


def _names(data: bytes, function: str) -> bool:
    try:
        message = json.loads(data)
    except (ValueError, RecursionError):
        return False
    return type(message) is dict and message.get("function") == function


def publish(follower, ns, kind: str, message: dict) -> str:
    """Sign and add ``message``, signed after what this store took (``wire.taken_ms``); signed again,
    after, when an outcome for the function signed later got in ahead of it (``newer_before``): that
    copy is refused by every reader as out of order, the next one admitted."""
    data = json.dumps(message, sort_keys=True, default=str).encode()
    after = wire.taken_ms(follower, message.get("function"))
    for _ in range(5):
        signature = wire.sign(follower.key, kind.encode(), data, after_ms=after)
        entry = follower.client.xadd(ns.stream, {"t": kind, "m": data, "s": signature, "l": f"instance {me()}"})
        entry = entry.decode() if isinstance(entry, bytes) else entry
        after = newer_before(follower.client, follower.key, ns.stream, entry, message["function"],
                             wire.stamp_of(signature))
        if after is None:
            break
        log.info("poet_runtime: fleet: %s: %s %s was signed before an outcome that got in ahead of it; "
                 "signed again", message["function"], kind, entry)
    return entry
