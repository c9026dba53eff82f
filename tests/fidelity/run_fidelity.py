"""Run every fidelity case and write one JSON document of observations.

    python tests/fidelity/run_fidelity.py --out plain.json                       # the baseline (runtime off)
    python -m poet_runtime --policy strict tests/fidelity/run_fidelity.py --out strict.json

Every ``cases_*.py`` beside this file is imported (a new file is picked up without
changing anything else), then every registered case runs in registration order.
The observations go to a file as JSON lines (one per event, flushed), not to stdout: what the cases print is part of what is
observed, and a sandbox writing to this process's real stdout must not corrupt it; a run
that crashes still tells how far it got (``tests/test_fidelity.py`` reads the lines).
"""

from __future__ import annotations

import argparse
import faulthandler
import importlib
import json
import os
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
CASE_LIMIT_S = 60  # a case still running after this is stuck: dump every thread's stack and exit
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import fidelity_kit  # noqa: E402


def case_modules() -> list[str]:
    return sorted(name[:-3] for name in os.listdir(HERE) if name.startswith("cases_") and name.endswith(".py"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="where to write the observations (JSON lines)")
    parser.add_argument("--only", action="append", help="run only this case (repeatable)")
    parser.add_argument("--shard", default="0/1", metavar="K/N",
                        help="import and run only the case modules K, K+N, K+2N, ... (sorted by name)")
    options = parser.parse_args(argv)
    started = time.perf_counter()
    with open(options.out, "w", encoding="utf-8") as out:

        def emit(kind: str, **fields) -> None:
            # One line per event, flushed: a run that crashes still says how far it got and where it died.
            out.write(json.dumps({"kind": kind, **fields}, sort_keys=True) + "\n")
            out.flush()

        shard, shards = (int(part) for part in options.shard.split("/"))
        modules = {}
        for name in case_modules()[shard::shards]:
            before = len(fidelity_kit.CASES)
            began = time.perf_counter()
            try:
                importlib.import_module(name)
                modules[name] = {"error": None}
            except BaseException:  # noqa: BLE001 - reported, and the test fails on it
                modules[name] = {"error": traceback.format_exc(limit=8)}
            modules[name]["cases"] = len(fidelity_kit.CASES) - before
            modules[name]["import_ms"] = round((time.perf_counter() - began) * 1000, 3)
        poet = sys.modules.get("poet_runtime")
        emit("header", enabled=bool(poet and poet.is_enabled()), policy=os.environ.get("POET_POLICY"),
             python=sys.version, modules=modules, shard=options.shard)
        for entry in fidelity_kit.CASES:
            if options.only and entry.name not in options.only:
                continue
            emit("start", case=entry.name)
            faulthandler.dump_traceback_later(CASE_LIMIT_S, exit=True)
            observation = fidelity_kit.observe(entry)
            faulthandler.cancel_dump_traceback_later()
            emit("observation", observation=observation)
        emit("end", wall_s=round(time.perf_counter() - started, 3))
    return 0


if __name__ == "__main__":
    sys.exit(main())
