"""``python -m poet_runtime events``: read the durable event queue under ``.poet/events/``.

What the learning subsystem did, and why, is only trustworthy if a person can read it:
executions, feedback, parameter changes, degradations, candidates, promotions and
rollbacks, in order, filtered by type or function, as text or JSON lines, and live
with ``--follow``.
"""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "events", help="show execution, feedback, learning and version events",
        description="Show the durable events under .poet/events/ (POET_HOME, or ./.poet by default).")
    parser.add_argument("--follow", "-f", action="store_true", help="keep printing new events as they are written")
    parser.add_argument("--type", action="append", metavar="T",
                        help="only this event type; 'learning' matches learning.* (repeatable)")
    parser.add_argument("--function", metavar="MODULE:QUALNAME", help="only events of this function")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--root", metavar="DIR", action="append",
                        help="a store root (the folder holding events/); repeatable")
    parser.add_argument("--limit", type=int, metavar="N", help="only the last N matching events")
    parser.set_defaults(handler=run)


def default_roots(given=None) -> list:
    from pathlib import Path

    from poet_runtime import journal
    from poet_runtime.settings import get_settings

    if given:
        return [journal.events_root(Path(r)) for r in given]
    settings = get_settings()
    candidates = [settings.home, Path.cwd() / ".poet"] if settings.home else [Path.cwd() / ".poet",
                                                                              settings.fallback_home()]
    return [journal.events_root(c) for c in candidates if c is not None]


# Every event type the runtime writes; a --type must name one of them, a family of them
# (``learning``, ``learning.*``) or a type found in the journal read.
KNOWN_TYPES = (
    "function.enhanced", "function.execution", "function.fallback", "function.feedback",
    "function.mismatch", "function.repair", "function.retry",
    # What a domain's generated code reports (validate.note with a dotted kind), written as is.
    "domain.advisory", "domain.warning", "domain.audit", "domain.evidence",
    "learning.updated", "learning.degraded", "learning.recovered",
    "version.candidate", "version.shadow", "version.promoted", "version.rejected", "version.rolled_back",
    "version.regeneration_failed",
    # The store's own reports (store.report_once): a damaged or unsigned file, a refused policy.
    "store.damaged", "store.untrusted", "store.policy_refused",
    "generation.attempt",
)


def unknown_types(types, seen=()) -> list[str]:
    """The ``--type`` values that name no known event type nor family of them."""
    known = set(KNOWN_TYPES) | {t for t in seen if t}
    families = {t.split(".", 1)[0] for t in known}
    bad = []
    for wanted in types or ():
        stem = wanted[:-2] if wanted.endswith(".*") else wanted
        if stem not in known and stem not in families:
            bad.append(wanted)
    return bad


def _matches(event: dict, types, function) -> bool:
    kind = event.get("type", "")
    if types and not any(kind == t or kind.startswith(t.rstrip(".*") + ".") for t in types):
        return False
    return not function or event.get("payload", {}).get("function") == function


def _line(event: dict) -> str:
    import time

    payload = event.get("payload", {})
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(event.get("timestamp") or 0)))
    kind = event.get("type", "?")
    head = f"{when}  {kind:<20} {payload.get('function', '-')} v{payload.get('version', '-')}"
    if kind == "function.execution":
        extra = f"{payload.get('execution_id')} {payload.get('status')} {payload['metrics']['duration_ms']:.3f} ms"
        if payload.get("fallback_reason"):
            extra += f" fallback: {payload['fallback_reason']}"
    elif kind == "function.feedback":
        extra = f"{payload.get('execution_id')} {payload.get('feedback_type')} label={payload.get('label')!r}"
        if payload.get("comments"):
            extra += f" {payload['comments'][:60]!r}"
    elif kind == "function.fallback" and "count" in payload:
        extra = f"{payload.get('reason')} x{payload.get('count')} (total {payload.get('total')})"
        if payload.get("detail"):
            extra += f": {str(payload['detail'])[:80]}"
    elif kind == "learning.updated":
        extra = f"{payload.get('parameter')}: {payload.get('old')} -> {payload.get('new')}"
    elif kind == "learning.degraded":
        extra = f"{payload.get('objective')} {payload.get('rolling')} (baseline {payload.get('baseline')})"
    else:
        extra = f"{payload.get('reason', '')} {payload.get('scores') or ''}".strip()
    return f"{head}  {extra}"


def _read_all(roots, seen: dict):
    """New events since the last call: ``seen`` maps a file to how many events were read from it."""
    from poet_runtime import journal

    fresh = []
    for root in roots:
        for path in journal.files(root):
            done = seen.get(path.name, 0)
            events = list(journal.read_file(path))
            seen[path.name] = len(events)
            fresh.extend(events[done:])
    fresh.sort(key=lambda e: float(e.get("timestamp") or 0))
    return fresh


def run(args) -> int:
    import json
    import sys
    import time

    roots = [r for r in default_roots(args.root) if r.is_dir()]
    seen: dict = {}
    initial = _read_all(roots, seen)
    bad = unknown_types(args.type, {e.get("type") for e in initial})
    if bad:
        families = sorted({t.split(".", 1)[0] for t in KNOWN_TYPES})
        print(f"events: unknown event type {', '.join(map(repr, bad))}; known: {', '.join(KNOWN_TYPES)} "
              f"(or a family: {', '.join(families)})", file=sys.stderr)
        return 2
    if not roots and not args.follow:
        print("no events yet (looked in: " + ", ".join(map(str, default_roots(args.root))) + ")", file=sys.stderr)
        return 0

    def show(events) -> None:
        for event in events:
            if _matches(event, args.type, args.function):
                print(json.dumps(event, default=str) if args.json else _line(event), flush=True)

    events = [e for e in initial if _matches(e, args.type, args.function)]
    show(events[-args.limit:] if args.limit else events)
    try:
        while args.follow:
            time.sleep(0.25)
            roots = [r for r in default_roots(args.root) if r.is_dir()]
            show(_read_all(roots, seen))
    except KeyboardInterrupt:
        pass
    return 0
