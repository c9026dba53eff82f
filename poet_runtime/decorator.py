"""``@poet``: validates its arguments and, when the runtime is off, gets out of the way.

With the runtime off the decorator returns the very function it was given, so an
application pays nothing for being POET-ready. With it on, it returns the enhanced
callable built by ``poet_runtime.enhanced``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from poet_runtime import runtime
from poet_runtime.errors import PoetConfigError

# typing costs milliseconds at start-up and is only needed by type checkers here
# (which treat a name TYPE_CHECKING as true).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, TypeVar, overload

    F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class PoetConfig:
    """The decorator's arguments, validated. Part of every version's key."""

    domain: str | None = None
    optimize_for: str | None = None
    retries: int | None = None
    timeout: float | None = None
    policy: str | None = None
    repair: str | None = None  # None: mismatches are reported, not converted; "coerce": lossless repairs
    # Starting values of the domain's own parameters (e.g. prompt_optimization's
    # max_prompt_tokens), as sorted (name, number) pairs; the domain's ranges still hold.
    domain_options: tuple = ()

    def key_data(self) -> dict:
        data = {
            "domain": self.domain,
            "optimize_for": self.optimize_for,
            "retries": self.retries,
            "timeout": self.timeout,
            "policy": self.policy,
        }
        if self.repair is not None:  # absent when unset, so existing keys stay as they were
            data["repair"] = self.repair
        if self.domain_options:  # likewise
            data["domain_options"] = [list(pair) for pair in self.domain_options]
        return data

    @classmethod
    def from_kwargs(
        cls,
        function_id: str,
        *,
        domain: str | None = None,
        optimize_for: str | None = None,
        retries: int | None = None,
        timeout: float | None = None,
        policy: str | None = None,
        enable_training: bool | None = None,
        repair: str | None = None,
        domain_options: dict | None = None,
    ) -> "PoetConfig":
        from poet_runtime.domains import domain_names, objectives_for

        def fail(argument: str, value: Any, allowed: str) -> PoetConfigError:
            return PoetConfigError(f"@poet on {function_id}: {argument}={value!r} is not valid; allowed: {allowed}")

        if domain is not None and domain not in domain_names():
            raise fail("domain", domain, ", ".join(domain_names()))
        if enable_training is not None and not isinstance(enable_training, bool):
            raise fail("enable_training", enable_training, "True or False")
        if enable_training and optimize_for is None:
            warnings.warn(
                f"@poet on {function_id}: enable_training=True is deprecated; "
                "say optimize_for=... (it means optimize_for='performance' here)",
                DeprecationWarning,
                stacklevel=4,
            )
            optimize_for = "performance"
        if optimize_for is not None and optimize_for not in objectives_for(domain):
            raise fail("optimize_for", optimize_for, ", ".join(objectives_for(domain)))
        if retries is not None and (isinstance(retries, bool) or not isinstance(retries, int) or retries < 0):
            raise fail("retries", retries, "a whole number >= 0")
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0
        ):
            raise fail("timeout", timeout, "a number of seconds > 0")
        if policy is not None and (not isinstance(policy, str) or not policy.strip()):
            raise fail("policy", policy, "a shipped policy name (default, strict, trusted) or a path to a policy file")
        if repair not in (None, "coerce"):
            raise fail("repair", repair, "None (report mismatches, change nothing) or 'coerce' (lossless repairs, each reported)")
        options = ()
        if domain_options is not None:
            if not isinstance(domain_options, dict):
                raise fail("domain_options", domain_options, "a dict of parameter names to numbers")
            for name, value in domain_options.items():
                if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
                    raise fail("domain_options", domain_options, f"parameter names (not {name!r})")
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value \
                        or value in (float("inf"), float("-inf")):
                    raise fail(f"domain_options[{name!r}]", value, "a finite number")
            options = tuple(sorted(domain_options.items()))
        return cls(domain, optimize_for, retries, float(timeout) if timeout is not None else None, policy, repair,
                   options)


def _function_id(obj: Any) -> str:
    target = getattr(obj, "__func__", obj)
    module = getattr(target, "__module__", None) or "?"
    qualname = getattr(target, "__qualname__", None) or getattr(target, "__name__", repr(target))
    return f"{module}:{qualname}"


if TYPE_CHECKING:

    @overload
    def poet(function: F, /) -> F: ...


    @overload
    def poet(
        domain: str | None = None,
        optimize_for: str | None = None,
        *,
        retries: int | None = None,
        timeout: float | None = None,
        policy: str | None = None,
        enable_training: bool | None = None,
        repair: str | None = None,
        domain_options: dict | None = None,
    ) -> Callable[[F], F]: ...


def poet(
    domain: Any = None,
    optimize_for: str | None = None,
    *,
    retries: int | None = None,
    timeout: float | None = None,
    policy: str | None = None,
    enable_training: bool | None = None,
    repair: str | None = None,
    domain_options: dict | None = None,
):
    """Mark a function for enhancement: ``@poet``, ``@poet()`` or ``@poet(domain, optimize_for, ...)``.

    ``domain`` picks the rules (``base``, ``ml_monitoring``, ``api_operations``, or any
    installed domain); ``optimize_for`` turns on training toward an objective;
    ``retries`` and ``timeout`` override the domain's; ``policy`` names the sandbox
    policy; ``domain_options`` sets the starting value of the domain's own parameters
    (e.g. ``{"max_prompt_tokens": 2000}``). Invalid arguments raise ``PoetConfigError``
    when the decorator is applied.
    """
    if callable(domain) or isinstance(domain, (staticmethod, classmethod)):
        # Bare @poet: the first positional argument is the function itself.
        return _apply(domain, {})
    kwargs = dict(
        domain=domain,
        optimize_for=optimize_for,
        retries=retries,
        timeout=timeout,
        policy=policy,
        enable_training=enable_training,
        repair=repair,
        domain_options=domain_options,
    )

    def decorate(function):
        return _apply(function, kwargs)

    return decorate


_learning_checked = False


def _learning_settings_ok() -> bool:
    """The POET_EVENTS_* / POET_FEEDBACK_RATE values, checked once before the first function is
    enhanced: a bad one is one line (as for every setting) and POET is off for the process."""
    global _learning_checked
    if _learning_checked:
        return runtime.is_enabled()
    _learning_checked = True
    from poet_runtime.learn import config as learn_config

    try:
        learn_config.get()
    except PoetConfigError as error:
        from poet_runtime.settings import report_activation_error

        report_activation_error(error)
        runtime.set_enabled(False)
        return False
    return True


def _apply(function, kwargs: dict):
    function_id = _function_id(function)
    if isinstance(function, (staticmethod, classmethod)):
        inner = function.__func__
    else:
        inner = function
    if not callable(inner) or not hasattr(inner, "__code__"):
        raise PoetConfigError(f"@poet on {function_id}: expected a function, got {type(function).__name__}")
    config = PoetConfig.from_kwargs(function_id, **kwargs)
    if not runtime.is_enabled():
        return function  # zero cost: the very same object
    import inspect

    if inspect.isasyncgenfunction(inner):
        # Not enhanced (documented): a wrapper cannot pass asend/athrow through faithfully.
        import logging

        logging.getLogger("poet_runtime").info(
            "poet_runtime: %s is an async generator function; it runs as written, not enhanced", function_id)
        return function
    if not _learning_settings_ok():
        return function
    if config.policy is not None:
        from poet_runtime.policy import load_policy
        from poet_runtime.settings import check_policy_exists

        try:  # found now, once, not as a config_error fallback on every call
            check_policy_exists(config.policy, f"@poet on {function_id}: policy")
            load_policy(config.policy)  # a file that does not parse or validate: its file, line and field
        except PoetConfigError as error:
            import logging

            message = "; ".join(line.strip() for line in str(error).splitlines() if line.strip())
            if not message.startswith("@poet on"):
                message = f"@poet on {function_id}: policy {config.policy!r}: {message}"
            logging.getLogger("poet_runtime").warning("poet_runtime: %s; it runs without POET", message)
            return function
    from poet_runtime.enhanced import enhance_function

    enhanced = enhance_function(inner, config)
    if isinstance(function, staticmethod):
        return staticmethod(enhanced)
    if isinstance(function, classmethod):
        return classmethod(enhanced)
    return enhanced
