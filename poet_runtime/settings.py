"""Runtime settings: environment variables over ``[tool.poet]`` in pyproject.toml over defaults.

Read once per process (``get_settings()``), validated by hand rather than with
pydantic so that ``import poet_runtime`` stays cheap on the path every POET-enabled
process takes. A bad value is a ``PoetConfigError`` naming the variable or the
pyproject key, raised at start-up, not at the first call.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

from poet_runtime.errors import PoetConfigError

GENERATE_MODES = ("sync", "background", "off")
LOG_LEVELS = ("debug", "info", "warning", "error", "quiet")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}

# Setting name -> environment variable. The pyproject key is the setting name.
ENV_VARS = {
    "enabled": "POET_ENABLED",
    "policy": "POET_POLICY",
    "model": "POET_MODEL",
    "generate": "POET_GENERATE",
    "home": "POET_HOME",
    "include": "POET_INCLUDE",
    "exclude": "POET_EXCLUDE",
    "log": "POET_LOG",
    "api_base": "POET_API_BASE",
    "api_key": "POET_API_KEY",
    "cache_dir": "POET_CACHE_DIR",
    "generation_timeout": "POET_GENERATION_TIMEOUT",
    "max_concurrent_generations": "POET_MAX_CONCURRENT_GENERATIONS",
}


@dataclass(frozen=True)
class Settings:
    enabled: bool = False
    policy: str | None = None  # shipped name or path; None -> [tool.poet] or "default"
    model: str | None = None  # litellm model string; None -> built-in generator
    generate: str | None = None  # sync | background | off; None -> background with a model, else sync
    home: Path | None = None  # store root when set (else .poet/ beside each module)
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    log: str = "warning"
    api_base: str | None = None
    api_key: str | None = field(default=None, repr=False)
    cache_dir: Path | None = None
    generation_timeout: float = 60.0
    max_concurrent_generations: int = 50
    pyproject: Path | None = None  # where [tool.poet] was read from, if anywhere

    @property
    def generate_mode(self) -> str:
        if self.generate:
            return self.generate
        return "background" if self.model else "sync"

    def cache_path(self) -> Path:
        if self.cache_dir is not None:
            return self.cache_dir
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        return Path(base) / "poet_runtime"

    def fallback_home(self) -> Path:
        """Store root used when a module's folder is not writable and POET_HOME is unset."""
        if self.home is not None:
            return self.home
        base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
        return Path(base) / "poet_runtime"


def _parse(name: str, raw, where: str):
    """Convert one raw value (str from the environment, or a TOML value) for ``name``."""

    def fail(expected: str):
        raise PoetConfigError(f"{where}: {raw!r} is not valid: expected {expected}")

    if name == "enabled":
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        fail("1/0, true/false, yes/no or on/off")
    if name == "generate":
        text = str(raw).strip().lower()
        if text not in GENERATE_MODES:
            fail(" | ".join(GENERATE_MODES))
        return text
    if name == "log":
        text = str(raw).strip().lower()
        if text not in LOG_LEVELS:
            fail(" | ".join(LOG_LEVELS))
        return text
    if name in ("include", "exclude"):
        items = raw if isinstance(raw, list) else str(raw).split(",")
        if not all(isinstance(item, str) for item in items):
            fail("a list of module globs")
        return tuple(item.strip() for item in items if item.strip())
    if name in ("home", "cache_dir"):
        text = str(raw).strip()
        if not text:
            fail("a folder path")
        return Path(text).expanduser()
    if name == "generation_timeout":
        try:
            value = float(raw)
        except (TypeError, ValueError):
            fail("a number of seconds > 0")
        if not value > 0:
            fail("a number of seconds > 0")
        return value
    if name == "max_concurrent_generations":
        try:
            value = int(raw)
        except (TypeError, ValueError):
            fail("a whole number >= 1")
        if value < 1:
            fail("a whole number >= 1")
        return value
    text = str(raw).strip()
    if not text:
        fail("a non-empty string")
    return text


def find_pyproject(start: Path | None = None) -> Path | None:
    folder = (start or Path.cwd()).resolve()
    for candidate in (folder, *folder.parents):
        path = candidate / "pyproject.toml"
        if path.is_file():
            return path
    return None


def _from_pyproject(path: Path) -> dict:
    import tomllib

    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise PoetConfigError(f"{path}: cannot read [tool.poet]: {error}") from None
    table = data.get("tool", {}).get("poet", {})
    if not isinstance(table, dict):
        raise PoetConfigError(f"{path}: [tool.poet] must be a table")
    values = {}
    for key, raw in table.items():
        name = key.replace("-", "_")
        if name not in ENV_VARS or name in ("api_key",):
            import difflib

            close = difflib.get_close_matches(name, [n for n in ENV_VARS if n != "api_key"], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise PoetConfigError(f"{path}: [tool.poet] {key}: unknown setting{hint}")
        values[name] = _parse(name, raw, f"{path}: [tool.poet] {key}")
    return values


def load_settings(environ=None, cwd: Path | None = None) -> Settings:
    environ = os.environ if environ is None else environ
    values: dict = {}
    pyproject = find_pyproject(cwd)
    if pyproject is not None:
        values.update(_from_pyproject(pyproject))
    for name, variable in ENV_VARS.items():
        raw = environ.get(variable)
        if raw is None or (raw == "" and name != "enabled"):
            continue
        values[name] = _parse(name, raw, variable)
    return Settings(pyproject=pyproject, **values)


_settings: Settings | None = None
_settings_lock = threading.Lock()


def get_settings() -> Settings:
    global _settings
    if _settings is None:
        with _settings_lock:
            if _settings is None:
                _settings = load_settings()
    return _settings


def override(**changes) -> Settings:
    """Replace settings for this process (the runner's options, tests)."""
    global _settings
    with _settings_lock:
        _settings = replace(_settings or load_settings(), **changes)
        return _settings


def reset() -> None:
    """Forget the settings; the next ``get_settings()`` reads the environment again."""
    global _settings
    with _settings_lock:
        _settings = None
