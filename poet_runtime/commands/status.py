"""``status [PATH]``: every ``@poet`` function found, its current version, and whether it is up to date.

"Up to date" means the current version's key equals the key the function has now
(its source, decorator arguments, generator and domain template): the next call would
use it without generating. Found statically; nothing is imported or generated. A current version that is an LLM
re-implementation of the logic (metadata ``"transformed": true``) is marked ``(transformed)``. The
"reported" column sums what the checks of every process's calls reported (``reports.json``).
"""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "status", help="list @poet functions with their current version and whether it matches their source",
        description="List every @poet function under PATH (default: the current folder), its current stored "
        "version, and whether that version is up to date with the function's source and arguments.",
    )
    parser.add_argument("paths", nargs="*", default=["."], metavar="PATH")
    parser.set_defaults(handler=run)


def _state(item, store, current) -> str:
    if current is None:
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
    return "up to date" if same else "stale (source or arguments changed)"


def _learning(current) -> str:
    """What learning cannot tune for this version (written by the learner in state.json): a
    parameter of a function whose labelled calls cannot be replayed (impure, async) is "not
    learnable without inputs"; only what is observable (retries, timeouts) is learned."""
    try:
        learning = (current.state().get("learning") or {}) if current is not None else {}
    except (OSError, ValueError, AttributeError):
        return ""
    names = sorted(learning.get("not_learnable") or {})
    return "".join(f"; {name}: not learnable without inputs" for name in names)


def _reported(store) -> str:
    """What calls' checks reported over all runs (reports.json): hint mismatches left as
    they were, repairs the domain or repair="coerce" made, retries; by kind, then field."""
    parts = []
    for kind, fields in sorted(store.reports().items()):
        if not isinstance(fields, dict) or not fields:
            continue
        total = sum(int(n) for n in fields.values() if isinstance(n, int))
        top = sorted(fields.items(), key=lambda item: -int(item[1]) if isinstance(item[1], int) else 0)[:3]
        parts.append(f"{kind} {total} (" + ", ".join(f"{field} {count}" for field, count in top)
                     + (", ..." if len(fields) > 3 else "") + ")")
    return "; ".join(parts) or "-"


def run(args) -> int:
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
        state += _learning(current)
        name = current.name if current else "-"
        if current is not None and current.metadata.get("transformed"):
            name += " (transformed)"  # an LLM re-implementation of the logic, run in the sandbox
        rows.append([item.function_id, f"{item.file}:{item.lineno}", name, state, _reported(store)])
    for problem in problems:
        rows.append([problem.file, "-", "-", f"error: {problem.message}", "-"])
    _render.table("poet status", ["function", "where", "current", "state", "reported"], rows)
    return 1 if problems else 0
