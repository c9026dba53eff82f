"""The facility library that generated enhancements may import.

Generated code runs in three places: in the host process (backend ``none``), in a
RestrictedPython worker, and inside a CPython-on-WASI guest. This package is the
only support code it may rely on in all three, so it imports nothing but the
standard library and nothing from ``poet_runtime``.
"""

from poet_sandbox.errors import CircuitOpenError, EnforceError, PerceiveError, PhaseError, UserLogicError

__all__ = ["EnforceError", "PerceiveError", "CircuitOpenError", "PhaseError", "UserLogicError"]
