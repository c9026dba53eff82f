"""An instance's side of what the fleet learns: the learners' outcomes, verified, then applied live.

Why a thread of its own, polling (``wire.read_bounded``, every ``wire.POLL_S`` = 0.1 s while idle:
the bounded read is a script, which cannot block): an outcome must reach every process within
about a second without a restart, and waiting on the broker must never touch a call. Every
instance reads the whole ``poet:NS:outcomes`` stream (no consumer group: each one applies everything).

Trust: an outcome is applied only when it verifies (``wire.verify``: the fleet's key, HMAC over
type and message; those are all this module reads of an entry besides the signature: the
learner's name ``l`` is unsigned and read by nobody). No key held, no signature or a wrong one: refused, said once per cause in
the ``poet_runtime`` log and written as a ``fleet.refused`` decision (on the bus every time),
never applied. A verified outcome is still checked as any input is:

- ``params.updated`` ``{function, version, numbering, params}``: for the local store's version
  that the fleet knows by that number: with numbering ``"fleet"``, the version stored from the
  ``version.promoted`` that allocated it (``metadata.json`` ``fleet.number``; its local number
  may differ); with ``"local"`` (or none), the version by that local number that the fleet never
  promoted (``regenerate.identity``). Values are clamped to
  that version's declared ranges (undeclared or non-numeric ones are left out), written to its
  params.json with an audit entry in state.json, and applied with ``configure`` when this
  process runs that version. A version the local store does not have is **ignored with a
  reason** (logged once per function and version, and as ``fleet.ignored``): the learner
  publishes params for a new version only after its ``version.promoted``, which stores it here.
  Values for a stored version this process does not run now are written to its params.json
  and so used when it is loaded.
- ``version.promoted`` ``{function, number, files: {"code.py": ...}, generator, params?, builtin_hints?}``:
  the code passes ``generate.checks.check_generated``; unless it is byte for byte what the
  built-in generator writes for this function (then it is a verified built-in version and
  runs in-process where the policy trusts ``builtin``), it must also pass the checks an LLM
  answer gets (``generate.llm_checks.check_answer``: policy, restricted compile, probes
  against the built-in version). Then it is stored as the new current version under the
  current version's key (as learning's own promotions are) and the function reloads it;
  ``resolve.load_version`` runs it in the backend its policy names.
- ``version.rolled_back`` ``{function, to, numbering}``: the local version the fleet knows as
  ``to`` becomes current if it exists and is not damaged (``resolve.inspect_version``).

With the key held, the follower also reads the learners' verdicts on ``poet:NS:learning``
(``learning.degraded`` / ``recovered``), verified exactly as outcomes are, and hands a verified one
to ``fleet.regenerate`` (one elected instance regenerates for the fleet and publishes here).

Outcomes for functions this process does not run are skipped (another process applies them to
its store). Where to start after a restart: the last outcome id read is kept in
``<events root>/fleet/outcomes.last``, and the last verdict's in ``fleet/learning.last``, each
written once per batch read, after that batch's effects are written; a process starts after it
(its store already holds the effects of what came before) and never goes back over an older
message. A crash within a batch reads that batch again: what it had applied is then refused as
not newer (the ledger, ``wire.admit``), never applied twice. No file yet: from the start of the
stream.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from pathlib import Path

from poet_runtime.fleet import wire

log = logging.getLogger("poet_runtime")

BLOCK_MS = 1000
SOCKET_TIMEOUT_S = 3.0  # longer than the block
BACKOFF_MAX_S = 2.0
LAST_FILE = "outcomes.last"
LEARNING_LAST_FILE = "learning.last"


def _position(path: Path) -> str:
    """A stream position kept in ``path`` ("0-0": none yet, or not of the form <ms>-<seq>)."""
    try:
        text = path.read_text().strip()
    except OSError:
        return "0-0"
    ms, dash, seq = text.partition("-")
    return text if dash and ms.isdigit() and seq.isdigit() else "0-0"


class _Namespace:
    def __init__(self, root: Path):
        self.root = root  # the events root
        self.name = wire.namespace(root.parent)
        self.stream = wire.stream(self.name, wire.OUTCOMES)
        self.learning = wire.stream(self.name, "learning")  # the learners' verdicts (``fleet.regenerate``)
        self.path = root / "fleet" / LAST_FILE
        self.learning_path = root / "fleet" / LEARNING_LAST_FILE
        self.last = _position(self.path)
        # Kept as outcomes' is: a restart that read every verdict again from 0-0 refused each one
        # as stale or not newer (a fleet.refused per verdict) and acted on none.
        self.learning_last = _position(self.learning_path)
        self.saves = 0  # positions written (once per batch read, not per entry): tests

    def save(self, entry_id: str, learning: bool = False) -> None:
        """Keep where this store stands on the stream: called once a batch's effects are written,
        so a crash reads (some of) that batch again rather than skipping past it."""
        path = self.learning_path if learning else self.path
        if learning:
            self.learning_last = entry_id
        else:
            self.last = entry_id
        self.saves += 1
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            temp = path.with_name(f".{path.name}.{os.getpid()}")
            temp.write_text(entry_id + "\n")
            os.replace(temp, path)
        except OSError as error:
            _say_once(("last", str(path)), logging.WARNING,
                      "poet_runtime: fleet: cannot keep the last %s read in %s (%s); a restart reads them again",
                      "verdict" if learning else "outcome", path, error)


class Follower:
    def __init__(self, url: str, key: bytes | None):
        self.url, self.key = url, key
        self.lock = threading.Lock()
        self.functions: dict[str, object] = {}  # function id -> sink.FunctionInfo
        self.namespaces: dict[Path, _Namespace] = {}
        self.stop = threading.Event()
        self.client = None
        self.up: bool | None = None
        self.backoff = 0.1
        self.joined: list = []  # functions attached since the last read (see ``_catch_up``)
        self.applied: list = []  # (entry id, type, function, seconds from publication to applied): tests, rows
        self.pid = os.getpid()
        if key is None:
            _say_once(("nokey",), logging.WARNING, "poet_runtime: fleet: no broker key (%s / %s unset): no outcome "
                      "is applied and this instance does not regenerate for the fleet", wire.KEY_VAR,
                      wire.KEY_FILE_VAR)
        self.thread = threading.Thread(target=self._run, name="poet-fleet-follower", daemon=True)
        self.thread.start()

    def watch(self, info) -> None:
        with self.lock:
            known = info.function_id in self.functions
            self.functions[info.function_id] = info
            wire.attached(info)  # wire format 2: replays are judged against what its store had from here on
            if info.root not in self.namespaces:
                self.namespaces[info.root] = _Namespace(info.root)
            if not known:
                self.joined.append(info)  # what came before it attached is read for it (``_catch_up``)

    def _catch_up(self) -> None:
        """A function that attaches after the follower has read past outcomes for it (a second
        function's first call, a process whose store's ``outcomes.last`` another process moved) gets
        them now: the stream up to where this follower stands, that function's outcomes only, in
        order. Applying is idempotent (equal values are not written again; a version already stored
        from the same fleet number is made current, not stored twice)."""
        with self.lock:
            joined, self.joined = self.joined, []
        for info in joined:
            ns = self.namespaces.get(info.root)
            if ns is None or ns.last == "0-0":
                continue  # the follower reads this stream from its start anyway
            start, mine = "-", []
            while True:
                entries = wire.range_bounded(self.client, ns.stream, start, ns.last, count=500)  # no huge entry
                for entry_id, fields in entries:
                    entry_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                    if _names(fields, info.function_id):
                        mine.append((entry_id, fields))
                if len(entries) < 500:
                    break
                start = "(" + (entries[-1][0].decode() if isinstance(entries[-1][0], bytes) else entries[-1][0])
            for entry_id, fields in self._latest(mine):
                try:
                    self.handle(ns, entry_id, fields, only=info.function_id)
                except Exception as error:
                    _say_once(("apply", type(error).__name__, str(error)[:200]), logging.WARNING,
                              "poet_runtime: fleet: outcome %s could not be applied (%s: %s)", entry_id,
                              type(error).__name__, error)

    def _latest(self, entries: list) -> list:
        """``entries`` without the verified ``params.updated`` that a later verified one for the same
        version replaces entirely (catching up writes each value once, not the whole history)."""
        covered: dict = {}  # version -> parameter names set by later messages
        kept = []
        for entry_id, fields in reversed(entries):
            kind, data = fields.get(b"t"), fields.get(b"m")
            if kind == b"params.updated" and self.key is not None and data is not None and wire.verify(
                    self.key, kind, data, fields.get(b"s")):
                try:
                    message = json.loads(data)
                    names = set(message["params"])
                    version = message["version"]
                except (ValueError, TypeError, KeyError, RecursionError):
                    kept.append((entry_id, fields))
                    continue
                later = covered.setdefault(json.dumps([version, message.get("numbering") or "local"]), set())
                if names <= later:
                    continue
                later |= names
            kept.append((entry_id, fields))
        return kept[::-1]

    # -- the thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        from poet_runtime.fleet.publisher import _import_redis, ending

        if _import_redis() is None:
            return
        try:
            self._loop()
        except BaseException:
            if not ending():  # at interpreter exit a daemon thread just ends
                raise

    def _loop(self) -> None:
        while not self.stop.is_set():
            if self.client is None and not self._connect():
                self.stop.wait(self.backoff)
                self.backoff = min(self.backoff * 2, BACKOFF_MAX_S)
                continue
            if self.joined:
                try:
                    self._catch_up()
                except Exception as error:
                    self._down(error)
                    continue
            with self.lock:
                streams = {ns.stream: ns.last for ns in self.namespaces.values()}
                by_stream = {ns.stream: ns for ns in self.namespaces.values()}
                if self.key is not None:  # no key: no verdict can be verified, none is read
                    streams.update({ns.learning: ns.learning_last for ns in self.namespaces.values()})
                    by_stream.update({ns.learning: ns for ns in self.namespaces.values()})
            if not streams:
                self.stop.wait(0.2)
                continue
            try:
                answer = wire.read_bounded(self.client, streams, block=BLOCK_MS, count=100, stop=self.stop)  # no huge entry
            except Exception as error:
                self._down(error)
                continue
            for stream, entries in answer or ():
                stream = stream.decode() if isinstance(stream, bytes) else stream
                ns = by_stream.get(stream)
                if ns is None:
                    continue
                learning = stream == ns.learning
                entry_id = None
                for entry_id, fields in entries:
                    entry_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                    if learning:
                        try:
                            self.handle(ns, entry_id, fields, learning=True)
                        except Exception as error:
                            _say_once(("verdict", type(error).__name__, str(error)[:200]), logging.WARNING,
                                      "poet_runtime: fleet: verdict %s could not be acted on (%s: %s)", entry_id,
                                      type(error).__name__, error)
                        continue
                    try:
                        self.handle(ns, entry_id, fields)
                    except Exception as error:  # one bad outcome never stops the follower
                        _say_once(("apply", type(error).__name__, str(error)[:200]), logging.WARNING,
                                  "poet_runtime: fleet: outcome %s could not be applied (%s: %s)", entry_id,
                                  type(error).__name__, error)
                if entry_id is not None:
                    # Once per batch, after every entry's effects are written (handle returns only
                    # then): one file write per read instead of per entry.
                    ns.save(entry_id, learning)

    def _connect(self) -> bool:
        from poet_runtime.fleet.publisher import _import_redis

        redis = _import_redis()
        if redis is None:
            return False
        try:
            client = redis.Redis.from_url(self.url, socket_timeout=SOCKET_TIMEOUT_S,
                                          socket_connect_timeout=1.0)
            client.ping()
        except Exception as error:
            self._down(error)
            return False
        self.client, self.backoff = client, 0.1
        if self.up is False:
            log.info("poet_runtime: fleet: following the learners' outcomes again")
        self.up = True
        return True

    def _down(self, error: BaseException) -> None:
        client, self.client = self.client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()
        if self.up is not False:
            log.warning("poet_runtime: fleet: cannot read the learners' outcomes (%s: %s); the current parameters "
                        "and version keep serving; retrying", type(error).__name__, error)
        self.up = False

    # -- one outcome ---------------------------------------------------------------------------

    def handle(self, ns: _Namespace, entry_id: str, fields: dict, only: str | None = None,
               learning: bool = False) -> str:
        """Verify and apply one outcome; returns what was done (``applied``, ``refused: ...``, ...).
        ``learning``: an entry of ``poet:NS:learning`` (a learner's verdict), verified the same way
        and then handed to ``fleet.regenerate``."""
        kind, data, signature = fields.get(b"t"), fields.get(b"m"), fields.get(b"s")
        if refused := wire.admit(self, fields, only, learning):  # wire format 2: too big, stale, a replay...
            return refused if refused.startswith("skipped") else self.refuse(ns, entry_id, refused, kind)
        if kind is None or data is None:
            return self.refuse(ns, entry_id, "not an outcome entry (no t or m field)", kind)
        if self.key is None:
            return self.refuse(ns, entry_id, f"no key held ({wire.KEY_VAR} / {wire.KEY_FILE_VAR} unset): "
                                             "nothing from the broker is applied", kind)
        if not signature:
            return self.refuse(ns, entry_id, "unsigned", kind)
        if not wire.verify(self.key, kind, data, signature):
            return self.refuse(ns, entry_id, "bad signature (not signed with this fleet's key)", kind)
        try:
            message = json.loads(data)
        except (ValueError, RecursionError) as error:  # nested past the parser's depth: comments are callers'
            return self.refuse(ns, entry_id, f"message is not JSON ({type(error).__name__}: {error})", kind)
        kind = kind.decode(errors="replace")
        if learning:
            from poet_runtime.fleet import regenerate

            if kind not in regenerate.TYPES or type(message) is not dict or type(message.get("function")) is not str:
                return self.refuse(ns, entry_id, f"unknown verdict {kind!r} or no function named", kind.encode())
            info = self.functions.get(message["function"])
            if info is None or info.engine is None:
                return "skipped: function not run here"
            return regenerate.on_learning(self, ns, entry_id, info, kind, message)
        if kind not in wire.OUTCOME_TYPES or type(message) is not dict or type(message.get("function")) is not str:
            return self.refuse(ns, entry_id, f"unknown outcome {kind!r} or no function named", kind.encode())
        info = self.functions.get(message["function"])
        if only is not None and message["function"] != only:
            return "skipped: catching up another function"
        if info is None or info.engine is None:
            return "skipped: function not run here"
        published = _entry_time(entry_id)
        if kind == "params.updated":
            done = self._params(ns, entry_id, info, message)
        elif kind == "version.promoted":
            done = self._promoted(ns, entry_id, info, message)
        else:
            done = self._rolled_back(ns, entry_id, info, message)
        if done == "applied":
            lag = time.time() - published if published is not None else None
            self.applied.append((entry_id, kind, message["function"], lag))
            del self.applied[:-1000]
        return done

    def refuse(self, ns: _Namespace, entry_id: str, reason: str, kind) -> str:
        from poet_runtime import events

        kind = kind.decode(errors="replace") if isinstance(kind, bytes) else kind
        payload = {"outcome": entry_id, "outcome_type": kind, "reason": reason, "stream": ns.stream}
        cause = ("refused", ns.stream, reason)
        if cause not in _said:
            _say_once(cause, logging.WARNING, "poet_runtime: fleet: refused outcome %s (%s) from %s: %s; "
                      "nothing was applied", entry_id, kind, ns.stream, reason)
            _decide(ns.root, "fleet.refused", payload)  # durable once per cause; on the bus every time
        else:
            events.emit("fleet.refused", **payload)
        return f"refused: {reason}"

    def _ignore(self, ns: _Namespace, entry_id: str, info, message: dict, reason: str) -> str:
        payload = {"outcome": entry_id, "function": info.function_id, "version": message.get("version"),
                   "reason": reason}
        cause = ("ignored", info.function_id, message.get("version"), reason)
        if cause not in _said:
            _say_once(cause, logging.INFO, "poet_runtime: fleet: %s: outcome %s ignored: %s", info.function_id,
                      entry_id, reason)
            _decide(ns.root, "fleet.ignored", payload)
        return f"ignored: {reason}"

    def _local_number(self, engine, number, numbering=None) -> int | None:
        """The local store's version the fleet knows as ``number`` counted by ``numbering``
        (``"fleet"`` or ``"local"``, see the module's docstring)."""
        from poet_runtime.fleet.regenerate import identity

        if type(number) is not int:
            return None
        wanted = (number, "fleet" if numbering == "fleet" else "local")
        for version in engine.store.versions():
            if identity(version) == wanted:
                return version.number
        return None

    def _params(self, ns, entry_id: str, info, message: dict) -> str:
        params = message.get("params")
        if type(params) is not dict:
            return self._ignore(ns, entry_id, info, message, "params.updated without a params object")
        engine = info.engine
        number = self._local_number(engine, message.get("version"), message.get("numbering"))
        if number is None:
            return self._ignore(ns, entry_id, info, message, f"no version {message.get('version')!r} "
                                f"({message.get('numbering') or 'local'} numbering) in the local store")
        applied = engine.apply_fleet(number, params, message, entry_id)
        if not applied:
            return self._ignore(ns, entry_id, info, message, "no declared numeric parameter in the message")
        return "applied"

    def _promoted(self, ns, entry_id: str, info, message: dict) -> str:
        from poet_runtime.errors import PoetError

        files = message.get("files")
        code = files.get("code.py") if type(files) is dict else None
        number = message.get("number", message.get("version"))
        if type(code) is not str or type(number) is not int:
            return self._ignore(ns, entry_id, info, message, "version.promoted without files['code.py'] and a number")
        engine = info.engine
        state = engine.state
        existing = self._local_number(engine, number, "fleet")
        if existing is not None:
            found = engine.store.get(existing)
            fleet = (found.metadata.get("fleet") if found is not None else None) or {}
            if found is not None and type(fleet) is dict and fleet.get("number") == number:
                with contextlib.suppress(OSError, ValueError):
                    if found.code() == code:
                        return self._make_current(engine, existing)  # another process sharing the store stored it
        try:
            accepted = accept_code(state, code, message)
        except PoetError as error:
            reason = f"checks failed: {getattr(error, 'reason', type(error).__name__)}: {error}"
            return self.refuse(ns, entry_id, reason[:500], b"version.promoted")
        checks, parameters, builtin = accepted
        current = engine.store.current()
        base = dict(current.metadata) if current is not None else {}
        keep = ("key", "domain", "template_version", "objective", "config", "source_hash", "logic_name", "is_async")
        metadata = {name: base[name] for name in keep if name in base}
        hints = message.get("builtin_hints") if type(message.get("builtin_hints")) is dict else None
        metadata.update({"generator": message.get("generator") if type(message.get("generator")) is str else "fleet",
                         "checks": checks, "parameters": parameters, "status": "current",
                         "fleet": {"number": number, "outcome": entry_id, "learner": message.get("learner")},
                         **({"builtin_hints": hints} if builtin and hints else {})})
        sent = message.get("params") if type(message.get("params")) is dict else {}
        params = {}
        for name, spec in parameters.items():
            value = sent.get(name, spec.get("default") if type(spec) is dict else None)
            if type(spec) is dict and type(value) in (int, float) and all(
                    type(spec.get(b)) in (int, float) for b in ("min", "max")):
                value = min(max(value, spec["min"]), spec["max"])
            params[name] = value
        with engine.store.lock():
            version = engine.store.create(code, params, {"observations": {}, "audit": []}, metadata,
                                          make_current=True)
        log.info("poet_runtime: fleet: %s: stored %s from the fleet's v%s (%s)", info.function_id, version.name,
                 number, "verified built-in" if builtin else "checked as an LLM answer")
        return self._reload(engine)

    def _make_current(self, engine, number: int) -> str:
        if engine.store.current_number() != number:
            engine.store.set_current(number)
        return self._reload(engine)

    def _reload(self, engine) -> str:
        engine._reload()
        return "applied"

    def _rolled_back(self, ns, entry_id: str, info, message: dict) -> str:
        from poet_runtime.resolve import inspect_version

        engine = info.engine
        number = self._local_number(engine, message.get("to"), message.get("numbering"))
        if number is None:
            return self._ignore(ns, entry_id, info, message, f"no version {message.get('to')!r} to roll back to")
        version = engine.store.get(number)
        trust = inspect_version(version, engine.state.spec(), engine.state.config)
        if trust.kind == "damaged":
            return self._ignore(ns, entry_id, info, message, f"v{number} is damaged: {trust.detail}")
        return self._make_current(engine, number)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(SOCKET_TIMEOUT_S)


def accept_code(state, code: str, message: dict) -> tuple[list, dict, bool]:
    """(checks passed, declared PARAMETERS, is a verified built-in version) for a fleet version;
    raises the checks' ``CheckFailed`` (a ``PoetError``) when it is not accepted."""
    from poet_runtime.domains import get_domain
    from poet_runtime.generate.builtin import BuiltinGenerator
    from poet_runtime.generate.checks import check_generated
    from poet_runtime.generate.llm_checks import _parameters, check_answer

    spec, config = state.spec(), state.config
    filename = f"<poet fleet version {spec.function_id}>"
    checks = check_generated(code, spec, filename=filename, needs_train=bool(config.optimize_for))
    hints = message.get("builtin_hints") if type(message.get("builtin_hints")) is dict else None
    domain = get_domain(config.domain)
    baseline = BuiltinGenerator().generate(spec, config, domain, hints)
    if baseline.code == code:
        return checks, dict(baseline.parameters), True
    policy = getattr(state, "policy", None)
    checks, parameters, _probe, _transformed = check_answer(code, spec, config, baseline, policy, hints or {})
    return checks, dict(parameters or _parameters(code, filename)), False


def _names(fields: dict, function_id: str) -> bool:
    """Whether an outcome entry may concern ``function_id`` (a cheap look before verifying it)."""
    data = fields.get(b"m") or b""
    return json.dumps(function_id).encode() in data


def _entry_time(entry_id: str) -> float | None:
    stamp = entry_id.partition("-")[0]
    return int(stamp) / 1000.0 if stamp.isdigit() else None


def _decide(root: Path, event_type: str, payload: dict) -> None:
    from poet_runtime.learn import sink

    with contextlib.suppress(Exception):
        sink.write_decision(root, event_type, payload)


_said: set = set()


def _say_once(cause, level, message, *args) -> None:
    if cause not in _said:
        _said.add(cause)
        log.log(level, message, *args)


_follower: Follower | None = None
_start_lock = threading.Lock()


def watch(info) -> Follower | None:
    """Follow the outcomes for ``info``'s function (the thread starts with the first one)."""
    global _follower
    from poet_runtime.settings import get_settings

    url = get_settings().broker
    if not url:
        return None
    with _start_lock:
        if _follower is None or _follower.pid != os.getpid():
            try:
                key = wire.load_key()
            except OSError as error:
                _say_once(("key",), logging.WARNING, "poet_runtime: fleet: cannot read the broker key (%s); "
                          "no outcome is applied", error)
                key = None
            _follower = Follower(url, key)
        _follower.watch(info)
    return _follower


def get() -> Follower | None:
    return _follower


def _after_fork_in_child() -> None:
    global _follower, _start_lock
    _start_lock = threading.Lock()
    follower, _follower = _follower, None
    if follower is not None:  # the child follows too, with its own thread and connection
        with contextlib.suppress(Exception):
            for info in list(follower.functions.values()):
                watch(info)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
