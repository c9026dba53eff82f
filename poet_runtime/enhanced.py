"""The enhanced callable: what a module holds in place of a ``@poet`` function.

It is a plain function with the original's name, signature and docstring whose
body is one indirection: ``cell[0](args, kwargs)``. The cell first holds the
resolver (find or generate the version, load it); after that it holds a fast path
specialised for the loaded enhancement, or, if anything went wrong, a path that
calls the original function. Every failure that is ours ends in the original
function being called with the original arguments: a user's program never breaks
because of POET, and the reason is logged once and emitted as an event.
"""

from __future__ import annotations

import functools
import inspect
import logging
import sys
import threading
import weakref

from poet_runtime import events, records, runtime
from poet_runtime.errors import GenerationError, PoetError, PoetViolation
from poet_runtime.records import ERROR, FALLBACK, OK

log = logging.getLogger("poet_runtime")


def _phase_error_class():
    from poet_runtime.resources import load_facility

    load_facility()
    from poet_sandbox.errors import PhaseError

    return PhaseError


# The user's logic raised inside a sandbox: the original re-runs in the host to raise it
# for real. Not a failure of ours, so it is logged at INFO, not as a warning.
USER_ERROR_RERUN = "user_error_rerun"


def _reason_for(error) -> str:
    name = type(error).__name__
    if name == "PerceiveError":
        return "perceive_rejected"
    if name == "EnforceError":
        return "enforce_rejected"
    if name == "InternalError":
        return f"{error.phase}_error"
    if name == "UserLogicError":
        return USER_ERROR_RERUN
    return "sandbox_error"


class FunctionState:
    """Everything the runtime knows about one enhanced function."""

    def __init__(self, original, config):
        self.original = original
        self.config = config
        self.module = getattr(original, "__module__", None) or "__main__"
        self.qualname = original.__qualname__
        self.function_id = f"{self.module}:{self.qualname}"
        self.is_async = inspect.iscoroutinefunction(original)
        self.static_source: str | None = None
        self.static_lineno: int | None = None
        self.lock = threading.RLock()
        self.loaded = None
        self.version = None
        self.version_number: int | None = None
        self.backend_name: str | None = None
        self.policy = None
        self.disabled: tuple[str, str] | None = None
        self.stats = runtime.stats_for(self.function_id)
        self.warned: set[str] = set()
        self.background: threading.Thread | None = None
        # Set by poet_runtime.learn: (entry, result) -> True when no other listener needs the record.
        # When the policy has record_inputs, it is a recorder with ``takes_inputs = True`` that also
        # accepts (entry, result, args, kwargs); _emit_execution passes them only then.
        self.recorder = None
        self.records_inputs = False  # the policy lets calls' inputs be stored (set at resolution)
        self.verified = False  # the loaded version is the built-in generator's own code (resolve.verified_builtin)
        self.budget = None  # _InputBudget of a sandboxed backend's fast path
        self.fallback_details: dict = {}  # reason -> the last fallback's detail (the flusher writes it)
        self.fallbacks_watched = False
        self.cell = [self._first_call_async if self.is_async else self._first_call]
        runtime.states.add(self)  # a forked child makes its lock usable again (runtime._after_fork_in_child)

    # -- resolution ----------------------------------------------------------------------

    def spec(self):
        from poet_runtime.generate.spec import spec_from_function

        return spec_from_function(self.original, source=self.static_source, lineno=self.static_lineno,
                                  module=self.module)

    def rename(self, module: str, qualname: str) -> None:
        """Adopt the identity the import hook computed (before the first call)."""
        if (module, qualname) == (self.module, self.qualname) or self.loaded is not None:
            return
        old = self.function_id
        self.module, self.qualname = module, qualname
        self.function_id = f"{module}:{qualname}"
        self.stats = runtime.rename_stats(old, self.function_id)

    def resolve(self, *, generate: bool = True) -> None:
        """Find or make the version and load it; on success the fast path takes over."""
        from poet_runtime.resolve import effective_policy, ensure_version, load_version

        if self.static_source is None:
            self._note_unhooked()
        spec = self.spec()
        module = sys.modules.get(self.original.__module__)
        module_file = spec.filename or getattr(module, "__file__", None)
        self.module_file = module_file
        _reports.remember(self)  # its call counts reach reports.json at exit, whatever happens next
        self.policy = effective_policy(self.config, self.function_id)
        self.records_inputs = bool(getattr(self.policy, "record_inputs", False))
        version = ensure_version(spec, self.config, module_file=module_file, generate=generate)
        from poet_runtime.resolve import verified_builtin

        self.verified = verified_builtin(version, spec, self.config)
        loaded = load_version(version, function_id=self.function_id, original=self.original,
                              policy=self.policy, spec=spec, config=self.config, verified=self.verified)
        self.loaded, self.version, self.version_number = loaded, version, version.number
        self.backend_name = getattr(loaded, "backend", None)
        self.stats.version, self.stats.backend = version.number, self.backend_name
        self.disabled = None
        self.cell[0] = self._make_fast_async() if self.is_async else self._make_fast()
        events.emit("function.enhanced", function=self.function_id, version=version.number, backend=self.backend_name)
        try:  # events and learning: returns at once for a function without an objective
            from poet_runtime.learn import attach

            attach(self)
        except Exception:
            log.exception("poet_runtime: %s: events/learning could not start; the enhancement runs without it",
                          self.function_id)

    def _note_unhooked(self) -> None:
        """With the import hook on, a function it did not bind is worth one line in the log."""
        report = runtime.on_unhooked
        if report is not None:
            report(self.original.__module__)

    def ensure_loaded(self):
        """Resolve now (``poet_runtime.enhance``), whatever the generation mode; raises on failure."""
        with self.lock:
            if self.loaded is None:
                self.resolve()
        return self.version

    def _disable(self, error: BaseException) -> None:
        if isinstance(error, GenerationError):
            reason = error.reason
        elif isinstance(error, PoetViolation):  # the sandbox refused the code as it loaded
            reason = f"violation:{error.limit}"
        elif isinstance(error, PoetError):
            reason = "config_error"
        else:
            reason = "runtime_error"
        detail = f"{type(error).__name__}: {error}"
        self.disabled = (reason, detail)
        if self.is_async:
            async def call_original(args, kwargs):
                return await _marked_async(self._fallback_async, args, kwargs, reason, detail)
        else:
            def call_original(args, kwargs):
                return _marked(self._fallback, args, kwargs, reason, detail)
        self.cell[0] = call_original

    def _resolve_or_disable(self) -> None:
        from poet_runtime.settings import get_settings

        mode = get_settings().generate_mode
        try:
            self.resolve(generate=mode != "off")
        except Exception as error:  # anything at all: the original keeps working
            self._disable(error)

    def _start_background(self) -> None:
        if self.background is None:
            self.background = threading.Thread(
                target=self._resolve_or_disable, name=f"poet-generate-{self.qualname}", daemon=True
            )
            self.background.start()

    def _first_call(self, args, kwargs):
        from poet_runtime.settings import get_settings

        settings = get_settings()
        mode = settings.generate_mode
        # In background mode nothing heavy runs on the caller's thread: not even the policy
        # lookup (pydantic); the background thread meets a cold sandbox and compiles it.
        cold = mode != "background" and self._sandbox_cold()
        if mode == "background" or (mode == "sync" and settings.model) or cold:
            with self.lock:
                if self.cell[0] == self._first_call:
                    self._start_background()
            if mode == "sync" and not cold:
                self._wait_for_generation(settings.generation_timeout)
            if self.cell[0] == self._first_call:
                return _marked(self._fallback, args, kwargs, *self._pending_reason(cold),
                               warn=mode == "sync" and not cold)
        else:
            with self.lock:
                if self.cell[0] == self._first_call:
                    self._resolve_or_disable()
        return self.cell[0](args, kwargs)

    def _sandbox_cold(self) -> bool:
        """True when the policy names the WASM backend and its one-time compile (60-100 s) is ahead.

        Then no first call waits for it: calls run the original while a background
        thread compiles and resolves, as in background generation.
        """
        try:
            from poet_runtime.resolve import effective_policy

            if effective_policy(self.config, self.function_id).backend != "wasm":
                return False
            from poet_runtime.backends.wasm import ready
        except Exception:
            return False  # resolve() meets the same problem and reports it
        if ready():
            return False
        if "sandbox_warming" not in self.warned:
            self.warned.add("sandbox_warming")
            log.warning("poet_runtime: %s: compiling the WASM sandbox once (60-100 s); calls run the original "
                        "meanwhile ('python -m poet_runtime sandbox warmup' does it ahead of time)", self.function_id)
        return True

    @staticmethod
    def _pending_reason(cold: bool) -> tuple[str, str]:
        if cold:
            return "sandbox_warming", "the WASM sandbox is being compiled (once per machine)"
        return "generating", "the enhancement is being generated"

    def _wait_for_generation(self, timeout: float) -> None:
        """Sync mode with a model: wait until the generation started by the first call is done,
        but no longer than ``timeout`` after it started. Generation is not abandoned: its
        version takes over when it is stored; until then calls run the original."""
        import time

        with self.lock:
            deadline = getattr(self, "generation_deadline", None)
            if deadline is None:
                deadline = self.generation_deadline = time.monotonic() + timeout
        thread = self.background
        remaining = deadline - time.monotonic()
        if thread is not None and remaining > 0:
            thread.join(remaining)

    async def _first_call_async(self, args, kwargs):
        import asyncio

        from poet_runtime.settings import get_settings

        settings = get_settings()
        mode = settings.generate_mode
        # In background mode nothing heavy runs on the caller's thread: not even the policy
        # lookup (pydantic); the background thread meets a cold sandbox and compiles it.
        cold = mode != "background" and self._sandbox_cold()
        if mode == "background" or (mode == "sync" and settings.model) or cold:
            with self.lock:
                if self.cell[0] == self._first_call_async:
                    self._start_background()
            if mode == "sync" and not cold and self.cell[0] == self._first_call_async:
                # Waiting blocks: keep it off the event loop.
                await asyncio.to_thread(self._wait_for_generation, settings.generation_timeout)
            if self.cell[0] == self._first_call_async:
                return await _marked_async(self._fallback_async, args, kwargs, *self._pending_reason(cold),
                                           warn=mode == "sync" and not cold)
        else:
            # Generation may block: keep it off the event loop.
            def resolve():
                with self.lock:
                    if self.cell[0] == self._first_call_async:
                        self._resolve_or_disable()

            await asyncio.to_thread(resolve)
        return await self.cell[0](args, kwargs)

    # -- fallback ------------------------------------------------------------------------

    def _note_fallback(self, reason: str, detail: str, warn: bool, logic_ran: bool = False) -> None:
        """Record a call that did not complete enhanced: the original ran instead, or (with
        ``logic_ran``) the logic had run and the caller got its own result."""
        self.stats.fallbacks[reason] += 1
        self.fallback_details[reason] = detail
        records.last.set((self, records.next_number(), FALLBACK, reason, detail, None, None, None, None))
        if not self.fallbacks_watched:
            self._watch_fallbacks()
        if warn and reason not in self.warned:
            self.warned.add(reason)
            what = "the caller got the logic's own result" if logic_ran else "fell back to the original function"
            log.log(logging.INFO if reason == USER_ERROR_RERUN else logging.WARNING,
                    "poet_runtime: %s %s (%s): %s", self.function_id, what, reason, self._shown_detail(detail))
        if events._listeners:
            events.emit("function.fallback", function=self.function_id, version=self.version_number, reason=reason,
                        detail=self._shown_detail(detail), logic_ran=logic_ran)

    @property
    def redactor(self):
        """``poet_runtime.redact.redact`` when the function's domain says ``pii = "redact"``, else None:
        what is written about its calls (events, log lines, recorded inputs) goes through it first."""
        found = self.__dict__.get("_redactor", _UNSET)
        if found is _UNSET:
            found = None
            try:
                from poet_runtime.domains import get_domain

                if getattr(get_domain(self.config.domain), "pii", None) == "redact":
                    from poet_runtime.redact import redact as found
            except Exception as error:  # an unknown domain is reported where it is resolved
                log.debug("poet_runtime: %s: no redaction: %s", self.function_id, error)
            self._redactor = found
        return found

    def _shown_detail(self, detail):
        """A detail as logs and events may show it (PII redacted where the domain asks)."""
        redact = self.redactor
        return redact(detail) if redact is not None and detail is not None else detail

    def _watch_fallbacks(self) -> None:
        """Fallbacks are always recorded (issue 12, item 14): counted per reason here, written
        by the event flusher, whether or not events are on and whether or not a version loaded."""
        self.fallbacks_watched = True
        try:
            from poet_runtime.learn import sink

            sink.watch_fallbacks(self)
        except Exception as error:  # recording is never the program's concern
            log.debug("poet_runtime: %s: fallbacks not recorded: %s", self.function_id, error)

    # The record is written after the original ran, so that enhanced calls it made itself
    # do not leave theirs as the caller's last_execution().
    def _fallback(self, args, kwargs, reason: str, detail: str, warn: bool = True):
        try:
            return self.original(*args, **kwargs)
        finally:
            self._note_fallback(reason, detail, warn)

    async def _fallback_async(self, args, kwargs, reason: str, detail: str, warn: bool = True):
        try:
            return await self.original(*args, **kwargs)
        finally:
            self._note_fallback(reason, detail, warn)

    def _violation(self, violation: PoetViolation) -> tuple[str, str]:
        reason = f"violation:{violation.limit}"
        if self.policy is not None and getattr(self.policy, "on_violation", "fallback") == "raise":
            self._note_fallback(reason, violation.detail, warn=True)
            raise violation
        return reason, violation.detail

    # -- the fast paths ------------------------------------------------------------------
    #
    # Every failure is handled after its ``except`` block has ended: the original then
    # runs (or the user's exception is raised) with no POET exception as its context.

    def _make_fast(self):
        phases = getattr(self.loaded, "enhancement", None)
        if phases is not None and not phases.is_async:
            return self._make_inline(phases)
        call = self.loaded.call
        logic = self.original
        state = self
        budget = self.budget = _InputBudget.for_policy(self.policy)

        def run(args, kwargs):
            units = 0
            if budget is not None:
                units = budget.units(args, kwargs)
                if units > budget.smallest_refused:
                    refusal = budget.refusal(units)
                    if refusal is not None:  # decided before sending: milliseconds, not the wall limit
                        return state._input_refused(args, kwargs, refusal)
            failure = None
            try:
                outcome = call(logic, args, kwargs)
            except BaseException as error:
                failure = error
            if failure is not None:
                if budget is not None and isinstance(failure, PoetViolation):
                    budget.learn(units, failure.limit)
                reason, detail, outcome = state._outcome_of(failure)
                if reason is None:
                    raise outcome
                if outcome is _RUN_ORIGINAL and detail.startswith("perceive: TypeError"):
                    return state._original_for_error(args, kwargs, detail)
                if outcome is _RUN_ORIGINAL:
                    return state._fallback(args, kwargs, reason, detail)
                state._note_fallback(reason, detail, warn=True, logic_ran=True)
                if isinstance(outcome, _Raise):
                    raise outcome.error
                return outcome
            return state._succeeded(outcome, args, kwargs)

        def fast(args, kwargs):
            return _marked(run, args, kwargs)  # a round trip to a worker: the marker costs nothing here

        return fast

    def _make_fast_async(self):
        call = self.loaded.call_async
        logic = self.original
        state = self
        budget = self.budget = _InputBudget.for_policy(self.policy)

        async def run(args, kwargs):
            units = 0
            if budget is not None:
                units = budget.units(args, kwargs)
                if units > budget.smallest_refused:
                    refusal = budget.refusal(units)
                    if refusal is not None:
                        if state.policy is not None and getattr(state.policy, "on_violation", "") == "raise":
                            state._note_fallback("violation:input_size", refusal, warn=True)
                            raise PoetViolation(state.function_id, "input_size", refusal)
                        return await state._fallback_async(args, kwargs, "violation:input_size", refusal)
            failure = None
            try:
                outcome = await call(logic, args, kwargs)
            except BaseException as error:
                failure = error
            if failure is not None:
                if budget is not None and isinstance(failure, PoetViolation):
                    budget.learn(units, failure.limit)
                reason, detail, outcome = state._outcome_of(failure)
                if reason is None:
                    raise outcome
                if outcome is _RUN_ORIGINAL:
                    return await state._fallback_async(args, kwargs, reason, detail)
                state._note_fallback(reason, detail, warn=True, logic_ran=True)
                if isinstance(outcome, _Raise):
                    raise outcome.error
                return outcome
            return state._succeeded(outcome, args, kwargs)

        async def fast(args, kwargs):
            return await _marked_async(run, args, kwargs)

        return fast

    def _input_refused(self, args, kwargs, refusal: str):
        """An input the policy's limits cannot take: the documented fallback (or the violation,
        under ``on_violation = "raise"``) without sending it."""
        if self.policy is not None and getattr(self.policy, "on_violation", "fallback") == "raise":
            self._note_fallback("violation:input_size", refusal, warn=True)
            raise PoetViolation(self.function_id, "input_size", refusal)
        return self._fallback(args, kwargs, "violation:input_size", refusal)

    def _outcome_of(self, error):
        """What a failed call comes to: ``(None, None, exception)`` to raise it as the
        user's, or ``(reason, detail, what)`` for a fallback, where ``what`` is
        ``_RUN_ORIGINAL`` (nothing of the logic ran), a ``_Raise`` (the logic raised
        this) or the logic's own result (it ran; it must not run again)."""
        AfterLogic = _after_logic_class()
        if isinstance(error, AfterLogic):
            if error.error is not None:
                return error.reason, str(error), _Raise(error.error)
            if error.result is not AfterLogic.NOTHING:
                return error.reason, str(error), error.result
            return error.reason, str(error), _RUN_ORIGINAL
        if isinstance(error, (_phase_error_class(), PoetViolation)):
            reason, detail = self._refusal(error)  # raises when the policy says on_violation = "raise"
            after = getattr(error, "after_logic", None)  # a limit hit after the logic ran
            if isinstance(after, AfterLogic):
                if after.error is not None:
                    return reason, detail, _Raise(after.error)
                if after.result is not AfterLogic.NOTHING:
                    return reason, detail, after.result
            return reason, detail, _RUN_ORIGINAL
        own = self._users_own(error)
        if own is not None:
            self._note_error(own)
            return None, None, own
        # Neither a refusal nor the user's exception: the backend failed (a forged mark, a codec
        # error, an exception generated code raised on purpose). The caller never sees it.
        return "backend_error", _shown(f"{type(error).__name__}: {error}"), _RUN_ORIGINAL

    def _users_own(self, error):
        """The exception to raise to the caller for a backend's failure, or None when it is not theirs:
        the logic's own exception (found by the driver's mechanism: the user's code on its traceback,
        or on its cause's), an interruption (KeyboardInterrupt, a cancellation), the facility's
        timeout, the breaker's refusal carrying the logic's failure."""
        from poet_sandbox.driver import logic_exception

        if not isinstance(error, Exception):
            if isinstance(error, SystemExit) and logic_exception(error, self.original) is None:
                return None  # generated code cannot end the program
            return error
        own = logic_exception(error, self.original)
        if own is not None:
            return own
        if isinstance(error, TimeoutError) and (self.verified or _raised_by_facility(error)):
            return error
        if isinstance(error, _circuit_open_class()) and (
                self.verified or (error.__cause__ is not None
                                  and logic_exception(error.__cause__, self.original) is not None)):
            return error
        return None

    def _original_for_error(self, args, kwargs, detail: str):
        """Run the original for a call that does not bind; its exception is the caller's
        own error (recorded as such), and only if it returns is this a fallback."""
        failure = None
        try:
            result = self.original(*args, **kwargs)
        except BaseException as error:
            failure = error
        if failure is not None:
            self._note_error(failure)
            raise failure
        self._note_fallback("perceive_error", detail, warn=True)
        return result

    def _refusal(self, error) -> tuple[str, str]:
        """(reason, detail) of a phase refusal or a violation; raises when the policy says so."""
        if isinstance(error, PoetViolation):
            return self._violation(error)
        return _reason_for(error), str(error)

    def _succeeded(self, outcome, args, kwargs):
        """Bookkeeping of a completed call on a sandboxed backend (the inline path does it in line).

        What a backend hands back is checked for shape: marks that are not ordered integers
        are dropped (no phase times), notes that are not (kind, field, detail) triples too;
        an outcome of another shape is a fallback. Bookkeeping never fails the call.
        """
        if type(outcome) is not tuple or len(outcome) != 6:
            return self._fallback(args, kwargs, "backend_error",
                                  f"the backend answered {type(outcome).__name__}, not an outcome")
        result, t0, t1, t2, t3, notes = outcome
        if not (type(t0) is int and type(t1) is int and type(t2) is int and type(t3) is int
                and 0 <= t0 <= t1 <= t2 <= t3 < _MARK_LIMIT):
            t0 = t1 = t2 = t3 = None
        if notes is not None and not _well_formed_notes(notes):
            self._warn_once("malformed_notes", "the backend's notes were not (kind, field, detail) triples; dropped")
            notes = None
        self.stats.enhanced_calls += 1
        entry = (self, records.next_number(), OK, None, notes, t0, t1, t2, t3)
        records.last.set(entry)
        try:
            if notes:
                self._noted(notes, entry[1])
            if events._listeners:
                self._emit_execution(entry, result, args, kwargs)
        except Exception as error:  # recording is ours: the caller gets the result regardless
            self._warn_once("recording_error", f"recording the call failed: {type(error).__name__}: {error}")
        return result

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self.warned:
            self.warned.add(key)
            log.warning("poet_runtime: %s: %s", self.function_id, message)

    def _noted(self, notes, number: int | None = None) -> None:
        """Count what the checks reported, and say it once per kind and field.

        A plain kind ("mismatch", "repair", "retry") is emitted as ``function.<kind>``; a kind
        with a dot (``domain.advisory``, ``domain.evidence``: what a domain's generated code
        reports) is emitted as that exact type, with the execution's id when the call
        completed (``number``), and the event sink writes it to the journal.
        """
        try:
            self._count_notes(notes, number)
        except Exception as error:  # our bookkeeping: a call (or its fallback) never fails for it
            self._warn_once("notes_error", f"recording the call's notes failed: {type(error).__name__}: {error}")

    def _count_notes(self, notes, number: int | None) -> None:
        counts = self.stats.notes
        _reports.remember(self)
        redact = self.redactor
        for kind, field, detail in notes:
            if redact is not None:
                detail = redact(detail)
            key = (kind, field if type(field) is str else repr(field))  # generated code may note any value
            counts[key] += 1
            if counts[key] == 1 and kind != "retry":
                log.info("poet_runtime: %s: %s of %s: %s", self.function_id, kind, field, detail)
            if events._listeners:
                if "." in kind:
                    events.emit(kind, function=self.function_id, version=self.version_number, field=field,
                                detail=detail,
                                execution_id=None if number is None else records.execution_id(number))
                else:
                    events.emit(f"function.{kind}", function=self.function_id, version=self.version_number,
                                field=field, detail=detail)

    def _make_inline(self, phases):
        """The in-process fast path: the driver's steps inlined, so a call pays for no extra frames.

        Same outcomes as ``poet_sandbox.driver.Enhancement.call``; the hot path is one
        straight line of three phase calls, four clock reads, two truth tests of the
        notes list and one context-variable set.
        """
        from poet_sandbox import validate
        from poet_sandbox.driver import InternalError, logic_exception, rebind

        perceive, operate, enforce = phases.perceive, phases.operate_prime, phases.enforce
        train = phases.train
        # Our own (verified) code calls the logic once and fails only through it; other code
        # running in-process gets a logic that remembers it returned, so that a failure after
        # it never runs the user's code a second time.
        logic = self.original if self.verified else _Remembering(self.original)
        clock = records.clock
        stats = self.stats
        set_last = records.last.set
        get_last = records.last.get
        next_number = records.next_number
        Open, settle, quiet_calls = records.Open, records.settle, records.QUIET_CALLS
        quiet = 0  # calls in a row that made no inner enhanced call (see records: nested calls)
        marking = True  # until quiet_calls such calls in a row
        listeners = events._listeners
        emit_execution = self._emit_execution
        noted = self._noted
        notes_list, take_notes = validate.NOTES, validate.take_notes
        PhaseError = _phase_error_class()
        CircuitOpenError = _circuit_open_class()
        verified = self.verified
        state = self
        # What records a completed call, looked up again only when the learning side swaps the
        # train phase (``sink.watch_train``) or the recorder (``learn.attach`` runs after this):
        # a recorder with ``inline`` takes the call's (args, kwargs) as the logic got them from
        # here, so the watched train's hand-over through a thread-local is skipped.
        seen_trainer = seen_recorder = _UNSET
        run_train = inline_record = None
        handing = inputs_too = False
        bus_wants = None  # sink.bus_wants_execution, once the sink is loaded (a function it does not record)

        def unrecorded(entry, checked):
            """No recorder: the bus gets the record, unless the sink alone listens and ignores this function."""
            nonlocal bus_wants
            sink = sys.modules.get("poet_runtime.learn.sink")
            if sink is not None:
                bus_wants = sink.bus_wants_execution
                if not bus_wants(state.function_id):
                    return
            events.emit("function.execution", record=records.build(entry), result=checked)

        def refresh(trainer, recorder):
            nonlocal seen_trainer, seen_recorder, run_train, inline_record, handing, inputs_too
            inline_record = getattr(recorder, "inline", None) if recorder is not None else None
            unwatched = getattr(trainer, "poet_train", None) if trainer is not None else None
            handing = inline_record is not None and unwatched is not None
            run_train = unwatched if handing else trainer
            inputs_too = bool(state.records_inputs and getattr(recorder, "takes_inputs", False))
            seen_trainer, seen_recorder = trainer, recorder

        def before_logic(error, phase, args, kwargs):
            """Perceive failed: the original runs once, as if POET were not there."""
            if not isinstance(error, Exception) and not isinstance(error, SystemExit):
                raise error  # an interruption; a SystemExit of generated code cannot end the program
            if isinstance(error, TypeError) and phase == "perceive" and error.__traceback__.tb_next is None:
                # The call itself does not bind (wrong arguments): the caller's error, which
                # the original raises as it would without POET.
                return state._original_for_error(args, kwargs, f"perceive: TypeError: {error}")
            if not isinstance(error, PhaseError):
                error = InternalError(phase, error)
            return state._fallback(args, kwargs, _reason_for(error), str(error))

        def operate_failed(error, args, kwargs):
            if not isinstance(error, Exception) and (not isinstance(error, SystemExit)
                                                     or logic_exception(error, logic) is not None):
                state._note_error(error)  # KeyboardInterrupt, the logic's SystemExit: the caller's to see
                raise error
            # The breaker's refusal carries the logic's last failure as its cause; one generated code
            # raises on purpose (not verified as ours, no such cause) is a failure of that code.
            circuit_open = isinstance(error, CircuitOpenError) and (
                verified or (error.__cause__ is not None and logic_exception(error.__cause__, logic) is not None))
            own = None if circuit_open or not isinstance(error, Exception) else logic_exception(error, logic)
            timeout = isinstance(error, TimeoutError) and (verified or _raised_by_facility(error))
            if own is not None or circuit_open or timeout:
                own = own if own is not None else error
                state._note_error(own)
                raise own
            if getattr(logic, "returned", False):
                # Generated code failed after the logic returned: its result is the answer.
                state._note_fallback("operate_prime_error", f"{type(error).__name__}: {error}", warn=True,
                                     logic_ran=True)
                return logic.result
            return before_logic(error, "operate_prime", args, kwargs)

        def enforce_failed(error, result):
            """Enforce refused or failed after the logic ran: its own result is the answer."""
            if not isinstance(error, Exception) and not isinstance(error, SystemExit):
                raise error  # an interruption; a SystemExit of generated code cannot end the program
            if isinstance(error, PhaseError):
                reason = "enforce_rejected" if getattr(error, "phase", "") == "enforce" else _reason_for(error)
            else:
                reason = "enforce_error"
            state._note_fallback(reason, f"{type(error).__name__}: {error}", warn=True, logic_ran=True)
            return result

        def unmarked_end(entry, before):
            """The end of a call that was not marked, off the plain path: it is an inner call
            (its caller collects it), or it made inner calls (its next calls are marked)."""
            nonlocal quiet, marking
            if get_last() is not before:
                quiet, marking = 0, True  # these inner calls were lost; the next ones are not
            set_last(entry)
            settle(before, None)

        def fast(args, kwargs):
            nonlocal quiet, marking
            before = get_last()
            if marking:
                marker = Open(before)
                set_last(marker)
            else:
                marker = None
            t0 = clock()
            failure = None
            try:
                repairs = perceive(*args, **kwargs) if kwargs else perceive(*args)
                if repairs:
                    call_args, call_kwargs = rebind(perceive, args, kwargs, repairs)
                else:
                    call_args, call_kwargs = args, kwargs
            except BaseException as error:
                failure = error
            notes = take_notes() if notes_list else None
            if failure is not None:
                if notes:
                    noted(notes)
                try:
                    return before_logic(failure, "perceive", args, kwargs)
                finally:
                    settle(before, marker)
            t1 = clock()
            try:
                result = operate(logic, call_args, call_kwargs)
            except BaseException as error:
                failure = error
            if failure is not None:
                more = take_notes() if notes_list else None  # retries: this call's, not the next one's
                if notes or more:
                    noted((notes or ()) + (more or ()))
                try:
                    return operate_failed(failure, args, kwargs)
                finally:
                    settle(before, marker)
            t2 = clock()
            try:
                checked = enforce(result)
            except BaseException as error:
                failure = error
            if failure is not None:
                more = take_notes() if notes_list else None
                if notes or more:
                    noted((notes or ()) + (more or ()))
                try:
                    return enforce_failed(failure, result)
                finally:
                    settle(before, marker)
            recorder = state.recorder
            if train is not None:
                trainer = phases.train
                if trainer is not seen_trainer or recorder is not seen_recorder:
                    refresh(trainer, recorder)
                call = (call_args, call_kwargs)
                try:  # train never changes a result or fails a call
                    run_train(call, checked, {"duration_ms": (t2 - t1) / 1e6})
                except Exception as error:
                    state._train_failed(error)
                if not handing:
                    call = None
            else:
                call = None
                if recorder is not seen_recorder:
                    refresh(None, recorder)
            t3 = clock()
            if notes_list:
                more = take_notes()
                notes = more if notes is None else (notes + more if more else notes)
            stats.enhanced_calls += 1
            entry = (state, next_number(), OK, None, notes, t0, t1, t2, t3)
            if marker is None:
                if get_last() is before and type(before) is tuple:
                    set_last(entry)  # the plain path: no call around it, none inside it
                else:
                    unmarked_end(entry, before)
            else:
                set_last(entry)
                if marker.children:
                    quiet = 0
                else:
                    quiet += 1
                    marking = quiet < quiet_calls
                settle(before, marker)
            if notes:
                noted(notes, entry[1])
            if listeners:
                try:  # recording is ours: the caller gets the result regardless (a try costs nothing until it raises)
                    if inline_record is not None:
                        if not (inline_record(entry, checked, args, kwargs, call) if inputs_too
                                else inline_record(entry, checked, None, None, call)):
                            events.emit("function.execution", record=records.build(entry), result=checked)
                    elif recorder is not None:
                        emit_execution(entry, checked, args, kwargs)
                    elif bus_wants is None:
                        unrecorded(entry, checked)
                    elif bus_wants(state.function_id):
                        events.emit("function.execution", record=records.build(entry), result=checked)
                except Exception as error:
                    state._warn_once("recording_error",
                                     f"recording the call failed: {type(error).__name__}: {error}")
            return checked

        return fast

    def _train_failed(self, error: Exception) -> None:
        """Train never changes a result or fails a call; its failure is logged once."""
        if "train_error" not in self.warned:
            self.warned.add("train_error")
            log.warning("poet_runtime: %s: train() failed: %s: %s", self.function_id, type(error).__name__, error)

    def _note_error(self, error: BaseException) -> None:
        self.stats.errors += 1
        records.last.set((self, records.next_number(), ERROR, type(error).__name__, str(error),
                          None, None, None, None))

    def _emit_execution(self, entry, result, args=None, kwargs=None) -> None:
        """Hand a completed call to the event sink (the recorder) and any other listener.

        Only reached when someone listens, so the call's inputs ride along at no cost to
        the plain path; they go on only where the policy allows storing them and the
        recorder asks for them.
        """
        recorder = self.recorder
        if recorder is not None:
            if self.records_inputs and getattr(recorder, "takes_inputs", False):
                if recorder(entry, result, args, kwargs):
                    return
            elif recorder(entry, result):
                return  # the durable event sink took it and no other listener wants a record
        else:
            sink = sys.modules.get("poet_runtime.learn.sink")
            if sink is not None and not sink.bus_wants_execution(self.function_id):
                return  # only the sink listens, and it does not record this function: no record to build
        # The result rides along for listeners that keep outputs (learning, size-capped there).
        events.emit("function.execution", record=records.build(entry), result=result)


class _InputBudget:
    """Whether a call's input can cross into the sandbox within the policy's limits, decided
    before anything is encoded or sent.

    ``units`` counts the values an input holds (sampling big containers: microseconds for a
    million floats); one unit costs about what the wire's encode and decode of a float cost,
    measured once per process (``_unit_ns``). An input whose crossing alone would take more
    than the policy's wall time (``CROSSING_FACTOR`` times that measure), or whose values would
    not fit its memory, cannot fit: it is refused at once
    (``violation:input_size``). And when a call is killed at a limit,
    inputs at least that size are refused from then on, until the inputs change shape
    (smaller ones are sent again): the same refusal is never paid for twice.
    """

    MIN_UNITS = 10_000  # below this an input never explains a limit being hit
    BYTES_PER_UNIT = 64  # a decoded float in the worker, the list slot and the encoded text around it
    # A real crossing (checks, pipes, both sides' JSON) takes about twice the wire's encode and
    # decode that ``_unit_ns`` measures (a million floats: 3-4 s where that measure says 1.3-2 s).
    CROSSING_FACTOR = 2.0

    def __init__(self, time_ms: float | None, memory_mb: float | None):
        self.time_ms = time_ms
        self.memory_mb = memory_mb
        self.smallest_refused = self.MIN_UNITS  # inputs smaller than this are sent without more checks
        self.killed_at: int | None = None  # the smallest input (units) a limit killed
        self.killed_limit = ""

    @classmethod
    def for_policy(cls, policy):
        limits = getattr(policy, "limits", None)
        if limits is None:
            return None
        times = [v for v in (getattr(limits, "wall_ms", None), getattr(limits, "cpu_ms", None)) if v]
        memory = getattr(limits, "memory_mb", None)
        if not times and not memory:
            return None
        wall = getattr(limits, "wall_ms", None)
        # The crossing is paid on both sides (the host encodes, the worker decodes): the wall limit is
        # what it must fit; the worker's CPU limit counts only its half.
        return cls(wall if wall else (2 * min(times) if times else None), memory)

    @staticmethod
    def units(args, kwargs) -> int:
        total = _units(args, 0)
        if kwargs:
            total += _units(kwargs, 0)
        return total

    def refusal(self, units: int) -> str | None:
        if self.killed_at is not None and units >= self.killed_at:
            return (f"an input of about {units} values; one of {self.killed_at} was stopped at {self.killed_limit} "
                    f"(inputs at least that large are not sent)")
        if self.memory_mb and units * self.BYTES_PER_UNIT > self.memory_mb * 1024 * 1024:
            return f"an input of about {units} values cannot fit the policy's memory_mb = {self.memory_mb:g}"
        if self.time_ms:
            crossing_ms = self.CROSSING_FACTOR * units * _unit_ns() / 1e6
            if crossing_ms > self.time_ms:
                return (f"an input of about {units} values takes about {crossing_ms:.0f} ms to cross into the "
                        f"sandbox, more than the policy's {self.time_ms:g} ms")
        return None

    def learn(self, units: int, limit: str) -> None:
        """A call was stopped at ``limit``: inputs at least as large go straight to the fallback."""
        if limit in ("wall_ms", "cpu_ms", "memory_mb", "fuel") and units >= self.MIN_UNITS:
            if self.killed_at is None or units < self.killed_at:
                self.killed_at, self.killed_limit = units, limit
                self.smallest_refused = min(self.smallest_refused, units - 1)


_SCALAR_TYPES = frozenset((int, float, bool, type(None)))
_SAMPLE = 8


def _units(value, depth: int) -> int:
    """About how many values ``value`` holds (a container's from a sample of its items)."""
    kind = type(value)
    if kind in _SCALAR_TYPES:
        return 1
    if kind is str or kind is bytes or kind is bytearray:
        return 1 + len(value) // 16
    if kind is list or kind is tuple:
        n = len(value)
        if n <= 2 * _SAMPLE:
            return 1 + sum(_units(item, depth + 1) for item in value) if depth < 6 else 1 + n
        if depth >= 6:
            return 1 + n
        sample = value[:_SAMPLE] + value[-_SAMPLE:]
        return 1 + n * sum(_units(item, depth + 1) for item in sample) // len(sample)
    if kind is dict or kind is set or kind is frozenset:
        n = len(value)
        if n == 0 or depth >= 6:
            return 1 + n
        import itertools

        items = value.items() if kind is dict else value
        sample = list(itertools.islice(items, 2 * _SAMPLE))
        each = sum(_units(item, depth + 1) for item in sample)
        return 1 + n * each // len(sample)
    size = getattr(value, "size", None)  # an array-like (numpy) left in the host: its element count
    return 1 + size if type(size) is int and size > 0 else 1


_unit_cost: list = []


def _unit_ns() -> float:
    """Nanoseconds the wire's encode and decode of one float take here (measured once, ~5 ms)."""
    if not _unit_cost:
        import json
        import time

        try:
            from poet_runtime.resources import load_facility

            load_facility()
            from poet_sandbox import wire

            sample = [i * 1.000001 for i in range(1000)]
            best = float("inf")
            for _ in range(3):  # the fastest of three: another thread or process may have had the CPU
                started = time.perf_counter_ns()
                wire.decode(json.loads(json.dumps(wire.encode(sample))))
                best = min(best, time.perf_counter_ns() - started)
            _unit_cost.append(max(best / len(sample), 50.0))
        except Exception:
            _unit_cost.append(1000.0)
    return _unit_cost[0]


class _Reports:
    """Adds each function's report counts to its store at exit, so that ``status``
    shows them across runs and processes (``FunctionStore.add_reports``)."""

    def __init__(self):
        self.states = []
        self.remembered = weakref.WeakSet()
        self.lock = threading.Lock()
        self.registered = False

    def remember(self, state) -> None:
        if state in self.remembered:  # once per function (a cheap test on the notes path)
            return
        with self.lock:
            if state in self.remembered:
                return
            self.remembered.add(state)
            self.states.append(state)
            if not self.registered:
                import atexit

                atexit.register(self.flush)
                self.registered = True

    def flush(self) -> None:
        from poet_runtime.store import FunctionStore

        with self.lock:
            states, self.states = self.states, []
            self.remembered = weakref.WeakSet()
        for state in states:
            try:
                stats = state.stats
                counts = dict(stats.notes)
                # How many calls ran enhanced, and why the others did not (status's "calls").
                counts.update({("calls", "enhanced"): stats.enhanced_calls, ("calls", "errors"): stats.errors})
                counts.update({("fallback", str(reason)): n for reason, n in stats.fallbacks.items()})
                counts = {key: n for key, n in counts.items() if n}
                if not counts:
                    continue
                version = state.version
                if version is not None:
                    FunctionStore(version.path.parent, state.function_id).add_reports(counts)
                elif getattr(state, "module_file", None):  # never loaded: its folder, found as resolve finds it
                    FunctionStore.open(state.module, state.qualname, state.module_file).add_reports(counts)
            except Exception as error:  # never the program's concern at exit
                log.debug("poet_runtime: %s: reports not saved: %s", state.function_id, error)


_reports = _Reports()


def _reports_after_fork_in_child() -> None:
    """The parent adds its own counts at its exit; the child starts from none (its stats are zeroed)."""
    _reports.lock._at_fork_reinit()
    _reports.states = []
    _reports.remembered = weakref.WeakSet()


if hasattr(__import__("os"), "register_at_fork"):
    __import__("os").register_at_fork(after_in_child=_reports_after_fork_in_child)


class _Remembering:
    """The logic, for generated code not verified as ours: remembers that it returned."""

    __slots__ = ("logic", "returned", "result", "__code__")

    def __init__(self, logic):
        self.logic = logic
        self.__code__ = logic.__code__  # the driver finds the logic's exceptions by its code
        self.returned = False
        self.result = None

    def __call__(self, /, *args, **kwargs):
        self.returned = False
        result = self.logic(*args, **kwargs)
        self.result, self.returned = result, True
        return result
_RUN_ORIGINAL = object()


class _Raise:
    """A fallback outcome: raise the logic's own exception (it already ran)."""

    __slots__ = ("error",)

    def __init__(self, error):
        self.error = error


def _after_logic_class():
    from poet_sandbox.driver import AfterLogic

    return AfterLogic


def _circuit_open_class():
    from poet_sandbox.errors import CircuitOpenError

    return CircuitOpenError


_UNSET = object()
_MARK_LIMIT = 1 << 62  # perf_counter_ns marks: anything near 2**63 is forged (and overflows packing)


def _well_formed_notes(notes) -> bool:
    return type(notes) is tuple and all(type(note) is tuple and len(note) == 3 and type(note[0]) is str
                                        and type(note[1]) is str for note in notes)


def _raised_by_facility(error: BaseException) -> bool:
    """True when the innermost frame that raised ``error`` is the facility's timeout code
    (``poet_sandbox.timeouts``), not generated code raising a TimeoutError of its own."""
    tb = error.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code.co_filename.replace("\\", "/").endswith("poet_sandbox/timeouts.py")


def _shown(text: str) -> str:
    """Text that came from a backend or generated code, for a log line and an event: one line, bounded."""
    from poet_runtime.safe_text import visible

    return visible(text[:2000], allow_newlines=False)


_NO_KEYWORDS: dict = {}
_getframe = sys._getframe


def _poet_file_prefixes() -> tuple[str, ...]:
    import os

    from poet_runtime.resources import sandbox_dir

    here = os.path.dirname(os.path.abspath(__file__)) + os.sep
    prefixes = [here, "<poet_runtime wrapper"]
    try:
        prefixes.append(os.fspath(sandbox_dir()) + os.sep)
    except Exception:
        pass
    return tuple(prefixes)


_POET_FILES: tuple[str, ...] | None = None


def _is_poet_frame(code) -> bool:
    filename = code.co_filename
    return (filename.startswith(_POET_FILES) or filename in runtime.generated_files
            or code in runtime.wrapper_codes)


def _clean(error: BaseException) -> BaseException:
    """The user's exception as it left their code: the frames of POET's call path
    (wrappers, the fast path, generated phases, the facility) are taken out of its
    traceback wherever they are, so a printed traceback shows one line of ours: the
    wrapper the caller called, whose ``raise`` puts it back on top."""
    global _POET_FILES
    if _POET_FILES is None:
        _POET_FILES = _poet_file_prefixes()
    tb = error.__traceback__
    while tb is not None and _is_poet_frame(tb.tb_frame.f_code):
        tb = tb.tb_next
    kept = tb
    while kept is not None:
        following = kept.tb_next
        while following is not None and _is_poet_frame(following.tb_frame.f_code):
            following = following.tb_next
        if following is not kept.tb_next:
            kept.tb_next = following
        kept = following
    return error.with_traceback(tb)


def _innermost_code(original):
    """The code whose frame calls the function by its own name when it recurses
    (through decorators below ``@poet``, the innermost wrapped function)."""
    target = inspect.unwrap(original) if hasattr(original, "__wrapped__") else original
    return getattr(target, "__code__", original.__code__)


_INLINE_SCOPES = frozenset({"<genexpr>", "<listcomp>", "<dictcomp>", "<setcomp>"})


def _own_codes(code) -> tuple:
    """``code`` and the comprehensions inside it: a call from any of them is recursion."""
    found = [code]
    stack = [code]
    while stack:
        for const in stack.pop().co_consts:
            if isinstance(const, type(code)) and const.co_name in _INLINE_SCOPES:
                found.append(const)
                stack.append(const)
    return tuple(found)


def _relocated(source: str, filename: str, lineno: int):
    """Compile ``source`` so that every instruction reports ``filename:lineno`` (the
    function's first line, its ``@poet``): the wrapper's one traceback line points at
    the decorator, and ``inspect.getsourcefile`` names the user's file."""
    import ast
    import linecache

    from poet_runtime.generate.parsing import compile_tree, parse

    tree = parse(source)
    width = len(linecache.getline(filename, lineno).rstrip("\n")) or 1
    for node in ast.walk(tree):
        if hasattr(node, "lineno"):
            node.lineno = node.end_lineno = lineno
            node.col_offset, node.end_col_offset = 0, width
    return compile_tree(tree, filename)


def _marked(run, *args, **kwargs):
    """Run a call path that is not the inline fast path with its call marked as under way, so
    that the enhanced calls made inside it become its children (``records.settle``)."""
    before = records.last.get()
    marker = records.Open(before)
    records.last.set(marker)
    try:
        return run(*args, **kwargs)
    finally:
        records.settle(before, marker)


async def _marked_async(run, *args, **kwargs):
    before = records.last.get()
    marker = records.Open(before)
    records.last.set(marker)
    try:
        return await run(*args, **kwargs)
    finally:
        records.settle(before, marker)


def _wrapper(original, state):
    """The enhanced callable: a function with the original's signature shape.

    ``def f(a, b)`` (no defaults, no */**) gets ``def f(a, b)`` and passes a tuple
    (no ``*args`` packing: a good part of the per-call overhead), anything else
    ``(*args, **kwargs)``. Every form: a call from the function's own body (recursion
    through its name) goes straight to the logic; any exception leaves with POET's
    frames taken out of its traceback. Its globals are the user's module's, and its
    code reports the user's file at the function's first line.
    """
    import types

    code = original.__code__
    kind = ("generator" if inspect.isgeneratorfunction(original)
            else "async" if state.is_async else "sync")
    names = code.co_varnames[: code.co_argcount]
    reserved = ("cell", "empty", "original", "own", "getframe", "clean", "stream", "error", "last", "mine",
                "result")
    positional = (kind == "sync" and not (code.co_flags & (inspect.CO_VARARGS | inspect.CO_VARKEYWORDS))
                  and not code.co_kwonlyargcount and not code.co_posonlyargcount and not original.__defaults__
                  and all(name.isidentifier() and name not in reserved for name in names))
    if positional:
        params = ", ".join(names)
        call_args = f"({params}{',' if len(names) == 1 else ''}), empty"
        direct = f"original({params})"
    else:
        params, call_args, direct = "*args, **kwargs", "args, kwargs", "original(*args, **kwargs)"
    own = _own_codes(_innermost_code(original))
    test = "getframe(1).f_code is own" if len(own) == 1 else "getframe(1).f_code in own"
    # Only a body that names the function (a global, or an attribute: self.method) can call it
    # again by that name: the others pay nothing for the recursion test.
    recursive = any(original.__name__ in code_.co_names for code_ in own)
    if kind == "async":
        head, direct, body = "async def", f"await {direct}", f"return await cell[0]({call_args})"
    elif kind == "generator":
        # Stays a generator function; the body runs at the first next(), as the original's does.
        head, direct, body = "def", f"(yield from {direct})", f"stream = cell[0]({call_args})"
    else:
        head, body = "def", f"return cell[0]({call_args})"
    lines = [
        "def make(cell, empty, original, own, getframe, clean, last):",
        f"    {head} enhanced({params}):",
        *([f"        if {test}:  # recursion: straight to the logic",
           f"            return {direct}"] if recursive else []),
        "        try:",
        f"            {body}",
        "        except BaseException as error:",
        "            raise clean(error)",
    ]
    if kind == "generator":
        # The items come after the call's record was set: the inner calls the body makes as it is
        # iterated would be the caller's last one. Once it is used up (or raised), the generator's
        # own call is last again, as for any call (closed early, e.g. by the collector, it is not:
        # that may happen in another thread).
        lines += ["        mine = last.get()",
                  "        try:",
                  "            result = yield from stream",
                  "        except GeneratorExit:",
                  "            raise",
                  "        except BaseException:",
                  "            last.set(mine)",
                  "            raise",
                  "        last.set(mine)",
                  "        return result"]
    lines.append("    return enhanced")
    filename = code.co_filename or f"<poet_runtime wrapper of {original.__qualname__}>"
    namespace: dict = {}
    exec(_relocated("\n".join(lines) + "\n", filename, code.co_firstlineno or 1), namespace)
    made = namespace["make"](state.cell, _NO_KEYWORDS, original, own[0] if len(own) == 1 else own, _getframe, _clean,
                             records.last)
    wrapper_code = made.__code__.replace(co_name=original.__name__,
                                         co_qualname=f"<poet wrapper of {original.__qualname__}>")
    runtime.wrapper_codes.add(wrapper_code)
    enhanced = types.FunctionType(wrapper_code, original.__globals__, original.__name__, None, made.__closure__)
    # Introspection answers as for the original (the wrapper has no parameters they would apply to).
    enhanced.__defaults__ = None if positional else original.__defaults__
    enhanced.__kwdefaults__ = original.__kwdefaults__
    return enhanced


def enhance_function(original, config):
    """Build the enhanced callable for ``original`` (the decorator calls this when the runtime is on)."""
    state = FunctionState(original, config)
    enhanced = _wrapper(original, state)
    functools.update_wrapper(enhanced, original)
    enhanced.__poet__ = state
    try:  # the source as imported: a later edit of the file must not change what runs
        from poet_runtime.generate.sources import snapshot_source

        snapshot_source(original)
    except ImportError:
        pass

    def feedback(**fields):
        """Feedback on this function's most recent execution: see ``poet_runtime.feedback``."""
        from poet_runtime.learn.feedback import feedback_for

        return feedback_for(state, **fields)

    enhanced.feedback = feedback
    return enhanced


state_of = runtime.state_of  # (lives below the call path; kept here for older imports)


def bind(obj, *, module: str, qualname: str, source: str, lineno: int):
    """Give an enhanced callable its identity from the import hook, so no source lookup is needed."""
    state = state_of(obj)
    if state is not None:
        state.static_source = source
        state.static_lineno = lineno
        state.rename(module, qualname)
    return obj
