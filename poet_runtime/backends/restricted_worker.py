"""The host side of one restricted enhancement that runs in worker processes.

Why separate from ``restricted.py``: this is the part that turns worker replies
(plain JSON) back into the outcomes of backends/base.py, and that owns the
limits' host-side half: the wall-clock kill, the reply size cap, and replacing a
worker that died. Each worker loads the enhancement the first time it serves it
(code, params and the copied globals travel as JSON), and is re-configured when
``configure`` changed the params since.

Module-level state of the generated code (a breaker, a learner) lives per worker
process; a worker that is retired takes its copy with it.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
import time

import json

from poet_runtime.backends.base import LoadRequest
from poet_runtime.backends.inprocess import original_defaults
from poet_runtime.backends.restricted import code_key, harness_module, select_globals
from poet_runtime.backends.workers import DEFAULT_MAX_REPLY, ReplyTimeout, ReplyTooLarge, SendFailed, WorkerDied
from poet_runtime.errors import PoetViolation
from poet_runtime.resources import load_facility

PhaseError = load_facility().PhaseError
UserLogicError = load_facility().UserLogicError

LOAD_TIMEOUT_S = 10.0  # compile + module body; the module body also runs under cpu/memory limits
REPLY_OVERHEAD = 64 * 1024  # protocol framing on top of max_output_kb


class WorkerEnhancement:
    backend = "restricted"

    def __init__(self, pool, request: LoadRequest, names: set):
        self.pool = pool
        self.function_id = request.function_id
        self.limits = limits = request.limits
        codec = harness_module("worker_codec")
        self.codec = codec
        data, modules, _ = select_globals(request, names, frozenset(limits.imports), False)
        try:
            encoded = {name: codec.encode(value) for name, value in data.items()}
        except TypeError as error:
            raise PhaseError(f"a global cannot cross to a worker: {error}") from None
        try:
            defaults = codec.encode(original_defaults(request.original))
        except TypeError as error:
            raise PhaseError(f"a default argument value cannot cross to a worker: {error}") from None
        self.key = code_key(request)
        self.params = dict(request.params or {})
        self.generation = 0
        self._lock = threading.Lock()
        self.limit_fields = {"cpu_ms": limits.cpu_ms, "memory_mb": limits.memory_mb,
                             "max_output_kb": limits.max_output_kb}
        self.load_message = {
            "op": "load", "key": self.key, "code": request.code, "filename": request.filename,
            "logic": request.logic_name, "params": self.params, "globals": encoded, "modules": modules,
            "imports": list(limits.imports), "builtins": list(limits.builtins),
            "module": f"poet_enhanced.{request.function_id}", "defaults": defaults, **self.limit_fields,
        }
        self.max_reply = (limits.max_output_kb * 1024 + REPLY_OVERHEAD) if limits.max_output_kb else DEFAULT_MAX_REPLY
        self.wall_s = None if limits.wall_ms is None else limits.wall_ms / 1000.0
        self.call_prefix = self._dumps({"op": "call", "key": self.key, **self.limit_fields})[:-1] + b',"args":'
        self.closed = False
        self.train_error = None
        # Load once now, so that a refused module fails at load time as in-process does.
        self._with_worker(self._ensure_loaded)

    # -- helpers ----------------------------------------------------------------
    def _with_worker(self, action):
        """``action(worker)`` on a pooled worker; a worker found dead before anything
        was sent to it (killed from outside, OOM) is replaced and the next one tried."""
        for _ in range(self.pool.size + 1):
            try:
                worker = self.pool.acquire()
            except Exception as error:  # no free worker in time, pool closed, spawn failed
                raise PhaseError(f"no restricted worker: {type(error).__name__}: {error}") from None
            if worker.proc.poll() is not None:  # died while idle (killed from outside, OOM): never ask it
                worker.alive = False
                self.pool.release(worker, retire=True)
                continue
            retire = True  # anything unforeseen (an interrupt mid-read) leaves the protocol unsure
            try:
                result = action(worker)
                retire = bool(result.get("retire")) if isinstance(result, dict) else bool(result)
                return result
            except SendFailed:
                continue
            except (PoetViolation, PhaseError):
                retire = False  # a whole reply was read; a worker that must go was killed already
                raise
            finally:
                self.pool.release(worker, retire=retire or not worker.alive)
        raise PhaseError("restricted workers keep dying before a request reaches them")

    def _ensure_loaded(self, worker) -> bool:
        """Load or re-configure this enhancement in ``worker``; returns retire flag."""
        have = worker.loaded.get(self.key)
        if have == self.generation:
            return False
        if have is None:
            message = dict(self.load_message, params=self.params)
        else:
            message = {"op": "configure", "key": self.key, "params": self.params, **self.limit_fields}
        reply = self._exchange(worker, message, LOAD_TIMEOUT_S if self.wall_s is None else max(LOAD_TIMEOUT_S, self.wall_s))
        worker.loaded[self.key] = self.generation
        return bool(reply.get("retire"))

    def _exchange(self, worker, message, timeout_s: float | None) -> dict:
        """One request (a dict, or an encoded line); worker failures become outcomes."""
        if type(message) is dict:
            message = self.codec.dumps(message)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        try:
            reply = worker.request(message, deadline, self.max_reply)
        except ReplyTimeout:
            worker.kill()
            if self.wall_s is None or timeout_s != self.wall_s:
                raise PhaseError(f"restricted worker: no answer within {timeout_s:g} s while loading") from None
            raise PoetViolation(self.function_id, "wall_ms",
                                f"no answer within {self.limits.wall_ms} ms; worker killed") from None
        except ReplyTooLarge:
            worker.kill()
            raise PoetViolation(self.function_id, "max_output_kb",
                                f"result and output larger than {self.limits.max_output_kb} KB; worker killed") from None
        except SendFailed:
            worker.kill()
            raise  # nothing ran: call() tries another worker
        except WorkerDied as died:
            worker.kill()
            if died.returncode == -signal.SIGXCPU:
                raise PoetViolation(self.function_id, "cpu_ms",
                                    f"used more than {self.limits.cpu_ms} ms of CPU; worker ended") from None
            raise PhaseError(f"restricted worker died (exit {died.returncode})") from None
        if reply.get("ok"):
            return reply
        kind = reply.get("kind")
        if reply.get("retire"):
            worker.kill()
        if kind == "violation":
            raise PoetViolation(self.function_id, str(reply.get("limit")), str(reply.get("detail")))
        # "phase" or "user": a user's exception cannot be rebuilt faithfully from text,
        # so the original re-runs in the host and raises it for real.
        if kind == "user":
            raise UserLogicError(f"user: {reply.get('detail')}")
        raise PhaseError(f"{kind}: {reply.get('detail')}")

    # -- LoadedEnhancement -------------------------------------------------------------
    def call(self, args: tuple, kwargs: dict) -> tuple:
        if self.closed:
            raise PhaseError("enhancement is closed")
        encode = self.codec.encode
        try:
            # The fixed part of the message is encoded once (hot path).
            data = b"".join((self.call_prefix, self._dumps([encode(a) for a in args]), b',"kwargs":',
                             self._dumps(encode(kwargs)) if kwargs else b"{}", b"}\n"))
        except TypeError as error:
            raise PhaseError(str(error)) from None
        def exchange(worker):
            if worker.loaded.get(self.key) != self.generation:
                self._ensure_loaded(worker)
            return self._exchange(worker, data, self.wall_s)

        reply = self._with_worker(exchange)
        output = reply.get("out")
        if output:
            sys.stdout.write(output)
        self.train_error = reply.get("train_error")
        t0, t1, t2, t3 = reply["t"]
        return (self.codec.decode(reply["result"]), t0, t1, t2, t3)

    @staticmethod
    def _dumps(value) -> bytes:
        return json.dumps(value, separators=(",", ":")).encode("utf-8")

    async def call_async(self, args: tuple, kwargs: dict) -> tuple:
        return await asyncio.to_thread(self.call, args, kwargs)

    def configure(self, params: dict) -> None:
        with self._lock:
            self.params = dict(params or {})
            self.generation += 1  # each worker re-configures before its next call

    def observations(self) -> dict:
        """Train's STATS, merged over the idle workers that run this enhancement (each
        worker keeps its own): numbers are summed, except names with "max"/"min"."""
        merged: dict = {}
        for reply in self.pool.broadcast({"op": "observations", "key": self.key}):
            for name, value in (self.codec.decode(reply.get("stats") or {}) or {}).items():
                if name not in merged or not isinstance(value, (int, float)) or isinstance(value, bool):
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
