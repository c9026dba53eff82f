"""The built-in generator (contract 2): real modules, one per domain, deterministic, readable, checked.

The module holds the phases only; the user's logic is the function object operate_prime
is given, never a copy of its body.
"""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from poet_runtime.decorator import PoetConfig
from poet_runtime.domains import domain_names, get_domain
from poet_runtime.errors import CheckFailed, GenerationError
from poet_runtime.generate.builtin import BuiltinGenerator
from poet_runtime.generate.checks import check_generated
from poet_runtime.generate.spec import spec_from_source
from poet_runtime.resources import load_facility

SOURCE = '''\
import statistics
from typing import Optional, TypedDict
from poet_runtime import poet


class Report(TypedDict):
    drift_detected: bool
    score: float


@poet(domain="ml_monitoring", optimize_for="accuracy")
def detect_drift(current_data: list[float], reference_data: list[float], threshold: float = 0.1) -> Report:
    """Flag drift when the means differ by more than threshold."""
    gap = abs(statistics.fmean(current_data) - statistics.fmean(reference_data))
    return {"drift_detected": gap > threshold, "score": min(gap, 1.0)}


async def fetch(url: str, *, attempts: Optional[int] = None, **headers) -> dict:
    return {"status": "success", "url": url}


def rows(n: int):
    yield from range(n)


async def events(n: int):
    yield n
'''


def generate(qualname="detect_drift", **config):
    spec = spec_from_source("app", qualname, SOURCE, "app.py")
    cfg = PoetConfig.from_kwargs(f"app:{qualname}", **config)
    return spec, cfg, BuiltinGenerator().generate(spec, cfg, get_domain(cfg.domain))


def load(code: str) -> dict:
    """The generated module's namespace, run as the runtime would in-process."""
    load_facility()
    namespace = {"__name__": "poet_generated"}
    exec(compile(code, "code.py", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("domain", domain_names())
@pytest.mark.parametrize("objective", [None, "latency"])
def test_each_domain_gives_a_checked_module_with_the_phases(domain, objective):
    spec, cfg, generated = generate(domain=domain, optimize_for=objective)
    tree = ast.parse(generated.code)
    defined = {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    assert {"configure", "perceive", "operate_prime", "enforce"} <= defined
    assert ("train" in defined) == (objective is not None)
    passed = check_generated(generated.code, spec, logic_name=generated.logic_name, filename="code.py",
                             needs_train=objective is not None)
    assert passed == ["syntax", "structure", "signature", "hygiene", "compile"]
    # Contract 2: the user's logic is not in the module; operate_prime calls the logic it is given.
    assert "detect_drift" not in defined and "logic_detect_drift" not in defined
    assert "statistics" not in generated.code and "fmean" not in generated.code
    assert "LOGIC" not in generated.code
    assert "def operate_prime(logic, args, kwargs):" in generated.code
    assert "logic(*args, **kwargs)" in generated.code
    imported = {alias.name.split(".")[0] for node in tree.body if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in tree.body if isinstance(node, ast.ImportFrom)}
    assert imported <= {"poet_sandbox", "time"}  # the facility and the stdlib, never the user's module


def test_operate_prime_calls_the_logic_it_is_given_with_the_callers_objects():
    _, _, generated = generate(domain="base")
    module = load(generated.code)
    seen = []

    def logic(*args, **kwargs):
        seen.append((args, kwargs))
        return result

    result = {"drift_detected": True, "score": 0.5}
    current = [1.0, 2.0]
    assert module["operate_prime"](logic, (current, [0.0]), {"threshold": 0.2}) is result
    assert seen == [((current, [0.0]), {"threshold": 0.2})] and seen[0][0][0] is current
    assert module["enforce"](result) is result  # a matching result is the logic's own object


def test_identical_input_gives_identical_bytes_even_in_another_process():
    _, _, first = generate(domain="ml_monitoring", optimize_for="accuracy")
    script = (
        "import sys; sys.path.insert(0, 'tests'); from test_builtin_generator import generate;"
        "sys.stdout.write(generate(domain='ml_monitoring', optimize_for='accuracy')[2].code)"
    )
    other = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert other.stdout == first.code


def test_two_domains_give_visibly_different_code():
    _, _, ml = generate(domain="ml_monitoring")
    _, _, api = generate(domain="api_operations")
    assert ml.code != api.code
    assert "drop_missing=True" in ml.code and "drop_missing=True" not in api.code
    assert "RETRYABLE = (ConnectionError, TimeoutError,)" in api.code and "RETRYABLE" not in ml.code
    assert "'success', 'error', 'pending'" in api.code


def test_typed_dict_result_is_checked_field_by_field():
    _, _, generated = generate(domain="ml_monitoring")
    assert "validate.typed_dict({'drift_detected': validate.as_bool, 'score': validate.as_float}" in generated.code


def test_tunable_parameter_becomes_a_learned_default_only_with_an_objective():
    _, _, trained = generate(domain="ml_monitoring", optimize_for="accuracy")
    assert trained.parameters["threshold"] == {
        "default": 0.1, "min": 0.0, "max": 1.0,
        "description": "value of the threshold argument when the caller does not pass it"}
    assert "if threshold is UNSET and PARAMS['threshold'] != 0.1:" in trained.code
    assert "repairs['threshold'] = PARAMS['threshold']" in trained.code
    module = load(trained.code)
    perceive = module["perceive"]
    assert perceive([0.5], [0.4]) is None  # nothing learned yet: the logic keeps its own default
    module["configure"]({"threshold": 0.3})
    assert perceive([0.5], [0.4]) == {"threshold": 0.3}  # learned: passed for a caller who did not pass it
    assert perceive([0.5], [0.4], 0.7) is None  # a caller's own value always wins
    module["configure"]({"threshold": 5.0})
    assert perceive([0.5], [0.4]) == {"threshold": 1.0}  # kept within its range
    _, _, plain = generate(domain="ml_monitoring")
    assert "threshold" not in plain.parameters
    assert "PARAMS['threshold']" not in plain.code and "DEFAULTS" not in plain.code
    assert load(plain.code)["perceive"]([0.5], [0.4]) is None


def test_checks_report_and_only_domain_rules_or_coerce_repair():
    from poet_sandbox import validate

    validate.take_notes()
    base = load(generate(domain="base")[2].code)
    batch = [1.0, None, 3.0]
    assert base["perceive"](batch, ("1", 2.0), "0.2") is None  # mismatches: reported, nothing replaced
    assert [(kind, field) for kind, field, _ in validate.take_notes()] == [
        ("mismatch", "current_data[1]"), ("mismatch", "reference_data"), ("mismatch", "threshold")]

    ml = load(generate(domain="ml_monitoring")[2].code)
    repairs = ml["perceive"](batch, [2.0])  # the domain's rule: missing readings dropped, noted
    assert repairs == {"current_data": [1.0, 3.0]} and batch == [1.0, None, 3.0]
    # and 1 of 3 readings missing is a data-quality score of 0.67: below 0.7, a domain.warning
    assert [(kind, field) for kind, field, _ in validate.take_notes()] == [("repair", "current_data"),
                                                                           ("domain.warning", "data_quality")]

    coerce = load(generate(domain="base", repair="coerce")[2].code)
    assert coerce["perceive"]([1.0], ("1", 2.0), "0.2") == {"reference_data": [1.0, 2.0], "threshold": 0.2}
    assert [kind for kind, _, _ in validate.take_notes()] == ["repair", "repair", "repair"]
    report = {"drift_detected": 1, "score": "0.5"}
    assert base["enforce"](report) is report  # reported, returned as it is
    assert [kind for kind, _, _ in validate.take_notes()] == ["mismatch", "mismatch"]
    assert coerce["enforce"](report) == {"drift_detected": True, "score": 0.5}
    assert [kind for kind, _, _ in validate.take_notes()] == ["repair", "repair"]


def test_async_and_keyword_only_signatures():
    spec, cfg, generated = generate("fetch", domain="api_operations", timeout=1.5)
    assert "async def operate_prime(logic, args, kwargs):" in generated.code
    assert ("await call_with_timeout_async(logic, args, kwargs, "
            "PARAMS['timeout_s'] if attempt < PARAMS['retries'] else TIMEOUT_S)") in generated.code
    assert "def perceive(url, *, attempts=UNSET, **headers):" in generated.code
    check_generated(generated.code, spec, logic_name="fetch", filename="c.py", needs_train=False)


def test_generator_functions_return_their_stream_unchecked_and_async_generators_are_refused():
    spec, _, generated = generate("rows", domain="api_operations", timeout=2.0)
    check_generated(generated.code, spec, filename="c.py", needs_train=False)
    # A stream cannot be retried or timed without changing when the caller sees what.
    assert "RETRYABLE" not in generated.code and "call_with_timeout" not in generated.code
    module = load(generated.code)
    stream = iter([0, 1])
    assert module["operate_prime"](lambda n: stream, (2,), {}) is stream
    assert module["enforce"](stream) is stream
    with pytest.raises(GenerationError) as caught:
        generate("events")
    assert caught.value.reason == "unsupported"


@pytest.mark.parametrize(
    "mutation, reason",
    [
        (lambda code: code + "\ndef broken(:\n", "syntax"),
        (lambda code: code.replace("def enforce(result):", "def enforce_(result):"), "structure"),
        (lambda code: code + "\nprint('import-time side effect')\n", "structure"),
        (lambda code: code.replace("def perceive(current_data,", "def perceive(data,"), "signature"),
        (lambda code: code.replace("def enforce(result):", "def enforce(result, extra):"), "signature"),
        # contract 1 shapes: a copy of the logic, a LOGIC name, an import of the user's module
        (lambda code: code + "\ndef detect_drift(current_data, reference_data, threshold=0.1):\n    return {}\n",
         "structure"),
        (lambda code: code + "\nLOGIC = None\n", "structure"),
        (lambda code: code.replace("from poet_sandbox import validate", "from poet_sandbox import validate\nimport app"),
         "structure"),
    ],
)
def test_checks_refuse_broken_modules_with_their_reason(mutation, reason):
    spec, _, generated = generate(domain="ml_monitoring")
    with pytest.raises(CheckFailed) as caught:
        check_generated(mutation(generated.code), spec, logic_name="detect_drift", filename="c.py", needs_train=False)
    assert caught.value.reason == reason
