"""Runtime settings: environment variables over ``[tool.poet]`` in pyproject.toml over defaults.

Read once per process (``get_settings()``), validated by hand rather than with
pydantic so that ``import poet_runtime`` stays cheap on the path every POET-enabled
process takes. A bad value is a ``PoetConfigError`` naming the variable or the
pyproject key, raised at start-up, not at the first call.

Who may weaken what (README, "What the store trusts"): the environment and the command
line speak for the user and may set anything. A repository's ``[tool.poet]`` may only
tighten: its ``policy`` is honoured where it is at least as tight as ``default``
(``resolve.effective_policy``), and its ``home``/``cache_dir`` must stay inside the
repository, unless the user opts in with ``POET_ALLOW_REPO_POLICY=1``.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

from poet_runtime.errors import PoetConfigError

GENERATE_MODES = ("sync", "background", "off")
LOG_LEVELS = ("debug", "info", "warning", "error", "quiet")
SHIPPED_POLICIES = ("default", "strict", "trusted")  # policy.SHIPPED, without importing pydantic
MAX_GENERATION_TIMEOUT = 86_400.0  # a day: longer is a typo, not a wish
MAX_CONCURRENT_GENERATIONS = 10_000
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
    "broker": "POET_BROKER",  # redis://host:port/db: fleet learning (poet_runtime.fleet)
    "service_url": "POET_SERVICE_URL",  # http(s)://host:port of a POET service (templates)
    "service_key": "POET_SERVICE_KEY",
}
BROKER_SCHEMES = ("redis://", "rediss://", "unix://")
SERVICE_SCHEMES = ("http://", "https://")

# Secrets are read from the environment only: a repository's pyproject is no place for a key.
SECRET_SETTINGS = ("api_key", "service_key")
ALLOW_REPO_VAR = "POET_ALLOW_REPO_POLICY"  # environment only: a repository cannot opt itself in


def repo_policy_allowed(environ=None) -> bool:
    """True when the user lets a repository's ``[tool.poet]`` weaken the policy or name
    folders outside itself (``POET_ALLOW_REPO_POLICY=1``)."""
    environ = os.environ if environ is None else environ
    return str(environ.get(ALLOW_REPO_VAR, "")).strip().lower() in _TRUE


# Tuning variables read by the backends themselves (environment only): checked here too,
# so a bad one is found at start-up like the others. Name -> (lowest, highest) whole number.
TUNING_VARS = {
    "POET_WASM_MAX_GUESTS": (1, 10_000),
    "POET_WASM_FUEL_PER_MS": (1, 10**12),
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
    broker: str | None = field(default=None, repr=False)  # may hold a password
    service_url: str | None = None
    service_key: str | None = field(default=None, repr=False)
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


def _number(raw, *, integer: bool):
    """A finite number from an environment string or a TOML value; None when it is not one.

    TOML booleans are not numbers here, a whole number must be written as one (``2``, not
    ``2.5`` or ``true``), and NaN or infinity never passes.
    """
    if isinstance(raw, bool):
        return None
    if isinstance(raw, str):
        text = raw.strip()
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            return None
    elif isinstance(raw, int) or (isinstance(raw, float) and not integer):
        value = raw if integer else float(raw)
    else:
        return None
    if not integer and not math.isfinite(value):
        return None
    return value


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
        value = _number(raw, integer=False)
        if value is None or not 0 < value <= MAX_GENERATION_TIMEOUT:
            fail(f"a number of seconds > 0 and <= {MAX_GENERATION_TIMEOUT:g}")
        return value
    if name == "max_concurrent_generations":
        value = _number(raw, integer=True)
        if value is None or not 1 <= value <= MAX_CONCURRENT_GENERATIONS:
            fail(f"a whole number >= 1 and <= {MAX_CONCURRENT_GENERATIONS}")
        return value
    if name == "broker":
        text = str(raw).strip()
        if not text.startswith(BROKER_SCHEMES) or len(text) <= len("unix://"):
            fail("a Redis URL: redis://host:port/db, rediss://... or unix:///path")
        return text
    if name == "service_url":
        text = str(raw).strip().rstrip("/")
        if not text.startswith(SERVICE_SCHEMES) or len(text) <= len("https://"):
            fail("an http:// or https:// URL of a POET service")
        return text
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


def _from_pyproject(path: Path, environ=None) -> dict:
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
        if name not in ENV_VARS or name in SECRET_SETTINGS:
            import difflib

            close = difflib.get_close_matches(name, [n for n in ENV_VARS if n not in SECRET_SETTINGS], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise PoetConfigError(f"{path}: [tool.poet] {key}: unknown setting{hint}")
        values[name] = _parse(name, raw, f"{path}: [tool.poet] {key}")
        if name in ("home", "cache_dir"):
            values[name] = _inside_repo(values[name], path, key, environ)
    if "policy" in values:
        check_policy_exists(values["policy"], f"{path}: [tool.poet] policy", path.parent)
    return values


def _inside_repo(folder: Path, pyproject: Path, key: str, environ=None) -> Path:
    """A folder named by ``[tool.poet]``: relative to the pyproject's folder, and inside it
    unless the user allows otherwise (a repository must not point the store or the code
    cache at another project's files or at a place it prepared)."""
    base = pyproject.parent.resolve()
    resolved = (folder if folder.is_absolute() else base / folder).resolve()
    if resolved != base and base not in resolved.parents and not repo_policy_allowed(environ):
        raise PoetConfigError(
            f"{pyproject}: [tool.poet] {key}: {str(folder)!r} is outside the project folder {base}; a repository's "
            f"settings may not name folders outside it (set POET_{key.upper().replace('-', '_')} in the environment, "
            f"or {ALLOW_REPO_VAR}=1 to allow it)")
    return resolved


def check_policy_exists(value: str, where: str, folder: Path | None = None) -> None:
    """A policy named by a setting must be shipped or an existing file (found at start-up, not per call).

    Cheap on purpose (no policy parsing, no pydantic): the file's contents are checked when it loads.
    A relative path is relative to ``folder`` (the pyproject's folder) or the current directory.
    """
    if value in SHIPPED_POLICIES:
        return
    path = Path(value).expanduser()
    if not path.is_absolute() and folder is not None:
        path = folder / path
    if not path.is_file():
        raise PoetConfigError(
            f"{where}: {value!r} is not valid: expected a shipped policy ({', '.join(SHIPPED_POLICIES)}) "
            "or the path of a policy file, and there is no such file"
        )


def load_settings(environ=None, cwd: Path | None = None) -> Settings:
    environ = os.environ if environ is None else environ
    values: dict = {}
    pyproject = find_pyproject(cwd)
    if pyproject is not None:
        values.update(_from_pyproject(pyproject, environ))
    for name, variable in ENV_VARS.items():
        raw = environ.get(variable)
        if raw is None or (raw == "" and name != "enabled"):
            continue
        values[name] = _parse(name, raw, variable)
        if name == "policy":
            check_policy_exists(values[name], variable)
    for variable, (low, high) in TUNING_VARS.items():
        raw = environ.get(variable)
        if raw is None or not raw.strip():
            continue
        value = _number(raw, integer=True)
        if value is None or not low <= value <= high:
            raise PoetConfigError(f"{variable}: {raw!r} is not valid: expected a whole number >= {low} and <= {high}")
    # The learning settings (POET_EVENTS_*, POET_FEEDBACK_RATE) are checked at start-up too.
    from poet_runtime.learn import config as learn_config

    learn_config.check_environment(environ)
    from poet_runtime.generate.llm_settings import read as read_llm_settings

    read_llm_settings(environ)  # POET_LLM_*: a bad value is one PoetConfigError naming the variable
    if values.get("broker") and not _installed("redis"):
        where = "POET_BROKER" if environ.get("POET_BROKER") else f"{pyproject}: [tool.poet] broker"
        raise PoetConfigError(f"{where}: a broker is set but the redis package is not installed "
                              "(pip install 'poet-runtime[fleet]')")
    return Settings(pyproject=pyproject, **values)


def _installed(name: str) -> bool:
    """Whether a package can be imported, found without importing it (start-up stays cheap)."""
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a finder that refuses it, or a module set to None
        return False


_settings: Settings | None = None
_settings_lock = threading.Lock()
# A child forked while another thread held this lock would wait on it forever.
os.register_at_fork(after_in_child=_settings_lock._at_fork_reinit)


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


_activation_reported = False


def report_activation_error(error: BaseException) -> None:
    """An activated process (``POET_ENABLED``) met a bad setting: one line on stderr per process.

    The program then runs without POET; only the runner and the CLI exit with status 2.
    """
    global _activation_reported
    import sys

    if _activation_reported or getattr(sys, "_poet_pth_reported", False) or _is_our_command_line():
        return
    _activation_reported = True
    sys._poet_pth_reported = True  # the .pth line's own last-resort report stays quiet too
    message = " ".join(str(error).split())  # one line, whatever the error holds
    print(f"poet_runtime: {message}; continuing without POET", file=sys.stderr, flush=True)


def _is_our_command_line() -> bool:
    """``python -m poet_runtime ...`` or the ``poet`` script: the CLI itself reports and exits with 2."""
    import sys

    argv = list(getattr(sys, "orig_argv", None) or ())[1:]
    for index, arg in enumerate(argv):
        if arg == "-m":
            return index + 1 < len(argv) and argv[index + 1] == "poet_runtime"
        if arg.startswith("-m"):
            return arg == "-mpoet_runtime"
        if arg in ("-c", "-") or not arg.startswith("-"):
            return os.path.basename(arg) == "poet"
    return False


LOG_LEVEL_NUMBERS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "quiet": 51}


def apply_log_setting(level_name: str) -> None:
    """Honour ``POET_LOG`` for the ``poet_runtime`` logger in an activated process.

    ``quiet`` silences our log whatever handlers exist; ``info``/``debug`` add a stderr
    handler when nobody configured one (Python's last-resort handler shows warnings only).
    A logger the user configured keeps its handlers.
    """
    import logging

    logger = logging.getLogger("poet_runtime")
    level = LOG_LEVEL_NUMBERS.get(level_name, logging.WARNING)
    logger.setLevel(level)
    if level < logging.WARNING and not logger.handlers:
        import sys

        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.propagate = False


def reset() -> None:
    """Forget the settings; the next ``get_settings()`` reads the environment again."""
    global _settings
    with _settings_lock:
        _settings = None
