"""Helpers for the restricted-backend and policy tests: generated module text, loading, corpus.

Why here and not in conftest.py: conftest belongs to the integrator; these helpers
are imported explicitly by the tests that need them.
"""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

from poet_runtime.backends import LoadRequest, get_backend
from poet_runtime.backends.base import Limits

CORPUS = Path(__file__).resolve().parents[2] / "shared/corpus/escapes"
REPO_ESCAPES = Path(__file__).resolve().parent / "escapes"  # this repository's own payloads, same format


def module_text(body: str = "return logic(*args, **kwargs)", *, params: str = "", prelude: str = "",
                function_id: str = "tests.probe:probe", is_async: bool = False, perceive: str = "return None",
                enforce: str = "return result") -> str:
    """A generated module per CONTRACTS.md (contract 2) whose ``operate_prime`` has ``body``.

    ``logic``, ``args`` and ``kwargs`` are in scope of ``body``; ``params`` is the
    parameter list of ``perceive`` (the original's); the logic itself is the
    function the test passes to ``call``, never part of the module.
    """
    def block(text: str) -> str:
        return textwrap.indent(textwrap.dedent(text).strip("\n"), "    ") or "    pass"

    keyword = "async def" if is_async else "def"
    return (
        f"{prelude}\n"
        f"FUNCTION = {function_id!r}\n"
        "DOMAIN = 'base'\n"
        "OBJECTIVE = None\n"
        "PARAMETERS = {}\n"
        "PARAMS = {}\n\n"
        "def configure(params, defaults=None):\n    pass\n\n"
        f"def perceive({params}):\n{block(perceive)}\n\n"
        f"{keyword} operate_prime(logic, args, kwargs):\n{block(body)}\n\n"
        f"def enforce(result):\n{block(enforce)}\n"
    )


def load(code: str, limits: Limits, *, params: dict | None = None, function_id: str = "tests.probe:probe",
         is_async: bool = False, backend: str = "restricted"):
    """Load ``code`` in ``backend`` (only the LoadRequest fields contract 2 uses)."""
    fields = {f.name for f in dataclasses.fields(LoadRequest)}
    request = dict(function_id=function_id, version=1, code=code, filename="<generated>", params=params or {},
                   limits=limits, is_async=is_async)
    for name, value in (("logic_name", "probe"), ("user_globals", {})):  # contract 1 fields, while they exist
        if name in fields:
            request[name] = value
    return get_backend(backend).load(LoadRequest(**request))


def escape_files() -> list[Path]:
    """Every payload of the shared corpus and of this repository's ``tests/escapes``,
    found by listing the folders (a new file is picked up without a test change)."""
    found = []
    for folder in (CORPUS, REPO_ESCAPES):
        if folder.is_dir():
            found.extend(sorted(folder.glob("*.py")))
    return found


def escape_header(text: str) -> dict:
    header = {}
    for line in text.splitlines():
        if line.startswith("# ") and ":" in line:
            key, _, value = line[2:].partition(":")
            header[key.strip()] = value.strip()
        elif line.strip() and not line.startswith("#"):
            break
    return header


def fill(text: str, **values) -> str:
    """Replace {marker}-style placeholders; doubled braces stand for literal braces."""
    out = text.replace("{{", "\0").replace("}}", "\1")
    for key, value in values.items():
        out = out.replace("{" + key + "}", str(value))
    return out.replace("\0", "{").replace("\1", "}")
