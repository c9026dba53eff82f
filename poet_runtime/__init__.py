"""poet_runtime: mark a function with ``@poet`` and, with the runtime on, it runs enhanced.

The public API is this module's ``__all__``; everything else is machinery. With the
runtime off (the default) ``@poet`` returns the very function it decorates. Turn it
on with ``enable()``, with ``POET_ENABLED=1`` in the environment, or by running the
program under ``python -m poet_runtime``.
"""

from __future__ import annotations

import os as _os

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is for type checkers only: it costs start-up time
    from typing import Any, Callable

from poet_runtime.decorator import PoetConfig, poet
from poet_runtime.errors import GenerationError, PoetConfigError, PoetError, PoetViolation
from poet_runtime.records import ExecutionRecord, last_execution
from poet_runtime import runtime as _runtime

__version__ = "0.1.0"
__all__ = [
    "poet",
    "enable",
    "disable",
    "is_enabled",
    "enhance",
    "feedback",
    "last_execution",
    "ExecutionRecord",
    "PoetConfig",
    "PoetError",
    "PoetConfigError",
    "PoetViolation",
    "GenerationError",
]


def enable(*, hook: bool = True) -> None:
    """Turn the runtime on for this process: ``@poet`` functions defined from now on are enhanced.

    Also installs the import hook (``hook=False`` to skip it), which enhances ``@poet``
    functions of modules imported later. Calling it twice is harmless.
    """
    from poet_runtime.settings import get_settings

    settings = get_settings()  # a bad setting is an error now, not at the first call
    if settings.model:  # a model without the llm extra installed: say so now, not at the first call
        from poet_runtime.generate.llm import check_available

        check_available(settings)
    _runtime.set_enabled(True)
    if hook:
        try:
            from poet_runtime import hook as _hook
        except ImportError:
            return
        _hook.install()


def disable() -> None:
    """Turn the runtime off: ``@poet`` returns functions untouched again; the hook is removed.

    Functions enhanced before stay enhanced.
    """
    _runtime.set_enabled(False)
    try:
        from poet_runtime import hook as _hook
    except ImportError:
        return
    _hook.uninstall()


def is_enabled() -> bool:
    return _runtime.is_enabled()


def enhance(function: "Callable[..., Any]", /, **config: "Any"):
    """Resolve a function's enhancement now rather than at its first call; returns the stored version.

    For an enhanced function this loads it (generating and storing a version if
    needed). For a plain function (the runtime off) it generates and stores the
    version ahead of time, with ``config`` as the decorator's arguments.
    Raises ``GenerationError`` when no enhancement can be produced.
    """
    from poet_runtime.enhanced import state_of

    state = state_of(function)
    if state is not None:
        return state.ensure_loaded()
    import sys

    from poet_runtime.generate.spec import spec_from_function
    from poet_runtime.resolve import ensure_version

    target = getattr(function, "__func__", function)
    settings_config = PoetConfig.from_kwargs(f"{target.__module__}:{target.__qualname__}", **config)
    spec = spec_from_function(target)
    module_file = getattr(sys.modules.get(target.__module__), "__file__", None) or spec.filename
    return ensure_version(spec, settings_config, module_file=module_file)


def feedback(execution_id: str, **fields: "Any") -> str:
    """Record feedback on one execution (label, rating, metrics, comments, suggestions); returns the event id.

    See ``poet_runtime.learn.feedback.feedback``; imported on first use so ``import poet_runtime`` stays cheap.
    """
    from poet_runtime.learn.feedback import feedback as _feedback

    return _feedback(execution_id, **fields)


def _activate_from_environment() -> None:
    """``POET_ENABLED`` is set: turn POET on, honouring ``POET_LOG``; never raise into the program.

    A bad setting prints one line naming the variable or key (``settings.report_activation_error``)
    and the program runs without POET. ``enable()`` called by the program itself still raises.
    """
    from poet_runtime import settings as _settings

    try:
        current = _settings.get_settings()
        if not current.enabled:
            return
        _settings.apply_log_setting(current.log)
        enable()
    except PoetConfigError as error:
        _settings.report_activation_error(error)
        _runtime.set_enabled(False)


if _os.environ.get("POET_ENABLED", "").strip().lower() in ("1", "true", "yes", "on"):
    _activate_from_environment()
