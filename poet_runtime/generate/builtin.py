"""The built-in generator: a deterministic, offline writer of enhanced modules.

It reads the function's spec (source, hints, docstring) and its domain's rules and
writes a plain Python module a reviewer can read top to bottom: imports, tunable
parameters, then ``perceive``, ``operate_prime`` (the user's logic below it),
``enforce`` and, with an objective, ``train``. The same input always gives the
same bytes, so versions only change when something that matters changed.

Generated names never start with an underscore: the restricted backend refuses
such names, and the same code must run there too.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

from poet_runtime.domains import Domain
from poet_runtime.errors import GenerationError
from poet_runtime.generate.parsing import parse
from poet_runtime.generate.spec import (
    KEYWORD_ONLY,
    POSITIONAL_ONLY,
    VAR_KEYWORD,
    VAR_POSITIONAL,
    FunctionSpec,
    Param,
)

GENERATOR_ID = "builtin"
GENERATOR_VERSION = 1
# Names the generated module defines itself; a user function with one of these
# names has its logic renamed to ``logic_<name>``.
RESERVED = frozenset({
    "perceive", "operate_prime", "enforce", "train", "configure", "validate", "time", "asyncio",
    "PARAMS", "PARAMETERS", "DEFAULTS", "BREAKER", "RETRYABLE", "STATS", "FUNCTION", "LOGIC",
    "UNSET", "CircuitBreaker", "CircuitOpenError", "PerceiveError", "EnforceError", "backoff_delay",
    "call_with_timeout", "DOMAIN", "OBJECTIVE", "RESULT_CHECK", "state", "TIMEOUT_S",
})
_SCALARS = {"int": "as_int", "float": "as_float", "bool": "as_bool", "str": "as_str"}
_LISTS = {"list", "List"}
_DICTS = {"dict", "Dict"}
_PASS_THROUGH = {"Any", "object", "Sequence", "Iterable", "Mapping", "Callable"}


@dataclass
class GeneratedCode:
    """What any generator hands to the checks and the store."""

    code: str
    logic_name: str
    parameters: dict  # name -> {"default", "min", "max", "description"}
    generator: str
    template_version: int
    notes: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)  # generator-specific metadata (model, tokens, ...)


class _Hints:
    """Turns hint source text into checker expressions of ``poet_sandbox.validate``."""

    def __init__(self, spec: FunctionSpec):
        self.spec = spec
        self.module_checks: list[tuple[str, str]] = []  # (NAME, expression) built at import
        self.imports: set[str] = set()

    def parse(self, text: str | None):
        if text is None:
            return None
        try:
            return parse(text, mode="eval").body
        except SyntaxError:
            return None

    @staticmethod
    def _name(node) -> str | None:
        if isinstance(node, ast.Name):
            return node.id
        if isinstance(node, ast.Attribute):
            return node.attr
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        return None

    def split_optional(self, node):
        """(inner hint, allows None)."""
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            parts = [node.left, node.right]
        elif isinstance(node, ast.Subscript) and self._name(node.value) in ("Optional", "Union"):
            parts = list(node.slice.elts) if isinstance(node.slice, ast.Tuple) else [node.slice]
            if self._name(node.value) == "Optional":
                parts.append(ast.Constant(None))
        else:
            return node, False
        rest = [p for p in parts if not (isinstance(p, ast.Constant) and p.value is None)]
        allows_none = len(rest) < len(parts)
        if len(rest) == 1:
            return rest[0], allows_none
        return None, allows_none  # a real union: not checked

    def checker(self, node, drop_missing: bool = False) -> str | None:
        """A checker expression (callable(value, field, error=...)) or None for 'no check'."""
        if node is None:
            return None
        inner, allows_none = self.split_optional(node)
        expression = self._plain(inner, drop_missing)
        if expression is not None and allows_none:
            return f"validate.optional({expression})"
        return expression

    def _plain(self, node, drop_missing: bool) -> str | None:
        if node is None:
            return None
        name = self._name(node) if not isinstance(node, ast.Subscript) else self._name(node.value)
        if isinstance(node, ast.Constant) and node.value is None:
            return None
        if not isinstance(node, ast.Subscript):
            if name in _SCALARS:
                return f"validate.{_SCALARS[name]}"
            if name in _LISTS:
                return "validate.list_of(None, drop_missing=True)" if drop_missing else "validate.as_list"
            if name in _DICTS:
                return "validate.as_dict"
            if name in ("tuple", "Tuple"):
                return "validate.instance_of(tuple)"
            info = self.spec.class_info(name) if name else None
            if info is not None and info.kind == "typeddict":
                return self._typed_dict(info)
            if info is not None:
                return f"validate.named_instance({info.name!r})"
            return None
        args = list(node.slice.elts) if isinstance(node.slice, ast.Tuple) else [node.slice]
        if name in _LISTS and len(args) == 1:
            item = self.checker(args[0])
            if item is None and not drop_missing:
                return "validate.list_of()"
            return f"validate.list_of({item or 'None'}{', drop_missing=True' if drop_missing else ''})"
        if name in _DICTS and len(args) == 2:
            key, value = self.checker(args[0]), self.checker(args[1])
            return f"validate.dict_of({key or 'None'}, {value or 'None'})"
        return None

    def _typed_dict(self, info) -> str:
        entries = []
        for field_name, hint in info.fields:
            check = self.checker(self.parse(hint)) or "validate.anything"
            entries.append(f"{field_name!r}: {check}")
        required = sorted(name for name, _ in info.fields) if info.total else []
        fields = "{" + ", ".join(entries) + "}"
        return f"validate.typed_dict({fields}, frozenset({required!r}))"

    def scalar_type(self, node) -> str | None:
        """For a plain hint, the type name a cheap ``type(x) is T`` test can use."""
        if node is not None and not isinstance(node, ast.Subscript):
            name = self._name(node)
            if name in _SCALARS:
                return name
            if name in _LISTS:
                return "list"
            if name in _DICTS:
                return "dict"
        return None


class _Writer:
    def __init__(self):
        self.lines: list[str] = []

    def add(self, text: str = "", indent: int = 0) -> None:
        if text:
            self.lines.append("    " * indent + text)
        else:
            self.lines.append("")

    def block(self, text: str, indent: int = 0) -> None:
        for line in text.splitlines():
            self.add(line, indent) if line.strip() else self.add()

    def text(self) -> str:
        return "\n".join(self.lines).rstrip() + "\n"


def _param_list(params: tuple[Param, ...], defaults: dict[str, str]) -> str:
    parts = []
    seen_star = False
    for index, param in enumerate(params):
        if param.kind == VAR_POSITIONAL:
            parts.append(f"*{param.name}")
            seen_star = True
        elif param.kind == VAR_KEYWORD:
            parts.append(f"**{param.name}")
        else:
            if param.kind == KEYWORD_ONLY and not seen_star:
                parts.append("*")
                seen_star = True
            default = defaults.get(param.name)
            parts.append(f"{param.name}={default}" if default else param.name)
        if param.kind == POSITIONAL_ONLY and (index + 1 == len(params) or params[index + 1].kind != POSITIONAL_ONLY):
            parts.append("/")
    return ", ".join(parts)


def _call_args(params: tuple[Param, ...]) -> str:
    parts = []
    for param in params:
        if param.kind == VAR_POSITIONAL:
            parts.append(f"*{param.name}")
        elif param.kind == VAR_KEYWORD:
            parts.append(f"**{param.name}")
        elif param.kind == KEYWORD_ONLY:
            parts.append(f"{param.name}={param.name}")
        else:
            parts.append(param.name)
    return ", ".join(parts)


def _number(value) -> str:
    return repr(float(value)) if isinstance(value, float) else repr(value)


class BuiltinGenerator:
    """Writes the enhancement for one function; see the module docstring."""

    id = GENERATOR_ID
    version = GENERATOR_VERSION

    def generate(self, spec: FunctionSpec, config, domain: Domain, hints: dict | None = None) -> GeneratedCode:
        if spec.is_generator:
            raise GenerationError("unsupported", f"{spec.function_id} is a generator function; POET enhances functions that return")
        logic = spec.name if spec.name not in RESERVED else f"logic_{spec.name}"
        h = _Hints(spec)
        retryable = list(domain.retryable)
        if config.retries is not None and not retryable:
            retryable = ["ConnectionError", "TimeoutError"]
        retries = config.retries if config.retries is not None else domain.retries
        timeout = config.timeout
        learned = hints.get("params", {}) if hints else {}
        tunable = self._tunable(spec, config, domain)
        parameters = self._parameters(retries if retryable else None, timeout, domain, tunable, learned)

        perceive = self._perceive(spec, domain, h, tunable)
        operate = self._operate(spec, logic, retryable, timeout)
        enforce = self._enforce(spec, domain, h)
        train = self._train(spec, config) if config.optimize_for else None

        w = _Writer()
        objective = f", objective {config.optimize_for}" if config.optimize_for else ""
        w.add('"""POET enhancement of ' + f"{spec.function_id} (domain {domain.name}{objective}).")
        w.add()
        w.add(f"Written by the poet-runtime built-in generator {GENERATOR_ID}-{GENERATOR_VERSION} from the function's")
        w.add(f"source and the {domain.name} domain rules (version {domain.version}). When POET is enabled, a call")
        w.add(f"to {spec.qualname} runs perceive -> operate_prime -> enforce" + (" -> train." if train else "."))
        w.add("Any failure of these phases makes the runtime call the original function instead.")
        w.add('"""')
        w.add()
        if spec.is_async or retryable:
            pass
        std = ["import asyncio"] if spec.is_async else []
        if retryable and not spec.is_async:
            std.append("import time")
        for line in std:
            w.add(line)
        if std:
            w.add()
        facility = ["from poet_sandbox import validate"]
        names = ["EnforceError", "PerceiveError"]
        if retryable:
            names.insert(0, "CircuitOpenError")
        facility.append(f"from poet_sandbox.errors import {', '.join(names)}")
        if retryable:
            facility.append("from poet_sandbox.breaker import CircuitBreaker")
            facility.append("from poet_sandbox.retry import backoff_delay")
        if timeout is not None and not spec.is_async:
            facility.append("from poet_sandbox.timeouts import call_with_timeout")
        facility.append("from poet_sandbox.validate import UNSET")
        for line in facility:
            w.add(line)
        user_imports = sorted(set(spec.module_imports) | h.imports)
        if user_imports:
            w.add()
            w.add(f"# What the logic and its hints use from {spec.module}.")
            for line in user_imports:
                w.add(line)
        w.add()
        w.add(f"FUNCTION = {spec.function_id!r}")
        w.add(f"LOGIC = {logic!r}")
        w.add(f"DOMAIN = {domain.name!r}")
        w.add(f"OBJECTIVE = {config.optimize_for!r}")
        w.add()
        w.add("# Values the runtime may tune or learn; configure() applies params.json within these ranges.")
        w.add("PARAMETERS = {")
        for name, spec_ in parameters.items():
            body = ", ".join(f"{k!r}: {_number(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else repr(v)}"
                             for k, v in spec_.items())
            w.add(f"{name!r}: {{{body}}},", 1)
        w.add("}")
        w.add("PARAMS = {name: spec['default'] for name, spec in PARAMETERS.items()}")
        w.add("# The original function's default argument values, given by the runtime at load.")
        w.add("DEFAULTS = {}")
        if timeout is not None:
            w.add("# The decorator's timeout: the limit of the last attempt, whatever tuning does.")
            w.add(f"TIMEOUT_S = {_number(float(timeout))}")
        if retryable:
            w.add(f"# Errors worth another attempt in the {domain.name} domain; anything else is the caller's.")
            w.add(f"RETRYABLE = ({', '.join(retryable)},)")
            w.add("BREAKER = CircuitBreaker(PARAMS['breaker_threshold'], PARAMS['breaker_reset_s'])")
        for name, expression in h.module_checks:
            w.add(f"{name} = {expression}")
        if train:
            w.add("# What train() has observed; the runtime reads it into state.json.")
            w.add("STATS = {'calls': 0, 'duration_ms_total': 0.0, 'duration_ms_max': 0.0}")
        w.add()
        w.add()
        w.block(self._configure(retryable))
        w.add()
        w.add()
        w.block(perceive)
        w.add()
        w.add()
        w.block(operate)
        w.add()
        w.add()
        w.add(f"# The user's logic: the body of {spec.qualname}, as written in {spec.module}.")
        keyword = "async def" if spec.is_async else "def"
        w.add(f"{keyword} {logic}({_param_list(spec.params, {})}):")
        w.block(spec.body, 1)
        w.add()
        w.add()
        w.block(enforce)
        if train:
            w.add()
            w.add()
            w.block(train)
        return GeneratedCode(
            code=w.text(),
            logic_name=logic,
            parameters=parameters,
            generator=f"{GENERATOR_ID}-{GENERATOR_VERSION}",
            template_version=domain.version,
        )

    # -- pieces ---------------------------------------------------------------------------

    @staticmethod
    def _tunable(spec: FunctionSpec, config, domain: Domain) -> dict:
        """Keyword parameters with a numeric literal default that the domain lets training tune."""
        if not config.optimize_for:
            return {}
        found = {}
        for param in spec.params:
            bounds = domain.tunable.get(param.name)
            value = param.literal_default if param.has_literal_default else None
            if bounds and isinstance(value, (int, float)) and not isinstance(value, bool):
                found[param.name] = (value, bounds)
        return found

    @staticmethod
    def _parameters(retries, timeout, domain: Domain, tunable: dict, learned: dict) -> dict:
        parameters = {} if retries is None else {
            "retries": {"default": retries, "min": 0, "max": 10,
                        "description": "extra attempts after the first, on retryable errors"},
            "retry_base_delay_s": {"default": domain.retry_base_delay_s, "min": 0.0, "max": 10.0,
                                   "description": "first backoff ceiling; doubles per attempt, full jitter"},
            "retry_max_delay_s": {"default": domain.retry_max_delay_s, "min": 0.0, "max": 60.0,
                                  "description": "largest backoff ceiling"},
            "breaker_threshold": {"default": domain.breaker_threshold, "min": 1, "max": 1000,
                                  "description": "consecutive retryable failures that open the circuit"},
            "breaker_reset_s": {"default": domain.breaker_reset_s, "min": 0.1, "max": 3600.0,
                                "description": "seconds the circuit stays open before a trial call"},
        }
        if timeout is not None:
            # Never above the decorator's timeout: that one is the caller's contract.
            parameters["timeout_s"] = {"default": timeout, "min": 0.001, "max": timeout,
                                       "description": "wall-clock limit of each attempt but the last "
                                                      "(the last always gets the decorator's timeout)"}
        for name, (value, bounds) in tunable.items():
            parameters[name] = {"default": value, "min": bounds["min"], "max": bounds["max"],
                                "description": f"value of the {name} argument when the caller does not pass it"}
        for name, value in learned.items():
            if name in parameters and isinstance(value, (int, float)) and not isinstance(value, bool):
                spec_ = parameters[name]
                spec_["default"] = min(max(value, spec_["min"]), spec_["max"])
        return parameters

    @staticmethod
    def _configure(retryable) -> str:
        lines = [
            "def configure(params, defaults=None):",
            '    """Apply tuned values (kept within their ranges) and the original\'s argument defaults."""',
            "    for name, value in params.items():",
            "        spec = PARAMETERS.get(name)",
            "        if spec is not None and value is not None:",
            "            PARAMS[name] = min(max(value, spec['min']), spec['max'])",
            "    if defaults:",
            "        DEFAULTS.update(defaults)",
        ]
        if retryable:
            lines.append("    BREAKER.configure(PARAMS['breaker_threshold'], PARAMS['breaker_reset_s'])")
        return "\n".join(lines)

    def _perceive(self, spec: FunctionSpec, domain: Domain, h: _Hints, tunable: dict) -> str:
        defaults = {p.name: "UNSET" for p in spec.params if p.has_default}
        lines = [f"def perceive({_param_list(spec.params, defaults)}):"]
        doc = [f'    """Check and repair the inputs of {spec.qualname}.', ""]
        body = []
        for param in spec.params:
            if param.kind in (VAR_POSITIONAL, VAR_KEYWORD):
                continue
            notes = []
            if param.has_default:
                source = "PARAMS" if param.name in tunable else "DEFAULTS"
                body.append(f"    if {param.name} is UNSET:")
                body.append(f"        {param.name} = {source}[{param.name!r}]")
                if param.name in tunable:
                    notes.append(f"when not passed, the learned value PARAMS[{param.name!r}]")
            node = h.parse(param.annotation)
            inner, allows_none = h.split_optional(node) if node is not None else (None, True)
            if (domain.missing == "default" and param.has_literal_default and not allows_none
                    and param.literal_default is not None):
                body.append(f"    if {param.name} is None:  # missing: the {domain.name} domain uses the default")
                body.append(f"        {param.name} = {param.literal_default!r}")
                notes.append(f"None is replaced by its default {param.literal_default!r}")
            drop = domain.drop_missing_in_sequences and self._is_numeric_list(h, inner)
            checker = h.checker(node, drop_missing=drop)
            if drop:
                notes.append("None and NaN entries dropped")
            if checker is not None or notes:
                hint = param.annotation if checker is not None else "not checked"
                doc.append(f"    {param.name}: {hint}" + (f" ({'; '.join(notes)})" if notes else ""))
            if checker is None:
                continue
            label = repr(param.name)
            scalar = h.scalar_type(inner)
            if scalar and not drop:
                test = f"type({param.name}) is not {scalar}"
                if allows_none:
                    test = f"{param.name} is not None and {test}"
                body.append(f"    if {test}:")
                body.append(f"        {param.name} = {checker}({param.name}, {label})")
            else:
                name = f"CHECK_{param.name.upper()}"
                h.module_checks.append((name, checker))
                body.append(f"    {param.name} = {name}({param.name}, {label})")
        if len(doc) == 2:
            doc = doc[:1]
            doc[0] += '"""'
        else:
            doc.append('    """')
        names = [p.name for p in spec.params]
        body.append(f"    return ({', '.join(names)}{',' if len(names) == 1 else ''})")
        return "\n".join(lines + doc + body)

    @staticmethod
    def _is_numeric_list(h: _Hints, node) -> bool:
        if not isinstance(node, ast.Subscript) or h._name(node.value) not in _LISTS:
            return False
        item = node.slice
        return h._name(item) in ("float", "int")

    def _operate(self, spec: FunctionSpec, logic: str, retryable: list[str], timeout) -> str:
        plain = [p.name for p in spec.params]
        params = ", ".join(plain)
        call = f"{logic}({_call_args(spec.params)})"
        is_async = spec.is_async
        keyword = "async def" if is_async else "def"
        lines = [f"{keyword} operate_prime({params}):"]
        if timeout is not None:
            # A learned (shorter) timeout may only make retries come sooner: the last attempt
            # always gets the decorator's timeout, so tuning never fails a call the caller's
            # own timeout would have let finish.
            limit = "PARAMS['timeout_s'] if attempt < PARAMS['retries'] else TIMEOUT_S" if retryable else "TIMEOUT_S"
            if is_async:
                call = f"await asyncio.wait_for({call}, {limit})"
            else:
                positional = [p.name for p in spec.params if p.kind not in (KEYWORD_ONLY, VAR_POSITIONAL, VAR_KEYWORD)]
                star = next((p.name for p in spec.params if p.kind == VAR_POSITIONAL), None)
                args = "(" + ", ".join(positional) + ("," if len(positional) == 1 else "") + ")"
                if star:
                    args = f"{args} + tuple({star})" if positional else f"tuple({star})"
                kw_only = [p.name for p in spec.params if p.kind == KEYWORD_ONLY]
                kwargs = "{" + ", ".join(f"{n!r}: {n}" for n in kw_only) + "}"
                star_kw = next((p.name for p in spec.params if p.kind == VAR_KEYWORD), None)
                if star_kw:
                    kwargs = f"dict({kwargs}, **{star_kw})" if kw_only else f"dict({star_kw})"
                call = f"call_with_timeout({logic}, {args}, {kwargs}, {limit})"
        elif is_async:
            call = f"await {call}"
        if not retryable:
            lines.append(f'    """Run {spec.qualname}' + (" with a timeout" if timeout is not None else "")
                         + '; this domain retries nothing."""')
            lines.append(f"    return {call}")
            return "\n".join(lines)
        sleep = "await asyncio.sleep" if is_async else "time.sleep"
        lines += [
            f'    """Run {spec.qualname} with retries and jittered exponential backoff on',
            "    RETRYABLE errors" + (", a timeout per attempt" if timeout is not None else "")
            + ", and a circuit breaker that fails fast",
            '    after repeated failures. Other exceptions reach the caller unchanged."""',
            "    if BREAKER.opened_at is not None and not BREAKER.allow():",
            "        raise CircuitOpenError(FUNCTION + ': circuit open after repeated failures') from BREAKER.last_error",
            "    attempt = 0",
            "    while True:",
            "        try:",
            f"            result = {call}",
            "        except RETRYABLE as error:",
            "            attempt = attempt + 1",
            "            if attempt > PARAMS['retries']:",
            "                BREAKER.record_failure(error)",
            "                raise",
            f"            {sleep}(backoff_delay(attempt, PARAMS['retry_base_delay_s'], PARAMS['retry_max_delay_s']))",
            "        else:",
            "            if BREAKER.failures:  # an open or half-open breaker always has failures",
            "                BREAKER.record_success()",
            "            return result",
        ]
        return "\n".join(lines)

    def _enforce(self, spec: FunctionSpec, domain: Domain, h: _Hints) -> str:
        lines = ["def enforce(result):"]
        doc = [f'    """Check and normalise what {spec.qualname} returned.', ""]
        body = []
        node = h.parse(spec.returns)
        if spec.returns is not None:
            inner, allows_none = h.split_optional(node) if node is not None else (None, True)
            if isinstance(node, ast.Constant) and node.value is None:
                doc.append("    Annotated -> None: the result must be None.")
                body += ["    if result is not None:",
                         "        raise EnforceError('result: expected None, got ' + validate.describe(result), field='result')"]
            else:
                checker = h.checker(node)
                if checker is not None:
                    doc.append(f"    Annotated -> {spec.returns}.")
                    scalar = h.scalar_type(inner)
                    if scalar:
                        test = f"type(result) is not {scalar}"
                        if allows_none:
                            test = f"result is not None and {test}"
                        body += [f"    if {test}:",
                                 f"        result = {checker}(result, 'result', error=EnforceError)"]
                    else:
                        h.module_checks.append(("RESULT_CHECK", checker))
                        body.append("    result = RESULT_CHECK(result, 'result', error=EnforceError)")
        rules = self._domain_rules(domain)
        if rules:
            doc.append(f"    {domain.name} rules for mapping results: " + "; ".join(rules[0]) + ".")
            body += rules[1]
        if domain.finite_numbers:
            doc.append(f"    {domain.name}: a numeric result must be finite.")
            body += ["    if type(result) is float and not (result - result == 0.0):  # NaN or infinite",
                     "        raise EnforceError('result: must be a finite number, got ' + repr(result), field='result')"]
        if len(doc) == 2:
            doc = [doc[0] + '"""']
        else:
            doc.append('    """')
        body.append("    return result")
        return "\n".join(lines + doc + body)

    @staticmethod
    def _domain_rules(domain: Domain):
        summary, body = [], []
        if not domain.fields and not domain.required_fields:
            return None
        body.append("    if type(result) is dict:")
        if domain.required_fields:
            summary.append("required " + ", ".join(domain.required_fields))
            body.append(f"        validate.require_keys(result, 'result', {tuple(domain.required_fields)!r})")
        for rule in domain.fields:
            label = f"result[{rule.name!r}]"
            var = rule.name if rule.name.isidentifier() and not rule.name.startswith("_") else "value"
            body.append(f"        if {rule.name!r} in result:")
            body.append(f"            {var} = result[{rule.name!r}]")
            if rule.type == "float":
                low = rule.min if rule.min is not None else None
                high = rule.max if rule.max is not None else None
                summary.append(f"{rule.name} finite" + (f" in [{low}, {high}]" if low is not None and high is not None else ""))
                bounds = []
                if low is not None:
                    bounds.append(f"{_number(low)} <= {var}")
                if high is not None:
                    bounds.append(f"{var} <= {_number(high)}")
                bound_test = " and ".join(bounds) or f"{var} - {var} == 0.0"
                body.append(f"            if type({var}) is not float or not ({bound_test}):")
                body.append(f"                fixed = validate.finite_in_range({var}, {label!r}, {low!r}, {high!r})")
            elif rule.type == "bool":
                summary.append(f"{rule.name} a bool")
                body.append(f"            if type({var}) is not bool:")
                body.append(f"                fixed = validate.as_bool({var}, {label!r}, error=EnforceError)")
            elif rule.type == "int":
                summary.append(f"{rule.name} an int")
                body.append(f"            if type({var}) is not int:")
                body.append(f"                fixed = validate.as_int({var}, {label!r}, error=EnforceError)")
            else:
                summary.append(f"{rule.name} a str" + (f" in {'|'.join(rule.one_of)}" if rule.one_of else ""))
                body.append(f"            if type({var}) is not str:")
                body.append(f"                fixed = validate.as_str({var}, {label!r}, error=EnforceError)")
            body.append(f"                if fixed is not {var}:")
            body.append("                    result = dict(result)")
            body.append(f"                    result[{rule.name!r}] = fixed")
            if rule.type == "str" and rule.one_of:
                body.append(f"            validate.one_of(result[{rule.name!r}], {label!r}, {tuple(rule.one_of)!r})")
        return summary, body

    @staticmethod
    def _train(spec: FunctionSpec, config) -> str:
        return "\n".join([
            "def train(perceived, result, metrics):",
            f'    """Record what the {config.optimize_for} objective is measured on.',
            "",
            "    Learning itself happens in the runtime from feedback; it writes what it learns to",
            "    params.json, which configure() applies. This phase never changes the result.",
            '    """',
            "    duration = metrics['duration_ms']",
            "    STATS['calls'] = STATS['calls'] + 1",
            "    STATS['duration_ms_total'] = STATS['duration_ms_total'] + duration",
            "    if duration > STATS['duration_ms_max']:",
            "        STATS['duration_ms_max'] = duration",
        ])
