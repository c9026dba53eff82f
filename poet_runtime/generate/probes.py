"""Probe runs: does a candidate module, loaded the way it would run, agree with the original?

A model's answer can parse, have the right functions and still be wrong: change
results, refuse every input, call the logic twice, or never return. Before it is
stored, the candidate is loaded into the backend its policy names and called
(contract 2: ``loaded.call(logic, args, kwargs)``, the logic being the original
function) on sample inputs: recorded real calls, the docstring's ``>>>`` examples,
values made from the type hints. The original function and the built-in version
are called on the same inputs, each on its own deep copy of them.

- A candidate that calls the logic must give the original's result, or the
  built-in version's (the project's own normalisation), or, when its Perceive noted
  a repair of an argument, the logic's own result on the repaired arguments. It
  must call the logic on every call that returned, and never again once the
  logic has returned (retries follow failures only).
- A *transformed* candidate (its ``operate_prime`` re-implements the logic; only
  for functions ``purity`` shows to be pure) must give the original's result AND
  leave the arguments as the original leaves them (the copies are compared after
  the call), on every sample.

Every run happens in one daemon thread under a deadline. A trace function raises
``ProbeTimeout`` (a ``BaseException``, so no ``except Exception`` in generated code
can swallow it) once the deadline has passed: that stops pure-Python loops under
backend ``none``; the join timeout is the last guard for code blocked in C.
Before tracing, the thread clears a stale "async exception pending" flag that any
code in the process may have left (``PyThreadState_SetAsyncExc(id, NULL)``, see
``poet_sandbox.timeouts``): on CPython 3.11 a traced thread spins forever under it,
and every later answer would be refused as a probe timeout.

Probe runs call the user's function on the sample inputs: that is the price of
knowing a candidate is right, and why recorded real calls come first.
"""

from __future__ import annotations

import ast
import asyncio
import copy
import doctest
import inspect
import itertools
import math
import sys
import threading
import time
from dataclasses import dataclass, field

from poet_runtime.errors import CheckFailed, PoetViolation
from poet_runtime.generate.spec import KEYWORD_ONLY, VAR_KEYWORD, VAR_POSITIONAL, FunctionSpec
from poet_runtime.generate.parsing import parse

PROBE_CALL_TIMEOUT_S = 2.0  # per call when the policy sets no wall_ms
PROBE_LOAD_TIMEOUT_S = 5.0  # per load at least: a sandbox may start a worker or a guest first
MAX_SAMPLES = 8
MAX_STREAM_ITEMS = 1000  # items of a generator's stream compared per probe call
_NAMED = {
    "int": [3, 0, -7],
    "float": [2.5, 0.0, -1.25],
    "str": ["abc", "", "Hello World"],
    "bool": [True, False, True],
    "bytes": [b"abc", b"", b"\x00\xff"],
}


class Stream(list):
    """What a generator yielded (up to ``MAX_STREAM_ITEMS``), compared as a list."""


class ProbeTimeout(BaseException):
    """Raised inside a probe run whose deadline has passed."""


# -- the function and its sample inputs ------------------------------------------------------

def find_original(spec: FunctionSpec):
    """The live original function for ``spec``, or None (not imported, nested, a method)."""
    if spec.method_kind not in (None, "staticmethod") or "<locals>" in spec.qualname:
        return None
    target = sys.modules.get(spec.module)
    for part in spec.qualname.split("."):
        if target is None:
            return None
        holder = getattr(target, "__dict__", {})
        target = holder.get(part, getattr(target, part, None))
    target = getattr(target, "__func__", target)  # staticmethod
    state = getattr(target, "__poet__", None)
    if state is not None:
        return state.original
    return target if callable(target) else None


class Samples(list):
    """Probe inputs; the first ``recorded`` of them are real calls (their values are never shown)."""

    recorded = 0


def sample_inputs(spec: FunctionSpec, recorded=()) -> Samples:
    """(args, kwargs) pairs to probe with: recorded calls, doctest examples, then from hints."""
    real = [(tuple(args), dict(kwargs)) for args, kwargs in recorded][:MAX_SAMPLES]
    unique = Samples()
    for sample in real:
        if not any(_same(sample, seen) for seen in unique):
            unique.append(sample)
    unique.recorded = len(unique)
    for sample in _doctest_samples(spec) + _hint_samples(spec):
        if not any(_same(sample, seen) for seen in unique):
            unique.append(sample)
    del unique[MAX_SAMPLES:]
    unique.recorded = min(unique.recorded, len(unique))
    return unique


def _doctest_samples(spec: FunctionSpec) -> list:
    if not spec.docstring:
        return []
    found = []
    try:
        examples = doctest.DocTestParser().get_examples(spec.docstring)
    except ValueError:
        return []
    for example in examples:
        try:
            node = parse(example.source, mode="eval").body
        except SyntaxError:
            continue
        if not isinstance(node, ast.Call):
            continue
        name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
        if name != spec.name:
            continue
        try:
            args = tuple(ast.literal_eval(arg) for arg in node.args)
            kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords if kw.arg}
        except (ValueError, TypeError, SyntaxError):
            continue
        if len(kwargs) == len(node.keywords):
            found.append((args, kwargs))
    return found


def _hint_samples(spec: FunctionSpec) -> list:
    columns = {}
    for param in spec.params:
        if param.has_default or param.kind in (VAR_POSITIONAL, VAR_KEYWORD):
            continue
        values = _values(param.annotation, spec)
        if not values:
            return []  # a required argument we cannot make up: no hint samples at all
        columns[param.name] = values
    if not columns and any(not p.has_default and p.kind not in (VAR_POSITIONAL, VAR_KEYWORD) for p in spec.params):
        return []
    samples = []
    for index in range(3):
        args, kwargs = [], {}
        for param in spec.params:
            if param.name not in columns:
                continue
            value = columns[param.name][index % len(columns[param.name])]
            if param.kind == KEYWORD_ONLY:
                kwargs[param.name] = value
            else:
                args.append(value)
        samples.append((tuple(args), kwargs))
    return samples


def _values(annotation: str | None, spec: FunctionSpec, depth: int = 0) -> list | None:
    if annotation is None or depth > 3:
        return None
    try:
        node = parse(annotation, mode="eval").body
    except SyntaxError:
        return None
    return _node_values(node, spec, depth)


def _node_values(node, spec: FunctionSpec, depth: int) -> list | None:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):  # X | None
        parts = [p for p in (node.left, node.right) if not (isinstance(p, ast.Constant) and p.value is None)]
        return _node_values(parts[0], spec, depth) if len(parts) == 1 else None
    name = node.id if isinstance(node, ast.Name) else getattr(node, "attr", None)
    if isinstance(node, ast.Subscript):
        outer = node.value.id if isinstance(node.value, ast.Name) else getattr(node.value, "attr", None)
        args = list(node.slice.elts) if isinstance(node.slice, ast.Tuple) else [node.slice]
        if outer == "Optional":
            return _node_values(args[0], spec, depth)
        if outer in ("list", "List", "Sequence", "Iterable") and len(args) == 1:
            items = _node_values(args[0], spec, depth + 1)
            return None if items is None else [list(items), [items[1]], []]
        if outer in ("tuple", "Tuple") and len(args) == 2 and isinstance(args[1], ast.Constant) and args[1].value is ...:
            items = _node_values(args[0], spec, depth + 1)
            return None if items is None else [tuple(items), (items[1],), ()]
        if outer in ("dict", "Dict", "Mapping") and len(args) == 2:
            keys, values = _node_values(args[0], spec, depth + 1), _node_values(args[1], spec, depth + 1)
            if not keys or not values:
                return None
            return [dict(zip(keys, values)), {keys[0]: values[0]}, {}]
        return None
    if name in _NAMED:
        return list(_NAMED[name])
    if name in ("list", "List"):
        return [[1, 2, 3], [0], []]
    if name in ("dict", "Dict"):
        return [{"a": 1, "b": 2}, {"a": 0}, {}]
    info = spec.class_info(name) if name else None
    if info is not None and info.kind == "typeddict":
        columns = {}
        for field_name, hint in info.fields:
            values = _values(hint, spec, depth + 1)
            if not values:
                return None
            columns[field_name] = values
        return [{k: v[i % len(v)] for k, v in columns.items()} for i in range(3)]
    return None


# -- comparing outcomes ----------------------------------------------------------------------

def _same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and not isinstance(b, bool):
            if math.isnan(a) and math.isnan(b):
                return True
            return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
        return False
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    try:
        return bool(a == b)
    except Exception:  # e.g. array-like results whose == is elementwise
        return repr(a) == repr(b)


@dataclass
class Outcome:
    kind: str  # "ok", "raised", "declined" (PhaseError), "violation", "timeout", "error"
    value: object = None
    detail: str = ""
    notes: tuple = ()  # (kind, field, detail) from validate.note
    state: object = None  # the (args, kwargs) copy after the call, or None when it could not be copied
    logic: object = None  # the counting logic the candidate was given


@dataclass
class ProbeReport:
    samples: int = 0
    agreed: int = 0
    declined: int = 0  # of the agreed: refused by the candidate and the built-in version alike
    repaired: int = 0  # of the agreed: a noted repair of an argument explains a different result
    state_checked: int = 0  # samples whose arguments' state after the call was compared (transformed)
    skipped: int = 0
    transformed: bool = False
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        report = {"samples": self.samples, "agreed": self.agreed, "declined": self.declined, "skipped": self.skipped,
                  "notes": self.notes[:10]}
        if self.repaired:
            report["repaired"] = self.repaired
        if self.transformed:
            report["transformed"] = True
            report["state_checked"] = self.state_checked
        return report


def _describe(args, kwargs) -> str:
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    text = ", ".join(parts)
    return f"({text[:200]}{'...' if len(text) > 200 else ''})"


# -- running ---------------------------------------------------------------------------------

class _Deadline:
    """When the probe thread's current load or call must stop (its tracer raises then).

    ``abandoned``: the caller stopped waiting (the join timed out). The thread is then
    blocked in C; once it returns, its current call ends at its passed deadline and no
    further load or call starts, so the user's function is not called again for a
    verdict nobody reads.
    """

    def __init__(self):
        self.at = math.inf
        self.abandoned = False

    def start(self, seconds: float) -> None:
        if self.abandoned:
            raise ProbeTimeout()
        self.at = time.perf_counter() + seconds

    def tracer(self, frame, event, arg):
        if time.perf_counter() > self.at:
            raise ProbeTimeout()
        return self.tracer


_NOTHING = object()


def counting_logic(original, is_async: bool):
    """``original`` as the logic a candidate is given, counting what the candidate does with it.

    A plain function (the driver finds the user's exceptions by its frames) with the
    attributes the driver reads from a host's counting logic: ``returned`` and ``result``.
    """
    if is_async:
        async def logic(*args, **kwargs):
            _before(logic)
            result = await original(*args, **kwargs)
            _after(logic, result)
            return result
    else:
        def logic(*args, **kwargs):
            _before(logic)
            result = original(*args, **kwargs)
            _after(logic, result)
            return result
    logic.calls = 0
    logic.after_return = 0
    logic.returned = False
    logic.result = _NOTHING
    logic.__wrapped__ = original
    return logic


def _before(logic) -> None:
    logic.calls += 1
    if logic.returned:
        logic.after_return += 1


def _after(logic, result) -> None:
    logic.returned = True
    logic.result = result


def _copies(args, kwargs):
    """A deep copy of the call's arguments, or None when they cannot be copied."""
    try:
        return copy.deepcopy((tuple(args), dict(kwargs)))
    except Exception:
        return None


def _call(deadline: _Deadline, seconds: float, function, is_async: bool, phase_error) -> Outcome:
    deadline.start(seconds)
    try:
        value = asyncio.run(function()) if is_async else function()
        if inspect.isgenerator(value):  # a generator function's stream: compared by what it yields
            value = Stream(itertools.islice(value, MAX_STREAM_ITEMS))
        return Outcome("ok", value)
    except ProbeTimeout:
        return Outcome("timeout", detail=f"did not finish within {seconds:g}s")
    except PoetViolation as violation:
        return Outcome("violation", detail=str(violation))
    except Exception as error:
        if phase_error is not None and isinstance(error, phase_error):
            return Outcome("declined", detail=str(error))
        return Outcome("raised", value=type(error), detail=f"{type(error).__name__}: {error}")
    finally:
        deadline.at = math.inf


def _run(deadline, seconds, target, original, args, kwargs, is_async, phase_error, *, enhanced: bool,
         count: bool = False) -> Outcome:
    """One call on a fresh copy of the arguments; the copy is kept as the outcome's state."""
    copied = _copies(args, kwargs)
    call_args, call_kwargs = copied if copied is not None else (args, kwargs)
    logic = counting_logic(original, is_async) if count else original
    notes = []
    if not enhanced:
        if is_async:
            async def function():
                return await original(*call_args, **call_kwargs)
        else:
            def function():
                return original(*call_args, **call_kwargs)
    elif is_async:
        async def function():
            answer = await target.call_async(logic, call_args, call_kwargs)
            notes.extend(answer[5] or ())
            return answer[0]
    else:
        def function():
            answer = target.call(logic, call_args, call_kwargs)
            notes.extend(answer[5] or ())
            return answer[0]
    outcome = _call(deadline, seconds, function, is_async, phase_error)
    outcome.notes = tuple(notes)
    outcome.state = copied
    outcome.logic = logic if count else None
    return outcome


def run_probes(*, candidate_loader, baseline_loader, original, is_async: bool, samples: list,
               call_timeout_s: float = PROBE_CALL_TIMEOUT_S, transformed: bool = False,
               parameters=(), load_timeout_s: float = PROBE_LOAD_TIMEOUT_S) -> ProbeReport:
    """Call the candidate, the built-in version and the original on ``samples``; raise on disagreement.

    ``*_loader`` are zero-argument callables that load a module into its backend (they
    run in the probe thread, under the deadline: module-level code can loop too).
    ``transformed``: the candidate re-implements the logic (see the module docstring).
    ``parameters``: the function's parameter names (a repair note names one of them).
    ``load_timeout_s``: how long one load may take (at least ``call_timeout_s``).
    """
    load_s = max(call_timeout_s, load_timeout_s)
    from poet_runtime.resources import load_facility

    load_facility()
    from poet_sandbox.errors import PhaseError
    from poet_sandbox.timeouts import _take_back

    box: dict = {}
    deadline = _Deadline()

    def work():
        _take_back()  # before tracing: see the module docstring
        sys.settrace(deadline.tracer)
        try:
            box["report"] = _probe_all(deadline, candidate_loader, baseline_loader, original, is_async, samples,
                                       call_timeout_s, PhaseError, transformed, frozenset(parameters), load_s)
        except BaseException as error:  # reported to the caller's thread, never lost
            box["error"] = error
        finally:
            sys.settrace(None)

    thread = threading.Thread(target=work, name="poet-probe", daemon=True)
    thread.start()
    thread.join(call_timeout_s * 3 * len(samples) + load_s * 2 + 1.0)
    if thread.is_alive():
        # Blocked where the trace function cannot reach (C code, a sleep): the thread is
        # abandoned as a daemon (it starts nothing more) and the candidate refused.
        deadline.abandoned = True
        raise CheckFailed("probe_timeout", "the probe runs did not finish (blocked outside Python code)")
    if "error" in box:
        error = box["error"]
        if isinstance(error, CheckFailed):
            raise error
        if isinstance(error, ProbeTimeout):
            raise CheckFailed("probe_timeout", "loading the module did not finish") from None
        raise CheckFailed("probe_error", f"{type(error).__name__}: {error}") from None
    return box["report"]


def _load(deadline: _Deadline, loader, seconds: float, what: str):
    deadline.start(seconds)
    try:
        return loader()
    except ProbeTimeout:
        raise CheckFailed("probe_timeout", f"loading the {what} did not finish within {seconds:g}s") from None
    except CheckFailed:
        raise
    except Exception as error:
        raise CheckFailed("probe_load", f"the {what} does not load: {type(error).__name__}: {error}") from None
    finally:
        deadline.at = math.inf


def _probe_all(deadline, candidate_loader, baseline_loader, original, is_async, samples, seconds, phase_error,
               transformed=False, parameters=frozenset(), load_s=None):
    report = ProbeReport(transformed=transformed)
    baseline = None
    load_s = load_s or seconds
    try:
        baseline = _load(deadline, baseline_loader, load_s, "built-in version") if baseline_loader else None
    except CheckFailed as error:  # the reference failing is not the candidate's fault
        report.notes.append(f"baseline unavailable: {error.detail}")
    try:
        candidate = _load(deadline, candidate_loader, load_s, "module")
    except CheckFailed as error:
        if transformed or baseline_loader is None or baseline is not None or error.reason == "probe_timeout":
            raise
        # The built-in version does not load either: the backend cannot run this function
        # at all (the runtime will fall back at load), so nothing here speaks against the answer.
        report.skipped = len(samples)
        report.notes.append(f"not probed: the backend loads neither version: {error.detail}")
        return report
    try:
        recorded = getattr(samples, "recorded", 0)
        for index, (args, kwargs) in enumerate(samples):
            # A recorded call is real data: its values (and the results computed from them) never
            # go into a refusal, which the model is shown and metadata.json keeps.
            private = index < recorded
            shown = f"recorded call {index + 1} (real data, not shown)" if private else _describe(args, kwargs)
            expected = _run(deadline, seconds, None, original, args, kwargs, is_async, None, enhanced=False)
            if expected.kind == "timeout":
                report.skipped += 1
                report.notes.append(f"{shown}: the original did not finish; sample skipped")
                continue
            normalised = None
            if baseline is not None:
                normalised = _run(deadline, seconds, baseline, original, args, kwargs, is_async, phase_error,
                                  enhanced=True)
            got = _run(deadline, seconds, candidate, original, args, kwargs, is_async, phase_error, enhanced=True,
                       count=True)
            if _judge(shown, expected, normalised, got, report, private, transformed, parameters):
                report.samples += 1
    finally:
        for loaded in (candidate, baseline):
            if loaded is not None:
                try:
                    loaded.close()
                except Exception:
                    pass
    return report


def _judge(shown: str, expected: Outcome, normalised: Outcome | None, got: Outcome, report: ProbeReport,
           private: bool = False, transformed: bool = False, parameters=frozenset()) -> bool:
    """True when the sample counted (agreed); False when skipped; raises ``CheckFailed`` otherwise."""
    try:
        if transformed:
            return _transformed_verdict(shown, expected, normalised, got, report)
        _logic_use(shown, got)
        return _verdict(shown, expected, normalised, got, report, parameters)
    except CheckFailed as failure:
        if private:  # keep the verdict, drop what was computed from real data
            raise CheckFailed(failure.reason, f"on {shown} the module and the original disagree") from None
        raise


def _logic_use(shown: str, got: Outcome) -> None:
    """A candidate that calls the logic must call it, and never after it has returned."""
    logic = got.logic
    if logic is None:
        return
    if logic.after_return:
        raise CheckFailed("probe_logic", f"on input {shown} operate_prime called the logic again after it had "
                                         f"returned ({logic.calls} calls): the logic must never run twice")
    if got.kind == "ok" and not logic.calls:
        raise CheckFailed("probe_logic", f"on input {shown} the module returned without calling the logic it "
                                         "was given: operate_prime must return logic(*args, **kwargs)")


def _repaired_arguments(got: Outcome, parameters) -> list[str]:
    return [field for kind, field, _ in got.notes
            if kind == "repair" and (field in parameters or str(field).split("[")[0].split(".")[0] in parameters)]


def _verdict(shown: str, expected: Outcome, normalised: Outcome | None, got: Outcome, report: ProbeReport,
             parameters=frozenset()) -> bool:
    if got.kind == "timeout":
        if expected.kind != "ok" or (normalised is not None and normalised.kind == "timeout"):
            # The original failed here (a retried error takes time) or the built-in version is
            # as slow: not evidence against the candidate.
            report.skipped += 1
            report.notes.append(f"{shown}: the module {got.detail}; the original did not return either")
            return False
        raise CheckFailed("probe_timeout", f"on input {shown} the module {got.detail} (an endless loop?)")
    if got.kind == "violation":
        raise CheckFailed("probe_violation", f"on input {shown}: {got.detail}")
    if expected.kind == "ok":
        if got.kind == "ok":
            if _same(got.value, expected.value) or (normalised is not None and normalised.kind == "ok"
                                                   and _same(got.value, normalised.value)):
                report.agreed += 1
                return True
            repaired = _repaired_arguments(got, parameters)
            logic = got.logic
            if repaired and logic is not None and logic.result is got.value:
                # Perceive repaired an argument (and said so); what the caller gets is the
                # logic's own result on the repaired arguments.
                report.agreed += 1
                report.repaired += 1
                report.notes.append(f"{shown}: {', '.join(repaired)} repaired (noted); the logic's own result")
                return True
            raise CheckFailed("probe_mismatch", f"on input {shown} the module returned {got.value!r:.200} but "
                                                f"the original returns {expected.value!r:.200}"
                              + _explain_notes(got))
        if got.kind == "declined":
            if normalised is not None and normalised.kind == "ok":
                raise CheckFailed("probe_mismatch", f"on input {shown} the module failed ({got.detail:.300}) where "
                                                    f"the original returns {expected.value!r:.200}")
            report.agreed += 1  # the built-in version refuses this input too
            report.declined += 1
            report.notes.append(f"{shown}: refused, as the built-in version does")
            return True
        raise CheckFailed("probe_mismatch", f"on input {shown} the module raised {got.detail:.300} where the "
                                            f"original returns {expected.value!r:.200}")
    # The original raised: refusing, raising the same, or repairing the input are all fine.
    if got.kind == "raised" and got.value is not expected.value:
        raise CheckFailed("probe_mismatch", f"on input {shown} the module raised {got.detail:.300} where the "
                                            f"original raises {expected.detail:.300}")
    report.agreed += 1
    return True


def _explain_notes(got: Outcome) -> str:
    if not got.notes:
        return ""
    shown = "; ".join(f"{kind} {field}: {detail}" for kind, field, detail in got.notes[:3])
    return f" (its notes: {shown:.300})"


def _transformed_verdict(shown: str, expected: Outcome, normalised: Outcome | None, got: Outcome,
                         report: ProbeReport) -> bool:
    """A re-implementation: the original's outcome and the original's effect on the arguments, exactly."""
    if got.kind in ("timeout", "violation"):
        reason = "probe_timeout" if got.kind == "timeout" else "probe_violation"
        raise CheckFailed(reason, f"on input {shown} the transformed module: {got.detail}")
    if expected.state is None or got.state is None:
        report.skipped += 1
        report.notes.append(f"{shown}: the arguments cannot be copied; their state could not be compared")
        return False
    if expected.kind == "ok":
        if got.kind != "ok":
            raise CheckFailed("probe_mismatch", f"on input {shown} the transformed module "
                                                f"{'refused' if got.kind == 'declined' else 'raised'} "
                                                f"({got.detail:.300}) where the original returns "
                                                f"{expected.value!r:.200}")
        if not (_same(got.value, expected.value) or (normalised is not None and normalised.kind == "ok"
                                                     and _same(got.value, normalised.value)
                                                     and _same(normalised.state, expected.state))):
            raise CheckFailed("probe_mismatch", f"on input {shown} the transformed module returned "
                                                f"{got.value!r:.200} but the original returns {expected.value!r:.200}")
    elif got.kind == "ok":
        raise CheckFailed("probe_mismatch", f"on input {shown} the transformed module returned {got.value!r:.200} "
                                            f"where the original raises {expected.detail:.300}")
    elif got.kind == "raised" and got.value is not expected.value:
        raise CheckFailed("probe_mismatch", f"on input {shown} the transformed module raised {got.detail:.300} "
                                            f"where the original raises {expected.detail:.300}")
    elif got.kind == "declined":
        # Refused where the original raises: the runtime then runs the original itself.
        report.agreed += 1
        report.declined += 1
        return True
    if not _same(got.state, expected.state):
        raise CheckFailed("probe_state", f"on input {shown} the arguments after the call are "
                                         f"{_describe(*got.state)} but the original leaves them "
                                         f"{_describe(*expected.state)}")
    report.agreed += 1
    report.state_checked += 1
    return True
