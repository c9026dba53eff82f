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
                       ``s``  ``sign_entry(fields)`` when the instance holds the key, else absent:
                              format 3, over every field here (``k d p h i o m x``, each present or
                              absent), so a copy with another process, header or execution does not
                              verify. Only the HMAC is checked: a learner reads a backlog of any age,
                              and counts a feedback once by its event id
                       ``m``  (``ex`` only) the segment's header JSON ``{process, pid, metadata}``: what
                              ``journal.expand`` needs besides the line (the header line itself is not sent)
                       ``x``  (``fb`` only, when the sending process could find it: ``sink.find_execution``)
                              the JSON of the execution's payload the feedback refers to, as the journal
                              holds it (inputs only where the function's policy has ``record_inputs``);
                              a learner ignores an ``x`` whose ``execution_id`` / ``function`` is not
                              the feedback's own, and looks the execution up instead
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
                       learner's name (unsigned, shown only: no reader decides anything on it).
                       Instances read it whole (every one sees all; ``read_bounded``) and apply
                       only what ``admit`` lets through; anything else is refused and reported.
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

Events entries, wire format 3 (``ENTRY_FORMAT``): ``3.<stamp>.<HMAC hex>``, the HMAC over
``b"poet-entry 3\\n" + stamp`` and then, for each of ``k d p h i o m x`` in that order, ``b"\\n"``,
the field's name and either ``-`` (absent) or ``<length>:<bytes>``: one string that parses one way
only, so no two field sets sign alike and an absent field is not an empty one (``sign_entry``,
``check_entry``). A learner refuses an events entry signed format 2 (it signed ``k`` and ``d``
only): "signed by an older version of poet_runtime: upgrade that instance"; an older learner
refuses format 3 as "another wire format ... upgrade the reader". Outcomes and verdicts keep
format 2 (their fields are all signed), so instances need no upgrade to read new learners.

Signatures, wire format 2 (``FORMAT``). A signature is
``2.<signed at, ms>.<sender>.<sequence>.<HMAC hex>``: HMAC-SHA256, with the fleet's shared secret
(``POET_BROKER_KEY``, or the file named by ``POET_BROKER_KEY_FILE``), over
``b"poet-wire 2\\n" + stamp + b"\\n" + kind + b"\\n" + data`` where the stamp is
``<at>.<sender>.<sequence>``. The sender is random per process (new after a fork), the sequence
counts that process's signatures, and the time never goes back within a process: so every
signed message is unique and carries when it was made, inside the HMAC. Why: whoever can write
to the broker (no key needed) can delete entries and re-add them under new stream ids, so
neither the stream id nor the entry's place says anything; only what is signed does.

How a reader uses it (``admit``, called by ``fleet.follower`` for outcomes and verdicts):

- a format-1 signature (a bare 64-hex HMAC, as before) is refused, said once: "old wire format";
- a message signed more than ``max_age()`` ago (outcomes; ``POET_BROKER_MAX_AGE_S``, default a
  day) or ``VERDICT_MAX_AGE_S`` ago (verdicts), or more than ``FUTURE_S`` ahead of the reader's
  clock, is refused as stale / from the future;
- per function, and separately for outcomes and verdicts, a message is admitted only if its
  stamp (time, then sender, then sequence) is newer than the newest this process admitted, and
  not older than what the function's store had taken before this process started (``Ledger``:
  ``<store>/fleet-ledger.json``, beside the versions and their params.json, shared by the
  processes of that store). So a restarted process, or one started beside others, refuses what
  was superseded before it started, and a replayed ``version.rolled_back`` is refused after any
  newer outcome of that function, by every instance, restarted or not.

Clocks: ordering between two signers (two learners, a learner and an elected instance) is by
signed time, so their clocks must agree to better than the time between two messages of one
function (NTP keeps hosts within milliseconds); a signer that knows the newest stamp of a
function passes it as ``after_ms`` and signs after it whatever its clock says. A signer whose
clock runs more than ``FUTURE_S`` ahead is refused (its messages would otherwise lock out the
others' until the instances' clocks caught up).

Size: a reader never takes an entry bigger than ``MAX_ENTRY_BYTES`` into its memory
(``read_bounded``, and ``group_read`` for the learners' consumer group: the broker measures each
entry in a script and sends a marker instead).

Seals (``seal`` / ``seal_json``): what a learner keeps in Redis between its steps (staged members,
states, specs, indexes, newest stamps) carries a MAC with a key derived from the fleet's, bound to
the Redis key (and hash field) it is written under, so a writer without the key can delete it but
neither forge it nor move it to another function. Not a signature: no stamp, no ordering; what
must not go back in time keeps its own stamp inside (``learner_versions``, staging's heartbeats).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import itertools
import json
import logging
import os
import re
import secrets
import threading
import time
from collections import Counter
from pathlib import Path
from typing import NamedTuple

from poet_runtime import journal

log = logging.getLogger("poet_runtime")

EVENTS = "events"
OUTCOMES = "outcomes"
LEARNERS = "poet-learners"  # the consumer group on the events stream
KEY_VAR = "POET_BROKER_KEY"
KEY_FILE_VAR = "POET_BROKER_KEY_FILE"
PREVIOUS_KEY_VAR = "POET_BROKER_PREVIOUS_KEY"  # a learner opens seals made with it (a key rotation)
NAMESPACE_VAR = "POET_BROKER_NAMESPACE"
OUTCOME_TYPES = ("params.updated", "version.promoted", "version.rolled_back")
ENTRY_KINDS = (b"ex", b"fb", b"lr", b"hi")
FORMAT = 2
MAX_AGE_VAR = "POET_BROKER_MAX_AGE_S"
MAX_AGE_S = 86400.0  # an outcome older than this is refused: a process away longer starts from its store
VERDICT_MAX_AGE_S = 300.0  # a verdict older than this is not acted on (as ``fleet.regenerate`` says)
FUTURE_S = 60.0  # signed further ahead of the reader's clock than this: refused (the signer's clock is wrong)
MAX_ENTRY_BYTES = 4 << 20  # an outcome or verdict entry bigger than this never reaches a reader's memory
READ_BUDGET_BYTES = 16 << 20  # what one bounded read returns at most (besides one entry)
LEDGER_FILE = "fleet-ledger.json"
CHANNELS = ("outcomes", "learning")  # each function's messages are ordered per channel


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




# -- signing -------------------------------------------------------------------------------------

_PREFIX = b"poet-wire 2\n"
_sign_lock = threading.Lock()
_sender = secrets.token_hex(8)
_sequence = itertools.count(1)
_last_ms = 0


def _new_sender() -> None:
    """A forked child is another sender: the parent's sender and sequence would repeat stamps."""
    global _sender, _sequence, _sign_lock
    _sign_lock = threading.Lock()
    _sender, _sequence = secrets.token_hex(8), itertools.count(1)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_sender)


class Stamp(NamedTuple):
    """What a format-2 signature says about its message: when, who, which one."""

    at_ms: int
    sender: str
    sequence: int

    @property
    def order(self) -> tuple:
        return (self.at_ms, self.sender, self.sequence)

    @property
    def id(self) -> str:
        """Unique per signed message (an election or a log line can name the message by it)."""
        return f"{self.sender}.{self.sequence}"

    def text(self) -> str:
        return f"{self.at_ms}.{self.sender}.{self.sequence}"

    @classmethod
    def parse(cls, text) -> "Stamp | None":
        if isinstance(text, (bytes, bytearray)):
            text = bytes(text).decode("ascii", "replace")
        if type(text) is not str or len(text) > 80:
            return None
        match = _STAMP.fullmatch(text)
        if match is None:
            return None
        at, sender, sequence = match.groups()
        return cls(int(at), sender, int(sequence))


# ASCII digits only: str.isdigit (used before) also took superscripts, which int() then refused
_STAMP = re.compile(r"([0-9]{1,15})\.([0-9a-f]{1,32})\.([0-9]{1,19})")


def _mac(key: bytes, stamp: bytes, kind: bytes, data: bytes) -> bytes:
    return hmac.new(key, _PREFIX + stamp + b"\n" + kind + b"\n" + data, hashlib.sha256).hexdigest().encode()


def _stamp(at: float | None, after_ms: int | None) -> bytes:
    global _last_ms
    with _sign_lock:
        now = int((time.time() if at is None else at) * 1000)
        if at is None:
            now = max(now, _last_ms)  # the wall clock may step back; a process's stamps do not
            _last_ms = now
        if after_ms is not None:
            now = max(now, int(after_ms) + 1)
        return f"{now}.{_sender}.{next(_sequence)}".encode()


def sign(key: bytes, kind: bytes, data: bytes, *, at: float | None = None, after_ms: int | None = None) -> bytes:
    """A format-2 signature of (``kind``, ``data``): made now (``at``: a test's other time), after
    ``after_ms`` when given (the newest stamp the signer knows for the message's function), never
    before this process's previous signature. For outcomes and verdicts; events entries are
    signed whole, ``sign_entry``."""
    stamp = _stamp(at, after_ms)
    return b"2." + stamp + b"." + _mac(key, stamp, kind, data)


# -- events entries: every field a reader uses, signed as one ------------------------------------

ENTRY_FORMAT = 3
ENTRY_FIELDS = (b"k", b"d", b"p", b"h", b"i", b"o", b"m", b"x")  # signed, in this order
_ENTRY_PREFIX = b"poet-entry 3\n"  # not "poet-wire 2": no outcome signature is ever an entry's
_ABSENT = b"-"


def _as_bytes(value) -> bytes | None:
    """A field's value as Redis will hold it (as redis-py encodes it: str in UTF-8, int in decimal)."""
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    if type(value) is int:
        return str(value).encode()
    raise TypeError(f"an events entry's field is bytes, str or int, not {type(value).__name__}")


def _entry_values(fields: dict) -> list:
    """The signed fields' values in ``ENTRY_FIELDS`` order (None: absent), from a dict with bytes
    names (as read) or str names (as written), not both."""
    names = ENTRY_FIELDS if b"k" in fields else _TEXT_FIELDS
    out = []
    for name in names:
        value = fields.get(name)
        out.append(value if value is None or type(value) is bytes else _as_bytes(value))
    return out


_TEXT_FIELDS = tuple(name.decode() for name in ENTRY_FIELDS)


def _entry_mac(key: bytes, stamp: bytes, values) -> bytes:
    # Each field: its name, then "-" when absent or "<length>:" and its bytes. Read from the start
    # this parses one way only, so no two field sets sign the same bytes, and absent is not empty.
    parts = [_ENTRY_PREFIX, stamp]
    for absent, counted, value in zip(_ABSENT_HEADS, _COUNTED_HEADS, values):
        if value is None:
            parts.append(absent)
        else:
            parts.append(counted % len(value))
            parts.append(value)
    return _hmac_hex(key, b"".join(parts))


def _hmac_hex(key: bytes, message: bytes) -> bytes:
    """HMAC-SHA256 of ``message`` in hex (RFC 2104, what ``hmac.new`` computes), from the key's two
    padded hashes made once: a copy of each per entry costs about half of an ``hmac`` object's copy
    and a third of ``hmac.digest``, which pads the key again every time."""
    pads = _entry_macs.get(key)
    if pads is None:
        block = key if len(key) <= 64 else hashlib.sha256(key).digest()  # 64: SHA-256's block
        block = block.ljust(64, b"\0")
        pads = _entry_macs[key] = (hashlib.sha256(block.translate(_INNER_PAD)),
                                   hashlib.sha256(block.translate(_OUTER_PAD)))
    inner, outer = pads[0].copy(), pads[1].copy()
    inner.update(message)
    outer.update(inner.digest())
    return outer.hexdigest().encode()


_ABSENT_HEADS = tuple(b"\n" + name + _ABSENT for name in ENTRY_FIELDS)
_COUNTED_HEADS = tuple(b"\n" + name + b"%d:" for name in ENTRY_FIELDS)
_SIGNED = tuple(zip(ENTRY_FIELDS, _ABSENT_HEADS, _COUNTED_HEADS))
_INNER_PAD = bytes(byte ^ 0x36 for byte in range(256))
_OUTER_PAD = bytes(byte ^ 0x5C for byte in range(256))
_entry_macs: dict = {}  # key -> its inner and outer padded hashes


def sign_entry(key: bytes, fields: dict, *, at: float | None = None) -> bytes:
    """A format-3 signature of an events entry: ``3.<signed at, ms>.<sender>.<sequence>.<HMAC hex>``
    over every field in ``ENTRY_FIELDS`` (kind, data, process, host, pid, origin, batch header,
    execution), present or absent, as Redis will hold them: one HMAC, no encoding of its own.
    ``fields``: the entry (str or bytes names; bytes, str or int values) without ``s``."""
    stamp = _stamp(at, None)
    return b"3." + stamp + b"." + _entry_mac(key, stamp, _entry_values(fields))


OLD_ENTRY = ("signed by an older version of poet_runtime: upgrade that instance (its wire format 2 signs "
             "only an entry's kind and data, so anyone who can write to the broker could change its process, "
             f"batch header or execution; this learner takes events entries of format {ENTRY_FORMAT} only, and "
             "what it refused stays in the instance's local journal)")
ENTRY_BAD = ("bad signature (not signed with this fleet's key, or a signed field was changed, added or "
             "removed: k, d, p, h, i, o, m, x)")
_ENTRY_SIGNATURE = re.compile(rb"3\.((\d{1,15})\.([0-9a-f]{1,32})\.(\d{1,19}))\.([0-9a-f]{64})")


def check_entry(key: bytes | None, fields: dict) -> tuple[Stamp | None, str | None]:
    """(the entry's stamp, None) when ``fields`` (an events entry as read: bytes names) carry this
    key's format-3 signature (``s``) of every signed field as they are; else (None, why not), in
    words fit for a log line (one per cause)."""
    match = _entry_match(key, fields)
    if type(match) is str:
        return None, match
    _, at, sender, sequence, _ = match.groups()
    return Stamp(int(at), sender.decode(), int(sequence)), None


def _entry_match(key: bytes | None, fields: dict):
    """The signature's match when it holds, else why not (a str)."""
    if key is None:
        return f"no key held ({KEY_VAR} / {KEY_FILE_VAR} unset)"
    signature = fields.get(b"s")
    if not signature:
        return "unsigned"
    if not isinstance(signature, (bytes, bytearray)):
        signature = str(signature).encode()
    match = _ENTRY_SIGNATURE.fullmatch(signature)
    if match is None:
        signature = bytes(signature)
        if _SIGNATURE.fullmatch(signature) or re.fullmatch(rb"[0-9a-f]{64}", signature):
            return OLD_ENTRY  # format 2 (or 1): it would have left p, m and x open to change
        head = signature.partition(b".")[0]
        if head.isdigit() and len(head) < 6:
            return (f"another wire format (this reader takes events entries of format {ENTRY_FORMAT} "
                    "only; upgrade the reader)")
        return "malformed signature (not a poet wire signature)"
    # _entry_mac's bytes, built in the same pass that finds the fields as read from Redis (bytes
    # names and values): the learner verifies every entry it stages
    stamp = match.group(1)
    parts = [_ENTRY_PREFIX, stamp]
    for name, absent, counted in _SIGNED:
        value = fields.get(name)
        if value is None:
            parts.append(absent)
        elif type(value) is bytes:
            parts.append(counted % len(value))
            parts.append(value)
        else:  # not as read (a caller's own dict)
            try:
                values = _entry_values(fields)
            except TypeError as error:
                return f"malformed entry ({error})"
            mac = _entry_mac(key, stamp, values)
            break
    else:
        mac = _hmac_hex(key, b"".join(parts))
    if not hmac.compare_digest(mac, match.group(5)):
        return ENTRY_BAD
    return match


def verify_entry(key: bytes | None, fields: dict) -> bool:
    """True only when ``check_entry`` finds the entry signed whole with this key (no stamp made)."""
    return type(_entry_match(key, fields)) is not str


OLD_FORMAT = ("old wire format (a format-1 signature, without signed time and id): this reader accepts "
              f"format {FORMAT} only; upgrade the sender")
BAD = "bad signature (not signed with this fleet's key)"


_SIGNATURE = re.compile(rb"2\.((\d{1,15})\.([0-9a-f]{1,32})\.(\d{1,19}))\.([0-9a-f]{64})")


def check(key: bytes | None, kind: bytes, data: bytes, signature) -> tuple[Stamp | None, str | None]:
    """(the message's stamp, None) when ``signature`` is this key's format-2 signature of
    ``kind``/``data``; else (None, why not), in words fit for a log line (one per cause)."""
    if key is None:
        return None, f"no key held ({KEY_VAR} / {KEY_FILE_VAR} unset)"
    if not signature:
        return None, "unsigned"
    if not isinstance(signature, (bytes, bytearray)):
        signature = str(signature).encode()
    match = _SIGNATURE.fullmatch(signature)
    if match is None:
        return None, _why_not(bytes(signature))
    stamp_text, at, sender, sequence, mac = match.groups()
    if not hmac.compare_digest(_mac(key, stamp_text, kind, data), mac):
        return None, BAD
    return Stamp(int(at), sender.decode(), int(sequence)), None


def _why_not(signature: bytes) -> str:
    if len(signature) == 64 and re.fullmatch(rb"[0-9a-f]{64}", signature):
        return OLD_FORMAT
    head = signature.partition(b".")[0]
    if head != b"2" and head.isdigit() and len(head) < 6:  # the words stay one cause, whatever the number
        return f"another wire format (this reader speaks format {FORMAT} only; upgrade the reader)"
    return "malformed signature (not a poet wire signature)"


def verify(key: bytes | None, kind: bytes, data: bytes, signature: bytes | None) -> bool:
    """True only when a key is held and the signature is that key's format-2 one over ``kind``/``data``."""
    if key is None or not signature:
        return False
    match = _SIGNATURE.fullmatch(signature if isinstance(signature, (bytes, bytearray)) else str(signature).encode())
    return match is not None and hmac.compare_digest(_mac(key, match.group(1), kind, data), match.group(5))


def stamp_of(signature) -> Stamp | None:
    """The stamp a signature claims (not verified: for naming a message, not for trusting it)."""
    if not isinstance(signature, (bytes, bytearray)) or signature[:2] not in (b"2.", b"3."):
        return None
    return Stamp.parse(bytes(signature)[2:].rpartition(b".")[0])


def max_age(environ=None) -> float:
    environ = os.environ if environ is None else environ
    raw = (environ.get(MAX_AGE_VAR) or "").strip()
    if raw:
        try:
            value = float(raw)
            if value > 0:
                return value
        except ValueError:
            pass
        _once(("max-age", raw), logging.WARNING, "poet_runtime: fleet: %s=%r is not a positive number of seconds; "
              "using %.0f", MAX_AGE_VAR, raw, MAX_AGE_S)
    return MAX_AGE_S


def fresh(stamp: Stamp, limit: float, now: float | None = None) -> str | None:
    """Why a message signed at ``stamp`` is too old or too far ahead for a reader now, or None.
    The words name the bound, not the message's age, so the log says it once per cause."""
    age = (time.time() if now is None else now) - stamp.at_ms / 1000.0
    if age > limit:
        return (f"stale: signed more than {limit:.0f} s ago (a replay, or a reader that was away longer; "
                "this process keeps what its store has)")
    if -age > FUTURE_S:
        return f"signed more than {FUTURE_S:.0f} s in the future (the signer's clock is ahead)"
    return None


def judge(key: bytes | None, kind: bytes, data: bytes, signature, newest: str | None,
          limit: float | None = None) -> tuple[Stamp | None, str | None]:
    """(stamp, None) when a message is this fleet's, fresh (``limit`` seconds: ``max_age()``), and
    newer than ``newest`` (a ``Stamp.text()`` the reader keeps per function, or None); else (None,
    why not). For a reader that keeps its own newest stamp, as a learner following the fleet's
    versions must (a copied promotion would move it back otherwise); instances use ``admit``."""
    stamp, why = check(key, kind, data, signature)
    if why is None:
        why = fresh(stamp, max_age() if limit is None else limit)
    if why is None:
        previous = Stamp.parse(newest) if newest else None
        if previous is not None and stamp.order <= previous.order:
            why = "not newer than the newest taken for its function: a replay, or out of order"
    return (stamp, None) if why is None else (None, why)


# -- what an instance admits -------------------------------------------------------------------

REFUSED: Counter = Counter()  # cause -> messages refused by ``admit`` in this process


def process_started() -> float:
    """When this process started, by the wall clock (Linux: from ``/proc``, to a clock tick;
    elsewhere: when this module was imported, which is later)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rpartition(")")[2].split()[19])
        since_boot = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
        return time.time() - since_boot
    except (OSError, ValueError, IndexError, AttributeError):
        return _IMPORTED


_IMPORTED = time.time()
HISTORY = 64  # stamps a ledger remembers per channel with when they were taken


class Ledger:
    """What one function's processes took, per channel (``outcomes`` / ``learning``): the newest
    stamp and, for the last ``HISTORY`` advances, when it was taken, in the function's store
    (``fleet-ledger.json``, shared by every process of that store, kept across restarts).

    A process admits a stamp newer than the newest it admitted itself (``mine``) and not older
    than its ``floor``: the newest the store had taken before this process started. So a
    restarted process, or one started beside others, refuses everything superseded before it
    started; one that started before a message was taken (its engine may have loaded the store
    before that message's effect was written) still takes it, in order, and so follows the
    store. The floor itself may be taken once more (applying the newest again changes nothing)."""

    def __init__(self, folder: Path, started: float | None = None):
        self.folder = Path(folder)
        self.path = self.folder / LEDGER_FILE
        self.started = process_started() if started is None else started
        self.mine: dict[str, tuple | None] = {}  # channel -> newest admitted here (None: nothing yet)
        self.floor: dict[str, tuple | None] = {}  # channel -> newest taken before this process started
        self.lock = threading.Lock()

    def stored(self) -> dict:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            _once(("ledger", str(self.path)), logging.WARNING, "poet_runtime: fleet: %s cannot be read (%s); "
                  "it is written anew: until then only the age bound stops a replay here", self.path, error)
            return {}
        return raw if type(raw) is dict else {}

    def newest(self, channel: str) -> tuple | None:
        stamp = Stamp.parse(self.stored().get(channel))
        return stamp.order if stamp is not None else None

    def _floor(self, stored: dict, channel: str) -> tuple | None:
        newest = Stamp.parse(stored.get(channel))
        taken = (stored.get("taken") or {}).get(channel) if type(stored.get("taken")) is dict else None
        if newest is None:
            return None
        if type(taken) is not list or not taken:
            return newest.order  # no history: all of it came before
        before, kept = None, []
        for item in taken:
            stamp = Stamp.parse(item[0]) if type(item) is list and len(item) == 2 else None
            if stamp is None or type(item[1]) not in (int, float):
                continue
            kept.append(stamp.order)
            if item[1] <= self.started:
                before = stamp.order if before is None else max(before, stamp.order)
        if before is not None:
            return before
        # Everything remembered was taken after this process started: the floor is what came
        # before the oldest remembered, unknown once the history was cut, then the oldest kept.
        return min(kept) if len(taken) >= HISTORY and kept else None

    def attach(self) -> None:
        """Where this process stands for this function: from its start (``floor``)."""
        with self.lock:
            stored = self.stored()
            for channel in CHANNELS:
                if channel not in self.floor:  # attached once: a second function object changes nothing
                    self.floor[channel] = self._floor(stored, channel)
                    self.mine.setdefault(channel, None)

    def admit(self, channel: str, stamp: Stamp) -> bool:
        """Whether ``stamp`` may be taken by this process (then it is recorded, here and, when it
        is the newest, in the store)."""
        with self.lock, self._file_lock():
            stored = self.stored()
            if channel not in self.floor:  # not attached (``attach``)
                self.floor[channel] = self._floor(stored, channel)
            mine, floor = self.mine.get(channel), self.floor[channel]
            if (mine is not None and stamp.order <= mine) or (floor is not None and stamp.order < floor):
                return False
            self.mine[channel] = stamp.order
            known = Stamp.parse(stored.get(channel))
            if known is None or stamp.order > known.order:
                taken = stored.get("taken") if type(stored.get("taken")) is dict else {}
                history = [item for item in (taken.get(channel) or []) if type(item) is list][-(HISTORY - 1):]
                record = {name: value for name, value in stored.items() if name in CHANNELS and type(value) is str}
                record[channel] = stamp.text()
                record["taken"] = {name: value for name, value in taken.items() if name in CHANNELS}
                record["taken"][channel] = history + [[stamp.text(), round(time.time(), 3)]]
                self._write(record)
            return True

    @contextlib.contextmanager
    def _file_lock(self):
        import fcntl

        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.folder / ".fleet-ledger.lock", os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
                         | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError:
            yield  # a read-only store: this process's memory still refuses replays
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _write(self, data: dict) -> None:
        temp = self.path.with_name(f".{LEDGER_FILE}.{os.getpid()}.{threading.get_ident()}")
        try:
            temp.write_text(json.dumps(data, sort_keys=True) + "\n", encoding="utf-8")
            os.replace(temp, self.path)
        except OSError as error:
            with contextlib.suppress(OSError):
                temp.unlink()
            _once(("ledger-write", str(self.path)), logging.WARNING, "poet_runtime: fleet: cannot write %s (%s); "
                  "a restart of this process relies on the age bound alone", self.path, error)


_ledgers: dict[str, Ledger] = {}
_ledgers_lock = threading.Lock()


def ledger(folder: Path) -> Ledger:
    key = str(Path(folder).resolve())
    with _ledgers_lock:
        found = _ledgers.get(key)
        if found is None:
            found = _ledgers[key] = Ledger(Path(folder))
        return found


def attached(info) -> None:
    """A function's engine attached to the follower: its ledger starts from its store now.
    (Without this call, the first message read for it does the same.)"""
    engine = getattr(info, "engine", None)
    store = getattr(engine, "store", None)
    if store is not None:
        with contextlib.suppress(OSError):
            ledger(store.folder).attach()


def taken_ms(follower, function) -> int | None:
    """When the newest outcome this instance's store took for ``function`` was signed: an
    instance that publishes (``fleet.regenerate``) signs after it (``sign(after_ms=...)``), so its
    message is newer everywhere even when its clock is behind the learner's."""
    store = getattr(getattr(follower.functions.get(function), "engine", None), "store", None)
    if store is None:
        return None
    with contextlib.suppress(OSError):
        newest = ledger(store.folder).newest("outcomes")
        return newest[0] if newest is not None else None
    return None


def admit(follower, fields: dict, only: str | None = None, learning: bool = False) -> str | None:
    """Why an outcome (``learning``: a verdict) entry must be refused by this instance, or None.

    None also for what the caller reports or skips itself (no key, unsigned, not JSON, no
    function, a function this process does not run). Otherwise: the signature must be this
    fleet's format-2 one, the message fresh (``fresh``), and newer, for its function, than what
    this process and its store admitted (``Ledger``). Admitting records it: a second copy of the
    same message, whatever its stream id, is refused. While catching up (``only``: re-reading what
    this store's processes read live), what is not newer comes back as ``"skipped: ..."``, to be
    returned as it is, not reported: it was judged when it was read live."""
    why = oversize(fields)
    if why is not None:
        return _count(why)
    kind, data, signature = fields.get(b"t"), fields.get(b"m"), fields.get(b"s")
    if follower.key is None or kind is None or data is None or not signature:
        return None
    stamp, why = check(follower.key, kind, data, signature)
    if why is not None:
        return _count(why)
    try:
        message = json.loads(data)
    except (ValueError, RecursionError):
        return None  # reported by the caller
    function = message.get("function") if type(message) is dict else None
    if type(function) is not str or (only is not None and function != only):
        return None
    info = follower.functions.get(function)
    store = getattr(getattr(info, "engine", None), "store", None)
    if store is None:
        return None
    why = fresh(stamp, VERDICT_MAX_AGE_S if learning else max_age())
    if why is not None:
        return _count(why)
    channel = "learning" if learning else "outcomes"
    if not ledger(store.folder).admit(channel, stamp):
        if only is not None:  # catching up on what this process's store read live: judged then
            return "skipped: already taken (or superseded) here"
        return _count(f"not newer than what this instance already took for {function} "
                      f"({'verdicts' if learning else 'outcomes'}): a replay, or out of order")
    return None


def _count(why: str) -> str:
    REFUSED[why] += 1
    return why


# -- what a learner keeps in Redis ----------------------------------------------------------------

SEAL_HEX = 32  # a 128-bit MAC: enough against forgery by someone without the key
_sealers: dict = {}


def _sealer(key: bytes):
    """Keyed BLAKE2b (a MAC by design: no length extension, no HMAC double hash), 128 bits, with a key
    derived from the fleet's (any length; never the key that signs wire messages). Prepared once per
    key: a seal is then one copy and one update, about 3x cheaper than ``hmac.digest`` per member."""
    found = _sealers.get(key)
    if found is None:
        derived = hmac.digest(key, b"poet-seal 1", "sha256")
        found = _sealers[key] = hashlib.blake2b(key=derived, digest_size=SEAL_HEX // 2, person=b"poet-seal")
    return found


def _seal_mac(key: bytes, context: str, text: str) -> str:
    mac = _sealer(key).copy()
    mac.update(f"{len(context)}:{context}\n{text}".encode())  # its length first: no context can run into the text
    return mac.hexdigest()


def seal(key: bytes, context: str, text: str) -> str:
    """``text`` with a MAC bound to ``context`` (the Redis key it is written under, say): for what a
    learner keeps in Redis (staged members, a function's state), which anyone who can write to the
    broker can otherwise change, and which the learner would then learn from and sign."""
    return f"{text}.{_seal_mac(key, context, text)}"


def previous_key(environ=None) -> bytes | None:
    """``POET_BROKER_PREVIOUS_KEY``: after a key rotation, the old key, with which a learner still
    opens (never makes) seals, so the states and staged feedback sealed before go on."""
    raw = (os.environ if environ is None else environ).get(PREVIOUS_KEY_VAR)
    return raw.encode() if raw else None


def _opened(keys, context: str, text: str, mac: str) -> bool:
    for key in (keys if isinstance(keys, tuple) else (keys,)):
        if key and hmac.compare_digest(_seal_mac(key, context, text), mac):
            return True
    return False


def unseal(key, context: str, sealed) -> str | None:
    """The text ``seal`` sealed for ``context``, or None when it was not sealed so (forged, moved
    from another key, or changed). ``key``: a key, or a tuple of keys any of which may have sealed it."""
    if isinstance(sealed, (bytes, bytearray)):
        sealed = bytes(sealed).decode("utf-8", "replace")
    if type(sealed) is not str or len(sealed) <= SEAL_HEX or sealed[-SEAL_HEX - 1] != ".":
        return None
    text = sealed[:-SEAL_HEX - 1]
    return text if _opened(key, context, text, sealed[-SEAL_HEX:]) else None


_JSON_SEAL = '{"seal":"'
_JSON_HEAD = len(_JSON_SEAL) + SEAL_HEX + 2  # '{"seal":"<mac>",'


def seal_json(key: bytes, context: str, text: str) -> str:
    """A JSON object's text (``{...}``) sealed as ``seal`` does, but still one JSON object: the MAC
    goes in as its first member, ``"seal"``, so that readers that only show it (``status``, a test)
    parse it as before. The MAC covers the text without that member."""
    if not text.startswith("{"):
        raise ValueError("seal_json seals a JSON object's text")
    mac = _seal_mac(key, context, text)
    return f'{_JSON_SEAL}{mac}"{"," if text != "{}" else ""}{text[1:]}'


def unseal_json(key, context: str, sealed) -> str | None:
    """The JSON text ``seal_json`` sealed for ``context``, or None (forged, moved, changed, unsealed)."""
    if isinstance(sealed, (bytes, bytearray)):
        sealed = bytes(sealed).decode("utf-8", "replace")
    if type(sealed) is not str or not sealed.startswith(_JSON_SEAL) or len(sealed) < _JSON_HEAD:
        return None
    mac, rest = sealed[len(_JSON_SEAL):len(_JSON_SEAL) + SEAL_HEX], sealed[_JSON_HEAD - 1:]
    if rest == "}":
        text = "{}"
    elif rest.startswith(","):
        text = "{" + rest[1:]
    else:
        return None
    if sealed[_JSON_HEAD - 2] != '"':
        return None
    return text if _opened(key, context, text, mac) else None


def unsigned_json(data) -> dict | None:
    """An entry's JSON field (an ``fb`` entry's ``x``) as a dict, or None when it is not one (not
    JSON, nested past the parser's depth, another type): the reader then does without it, as when
    the field is absent. Signed (format 3) since, but by whoever sent it: not checked beyond that."""
    try:
        value = journal.loads(data)  # json.loads, without its encoding guess for what is plainly UTF-8
    except (ValueError, RecursionError, TypeError):
        return None
    return value if type(value) is dict else None


# -- reading without taking in what an attacker sized ------------------------------------------

_BOUNDED_READ = """
local count, limit, budget = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local out, total = {}, 0
for i, key in ipairs(KEYS) do
  local kept = {}
  if total <= budget then
    local entries = redis.call(ARGV[4] == 'rev' and 'XREVRANGE' or 'XRANGE', key, ARGV[3 + 2 * i],
                               ARGV[4 + 2 * i], 'COUNT', count)
    for _, entry in ipairs(entries) do
      local size = 0
      for _, value in ipairs(entry[2]) do size = size + #value end
      if size > limit then
        kept[#kept + 1] = {entry[1], {'oversize', tostring(size)}}
        size = 0
      else
        kept[#kept + 1] = entry
      end
      total = total + size
      if total > budget then break end
    end
  end
  if #kept > 0 then out[#out + 1] = {key, kept} end
end
return out
"""
POLL_S = 0.1  # a script cannot block: an idle instance asks ten times a second (lag: up to 0.1 s more)


def read_bounded(client, streams: dict, *, count: int = 100, block: int | None = None,
                 limit: int = MAX_ENTRY_BYTES, budget: int = READ_BUDGET_BYTES, stop=None) -> list:
    """``client.xread(streams, count=count, block=block)``, except that an entry bigger than
    ``limit`` bytes comes as ``{b"oversize": b"<bytes>"}`` and one read returns about ``budget``
    bytes at most: the broker measures in a script, so what a writer sized never reaches this
    process. ``block`` (ms) is a poll every ``POLL_S`` (a script cannot block); ``stop``: an
    ``Event`` that ends the wait early. Needs Redis 6.2 (exclusive ranges, as ``XAUTOCLAIM``)."""
    script = _script(client)
    keys = list(streams)
    ranges = []
    for last in streams.values():
        ranges += ["(" + (last.decode() if isinstance(last, bytes) else str(last)), "+"]
    deadline = time.monotonic() + (block or 0) / 1000.0
    while True:
        answer = script(keys=keys, args=[int(count), int(limit), int(budget), "fwd", *ranges])
        if answer or block is None or time.monotonic() >= deadline or (stop is not None and stop.is_set()):
            break
        if stop is not None:
            stop.wait(POLL_S)
        else:
            time.sleep(POLL_S)
    return [(stream, _entries(entries)) for stream, entries in answer or ()]


def range_bounded(client, stream: str, start: str, end: str, *, count: int = 500, limit: int = MAX_ENTRY_BYTES,
                  budget: int = READ_BUDGET_BYTES) -> list:
    """``client.xrange(stream, min=start, max=end, count=count)`` with ``read_bounded``'s limits
    (fewer than ``count`` entries may come back when the budget is reached: go on after the last)."""
    answer = _script(client)(keys=[stream], args=[int(count), int(limit), int(budget), "fwd", start, end])
    return _entries(answer[0][1]) if answer else []


_LAST_ID = """
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #newest == 0 then return false end
return newest[1][1]
"""
_COUNT_AFTER = """
local start, limit, total = ARGV[1], tonumber(ARGV[2]), 0
while total < limit do
  local chunk = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', math.min(1000, limit - total))
  if #chunk == 0 then break end
  total = total + #chunk
  start = '(' .. chunk[#chunk][1]
end
return total
"""


def _registered(client, name: str, body: str):
    """A script registered once per client, kept on it as ``name`` (EVALSHA, loaded again if the broker lost it)."""
    script = getattr(client, name, None)
    if script is None:
        script = client.register_script(body)
        with contextlib.suppress(AttributeError):
            setattr(client, name, script)
    return script


def last_id(client, stream: str, *, pipe=None):
    """The id of ``stream``'s newest entry (None when empty), without its fields: the broker answers the
    id only, whatever the entry's size. With ``pipe`` (a pipeline of ``client``), queued there."""
    script = _registered(client, "_poet_last_id", _LAST_ID)
    return script(keys=[stream], args=[], client=pipe) if pipe is not None else script(keys=[stream], args=[])


def count_after(client, stream: str, start: str, limit: int) -> int:
    """How many entries ``stream`` holds from ``start`` (an XRANGE start: ``-``, an id, ``(id``), up to
    ``limit``: counted on the broker a thousand at a time, none of them sent here."""
    return int(_registered(client, "_poet_count_after", _COUNT_AFTER)(keys=[stream], args=[start, int(limit)]))


def revrange_bounded(client, stream: str, end: str, start: str, *, count: int = 200, limit: int = MAX_ENTRY_BYTES,
                     budget: int = READ_BUDGET_BYTES) -> list:
    """``client.xrevrange(stream, max=end, min=start, count=count)`` (newest first) with ``read_bounded``'s
    limits: the newest entries up to about ``budget`` bytes, an oversize one as its marker."""
    answer = _script(client)(keys=[stream], args=[int(count), int(limit), int(budget), "rev", end, start])
    return _entries(answer[0][1]) if answer else []


_GROUP_READ = """
local key, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local count, budget, mode = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local entries, cursor
if mode == 'claim' then
  local answer = redis.call('XAUTOCLAIM', key, group, consumer, ARGV[7], ARGV[6], 'COUNT', count)
  cursor, entries = answer[1], answer[2]
else
  local answer = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', count, 'STREAMS', key, ARGV[6])
  entries = (answer and answer[1]) and answer[1][2] or {}
  cursor = ''
end
local out, total, cut = {}, 0, 0
for _, entry in ipairs(entries) do
  if total > budget then cut = 1 break end  -- delivered past here, not answered: pending for the consumer
  if entry then  -- Redis 6.2's XAUTOCLAIM answers a deleted entry with nil (redis-py skips it too)
    local size = -1  -- deleted (a pending entry trimmed from the stream)
    if entry[2] then
      size = 0
      for _, value in ipairs(entry[2]) do size = size + #value end
    end
    out[#out + 1] = entry[1]
    out[#out + 1] = size
    total = total + size
  end
end
return {cursor, out, cut}
"""


class GroupRead(NamedTuple):
    """What ``group_read`` answers."""

    cursor: object  # the claim's next start, or None
    entries: list  # [(id, fields)]
    cut: bool  # stopped at the byte budget: entries delivered past it are pending for the consumer, not here


def group_read(client, stream: str, group: str, consumer: str, start: str = ">", *, count: int = 100,
               claim_idle_ms: int | None = None, limit: int = MAX_ENTRY_BYTES, budget: int = READ_BUDGET_BYTES):
    """``XREADGROUP`` (``start``: ``">"`` new entries, ``"0"`` this consumer's pending ones) or, with
    ``claim_idle_ms``, ``XAUTOCLAIM`` from ``start``, measured as ``read_bounded`` does: an entry
    bigger than ``limit`` comes as ``{b"oversize": b"<bytes>"}`` (delivered all the same: the caller
    acknowledges it), and past ``budget`` bytes the rest stays pending for this consumer (its next
    read of ``"0"`` returns it). A deleted pending entry comes with ``None`` fields, as from redis-py.
    Returns a ``GroupRead``: the claim's next start (or None), [(id, fields)], and whether the read
    stopped at the budget. No blocking: the caller polls.

    How: the script delivers and measures but answers ids and sizes only (a script's answer of
    whole entries costs about four times a plain read); the entries within bounds are then read
    with ``XRANGE``, pipelined: a new read's entries are consecutive in the stream (one range
    between oversize ones), pending and claimed ones are read one by one. An entry deleted in
    between comes as deleted."""
    script = _registered(client, "_poet_group_read", _GROUP_READ)
    mode = "claim" if claim_idle_ms is not None else "read"
    cursor, flat, cut = script(keys=[stream], args=[group, consumer, int(count), int(budget), mode, start,
                                                    int(claim_idle_ms or 0)])
    measured = list(zip(flat[0::2], flat[1::2]))
    ranges, run = [], []  # (first, last, how many): entries within bounds to read
    for entry_id, size in measured:
        if 0 <= size <= limit:
            run.append(entry_id)
            if mode == "claim" or start != ">":  # not consecutive in the stream: one by one
                ranges.append((entry_id, entry_id, 1))
                run = []
        elif run:
            ranges.append((run[0], run[-1], len(run)))
            run = []
    if run:
        ranges.append((run[0], run[-1], len(run)))
    found = {}
    if ranges:
        reads = client.pipeline(transaction=False)
        for first, last, how_many in ranges:
            reads.xrange(stream, first, last, count=how_many)
        for answer in reads.execute():
            found.update(answer)
    out = []
    for entry_id, size in measured:
        if size > limit:
            out.append((entry_id, {b"oversize": str(size).encode()}))
        else:
            out.append((entry_id, found.get(entry_id)))  # None: deleted (before or since the script)
    return GroupRead(cursor if mode == "claim" else None, out, bool(cut))


def _script(client):
    return _registered(client, "_poet_bounded_read", _BOUNDED_READ)


def _entries(entries) -> list:
    return [(entry_id, dict(zip(flat[0::2], flat[1::2]))) for entry_id, flat in entries]


def oversize(fields: dict) -> str | None:
    """Why ``read_bounded`` held an entry back, or None."""
    size = fields.get(b"oversize")
    if size is None or len(fields) != 1:
        return None
    return f"entry too big (over {MAX_ENTRY_BYTES} bytes: never read into this process)"


_said: set = set()


def _once(cause, level, message, *args) -> None:
    if cause not in _said:
        _said.add(cause)
        log.log(level, message, *args)
