"""The durable event queue under ``.poet/events/``: append-only JSON lines with checksums.

Why this shape: a process may be SIGKILLed at any instant, and two processes may write
at once. Each writer appends only to its own files, so there is no cross-process
locking on the hot path; every line carries the CRC-32 of its JSON text, so a line torn
by a crash (no newline, or a checksum that does not match) is detected and skipped by
readers, never fatal. Layout::

    .poet/events/pending/ex-<pid>-<ns>.jsonl   execution events, one open segment per writer, one line per batch
                                               (``encode_columns``; older writers: ``encode_batch``)
    .poet/events/pending/fb-<event id>.jsonl    one feedback event, fsynced before feedback() returns
    .poet/events/pending/lr-<pid>-<ns>.jsonl    learning.* / version.* decisions
    .poet/events/processed/...                  segments closed by their writer, feedback learned from

Readers see both folders; files older than the retention period are removed.
"""

from __future__ import annotations

import binascii
import contextlib
import json
import os
import sys
import time
import zlib
from array import array
from pathlib import Path
from typing import Iterator

try:  # the fleet learner decodes two JSON values per feedback entry, and json.loads is most of that
    from orjson import loads as _orjson_loads
except ImportError:  # an optional speed-up (the [fleet] extra): json decodes the same without it
    _orjson_loads = None

PENDING = "pending"
# Prebuilt once: json.dumps with options would build an encoder per event.
_encoder = json.JSONEncoder(separators=(",", ":"), default=str).encode
PROCESSED = "processed"


def events_root(store_root: Path) -> Path:
    return Path(store_root) / "events"


def encode(event: dict, limit: int) -> bytes | None:
    """One line: ``<crc32 hex> <json>\\n``; None when the event exceeds ``limit`` bytes."""
    text = _encoder(event).encode()
    if len(text) > limit:
        return None
    return b"%08x %s\n" % (zlib.crc32(text), text)


def encode_batch(batch: list, rows: list) -> bytes:
    """One line for a whole batch of execution rows: ``["B", memory_mb, cpu_percent, [row, ...]]``.

    One checksum per batch rather than per row: the batch is what one fsync acknowledges.
    A row the encoder cannot take (a NaN key, a cycle in an output) loses its output only.
    """
    try:
        text = _encoder([*batch, rows]).encode()
    except (TypeError, ValueError):
        for row in rows:
            try:
                _encoder(row)
            except (TypeError, ValueError):
                row[13], row[14] = 2, None
        text = _encoder([*batch, rows]).encode()
    return b"%08x %s\n" % (zlib.crc32(text), text)


def encode_columns(batch: list, groups: list, replaced=None) -> bytes:
    """One line for a whole batch in the column layout: ``["C", memory_mb, cpu_percent, [group, ...]]``.

    A group holds the executions of one function version, field by field (see ``group_rows``),
    so the function, version, objective and the common status are written once per group,
    the numbers of each field go as one packed column, and an execution costs little more
    than its output. An output the encoder cannot take (a cycle, a ``__str__`` that raises)
    is dropped (flag 2) and the rest of its group kept; a detail (an error message, an ok
    call's notes) it cannot take is written as text (``text_of``), and ``replaced`` (a
    callable, if given) is told how many were. One value must never cost the whole batch.
    """
    try:
        text = _encoder([*batch, [_packed(group) for group in groups]]).encode()
    except Exception:
        count = 0
        for group in groups:
            rows = len(group[5])
            flags, outputs = _column(group[13], rows), _outputs(group[14], rows)
            for i, output in enumerate(outputs):
                if not _encodable(output):
                    flags[i], outputs[i] = 2, None
            group[13], group[14] = flags, outputs
            if group[12] is not None:
                details = _column(group[12], rows)
                for i, detail in enumerate(details):
                    if not _encodable(detail):
                        details[i] = plain_notes(detail)
                        count += 1
                group[12] = details
        if count and replaced is not None:
            replaced(count)
        text = _encoder([*batch, [_packed(group) for group in groups]]).encode()
    return b"%08x %s\n" % (zlib.crc32(text), text)


def _encodable(value) -> bool:
    try:
        _encoder(value)
    except Exception:  # a cycle, a too deep value, a __str__ (the encoder's default) that raises
        return False
    return True


def text_of(value, limit: int = 2000) -> str:
    """``str(value)`` cut to ``limit`` characters, or a stand-in naming its type when even that fails."""
    try:
        text = str(value)
    except Exception:
        try:
            name = type(value).__qualname__
        except Exception:
            name = "object"
        return f"<{name}: not representable>"
    return text if type(text) is str and len(text) <= limit else str.__str__(text)[:limit] + "..."


def plain_notes(detail):
    """A detail the encoder cannot take, made writable: an ok call's notes keep their shape
    (kind, field, detail) with the parts that cannot be encoded as text; anything else is its text."""
    if type(detail) in (list, tuple) and all(type(note) in (list, tuple) and len(note) == 3 for note in detail):
        return [[part if _encodable(part) else text_of(part) for part in note] for note in detail]
    return text_of(detail)


_SWAP = sys.byteorder != "little"


def pack(values, code: str):
    """A column of ints (``code`` "q") or floats ("d") as ``{code: base64 of little-endian 64-bit values}``.

    Turning numbers into decimal text is most of what encoding a batch costs (a float's
    shortest repr alone takes longer than the rest of its execution's row); packing is
    exact, NaN and infinities included. A column with other values (None) stays a list.
    """
    try:
        packed = array(code, values)
    except (TypeError, OverflowError):
        return values if type(values) is list else list(values)
    if _SWAP:
        packed.byteswap()
    return {code: binascii.b2a_base64(packed.tobytes(), newline=False).decode("ascii")}


def unpack(value):
    """The list a column stands for (``pack``'s output, or already a list)."""
    if type(value) is not dict:
        return value
    (code, text), = value.items()
    values = array(code)
    values.frombytes(binascii.a2b_base64(text))
    if _SWAP:
        values.byteswap()
    return values.tolist()


def _pack_column(values):
    """Pack a list of values of one numeric type (bool excluded: ``true`` is as short as it gets)."""
    if type(values) is list and values:
        kind = type(values[0])
        if (kind is float or kind is int) and set(map(type, values)) == {kind}:
            return pack(values, "d" if kind is float else "q")
    return values


def _packed(group: list) -> list:
    """The group as written: its numeric columns packed (in memory they stay lists)."""
    packed = group[:]
    packed[4] = pack(group[4], "d")
    for field in (5, 6, 7, 8, 9):
        packed[field] = pack(group[field], "q")
    output = group[14]
    if type(output) is dict:
        packed[14] = {"k": output["k"], "c": [_pack_column(column) for column in output["c"]]}
    else:
        packed[14] = _pack_column(output)
    return packed


def _column(value, rows: int) -> list:
    """A group field: a list (one value per execution), or one value shared by all of them."""
    return list(value) if type(value) is list else [value] * rows


def _outputs(value, rows: int) -> list:
    """The outputs of a group: None (none kept), a list, or dicts by column ``{"k": keys, "c": columns}``."""
    if type(value) is dict:
        if "k" not in value:
            return unpack(value)
        keys = value["k"]
        if not keys:
            return [{} for _ in range(rows)]
        return [dict(zip(keys, values)) for values in zip(*map(unpack, value["c"]))]
    return list(value) if type(value) is list else [value] * rows


_micro = 1e6.__mul__


def _times(group: list) -> tuple:
    """(ends in µs since the epoch, perceive ns, operate ns, enforce ns) of every execution of a group."""
    if len(group) == 14:  # the first column writer stored these as such
        return tuple(map(unpack, (group[4], group[6], group[7], group[8])))
    ends = list(map(int, map(_micro, unpack(group[4]))))
    marks = list(map(unpack, group[6:10]))
    phases = []
    for start, stop in zip(marks, marks[1:]):
        try:
            phases.append(list(map(int.__sub__, stop, start)))
        except TypeError:  # executions without phase times (fallbacks) among them
            phases.append([None if a is None else b - a for a, b in zip(start, stop)])
    return (ends, *phases)


def group_rows(group: list) -> list[list]:
    """The rows (as ``expand`` takes them) of a column group.

    Group: [function, version, objective, first event seq (or a list of seqs), end (seconds
    since the epoch, as ``time.time()`` gave it), execution number, t0, t1, t2, t3 (the call's
    ``perf_counter_ns`` marks around perceive, operate and enforce; None without phase times),
    status, reason, detail, output flag, output]. Status, reason, detail and flag are one
    value for the whole group or a list; numeric columns may be packed (``pack``); output as
    ``_outputs`` reads it. (The first column writer's groups had 14 fields: end in µs and
    the three phase durations instead of the four marks.) A 16th field, present only when
    some execution of the group had its inputs recorded (policy ``record_inputs``), holds
    the inputs column (see ``expand``); its rows then carry a 16th value.
    """
    function, version, objective, seqs = group[:4]
    numbers = unpack(group[5])
    rows = len(numbers)
    if type(seqs) is not list:
        seqs = range(seqs, seqs + rows)
    tail = 9 if len(group) == 14 else 10
    fields = zip(seqs, *_times(group), numbers, *(_column(group[tail + i], rows) for i in range(4)),
                 _outputs(group[tail + 4], rows))
    made = [["X", seq, end, number, function, version, status, perceive, operate, enforce, reason, detail, objective,
             flag, output]
            for seq, end, perceive, operate, enforce, number, status, reason, detail, flag, output in fields]
    if len(group) > 15:
        for row, inputs in zip(made, _column(group[15], rows)):
            row.append(inputs)
    return made


def group_row(group: list, index: int) -> list:
    """Row ``index`` of a column group, without expanding the others."""
    def at(value):
        return value[index] if type(value) is list else value

    if len(group) == 14:
        return group_rows(group)[index]
    seqs, output = group[3], group[14]
    if type(output) is dict and "k" in output:
        output = {key: unpack(column)[index] for key, column in zip(output["k"], output["c"])}
    else:
        output = at(unpack(output))
    wall, number, t0, t1, t2, t3 = (unpack(column)[index] for column in group[4:10])
    phases = (None, None, None) if t0 is None else (t1 - t0, t2 - t1, t3 - t2)
    row = ["X", seqs[index] if type(seqs) is list else seqs + index, int(wall * 1e6), number, group[0], group[1],
           at(group[10]), *phases, at(group[11]), at(group[12]), group[2], at(group[13]), output]
    if len(group) > 15:
        row.append(at(group[15]))
    return row


_DROPPED = {2: "too_large", 3: "not_json"}


def recorded_inputs(root: Path, function_id: str, limit: int) -> list[tuple[list, dict]]:
    """Up to ``limit`` distinct (args, kwargs) of ``function_id``'s most recent executions whose inputs
    were recorded (policy ``record_inputs``), newest first; [] when there are none.

    Reads batch lines newest file first and looks only at the groups of this function
    that carry inputs, without expanding them into events.
    """
    found: list = []
    seen: set = set()
    needle = _encoder(function_id).encode()
    for path in reversed(files(root)):
        if not path.name.startswith("ex-"):
            continue
        texts: list = []
        try:
            with open(path, "rb") as handle:
                for line in handle:
                    if needle not in line:
                        continue
                    value = decode(line)
                    if type(value) is not list or len(value) != 4 or value[0] != "C":
                        continue
                    for group in value[3]:
                        if len(group) > 15 and group[0] == function_id:
                            texts.extend(text for text in _column(group[15], len(unpack(group[5])))
                                         if type(text) is str)
        except FileNotFoundError:  # claimed or pruned meanwhile
            continue
        for text in reversed(texts):
            if text in seen:
                continue
            seen.add(text)
            try:
                inputs = json.loads(text)
                args, kwargs = inputs["args"], inputs["kwargs"]
            except (ValueError, KeyError, TypeError):
                continue
            if type(args) is list and type(kwargs) is dict:
                found.append((args, kwargs))
                if len(found) >= limit:
                    return found
    return found


def loads(data: bytes):
    """``json.loads(data)`` for bytes, the same value or error, faster for what journals and the fleet
    carry: ``json.loads`` on bytes first guesses the encoding (``detect_encoding``) from the first
    bytes; text that opens with ``{`` or ``[`` and no NUL after it is UTF-8 by that very guess, so it
    is decoded as ``json.loads`` would (``surrogatepass``) without the guess. Anything else: ``json.loads``.

    That text goes to orjson first (about twice as fast) where orjson cannot answer otherwise: not
    when a run of 19 digits may be an integer past 64 bits (orjson makes it a float), nor nested
    ``_DEEP`` deep or more (``json.loads`` may run out of recursion there, orjson goes to 1024).
    What orjson refuses (NaN, infinities and numbers that round to them, lone surrogates, invalid
    UTF-8, nesting past 1024, malformed text) is decoded by ``json`` for its value or its error."""
    if type(data) is bytes and data[:1] in _JSON_OPENERS and data[1:2] != b"\x00":
        if _orjson_loads is not None:
            marked = data.translate(_MARKS)  # digits as "0", "{" as "[": one pass for both checks
            if _LONG_DIGITS not in marked and (len(data) < 2 * _DEEP or marked.count(b"[") < _DEEP):
                try:
                    return _orjson_loads(data)
                except Exception:  # its error is not json's: json says what it says
                    pass
        return _json_decode(data.decode("utf-8", "surrogatepass"))
    return json.loads(data)


_JSON_OPENERS = (b"{", b"[")
_json_decode = json.JSONDecoder().decode  # what json.loads uses without keyword arguments
_MARKS = bytes.maketrans(b"123456789{", b"000000000[")
_LONG_DIGITS = b"0" * 19  # every integer of 18 digits or fewer fits in 64 bits
# Shallower than this json.loads fails only with fewer frames than this left before the recursion
# limit. A document this deep holds at least as many openers, and is twice as long.
_DEEP = 200


def decode(line: bytes):
    """The JSON value of one line, or None for a torn or damaged line, or one nested past what the
    parser can take (RecursionError: feedback comments are the caller's own, and a reader that raised
    on such a line would raise on it again at every read)."""
    if not line.endswith(b"\n") or len(line) < 11 or line[8:9] != b" ":
        return None
    text = line[9:-1]
    try:
        if int(line[:8], 16) != zlib.crc32(text):
            return None
        return loads(text)
    except (ValueError, RecursionError):
        return None


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def ensure_dirs(root: Path) -> None:
    for sub in (PENDING, PROCESSED):
        (root / sub).mkdir(parents=True, exist_ok=True)


def write_single(root: Path, name: str, line: bytes) -> Path:
    """Write one event as its own file and make it durable (file and directory entry)."""
    ensure_dirs(root)
    path = root / PENDING / name
    # Written under a name no reader lists, then linked in whole: a reader that lists pending/
    # between the create and the write (the fleet publisher, a retention pass, another process's
    # catch-up) must never see the file empty or half written.
    temp = path.with_name(f".{name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(temp, path)  # fails if the name exists, as O_EXCL did
    finally:
        os.unlink(temp)
    _fsync_dir(path.parent)
    return path


def claim(path: Path) -> Path | None:
    """Move a pending file to processed/; None when another process claimed it first."""
    return _move(path, PROCESSED, FileNotFoundError)


def unclaim(path: Path) -> Path | None:
    """Move a claimed file back from processed/ to pending/ (it was not used after all)."""
    return _move(path, PENDING, OSError)


def _move(path: Path, folder: str, lost) -> Path | None:
    """``path`` renamed into its sibling ``folder`` and made durable; None on ``lost``."""
    target = path.parent.parent / folder / path.name
    try:
        os.rename(path, target)
    except lost:
        return None
    _fsync_dir(target.parent)
    return target


def expand(row: list, header: dict, batch: list | None) -> dict:
    """A compact execution row -> the full ``function.execution`` event (see models.ExecutionPayload).

    Row: ["X", event seq, end (µs since the epoch), execution number, function, version, status,
    perceive ns, operate ns, enforce ns, reason, detail, objective, output flag (0 none, 1 kept,
    2 dropped), output] and, when the call's inputs were recorded (policy ``record_inputs``), their entry:
    the JSON text of ``{"args": [...], "kwargs": {...}}`` (payload ``inputs``), or 0 not recorded, 2 over
    the size cap, 3 not JSON-encodable (payload ``inputs_dropped``: "too_large" / "not_json"). The segment's header gives the process and metadata; the batch line
    ("B" rows or "C" columns) gives the process's memory and CPU use when it was written.
    """
    process = header["process"]
    perceive, operate, enforce = row[7], row[8], row[9]
    phases = {} if perceive is None else {"perceive": perceive / 1e6, "operate": operate / 1e6,
                                          "enforce": enforce / 1e6}
    duration = sum(phases.values())
    end = row[2] / 1e6
    status, reason = row[6], row[10]
    execution_id = f"{process}-{row[3]}"
    payload = {
        "function": row[4], "version": row[5], "execution_id": execution_id,
        "start": end - duration / 1000.0, "end": end, "status": status,
        "metrics": {"duration_ms": duration, "memory_mb": batch[1] if batch else None,
                    "cpu_percent": batch[2] if batch else None},
        "error": {"type": reason, "message": row[11]} if status == "error" else None,
        "fell_back": status == "fallback", "fallback_reason": reason if status == "fallback" else None,
        "phase_ms": phases, "objective": row[12], "pid": header.get("pid", 0),
    }
    if status == "ok" and type(row[11]) is list:  # an ok call's notes ride in the detail column
        evidence = [{"kind": note[0], "field": note[1], "detail": note[2]} for note in row[11]
                    if type(note) is list and len(note) == 3 and type(note[0]) is str and "." in note[0]]
        if evidence:
            payload["evidence"] = evidence
    if row[13] == 1:
        payload["output"] = row[14]
    elif row[13] == 2:
        payload["output_truncated"] = True
    if len(row) > 15:
        inputs = row[15]
        if type(inputs) is str:
            payload["inputs"] = json.loads(inputs)
        elif inputs in _DROPPED:
            payload["inputs_dropped"] = _DROPPED[inputs]
    return {"id": f"ev-{process}-{row[1]}", "type": "function.execution", "timestamp": end,
            "correlation_id": execution_id, "causation_id": None, "metadata": header["metadata"],
            "payload": payload}


class Segment:
    """One writer's append-only file; ``sync()`` makes everything written so far durable."""

    def __init__(self, root: Path, prefix: str, max_bytes: int, header=None, tag=None):
        self.header = header  # callable -> bytes: the first line of every file (process, metadata)
        # callable -> str: the writer's process id, also put in the file's name, so that a damaged
        # header line costs that line, not the ids of every execution in the file
        self.tag = tag
        ensure_dirs(root)
        self.root = root
        self.prefix = prefix
        self.max_bytes = max_bytes
        self.path: Path | None = None
        self.handle = None
        self.size = 0

    def _open(self) -> None:
        tag = f"-{self.tag()}" if self.tag is not None else ""
        self.path = self.root / PENDING / f"{self.prefix}-{os.getpid()}-{time.time_ns()}{tag}.jsonl"
        self.handle = open(self.path, "ab", buffering=0)
        self.size = 0
        if self.header is not None:
            self.handle.write(self.header())
        _fsync_dir(self.path.parent)  # the file's name must survive a crash too

    def write(self, data: bytes) -> None:
        if self.handle is not None and self.size and self.size + len(data) > self.max_bytes:
            self.close()  # a file never grows past its size by more than one batch (the cap drops whole files)
        if self.handle is None:
            self._open()
        self.handle.write(data)
        self.size += len(data)

    def sync(self) -> None:
        if self.handle is not None:
            os.fsync(self.handle.fileno())
            if self.size >= self.max_bytes:
                self.close()

    def close(self) -> None:
        """Close and move the segment to processed/: nobody appends to it any more."""
        if self.handle is None:
            return
        os.fsync(self.handle.fileno())
        self.handle.close()
        self.handle = None
        claim(self.path)


def files(root: Path, prefixes: tuple[str, ...] = ()) -> list[Path]:
    """Every journal file under ``root`` in write order; only names starting with one of
    ``prefixes`` when given (looked at before any stat: a journal may hold a file per feedback)."""
    found = []
    for sub in (PROCESSED, PENDING):
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(root / sub):
                if entry.name.endswith(".jsonl") and (not prefixes or entry.name.startswith(prefixes)):
                    found.append(Path(entry.path))
    # The nanosecond stamp in the name orders segments of one writer; mtime orders the rest.
    return sorted(found, key=lambda p: (_mtime(p), p.name))


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


_RECOVERED_METADATA = {"version": "1", "environment": "unknown", "service": "unknown"}


def header_from_name(path: Path) -> dict | None:
    """What a segment's name says of its writer (``ex-<pid>-<ns>-<process>.jsonl``): the header
    readers use when the file's own header line is damaged; None for names without the process."""
    parts = path.name[:-len(".jsonl")].split("-") if path.name.endswith(".jsonl") else []
    if len(parts) != 4 or not parts[1].isdigit() or len(parts[3]) != 12:
        return None
    try:
        int(parts[3], 16)
    except ValueError:
        return None
    return {"process": parts[3], "pid": int(parts[1]), "metadata": dict(_RECOVERED_METADATA), "recovered": True}


def read_file(path: Path) -> Iterator[dict]:
    """The events of one file, in order; torn or damaged lines are skipped.

    A damaged header line costs only itself: the writer's process id is in the file's
    name too (``header_from_name``), so its executions keep their ids.
    """
    header, batch = header_from_name(path), None
    named = header
    try:
        with open(path, "rb") as handle:
            for line in handle:
                value = decode(line)
                if type(value) is dict:
                    if "segment" in value:
                        found = value["segment"]
                        if type(found) is dict and (named is None or found.get("process") == named["process"]):
                            header = found
                    else:
                        yield value
                elif type(value) is list and value:
                    if value[0] == "C" and header is not None and len(value) == 4:
                        for group in value[3]:  # a batch line, column layout
                            for row in group_rows(group):
                                yield expand(row, header, value)
                    elif value[0] == "B" and header is not None and len(value) == 4:
                        for row in value[3]:  # a batch line, one list per row (older writers)
                            yield expand(row, header, value)
                    elif value[0] == "X" and header is not None:  # a single row (after a "B" line)
                        yield expand(value, header, batch)
                    elif value[0] == "B":
                        batch = value
    except FileNotFoundError:  # claimed or pruned meanwhile
        return


def read(root: Path, types: set[str] | None = None) -> Iterator[dict]:
    for path in files(root):
        for event in read_file(path):
            if types is None or event.get("type") in types:
                yield event


def count_torn(root: Path) -> int:
    """How many lines readers skip (torn or damaged): for tests and ``events --check``."""
    bad = 0
    for path in files(root):
        with open(path, "rb") as handle:
            bad += sum(1 for line in handle if decode(line) is None)
    return bad


def prune(root: Path, days: float, now: float | None = None) -> int:
    """Remove event files older than ``days``; returns how many. A period that is not a positive
    finite number removes nothing (settings refuse one; this is the last guard)."""
    if type(days) not in (int, float) or not 0 < days < float("inf"):
        return 0
    cutoff = (now or time.time()) - days * 86400
    removed = 0
    for path in files(root):
        if _mtime(path) < cutoff:
            with contextlib.suppress(OSError):
                path.unlink()
                removed += 1
    return removed


# -- finding one execution without reading the whole journal ---------------------------------

_NUMBER_SLACK = 10_000  # calls of several threads reach a segment slightly out of number order


def _batch_numbers(value) -> tuple[int, int] | None:
    """(lowest, highest) execution number of a decoded batch line, or None for other lines."""
    if type(value) is not list or len(value) != 4:
        return None
    numbers: list = []
    if value[0] == "C":
        for group in value[3]:
            numbers.extend(unpack(group[5]))
    elif value[0] == "B":
        numbers = [row[3] for row in value[3]]
    numbers = [n for n in numbers if type(n) is int]
    return (min(numbers), max(numbers)) if numbers else None


def _last_line(handle, size: int) -> bytes:
    """The file's last line (read backwards in chunks from its end)."""
    chunk, end, tail = 65536, size, b""
    while end > 0:
        start = max(0, end - chunk)
        handle.seek(start)
        tail = handle.read(end - start) + tail
        cut = tail.rfind(b"\n", 0, len(tail) - 1)
        if cut >= 0:
            return tail[cut + 1:]
        end = start
    return tail


def _may_hold(path: Path, process: str, number: int) -> bool:
    """False when the segment at ``path`` cannot hold execution ``process-number``: another
    writer (its name, else its header line), or numbers outside its first and last batches."""
    named = header_from_name(path)
    if named is not None and named["process"] != process:
        return False
    try:
        with open(path, "rb") as handle:
            first = handle.readline()
            header = decode(first)
            if named is None and type(header) is dict and type(header.get("segment")) is dict and \
                    header["segment"].get("process") != process:
                return False
            low = _batch_numbers(decode(handle.readline()))
            size = os.fstat(handle.fileno()).st_size
            high = _batch_numbers(decode(_last_line(handle, size)))
    except FileNotFoundError:
        return False
    if low is None or high is None:
        return True  # a damaged or torn first or last batch: read it all
    return low[0] - _NUMBER_SLACK <= number <= high[1] + _NUMBER_SLACK


def find_execution_event(root: Path, execution_id: str) -> dict | None:
    """The ``function.execution`` event of ``execution_id`` under one events root, or None.

    Reads only segments that may hold it (``_may_hold``: the writer's process in the name or
    header, the range of numbers of the first and last batch), so an unknown id costs a few
    small reads per file, not the decoding of the whole journal.
    """
    process, _, number = execution_id.rpartition("-")
    if not process or not number.isdigit():
        return None
    number = int(number)
    for path in files(root, ("ex-", "kx-")):  # only execution segments and their compacted copies hold one
        name = path.name
        if name.startswith("kx-"):
            named = header_from_name(path)
            if named is not None and named["process"] != process:
                continue
        elif not name.startswith("ex-") or not _may_hold(path, process, number):
            continue
        else:
            event = _find_in_segment(path, execution_id, number)
            if event is not None:
                return event
            continue
        for event in read_file(path):
            if event.get("correlation_id") == execution_id and event.get("type") == "function.execution":
                return event
    return None


def _find_in_segment(path: Path, execution_id: str, number: int) -> dict | None:
    """``read_file`` for one execution: a batch line's numbers column is looked at before anything
    of it is expanded, and only the matching row is."""
    header, batch = header_from_name(path), None
    named = header
    try:
        with open(path, "rb") as handle:
            for line in handle:
                value = decode(line)
                if type(value) is dict:
                    if "segment" in value and type(value["segment"]) is dict and (
                            named is None or value["segment"].get("process") == named["process"]):
                        header = value["segment"]
                    elif value.get("correlation_id") == execution_id and value.get("type") == "function.execution":
                        return value
                    continue
                if type(value) is not list or not value or header is None:
                    continue
                if value[0] == "C" and len(value) == 4:
                    for group in value[3]:
                        numbers = unpack(group[5])
                        if number in numbers:
                            event = expand(group_row(group, numbers.index(number)), header, value)
                            if event["correlation_id"] == execution_id:
                                return event
                elif value[0] == "B" and len(value) == 4:
                    for row in value[3]:
                        if row[3] == number:
                            event = expand(row, header, value)
                            if event["correlation_id"] == execution_id:
                                return event
                elif value[0] == "X" and value[3] == number:
                    event = expand(value, header, batch)
                    if event["correlation_id"] == execution_id:
                        return event
                elif value[0] == "B":
                    batch = value
    except FileNotFoundError:
        return None
    return None


# -- bounded disk use: retention and a size cap, applied while a process runs ----------------

def referenced_executions(root: Path, cache: dict | None = None) -> set[str]:
    """The execution ids feedback refers to (pending and processed). ``cache`` maps a feedback
    file's name (they never change) to its execution id, so each file is read once."""
    cache = {} if cache is None else cache
    found: set = set()
    seen: set = set()
    for sub in (PENDING, PROCESSED):
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(root / sub):
                name = entry.name
                if not (name.startswith("fb-") and name.endswith(".jsonl")):
                    continue
                seen.add(name)
                execution_id = cache.get(name)
                if execution_id is None:
                    event = next(read_file(Path(entry.path)), None)
                    execution_id = cache[name] = (event or {}).get("correlation_id") or ""
                if execution_id:
                    found.add(execution_id)
    for name in [name for name in cache if name not in seen]:
        del cache[name]
    return found


def _writer_alive(path: Path) -> bool:
    """Whether the process that named ``path`` (``<prefix>-<pid>-...``) still runs: its open
    segment must not be removed under it (its writes would go nowhere)."""
    parts = path.name.split("-")
    if len(parts) < 3 or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        return True  # ours: the caller names the segments it has closed
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _compact(path: Path, referenced: set[str], limit: int) -> bool:
    """Keep the executions of ``path`` that feedback refers to, as whole events in a ``kx-`` file
    beside it, before ``path`` goes. False when that could not be done (``path`` must stay)."""
    kept = [event for event in read_file(path)
            if event.get("type") == "function.execution" and event.get("correlation_id") in referenced]
    if not kept:
        return True
    lines = [line for line in (encode(event, limit) for event in kept) if line is not None]
    target = path.parent.parent / PROCESSED / ("kx-" + path.name.split("-", 1)[1])
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return True  # another process kept them first
    except OSError:
        return False
    try:
        os.write(fd, b"".join(lines))
        os.fsync(fd)
    except OSError:
        os.close(fd)
        with contextlib.suppress(OSError):
            target.unlink()
        return False
    os.close(fd)
    _fsync_dir(target.parent)
    return True


def enforce_limits(root: Path, *, retention_days: float, max_bytes: int, open_paths=(), cache: dict | None = None,
                   now: float | None = None, event_limit: int = 1 << 20) -> dict:
    """Apply retention and the size cap to one events root; returns what was removed.

    Oldest files first. Retention removes what is older than ``retention_days`` (as ``prune``).
    Over ``max_bytes``, execution segments go oldest first, never feedback (``fb-``), nor
    decisions (``lr-``), nor a segment still open (``open_paths``, or a live writer's pending
    one); the executions feedback still refers to are kept first (``kx-`` files), and those
    files go only when nothing refers to them any more.
    """
    now = time.time() if now is None else now
    cutoff = now - retention_days * 86400 if type(retention_days) in (int, float) and 0 < retention_days < float(
        "inf") else float("-inf")
    entries = []
    for sub in (PROCESSED, PENDING):
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(root / sub):
                if entry.name.endswith(".jsonl"):
                    with contextlib.suppress(OSError):
                        info = entry.stat()
                        entries.append((info.st_mtime, entry.name, info.st_size, Path(entry.path), sub))
    total = sum(entry[2] for entry in entries)
    opened = {Path(p) for p in open_paths}
    referenced = None
    removed = {"files": 0, "bytes": 0, "kept_executions_files": 0}
    for mtime, name, size, path, sub in sorted(entries):
        expired = mtime < cutoff
        if not expired and total <= max_bytes:
            break
        if path in opened:
            continue
        if not expired:
            if name.startswith(("fb-", "lr-")):
                continue  # the cap never drops feedback or decisions
            if sub == PENDING and name.startswith("ex-") and _writer_alive(path):
                continue
        if name.startswith(("ex-", "kx-")):
            if referenced is None:
                referenced = referenced_executions(root, cache)
            if name.startswith("kx-"):
                if any(event.get("correlation_id") in referenced for event in read_file(path)) and not expired:
                    continue
            elif not _compact(path, referenced, event_limit):
                continue
            else:
                removed["kept_executions_files"] += 1
        with contextlib.suppress(OSError):
            path.unlink()
            total -= size
            removed["files"] += 1
            removed["bytes"] += size
    return removed


def disk_bytes(root: Path) -> int:
    """Bytes of the event files under one events root."""
    total = 0
    for sub in (PROCESSED, PENDING):
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(root / sub):
                with contextlib.suppress(OSError):
                    total += entry.stat().st_size
    return total


def recorded_samples(store_root, function_id: str, limit: int) -> list[tuple[list, dict]]:
    """Distinct recent recorded calls of a function as probe samples ``[(args, kwargs), ...]``,
    newest first, from the journal beside the stores under ``store_root``.

    Only calls whose inputs were recorded (their policy had ``record_inputs = true``) exist
    to be found; ``resolve.generate_version`` asks only while the policy still allows it.
    """
    root = events_root(Path(store_root))
    if not root.is_dir():
        return []
    return recorded_inputs(root, function_id, limit)
