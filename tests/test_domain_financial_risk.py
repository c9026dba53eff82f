"""financial_risk through the real runtime: Decimal kept, sign rules reported, impossible probabilities
refused (the caller still gets the function's answer), an audit event per call, and no retries.

In-process (``trusted``) and in the RestrictedPython worker (the default policy trusting no generator).
The same function under ``base`` is retried on a ConnectionError and audits nothing.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

import poet_runtime
from poet_runtime import runtime
from poet_runtime.resources import load_facility

from domain_helpers import policy, domain_events  # noqa: F401  (fixtures)

load_facility()
from poet_sandbox import evidence  # noqa: E402

LOANS = '''\
from decimal import Decimal
from poet_runtime import poet

SEEN = []


@poet(domain="{domain}")
def assess(loan_amount: Decimal, annual_income: Decimal, default_probability: float) -> dict:
    SEEN.append((loan_amount, annual_income))
    if loan_amount == 0:
        raise ConnectionError("the bureau did not answer")
    payment = (loan_amount / 12).quantize(Decimal("0.01"))
    return {{"approved": default_probability < 0.2, "default_probability": default_probability * 1.5,
             "monthly_payment": payment}}
'''


def test_decimals_stay_decimal_and_every_call_is_audited(policy, write_module, domain_events):
    module = write_module("fin_audit", LOANS.format(domain="financial_risk"))
    amount, income = Decimal("25000.10"), Decimal("85000.00")
    decision = module.assess(amount, income, 0.1)
    assert type(decision["monthly_payment"]) is Decimal and decision["monthly_payment"] == Decimal("2083.34")
    assert module.SEEN[-1][0] is amount and type(module.SEEN[-1][1]) is Decimal  # the caller's own objects
    record = poet_runtime.last_execution()
    assert record.status == "ok" and record.backend == policy
    audits = [event for event in domain_events if event["type"] == "domain.audit"]
    assert len(audits) == 1 and audits[0]["version"] == 1 and audits[0]["execution_id"] == record.execution_id
    if policy == "none":
        detail = audits[0]["detail"]
        assert detail["inputs"] == {"loan_amount": evidence.digest(amount), "annual_income": evidence.digest(income),
                                    "default_probability": evidence.digest(0.1)}
        assert detail["result"] == evidence.digest(decision)
        assert evidence.digest(Decimal("25000.10")) != evidence.digest(Decimal("25000.1"))  # exact text, no float
    else:
        assert evidence.digest(amount) in str(audits[0]["detail"])  # the same digest computed in the worker
    module.assess(Decimal("100"), income, 0.1)
    assert runtime.stats()["fin_audit:assess"].notes[("domain.audit", "call")] == 2


def test_sign_rules_are_reported_and_impossible_probabilities_refused(policy, write_module, domain_events):
    module = write_module("fin_rules", LOANS.format(domain="financial_risk"))
    decision = module.assess(Decimal("-10.00"), Decimal("40000"), 0.1)  # a sign error: reported, not changed
    assert module.SEEN[-1][0] == Decimal("-10.00")
    assert [(e["type"], e["field"]) for e in domain_events if e["type"] == "domain.warning"] == [
        ("domain.warning", "loan_amount")]
    decision = module.assess(Decimal("1000"), Decimal("40000"), 0.9)  # the model answers 1.35
    assert decision["default_probability"] == pytest.approx(1.35)  # the caller gets the function's own answer
    record = poet_runtime.last_execution()
    assert record.fell_back and record.reason == "enforce_rejected" and "default_probability" in record.detail
    audits = [e for e in domain_events if e["type"] == "domain.audit"]
    # In-process the refused call is audited too. The restricted worker's reply for a call Enforce refused
    # carries no notes today (sandbox/harness/worker.py), so there only the first call's audit arrives.
    assert len(audits) == (2 if policy == "none" else 1)


def test_no_retries_where_base_retries(poet_home, write_module):
    risky = write_module("fin_retry", LOANS.format(domain="financial_risk"))
    with pytest.raises(ConnectionError):
        risky.assess(Decimal("0"), Decimal("1"), 0.1)
    assert len(risky.SEEN) == 1  # a decision is not idempotent: run once
    plain = write_module("fin_retry_base", LOANS.format(domain="base"))
    with pytest.raises(ConnectionError):
        plain.assess(Decimal("0"), Decimal("1"), 0.1)
    assert len(plain.SEEN) == 3  # base retries twice
    assert poet_runtime.last_execution() is None or not poet_runtime.last_execution().evidence
