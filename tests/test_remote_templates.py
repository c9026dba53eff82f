"""The template registry (``/api/v1/templates``) and the runtime's client of it, against a real service.

One ``python -m poet_runtime serve`` (uvicorn, a subprocess: tests/service_helpers) serves every
test here; each test works on a domain of its own or reads what it wrote, so they share it. The
runtime's side runs the LLM generator through litellm's real HTTP path against the scripted model
of tests/fake_openai, as tests/test_llm_generation does: only the model is fake.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import re
import subprocess
import sys
import threading

import httpx
import pytest

from fake_openai import Answer, FakeOpenAI, Status, refused_port
from service_helpers import ServiceProcess
from poet_runtime import settings
from poet_runtime.decorator import PoetConfig
from poet_runtime.domains import get_domain
from poet_runtime.generate import remote_templates
from poet_runtime.generate.identity import version_key
from poet_runtime.generate.llm import LLMGenerator
from poet_runtime.generate.spec import spec_from_function
from poet_runtime.resolve import ensure_version
from poet_runtime.service.registry import Registry

API = "/api/v1/templates"
SHIPPED = get_domain("base").template_path.read_text(encoding="utf-8")
METADATA_KEYS = {"created_at", "updated_at", "author", "description"}


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    folder = tmp_path_factory.mktemp("service")
    with ServiceProcess(folder / "data", folder / "store", args=["--rate-limit", "100000"]) as running:
        yield running


def get(service, path, scope="read", **kwargs):
    return httpx.get(service.url + path, headers={**service.headers(scope), **kwargs.pop("headers", {})},
                     timeout=10, **kwargs)


def post(service, domain, template, description="", scope="write"):
    return httpx.post(f"{service.url}{API}/{domain}", json={"template": template, "description": description},
                      headers=service.headers(scope), timeout=10)


def put(service, domain, version, label="current", scope="write"):
    return httpx.put(f"{service.url}{API}/{domain}/{label}", json={"version": version},
                     headers=service.headers(scope), timeout=10)


def marked(mark: str) -> str:
    """The shipped template with a line only this test's version has."""
    return SHIPPED.replace("## The original function", f"{mark}\n\n## The original function", 1)


def is_problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["type"] and body["title"] and body["detail"]
    return body


# -- the API ---------------------------------------------------------------------------------

def test_seeded_template_and_the_four_routes_with_their_exact_shapes(service):
    first = get(service, f"{API}/customer_service")
    assert first.status_code == 200
    body = first.json()
    assert set(body) == {"template", "version", "metadata"} and set(body["metadata"]) == METADATA_KEYS
    assert body["version"] == 1 and body["metadata"]["author"] == "poet_runtime (shipped)"
    assert body["template"] == get_domain("customer_service").template_path.read_text(encoding="utf-8")
    folder = service.data_dir / "templates" / "customer_service"
    assert (folder / "v1" / "template.txt").read_text() == body["template"]
    assert (folder / "current").read_text().strip() == "v1"

    created = post(service, "customer_service", marked("MARK-A"), "adds a mark")
    assert created.status_code == 201 and set(created.json()) == {"version", "created_at"}
    assert created.json()["version"] == 2
    now = get(service, f"{API}/customer_service").json()
    assert now["version"] == 2 and "MARK-A" in now["template"]
    assert now["metadata"]["author"] == "test-write" and now["metadata"]["description"] == "adds a mark"

    listed = get(service, f"{API}/customer_service/versions").json()
    assert set(listed) == {"versions"}
    assert [item["version"] for item in listed["versions"]] == [1, 2]
    assert all(set(item) == {"version"} | METADATA_KEYS for item in listed["versions"])

    rolled = put(service, "customer_service", 1)
    assert rolled.status_code == 200 and set(rolled.json()) == {"updated_at"}
    back = get(service, f"{API}/customer_service").json()
    assert back["version"] == 1 and back["metadata"]["updated_at"] == rolled.json()["updated_at"]
    assert (folder / "current").read_text().strip() == "v1"

    # labels beyond current: production points at v2 while current stays at v1
    assert put(service, "customer_service", 2, label="production").status_code == 200
    assert get(service, f"{API}/customer_service", params={"label": "production"}).json()["version"] == 2
    assert get(service, f"{API}/customer_service").json()["version"] == 1

    assert "no domain 'nowhere'" in is_problem(get(service, f"{API}/nowhere"), 404)["detail"]
    assert "no version 9" in is_problem(put(service, "customer_service", 9), 404)["detail"]
    is_problem(get(service, f"{API}/nowhere/versions"), 404)
    is_problem(get(service, f"{API}/customer_service", params={"label": "canary"}), 422)


def test_etag_gives_304_until_the_template_changes(service):
    first = get(service, f"{API}/financial_risk")
    etag = first.headers["etag"]
    assert etag.startswith('"') and first.status_code == 200
    again = get(service, f"{API}/financial_risk", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    assert get(service, f"{API}/financial_risk", headers={"If-None-Match": f'W/{etag}, "other"'}).status_code == 304
    assert post(service, "financial_risk", marked("MARK-F")).status_code == 201
    changed = get(service, f"{API}/financial_risk", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag and "MARK-F" in changed.json()["template"]


@pytest.mark.parametrize("template, placeholder, where", [
    (SHIPPED.replace("${objective}", "${objetive}"), "objetive", "line 2"),
    (SHIPPED.replace("Objective: ${objective}.", "Budget: $5."), "$5", "line 2"),
    (SHIPPED.replace("${output_contract}", "(none)"), "output_contract", None),
    (SHIPPED.replace("${original_code}", ""), "original_code", None),
    (SHIPPED.replace("Domain:", "Domain\u202e:"), "template", "line 2"),
])
def test_a_template_that_does_not_render_is_refused_naming_the_placeholder(service, template, placeholder, where):
    body = is_problem(post(service, "api_operations", template), 422)
    assert body["placeholder"] == placeholder and placeholder in body["detail"]
    if where:
        assert where in body["detail"]
    assert get(service, f"{API}/api_operations").json()["version"] == 1  # nothing stored


def test_a_description_with_hidden_characters_is_refused_naming_the_field(service):
    body = is_problem(post(service, "api_operations", marked("MARK-D"), "fine\u202eenif"), 422)
    assert body["field"] == "description" and "U+202E" in body["detail"]


def test_a_template_with_an_escaped_dollar_renders():
    from poet_runtime.service.registry import check_template

    assert "original_code" in check_template(SHIPPED + "\nIt costs $$5.\n")


def test_writes_need_the_write_scope(service):
    refused = is_problem(post(service, "ml_monitoring", marked("MARK-R"), scope="read"), 403)
    assert "write" in refused["detail"]
    is_problem(put(service, "ml_monitoring", 1, scope="read"), 403)
    is_problem(httpx.get(f"{service.url}{API}/ml_monitoring", timeout=10), 401)
    assert get(service, f"{API}/ml_monitoring/versions").json()["versions"][-1]["version"] == 1


def test_concurrent_posts_get_distinct_versions(service):
    results = []
    barrier = threading.Barrier(8)

    def write(number):
        barrier.wait()
        results.append(post(service, "prompt_optimization", marked(f"MARK-C{number}")))

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    versions = sorted(response.json()["version"] for response in results)
    assert versions == list(range(2, 10))
    folder = service.data_dir / "templates" / "prompt_optimization"
    texts = {(folder / f"v{n}" / "template.txt").read_text() for n in versions}
    assert len(texts) == 8  # each POST's own text under its own number


def _create_many(root, mark, count, queue):
    registry = Registry(root)
    queue.put([registry.create("base", marked(f"{mark}-{n}"), "", mark).version for n in range(count)])


def test_writers_in_separate_processes_get_distinct_versions(tmp_path):
    registry = Registry(tmp_path / "templates")
    assert "base" in registry.seed()
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    workers = [context.Process(target=_create_many, args=(tmp_path / "templates", f"P{n}", 5, queue))
               for n in range(3)]
    for worker in workers:
        worker.start()
    numbers = [number for _ in workers for number in queue.get(timeout=30)]
    for worker in workers:
        worker.join(10)
    assert sorted(numbers) == list(range(2, 17))
    assert registry.label("base") in numbers and not list((tmp_path / "templates" / "base").glob(".tmp-*"))


# -- the runtime's client --------------------------------------------------------------------

TARGET = '''
def add(a: int, b: int = 2) -> int:
    return a + b


def scale(values: list[float], factor: float = 2.0) -> list[float]:
    return [v * factor for v in values]
'''


def _example_answer(request: dict) -> str:
    """The built-in module the prompt gives as its example, answered back: a valid answer."""
    prompt = request["messages"][1]["content"]
    return "```python\n" + re.findall(r"```python\n(.*?)```", prompt, re.S)[-1] + "```"


@pytest.fixture(scope="module")
def fake():
    server = FakeOpenAI().start()
    yield server
    server.stop()


@pytest.fixture
def llm(poet_home, fake, write_module, monkeypatch, service):
    """A model configured (the fake), templates from ``service``; ``llm.generate(name)`` resolves a function."""
    fake.script(default=Answer(_example_answer))
    fake.context = 16384
    monkeypatch.setenv("POET_LLM_WORKER", "off")  # generation in this process
    settings.override(model="openai/fake-coder", api_base=fake.api_base, service_url=service.url,
                      service_key=service.keys["read"])
    remote_templates.reset()

    class Env:
        server = fake
        module = write_module("remote_template_target", TARGET)

        @staticmethod
        def generator():
            # probe_timeout_s: a valid answer's probes take milliseconds; 5 s is for a loaded machine
            return LLMGenerator.from_settings(settings.get_settings(), backoff_base_s=0.01, probe_timeout_s=5.0,
                                              worker=False, ask_backoff_s=0.0)

        @classmethod
        def spec_config(cls, name="add"):
            return spec_from_function(getattr(cls.module, name)), PoetConfig.from_kwargs(f"target:{name}")

        @classmethod
        def generate(cls, name="add"):
            spec, config = cls.spec_config(name)
            return ensure_version(spec, config, module_file=cls.module.__file__, generator=cls.generator())

        @staticmethod
        def prompts() -> list[str]:
            return [request["messages"][1]["content"] for request in fake.requests]

    yield Env
    remote_templates.reset()
    fake.script(default=Status(500, "nothing scripted"))


def meta(version) -> dict:
    return json.loads((version.path / "metadata.json").read_text())


def test_the_runtime_takes_its_template_from_the_service_and_a_new_one_makes_a_new_version(service, llm):
    first_number = post(service, "base", marked("MARK-S1"), "service template").json()["version"]
    first = llm.generate()
    assert len(llm.server.requests) == 1 and "MARK-S1" in llm.prompts()[0]
    assert meta(first)["template_version"] == first_number and meta(first)["template_source"] == service.url
    client = remote_templates.client()
    cache_file = client.cache_file
    assert json.loads(cache_file.read_text())["domains"]["base"]["version"] == first_number

    # Within the TTL an already generated version costs no HTTP at all (nor a model request).
    asked = client.requests
    assert llm.generate().number == first.number
    assert client.requests == asked and len(llm.server.requests) == 1

    # A new template on the service: seen once the TTL has run out, and it is a new function version.
    second_number = post(service, "base", marked("MARK-S2")).json()["version"]
    client._memory["base"].fetched_at -= remote_templates.TTL_S + 1  # 61 s later
    second = llm.generate()
    assert second.number == first.number + 1 and "MARK-S2" in llm.prompts()[-1]
    assert meta(second)["template_version"] == second_number

    # Revalidated after the next TTL: a 304, the same template, the same version, no model request.
    client._memory["base"].fetched_at -= remote_templates.TTL_S + 1
    requests = len(llm.server.requests)
    assert llm.generate().number == second.number and client.requests == asked + 2
    assert len(llm.server.requests) == requests

    # A rollback on the service brings the first function version back: found by its key, not generated.
    assert put(service, "base", first_number).status_code == 200
    client._memory["base"].fetched_at -= remote_templates.TTL_S + 1
    assert llm.generate().number == first.number and len(llm.server.requests) == requests

    # A new process inherits the cache file: within the TTL it asks the service nothing either.
    remote_templates.reset()
    fresh = remote_templates.client()
    assert fresh.cache_file == cache_file and remote_templates.key_part("base")["service_version"] == first_number
    assert fresh.requests == 0


def test_an_unreachable_service_means_the_local_templates_said_once(llm, caplog):
    settings.override(service_url=f"http://127.0.0.1:{refused_port()}")
    remote_templates.reset()
    spec, config = llm.spec_config("add")
    local_key = version_key(spec, config, llm.generator(), get_domain(None).version)
    with caplog.at_level(logging.INFO, logger="poet_runtime"):
        first = llm.generate("add")
        llm.generate("scale")
    lines = [record.getMessage() for record in caplog.records if "unreachable" in record.getMessage()]
    assert len(lines) == 1 and "using the local templates" in lines[0], lines
    assert len(llm.server.requests) == 2 and all("MARK-" not in prompt for prompt in llm.prompts())
    assert "## The original function (not to copy)" in llm.prompts()[0]
    assert meta(first)["template_version"] == get_domain(None).template_version
    assert "template_source" not in meta(first)
    # the key is the one a run without a service gives: versions made meanwhile are shared with it
    settings.override(service_url=None)
    assert first.metadata["key"] == local_key == version_key(spec, config, llm.generator(), get_domain(None).version)


def test_an_unreachable_service_keeps_the_last_template_it_gave(llm, caplog):
    """A previous process cached the service's v5 an hour ago; now the service is down: v5 is kept
    (so is the version key: nothing is regenerated because the service went away)."""
    import hashlib
    import time

    url = f"http://127.0.0.1:{refused_port()}"
    settings.override(service_url=url)
    remote_templates.reset()
    client = remote_templates.client()
    text = marked("MARK-CACHED")
    client.cache_file.parent.mkdir(parents=True, exist_ok=True)
    client.cache_file.write_text(json.dumps({"url": url, "domains": {"base": {
        "version": 5, "text": text, "etag": '"e5"', "fetched_at": time.time() - 3600,
        "sha256": hashlib.sha256(text.encode()).hexdigest()}}}))
    with caplog.at_level(logging.WARNING, logger="poet_runtime"):
        version = llm.generate()
    assert "MARK-CACHED" in llm.prompts()[-1] and meta(version)["template_version"] == 5
    assert "unreachable" in caplog.text and "using the last template it gave" in caplog.text
    assert client.requests == 1 and remote_templates.key_part("base")["service_version"] == 5
    assert client.requests == 1  # not asked again before the TTL


def test_without_a_service_nothing_is_imported_nor_asked(tmp_path):
    program = (
        "import sys\n"
        "from poet_runtime.decorator import PoetConfig\n"
        "from poet_runtime.domains import get_domain\n"
        "from poet_runtime.generate.identity import version_key\n"
        "from poet_runtime.generate.llm import LLMGenerator\n"
        "from poet_runtime.generate.llm_prompt import load_template, template_version\n"
        "from poet_runtime.generate.spec import spec_from_source\n"
        "spec = spec_from_source('m', 'add', 'def add(a, b):\\n    return a + b\\n', None)\n"
        "version_key(spec, PoetConfig.from_kwargs('m:add'), LLMGenerator('openai/x'), 1)\n"
        "assert 'original_code' in load_template(get_domain('base')).template\n"
        "assert template_version(get_domain('base')) == get_domain('base').template_version\n"
        "loaded = [m for m in ('poet_runtime.generate.remote_templates', 'httpx', 'urllib.request') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    env = {"PATH": "/usr/bin:/bin", "POET_CACHE_DIR": str(tmp_path), "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, env=env, timeout=60,
                          cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr


# -- generation through the service (POET_MODEL=service) -----------------------------------

class ScriptedService:
    """A service that answers ``/api/v1/enhance`` with what the test says: a hostile or broken one,
    which the real service (built-in generator) never is. Templates: 404 (the local ones)."""

    def __init__(self):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        scripted = self
        self.answer = None  # a callable taking the request body, returning {code, metadata}
        self.received: list[dict] = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._send(404, {"status": 404, "detail": "no templates here"})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                scripted.received.append(body)
                self._send(200, scripted.answer(body))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def through_service(poet_home, write_module, monkeypatch):
    """POET_MODEL=service; the default policy (restricted backend), so what is not built-in is sandboxed."""
    monkeypatch.setenv("POET_POLICY", "default")
    remote_templates.reset()

    class Env:
        module = write_module("through_service_target", TARGET)

        @classmethod
        def use(cls, url, key=None):
            settings.override(model="service", service_url=url, service_key=key)
            remote_templates.reset()

        @classmethod
        def resolve(cls, name="add"):
            from poet_runtime.resolve import effective_policy, load_version, select_generator

            function = getattr(cls.module, name)
            spec = spec_from_function(function)
            config = PoetConfig.from_kwargs(spec.function_id)
            generator = select_generator()
            assert generator.id == "service"
            generator.probe_timeout_s = 5.0  # probes of a sandboxed answer on a loaded machine
            version = ensure_version(spec, config, module_file=cls.module.__file__, generator=generator)
            loaded = load_version(version, function_id=spec.function_id, original=function, spec=spec, config=config,
                                  policy=effective_policy(config, spec.function_id))
            return version, loaded, spec, config

    yield Env
    remote_templates.reset()


def test_enhance_through_the_service_stores_builtin_code_as_verified_builtin(service, through_service):
    from poet_runtime.resolve import verified_builtin

    through_service.use(service.url, service.keys["write"])
    version, loaded, spec, config = through_service.resolve()
    data = meta(version)
    assert data["generator"].startswith("builtin-") and data["service"] == service.url
    assert data["service_metadata"]["cache"] in ("miss", "hit") and "fallback" not in data
    assert verified_builtin(version, spec, config) and loaded.backend == "none"  # regenerated byte for byte


def test_an_answer_that_is_not_builtin_runs_sandboxed_and_a_bad_one_is_refused(through_service, caplog):
    from poet_runtime.generate.builtin import BuiltinGenerator
    from poet_runtime.resolve import verified_builtin

    scripted = ScriptedService()
    try:
        through_service.use(scripted.url, "a-key")
        spec = spec_from_function(through_service.module.add)
        config = PoetConfig.from_kwargs(spec.function_id)
        builtin = BuiltinGenerator().generate(spec, config, get_domain(None)).code
        answer = builtin.replace("\ndef enforce(", "\n# tuned by the service\ndef enforce(", 1)
        assert answer != builtin
        scripted.answer = lambda body: {"code": answer, "metadata": {"generator": "llm:big", "version_key": "k",
                                                                     "template_version": 7}}
        version, loaded, spec, config = through_service.resolve("add")
        sent = scripted.received[0]
        assert set(sent) == {"source", "module", "qualname", "module_context", "config"}
        assert sent["qualname"] == "add" and "return a + b" in sent["source"] and "def scale" in sent["module_context"]
        data = meta(version)
        assert data["generator"] == "service-1" and data["template_version"] == 7 and "probe" in data["checks"]
        assert not verified_builtin(version, spec, config) and loaded.backend == "restricted"  # the sandbox

        scale = spec_from_function(through_service.module.scale)
        builtin = BuiltinGenerator().generate(scale, PoetConfig.from_kwargs(scale.function_id), get_domain(None)).code
        scripted.answer = lambda body: {"code": builtin.replace("\ndef enforce(", "\nimport os\ndef enforce(", 1),
                                        "metadata": {"generator": "llm:big", "version_key": "k", "template_version": 7}}
        with caplog.at_level(logging.WARNING, logger="poet_runtime"):
            refused, loaded, spec, config = through_service.resolve("scale")
        data = meta(refused)
        assert data["generator"].startswith("builtin-") and data["fallback"]["reason"] in ("hygiene", "static_policy")
        assert "refused by the check" in caplog.text and verified_builtin(refused, spec, config)
    finally:
        scripted.stop()


def test_an_unreachable_service_gives_the_builtin_version_asked_again_next_time(through_service, caplog):
    from poet_runtime.generate.builtin import BuiltinGenerator

    through_service.use(f"http://127.0.0.1:{refused_port()}", "a-key")
    with caplog.at_level(logging.WARNING, logger="poet_runtime"):
        version, loaded, spec, config = through_service.resolve()
    data = meta(version)
    assert data["fallback"]["reason"] == "service_unreachable" and loaded.backend == "none"
    assert data["key"] == version_key(spec, config, BuiltinGenerator(), get_domain(None).version)
    assert "gave no enhancement (service_unreachable)" in caplog.text


def test_model_service_without_a_service_url_is_a_start_up_error(poet_home):
    from poet_runtime.errors import PoetConfigError
    from poet_runtime.generate.llm import check_available

    with pytest.raises(PoetConfigError, match="POET_SERVICE_URL"):
        check_available(settings.override(model="service", service_url=None))
    check_available(settings.override(model="service", service_url="http://127.0.0.1:1"))  # no litellm asked for


def test_the_services_own_generations_take_its_registry_templates(tmp_path, poet_home):
    """Inside the service (``served_by``), prompts and keys use its registry, with no HTTP and no setting."""
    from poet_runtime.generate.builtin import BuiltinGenerator
    from poet_runtime.generate.llm_prompt import build_prompt
    from poet_runtime.generate.spec import spec_from_source

    registry = Registry(tmp_path / "templates")
    registry.seed()
    number = registry.create("base", marked("MARK-SERVED"), "", "test").version
    spec = spec_from_source("m", "add", "def add(a: int, b: int) -> int:\n    return a + b\n", None)
    config, domain = PoetConfig.from_kwargs("m:add"), get_domain(None)
    example = BuiltinGenerator().generate(spec, config, domain)
    generator = LLMGenerator("openai/x")
    outside = build_prompt(spec, config, domain, example, None)
    outside_key = version_key(spec, config, generator, domain.version)
    with remote_templates.served_by(registry.template_entry):
        inside = build_prompt(spec, config, domain, example, None)
        inside_key = version_key(spec, config, generator, domain.version)
    assert "MARK-SERVED" in inside.text() and inside.template_version == number
    assert "MARK-SERVED" not in outside.text() and outside.template_version == domain.template_version
    assert inside_key != outside_key == version_key(spec, config, generator, domain.version)


def test_learned_values_are_written_locally_not_asked_of_the_service(through_service):
    from poet_runtime.resolve import verified_builtin

    scripted = ScriptedService()
    scripted.answer = lambda body: {"code": "", "metadata": {}}
    try:
        through_service.use(scripted.url, "a-key")
        function = through_service.module.add
        spec = spec_from_function(function)
        config = PoetConfig.from_kwargs(spec.function_id, retries=2)
        from poet_runtime.resolve import select_generator

        version = ensure_version(spec, config, module_file=through_service.module.__file__,
                                 generator=select_generator(), hints={"params": {"retries": 1}})
        data = meta(version)
        assert scripted.received == [] and data["generator"].startswith("builtin-")
        assert data["builtin_hints"] == {"params": {"retries": 1}} and "service_skipped" in data
        assert json.loads((version.path / "params.json").read_text())["retries"] == 1
        assert verified_builtin(version, spec, config)
    finally:
        scripted.stop()


def test_a_redirect_is_not_followed_so_the_key_stays_with_the_service(poet_home, caplog):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen = []

    class Elsewhere(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            seen.append(self.headers.get("Authorization"))
            self.send_response(404)
            self.end_headers()

    class Redirecting(Elsewhere):
        def do_GET(self):
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.1:{other.server_port}/steal")
            self.end_headers()

    other, first = ThreadingHTTPServer(("127.0.0.1", 0), Elsewhere), ThreadingHTTPServer(("127.0.0.1", 0), Redirecting)
    for server in (other, first):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = remote_templates.TemplateClient(f"http://127.0.0.1:{first.server_port}", "secret-key", None)
        with caplog.at_level(logging.WARNING, logger="poet_runtime"):
            assert client.entry("base") is None
        assert seen == [] and "answered 302" in caplog.text
    finally:
        for server in (other, first):
            server.shutdown()
            server.server_close()
