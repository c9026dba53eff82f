"""Domains: what POET knows about a kind of function, one folder each.

A domain folder holds ``domain.toml`` (metadata, the rules Perceive, Operate' and
Enforce follow, objectives it adds, parameters training may tune) and, for the LLM
generator, ``template.txt``. Adding a domain means adding a folder; nothing here
lists them by name.
"""

from __future__ import annotations

import builtins
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
        )
    except KeyError as missing_key:
        raise PoetConfigError(f"{where(str(missing_key.args[0]))}: required") from None


_domains: dict[str, Domain] | None = None
_lock = threading.Lock()


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
