"""A quote fetcher against a flaky service: what api_operations adds.

The simulated service drops 40% of requests with a ConnectionError. Plain
(``python app.py``) many fetches fail; with POET (``python -m poet_runtime app.py``)
each fetch is retried with jittered exponential backoff, a circuit breaker stands
guard, and the result is checked against the domain's contract (a ``status`` of
success, error or pending).
"""

from __future__ import annotations

import random

from poet_runtime import poet


@poet(domain="api_operations")
def fetch_quote(symbol: str) -> dict:
    """Ask the quote service for ``symbol``'s price."""
    if random.random() < 0.4:  # the service under load
        raise ConnectionError("connection reset by the quote service")
    return {"status": "success", "symbol": symbol.upper(), "price": round(100 + 10 * random.random(), 2)}


def main() -> None:
    import poet_runtime

    mode = "enhanced by POET" if poet_runtime.is_enabled() else "plain (POET is off)"
    print(f"fetch_quote runs {mode}")
    failed = 0
    for symbol in ["acme", "globex", "initech", "umbrella", "hooli", "wayne", "stark", "tyrell"]:
        try:
            quote = fetch_quote(symbol)
        except ConnectionError as error:
            failed += 1
            print(f"{symbol:9} failed: {error}")
            continue
        print(f"{symbol:9} {quote['price']:8.2f}")
    print(f"{failed} of 8 fetches failed")


if __name__ == "__main__":
    main()
