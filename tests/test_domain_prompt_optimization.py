"""prompt_optimization through the real runtime: token estimates recorded, the budget checked before
the call, rate-limit (429) and timeout errors retried with jitter (nothing else).

In-process (``trusted``) and in the RestrictedPython worker (the default policy trusting no generator).
The same function under ``base`` does not retry a model client's RateLimitError and counts nothing.
"""

from __future__ import annotations

import pytest

import poet_runtime
from poet_runtime.resources import load_facility

from domain_helpers import policy, domain_events  # noqa: F401  (fixtures)

load_facility()
from poet_sandbox import retry, tokens  # noqa: E402

ASK = '''\
from poet_runtime import poet

CALLS = []
FAILURES = []


class RateLimitError(Exception):
    status_code = 429


@poet(domain="{domain}")
def ask(prompt: str, style: str = "short") -> str:
    CALLS.append(prompt)
    if FAILURES:
        raise FAILURES.pop(0)
    return "Answer: " + prompt[-30:]
'''


@pytest.fixture(autouse=True)
def _same_jitter_each_run():
    retry.seed(1)  # the retries' jitter: the same every run


def test_tokens_are_recorded_and_the_budget_is_checked_before_the_call(policy, write_module, domain_events):
    module = write_module("po_tokens", ASK.format(domain="prompt_optimization"))
    prompt = "Summarise the quarterly report in three bullet points, please."
    answer = module.ask(prompt)
    record = poet_runtime.last_execution()
    assert record.status == "ok" and record.backend == policy
    evidence = [e for e in domain_events if e["type"] == "domain.evidence"]
    assert len(evidence) == 1 and evidence[0]["field"] == "tokens"
    if policy == "none":
        detail = evidence[0]["detail"]
        assert detail["prompt_tokens"] == {"prompt": tokens.estimate(prompt), "style": 0}
        assert detail["result_tokens"] == tokens.estimate(answer) and detail["estimated"] is True
    huge = "lorem ipsum " * 5000  # ~10 000 estimated tokens, over the 8000 a call may send
    module.ask(huge)
    warnings = [e for e in domain_events if e["type"] == "domain.warning"]
    assert len(warnings) == 1 and warnings[0]["field"] == "budget" and "max_prompt_tokens" in str(warnings[0]["detail"])
    assert module.CALLS[-1] is huge or module.CALLS[-1] == huge  # reported before the call; the call still runs


def test_the_decorators_domain_options_set_the_budget(poet_home, write_module, domain_events):
    source = ASK.format(domain="prompt_optimization").replace(
        '@poet(domain="prompt_optimization")', '@poet(domain="prompt_optimization", domain_options={"max_prompt_tokens": 5})')
    module = write_module("po_options", source)
    module.ask("Summarise the quarterly report in three bullet points, please.")  # ~12 tokens: over 5
    warnings = [e for e in domain_events if e["type"] == "domain.warning"]
    assert len(warnings) == 1 and warnings[0]["field"] == "budget", domain_events
    params = next(poet_home.glob("po_options.ask/v1/params.json")).read_text()
    assert '"max_prompt_tokens": 5' in params


def test_rate_limits_and_timeouts_are_retried_other_errors_are_not(policy, write_module):
    module = write_module("po_retry", ASK.format(domain="prompt_optimization"))
    module.FAILURES[:] = [module.RateLimitError("429 Too Many Requests"), TimeoutError("read timed out")]
    assert module.ask("hello").startswith("Answer:")
    assert len(module.CALLS) == 3
    assert [kind for kind, _, _ in poet_runtime.last_execution().notes].count("retry") == 2
    module.FAILURES[:] = [ValueError("bad request")]
    with pytest.raises(ValueError):
        module.ask("again")
    assert len(module.CALLS) == 4  # a caller's error: once


def test_base_neither_retries_a_client_rate_limit_nor_counts_tokens(poet_home, write_module):
    module = write_module("po_base", ASK.format(domain="base"))
    module.FAILURES[:] = [module.RateLimitError("429 Too Many Requests")]
    with pytest.raises(module.RateLimitError):
        module.ask("hello")
    assert len(module.CALLS) == 1
    module.ask("hello")
    assert poet_runtime.last_execution().evidence == []


BUILDER = '''\
from poet_runtime import poet


@poet(domain="prompt_optimization", optimize_for="{objective}")
def build_prompt(question: str, context: str = "") -> str:
    return "Answer briefly.\\n" + context + "\\nQ: " + question.strip()
'''


def test_a_pure_prompt_builder_answers_repeated_calls_from_the_cache_once_two_agreed(poet_home, write_module):
    module = write_module("po_cache", BUILDER.format(objective="cost"))
    fields = []
    for question in ("What is POET?", "What is POET?", "What is POET?", "Why?", "What is POET?"):
        assert module.build_prompt(question) == "Answer briefly.\n\nQ: " + question
        fields.append([field for kind, field, _ in poet_runtime.last_execution().notes or () if kind == "domain.evidence"])
    cached = ["cached_answer" in f for f in fields]
    assert cached == [False, False, True, False, True]  # served only after two calls agreed
    code = next(poet_home.glob("po_cache.build_prompt/v*/code.py")).read_text()
    assert "answers.lookup" in code
    impure = write_module("po_nocache", ASK.format(domain="prompt_optimization").replace(
        '@poet(domain="prompt_optimization")', '@poet(domain="prompt_optimization", optimize_for="cost")'))
    for _ in range(3):
        impure.ask("same")
    assert len(impure.CALLS) == 3  # it writes a global: never cached
    latency = write_module("po_plain", BUILDER.format(objective="accuracy"))
    latency.build_prompt("x")
    assert "answers" not in next(poet_home.glob("po_plain.build_prompt/v*/code.py")).read_text()


def test_domain_options_set_a_budget_per_function():
    """What the generator does with the decorator's domain_options: starting values, clamped to range."""
    from poet_runtime.decorator import PoetConfig
    from poet_runtime.domains import get_domain
    from poet_runtime.generate.builtin import BuiltinGenerator
    from poet_runtime.generate.spec import spec_from_source

    spec = spec_from_source("app", "ask", ASK.format(domain="prompt_optimization"), "app.py")
    config = PoetConfig.from_kwargs("app:ask", domain="prompt_optimization")
    optioned = PoetConfig.from_kwargs("app:ask", domain="prompt_optimization",
                                      domain_options={"max_prompt_tokens": 50, "token_budget": -5})
    assert optioned.key_data() != config.key_data()  # a different version
    generated = BuiltinGenerator().generate(spec, optioned, get_domain("prompt_optimization"))
    assert generated.parameters["max_prompt_tokens"]["default"] == 50
    assert generated.parameters["token_budget"]["default"] == 0  # clamped to its range
    plain = BuiltinGenerator().generate(spec, config, get_domain("prompt_optimization"))
    assert plain.parameters["max_prompt_tokens"]["default"] == 8000
