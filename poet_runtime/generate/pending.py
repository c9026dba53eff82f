"""Generation that survives the program: a pending job, a detached generator process, its answer in the store.

A slow local model takes minutes per answer (and litellm's import tens of seconds), longer
than most programs run; a generation inside the program's process died with it and the next
run started over. So outside ``enhance`` the LLM generator hands the work to a generator
process of its own (``python -m poet_runtime.generate.pending JOB``, in its own session, so
the program's exit or Ctrl-C does not stop it) and records the job beside the function's
versions:

- ``<store>/<function>/pending.json``: key, function, file, config, the worker's pid, when;
- ``pending-<key>.source``: the module's text the spec was read from (the worker reads the
  same text, so it computes the same key);
- ``pending-<key>.result.json``: the worker's generated module and metadata, written
  atomically when it is done.

The process that started it waits for the result (in its background thread; a first call
waits only ``POET_GENERATION_TIMEOUT``) and stores it as usual. A program that exits right
after its first call waits at exit, at most ``HANDOVER_WAIT_S``, until its generation thread
has started the generator process (``expect_handover``), so the work is not lost with it. When that process is gone,
the worker stores the result itself, under the function's lock, so the next run finds the
version. A later process (or ``enhance``) that finds a live worker on the same key waits for
it instead of asking again; one that finds a dead worker without a result starts a new one
(the answer cache keeps what the model already said). Nothing here is mocked in the tests:
the worker is a real process talking to a real HTTP server.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid

log = logging.getLogger("poet_runtime")

POLL_S = 0.1
JOB = "pending.json"
HANDOVER_WAIT_S = 3.0  # at exit, how long a generation about to be handed to its process may take

_expected: dict[int, tuple] = {}  # thread ident -> (thread, Event set once the work is handed over)
_expected_lock = threading.Lock()
_atexit_registered = False


def expect_handover() -> None:
    """Called early in a program's generation thread: a program that exits right after its
    first call waits (at most HANDOVER_WAIT_S) until the generation is handed to its own
    process, instead of losing it with the thread."""
    global _atexit_registered
    thread = threading.current_thread()
    with _expected_lock:
        if thread.ident in _expected:
            return
        _expected[thread.ident] = (thread, threading.Event())
        if not _atexit_registered:
            import atexit

            atexit.register(_wait_for_handovers)
            _atexit_registered = True


def _handed_over() -> None:
    with _expected_lock:
        entry = _expected.pop(threading.current_thread().ident, None)
    if entry is not None:
        entry[1].set()


def _wait_for_handovers() -> None:
    deadline = time.monotonic() + HANDOVER_WAIT_S
    with _expected_lock:
        waiting = list(_expected.values())
    for thread, handed in waiting:
        while thread.is_alive() and not handed.is_set() and time.monotonic() < deadline:
            handed.wait(0.02)


def _folder(spec):
    from poet_runtime.store import FunctionStore

    return FunctionStore.open(spec.module, spec.qualname, spec.filename).folder


def _read_json(path):
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (finished, not yet reaped by its parent) is not working any more
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().split(b") ", 1)[-1][:1] != b"Z"
    except OSError:
        return True


def status(spec) -> dict | None:
    """The pending job of ``spec``'s function, with ``alive``; None when there is none."""
    job = _read_json(_folder(spec) / JOB)
    if job is None:
        return None
    return {**job, "alive": _alive(job.get("pid"))}


def generate_in_worker(generator, spec, config, domain, hints, *, spawn: bool = True):
    """The GeneratedCode for ``spec``, made by a generator process (started here unless a live
    one already works on the same key). ``spawn=False`` (``enhance``): join a live worker, else
    generate in this process."""
    try:
        return _generate_in_worker(generator, spec, config, domain, hints, spawn)
    finally:
        _handed_over()


def _generate_in_worker(generator, spec, config, domain, hints, spawn):
    from poet_runtime.generate.identity import version_key
    from poet_runtime.store import atomic_write

    folder = _folder(spec)
    folder.mkdir(parents=True, exist_ok=True)
    key = version_key(spec, config, generator, domain.version)
    result_path = folder / f"pending-{key}.result.json"
    found = _result(result_path)
    if found is not None:
        return found
    job = _read_json(folder / JOB)
    process = None
    if job is not None and job.get("key") == key and _alive(job.get("pid")):
        log.info("poet_runtime: %s: joining the generator process %s started %s", spec.function_id, job["pid"],
                 job.get("started"))
        _handed_over()
    elif not spawn or not _portable(hints):
        if job is not None and not _alive(job.get("pid")):
            _forget(folder, job)  # a generator process that died without a result: this one takes over
        return generator.generate_here(spec, config, domain, hints)
    else:
        from poet_runtime.generate.sources import remembered_source

        text = remembered_source(spec.filename) if spec.filename else None
        if text is None:  # nothing to hand over: the worker could not read the same function
            return generator.generate_here(spec, config, domain, hints)
        atomic_write(folder / f"pending-{key}.source", text)
        job = {"id": uuid.uuid4().hex, "key": key, "function": spec.function_id, "module": spec.module,
               "qualname": spec.qualname, "file": spec.filename, "config": _config_data(config),
               "sys_path": [p for p in sys.path if isinstance(p, str)], "model": generator.model,
               "hints": hints or None,
               "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "pid": None}
        atomic_write(folder / JOB, json.dumps(job, indent=2) + "\n")
        process = _spawn(folder / JOB, generator)
        job["pid"] = process.pid
        atomic_write(folder / JOB, json.dumps(job, indent=2) + "\n")
        _handed_over()  # the program may exit now: the generator process goes on
        log.info("poet_runtime: %s: generating in process %d (it goes on if this program exits)",
                 spec.function_id, process.pid)
    deadline = time.monotonic() + generator.attempts * (generator.request_timeout_s + generator.backoff_max_s) + 300
    pid = job.get("pid")
    while time.monotonic() < deadline:
        found = _result(result_path)
        if found is not None:
            return found
        running = process.poll() is None if process is not None else _alive(pid)
        if not running:
            found = _result(result_path)
            if found is not None:
                return found
            code = process.returncode if process is not None else None
            raise _failed(spec, f"the generator process {pid} ended without a result (exit status {code})")
        time.sleep(POLL_S)
    raise _failed(spec, f"the generator process {pid} gave no result in time")


def _forget(folder, job) -> None:
    for path in (folder / JOB, folder / f"pending-{job.get('key')}.source"):
        try:
            path.unlink()
        except OSError:
            pass


def _portable(hints) -> bool:
    """True when ``hints`` can go to the worker as JSON (samples and learned values; not a live original)."""
    if not hints:
        return True
    if "original" in hints:
        return False
    def plain(value):  # JSON has lists where the samples have tuples
        if isinstance(value, (list, tuple)):
            return [plain(item) for item in value]
        if isinstance(value, dict):
            return {key: plain(item) for key, item in value.items()}
        return value

    try:
        return json.loads(json.dumps(hints)) == plain(hints)
    except (TypeError, ValueError):
        return False


def _failed(spec, detail):
    from poet_runtime.errors import GenerationError

    return GenerationError("generation_failed", f"{spec.function_id}: {detail}")


def _config_data(config) -> dict:
    import dataclasses

    return {field.name: getattr(config, field.name) for field in dataclasses.fields(config)}


def _spawn(job_path, generator):
    from poet_runtime.settings import ENV_VARS, get_settings

    settings = get_settings()
    env = dict(os.environ)
    env["POET_ENABLED"] = "0"  # the worker generates; it does not run the user's program enhanced
    env["POET_LLM_WORKER"] = "off"
    for name, variable in ENV_VARS.items():
        value = getattr(settings, name, None)
        if name in ("enabled", "include", "exclude") or value is None:
            continue
        env[variable] = str(value)
    env["POET_MODEL"] = generator.model
    if generator.api_base:
        env["POET_API_BASE"] = generator.api_base
    if generator.api_key:
        env["POET_API_KEY"] = generator.api_key
    env["POET_LLM_REQUEST_TIMEOUT"] = repr(float(generator.request_timeout_s))
    if generator.cache_dir is not None:
        env["POET_CACHE_DIR"] = os.fspath(os.path.dirname(os.fspath(generator.cache_dir)))
    log_path = os.fspath(job_path) + ".log"
    with open(log_path, "ab") as output:
        return subprocess.Popen([sys.executable, "-m", "poet_runtime.generate.pending", os.fspath(job_path)],
                                stdin=subprocess.DEVNULL, stdout=output, stderr=output, env=env,
                                start_new_session=True, close_fds=True)


def _result(path):
    from poet_runtime.generate.builtin import GeneratedCode

    data = _read_json(path)
    if data is None or "code" not in data:
        return None
    return GeneratedCode(code=data["code"], logic_name=data.get("logic_name"), parameters=data["parameters"],
                         generator=data["generator"], template_version=data["template_version"],
                         details=data.get("details") or {}, notes=list(data.get("notes") or []))


class _Precomputed:
    """A generator that hands over what the worker made (same identity as the LLM generator)."""

    def __init__(self, generator, generated):
        self.id, self.version, self._generator, self._generated = generator.id, generator.version, generator, generated

    def key_data(self):
        return self._generator.key_data()

    def generate(self, spec, config, domain, hints=None):
        return self._generated


def work(job_path) -> int:
    """The generator process: generate, write the result, store it if nobody else did."""
    import dataclasses
    from pathlib import Path

    from poet_runtime.decorator import PoetConfig
    from poet_runtime.domains import get_domain
    from poet_runtime.generate.identity import version_key
    from poet_runtime.generate.llm import LLMGenerator
    from poet_runtime.generate.spec import remember_module_source, spec_from_source
    from poet_runtime.resolve import generate_version
    from poet_runtime.settings import get_settings
    from poet_runtime.store import FunctionStore, atomic_write

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    job_path = Path(job_path)
    job = _read_json(job_path)
    if job is None:
        print(f"poet_runtime: {job_path}: no job", file=sys.stderr)
        return 2
    folder = job_path.parent
    for entry in reversed(job.get("sys_path") or []):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    text = (folder / f"pending-{job['key']}.source").read_text(encoding="utf-8")
    remember_module_source(job["file"], text)
    spec = spec_from_source(job["module"], job["qualname"], text, job["file"])
    known = {field.name for field in dataclasses.fields(PoetConfig)}
    config = PoetConfig(**{k: v for k, v in job["config"].items() if k in known})
    domain = get_domain(config.domain)
    generator = LLMGenerator.from_settings(get_settings(), worker=False)
    key = version_key(spec, config, generator, domain.version)
    if key != job["key"]:
        print(f"poet_runtime: {job['function']}: the key computed here ({key}) is not the job's ({job['key']}): "
              "settings differ; nothing generated", file=sys.stderr)
        return 2
    store = FunctionStore.open(spec.module, spec.qualname, job["file"])
    hints = job.get("hints") or None  # what the program's generation was given (recorded calls, learned values)
    if hints and "samples" in hints:
        hints = {**hints, "samples": [(tuple(args), dict(kwargs)) for args, kwargs in hints["samples"]]}
    generated = generator.generate_here(spec, config, domain, hints)
    generated.details = {**generated.details, "pending": job["id"]}
    result = folder / f"pending-{key}.result.json"
    atomic_write(result, json.dumps({"code": generated.code, "logic_name": generated.logic_name,
                                     "parameters": generated.parameters, "generator": generated.generator,
                                     "template_version": generated.template_version, "details": generated.details,
                                     "notes": list(generated.notes)}, default=str) + "\n")
    with store.lock():  # the program that waits for the result holds it until it stored it
        if not any(v.metadata.get("pending") == job["id"] for v in store.versions()):
            generate_version(store, spec, config, domain=domain, generator=_Precomputed(generator, generated),
                             key=key, hints=hints)
            log.info("poet_runtime: %s: stored by the generator process", spec.function_id)
        current = _read_json(job_path)
        for path in (result, folder / f"pending-{key}.source"):
            try:
                path.unlink()
            except OSError:
                pass
        if current is not None and current.get("id") == job["id"]:
            try:
                job_path.unlink()
            except OSError:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(work(sys.argv[1]))
