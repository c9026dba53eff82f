"""The store as the API serves it: functions, their versions, and the rollback.

A function is a folder of the store root holding version folders; its id (``module:qualname``)
is the one its versions' metadata name, and is believed only when the folder's name is what the
store would call that id (``store.folder_name``): a folder cannot claim to be another function.
Everything read here goes through ``FunctionStore`` (the same checks as the runtime and the
``versions``/``rollback`` commands), and rollback is ``FunctionStore.rollback``, nothing else.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from poet_runtime.service.problems import Problem

logger = logging.getLogger("poet_runtime")


def _function_id(folder: Path) -> str | None:
    from poet_runtime.store import FunctionStore, folder_name, read_json

    probe = FunctionStore(folder, "?")
    for number in reversed(probe._numbers()):
        try:
            found = read_json(folder / f"v{number}" / "metadata.json").get("function")
        except (OSError, ValueError):
            continue
        if isinstance(found, str) and ":" in found:
            module, _, qualname = found.partition(":")
            if folder_name(module, qualname) == folder.name:
                return found
            logger.warning("poet service: %s: its versions name %r, which is not this folder's function; "
                           "not served", folder, found)
            return None
    return None


def list_stores(store_root: Path) -> list:
    """A ``FunctionStore`` for every function folder under ``store_root``, by id."""
    from poet_runtime.store import FunctionStore

    stores = []
    try:
        entries = sorted(os.scandir(store_root), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return []
    for entry in entries:
        if entry.name.startswith(".") or entry.name == "events" or not entry.is_dir(follow_symlinks=False):
            continue
        function_id = _function_id(Path(entry.path))
        if function_id is not None:
            stores.append(FunctionStore(Path(entry.path), function_id))
    return stores


def open_function(store_root: Path, function_id: str):
    """The store of ``function_id`` (404 problem when the store has no such function)."""
    from poet_runtime.store import FunctionStore, folder_name

    module, sep, qualname = function_id.partition(":")
    if not sep or not module or not qualname:
        raise Problem(422, "bad-function-id", f"function id {function_id!r}: expected MODULE:QUALNAME "
                      "(e.g. app:fetch, pkg.mod:Model.predict)", field="function_id")
    name = folder_name(module, qualname)
    if name.startswith(".") or "/" in name or "\x00" in name or name == "events":
        raise Problem(422, "bad-function-id", f"function id {function_id!r} is not one the store can hold",
                      field="function_id")
    folder = Path(store_root) / name
    if not folder.is_dir() or _function_id(folder) != function_id:
        raise Problem(404, "unknown-function", f"the store {store_root} has no versions of {function_id}")
    return FunctionStore(folder, function_id)


def _counts(fields) -> dict:
    if not isinstance(fields, dict):
        return {}
    return {str(k): v for k, v in fields.items() if isinstance(v, int) and not isinstance(v, bool)}


def summary(store) -> dict:
    """One function as ``GET /api/v1/functions`` lists it."""
    current = store.current()
    reports = store.reports()
    versions = store.versions()
    meta = current.metadata if current is not None else {}
    config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    calls = _counts(reports.get("calls"))
    fallbacks = _counts(reports.get("fallback"))
    learned = {}
    if current is not None:
        learned, _ = current.params_problems()
    return {
        "id": store.function_id,
        "current_version": store.current_number(),
        "versions": len(versions),
        "generator": meta.get("generator"),
        "domain": meta.get("domain"),
        "objective": meta.get("objective"),
        "policy": config.get("policy"),
        "calls": {"enhanced": calls.get("enhanced", 0), "errors": calls.get("errors", 0),
                  "fallback": sum(fallbacks.values()), "total": calls.get("enhanced", 0) + sum(fallbacks.values())},
        "fallbacks": fallbacks,
        "repairs": _counts(reports.get("repair")),
        "mismatches": _counts(reports.get("mismatch")),
        "params": learned,
        "updated_at": meta.get("created_at"),
    }


def version_row(store, version, current: int | None) -> dict:
    from poet_runtime.commands.versions import trust_of

    meta = version.metadata
    return {
        "version": version.number,
        "current": version.number == current,
        "created_at": meta.get("created_at"),
        "generator": meta.get("generator"),
        "status": store.status_of(version),
        "trust": trust_of(store, version),
        "transformed": bool(meta.get("transformed")),
        "key": meta.get("key"),
        "parent": meta.get("parent"),
    }


def versions(store) -> dict:
    current = store.current_number()
    rows = [version_row(store, v, current) for v in store.versions()]
    damaged = [{"version": n, "current": n == current, "status": "damaged",
                "reason": f"metadata.json: {e.field + ': ' if e.field else ''}{e.reason}"}
               for n, e in sorted(store.damaged().items())]
    return {"function": store.function_id, "current": current, "versions": rows, "damaged": damaged}


def version_detail(store, number: int) -> dict:
    from poet_runtime.store import DamagedFile

    version = store.get(number)
    if version is None:
        damaged = store.damaged().get(number)
        if damaged is not None:
            raise Problem(409, "damaged-version", f"{store.function_id} v{number}: {damaged}")
        raise Problem(404, "unknown-version", f"{store.function_id} has no version v{number}")
    try:
        check = version.verify_code(store.function_id)
    except (DamagedFile, OSError) as error:
        raise Problem(409, "damaged-version", f"{store.function_id} v{number}: {error}") from None
    params, problems = version.params_problems()
    try:
        state = version.state()
    except (DamagedFile, OSError, ValueError) as error:
        state, problems = {}, [*problems, error]
    from poet_runtime.safe_text import hidden_characters

    return {
        **version_row(store, version, store.current_number()),
        "function": store.function_id,
        "code": check.text,
        "code_sha256": check.sha256,
        # A reviewer's page must show what it cannot render: where control/bidi characters hide.
        "hidden_characters": [{"line": line, "column": col, "character": name}
                              for line, col, name in hidden_characters(check.text)],
        "metadata": version.metadata,
        "params": params,
        "state": state,
        "problems": [str(p) for p in problems],
    }


def rollback(store, number: int) -> dict:
    before = store.current_number()
    try:
        version = store.rollback(number)
    except FileNotFoundError as error:
        raise Problem(404, "unknown-version", str(error)) from None
    except (OSError, ValueError) as error:
        raise Problem(409, "rollback-failed", f"{store.function_id}: {error}") from None
    logger.info("poet service: %s: current version v%s -> %s", store.function_id, before, version.name)
    return {"function": store.function_id, "current": version.number, "previous": before}
