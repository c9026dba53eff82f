"""``redact(value)``: a copy of a value with personal data replaced by stable placeholders.

For functions whose domain says ``pii = "redact"`` (``customer_service``), the runtime
passes what it writes about a call (events, log lines, recorded inputs, LLM prompts
and probes) through this first. E-mail addresses become ``<email:1a2b>``, phone
numbers ``<phone:..>``, Luhn-valid card numbers ``<card:..>`` (four hex digits of a
SHA-256 of the match, so one address reads alike everywhere); containers are walked;
other objects are returned as they are. A value with nothing to redact is returned
as the very same object.

The implementation is the facility library's (``poet_sandbox.pii``), so that
generated code redacts what it notes with the same rules in a sandbox.
"""

from __future__ import annotations

from poet_runtime.resources import load_facility

__all__ = ["redact", "redact_text", "contains_pii"]

load_facility()

from poet_sandbox.pii import contains_pii, redact, redact_text  # noqa: E402
