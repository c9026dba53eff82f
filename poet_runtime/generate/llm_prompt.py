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
import re
import string
import sys
from dataclasses import dataclass

from poet_runtime.domains import Domain
from poet_runtime.generate.builtin import GeneratedCode, param_list
from poet_runtime.generate.spec import FunctionSpec

SYSTEM = (
    "You write Python modules for the POET runtime. You follow the output contract exactly, "
    "use only the imports it allows, never copy the user's function, and answer with one complete "
    "module in a ```python block."
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
    compact: bool = False  # the example without docstrings and comments (a small context)
    answer_kind: str = "module"  # "rules": the answer is a JSON object (llm_parts)

    def with_feedback(self, answer: str, reason: str, detail: str, *, truncated_at: int | None = None,
                      attempt: int | None = None) -> "Prompt":
        """The first request plus why the last answer was refused (the next attempt).

        Never the whole refused answer (each re-ask would grow by an answer): the refusal
        and the offending lines only, so the prompt stays the size of the first one.
        """
        if self.answer_kind == "rules":
            if truncated_at is not None:
                feedback = (f"Your previous answer was cut off after {truncated_at} tokens. Answer again with a "
                            "SHORTER JSON object: only the keys the function returns.")
            else:
                feedback = (f"Your previous answer was rejected by the check `{reason}`: {detail[:600]}\n"
                            "Fix exactly that and answer again with one JSON object only.")
        elif truncated_at is not None:
            feedback = (f"Your previous answer was cut off after {truncated_at} tokens, before the module was "
                        "complete. Answer again with a SHORTER complete module: no docstrings, no comments, no "
                        "prose, only the names the contract requires, in one ```python block.")
        else:
            feedback = f"Your previous answer was rejected by the check `{reason}`: {detail[:600]}"
            lines = offending_lines(answer, detail)
            if lines:
                feedback += f"\nThe offending lines of your answer:\n```python\n{lines}\n```"
            feedback += "\nFix exactly that and answer again with the complete module in one ```python block."
        if attempt is not None:  # a re-ask is never the same request as the one before (the cache)
            feedback += f" (attempt {attempt})"
        first = self.messages[:2]
        user = dict(first[-1])
        user["content"] = user["content"].split(FEEDBACK_MARK, 1)[0].rstrip() + "\n\n" + FEEDBACK_MARK + "\n" + feedback
        return Prompt(first[:-1] + (user,), self.template_version, self.compact, self.answer_kind)

    def text(self) -> str:
        return "\n".join(message["content"] for message in self.messages)

    def hash(self, model: str) -> str:
        """The cache key of this exact request: the same request never costs two calls."""
        data = json.dumps({"model": model, "messages": list(self.messages)}, sort_keys=True)
        return hashlib.sha256(data.encode("utf-8")).hexdigest()


FEEDBACK_MARK = "## Your previous answer"
_LINE = re.compile(r"\bline (\d+)")
_NAMED = re.compile(r"\b(perceive|operate_prime|enforce|configure|train)\b")


def offending_lines(answer: str, detail: str, context: int = 2, limit: int = 12) -> str:
    """The lines of ``answer`` the refusal points at: by line number, else the phase it names."""
    from poet_runtime.generate.llm_extract import extract_code

    code = extract_code(answer)
    lines = code.splitlines()
    if not lines:
        return ""
    match = _LINE.search(detail)
    if match:
        number = int(match.group(1))
        if 1 <= number <= len(lines):
            start, end = max(0, number - 1 - context), min(len(lines), number + context)
            return "\n".join(lines[start:end])
    named = _NAMED.search(detail)
    if named:
        for index, line in enumerate(lines):
            if re.match(rf"(async )?def {named.group(1)}\(", line):
                end = next((i for i in range(index + 1, len(lines)) if lines[i] and not lines[i][0].isspace()),
                           len(lines))
                return "\n".join(lines[index:min(end, index + limit)])
    return ""


def compact_code(code: str) -> str:
    """``code`` without docstrings and comments (same behaviour, about half the tokens)."""
    import ast

    from poet_runtime.generate.parsing import parse

    try:
        tree = parse(code)
    except SyntaxError:
        return code
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and \
                isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return ast.unparse(tree) + "\n"


def remote_template(domain: Domain):
    """The service's template for ``domain`` (``remote_templates.Entry``), or None: the local one.
    Without ``POET_SERVICE_URL`` nothing is imported or asked (inside the service, its registry answers)."""
    from poet_runtime.settings import get_settings

    if not get_settings().service_url and not _served_here():
        return None
    from poet_runtime.generate.remote_templates import template_for

    return template_for(domain.name)


def _served_here() -> bool:
    """True inside the service's own generation (``remote_templates.served_by``)."""
    module = sys.modules.get("poet_runtime.generate.remote_templates")
    return module is not None and module.active_source() is not None


def template_version(domain: Domain) -> int:
    """The version of the template a prompt for ``domain`` is built from (the service's, else the file's)."""
    remote = remote_template(domain)
    return remote.version if remote is not None else domain.template_version


def load_template(domain: Domain) -> string.Template:
    remote = remote_template(domain)
    if remote is not None:
        return string.Template(remote.text)
    path = domain.template_path
    if not path.is_file():  # a domain without its own template uses the base one
        from poet_runtime.domains import get_domain

        path = get_domain("base").template_path
    return string.Template(path.read_text(encoding="utf-8"))


def build_prompt(spec: FunctionSpec, config, domain: Domain, example: GeneratedCode, policy, *,
                 compact: bool = False) -> Prompt:
    fields = prompt_fields(spec, config, domain, example, policy)
    if compact:
        fields["example"] = compact_code(example.code).rstrip()
    remote = remote_template(domain)  # one answer for both: the text and its version agree
    template = string.Template(remote.text) if remote is not None else load_template(domain)
    text = template.safe_substitute(fields)
    version = remote.version if remote is not None else domain.template_version
    return Prompt(({"role": "system", "content": SYSTEM}, {"role": "user", "content": text}), version, compact)


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
                     f"{domain.breaker_reset_s}s.")
    else:
        lines.append("- Operate': call the logic once; no retries.")
    if config.timeout is not None:
        lines.append(f"- Each attempt has a wall-clock limit of {config.timeout}s (PARAMETERS['timeout_s']).")
    coerce = getattr(config, "repair", None) == "coerce"
    if coerce:
        lines.append("- Perceive: lossless repairs of mismatched arguments (\"3\" -> 3, tuple -> list) are asked for.")
    else:
        lines.append("- Perceive: an argument that does not match its hint is noted ('mismatch') and passed on as it is.")
    if domain.missing == "default":
        lines.append("- Perceive: None passed for a parameter with a literal default is repaired to that default.")
    if domain.drop_missing_in_sequences:
        lines.append("- Perceive: None and NaN entries of numeric lists are dropped (a repair).")
    if domain.finite_numbers:
        lines.append("- Enforce: a numeric result must be finite.")
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
    return (f"Objective {config.optimize_for}: define train(call, result, metrics) that records what the "
            "objective is measured on (call is (args, kwargs) as the logic got them; metrics['duration_ms'] is "
            "given) in module state; it must never change the result and never raise.")


def module_context(spec: FunctionSpec) -> str:
    """The module's classes the hints name (what Perceive and Enforce check against), as a section."""
    if not spec.classes:
        return ""
    lines = ["", "## Classes the hints name"]
    for info in spec.classes:
        lines.append(f"{info.name} ({info.kind}):\n" + "\n".join(f"    {line}" for line in info.source.splitlines()))
    return "\n".join(lines) + "\n"


def policy_constraints(policy) -> str:
    if policy is None:
        return "Import only the standard library and poet_sandbox; no eval, exec, compile, __import__, open or dunders."
    limits = policy.limits
    lines = [f"Backend: {getattr(policy, 'backend', 'none')}."]
    lines.append("Allowed imports: " + (", ".join(limits.imports) if limits.imports else "the standard library"))
    if limits.builtins:
        lines.append("Allowed builtins: " + ", ".join(limits.builtins))
    for name in ("wall_ms", "cpu_ms", "memory_mb"):
        value = getattr(limits, name, None)
        if value is not None:
            lines.append(f"{name}: {value}")
    lines.append("Never use eval, exec, compile, __import__, or dunder attributes.")
    return "\n".join(lines)


def output_contract(spec: FunctionSpec, config, example: GeneratedCode) -> str:
    is_async = spec.is_async
    keyword = "async def" if is_async else "def"
    defaults = {p.name: "UNSET" for p in spec.params if p.has_default}
    names = ", ".join(p.name for p in spec.params)
    call = "await logic(*args, **kwargs)" if is_async else "logic(*args, **kwargs)"
    lines = [
        "One module; at top level only imports, assignments and definitions. Import only the standard library",
        "and poet_sandbox (validate, errors, breaker, retry, timeouts), never the function's module"
        + (" nor asyncio (timeouts.sleep_async sleeps)" if is_async else "") + ". No name starts with '_'"
        + (f"; no module-level name is a parameter ({names})" if names else "") + ".",
        f"- FUNCTION = {spec.function_id!r}, DOMAIN, OBJECTIVE; no LOGIC.",
        "- PARAMETERS: dict name -> {'default', 'min', 'max', 'description'}; PARAMS: the values in force.",
        "- def configure(params, defaults=None): applies params within their ranges; ignores defaults.",
        f"- def perceive({param_list(spec.params, defaults)}): checks the arguments (UNSET: not passed);"
        " returns None, or a dict {parameter: new value} of repairs; validate.note('mismatch' or 'repair',"
        " field, detail) for each.",
        f"- {keyword} operate_prime(logic, args, kwargs): returns {call}"
        + (" with the retries and breaker above" if _retries(spec, config) else "")
        + (f"; each attempt under {'await timeouts.call_with_timeout_async' if is_async else 'timeouts.call_with_timeout'}"
           "(logic, args, kwargs, seconds)" if config.timeout is not None else "")
        + "; the logic's exceptions reach the caller unchanged.",
        "- def enforce(result): returns result itself unless a rule above normalises it; notes mismatches.",
        "- def train(call, result, metrics): see Training." if config.optimize_for else "- no train().",
        "PerceiveError / EnforceError (poet_sandbox.errors) only for inputs / results the rules refuse.",
    ]
    return "\n".join(lines)


def _retries(spec: FunctionSpec, config) -> bool:
    from poet_runtime.domains import get_domain

    try:
        domain = get_domain(config.domain)
    except Exception:
        return True
    return bool(domain.retryable) or config.retries is not None
