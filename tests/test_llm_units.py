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
    ("from os import path\n", "from os import is not allowed"),  # the user's module imports os: still refused
    ("import llm_target\n", "import llm_target is not allowed"),  # the user's module itself
    ("from . import llm_target\n", "from . import is not allowed"),
    ("import socket\n", "import socket is not allowed"),
    ("import math\nfrom poet_sandbox import validate\n", None),
    ("X = eval('1')\n", "eval is not allowed"),
    ("def f(x):\n    print(x)\n", "print is not allowed"),
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


def test_static_policy_does_not_allow_what_the_user_does():
    # Contract 2: the logic is not in the module, so the user's own habits allow nothing.
    source = "import os\n\ndef peek(obj):\n    return type(obj).__dict__ + str(open) + os.sep\n"
    spec = spec_from_source("m", "peek", source, "m.py")
    problems = static_violations(source, spec)
    assert any("import os" in p for p in problems) and any(".__dict__" in p for p in problems)
    assert any("open" in p for p in problems)
    assert static_violations("def f(error):\n    return type(error).__name__\n", spec) == []  # naming only


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


# -- structure: contract 2 ---------------------------------------------------------------------

MODULE = '''"""A hand-written contract-2 module for llm_target:add."""
from poet_sandbox import validate
from poet_sandbox.validate import UNSET

FUNCTION = 'llm_target:add'
DOMAIN = 'base'
OBJECTIVE = None
PARAMETERS = {}
PARAMS = {}


def configure(params, defaults=None):
    for name, value in params.items():
        if name in PARAMETERS:
            PARAMS[name] = value


def perceive(a, b=UNSET):
    if type(a) is not int:
        validate.note('mismatch', 'a', 'expected int, got ' + validate.describe(a))
    return None


def operate_prime(logic, args, kwargs):
    return logic(*args, **kwargs)


def enforce(result):
    return result
'''


def _structure(code, spec=None, needs_train=False):
    from poet_runtime.generate.checks import check_generated

    return check_generated(code, spec or _spec(), filename="<test>", needs_train=needs_train)


def test_structure_accepts_contract_2():
    assert _structure(MODULE) == ["syntax", "structure", "signature", "hygiene", "compile"]


def test_structure_accepts_the_builtin_output():
    for name in ("add", "norm", "where"):
        spec = _spec(name)
        for domain in ("base", "ml_monitoring", "api_operations"):
            config = PoetConfig.from_kwargs(f"llm_target:{name}", domain=domain)
            code = BuiltinGenerator().generate(spec, config, get_domain(domain)).code
            assert _structure(code, spec)[-1] == "compile", (name, domain)


CONTRACT_1 = {
    "LOGIC name": (lambda code: code + "LOGIC = 'add'\n", "structure", "LOGIC is contract 1"),
    "defines the user's function": (lambda code: code + "\n\ndef add(a, b=2):\n    return a + b\n",
                                    "structure", "defines add()"),
    "copies the body under another name": (
        lambda code: code + "\n\ndef compute(a, b):\n    return a + b\n", "structure", "is a copy of add"),
    "operate_prime takes the perceived arguments": (
        lambda code: code.replace("def operate_prime(logic, args, kwargs):\n    return logic(*args, **kwargs)",
                                  "def operate_prime(a, b):\n    return logic(a, b)"),
        "signature", "operate_prime(a, b) must be operate_prime(logic, args, kwargs)"),
    "perceive default is not UNSET": (lambda code: code.replace("def perceive(a, b=UNSET):", "def perceive(a, b=2):"),
                                      "signature", "must default to UNSET"),
    "perceive misses a default": (lambda code: code.replace("def perceive(a, b=UNSET):", "def perceive(a, b):"),
                                  "signature", "must default to UNSET"),
    "perceive has other parameters": (lambda code: code.replace("def perceive(a, b=UNSET):",
                                                                "def perceive(a, c=UNSET):"),
                                      "signature", "does not match"),
    "enforce takes more": (lambda code: code.replace("def enforce(result):", "def enforce(result, extra):"),
                           "signature", "enforce(result, extra) must be enforce(result)"),
    "imports the user's module": (lambda code: "import llm_target\n" + code, "structure",
                                  "imports the function's module"),
    "a module name perceive uses is a parameter": (
        lambda code: code.replace("from poet_sandbox import validate\n", "from poet_sandbox import validate as a\n")
        .replace("validate.note", "a.note"), "hygiene", "is also a parameter"),
    "train without an objective": (lambda code: code + "\n\ndef train(call, result, metrics):\n    pass\n",
                                   "structure", "no objective"),
}


@pytest.mark.parametrize("case", list(CONTRACT_1))
def test_structure_refuses(case):
    change, reason, detail = CONTRACT_1[case]
    with pytest.raises(CheckFailed) as failed:
        _structure(change(MODULE))
    assert failed.value.reason == reason and detail in failed.value.detail, failed.value.detail


def test_structure_train_signature_is_contract_2():
    with_train = MODULE + "\n\ndef train(perceived, result):\n    pass\n"
    with pytest.raises(CheckFailed) as failed:
        _structure(with_train, needs_train=True)
    assert "train(call, result, metrics)" in failed.value.detail
    assert _structure(MODULE + "\n\ndef train(call, result, metrics):\n    pass\n", needs_train=True)


def test_operate_calls_logic():
    from poet_runtime.generate.checks import operate_calls_logic

    assert operate_calls_logic(MODULE)
    timed = MODULE.replace("return logic(*args, **kwargs)", "return timeouts.call_with_timeout(logic, args, kwargs, 1)")
    assert operate_calls_logic(timed)
    assert not operate_calls_logic(MODULE.replace("return logic(*args, **kwargs)", "return args[0] + args[1]"))


# -- the prompt ------------------------------------------------------------------------------

def test_prompt_holds_source_domain_objective_contract_and_example():
    spec = _spec()
    config = PoetConfig.from_kwargs("llm_target:add", domain="ml_monitoring", optimize_for="latency")
    domain = get_domain("ml_monitoring")
    example = BuiltinGenerator().generate(spec, config, domain)
    prompt = build_prompt(spec, config, domain, example, None)
    text = prompt.messages[-1]["content"]
    assert "return a + b" in text  # the source, to read
    assert "NOT in this module" in text and "never copy it" in text  # ... and not to copy
    assert "Domain: ml_monitoring" in text and "NaN" in text  # domain template and rules
    assert "Objective: latency" in text and "def train(call, result, metrics)" in text
    assert "def perceive(a, b=UNSET)" in text and "def enforce(result)" in text  # the contract
    assert "def operate_prime(logic, args, kwargs): returns logic(*args, **kwargs)" in text
    assert "validate.note" in text and "LOGIC =" not in text.split("## Example")[0]
    assert example.code.strip() in text  # the built-in version as the example
    assert "$" + "{" not in text  # every field filled
    assert prompt.template_version == domain.template_version


def test_prompt_async_and_timeout():
    source = "async def fetch(url: str, tries: int = 2) -> dict:\n    return {'status': 'success'}\n"
    spec = spec_from_source("llm_target", "fetch", source, "llm_target.py")
    config = PoetConfig.from_kwargs("llm_target:fetch", domain="api_operations", timeout=1.5)
    domain = get_domain("api_operations")
    text = build_prompt(spec, config, domain, BuiltinGenerator().generate(spec, config, domain), None).messages[-1][
        "content"]
    assert "async def operate_prime(logic, args, kwargs): returns await logic(*args, **kwargs)" in text
    assert "await timeouts.call_with_timeout_async(logic, args, kwargs, seconds)" in text
    assert "nor asyncio" in text and "def perceive(url, tries=UNSET)" in text


def test_prompt_contract_is_short():
    # Small models have small contexts (issue 16): everything but the source and the example stays compact.
    spec = _spec()
    for name in ("base", "ml_monitoring", "api_operations"):
        config = PoetConfig.from_kwargs("llm_target:add", domain=name)
        domain = get_domain(name)
        example = BuiltinGenerator().generate(spec, config, domain)
        text = build_prompt(spec, config, domain, example, None).messages[-1]["content"]
        rest = text.replace(example.code.rstrip(), "").replace(spec.source.rstrip(), "")
        assert len(rest) < 3000, (name, len(rest))  # contract 1's prompt: 2900-3050


def test_prompt_hash_and_feedback():
    spec = _spec()
    config = PoetConfig.from_kwargs("llm_target:add")
    domain = get_domain(None)
    prompt = build_prompt(spec, config, domain, BuiltinGenerator().generate(spec, config, domain), None)
    answer = "```python\nimport math\n\ndef perceive(a, b=UNSET)\n    return None\n```"
    again = prompt.with_feedback(answer, "syntax", "line 3: invalid syntax", attempt=2)
    text = again.messages[-1]["content"]
    assert [m["role"] for m in again.messages] == ["system", "user"]
    assert "Your previous answer was rejected by the check `syntax`: line 3" in text
    assert "def perceive(a, b=UNSET)\n" in text.split("## Your previous answer")[1]  # the offending lines
    # The next refusal replaces this one: re-asks do not grow with each answer.
    third = again.with_feedback(answer, "structure", "missing enforce", attempt=3)
    assert third.messages[-1]["content"].count("## Your previous answer") == 1
    assert len(third.text()) < len(prompt.text()) + 600
    assert prompt.hash("m1") != prompt.hash("m2") != again.hash("m2") != third.hash("m2")


def test_feedback_for_a_cut_off_answer_asks_for_less():
    spec = _spec()
    config = PoetConfig.from_kwargs("llm_target:add")
    domain = get_domain(None)
    prompt = build_prompt(spec, config, domain, BuiltinGenerator().generate(spec, config, domain), None)
    text = prompt.with_feedback("```python\nFUNC", "truncated", "cut", truncated_at=300).messages[-1]["content"]
    assert "cut off after 300 tokens" in text and "SHORTER" in text


def test_offending_lines_by_number_and_by_phase():
    from poet_runtime.generate.llm_prompt import offending_lines

    code = "A = 1\n\n\ndef perceive(a):\n    return None\n\n\ndef enforce(result):\n    return result + 1\n"
    assert offending_lines(code, "line 5: bad", context=0) == "    return None"
    assert offending_lines(code, "probe_mismatch: enforce() changed the result").startswith("def enforce(result):")
    assert offending_lines(code, "no line named") == ""


def test_compact_prompt_is_smaller_and_keeps_the_names():
    from poet_runtime.generate.llm_prompt import compact_code

    spec = _spec()
    config = PoetConfig.from_kwargs("llm_target:add")
    domain = get_domain(None)
    example = BuiltinGenerator().generate(spec, config, domain)
    short = compact_code(example.code)
    assert len(short) < 0.8 * len(example.code)
    for name in ("def perceive(", "def operate_prime(", "def enforce(", "PARAMETERS", "def configure("):
        assert name in short
    full = build_prompt(spec, config, domain, example, None)
    compact = build_prompt(spec, config, domain, example, None, compact=True)
    assert compact.compact and len(compact.text()) < len(full.text())


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


def _load_in_process(code, original):
    from poet_runtime.backends import load_code

    return lambda: load_code(code, filename="<probe test>", version=0, params={}, is_async=False,
                             function_id=f"m:{original.__name__}", original=original, policy=None)


@pytest.fixture
def target(write_module, poet_home):
    module = write_module("llm_probe_target", TARGET + PUSH)
    spec = spec_from_function(module.add)
    config = PoetConfig.from_kwargs("llm_probe_target:add")
    baseline = BuiltinGenerator().generate(spec, config, get_domain(None))
    return module, spec, baseline


PUSH = '''

def push(items: list[int], x: int = 1) -> int:
    items.append(x)
    return len(items)
'''


# Loading (compiling, a first diskcache open) is not what these tests time: on a loaded machine
# it can take longer than a call's 0.3 s, which made the accepting tests fail now and then.
PROBE_LOAD_S = 10.0


def _run(module, spec, baseline, code, timeout=0.3, name="add", transformed=False):
    from poet_runtime.generate.probes import run_probes, sample_inputs

    original = getattr(module, name)
    if name != spec.name:
        spec = spec_from_function(original)
        config = PoetConfig.from_kwargs(f"llm_probe_target:{name}")
        baseline = BuiltinGenerator().generate(spec, config, get_domain(None))
    return run_probes(candidate_loader=_load_in_process(code, original),
                      baseline_loader=_load_in_process(baseline.code, original),
                      original=original, is_async=False, samples=sample_inputs(spec), call_timeout_s=timeout,
                      transformed=transformed, parameters=[p.name for p in spec.params],
                      load_timeout_s=PROBE_LOAD_S)


def _refused(module, spec, baseline, code, reason, **options):
    with pytest.raises(CheckFailed) as failed:
        _run(module, spec, baseline, code, **options)
    assert failed.value.reason == reason, failed.value.detail
    return failed.value.detail


def test_probe_accepts_the_builtin_version(target):
    module, spec, baseline = target
    report = _run(module, spec, baseline, baseline.code)
    assert report.samples >= 3 and report.agreed == report.samples


def test_probe_accepts_a_hand_written_contract_2_module(target):
    module, spec, baseline = target
    report = _run(module, spec, baseline, MODULE)
    assert report.samples >= 3 and report.agreed == report.samples and not report.transformed


def test_probe_refuses_a_module_that_changes_the_result(target):
    module, spec, baseline = target
    code = MODULE.replace("def enforce(result):\n    return result", "def enforce(result):\n    return result + 1")
    detail = _refused(module, spec, baseline, code, "probe_mismatch")
    assert "returned" in detail and "the original returns" in detail


def test_probe_refuses_a_module_that_fails_where_the_original_works(target):
    module, spec, baseline = target
    code = MODULE.replace("def enforce(result):\n    return result", "def enforce(result):\n    return undefined_name")
    assert "NameError" in _refused(module, spec, baseline, code, "probe_mismatch")


def test_probe_refuses_a_module_that_runs_the_logic_twice(target):
    module, spec, baseline = target
    code = MODULE.replace("    return logic(*args, **kwargs)", "    logic(*args, **kwargs)\n    return logic(*args, **kwargs)")
    assert "never run twice" in _refused(module, spec, baseline, code, "probe_logic")


def test_probe_refuses_a_module_that_skips_the_logic(target):
    module, spec, baseline = target
    code = MODULE.replace("    return logic(*args, **kwargs)",
                          "    if not args:\n        return logic(*args, **kwargs)\n    return args[0] + 2")
    assert "without calling the logic" in _refused(module, spec, baseline, code, "probe_logic")


REPAIR = '''    if a == 3:
        validate.note('repair', 'a', '3 -> 4 (a test repair)')
        return {'a': 4}
    return None
'''


def test_probe_accepts_a_noted_repair_of_an_argument(target):
    module, spec, baseline = target
    code = MODULE.replace("    return None\n", REPAIR, 1)
    report = _run(module, spec, baseline, code)
    assert report.repaired == 1 and report.agreed == report.samples
    assert any("a repaired (noted)" in note for note in report.notes)


def test_probe_refuses_an_unnoted_repair(target):
    module, spec, baseline = target
    code = MODULE.replace("    return None\n", REPAIR.replace("        validate.note('repair', 'a', '3 -> 4 (a test repair)')\n", ""), 1)
    assert "the original returns 5" in _refused(module, spec, baseline, code, "probe_mismatch")


def test_probe_stops_an_endless_loop(target):
    module, spec, baseline = target
    code = MODULE.replace("def enforce(result):\n", "def enforce(result):\n    while True:\n        pass\n")
    before = {t.ident for t in threading.enumerate()}
    started = time.perf_counter()
    _refused(module, spec, baseline, code, "probe_timeout", timeout=0.2)
    assert time.perf_counter() - started < 3
    time.sleep(0.05)
    leftover = [t for t in threading.enumerate() if t.ident not in before and t.name == "poet-probe"]
    assert not leftover  # the loop was stopped, not abandoned


def test_probe_stops_an_endless_loop_at_import(target):
    module, spec, baseline = target
    code = MODULE.replace("PARAMS = {}\n", "PARAMS = {}\nSPIN = [0 for x in iter(int, 1)]\n")
    _refused(module, spec, baseline, code, "probe_timeout", timeout=0.2)


# A transformed answer: operate_prime computes instead of calling the logic.
TRANSFORMED_ADD = MODULE.replace(
    "    return logic(*args, **kwargs)",
    "    a = args[0]\n    b = args[1] if len(args) > 1 else kwargs.get('b', 2)\n    return a + b")
TRANSFORMED_PUSH = MODULE.replace("llm_target:add", "llm_probe_target:push").replace(
    "def perceive(a, b=UNSET):\n    if type(a) is not int:\n        validate.note('mismatch', 'a', 'expected int, got ' + "
    "validate.describe(a))\n", "def perceive(items, x=UNSET):\n").replace(
    "    return logic(*args, **kwargs)",
    "    items = args[0]\n    return len(items) + 1")


def test_probe_transformed_that_agrees_on_results_and_state(target):
    module, spec, baseline = target
    report = _run(module, spec, baseline, TRANSFORMED_ADD, transformed=True)
    assert report.transformed and report.state_checked == report.samples >= 3
    assert report.as_dict()["transformed"] is True


def test_probe_transformed_must_leave_the_arguments_as_the_original_does(target):
    module, spec, baseline = target
    # Right result, but the caller's list is not appended to (the original appends).
    detail = _refused(module, spec, baseline, TRANSFORMED_PUSH, "probe_state", name="push", transformed=True)
    assert "arguments after the call" in detail


def test_probe_transformed_results_must_agree(target):
    module, spec, baseline = target
    code = TRANSFORMED_ADD.replace("return a + b", "return a * b")
    _refused(module, spec, baseline, code, "probe_mismatch", transformed=True)


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


# -- issue 16: settings, rules as JSON, context discovery ---------------------------------------

@pytest.mark.parametrize("variable, value", [
    ("POET_LLM_MAX_TOKENS", "lots"), ("POET_LLM_MAX_TOKENS", "10"), ("POET_LLM_CONTEXT", "-1"),
    ("POET_LLM_REQUEST_TIMEOUT", "nan"), ("POET_LLM_REQUEST_TIMEOUT", "0"), ("POET_LLM_BACKOFF", "inf"),
    ("POET_LLM_WORKER", "maybe"),
])
def test_llm_settings_name_the_bad_variable(variable, value):
    from poet_runtime.errors import PoetConfigError
    from poet_runtime.generate import llm_settings

    with pytest.raises(PoetConfigError) as failed:
        llm_settings.read({variable: value})
    assert str(failed.value).startswith(f"{variable}: {value!r} is not valid")


def test_llm_settings_defaults_and_values():
    from poet_runtime.generate import llm_settings

    default = llm_settings.read({})
    assert default.max_tokens is None and default.context is None and default.worker is True
    assert default.request_timeout_s == 300.0
    given = llm_settings.read({"POET_LLM_MAX_TOKENS": "700", "POET_LLM_CONTEXT": "auto", "POET_LLM_WORKER": "off",
                               "POET_LLM_REQUEST_TIMEOUT": "12.5", "POET_LLM_BACKOFF": "0"})
    assert (given.max_tokens, given.context, given.worker, given.request_timeout_s, given.backoff_s) == (
        700, None, False, 12.5, 0.0)
    assert llm_settings.auto_max_tokens("x" * 100) == 512 and llm_settings.auto_max_tokens("x" * 7000) == 6000


def test_a_bad_llm_setting_is_a_start_up_error_with_a_model(monkeypatch):
    from poet_runtime.errors import PoetConfigError
    from poet_runtime.generate.llm import check_available

    monkeypatch.setenv("POET_LLM_CONTEXT", "small")

    class Settings:
        model = "openai/x"

    with pytest.raises(PoetConfigError, match="POET_LLM_CONTEXT"):
        check_available(Settings())


@pytest.mark.parametrize("text, where", [
    ("no json here", "no JSON object"), ('{"fields": {"a b": {"type": "float"}}}', "fields.a b"),
    ('{"fields": {"s": {"type": "complex"}}}', "fields.s.type"),
    ('{"fields": {"s": {"type": "float", "min": 2, "max": 1}}}', "min 2 is above max 1"),
    ('{"fields": {}, "required": "score"}', "required:"), ('{"fields": {}, "finite": "yes"}', "finite:"),
    ('{"fields": {"s": {"type": "float", "min": "0"}}}', "fields.s.min"),
])
def test_rules_as_json_are_read_strictly(text, where):
    from poet_runtime.errors import CheckFailed
    from poet_runtime.generate.llm_parts import parse_rules

    with pytest.raises(CheckFailed) as failed:
        parse_rules(text)
    assert failed.value.reason == "rules" and where in failed.value.detail


def test_rules_as_json_become_the_domains_own_rules():
    from poet_runtime.generate.llm_parts import domain_with, parse_rules

    rules = parse_rules('Sure:\n```json\n{"fields": {"score": {"type": "float", "min": 0, "max": 1}, '
                        '"n": {"type": "int", "min": 3}}, "required": ["score"], "finite": true}\n```')
    domain = domain_with(get_domain(None), rules)
    assert [(r.name, r.type, r.min, r.max) for r in domain.fields] == [("n", "int", None, None),
                                                                         ("score", "float", 0, 1)]
    assert domain.required_fields == ("score",) and domain.finite_numbers is True
    spec = spec_from_source("m", "f", "def f(x: float) -> dict:\n    return {'score': x}\n", "m.py")
    code = BuiltinGenerator().generate(spec, PoetConfig.from_kwargs("m:f"), domain).code
    assert "finite_in_range(result['score']" in code and "'score' not in result" in code


def test_context_size_from_the_server_then_cached(tmp_path):
    from fake_openai import FakeOpenAI
    from poet_runtime.generate import llm_context

    server = FakeOpenAI().start()
    try:
        llm_context.forget()
        server.context = 3000
        assert llm_context.context_size("openai/fake-coder", server.api_base, None) == (
            3000, server.api_base[:-3] + "/props")
        server.context = 5000  # asked once per server
        assert llm_context.context_size("openai/fake-coder", server.api_base, None)[0] == 3000
        assert llm_context.context_size("openai/fake-coder", server.api_base, 777) == (777, "POET_LLM_CONTEXT")
    finally:
        llm_context.forget()
        server.stop()
