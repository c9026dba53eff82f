"""From a function to a runnable enhancement: store lookup, generation, checks, loading.

``ensure_version`` answers "which stored version serves this function as it is now?",
generating and storing one only when none matches the function's key (its source,
its decorator arguments, the generator and the domain template). ``load_version``
hands that version to the backend its policy names.

A stored version is untrusted input until ``inspect_version`` says otherwise: the
digest recorded at creation is the cheap first gate, writing it again the proof for a
built-in version, the per-user HMAC the proof for any other. A damaged version is
repaired as the next version where the runtime can; an unsigned one runs only in the
policy's sandbox (README, "What the store trusts").
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field

from poet_runtime.backends import load_code
from poet_runtime.generate.identity import version_key  # noqa: F401  (part of this module's API)
from poet_runtime.policy import effective_policy as _policy_effective
from poet_runtime.domains import get_domain
from poet_runtime.errors import GenerationError
from poet_runtime.generate.checks import check_generated
from poet_runtime.generate.spec import FunctionSpec
from poet_runtime.store import (DamagedFile, FunctionStore, StoredVersion, is_builtin_generator,  # noqa: F401
                                 parse_checked, report_once)

log = logging.getLogger("poet_runtime")


def select_generator():
    """The generator settings ask for: the built-in one unless a model is configured."""
    from poet_runtime.settings import get_settings

    settings = get_settings()
    if settings.model == "service":  # generation through the POET service (generate/remote_generator.py)
        from poet_runtime.generate.remote_generator import ServiceGenerator

        return ServiceGenerator.from_settings(settings)
    if settings.model:
        from poet_runtime.generate.llm import LLMGenerator

        return LLMGenerator.from_settings(settings)
    from poet_runtime.generate.builtin import BuiltinGenerator

    return BuiltinGenerator()


def ensure_version(spec: FunctionSpec, config, *, module_file: str | None, generate: bool = True,
                   generator=None, hints: dict | None = None) -> StoredVersion:
    """The current version for ``spec``; generated, checked and stored if none matches."""
    try:
        return _ensure_version(spec, config, module_file=module_file, generate=generate, generator=generator,
                               hints=hints)
    except DamagedFile as error:  # the store itself cannot be used (a linked folder): the original runs
        report_once(error)
        raise GenerationError("damaged_version", str(error)) from None


def _ensure_version(spec, config, *, module_file, generate, generator, hints) -> StoredVersion:
    domain = get_domain(config.domain)
    generator = generator or select_generator()
    key = version_key(spec, config, generator, domain.version)
    store = FunctionStore.open(spec.module, spec.qualname, module_file)
    found = _matching(store, key)
    if found is not None:
        return _repaired(store, found, spec, config, domain, generator, key, hints, generate)
    if not generate:
        raise GenerationError("not_generated", f"{spec.function_id}: no stored version matches and generation is off")
    with store.lock():
        found = _matching(store, key)  # another thread or process may have made it meanwhile
        if found is not None:
            return _repaired(store, found, spec, config, domain, generator, key, hints, generate, locked=True)
        return _generate(store, spec, config, domain, generator, key, hints)


def _repaired(store, version, spec, config, domain, generator, key, hints, generate, locked=False) -> StoredVersion:
    """``version``, or the next version that repairs it: damaged code or params of any
    version the runtime can remake, and an unsigned edit of a built-in version where the
    policy would run it in-process. What cannot be repaired here is refused at load."""
    trust = inspect_version(version, spec, config)
    report_trust(trust)
    repair = trust.kind == "damaged" or bool(trust.param_problems)
    if not repair and trust.kind == "unsigned" and trust.claims_builtin:
        try:
            repair = effective_policy(config, spec.function_id).backend == "none"
        except Exception:
            repair = False
    if not repair or not generate:
        return version
    if not locked:
        with store.lock():
            current = store.current()
            if current is not None and current.number != version.number and current.metadata.get("key") == key:
                return current  # another process repaired it meanwhile
            return _repair(store, version, trust, spec, config, domain, generator, key, hints)
    return _repair(store, version, trust, spec, config, domain, generator, key, hints)


def _repair(store, version, trust, spec, config, domain, generator, key, hints) -> StoredVersion:
    reasons = [str(problem) for problem in trust.problems + trust.param_problems] or [trust.detail]
    extra = {"repaired_from": version.number, "repair": reasons[:10]}
    if trust.kind in ("builtin", "signed") and not trust.problems:
        # The code holds; only values are damaged: the same code, damaged values back to their defaults.
        parameters = version.metadata.get("parameters") or {}
        params = {name: entry.get("default") for name, entry in parameters.items() if isinstance(entry, dict)}
        params.update(trust.params)
        try:
            state = version.state()
        except (OSError, ValueError):
            state = {"observations": {}, "audit": []}
        keep = {k: v for k, v in version.metadata.items()
                if k not in ("version", "function", "parent", "created_at", "integrity", "status")}
        new = store.create(trust.text, params, state, {**keep, "status": "current", **extra})
    else:
        learned = (version.metadata.get("builtin_hints") or {}) if trust.claims_builtin else {}
        new = generate_version(store, spec, config, domain=domain, generator=generator, key=key,
                               hints={**learned, **(hints or {})} or None, metadata=extra)
    log.warning("poet_runtime: %s: %s repaired as %s (%s)", spec.function_id, version.name, new.name,
                "; ".join(reasons[:3]))
    return new


@dataclass
class Trust:
    """What ``inspect_version`` found. ``kind``: ``builtin`` (written again byte for byte),
    ``signed`` (its HMAC holds), ``unsigned`` (readable Python nobody vouches for: the policy's
    sandbox only) or ``damaged`` (cannot be used as it is). ``text`` is the code as read and
    checked; load exactly that."""

    version: StoredVersion
    kind: str
    text: str | None
    detail: str = ""
    claims_builtin: bool = False
    problems: list = field(default_factory=list)  # DamagedFile of code.py / metadata
    params: dict = field(default_factory=dict)  # usable values of params.json
    param_problems: list = field(default_factory=list)

    @property
    def code_path(self) -> str:
        return os.fspath(self.version.path / "code.py")


def inspect_version(version: StoredVersion, spec: FunctionSpec | None, config) -> Trust:
    """Check a stored version before anything of it is used (never raises)."""
    claims = is_builtin_generator(version.metadata.get("generator")) and not version.metadata.get("transformed")
    function_id = spec.function_id if spec is not None else version.metadata.get("function")
    params, param_problems = version.params_problems()
    missing = [p for p in param_problems if p.field is None and p.reason == "is missing"]
    param_problems = [p for p in param_problems if p not in missing]
    try:
        check = version.verify_code(function_id)
    except DamagedFile as error:
        return Trust(version, "damaged", None, error.reason, claims, [error], params, param_problems)
    except OSError as error:
        problem = DamagedFile(version.path / "code.py", None, f"cannot be read: {error.strerror or error}")
        return Trust(version, "damaged", None, problem.reason, claims, [problem], params, param_problems)
    trust = Trust(version, "unsigned", check.text, "", claims, list(missing), params, param_problems)
    if claims and check.digest_ok is not False and _is_builtin_text(version, spec, config, check.text):
        trust.kind, trust.detail = "builtin", "written again byte for byte by the built-in generator"
        return trust
    if check.signed:
        trust.kind, trust.detail = "signed", "its signature holds"
        return trust
    try:
        parse_checked(check.text, trust.code_path)
    except DamagedFile as error:
        trust.kind, trust.detail = "damaged", str(error)
        trust.problems.append(error)
        return trust
    if check.digest_ok is False:
        trust.detail = "code.py is not what was stored at creation (edited or tampered; not signed)"
    elif check.signed is False:
        trust.detail = "code.py's signature does not match (tampered, or signed with another key)"
    elif claims:
        trust.detail = "code.py is not what the built-in generator writes for this function"
    else:
        trust.detail = "code.py carries no signature (made before signing, or by hand)"
    return trust


def report_trust(trust: Trust) -> None:
    """Say once per process what is wrong with a version, naming file, version and function."""
    function = trust.version.metadata.get("function") or trust.version.path.parent.name
    for problem in trust.problems + trust.param_problems:
        report_once(DamagedFile(problem.path, problem.field, f"{problem.reason} ({function} {trust.version.name})"))
    if trust.kind == "unsigned":
        report_once(DamagedFile(trust.code_path, None, f"{trust.detail} ({function} {trust.version.name}); it runs "
                                f"only in the policy's sandbox until accepted: python -m poet_runtime versions "
                                f"--accept {function} {trust.version.number}"), "untrusted")


_expected: dict = {}
_expected_lock = threading.Lock()


def _is_builtin_text(version: StoredVersion, spec, config, text: str) -> bool:
    """True when ``text`` is what the built-in generator writes for ``spec``/``config`` and the
    learned values the version was made with (memoized: the generator is deterministic)."""
    if spec is None or config is None:
        return False
    hints = version.metadata.get("builtin_hints")
    try:
        memo = (spec.function_id, spec.source_hash(), json.dumps(config.key_data(), sort_keys=True, default=str),
                json.dumps(hints, sort_keys=True, default=str))
    except Exception:
        memo = None
    with _expected_lock:
        expected = _expected.get(memo) if memo is not None else None
    if expected is None:
        from poet_runtime.generate.builtin import BuiltinGenerator

        try:
            domain = get_domain(config.domain)
            expected = BuiltinGenerator().generate(spec, config, domain, hints).code
        except Exception as error:  # cannot regenerate: not verified, the policy's sandbox runs it
            log.info("poet_runtime: %s: %s not verified: %s: %s", spec.function_id, version.name,
                     type(error).__name__, error)
            return False
        if memo is not None:
            with _expected_lock:
                if len(_expected) > 512:
                    _expected.clear()
                _expected[memo] = expected
    return text == expected


def effective_policy(config, function_id: str):
    """The policy for one function, where a repository's own files may only tighten it.

    ``@poet(policy=...)`` (the program's own code) and ``$POET_POLICY`` (the user) choose
    freely; ``[tool.poet] policy`` in a pyproject.toml found from the working folder may
    choose only a policy at least as tight as ``default`` for this function, unless the
    user opts in (``POET_ALLOW_REPO_POLICY=1``). Weaker: ``default`` applies, said once.
    """
    from poet_runtime.settings import repo_policy_allowed

    policy = _policy_effective(config, function_id)
    if config.policy or os.environ.get("POET_POLICY") or repo_policy_allowed():
        return policy
    from poet_runtime.policy import load_policy

    baseline = load_policy("default").effective_for(function_id)
    weaker = weaker_fields(policy, baseline)
    if not weaker:
        return policy
    from poet_runtime.settings import find_pyproject

    where = find_pyproject() or "pyproject.toml"
    report_once(DamagedFile(where, "[tool.poet] policy",
                            f"weakens the default policy ({', '.join(weaker)}); a repository's "
                            "settings may only tighten it: the default policy applies (POET_POLICY or "
                            "POET_ALLOW_REPO_POLICY=1 lets you choose it)"), "policy_refused")
    return baseline


_BACKEND_RANK = {"none": 0, "restricted": 1, "wasm": 2}


def weaker_fields(policy, baseline) -> list[str]:
    """What of ``policy`` is weaker than ``baseline``: backend, trust, limits, record_inputs."""
    weaker = []
    if _BACKEND_RANK.get(policy.backend, 0) < _BACKEND_RANK.get(baseline.backend, 0):
        weaker.append(f"backend {policy.backend}")
    if set(policy.trust) - set(baseline.trust):
        weaker.append("trust " + ",".join(sorted(set(policy.trust) - set(baseline.trust))))
    for name in ("wall_ms", "cpu_ms", "memory_mb", "max_output_kb"):
        mine, base = getattr(policy.limits, name, None), getattr(baseline.limits, name, None)
        if base is not None and (mine is None or mine > base):
            weaker.append(name)
    if set(policy.limits.imports) - set(baseline.limits.imports):
        weaker.append("imports")
    if set(policy.limits.builtins) - set(baseline.limits.builtins):
        weaker.append("builtins")
    if policy.record_inputs and not baseline.record_inputs:
        weaker.append("record_inputs")
    return weaker


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
    if make_current and status == "current":
        # Identical code under the same key is not a new version (a process that could not
        # reach the model writes the same built-in module another process already stored).
        existing = store.find_key(key)
        try:
            same = existing is not None and existing.code() == generated.code
        except (OSError, ValueError):  # a damaged one is repaired as a new version below
            same = False
        if same:
            if store.current_number() != existing.number:
                store.set_current(existing.number)
            return existing
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
    and compared byte for byte, after the digest recorded at creation (the cheap gate):
    a hand edit, a tampered folder or another generator's answer never matches, and so
    is never taken for the project's own code.
    """
    return inspect_version(version, spec, config).kind == "builtin"


def load_version(version: StoredVersion, *, function_id: str, original, user_globals: dict | None = None,
                 package: str | None = None, policy=None, spec: FunctionSpec | None = None, config=None,
                 verified: bool | None = None):
    """Load ``version`` where it may run; returns the loaded enhancement.

    A verified built-in version runs in-process under any policy that trusts
    ``builtin``; a signed one in the backend the policy names; an unsigned one only in a
    sandbox (refused under backend ``none``); a damaged one nowhere. Damaged values of
    params.json are left out (the module's defaults apply) and reported. ``verified`` is
    accepted for callers that computed it, but the check here decides. ``user_globals``
    and ``package`` are contract 1's and not needed: the logic is the original itself.
    """
    trust = inspect_version(version, spec, config)
    report_trust(trust)
    if trust.kind == "damaged":
        raise GenerationError("damaged_version", f"{function_id} {version.name}: {trust.detail}")
    backend = policy.backend if policy is not None else "none"
    if trust.kind == "unsigned" and backend == "none":
        raise GenerationError(
            "untrusted_version",
            f"{trust.code_path}: {trust.detail}; it is not run in-process (it runs in a sandbox policy, or sign it "
            f"after review: python -m poet_runtime versions --accept {function_id} {version.number})")
    if trust.kind == "builtin" and policy is not None and backend != "none" and "builtin" in getattr(policy, "trust", ()):
        policy = None  # the project's own code: in-process, no sandbox needed
    return load_code(
        trust.text,
        filename=trust.code_path,
        version=version.number,
        params=trust.params,
        is_async=bool(version.metadata.get("is_async")),
        function_id=function_id, original=original, policy=policy,
    )


def describe_trust(version: StoredVersion, spec: FunctionSpec | None, config, policy=None) -> str | None:
    """One phrase for ``status``/``enhance`` when a version is not simply usable, else None."""
    trust = inspect_version(version, spec, config)
    if trust.kind == "damaged":
        return f"damaged: {trust.detail}"
    notes = []
    if trust.param_problems:
        notes.append("params.json damaged: " + "; ".join(f"{p.field or 'file'}: {p.reason}" for p in trust.param_problems[:2]))
    if trust.kind == "unsigned":
        where = "refused in-process under its policy" if policy is not None and policy.backend == "none" \
            else "runs only in the sandbox"
        notes.append(f"untrusted ({trust.detail}; {where})")
    return "; ".join(notes) or None
