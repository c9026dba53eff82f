"""``show MODULE:QUALNAME``: print a function's generated code (a version, or a diff between two).

The store is the one the runtime uses for that module (``FunctionStore.open`` decides:
``.poet/`` beside the module's file, or ``POET_HOME``); the module's file is found
without importing it. The code may come from a model or a tampered folder: control,
bidi and zero-width characters are printed visibly (``safe_text.visible``), with a
warning listing where they are. ``--attempts`` prints what the generation tried
(model, tokens, latency, each refusal's reason); without it, one line per attempt
goes to stderr, so stdout stays the code.
"""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "show",
        help="print the generated code of a function's current (or given) version, or a diff",
        description="Print the generated code of MODULE:QUALNAME (e.g. app:fetch, pkg.mod:Model.predict, "
        "or path/to/file.py:fetch). --diff compares with the previous version, or with version M.",
    )
    parser.add_argument("target", metavar="MODULE:QUALNAME")
    parser.add_argument("--version", "-n", type=int, metavar="N", help="the version to show (default: current)")
    parser.add_argument("--diff", nargs="?", type=int, const=0, metavar="M",
                        help="show the changes from version M (default: the version before) to N")
    parser.add_argument("--attempts", action="store_true",
                        help="show what the generation tried (each attempt's model, tokens, latency, refusal)")
    parser.set_defaults(handler=run)


def open_store(target: str):
    """(store, error message) for a ``MODULE:QUALNAME`` argument."""
    from poet_runtime.hook.discover import resolve_target
    from poet_runtime.store import FunctionStore

    module, qualname, module_file = resolve_target(target)
    return FunctionStore.open(module, qualname, module_file)


def run(args) -> int:
    from poet_runtime.commands import _render

    try:
        store = open_store(args.target)
    except ValueError as error:
        _render.error(str(error))
        return 2
    number = args.version if args.version is not None else store.current_number()
    version = store.get(number) if number is not None else None
    if version is None:
        which = f"version v{number}" if number is not None else "current version"
        _render.error(f"{store.function_id}: no {which} in {store.folder} (run `enhance` or call it once)")
        return 1
    if args.attempts:
        from poet_runtime.generate.attempts import rows, summary
        from poet_runtime.safe_text import visible

        print(visible(f"{store.function_id} {version.name}: {summary(version.metadata)}", allow_newlines=False))
        found = [[visible(cell, allow_newlines=False) for cell in row] for row in rows(version.metadata)]
        if found:
            _render.table(None, ["#", "result", "reason", "request", "model", "tokens in/out", "latency", "detail"],
                          found)
        return 0
    if args.diff is None:
        _attempt_lines(store, version)
        _render.code(_shown(version.code()))
        return 0
    if args.diff:
        base = store.get(args.diff)
    else:
        older = [v for v in store.versions() if v.number < version.number]
        base = older[-1] if older else None
    if base is None:
        _render.error(f"{store.function_id}: no version to compare {version.name} with")
        return 1
    import difflib

    diff = "".join(difflib.unified_diff(
        base.code().splitlines(keepends=True), version.code().splitlines(keepends=True),
        fromfile=f"{store.function_id} {base.name}", tofile=f"{store.function_id} {version.name}",
    ))
    _render.code(_shown(diff) or f"(no difference between {base.name} and {version.name})\n", "diff")
    return 0


def _shown(text: str) -> str:
    """``text`` with hidden characters written out; a warning on stderr says where they were."""
    import sys

    from poet_runtime.safe_text import hidden_characters, visible

    found = hidden_characters(text)
    if found:
        places = ", ".join(f"line {line} col {col} {name}" for line, col, name in found[:10])
        more = f" and {len(found) - 10} more" if len(found) > 10 else ""
        print(f"poet: warning: {len(found)} hidden character(s), shown escaped: {places}{more}", file=sys.stderr)
        return visible(text)
    return text


def _attempt_lines(store, version) -> None:
    import sys

    from poet_runtime.generate.attempts import describe_attempt
    from poet_runtime.safe_text import visible

    for attempt in version.metadata.get("attempts") or ():
        print(visible(f"# {store.function_id} {version.name} attempt {describe_attempt(attempt)}",
                      allow_newlines=False), file=sys.stderr)
