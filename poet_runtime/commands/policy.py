"""``policy``: check policy files and explain what a function gets from one.

``policy check FILE...`` validates each file (schema, unknown fields, honesty)
and prints every problem as ``file:line: field: message``; exit 1 when any file
is invalid. ``policy explain MODULE:QUALNAME [--policy P]`` prints the effective
settings for that function and which table of the policy gave each one, and
what ``trust`` means for it (which versions run in-process, which in the
backend), and which operating-system layers its worker gets on this machine;
the policy defaults to what the function would get with no
``@poet(policy=...)`` ($POET_POLICY, [tool.poet] policy, else "default").

Also runnable as ``python -m poet_runtime.commands.policy check FILE...``.
"""

from __future__ import annotations

import sys


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "policy", help="check policy files, explain the settings a function gets",
        description="Check policy files and explain which settings a function gets from one.")
    actions = parser.add_subparsers(title="actions", metavar="ACTION", dest="policy_action")
    check = actions.add_parser("check", help="validate policy files (exit 1 on any error)",
                               description="Validate policy files; print each problem as file:line: field: message.")
    check.add_argument("files", nargs="+", metavar="FILE", help="policy file (or shipped name: default, strict, trusted)")
    check.set_defaults(handler=check_command)
    explain = actions.add_parser("explain", help="effective settings for MODULE:QUALNAME and where each comes from",
                                 description="Print the effective policy settings for one function.")
    explain.add_argument("function", metavar="MODULE:QUALNAME")
    explain.add_argument("--policy", default=None, help="policy name or file (default: as the function would get)")
    explain.set_defaults(handler=explain_command)
    parser.set_defaults(handler=lambda args: (parser.print_help(sys.stderr), 2)[1])


def check_command(args) -> int:
    from poet_runtime.errors import PoetConfigError
    from poet_runtime.policy import PolicyError, load_policy

    failed = False
    for name in args.files:
        try:
            policy = load_policy(name)
        except PolicyError as error:
            failed = True
            for line in error.errors:
                print(line)
            continue
        except PoetConfigError as error:
            failed = True
            print(error)
            continue
        print(f"{policy.name}: ok ({len(policy.model.rule)} rule(s))")
    return 1 if failed else 0


def explain_command(args) -> int:
    from poet_runtime.errors import PoetConfigError
    from poet_runtime.policy import load_policy, policy_name_for

    if ":" not in args.function:
        print(f"{args.function!r}: expected MODULE:QUALNAME (e.g. app.billing:total)", file=sys.stderr)
        return 2
    unknown = unknown_function(args.function)
    if unknown:
        print(f"policy explain: {unknown}", file=sys.stderr)
        return 2
    from types import SimpleNamespace

    from poet_runtime.resolve import effective_policy, weaker_fields

    try:
        policy = load_policy(policy_name_for(args.policy))
        named = policy.effective_for(args.function)
        # What the runtime applies: a repository's [tool.poet] policy may only tighten.
        effective = effective_policy(SimpleNamespace(policy=args.policy), args.function)
    except PoetConfigError as error:
        print(error)
        return 1
    refused = weaker_fields(named, effective)
    if refused:
        print(f"note: the [tool.poet] policy {policy_name_for(None)!r} weakens the default policy "
              f"({', '.join(refused)}); a repository's settings may only tighten it, so the default "
              "policy applies (POET_POLICY, --policy or POET_ALLOW_REPO_POLICY=1 choose freely)")
    limits = effective.limits
    rows = [
        ("backend", effective.backend),
        ("on_violation", effective.on_violation),
        ("wall_ms", limits.wall_ms),
        ("cpu_ms", limits.cpu_ms),
        ("memory_mb", limits.memory_mb),
        ("max_output_kb", limits.max_output_kb),
        ("imports", ", ".join(limits.imports) or "(none)"),
        ("builtins", ", ".join(limits.builtins) or "(none extra)"),
        ("record_inputs", str(effective.record_inputs).lower()),
        ("trust", ", ".join(effective.trust) or "(none)"),
    ]
    print(f"{args.function} under {'default' if refused else policy.name}:")
    rows = [(name, "not stated" if value is None else str(value)) for name, value in rows]
    width = max(len(name) for name, _ in rows)
    value_width = min(40, max(len(value) for _, value in rows))
    for name, value in rows:
        print(f"  {name:<{width}}  {value:<{value_width}}  <- {effective.sources.get(name, 'built-in')}")
    if limits.max_output_kb is not None:
        from poet_runtime.policy_schema import MAX_OUTPUT_MEANING

        meaning = MAX_OUTPUT_MEANING.get(effective.backend)
        if meaning:
            print(f"  max_output_kb counts {meaning}")
    if effective.backend == "restricted":
        where = "worker process (OS limits)" if effective.uses_workers else "in-process (no wall/cpu/memory limits)"
        print(f"  sandboxed code runs: {where}; poet_sandbox is always importable")
    print(f"  trust: {trust_meaning(effective)}")
    if effective.backend == "restricted" and effective.uses_workers:
        from poet_runtime.backends import os_sandbox

        required = effective.os_layers
        print(f"  os layers of the worker (required: {', '.join(required) or 'none'}; "
              f"<- {effective.sources.get('os_layers', 'not stated')}), on this machine:")
        for row in os_sandbox.describe_rows(os_sandbox.probe(namespaces=True), required):
            print(f"    {row}")
    elif effective.backend != "none":
        print("  os layers: none (the WASM guest runs inside the host process; wasmtime is its isolation)"
              if effective.backend == "wasm" else "  os layers: none (in-process)")
    return 0


def _defined_qualnames(tree) -> set[str]:
    """Every function and class qualname a module's source defines (``C.m``, ``f.<locals>.g``)."""
    import ast

    names: set[str] = set()

    def walk(body, prefix: str) -> None:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = prefix + node.name
                names.add(name)
                inner = name + (".<locals>." if not isinstance(node, ast.ClassDef) else ".")
                walk(node.body, inner)
            elif isinstance(node, (ast.If, ast.Try, ast.With, ast.AsyncWith, ast.For, ast.While)):
                for field in ("body", "orelse", "finalbody", "handlers"):
                    walk(getattr(node, field, []) or [], prefix)
            elif isinstance(node, ast.ExceptHandler):
                walk(node.body, prefix)

    walk(tree.body, "")
    return names


def _listing(names, limit: int = 12) -> str:
    names = sorted(names)
    if not names:
        return "none"
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def unknown_function(target: str) -> str | None:
    """None when ``MODULE:QUALNAME`` names a function that exists; else the error, naming the known ones.

    Found statically, as ``status`` does: nothing of the user's is imported or run.
    """
    import ast
    import os

    from poet_runtime.hook.discover import discover, resolve_target, scan_file

    try:
        module, qualname, file = resolve_target(target)
    except ValueError as error:
        return str(error)
    if not file or not os.path.isfile(file):
        found, _ = discover(["."])
        return (f"{target!r}: no module {module!r} here; known @poet functions under "
                f"{os.getcwd()}: {_listing(item.function_id for item in found)}")
    try:
        with open(file, "rb") as handle:
            tree = ast.parse(handle.read(), file)
    except (OSError, SyntaxError, ValueError) as error:
        return f"{target!r}: cannot read {file}: {error}"
    if qualname in _defined_qualnames(tree):
        return None
    found, _ = scan_file(file)
    return (f"{target!r}: {module} ({file}) defines no {qualname!r}; its @poet functions: "
            f"{_listing(item.qualname for item in found)}")


def trust_meaning(effective) -> str:
    """One line: which versions of this function run in-process, which in the backend."""
    if effective.backend == "none":
        return ("backend none runs every version in-process, verified or not: this policy trusts "
                "everything in effect, whatever trust says")
    if effective.backend == "restricted":
        where = "restricted (a worker process)" if effective.uses_workers else "restricted (RestrictedPython, in-process)"
    elif effective.backend == "wasm":
        where = "wasm (the WASM guest; each call crosses back to the host for the function's own logic)"
    else:
        where = effective.backend
    if "builtin" in effective.trust:
        return f"built-in versions verified by regeneration run in-process; anything else runs in {where}"
    return f"no generator is trusted: every version, even a verified built-in one, runs in {where}"


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m poet_runtime.commands.policy")
    register(parser.add_subparsers(title="commands", metavar="COMMAND"))
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] != ["policy"] and argv[:1] != ["-h"] and argv[:1] != ["--help"]:
        argv.insert(0, "policy")  # `... commands.policy check FILE` as well as `... policy check FILE`
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    return int(handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
