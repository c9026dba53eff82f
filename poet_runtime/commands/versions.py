"""``versions MODULE:QUALNAME`` and ``rollback MODULE:QUALNAME [N]``: list and switch stored versions.

A version whose metadata says ``"transformed": true`` (an LLM answer that re-implements
a pure function's logic instead of calling it; it always runs in the policy's sandbox)
is marked ``(transformed)`` after its generator.

Rollback only moves the ``current`` pointer (``FunctionStore.rollback``); no version is
deleted, so rolling forward again is ``rollback MODULE:QUALNAME <newer N>``.
"""

from __future__ import annotations

import sys


def register(subparsers) -> None:
    listing = subparsers.add_parser(
        "versions", help="list the stored versions of a function",
        description="List the stored versions of MODULE:QUALNAME, marking the current one.",
    )
    listing.add_argument("target", metavar="MODULE:QUALNAME")
    listing.set_defaults(handler=run_versions)
    back = subparsers.add_parser(
        "rollback", help="make an earlier (or any) stored version current",
        description="Make version N of MODULE:QUALNAME current; without N, the version before the current one.",
    )
    back.add_argument("target", metavar="MODULE:QUALNAME")
    back.add_argument("number", nargs="?", type=int, metavar="N")
    back.set_defaults(handler=run_rollback)


def run_versions(args) -> int:
    from poet_runtime.commands import _render
    from poet_runtime.commands.show import open_store

    try:
        store = open_store(args.target)
    except ValueError as error:
        _render.error(str(error))
        return 2
    versions = store.versions()
    if not versions:
        _render.error(f"{store.function_id}: no stored versions in {store.folder}")
        return 1
    current = store.current_number()
    rows = []
    for version in versions:
        meta = version.metadata
        rows.append([
            ("* " if version.number == current else "  ") + version.name,
            meta.get("created_at", "?"),
            meta.get("generator", "?") + (" (transformed)" if meta.get("transformed") else ""),
            store.status_of(version),
            str(meta.get("key", ""))[:12],
        ])
    _render.table(f"{store.function_id}  ({store.folder})", ["version", "created", "generator", "status", "key"], rows)
    return 0


def run_rollback(args) -> int:
    from poet_runtime.commands import _render
    from poet_runtime.commands.show import open_store

    try:
        store = open_store(args.target)
        before = store.current()
        version = store.rollback(args.number)
    except ValueError as error:
        _render.error(str(error))
        return 2
    except (OSError, LookupError) as error:
        _render.error(str(error))
        return 1
    print(f"{store.function_id}: current version is now {version.name}")
    if before is not None and before.metadata.get("source_hash") != version.metadata.get("source_hash"):
        # The runtime never runs a version made for other source: it would run stale logic.
        print(f"note: {version.name} was generated for another source of the function than {before.name}; "
              f"while the source stays as {before.name} saw it, the runtime serves a version made for it",
              file=sys.stderr)
    return 0
