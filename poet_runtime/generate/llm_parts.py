"""Asking a small model for a small thing: the Enforce rules of a function's result, as JSON.

A whole module (its prompt and its answer) does not fit a 2048-token context, and a
135 M-parameter model does not write one that passes the checks. What needs
intelligence is small: which keys a dict result has, of what type, in what range.
The model answers that as JSON (under the server's JSON-schema support where it has
one: ``response_format``); the rules are read strictly here and given to the built-in
generator as the domain's Enforce rules (the form ``domains.FieldRule`` already has),
so the module is the project's own code with the model's rules in it. It then goes
through every check an answer does, probes included: a rule the original's results
break is refused there.
"""

from __future__ import annotations

import dataclasses
import json
import re

from poet_runtime.errors import CheckFailed

FIELD_TYPES = ("float", "int", "bool", "str")
MAX_FIELDS = 16
SCHEMA = {
    "type": "object",
    "properties": {
        "fields": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "properties": {"type": {"type": "string", "enum": list(FIELD_TYPES)},
                               "min": {"type": "number"}, "max": {"type": "number"},
                               "one_of": {"type": "array", "items": {"type": "string"}}},
                "required": ["type"],
            },
        },
        "required": {"type": "array", "items": {"type": "string"}},
        "finite": {"type": "boolean"},
    },
    "required": ["fields", "required", "finite"],
}
SYSTEM = "You describe what a Python function returns, as JSON that matches the schema you are given. JSON only."


def build_messages(spec, domain) -> tuple[dict, ...]:
    known = ", ".join(f"{rule.name}: {rule.type}" for rule in domain.fields) or "none"
    text = (
        f"Function `{spec.function_id}` (domain {domain.name}):\n```python\n{spec.source.rstrip()}\n```\n"
        "Describe the result it returns, so that a wrong result can be caught, as one JSON object with:\n"
        '- "fields": for each key of a dict result, {"type": "float" or "int" or "bool" or "str", and only where '
        'the code guarantees them "min", "max" (numbers) or "one_of" (the allowed strings)};\n'
        '- "required": the keys always present;\n'
        '- "finite": true when a numeric result can never be NaN or infinite.\n'
        'Example, for a different function that returns {"score": s, "label": "high" or "low"} with s in [0, 1]:\n'
        '{"fields": {"score": {"type": "float", "min": 0, "max": 1}, "label": {"type": "str", "one_of": '
        '["high", "low"]}}, "required": ["score", "label"], "finite": true}\n'
        'A result that is not a dict has {"fields": {}, "required": []}. '
        f"Only keys this function's code returns. Rules the domain already has: {known}."
    )
    return ({"role": "system", "content": SYSTEM}, {"role": "user", "content": text})


# Return annotations that are certainly not a mapping: rules for keys do not apply to them.
_NOT_MAPPINGS = ("str", "int", "float", "bool", "bytes", "list", "tuple", "set", "frozenset", "None")


def _not_a_mapping(returns: str | None) -> bool:
    if not returns:
        return False
    head = returns.strip().split("[", 1)[0].split(".")[-1].strip()
    return head in _NOT_MAPPINGS


def response_format() -> dict:
    # llama.cpp-style servers turn "schema" into a grammar; OpenAI-style ones read json_object.
    return {"type": "json_object", "schema": SCHEMA}


def parse_rules(text: str) -> dict:
    """The rules in ``text``; raises ``CheckFailed("rules", why)`` naming the field."""
    body = text.strip()
    fenced = re.search(r"```(?:json)?\s*\n(.*?)```", body, re.S)
    if fenced:
        body = fenced.group(1)
    start, end = body.find("{"), body.rfind("}")
    if start < 0 or end < start:
        raise CheckFailed("rules", "the answer holds no JSON object")
    try:
        data = json.loads(body[start:end + 1])
    except ValueError as error:
        raise CheckFailed("rules", f"the answer is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise CheckFailed("rules", "the answer must be a JSON object")
    fields = data.get("fields", {})
    if not isinstance(fields, dict) or len(fields) > MAX_FIELDS:
        raise CheckFailed("rules", f"fields: must be an object of at most {MAX_FIELDS} keys")
    rules = {}
    for name, rule in fields.items():
        where = f"fields.{name}"
        if not isinstance(name, str) or not name.isidentifier():
            raise CheckFailed("rules", f"{where}: a key must be a plain name")
        if not isinstance(rule, dict) or rule.get("type") not in FIELD_TYPES:
            raise CheckFailed("rules", f"{where}.type: must be one of {', '.join(FIELD_TYPES)}")
        low, high = rule.get("min"), rule.get("max")
        for label, value in (("min", low), ("max", high)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise CheckFailed("rules", f"{where}.{label}: must be a number")
        if low is not None and high is not None and low > high:
            raise CheckFailed("rules", f"{where}: min {low} is above max {high}")
        one_of = rule.get("one_of") or []
        if not isinstance(one_of, list) or not all(isinstance(v, str) for v in one_of):
            raise CheckFailed("rules", f"{where}.one_of: must be a list of strings")
        if rule["type"] != "float" and (low is not None or high is not None):
            low = high = None  # ranges are checked on floats only (domains.FieldRule)
        rules[name] = {"type": rule["type"], "min": low, "max": high, "one_of": tuple(one_of)}
    required = data.get("required", [])
    if not isinstance(required, list) or not all(isinstance(v, str) and v.isidentifier() for v in required):
        raise CheckFailed("rules", "required: must be a list of key names")
    finite = data.get("finite", False)
    if not isinstance(finite, bool):
        raise CheckFailed("rules", "finite: must be true or false")
    return {"fields": rules, "required": sorted(set(required)), "finite": finite}


def domain_with(domain, rules: dict):
    """``domain`` with the model's rules added to its own (the domain's own rules win)."""
    from poet_runtime.domains import FieldRule

    own = {rule.name for rule in domain.fields}
    added = tuple(FieldRule(name, rule["type"], rule["min"], rule["max"], rule["one_of"])
                  for name, rule in sorted(rules["fields"].items()) if name not in own)
    return dataclasses.replace(
        domain,
        fields=domain.fields + added,
        required_fields=tuple(dict.fromkeys(domain.required_fields + tuple(rules["required"]))),
        finite_numbers=domain.finite_numbers or rules["finite"],
    )


def assemble(spec, config, domain, hints, rules: dict):
    """The built-in generator's module for ``domain`` plus ``rules`` (a GeneratedCode).

    Key rules for a function whose return annotation is not a mapping are dropped (they could
    never apply), so such an answer changes the module only through ``finite``.
    """
    from poet_runtime.generate.builtin import BuiltinGenerator

    if _not_a_mapping(getattr(spec, "returns", None)):
        rules = {**rules, "fields": {}, "required": []}
    return BuiltinGenerator().generate(spec, config, domain_with(domain, rules), hints)
