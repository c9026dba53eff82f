"""From a function to a runnable enhancement: store lookup, generation, checks, loading.

``ensure_version`` answers "which stored version serves this function as it is now?",
generating and storing one only when none matches the function's key (its source,
its decorator arguments, the generator and the domain template). ``load_version``
hands that version to the backend its policy names.
"""

from __future__ import annotations

import logging
import os

from poet_runtime.backends import load_code
from poet_runtime.generate.identity import version_key  # noqa: F401  (part of this module's API)
from poet_runtime.policy import effective_policy  # noqa: F401  (part of this module's API)
from poet_runtime.domains import get_domain
from poet_runtime.errors import GenerationError
from poet_runtime.generate.checks import check_generated
from poet_runtime.generate.spec import FunctionSpec
from poet_runtime.store import FunctionStore, StoredVersion

log = logging.getLogger("poet_runtime")


def select_generator():
    """The generator settings ask for: the built-in one unless a model is configured."""
    from poet_runtime.settings import get_settings

    settings = get_settings()
    if settings.model:
        from poet_runtime.generate.llm import LLMGenerator

        return LLMGenerator.from_settings(settings)
    from poet_runtime.generate.builtin import BuiltinGenerator

    return BuiltinGenerator()


def ensure_version(spec: FunctionSpec, config, *, module_file: str | None, generate: bool = True,
                   generator=None, hints: dict | None = None) -> StoredVersion:
    """The current version for ``spec``; generated, checked and stored if none matches."""
    domain = get_domain(config.domain)
    generator = generator or select_generator()
    key = version_key(spec, config, generator, domain.version)
    store = FunctionStore.open(spec.module, spec.qualname, module_file)
    found = _matching(store, key)
    if found is not None:
        return found
    if not generate:
        raise GenerationError("not_generated", f"{spec.function_id}: no stored version matches and generation is off")
    with store.lock():
        found = _matching(store, key)  # another thread or process may have made it meanwhile
        if found is not None:
            return found
        return _generate(store, spec, config, domain, generator, key, hints)


def _matching(store: FunctionStore, key: str) -> StoredVersion | None:
    current = store.current()
    if current is not None and current.metadata.get("key") == key:
        return current
    earlier = store.find_key(key)
    if earlier is not None:
        store.set_current(earlier.number)
        return earlier
    return None


def _generate(store, spec, config, domain, generator, key, hints) -> StoredVersion:
    return generate_version(store, spec, config, domain=domain, generator=generator, key=key, hints=hints)


def generate_version(store: FunctionStore, spec: FunctionSpec, config, *, domain=None, generator=None,
                     key: str | None = None, hints: dict | None = None, status: str = "current",
                     make_current: bool = True, metadata: dict | None = None) -> StoredVersion:
    """Generate, check and store one version; the caller holds ``store.lock()``.

    Learning uses it for candidates (``status="candidate"``, ``make_current=False``),
    under the same key as the current version so that promoting one changes nothing else.
    """
    domain = domain or get_domain(config.domain)
    generator = generator or select_generator()
    key = key or version_key(spec, config, generator, domain.version)
    hints = _with_recorded_samples(hints, store, spec, config, generator)
    generated = generator.generate(spec, config, domain, hints)
    filename = str(store.folder / "code.py")
    from poet_runtime.generate.builtin import BuiltinGenerator

    builtin_hints = _builtin_hints(hints) if isinstance(generator, BuiltinGenerator) else None
    checks = check_generated(generated.code, spec, logic_name=generated.logic_name, filename=filename,
                             needs_train=bool(config.optimize_for))
    params = {name: entry["default"] for name, entry in generated.parameters.items()}
    record = {
        "key": key,
        "generator": generated.generator,
        "domain": domain.name,
        "template_version": generated.template_version,
        "objective": config.optimize_for,
        "config": config.key_data(),
        "source_hash": spec.source_hash(),
        "logic_name": generated.logic_name,
        "is_async": spec.is_async,
        "checks": checks,
        "parameters": generated.parameters,
        "status": status,
        **({"builtin_hints": builtin_hints} if builtin_hints else {}),
        **({"notes": generated.notes} if generated.notes else {}),
        **generated.details,
        **(metadata or {}),
    }
    version = store.create(generated.code, params, {"observations": {}, "audit": []}, record,
                           make_current=make_current)
    log.info("poet_runtime: %s: stored %s (%s, %s)", spec.function_id, version.name, generated.generator, status)
    return version


def _with_recorded_samples(hints: dict | None, store: FunctionStore, spec: FunctionSpec, config, generator):
    """``hints`` plus ``samples``: recent recorded real calls, for a generator that probes its answers.

    Only while the function's effective policy has ``record_inputs = true``, and only inputs
    recorded under it (nothing else is ever stored); samples the caller gave are kept as they are.
    """
    from poet_runtime.generate.builtin import BuiltinGenerator

    if isinstance(generator, BuiltinGenerator) or (hints and "samples" in hints):
        return hints
    try:
        if not effective_policy(config, spec.function_id).record_inputs:
            return hints
        from poet_runtime import journal
        from poet_runtime.generate.probes import MAX_SAMPLES

        samples = journal.recorded_samples(store.folder.parent, spec.function_id, MAX_SAMPLES)
    except Exception as error:  # the events are an aid here, never a reason not to generate
        log.warning("poet_runtime: %s: recorded calls not read for probes: %s: %s", spec.function_id,
                    type(error).__name__, error)
        return hints
    return {**(hints or {}), "samples": samples} if samples else hints


def _builtin_hints(hints: dict | None) -> dict | None:
    """What of ``hints`` the built-in generator's output depends on (learned parameter
    values), kept in metadata.json so that the version can be written again to verify it."""
    params = (hints or {}).get("params")
    return {"params": dict(params)} if params else None


def verified_builtin(version: StoredVersion, spec: FunctionSpec | None, config) -> bool:
    """True when ``version`` is exactly what the built-in generator writes for this function.

    The generator is deterministic, so the stored code.py is regenerated from the
    function's spec and config (and the learned values the version was made with)
    and compared byte for byte: a hand edit, a tampered folder or another generator's
    answer never matches, and so is never taken for the project's own code.
    """
    from poet_runtime.generate.builtin import GENERATOR_ID, GENERATOR_VERSION, BuiltinGenerator

    metadata = version.metadata
    if spec is None or config is None or metadata.get("generator") != f"{GENERATOR_ID}-{GENERATOR_VERSION}":
        return False
    if metadata.get("transformed"):
        return False
    try:
        domain = get_domain(config.domain)
        expected = BuiltinGenerator().generate(spec, config, domain, metadata.get("builtin_hints")).code
        return version.code() == expected
    except Exception as error:  # cannot regenerate: not verified, the policy's sandbox runs it
        log.info("poet_runtime: %s: %s not verified: %s: %s", spec.function_id, version.name,
                 type(error).__name__, error)
        return False


def load_version(version: StoredVersion, *, function_id: str, original, user_globals: dict | None = None,
                 package: str | None = None, policy=None, spec: FunctionSpec | None = None, config=None,
                 verified: bool | None = None):
    """Load ``version`` where it may run; returns the loaded enhancement.

    A verified built-in version runs in-process under any policy that trusts
    ``builtin``; anything else runs in the backend the policy names. ``user_globals``
    and ``package`` are contract 1's and not needed: the logic is the original itself.
    """
    if (policy is not None and policy.backend != "none" and "builtin" in getattr(policy, "trust", ())
            and (verified if verified is not None else verified_builtin(version, spec, config))):
        policy = None  # the project's own code: in-process, no sandbox needed
    return load_code(
        version.code(),
        filename=os.fspath(version.path / "code.py"),
        version=version.number,
        params=version.params(),
        is_async=bool(version.metadata.get("is_async")),
        function_id=function_id, original=original, policy=policy,
    )
