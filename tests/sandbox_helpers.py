"""Helpers for the restricted-backend and policy tests: generated module text, loading, corpus.

Why here and not in conftest.py: conftest belongs to the integrator; these helpers
are imported explicitly by the tests that need them.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from poet_runtime.backends import LoadRequest, get_backend
from poet_runtime.backends.base import Limits

CORPUS = Path(__file__).resolve().parents[2] / "shared/corpus/escapes"


def module_text(body: str, *, logic_args: str = "", function_id: str = "tests.probe:probe", prelude: str = "",
                logic_name: str = "probe") -> str:
    """A generated module per CONTRACTS.md whose logic function has ``body``."""
    indented = textwrap.indent(textwrap.dedent(body).strip("\n"), "    ") or "    pass"
    return (
        f"{prelude}\n"
        f"FUNCTION = {function_id!r}\n"
        f"LOGIC = {logic_name!r}\n"
        "PARAMETERS = {}\n\n"
        "def configure(params):\n    pass\n\n"
        f"def {logic_name}({logic_args}):\n{indented}\n\n"
        f"def perceive({logic_args}):\n    return ({logic_args}{',' if logic_args else ''})\n\n"
        f"def operate_prime(*perceived):\n    return {logic_name}(*perceived)\n\n"
        "def enforce(result):\n    return result\n"
    )


def load(code: str, limits: Limits, *, user_globals: dict | None = None, params: dict | None = None,
         function_id: str = "tests.probe:probe", logic_name: str = "probe"):
    request = LoadRequest(
        function_id=function_id, version=1, code=code, filename="<generated>", logic_name=logic_name,
        params=params or {}, user_globals=user_globals or {}, limits=limits,
    )
    return get_backend("restricted").load(request)


def escape_files() -> list[Path]:
    return sorted(CORPUS.glob("*.py")) if CORPUS.is_dir() else []


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
