"""poet_runtime.redact: personal data replaced by stable placeholders, containers walked, nothing else touched.

The customer_service domain (pii = "redact") relies on it for events, logs, recorded inputs and prompts.
"""

from __future__ import annotations

import collections
import re

from poet_runtime.domains import get_domain
from poet_runtime.redact import contains_pii, redact

PLACEHOLDER = re.compile(r"<(email|phone|card):[0-9a-f]{4}>")


def test_emails_phones_and_luhn_valid_cards_are_replaced_by_stable_placeholders():
    text = "Jo (jo.smith+help@example.co.uk, +44 20 7946 0958) paid with 4111-1111-1111-1111."
    out = redact(text)
    assert "example" not in out and "7946" not in out and "4111" not in out
    assert [m.group(1) for m in PLACEHOLDER.finditer(out)] == ["email", "phone", "card"]
    assert redact(text) == out  # stable: the same text gives the same placeholders
    assert redact("JO.SMITH+help@EXAMPLE.co.uk") == PLACEHOLDER.search(out).group(0)  # case of an address ignored
    assert redact("other@example.com") != PLACEHOLDER.search(out).group(0)


def test_numbers_that_are_not_pii_are_kept():
    for text in ("order 4111 1111 1111 1112 (not a card: Luhn fails)", "on 2024-01-15 at 12:30",
                 "total 1234567.89 EUR", "ticket 1234567", "version 3.11.7", "call me maybe"):
        assert redact(text) == text, text


def test_containers_are_walked_and_copied_other_objects_left_alone():
    marker = object()
    value = {"to": ["a@b.io", ("x", 5)], "from a@b.io": {"phone": "(555) 123-4567"}, "n": 3, "o": marker}
    out = redact(value)
    assert out is not value and value["to"][0] == "a@b.io"  # a copy; the original is unchanged
    assert out["to"][0].startswith("<email:") and out["to"][1] == ("x", 5) and out["n"] == 3 and out["o"] is marker
    assert any(key.startswith("from <email:") for key in out)
    assert out[next(key for key in out if key.startswith("from"))]["phone"].startswith("<phone:")
    Row = collections.namedtuple("Row", "name mail")
    assert redact(Row("x", "a@b.io")).mail.startswith("<email:") and isinstance(redact(Row("x", "a@b.io")), Row)
    default = collections.defaultdict(list, {"k": "a@b.io"})
    assert type(redact(default)) is collections.defaultdict
    clean = ["no pii here", 42, {"a": 1.5}]
    assert redact(clean) is clean and not contains_pii(clean) and contains_pii(["x@y.org"])


def test_customer_service_declares_pii_redaction_and_others_do_not():
    assert get_domain("customer_service").pii == "redact"
    assert get_domain("base").pii is None and get_domain("ml_monitoring").pii is None
