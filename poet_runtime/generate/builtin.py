"""The built-in generator: a deterministic, offline writer of enhanced modules.

It reads the function's spec (source, hints, docstring) and its domain's rules and
writes a plain Python module a reviewer can read top to bottom: imports, tunable
parameters, then ``perceive``, ``operate_prime``, ``enforce`` and, with an
objective, ``train`` (contract 2, docs/CONTRACTS.md). The user's logic is not in
it: ``operate_prime`` is given the function object ``@poet`` received and calls it.
The same input always gives the same bytes, which is what lets the runtime verify
a stored built-in version by writing it again (``resolve.verified_builtin``).

By default the checks *report* a value that does not match its hint and change
nothing; conversions are written only where the domain declares them (dropping
missing values from numeric batches, a default for None) or where the decorator
asks for them (``repair="coerce"``).

Generated names never start with an underscore (the restricted backend refuses
such names), and none that ``perceive`` uses equals a parameter of the function.
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
GENERATOR_VERSION = 3  # 3: domain intelligence (evidence, audit, text, tokens) and retry_on
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


def param_list(params: tuple[Param, ...], defaults: dict[str, str]) -> str:
    """``a, b=UNSET, *rest, c, **more``: a def's parameter list with ``defaults`` filled in
    (the generator's ``perceive``, and the contract the LLM prompt shows)."""
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


_BUILTINS_PERCEIVE_USES = frozenset({"type", "int", "float", "str", "bool", "list", "dict"})


class _Names:
    """Module-level names of the generated code, none equal to a parameter of the function."""

    def __init__(self, params: tuple[Param, ...]):
        self.taken = {p.name for p in params}
        self.chosen: dict[str, str] = {}

    def __getitem__(self, base: str) -> str:
        name = self.chosen.get(base)
        if name is None:
            name = base
            while name in self.taken:
                name += "_"
            self.taken.add(name)
            self.chosen[base] = name
        return name

    def imported(self, base: str) -> str:
        """``base`` or ``base as alias`` for an import line."""
        name = self[base]
        return base if name == base else f"{base} as {name}"


class BuiltinGenerator:
    """Writes the enhancement for one function; see the module docstring."""

    id = GENERATOR_ID
    version = GENERATOR_VERSION

    def generate(self, spec: FunctionSpec, config, domain: Domain, hints: dict | None = None) -> GeneratedCode:
        if spec.is_generator and spec.is_async:
            raise GenerationError("unsupported", f"{spec.function_id} is an async generator function")
        h = _Hints(spec)
        n = _Names(spec.params)
        coerce = getattr(config, "repair", None) == "coerce"
        retryable = list(domain.retryable)
        if config.retries is not None and not retryable:
            retryable = ["ConnectionError", "TimeoutError"]
        retries = config.retries if config.retries is not None else domain.retries
        timeout = config.timeout
        if spec.is_generator:
            # A stream is returned as the original's: it cannot be retried, timed or checked
            # item by item without changing when the caller sees what. Perceive still runs.
            retryable, timeout = [], None
        learned = hints.get("params", {}) if hints else {}
        tunable = self._tunable(spec, config, domain)
        parameters = self._parameters(retries if retryable else None, timeout, domain, tunable, learned)

        parts = _DomainParts(spec, domain, h, n)
        parameters.update(parts.parameters)
        # The decorator's domain options (when PoetConfig carries them: a mapping or (name, value) pairs)
        # set the starting value of a domain parameter, e.g. max_prompt_tokens; ranges still hold.
        options = getattr(config, "domain_options", None) or ()
        for name, value in (options.items() if isinstance(options, dict) else options):
            spec_ = parameters.get(name)
            if spec_ is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
                spec_["default"] = min(max(value, spec_["min"]), spec_["max"])
        retry_on = list(domain.retry_on) if retryable else []
        perceive = self._perceive(spec, domain, h, n, tunable, coerce, parts)
        operate = self._operate(spec, n, retryable, timeout, retry_on)
        cached = (domain.cache_pure_answers and config.optimize_for in ("cost", "latency")
                  and not spec.is_generator and _is_pure(spec))
        if cached:
            operate = self._cached(spec, n, operate)
            parts.imports.append("answers")
        enforce = self._enforce(spec, domain, h, n, coerce, parts)
        train = self._train(config) if config.optimize_for else None

        w = _Writer()
        objective = f", objective {config.optimize_for}" if config.optimize_for else ""
        w.add('"""POET enhancement of ' + f"{spec.function_id} (domain {domain.name}{objective}).")
        w.add()
        w.add(f"Written by the poet-runtime built-in generator {GENERATOR_ID}-{GENERATOR_VERSION} from the function's")
        w.add(f"signature and hints and the {domain.name} domain rules (version {domain.version}). When POET is")
        w.add(f"enabled, a call to {spec.qualname} runs perceive -> operate_prime -> enforce" + (" -> train." if train else "."))
        w.add(f"operate_prime calls {spec.qualname} itself (the logic it is given); this module never contains it.")
        w.add("Checks report what does not match and change nothing" + (
            ", except the repairs stated below." if coerce or domain.drop_missing_in_sequences or domain.missing == "default"
            or tunable or parts.repairs else "."))
        w.add("If a phase fails before the logic ran, the runtime calls the original function instead;")
        w.add("after it ran, the caller gets the logic's own result.")
        w.add('"""')
        w.add()
        std = []
        if retryable and not spec.is_async:
            std.append(f"import {n.imported('time')}")
        for line in std:
            w.add(line)
        if std:
            w.add()
        facility = [f"from poet_sandbox import {', '.join(n.imported(x) for x in ['validate', *sorted(parts.imports)])}"]
        names = ["EnforceError"]
        if retryable:
            names.insert(0, "CircuitOpenError")
        facility.append(f"from poet_sandbox.errors import {', '.join(n.imported(x) for x in names)}")
        if retryable:
            facility.append(f"from poet_sandbox.breaker import {n.imported('CircuitBreaker')}")
            facility.append(f"from poet_sandbox.retry import {n.imported('backoff_delay')}")
        if retry_on:
            facility.append(f"from poet_sandbox.transient import {n.imported('worth_retry')}")
        timing = []
        if timeout is not None:
            timing.append("call_with_timeout_async" if spec.is_async else "call_with_timeout")
        if retryable and spec.is_async:
            timing.append("sleep_async")
        if timing:
            facility.append(f"from poet_sandbox.timeouts import {', '.join(n.imported(x) for x in timing)}")
        facility.append(f"from poet_sandbox.validate import {n.imported('UNSET')}")
        for line in facility:
            w.add(line)
        w.add()
        w.add(f"{n['FUNCTION']} = {spec.function_id!r}")
        w.add(f"{n['DOMAIN']} = {domain.name!r}")
        w.add(f"{n['OBJECTIVE']} = {config.optimize_for!r}")
        w.add()
        w.add("# Values the runtime may tune or learn; configure() applies params.json within these ranges.")
        w.add(f"{n['PARAMETERS']} = {{")
        for name, spec_ in parameters.items():
            body = ", ".join(f"{k!r}: {_number(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else repr(v)}"
                             for k, v in spec_.items())
            w.add(f"{name!r}: {{{body}}},", 1)
        w.add("}")
        w.add(f"{n['PARAMS']} = {{name: spec['default'] for name, spec in {n['PARAMETERS']}.items()}}")
        if timeout is not None:
            w.add("# The decorator's timeout: the limit of the last attempt, whatever tuning does.")
            w.add(f"{n['TIMEOUT_S']} = {_number(float(timeout))}")
        if retryable:
            w.add(f"# Errors worth another attempt in the {domain.name} domain; anything else is the caller's.")
            w.add(f"{n['RETRYABLE']} = ({', '.join(retryable)},)")
            if retry_on:
                w.add(f"# And any error that says it is a {' or a '.join(retry_on)} (a 429, a model client's own class).")
                w.add(f"{n['RETRY_ON']} = {tuple(retry_on)!r}")
            w.add(f"{n['BREAKER']} = {n['CircuitBreaker']}({n['PARAMS']}['breaker_threshold'], "
                  f"{n['PARAMS']}['breaker_reset_s'])")
        shadowed = [(alias, base) for base, alias in sorted(n.chosen.items())
                    if alias != base and base in _BUILTINS_PERCEIVE_USES]
        if shadowed:
            w.add("# Builtins perceive uses, under names no parameter of the function has.")
            for alias, base in shadowed:
                w.add(f"{alias} = {base}")
        for name, expression in h.module_checks:
            w.add(f"{name} = {expression}")
        if cached:
            w.add("# Answers of repeated identical calls, served once two calls agreed (poet_sandbox.answers).")
            w.add(f"{n['ANSWERS']} = {n['answers']}.new_cache()")
        if parts.constants:
            w.add(f"# {domain.name} rules (domain.toml).")
        for name, expression, comment in parts.constants:
            w.add(f"{name} = {expression}" + (f"  # {comment}" if comment else ""))
        if train:
            w.add("# What train() has observed; the runtime reads it into state.json.")
            w.add(f"{n['STATS']} = {{'calls': 0, 'duration_ms_total': 0.0, 'duration_ms_max': 0.0}}")
        w.add()
        w.add()
        w.block(self._configure(n, retryable))
        w.add()
        w.add()
        w.block(perceive)
        w.add()
        w.add()
        w.block(operate)
        w.add()
        w.add()
        w.block(enforce)
        if train:
            w.add()
            w.add()
            w.block(train.replace("STATS", n["STATS"]))
        return GeneratedCode(
            code=w.text(),
            logic_name=spec.name,
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
    def _configure(n: _Names, retryable) -> str:
        P, PS = n["PARAMS"], n["PARAMETERS"]
        lines = [
            "def configure(params, defaults=None):",
            '    """Apply tuned values, kept within their ranges. (``defaults`` is not used:',
            '    the logic keeps its own argument defaults.)"""',
            "    for name, value in params.items():",
            f"        spec = {PS}.get(name)",
            "        if spec is not None and value is not None:",
            f"            {P}[name] = min(max(value, spec['min']), spec['max'])",
        ]
        if retryable:
            lines.append(f"    {n['BREAKER']}.configure({P}['breaker_threshold'], {P}['breaker_reset_s'])")
        return "\n".join(lines)

    def _perceive(self, spec: FunctionSpec, domain: Domain, h: _Hints, n: _Names, tunable: dict,
                  coerce: bool, parts: "_DomainParts") -> str:
        V, U, P, R, C = n["validate"], n["UNSET"], n["PARAMS"], n["repairs"], n["checked"]
        defaults = {p.name: U for p in spec.params if p.has_default}
        lines = [f"def perceive({param_list(spec.params, defaults)}):"]
        doc = [f'    """Check the inputs of {spec.qualname}; return the arguments to replace, or None.', ""]
        body = [f"    {R} = None"]
        repairs = False

        def repair(name: str, value: str, indent: str = "    ") -> list[str]:
            return [f"{indent}if {R} is None:", f"{indent}    {R} = {{}}", f"{indent}{R}[{name!r}] = {value}"]

        for param in spec.params:
            if param.kind in (VAR_POSITIONAL, VAR_KEYWORD):
                continue
            notes = []
            name = param.name
            node = h.parse(param.annotation)
            inner, allows_none = h.split_optional(node) if node is not None else (None, True)
            if name in tunable:
                value, _ = tunable[name]
                body.append(f"    if {name} is {U} and {P}[{name!r}] != {_number(value)}:")
                body += repair(name, f"{P}[{name!r}]", "        ")
                repairs = True
                notes.append(f"when not passed, the learned value {P}[{name!r}]")
            if (domain.missing == "default" and param.has_literal_default and not allows_none
                    and param.literal_default is not None):
                body.append(f"    if {name} is None:  # missing: the {domain.name} domain uses the default")
                body.append(f"        {V}.note('repair', {name!r}, {'None -> the default ' + repr(param.literal_default)!r})")
                body += repair(name, repr(param.literal_default), "        ")
                repairs = True
                notes.append(f"None is replaced by its default {param.literal_default!r}")
            drop = domain.drop_missing_in_sequences and self._is_numeric_list(h, inner)
            checker = h.checker(node, drop_missing=drop)
            if drop:
                notes.append("None and NaN entries dropped")
            if checker is not None or notes:
                hint = param.annotation if checker is not None else "not checked"
                doc.append(f"    {name}: {hint}" + (f" ({'; '.join(notes)})" if notes else ""))
            if checker is None or name in parts.handled:
                continue
            checker = checker.replace("validate.", f"{V}.")
            changes = drop or coerce
            call_args = f"{name}, {name!r}" + (", coerce=True" if coerce else "")
            guard = f"{name} is not {U} and " if param.has_default else ""
            if any(note.startswith("None is replaced") for note in notes):
                guard += f"{name} is not None and "  # repaired above: not a mismatch too
            scalar = h.scalar_type(inner)
            if scalar and not drop:
                test = f"{n['type']}({name}) is not {n[scalar]}"  # builtins a parameter may shadow
                if allows_none:
                    test = f"{name} is not None and {test}"
                head = f"    if {guard}{test}:"
                call = f"{checker}({call_args})"
            else:
                check_name = n[f"CHECK_{name.upper()}"]
                h.module_checks.append((check_name, checker))
                head = f"    if {guard[:-5]}:" if guard else None
                call = f"{check_name}({call_args})"
            indent = "        " if head else "    "
            if head:
                body.append(head)
            if changes:
                repairs = True
                body.append(f"{indent}{C} = {call}")
                body.append(f"{indent}if {C} is not {name}:")
                body += repair(name, C, indent + "    ")
            else:
                body.append(f"{indent}{call}")
        body += parts.perceive
        doc += parts.perceive_doc
        if repairs or parts.repairs:
            doc.append("    Repairs are reported (validate.note) and returned by parameter name.")
        if len(doc) == 2:
            doc = [doc[0] + '"""']
        else:
            doc.append('    """')
        body.append(f"    return {R}")
        return "\n".join(lines + doc + body)

    @staticmethod
    def _is_numeric_list(h: _Hints, node) -> bool:
        if not isinstance(node, ast.Subscript) or h._name(node.value) not in _LISTS:
            return False
        item = node.slice
        return h._name(item) in ("float", "int")

    def _operate(self, spec: FunctionSpec, n: _Names, retryable: list[str], timeout, retry_on=()) -> str:
        is_async = spec.is_async
        keyword = "async def" if is_async else "def"
        P = n["PARAMS"]
        lines = [f"{keyword} operate_prime(logic, args, kwargs):"]
        call = "logic(*args, **kwargs)"
        if timeout is not None:
            # A learned (shorter) timeout may only make retries come sooner: the last attempt
            # always gets the decorator's timeout, so tuning never fails a call the caller's
            # own timeout would have let finish.
            limit = (f"{P}['timeout_s'] if attempt < {P}['retries'] else {n['TIMEOUT_S']}"
                     if retryable else n["TIMEOUT_S"])
            helper = n["call_with_timeout_async"] if is_async else n["call_with_timeout"]
            call = f"{helper}(logic, args, kwargs, {limit})"
        if is_async:
            call = f"await {call}"
        if spec.is_generator:
            lines.append(f'    """Call {spec.qualname}: its generator is the result, returned as it is."""')
            lines.append(f"    return {call}")
            return "\n".join(lines)
        if not retryable:
            lines.append(f'    """Call {spec.qualname}' + (" with a timeout" if timeout is not None else "")
                         + '; this domain retries nothing."""')
            lines.append(f"    return {call}")
            return "\n".join(lines)
        sleep = f"await {n['sleep_async']}" if is_async else f"{n['time']}.sleep"
        B = n["BREAKER"]
        lines += [
            f'    """Call {spec.qualname} with retries and jittered exponential backoff on',
            f"    {n['RETRYABLE']}" + (f" and {n['RETRY_ON']}" if retry_on else "") + " errors"
            + (", a timeout per attempt" if timeout is not None else "")
            + ", and a circuit breaker that fails fast",
            '    after repeated failures. Other exceptions reach the caller unchanged."""',
            f"    if {B}.opened_at is not None and not {B}.allow():",
            f"        raise {n['CircuitOpenError']}({n['FUNCTION']} + ': circuit open after repeated failures') "
            f"from {B}.last_error",
            "    attempt = 0",
            "    while True:",
            "        try:",
            f"            result = {call}",
            *([f"        except {n['RETRYABLE']} as error:"] if not retry_on else [
                "        except Exception as error:",
                f"            if not (isinstance(error, {n['RETRYABLE']}) or {n['worth_retry']}(error, {n['RETRY_ON']})):",
                "                raise"]),
            "            attempt = attempt + 1",
            f"            if attempt > {P}['retries']:",
            f"                {B}.record_failure(error)",
            "                raise",
            f"            {n['validate']}.note('retry', 'operate_prime', type(error).__name__ + ': attempt ' + str(attempt + 1))",
            f"            {sleep}({n['backoff_delay']}(attempt, {P}['retry_base_delay_s'], {P}['retry_max_delay_s']))",
            "        else:",
            f"            if {B}.failures:  # an open or half-open breaker always has failures",
            f"                {B}.record_success()",
            "            return result",
        ]
        return "\n".join(lines)

    @staticmethod
    def _cached(spec: FunctionSpec, n: _Names, operate: str) -> str:
        """operate_prime answering repeated identical calls from the cache (``poet_sandbox.answers``)
        and otherwise calling the logic as ``operate`` did, under another name."""
        keyword = "async def" if spec.is_async else "def"
        inner = n["call_logic"]
        head = f"{keyword} operate_prime(logic, args, kwargs):"
        body = operate.replace(head, f"{keyword} {inner}(logic, args, kwargs):", 1)
        A, V, C = n["answers"], n["validate"], n["ANSWERS"]
        call = f"await {inner}(logic, args, kwargs)" if spec.is_async else f"{inner}(logic, args, kwargs)"
        return "\n".join([
            body, "", "",
            head,
            f'    """A repeated identical call of {spec.qualname} (pure, as its source shows) is answered from the',
            "    cache once two such calls gave the same answer; any other call runs the logic.\"\"\"",
            f"    key = {A}.key_of(args, kwargs)",
            f"    answer = {A}.lookup({C}, key)",
            f"    if answer is not {A}.MISS:",
            f"        {V}.note('domain.evidence', 'cached_answer', {{'hits': {C}['hits']}})",
            "        return answer",
            f"    result = {call}",
            f"    {A}.remember({C}, key, result)",
            "    return result",
        ])

    def _enforce(self, spec: FunctionSpec, domain: Domain, h: _Hints, n: _Names, coerce: bool,
                 parts: "_DomainParts") -> str:
        V, E = n["validate"], n["EnforceError"]
        lines = ["def enforce(result):"]
        doc = [f'    """Check what {spec.qualname} returned; return it as it is' +
               (" unless a repair applies." if coerce else "."), ""]
        body = []
        if spec.is_generator:
            return "\n".join(lines + [f'    """The generator {spec.qualname} returned, as it is (a stream is not checked)."""',
                                       "    return result"])
        node = h.parse(spec.returns)
        extra = ", coerce=True" if coerce else ""
        assign = "result = " if coerce else ""
        if spec.returns is not None:
            inner, allows_none = h.split_optional(node) if node is not None else (None, True)
            if isinstance(node, ast.Constant) and node.value is None:
                doc.append("    Annotated -> None: anything else is reported.")
                body += ["    if result is not None:",
                         f"        {V}.note('mismatch', 'result', 'expected None, got ' + {V}.describe(result))"]
            else:
                checker = h.checker(node)
                if checker is not None:
                    checker = checker.replace("validate.", f"{V}.")
                    doc.append(f"    Annotated -> {spec.returns}; a result that does not match is reported.")
                    scalar = h.scalar_type(inner)
                    if scalar:
                        test = f"type(result) is not {scalar}"
                        if allows_none:
                            test = f"result is not None and {test}"
                        body += [f"    if {test}:",
                                 f"        {assign}{checker}(result, 'result', error={E}{extra})"]
                    else:
                        name = n["RESULT_CHECK"]
                        h.module_checks.append((name, checker))
                        body.append(f"    {assign}{name}(result, 'result', error={E}{extra})")
        body += parts.enforce
        doc += parts.enforce_doc
        rules = self._domain_rules(domain, n)
        if rules:
            doc.append(f"    {domain.name} rules for mapping results: " + "; ".join(rules[0]) + ".")
            body += rules[1]
        if domain.finite_numbers and not domain.keep_decimal:  # keep_decimal: finance.finite_result, above
            doc.append(f"    {domain.name}: a numeric result must be finite (else refused: the caller")
            doc.append("    still gets the result, and the call is reported).")
            body += ["    if type(result) is float and not (result - result == 0.0):  # NaN or infinite",
                     f"        raise {E}('result: must be a finite number, got ' + repr(result), field='result')"]
        if len(doc) == 2:
            doc = [doc[0] + '"""']
        else:
            doc.append('    """')
        body.append("    return result")
        return "\n".join(lines + doc + body)

    @staticmethod
    def _domain_rules(domain: Domain, n: _Names):
        """Domain rules for dict results: impossible numbers refused, other shapes reported."""
        V = n["validate"]
        summary, body = [], []
        if not domain.fields and not domain.required_fields:
            return None
        body.append(f"    if {V}.is_a(result, dict, 'builtins.dict') and type(result) is not {V}.HostRef:")
        if domain.required_fields:
            summary.append("required " + ", ".join(domain.required_fields) + " (reported)")
            for key in domain.required_fields:
                body.append(f"        if {key!r} not in result:")
                body.append(f"            {V}.note('mismatch', 'result', {'missing required key ' + repr(key)!r})")
        for rule in domain.fields:
            label = f"result[{rule.name!r}]"
            body.append(f"        if {rule.name!r} in result:")
            value = f"result[{rule.name!r}]"
            if rule.type == "float":
                low, high = rule.min, rule.max
                summary.append(f"{rule.name} finite" + (f" in [{low}, {high}]" if low is not None and high is not None else "")
                               + " (else refused)")
                check = n["finance"] + ".finite_in_range" if domain.keep_decimal else f"{V}.finite_in_range"
                body.append(f"            {check}({value}, {label!r}, {low!r}, {high!r})")
            else:
                kind = {"bool": "bool", "int": "int"}.get(rule.type, "str")
                check = {"bool": "as_bool", "int": "as_int"}.get(rule.type, "as_str")
                allowed = f" in {'|'.join(rule.one_of)}" if rule.type == "str" and rule.one_of else ""
                summary.append(f"{rule.name} a {kind}{allowed} (reported)")
                body.append(f"            {V}.{check}({value}, {label!r})")
                if allowed:
                    body.append(f"            if {value} not in {tuple(rule.one_of)!r}:")
                    body.append(f"                {V}.note('mismatch', {label!r}, {'not one of ' + '|'.join(rule.one_of)!r})")
        return summary, body

    @staticmethod
    def _train(config) -> str:
        return "\n".join([
            "def train(call, result, metrics):",
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


# -- domain intelligence: what a domain's rules add to the phases ---------------------------

_DECIMAL = {"Decimal"}
_SIGN_HINTS = {
    "PositiveFloat": "positive", "PositiveInt": "positive", "PositiveDecimal": "positive",
    "NonNegativeFloat": "non_negative", "NonNegativeInt": "non_negative", "NonNegativeDecimal": "non_negative",
    "NegativeFloat": None, "NegativeInt": None,
}
_SIGN_WORDS = {"positive": "positive", "non_negative": "non_negative", "nonnegative": "non_negative",
               "rate": "rates", "probability": "probabilities"}
_TEXTUAL = {"str"}
_RULE_LABELS = {"non_negative": "non-negative", "positive": "positive", "rates": "a rate",
                "probabilities": "a probability in [0, 1]"}


def _is_pure(spec: FunctionSpec) -> bool:
    from poet_runtime.generate.purity import check_purity

    try:
        return bool(check_purity(spec))
    except Exception:  # purity unknown is impure
        return False


def _matches(name: str, patterns) -> bool:
    import fnmatch

    return any(fnmatch.fnmatchcase(name.lower(), pattern.lower()) for pattern in patterns)


class _DomainParts:
    """The lines a domain's rules add: facility imports, constants, Perceive and Enforce
    blocks, parameters. Empty for domains without such rules (base, api_operations)."""

    def __init__(self, spec: FunctionSpec, domain: Domain, h: _Hints, n: _Names):
        self.spec, self.domain, self.h, self.n = spec, domain, h, n
        self.imports: list[str] = []  # facility module names
        self.constants: list[tuple[str, str, str]] = []  # (name, expression, comment)
        self.perceive: list[str] = []
        self.enforce: list[str] = []
        self.parameters: dict = {}
        self.perceive_doc: list[str] = []
        self.enforce_doc: list[str] = []
        self.repairs = False  # a rule may change an argument (reported)
        self.handled: set[str] = set()  # parameters whose plain hint check a domain check replaces
        self.params = [p for p in spec.params]
        if spec.is_generator:
            return
        if domain.evidence is not None:
            self._monitoring()
        if domain.signs or domain.audit or domain.keep_decimal:
            self._finance()
        if domain.text_normalize or domain.max_text_length or domain.max_result_length:
            self._text()
        if domain.budget is not None:
            self._tokens()

    def _import(self, module: str) -> str:
        if module not in self.imports:
            self.imports.append(module)
        return self.n[module]

    def _constant(self, name: str, value, comment: str = "") -> str:
        alias = self.n[name]
        if all(existing != alias for existing, _, _ in self.constants):
            self.constants.append((alias, repr(value), comment))
        return alias

    def _hint(self, param: Param):
        node = self.h.parse(param.annotation)
        inner, _ = self.h.split_optional(node) if node is not None else (None, True)
        return node, inner

    def _plain_params(self):
        return [p for p in self.params if p.kind not in (VAR_POSITIONAL, VAR_KEYWORD)]

    def _values_dict(self, params) -> str:
        """``{'a': a, ...}`` of the parameters, ``*args`` and ``**kwargs`` included by name."""
        return "{" + ", ".join(f"{p.name!r}: {p.name}" for p in params) + "}"

    # ml_monitoring: data quality, two-sample statistics, a rolling reference, advisories
    def _monitoring(self):
        spec, domain, h, n = self.spec, self.domain, self.h, self.n
        config = domain.evidence
        numeric = [p for p in self._plain_params() if BuiltinGenerator._is_numeric_list(h, self._hint(p)[1])]
        by_name = {p.name: p for p in self._plain_params()}
        current = next((by_name[name] for name in config["current"] if name in by_name), None)
        reference = next((by_name[name] for name in config["reference"] if name in by_name), None)
        if current is None:
            current = next((p for p in numeric if p is not reference), None)
        if reference is None and current is not None:
            reference = next((p for p in numeric if p is not current), None)
        samples = [p for p in numeric if p not in (current, reference)]
        samples = [p for p in (current, reference) if p is not None] + samples
        if not samples:
            return
        S, EV, V, U = self._import("stats"), self._import("evidence"), n["validate"], n["UNSET"]
        threshold = domain.quality_threshold if domain.quality_threshold is not None else 0.0
        QT = self._constant("QUALITY_THRESHOLD", float(threshold), "below it a data-quality domain.warning")
        BINS = self._constant("BINS", int(config["bins"]), "of PSI and KL, equal-width over both samples' range")
        EXACT = self._constant("EXACT_MAX_CELLS", int(config["exact_max_cells"]),
                               "n1 * n2 up to this: the exact KS distribution, else scipy's asymptotic rule")
        LIMITS = self._constant("ADVISORY", {"no_drift_p": float(config["no_drift_p"]),
                                             "drift_p": float(config["drift_p"]),
                                             "large_effect": float(config["large_effect"])},
                                "when the function's verdict and the KS test disagree")
        VERDICT = self._constant("VERDICT_KEYS", tuple(config["verdict"]), "where a mapping result says drift")
        F, Q = n["found"], n["quality"]
        lines = [f"    # {domain.name} evidence: data quality of the batches, then the two-sample tests.",
                 "    try:",
                 f"        {Q} = {S}.data_quality({{name: value for name, value in "
                 f"{self._values_dict(samples)}.items() if value is not {U}}})",
                 f"        {F} = {{'quality': {Q}}}",
                 f"        if {Q}['score'] < {QT}:",
                 f"            {V}.note('domain.warning', 'data_quality', {Q})"]
        self.perceive_doc.append(f"    {domain.name}: a data-quality report of " + ", ".join(p.name for p in samples)
                                 + f" (a domain.warning below {threshold})" + (
                                     "; the KS test, PSI and KL" if current is not None else "") + ".")
        if current is not None:
            W = self._constant("WINDOW", [], "the last batches of " + current.name + ": the rolling reference")
            self.parameters["reference_window"] = {
                "default": int(config["window"]), "min": 1, "max": 1000,
                "description": f"batches of {current.name} kept as the rolling reference"}
            guard = f"{current.name} is not {U}" if current.has_default else None
            indent = "        "
            if guard:
                lines.append(f"        if {guard}:")
                indent = "            "
            if reference is not None:
                ref_guard = f"{reference.name} is not {U}" if reference.has_default else None
                head = f"{indent}if {ref_guard}:" if ref_guard else None
                if head:
                    lines.append(head)
                lines.append(f"{indent}{'    ' if head else ''}{F}['reference'] = {S}.two_sample_evidence("
                             f"{current.name}, {reference.name}, {BINS}, {EXACT})")
                self.perceive_doc.append(f"    {current.name} is tested against {reference.name}, and against the "
                                         "rolling reference of its last batches.")
            else:
                self.perceive_doc.append(f"    {current.name} is tested against the rolling reference of its last "
                                         "batches.")
            lines += [f"{indent}if {W}:",
                      f"{indent}    {F}['rolling'] = {S}.two_sample_evidence({current.name}, "
                      f"{S}.window_reference({W}), {BINS}, {EXACT})",
                      f"{indent}{S}.push_window({W}, {current.name}, {n['PARAMS']}['reference_window'])"]
        lines += [f"        {EV}.begin(**{F})",
                  f"    except Exception as {n['problem']}:  # evidence is never worth failing the call for",
                  f"        {EV}.begin(error=type({n['problem']}).__name__)"]
        self.perceive += lines
        R = n["test"]
        self.enforce += [
            f"    {F} = {EV}.take()",
            f"    if {F}:",
            f"        {F}['verdict'] = {S}.verdict_of(result, {VERDICT})",
            f"        {R} = {F}.get('reference') or {F}.get('rolling')",
            f"        {n['advice']} = {S}.advisory({F}['verdict'], {R}, {LIMITS})",
            f"        if {n['advice']} is not None:",
            f"            {V}.note('domain.advisory', 'verdict', {n['advice']})",
            f"        {V}.note('domain.evidence', 'two_sample', {F})",
        ]
        self.enforce_doc.append(f"    {domain.name}: the evidence Perceive found is noted (domain.evidence), and a")
        self.enforce_doc.append("    domain.advisory when the verdict and the KS test disagree.")

    # financial_risk: amounts, rates, probabilities; Decimal kept; an audit note per call
    def _sign_rule(self, param: Param):
        node, inner = self._hint(param)
        name = self.h._name(inner.value if isinstance(inner, ast.Subscript) else inner) if inner is not None else None
        if name in _SIGN_HINTS:
            return _SIGN_HINTS[name], True
        if isinstance(inner, ast.Subscript) and name == "Annotated":
            parts = list(inner.slice.elts) if isinstance(inner.slice, ast.Tuple) else [inner.slice]
            for part in parts[1:]:
                if isinstance(part, ast.Constant) and isinstance(part.value, str):
                    word = part.value.lower().replace("-", "_").replace(" ", "_")
                    if word in _SIGN_WORDS:
                        return _SIGN_WORDS[word], True
        for rule in ("non_negative", "positive", "probabilities", "rates"):
            if _matches(param.name, self.domain.signs.get(rule, ())):
                return rule, False
        numeric = name in ("float", "int") or name in _DECIMAL
        return None, numeric

    def _finance(self):
        spec, domain, n = self.spec, self.domain, self.n
        FI, V, U = self._import("finance"), n["validate"], n["UNSET"]
        checked = []
        for param in self._plain_params():
            rule, numeric = self._sign_rule(param)
            if rule is None and not numeric:
                continue
            self.handled.add(param.name)
            checked.append(f"{param.name} ({_RULE_LABELS.get(rule, 'finite')})")
            call = f"{FI}.check({param.name}, {param.name!r}, {rule!r})"
            if param.has_default:
                self.perceive += [f"    if {param.name} is not {U}:", "        " + call]
            else:
                self.perceive.append("    " + call)
        if checked:
            self.perceive_doc.append(f"    {domain.name}: " + ", ".join(checked) + "; finite numbers (float or")
            self.perceive_doc.append("    Decimal, never converted), a broken rule is a domain.warning.")
        if domain.audit:
            EV = self._import("evidence")
            self.perceive.append(f"    {EV}.begin(inputs={EV}.digests({self._values_dict(self.params)}, {U}))")
            self.perceive_doc.append("    The inputs' digests are kept for the call's audit note.")
            F = n["found"]
            self.enforce += [f"    {F} = {EV}.take()",
                             f"    {V}.note('domain.audit', 'call', {{'inputs': {F}.get('inputs', {{}}), "
                             f"'result': {EV}.digest(result)}})"]
            self.enforce_doc.append(f"    {domain.name}: a domain.audit note per call (inputs' and result's digests).")
        if domain.keep_decimal:
            self.enforce.append(f"    {FI}.finite_result(result)")
            if _matches(spec.name, domain.signs.get("probabilities", ())) or any(
                    word in spec.name.lower() for word in ("probability", "risk_score")):
                self.enforce.append(f"    if {FI}.is_number(result):")
                self.enforce.append(f"        {FI}.finite_in_range(result, 'result', 0.0, 1.0)")
                self.enforce_doc.append(f"    {spec.name} returns a probability: a number outside [0, 1] is refused.")
            self.enforce_doc.append("    A NaN or infinite float or Decimal result is refused (never a decision).")

    # customer_service: lossless NFC, length limits
    def _text(self):
        domain, n = self.domain, self.n
        T, U = self._import("text"), n["UNSET"]
        names = []
        if domain.text_normalize or domain.max_text_length:
            limit = self._constant("MAX_TEXT_LENGTH", domain.max_text_length, "characters of a text argument")
            C = n["checked"]
            for param in self._plain_params():
                node, inner = self._hint(param)
                hint = self.h._name(inner) if inner is not None and not isinstance(inner, ast.Subscript) else None
                if node is not None and hint not in _TEXTUAL:
                    continue
                names.append(param.name)
                lines = [f"    {C} = {T}.normalize({param.name}, {param.name!r}, {limit})"]
                if domain.text_normalize:
                    self.repairs = True
                    lines += [f"    if {C} is not {param.name}:",
                              f"        if {n['repairs']} is None:",
                              f"            {n['repairs']} = {{}}",
                              f"        {n['repairs']}[{param.name!r}] = {C}"]
                self.perceive += lines
            if names:
                self.perceive_doc.append(f"    {domain.name}: text of " + ", ".join(names) + " normalised to NFC "
                                         "(lossless, reported);")
                self.perceive_doc.append(f"    longer than {domain.max_text_length} characters: a domain.warning.")
        if domain.max_result_length:
            limit = self._constant("MAX_RESULT_LENGTH", domain.max_result_length, "characters of a text result")
            self.enforce.append(f"    {T}.check_length(result, 'result', {limit})")
            self.enforce_doc.append(f"    {domain.name}: a text result over {domain.max_result_length} characters is "
                                    "a domain.warning.")

    # prompt_optimization: token counts, a budget checked before the call
    def _tokens(self):
        domain, n = self.domain, self.n
        TK, EV, V, U, P = self._import("tokens"), self._import("evidence"), n["validate"], n["UNSET"], n["PARAMS"]
        for key in ("max_prompt_tokens", "token_budget", "cost_per_1k_tokens", "cost_budget"):
            value = domain.budget[key]
            self.parameters[key] = {"default": float(value) if "cost" in key else int(value), "min": 0.0 if "cost" in key else 0,
                                    "max": 1e12 if "cost" in key else 10 ** 12,
                                    "description": {"max_prompt_tokens": "estimated prompt tokens one call may send (0: no limit)",
                                                    "token_budget": "estimated tokens this function may use per process (0: no limit)",
                                                    "cost_per_1k_tokens": "cost of 1000 tokens, to turn tokens into a cost",
                                                    "cost_budget": "cost this function may spend per process (0: no limit)"}[key]}
        USAGE = self._constant("USAGE", {"calls": 0, "tokens": 0, "cost": 0.0},
                               "what this function used in this process (the budget's account)")
        texts = []
        for param in self.params:
            node, inner = self._hint(param)
            base = self.h._name(inner.value if isinstance(inner, ast.Subscript) else inner) if inner is not None else None
            if node is None or base in _TEXTUAL | _LISTS | _DICTS | {"Sequence", "Mapping", "Any"}:
                texts.append(param)
        F, TOTAL = n["found"], n["total"]
        counts = "{" + ", ".join(f"{p.name!r}: {TK}.estimate({p.name})" for p in texts) + "}"
        self.perceive += [
            f"    {F} = {counts}",
            f"    {TOTAL} = sum({F}.values())",
            f"    for {n['broken']} in {TK}.check_budget({USAGE}, {TOTAL}, {P}['max_prompt_tokens'], "
            f"{P}['token_budget'], {P}['cost_per_1k_tokens'], {P}['cost_budget']):",
            f"        {V}.note('domain.warning', 'budget', {n['broken']})",
            f"    {EV}.begin(prompt_tokens={F})",
        ]
        self.perceive_doc.append(f"    {domain.name}: estimated tokens of " + (", ".join(p.name for p in texts) or "no argument")
                                 + "; the budget is checked")
        self.perceive_doc.append("    before the call (a call over it is a domain.warning and still runs).")
        R = n["tokens_out"]
        self.enforce += [
            f"    {F} = {EV}.take().get('prompt_tokens', {{}})",
            f"    {R} = {TK}.estimate(result)",
            f"    {TK}.spend({USAGE}, sum({F}.values()) + {R}, {P}['cost_per_1k_tokens'])",
            f"    {V}.note('domain.evidence', 'tokens', {{'prompt_tokens': {F}, 'result_tokens': {R}, "
            f"'estimated': True, 'used_tokens': {USAGE}['tokens'], 'used_cost': round({USAGE}['cost'], 6)}})",
        ]
        self.enforce_doc.append(f"    {domain.name}: the estimated tokens of the prompt and the result are noted "
                                "(domain.evidence).")
