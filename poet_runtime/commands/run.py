"""``run``: the default command, ``python -m poet_runtime [options] (script.py | -m module) [args...]``.

Why the options are parsed by hand up to the target: everything after the script or
``-m module`` belongs to the program (``--verbose`` there is the program's, not ours),
which argparse cannot express. Each option is also exported as its environment
variable so that child processes (subprocess, multiprocessing) run the same way, and
``POET_ENABLED=1`` is exported so that their ``.pth`` activation turns the hook on.
"""

from __future__ import annotations

import os
import sys

USAGE = "%(prog)s [options] (script.py | -m module) [args...]"
# option -> (environment variable, metavar, help)
VALUE_OPTIONS = {
    "--policy": ("POET_POLICY", "FILE", "policy file, or a shipped policy name (default, strict, trusted)"),
    "--model": ("POET_MODEL", "MODEL", "litellm model string for generation; unset = built-in generator"),
    "--generate": ("POET_GENERATE", "MODE", "sync | background | off: when missing enhancements are generated"),
    "--include": ("POET_INCLUDE", "GLOBS", "comma-separated module globs to rewrite (replaces the default: the script's folder)"),
    "--exclude": ("POET_EXCLUDE", "GLOBS", "comma-separated module globs never to rewrite"),
}
_SETTING = {"--policy": "policy", "--model": "model", "--generate": "generate", "--include": "include", "--exclude": "exclude"}


def add_options(parser) -> None:
    group = parser.add_argument_group("run options (before the script or -m)")
    for option, (variable, metavar, text) in VALUE_OPTIONS.items():
        group.add_argument(option, metavar=metavar, help=f"{text} [{variable}]")
    group.add_argument("--quiet", "-q", action="store_true", help="no exit summary, errors only [POET_LOG=quiet]")
    group.add_argument("--verbose", "-v", action="count", default=0, help="log what POET does; twice for debug [POET_LOG=info|debug]")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "run",
        usage=USAGE.replace("%(prog)s", "%(prog)s"),
        help="run a script or module with POET on (the default command)",
        description="Run a program exactly as `python script.py args` / `python -m module args` would, "
        "with every @poet function in the script and in the modules of its folder enhanced.",
    )
    add_options(parser)
    parser.add_argument("target", nargs="?", metavar="script.py | -m module", help="the program to run")
    parser.add_argument("args", nargs="*", help="its arguments, passed through untouched")
    parser.set_defaults(handler=lambda args: main(args.raw_argv))


def split(argv: list[str]):
    """(our options, ("script"|"module", target), program args); target None when missing."""
    index = 0
    while index < len(argv):
        item = argv[index]
        if item == "--":  # everything after it is the program, even if it starts with "-"
            rest = argv[index + 1 :]
            return argv[:index], ("script", rest[0] if rest else None), rest[1:]
        if item == "-m":
            if index + 1 >= len(argv):
                return argv[:index], ("module", None), []
            return argv[:index], ("module", argv[index + 1]), argv[index + 2 :]
        if item.startswith("-m") and not item.startswith("--"):
            return argv[:index], ("module", item[2:]), argv[index + 1 :]
        if item in VALUE_OPTIONS:
            index += 2
            continue
        if item.startswith("-") and item != "-":
            index += 1
            continue
        return argv[:index], ("script", item), argv[index + 1 :]
    return argv, ("script", None), []


def _parse_options(options: list[str], prog: str):
    import argparse

    parser = argparse.ArgumentParser(
        prog=prog, usage=USAGE, add_help=True,
        description="Run a program exactly as `python script.py args` / `python -m module args` would, with "
        "every @poet function in the script and in the modules under its folder enhanced. Options go before "
        "the script or -m; everything after belongs to the program. At exit (unless --quiet) a summary of "
        "calls and fallbacks is printed on stderr.",
    )
    add_options(parser)
    return parser, parser.parse_args(options)


def apply_options(parsed) -> dict:
    """Export each option as its environment variable; return the settings to override."""
    changes: dict = {"enabled": True}
    os.environ["POET_ENABLED"] = "1"
    for option, (variable, _, _) in VALUE_OPTIONS.items():
        value = getattr(parsed, option[2:])
        if value is not None:
            os.environ[variable] = value
            changes[_SETTING[option]] = value
    if parsed.quiet:
        os.environ["POET_LOG"] = "quiet"
        changes["log"] = "quiet"
    elif parsed.verbose:
        os.environ["POET_LOG"] = "info" if parsed.verbose == 1 else "debug"
        changes["log"] = os.environ["POET_LOG"]
    return changes


def _configure_logging(level_name: str) -> None:
    import logging

    logger = logging.getLogger("poet_runtime")
    if logger.handlers:
        return  # the core (or the user) already decided where our log goes
    level = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
             "error": logging.ERROR, "quiet": logging.CRITICAL + 1}.get(level_name, logging.WARNING)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def _enable(root: str) -> None:
    import poet_runtime
    from poet_runtime import hook

    enable = getattr(poet_runtime, "enable", None)
    if enable is not None:
        enable()  # also installs the hook (CONTRACTS.md)
    hook.install(roots=[root])


def main(argv: list[str], prog: str = "python -m poet_runtime") -> int:
    """Run the program described by ``argv``; returns an exit code only when it could not start."""
    options, (kind, target), program_args = split(argv)
    parser, parsed = _parse_options(options, prog)
    if target is None:
        parser.error("missing the program: a script path or -m module")
    from poet_runtime import settings
    from poet_runtime.errors import PoetConfigError

    changes = apply_options(parsed)
    try:
        settings.reset()
        settings.load_settings()  # validates every variable, naming the bad one
        current = settings.override(**{k: v for k, v in changes.items() if k in ("enabled", "log")})
    except PoetConfigError as error:
        print(f"poet_runtime: error: {error}", file=sys.stderr)
        return 2
    _configure_logging(current.log)
    root = os.path.dirname(os.path.realpath(target)) if kind == "script" and not os.path.isdir(target) else (
        os.path.realpath(target) if kind == "script" else os.getcwd()
    )
    _enable(root)
    if current.log != "quiet":
        import atexit

        from poet_runtime.hook.summary import print_summary

        atexit.register(print_summary)  # registered first, so it runs after the program's own handlers
    from poet_runtime.hook import runner

    try:
        if kind == "script":
            runner.run_path(target, program_args)
        else:
            runner.run_module(target, program_args)
    except runner.UsageError as error:
        if current.log != "quiet":
            import atexit

            from poet_runtime.hook.summary import print_summary

            atexit.unregister(print_summary)  # the program never started: nothing to sum up
        print(error, file=sys.stderr)
        return error.code
    return 0
