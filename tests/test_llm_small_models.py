"""Issue 16: the LLM path as a small local model meets it, against the scripted server (real HTTP, real litellm).

Probes run wherever an answer is judged (enhance never imports the program; a script
is ``__main__``), the prompt fits the model's context (compact, else the Enforce rules
as JSON), ``max_tokens`` is sent and a cut-off answer is asked shorter, a model that
failed is not asked again within the back-off, ``enhance`` fails when it could not
store what production uses, and each attempt shows in ``enhance``, ``show`` and
``events``.
"""

from __future__ import annotations

import importlib.util
import json
import re

import pytest

from fake_openai import Answer, FakeOpenAI, Status, refused_port
from poet_runtime import settings
from poet_runtime.decorator import PoetConfig
from poet_runtime.generate.builtin import GENERATOR_VERSION as BUILTIN_VERSION
from poet_runtime.generate.llm import LLMGenerator
from poet_runtime.generate.spec import spec_from_source
from poet_runtime.resolve import ensure_version

BUILTIN = f"builtin-{BUILTIN_VERSION}"
SLUG = '''
from poet_runtime import poet


@poet()
def slug(text: str) -> str:
    """A lower-case slug.

    >>> slug("Hello World")
    'hello-world'
    """
    return "-".join(text.lower().split())


class Shelf:
    @poet()
    def count(self, items: list) -> int:
        return len(items)


if __name__ == "__main__":
    print(slug("Not Run Here"))
    raise SystemExit("the program ran: probes must only define its functions")
'''

GRADE = '''
from poet_runtime import poet


@poet()
def grade(x: float) -> dict:
    """Score a value.

    >>> grade(0.25)["label"]
    'low'
    """
    score = min(max(x, 0.0), 1.0)
    return {"score": score, "label": "high" if score > 0.5 else "low"}
'''


@pytest.fixture(scope="module")
def fake():
    server = FakeOpenAI().start()
    yield server
    server.stop()


@pytest.fixture
def env(poet_home, fake, tmp_path, monkeypatch):
    from poet_runtime.generate import llm_context, originals

    fake.script(default=Status(500, "nothing scripted"))
    fake.context = 16384
    llm_context.forget()
    originals.forget()
    monkeypatch.setenv("POET_LLM_WORKER", "off")
    settings.override(model="openai/fake-coder", api_base=fake.api_base)
    folder = tmp_path / "proj"
    folder.mkdir()

    class Env:
        home = poet_home
        server = fake
        root = folder

        @staticmethod
        def write(name, text):
            path = folder / f"{name}.py"
            path.write_text(text, encoding="utf-8")
            return path

        @staticmethod
        def generator(**overrides):
            values = dict(backoff_base_s=0.01, probe_timeout_s=0.5, worker=False, ask_backoff_s=0.0)
            values.update(overrides)
            return LLMGenerator.from_settings(settings.get_settings(), **values)

        @classmethod
        def generate(cls, path, module, qualname, generator=None, **config):
            spec = spec_from_source(module, qualname, path.read_text(), str(path))
            return ensure_version(spec, PoetConfig.from_kwargs(f"{module}:{qualname}", **config),
                                  module_file=str(path), generator=generator or cls.generator())

    yield Env
    fake.script(default=Status(500, "nothing scripted"))
    fake.context = 16384
    llm_context.forget()


def example(request: dict) -> str:
    first = request["messages"][1]["content"].split("## Your previous answer")[0]
    return re.findall(r"```python\n(.*?)```", first, re.S)[-1]


def answer(change=lambda code: code):
    return Answer(lambda request: f"```python\n{change(example(request))}```")


def upper(code: str) -> str:
    """An Enforce that returns another result than the original's (the slugify case of the issue)."""
    return code.replace("\n    return result\n", "\n    return result.upper()\n")


def metadata(version) -> dict:
    return json.loads((version.path / "metadata.json").read_text())


# -- item 1: probes run wherever an answer is judged -------------------------------------------

def test_enhance_probes_a_module_it_never_imports(env, capsys, monkeypatch):
    from poet_runtime.cli import main

    monkeypatch.setenv("COLUMNS", "400")  # the table's rows on one line each
    path = env.write("slugapp", SLUG)
    env.server.script(answer(upper), answer())
    assert main(["enhance", str(path)]) == 0, capsys.readouterr()
    assert "slugapp" not in __import__("sys").modules  # never imported, and its __main__ block never ran
    from poet_runtime.store import FunctionStore

    version = FunctionStore.open("slugapp", "slug", str(path)).current()
    meta = metadata(version)
    assert [a["result"] for a in meta["attempts"]] == ["refused", "accepted"]
    assert meta["attempts"][0]["reason"] == "probe_mismatch"
    assert meta["checks"][-1] == "probe" and meta["probe"]["original"] == "defined from the captured source"
    assert "upper()" not in version.code()
    out = capsys.readouterr().out
    assert "refused (probe_mismatch)" in out and "accepted" in out  # the table shows each attempt


def test_a_script_imported_under_another_name_is_probed(env):
    path = env.write("scriptmod", SLUG.replace('    raise SystemExit("the program ran: probes must only define its '
                                               'functions")\n', ''))
    module_spec = importlib.util.spec_from_file_location("__poet_test_main__", path)
    module = importlib.util.module_from_spec(module_spec)
    __import__("sys").modules["__poet_test_main__"] = module  # what the runner's __main__ looks like
    try:
        module_spec.loader.exec_module(module)
        env.server.script(answer(upper), answer())
        meta = metadata(env.generate(path, "scriptmod", "slug"))
    finally:
        del __import__("sys").modules["__poet_test_main__"]
    assert meta["attempts"][0]["reason"] == "probe_mismatch" and meta["generator"] == "llm-2"
    assert meta["probe"]["original"] == "imported as __poet_test_main__"


def test_a_function_that_cannot_be_probed_is_never_sent_to_the_model(env):
    path = env.write("shelfapp", SLUG)
    env.server.script(answer())
    meta = metadata(env.generate(path, "shelfapp", "Shelf.count"))
    assert env.server.requests == []
    assert meta["generator"] == BUILTIN and meta["fallback"]["reason"] == "not_probeable"
    assert "method" in meta["fallback"]["detail"]


# -- items 3, 4, 5: the context, max_tokens, cut-off answers -----------------------------------

def test_max_tokens_is_sent_and_a_cut_off_answer_is_asked_shorter(env):
    from poet_runtime.generate.llm_prompt import compact_code

    path = env.write("slugcut", SLUG)
    env.server.script(answer(), Answer(lambda request: f"```python\n{compact_code(example(request))}```"))
    meta = metadata(env.generate(path, "slugcut", "slug", generator=env.generator(max_tokens=900)))
    first, second = env.server.requests
    assert first["max_tokens"] == 900 and first["stream"] is True
    assert [a.get("reason") for a in meta["attempts"]] == ["truncated", None]
    assert meta["attempts"][0]["finish_reason"] == "length"
    assert "cut off after 900 tokens" in second["messages"][-1]["content"]
    assert meta["generator"] == "llm-2"


def test_auto_max_tokens_follows_the_contract_and_the_context(env):
    from poet_runtime.generate.llm_settings import auto_max_tokens

    path = env.write("slugauto", SLUG)
    env.server.script(answer())
    env.generate(path, "slugauto", "slug")
    sent = env.server.requests[0]["max_tokens"]
    assert 512 <= sent <= 16384 and sent <= auto_max_tokens("x" * 20000)


def test_a_small_context_gets_the_enforce_rules_as_json(env):
    env.server.context = 2048  # llama.cpp's default: the whole module's prompt does not fit
    path = env.write("gradeapp", GRADE)
    rules = {"fields": {"score": {"type": "float", "min": 0, "max": 1},
                        "label": {"type": "str", "one_of": ["high", "low"]}},
             "required": ["score", "label"], "finite": True}
    env.server.script(Answer(json.dumps(rules)))
    version = env.generate(path, "gradeapp", "grade")
    sent = env.server.requests[0]
    assert sent["response_format"]["type"] == "json_object" and "schema" in sent["response_format"]
    assert env.server.prompt_tokens(sent) + sent["max_tokens"] <= 2048
    meta = metadata(version)
    assert meta["generator"] == "llm-2" and meta["parts"] == "enforce_rules" and meta["request"] == "rules"
    assert meta["checks"][0] == "rules" and meta["checks"][-1] == "probe"
    assert meta["context"] == {"tokens": 2048, "from": env.server.api_base[:-3] + "/props"}
    assert "finite_in_range(result['score']" in version.code() and "'high', 'low'" in version.code()


def test_rules_the_original_breaks_are_refused_by_the_probes(env):
    env.server.context = 2048
    path = env.write("gradebad", GRADE)
    wrong = {"fields": {"score": {"type": "float", "min": 0, "max": 0.1}}, "required": [], "finite": True}
    good = {"fields": {"score": {"type": "float", "min": 0, "max": 1}}, "required": [], "finite": True}
    env.server.script(Answer("Here: " + json.dumps(wrong)), Answer("not json at all"), Answer(json.dumps(good)))
    meta = metadata(env.generate(path, "gradebad", "grade"))
    assert [a.get("reason") for a in meta["attempts"]][:2] == ["probe_mismatch", "rules"]
    assert "answer again with one JSON object" in env.server.requests[1]["messages"][-1]["content"]
    assert meta["generator"] == "llm-2" and meta["attempts"][-1]["result"] == "accepted"


def test_a_context_refusal_from_the_server_shrinks_the_request(env):
    env.server.context = 1024  # smaller than the server says at /props (a misconfigured setting)
    path = env.write("gradectx", GRADE)
    rules = {"fields": {"score": {"type": "float", "min": 0, "max": 1}}, "required": [], "finite": True}
    env.server.script(answer(), Answer(json.dumps(rules)))
    meta = metadata(env.generate(path, "gradectx", "grade", generator=env.generator(context=16384)))
    assert meta["attempts"][0]["reason"] == "llm_context"
    assert meta["attempts"][1]["request"] == "rules" and meta["generator"] == "llm-2"


# -- item 9: back-off ---------------------------------------------------------------------------

def test_a_model_that_failed_is_not_asked_again_within_the_back_off(env):
    settings.override(api_base=f"http://127.0.0.1:{refused_port()}/v1")
    path = env.write("slugoff", SLUG)
    first = metadata(env.generate(path, "slugoff", "slug", generator=env.generator(ask_backoff_s=600)))
    assert first["fallback"]["reason"] == "llm_unavailable"
    settings.override(api_base=env.server.api_base)
    env.server.script(answer())
    again = metadata(env.generate(path, "slugoff", "slug", generator=env.generator(ask_backoff_s=600)))
    assert env.server.requests == [] and again["fallback"]["reason"] == "llm_backoff"
    assert "POET_LLM_BACKOFF" in again["fallback"]["detail"]
    late = metadata(env.generate(path, "slugoff", "slug", generator=env.generator(ask_backoff_s=0)))
    assert len(env.server.requests) == 1 and late["generator"] == "llm-2"


# -- items 8, 10: enhance, show, events ---------------------------------------------------------

def test_enhance_fails_when_production_would_not_find_the_version(env, capsys):
    from poet_runtime.cli import main

    settings.override(api_base=f"http://127.0.0.1:{refused_port()}/v1")
    path = env.write("slugdown", SLUG)
    assert main(["enhance", str(path)]) == 1
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.startswith("poet enhance: slugdown:slug:")]
    assert len(lines) == 1 and "llm_unavailable" in lines[0] and "production" in lines[0]


def test_show_and_events_list_each_attempt(env, capsys):
    from poet_runtime.cli import main

    path = env.write("slugshow", SLUG)
    env.server.script(answer(upper), answer())
    env.generate(path, "slugshow", "slug")
    capsys.readouterr()
    assert main(["show", f"{path}:slug", "--attempts"]) == 0
    out = capsys.readouterr().out
    assert "probe_mismatch" in out and "accepted" in out and "openai/fake-coder" in out
    assert main(["show", f"{path}:slug"]) == 0
    shown = capsys.readouterr()
    assert "def enforce(result):" in shown.out and "attempt #1 refused (probe_mismatch)" in shown.err
    assert main(["events", "--json", "--root", str(env.home), "--type", "generation.attempt"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert [(e["payload"]["attempt"], e["payload"]["result"]) for e in events] == [(1, "refused"), (2, "accepted")]


def test_show_renders_hidden_characters_visibly(env, capsys):
    from poet_runtime.cli import main
    from poet_runtime.store import FunctionStore

    path = env.write("slugtamper", SLUG)
    store = FunctionStore.open("slugtamper", "slug", str(path))
    store.create("X = 1  # \u202e evil\x1b[2J\n", {}, {}, {"key": "k", "generator": "hand"})
    assert main(["show", f"{path}:slug"]) == 0
    shown = capsys.readouterr()
    assert "\u202e" not in shown.out and "\x1b" not in shown.out
    assert "hidden character" in shown.err and "U+202E" in shown.err


CUSTOMER = '''
from poet_runtime import poet


@poet(domain="customer_service")
def greet(email: str) -> str:
    """A greeting.

    >>> greet("ann.lee@example.com")
    'Hello ann.lee@example.com'
    """
    return "Hello " + email
'''


def test_personal_data_never_reaches_the_prompt_nor_the_store(env):
    path = env.write("greetapp", CUSTOMER)
    env.server.script(answer(upper), answer())
    version = env.generate(path, "greetapp", "greet", domain="customer_service")
    assert len(env.server.requests) == 2
    for sent in env.server.prompts():
        assert "ann.lee@example.com" not in sent and "ANN.LEE@EXAMPLE.COM" not in sent
    assert "<email:" in env.server.prompts()[0]
    stored = (version.path / "metadata.json").read_text()
    assert "ann.lee@example.com" not in stored.lower()
    assert metadata(version)["attempts"][0]["reason"] == "probe_mismatch"


def test_enhance_takes_over_a_generation_whose_process_died(env, capsys):
    import subprocess
    import sys

    from poet_runtime.cli import main
    from poet_runtime.store import FunctionStore

    path = env.write("slugdead", SLUG)
    folder = FunctionStore.open("slugdead", "slug", str(path)).folder
    folder.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (folder / "pending.json").write_text(json.dumps({"id": "x", "key": "k", "function": "slugdead:slug",
                                                     "pid": int(dead.stdout)}))
    env.server.script(answer())
    assert main(["enhance", str(path)]) == 0, capsys.readouterr()
    assert not (folder / "pending.json").exists() and len(env.server.requests) == 1
    assert metadata(FunctionStore.open("slugdead", "slug", str(path)).current())["generator"] == "llm-2"


def test_rules_for_a_result_that_is_not_a_dict_change_nothing_and_say_so(env):
    env.server.context = 2048
    path = env.write("slugrules", SLUG)
    invented = {"fields": {"score": {"type": "float", "min": 0, "max": 1}}, "required": ["score"], "finite": False}
    env.server.script(Answer(json.dumps(invented)))
    version = env.generate(path, "slugrules", "slug")
    meta = metadata(version)
    assert meta["parts"] == "enforce_rules" and meta["parts_effect"] == "none"
    assert "'score'" not in version.code()
