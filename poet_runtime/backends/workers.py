"""A pool of pre-started worker processes for the ``restricted`` backend.

Why: CPU and memory limits (and a wall-clock limit that really stops blocking
code) need a process boundary; starting a process per call costs tens of ms, so
workers are started ahead and reused. The pool owns the two hard guarantees the
worker cannot give itself: a call that exceeds ``wall_ms`` gets its worker killed
(SIGKILL), and a worker that died, was killed or asked to retire is never reused;
a fresh one is started in the background so the next call finds one warm.

Messages are JSON lines (``sandbox/harness/worker_codec.py``); replies are bounded
in size, so a flooding worker cannot exhaust the host's memory. A call may take
several lines each way (the worker asks for the user's logic, which runs in the
host); ``restricted_worker`` holds the worker for the whole conversation.

Confinement (``sandbox/harness/confine.py``): the worker's hello line lists the OS
layers it applied; a worker lacking one that a loaded policy demands
(``os_sandbox.demanded``) is refused. Workers are started from one long-lived
thread, because the worker's ``PR_SET_PDEATHSIG`` fires when the thread that
started it ends. A worker whose hard limits belong to another policy declines a
request before running anything; that surfaces as ``SendFailed`` (nothing ran:
try another worker).

Fork: a forked child drops the parent's workers (they are the parent's: not
killed, not waited for) and starts its own on demand.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time
import weakref

from poet_runtime.backends import os_sandbox
from poet_runtime.resources import sandbox_dir

READY_TIMEOUT_S = 20.0
DEFAULT_MAX_REPLY = 64 * 1024 * 1024  # when the policy states no max_output_kb


class WorkerDied(Exception):
    def __init__(self, detail: str, returncode: int | None):
        super().__init__(detail)
        self.returncode = returncode


class SendFailed(WorkerDied):
    """The worker was already gone before the request reached it: nothing ran, so
    the caller may safely try another worker."""


class MalformedReply(WorkerDied):
    """The worker wrote a line that is not a protocol message; it has been killed."""


class ReplyTimeout(Exception):
    pass


class ReplyTooLarge(Exception):
    pass


class _Spawner:
    """Starts worker processes from one thread that lives as long as the process.

    Why: a worker's parent-death signal is tied to the host thread that forked it;
    pool threads come and go, so a worker started by one would be killed when that
    thread ends. After a fork the child gets its own spawner on first use."""

    def __init__(self):
        self.pid = None
        self.lock = threading.Lock()
        self.jobs = None

    def popen(self, argv):
        with self.lock:
            if self.pid != os.getpid():
                import queue

                self.jobs = queue.SimpleQueue()
                self.pid = os.getpid()
                threading.Thread(target=self._run, args=(self.jobs,), daemon=True, name="poet-worker-spawner").start()
            jobs = self.jobs
        done = threading.Event()
        box = []
        jobs.put((argv, box, done))
        done.wait()
        if isinstance(box[0], BaseException):
            raise box[0]
        return box[0]

    @staticmethod
    def _run(jobs):
        while True:
            argv, box, done = jobs.get()
            try:
                box.append(subprocess.Popen(
                    argv,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    # Nothing of the host's environment (secrets) goes in. One malloc arena:
                    # each thread's own would reserve 64 MB of address space, which the
                    # worker's hard RLIMIT_AS counts.
                    env={"LC_ALL": "C.UTF-8", "MALLOC_ARENA_MAX": "1"},
                    cwd="/",
                    close_fds=True,
                    start_new_session=True,  # the terminal's signals are the host's
                ))
            except BaseException as error:  # noqa: B902 - handed to the caller
                box.append(error)
            done.set()


_spawner = _Spawner()


class Worker:
    """One worker process and the enhancements it has loaded.

    ``options`` are for tests only (``--skip=layer,...``, ``--test-raw``,
    ``--unconfined``); the pool never passes any."""

    def __init__(self, codec, options=()):
        self.codec = codec
        harness = sandbox_dir() / "harness" / "worker.py"
        argv = [sys.executable, "-I", "-B", str(harness), str(sandbox_dir())]
        self.proc = _spawner.popen([*argv, *(options or os_sandbox.worker_options())])
        self.wfd = self.proc.stdin.fileno()
        self.rfd = self.proc.stdout.fileno()
        self.poller = select.poll()
        self.poller.register(self.rfd, select.POLLIN | select.POLLHUP | select.POLLERR)
        self.buffer = b""
        self.last_size = 0  # bytes of the last line read
        self.loaded: dict[str, int] = {}  # enhancement key -> configuration generation
        self.alive = True
        try:
            hello = self.codec.loads(self.read_line(time.monotonic() + READY_TIMEOUT_S, 16384))
        except BaseException:
            self.kill()
            raise
        if not hello.get("ready"):
            self.kill()
            raise WorkerDied("worker did not start", self.proc.poll())
        self.layers = hello.get("layers") if isinstance(hello.get("layers"), dict) else {}
        lacking = os_sandbox.check_worker(self.layers) if not options else None
        if lacking:
            self.kill()
            raise WorkerDied(lacking, None)

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.wfd, view):]
        except OSError as error:
            self.alive = False
            raise SendFailed(f"worker pipe closed: {error}", self.proc.poll()) from None

    def read_line(self, deadline: float | None, max_bytes: int) -> bytes:
        while True:
            end = self.buffer.find(b"\n")
            if end >= 0:
                line, self.buffer = self.buffer[: end + 1], self.buffer[end + 1 :]
                self.last_size = end + 1
                return line
            if len(self.buffer) > max_bytes:
                raise ReplyTooLarge(f"reply larger than {max_bytes} bytes")
            if deadline is None:
                events = self.poller.poll()
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ReplyTimeout()
                events = self.poller.poll(max(1, int(remaining * 1000 + 0.999)))
                if not events:
                    continue
            chunk = os.read(self.rfd, 1 << 16)
            if not chunk:
                self.kill()
                raise WorkerDied("worker exited", self.proc.returncode)
            self.buffer += chunk

    def request(self, message: bytes, deadline: float | None, max_bytes: int) -> dict:
        self.send(message)
        return self.reply(deadline, max_bytes)

    def reply(self, deadline: float | None, max_bytes: int) -> dict:
        """The next message from the worker (``max_bytes`` bounds the line)."""
        line = self.read_line(deadline, max_bytes)
        try:
            reply = self.codec.loads(line)
        except ValueError as error:  # not JSON, not UTF-8, not an object
            self.kill()
            raise MalformedReply(f"worker sent a malformed line ({error})", self.proc.returncode) from None
        if reply.get("declined") is True:  # its hard limits are another policy's: nothing ran
            self.kill()
            raise SendFailed("the worker's hard limits belong to another policy", self.proc.returncode)
        return reply

    def interrupt(self) -> None:
        """SIGKILL only, from any thread: a thread blocked reading this worker then
        sees it exit and cleans up (the pipes are closed there, never under a reader)."""
        self.alive = False
        if self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def kill(self) -> None:
        self.alive = False
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass


class WorkerPool:
    """Up to ``size`` workers computing at once; ``acquire`` blocks while all are busy.

    A worker whose call waits for the host (the user's logic runs there: ``park``)
    does not count against ``size``: while it waits, another may be started (up to
    ``MAX_PARKED_EXTRA`` more), so that a logic that calls another enhanced function,
    or many concurrent async calls awaiting I/O in their logic, neither deadlock nor
    queue behind each other. Extra workers are retired as they come back.
    """

    MAX_PARKED_EXTRA = 16

    def __init__(self, codec, size: int = 2):
        _pools.add(self)
        self.codec = codec
        self.size = size
        self.idle: list[Worker] = []
        self.count = 0  # workers that exist or are being started
        self.parked = 0  # workers in a call that waits for the host's logic
        self.cond = threading.Condition()
        self.closed = False
        self.errors = 0
        self.waiters = 0

    def capacity(self) -> int:
        return self.size + min(self.parked, self.MAX_PARKED_EXTRA)

    def park(self) -> None:
        """A worker's call now waits for the host: one more may be started meanwhile."""
        with self.cond:
            self.parked += 1
            if self.waiters:
                self.cond.notify_all()

    def unpark(self) -> None:
        with self.cond:
            self.parked -= 1

    def prestart(self) -> None:
        """Start workers up to ``size`` in the background."""
        with self.cond:
            missing = self.size - self.count
            self.count += max(0, missing)
        for _ in range(max(0, missing)):
            threading.Thread(target=self._start_one, daemon=True, name="poet-worker-start").start()

    def _start_one(self) -> None:
        try:
            worker = Worker(self.codec)
        except Exception:
            with self.cond:
                self.count -= 1
                self.errors += 1
                self.cond.notify_all()
            return
        with self.cond:
            if self.closed:
                worker.kill()
                self.count -= 1
                return
            self.idle.append(worker)
            self.cond.notify_all()

    def acquire(self, timeout: float = 60.0) -> Worker:
        try:
            return self.idle.pop()  # fast path: atomic under the GIL
        except IndexError:
            pass
        deadline = time.monotonic() + timeout
        with self.cond:
            # Counted before looking at `idle`, so a release that appends after our
            # look is sure to see a waiter and notify (see release).
            self.waiters += 1
            try:
                while True:
                    if self.closed:
                        raise RuntimeError("worker pool is closed")
                    if self.idle:
                        return self.idle.pop()
                    if self.count < self.capacity():
                        self.count += 1
                        break
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError("no worker became free")
                    self.cond.wait(min(remaining, 0.5))
            finally:
                self.waiters -= 1
        try:
            return Worker(self.codec)
        except BaseException:
            with self.cond:
                self.count -= 1
                self.cond.notify_all()
            raise

    def release(self, worker: Worker, retire: bool = False) -> None:
        if retire or not worker.alive or self.closed:
            worker.kill()
            with self.cond:
                self.count -= 1
                self.cond.notify_all()
            if not self.closed:
                self.prestart()  # a warm replacement for the next call
            return
        if self.count > self.capacity():  # an extra, started while others waited for the host
            worker.kill()
            with self.cond:
                self.count -= 1
                self.cond.notify_all()
            return
        self.idle.append(worker)
        if self.waiters:
            with self.cond:
                self.cond.notify()

    def broadcast(self, message: dict) -> list[dict]:
        """Send a message to the idle workers that loaded ``message['key']`` (unload,
        observations); returns their replies. Busy workers are skipped."""
        with self.cond:
            workers = [w for w in self.idle if message["key"] in w.loaded]
            for w in workers:
                self.idle.remove(w)
        replies = []
        for worker in workers:
            retire = False
            try:
                reply = worker.request(self.codec.dumps(message), time.monotonic() + 5.0, 1 << 20)
                retire = bool(reply.get("retire")) or not reply.get("ok")
                replies.append(reply)
            except Exception:
                retire = True
            if message.get("op") == "unload":
                worker.loaded.pop(message["key"], None)
            self.release(worker, retire=retire)
        return replies

    def close(self) -> None:
        with self.cond:
            self.closed = True
            idle, self.idle = self.idle, []
            self.count -= len(idle)
            self.cond.notify_all()
        for worker in idle:
            worker.kill()


# Fork safety: a child must not use (nor kill, nor wait for) its parent's workers.
_pools: "weakref.WeakSet[WorkerPool]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for pool in list(_pools):
        pool.cond = threading.Condition()
        for worker in pool.idle:
            worker.alive = False
            for stream in (worker.proc.stdin, worker.proc.stdout):
                try:
                    stream.close()  # our copies of the parent's pipe ends only
                except OSError:
                    pass
            worker.proc.returncode = 0  # never waited for: it is the parent's child
        pool.idle = []
        pool.count = 0
        pool.parked = 0
        pool.waiters = 0
    _spawner.lock = threading.Lock()
    _spawner.pid = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
