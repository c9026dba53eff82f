"""Policy ``record_inputs``: a call's inputs are stored with its execution event only when the
policy allows it (size-capped, JSON only), and recorded real calls become the LLM probes' samples."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from learn_helpers import REPO, events_of, learn_env, module_dir  # noqa: F401
from poet_runtime import journal
from poet_runtime.learn import config, sink

MODULE = '''\
from poet_runtime import poet


@poet(domain="ml_monitoring", optimize_for="accuracy", policy={policy!r})
def detect(score: float, tag: str = "x", threshold: float = 0.9) -> dict:
    return {{"drift_detected": score > threshold, "score": score}}


@poet(policy={policy!r})
def echo(value):
    return 1


@poet(policy={policy!r})
async def double(x: int) -> int:
    return x * 2
'''

ADDER = '''\
from poet_runtime import poet


@poet(policy={policy!r})
def add(a: int, b: int = 2) -> int:
    """Add two numbers.

    >>> add(10, 5)
    15
    """
    return a + b
'''


def policy_file(tmp_path, record_inputs: bool | None):
    path = tmp_path / f"policy_{record_inputs}.toml"
    line = "" if record_inputs is None else f"record_inputs = {str(record_inputs).lower()}\n"
    path.write_text(f'version = 1\n[defaults]\nbackend = "none"\n{line}', encoding="utf-8")
    return str(path)


def executions(home, function: str) -> list[dict]:
    return [e["payload"] for e in events_of(home, "function.execution") if e["payload"]["function"] == function]


def test_inputs_are_recorded_with_their_event_capped_when_the_policy_allows(learn_env, module_dir, tmp_path):
    import asyncio

    config.override(events=True, max_input_bytes=200)
    module = module_dir("ri_on", MODULE.format(policy=policy_file(tmp_path, True)))
    module.detect(0.5, "zebra-7c1f")
    module.detect(0.95, tag="k" * 500)  # over the 200-byte cap
    module.detect(0.3, threshold=0.1)
    module.echo({1, 2})  # a set: not JSON
    assert asyncio.run(module.double(21)) == 42  # the async fast path records inputs too
    assert module.detect.__poet__.records_inputs is True  # decided at resolution, never per call
    sink.flush()
    detect = executions(learn_env, "ri_on:detect")
    assert [p["status"] for p in detect] == ["ok"] * 3
    assert detect[0]["inputs"] == {"args": [0.5, "zebra-7c1f"], "kwargs": {}}
    assert "inputs" not in detect[1] and detect[1]["inputs_dropped"] == "too_large"
    assert detect[2]["inputs"] == {"args": [0.3], "kwargs": {"threshold": 0.1}}
    assert detect[0]["output"] == {"drift_detected": False, "score": 0.5}  # outputs are kept as before
    echo, = executions(learn_env, "ri_on:echo")
    assert echo["inputs_dropped"] == "not_json" and "inputs" not in echo
    double, = executions(learn_env, "ri_on:double")
    assert double["inputs"] == {"args": [21], "kwargs": {}}

    # The in-memory path (feedback correlation) reads the same row.
    found, root = sink.find_execution(detect[2]["execution_id"])
    assert found["inputs"] == {"args": [0.3], "kwargs": {"threshold": 0.1}}

    # The events command shows them.
    env = {k: v for k, v in os.environ.items() if not k.startswith("POET_")}
    env.update(POET_HOME=str(learn_env), PYTHONPATH=str(REPO), PYTHONDONTWRITEBYTECODE="1")
    shown = subprocess.run([sys.executable, "-m", "poet_runtime", "events", "--json", "--function", "ri_on:detect"],
                           env=env, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    lines = [json.loads(line) for line in shown.stdout.splitlines() if line.strip()]
    assert lines[0]["payload"]["inputs"] == {"args": [0.5, "zebra-7c1f"], "kwargs": {}}

    # Probe samples: distinct, newest first, only those kept.
    from poet_runtime.learn import recorded_samples

    assert recorded_samples(learn_env, "ri_on:detect") == [([0.3], {"threshold": 0.1}), ([0.5, "zebra-7c1f"], {})]
    assert recorded_samples(learn_env, "ri_on:detect", limit=1) == [([0.3], {"threshold": 0.1})]


@pytest.mark.parametrize("record_inputs", [None, False])
def test_without_record_inputs_no_input_is_stored_anywhere(learn_env, module_dir, tmp_path, record_inputs):
    config.override(events=True)
    module = module_dir("ri_off", MODULE.format(policy=policy_file(tmp_path, record_inputs)))
    module.detect(0.5, "giraffe-93ad")
    module.detect(0.7, tag="giraffe-93ad")
    state = module.detect.__poet__
    assert state.records_inputs is False
    assert not getattr(state.recorder, "takes_inputs", False)
    sink.flush()
    found = executions(learn_env, "ri_off:detect")
    assert len(found) == 2 and all("inputs" not in p and "inputs_dropped" not in p for p in found)
    files = [path for path in learn_env.rglob("*") if path.is_file()]
    assert any(path.parent.name in ("pending", "processed") for path in files)
    for path in files:
        assert b"giraffe-93ad" not in path.read_bytes(), path
    from poet_runtime.learn import recorded_samples

    assert recorded_samples(learn_env, "ri_off:detect") == []


def test_groups_without_inputs_keep_the_older_layout_and_mixed_groups_read_back():
    row = ["ri:f", 1, None, 5, [1.7e9, 1.7e9], [1, 2], [0, 0], [1, 1], [2, 2], [3, 3], "ok", None, None, 0, None]
    rows = journal.group_rows(row)
    assert [len(r) for r in rows] == [15, 15]
    mixed = [*row, ['{"args":[1],"kwargs":{}}', 0]]
    header = {"process": "p", "pid": 1, "metadata": {}}
    payloads = [journal.expand(r, header, None)["payload"] for r in journal.group_rows(mixed)]
    assert payloads[0]["inputs"] == {"args": [1], "kwargs": {}} and "inputs" not in payloads[1]
    assert journal.expand(journal.group_row(mixed, 0), header, None)["payload"]["inputs"] == {"args": [1],
                                                                                             "kwargs": {}}


# -- recorded calls reach the LLM's probe runs --------------------------------------------------

@pytest.fixture(scope="module")
def fake():
    from fake_openai import FakeOpenAI

    server = FakeOpenAI().start()
    yield server
    server.stop()


def example(request: dict) -> str:
    return re.findall(r"```python\n(.*?)```", request["messages"][1]["content"], re.S)[-1]


def fenced(change=lambda code: code):
    from fake_openai import Answer

    return Answer(lambda request: f"```python\n{change(example(request))}```")


# Agrees with the original everywhere except on the recorded call add(4242, 1).
WRONG_ON_RECORDED = fenced(lambda code: code.replace("\n    return result\n", "\n    return result if result != 4243 else -1\n"))


def generate_with_model(fake, module, name: str, policy: str):
    from poet_runtime import settings
    from poet_runtime.decorator import PoetConfig
    from poet_runtime.generate.llm import LLMGenerator
    from poet_runtime.resolve import ensure_version

    settings.override(model="openai/fake-coder", api_base=fake.api_base)
    generator = LLMGenerator.from_settings(settings.get_settings(), backoff_base_s=0.01, probe_timeout_s=0.5)
    spec = getattr(module, name).__poet__.spec()
    version = ensure_version(spec, PoetConfig.from_kwargs(f"{module.__name__}:{name}", policy=policy),
                             module_file=module.__file__, generator=generator)
    return json.loads((version.path / "metadata.json").read_text())


def record_calls(module_dir, tmp_path, name: str, record_inputs: bool):
    from fake_openai import Status  # noqa: F401  (imported early: the fixture's module)

    config.override(events=True)
    policy = policy_file(tmp_path, record_inputs)
    module = module_dir(name, ADDER.format(policy=policy))
    assert module.add(4242, 1) == 4243  # generated by the built-in generator (no model yet), recorded
    assert module.add(3, 4) == 7
    sink.flush()
    return module, policy


def test_recorded_calls_are_probe_samples_and_catch_a_wrong_answer(learn_env, module_dir, tmp_path, fake):
    module, policy = record_calls(module_dir, tmp_path, "ri_llm_on", True)
    fake.script(WRONG_ON_RECORDED, fenced())
    meta = generate_with_model(fake, module, "add", policy)
    assert len(fake.requests) == 2, meta["attempts"]
    first, second = meta["attempts"]
    assert first["result"] == "refused" and first["reason"] == "probe_mismatch"
    # The refusal names the recorded call but never its values (they reach the model and metadata.json).
    assert first["detail"].startswith("on recorded call 2 (real data, not shown)")
    # (The wrong answer's own code says 4242; what we write never does.)
    assert all("4242" not in attempt.get("detail", "") for attempt in meta["attempts"])
    ours = [m["content"] for r in fake.requests for m in r["messages"] if m["role"] != "assistant"]
    assert ours and all("4242" not in text for text in ours)
    assert second["result"] == "accepted" and meta["generator"] == "llm-2" and meta["checks"][-1] == "probe"
    assert meta["probe"]["agreed"] >= 4  # the 2 recorded calls, the doctest example and the hint samples


def test_without_record_inputs_the_probes_never_see_real_calls(learn_env, module_dir, tmp_path, fake):
    module, policy = record_calls(module_dir, tmp_path, "ri_llm_off", False)
    fake.script(WRONG_ON_RECORDED)
    meta = generate_with_model(fake, module, "add", policy)
    # Nothing was recorded, so nothing exposes the answer's error on add(4242, 1): it is accepted.
    assert len(fake.requests) == 1 and meta["attempts"][0]["result"] == "accepted", meta["attempts"]
    assert "4242" not in json.dumps(meta)


def test_generate_version_adds_samples_only_when_allowed_and_keeps_given_ones(learn_env, module_dir, tmp_path,
                                                                               monkeypatch):
    from poet_runtime import resolve
    from poet_runtime.decorator import PoetConfig
    from poet_runtime.store import FunctionStore

    module, policy = record_calls(module_dir, tmp_path, "ri_hints", True)
    store = FunctionStore.open("ri_hints", "add", module.__file__)
    spec = module.add.__poet__.spec()
    llm = type("FakeLLM", (), {})()
    on = PoetConfig.from_kwargs("ri_hints:add", policy=policy)
    hints = resolve._with_recorded_samples({"params": {"x": 1}}, store, spec, on, llm)
    assert hints == {"params": {"x": 1}, "samples": [([3, 4], {}), ([4242, 1], {})]}
    given = {"samples": [((1, 2), {})]}
    assert resolve._with_recorded_samples(given, store, spec, on, llm) is given
    off = PoetConfig.from_kwargs("ri_hints:add", policy=policy_file(tmp_path, False))
    assert resolve._with_recorded_samples(None, store, spec, off, llm) is None  # the policy no longer allows it
    from poet_runtime.generate.builtin import BuiltinGenerator

    assert resolve._with_recorded_samples(None, store, spec, on, BuiltinGenerator()) is None  # no probes there


SUPPORT = '''\
from poet_runtime import poet


@poet(domain="customer_service", policy={policy!r})
def route(message: str, customer: dict) -> str:
    if "refund" in message:
        raise ValueError("cannot route for " + customer["email"])
    return "billing"
'''


def test_a_pii_domain_writes_no_personal_data_to_events_inputs_or_logs(learn_env, module_dir, tmp_path, caplog):
    """customer_service says pii = "redact": recorded inputs, error details and log lines about its
    calls go through poet_runtime.redact first; the call itself gets the real values."""
    config.override(events=True)
    module = module_dir("pii_route", SUPPORT.format(policy=policy_file(tmp_path, True)))
    customer = {"email": "jane.doe@example.com", "phone": "+1 415 555 0134"}
    with caplog.at_level("INFO", logger="poet_runtime"):
        assert module.route("where is my invoice", customer) == "billing"
        with pytest.raises(ValueError, match="jane.doe@example.com"):  # the caller's own exception, unredacted
            module.route("refund please", customer)
    sink.flush()
    found = executions(learn_env, "pii_route:route")
    assert len(found) == 1 and "inputs" in found[0], found  # the user's own errors are not executions
    assert found[0]["inputs"]["args"][0] == "where is my invoice"
    assert found[0]["inputs"]["args"][1]["email"].startswith("<email:")
    written = b"".join(path.read_bytes() for path in journal.files(journal.events_root(learn_env)))
    assert b"jane.doe" not in written and b"555 0134" not in written
    assert "jane.doe" not in caplog.text
