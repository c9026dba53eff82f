"""The ``python -m poet_runtime`` / ``poet`` command line: ``run`` by default, subcommands discovered.

``main(argv) -> int``. When the first argument is not a subcommand name, the whole
command line is a ``run`` (``[options] script.py args`` or ``[options] -m module args``),
and nothing else is imported, so the program starts as fast as possible.
Subcommands are the modules of ``poet_runtime.commands`` (see its docstring for the
``register(subparsers)`` convention); ``--help`` imports only those, never rich.
"""

from __future__ import annotations

import os
import sys

DESCRIPTION = (
    "Run a Python program with POET on, or manage the enhancements of its @poet functions.\n\n"
    "  python -m poet_runtime [run options] script.py [args...]\n"
    "  python -m poet_runtime [run options] -m package.module [args...]\n"
    "  python -m poet_runtime COMMAND ...\n\n"
    "The program behaves exactly as with `python script.py` / `python -m module`; every @poet function\n"
    "in the script and in the modules under its folder is enhanced. The run options are exported as\n"
    "environment variables (in brackets below) so child processes run the same way; POET_ENABLED=1 alone\n"
    "turns POET on in any Python process of this environment."
)


def _prog() -> str:
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "python -m poet_runtime" if name in ("__main__.py", "-m", "", "-c") else name


def _command_modules():
    import importlib
    import pkgutil

    from poet_runtime import commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda item: item.name):
        if info.name.startswith("_"):
            continue
        try:
            module = importlib.import_module(f"poet_runtime.commands.{info.name}")
        except Exception as error:  # one broken command must not take the others down
            print(f"poet: command module {info.name!r} failed to load: {type(error).__name__}: {error}", file=sys.stderr)
            continue
        if hasattr(module, "register"):
            yield info.name, module


def build_parser(prog: str | None = None):
    import argparse

    from poet_runtime.commands.run import add_options

    parser = argparse.ArgumentParser(
        prog=prog or _prog(), description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_options(parser)
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name, module in _command_modules():
        try:
            module.register(subparsers)
        except Exception as error:
            print(f"poet: command module {name!r} failed to register: {type(error).__name__}: {error}", file=sys.stderr)
    return parser, subparsers


def _command_names() -> set[str]:
    import pkgutil

    from poet_runtime import commands

    names = {info.name for info in pkgutil.iter_modules(commands.__path__) if not info.name.startswith("_")}
    return names


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = _prog()
    if not argv or argv[0] in ("-h", "--help"):
        parser, _ = build_parser(prog)
        parser.print_help(sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] == "--version":
        import poet_runtime

        print(f"poet_runtime {getattr(poet_runtime, '__version__', 'unknown')}")
        return 0
    if argv[0] == "run":
        from poet_runtime.commands.run import main as run

        return run(argv[1:], prog=f"{prog} run")
    first = argv[0]
    # Options, a .py file or a path: a run, decided without listing the commands (start-up time).
    looks_like_program = first.endswith(".py") or os.sep in first or os.path.exists(first)
    if first.startswith("-") or (looks_like_program and first not in _command_names()):
        from poet_runtime.commands.run import main as run

        return run(argv, prog=prog)
    parser, subparsers = build_parser(prog)
    if first not in subparsers.choices:  # not a command either: let run report the missing file
        from poet_runtime.commands.run import main as run

        return run(argv, prog=prog)
    args = parser.parse_args(argv)
    args.raw_argv = argv[1:]
    handler = getattr(args, "handler", None) or getattr(args, "func", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    from poet_runtime import settings
    from poet_runtime.errors import PoetConfigError
    from poet_runtime.store import DamagedFile

    try:
        settings.load_settings()  # a bad POET_* variable or [tool.poet] key: say which, exit 2
        return int(handler(args) or 0)
    except PoetConfigError as error:
        print(f"poet_runtime: error: {error}", file=sys.stderr)
        return 2
    except DamagedFile as error:  # a store file no command may use as it is: name it, never echo it
        from poet_runtime.safe_text import visible

        print(f"poet_runtime: error: {visible(str(error), allow_newlines=False)}", file=sys.stderr)
        return 1
