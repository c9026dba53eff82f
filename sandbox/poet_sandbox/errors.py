"""Errors raised by generated phases.

They are plain ``Exception`` subclasses defined here, not in ``poet_runtime``, so that
code inside a sandbox can raise them and the host can recognise them by name when
they come back as data.
"""


class PhaseError(Exception):
    """A phase of the enhancement refused the call; the host falls back to the original."""

    phase = "internal"

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.field = field


class PerceiveError(PhaseError):
    """An input could not be checked or repaired as the type hints and domain require."""

    phase = "perceive"


class EnforceError(PhaseError):
    """An output broke the return annotation or the domain's rules."""

    phase = "enforce"


class UserLogicError(PhaseError):
    """The user's own logic raised inside a sandbox (worker or WASM guest).

    Exceptions do not cross a sandbox's boundary as objects, so the host runs the
    original function with the original arguments, which raises the error for real.
    """

    phase = "operate_prime"


class CircuitOpenError(RuntimeError):
    """The circuit breaker is open: recent calls failed with retryable errors.

    Raised instead of calling the user's logic until the breaker's reset time has
    passed. ``__cause__`` is the last failure that kept the breaker open.
    """
