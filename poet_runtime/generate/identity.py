"""A version's key: what a stored version must match to serve a function as it is now.

Its own module, below both ``resolve`` (which looks versions up by it) and the
generators (the LLM generator stores a fallback under the built-in key), so that
neither has to import the other for it.
"""

from __future__ import annotations

import hashlib
import json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from poet_runtime.generate.spec import FunctionSpec


def version_key(spec: FunctionSpec, config, generator, template_version: int) -> str:
    data = {
        "source": spec.source_hash(),
        "config": config.key_data(),
        "generator": f"{generator.id}-{generator.version}",
        "template": template_version,
    }
    extra = getattr(generator, "key_data", None)
    if extra is not None:
        data["generator_config"] = extra()
        # a generator that prompts with the domain templates (the LLM generator)
        if isinstance(data["generator_config"], dict) and "templates" in data["generator_config"]:
            remote = _remote_template_key(config)
            if remote is not None:
                data["remote_template"] = remote
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:32]


def _remote_template_key(config) -> dict | None:
    """The service's template version for the function's domain (``POET_SERVICE_URL``), else None:
    without a service, or while it gives none, the key is what it always was."""
    import sys

    from poet_runtime.settings import get_settings

    served = sys.modules.get("poet_runtime.generate.remote_templates")  # the service's own registry
    if not get_settings().service_url and (served is None or served.active_source() is None):
        return None
    from poet_runtime.generate.remote_templates import key_part

    return key_part(config.domain or "base")
