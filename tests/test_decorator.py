"""@poet: its three forms, what it keeps of the function, its errors, and zero cost when off."""

from __future__ import annotations

import asyncio
import inspect
import warnings

import pytest

import poet_runtime
from poet_runtime import PoetConfigError, poet


def test_off_returns_the_very_same_function():
    assert not poet_runtime.is_enabled()

    def plain(x):
        return x

    assert poet(plain) is plain
    assert poet()(plain) is plain
    assert poet(domain="ml_monitoring", optimize_for="accuracy")(plain) is plain
    static = staticmethod(plain)
    assert poet(static) is static


@pytest.mark.parametrize(
    "kwargs, argument, allowed",
    [
        ({"domain": "astrology"}, "domain", "ml_monitoring"),
        ({"optimize_for": "vibes"}, "optimize_for", "accuracy"),
        ({"retries": -1}, "retries", ">= 0"),
        ({"retries": 1.5}, "retries", ">= 0"),
        ({"timeout": 0}, "timeout", "> 0"),
        ({"timeout": -2.0}, "timeout", "> 0"),
        ({"policy": ""}, "policy", "default, strict, trusted"),
        ({"repair": "magic"}, "repair", "'coerce'"),
        ({"domain_options": ["max_prompt_tokens", 5]}, "domain_options", "a dict"),
        ({"domain_options": {"max_prompt_tokens": float("nan")}}, "domain_options['max_prompt_tokens']", "finite"),
        ({"domain_options": {"max_prompt_tokens": True}}, "domain_options['max_prompt_tokens']", "finite"),
        ({"domain_options": {"not a name": 1}}, "domain_options", "parameter names"),
    ],
)
def test_bad_arguments_name_function_argument_and_allowed_values(kwargs, argument, allowed):
    def scored(x):
        return x

    with pytest.raises(PoetConfigError) as caught:
        poet(**kwargs)(scored)
    message = str(caught.value)
    assert f"{__name__}:test_bad_arguments_name_function_argument_and_allowed_values.<locals>.scored" in message
    assert f"{argument}=" in message
    assert allowed in message


def test_domain_objectives_are_accepted():
    def f(x):
        return x

    assert poet(domain="ml_monitoring", optimize_for="drift_sensitivity")(f) is f
    with pytest.raises(PoetConfigError):
        poet(domain="api_operations", optimize_for="drift_sensitivity")(f)


def test_enable_training_means_performance_with_a_deprecation_warning(poet_home):
    def f(x: int) -> int:
        return x

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        enhanced = poet(enable_training=True)(f)
    assert any(issubclass(w.category, DeprecationWarning) for w in caught)
    assert enhanced.__poet__.config.optimize_for == "performance"


def test_on_keeps_metadata_for_every_form(poet_home):
    def scale(values: list[float], factor: float = 2.0) -> list[float]:
        """Multiply each value."""
        return [v * factor for v in values]

    for enhanced in (poet(scale), poet()(scale), poet(domain="base", retries=1)(scale)):
        assert enhanced is not scale
        assert enhanced.__name__ == "scale"
        assert enhanced.__qualname__ == scale.__qualname__
        assert enhanced.__doc__ == "Multiply each value."
        assert enhanced.__module__ == scale.__module__
        assert enhanced.__wrapped__ is scale
        assert inspect.signature(enhanced) == inspect.signature(scale)
        assert enhanced.__annotations__ == scale.__annotations__
        assert enhanced([1.0, 2.0]) == [2.0, 4.0]


def test_methods_static_and_class_methods(poet_home):
    class Counter:
        base = 10

        def __init__(self):
            self.calls = 0

        @poet
        def add(self, x: int) -> int:
            self.calls += 1
            return self.base + x

        @staticmethod
        @poet()
        def double(x: int) -> int:
            return 2 * x

        @poet
        @classmethod
        def make(cls, x: int) -> int:
            return cls.base * x

    counter = Counter()
    assert counter.add(5) == 15
    assert poet_runtime.last_execution().status == "ok" and poet_runtime.last_execution().notes == ()
    # "6" for an int hint is not converted: the method gets it as the caller passed it, as the
    # original would, and its own error reaches the caller (the logic ran once).
    with pytest.raises(TypeError, match="unsupported operand"):
        counter.add("6")
    assert poet_runtime.last_execution().status == "error"
    assert counter.calls == 2
    assert Counter.double(4) == 8 and counter.double(4) == 8
    assert Counter.make(3) == 30
    assert isinstance(Counter.__dict__["make"], classmethod)
    assert poet_runtime.last_execution().status == "ok"


def test_methods_with_repair_coerce_get_the_lossless_repair(poet_home):
    class Counter:
        base = 10

        def __init__(self):
            self.calls = 0

        @poet(repair="coerce")
        def add(self, x: int) -> int:
            self.calls += 1
            return self.base + x

        @staticmethod
        @poet(repair="coerce")
        def double(x: int) -> int:
            return 2 * x

    counter = Counter()
    assert counter.add("6") == 16  # "6" repaired losslessly to 6, and the repair reported
    record = poet_runtime.last_execution()
    assert record.status == "ok" and record.notes == (("repair", "x", "str '6' -> int 6"),)
    assert counter.add(5) == 15 and poet_runtime.last_execution().notes == ()
    assert counter.calls == 2
    assert Counter.double("4") == 8
    assert poet_runtime.last_execution().notes == (("repair", "x", "str '4' -> int 4"),)


def test_async_functions_stay_coroutine_functions(poet_home):
    @poet(domain="api_operations")
    async def fetch(url: str) -> dict:
        await asyncio.sleep(0)
        return {"status": "success", "url": url}

    assert inspect.iscoroutinefunction(fetch)

    async def main():
        result = await fetch("https://example.test")
        return result, poet_runtime.last_execution()

    result, record = asyncio.run(main())
    assert result == {"status": "success", "url": "https://example.test"}
    assert record.status == "ok" and not record.fell_back and record.notes == ()

    async def odd():
        return await fetch(42), poet_runtime.last_execution()

    result, record = asyncio.run(odd())  # 42 for a str hint: passed on as it is, reported
    assert result == {"status": "success", "url": 42} and record.status == "ok"
    assert record.notes == (("mismatch", "url", "expected str, got int 42"),)
