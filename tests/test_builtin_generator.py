"""The built-in generator: real modules, one per domain, deterministic, readable, checked."""

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
'''


def generate(qualname="detect_drift", **config):
    spec = spec_from_source("app", qualname, SOURCE, "app.py")
    cfg = PoetConfig.from_kwargs(f"app:{qualname}", **config)
    return spec, cfg, BuiltinGenerator().generate(spec, cfg, get_domain(cfg.domain))


@pytest.mark.parametrize("domain", domain_names())
@pytest.mark.parametrize("objective", [None, "latency"])
def test_each_domain_gives_a_checked_module_with_the_phases(domain, objective):
    spec, cfg, generated = generate(domain=domain, optimize_for=objective)
    tree = ast.parse(generated.code)
    defined = {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    assert {"configure", "perceive", "operate_prime", "enforce", "detect_drift"} <= defined
    assert ("train" in defined) == (objective is not None)
    passed = check_generated(generated.code, spec, logic_name=generated.logic_name, filename="code.py",
                             needs_train=objective is not None)
    assert passed == ["syntax", "structure", "signature", "compile"]
    assert "statistics.fmean(current_data)" in generated.code  # the user's logic is in the module


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
    assert "threshold = PARAMS['threshold']" in trained.code
    _, _, plain = generate(domain="ml_monitoring")
    assert "threshold" not in plain.parameters
    assert "threshold = DEFAULTS['threshold']" in plain.code


def test_async_and_keyword_only_signatures():
    spec, cfg, generated = generate("fetch", domain="api_operations", timeout=1.5)
    assert "async def operate_prime(url, attempts, headers):" in generated.code
    assert ("await asyncio.wait_for(fetch(url, attempts=attempts, **headers), "
            "PARAMS['timeout_s'] if attempt < PARAMS['retries'] else TIMEOUT_S)") in generated.code
    assert "def perceive(url, *, attempts=UNSET, **headers):" in generated.code
    check_generated(generated.code, spec, logic_name="fetch", filename="c.py", needs_train=False)


def test_generator_functions_are_refused_with_a_reason():
    with pytest.raises(GenerationError) as caught:
        generate("rows")
    assert caught.value.reason == "unsupported"


@pytest.mark.parametrize(
    "mutation, reason",
    [
        (lambda code: code + "\ndef broken(:\n", "syntax"),
        (lambda code: code.replace("def enforce(result):", "def enforce_(result):"), "structure"),
        (lambda code: code + "\nprint('import-time side effect')\n", "structure"),
        (lambda code: code.replace("def perceive(current_data,", "def perceive(data,"), "signature"),
        (lambda code: code.replace("def enforce(result):", "def enforce(result, extra):"), "signature"),
    ],
)
def test_checks_refuse_broken_modules_with_their_reason(mutation, reason):
    spec, _, generated = generate(domain="ml_monitoring")
    with pytest.raises(CheckFailed) as caught:
        check_generated(mutation(generated.code), spec, logic_name="detect_drift", filename="c.py", needs_train=False)
    assert caught.value.reason == reason
