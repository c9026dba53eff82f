"""The contract between instances and learners on the broker: stream names, entries, signatures.

Why the journal's own lines travel: the flusher has already encoded and checksummed each batch
(``journal.encode_columns``); forwarding those bytes costs one ``XADD`` per batch, not per event,
and a line means the same thing on the broker as in ``.poet/events/`` (``journal.decode`` and
``journal.expand`` read both). The local journal stays the source of truth: an instance
forwards what it has made durable, so an absent broker delays events but never loses them
(at-least-once; readers drop an entry whose event ids they have already counted).

Streams, for a namespace ``NS`` (``namespace()``):

``poet:NS:events``     instance -> learners. Entry fields (all bytes):
                       ``k``  kind: ``ex`` (an execution batch line), ``fb`` (one feedback event line),
                              ``lr`` (a learning.*/version.* decision line), ``hi`` (an instance heartbeat, JSON)
                       ``d``  the line, exactly as written to the journal (or the heartbeat's JSON)
                       ``p``  the writer's process id (``records.PROCESS_ID``), ``h`` host, ``i`` pid
                       ``o``  where it came from: ``<file name>:<byte offset>`` (``hi``: ``-``)
                       ``s``  ``sign(k, d)`` when the instance holds the key, else absent
                       ``m``  (``ex`` only) the segment's header JSON ``{process, pid, metadata}``: what
                              ``journal.expand`` needs besides the line (the header line itself is not sent)
                       ``x``  (``fb`` only, when the sending process could find it: ``sink.find_execution``)
                              the JSON of the execution's payload the feedback refers to, as the journal
                              holds it (inputs only where the function's policy has ``record_inputs``)
                       An ``ex`` line is a batch line (``["C", ...]``) or one event line of an execution
                       segment (``function.fallback``, a domain's note). ``lr`` lines include the
                       follower's own ``fleet.refused`` / ``fleet.ignored`` (what it did not apply, why).
                       ``hi`` data: ``{host, pid, process, root (store root), started, last_event, at,
                       functions: {id: {version, objective, domain, parameters (PARAMETERS specs with
                       ranges), params (in force)}}}``, every ~2 s and at start and exit.
                       Learners read it in the consumer group ``LEARNERS``. An instance keeps what it
                       sent in ``<events root>/fleet/`` (``fleet.publisher``) and trims the stream
                       to about a million entries (``XADD MAXLEN ~``): learners must keep up.
``poet:NS:outcomes``   learners -> instances: ``params.updated``, ``version.promoted``,
                       ``version.rolled_back``. Fields: ``t`` type, ``m`` the message's JSON (its
                       ``function``, ``version`` and what changed), ``s`` ``sign(t, m)``, ``l`` the
                       learner's name. Instances read it with plain ``XREAD`` (every one sees all) and
                       apply only what verifies (``verify``); anything else is refused and reported.
                       Messages: ``params.updated`` ``{function, version, params: {name: value}}``;
                       ``version.promoted`` ``{function, number, files: {"code.py": text}, generator,
                       params?, builtin_hints?}``; ``version.rolled_back`` ``{function, to}``. Where an
                       instance stands is kept in ``<events root>/fleet/outcomes.last`` (``fleet.follower``).
                       An instance elected to regenerate (``fleet.regenerate``) publishes here too, signed
                       with the same key: ``version.promoted`` (with ``previous``) and ``version.rolled_back``.
``poet:NS:learning``   learners -> instances: ``learning.degraded`` ``{function, version, objective, rolling,
                       baseline, evidence: {recent_failures, comments, trend, samples?}, cause}`` and
                       ``learning.recovered``, same fields and signature as outcomes. Instances holding the
                       key read it (``fleet.follower``) and act on a verified ``learning.degraded`` only
                       through ``fleet.regenerate`` (one instance, elected with
                       ``SET poet:NS:regen:<function>:<version> NX``).

A signature is HMAC-SHA256 over ``kind + b"\\n" + data`` with the fleet's shared secret
(``POET_BROKER_KEY``, or the file named by ``POET_BROKER_KEY_FILE``), hex-encoded.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

EVENTS = "events"
OUTCOMES = "outcomes"
LEARNERS = "poet-learners"  # the consumer group on the events stream
KEY_VAR = "POET_BROKER_KEY"
KEY_FILE_VAR = "POET_BROKER_KEY_FILE"
NAMESPACE_VAR = "POET_BROKER_NAMESPACE"
OUTCOME_TYPES = ("params.updated", "version.promoted", "version.rolled_back")
ENTRY_KINDS = (b"ex", b"fb", b"lr", b"hi")


def namespace(store_root: Path | None = None, environ=None) -> str:
    """``POET_BROKER_NAMESPACE``, else one derived from the store root's resolved path.

    Processes on one machine sharing a store share a namespace by default; a fleet of hosts
    sets the variable to one name.
    """
    environ = os.environ if environ is None else environ
    named = (environ.get(NAMESPACE_VAR) or "").strip()
    if named:
        return named
    base = str(Path(store_root).resolve()) if store_root is not None else "default"
    return hashlib.sha256(base.encode()).hexdigest()[:12]


def stream(ns: str, which: str) -> str:
    return f"poet:{ns}:{which}"


def load_key(environ=None) -> bytes | None:
    """The fleet's shared secret, or None when neither variable is set."""
    environ = os.environ if environ is None else environ
    raw = environ.get(KEY_VAR)
    if raw:
        return raw.encode()
    path = environ.get(KEY_FILE_VAR)
    if path:
        data = Path(path).expanduser().read_bytes().strip()
        return data or None
    return None


def sign(key: bytes, kind: bytes, data: bytes) -> bytes:
    return hmac.new(key, kind + b"\n" + data, hashlib.sha256).hexdigest().encode()


def verify(key: bytes | None, kind: bytes, data: bytes, signature: bytes | None) -> bool:
    """True only when a key is held and the signature is that key's over ``kind``/``data``."""
    if key is None or not signature:
        return False
    return hmac.compare_digest(sign(key, kind, data), bytes(signature))
