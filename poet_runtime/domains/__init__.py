"""Domains: what POET knows about a kind of function, one folder each.

A domain folder holds ``domain.toml`` (metadata, the rules Perceive, Operate' and
Enforce follow, objectives it adds, parameters training may tune) and, for the LLM
generator, ``template.txt``. Adding a domain means adding a folder; nothing here
lists them by name.
"""

from __future__ import annotations

import builtins
import os
import threading
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from poet_runtime.errors import PoetConfigError

CORE_OBJECTIVES = ("accuracy", "latency", "cost", "recall", "precision", "alert_quality")
# ``enable_training=True`` without an objective means this one (deprecated spelling).
LEGACY_OBJECTIVE = "performance"
_FOLDER = Path(__file__).resolve().parent
_FIELD_TYPES = ("float", "int", "bool", "str")
_SIGN_RULES = ("non_negative", "positive", "rates", "probabilities")
_RETRY_ON = ("rate_limit", "timeout")
# [evidence]: the keys and their defaults (ml_monitoring's two-sample statistics).
EVIDENCE_DEFAULTS = {
    "current": ("current_data", "current", "current_batch", "batch", "production", "actual", "live", "sample"),
    "reference": ("reference_data", "reference", "reference_batch", "baseline", "expected", "training",
                  "train_data"),
    "verdict": ("drift_detected", "drift", "is_drift", "alert"),
    "bins": 10,
    "no_drift_p": 0.05,         # drift claimed while p > this: an advisory
    "drift_p": 0.001,           # no drift claimed while p < this and the effect is large: an advisory
    "large_effect": 0.2,        # the KS statistic that counts as a large effect
    "window": 5,                # batches in the rolling reference
    "exact_max_cells": 10000,   # n1 * n2 up to this: the exact KS distribution, else the asymptotic
}
BUDGET_KEYS = ("max_prompt_tokens", "token_budget", "cost_per_1k_tokens", "cost_budget")


@dataclass(frozen=True)
class FieldRule:
    name: str
    type: str
    min: float | None = None
    max: float | None = None
    one_of: tuple = ()


@dataclass(frozen=True)
class Domain:
    name: str
    version: int
    description: str
    folder: Path
    objectives: tuple[str, ...] = ()
    retries: int = 0
    retryable: tuple[str, ...] = ()
    retry_base_delay_s: float = 0.05
    retry_max_delay_s: float = 1.0
    breaker_threshold: int = 5
    breaker_reset_s: float = 30.0
    missing: str = "reject"
    drop_missing_in_sequences: bool = False
    finite_numbers: bool = False
    required_fields: tuple[str, ...] = ()
    fields: tuple[FieldRule, ...] = ()
    tunable: dict = field(default_factory=dict)  # name -> {"min": .., "max": ..}
    alert_quality_beta: float = 1.0
    pure: bool = False  # calls have no side effects: running the logic twice (shadow evaluation) is safe
    template_version: int = 1  # of template.txt: part of an LLM-made version's key
    # "redact": personal data (e-mail, phone, card numbers) never leaves a call: events, logs,
    # recorded inputs, LLM prompts and probes go through poet_runtime.redact.redact first.
    pii: str | None = None
    # ml_monitoring: [perceive] quality_threshold, and [evidence] (two-sample statistics).
    quality_threshold: float | None = None
    evidence: dict | None = None
    # financial_risk: [perceive.signs] name patterns per rule; [enforce] audit, keep_decimal.
    signs: dict = field(default_factory=dict)
    audit: bool = False
    keep_decimal: bool = False
    # customer_service: [perceive.text] normalize, max_length; [enforce] max_result_length.
    text_normalize: str | None = None
    max_text_length: int | None = None
    max_result_length: int | None = None
    # prompt_optimization: [budget] (tokens and cost, checked before a call); [operate] retry_on.
    budget: dict | None = None
    retry_on: tuple[str, ...] = ()
    # [operate] cache_pure_answers: with optimize_for cost or latency, a pure function's repeated
    # identical calls are answered from a cache once two calls agreed (poet_sandbox.answers).
    cache_pure_answers: bool = False

    @property
    def template_path(self) -> Path:
        return self.folder / "template.txt"


def _read(folder: Path) -> Domain:
    path = folder / "domain.toml"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise PoetConfigError(f"{path}: {error}") from None

    def where(key: str) -> str:
        return f"{path}: {key}"

    operate = data.get("operate", {})
    perceive = data.get("perceive", {})
    enforce = data.get("enforce", {})
    rules = []
    for name, spec in sorted(enforce.get("fields", {}).items()):
        kind = spec.get("type")
        if kind not in _FIELD_TYPES:
            raise PoetConfigError(f"{where(f'enforce.fields.{name}.type')}: must be one of {', '.join(_FIELD_TYPES)}")
        rules.append(FieldRule(name, kind, spec.get("min"), spec.get("max"), tuple(spec.get("one_of", ()))))
    missing = perceive.get("missing", "reject")
    if missing not in ("reject", "default"):
        raise PoetConfigError(f"{where('perceive.missing')}: must be 'reject' or 'default'")
    evidence = None
    if "evidence" in data:
        evidence = dict(EVIDENCE_DEFAULTS)
        for key, value in data["evidence"].items():
            if key not in EVIDENCE_DEFAULTS:
                raise PoetConfigError(f"{where(f'evidence.{key}')}: unknown key; known: {', '.join(EVIDENCE_DEFAULTS)}")
            default = EVIDENCE_DEFAULTS[key]
            if isinstance(default, tuple):
                if not (isinstance(value, list) and all(isinstance(item, str) for item in value)):
                    raise PoetConfigError(f"{where(f'evidence.{key}')}: must be a list of parameter or key names")
                value = tuple(value)
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise PoetConfigError(f"{where(f'evidence.{key}')}: must be a number > 0")
            evidence[key] = value
    signs = {}
    for key, patterns in perceive.get("signs", {}).items():
        if key not in _SIGN_RULES:
            raise PoetConfigError(f"{where(f'perceive.signs.{key}')}: unknown rule; known: {', '.join(_SIGN_RULES)}")
        if not (isinstance(patterns, list) and all(isinstance(item, str) for item in patterns)):
            raise PoetConfigError(f"{where(f'perceive.signs.{key}')}: must be a list of name patterns")
        signs[key] = tuple(patterns)
    budget = None
    if "budget" in data:
        budget = {}
        for key in BUDGET_KEYS:
            value = data["budget"].get(key, 0)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise PoetConfigError(f"{where(f'budget.{key}')}: must be a number >= 0 (0: no limit)")
            budget[key] = value
        for key in data["budget"]:
            if key not in BUDGET_KEYS:
                raise PoetConfigError(f"{where(f'budget.{key}')}: unknown key; known: {', '.join(BUDGET_KEYS)}")
    for name in operate.get("retry_on", ()):
        if name not in _RETRY_ON:
            raise PoetConfigError(f"{where('operate.retry_on')}: {name!r} is not one of {', '.join(_RETRY_ON)}")
    text = perceive.get("text", {})
    if text.get("normalize") not in (None, "NFC"):
        raise PoetConfigError(f"{where('perceive.text.normalize')}: only \"NFC\" (lossless) is allowed")

    def positive(table, key, label):
        value = table.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise PoetConfigError(f"{where(label)}: must be a whole number > 0")
        return value

    quality = perceive.get("quality_threshold")
    if quality is not None and (isinstance(quality, bool) or not isinstance(quality, (int, float))
                                or not 0.0 <= quality <= 1.0):
        raise PoetConfigError(f"{where('perceive.quality_threshold')}: must be a number in [0, 1]")
    pii = data.get("pii")
    if pii not in (None, "redact"):
        raise PoetConfigError(f"{where('pii')}: must be \"redact\" or absent")
    for name in operate.get("retryable", ()):
        kind = getattr(builtins, name, None)
        if not (isinstance(kind, type) and issubclass(kind, BaseException)):
            raise PoetConfigError(f"{where('operate.retryable')}: {name!r} is not a built-in exception")
    try:
        return Domain(
            name=data["name"],
            version=int(data["version"]),
            description=data.get("description", ""),
            folder=folder,
            objectives=tuple(data.get("objectives", ())),
            retries=int(operate.get("retries", 0)),
            retryable=tuple(operate.get("retryable", ())),
            retry_base_delay_s=float(operate.get("retry_base_delay_s", 0.05)),
            retry_max_delay_s=float(operate.get("retry_max_delay_s", 1.0)),
            breaker_threshold=int(operate.get("breaker_threshold", 5)),
            breaker_reset_s=float(operate.get("breaker_reset_s", 30.0)),
            missing=missing,
            drop_missing_in_sequences=bool(perceive.get("drop_missing_in_sequences", False)),
            finite_numbers=bool(enforce.get("finite_numbers", False)),
            required_fields=tuple(enforce.get("required_fields", ())),
            fields=tuple(rules),
            tunable=dict(data.get("tunable", {})),
            alert_quality_beta=float(data.get("alert_quality_beta", 1.0)),
            pure=bool(data.get("pure", False)),
            template_version=int(data.get("template_version", 1)),
            pii=pii,
            quality_threshold=float(quality) if quality is not None else None,
            evidence=evidence,
            signs=signs,
            audit=bool(enforce.get("audit", False)),
            keep_decimal=bool(enforce.get("keep_decimal", False)),
            text_normalize=text.get("normalize"),
            max_text_length=positive(text, "max_length", "perceive.text.max_length"),
            max_result_length=positive(enforce, "max_result_length", "enforce.max_result_length"),
            budget=budget,
            retry_on=tuple(operate.get("retry_on", ())),
            cache_pure_answers=bool(operate.get("cache_pure_answers", False)),
        )
    except KeyError as missing_key:
        raise PoetConfigError(f"{where(str(missing_key.args[0]))}: required") from None


_domains: dict[str, Domain] | None = None
_lock = threading.Lock()
# A child forked while another thread held this lock would wait on it forever.
os.register_at_fork(after_in_child=_lock._at_fork_reinit)


def all_domains() -> dict[str, Domain]:
    global _domains
    with _lock:
        if _domains is None:
            found = {}
            for folder in sorted(_FOLDER.iterdir()):
                if (folder / "domain.toml").is_file():
                    domain = _read(folder)
                    found[domain.name] = domain
            _domains = found
        return _domains


def get_domain(name: str | None) -> Domain:
    return all_domains()[name or "base"]


def domain_names() -> list[str]:
    return sorted(all_domains())


def objectives_for(domain: str | None) -> list[str]:
    """Every objective a function in this domain may optimise for."""
    extra = get_domain(domain).objectives if (domain or "base") in all_domains() else ()
    return [*CORE_OBJECTIVES, LEGACY_OBJECTIVE, *extra]
