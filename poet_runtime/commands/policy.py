"""``policy``: check policy files and explain what a function gets from one.

``policy check FILE...`` validates each file (schema, unknown fields, honesty)
and prints every problem as ``file:line: field: message``; exit 1 when any file
is invalid. ``policy explain MODULE:QUALNAME [--policy P]`` prints the effective
settings for that function and which table of the policy gave each one, and
what ``trust`` means for it (which versions run in-process, which in the
backend); the policy defaults to what the function would get with no
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
    try:
        policy = load_policy(policy_name_for(args.policy))
        effective = policy.effective_for(args.function)
    except PoetConfigError as error:
        print(error)
        return 1
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
    print(f"{args.function} under {policy.name}:")
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
    return 0


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
