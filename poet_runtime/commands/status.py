"""``status [PATH]``: every ``@poet`` function found, its current version, and whether it is up to date.

"Up to date" means the current version's key equals the key the function has now
(its source, decorator arguments, generator and domain template): the next call would
use it without generating. Found statically; nothing is imported or generated. A current version that is an LLM
re-implementation of the logic (metadata ``"transformed": true``) is marked ``(transformed)``. The
"reported" column sums what the checks of every process's calls reported (``reports.json``).

"Up to date" also needs the version to be usable as it is: a damaged, tampered or unsigned
current version (``resolve.inspect_version``: digest, regeneration of a built-in version,
HMAC) is shown as such, with where it can run under the function's policy; one refused
under its policy says so. The "calls" column says how many recorded calls ran enhanced
and why the others did not (``reports.json`` kinds ``calls`` and ``fallback``).
"""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "status", help="list @poet functions with their current version and whether it matches their source",
        description="List every @poet function under PATH (default: the current folder), its current stored "
        "version, and whether that version is up to date with the function's source and arguments.",
    )
    parser.add_argument("paths", nargs="*", default=["."], metavar="PATH")
    parser.add_argument("--broker", metavar="URL", help="show the fleet instead: instances seen (heartbeats), lag and "
                        "pending entries per learner, last decision per function (redis://...; see "
                        "poet_runtime.fleet.status)")
    parser.add_argument("--namespace", metavar="NS", help="with --broker: the stream namespace (default: "
                        "POET_BROKER_NAMESPACE, else the one derived from the store root)")
    parser.add_argument("--json", action="store_true", help="with --broker: one JSON object")
    parser.set_defaults(handler=run)


def run_broker(args) -> int:
    """``status --broker URL``: the fleet as Redis sees it (read-only)."""
    import json
    import sys

    if not args.broker.startswith(("redis://", "rediss://", "unix://")):
        print(f"poet status: --broker {args.broker!r}: expected redis://, rediss:// or unix://", file=sys.stderr)
        return 2
    try:
        import redis
    except ImportError:
        print("poet status: redis-py is not installed: pip install 'poet_runtime[fleet]'", file=sys.stderr)
        return 2
    from poet_runtime.fleet import status
    from poet_runtime.fleet.learner import default_namespace

    from poet_runtime.fleet import wire

    try:  # with the key, status checks the learners' seals; without it, it shows what Redis holds
        seal_keys = tuple(key for key in (wire.load_key(), wire.previous_key()) if key)
    except OSError as error:
        print(f"poet status: {wire.KEY_FILE_VAR}: {error}", file=sys.stderr)
        return 2
    client = redis.Redis.from_url(args.broker, socket_timeout=10, socket_connect_timeout=5)
    try:
        report = status.collect(client, args.namespace or default_namespace(), seal_keys=seal_keys)
    except redis.RedisError as error:
        print(f"poet status: broker {args.broker.rpartition('@')[2]}: {type(error).__name__}: {error}",
              file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, default=str, sort_keys=True))
    else:
        status.render(report)
    return 0


def _state(item, store, current) -> str:
    if current is None:
        number = store.current_number()
        damaged = store.damaged().get(number) if number is not None else None
        if damaged is not None:
            from poet_runtime.safe_text import visible

            return visible(f"damaged: v{number} {damaged}; the next call makes a new version", allow_newlines=False)
        return "not generated"
    if item.skipped:
        return "unknown (non-literal arguments)"
    from poet_runtime.decorator import PoetConfig
    from poet_runtime.generate.spec import spec_from_source

    spec = spec_from_source(item.module, item.qualname, item.module_source, item.file)
    config = PoetConfig.from_kwargs(item.function_id, **item.kwargs)
    try:
        from poet_runtime.domains import get_domain
        from poet_runtime.resolve import select_generator, version_key

        key = version_key(spec, config, select_generator(), get_domain(config.domain).version)
        same = current.metadata.get("key") == key
    except ImportError:  # an older core without version_key: compare the source alone
        same = current.metadata.get("source_hash") == spec.source_hash()
    if not same:
        return "stale (source or arguments changed)"
    from poet_runtime.resolve import describe_trust, effective_policy
    from poet_runtime.safe_text import visible

    try:
        policy = effective_policy(config, item.function_id)
    except Exception as error:
        return visible(f"policy error: {type(error).__name__}: {error}", allow_newlines=False)
    problem = describe_trust(current, spec, config, policy)
    return visible(problem, allow_newlines=False) if problem else "up to date"


def _learning(current) -> str:
    """What learning cannot tune for this version (written by the learner in state.json): a
    parameter of a function whose labelled calls cannot be replayed (impure, async) is "not
    learnable without inputs"; only what is observable (retries, timeouts) is learned."""
    try:
        learning = (current.state().get("learning") or {}) if current is not None else {}
        if not isinstance(learning, dict):
            return ""
    except (OSError, ValueError, AttributeError):
        return ""
    names = sorted(learning.get("not_learnable") or {})
    return "".join(f"; {name}: not learnable without inputs" for name in names)


def _reported(store) -> str:
    """What calls' checks reported over all runs (reports.json): hint mismatches left as
    they were, repairs the domain or repair="coerce" made, retries; by kind, then field."""
    parts = []
    for kind, fields in sorted(store.reports().items()):
        if not isinstance(fields, dict) or not fields or kind in ("calls", "fallback"):
            continue
        total = sum(int(n) for n in fields.values() if isinstance(n, int))
        top = sorted(fields.items(), key=lambda item: -int(item[1]) if isinstance(item[1], int) else 0)[:3]
        parts.append(f"{kind} {total} (" + ", ".join(f"{field} {count}" for field, count in top)
                     + (", ..." if len(fields) > 3 else "") + ")")
    return "; ".join(parts) or "-"


def _never_enhanced(store) -> bool:
    """True when calls were recorded, none ran enhanced and some fell back (the version never loads)."""
    reports = store.reports()
    calls = reports.get("calls") if isinstance(reports.get("calls"), dict) else {}
    fallback = reports.get("fallback") if isinstance(reports.get("fallback"), dict) else {}
    fell_back = sum(n for n in fallback.values() if isinstance(n, int) and not isinstance(n, bool))
    return fell_back > 0 and not calls.get("enhanced")


def _calls(store) -> str:
    """Recorded calls over all runs: how many ran enhanced, and why the others did not."""
    from poet_runtime.safe_text import visible

    reports = store.reports()
    calls = reports.get("calls") if isinstance(reports.get("calls"), dict) else {}
    fallback = reports.get("fallback") if isinstance(reports.get("fallback"), dict) else {}
    count = {name: int(n) for name, n in calls.items() if isinstance(n, int) and not isinstance(n, bool)}
    reasons = {name: int(n) for name, n in fallback.items() if isinstance(n, int) and not isinstance(n, bool) and n}
    total = sum(count.values()) + sum(reasons.values())
    if not total:
        return "-"
    text = f"{count.get('enhanced', 0)} of {total} enhanced"
    if count.get("errors"):
        text += f", {count['errors']} raised"
    if reasons:
        top = sorted(reasons.items(), key=lambda item: -item[1])
        text += "; fell back: " + ", ".join(f"{name} {n}" for name, n in top[:3]) + (", ..." if len(top) > 3 else "")
    return visible(text, allow_newlines=False)


def run(args) -> int:
    if getattr(args, "broker", None):
        return run_broker(args)
    if getattr(args, "json", False) or getattr(args, "namespace", None):
        print("poet status: --json and --namespace go with --broker", file=__import__("sys").stderr)
        return 2
    from poet_runtime.commands import _render
    from poet_runtime.hook.discover import discover
    from poet_runtime.store import FunctionStore

    found, problems = discover(args.paths)
    rows = []
    for item in found:
        store = FunctionStore.open(item.module, item.qualname, item.file)
        current = store.current()
        try:
            state = _state(item, store, current)
        except Exception as error:
            state = f"error: {type(error).__name__}: {error}"
        if state == "up to date" and _never_enhanced(store):
            state = "current, but no recorded call ran enhanced (see calls)"
        state += _learning(current)
        name = current.name if current else "-"
        if current is not None and current.metadata.get("transformed"):
            name += " (transformed)"  # an LLM re-implementation of the logic, run in the sandbox
        rows.append([item.function_id, f"{item.file}:{item.lineno}", name, state, _calls(store), _reported(store)])
    for problem in problems:
        rows.append([problem.file, "-", "-", f"error: {problem.message}", "-", "-"])
    _render.table("poet status", ["function", "where", "current", "state", "calls", "reported"], rows)
    return 1 if problems else 0
