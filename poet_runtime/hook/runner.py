"""Run a script or a module as ``__main__``, exactly as ``python app.py`` / ``python -m mod`` would.

Why not ``runpy``: a meta-path hook never sees ``__main__``, and ``runpy`` compiles the
script itself. So the runner builds the ``__main__`` module the way the interpreter
does (``sys.argv``, ``sys.path[0]``, ``__file__``, ``__spec__``, ``__loader__``,
``__package__``, ``__cached__``, ``__annotations__``), compiles the script through the
same rewrite as imported modules, and executes it in that module.

Exit behaviour is the interpreter's own: ``SystemExit`` passes through untouched, and
any other exception is re-raised so that Python prints it, runs ``atexit`` and exits
with 1 (or dies by SIGINT for ``KeyboardInterrupt``). Only the traceback handed to
``sys.excepthook`` is trimmed of our frames, so the user sees the traceback they
would have seen without us, even with their own excepthook installed.
"""

from __future__ import annotations

import builtins
import os
import sys
import types
from importlib.machinery import SourceFileLoader

from poet_runtime.hook.paths import module_name_for_path
from poet_runtime.hook.transform import compile_module

_OUR_FOLDER = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # poet_runtime/
_previous_main = []  # keep our own __main__ module alive once replaced


class UsageError(Exception):
    """The program could not be started; the message is what python itself would print."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def _is_ours(frame) -> bool:
    filename = frame.f_code.co_filename
    return (
        filename.startswith(_OUR_FOLDER + os.sep)
        or filename.startswith("<frozen runpy")
        or filename.startswith("<frozen importlib")
    )


def trim_traceback(tb):
    """Drop the leading traceback entries that belong to the runner, runpy or importlib."""
    while tb is not None and _is_ours(tb.tb_frame):
        tb = tb.tb_next
    return tb


def _install_trimming_hook(error: BaseException) -> None:
    # Whatever excepthook is current (the user's, or Python's) prints the trimmed traceback.
    current = sys.excepthook

    def excepthook(kind, value, tb):
        if value is error:
            # The default hook prints value.__traceback__, not its argument: trim both.
            tb = trim_traceback(tb)
            value.__traceback__ = tb
            sys.excepthook = current
        current(kind, value, tb)

    sys.excepthook = excepthook


def _new_main(**attributes) -> types.ModuleType:
    main = types.ModuleType("__main__")
    main.__dict__.update(__builtins__=builtins, __annotations__={}, __cached__=None)
    main.__dict__.update(attributes)
    _previous_main.append(sys.modules.get("__main__"))
    sys.modules["__main__"] = main
    return main


def _execute(code, main) -> None:
    try:
        exec(code, main.__dict__)
    except SystemExit:
        raise
    except BaseException as error:
        _install_trimming_hook(error)
        raise


def run_path(script: str, args: list[str]) -> None:
    """``python script args...``; raises SystemExit / the program's exception like python."""
    path = os.path.abspath(script)
    if os.path.isdir(script) or (not script.endswith(".py") and os.path.isfile(script) and _is_zip(script)):
        # A folder or zip with __main__.py: python puts it first on sys.path and runs __main__.
        if not sys.flags.safe_path:
            _set_path0(os.path.realpath(script))
        sys.argv[:] = [script, *args]
        return run_module("__main__", args, argv0=script)
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise UsageError(
            f"{sys.executable}: can't open file {path!r}: [Errno {error.errno}] {error.strerror}", 2
        ) from None
    sys.argv[:] = [script, *args]
    if not sys.flags.safe_path:
        _set_path0(os.path.dirname(os.path.realpath(path)))
    identity = module_name_for_path(path)
    try:
        code = compile_module(data, path, identity, remember=True)  # remembers the script's text as compiled
    except (SyntaxError, ValueError) as error:  # python prints these without any traceback lines
        _install_trimming_hook(error)
        raise
    main = _new_main(__file__=path, __loader__=SourceFileLoader("__main__", path), __spec__=None, __package__=None)
    _execute(code, main)


def _is_zip(path: str) -> bool:
    import zipfile

    try:
        return zipfile.is_zipfile(path)
    except OSError:
        return False


def _set_path0(folder: str) -> None:
    # `python -m poet_runtime` put the current directory first; the script's folder replaces it.
    if sys.path and sys.path[0] in ("", os.getcwd()):
        sys.path[0] = folder
    else:
        sys.path.insert(0, folder)


def run_module(name: str, args: list[str], argv0: str | None = None) -> None:
    """``python -m name args...``; the module is found (and its parents imported) as python does."""
    sys.argv[:] = ["-m", *args]
    spec = _module_spec(name)
    if spec.submodule_search_locations is not None:  # a package: run its __main__
        spec = _module_spec(name + ".__main__", package=name)
    loader = spec.loader
    try:
        code = loader.get_code(spec.name)
    except ImportError as error:
        raise UsageError(f"{sys.executable}: {error}", 1) from None
    if code is None:
        raise UsageError(f"{sys.executable}: No code object available for {spec.name}", 1)
    sys.argv[0] = argv0 if argv0 is not None else (spec.origin or "-m")
    main = _new_main(
        __file__=spec.origin if spec.has_location else None,
        __cached__=spec.cached if spec.has_location else None,
        __loader__=loader,
        __spec__=spec,
        __package__=spec.parent,
    )
    if not spec.has_location:
        del main.__file__
    _execute(code, main)


def _module_spec(name: str, package: str | None = None):
    import importlib.util

    # Like runpy: while looking up a module named __main__ (a folder or zip being run), our
    # own __main__ must not answer for it.
    hidden = sys.modules.pop("__main__", None) if name == "__main__" else None
    try:
        spec = importlib.util.find_spec(name)
    except ImportError as error:
        if package is not None:
            raise UsageError(
                f"{sys.executable}: No module named {name}; '{package}' is a package and cannot be directly executed",
                1,
            ) from None
        raise UsageError(
            f"{sys.executable}: Error while finding module specification for {name!r} "
            f"({type(error).__name__}: {error})",
            1,
        ) from None
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as error:  # a parent package raised while being imported: show it as python would
        _install_trimming_hook(error)
        raise
    finally:
        if hidden is not None:
            sys.modules["__main__"] = hidden
    if spec is None or spec.loader is None and spec.submodule_search_locations is None:
        if package is not None:
            raise UsageError(
                f"{sys.executable}: No module named {name}; '{package}' is a package and cannot be directly executed",
                1,
            )
        raise UsageError(f"{sys.executable}: No module named {name}", 1)
    return spec
