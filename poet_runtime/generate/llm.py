"""The LLM generator: asks a model (any litellm model string) to write the enhanced module.

Off unless ``model`` is configured (POET_MODEL, --model, [tool.poet] model). The
model writes contract 2 (docs/CONTRACTS.md): Perceive, Operate' (which calls the
logic it is given), Enforce and Train, never a copy of the user's logic. The
built-in generator's output for the same function is both the example in the
prompt (a working baseline to improve) and the fallback: an answer is stored only
after it passes every check in order (syntax, structure, signature, hygiene,
compile, static policy, backend compile, probe runs); a refused answer is sent
back with its reason, three attempts in all, then the built-in version is used.
An answer that re-implements the logic instead of calling it is accepted only for
a pure function, in a sandbox, after probes that also compare the arguments'
state; its metadata says ``"transformed": true`` (``llm_checks``).

litellm is an optional extra and heavy (~4 s, ~200 MB to import): it is imported
only when a request is actually sent, never at start-up; ``check_available``
tells a misconfiguration at start-up without importing it. Every request/answer
pair is cached on disk by the hash of the request, so the same function never
costs two calls, even when its answer was refused.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time

from poet_runtime.errors import CheckFailed, PoetConfigError
from poet_runtime.generate.builtin import BuiltinGenerator, GeneratedCode
from poet_runtime.generate.llm_checks import check_answer
from poet_runtime.generate.llm_extract import extract_code
from poet_runtime.generate.llm_prompt import Prompt, build_prompt

log = logging.getLogger("poet_runtime")

GENERATOR_ID = "llm"
GENERATOR_VERSION = 2  # 2: contract 2 (the logic is passed to operate_prime, never in the module)
ATTEMPTS = 3  # answers asked for per function: the first, then two with the failure reason
TRANSPORT_TRIES = 4  # requests per answer when the server is busy, failing or unreachable
REQUEST_TIMEOUT_S = 120.0  # a long module from a slow model; always passed explicitly
TEMPERATURE = 0.1  # low: we want the safest module, not a creative one
# metadata.json key of a version whose operate_prime re-implements the logic (issue 15, point 12)
TRANSFORMED_KEY = "transformed"


def check_available(settings) -> None:
    """At start-up: a configured model needs the ``llm`` extra. Does not import litellm."""
    if not getattr(settings, "model", None):
        return
    import importlib.util

    if importlib.util.find_spec("litellm") is None:
        raise PoetConfigError(
            f"POET_MODEL / [tool.poet] model is {settings.model!r} but litellm is not installed: "
            "pip install 'poet-runtime[llm]', or unset the model to use the built-in generator"
        )


# -- shared process state: the litellm module, answer caches, the generation slots -----------

_import_lock = threading.Lock()
_litellm = None
_caches: dict = {}
_slots: tuple[int, threading.BoundedSemaphore] | None = None
_slots_lock = threading.Lock()
# Checks are CPU-bound (the GIL serialises them anyway); running them, probe runs included,
# one at a time also keeps RestrictedPython's own parsing off CPython's shared AST state
# (gh-106905; our parses go through generate/parsing.py).
_checks_lock = threading.Lock()


def _import_litellm():
    """Import litellm once, quietly and offline (it fetches a cost map from the network otherwise)."""
    global _litellm
    with _import_lock:
        if _litellm is None:
            os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
            os.environ.setdefault("LITELLM_LOG", "ERROR")
            import litellm

            litellm.suppress_debug_info = True  # no "Give Feedback / Get Help" banners
            litellm.telemetry = False
            logging.getLogger("LiteLLM").setLevel(logging.CRITICAL)  # our own log says what happened
            _litellm = litellm
        return _litellm


def _cache(folder):
    key = os.fspath(folder)
    with _slots_lock:
        cache = _caches.get(key)
        if cache is None:
            import diskcache

            cache = _caches[key] = diskcache.Cache(key, size_limit=256 * 2**20)
        return cache


def generation_slots(limit: int) -> threading.BoundedSemaphore:
    """The process-wide limit on generations running at once (different functions)."""
    global _slots
    with _slots_lock:
        if _slots is None or _slots[0] != limit:
            _slots = (limit, threading.BoundedSemaphore(limit))
        return _slots[1]


class Unavailable(Exception):
    """No answer could be had from the model (transport or provider error)."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class LLMGenerator:
    """See the module docstring. One instance per settings; safe to share between threads."""

    id = GENERATOR_ID
    version = GENERATOR_VERSION

    def __init__(self, model: str, *, api_base: str | None = None, api_key: str | None = None,
                 request_timeout_s: float = 60.0, cache_dir=None, max_concurrent: int = 50,
                 attempts: int = ATTEMPTS, transport_tries: int = TRANSPORT_TRIES,
                 backoff_base_s: float = 0.5, backoff_max_s: float = 8.0, max_tokens: int | None = None,
                 probe_timeout_s: float | None = None):
        self.model = model
        self.api_base = api_base
        self.api_key = api_key
        self.request_timeout_s = request_timeout_s
        self.cache_dir = cache_dir
        self.max_concurrent = max_concurrent
        self.attempts = attempts
        self.transport_tries = transport_tries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.max_tokens = max_tokens
        self.probe_timeout_s = probe_timeout_s  # per probe call; None: the policy's wall_ms, else 2 s

    @classmethod
    def from_settings(cls, settings, **overrides) -> "LLMGenerator":
        values = dict(
            api_base=settings.api_base,
            api_key=settings.api_key,
            # generation_timeout bounds how long a first call waits (enhanced.py), not the request:
            # a slow model may still finish in the background and serve the calls after.
            request_timeout_s=max(settings.generation_timeout, REQUEST_TIMEOUT_S),
            cache_dir=settings.cache_path() / "llm",
            max_concurrent=settings.max_concurrent_generations,
        )
        values.update(overrides)
        return cls(settings.model, **values)

    def key_data(self) -> dict:
        """What, besides the function, decides the version: the model and the prompt templates."""
        from poet_runtime.domains import all_domains

        return {"model": self.model,
                "templates": {name: domain.template_version for name, domain in sorted(all_domains().items())}}

    # -- generation -------------------------------------------------------------------------

    def generate(self, spec, config, domain, hints: dict | None = None) -> GeneratedCode:
        from poet_runtime.policy import effective_policy

        started = time.perf_counter()
        baseline = BuiltinGenerator().generate(spec, config, domain, hints)
        policy = effective_policy(config, spec.function_id)
        prompt = build_prompt(spec, config, domain, baseline, policy)
        details = {
            "model": self.model,
            "prompt_hash": prompt.hash(self.model),
            "template_version": domain.template_version,
            "tokens": {"prompt": 0, "completion": 0},
            "latency_ms": 0.0,
            "attempts": [],
        }
        with generation_slots(self.max_concurrent):
            for number in range(1, self.attempts + 1):
                attempt = {"attempt": number, "prompt_hash": prompt.hash(self.model)}
                details["attempts"].append(attempt)
                try:
                    text = self._ask(prompt, attempt, details)
                except Unavailable as error:
                    attempt.update(result="unavailable", reason=error.reason, detail=error.detail)
                    log.warning("poet_runtime: %s: model %s unavailable (%s): %s; using the built-in generator",
                                spec.function_id, self.model, error.reason, error.detail)
                    return self._fallback(spec, config, domain, baseline, details, started, error.reason,
                                          error.detail, ask_again=True)
                code = extract_code(text)
                try:
                    with _checks_lock:
                        checks, parameters, probe, transformed = check_answer(
                            code, spec, config, baseline, policy, hints or {}, self.probe_timeout_s)
                except CheckFailed as failure:
                    attempt.update(result="refused", reason=failure.reason, detail=failure.detail[:1000])
                    log.info("poet_runtime: %s: answer %d refused (%s): %s", spec.function_id, number,
                             failure.reason, failure.detail)
                    prompt = prompt.with_feedback(text, failure.reason, failure.detail)
                    continue
                attempt.update(result="accepted", checks=checks)
                details.update(checks=checks, probe=probe, generation_ms=_ms_since(started))
                if transformed:
                    # The answer re-implements the (pure) logic instead of calling it: resolve never
                    # verifies it as built-in code, so it runs in the policy's sandbox; versions and
                    # status mark it.
                    details[TRANSFORMED_KEY] = True
                log.info("poet_runtime: %s: answer %d accepted (%s%s)", spec.function_id, number, self.model,
                         ", transformed" if transformed else "")
                return GeneratedCode(
                    code=code,
                    logic_name=baseline.logic_name,
                    parameters=parameters,
                    generator=f"{GENERATOR_ID}-{GENERATOR_VERSION}",
                    template_version=domain.template_version,
                    details=details,
                )
        last = details["attempts"][-1]
        log.warning("poet_runtime: %s: %d answers refused (last: %s); using the built-in generator",
                    spec.function_id, self.attempts, last.get("reason"))
        return self._fallback(spec, config, domain, baseline, details, started, "answers_refused",
                              f"{self.attempts} answers refused; last: {last.get('reason')}: {last.get('detail')}",
                              ask_again=False)

    def _fallback(self, spec, config, domain, baseline, details, started, reason, detail, *, ask_again):
        details.update(fallback={"reason": reason, "detail": detail[:1000]}, generation_ms=_ms_since(started))
        if ask_again:
            # The model could not be reached: store the built-in version under the key the
            # built-in generator would give it, so the next process asks the model again
            # instead of finding this version under the model's key.
            from poet_runtime.generate.identity import version_key

            details["key"] = version_key(spec, config, BuiltinGenerator(), domain.version)
        baseline.notes = [*baseline.notes, f"LLM {self.model}: {reason}: {detail[:300]}"]
        baseline.details = {**baseline.details, **details}
        return baseline

    # -- the model --------------------------------------------------------------------------

    def _ask(self, prompt: Prompt, attempt: dict, details: dict) -> str:
        """The answer text for ``prompt``: from the cache, else from the model (with retries)."""
        key = prompt.hash(self.model)
        cache = _cache(self.cache_dir) if self.cache_dir is not None else None
        if cache is not None:
            try:
                hit = cache.get(key)
            except Exception:  # a broken cache is a miss, never a failure
                hit = None
            if hit is not None:
                attempt.update(cached=True, tokens=hit.get("tokens"))
                return hit["text"]
        litellm = _import_litellm()
        import openai

        errors = []
        attempt["requests"] = 0
        for number in range(1, self.transport_tries + 1):
            attempt["requests"] += 1
            t0 = time.perf_counter()
            try:
                response = litellm.completion(**self._request(prompt))
            except openai.OpenAIError as error:
                elapsed = _ms_since(t0)
                details["latency_ms"] += elapsed
                status = getattr(error, "status_code", None)
                errors.append({"error": type(error).__name__, "status": status, "message": str(error)[:300]})
                attempt["transport_errors"] = errors
                if not _transient(error, openai) or number == self.transport_tries:
                    reason = "llm_unavailable" if _transient(error, openai) else "llm_error"
                    raise Unavailable(reason, f"{type(error).__name__} ({status}): {str(error)[:300]}") from None
                delay = self._backoff(number, error)
                log.info("poet_runtime: model %s: %s (%s); retrying in %.2fs", self.model, type(error).__name__,
                         status, delay)
                time.sleep(delay)
                continue
            except Exception as error:  # anything else litellm raises: a configuration problem, not transient
                errors.append({"error": type(error).__name__, "message": str(error)[:300]})
                attempt["transport_errors"] = errors
                raise Unavailable("llm_error", f"{type(error).__name__}: {str(error)[:300]}") from None
            elapsed = _ms_since(t0)
            details["latency_ms"] += elapsed
            text, tokens = _read(response)
            attempt.update(cached=False, tokens=tokens, latency_ms=elapsed)
            details["tokens"]["prompt"] += tokens.get("prompt", 0)
            details["tokens"]["completion"] += tokens.get("completion", 0)
            if cache is not None:
                try:
                    cache.set(key, {"text": text, "tokens": tokens, "model": self.model})
                except Exception:
                    pass
            return text
        raise AssertionError("unreachable")

    def _request(self, prompt: Prompt) -> dict:
        request = {
            "model": self.model,
            "messages": [dict(message) for message in prompt.messages],
            "temperature": TEMPERATURE,
            "timeout": self.request_timeout_s,
            "max_retries": 0,  # the openai client would retry twice by itself; we retry (and count)
            "num_retries": 0,
        }
        if self.api_base:
            request["api_base"] = self.api_base
        api_key = self.api_key
        if api_key is None and self.api_base and self.model.startswith("openai/") and not os.environ.get("OPENAI_API_KEY"):
            api_key = "no-key"  # a local OpenAI-compatible server needs none, but the client insists on one
        if api_key is not None:
            request["api_key"] = api_key
        if self.max_tokens:
            request["max_tokens"] = self.max_tokens
        return request

    def _backoff(self, number: int, error) -> float:
        retry_after = None
        response = getattr(error, "response", None)
        try:
            retry_after = float(response.headers.get("retry-after")) if response is not None else None
        except (TypeError, ValueError, AttributeError):
            retry_after = None
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.backoff_max_s)
        ceiling = min(self.backoff_base_s * 2 ** (number - 1), self.backoff_max_s)
        return ceiling / 2 + random.uniform(0, ceiling / 2)

def _transient(error, openai) -> bool:
    """429, 5xx, timeouts and refused connections are worth another request; 4xx others are not."""
    if isinstance(error, (openai.APITimeoutError, openai.APIConnectionError, openai.RateLimitError,
                          openai.InternalServerError)):
        return True
    status = getattr(error, "status_code", None)
    return status in (408, 409, 429) or (isinstance(status, int) and status >= 500)


def _read(response) -> tuple[str, dict]:
    try:
        text = response.choices[0].message.content or ""
    except (AttributeError, IndexError, KeyError, TypeError):
        text = ""
    usage = getattr(response, "usage", None)
    tokens = {"prompt": int(getattr(usage, "prompt_tokens", 0) or 0),
              "completion": int(getattr(usage, "completion_tokens", 0) or 0)}
    return text, tokens


def _ms_since(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 3)


__all__ = ["LLMGenerator", "check_available", "generation_slots"]
