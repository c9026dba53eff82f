"""``sandbox``: commands about the sandboxes: ``sandbox warmup``, ``sandbox status``.

``python -m poet_runtime sandbox status`` prints which operating-system layers the
restricted worker gets on this machine (what the probe finds, and what a worker
started now really applied) and whether the compiled WASM interpreter is cached.

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
    status = actions.add_parser(
        "status",
        help="which OS layers the restricted worker gets here; is the WASM sandbox compiled",
        description="Print the operating-system layers of the restricted worker on this machine "
        "(probed, and applied by a worker started now) and the state of the WASM cache.",
    )
    status.set_defaults(handler=status_command)
    parser.set_defaults(handler=_usage(parser))


def _usage(parser):
    def handler(args) -> int:
        parser.print_help(sys.stderr)
        return 2

    return handler


PROGRESS_EVERY_S = 15.0  # a compile can take many minutes on a loaded machine: say it is alive


def run(args) -> int:
    """``sandbox warmup``: 0 when the compiled module is ready, 1 when it cannot be.

    The compile is one native call with no progress of its own, so a ticker says how
    long it has been running (every 15 s, on stderr) until it returns."""
    import threading

    started = time.monotonic()
    done = threading.Event()

    def tick() -> None:
        while not done.wait(PROGRESS_EVERY_S):
            print(f"poet: still compiling the WASM sandbox: {time.monotonic() - started:.0f} s so far "
                  "(a loaded machine can take many minutes; calls run the original meanwhile)",
                  file=sys.stderr, flush=True)

    ticker = threading.Thread(target=tick, name="poet-warmup-progress", daemon=True)
    ticker.start()
    try:
        from poet_runtime.backends.wasm import warmup

        path = warmup()
    except (ImportError, RuntimeError, OSError) as error:
        print(f"poet: sandbox warmup failed after {time.monotonic() - started:.1f} s: {error}", file=sys.stderr)
        return 1
    finally:
        done.set()
    print(f"WASM sandbox ready in {time.monotonic() - started:.1f} s: {path}")
    return 0


def status_command(args) -> int:
    """``sandbox status``: 0 when a worker started and applied every layer the probe found."""
    from poet_runtime.backends import os_sandbox

    probed = os_sandbox.probe(namespaces=True)
    try:
        applied = os_sandbox.live_worker_layers()
        worker_error = None
    except Exception as error:  # noqa: BLE001 - reported
        applied, worker_error = {}, f"{type(error).__name__}: {error}"
    print("restricted worker, operating-system layers:")
    for row in os_sandbox.describe_rows(applied if worker_error is None else probed):
        print(f"  {row}")
    if worker_error:
        print(f"  (no worker could start: {worker_error}; the rows above are the probe's)")
    lost = [name for name in os_sandbox.LAYERS if probed.get(name) and not applied.get(name)]
    if lost and worker_error is None:
        print(f"  the probe found but the worker could not apply: {', '.join(lost)}")
    try:
        from poet_runtime.backends import wasm_engine

        print(f"wasm: {wasm_engine.cache_state()}")
    except Exception as error:  # noqa: BLE001 - wasmtime missing, no cache folder
        print(f"wasm: unavailable ({type(error).__name__}: {error})")
    return 0 if worker_error is None and not lost else 1
