"""``versions MODULE:QUALNAME`` and ``rollback MODULE:QUALNAME [N]``: list and switch stored versions.

A version whose metadata says ``"transformed": true`` (an LLM answer that re-implements
a pure function's logic instead of calling it; it always runs in the policy's sandbox)
is marked ``(transformed)`` after its generator.

The "trust" column says what the runtime will make of each version at load (README,
"What the store trusts"): ``digest ok`` (a built-in version made before signing: written
again to prove it at load), ``signed`` (a built-in one is also written again at load), ``unsigned`` or
``tampered`` (runs only in a sandbox policy),
``damaged`` (never runs; the runtime repairs it as the next version where it can).
``versions --accept MODULE:QUALNAME N`` signs version N's code.py as it is now, after a
review of a hand edit: it checks that the file parses and hides no control or bidi
characters, then stores its digest and HMAC (per-user key, ``store.store_key``).

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
    listing.add_argument("number", nargs="?", type=int, metavar="N", help="the version --accept signs (default: current)")
    listing.add_argument("--accept", action="store_true",
                         help="sign version N's code.py as it is now (after reviewing a hand edit with `show`)")
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
    if args.accept:
        return _accept(store, args.number)
    if args.number is not None:
        _render.error("N is for --accept; `versions MODULE:QUALNAME` lists them all")
        return 2
    versions = store.versions()
    damaged = store.damaged()
    if not versions and not damaged:
        _render.error(f"{store.function_id}: no stored versions in {store.folder}")
        return 1
    from poet_runtime.safe_text import visible

    current = store.current_number()
    rows = []
    for version in versions:
        meta = version.metadata
        rows.append((version.number, [
            ("* " if version.number == current else "  ") + version.name,
            visible(str(meta.get("created_at", "?")), allow_newlines=False),
            visible(str(meta.get("generator", "?")), allow_newlines=False) + (" (transformed)" if meta.get("transformed") else ""),
            visible(str(store.status_of(version)), allow_newlines=False),
            trust_of(store, version),
            visible(str(meta.get("key", ""))[:12], allow_newlines=False),
        ]))
    for number, error in damaged.items():
        rows.append((number, [("* " if number == current else "  ") + f"v{number}", "?", "?", "damaged",
                              "damaged: " + visible(f"metadata.json: {error.field + ': ' if error.field else ''}{error.reason}",
                                                    allow_newlines=False), "-"]))
    rows.sort(key=lambda row: row[0])
    _render.table(f"{store.function_id}  ({store.folder})", ["version", "created", "generator", "status", "trust", "key"],
                  [row for _, row in rows])
    return 0


def trust_of(store, version) -> str:
    """What the load will make of ``version``, as far as it is known without the function's
    source (a built-in version is written again at load; here only its digest is checked)."""
    from poet_runtime.store import DamagedFile, is_builtin_generator

    try:
        check = version.verify_code(store.function_id)
    except DamagedFile as error:
        return f"damaged: {error.reason}"
    except OSError as error:
        return f"damaged: code.py cannot be read ({error.strerror or error})"
    _, problems = version.params_problems()
    note = f"; params.json: {problems[0].field or 'file'}: {problems[0].reason}" if problems else ""
    builtin = is_builtin_generator(version.metadata.get("generator")) and not version.metadata.get("transformed")
    if check.signed:
        if (version.metadata.get("integrity") or {}).get("accepted"):
            return "signed (accepted by hand)" + note
        return ("signed (built-in: also written again at load)" if builtin else "signed") + note
    if check.digest_ok is False:
        return "tampered: code.py differs from its digest (sandbox only)" + note
    if builtin and check.signed is None:
        return ("digest ok, unsigned" if check.digest_ok else "no digest (made before digests)") + \
            " (built-in: written again at load)" + note
    if check.signed is False:
        return "tampered: signature does not match (sandbox only)" + note
    return "unsigned (sandbox only)" + note


def _accept(store, number) -> int:
    from poet_runtime.commands import _render
    from poet_runtime.resolve import parse_checked
    from poet_runtime.safe_text import hidden_characters
    from poet_runtime.store import DamagedFile

    number = number if number is not None else store.current_number()
    version = store.get(number) if number is not None else None
    if version is None:
        _render.error(f"{store.function_id}: no complete version {'v' + str(number) if number else ''} in {store.folder}")
        return 1
    path = version.path / "code.py"
    try:
        check = version.verify_code(store.function_id)
        parse_checked(check.text, str(path))
    except (DamagedFile, OSError) as error:
        _render.error(f"{store.function_id} {version.name}: not accepted: {error}")
        return 1
    hidden = hidden_characters(check.text)
    if hidden:
        shown = ", ".join(f"line {line} col {col}: {name}" for line, col, name in hidden[:5])
        _render.error(f"{path}: not accepted: it holds characters a reviewer cannot see ({shown}"
                      f"{', ...' if len(hidden) > 5 else ''}); remove them and review it again with `show`")
        return 1
    if check.signed:
        print(f"{store.function_id}: {version.name} is already signed as it is (sha256 {check.sha256[:16]})")
        return 0
    try:
        store.accept(version.number)
    except (OSError, ValueError) as error:
        _render.error(f"{store.function_id} {version.name}: not accepted: {error}")
        return 1
    print(f"{store.function_id}: {version.name} accepted (code.py sha256 {check.sha256[:16]}); it now runs in the "
          "backend its policy names")
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
