"""The checks a model's answer must pass, in order, before it may be stored.

syntax, structure, signature, hygiene, compile (``checks.check_generated``, shared
with the built-in generator), static policy, compile for the restricted backend
when that is where the code will run, the PARAMETERS literal, then probe runs
(``probes``). Each failure is a ``CheckFailed`` whose reason names the check, so the
log, the version's metadata and the model's next prompt all say what was wrong.

An answer whose ``operate_prime`` never uses the logic it is given re-implements the
logic: a *transformed* version (issue 15, point 12). It is accepted only when the
function is pure as far as its source shows (``purity``), the policy runs generated
code in a sandbox (never in-process), and the probe runs agree with the original on
results and on the arguments' state after each call; an answer that could not be
probed is refused. Its metadata then says ``"transformed": true``.

No answer is accepted unprobed (issue 16, item 1): ``probe_plan`` finds the original
(``originals``: imported, or defined from the captured source under ``enhance`` and
for scripts) and the sample inputs before the model is asked; a function without
either is not worth a request. Probe runs that all ended refused by the candidate
and the built-in version alike showed nothing: refused too (``probe_inconclusive``).
"""

from __future__ import annotations

import ast

from poet_runtime.errors import CheckFailed
from poet_runtime.generate.checks import check_generated, operate_calls_logic
from poet_runtime.generate.purity import check_purity
from poet_runtime.generate.static_policy import check_static_policy
from poet_runtime.generate.parsing import parse


class ProbePlan:
    """What the probes of one function need: the original and the sample inputs."""

    def __init__(self, original, samples, source: str):
        self.original = original
        self.samples = samples
        self.source = source  # where the original came from (metadata)


def probe_plan(spec, hints: dict) -> ProbePlan:
    """The original and samples for ``spec``; raises ``CheckFailed("not_probeable", why)``."""
    from poet_runtime.generate import originals, probes

    original, source = (hints["original"], "given") if hints.get("original") else originals.find(spec)
    if original is None:
        raise CheckFailed("not_probeable", f"the original function cannot be run here: {source}")
    samples = probes.sample_inputs(spec, hints.get("samples", ()))
    if not samples:
        raise CheckFailed("not_probeable", "no sample inputs (no recorded calls, doctest examples or usable "
                                           "type hints)")
    return ProbePlan(original, samples, source)


# Refusals no other answer can cure: the model is not asked again for this function.
FINAL_REASONS = ("not_probeable",)


def check_answer(code: str, spec, config, baseline, policy, hints: dict, probe_timeout_s=None, plan=None):
    """Every check in order; returns (names passed, PARAMETERS, probe report, transformed).

    Raises ``CheckFailed``.
    """
    if not code.strip():
        raise CheckFailed("no_code", "the answer holds no Python code")
    plan = plan or probe_plan(spec, hints)
    filename = f"<poet candidate {spec.function_id}>"
    checks = check_generated(code, spec, filename=filename, needs_train=bool(config.optimize_for))
    checks += check_static_policy(code, spec, policy, filename=filename)
    backend = getattr(policy, "backend", "none") if policy is not None else "none"
    transformed = not operate_calls_logic(code)
    if transformed:
        checks.append(_check_transformed(spec, backend))
    if backend == "restricted":
        checks.append(_compile_restricted(code, filename))
    parameters = _parameters(code, filename)
    probe = _probe(code, spec, baseline, parameters, policy, plan, filename, probe_timeout_s, transformed)
    if not probe.get("samples"):
        raise CheckFailed("not_probeable", f"no probe ran: {probe.get('skipped') or 'no samples'}")
    if probe.get("agreed", 0) == probe.get("declined", 0):
        if transformed:
            raise CheckFailed("transformed", "operate_prime does not call the logic, and every probe run was "
                                             "refused: nothing showed the re-implementation computes the same; "
                                             "call logic(*args, **kwargs)")
        # Every sample was refused by the candidate and the built-in version alike: nothing
        # showed the answer computes the right thing, so it is not accepted.
        raise CheckFailed("probe_inconclusive", "every probe input was refused by your module and by the example "
                                                "alike: perceive() must accept the inputs the example accepts")
    checks.append("probe")
    probe["original"] = plan.source
    return checks, parameters, probe, transformed


def _check_transformed(spec, backend: str) -> str:
    """A re-implemented logic: only for a pure function, and only in a sandbox."""
    purity = check_purity(spec)
    if not purity:
        raise CheckFailed("transformed", f"operate_prime does not call the logic it is given, and {spec.qualname} is "
                                         f"not shown to be pure ({purity.explain()}): call logic(*args, **kwargs)")
    if backend == "none":
        raise CheckFailed("transformed", "operate_prime does not call the logic it is given; a re-implementation "
                                         "runs only in a sandbox, and this policy runs generated code in-process: "
                                         "call logic(*args, **kwargs)")
    return "purity"


def _compile_restricted(code: str, filename: str) -> str:
    """Compile as the restricted backend will (its RestrictedPython policy), to fail with a reason now."""
    try:
        from poet_runtime.backends.restricted import harness_module

        errors = harness_module("worker_restrict").compile_module(code, filename)[1]
    except ImportError:  # the backend's own compiler is not there: RestrictedPython's default policy
        try:
            from RestrictedPython import compile_restricted_exec
        except ImportError:
            return "compile_restricted:skipped"
        errors = compile_restricted_exec(code, filename).errors
    if errors:
        raise CheckFailed("compile", "restricted backend: " + "; ".join(errors)[:500])
    return "compile_restricted"


def _parameters(code: str, filename: str) -> dict:
    """The module's PARAMETERS literal (params.json is built from its defaults)."""
    for node in parse(code, filename).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "PARAMETERS" for t in node.targets):
            try:
                value = ast.literal_eval(node.value)
            except (ValueError, TypeError, SyntaxError):
                raise CheckFailed("structure", "PARAMETERS must be a literal dict") from None
            if not isinstance(value, dict) or not all(
                    isinstance(spec, dict) and {"default", "min", "max"} <= spec.keys() for spec in value.values()):
                raise CheckFailed("structure", "PARAMETERS must map names to {'default', 'min', 'max', ...}")
            return value
    raise CheckFailed("structure", "missing PARAMETERS")


def _probe(code, spec, baseline, parameters, policy, plan, filename, timeout_s, transformed=False) -> dict:
    import sys

    from poet_runtime.generate import probes
    from poet_runtime.backends import load_code

    original, samples = plan.original, plan.samples
    module = sys.modules.get(spec.module)
    common = dict(version=0, is_async=spec.is_async, function_id=spec.function_id, original=original,
                  user_globals=getattr(original, "__globals__", {}), package=getattr(module, "__package__", None),
                  policy=policy)
    # The built-in version runs where it will run: in-process under a policy that trusts the
    # built-in generator (it is verified there), else in the policy's backend like the answer.
    baseline_policy = None if policy is None or "builtin" in getattr(policy, "trust", ()) else policy
    limits = getattr(policy, "limits", None)
    wall_ms = getattr(limits, "wall_ms", None)
    report = probes.run_probes(
        candidate_loader=lambda: load_code(code, filename=filename, params={k: v["default"] for k, v in parameters.items()},
                                           **common),
        baseline_loader=lambda: load_code(baseline.code, filename=filename + " (built-in)",
                                          params={k: v["default"] for k, v in baseline.parameters.items()},
                                          **{**common, "policy": baseline_policy}),
        original=original,
        is_async=spec.is_async,
        samples=samples,
        call_timeout_s=timeout_s or (wall_ms / 1000 if wall_ms else probes.PROBE_CALL_TIMEOUT_S),
        transformed=transformed,
        parameters=[p.name for p in spec.params],
    )
    return report.as_dict()
