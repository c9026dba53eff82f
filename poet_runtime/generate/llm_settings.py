"""The LLM generator's own settings (environment only), checked with the variable's name.

Kept apart from ``poet_runtime.settings`` (which every POET process reads at start-up)
so the generator's knobs live with the generator; ``read(environ)`` is cheap (no
imports) and raises ``PoetConfigError`` naming the variable, so a start-up check can
call it like every other setting. Values:

- ``POET_LLM_REQUEST_TIMEOUT`` (seconds, default 300): one request's whole time. When it
  passes, the answer's stream is closed, which stops a llama.cpp-style server from
  generating on for nobody. Not ``POET_GENERATION_TIMEOUT``: that one bounds how long a
  first call waits in sync mode (the generation goes on after it).
- ``POET_LLM_MAX_TOKENS`` (``auto`` or a whole number): the answer's length cap. ``auto``
  is derived from the contract: a few times the built-in module's size in tokens.
- ``POET_LLM_CONTEXT`` (``auto`` or a whole number of tokens): the model's context. ``auto``
  asks the server (``/props``, ``/v1/models``), then litellm's model list, else assumes 2048.
- ``POET_LLM_BACKOFF`` (seconds, default 3600): after a model's answers were refused (or it
  could not be reached), the same function (same key) is not asked again before this passes.
- ``POET_LLM_WORKER`` (``on``/``off``, default ``on``): a generation outside ``enhance`` runs
  in a detached generator process, so it survives the program's exit (``pending``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DEFAULT_REQUEST_TIMEOUT_S = 300.0
DEFAULT_BACKOFF_S = 3600.0
FALLBACK_CONTEXT = 2048  # llama.cpp's server default: the smallest context a user meets in practice
MIN_MAX_TOKENS, MAX_MAX_TOKENS = 64, 65_536
MIN_CONTEXT, MAX_CONTEXT = 512, 10_000_000
VARIABLES = ("POET_LLM_REQUEST_TIMEOUT", "POET_LLM_MAX_TOKENS", "POET_LLM_CONTEXT", "POET_LLM_BACKOFF",
             "POET_LLM_WORKER")


class LLMSettingError(ValueError):
    """A bad value; ``poet_runtime.errors.PoetConfigError`` is raised from it by ``read``."""


@dataclass(frozen=True)
class LLMSettings:
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S
    max_tokens: int | None = None  # None: auto
    context: int | None = None  # None: auto
    backoff_s: float = DEFAULT_BACKOFF_S
    worker: bool = True


def read(environ=None) -> LLMSettings:
    """The settings from ``environ`` (``os.environ``); raises PoetConfigError naming the variable."""
    import os

    from poet_runtime.errors import PoetConfigError

    environ = os.environ if environ is None else environ
    try:
        return LLMSettings(
            request_timeout_s=_seconds(environ, "POET_LLM_REQUEST_TIMEOUT", DEFAULT_REQUEST_TIMEOUT_S, 0.1),
            max_tokens=_tokens(environ, "POET_LLM_MAX_TOKENS", MIN_MAX_TOKENS, MAX_MAX_TOKENS),
            context=_tokens(environ, "POET_LLM_CONTEXT", MIN_CONTEXT, MAX_CONTEXT),
            backoff_s=_seconds(environ, "POET_LLM_BACKOFF", DEFAULT_BACKOFF_S, 0.0),
            worker=_switch(environ, "POET_LLM_WORKER", True),
        )
    except LLMSettingError as error:
        raise PoetConfigError(str(error)) from None


def _raw(environ, name):
    raw = environ.get(name)
    return None if raw is None or not raw.strip() else raw.strip()


def _seconds(environ, name, default, low, high=86_400.0):
    raw = _raw(environ, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not low <= value <= high:
        raise LLMSettingError(f"{name}: {raw!r} is not valid: expected seconds >= {low:g} and <= {high:g}")
    return value


def _tokens(environ, name, low, high):
    raw = _raw(environ, name)
    if raw is None or raw.lower() == "auto":
        return None
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise LLMSettingError(f"{name}: {raw!r} is not valid: expected 'auto' or a whole number >= {low} "
                              f"and <= {high}")
    return value


def _switch(environ, name, default):
    raw = _raw(environ, name)
    if raw is None:
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise LLMSettingError(f"{name}: {raw!r} is not valid: expected on or off")


def auto_max_tokens(baseline_code: str) -> int:
    """The answer cap derived from the contract: the built-in module is what a complete answer
    looks like; an answer may be up to three times its size (prose, longer checks), never less
    than 512 tokens. ~3.5 characters per token for Python code."""
    return max(512, min(8192, int(len(baseline_code) / 3.5 * 3)))
