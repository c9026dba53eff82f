"""Summarising documents with a rate-limited model: what prompt_optimization adds.

``summarise`` builds a prompt and sends it to a (simulated) model client that answers
"429 Too Many Requests" now and then, with its own exception class. Plain
(``python app.py``) those calls fail. With POET (``python -m poet_runtime app.py``)
rate-limit and timeout errors are retried with jittered backoff (nothing else is),
the estimated tokens of the prompt and of the answer are recorded with each call,
and a prompt over the domain's budget (8000 estimated tokens per call by default) is
reported before the call is made.
"""

from __future__ import annotations

import random

from poet_runtime import poet

_service = random.Random(1)


class RateLimitError(Exception):
    """What the model client raises on HTTP 429."""

    status_code = 429


def complete(prompt: str) -> str:
    if _service.random() < 0.4:
        raise RateLimitError("429 Too Many Requests: slow down")
    words = prompt.split()
    return "Summary: " + " ".join(words[-12:])


@poet(domain="prompt_optimization")
def summarise(document: str, style: str = "three bullet points") -> str:
    """Ask the model for a summary of ``document``."""
    prompt = f"Summarise the following text as {style}.\n\n{document}"
    return complete(prompt)


DOCUMENTS = [
    "The quarterly report shows revenue up 12 percent, driven by the new subscription plans.",
    "Minutes of the board meeting: the budget was approved and two new members were elected.",
    "lorem ipsum dolor sit amet " * 9000,  # far over the per-call budget: reported before the call
    "Release notes: faster start-up, a new dark theme, and fixes for the export dialog.",
]


def main() -> None:
    import poet_runtime

    mode = "enhanced by POET" if poet_runtime.is_enabled() else "plain (POET is off)"
    print(f"summarise runs {mode}")
    for number, document in enumerate(DOCUMENTS, start=1):
        try:
            summary = summarise(document)
        except RateLimitError as error:
            print(f"document {number}: failed: {error}")
            continue
        print(f"document {number}: {summary[:60]}")
        record = poet_runtime.last_execution()
        if record is not None:
            for item in record.evidence:
                if item["kind"] == "domain.evidence":
                    detail = item["detail"]
                    print(f"    tokens (estimated): prompt {sum(detail['prompt_tokens'].values())}, "
                          f"answer {detail['result_tokens']}")
                elif item["kind"] == "domain.warning":
                    print(f"    over budget before the call: {item['detail']['rule']}")


if __name__ == "__main__":
    main()
