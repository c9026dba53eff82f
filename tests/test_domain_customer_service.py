"""customer_service through the real runtime: lossless NFC (a reported repair), length limits, transient
errors retried with backoff, and nothing the domain notes carries the customer's text.

In-process (``trusted``) and in the RestrictedPython worker (the default policy trusting no generator).
The same function under ``base`` gets the text as typed and reports nothing about it.
"""

from __future__ import annotations

import unicodedata

import poet_runtime
from poet_runtime.domains import get_domain

from domain_helpers import policy, all_events  # noqa: F401  (fixtures)

ROUTE = '''\
from poet_runtime import poet

SEEN = []
FAIL = [0]


@poet(domain="{domain}")
def route(message: str, customer: str = "") -> dict:
    SEEN.append(message)
    if FAIL[0]:
        FAIL[0] -= 1
        raise ConnectionError("the CRM did not answer")
    return {{"queue": "key-accounts" if "café" in message.lower() else "general", "priority": "urgentish"}}
'''

DECOMPOSED = "Cafe\u0301 order late, write to ana.silva@example.org or call +1 (555) 013-2447"


def test_text_is_normalised_to_nfc_and_reported_without_the_text(policy, write_module, all_events):
    module = write_module("cs_route", ROUTE.format(domain="customer_service"))
    ticket = module.route(DECOMPOSED, customer="a" * 20001)
    assert ticket["queue"] == "key-accounts"  # the documented repair: café typed two ways is one café
    assert module.SEEN[-1] == unicodedata.normalize("NFC", DECOMPOSED) != DECOMPOSED
    record = poet_runtime.last_execution()
    assert record.status == "ok" and record.backend == policy
    kinds = sorted((kind, field) for kind, field, _ in record.notes)
    assert ("repair", "message") in kinds and ("domain.warning", "customer") in kinds  # over the length limit
    assert ("mismatch", "result['priority']") in kinds  # not one of low|normal|high|urgent
    noted = " ".join(str(detail) for _, _, detail in record.notes)
    assert "ana.silva" not in noted and "2447" not in noted and "Cafe" not in noted
    domain_text = " ".join(str(e) for e in all_events if e["type"].startswith("domain."))
    assert "ana.silva" not in domain_text and "aaaa" not in domain_text


def test_transient_errors_are_retried_with_backoff(policy, write_module):
    module = write_module("cs_retry", ROUTE.format(domain="customer_service"))
    module.FAIL[0] = 2
    assert module.route("where is my parcel?")["queue"] == "general"
    assert len(module.SEEN) == 3  # two retries
    record = poet_runtime.last_execution()
    assert [kind for kind, _, _ in record.notes].count("retry") == 2


def test_the_domain_declares_redaction_and_base_does_nothing_of_this(poet_home, write_module):
    assert get_domain("customer_service").pii == "redact"
    module = write_module("cs_base", ROUTE.format(domain="base"))
    assert module.route(DECOMPOSED)["queue"] == "general"  # base: the text as typed
    assert module.SEEN[-1] == DECOMPOSED
    assert not poet_runtime.last_execution().notes
