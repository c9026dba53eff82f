"""Generation through the POET service: ``POET_MODEL=service`` with ``POET_SERVICE_URL``.

The service's ``POST /api/v1/enhance`` writes the module (its built-in generator or its
configured LLM, with an answer cache shared by every client), so a fleet of programs costs
one generation per function instead of one each.

Why the answer is never trusted as it comes: the service is another machine, and what it
sends is code this process will run. So it goes through exactly what an LLM answer goes
through (``llm_checks.check_answer``: syntax, structure, signature, hygiene, compile, the
policy's static rules, the backend's compile, probe runs against the original), and it is
stored as the service's (``service-1``), which ``resolve`` runs only in the policy's sandbox.
Only an answer that is byte for byte what the local built-in generator writes is stored as
built-in code, and ``resolve.verified_builtin`` proves that again by regenerating it at load.
Any failure (unreachable, refused, an answer the checks refuse) gives the local built-in
version, logged and with the reason in its metadata; a service that could not be reached is
asked again by the next process (the version is stored under the built-in key).

stdlib HTTP (``urllib``): nothing to install on a client; the request is bounded by
``POET_LLM_REQUEST_TIMEOUT`` (the service may be asking a model) and runs where any
generation runs (the generation thread), never on a call.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request

from poet_runtime.errors import CheckFailed, PoetConfigError
from poet_runtime.generate.builtin import BuiltinGenerator, GeneratedCode

log = logging.getLogger("poet_runtime")

MODEL_NAME = "service"  # POET_MODEL=service chooses this generator
GENERATOR_ID = "service"
GENERATOR_VERSION = 1
MAX_ANSWER_BYTES = 4 * 1024 * 1024


def check_available(settings) -> None:
    """At start-up: ``POET_MODEL=service`` needs a service to ask."""
    if not settings.service_url:
        raise PoetConfigError("POET_MODEL / [tool.poet] model is 'service' (generation through the POET service) "
                              "but POET_SERVICE_URL is not set: set it to the service's http(s)://host:port")


class ServiceGenerator:
    """See the module docstring. One instance per settings; safe to share between threads."""

    id = GENERATOR_ID
    version = GENERATOR_VERSION
    model = MODEL_NAME

    def __init__(self, url: str, key: str | None, *, timeout_s: float = 300.0, probe_timeout_s: float | None = None):
        self.url = url.rstrip("/")
        self.key = key
        self.timeout_s = timeout_s
        self.probe_timeout_s = probe_timeout_s

    @classmethod
    def from_settings(cls, settings, **overrides) -> "ServiceGenerator":
        from poet_runtime.generate import llm_settings

        values = dict(timeout_s=llm_settings.read().request_timeout_s)
        values.update(overrides)
        return cls(settings.service_url, settings.service_key, **values)

    def key_data(self) -> dict:
        """The service and, as for the LLM generator, the templates (the service's own version of the
        function's domain template joins the key in ``identity.version_key``)."""
        from poet_runtime.domains import all_domains

        return {"service": self.url,
                "templates": {name: domain.template_version for name, domain in sorted(all_domains().items())}}

    # -- generation -------------------------------------------------------------------------

    def generate(self, spec, config, domain, hints: dict | None = None) -> GeneratedCode:
        from poet_runtime.policy import effective_policy

        started = time.perf_counter()
        hints = hints or {}
        baseline = BuiltinGenerator().generate(spec, config, domain, hints)
        details = {"service": self.url}
        if hints.get("params"):
            # Learned values (a learning candidate) are this store's knowledge, not the service's:
            # the local built-in generator writes them in; the service would answer without them.
            details["service_skipped"] = "learned values are written by the local built-in generator"
            return self._as_builtin(baseline, hints, details, started)
        try:
            answer = self._ask(spec, config)
        except CheckFailed as failure:  # unreachable, refused or unreadable: the built-in version, asked again later
            log.warning("poet_runtime: %s: the service at %s gave no enhancement (%s): %s; using the built-in "
                        "generator", spec.function_id, self.url, failure.reason, failure.detail)
            return self._fallback(spec, config, domain, baseline, details, started, failure, ask_again=True)
        code, metadata = answer["code"], answer["metadata"]
        details["service_metadata"] = {key: metadata.get(key) for key in
                                       ("generator", "version_key", "template_version", "cache", "generated_at")}
        if code == baseline.code:
            # Exactly the local built-in module: stored as built-in code, which resolve verifies
            # again by regenerating it (so it runs in-process where the policy trusts built-in code).
            log.info("poet_runtime: %s: the service's answer is the built-in module", spec.function_id)
            return self._as_builtin(baseline, hints, details, started)
        from poet_runtime.generate.llm import TRANSFORMED_KEY, _checks_lock
        from poet_runtime.generate.llm_checks import check_answer

        policy = effective_policy(config, spec.function_id)
        try:
            with _checks_lock:  # the checks run one at a time, as the LLM generator's do
                checks, parameters, probe, transformed = check_answer(
                    code, spec, config, baseline, policy, hints, self.probe_timeout_s)
        except CheckFailed as failure:
            log.warning("poet_runtime: %s: the service's answer was refused by the check %s: %s; using the built-in "
                        "generator", spec.function_id, failure.reason, failure.detail)
            return self._fallback(spec, config, domain, baseline, details, started, failure, ask_again=False)
        details.update(checks=checks, probe=probe, generation_ms=_ms_since(started))
        if transformed:
            details[TRANSFORMED_KEY] = True
        template_version = metadata.get("template_version")
        if isinstance(template_version, bool) or not isinstance(template_version, int):
            template_version = domain.template_version
        log.info("poet_runtime: %s: the service's answer accepted (%s)", spec.function_id, metadata.get("generator"))
        return GeneratedCode(code=code, logic_name=baseline.logic_name, parameters=parameters,
                             generator=f"{GENERATOR_ID}-{GENERATOR_VERSION}", template_version=template_version,
                             details=details)

    @staticmethod
    def _as_builtin(baseline, hints, details, started) -> GeneratedCode:
        """The local built-in module, with what resolve needs to write it again and verify it."""
        details["generation_ms"] = _ms_since(started)
        if hints.get("params"):
            details["builtin_hints"] = {"params": dict(hints["params"])}
        return GeneratedCode(code=baseline.code, logic_name=baseline.logic_name, parameters=baseline.parameters,
                             generator=baseline.generator, template_version=baseline.template_version,
                             notes=list(baseline.notes), details=details)

    def _fallback(self, spec, config, domain, baseline, details, started, failure, *, ask_again):
        details.update(fallback={"reason": failure.reason, "detail": failure.detail[:1000]},
                       generation_ms=_ms_since(started))
        if ask_again:  # stored under the built-in key, so the next process asks the service again
            from poet_runtime.generate.identity import version_key

            details["key"] = version_key(spec, config, BuiltinGenerator(), domain.version)
        baseline.notes = [*baseline.notes, f"service {self.url}: {failure.reason}: {failure.detail[:300]}"]
        baseline.details = {**baseline.details, **details}
        return baseline

    # -- the request --------------------------------------------------------------------------

    def _ask(self, spec, config) -> dict:
        """The service's ``{code, metadata}``; ``CheckFailed`` (reason ``service_*``) for anything else."""
        from poet_runtime.generate.remote_templates import open_url
        from poet_runtime.generate.sources import remembered_source

        module_text = remembered_source(spec.filename) if spec.filename else None
        if module_text is None and spec.filename:
            # Not remembered (no import hook): the file as linecache has it, if it still holds the function.
            import linecache

            text = "".join(linecache.getlines(spec.filename))
            module_text = text if text and spec.source.strip() in text else None
        body = {"source": spec.source, "module": spec.module, "qualname": spec.qualname,
                "module_context": module_text, "config": _config(config)}
        request = urllib.request.Request(f"{self.url}/api/v1/enhance", data=json.dumps(body).encode("utf-8"),
                                         method="POST", headers={"Content-Type": "application/json",
                                                                 "Accept": "application/json"})
        if self.key:
            request.add_header("Authorization", f"Bearer {self.key}")
        try:
            with open_url(request, self.timeout_s) as response:
                raw = response.read(MAX_ANSWER_BYTES + 1)
        except urllib.error.HTTPError as error:
            detail = _problem_detail(error)
            hint = " (POET_SERVICE_KEY needs scope 'write' to generate)" if error.code in (401, 403) else ""
            raise CheckFailed("service_refused", f"HTTP {error.code}: {detail}{hint}") from None
        except (OSError, ValueError) as error:
            reason = getattr(error, "reason", None) or error
            raise CheckFailed("service_unreachable", f"{type(error).__name__}: {reason}") from None
        if len(raw) > MAX_ANSWER_BYTES:
            raise CheckFailed("service_answer", f"the answer is larger than {MAX_ANSWER_BYTES} bytes")
        try:
            answer = json.loads(raw.decode("utf-8"))
        except ValueError as error:
            raise CheckFailed("service_answer", f"the answer is not JSON: {error}") from None
        if not (isinstance(answer, dict) and isinstance(answer.get("code"), str)
                and isinstance(answer.get("metadata"), dict)):
            raise CheckFailed("service_answer", "the answer is not {code, metadata}")
        return answer


def _config(config) -> dict:
    """The decorator's arguments as ``/api/v1/enhance`` takes them (unset ones left out)."""
    values = {"domain": config.domain, "optimize_for": config.optimize_for, "retries": config.retries,
              "timeout": config.timeout, "policy": config.policy, "repair": config.repair}
    if config.domain_options:
        values["domain_options"] = {name: value for name, value in config.domain_options}
    return {name: value for name, value in values.items() if value is not None}


def _problem_detail(error) -> str:
    from poet_runtime.safe_text import visible

    try:
        body = json.loads(error.read(16384).decode("utf-8"))
        text = str(body.get("detail") or body.get("title") or "")
    except Exception:
        text = ""
    return visible(text[:500], allow_newlines=False) or str(error.reason)


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)
