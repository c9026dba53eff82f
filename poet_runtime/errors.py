"""The exceptions poet_runtime raises to its users.

Kept in one small module so that every layer can raise them without importing
the layers above it.
"""


class PoetError(Exception):
    """Base class of every error poet_runtime raises on purpose."""


class PoetConfigError(PoetError, ValueError):
    """A decorator argument, setting or policy is invalid. The message names the
    function (``module:qualname``) or file, the argument, and what is allowed."""


class PoetViolation(PoetError):
    """Enhanced code broke a policy limit or rule, and the policy asks to raise.

    ``limit`` names what was hit (``wall_ms``, ``memory_mb``, ``imports``, ...).
    """

    def __init__(self, function: str, limit: str, detail: str):
        super().__init__(f"{function}: {limit}: {detail}")
        self.function = function
        self.limit = limit
        self.detail = detail


class GenerationError(PoetError):
    """No usable enhancement could be produced; ``reason`` is a short code."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class CheckFailed(GenerationError):
    """Generated code failed a check before use (``reason`` names the check)."""
