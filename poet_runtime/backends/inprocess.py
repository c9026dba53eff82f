"""Backend ``none``: generated code runs in this process, unrestricted.

Used for code the policy trusts: a built-in version verified by regeneration
(``resolve.verified_builtin``) under any policy that trusts ``builtin``, and signed
versions under a policy whose backend is ``none`` (``trusted.toml``); an unsigned or
damaged version never gets here (``resolve.load_version`` refuses it). The
generated module needs nothing of the user's module: the logic it calls is the
user's own function object, given with each call.
"""

from __future__ import annotations

import builtins

from poet_runtime.backends.base import LoadRequest
from poet_runtime.cache import compile_cached
from poet_runtime.resources import load_facility


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
        load_facility()
        from poet_sandbox.driver import Enhancement

        code = compile_cached(request.code, request.filename)
        namespace = {
            "__name__": f"poet_generated.{request.function_id.replace(':', '.')}",
            "__file__": request.filename,
            "__builtins__": builtins,
        }
        exec(code, namespace)
        namespace["configure"](request.params)
        return InProcessLoaded(Enhancement(namespace), namespace)
