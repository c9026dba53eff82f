"""Loan decisions: what financial_risk adds.

``assess_loan`` prices a loan from Decimal amounts and returns a default probability.
Plain (``python app.py``) it answers as it is. With POET
(``python -m poet_runtime app.py``) every call leaves an audit trail (a
``domain.audit`` event with the digests of the inputs and of the decision, and the
version that decided), amounts breaking their sign rule are reported, a Decimal stays
a Decimal, nothing is ever retried, and an impossible answer (a probability above 1,
which this model gives for very large loans) is refused: the caller still gets the
function's own answer, and the call is reported as a fallback.
"""

from __future__ import annotations

from decimal import Decimal

from poet_runtime import poet


@poet(domain="financial_risk")
def assess_loan(loan_amount: Decimal, annual_income: Decimal, interest_rate: float) -> dict:
    """Approve when the modelled default probability stays under 20 %."""
    burden = loan_amount * Decimal(str(1 + interest_rate)) / max(annual_income, Decimal("1"))
    default_probability = float(burden) / 10  # a naive model: unbounded for large burdens
    return {"approved": default_probability < 0.2, "default_probability": round(default_probability, 4),
            "monthly_payment": (loan_amount * Decimal(str(1 + interest_rate)) / 12).quantize(Decimal("0.01"))}


APPLICATIONS = [
    (Decimal("25000.00"), Decimal("85000.00"), 0.059),
    (Decimal("480000.00"), Decimal("120000.00"), 0.041),
    (Decimal("-1500.00"), Decimal("40000.00"), 0.12),   # a sign error upstream: reported, not changed
    (Decimal("2500000.00"), Decimal("90000.00"), 0.07),  # the model answers a probability above 1
]


def main() -> None:
    import poet_runtime

    mode = "enhanced by POET" if poet_runtime.is_enabled() else "plain (POET is off)"
    print(f"assess_loan runs {mode}")
    for amount, income, rate in APPLICATIONS:
        decision = assess_loan(amount, income, rate)
        verdict = "approved" if decision["approved"] else "declined"
        payment = decision["monthly_payment"]
        print(f"{amount:>12} at {rate:.3f}: {verdict:8} p={decision['default_probability']:.4f} "
              f"monthly {payment} ({type(payment).__name__})")
        record = poet_runtime.last_execution()
        if record is not None:
            for item in record.evidence:
                if item["kind"] == "domain.audit":
                    print(f"    audit v{record.version}: result {item['detail']['result'][:19]}..., "
                          f"inputs {sorted(item['detail']['inputs'])}")
                elif item["kind"] == "domain.warning":
                    print(f"    warning: {item['field']} breaks its rule ({item['detail']['rule']})")
            if record.fell_back:
                print(f"    refused by Enforce ({record.reason}): the caller got the function's own answer")


if __name__ == "__main__":
    main()
