"""The LLM generator: asks a model (any litellm model string) to write the enhanced module.

Off unless ``model`` is configured (POET_MODEL, --model, [tool.poet] model). The
model writes contract 2 (docs/CONTRACTS.md): Perceive, Operate' (which calls the
logic it is given), Enforce and Train, never a copy of the user's logic. The
built-in generator's output for the same function is both the example in the
prompt (a working baseline to improve) and the fallback: an answer is stored only
after it passes every check in order (syntax, structure, signature, hygiene,
compile, static policy, backend compile, probe runs). An answer that could not be
probed is never accepted, so a function whose original cannot be run or sampled is
not sent to the model at all (``llm_checks.probe_plan``).

Sized for small local models (issue 16): the prompt is budgeted to the model's
context (``llm_context``): the whole module when it fits, the example without
docstrings and comments when that fits, else only the Enforce rules as JSON
(``llm_parts``), assembled by the built-in generator. Each attempt is one streamed
request under ``POET_LLM_REQUEST_TIMEOUT``, closed when it runs out (``llm_request``),
with ``max_tokens`` always sent; a refused or cut-off answer is asked again with the
refusal and the offending lines (never the whole answer), three attempts in all,
with a back-off after a transient error. A function whose model failed is not asked
again before ``POET_LLM_BACKOFF`` (``llm_backoff``). Outside ``enhance`` a generation
runs in a detached generator process, so it survives the program (``pending``).
Each attempt is a ``generation.attempt`` event and is kept in metadata.json.

An answer that re-implements the logic instead of calling it is accepted only for
a pure function, in a sandbox, after probes that also compare the arguments'
state; its metadata says ``"transformed": true`` (``llm_checks``).

litellm is an optional extra and heavy (~4 s, ~200 MB to import): it is imported
only when a request is actually sent, never at start-up; ``check_available``
tells a misconfiguration at start-up without importing it. Every request/answer
pair is cached on disk by the hash of the request, so the same request never
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
from poet_runtime.generate.llm_checks import FINAL_REASONS, check_answer
from poet_runtime.generate.llm_extract import extract_code
from poet_runtime.generate.llm_prompt import Prompt, build_prompt
from poet_runtime.generate.llm_settings import DEFAULT_REQUEST_TIMEOUT_S

log = logging.getLogger("poet_runtime")

GENERATOR_ID = "llm"
GENERATOR_VERSION = 2  # 2: contract 2 (the logic is passed to operate_prime, never in the module)
ATTEMPTS = 3  # answers asked for per function, one request each: the first, then two with the refusal
TEMPERATURE = 0.1  # low: we want the safest module, not a creative one
# metadata.json key of a version whose operate_prime re-implements the logic (issue 15, point 12)
TRANSFORMED_KEY = "transformed"


def check_available(settings) -> None:
    """At start-up: a configured model needs the ``llm`` extra. Does not import litellm."""
    if not getattr(settings, "model", None):
        return
    if settings.model == "service":  # the POET service generates; no litellm needed here
        from poet_runtime.generate.remote_generator import check_available as check_service

        return check_service(settings)
    import importlib.util

    from poet_runtime.generate import llm_settings

    llm_settings.read()  # a bad POET_LLM_* value is a start-up error naming the variable

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


from poet_runtime.generate.llm_request import Unavailable  # noqa: E402  (re-exported)


class LLMGenerator:
    """See the module docstring. One instance per settings; safe to share between threads."""

    id = GENERATOR_ID
    version = GENERATOR_VERSION

    def __init__(self, model: str, *, api_base: str | None = None, api_key: str | None = None,
                 request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S, cache_dir=None, max_concurrent: int = 50,
                 attempts: int = ATTEMPTS, backoff_base_s: float = 0.5, backoff_max_s: float = 8.0,
                 max_tokens: int | None = None, context: int | None = None, probe_timeout_s: float | None = None,
                 ask_backoff_s: float = 0.0, worker: bool = False, parts: str = "auto"):
        self.model = model
        self.api_base = api_base
        self.api_key = api_key
        self.request_timeout_s = request_timeout_s  # one request's whole time; then its stream is closed
        self.cache_dir = cache_dir
        self.max_concurrent = max_concurrent
        self.attempts = attempts  # answers asked for; one request each
        self.backoff_base_s = backoff_base_s  # between attempts after a transient error
        self.backoff_max_s = backoff_max_s
        self.max_tokens = max_tokens  # None: derived from the contract (llm_settings.auto_max_tokens)
        self.context = context  # None: asked (llm_context)
        self.probe_timeout_s = probe_timeout_s  # per probe call; None: the policy's wall_ms, else 2 s
        self.ask_backoff_s = ask_backoff_s  # no new question for the same key this long after a failure
        self.worker = worker  # generate in a detached generator process (pending.py)
        self.parts = parts  # "auto": the Enforce rules as JSON when a module does not fit; "always"; "never"

    @classmethod
    def from_settings(cls, settings, **overrides) -> "LLMGenerator":
        from poet_runtime.generate import llm_settings

        own = llm_settings.read()
        values = dict(
            api_base=settings.api_base,
            api_key=settings.api_key,
            request_timeout_s=own.request_timeout_s,
            cache_dir=settings.cache_path() / "llm",
            max_concurrent=settings.max_concurrent_generations,
            max_tokens=own.max_tokens,
            context=own.context,
            ask_backoff_s=own.backoff_s,
            worker=own.worker,
        )
        values.update(overrides)
        return cls(settings.model, **values)

    def key_data(self) -> dict:
        """What, besides the function, decides the version: the model and the prompt templates."""
        from poet_runtime.domains import all_domains

        if self.worker is True and threading.current_thread().name.startswith("poet-generate-"):
            # The first thing a program's generation thread asks: from here until the work is
            # handed to a generator process, the program's exit waits a little for it.
            from poet_runtime.generate.pending import expect_handover

            expect_handover()

        return {"model": self.model,
                "templates": {name: domain.template_version for name, domain in sorted(all_domains().items())}}

    # -- generation -------------------------------------------------------------------------

    def generate(self, spec, config, domain, hints: dict | None = None) -> GeneratedCode:
        # A generation a program's first call started (the runtime's generation thread,
        # enhanced.FunctionState._start_background) runs in a generator process of its own, so it
        # outlives the program; "join" (enhance) waits for one already running, else generates
        # here. Anything else (a candidate for learning, a direct ensure_version) runs here.
        if self.worker == "join" or (self.worker and threading.current_thread().name.startswith("poet-generate-")):
            from poet_runtime.generate import pending

            return pending.generate_in_worker(self, spec, config, domain, hints, spawn=self.worker != "join")
        return self.generate_here(spec, config, domain, hints)

    def generate_here(self, spec, config, domain, hints: dict | None = None) -> GeneratedCode:
        from poet_runtime.generate import llm_backoff
        from poet_runtime.generate.identity import version_key
        from poet_runtime.generate.llm_checks import probe_plan
        from poet_runtime.policy import effective_policy

        started = time.perf_counter()
        hints = hints or {}
        baseline = BuiltinGenerator().generate(spec, config, domain, hints)
        policy = effective_policy(config, spec.function_id)
        template = _template_source(domain)
        details = {
            "model": self.model,
            "template_version": template["version"],
            **({"template_source": template["source"]} if template["source"] != "local" else {}),
            "tokens": {"prompt": 0, "completion": 0},
            "latency_ms": 0.0,
            "attempts": [],
        }
        key = version_key(spec, config, self, domain.version)
        try:
            plan = probe_plan(spec, hints)
        except CheckFailed as failure:
            # Nothing the model answers could be accepted: it is not asked (issue 16, item 1).
            log.warning("poet_runtime: %s: the model is not asked: %s; using the built-in generator",
                        spec.function_id, failure.detail)
            return self._fallback(spec, config, domain, baseline, details, started, failure.reason, failure.detail,
                                  ask_again=False)
        waiting = llm_backoff.active(spec, key, self.model) if self.ask_backoff_s > 0 else None
        if waiting is not None:
            detail = (f"not asked again before {time.strftime('%H:%M:%S', time.localtime(waiting['until']))} "
                      f"(POET_LLM_BACKOFF): last time {waiting.get('reason')}: {waiting.get('detail')}")
            log.info("poet_runtime: %s: %s", spec.function_id, detail)
            return self._fallback(spec, config, domain, baseline, details, started, "llm_backoff", detail,
                                  ask_again=True)
        context, context_source = self._context()
        details["context"] = {"tokens": context, "from": context_source}
        mode, prompt, max_tokens = self._plan_request(spec, config, domain, baseline, policy, context)
        details["request"] = mode
        if mode == "none":
            detail = (f"the model's context ({context} tokens, {context_source}) holds neither the module's prompt "
                      "nor the rules' prompt with room for an answer")
            return self._fallback(spec, config, domain, baseline, details, started, "context_too_small", detail,
                                  ask_again=False)
        scrub = _scrubber(domain)
        prompt = _scrub_prompt(prompt, scrub)
        details["prompt_hash"] = prompt_hash(prompt, self.model)
        with generation_slots(self.max_concurrent):
            for number in range(1, self.attempts + 1):
                attempt = {"attempt": number, "request": mode, "prompt_hash": prompt_hash(prompt, self.model),
                           "model": self.model, "max_tokens": max_tokens}
                details["attempts"].append(attempt)
                try:
                    answer = self._ask(prompt, attempt, details, max_tokens, mode)
                except Unavailable as error:
                    attempt.update(result="unavailable", reason=error.reason, detail=error.detail)
                    _emit_attempt(spec, attempt)
                    if error.reason == "llm_context" and number < self.attempts and mode != "rules":
                        # The server's context is smaller than we were told: below this prompt.
                        from poet_runtime.generate.llm_context import estimate_tokens

                        context = min(context, estimate_tokens(prompt.text()) - 1)
                        details["context"] = {"tokens": context, "from": "the server refused a larger prompt"}
                        mode, prompt, max_tokens = self._plan_request(spec, config, domain, baseline, policy, context)
                        prompt = _scrub_prompt(prompt, scrub)
                        details["request"] = mode
                        if mode != "none":
                            continue
                    if error.transient and number < self.attempts:
                        delay = self._backoff(number, error)
                        log.info("poet_runtime: %s: model %s: %s; attempt %d in %.2fs", spec.function_id,
                                 self.model, error.detail, number + 1, delay)
                        time.sleep(delay)
                        continue
                    log.warning("poet_runtime: %s: model %s unavailable (%s): %s; using the built-in generator",
                                spec.function_id, self.model, error.reason, error.detail)
                    llm_backoff.record(spec, key, self.model, error.reason, error.detail, self.ask_backoff_s)
                    return self._fallback(spec, config, domain, baseline, details, started, error.reason,
                                          error.detail, ask_again=True)
                try:
                    if answer.finish_reason == "length":
                        raise CheckFailed("truncated", f"the answer was cut off at max_tokens={max_tokens} "
                                                       f"({answer.tokens.get('completion')} tokens)")
                    with _checks_lock:
                        code, checks, parameters, probe, transformed = self._judge(
                            answer.text, mode, spec, config, domain, baseline, policy, hints, plan)
                except CheckFailed as failure:
                    if scrub is not None:  # pii = "redact": a probe's values never reach the prompt or the store
                        failure = CheckFailed(failure.reason, scrub(failure.detail))
                    attempt.update(result="refused", reason=failure.reason, detail=failure.detail[:1000])
                    _emit_attempt(spec, attempt)
                    log.info("poet_runtime: %s: answer %d refused (%s): %s", spec.function_id, number,
                             failure.reason, failure.detail)
                    if failure.reason in FINAL_REASONS:
                        break
                    prompt = _scrub_prompt(self._reask(prompt, mode, answer, failure, max_tokens, number + 1), scrub)
                    continue
                attempt.update(result="accepted", checks=checks)
                _emit_attempt(spec, attempt)
                if scrub is not None:
                    from poet_runtime.redact import redact

                    probe = redact(probe)
                details.update(checks=checks, probe=probe, generation_ms=_ms_since(started))
                if mode == "rules":
                    details["parts"] = "enforce_rules"
                    # The rules may change nothing (a result they cannot apply to): say so, so that
                    # an accepted answer is not taken for an improvement.
                    details["parts_effect"] = "none" if code == baseline.code else "rules added"
                if transformed:
                    # The answer re-implements the (pure) logic instead of calling it: resolve never
                    # verifies it as built-in code, so it runs in the policy's sandbox; versions and
                    # status mark it.
                    details[TRANSFORMED_KEY] = True
                log.info("poet_runtime: %s: answer %d accepted (%s%s)", spec.function_id, number, self.model,
                         ", transformed" if transformed else "")
                llm_backoff.clear(spec, key)
                return GeneratedCode(
                    code=code,
                    logic_name=baseline.logic_name,
                    parameters=parameters,
                    generator=f"{GENERATOR_ID}-{GENERATOR_VERSION}",
                    template_version=template["version"],
                    details=details,
                )
        last = details["attempts"][-1]
        count = len(details["attempts"])
        answers = f"{count} answer{'s' if count != 1 else ''}"
        log.warning("poet_runtime: %s: %s refused (last: %s); using the built-in generator",
                    spec.function_id, answers, last.get("reason"))
        detail = f"{answers} refused; last: {last.get('reason')}: {last.get('detail')}"
        llm_backoff.record(spec, key, self.model, "answers_refused", detail, self.ask_backoff_s)
        return self._fallback(spec, config, domain, baseline, details, started, "answers_refused", detail,
                              ask_again=False)

    # -- what to ask, and how to judge the answer -------------------------------------------

    def _context(self) -> tuple[int, str]:
        from poet_runtime.generate.llm_context import context_size

        return context_size(self.model, self.api_base, self.context, self.api_key)

    def _plan_request(self, spec, config, domain, baseline, policy, context: int):
        """(mode, prompt, max_tokens): the whole module when it fits the context, compact if need
        be, else the Enforce rules as JSON (``llm_parts``); mode "none" when nothing fits."""
        from poet_runtime.generate import llm_parts
        from poet_runtime.generate.llm_context import estimate_tokens
        from poet_runtime.generate.llm_prompt import compact_code
        from poet_runtime.generate.llm_settings import auto_max_tokens

        if self.parts != "always":
            # An answer needs at least the compact module's size; the cap is the setting or the
            # contract's size, never more than the context leaves.
            needed = int(estimate_tokens(compact_code(baseline.code)) * 1.2)
            wanted = self.max_tokens or auto_max_tokens(baseline.code)
            for compact in (False, True):
                prompt = build_prompt(spec, config, domain, baseline, policy, compact=compact)
                room = context - estimate_tokens(prompt.text()) - 16
                if room >= needed:
                    return ("module_compact" if compact else "module"), prompt, min(wanted, room)
            if self.parts == "never":
                return "none", None, 0
        prompt = Prompt(llm_parts.build_messages(spec, domain), domain.template_version, answer_kind="rules")
        room = context - estimate_tokens(prompt.text()) - 16
        wanted = self.max_tokens or 400
        if room < 96:
            return "none", None, 0
        return "rules", prompt, min(wanted, room)

    def _judge(self, text, mode, spec, config, domain, baseline, policy, hints, plan):
        from poet_runtime.generate import llm_parts

        if mode == "rules":
            rules = llm_parts.parse_rules(text)
            assembled = llm_parts.assemble(spec, config, domain, hints, rules)
            code = assembled.code
        else:
            code = extract_code(text)
        checks, parameters, probe, transformed = check_answer(
            code, spec, config, baseline, policy, hints, self.probe_timeout_s, plan=plan)
        if mode == "rules":
            checks = ["rules", *checks]
        return code, checks, parameters, probe, transformed

    @staticmethod
    def _reask(prompt, mode, answer, failure, max_tokens, number):
        if failure.reason == "truncated":
            return prompt.with_feedback(answer.text, failure.reason, failure.detail, attempt=number,
                                        truncated_at=answer.tokens.get("completion") or max_tokens)
        return prompt.with_feedback(answer.text, failure.reason, failure.detail, attempt=number)

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

    def _ask(self, prompt: Prompt, attempt: dict, details: dict, max_tokens: int, mode: str):
        """The answer for ``prompt``: from the cache, else one request to the model."""
        from poet_runtime.generate import llm_request

        key = prompt_hash(prompt, self.model, max_tokens)
        cache = _cache(self.cache_dir) if self.cache_dir is not None else None
        if cache is not None:
            try:
                hit = cache.get(key)
            except Exception:  # a broken cache is a miss, never a failure
                hit = None
            if hit is not None:
                attempt.update(cached=True, tokens=hit.get("tokens"), finish_reason=hit.get("finish_reason"))
                return llm_request.Answer(hit["text"], hit.get("tokens") or {}, hit.get("finish_reason"), 0.0)
        litellm = _import_litellm()
        attempt["requests"] = 1
        started = time.perf_counter()
        try:
            answer = llm_request.ask(litellm, self._request(prompt, max_tokens, mode), self.request_timeout_s)
        except Unavailable as error:
            elapsed = _ms_since(started)  # a timed-out request is model time too
            attempt.update(latency_ms=elapsed, transport_errors=[{"error": error.reason, "status": error.status,
                                                                  "message": error.detail[:300]}])
            details["latency_ms"] += elapsed
            raise
        details["latency_ms"] += answer.latency_ms
        attempt.update(cached=False, tokens=answer.tokens, latency_ms=answer.latency_ms,
                       finish_reason=answer.finish_reason)
        details["tokens"]["prompt"] += answer.tokens.get("prompt", 0)
        details["tokens"]["completion"] += answer.tokens.get("completion", 0)
        if cache is not None:
            try:
                cache.set(key, {"text": answer.text, "tokens": answer.tokens, "model": self.model,
                                "finish_reason": answer.finish_reason})
            except Exception:
                pass
        return answer

    def _request(self, prompt: Prompt, max_tokens: int | None = None, mode: str = "module") -> dict:
        request = {
            "model": self.model,
            "messages": [dict(message) for message in prompt.messages],
            "temperature": TEMPERATURE,
            "max_retries": 0,  # the openai client would retry twice by itself: one attempt, one request
            "num_retries": 0,
        }
        if max_tokens:
            request["max_tokens"] = max_tokens
        if mode == "rules":
            from poet_runtime.generate.llm_parts import response_format

            request["response_format"] = response_format()
        if self.api_base:
            request["api_base"] = self.api_base
        api_key = self.api_key
        if api_key is None and self.api_base and self.model.startswith("openai/") and not os.environ.get("OPENAI_API_KEY"):
            api_key = "no-key"  # a local OpenAI-compatible server needs none, but the client insists on one
        if api_key is not None:
            request["api_key"] = api_key
        return request

    def _backoff(self, number: int, error) -> float:
        if error.retry_after is not None:
            return min(max(error.retry_after, 0.0), self.backoff_max_s)
        ceiling = min(self.backoff_base_s * 2 ** (number - 1), self.backoff_max_s)
        return ceiling / 2 + random.uniform(0, ceiling / 2)


def _scrubber(domain):
    """``redact_text`` for a domain whose spec says ``pii = "redact"``, else None."""
    if getattr(domain, "pii", None) != "redact":
        return None
    from poet_runtime.redact import redact_text

    return redact_text


def _scrub_prompt(prompt, scrub):
    """``prompt`` with personal data in its messages replaced (the source's examples, a refusal's values)."""
    if scrub is None or prompt is None:
        return prompt
    messages = tuple({**message, "content": scrub(message["content"])} for message in prompt.messages)
    return Prompt(messages, prompt.template_version, prompt.compact, prompt.answer_kind)


def prompt_hash(prompt: Prompt, model: str, max_tokens: int | None = None) -> str:
    """The cache key of a request: the prompt, the model and the answer's cap."""
    base = prompt.hash(model)
    return base if not max_tokens else f"{base}-{max_tokens}"


def _template_source(domain) -> dict:
    """Which template the prompt is built from: the service's (POET_SERVICE_URL) or the package's."""
    from poet_runtime.generate.llm_prompt import remote_template

    remote = remote_template(domain)
    if remote is None:
        return {"version": domain.template_version, "source": "local"}
    from poet_runtime.settings import get_settings

    # inside the service itself (remote_templates.served_by) there is no URL: its own registry
    return {"version": remote.version, "source": get_settings().service_url or "service registry"}


def _emit_attempt(spec, attempt: dict) -> None:
    """Each attempt is an event (``generation.attempt``): in-process, and in the durable journal."""
    from poet_runtime import events

    fields = {k: attempt.get(k) for k in ("attempt", "request", "model", "result", "reason", "detail", "tokens",
                                          "latency_ms", "cached", "finish_reason", "max_tokens")}
    events.emit("generation.attempt", function=spec.function_id, **fields)
    try:
        from poet_runtime.generate.generation_events import write

        write(spec, fields)
    except Exception as error:  # noqa: BLE001 - an event that cannot be written never stops generation
        log.debug("poet_runtime: generation event not written: %s", error)


def _ms_since(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 3)


__all__ = ["LLMGenerator", "check_available", "generation_slots"]
