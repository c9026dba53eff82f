"""Where the shipped data folders are: ``sandbox/`` and ``policies/``.

In a source checkout (and an editable install) they sit beside the package; in a
wheel they are inside it as ``poet_runtime/_data/``. Everything that needs them
asks here, so no other module knows about the two layouts.
"""

from functools import cache
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _find(name: str) -> Path:
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"poet_runtime is incompletely installed: no {name}/ folder beside or inside {_PACKAGE}")


@cache
def sandbox_dir() -> Path:
    """The folder that holds ``poet_sandbox/`` (the facility library) and ``harness/``."""
    return _find("sandbox")


@cache
def policies_dir() -> Path:
    """The folder of the shipped policy files (``default.toml``, ...)."""
    return _find("policies")


def load_facility():
    """Make ``poet_sandbox`` importable in this process and return it.

    Generated code says ``from poet_sandbox import ...`` everywhere it runs. In the
    host we load that one package from its shipped folder under its own name,
    without putting the folder on ``sys.path`` (which would expose ``harness`` too).
    """
    import importlib.util
    import sys

    module = sys.modules.get("poet_sandbox")
    if module is not None:
        return module
    init = sandbox_dir() / "poet_sandbox" / "__init__.py"
    spec = importlib.util.spec_from_file_location(
        "poet_sandbox", init, submodule_search_locations=[str(init.parent)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["poet_sandbox"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["poet_sandbox"]
        raise
    return module
