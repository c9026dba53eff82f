"""A candidate version: the generator run again with what learning found, stored beside current.

Why not ``resolve.ensure_version``: it answers "which version serves this function",
and the current version still matches the function's key, so it would return that one.
A candidate must be generated anyway, checked the same way, stored with
``make_current=False`` and status "candidate" under the same key (so that promoting it
needs no other change), and left to the engine to promote or reject.
"""

from __future__ import annotations

from poet_runtime.domains import get_domain
from poet_runtime.generate.checks import check_generated
from poet_runtime.resolve import select_generator, version_key


def generate_candidate(state, store, hints: dict):
    """Generate, check and store a candidate for ``state``'s function; returns the StoredVersion."""
    spec = state.spec()
    config = state.config
    domain = get_domain(config.domain)
    generator = select_generator()
    key = version_key(spec, config, generator, domain.version)
    generated = generator.generate(spec, config, domain, hints)
    checks = check_generated(generated.code, spec, logic_name=generated.logic_name,
                             filename=str(store.folder / "code.py"), needs_train=bool(config.optimize_for))
    params = {name: entry["default"] for name, entry in generated.parameters.items()}
    metadata = {
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
        "status": "candidate",
        "reason": "objective degraded",
        "evidence": hints.get("evidence"),
        **({"notes": generated.notes} if generated.notes else {}),
        **generated.details,
    }
    with store.lock():
        return store.create(generated.code, params, {"observations": {}, "audit": []}, metadata, make_current=False)
