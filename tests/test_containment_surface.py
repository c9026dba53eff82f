"""The surface generated code can reach is an allow-list (issue 13, item 1), and what a
reviewer reads is what runs (item 6).

The escape payloads (``tests/escapes``) show the gadgets refused; these tests pin the
rules themselves: only vetted modules can be listed, from each only its vetted names,
from the facility library only its public modules, ``type()`` constructs nothing
internal, and generated code with hidden characters fails its checks.
"""

from __future__ import annotations

import pytest

from poet_runtime.backends import get_backend
from poet_runtime.backends.base import Limits
from poet_runtime.backends.restricted import harness_module
from poet_runtime.errors import CheckFailed, PoetViolation
from poet_runtime.resources import load_facility
from sandbox_helpers import load, module_text

PhaseError = load_facility().PhaseError
IN_PROCESS = Limits(max_output_kb=16, imports=("math", "functools", "decimal", "numbers", "statistics", "random"))
WORKER = Limits(wall_ms=2000, cpu_ms=1000, memory_mb=128, max_output_kb=16, imports=IN_PROCESS.imports)
MODES = [pytest.param(IN_PROCESS, id="in-process"), pytest.param(WORKER, id="worker")]


@pytest.fixture(scope="module", autouse=True)
def close_backend():
    yield
    get_backend("restricted").close()


def run(body, limits, logic=lambda: "the logic's"):
    try:
        return "returned", load(module_text(body), limits).call(logic, (), {})[0]
    except PoetViolation as error:
        return "violation", error
    except PhaseError as error:
        return "phase", error


@pytest.mark.parametrize("module", ["typing", "operator", "string", "inspect", "dataclasses", "weakref", "copy",
                                    "enum", "collections.abc", "os.path", "poet_sandbox.driver"])
def test_a_policy_can_list_only_vetted_modules(module):
    with pytest.raises(PoetViolation) as caught:
        load(module_text(), Limits(imports=("math", module)))
    assert caught.value.limit == "imports" and module in caught.value.detail


def test_every_vetted_module_imports_and_offers_its_names():
    guards = harness_module("worker_guards")
    for name in guards.VETTED_MODULES:
        assert guards.vetted_reason(name) is None
        body = f"import {name}\nreturn sorted(n for n in ['x'])"
        assert run(body, Limits(imports=(name,)))[0] == "returned", name


@pytest.mark.parametrize("limits", MODES)
@pytest.mark.parametrize("body", [
    "import functools\nreturn functools.update_wrapper",
    "import functools\nreturn functools.wraps",
    "import functools\nreturn functools.singledispatch",
    "from functools import total_ordering\nreturn 1",
    "import decimal\nreturn decimal.localcontext",
    "import numbers\nnumbers.Real.register(str)\nreturn 1",
    "from poet_sandbox import driver\nreturn 1",
    "import poet_sandbox.crossing\nreturn 1",
    "import poet_sandbox\nreturn poet_sandbox.driver",
    "from poet_sandbox import validate\nreturn validate.NOTES",
    "from poet_sandbox import validate\nreturn validate.math",
])
def test_names_outside_the_surface_are_violations(body, limits):
    outcome, value = run(body, limits)
    assert outcome == "violation" and value.limit in ("attribute", "imports"), (outcome, value)


@pytest.mark.parametrize("limits", MODES)
def test_what_generated_code_uses_is_there(limits):
    body = ("import functools, decimal, statistics\n"
            "from poet_sandbox import validate, errors, timeouts, breaker, retry\n"
            "from poet_sandbox.validate import UNSET, HostRef\n"
            "total = functools.reduce(lambda a, b: a + b, [1, 2, 3])\n"
            "mean = statistics.mean([1, 2, 3])\n"
            "exact = str(decimal.Decimal('0.1') + decimal.Decimal('0.2'))\n"
            "fits = type(validate.as_int(3, 'x')) is int and type(UNSET).__name__ == 'Unset'\n"
            "return [total, mean, exact, fits, callable(timeouts.call_with_timeout), breaker.CircuitBreaker(3, 1).state,"
            " retry.backoff_delay(1, 0.0, 0.0), HostRef.__name__, errors.PerceiveError.__name__]")
    assert run(body, limits) == ("returned", [6, 2, "0.3", True, True, "closed", 0.0, "HostRef", "PerceiveError"])


@pytest.mark.parametrize("limits", MODES)
def test_type_gives_only_names_for_internal_classes(limits):
    body = ("def f():\n    pass\n"
            "names = [type(f).__name__, type(type(0)).__name__, type(len).__name__]\n"
            "made = []\n"
            "for maker in (type(f), type(type(0)), type(len)):\n"
            "    try:\n        maker('X', (), {})\n        made.append(1)\n"
            "    except TypeError:\n        pass\n"
            "return [names, made, type(1) is int, type('') is str, type([]).__name__]")
    assert run(body, limits) == ("returned", [["function", "type", "builtin_function_or_method"], [], True, True,
                                              "list"])


@pytest.mark.parametrize("limits", MODES)
def test_not_exceptions_are_exception_stand_ins(limits):
    body = ("caught = []\n"
            "for cls in (SystemExit, KeyboardInterrupt, GeneratorExit):\n"
            "    try:\n        raise cls('x')\n    except Exception as error:\n        caught.append(type(error).__name__)\n"
            "return [caught, BaseException is Exception]")
    assert run(body, limits) == ("returned", [["SystemExit", "KeyboardInterrupt", "GeneratorExit"], True])


@pytest.mark.parametrize("limits", MODES)
def test_random_draws_leave_the_process_generator_alone(limits):
    """In-process the logic shares the process's random generator: generated code draws from
    its own (seeding included), so the user's sequence is what it is without it."""
    import random

    body = ("import random\nfrom random import randint\nrandom.seed(7)\n"
            "return [random.random() for _ in range(50)] + [randint(1, 6)]")
    random.seed(12345)
    expected = [random.random() for _ in range(3)]
    random.seed(12345)
    outcome, drawn = run(body, limits)
    assert outcome == "returned" and len(drawn) == 51
    assert [random.random() for _ in range(3)] == expected
    assert run(body, limits)[1] == drawn  # seed(7) seeded the sandbox's own generator


def test_a_module_view_holds_no_real_module():
    """lru_cache copies the wrapped object's __dict__ natively: a view's holds only its names."""
    guards = harness_module("worker_guards")
    math_view = guards.Sandbox(("math",)).module_view("math")
    assert not any(type(value).__name__ in ("module", "Sandbox") for value in vars(math_view).values())
    assert math_view.pi > 3.14 and "sqrt" in vars(math_view)


# -- item 6: the checks of generated code refuse hidden characters ---------------------------

def _spec():
    from poet_runtime.generate.spec import spec_from_source

    return spec_from_source("tests.probe", "probe", "def probe(x):\n    return x\n", None)


@pytest.mark.parametrize("hidden", ["\u202e", "\u2066", "\u200b", "\x1b[2K", "\r", "\x08", "\ufeff"])
def test_generated_code_with_hidden_characters_fails_its_checks(hidden):
    from poet_runtime.generate.checks import check_generated

    code = module_text("return logic(*args, **kwargs)", params="x").replace(
        "def enforce(result):", f"# reviewed{hidden}x\ndef enforce(result):")
    with pytest.raises(CheckFailed) as caught:
        check_generated(code, _spec(), filename="code.py", needs_train=False)
    assert caught.value.reason == "syntax" and "hidden character U+" in str(caught.value)
    assert "line" in str(caught.value) and "column" in str(caught.value)
