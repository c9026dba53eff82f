"""``sandbox``: commands about the sandboxes; today ``sandbox warmup``.

``python -m poet_runtime sandbox warmup`` compiles the CPython-on-WASI module for
this machine and caches it, so that the first call under the ``wasm`` backend does
not pay the one-time 1-2 minute compile (CI images and deploys run it once).
wasmtime is imported only when the command runs.
"""

from __future__ import annotations

import sys
import time


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "sandbox",
        help="manage the sandboxes (sandbox warmup)",
        description="Manage the sandboxes generated code runs in.",
    )
    actions = parser.add_subparsers(title="actions", metavar="ACTION", dest="sandbox_action")
    warm = actions.add_parser(
        "warmup",
        help="compile and cache the WASM sandbox now (one-time, 1-2 minutes, ~2 GB of memory)",
        description="Compile the CPython-on-WASI module for this machine and cache it on disk "
        "($POET_CACHE_DIR, else $XDG_CACHE_HOME/poet_runtime or ~/.cache/poet_runtime).",
    )
    warm.set_defaults(handler=run)
    parser.set_defaults(handler=_usage(parser))


def _usage(parser):
    def handler(args) -> int:
        parser.print_help(sys.stderr)
        return 2

    return handler


def run(args) -> int:
    """``sandbox warmup``: 0 when the compiled module is ready, 1 when it cannot be."""
    started = time.monotonic()
    try:
        from poet_runtime.backends.wasm import warmup

        path = warmup()
    except (ImportError, RuntimeError, OSError) as error:
        print(f"poet: sandbox warmup failed: {error}", file=sys.stderr)
        return 1
    print(f"WASM sandbox ready in {time.monotonic() - started:.1f} s: {path}")
    return 0
