"""The fidelity suite's recording kit: registers cases and observes what each one does.

A case module (``cases_*.py`` in this folder) defines ordinary ``@poet`` functions, a
module-level ``RUNS = collections.Counter()`` that every function body increments
(``RUNS["name"] += 1``: how many times the user's logic really ran), and drivers:

    @case()
    def adds_two_ints(o):
        return {"result": o.call(add, 1, 2)}

A driver calls the ``@poet`` functions through ``o.call`` (or ``await o.acall`` in an
``async def`` driver, run with ``asyncio.run``), so that each call's
``poet_runtime.last_execution()`` is read right after it, in the caller's thread and
task. It returns the facts to compare (values, identity checks, argument and global
state after the call); an exception it lets escape is recorded as well.

``observe(case)`` runs one driver with stdout, stderr, the logging records that reach
the root logger (POET's own loggers excluded), and every warning captured, and returns
one JSON-able observation. The same observation is made by plain ``python`` (runtime
off: the baseline) and under ``python -m poet_runtime --policy NAME``; the test
compares them. Nothing here knows or assumes how the runtime works inside.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import io
import logging
import os
import re
import sys
import time
import traceback
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
CASES: list["Case"] = []
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_POET_LOGGERS = ("poet_runtime", "poet_sandbox")


class Case:
    def __init__(self, name: str, module, driver, *, one_record: bool, note: str):
        self.name = name
        self.module = module
        self.driver = driver
        self.one_record = one_record  # each outer call makes exactly one execution record (recursion cases)
        self.note = note


def case(*, one_record: bool = False, note: str = ""):
    """Register the decorated driver as a case named ``<module>.<driver name>``."""

    def register(driver):
        module = sys.modules[driver.__module__]
        if not hasattr(module, "RUNS"):
            raise RuntimeError(f"{driver.__module__} has no RUNS counter (see fidelity_kit's docstring)")
        name = f"{driver.__module__}.{driver.__name__}"
        if any(existing.name == name for existing in CASES):
            raise RuntimeError(f"case {name} registered twice")
        CASES.append(Case(name, module, driver, one_record=one_record, note=note))
        return driver

    return register


# ---------------------------------------------------------------- describing values


def safe_repr(value) -> str:
    try:
        text = repr(value)
    except BaseException as error:  # noqa: BLE001 - a repr that fails is itself a fact
        text = f"<repr failed: {type(error).__name__}>"
    return _ADDRESS.sub(" at 0x?", text)


def type_name(value) -> str:
    kind = type(value)
    return f"{kind.__module__}.{kind.__qualname__}"


def where(filename: str) -> str:
    """A frame's file as the report shows it: a case file by name, anything else by its kind."""
    if not filename:
        return "?"
    if filename.startswith("<"):  # code compiled from a string: POET's own wrappers name themselves
        return "<poet>" if "poet" in filename.lower() else filename
    path = os.path.abspath(filename)
    if os.path.dirname(path) == HERE:
        return os.path.basename(path)
    if any(os.sep + part + os.sep in path for part in ("poet_runtime", "poet_sandbox", ".poet")) or (
            os.sep + "sandbox" + os.sep + "harness" + os.sep in path):
        return "<poet>"
    home = os.environ.get("POET_HOME")
    if home and path.startswith(os.path.abspath(home)):
        return "<poet>"
    return "<lib>"


def frames(tb) -> list:
    """(where, function) per traceback entry. An enhanced callable's wrapper reports the
    user's file at the ``@poet`` line, and names itself POET's in its code's qualname."""
    found = []
    while tb is not None:
        code = tb.tb_frame.f_code
        poet_wrapper = getattr(code, "co_qualname", "").startswith("<poet wrapper")
        found.append(["<poet>" if poet_wrapper else where(code.co_filename), code.co_name])
        tb = tb.tb_next
    return found


def describe_exception(error: BaseException, depth: int = 0) -> dict:
    described = {
        "type": f"{type(error).__module__}.{type(error).__qualname__}",
        "args": safe_repr(error.args),
        "str": _ADDRESS.sub(" at 0x?", str(error)) if _str_ok(error) else "<str failed>",
        "suppress_context": bool(error.__suppress_context__),
        "notes": safe_repr(getattr(error, "__notes__", None)),
        "frames": frames(error.__traceback__),  # compared without POET's frames, which are counted
        "cause": None,
        "context": None,
    }
    if depth < 6:
        if error.__cause__ is not None:
            described["cause"] = describe_exception(error.__cause__, depth + 1)
        if error.__context__ is not None and error.__context__ is not error.__cause__:
            described["context"] = describe_exception(error.__context__, depth + 1)
    return described


def _str_ok(error) -> bool:
    try:
        str(error)
        return True
    except BaseException:  # noqa: BLE001
        return False


def describe(value) -> dict:
    """A value as the comparison sees it: type, repr (addresses blanked); exceptions in full."""
    if isinstance(value, BaseException):
        return {"exception": describe_exception(value)}
    return {"type": type_name(value), "repr": safe_repr(value)}


def describe_facts(facts) -> dict:
    if type(facts) is dict:
        return {str(key): describe(value) for key, value in facts.items()}
    return {"<returned>": describe(facts)}


# ---------------------------------------------------------------- observing calls


def _last_execution():
    if "poet_runtime" not in sys.modules:
        return None
    return sys.modules["poet_runtime"].last_execution()


def function_id(fn) -> str:
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', getattr(fn, '__name__', '?'))}"


class Observer:
    """What a driver gets: ``call``/``acall`` record each call to a ``@poet`` function."""

    def __init__(self):
        self.calls: list[dict] = []

    def _record(self, expected, before, raised, *, stream=False):
        after = _last_execution()
        record = None
        if after is not None and (before is None or after.execution_id != before.execution_id):
            record = {
                "function": after.function,
                "status": after.status,
                "fell_back": after.fell_back,
                "reason": after.reason,
                "detail": (after.detail or "")[:300] or None,
                "backend": after.backend,
                "number": _number(after.execution_id),
            }
        # A stream's record may be written when the call returns the stream ("ok") or as it ends: an
        # exception raised while it was used may or may not be on it.
        wanted = ("ok", "error") if stream and raised is not None else ("error",) if raised is not None else ("ok",)
        enhanced = bool(
            record is not None
            and not record["fell_back"]
            and record["status"] in wanted
            and record["function"] in expected
        )
        self.calls.append({
            "function": expected[0],
            "raised": None if raised is None else type_name(raised),
            "record": record,
            "enhanced": enhanced,
        })

    def call(self, fn, /, *args, **kwargs):
        """``fn(*args, **kwargs)``, recorded."""
        return self.call_as((function_id(fn),), fn, *args, **kwargs)

    def call_as(self, expected_ids, fn, /, *args, _stream=False, **kwargs):
        """As ``call``, for a function whose record may name it otherwise (any of ``expected_ids``)."""
        expected = (expected_ids,) if isinstance(expected_ids, str) else tuple(expected_ids)
        before = _last_execution()
        try:
            result = fn(*args, **kwargs)
        except BaseException as error:
            self._record(expected, before, error, stream=_stream)
            raise
        self._record(expected, before, None, stream=_stream)
        return result

    def call_then(self, then, fn, /, *args, **kwargs):
        """``then(fn(*args, **kwargs))``, recorded once ``then`` is done: for generator functions, whose
        record may come as the stream is used (``then`` iterates, sends, catches what it wants)."""
        return self.call_as((function_id(fn),), lambda: then(fn(*args, **kwargs)), _stream=True)

    def consume(self, fn, /, *args, **kwargs):
        """A generator function: call it and drain it with ``list`` inside the recorded call."""
        return self.call_then(list, fn, *args, **kwargs)

    async def acall(self, fn, /, *args, **kwargs):
        """``await fn(*args, **kwargs)``, recorded in the awaiting task."""
        return await self.acall_as((function_id(fn),), fn, *args, **kwargs)

    async def acall_then(self, then, fn, /, *args, **kwargs):
        """``await then(fn(*args, **kwargs))``, recorded once done: for async generator functions."""
        return await self.acall_as((function_id(fn),), lambda: then(fn(*args, **kwargs)), _stream=True)

    async def acall_as(self, expected_ids, fn, /, *args, _stream=False, **kwargs):
        """As ``acall``, for a record that may name the function otherwise (any of ``expected_ids``)."""
        expected = (expected_ids,) if isinstance(expected_ids, str) else tuple(expected_ids)
        before = _last_execution()
        try:
            result = await fn(*args, **kwargs)
        except BaseException as error:
            self._record(expected, before, error, stream=_stream)
            raise
        self._record(expected, before, None, stream=_stream)
        return result


def _number(execution_id: str):
    try:
        return int(str(execution_id).rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return None


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.seen: list = []

    def emit(self, record):
        if record.name.startswith(_POET_LOGGERS):
            return
        self.seen.append([
            record.name, record.levelname, _ADDRESS.sub(" at 0x?", record.getMessage()),
            where(record.pathname), record.funcName, record.lineno,
        ])


def observe(entry: Case) -> dict:
    observer = Observer()
    runs_before = dict(entry.module.RUNS)
    out, err = io.StringIO(), io.StringIO()
    handler = _Capture()
    root = logging.getLogger()
    root.addHandler(handler)
    facts = error = None
    started = time.perf_counter()
    try:
        with warnings.catch_warnings(record=True) as caught, \
                contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            warnings.simplefilter("always")
            try:
                if inspect.iscoroutinefunction(entry.driver):
                    facts = asyncio.run(entry.driver(observer))
                else:
                    facts = entry.driver(observer)
            except BaseException as raised:  # noqa: BLE001 - recorded, compared
                error = raised
            caught_warnings = [
                [type_name(w.message) if isinstance(w.message, Warning) else w.category.__qualname__,
                 str(w.message), where(w.filename), w.lineno]
                for w in caught
            ]
    finally:
        root.removeHandler(handler)
    elapsed_ms = (time.perf_counter() - started) * 1000
    runs_after = dict(entry.module.RUNS)
    runs = {key: runs_after.get(key, 0) - runs_before.get(key, 0) for key in sorted(set(runs_after) | set(runs_before))}
    return {
        "case": entry.name,
        "note": entry.note,
        "one_record": entry.one_record,
        "facts": None if error is not None else describe_facts(facts),
        "error": None if error is None else describe_exception(error),
        "stdout": out.getvalue(),
        "stderr": err.getvalue(),
        "logs": handler.seen,
        "warnings": caught_warnings,
        "runs": {key: value for key, value in runs.items() if value},
        "calls": observer.calls,
        "elapsed_ms": round(elapsed_ms, 3),
    }
