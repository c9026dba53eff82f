"""The LLM generator through litellm's real HTTP path, against a scripted local server.

Everything here runs litellm for real (imported once per session, ~4 s) against
tests/fake_openai.py: only the model's answers are scripted. Each test says what
the "model" answers and checks what was sent, what was stored (or not), what the
version's metadata says, and what the program sees.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import threading
import time

import pytest

from fake_openai import Answer, Delay, FakeOpenAI, Garbage, Slow, Status, refused_port
from poet_runtime import settings
from poet_runtime.decorator import PoetConfig
from poet_runtime.enhanced import state_of
from poet_runtime.generate.builtin import GENERATOR_VERSION as BUILTIN_VERSION
from poet_runtime.generate.llm import GENERATOR_VERSION, LLMGenerator
from poet_runtime.generate.spec import spec_from_function
from poet_runtime.resolve import ensure_version
from poet_runtime.store import FunctionStore

TARGET = '''
from poet_runtime import poet


def add(a: int, b: int = 2) -> int:
    """Add two numbers.

    >>> add(10, 5)
    15
    """
    return a + b


def scale(values: list[float], factor: float = 2.0) -> list[float]:
    return [v * factor for v in values]


async def double(x: int) -> int:
    return x * 2


async def ticks(n: int):
    yield n


def push(items: list[int], x: int = 1) -> int:
    items.append(x)
    return len(items)
'''

ENHANCED = '''
from poet_runtime import poet


@poet()
def add(a: int, b: int = 2) -> int:
    """Add two numbers."""
    return a + b
'''


@pytest.fixture(scope="module")
def fake():
    server = FakeOpenAI().start()
    yield server
    server.stop()


@pytest.fixture
def env(poet_home, fake, write_module, monkeypatch):
    """Model configured, store and cache in tmp; returns a helper namespace."""
    fake.script(default=Status(500, "nothing scripted"))
    fake.context = 16384  # said at /props, as llama.cpp's server does
    monkeypatch.setenv("POET_LLM_WORKER", "off")  # generation in this process (test_llm_pending has the worker)
    settings.override(model="openai/fake-coder", api_base=fake.api_base)

    class Env:
        home = poet_home
        server = fake
        module = write_module("llm_gen_target", TARGET)

        @staticmethod
        def generator(**overrides):
            values = dict(backoff_base_s=0.01, probe_timeout_s=0.5, worker=False, ask_backoff_s=0.0)
            values.update(overrides)
            return LLMGenerator.from_settings(settings.get_settings(), **values)

        @classmethod
        def generate(cls, name="add", generator=None, **config):
            function = getattr(cls.module, name)
            spec = spec_from_function(function)
            return ensure_version(spec, PoetConfig.from_kwargs(f"llm_gen_target:{name}", **config),
                                  module_file=cls.module.__file__, generator=generator or cls.generator())

    yield Env
    fake.script(default=Status(500, "nothing scripted"))


def example(request: dict) -> str:
    """The built-in version the prompt gives as its example: a valid answer."""
    first_request = request["messages"][1]["content"].split("## Your previous answer")[0]
    return re.findall(r"```python\n(.*?)```", first_request, re.S)[-1]


def fenced(change=lambda code: code, before="Here is the improved module.\n\n", after="\n\nIt keeps the contract."):
    return Answer(lambda request: f"{before}```python\n{change(example(request))}```{after}")


VALID = fenced()
LLM = f"llm-{GENERATOR_VERSION}"
BUILTIN = f"builtin-{BUILTIN_VERSION}"


def enforce_returns(expression):
    """An answer whose Enforce returns ``expression`` instead of the result itself."""
    return lambda code: code.replace("\n    return result\n", f"\n    return {expression}\n")


def operate_returns(expression):
    """An answer whose operate_prime computes ``expression`` instead of calling the logic (transformed)."""
    def change(code):
        start = code.index("def operate_prime(logic, args, kwargs):")
        end = code.index("\n\n\ndef ", start)
        return code[:start] + f"def operate_prime(logic, args, kwargs):\n    return {expression}" + code[end:]
    return change


def metadata(version) -> dict:
    return json.loads((version.path / "metadata.json").read_text())


# -- answers ---------------------------------------------------------------------------------

def test_valid_answer_is_stored_with_its_metadata(env):
    env.server.script(VALID)
    version = env.generate()
    assert len(env.server.requests) == 1
    sent = env.server.requests[0]
    prompt = sent["messages"][1]["content"]
    assert sent["model"] == "fake-coder" and sent["temperature"] <= 0.2
    assert "return a + b" in prompt and "Domain: base" in prompt and "Objective: none" in prompt
    assert "def perceive(a, b=UNSET)" in prompt and "def operate_prime(logic, args, kwargs)" in prompt  # contract 2
    meta = metadata(version)
    assert meta["generator"] == LLM and meta["model"] == "openai/fake-coder"
    assert meta["tokens"] == {"prompt": 100, "completion": 50} and meta["latency_ms"] > 0
    assert meta["checks"] == ["syntax", "structure", "signature", "hygiene", "compile", "static_policy", "probe"]
    assert "transformed" not in meta
    assert meta["probe"]["agreed"] >= 3 and meta["attempts"][0]["result"] == "accepted"
    assert len(meta["prompt_hash"]) == 64


def test_unfenced_answer_with_prose_around_it(env):
    env.server.script(Answer(lambda r: "Sure, here it is:\n" + example(r) + "\nHope this helps, it is better now."))
    version = env.generate()
    assert metadata(version)["generator"] == LLM
    assert "Hope this helps" not in version.code()


def test_async_function_is_probed(env):
    env.server.script(fenced(enforce_returns("result * 3")), VALID)
    version = env.generate("double")
    meta = metadata(version)
    assert meta["attempts"][0]["reason"] == "probe_mismatch"
    assert meta["generator"] == LLM and meta["checks"][-1] == "probe" and meta["is_async"] is True


def test_when_the_builtin_generator_cannot_either_nothing_is_asked(env):
    from poet_runtime.errors import GenerationError

    env.server.script(VALID)
    with pytest.raises(GenerationError) as failed:
        env.generate("ticks")  # an async generator function
    assert failed.value.reason == "unsupported" and env.server.requests == []


def test_objective_reaches_the_prompt(env):
    env.server.script(VALID)
    version = env.generate(optimize_for="latency")
    prompt = env.server.requests[0]["messages"][1]["content"]
    assert "Objective: latency" in prompt and "def train(call, result, metrics)" in prompt
    assert metadata(version)["generator"] == LLM


BAD_ANSWERS = {  # case -> (the check that refuses it, how the valid answer is spoiled)
    "syntax": ("syntax", lambda code: code.replace("def perceive(a, b=UNSET):", "def perceive(a, b=UNSET)")),
    "missing function": ("structure", lambda code: code.replace("def enforce(result):", "def enforce_result(result):")),
    "signature": ("signature", lambda code: code.replace("def perceive(a, b=UNSET):", "def perceive(a, c=UNSET):")),
    "static_policy": ("static_policy", lambda code: "import subprocess\n" + code),
    "probe_mismatch": ("probe_mismatch", enforce_returns("result + 1")),
    "probe_timeout": ("probe_timeout", lambda code: code.replace(
        "def enforce(result):\n", "def enforce(result):\n    while True:\n        pass\n")),
    "logic run twice": ("probe_logic", lambda code: code.replace(
        "result = logic(*args, **kwargs)", "result = logic(*args, **kwargs)\n            logic(*args, **kwargs)")),
    # Contract 1: the user's logic pasted into the module.
    "contract 1": ("structure", lambda code: code + "\n\ndef add(a, b=2):\n    return a + b\n"),
    # A re-implementation under the tests' trusted policy, which runs generated code in-process.
    "transformed in-process": ("transformed", operate_returns(
        "args[0] + (args[1] if len(args) > 1 else kwargs.get('b', 2))")),
}


@pytest.mark.parametrize("case", list(BAD_ANSWERS))
def test_refused_answer_is_asked_again_with_its_reason(env, case, caplog):
    reason, change = BAD_ANSWERS[case]
    env.server.script(fenced(change), VALID)
    with caplog.at_level(logging.INFO, logger="poet_runtime"):
        version = env.generate()
    assert len(env.server.requests) == 2
    second = env.server.requests[1]["messages"]
    # The refusal and the offending lines, never the whole answer: the re-ask is the first request's size.
    assert [m["role"] for m in second] == ["system", "user"]
    assert f"rejected by the check `{reason}`" in second[-1]["content"]
    first = env.server.requests[0]["messages"][-1]["content"]
    assert len(second[-1]["content"]) < len(first) + 1500
    meta = metadata(version)
    assert meta["generator"] == LLM
    assert [a["result"] for a in meta["attempts"]] == ["refused", "accepted"]
    assert meta["attempts"][0]["reason"] == reason
    assert f"answer 1 refused ({reason})" in caplog.text
    assert version.code() == example(env.server.requests[0])  # the valid answer, not the refused one


def test_restricted_backend_compile_is_checked(env, monkeypatch):
    monkeypatch.setenv("POET_POLICY", "default")  # the shipped default runs generated code restricted
    private = fenced(enforce_returns("result if result != 'x' else result._x"))
    env.server.script(private, VALID)
    version = env.generate()
    meta = metadata(version)
    assert meta["attempts"][0]["reason"] == "compile" and "restricted backend" in meta["attempts"][0]["detail"]
    assert meta["generator"] == LLM and "compile_restricted" in meta["checks"]


def test_three_refusals_fall_back_to_the_builtin_version(env, caplog):
    bad = fenced(BAD_ANSWERS["probe_mismatch"][1])
    env.server.script(bad, bad, bad)
    with caplog.at_level(logging.WARNING, logger="poet_runtime"):
        version = env.generate()
    assert len(env.server.requests) == 3
    meta = metadata(version)
    assert meta["generator"] == BUILTIN and meta["fallback"]["reason"] == "answers_refused"
    assert [a["reason"] for a in meta["attempts"]] == ["probe_mismatch"] * 3
    assert "result + 1" not in version.code()
    assert "3 answers refused" in caplog.text
    # Refused answers are cached too, and the version is kept under the model's key: no more calls.
    again = env.generate()
    assert again.number == version.number and len(env.server.requests) == 3


# -- transformed answers (operate_prime re-implements the logic) -------------------------------

TRANSFORMED_ADD = operate_returns("args[0] + (args[1] if len(args) > 1 else kwargs.get('b', 2))")


def test_transformed_answer_for_a_pure_function_runs_in_the_sandbox(env, monkeypatch, capsys):
    monkeypatch.setenv("POET_POLICY", "default")  # generated code runs in restricted workers
    monkeypatch.setenv("COLUMNS", "200")  # the versions table's rows on one line each
    env.server.script(fenced(TRANSFORMED_ADD))
    version = env.generate()
    meta = metadata(version)
    assert meta["generator"] == LLM and meta["transformed"] is True
    assert "purity" in meta["checks"] and meta["checks"][-1] == "probe"
    assert meta["probe"]["transformed"] is True and meta["probe"]["state_checked"] == meta["probe"]["samples"] >= 3
    from poet_runtime.cli import main

    assert main(["versions", "llm_gen_target:add"]) == 0
    assert f"{LLM} (transformed)" in capsys.readouterr().out


def test_transformed_version_serves_calls_from_the_sandbox(env, monkeypatch, write_module):
    import poet_runtime

    monkeypatch.setenv("POET_POLICY", "default")
    settings.override(generate="sync")
    env.server.script(fenced(TRANSFORMED_ADD))
    add = _enhanced(env, write_module, "llm_transformed_mod")
    assert add(1, 2) == 3 and add(5) == 7
    state = state_of(add)
    assert metadata(state.version)["transformed"] is True
    record = poet_runtime.last_execution()
    assert record.status == "ok" and not record.fell_back and record.backend == "restricted"


def test_transformed_answer_for_a_function_that_mutates_is_refused(env, monkeypatch):
    monkeypatch.setenv("POET_POLICY", "default")
    env.server.script(fenced(operate_returns("len(args[0]) + 1")), VALID)
    version = env.generate("push")
    meta = metadata(version)
    first = meta["attempts"][0]
    assert first["reason"] == "transformed" and "not shown to be pure" in first["detail"]
    assert "calls .append() on the argument items" in first["detail"]
    assert "call logic(*args, **kwargs)" in env.server.requests[1]["messages"][-1]["content"]
    assert meta["generator"] == LLM and "transformed" not in meta


# -- transport -------------------------------------------------------------------------------

def test_429_then_success(env):
    env.server.script(Status(429, "slow down", {"Retry-After": "0"}), VALID)
    version = env.generate()
    assert len(env.server.requests) == 2
    meta = metadata(version)
    assert meta["generator"] == LLM
    assert meta["attempts"][0]["transport_errors"][0]["status"] == 429


def test_garbage_json_is_retried(env):
    env.server.script(Garbage(), VALID)
    version = env.generate()
    assert len(env.server.requests) == 2 and metadata(version)["generator"] == LLM


def test_500_until_the_end_falls_back_and_asks_again_next_time(env):
    env.server.script(default=Status(500, "down"))
    version = env.generate()
    assert len(env.server.requests) == 3  # one request per attempt, a back-off between them
    meta = metadata(version)
    assert meta["generator"] == BUILTIN and meta["fallback"]["reason"] == "llm_unavailable"
    assert [a["transport_errors"][0]["status"] for a in meta["attempts"]] == [500, 500, 500]
    assert [a["requests"] for a in meta["attempts"]] == [1, 1, 1]
    # Stored under the built-in generator's key: the next process asks the model again.
    env.server.script(VALID)
    again = env.generate()
    assert len(env.server.requests) == 1 and metadata(again)["generator"] == LLM


def test_400_is_not_retried(env):
    env.server.script(Status(400, "bad request"))
    version = env.generate()
    assert len(env.server.requests) == 1
    assert metadata(version)["fallback"]["reason"] == "llm_error"


def test_timeout_closes_the_request_and_asks_no_more(env):
    # A slow single-slot server: the answer streams slower than the request's time allows.
    env.server.script(Slow(VALID, interval=0.1, pieces=30), default=Slow(VALID, interval=0.1, pieces=30))
    started = time.perf_counter()
    version = env.generate(generator=env.generator(request_timeout_s=0.5))
    assert time.perf_counter() - started < 2.0
    meta = metadata(version)
    assert meta["generator"] == BUILTIN and meta["fallback"]["reason"] == "llm_timeout"
    assert len(env.server.requests) == 1 and len(meta["attempts"]) == 1  # never the same request again
    env.server.wait_idle()
    assert env.server.cancelled == 1 and env.server.finished == 0  # the server stopped: the client left


def test_refused_connection(env):
    settings.override(api_base=f"http://127.0.0.1:{refused_port()}/v1")
    version = env.generate()
    meta = metadata(version)
    assert meta["generator"] == BUILTIN and meta["fallback"]["reason"] == "llm_unavailable"
    assert [a["result"] for a in meta["attempts"]] == ["unavailable"] * 3
    assert env.server.requests == []


# -- cache, locks, slots ---------------------------------------------------------------------

def test_cached_answer_makes_no_request(env):
    env.server.script(VALID)
    first = env.generate()
    shutil.rmtree(env.home)  # the stored version is gone; the answer cache is not
    env.server.script(VALID)
    second = env.generate()
    assert env.server.requests == []
    assert second.code() == first.code()
    assert metadata(second)["attempts"][0]["cached"] is True


def test_one_generation_per_function_across_threads(env):
    env.server.script(Delay(0.3, VALID), default=Delay(0.3, VALID))
    results = []
    threads = [threading.Thread(target=lambda: results.append(env.generate())) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(env.server.requests) == 1
    assert {version.number for version in results} == {1}


@pytest.mark.parametrize("slots", [1, 2])
def test_concurrent_generations_are_limited(env, slots):
    env.server.wait_idle()
    # Long enough that the other generation's request starts while this one is answered, on a busy machine too.
    env.server.script(default=Delay(1.5, VALID))
    generator = env.generator(max_concurrent=slots)
    threads = [threading.Thread(target=env.generate, args=(name, generator)) for name in ("add", "scale")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(env.server.requests) == 2
    assert env.server.max_in_flight == slots


# -- generation modes ------------------------------------------------------------------------

def _enhanced(env, write_module, name):
    module = write_module(name, ENHANCED)
    assert state_of(module.add) is not None
    return module.add


def test_sync_mode_first_call_is_enhanced(env, write_module):
    settings.override(generate="sync")
    env.server.script(VALID)
    add = _enhanced(env, write_module, "llm_sync_mod")
    assert add(1, 2) == 3
    state = state_of(add)
    assert state.version_number == 1 and metadata(state.version)["generator"] == LLM
    assert state.stats.enhanced_calls == 1


def test_sync_mode_waits_at_most_generation_timeout(env, write_module):
    settings.override(generate="sync", generation_timeout=0.3)
    env.server.script(Delay(1.0, VALID))
    add = _enhanced(env, write_module, "llm_sync_slow")
    started = time.perf_counter()
    assert add(1, 2) == 3  # the original, after waiting 0.3 s
    waited = time.perf_counter() - started
    assert 0.25 < waited < 0.9
    state = state_of(add)
    assert state.stats.fallbacks["generating"] == 1
    state.background.join(10)  # generation went on
    assert add(2, 2) == 4 and state.version_number == 1 and state.stats.enhanced_calls == 1


def test_background_mode_first_call_runs_the_original(env, write_module):
    settings.override(generate="background")
    env.server.script(Delay(0.2, VALID))
    add = _enhanced(env, write_module, "llm_background_mod")
    assert add(1, 2) == 3
    state = state_of(add)
    assert state.stats.fallbacks["generating"] == 1
    state.background.join(10)
    assert add(3, 4) == 7 and state.version_number == 1 and state.stats.enhanced_calls == 1
    assert len(env.server.requests) == 1


def test_off_mode_uses_only_stored_versions(env, write_module):
    settings.override(generate="off")
    add = _enhanced(env, write_module, "llm_off_mod")
    assert add(1, 2) == 3
    state = state_of(add)
    assert state.disabled[0] == "not_generated" and env.server.requests == []
    # Generated ahead of time (``poet enhance``): the off mode then uses it, still without a request.
    env.server.script(VALID)
    settings.override(generate="sync")
    poet_add = _enhanced(env, write_module, "llm_off_mod2")
    ensure_version(spec_from_function(state_of(poet_add).original), PoetConfig.from_kwargs("llm_off_mod2:add"),
                   module_file=state_of(poet_add).original.__globals__["__file__"], generator=env.generator())
    settings.override(generate="off")
    env.server.script()
    fresh = _enhanced(env, write_module, "llm_off_mod2")
    assert fresh(2, 3) == 5 and state_of(fresh).version_number == 1 and env.server.requests == []


def test_fallback_version_serves_calls(env, write_module):
    settings.override(generate="sync")
    bad = fenced(BAD_ANSWERS["syntax"][1])
    env.server.script(bad, bad, bad)
    add = _enhanced(env, write_module, "llm_fallback_mod")
    assert add(5, 6) == 11
    state = state_of(add)
    assert metadata(state.version)["generator"] == BUILTIN and state.stats.enhanced_calls == 1
    store = FunctionStore.open("llm_fallback_mod", "add", state.original.__globals__["__file__"])
    assert [v.metadata["generator"] for v in store.versions()] == [BUILTIN]
