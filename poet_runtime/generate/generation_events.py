"""Generation attempts in the durable journal, so ``events`` shows what the model did.

One ``generation.attempt`` event per attempt (model, request kind, tokens, latency,
the refusal's reason), written as its own file under the store root's
``events/processed/``: it is a record for people, not input for the learning engine
(which consumes ``pending/``), and it never holds the answer's text.
"""

from __future__ import annotations

import os
import time
import uuid

EVENT_TYPE = "generation.attempt"
MAX_BYTES = 16_384


def write(spec, fields: dict) -> None:
    from poet_runtime import journal
    from poet_runtime.store import store_root

    event = {"id": uuid.uuid4().hex, "type": EVENT_TYPE, "timestamp": time.time(), "correlation_id": None,
             "causation_id": None, "metadata": {"pid": os.getpid()},
             "payload": {"function": spec.function_id, **{k: v for k, v in fields.items() if v is not None}}}
    line = journal.encode(event, MAX_BYTES)
    if line is None:
        return
    root = journal.events_root(store_root(spec.filename))
    folder = root / journal.PROCESSED
    folder.mkdir(parents=True, exist_ok=True)
    (root / journal.PENDING).mkdir(parents=True, exist_ok=True)
    path = folder / f"gen-{time.time_ns()}-{event['id'][:8]}.jsonl"
    with open(path, "xb") as handle:
        handle.write(line)
