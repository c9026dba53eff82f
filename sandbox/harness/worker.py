"""The worker process of the ``restricted`` backend: runs generated code under OS limits.

Why a process: RestrictedPython limits what code can reach, not how long it runs or
how much memory it takes. Here each call runs under ``setrlimit(RLIMIT_AS)`` (memory),
an ``ITIMER_PROF`` timer plus an ``RLIMIT_CPU`` backstop (CPU), and the host kills
the whole process past ``wall_ms``. The worker starts with an empty environment,
its protocol on private fds (0, 1 and 2 point at /dev/null, every other fd is
closed), so stray output cannot corrupt the protocol nor reach the host's terminal.

Before it reads a byte of the protocol it confines itself (``confine.py``: user and
network namespaces, no new privileges, hard rlimits, Landlock, a seccomp
allow-list), so that an escape from the Python layer still finds a process that
cannot write a file, open a socket, signal or read the host, or outlive it. The
hello line says which layers hold. Its hard address-space and CPU limits are
fixed at its first load, to that policy's (``confine.Limiter``); a request with
larger limits is declined before anything runs (``{"declined": true}``) and the
host sends it to another worker.

Load-time work counts against the policy: the module body and ``configure`` run
under the message's ``cpu_ms``, ``memory_mb`` and ``wall_ms`` (an ``ITIMER_REAL``
alarm), and memory kept by the module counts against every later call of it
(memory is measured from before the load, never re-based after it).

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
  <- {"ok": false, "kind": "raise", "class": "TimeoutError"|"CircuitOpenError", "detail"}  generated code's
     own (the host makes it a fallback: only the user's exception reaches the caller)
  <- {"ok": false, "kind": "violation"|"phase", "limit", "detail"}
  -> {"op": "configure", "key", "params"}   -> {"op": "unload", "key"}   -> {"op": "observations", "key"}
A reply with "retire": true asks the host to replace this worker (state may be dirty).

Imports nothing from poet_runtime; stdlib and RestrictedPython only.
"""

import importlib.util
import _signal
import math
import os
import resource
import signal
import sys
import threading
import time

_HELD = (signal.SIGPROF, signal.SIGALRM)  # held back while a logic request is on the wire

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


class WallLimit(BaseException):
    """Raised from the SIGALRM handler while a load or configure runs past ``wall_ms``."""


class Worker:
    def __init__(self, rfile, wfd, sandbox_dir, confine=None):
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
        from poet_sandbox.validate import sendable_detail

        self.sendable_detail = sendable_detail  # a note's structured evidence crosses as data
        self.loaded = {}  # key -> (Enhancement, Sandbox, namespace)
        self.calling = False  # a call is in progress: the logic may be asked for
        self.in_call = False
        self.cpu_hit = False
        self.wall_hit = False
        self.base_threads = threading.active_count()
        self.statm = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)  # kept: /proc is out of reach later
        self.vm_base = self._vm_bytes()
        self.memory_mb = None
        self.applied_cap = None
        self.limiter = confine.Limiter(self.vm_base) if confine else None
        self.layers = {}
        self.raw = False  # test-only: "exec" requests (a worker started with --test-raw)
        signal.signal(signal.SIGPROF, self._on_cpu)

    def started(self, layers):
        """Confinement is done: memory counts from here."""
        self.layers = layers
        self.base_threads = threading.active_count()
        self.vm_base = self._vm_bytes()
        if self.limiter is not None:
            self.limiter.base = self.vm_base

    # -- limits -------------------------------------------------------------------
    def _vm_bytes(self):
        return int(os.pread(self.statm, 256, 0).split()[0]) * os.sysconf("SC_PAGE_SIZE")

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

    def _on_wall(self, signum, frame):
        if self.in_call:
            self.wall_hit = True
            raise WallLimit()  # again every 5 ms: catching it once buys nothing

    def _hard(self):
        limiter = self.limiter
        return (resource.RLIM_INFINITY, resource.RLIM_INFINITY) if limiter is None else \
            (limiter.hard_as, limiter.hard_cpu)

    def _arm(self, memory_mb, cpu_ms):
        limiter = self.limiter
        if limiter is not None:
            limiter.fix(memory_mb, cpu_ms)  # hard limits: once, before any generated code runs
        hard_as, hard_cpu = self._hard()
        if limiter is not None:
            cap = limiter.cap(self.vm_base, memory_mb)
        else:
            cap = resource.RLIM_INFINITY if not memory_mb else self.vm_base + memory_mb * 1024 * 1024
        if cap != self.applied_cap:
            # The call may grow the worker by memory_mb beyond its size before its
            # enhancement was loaded (what the module keeps counts). The cap stays
            # set between calls (the harness's own work is small).
            resource.setrlimit(resource.RLIMIT_AS, (cap, hard_as))
            self.applied_cap = cap
            self.memory_mb = memory_mb
        if cpu_ms:
            # Backstop for code that swallows CpuLimit or sits in C: SIGXCPU ends the
            # process about a second later (RLIMIT_CPU counts whole seconds).
            if limiter is not None:
                soft = limiter.cpu_soft(cpu_ms)
            else:
                used = resource.getrusage(resource.RUSAGE_SELF)
                soft = math.ceil(used.ru_utime + used.ru_stime + cpu_ms / 1000.0) + 1
            resource.setrlimit(resource.RLIMIT_CPU, (soft, hard_cpu))
            # Re-fires every 5 ms, so catching CpuLimit once does not buy more time.
            signal.setitimer(signal.ITIMER_PROF, cpu_ms / 1000.0, 0.005)
        self.cpu_hit = False
        self.in_call = True

    def _disarm(self, cpu_ms):
        self.in_call = False
        if cpu_ms:
            signal.setitimer(signal.ITIMER_PROF, 0, 0)
            hard_cpu = self._hard()[1]
            resource.setrlimit(resource.RLIMIT_CPU, (hard_cpu, hard_cpu))

    def _rebase(self):
        """Before a load: memory_mb counts from the worker's size now (never after the
        load: what the module body kept is the module's)."""
        hard_as = self._hard()[0]
        resource.setrlimit(resource.RLIMIT_AS, (hard_as, hard_as))
        self.applied_cap = None
        self.memory_mb = None
        self.vm_base = self._vm_bytes()

    def _declined(self, message):
        """A request whose limits this worker's hard limits cannot give (another policy's)."""
        limiter = self.limiter
        if limiter is None or limiter.fits(message.get("memory_mb"), message.get("cpu_ms")):
            return None
        return {"ok": False, "declined": True, "retire": True, "kind": "phase",
                "detail": "this worker's hard limits belong to another policy"}

    # -- operations -----------------------------------------------------------------
    def op_load(self, message):
        declined = self._declined(message)
        if declined:
            return declined
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
        return {"ok": True}

    def _init(self, code, namespace, message):
        exec(code, namespace)
        configure = namespace.get("configure")
        if callable(configure):
            configure(message.get("params") or {})

    def op_configure(self, message):
        declined = self._declined(message)
        if declined:
            return declined
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
        declined = self._declined(message)
        if declined:
            return declined
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
        if self.limiter is not None and self.limiter.worn(cpu_ms):
            self.retiring = True  # near its lifetime CPU budget: replaced after this reply
        try:
            item = session.give(result)
        except Exception as error:  # Enforce returned something that is not data
            detail = f"the result cannot go back to the host: {type(error).__name__}: {error}"[:2000]
            if session.logic_calls:
                return {"ok": False, "status": "after_logic", "reason": "result_not_data", "detail": detail}
            return {"ok": False, "kind": "phase", "detail": detail}
        reply = {"ok": True, "result": item, "t": [t0, t1, t2, t3]}
        if notes:
            reply["notes"] = [[str(kind)[:2000], str(field)[:2000], self.sendable_detail(detail)]
                              for kind, field, detail in notes]
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
        # _signal's own call: signal.pthread_sigmask also builds a set of enums of the
        # old mask on every call, which nothing here reads (hot path: once per logic call).
        _signal.pthread_sigmask(signal.SIG_BLOCK, _HELD)
        try:
            self._send_bytes(data)
            line = self.rfile.readline()
        finally:
            _signal.pthread_sigmask(signal.SIG_UNBLOCK, _HELD)
        if not line:
            os._exit(0)  # the host is gone
        return self.codec.loads(line)

    def _guarded(self, message, sandbox, mark, action):
        """Run untrusted code (module body, configure) under the message's limits,
        wall time included (a call's wall time is the host's to enforce)."""
        error = None
        cpu_ms = message.get("cpu_ms")
        wall_ms = message.get("wall_ms")
        self.wall_hit = False
        self._arm(message.get("memory_mb"), cpu_ms)
        if wall_ms:
            signal.signal(signal.SIGALRM, self._on_wall)
            signal.setitimer(signal.ITIMER_REAL, wall_ms / 1000.0, 0.005)
        try:
            action()
        except BaseException as caught:  # noqa: B902 - everything is reported
            error = caught
        finally:
            self.in_call = False  # first: a late alarm or profiling tick must not raise in here
            if wall_ms:
                signal.setitimer(signal.ITIMER_REAL, 0, 0)
                signal.signal(signal.SIGALRM, signal.SIG_DFL)
            self._disarm(cpu_ms)
        if error is None and not self.cpu_hit and not self.wall_hit and len(sandbox.violations) == mark:
            return None
        return self._failure(message, sandbox, mark, error)

    def _failure(self, message, sandbox, mark, error, session=None):
        if self.wall_hit or isinstance(error, WallLimit):
            return {"ok": False, "kind": "violation", "limit": "wall_ms",
                    "detail": f"took more than {message.get('wall_ms')} ms", "retire": True}
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
            if isinstance(error, (self.CircuitOpenError, TimeoutError)):  # generated code's own: named for the log
                name = "CircuitOpenError" if isinstance(error, self.CircuitOpenError) else "TimeoutError"
                return {"ok": False, "kind": "raise", "class": name, "detail": str(error)[:2000]}
        return {"ok": False, "kind": "phase", "detail": detail}

    def op_exec(self, message):
        """Test-only (``--test-raw``): run raw Python here, with no Python-level
        sandbox, to show what the OS layers alone hold. Never started by the host."""
        if not self.raw:
            return {"ok": False, "kind": "phase", "detail": "unknown op"}
        namespace = {"__name__": "poet_raw", "WFD": self.wfd}
        self._arm(message.get("memory_mb"), message.get("cpu_ms"))
        try:
            exec(compile(message["code"], "<raw>", "exec"), namespace)
            return {"ok": True, "result": self.codec.encode(namespace.get("RESULT"))}
        except BaseException as error:  # noqa: B902 - reported
            return {"ok": False, "kind": "raised", "detail": f"{type(error).__name__}: {error}"[:2000]}
        finally:
            self._disarm(message.get("cpu_ms"))

    def serve(self):
        self._send({"ready": True, "pid": os.getpid(), "layers": self.layers})
        handlers = {"load": self.op_load, "call": self.op_call, "configure": self.op_configure,
                    "unload": self.op_unload, "observations": self.op_observations, "exec": self.op_exec}
        self.retiring = False
        for line in self.rfile:
            message = None
            try:
                message = self.codec.loads(line)
                reply = handlers[message["op"]](message)
            except Exception as error:  # a harness bug or a bad message: report, keep serving
                reply = {"ok": False, "kind": "phase", "detail": f"worker: {type(error).__name__}: {error}"}
            if threading.active_count() > self.base_threads or self.retiring:
                reply["retire"] = True  # a timed-out thread still runs, or the CPU budget is near: do not reuse
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
    parent = os.getppid()
    sandbox_dir = sys.argv[1]
    options = sys.argv[2:]
    skip = ()
    for option in options:
        if option.startswith("--skip="):  # tests: show a payload works without a layer
            skip = tuple(name for name in option[7:].split(",") if name)
    # The protocol moves to private fds; 0/1/2 become /dev/null so nothing else
    # (a C library, a stray print) can write into it or into the host's terminal.
    rfd, wfd = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    for fd in _open_fds():  # nothing inherited beyond the two pipe ends
        if fd > 2 and fd not in (rfd, wfd):
            try:
                os.close(fd)
            except OSError:
                pass
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    threading.stack_size(512 * 1024)  # thread stacks count against RLIMIT_AS
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in the host's terminal is the host's
    os.chdir("/")
    confine = None if "--unconfined" in options else _load_by_path(
        "poet_worker_confine", os.path.join(HERE, "confine.py"))
    worker = Worker(os.fdopen(rfd, "rb", buffering=1 << 16), wfd, sandbox_dir, confine)
    worker.raw = "--test-raw" in options
    layers = {}
    if confine is not None:
        # One thread still (user namespaces need it); every later thread inherits.
        layers = confine.apply([wfd], parent, extra_readable=[sandbox_dir], skip=skip)
    _watch_parent(parent)
    worker.started(layers)
    worker.serve()


def _open_fds():
    try:
        return [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        return list(range(3, 256))


if __name__ == "__main__":
    main()
