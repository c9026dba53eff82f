"""``POST /api/v1/enhance``: one generation per function, however many clients ask at once.

Why a cache with single-flight: every instance of a fleet meets the same functions at start-up,
and a generation costs from milliseconds (built-in) to minutes (an LLM). The answer for a
version key (source, decorator config, generator, template: ``generate.identity.version_key``,
the key the runtime stores versions under) is kept in a diskcache in the data dir, shared by
every worker process on that folder. Requests for a key being generated wait for that one
generation: in-process through one asyncio future per key, across processes through a
diskcache lock held while generating.

The client never trusts the answer for being ours (it runs its own checks and sandbox), but the
service checks it too (``generate.checks``), so a broken answer is refused here, not cached.

The service never runs a client's code: the source is parsed, not executed. So with ``--model``
the LLM generator cannot probe a model's answer against the original here (it finds no file to
load the original from), and answers as it does for any unprobeable function: with the built-in
code under the model's key, saying why in ``metadata.details.fallback``. Such an answer is not
cached (the next request asks again).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from poet_runtime.service.problems import Problem

logger = logging.getLogger("poet_runtime")

ANSWER_TTL_S = 7 * 24 * 3600  # an answer is a pure function of its key; the TTL only bounds the folder
CACHE_LIMIT_BYTES = 256 * 1024 * 1024
MAX_SOURCE_CHARS = 2_000_000


class EnhanceConfig(BaseModel):
    """The ``@poet(...)`` arguments, validated as the decorator validates them."""

    model_config = ConfigDict(extra="forbid")

    # Strict types: a value is part of the version key as the client's decorator has it (5 and
    # 5.0 are different keys), so nothing may be converted on the way in.
    domain: Optional[StrictStr] = Field(None, description="base, ml_monitoring, api_operations, ... (default base)")
    optimize_for: Optional[StrictStr] = Field(None, description="an objective the domain knows, e.g. accuracy")
    retries: Optional[StrictInt] = None
    timeout: Optional[Union[StrictInt, StrictFloat]] = None
    policy: Optional[StrictStr] = Field(None, description="default, strict, trusted (a policy file path is the client's)")
    repair: Optional[StrictStr] = Field(None, description="None or 'coerce'")
    domain_options: Optional[dict[StrictStr, Union[StrictInt, StrictFloat]]] = None
    enable_training: Optional[StrictBool] = None


class EnhanceRequest(BaseModel):
    """A function to enhance, as the runtime knows it."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(..., max_length=MAX_SOURCE_CHARS,
                        description="the function's definition, decorators included (any indentation)")
    module: str = Field(..., min_length=1, max_length=500, description="the module's name as the store knows it")
    qualname: str = Field(..., min_length=1, max_length=500, description="e.g. fetch, Model.predict")
    module_context: Optional[str] = Field(
        None, max_length=MAX_SOURCE_CHARS,
        description="the text of the function's module (what it was compiled from): with it the generator sees "
        "the module's imports and the classes its hints name, and the version key equals the runtime's; "
        "without it, `source` alone is read as the module")
    config: EnhanceConfig = Field(default_factory=EnhanceConfig)


class EnhanceMetadata(BaseModel):
    model_config = ConfigDict(extra="allow")

    generator: str = Field(..., description="who wrote the code: builtin, or llm:<model>")
    version_key: str = Field(..., description="the key the runtime stores this version under")
    template_version: int
    domain: str
    objective: Optional[str] = None
    logic_name: str
    parameters: dict[str, Any]
    checks: list[str] = Field(..., description="the generated-code checks the service ran and passed")
    source_hash: str
    notes: list[str] = []
    details: dict[str, Any] = {}
    cache: str = Field(..., description="miss (generated for this request), hit (from the answer cache) or "
                       "shared (waited for another request's generation)")
    generated_at: str


class EnhanceResponse(BaseModel):
    code: str = Field(..., description="the generated module (contract 2, docs/CONTRACTS.md); unverified "
                      "code to the client until its own checks pass")
    metadata: EnhanceMetadata


def _spec(request: EnhanceRequest):
    from poet_runtime.errors import GenerationError
    from poet_runtime.generate.spec import spec_from_source

    source = textwrap.dedent(request.source)
    try:
        if request.module_context is not None:
            spec = spec_from_source(request.module, request.qualname, request.module_context, None)
            if spec.source.strip() != source.strip():
                raise Problem(422, "source-mismatch",
                              f"source: is not the text of {request.qualname} in module_context "
                              "(send the module the function was compiled from)", field="source")
            return spec
        name = request.qualname.rsplit(".", 1)[-1]
        spec = spec_from_source(request.module, name, source, None)
        return dataclasses.replace(spec, qualname=request.qualname)
    except GenerationError as error:
        where = "module_context" if request.module_context is not None else "source"
        raise Problem(422, "source-not-usable", f"{where}: {error.detail}", field=where) from None
    except SyntaxError as error:
        where = "module_context" if request.module_context is not None else "source"
        raise Problem(422, "source-not-usable", f"{where}: line {error.lineno}: {error.msg}", field=where) from None


def _config(request: EnhanceRequest, function_id: str):
    from poet_runtime.decorator import PoetConfig
    from poet_runtime.errors import PoetConfigError

    values = request.config.model_dump(exclude_none=True)
    try:
        return PoetConfig.from_kwargs(function_id, **values)
    except (PoetConfigError, TypeError, ValueError) as error:
        field = next((f"config.{name}" for name in values if f"{name}=" in str(error)), "config")
        raise Problem(422, "config-not-valid", f"{field}: {error}", field=field) from None


class Generations:
    """The answer cache and the generator of one service."""

    def __init__(self, data_dir: Path, model: str | None, counters=None):
        self.folder = Path(data_dir) / "answers"
        self.model = model
        self.counters = counters  # metrics.Counters or None
        self._cache = None
        self._cache_lock = threading.Lock()
        self._generator = None
        self._inflight: dict[str, asyncio.Future] = {}

    def cache(self):
        with self._cache_lock:
            if self._cache is None:
                import diskcache

                self._cache = diskcache.Cache(str(self.folder), size_limit=CACHE_LIMIT_BYTES)
            return self._cache

    def generator(self):
        with self._cache_lock:  # one generator per service, however many threads ask first
            return self._make_generator()

    def _make_generator(self):
        if self._generator is None:
            if self.model:
                from poet_runtime import settings
                from poet_runtime.generate.llm import LLMGenerator

                self._generator = LLMGenerator.from_settings(settings.override(model=self.model))
            else:
                from poet_runtime.generate.builtin import BuiltinGenerator

                self._generator = BuiltinGenerator()
        return self._generator

    def prepare(self, request: EnhanceRequest):
        """(spec, config, domain, key); a Problem naming the field for a request that cannot be generated."""
        from poet_runtime.domains import get_domain
        from poet_runtime.generate.identity import version_key

        spec = _spec(request)
        config = _config(request, spec.function_id)
        domain = get_domain(config.domain)
        return spec, config, domain, version_key(spec, config, self.generator(), domain.version)

    async def enhance(self, request: EnhanceRequest) -> dict:
        from starlette.concurrency import run_in_threadpool

        spec, config, domain, key, found = await run_in_threadpool(self._prepare_and_look, request)
        if found is not None:  # the common case after start-up: one thread hop, no generation
            self._count("hit")
            return _with_cache(found, "hit")
        waiting = self._inflight.get(key)
        if waiting is not None:
            answer = await asyncio.shield(waiting)
            self._count("shared")
            return _with_cache(answer, "shared")
        future = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            answer, how = await run_in_threadpool(self._lookup_or_generate, spec, config, domain, key)
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved: the waiters (if any) get it; no "never retrieved" warning
            raise
        else:
            future.set_result(answer)
        finally:
            self._inflight.pop(key, None)
        self._count(how)
        return _with_cache(answer, how)

    def _count(self, how: str) -> None:
        if self.counters is not None:
            self.counters.inc("poet_service_enhance_answers_total", {"cache": how})

    def _prepare_and_look(self, request: EnhanceRequest):
        spec, config, domain, key = self.prepare(request)
        return spec, config, domain, key, self.cache().get(key)

    def _lookup_or_generate(self, spec, config, domain, key) -> tuple[dict, str]:
        import diskcache

        cache = self.cache()
        found = cache.get(key)
        if found is not None:
            return found, "hit"
        # Another process on this data dir may be generating the same key: wait for it.
        with diskcache.Lock(cache, "generating:" + key, expire=900):
            found = cache.get(key)
            if found is not None:
                return found, "shared"
            answer = self._generate(spec, config, domain, key)
            if not answer["metadata"]["details"].get("fallback"):
                cache.set(key, answer, expire=ANSWER_TTL_S)
            return answer, "miss"

    def _generate(self, spec, config, domain, key) -> dict:
        from poet_runtime.errors import CheckFailed, GenerationError
        from poet_runtime.generate.checks import check_generated

        generator = self.generator()
        started = time.perf_counter()
        outcome = "ok"
        try:
            generated = generator.generate(spec, config, domain, None)
            checks = check_generated(generated.code, spec, logic_name=generated.logic_name,
                                     filename=f"<enhance {spec.function_id}>", needs_train=bool(config.optimize_for))
        except CheckFailed as error:
            outcome = "refused"
            logger.warning("poet service: %s: generated code refused by check %s: %s", spec.function_id,
                           error.reason, error.detail)
            raise Problem(502, "generation-refused", f"the generated code failed the {error.reason} check: "
                          f"{error.detail}", reason=error.reason) from None
        except GenerationError as error:
            outcome = "failed"
            status = 422 if error.reason in ("unsupported", "no_source") else 502
            raise Problem(status, "generation-failed", f"{spec.function_id}: {error.reason}: {error.detail}",
                          reason=error.reason) from None
        finally:
            if self.counters is not None:
                seconds = time.perf_counter() - started
                self.counters.inc("poet_service_generations_total", {"generator": generator.id, "outcome": outcome})
                self.counters.observe("poet_service_generation_seconds", {"generator": generator.id}, seconds)
        metadata = {
            "generator": generated.generator, "version_key": key, "template_version": generated.template_version,
            "domain": domain.name, "objective": config.optimize_for, "logic_name": generated.logic_name,
            "parameters": generated.parameters, "checks": checks, "source_hash": spec.source_hash(),
            "notes": list(generated.notes), "details": dict(generated.details),
            "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        logger.info("poet service: generated %s (%s, key %s)", spec.function_id, generated.generator, key[:12])
        return {"code": generated.code, "metadata": metadata}


def _with_cache(answer: dict, how: str) -> dict:
    return {"code": answer["code"], "metadata": {**answer["metadata"], "cache": how}}
