"""Routing support tickets: what customer_service adds.

``route_ticket`` reads a customer's message and picks a queue and a priority; it asks
a flaky CRM for the customer's tier. Plain (``python app.py``) a CRM hiccup fails the
ticket, and "café" typed with a combining accent does not match "café". With POET
(``python -m poet_runtime app.py``) the text is normalised to Unicode NFC (lossless,
reported), the CRM call is retried with backoff, and the personal data in the
messages (e-mail addresses, phone and card numbers) never appears in what POET
records: events, logs and recorded inputs carry placeholders such as ``<email:1a2b>``.
"""

from __future__ import annotations

import random

from poet_runtime import poet

_crm = random.Random(1)


def customer_tier(message: str) -> str:
    if _crm.random() < 0.35:
        raise ConnectionError("CRM timed out")
    return "gold" if "order" in message else "standard"


@poet(domain="customer_service")
def route_ticket(message: str) -> dict:
    """Queue and priority for one customer message."""
    text = message.lower()
    tier = customer_tier(text)
    if "café" in text:  # the café chain is a key account
        return {"queue": "key-accounts", "priority": "high", "tier": tier}
    if "refund" in text or "card" in text:
        return {"queue": "billing", "priority": "urgent" if tier == "gold" else "normal", "tier": tier}
    return {"queue": "general", "priority": "low", "tier": tier}


MESSAGES = [
    "Hi, the Cafe\u0301 Lumière order 1182 never arrived. Reach me at ana.silva@example.org",
    "Please refund card 4111 1111 1111 1111, call +1 (555) 013-2447",
    "How do I change my password?",
    "Refund for order 77 please, my email is bo@example.net",
    "Where is the café on Main Street?",
]


def main() -> None:
    import poet_runtime

    mode = "enhanced by POET" if poet_runtime.is_enabled() else "plain (POET is off)"
    print(f"route_ticket runs {mode}")
    for number, message in enumerate(MESSAGES, start=1):
        try:
            ticket = route_ticket(message)
        except ConnectionError as error:
            print(f"ticket {number}: failed: {error}")
            continue
        print(f"ticket {number}: {ticket['queue']:12} {ticket['priority']}")
    record = poet_runtime.last_execution()
    if record is not None:
        print(f"last call: {record.function} v{record.version} on backend {record.backend}, status {record.status}")


if __name__ == "__main__":
    main()
