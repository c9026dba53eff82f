"""The host side of one restricted enhancement that runs in worker processes.

Why separate from ``restricted.py``: this is the part that turns worker replies
(plain JSON) back into the outcomes of backends/base.py, and that owns the
limits' host-side half: the wall-clock kill, the reply size cap, and replacing a
worker that died. Each worker loads the enhancement the first time it serves it
(code and params travel as JSON; no user globals: the module does not contain the
user's logic), and is re-configured when ``configure`` changed the params since.

One call is a conversation with one worker (contract 2, ``backends/crossing.py``):
the call line carries the arguments (data, or a reference for a value that stays
here: a user object, a Counter, an array); whenever the generated ``operate_prime``
calls the logic, the worker asks for it, and the user's own function runs here, in
the caller's thread (``call_async``: in the caller's task), on the caller's own
objects; its answer goes back, until the worker's final reply. ``wall_ms`` counts
the worker's time only: its clock stops while the logic runs (and the worker's CPU
timer does not run while it waits). An exception from the logic that is not an
``Exception`` (KeyboardInterrupt) reaches the caller, and the worker, left in the
middle of the call, is retired.

Module-level state of the generated code (a breaker, a learner) lives per worker
process; a worker that is retired takes its copy with it.

What a worker answers is untrusted: results and arguments for the logic are checked
data (``HostCall.resolve``/``result``), time marks and notes are checked
(``HostCall.marks``/``notes``), every detail string is shown visibly
(``safe_text.visible``), and an exception generated code raised by itself (its
breaker's ``CircuitOpenError``, a ``TimeoutError``) is a fallback, never the caller's.
Loading counts against the policy: it has ``wall_ms`` to answer, as a call has.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
import time

from poet_runtime.backends.base import LoadRequest
from poet_runtime.backends.crossing import HostCall, check_value
from poet_runtime.backends.restricted import code_key, harness_module
from poet_runtime.backends.workers import DEFAULT_MAX_REPLY, ReplyTimeout, ReplyTooLarge, SendFailed, WorkerDied
from poet_runtime.errors import PoetViolation
from poet_runtime.resources import load_facility
from poet_runtime.safe_text import visible

_facility = load_facility()
PhaseError = _facility.PhaseError
from poet_sandbox.driver import AfterLogic  # noqa: E402

# A load (compile + module body + configure) has the policy's wall_ms, like a call; only a
# policy without wall_ms gets this (the worker bounds the module body by cpu/memory then).
LOAD_TIMEOUT_S = 10.0
REPLY_OVERHEAD = 64 * 1024  # protocol framing on top of max_output_kb
# A logic request carries the arguments the logic gets (repaired values as data; the
# caller's own are tokens): data on its way to the user's code, not output.
LOGIC_REQUEST_MAX = 32 * 1024 * 1024


class WorkerEnhancement:
    backend = "restricted"

    def __init__(self, pool, request: LoadRequest):
        self.pool = pool
        self.function_id = request.function_id
        self.limits = limits = request.limits
        self.codec = codec = harness_module("worker_codec")
        self.key = code_key(request)
        self.params = dict(request.params or {})
        self.generation = 0
        self._lock = threading.Lock()
        self.limit_fields = {"cpu_ms": limits.cpu_ms, "memory_mb": limits.memory_mb,
                             "max_output_kb": limits.max_output_kb}
        self.load_message = {
            "op": "load", "key": self.key, "code": request.code, "filename": request.filename,
            "params": self.params, "imports": list(limits.imports), "builtins": list(limits.builtins),
            "module": f"poet_enhanced.{request.function_id}", "wall_ms": limits.wall_ms, **self.limit_fields,
        }
        self.max_reply = (limits.max_output_kb * 1024 + REPLY_OVERHEAD) if limits.max_output_kb else DEFAULT_MAX_REPLY
        self.line_cap = max(self.max_reply, LOGIC_REQUEST_MAX)
        self.wall_s = None if limits.wall_ms is None else limits.wall_ms / 1000.0
        self.call_prefix = self._dumps({"op": "call", "key": self.key, **self.limit_fields})[:-1] + b',"args":'
        self.encode, self.decode = codec.encode, codec.decode
        self.closed = False
        self.train_error = None
        # Load once now, so that a refused module fails at load time as in-process does.
        self._with_worker(self._ensure_loaded)

    # -- load and configure ----------------------------------------------------------
    def _with_worker(self, action):
        """``action(worker)`` on a pooled worker; a worker found dead before anything
        was sent to it (killed from outside, OOM) is replaced and the next one tried."""
        for _ in range(self.pool.size + 1):
            worker = self._acquire()
            if worker is None:
                continue
            retire = True  # anything unforeseen (an interrupt mid-read) leaves the protocol unsure
            try:
                result = action(worker)
                retire = bool(result)
                return result
            except SendFailed:
                continue
            except (PoetViolation, PhaseError):
                retire = False  # a whole reply was read; a worker that must go was killed already
                raise
            finally:
                self.pool.release(worker, retire=retire or not worker.alive)
        raise PhaseError("restricted workers keep dying before a request reaches them")

    def _acquire(self):
        """A pooled worker, or None when the one handed out had died while idle."""
        try:
            worker = self.pool.acquire()
        except Exception as error:  # no free worker in time, pool closed, spawn failed
            raise PhaseError(f"no restricted worker: {type(error).__name__}: {error}") from None
        if worker.proc.poll() is not None:  # died while idle (killed from outside, OOM): never ask it
            worker.alive = False
            self.pool.release(worker, retire=True)
            return None
        return worker

    def _ensure_loaded(self, worker) -> bool:
        """Load or re-configure this enhancement in ``worker``; returns retire flag."""
        have = worker.loaded.get(self.key)
        if have == self.generation:
            return False
        if have is None:
            message = dict(self.load_message, params=self.params)
        else:
            message = {"op": "configure", "key": self.key, "params": self.params, "wall_ms": self.limits.wall_ms,
                       **self.limit_fields}
        # The worker stops its own load at wall_ms and says so; the host's deadline is the
        # backstop for a worker that cannot answer (a little later, so the answer wins).
        timeout = LOAD_TIMEOUT_S if self.wall_s is None else self.wall_s + 1.0
        deadline = time.monotonic() + timeout
        try:
            reply = worker.request(self.codec.dumps(message), deadline, self.max_reply)
        except ReplyTimeout:
            worker.kill()
            if self.wall_s is not None:
                raise PoetViolation(self.function_id, "wall_ms", f"loading took more than {self.limits.wall_ms} ms; "
                                                                 "worker killed") from None
            raise PhaseError(f"restricted worker: no answer within {timeout:g} s while loading") from None
        except SendFailed:
            worker.kill()
            raise  # nothing ran: try another worker
        except Exception as error:
            raise self._transport_failure(worker, error) from None
        if not reply.get("ok"):
            if reply.get("retire"):
                worker.kill()
            if reply.get("kind") == "violation":
                raise PoetViolation(self.function_id, _text(reply.get("limit"), 60), _text(reply.get("detail")))
            raise PhaseError(f"{_text(reply.get('kind'), 60)}: {_text(reply.get('detail'))}")
        worker.loaded[self.key] = self.generation
        return bool(reply.get("retire"))

    def _transport_failure(self, worker, error) -> Exception:
        """What a failed read or write means for the call (the worker is killed)."""
        worker.kill()
        if isinstance(error, ReplyTimeout):
            return PoetViolation(self.function_id, "wall_ms",
                                 f"no answer within {self.limits.wall_ms} ms; worker killed")
        if isinstance(error, ReplyTooLarge):
            return PoetViolation(self.function_id, "max_output_kb",
                                 f"result and output larger than {self.limits.max_output_kb} KB; worker killed")
        if isinstance(error, WorkerDied):
            if error.returncode == -signal.SIGXCPU:
                return PoetViolation(self.function_id, "cpu_ms",
                                     f"used more than {self.limits.cpu_ms} ms of CPU; worker ended")
            if type(error) is WorkerDied or isinstance(error, SendFailed):
                return PhaseError(f"restricted worker died (exit {error.returncode})")
            return PhaseError(f"restricted worker: {error}")
        return PhaseError(f"restricted worker: {type(error).__name__}: {error}")

    # -- a call ----------------------------------------------------------------------
    def _start(self, logic, args: tuple, kwargs: dict):
        if self.closed:
            raise PhaseError("enhancement is closed")
        crossing = HostCall(logic, self.encode, self.decode)
        sent_args, sent_kwargs = crossing.start(args, kwargs)
        # The fixed part of the message is encoded once (hot path).
        data = b"".join((self.call_prefix, self._dumps(sent_args), b',"kwargs":',
                         self._dumps(sent_kwargs) if sent_kwargs else b"{}", b"}\n"))
        return crossing, data

    def call(self, logic, args: tuple, kwargs: dict) -> tuple:
        crossing, data = self._start(logic, args, kwargs)
        talk = _Conversation(self)
        failure = None
        pool = self.pool
        try:
            reply = talk.leg(talk.open, data)
            while reply.get("status") == "logic":
                pool.park()  # the worker waits for the logic: it does not hold a place meanwhile
                try:
                    answer = crossing.run_logic(reply)
                finally:
                    pool.unpark()
                reply = talk.leg(talk.answer, answer)
        except BaseException as error:  # noqa: B902 - a KeyboardInterrupt in the logic, too
            talk.abandon()
            failure = error
        if failure is not None:  # raised outside the handler: nothing chained onto it
            raise self._failed(crossing, failure)
        talk.close(retire=bool(reply.get("retire")))
        return self._outcome(crossing, reply)

    async def call_async(self, logic, args: tuple, kwargs: dict) -> tuple:
        crossing, data = self._start(logic, args, kwargs)
        talk = _Conversation(self)
        pool = self.pool
        failure = None
        try:
            # The worker's legs block on a pipe: a thread each; the logic is awaited here.
            reply = await asyncio.to_thread(talk.leg, talk.open, data)
            while reply.get("status") == "logic":
                pool.park()
                try:
                    answer = await crossing.run_logic_async(reply)
                finally:
                    pool.unpark()
                reply = await asyncio.to_thread(talk.leg, talk.answer, answer)
        except BaseException as error:  # noqa: B902 - cancellation, too: the worker is mid-call
            talk.abandon()
            failure = error
        if failure is not None:
            raise self._failed(crossing, failure)
        talk.close(retire=bool(reply.get("retire")))
        return self._outcome(crossing, reply)

    def _failed(self, crossing: HostCall, error: BaseException) -> BaseException:
        """After the logic ran, a failure of the sandbox is no reason to run it again."""
        if isinstance(error, PhaseError) and not isinstance(error, AfterLogic) and crossing.runs:
            return crossing.after_logic("sandbox_failed", str(error))
        if isinstance(error, PoetViolation):
            return self._violation(crossing, error)
        return error

    @staticmethod
    def _violation(crossing: HostCall, violation: PoetViolation) -> PoetViolation:
        """A limit is a violation whenever it is hit; if the logic had already run, the
        violation carries ``after_logic`` (an ``AfterLogic`` with the logic's own result
        or exception), so that a fallback need not run the logic a second time."""
        if crossing.runs:
            violation.after_logic = crossing.after_logic(f"violation:{violation.limit}", violation.detail)
        return violation

    def _outcome(self, crossing: HostCall, reply: dict) -> tuple:
        if reply.get("ok"):
            try:
                result = crossing.result(reply.get("result"))
                t0, t1, t2, t3 = crossing.marks(reply.get("t"))
                notes = crossing.notes(reply.get("notes"))
                output = reply.get("out")
                if output is not None and type(output) is not str:
                    raise PhaseError("restricted worker: printed output that is not text")
            except PhaseError as error:
                raise self._failed(crossing, error) from None
            except Exception as error:  # anything unforeseen in a reply is the worker's failure
                raise self._failed(crossing, PhaseError(f"restricted worker: malformed reply "
                                                        f"({type(error).__name__})")) from None
            if output:
                sys.stdout.write(output)
            train_error = reply.get("train_error")
            self.train_error = _text(train_error, 500) if train_error else None
            return result, t0, t1, t2, t3, notes
        status = reply.get("status")
        if status == "logic_raised":
            try:
                error = crossing.raised(reply.get("token"))
            except PhaseError as failure:
                raise self._failed(crossing, failure) from None
            raise error  # the logic's own exception object, as the original raises it
        if status == "after_logic":
            if not crossing.runs:
                raise PhaseError(f"restricted worker: after_logic, but the logic never ran: "
                                 f"{_text(reply.get('detail'))}")
            raise crossing.after_logic(str(reply.get("reason")), str(reply.get("detail")))
        kind = reply.get("kind")
        if kind == "violation":
            raise self._violation(crossing, PoetViolation(self.function_id, _text(reply.get("limit"), 60),
                                                          _text(reply.get("detail"))))
        if kind == "raise":
            # Generated code's own TimeoutError or CircuitOpenError: not an answer the original
            # gives, so a fallback (the logic's own timeouts come back as logic_raised).
            failure = PhaseError(f"generated code raised {_text(reply.get('class'), 60)}: {_text(reply.get('detail'))}")
            if crossing.runs:
                raise crossing.after_logic("generated_raised", str(failure))
            raise failure
        failure = PhaseError(f"{_text(kind, 60)}: {_text(reply.get('detail'))}")
        if crossing.runs:
            raise crossing.after_logic("operate_prime_error", str(failure))
        raise failure

    def _dumps(self, value) -> bytes:
        return self.codec.dumps_value(value)

    # -- LoadedEnhancement -------------------------------------------------------------
    def configure(self, params: dict) -> None:
        with self._lock:
            self.params = dict(params or {})
            self.generation += 1  # each worker re-configures before its next call

    def observations(self) -> dict:
        """Train's STATS, merged over the idle workers that run this enhancement (each
        worker keeps its own): numbers are summed, except names with "max"/"min"."""
        merged: dict = {}
        for reply in self.pool.broadcast({"op": "observations", "key": self.key}):
            try:  # a worker's answer is untrusted data like any other: decoded under guard, checked
                stats = self.codec.decode(reply.get("stats") or {})
                check_value(stats)
            except Exception:
                continue
            if type(stats) is not dict:
                continue
            for name, value in stats.items():
                if type(name) is not str:
                    continue
                if name not in merged or not isinstance(value, (int, float)) or isinstance(value, bool) or \
                        not isinstance(merged[name], (int, float)) or isinstance(merged[name], bool):
                    merged.setdefault(name, value)
                elif "max" in name:
                    merged[name] = max(merged[name], value)
                elif "min" in name:
                    merged[name] = min(merged[name], value)
                else:
                    merged[name] = merged[name] + value
        return merged

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.pool.broadcast({"op": "unload", "key": self.key})


def _text(value, limit: int = 2000) -> str:
    """A string from a worker's reply, bounded and with control/bidi characters shown."""
    return visible(str(value)[:limit], allow_newlines=False)


class _Conversation:
    """One call's hold on one worker: the call line, the logic's answers, the end.

    ``budget`` is what is left of ``wall_ms``: it runs down only while the host
    waits for the worker. Legs run in the caller's thread (``call``) or in a
    helper thread each (``call_async``); ``abandon`` may come from another thread
    while a leg is reading, so it only signals the worker then, and the leg, once
    it returns, retires it (pipes are never closed under a reader).
    """

    __slots__ = ("owner", "worker", "budget", "lock", "busy", "abandoned")

    def __init__(self, owner: WorkerEnhancement):
        self.owner = owner
        self.worker = None
        self.budget = owner.wall_s
        self.lock = threading.Lock()
        self.busy = False
        self.abandoned = False

    def leg(self, step, argument) -> dict:
        with self.lock:
            if self.abandoned:
                raise PhaseError("the call was abandoned")
            self.busy = True
        try:
            return step(argument)
        finally:
            with self.lock:
                self.busy = False
                abandoned = self.abandoned
            if abandoned:
                self.close(retire=True)

    def open(self, data: bytes) -> dict:
        """Find a worker, send it the call, and read its first line."""
        owner = self.owner
        for _ in range(owner.pool.size + 1):
            worker = owner._acquire()
            if worker is None:
                continue
            with self.lock:
                self.worker = worker
            try:
                if worker.loaded.get(owner.key) != owner.generation:
                    owner._ensure_loaded(worker)
                return self._exchange(data, first=True)
            except SendFailed:  # gone before the call reached it: nothing ran, try another
                self.close(retire=True)
                continue
            except (PoetViolation, PhaseError):
                self.close(retire=False)  # a whole reply was read, or the worker was killed
                raise
            except BaseException:
                self.close(retire=True)
                raise
        raise PhaseError("restricted workers keep dying before a request reaches them")

    def answer(self, message: dict) -> dict:
        """Send the logic's answer and read the worker's next line."""
        return self._exchange(self.owner.codec.dumps(message), first=False)

    def _exchange(self, data: bytes, first: bool) -> dict:
        owner = self.owner
        worker = self.worker
        if worker is None:
            raise PhaseError("restricted worker: the call lost its worker")
        deadline = None if self.budget is None else time.monotonic() + self.budget
        try:
            worker.send(data)
            reply = worker.reply(deadline, owner.line_cap)
        except SendFailed as error:
            if first:
                worker.kill()
                raise
            raise owner._transport_failure(worker, error) from None
        except (ReplyTimeout, ReplyTooLarge, WorkerDied) as error:
            raise owner._transport_failure(worker, error) from None
        if deadline is not None:
            self.budget = deadline - time.monotonic()  # the clock stops while the logic runs
        if reply.get("status") != "logic" and worker.last_size > owner.max_reply:
            raise owner._transport_failure(worker, ReplyTooLarge()) from None
        return reply

    def abandon(self) -> None:
        """The call ends here with the worker mid-call: it must not be reused."""
        with self.lock:
            self.abandoned = True
            busy, worker = self.busy, self.worker
        if busy:
            if worker is not None:
                worker.interrupt()  # the leg that is reading sees it die, then retires it
        else:
            self.close(retire=True)

    def close(self, retire: bool) -> None:
        with self.lock:
            worker, self.worker = self.worker, None
        if worker is not None:
            self.owner.pool.release(worker, retire=retire or not worker.alive)
