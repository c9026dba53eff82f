"""Not asking a model again, for the same function and key, until a back-off has passed.

A model that could not be reached, or whose answers were all refused, gives the same
outcome to the next process that asks within minutes; asking anyway costs the model
time (a local server is busy for minutes per answer) and, before this, added a version
per process. The record lives beside the function's versions
(``<store>/<function>/llm_backoff.json``: key -> until, reason, model), written atomically;
``POET_LLM_BACKOFF`` sets the time (0: always ask).
"""

from __future__ import annotations

import json
import time

FILENAME = "llm_backoff.json"


def _path(spec):
    from poet_runtime.store import FunctionStore

    return FunctionStore.open(spec.module, spec.qualname, spec.filename).folder / FILENAME


def _read(path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def active(spec, key: str, model: str) -> dict | None:
    """The back-off record in force for ``key`` and ``model``, or None."""
    record = _read(_path(spec)).get(key)
    if not isinstance(record, dict) or record.get("model") != model:
        return None
    until = record.get("until")
    return record if isinstance(until, (int, float)) and until > time.time() else None


def record(spec, key: str, model: str, reason: str, detail: str, seconds: float) -> None:
    if seconds <= 0:
        return
    from poet_runtime.store import atomic_write

    path = _path(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    now = time.time()
    data = {k: v for k, v in _read(path).items() if isinstance(v, dict) and (v.get("until") or 0) > now}
    data[key] = {"until": now + seconds, "reason": reason, "detail": detail[:300], "model": model,
                 "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))}
    try:
        atomic_write(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
    except OSError:
        pass  # a back-off that cannot be written only means asking again


def clear(spec, key: str) -> None:
    path = _path(spec)
    data = _read(path)
    if key in data:
        from poet_runtime.store import atomic_write

        data.pop(key)
        try:
            atomic_write(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
        except OSError:
            pass
