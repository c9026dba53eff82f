"""``enhance PATH...``: generate and store enhancements ahead of time, without running the program.

Why: a deployment can ship a reviewed ``.poet/`` store and start with every function
ready, with no generation on the first call. Functions are found statically
(``poet_runtime.hook.discover``); each goes through ``spec_from_source`` and
``resolve.ensure_version``, the same path the runtime takes on a first call.
"""

from __future__ import annotations

import sys


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "enhance",
        help="generate enhancements ahead of time for every @poet function in files or packages",
        description="Find every @poet function in the given files, folders or packages (without importing "
        "them), and generate, check and store its enhancement. Exit status 1 when any failed.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="a .py file, a folder, or a dotted package/module name")
    parser.add_argument("--model", help="litellm model string for generation [POET_MODEL]; unset = built-in generator")
    parser.set_defaults(handler=run)


def _one(found, store_cls, spec_from_source, ensure_version, config_cls) -> tuple[str, str, str]:
    """(version, generator, status) for one function; raises on failure."""
    if found.skipped:
        return "-", "-", "skipped: non-literal " + ", ".join(found.skipped)
    config = config_cls.from_kwargs(found.function_id, **found.kwargs)
    spec = spec_from_source(found.module, found.qualname, found.module_source, found.file)
    before = store_cls.open(found.module, found.qualname, found.file).current_number()
    version = ensure_version(spec, config, module_file=found.file)
    status = "up to date" if version.number == before else "generated"
    return version.name, str(version.metadata.get("generator", "?")), status


def run(args) -> int:
    from poet_runtime import settings
    from poet_runtime.errors import PoetConfigError
    from poet_runtime.hook.discover import discover

    from poet_runtime.commands import _render

    try:
        if args.model:
            settings.override(model=args.model)
        else:
            settings.get_settings()
    except PoetConfigError as error:
        _render.error(str(error))
        return 2
    found, problems = discover(args.paths)
    from poet_runtime.decorator import PoetConfig
    from poet_runtime.generate.spec import spec_from_source
    from poet_runtime.resolve import ensure_version
    from poet_runtime.store import FunctionStore

    rows, failed = [], 0
    for problem in problems:
        rows.append([problem.file, "-", "-", f"failed: {problem.message}"])
        failed += 1
    progress = _progress(len(found))
    with progress as bar:
        task = bar.add_task("enhancing", total=len(found)) if bar else None
        for item in found:
            if bar:
                bar.update(task, description=item.function_id)
            try:
                version, generator, status = _one(item, FunctionStore, spec_from_source, ensure_version, PoetConfig)
            except Exception as error:  # one function's failure must not stop the others
                version, generator, status = "-", "-", f"failed: {type(error).__name__}: {error}"
                failed += 1
            rows.append([item.function_id, version, generator, status])
            if bar:
                bar.advance(task)
    if not found and not problems:
        print("poet: no @poet functions found in " + " ".join(args.paths), file=sys.stderr)
    _render.table("poet enhance", ["function", "version", "generator", "status"], rows)
    return 1 if failed else 0


def _progress(total: int):
    import contextlib

    try:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    except ImportError:
        return contextlib.nullcontext(None)
    if total == 0:
        return contextlib.nullcontext(None)
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), transient=True)
