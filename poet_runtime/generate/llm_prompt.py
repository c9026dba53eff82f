"""The request the LLM generator sends: a domain template filled from the function's spec.

Kept apart from the HTTP side so that the prompt can be built, read and tested
without importing litellm. The template is plain text with ``${field}`` names
(``string.Template``: the code pasted into it is full of braces, which
``str.format`` would choke on). What a template can say is fixed here; what it
says is in ``poet_runtime/domains/<domain>/template.txt``.
"""

from __future__ import annotations

import hashlib
import json
import string
from dataclasses import dataclass

from poet_runtime.domains import Domain
from poet_runtime.generate.builtin import GeneratedCode, _param_list
from poet_runtime.generate.spec import FunctionSpec

SYSTEM = (
    "You write Python modules for the POET runtime. You follow the output contract exactly, "
    "use only the imports it allows, and answer with one complete module in a ```python block."
)
FIELDS = (
    "function_name", "domain_name", "objective", "original_code", "signature", "docstring",
    "domain_requirements", "train_requirements", "module_context", "policy_constraints",
    "output_contract", "example",
)


@dataclass(frozen=True)
class Prompt:
    messages: tuple[dict, ...]
    template_version: int

    def with_feedback(self, answer: str, reason: str, detail: str) -> "Prompt":
        """The conversation so far plus why the last answer was refused (the next attempt)."""
        feedback = (
            f"Your answer was rejected by the check `{reason}`: {detail}\n"
            "Fix exactly that and answer again with the complete module in one ```python block."
        )
        return Prompt(
            self.messages + ({"role": "assistant", "content": answer}, {"role": "user", "content": feedback}),
            self.template_version,
        )

    def hash(self, model: str) -> str:
        """The cache key of this exact request: the same request never costs two calls."""
        data = json.dumps({"model": model, "messages": list(self.messages)}, sort_keys=True)
        return hashlib.sha256(data.encode("utf-8")).hexdigest()


def load_template(domain: Domain) -> string.Template:
    path = domain.template_path
    if not path.is_file():  # a domain without its own template uses the base one
        from poet_runtime.domains import get_domain

        path = get_domain("base").template_path
    return string.Template(path.read_text(encoding="utf-8"))


def build_prompt(spec: FunctionSpec, config, domain: Domain, example: GeneratedCode, policy) -> Prompt:
    fields = prompt_fields(spec, config, domain, example, policy)
    text = load_template(domain).safe_substitute(fields)
    return Prompt(({"role": "system", "content": SYSTEM}, {"role": "user", "content": text}), domain.template_version)


def prompt_fields(spec: FunctionSpec, config, domain: Domain, example: GeneratedCode, policy) -> dict[str, str]:
    keyword = "async def" if spec.is_async else "def"
    returns = f" -> {spec.returns}" if spec.returns else ""
    signature = f"{keyword} {spec.name}({_signature(spec)}){returns}"
    return {
        "function_name": spec.function_id,
        "domain_name": domain.name,
        "objective": config.optimize_for or "none (no train phase)",
        "original_code": spec.source.rstrip(),
        "signature": signature,
        "docstring": spec.docstring or "(none)",
        "domain_requirements": domain_requirements(domain, config),
        "train_requirements": train_requirements(config),
        "module_context": module_context(spec),
        "policy_constraints": policy_constraints(policy),
        "output_contract": output_contract(spec, config, example),
        "example": example.code.rstrip(),
    }


def _signature(spec: FunctionSpec) -> str:
    parts = []
    for param in spec.params:
        text = param.name
        if param.annotation:
            text += f": {param.annotation}"
        if param.default is not None:
            text += f" = {param.default}"
        parts.append(text)
    return ", ".join(parts)


def domain_requirements(domain: Domain, config) -> str:
    lines = [f"- {domain.description}"]
    retries = config.retries if config.retries is not None else domain.retries
    if domain.retryable:
        lines.append(f"- Operate': retry only {', '.join(domain.retryable)}, at most {retries} extra attempt(s), "
                     f"backoff from {domain.retry_base_delay_s}s to {domain.retry_max_delay_s}s with jitter; "
                     f"a circuit breaker opens after {domain.breaker_threshold} consecutive failures for "
                     f"{domain.breaker_reset_s}s. Other exceptions reach the caller unchanged.")
    else:
        lines.append("- Operate': no retries (a failure will not go away by retrying).")
    if config.timeout is not None:
        lines.append(f"- Each attempt has a wall-clock limit of {config.timeout}s (PARAMETERS['timeout_s']).")
    if domain.missing == "default":
        lines.append("- Perceive: None for a parameter with a literal default means the default.")
    else:
        lines.append("- Perceive: None for a parameter whose hint does not allow it is rejected (PerceiveError).")
    if domain.drop_missing_in_sequences:
        lines.append("- Perceive: None and NaN entries of numeric lists are dropped before the logic sees them.")
    if domain.finite_numbers:
        lines.append("- Enforce: a numeric result must be finite (no NaN, no infinity).")
    if domain.required_fields:
        lines.append(f"- Enforce: a dict result must have the keys {', '.join(domain.required_fields)}.")
    for rule in domain.fields:
        text = f"- Enforce: result[{rule.name!r}] is a {rule.type}"
        if rule.min is not None or rule.max is not None:
            text += f" in [{rule.min}, {rule.max}]"
        if rule.one_of:
            text += f" one of {', '.join(rule.one_of)}"
        lines.append(text + ".")
    return "\n".join(lines)


def train_requirements(config) -> str:
    if not config.optimize_for:
        return "None: the function has no objective, so the module must NOT define train()."
    return (f"Objective {config.optimize_for}: define train(perceived, result, metrics) that records what the "
            "objective is measured on (metrics['duration_ms'] is given) in module state; it must never change "
            "the result and never raise.")


def module_context(spec: FunctionSpec) -> str:
    lines = []
    if spec.module_imports:
        lines.append("Imports the function uses (copy the ones the logic needs):")
        lines += [f"    {line}" for line in spec.module_imports]
    if spec.module_names:
        lines.append(f"Names defined in {spec.module} that the function uses: {', '.join(spec.module_names)}")
    for info in spec.classes:
        lines.append(f"Class {info.name} ({info.kind}):\n" + "\n".join(f"    {line}" for line in info.source.splitlines()))
    others = sorted(set(spec.used_names) - set(spec.module_names))
    if others:
        lines.append(f"Other global names used: {', '.join(others)}")
    return "\n".join(lines) or "The function uses nothing from its module."


def policy_constraints(policy) -> str:
    if policy is None:
        return ("none beyond the contract: import only the standard library, poet_sandbox and the imports above; "
                "no eval, exec, compile, __import__, open or dunder attribute access.")
    limits = policy.limits
    lines = [f"Backend: {getattr(policy, 'backend', 'none')}."]
    lines.append("Allowed imports: " + (", ".join(limits.imports) if limits.imports else "none listed (stdlib, poet_sandbox and the imports above)"))
    lines.append("Allowed builtins: " + (", ".join(limits.builtins) if limits.builtins else "none listed (the usual ones)"))
    for name in ("wall_ms", "cpu_ms", "memory_mb"):
        value = getattr(limits, name, None)
        if value is not None:
            lines.append(f"{name}: {value}")
    lines.append("Never use eval, exec, compile, __import__, or dunder attributes.")
    return "\n".join(lines)


def output_contract(spec: FunctionSpec, config, example: GeneratedCode) -> str:
    keyword = "async def" if spec.is_async else "def"
    plain = ", ".join(p.name for p in spec.params)
    defaults = {p.name: "UNSET" for p in spec.params if p.has_default}
    lines = [
        "One plain Python module. At top level only imports, assignments and definitions (no other statements).",
        "Import only the standard library, poet_sandbox (validate, errors, breaker, retry, timeouts) and the imports",
        "the function's module gives (above). Names must not start with an underscore.",
        "It must define, with exactly these signatures:",
        f"- FUNCTION = {spec.function_id!r} and LOGIC = {example.logic_name!r}",
        "- PARAMETERS: dict name -> {'default', 'min', 'max', 'description'} of tunable values",
        "- def configure(params, defaults=None): applies params (within their ranges) and stores the original's"
        " argument defaults",
        f"- def perceive({_param_list(spec.params, defaults)}): returns the tuple ({plain}{',' if len(spec.params) == 1 else ''})"
        " of checked inputs; a parameter that has a default must keep a default (UNSET, filled from DEFAULTS)",
        f"- {keyword} operate_prime({plain}): runs the logic",
        f"- {keyword} {example.logic_name}(...): the user's logic, same parameters and behaviour as the original",
        "- def enforce(result): returns the validated, normalised result",
    ]
    if config.optimize_for:
        lines.append("- def train(perceived, result, metrics): see Training")
    else:
        lines.append("- no train()")
    lines.append("Raise poet_sandbox.errors.PerceiveError / EnforceError for inputs / results you refuse.")
    return "\n".join(lines)
