"""An instance's events on the broker: the journal's own lines, forwarded by a thread of their own.

Why a thread and per-file cursors rather than writing to Redis from the flusher: the flusher
holds ``sink._flush_lock`` (``feedback()`` waits on it), and a slow or absent broker must never
make a call or ``feedback()`` wait. So the flusher only hands what it has just made durable
to a bounded in-memory outbox (``notify``: a deque append, no I/O) and this thread sends it,
pipelined, one ``XADD`` per journal line. What it has sent is kept per segment as a byte
offset in ``<events root>/fleet/cursors/<file name>`` (feedback files, one line each, as a line
naming them in ``fleet/forwarded-fb``); the cursor, not the outbox, is the truth.
An outbox entry is used only when it starts exactly at its file's cursor; anything else
(outbox full, broker away, a restart) is read back from the journal file at the cursor. So
an absent broker delays events but loses none, and redelivery after a crash (a cursor
written just after its ``XADD``) is harmless: readers drop event ids they have counted.

Which files: this process's own ``ex-``/``lr-`` segments (wherever they moved, pending/ or
processed/), every feedback file (``fb-``, whoever wrote it: the ``feedback`` CLI publishes
its own when it can; an instance forwards any it finds unforwarded), and the segments of
writers that died before forwarding them (adopted under the cursor file's ``flock``, so
two instances never forward one segment at once; two may both send one feedback file, which
the event id makes harmless). Files older than the store's first fleet
start (``fleet/since``) are history from before the broker and are not sent. A file that is
removed (retention, the size cap) before it was forwarded is treated as done, with a log
line saying how many bytes were not sent; compacted copies (``kx-``) are not sent again.

Also a heartbeat (``hi``) every ``HEARTBEAT_S`` and at start and exit: what this process
runs, with each function's declared parameters and the values in force (learners read
ranges from it, ``status --broker`` shows it).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import logging
import os
import socket
import sys
import threading
import time
import zlib
from collections import deque
from pathlib import Path

from poet_runtime import journal, records
from poet_runtime.fleet import regenerate, wire

log = logging.getLogger("poet_runtime")

HEARTBEAT_S = 2.0
SCAN_EVERY_S = 1.0  # how often the journal folders are listed for files the outbox did not bring
OUTBOX_BYTES = 8 << 20  # beyond this the outbox drops entries; the journal still has them
ROUND_BYTES = 4 << 20  # at most this much per pipelined round
ROUND_ENTRIES = 2000
SOCKET_TIMEOUT_S = 1.0
BACKOFF_MAX_S = 1.0
EXIT_DRAIN_S = 1.5  # at exit, how long the last lines and the final heartbeat may take
EVENTS_MAXLEN = 1_000_000  # approximate cap of the events stream (XADD MAXLEN ~)
# A feedback file with no intact line younger than this is looked at again by a later scan, not
# marked done: its writer may not have finished it (a writer of before journal.write_single linked
# files in whole, a copy being made by hand). Older, it is counted and reported, never dropped unsaid.
FB_SETTLE_S = 10.0
_KINDS = {"ex": b"ex", "lr": b"lr", "fb": b"fb"}
_CURSOR_WIDTH = 20


def fleet_dir(root: Path) -> Path:
    return Path(root) / "fleet"


class _File:
    """One journal file being forwarded: its cursor (offset sent), lock and header."""

    __slots__ = ("name", "kind", "fd", "offset", "header", "own", "done", "writer")

    def __init__(self, name: str, fd: int, offset: int, own: bool):
        self.name, self.kind, self.fd, self.offset, self.own = name, _KINDS[name[:2]], fd, offset, own
        self.header: bytes | None = None  # the segment's header JSON (``m`` on ``ex`` entries)
        self.done = False
        # (process, pid) of the file's writer: ``p`` and ``i`` name it, not the forwarding process
        self.writer = None if own else _writer_of(name)


class _Root:
    """What the publisher keeps per events root (one namespace each)."""

    def __init__(self, root: Path):
        self.root = root
        self.namespace = wire.namespace(root.parent)
        self.stream = wire.stream(self.namespace, wire.EVENTS)
        self.files: dict[str, _File] = {}
        self.own: set[str] = set()  # names of the segments this process wrote
        self.finished: set[str] = set()  # names known done (fb forwarded, closed segments sent)
        self.skipped: set[str] = set()  # names not ours to send (a live writer's, history)
        self.since = _since(root)
        self.forwarded_path = fleet_dir(root) / "forwarded-fb"
        self.forgotten = 0  # names in that file whose feedback file is gone (it is rewritten past a bound)
        with contextlib.suppress(OSError):
            self.finished.update(line for line in self.forwarded_path.read_text().split() if line.startswith("fb-"))
        self.last_scan = 0.0
        self.behind = False  # the last scan stopped at a full chunk: more is waiting


    def note_forwarded(self, names: list) -> None:
        """Feedback files the broker has: one line each, appended (two instances may both send one;
        the event id makes that harmless)."""
        try:
            fd = os.open(self.forwarded_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                os.write(fd, "".join(name + "\n" for name in names).encode())
            finally:
                os.close(fd)
        except OSError as error:
            _say_once(("forwarded", str(self.forwarded_path)), "poet_runtime: fleet: cannot note forwarded "
                      "feedback in %s (%s); a restart sends it again", self.forwarded_path, error)

    def forget_forwarded(self, count: int) -> None:
        """Feedback files removed from the journal: their lines go when enough have gone."""
        self.forgotten += count
        if self.forgotten < 1000:
            return
        self.forgotten = 0
        temp = self.forwarded_path.with_name(f".forwarded-fb.{os.getpid()}")
        with contextlib.suppress(OSError):
            temp.write_text("".join(name + "\n" for name in sorted(self.finished) if name.startswith("fb-")))
            os.replace(temp, self.forwarded_path)


def _since(root: Path) -> float:
    """When this store first had a broker: files last written before it are not forwarded."""
    folder = fleet_dir(root)
    path = folder / "since"
    try:
        return float(path.read_text().strip())
    except (OSError, ValueError):
        pass
    now = time.time()
    with contextlib.suppress(OSError):
        (folder / "cursors").mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, b"%.6f\n" % now)
        finally:
            os.close(fd)
    try:
        return float(path.read_text().strip())
    except (OSError, ValueError):
        return now


def _writer_of(name: str) -> tuple[str, int] | None:
    """What a journal file's name says of its writer: ``ex-<pid>-<ns>-<process>``,
    ``fb-ev-<process>-<n>`` (pid unknown: 0), ``lr-<pid>-<ns>`` (process read from its lines)."""
    parts = name[:-len(".jsonl")].split("-")
    if name.startswith("ex-"):
        named = journal.header_from_name(Path(name))
        return (named["process"], named["pid"]) if named else None
    if name.startswith("fb-ev-") and len(parts) == 4:
        return parts[2], 0
    return None


def _locate(root: Path, name: str) -> Path | None:
    for sub in (journal.PENDING, journal.PROCESSED):
        path = root / sub / name
        if path.exists():
            return path
    return None


class Publisher:
    def __init__(self, url: str, key: bytes | None):
        self.url, self.key = url, key
        self.outbox: deque = deque()  # (root, name, offset, data, extra fields or None)
        self.outbox_bytes = 0
        self.overflowed = False
        self.wake = threading.Event()
        self.stop = threading.Event()
        self.lock = threading.Lock()  # roots and the outbox's byte count
        self.roots: dict[Path, _Root] = {}
        self.client = None
        self.up: bool | None = None  # None: not tried yet
        self.backoff = 0.1
        self.retry_at = 0.0
        self.started = time.time()
        self.last_event: float | None = None
        self.last_beat = 0.0
        self.sent = 0  # entries acknowledged by the broker (tests, rows)
        self.catching_up = None  # (since, sent then) after the broker came back
        self.cpu_s = 0.0  # CPU time of this thread's rounds (benchmarks: its cost off the call path)
        self.unforwarded_feedback = 0  # feedback files found unreadable after FB_SETTLE_S (heartbeat, status)
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.thread = threading.Thread(target=self._run, name="poet-fleet-publisher", daemon=True)
        self.thread.start()

    # -- from other threads (no I/O) ---------------------------------------------------------

    def _forked(self) -> "Publisher | None":
        """In a forked child this object is the parent's: hand over to the child's own publisher."""
        if self.pid == os.getpid():
            return None
        fresh = get()
        return fresh if fresh is not None and fresh is not self else None

    def add_root(self, root: Path) -> None:
        if self.pid != os.getpid():
            fresh = self._forked()
            if fresh is not None:
                fresh.add_root(root)
            return
        with self.lock:
            known = root in self.roots and self.roots[root] is not None
        if not known:
            made = _Root(root)  # at registration: files before this moment are not forwarded
            with self.lock:
                if self.roots.get(root) is None:
                    self.roots[root] = made
        self.wake.set()

    def notify(self, root: Path, path: Path | None, offset: int, data: bytes, extra=None) -> None:
        """The flusher (or ``feedback()``) made ``data`` durable at ``offset`` of ``path``."""
        if self.pid != os.getpid():
            fresh = self._forked()
            if fresh is not None:
                fresh.notify(root, path, offset, data, extra)
            return
        self.last_event = time.time()
        if path is None:
            return
        with self.lock:
            if root not in self.roots:
                self.roots[root] = None
            if self.outbox_bytes + len(data) > OUTBOX_BYTES:
                self.overflowed = True  # the thread reads these from the journal instead
            else:
                self.outbox.append((root, path.name, offset, data, extra))
                self.outbox_bytes += len(data)
        self.wake.set()

    # -- the thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        if _import_redis() is None:
            return  # the process is ending before the client could load: the journal keeps it all
        while True:
            self.wake.wait(0.2)
            self.wake.clear()
            final = self.stop.is_set()  # at exit: one last round (whatever is left, a last heartbeat)
            began = time.thread_time()
            try:
                sent = self.round(final)
            except Exception as error:  # never a traceback per round; the next round retries
                self._down(error)
                sent = 0
            self.cpu_s += time.thread_time() - began
            if final:
                return

    def round(self, final: bool = False) -> int:
        now = time.monotonic()
        self._make_roots()  # before connecting: a store's ``since`` is when it got a broker, not when it was reached
        if not self._connected(now, final):
            self._drop_outbox()
            return 0
        sent = 0
        try:
            if final or now - self.last_beat >= HEARTBEAT_S:
                self.heartbeat()
            sent += self._send_outbox()
            scanned = False
            for state in list(self.roots.values()):
                if state is not None and (self.overflowed or final or now - state.last_scan >= SCAN_EVERY_S):
                    state.last_scan = now
                    sent += self._scan(state)
                    scanned = True
            self.overflowed = False
            if self.catching_up is not None and scanned and not any(
                    state.behind for state in list(self.roots.values()) if state is not None):
                began, before = self.catching_up
                self.catching_up = None
                log.info("poet_runtime: fleet: forwarded %d entries that waited in the journal (%.1f s after the "
                         "broker was back)", self.sent - before, time.monotonic() - began)
        except Exception as error:
            self._down(error)
            self._drop_outbox()
        return sent

    def _make_roots(self) -> None:
        with self.lock:
            missing = [root for root, value in self.roots.items() if value is None]
        for root in missing:
            made = _Root(root)  # reads or writes ``fleet/since``: not under the lock
            with self.lock:
                if self.roots.get(root) is None:
                    self.roots[root] = made

    def _connected(self, now: float, final: bool) -> bool:
        if self.client is not None:
            return True
        if now < self.retry_at and not final:
            return False
        redis = _import_redis()
        if redis is None:
            return False
        try:
            client = redis.Redis.from_url(self.url, socket_timeout=SOCKET_TIMEOUT_S,
                                          socket_connect_timeout=SOCKET_TIMEOUT_S)
            client.ping()
        except Exception as error:
            self._down(error)
            return False
        self.client = client
        if self.up is False:
            log.info("poet_runtime: fleet: broker %s reachable again; forwarding what waited in the journal",
                     _safe_url(self.url))
            self.catching_up = (time.monotonic(), self.sent)
        self.up, self.backoff = True, 0.1
        for state in list(self.roots.values()):
            if state is not None:
                state.last_scan = 0.0  # look at every file now
        return True

    def _down(self, error: BaseException) -> None:
        client, self.client = self.client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()
        if self.up is not False:
            log.warning("poet_runtime: fleet: broker %s not reachable (%s: %s); events wait in the local journal "
                        "and are forwarded when it is back; calls are not affected",
                        _safe_url(self.url), type(error).__name__, error)
        self.up = False
        self.retry_at = time.monotonic() + self.backoff
        self.backoff = min(self.backoff * 2, BACKOFF_MAX_S)

    def _drop_outbox(self) -> None:
        with self.lock:
            if self.outbox:
                self.outbox.clear()
                self.outbox_bytes = 0
                self.overflowed = True  # the cursors still say where each file stands

    # -- sending -------------------------------------------------------------------------------

    def _fields(self, kind: bytes, data: bytes, origin: str, header: bytes | None, extra, writer=None) -> dict:
        process, pid = writer or (records.PROCESS_ID, os.getpid())
        fields = {"k": kind, "d": data, "p": process, "h": self.host, "i": pid, "o": origin}
        if header is not None and kind == b"ex":
            fields["m"] = header
        if extra:
            fields.update(extra)
        if self.key is not None:  # last: the signature covers every field (wire.sign_entry)
            fields["s"] = wire.sign_entry(self.key, fields)
        return fields

    def _send_outbox(self) -> int:
        """Send outbox entries that start at their file's cursor; the rest is read from the file."""
        sent = 0
        while True:
            with self.lock:
                if not self.outbox:
                    return sent
                taken = []
                size = 0
                while self.outbox and len(taken) < ROUND_ENTRIES and size < ROUND_BYTES:
                    entry = self.outbox.popleft()
                    taken.append(entry)
                    size += len(entry[3])
                self.outbox_bytes -= size
            entries, moves = [], []
            for root, name, offset, data, extra in taken:
                state = self.roots.get(root)
                if state is None:
                    self.overflowed = True
                    continue
                if name[:2] in ("ex", "lr"):
                    state.own.add(name)
                handle = self._open(state, name, own=True)
                if handle is None:
                    continue
                if offset < handle.offset:
                    continue  # already sent from the file
                if offset > handle.offset:
                    self.overflowed = True  # a gap: the file at the cursor has it
                    continue
                header = self._header(state, handle) if handle.kind == b"ex" else None
                pieces = _lines(data)
                at = offset
                for line in pieces:
                    if _intact(line) and not _is_header(line):
                        entries.append((state.stream, self._fields(handle.kind, line, f"{name}:{at}", header, extra)))
                    at += len(line)
                moves.append((handle, at))
            sent += self._xadd(entries)
            for handle, at in moves:  # only once the broker has them
                self._advance(handle, at)
                if handle.kind == b"fb":
                    handle.done = True
            for state in list(self.roots.values()):
                if state is not None:
                    self._finish_done(state)

    def _xadd(self, entries: list) -> int:
        if not entries:
            return 0
        pipe = self.client.pipeline(transaction=False)
        for name, fields in entries:
            pipe.xadd(name, fields, maxlen=EVENTS_MAXLEN, approximate=True)
        pipe.execute()
        self.sent += len(entries)
        return len(entries)

    def _scan(self, state: _Root) -> int:
        """Forward what the journal holds beyond each cursor (files the outbox did not bring)."""
        root = state.root
        present: dict[str, Path] = {}
        for sub in (journal.PENDING, journal.PROCESSED):
            with contextlib.suppress(FileNotFoundError):
                for entry in os.scandir(root / sub):
                    name = entry.name
                    if name[:3] in ("ex-", "lr-", "fb-") and name.endswith(".jsonl"):
                        present[name] = Path(entry.path)
        sent, more = 0, False
        batch: list = []
        moves: list = []
        size = counted = 0  # bytes of ``batch`` so far, and how many of its entries they count
        for name, path in present.items():
            if name in state.finished or name in state.skipped:
                continue
            handle = state.files.get(name)
            if handle is None:
                own = name in state.own or self._mine(name)
                if not own:
                    if name[:2] != "fb" and journal._writer_alive(path):
                        continue  # a live writer forwards its own segments
                    try:
                        if path.stat().st_mtime < state.since:
                            state.skipped.add(name)  # from before the store had a broker
                            continue
                    except OSError:
                        continue
                handle = self._open(state, name, own=own)
                if handle is None:
                    continue
            if handle.done or any(moved is handle for moved, _, _ in moves):
                continue
            if self._collect(state, handle, path, batch, moves):
                more = True
            size += sum(len(fields["d"]) for _, fields in batch[counted:])
            counted = len(batch)
            if counted >= ROUND_ENTRIES or size >= ROUND_BYTES:
                sent += self._send(batch, moves)
                size = counted = 0
        sent += self._send(batch, moves)
        state.behind = more
        if more:
            state.last_scan = 0.0  # the rest of a long file: next round at once
            self.wake.set()
        for name in list(state.files):
            if name not in present:
                self._vanished(state, state.files[name])
        gone = [n for n in state.finished if n not in present]
        for name in gone:
            state.finished.discard(name)
            if not name.startswith("fb-"):
                with contextlib.suppress(OSError):
                    os.unlink(fleet_dir(root) / "cursors" / name)
        state.forget_forwarded(sum(1 for name in gone if name.startswith("fb-")))
        state.skipped &= set(present)
        self._finish_done(state)
        return sent

    def _mine(self, name: str) -> bool:
        parts = name[:-len(".jsonl")].split("-")
        return name[:2] in ("ex", "lr") and len(parts) >= 3 and parts[1] == str(os.getpid()) and (
            len(parts) < 4 or parts[3] == records.PROCESS_ID)

    def _collect(self, state: _Root, handle: _File, path: Path, batch: list, moves: list) -> bool:
        """Add the complete lines of ``handle``'s file beyond its cursor (one chunk) to ``batch``;
        the cursor moves only once the broker has them (``moves``). True: the chunk was full, more
        may follow. One pipeline carries many files: the broker may fsync once per write."""
        for _attempt in range(2):
            try:
                with open(path, "rb") as source:
                    size = os.fstat(source.fileno()).st_size
                    chunk = b""
                    if handle.offset < size:
                        source.seek(handle.offset)
                        chunk = source.read(ROUND_BYTES)
                break
            except FileNotFoundError:
                moved = _locate(state.root, handle.name)
                if moved is None:
                    self._vanished(state, handle)
                    return False
                path = moved
        else:
            return False
        closed = path.parent.name == journal.PROCESSED
        complete = chunk[:chunk.rfind(b"\n") + 1] if chunk else b""
        writer_gone = closed or handle.kind == b"fb" or (not handle.own and not journal._writer_alive(path))
        if handle.kind == b"fb" and not any(map(_intact, _lines(complete))):
            self._unreadable_feedback(handle, path, chunk, moves)
            return False
        if not complete:
            if chunk and writer_gone:
                log.info("poet_runtime: fleet: %s ends in %d bytes of a torn line; not forwarded",
                         handle.name, len(chunk))
                moves.append((handle, handle.offset + len(chunk), True))
            elif writer_gone:
                handle.done = True
            return False
        header = self._header(state, handle, path) if handle.kind == b"ex" else None
        if not handle.own and handle.writer is None:
            handle.writer = _writer_from_lines(handle, complete, header)
        at = handle.offset
        extra = self._execution_of(state, complete) if handle.kind == b"fb" else None
        for line in _lines(complete):
            if _intact(line) and not _is_header(line):
                batch.append((state.stream, self._fields(handle.kind, line, f"{handle.name}:{at}", header, extra,
                                                          handle.writer)))
            at += len(line)
        full = len(chunk) >= ROUND_BYTES
        moves.append((handle, at, handle.kind == b"fb" or (writer_gone and not full and at == size)))
        return full

    def _unreadable_feedback(self, handle: _File, path: Path, chunk: bytes, moves: list) -> None:
        """A feedback file with no intact line: left for a later scan while it may still be being
        written (younger than ``FB_SETTLE_S``), else counted, logged and marked done (it stays in
        the journal, which readers and ``events --check`` see; only forwarding gives up on it)."""
        try:
            age = time.time() - os.stat(path).st_mtime
        except OSError:
            return  # gone meanwhile: the next scan sees it vanished
        if age < FB_SETTLE_S:
            return
        self.unforwarded_feedback += 1
        what = "is empty" if not chunk else f"holds {len(chunk)} bytes and no intact line"
        if ("unforwarded-fb",) in _said:  # the first one was said at warning; the rest at info, once each
            log.info("poet_runtime: fleet: feedback file %s %s; not forwarded (%d so far)", path, what,
                     self.unforwarded_feedback)
        _say_once(("unforwarded-fb",), "poet_runtime: fleet: feedback file %s %s %.0f s after it was last "
                  "written; it is not forwarded (counted as unforwarded_feedback in this instance's "
                  "heartbeat; later ones are logged at info)", path, what, age)
        moves.append((handle, handle.offset + len(chunk), True))

    def _send(self, batch: list, moves: list) -> int:
        sent = self._xadd(batch)
        for handle, at, done in moves:  # only once the broker has them
            self._advance(handle, at)
            if done:
                handle.done = True
        batch.clear()
        moves.clear()
        return sent

    def _execution_of(self, state: _Root, line: bytes) -> dict | None:
        """``x``: the execution a feedback line refers to, when this process can find it."""
        event = journal.decode(line.split(b"\n", 1)[0] + b"\n")
        execution_id = (event or {}).get("correlation_id") if type(event) is dict else None
        if not execution_id:
            return None
        try:
            from poet_runtime.learn import sink

            # Memory only: never a flush from this thread, and no search of the journal per file
            # while catching up (the learner finds the execution among the ``ex`` entries).
            payload = sink.recent_execution(execution_id)
        except Exception:
            return None
        return {"x": encode_json(payload)} if payload is not None else None

    def _header(self, state: _Root, handle: _File, path: Path | None = None) -> bytes | None:
        if handle.header is None:
            path = path or _locate(state.root, handle.name)
            if path is not None:
                with contextlib.suppress(OSError), open(path, "rb") as source:
                    first = source.readline()
                    value = journal.decode(first)
                    if type(value) is dict and type(value.get("segment")) is dict:
                        handle.header = encode_json(value["segment"])
        return handle.header

    # -- cursors -------------------------------------------------------------------------------

    def _open(self, state: _Root, name: str, own: bool) -> _File | None:
        handle = state.files.get(name)
        if handle is not None:
            return handle
        if name in state.finished:
            return None
        if name.startswith("fb-"):  # one line each: forwarded or not, kept in ``fleet/forwarded-fb``
            handle = state.files[name] = _File(name, -1, 0, own)
            return handle
        folder = fleet_dir(state.root) / "cursors"
        try:
            try:
                fd = os.open(folder / name, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:  # made by ``_since``; made again if someone removed it
                folder.mkdir(parents=True, exist_ok=True)
                fd = os.open(folder / name, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            _say_once(("cursor", str(folder)), "poet_runtime: fleet: cannot keep cursors in %s (%s); "
                      "events of this store are not forwarded", folder, error)
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)  # another instance forwards it now
            return None
        raw = os.pread(fd, 64, 0).strip()
        if raw == b"done":
            os.close(fd)
            state.finished.add(name)
            return None
        offset = int(raw) if raw.isdigit() else 0
        handle = state.files[name] = _File(name, fd, offset, own)
        return handle

    def _advance(self, handle: _File, offset: int) -> None:
        handle.offset = offset
        if handle.fd < 0:
            return
        os.pwrite(handle.fd, b"%0*d\n" % (_CURSOR_WIDTH, offset), 0)

    def _finish_done(self, state: _Root) -> None:
        forwarded = []
        for name, handle in list(state.files.items()):
            if not handle.done and handle.kind != b"fb":
                # a closed segment whose cursor reached its end is done
                path = state.root / journal.PROCESSED / name
                try:
                    handle.done = handle.offset >= path.stat().st_size
                except OSError:
                    pass
            if handle.done:
                if handle.fd < 0:
                    forwarded.append(name)
                else:
                    with contextlib.suppress(OSError):
                        os.pwrite(handle.fd, b"done" + b" " * (_CURSOR_WIDTH - 4) + b"\n", 0)
                        os.close(handle.fd)
                del state.files[name]
                state.finished.add(name)
        if forwarded:
            state.note_forwarded(forwarded)

    def _vanished(self, state: _Root, handle: _File) -> None:
        if _locate(state.root, handle.name) is not None:
            return
        if handle.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(handle.fd)
        state.files.pop(handle.name, None)
        state.finished.add(handle.name)
        log.info("poet_runtime: fleet: %s was removed from the journal (retention, size cap or compaction) "
                 "after %d bytes were forwarded; treated as done", handle.name, handle.offset)

    # -- heartbeat -----------------------------------------------------------------------------

    def heartbeat(self) -> None:
        self.last_beat = time.monotonic()
        from poet_runtime.learn import sink

        by_root: dict[Path, dict] = {}
        for info in list(sink._functions.values()):
            by_root.setdefault(info.root, {})[info.function_id] = _function_view(info)
        pipe = self.client.pipeline(transaction=False)
        for root, state in list(self.roots.items()):
            if state is None:
                continue
            beat = {"host": self.host, "pid": os.getpid(), "process": records.PROCESS_ID,
                    "root": str(root.parent), "started": self.started, "last_event": self.last_event,
                    "functions": by_root.get(root, {}), "at": time.time(),
                    "unforwarded_feedback": self.unforwarded_feedback}
            data = encode_json(beat)
            pipe.xadd(state.stream, self._fields(b"hi", data, "-", None, None), maxlen=EVENTS_MAXLEN,
                      approximate=True)
        pipe.execute()

    def close(self, timeout: float = EXIT_DRAIN_S) -> None:
        """Stop the thread after its last round (what is left, a last heartbeat), waiting at most
        ``timeout`` (plus one socket timeout); what it could not send stays in the journal."""
        self.stop.set()
        self.retry_at = 0.0
        self.wake.set()
        self.thread.join(timeout + SOCKET_TIMEOUT_S)


def _writer_from_lines(handle: _File, complete: bytes, header: bytes | None) -> tuple[str, int] | None:
    """An adopted file's writer when its name does not say: the segment header, else an event id."""
    if header is not None:
        value = json.loads(header)
        if type(value.get("process")) is str:
            return value["process"], int(value.get("pid") or 0)
    parts = handle.name.split("-")
    pid = int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else 0
    for line in _lines(complete):
        event = journal.decode(line)
        if type(event) is dict and type(event.get("id")) is str and event["id"].count("-") == 2:
            return event["id"].split("-")[1], pid
    return None


_import_lock = threading.Lock()  # one thread imports the client; the other waits for all of it


def _import_redis():
    """The ``redis`` module, loaded in a fleet thread (never the caller's: it takes a tenth of a
    second or more), or None. A process that ends meanwhile cannot finish the import (the
    interpreter takes no new exit hooks once it is shutting down): then nothing is sent, and
    the journal keeps everything for the next instance of this store."""
    with _import_lock:
        try:
            import redis
        except Exception as error:
            if threading.main_thread().is_alive() and not sys.is_finalizing():
                _say_once(("import",), "poet_runtime: fleet: POET_BROKER is set but the redis client cannot be "
                          "loaded (%s: %s; pip install 'poet_runtime[fleet]'); nothing is sent to the broker and "
                          "nothing learned is applied, the journal keeps everything", type(error).__name__, error)
            return None
        return redis


def ending() -> bool:
    """The program has finished (its main thread ended): a fleet thread then stops quietly."""
    return not threading.main_thread().is_alive() or sys.is_finalizing()


def _function_view(info) -> dict:
    state = info.state
    version = getattr(state, "version", None)
    view = {"version": getattr(state, "version_number", None), "objective": info.objective,
            "domain": getattr(getattr(state, "config", None), "domain", None), "parameters": {}, "params": {},
            "fleet_version": None, "numbering": None}
    if version is not None:
        # The number the fleet knows this version by: a version an instance made for the fleet
        # carries its fleet number, others only their local one (which differs between instances).
        view["fleet_version"], view["numbering"] = regenerate.identity(version)
        view["parameters"] = dict(version.metadata.get("parameters") or {})
        with contextlib.suppress(OSError, ValueError):
            view["params"] = version.params()
    return view


def _lines(data: bytes) -> list[bytes]:
    return [line + b"\n" for line in data.split(b"\n")[:-1]]


def _intact(line: bytes) -> bool:
    """The line's checksum holds (a torn or damaged line is not sent). Not parsed: JSON-decoding a
    batch line costs as much as encoding it did, and readers decode it anyway."""
    if len(line) < 11 or line[8:9] != b" " or not line.endswith(b"\n"):
        return False
    try:
        return int(line[:8], 16) == zlib.crc32(line[9:-1])
    except ValueError:
        return False


def _is_header(line: bytes) -> bool:
    return line[9:20] == b'{"segment":'


def encode_json(value) -> bytes:
    return json.dumps(value, separators=(",", ":"), default=str).encode()


def _safe_url(url: str) -> str:
    """The broker's address without a password (it may hold one)."""
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.rpartition('@')[2]}"
    return url


_said: set = set()


def _say_once(cause, message, *args) -> None:
    if cause not in _said:
        _said.add(cause)
        log.warning(message, *args)


_publisher: Publisher | None = None
_start_lock = threading.Lock()


def get(url: str | None = None) -> Publisher | None:
    """This process's publisher, started on first use when a broker is set (else None)."""
    global _publisher
    if _publisher is not None:
        return _publisher
    if url is None:
        from poet_runtime.settings import get_settings

        url = get_settings().broker
        if not url:
            return None
    with _start_lock:
        if _publisher is None:
            try:
                key = wire.load_key()
            except OSError as error:
                _say_once(("key",), "poet_runtime: fleet: %s: cannot read the broker key (%s); entries go unsigned",
                          os.environ.get(wire.KEY_FILE_VAR), error)
                key = None
            _publisher = Publisher(url, key)
    return _publisher


def close() -> None:
    global _publisher
    publisher, _publisher = _publisher, None
    if publisher is not None:
        publisher.close()


def _exit() -> None:
    with contextlib.suppress(Exception):
        from poet_runtime.learn import sink

        sink.flush()  # the last calls reach the journal, then the broker
    close()


atexit.register(_exit)


def _after_fork_in_child() -> None:
    """The parent's thread, connection and cursor locks are not the child's: it starts its own."""
    global _publisher, _start_lock
    _start_lock = threading.Lock()
    publisher, _publisher = _publisher, None
    if publisher is not None:
        for state in publisher.roots.values():
            for handle in list((state.files if state is not None else {}).values()):
                with contextlib.suppress(OSError):
                    if handle.fd >= 0:
                        os.close(handle.fd)  # flock is shared with the parent's descriptor; closing ours keeps theirs


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
