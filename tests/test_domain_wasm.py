"""The four domains' generated code in the WASM guest (the strict policy trusts no generator): the facility
modules they import (stats, evidence, finance, text, tokens, transient) load and work there too."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

import poet_runtime
from poet_runtime import events, settings

from wasm_helpers import wasm_backend  # noqa: F401  (the session fixture: the guest compiled once)

SOURCE = '''\
import statistics
from decimal import Decimal
from poet_runtime import poet


@poet(domain="ml_monitoring")
def detect_drift(current_data: list[float], reference_data: list[float], threshold: float = 3.0) -> dict:
    gap = abs(statistics.fmean(current_data) - statistics.fmean(reference_data))
    return {"drift_detected": gap > threshold, "score": min(gap / 10.0, 1.0)}


@poet(domain="financial_risk")
def assess(loan_amount: Decimal, default_probability: float) -> dict:
    return {"approved": default_probability < 0.2, "default_probability": default_probability}


@poet(domain="customer_service")
def route(message: str) -> str:
    return message


@poet(domain="prompt_optimization")
def ask(prompt: str) -> str:
    return prompt[:10]
'''


@pytest.fixture
def strict(wasm_backend, poet_home, monkeypatch):  # noqa: F811
    from poet_runtime.backends import wasm_engine

    compiled = wasm_engine.compiled_path()  # where the session fixture compiled the guest
    monkeypatch.setenv("POET_POLICY", "strict")
    settings.reset()
    monkeypatch.setattr(wasm_engine, "compiled_path", lambda: compiled)


def test_each_domain_runs_its_rules_in_the_wasm_guest(strict, write_module):
    seen = []
    unsubscribe = events.subscribe(lambda event: seen.append(event["type"]) if event["type"].startswith("domain.") else None)
    try:
        module = write_module("dom_wasm", SOURCE)
        rng = random.Random(1)
        module.detect_drift([rng.gauss(1, 1) for _ in range(60)], [rng.gauss(0, 1) for _ in range(80)])
        records = [poet_runtime.last_execution()]
        assert module.assess(Decimal("10.5"), 0.1)["approved"] is True
        records.append(poet_runtime.last_execution())
        assert module.route("Cafe\u0301") == "Café"  # NFC, in the guest
        records.append(poet_runtime.last_execution())
        module.ask("hello there")
        records.append(poet_runtime.last_execution())
    finally:
        unsubscribe()
    assert [(r.backend, r.status) for r in records] == [("wasm", "ok")] * 4, records
    assert [[(kind, field) for kind, field, _ in r.notes] for r in records] == [
        [("domain.advisory", "verdict"), ("domain.evidence", "two_sample")], [("domain.audit", "call")],
        [("repair", "message")], [("domain.evidence", "tokens")]]
    assert seen == ["domain.advisory", "domain.evidence", "domain.audit", "domain.evidence"]
