"""Backend ``none``: generated code runs in this process, unrestricted.

Only an explicit policy (``trusted.toml`` or a rule) selects it. The user's logic
in the generated module is re-bound to the user's live module globals, so it sees
the same names and state the original sees; a function with a closure (a nested
function, or a method using ``super()``) keeps its original function object for
the logic, since its closure cells cannot be recreated from source.
"""

from __future__ import annotations

import builtins
import inspect
from types import FunctionType

from poet_runtime.backends.base import LoadRequest
from poet_runtime.cache import compile_cached
from poet_runtime.resources import load_facility


def original_defaults(original) -> dict:
    """The original's default argument values, by parameter name."""
    if original is None:
        return {}
    try:
        signature = inspect.signature(original, follow_wrapped=False)
    except (TypeError, ValueError):
        return {}
    return {
        name: param.default
        for name, param in signature.parameters.items()
        if param.default is not inspect.Parameter.empty
    }


class InProcessLoaded:
    backend = "none"

    def __init__(self, enhancement, namespace: dict):
        self.enhancement = enhancement
        self.namespace = namespace
        self.call = enhancement.call
        self.call_async = enhancement.call_async

    def configure(self, params: dict) -> None:
        self.namespace["configure"](params)

    def observations(self) -> dict:
        return dict(self.namespace.get("STATS") or {})

    def close(self) -> None:
        pass


class InProcessBackend:
    name = "none"

    def load(self, request: LoadRequest) -> InProcessLoaded:
        facility = load_facility()
        from poet_sandbox.driver import Enhancement

        del facility
        code = compile_cached(request.code, request.filename)
        namespace = {
            "__name__": f"poet_generated.{request.function_id.replace(':', '.')}",
            "__file__": request.filename,
            "__package__": request.package,
            "__builtins__": builtins,
        }
        exec(code, namespace)
        logic = namespace.get(request.logic_name)
        original = request.original
        if original is not None and (original.__closure__ or not isinstance(logic, FunctionType)):
            namespace[request.logic_name] = original
        elif isinstance(logic, FunctionType):
            namespace[request.logic_name] = FunctionType(
                logic.__code__, request.user_globals, logic.__name__, None, None
            )
        namespace["configure"](request.params, original_defaults(original))
        return InProcessLoaded(Enhancement(namespace, request.logic_name), namespace)
