"""Our overhead per LLM generation: from a function's first call to its enhanced version in use.

A scripted OpenAI-compatible server on 127.0.0.1 (tests/fake_openai.py) answers at
once with a valid module, so what is left is ours: prompt building, the request
through litellm, extraction, checks, probe runs, storing and loading. The model's
own latency is what the client measured for the request; it is subtracted and
reported apart. Baseline in the same run: the built-in generator (no model) on
the same functions. litellm's import (~4 s, once per process) and its first
request are warmed up before timing.

    python benchmarks/bench_llm_generation.py [--functions 20]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
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
    example = re.findall(r"```python\n(.*?)```", request["messages"][1]["content"], re.S)[-1]
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--functions", type=int, default=20)
    options = parser.parse_args()
    count = options.functions

    import poet_runtime
    from poet_runtime import settings

    work = Path(tempfile.mkdtemp(prefix="poet-bench-llm-"))
    policies = {"none": "trusted"}
    if restricted_landed():
        # The restricted backend in this process (a policy stating no CPU/memory/wall limit),
        # and in its worker pool (the shipped default policy).
        policies["restricted (in-process)"] = str(work / "bench_restricted.toml")
        Path(policies["restricted (in-process)"]).write_text(RESTRICTED_POLICY)
        policies["restricted (worker, default policy)"] = "default"
    else:
        print("the restricted backend has not landed: probe runs in backend none only")
    server = FakeOpenAI().start()
    server.script(default=Answer(valid))
    for name in list(os.environ):
        if name.startswith("POET_"):
            del os.environ[name]
    folder = work / "mods"
    folder.mkdir()
    sys.path.insert(0, str(folder))
    poet_runtime.enable(hook=False)
    print(f"bench_llm_generation: {count} functions each, sync mode, medians over functions")
    for number, (backend, policy) in enumerate(policies.items()):
        os.environ["POET_POLICY"] = policy  # the policy module reads it from the environment
        results = {}
        for label, model in (("builtin", None), ("llm", "openai/fake-coder")):
            tag = f"{label}{number}"
            settings.override(home=work / f"home-{tag}", cache_dir=work / f"cache-{tag}", model=model,
                              api_base=server.api_base if model else None, generate="sync")
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
        assert all(m["generator"] == "llm-1" for m in metas), [m.get("fallback") for m in metas]
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


if __name__ == "__main__":
    main()
