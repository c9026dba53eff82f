"""The worker process of the ``restricted`` backend: runs generated code under OS limits.

Why a process: RestrictedPython limits what code can reach, not how long it runs or
how much memory it takes. Here each call runs under ``setrlimit(RLIMIT_AS)`` (memory),
an ``ITIMER_PROF`` timer plus an ``RLIMIT_CPU`` backstop (CPU), and the host kills
the whole process past ``wall_ms``. The worker starts with an empty environment,
no core dumps, no file writes (``RLIMIT_FSIZE`` 0) and its protocol on private fds
(0 and 1 point at /dev/null), so stray output cannot corrupt the protocol.

The user's logic never runs here (contract 2): ``operate_prime`` gets a logic proxy,
and each call of it is a request to the host, which runs the real function in the
caller's thread and answers, all inside one call (``poet_sandbox.crossing``). While
the worker waits for that answer it uses no CPU, so ``cpu_ms`` does not count the
logic; the host pauses its ``wall_ms`` clock meanwhile.

Protocol: one JSON object per line (see ``worker_codec``); never pickle.
  -> {"op": "load", "key", "code", "filename", "params", "imports", "builtins",
      "max_output_kb", "cpu_ms", "memory_mb", "module"}
  -> {"op": "call", "key", "args": [item], "kwargs": {name: item}, "cpu_ms", "memory_mb", "max_output_kb"}
     item: ["d", data] or ["r", [type names]] (a value the host keeps; a HostRef here)
     <- {"status": "logic", "args", "kwargs", "timeout"}   the logic, please (any number of times)
     -> {"op": "logic_return", "token", "result": item} | {"op": "logic_raise", "token", "builtin", ...}
  <- {"ok": true, "result": ["h", token] | ["d", data], "t": [t0, t1, t2, t3], "notes": [[kind, field, detail]]}
  <- {"ok": false, "status": "logic_raised", "token"}     the host raises its own exception object
  <- {"ok": false, "status": "after_logic", "reason", "detail"}   the host returns the logic's result
  <- {"ok": false, "kind": "raise", "class": "TimeoutError"|"CircuitOpenError", "detail"}  generated code's own
  <- {"ok": false, "kind": "violation"|"phase", "limit", "detail"}
  -> {"op": "configure", "key", "params"}   -> {"op": "unload", "key"}   -> {"op": "observations", "key"}
A reply with "retire": true asks the host to replace this worker (state may be dirty).

Imports nothing from poet_runtime; stdlib and RestrictedPython only.
"""

import importlib.util
import math
import os
import resource
import signal
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def _load_by_path(name, path, package_dir=None):
    spec = importlib.util.spec_from_file_location(
        name, path, submodule_search_locations=[package_dir] if package_dir else None
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class CpuLimit(BaseException):
    """Raised from the SIGPROF handler; BaseException so `except Exception` misses it."""


class Worker:
    def __init__(self, rfile, wfd, sandbox_dir):
        self.rfile = rfile
        self.wfd = wfd
        facility = os.path.join(sandbox_dir, "poet_sandbox")
        _load_by_path("poet_sandbox", os.path.join(facility, "__init__.py"), facility)
        self.restrict = _load_by_path("poet_worker_restrict", os.path.join(HERE, "worker_restrict.py"))
        self.codec = _load_by_path("poet_worker_codec", os.path.join(HERE, "worker_codec.py"))
        from poet_sandbox import crossing
        from poet_sandbox.driver import AfterLogic, Enhancement
        from poet_sandbox.errors import CircuitOpenError, PhaseError

        self.Enhancement = Enhancement
        self.PhaseError = PhaseError
        self.AfterLogic = AfterLogic
        self.CircuitOpenError = CircuitOpenError
        self.crossing = crossing
        self.loaded = {}  # key -> (Enhancement, Sandbox, namespace)
        self.calling = False  # a call is in progress: the logic may be asked for
        self.in_call = False
        self.cpu_hit = False
        self.base_threads = threading.active_count()
        self.vm_base = self._vm_bytes()
        self.memory_mb = None
        signal.signal(signal.SIGPROF, self._on_cpu)

    # -- limits -------------------------------------------------------------------
    @staticmethod
    def _vm_bytes():
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")

    def _on_cpu(self, signum, frame):
        if not self.in_call:
            return
        if self.cpu_hit:
            # The code caught CpuLimit and went on: end the process the way the
            # kernel's RLIMIT_CPU would (the host maps SIGXCPU to cpu_ms).
            signal.signal(signal.SIGXCPU, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGXCPU)
        self.cpu_hit = True
        raise CpuLimit()

    def _arm(self, memory_mb, cpu_ms):
        if memory_mb != self.memory_mb:
            # The call may grow the worker by memory_mb beyond its size after loading.
            # The cap stays set between calls (the harness's own work is small).
            cap = resource.RLIM_INFINITY if not memory_mb else self.vm_base + memory_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (cap, resource.RLIM_INFINITY))
            self.memory_mb = memory_mb
        if cpu_ms:
            used = resource.getrusage(resource.RUSAGE_SELF)
            # Backstop for code that swallows CpuLimit or sits in C: SIGXCPU ends the
            # process about a second later (RLIMIT_CPU counts whole seconds).
            soft = math.ceil(used.ru_utime + used.ru_stime + cpu_ms / 1000.0) + 1
            resource.setrlimit(resource.RLIMIT_CPU, (soft, resource.RLIM_INFINITY))
            # Re-fires every 5 ms, so catching CpuLimit once does not buy more time.
            signal.setitimer(signal.ITIMER_PROF, cpu_ms / 1000.0, 0.005)
        self.cpu_hit = False
        self.in_call = True

    def _disarm(self, cpu_ms):
        self.in_call = False
        if cpu_ms:
            signal.setitimer(signal.ITIMER_PROF, 0, 0)
            resource.setrlimit(resource.RLIMIT_CPU, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))

    def _rebase(self):
        """After a load the worker is bigger; memory_mb counts from here."""
        resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        self.memory_mb = None
        self.vm_base = self._vm_bytes()

    # -- operations -----------------------------------------------------------------
    def op_load(self, message):
        restrict = self.restrict
        self._rebase()  # the compile below must not run under a previous call's cap
        code, errors = restrict.compile_module(message["code"], message["filename"])
        if errors:
            return {"ok": False, "kind": "violation", "limit": "restricted_code", "detail": "; ".join(errors)}
        sandbox = restrict.Sandbox(message.get("imports", ()), message.get("builtins", ()), message.get("max_output_kb"))
        # No user globals: the generated module does not contain the user's logic.
        namespace = sandbox.namespace(message.get("module", "poet_enhanced"), {})
        mark = sandbox.begin_call()
        reply = self._guarded(message, sandbox, mark, lambda: self._init(code, namespace, message))
        if reply is not None:
            return reply
        try:
            enhancement = self.Enhancement(namespace)
        except ValueError as error:
            return {"ok": False, "kind": "phase", "detail": str(error)}
        self.loaded[message["key"]] = (enhancement, sandbox, namespace)
        self._rebase()
        return {"ok": True}

    def _init(self, code, namespace, message):
        exec(code, namespace)
        configure = namespace.get("configure")
        if callable(configure):
            configure(message.get("params") or {})

    def op_configure(self, message):
        enhancement, sandbox, namespace = self.loaded[message["key"]]
        mark = sandbox.begin_call()
        return self._guarded(message, sandbox, mark, lambda: namespace["configure"](message.get("params") or {})) or {"ok": True}

    def op_observations(self, message):
        entry = self.loaded.get(message["key"])
        stats = entry[2].get("STATS") if entry else None
        try:
            return {"ok": True, "stats": self.codec.encode(dict(stats)) if isinstance(stats, dict) else {}}
        except TypeError:
            return {"ok": True, "stats": {}}

    def op_unload(self, message):
        self.loaded.pop(message["key"], None)
        return {"ok": True}

    def op_call(self, message):
        entry = self.loaded.get(message["key"])
        if entry is None:
            return {"ok": False, "kind": "phase", "detail": "not loaded"}
        enhancement, sandbox, _ = entry
        session = self.crossing.Session(self._ask_host, self.codec.encode, self.codec.decode)
        try:
            args, kwargs = session.take_call(message["args"], message["kwargs"])
        except Exception as error:  # the host sent something this worker cannot read
            return {"ok": False, "kind": "phase", "detail": f"arguments: {type(error).__name__}: {error}"}
        logic = sandbox.logic_proxy(session, enhancement.is_async)
        memory_mb = message.get("memory_mb")
        cpu_ms = message.get("cpu_ms")
        mark = sandbox.begin_call()
        error = outcome = None
        # Written out (not through _guarded) because this is the hot path.
        self.calling = True
        self._arm(memory_mb, cpu_ms)
        try:
            if enhancement.is_async:
                outcome = _drive(enhancement.call_async(logic, args, kwargs), self.PhaseError)
            else:
                outcome = enhancement.call(logic, args, kwargs)
        except BaseException as caught:  # noqa: B902 - everything is reported
            error = caught
        finally:
            self._disarm(cpu_ms)
            self.calling = False
        if error is not None or self.cpu_hit or len(sandbox.violations) > mark:
            return self._failure(message, sandbox, mark, error, session)
        result, t0, t1, t2, t3, notes = outcome
        try:
            item = session.give(result)
        except Exception as error:  # Enforce returned something that is not data
            detail = f"the result cannot go back to the host: {type(error).__name__}: {error}"[:2000]
            if session.logic_calls:
                return {"ok": False, "status": "after_logic", "reason": "result_not_data", "detail": detail}
            return {"ok": False, "kind": "phase", "detail": detail}
        reply = {"ok": True, "result": item, "t": [t0, t1, t2, t3]}
        if notes:
            reply["notes"] = [[str(part)[:2000] for part in note] for note in notes]
        if sandbox.output:
            reply["out"] = sandbox.take_output()
        if enhancement.train_error is not None:
            reply["train_error"] = f"{type(enhancement.train_error).__name__}: {enhancement.train_error}"
            enhancement.train_error = None
        return reply

    def _ask_host(self, message):
        """The session's door: one logic request to the host, and its answer.

        SIGPROF and SIGALRM are held back meanwhile, so a limit cannot cut a line in
        half or leave the answer unread (the protocol stays in step); a limit that
        expired is raised as soon as the answer is in.
        """
        if not self.calling or type(message) is not dict or message.get("status") != "logic":
            raise self.crossing.CrossingError("only a logic request can go to the host, during a call")
        data = self.codec.dumps(message)
        held = {signal.SIGPROF, signal.SIGALRM}
        signal.pthread_sigmask(signal.SIG_BLOCK, held)
        try:
            self._send_bytes(data)
            line = self.rfile.readline()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, held)
        if not line:
            os._exit(0)  # the host is gone
        return self.codec.loads(line)

    def _guarded(self, message, sandbox, mark, action):
        """Run untrusted code (module body, configure) under the message's limits."""
        error = None
        cpu_ms = message.get("cpu_ms")
        self._arm(message.get("memory_mb"), cpu_ms)
        try:
            action()
        except BaseException as caught:  # noqa: B902 - everything is reported
            error = caught
        finally:
            self._disarm(cpu_ms)
        if error is None and not self.cpu_hit and len(sandbox.violations) == mark:
            return None
        return self._failure(message, sandbox, mark, error)

    def _failure(self, message, sandbox, mark, error, session=None):
        if self.cpu_hit or isinstance(error, CpuLimit):
            return {"ok": False, "kind": "violation", "limit": "cpu_ms",
                    "detail": f"used more than {message.get('cpu_ms')} ms of CPU", "retire": True}
        if len(sandbox.violations) > mark:
            limit, detail = sandbox.violations[mark]
            return {"ok": False, "kind": "violation", "limit": limit, "detail": detail, "retire": True}
        if _is_memory(error) and message.get("memory_mb"):
            return {"ok": False, "kind": "violation", "limit": "memory_mb",
                    "detail": f"needed more than {message['memory_mb']} MB", "retire": True}
        detail = f"{type(error).__name__}: {error}"[:2000]
        if session is not None and error is not None:
            token = session.token_of(error)
            if token is not None:  # the logic's own exception (in the host): raise that one
                return {"ok": False, "status": "logic_raised", "token": token}
            if isinstance(error, self.AfterLogic):
                return {"ok": False, "status": "after_logic", "reason": str(error.reason)[:60],
                        "detail": str(error)[:2000]}
            if isinstance(error, (self.CircuitOpenError, TimeoutError)):  # generated code's own, for the caller
                name = "CircuitOpenError" if isinstance(error, self.CircuitOpenError) else "TimeoutError"
                return {"ok": False, "kind": "raise", "class": name, "detail": str(error)[:2000]}
        return {"ok": False, "kind": "phase", "detail": detail}

    def serve(self):
        self._send({"ready": True, "pid": os.getpid()})
        handlers = {"load": self.op_load, "call": self.op_call, "configure": self.op_configure,
                    "unload": self.op_unload, "observations": self.op_observations}
        for line in self.rfile:
            message = None
            try:
                message = self.codec.loads(line)
                reply = handlers[message["op"]](message)
            except Exception as error:  # a harness bug or a bad message: report, keep serving
                reply = {"ok": False, "kind": "phase", "detail": f"worker: {type(error).__name__}: {error}"}
            if threading.active_count() > self.base_threads:
                reply["retire"] = True  # a timed-out thread still runs: do not reuse
            data = self.codec.dumps(reply)
            cap = message.get("max_output_kb") if reply.get("ok") and type(message) is dict else None
            if cap and len(data) > cap * 1024:
                # max_output_kb in a worker: the whole reply (result + printed output).
                data = self.codec.dumps({"ok": False, "kind": "violation", "limit": "max_output_kb",
                                         "detail": f"result and output larger than {cap} KB"})
            self._send_bytes(data)

    def _send(self, reply):
        self._send_bytes(self.codec.dumps(reply))

    def _send_bytes(self, data):
        view = memoryview(data)
        while view:
            written = os.write(self.wfd, view)
            view = view[written:]


def _drive(coroutine, PhaseError):
    """Run a coroutine without an event loop: the logic proxy's awaitable never
    suspends (the host awaits the real coroutine meanwhile), and neither does
    ``poet_sandbox.timeouts.sleep_async`` where there is no loop."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise PhaseError("async generated code awaited something that needs an event loop")


def _is_memory(error):
    seen = 0
    while error is not None and seen < 20:
        if isinstance(error, MemoryError):
            return True
        error = error.__cause__ or error.__context__
        seen += 1
    return False


def _watch_parent(parent):
    """End this worker when the host is gone, even in the middle of a call (a call
    with no cpu or wall limit could otherwise run on forever as an orphan).
    Started before the Worker counts its baseline threads."""

    def watch():
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(70)

    threading.Thread(target=watch, daemon=True, name="poet-parent-watch").start()


def main():
    sandbox_dir = sys.argv[1]
    # The protocol moves to private fds; 0/1 become /dev/null so nothing else
    # (a C library, a stray print) can write into it.
    rfd, wfd = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    threading.stack_size(512 * 1024)  # thread stacks count against RLIMIT_AS
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in the host's terminal is the host's
    _watch_parent(os.getppid())
    worker = Worker(os.fdopen(rfd, "rb", buffering=1 << 16), wfd, sandbox_dir)
    os.chdir("/")
    worker.serve()


if __name__ == "__main__":
    main()
