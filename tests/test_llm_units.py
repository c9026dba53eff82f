"""The LLM generator's parts that need no model: extraction, static policy, prompt, probes.

None of these tests imports litellm (it costs ~4 s); the HTTP path is tested in
test_llm_generation.py. One test checks, in a fresh interpreter, that configuring
a model imports nothing heavy and that a missing extra is an error at start-up.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from poet_runtime.decorator import PoetConfig
from poet_runtime.domains import get_domain
from poet_runtime.errors import CheckFailed
from poet_runtime.generate.builtin import BuiltinGenerator
from poet_runtime.generate.llm_extract import extract_code
from poet_runtime.generate.llm_prompt import build_prompt
from poet_runtime.generate.spec import spec_from_function, spec_from_source
from poet_runtime.generate.static_policy import check_static_policy, static_violations

REPO = Path(__file__).resolve().parents[1]

TARGET = '''
import os
import math


def add(a: int, b: int = 2) -> int:
    """Add two numbers.

    >>> add(10, 5)
    15
    """
    return a + b


def norm(values: list[float]) -> float:
    return math.sqrt(sum(v * v for v in values))


def where() -> str:
    return os.getcwd()
'''


def _spec(qualname="add", source=TARGET):
    return spec_from_source("llm_target", qualname, source, "llm_target.py")


# -- extraction ------------------------------------------------------------------------------

def test_extract_fenced_with_prose_around():
    answer = "Here is the module:\n\n```python\nX = 1\ndef f():\n    return X\n```\n\nIt improves things."
    assert extract_code(answer) == "X = 1\ndef f():\n    return X\n"


def test_extract_takes_the_longest_python_block():
    answer = "```python\nf()\n```\nand the module:\n```py\nimport math\n\ndef f():\n    return math.pi\n```"
    assert extract_code(answer).startswith("import math")


def test_extract_unfenced_with_prose_around():
    answer = "Sure! Below is the code.\nimport math\n\ndef f():\n    return math.pi\n\nThis is better because of reasons."
    assert extract_code(answer) == "import math\n\ndef f():\n    return math.pi\n"


def test_extract_nothing():
    assert extract_code("") == ""
    assert extract_code(None) == ""


def test_extract_unclosed_fence_keeps_the_code():
    assert extract_code("```python\nX = 1\n").strip() == "X = 1"


# -- static policy ---------------------------------------------------------------------------

def test_static_policy_accepts_the_builtin_output():
    spec = _spec()
    config = PoetConfig.from_kwargs("llm_target:add")
    code = BuiltinGenerator().generate(spec, config, get_domain(None)).code
    assert check_static_policy(code, spec) == ["static_policy"]


@pytest.mark.parametrize("snippet, expected", [
    ("import subprocess\n", "import subprocess is not allowed"),
    ("from os import path\n", None),  # the user's module imports os: allowed
    ("import socket\n", "import socket is not allowed"),
    ("X = eval('1')\n", "eval is not allowed"),
    ("X = (1).__class__\n", "dunder attribute .__class__"),
    ("X = getattr(1, '__class__')\n", "getattr(..., '__class__')"),
    ("X = '{0.__class__}'.format(1)\n", "format string"),
    ("def f(g):\n    return g.gi_frame\n", "frame or code walk"),
    ("X = __builtins__\n", "__builtins__ is not allowed"),
])
def test_static_policy_refuses(snippet, expected):
    problems = static_violations(snippet, _spec("where"))
    if expected is None:
        assert problems == []
    else:
        assert problems and expected in problems[0], problems


def test_static_policy_allows_what_the_user_does():
    source = "def peek(obj):\n    return type(obj).__name__ + str(open)\n"
    spec = spec_from_source("m", "peek", source, "m.py")
    assert static_violations(source, spec) == []


def test_static_policy_follows_the_policy_lists():
    class Limits:
        imports = ("math",)
        builtins = ("len",)

    class Policy:
        backend = "restricted"
        limits = Limits()

    spec = _spec("norm")
    assert static_violations("import math\nX = len([])\n", spec, Policy()) == []
    assert "import json is not allowed" in static_violations("import json\n", spec, Policy())[0]
    assert "builtin sorted is not allowed" in static_violations("X = sorted([])\n", spec, Policy())[0]
    with pytest.raises(CheckFailed) as failed:
        check_static_policy("import json\n", spec, Policy())
    assert failed.value.reason == "static_policy"


# -- the prompt ------------------------------------------------------------------------------

def test_prompt_holds_source_domain_objective_contract_and_example():
    spec = _spec()
    config = PoetConfig.from_kwargs("llm_target:add", domain="ml_monitoring", optimize_for="latency")
    domain = get_domain("ml_monitoring")
    example = BuiltinGenerator().generate(spec, config, domain)
    prompt = build_prompt(spec, config, domain, example, None)
    text = prompt.messages[-1]["content"]
    assert "return a + b" in text  # the source
    assert "Domain: ml_monitoring" in text and "NaN" in text  # domain template and rules
    assert "Objective: latency" in text and "def train(perceived, result, metrics)" in text
    assert "def perceive(a, b=UNSET)" in text and "def enforce(result)" in text  # the contract
    assert example.code.strip() in text  # the built-in version as the example
    assert "$" + "{" not in text  # every field filled
    assert prompt.template_version == domain.template_version


def test_prompt_hash_and_feedback():
    spec = _spec()
    config = PoetConfig.from_kwargs("llm_target:add")
    domain = get_domain(None)
    prompt = build_prompt(spec, config, domain, BuiltinGenerator().generate(spec, config, domain), None)
    again = prompt.with_feedback("bad", "syntax", "line 3: invalid syntax")
    assert again.messages[-1]["content"].startswith("Your answer was rejected by the check `syntax`")
    assert prompt.hash("m1") != prompt.hash("m2") != again.hash("m2")


def test_template_version_is_in_the_version_key():
    from poet_runtime.generate.llm import LLMGenerator
    from poet_runtime.resolve import version_key

    spec = _spec()
    config = PoetConfig.from_kwargs("llm_target:add")
    generator = LLMGenerator("openai/x")
    assert generator.key_data()["templates"]["base"] == get_domain(None).template_version
    assert version_key(spec, config, generator, 1) != version_key(spec, config, LLMGenerator("openai/y"), 1)


# -- probes ----------------------------------------------------------------------------------

def test_sample_inputs_from_doctest_and_hints():
    from poet_runtime.generate.probes import sample_inputs

    samples = sample_inputs(_spec(), recorded=[((1, 1), {})])
    assert samples[0] == ((1, 1), {})  # recorded calls first
    assert ((10, 5), {}) in samples  # the doctest example
    assert ((3,), {}) in samples  # from the hints (b has a default)
    assert sample_inputs(_spec("norm"))[0] == (([2.5, 0.0, -1.25],), {})


def _load_in_process(code, original, logic_name):
    from poet_runtime.resolve import load_code

    return lambda: load_code(code, filename="<probe test>", version=0, logic_name=logic_name, params={},
                             is_async=False, function_id="m:f", original=original,
                             user_globals=original.__globals__, package=None, policy=None)


@pytest.fixture
def target(write_module, poet_home):
    module = write_module("llm_probe_target", TARGET)
    spec = spec_from_function(module.add)
    config = PoetConfig.from_kwargs("llm_probe_target:add")
    baseline = BuiltinGenerator().generate(spec, config, get_domain(None))
    return module, spec, baseline


def _run(module, spec, baseline, code, timeout=0.3):
    from poet_runtime.generate.probes import run_probes, sample_inputs

    return run_probes(candidate_loader=_load_in_process(code, module.add, "add"),
                      baseline_loader=_load_in_process(baseline.code, module.add, "add"),
                      original=module.add, is_async=False, samples=sample_inputs(spec), call_timeout_s=timeout)


def test_probe_accepts_the_builtin_version(target):
    module, spec, baseline = target
    report = _run(module, spec, baseline, baseline.code)
    assert report.samples >= 3 and report.agreed == report.samples


def test_probe_refuses_a_module_that_disagrees(target):
    module, spec, baseline = target
    code = baseline.code.replace("    return a + b\n", "    return a + b + 1\n")
    with pytest.raises(CheckFailed) as failed:
        _run(module, spec, baseline, code)
    assert failed.value.reason == "probe_mismatch" and "returned" in failed.value.detail


def test_probe_refuses_a_module_that_fails_where_the_original_works(target):
    module, spec, baseline = target
    code = baseline.code.replace("    return result\n", "    return undefined_name\n")
    with pytest.raises(CheckFailed) as failed:
        _run(module, spec, baseline, code)
    assert failed.value.reason == "probe_mismatch" and "NameError" in failed.value.detail


def test_probe_stops_an_endless_loop(target):
    module, spec, baseline = target
    code = baseline.code.replace("def enforce(result):\n", "def enforce(result):\n    while True:\n        pass\n")
    before = {t.ident for t in threading.enumerate()}
    started = time.perf_counter()
    with pytest.raises(CheckFailed) as failed:
        _run(module, spec, baseline, code, timeout=0.2)
    assert failed.value.reason == "probe_timeout"
    assert time.perf_counter() - started < 3
    time.sleep(0.05)
    leftover = [t for t in threading.enumerate() if t.ident not in before and t.name == "poet-probe"]
    assert not leftover  # the loop was stopped, not abandoned


def test_probe_stops_an_endless_loop_at_import(target):
    module, spec, baseline = target
    code = baseline.code.replace("DEFAULTS = {}\n", "DEFAULTS = {}\nSPIN = [0 for x in iter(int, 1)]\n")
    with pytest.raises(CheckFailed) as failed:
        _run(module, spec, baseline, code, timeout=0.2)
    assert failed.value.reason == "probe_timeout"


# -- start-up --------------------------------------------------------------------------------

def test_model_without_litellm_is_a_startup_error_and_nothing_heavy_is_imported(tmp_path):
    # A fresh interpreter without site-packages: litellm (and everything else) is absent.
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        import poet_runtime
        from poet_runtime.errors import PoetConfigError
        from poet_runtime.settings import get_settings
        from poet_runtime.generate.llm import LLMGenerator
        generator = LLMGenerator.from_settings(get_settings())
        generator.key_data()
        assert "litellm" not in sys.modules
        try:
            poet_runtime.enable(hook=False)
        except PoetConfigError as error:
            print("ERROR", error)
        else:
            print("no error")
    """)
    env = {"POET_MODEL": "openai/gpt-4.1", "POET_CACHE_DIR": str(tmp_path / "cache"), "PATH": os.environ["PATH"],
           "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run([sys.executable, "-S", "-c", script], capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "ERROR" in result.stdout and "pip install 'poet-runtime[llm]'" in result.stdout
