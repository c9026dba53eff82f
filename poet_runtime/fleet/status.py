"""``status --broker URL``: what the fleet looks like from Redis, in one read-only pass.

Why from Redis alone: the instances may be on other hosts and the learners anywhere; the broker
is the one place that sees all of them. Instances come from their heartbeats (``hi`` entries,
kept by the learners), lag and pending entries from the consumer group itself (``XINFO``,
``XPENDING``), learning from the per-function state and the last decision the learners wrote.
Nothing here writes to the broker.
"""

from __future__ import annotations

import json
import time

from poet_runtime.fleet import wire
from poet_runtime.fleet.learner import Keys
from poet_runtime.fleet.staging import _text

LAG_COUNT_LIMIT = 100_000  # entries counted past the group's last delivered one (beyond: "at least")


def _json(raw) -> dict:
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        return {"damaged": _text(raw)[:80]}
    return value if isinstance(value, dict) else {}


def _sealed(seal_keys, context: str, raw) -> bool | None:
    """Whether a learner's value (a state, a spec) carries the fleet key's seal for where it is
    kept: True, False (written by someone without the key, or moved), None (no key to check with)."""
    if not seal_keys or not raw:
        return None
    from poet_runtime.fleet.wire import unseal_json

    return unseal_json(seal_keys, context, raw) is not None


def collect(client, namespace: str, now: float | None = None, *, seal_keys: tuple = ()) -> dict:
    """Everything ``status --broker`` shows, as plain data (``--json`` prints it as it is).

    ``seal_keys``: the fleet key (and a previous one, after a rotation). With them, each function
    says whether its state and spec are the learners' own (``sealed``); a value that is not is
    shown as such, since the learners refuse it (a state) or ignore it (a spec). Without a key,
    ``sealed`` is None: the values are shown as Redis holds them, unchecked."""
    from poet_runtime.fleet.staging import spec_context

    keys = Keys(namespace)
    now = time.time() if now is None else now
    report: dict = {"namespace": namespace, "stream": keys.events, "length": client.xlen(keys.events),
                    "outcomes": client.xlen(keys.outcomes)}
    instances = []
    for process, raw in sorted(client.hgetall(keys.instances).items()):
        beat = _json(raw)
        seen = beat.get("seen_ms")
        instances.append({"process": _text(process), "host": beat.get("host"), "pid": beat.get("pid"),
                          "root": beat.get("root"), "started": beat.get("started"),
                          "last_event": beat.get("last_event"),
                          "heartbeat_age_s": round(now - seen / 1000.0, 1) if isinstance(seen, (int, float)) else None,
                          # kept from the heartbeat by the learners when they keep them (staging)
                          "versions": _versions(beat.get("functions")),
                          "unforwarded_feedback": beat.get("unforwarded_feedback")})
    report["instances"] = instances
    group = None
    try:
        groups = client.xinfo_groups(keys.events)
    except Exception:  # no stream yet
        groups = []
    for found in groups:
        if _text(found["name"]) == wire.LEARNERS:
            group = found
    if group is None:
        report["group"] = None
        report["consumers"] = []
    else:
        last = _text(group["last-delivered-id"])
        # counted on the broker: the entries themselves (any size anyone added) never come here
        behind = wire.count_after(client, keys.events, f"({last}" if last != "0-0" else "-", LAG_COUNT_LIMIT)
        summary = client.xpending(keys.events, wire.LEARNERS)
        report["group"] = {"name": wire.LEARNERS, "consumers": group["consumers"], "pending": group["pending"],
                           "last_delivered": last, "lag": behind, "lag_capped": behind >= LAG_COUNT_LIMIT,
                           "oldest_pending": _text(summary["min"]) if summary.get("pending") else None}
        report["consumers"] = [{"name": _text(c["name"]), "pending": c["pending"], "idle_ms": c["idle"]}
                               for c in client.xinfo_consumers(keys.events, wire.LEARNERS)]
    stats = {_text(k): int(v) for k, v in client.hgetall(keys.stats).items()}
    report["counts"] = stats
    raw_specs = {_text(k): v for k, v in client.hgetall(keys.functions).items()}
    specs = {name: _json(v) for name, v in raw_specs.items()}
    decisions = {_text(k): _json(v) for k, v in client.hgetall(keys.decisions).items()}
    waiting = {_text(k): int(v) for k, v in client.hgetall(keys.waiting).items()}  # staged rows not yet applied
    functions = []
    for function in sorted(set(specs) | set(decisions)):
        raw_state = client.get(keys.state(function))
        state = _json(raw_state)
        spec = specs.get(function, {})
        sealed = {"state": _sealed(seal_keys, keys.state(function), raw_state),
                  "spec": _sealed(seal_keys, spec_context(keys, function), raw_specs.get(function))}
        if sealed["state"] is False:
            state = {}  # the learners refuse it: nothing in it is what they learned
        if sealed["spec"] is False:
            spec = {}
        if state:  # what the learners learn for, counted as their state says
            version, numbering = state.get("version"), state.get("numbering") or "local"
        else:
            version, numbering = _fleet_identity(spec)
        serving_fleet, serving_numbering = _fleet_identity(spec)
        functions.append({
            "function": function, "version": version, "numbering": numbering,
            # the version the last heartbeat naming the function ran: its local number, and how the fleet knows it
            "serving": {"version": spec.get("version"), "fleet_version": serving_fleet,
                        "numbering": serving_numbering} if spec else None,
            "objective": state.get("objective", spec.get("objective")),
            "staged": max(0, waiting.get(function, 0)), "feedback": state.get("feedback", 0),
            "samples": (state.get("learner") or {}).get("seen", 0), "unmatched": state.get("unmatched", 0),
            "params": state.get("params", spec.get("params")), "last_decision": decisions.get(function),
            "sealed": sealed})
    report["functions"] = functions
    return report


def _fleet_identity(spec: dict) -> tuple:
    """(number, numbering) a heartbeat gave a function's version; an instance older than
    ``fleet_version`` in heartbeats only said its local number."""
    if spec.get("fleet_version") is not None:
        return spec.get("fleet_version"), spec.get("numbering") or "local"
    return spec.get("version"), "local" if spec.get("version") is not None else None


def _versions(functions) -> dict:
    """function -> {version, fleet_version, numbering} from a heartbeat's functions (untrusted JSON)."""
    if type(functions) is not dict:
        return {}
    return {str(name): {"version": view.get("version"), "fleet_version": _fleet_identity(view)[0],
                        "numbering": _fleet_identity(view)[1]}
            for name, view in functions.items() if type(view) is dict}


def _said_version(number, numbering) -> str:
    return "-" if number is None else f"v{number} ({numbering or 'local'})"


def _age(stamp, now: float) -> str:
    if not isinstance(stamp, (int, float)):
        return "-"
    return f"{max(0.0, now - stamp):.1f} s ago"


def render(report: dict, now: float | None = None) -> None:
    """Three tables (instances, learners, functions) and a line of counts."""
    from poet_runtime.commands import _render
    from poet_runtime.safe_text import visible

    now = time.time() if now is None else now

    def show(value) -> str:  # what instances wrote is untrusted text
        return visible(str(value), allow_newlines=False) if value is not None else "-"

    def versions(instance) -> str:
        return "; ".join(f"{name} {_said_version(v['fleet_version'], v['numbering'])}"
                         for name, v in sorted((instance.get("versions") or {}).items())) or "-"

    _render.table(f"fleet {report['namespace']}: instances (heartbeats)",
                  ["process", "host", "pid", "last event", "heartbeat", "store", "versions", "unforwarded fb"],
                  [[show(i["process"]), show(i["host"]), show(i["pid"]), _age(i["last_event"], now),
                    f"{i['heartbeat_age_s']} s ago" if i["heartbeat_age_s"] is not None else "-", show(i["root"]),
                    show(versions(i)), show(i.get("unforwarded_feedback"))]
                   for i in report["instances"]] or [["-", "-", "-", "-", "-", "no heartbeat seen", "-", "-"]])
    group = report["group"]
    if group is None:
        print(f"no learner group {wire.LEARNERS} on {report['stream']} yet (no learner has started)")
    else:
        lag = f"{'>=' if group['lag_capped'] else ''}{group['lag']}"
        rows = [[f"group {group['name']}", group["pending"], "-", lag]]
        rows += [[c["name"], c["pending"], f"{c['idle_ms'] / 1000:.1f} s", "-"] for c in report["consumers"]]
        _render.table(f"learners on {report['stream']} ({report['length']} entries; oldest pending "
                      f"{group['oldest_pending'] or '-'})", ["consumer", "pending", "idle", "lag (not yet read)"],
                      rows)
    rows = []
    for f in report["functions"]:
        decision = f["last_decision"] or {}
        said = "-"
        if decision:
            said = f"{decision.get('type')} v{decision.get('version')} by {decision.get('by')}"
            if decision.get("detail") is not None:
                said += f" {json.dumps(decision['detail'], default=str)}"
            said += f" ({_age(decision.get('at'), now)})"
        serving = f.get("serving") or {}
        served = _said_version(serving.get("fleet_version"), serving.get("numbering"))
        if serving.get("numbering") == "fleet" and serving.get("version") is not None:
            served += f" = local v{serving['version']}"
        learns_for = _said_version(f["version"], f.get("numbering"))
        unsealed = [what for what, ok in (f.get("sealed") or {}).items() if ok is False]
        if unsealed:  # what the learners refuse: say so where the value would have been
            learns_for += f" ({' and '.join(unsealed)} not sealed by the fleet key: refused)"
        rows.append([show(f["function"]), show(learns_for), show(served),
                     show(f["objective"]), f["staged"], f["samples"],
                     show(json.dumps(f["params"], default=str) if f["params"] else "-"), show(said)])
    _render.table("learning", ["function", "learns for", "last heartbeat ran", "objective", "staged", "samples",
                               "params", "last decision"],
                  rows or [["-", "-", "-", "-", "-", "-", "-", "no function seen"]])
    counts = report["counts"]
    print("counts: " + (", ".join(f"{name} {value}" for name, value in sorted(counts.items())) or "none yet")
          + (f"; {counts['refused']} entries refused (unsigned or wrongly signed)" if counts.get("refused") else ""))
