"""Policy files: loading, validating, and matching a function to its settings.

Why: a policy decides where generated code runs (backend) and under which limits;
the call path asks ``load_policy(policy_name_for(explicit)).effective_for(id)``.
Schema and the honesty table are in ``policy_schema.py``.

Rules: ``[[rule]]`` tables are applied in file order on top of ``[defaults]``, each
field separately, and **the last matching rule wins** (as in CSS or .gitignore:
put broad rules first and exceptions after them). ``match`` is an ``fnmatch`` glob
on ``module:qualname`` (``*`` crosses dots); a pattern without ``:`` matches the
module alone.

Honesty: a policy whose backend cannot enforce a limit it states is refused, at
load time for ``[defaults]`` and each rule over the defaults, and in
``effective_for`` for the combination several rules produce. For ``restricted``,
``wall_ms``/``cpu_ms``/``memory_mb`` mean the worker pool (``uses_workers``).

Trust: ``EffectivePolicy.trust`` is the tuple of generators whose versions, once
verified by regeneration (resolve.py), run in-process whatever ``backend`` says;
``("builtin",)`` unless a table says otherwise (``false`` in a rule: that default).

OS layers: ``EffectivePolicy.os_layers`` are the worker's operating-system layers
the policy demands; a policy listing one this machine cannot give is refused at
load (honesty, ``policy_schema.os_layer_problems``), and once loaded the worker
pool refuses any worker that did not apply them (``os_sandbox.demand``).

Errors are ``PolicyError`` (a ``PoetConfigError``), one line per problem:
``policies/x.toml:12: defaults.memory_mb: must be > 0``.
"""

from __future__ import annotations

import fnmatch
import os
import re
import threading
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from poet_runtime.backends.base import Limits
from poet_runtime.errors import PoetConfigError
from poet_runtime.policy_locate import clean_loc, display_path, field_name, locate, message_for
from poet_runtime.policy_schema import (LIMIT_FIELDS, LIST_FIELDS, OS_LAYERS, SETTING_FIELDS, TRUST_DEFAULT,
                                        TRUST_WHY, PolicyFile, Rule, Settings, honesty_problems)
from poet_runtime.resources import policies_dir

SHIPPED = ("default", "strict", "trusted")
BUILT_IN = {"backend": "restricted", "on_violation": "fallback", "record_inputs": False, "trust": TRUST_DEFAULT}
_KNOWN = {
    (): ("version", "description", "defaults", "rule"),
    ("defaults",): SETTING_FIELDS,
    ("rule",): ("match", *SETTING_FIELDS),
}


class PolicyError(PoetConfigError):
    """A policy file is invalid; ``errors`` holds one ``file:line: field: message`` per problem."""

    def __init__(self, errors: list[str]):
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class EffectivePolicy:
    backend: str
    on_violation: str
    limits: Limits
    record_inputs: bool = False
    sources: dict = field(default_factory=dict)  # field -> "defaults" | "rule[i] (match ...)" | "built-in"
    policy: str = ""  # the file it came from
    # Generators whose versions, once verified by regeneration, run in-process
    # (backend none) whatever `backend` says. Under backend none everything does.
    trust: tuple[str, ...] = TRUST_DEFAULT
    # Operating-system layers the restricted worker must have (os_sandbox.py).
    os_layers: tuple[str, ...] = ()

    @property
    def uses_workers(self) -> bool:
        """True when the restricted backend must run this in its worker pool."""
        return self.backend == "restricted" and any(
            v is not None for v in (self.limits.wall_ms, self.limits.cpu_ms, self.limits.memory_mb))


class Policy:
    def __init__(self, path: Path, text: str, model: PolicyFile):
        self.path = path
        self.text = text
        self.model = model
        self.name = display_path(path)
        self._cache: dict[str, EffectivePolicy] = {}
        self._lock = threading.Lock()

    def where(self, loc: tuple) -> str:
        return f"{self.name}:{locate(self.text, loc)}: {field_name(loc)}"

    def matching_rules(self, function_id: str) -> list[int]:
        module = function_id.partition(":")[0]
        found = []
        for index, rule in enumerate(self.model.rule):
            pattern = rule.match.strip()
            target = function_id if ":" in pattern else module
            if fnmatch.fnmatchcase(target, pattern):
                found.append(index)
        return found

    def effective_for(self, function_id: str) -> EffectivePolicy:
        with self._lock:
            cached = self._cache.get(function_id)
        if cached is not None:
            return cached
        values, sources, locs = dict(BUILT_IN), {k: "built-in" for k in BUILT_IN}, {}
        layers = [("defaults", ("defaults",), self.model.defaults)]
        layers += [(f"rule[{i}] (match {self.model.rule[i].match!r})", ("rule", i), self.model.rule[i])
                   for i in self.matching_rules(function_id)]
        for label, loc, table in layers:
            for name, value in table.stated().items():
                values[name] = value
                sources[name] = label
                locs[name] = loc + (name,)
        problems = honesty_problems(values["backend"], values)
        if problems:
            raise PolicyError([f"{self.where(locs[name])}: {message} (for {function_id}, backend from "
                               f"{sources['backend']})" for name, message in problems])
        limits = Limits(
            **{name: (None if values.get(name) in (None, False) else values[name]) for name in LIMIT_FIELDS},
            **{name: tuple(values.get(name) or ()) for name in LIST_FIELDS},
        )
        for name in (*LIMIT_FIELDS, *LIST_FIELDS):
            sources.setdefault(name, "not stated")
        trust = values["trust"]
        trust = TRUST_DEFAULT if trust is False else tuple(dict.fromkeys(trust))
        layers = tuple(dict.fromkeys(values.get("os_layers") or ()))
        sources.setdefault("os_layers", "not stated")
        result = EffectivePolicy(values["backend"], values["on_violation"], limits, bool(values["record_inputs"]),
                                 sources, self.name, trust, layers)
        if layers:
            from poet_runtime.backends import os_sandbox

            os_sandbox.demand(layers)
        with self._lock:
            self._cache[function_id] = result
        return result


def _resolve(name_or_path: str) -> Path:
    if name_or_path in SHIPPED:
        return policies_dir() / f"{name_or_path}.toml"
    path = Path(name_or_path).expanduser()
    if not path.is_file() and "/" not in name_or_path and not name_or_path.endswith(".toml"):
        raise PoetConfigError(f"policy {name_or_path!r}: not a shipped policy ({', '.join(SHIPPED)}) "
                              "and no such file")
    return path.resolve()


_cache: dict[Path, tuple[int, Policy]] = {}
_cache_lock = threading.Lock()
# A child forked while another thread held this lock would wait on it forever.
os.register_at_fork(after_in_child=_cache_lock._at_fork_reinit)


def load_policy(name_or_path: str) -> Policy:
    """A shipped policy by name (default, strict, trusted) or a file; cached by path and mtime."""
    path = _resolve(name_or_path)
    try:
        mtime = path.stat().st_mtime_ns
    except OSError as error:
        raise PoetConfigError(f"{display_path(path)}: cannot read policy: {error.strerror}") from None
    with _cache_lock:
        hit = _cache.get(path)
    if hit is not None and hit[0] == mtime:
        return hit[1]
    policy = parse_policy(path.read_text(encoding="utf-8"), path)
    with _cache_lock:
        _cache[path] = (mtime, policy)
    return policy


def parse_policy(text: str, path: Path) -> Policy:
    """Validate a policy's text; raise PolicyError listing every problem."""
    shown = display_path(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        found = re.search(r"\(at line (\d+), column \d+\)", str(error))
        line = found.group(1) if found else "1"
        raise PolicyError([f"{shown}:{line}: (syntax): {re.sub(r' [(]at line.*', '', str(error))}"]) from None
    try:
        model = PolicyFile.model_validate(data)
    except ValidationError as error:
        raise PolicyError(_describe(error, text, shown)) from None
    policy = Policy(path, text, model)
    errors = []
    base = dict(BUILT_IN, **model.defaults.stated())
    for name, message in honesty_problems(base["backend"], base):
        errors.append(f"{policy.where(('defaults', name))}: {message}")
    for index, rule in enumerate(model.rule):
        combined = dict(base, **rule.stated())
        for name, message in honesty_problems(combined["backend"], combined):
            where = ("rule", index, name) if name in rule.stated() else ("rule", index, "backend")
            errors.append(f"{policy.where(where)}: {message}")
    if errors:
        raise PolicyError(errors)
    return policy


def _describe(error: ValidationError, text: str, shown: str) -> list[str]:
    lines, seen = [], set()
    for item in error.errors():
        loc = clean_loc(tuple(item["loc"]))
        if loc in seen:
            continue  # a union reports each member; one line per field is enough
        seen.add(loc)
        name = loc[-1] if loc else ""
        parent = tuple(p for p in loc[:-1] if not isinstance(p, int))
        known = _KNOWN.get(parent, ())
        if item["type"] in ("int_type", "literal_error") and name in LIMIT_FIELDS:
            message = f"must be a positive integer, or false in a rule (got {item['input']!r})"
        elif item["type"] in ("list_type", "literal_error") and name in LIST_FIELDS:
            message = f"must be a list of names, or false in a rule (got {item['input']!r})"
        elif item["type"] in ("list_type", "literal_error") and name == "os_layers":
            message = (f"must be a list of layer names ({', '.join(OS_LAYERS)}), or false in a rule "
                       f"(got {item['input']!r})")
        elif item["type"] in ("list_type", "literal_error") and name == "trust":
            message = (f'must be a list of generator names (["builtin"] or []), or false in a rule '
                       f"(got {item['input']!r}); {TRUST_WHY}")
        else:
            message = message_for(item, known)
        lines.append(f"{shown}:{locate(text, loc)}: {field_name(loc)}: {message}")
    return lines


def policy_name_for(explicit: str | None) -> str:
    """``@poet(policy=...)``, else $POET_POLICY, else [tool.poet] policy in the nearest
    pyproject.toml (cwd upward; a relative path there is relative to that file), else "default"."""
    if explicit:
        return explicit
    env = os.environ.get("POET_POLICY")
    if env:
        return env
    here = Path.cwd()
    for folder in (here, *here.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            try:
                data = tomllib.loads(candidate.read_text(encoding="utf-8"))
            except (OSError, tomllib.TOMLDecodeError):
                return "default"  # settings.py reports a broken pyproject.toml
            value = data.get("tool", {}).get("poet", {}).get("policy")
            if not isinstance(value, str) or not value:
                return "default"
            if value in SHIPPED:
                return value
            return str((folder / value).resolve())
    return "default"


__all__ = ["EffectivePolicy", "Policy", "PolicyError", "Rule", "Settings", "effective_policy", "load_policy", "parse_policy",
           "policy_name_for", "SHIPPED"]


def effective_policy(config, function_id: str):
    """The policy settings for one function (a ``PoetConfig``'s ``policy``, or the
    configured default): backend, limits, trust, on_violation."""
    return load_policy(policy_name_for(config.policy)).effective_for(function_id)
