"""The POET service's API against a real uvicorn subprocess (``service_helpers.ServiceProcess``), httpx as client.

One service serves one store for the whole module: a real program (a child process with the
runtime on) filled it with versions and execution events, inputs recorded by its policy.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from service_helpers import ROOT, ServiceProcess

PROBLEM = "application/problem+json"
DETECT = "svcpkg.mod:detect"
GAUGE = "svcpkg.mod:Gauge.read"

MODULE = '''\
from poet_runtime import poet


@poet(domain="ml_monitoring", optimize_for="accuracy", policy={policy!r})
def detect(score: float, threshold: float = 0.9) -> dict:
    return {{"drift_detected": score > threshold, "score": score}}


class Gauge:
    @poet(policy="trusted")
    def read(self, value: int) -> int:
        return value * 2
'''

PROGRAM = '''\
import json, sys
import poet_runtime
poet_runtime.enable(hook=False)
from svcpkg import mod
ids = []
for score in (0.1, 0.95, 0.5):
    mod.detect(score)
    ids.append(poet_runtime.last_execution().execution_id)
mod.Gauge().read(2)
print(json.dumps(ids))
'''


def fill_store(folder: Path) -> list[str]:
    """Run a real program with the runtime on against ``folder/store``; its execution ids."""
    package = folder / "app" / "svcpkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    policy = folder / "record.toml"
    policy.write_text('version = 1\n[defaults]\nbackend = "none"\nrecord_inputs = true\n')
    (package / "mod.py").write_text(MODULE.format(policy=str(policy)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("POET_")}
    env.update(POET_HOME=str(folder / "store"), POET_CACHE_DIR=str(folder / "cache"),
               PYTHONPATH=os.pathsep.join([str(folder / "app"), str(ROOT)]), PYTHONDONTWRITEBYTECODE="1")
    done = subprocess.run([sys.executable, "-c", PROGRAM], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("service")
    ids = fill_store(root)
    with ServiceProcess(root / "data", root / "store") as service:
        service.execution_ids = ids
        yield service


def assert_problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status
    for name in ("type", "title", "detail", "instance"):
        assert isinstance(body[name], str) and body[name], (name, body)
    return body


def get(service, path: str, scope: str = "read", **kwargs) -> httpx.Response:
    return httpx.get(service.url + path, headers=service.headers(scope), timeout=30, **kwargs)


# -- keys, scopes, limits, problems --------------------------------------------------------


def test_keys_scopes_and_their_problem_documents(world):
    url = world.url + "/api/v1/functions"
    assert "missing-key" in assert_problem(httpx.get(url), 401)["type"]
    assert "unknown-key" in assert_problem(httpx.get(url, headers={"X-API-Key": "poet_nope"}), 401)["type"]
    assert httpx.get(url, headers={"X-API-Key": world.keys["read"]}).status_code == 200
    assert httpx.get(url, headers=world.headers("admin")).status_code == 200  # admin includes read
    rollback = world.url + f"/api/v1/functions/{DETECT}/current"
    body = assert_problem(httpx.put(rollback, json={"version": 1}, headers=world.headers("read")), 403)
    assert body["required_scope"] == "write" and body["key_scope"] == "read"
    stored = (world.data_dir / "keys.json").read_text()
    assert all(key not in stored for key in world.keys.values())  # only digests are kept
    assert (world.data_dir / "keys.json").stat().st_mode & 0o777 == 0o600

    # a key made by the command is printed once and works at once; a revoked one stops working
    made = subprocess.run([sys.executable, "-m", "poet_runtime", "serve", "--data", str(world.data_dir),
                           "--add-key", "ci", "--scope", "write"], capture_output=True, text=True, timeout=60,
                          cwd=str(ROOT))
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("poet_") and key not in (world.data_dir / "keys.json").read_text()
    assert httpx.get(world.url + "/api/v1/whoami", headers={"Authorization": f"Bearer {key}"}).json() == \
        {"name": "ci", "scope": "write"}
    from poet_runtime.service.auth import KeyStore

    assert KeyStore(world.data_dir).revoke("ci")
    assert_problem(httpx.get(world.url + "/api/v1/whoami", headers={"X-API-Key": key}), 401)


def test_rate_limit_answers_429_with_retry_after(world):
    from poet_runtime.service.auth import KeyStore

    key = KeyStore(world.data_dir).add("limited", "read", rate_limit=3)
    headers = {"X-API-Key": key}
    for _ in range(3):
        assert httpx.get(world.url + "/api/v1/whoami", headers=headers).status_code == 200
    refused = httpx.get(world.url + "/api/v1/whoami", headers=headers)
    body = assert_problem(refused, 429)
    assert 1 <= int(refused.headers["Retry-After"]) <= 60 and "limited" in body["detail"]
    # other keys are not affected
    assert get(world, "/api/v1/whoami").status_code == 200


def test_404_and_422_are_problem_documents(world):
    assert_problem(get(world, "/api/v1/no/such/route"), 404)
    assert_problem(get(world, "/api/v1/functions/nomodule:nothing/versions"), 404)
    assert_problem(get(world, f"/api/v1/functions/{DETECT}/versions/99"), 404)
    body = assert_problem(httpx.post(world.url + "/api/v1/enhance", json={"module": "m", "qualname": "f"},
                                     headers=world.headers("write")), 422)
    assert "body.source" in [e["field"] for e in body["errors"]] and "body.source" in body["detail"]
    assert "since" in assert_problem(get(world, "/api/v1/events", params={"since": "yesterday"}), 422)["detail"]
    assert_problem(get(world, "/api/v1/functions/no-colon/versions"), 422)


def test_binds_127_0_0_1_by_default(world):
    """No --host: the listening socket is on 127.0.0.1 only (read from the kernel's table)."""
    wanted = f"0100007F:{world.port:04X}"
    table = Path("/proc/net/tcp").read_text().splitlines()[1:]
    listening = [line.split()[1] for line in table if line.split()[3] == "0A" and
                 line.split()[1].endswith(f":{world.port:04X}")]
    assert listening == [wanted], listening
    if Path("/proc/net/tcp6").exists():
        assert not any(line.split()[1].endswith(f":{world.port:04X}") and line.split()[3] == "0A"
                       for line in Path("/proc/net/tcp6").read_text().splitlines()[1:])


# -- enhance ---------------------------------------------------------------------------------


def enhance_body(name: str, threshold: float = 0.5) -> dict:
    source = f"def {name}(value: float, threshold: float = {threshold}) -> bool:\n    return value > threshold\n"
    return {"source": source, "module": "clients.app", "qualname": name, "module_context": None,
            "config": {"domain": "ml_monitoring", "optimize_for": "accuracy"}}


def generations(service) -> float:
    text = get(service, "/metrics", "read").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("poet_service_generations_total{"))


def test_enhance_many_clients_one_generation(world):
    before = generations(world)
    body = enhance_body("over_threshold")

    async def ask_all(count: int):
        async with httpx.AsyncClient(timeout=60, headers=world.headers("write")) as client:
            return await asyncio.gather(*(client.post(world.url + "/api/v1/enhance", json=body)
                                          for _ in range(count)))

    answers = asyncio.run(ask_all(20))
    assert all(a.status_code == 200 for a in answers), answers[0].text
    codes = {a.json()["code"] for a in answers}
    assert len(codes) == 1
    assert generations(world) - before == 1
    assert sorted(a.json()["metadata"]["cache"] for a in answers).count("miss") == 1

    # the answer is the built-in generator's, byte for byte, under the key the runtime would store it
    from poet_runtime.decorator import PoetConfig
    from poet_runtime.domains import get_domain
    from poet_runtime.generate.builtin import BuiltinGenerator
    from poet_runtime.generate.identity import version_key
    from poet_runtime.generate.spec import spec_from_source

    spec = spec_from_source("clients.app", "over_threshold", body["source"], None)
    config = PoetConfig.from_kwargs(spec.function_id, domain="ml_monitoring", optimize_for="accuracy")
    domain = get_domain("ml_monitoring")
    generator = BuiltinGenerator()
    assert codes == {generator.generate(spec, config, domain).code}
    meta = answers[0].json()["metadata"]
    assert meta["version_key"] == version_key(spec, config, generator, domain.version)
    assert meta["generator"] == generator.generate(spec, config, domain).generator and meta["template_version"] == domain.version

    # another function is another generation; the same one again is a cache hit
    other = httpx.post(world.url + "/api/v1/enhance", json=enhance_body("over_other", 0.7),
                       headers=world.headers("write"), timeout=60)
    again = httpx.post(world.url + "/api/v1/enhance", json=body, headers=world.headers("write"), timeout=60)
    assert other.status_code == 200 and again.json()["metadata"]["cache"] == "hit"
    assert generations(world) - before == 2

    # numbers reach the key as the client's decorator has them (an int domain option is not made a float)
    options = {"domain": "prompt_optimization", "domain_options": {"max_prompt_tokens": 2000}, "timeout": 2}
    timed = httpx.post(world.url + "/api/v1/enhance", headers=world.headers("write"), timeout=60,
                       json={**body, "config": options})
    assert timed.status_code == 200, timed.text
    config = PoetConfig.from_kwargs(spec.function_id, **options)
    assert timed.json()["metadata"]["version_key"] == version_key(spec, config, generator,
                                                                  get_domain("prompt_optimization").version)

    # a method read from its module's text; a bad config names its field; read scope may not generate
    module = "class Box:\n    def size(self, n: int) -> int:\n        return n\n"
    boxed = httpx.post(world.url + "/api/v1/enhance", headers=world.headers("write"), timeout=60,
                       json={"source": "def size(self, n: int) -> int:\n    return n\n", "module": "boxes",
                             "qualname": "Box.size", "module_context": module, "config": {}})
    assert boxed.status_code == 200, boxed.text
    bad = httpx.post(world.url + "/api/v1/enhance", headers=world.headers("write"),
                     json={**body, "config": {"domain": "nonsense"}})
    assert "config.domain" in assert_problem(bad, 422)["detail"]
    assert_problem(httpx.post(world.url + "/api/v1/enhance", json=body, headers=world.headers("read")), 403)


# -- feedback --------------------------------------------------------------------------------


def feedback_files(service) -> list[Path]:
    return sorted((service.store_root / "events").rglob("fb-*.jsonl"))


def test_feedback_is_validated_like_the_library_and_stored(world):
    execution = world.execution_ids[0]
    url = world.url + "/api/v1/feedback"
    headers = {**world.headers("write"), "Content-Type": "application/json"}
    before = feedback_files(world)
    nan = httpx.post(url, content='{"execution_id": "%s", "label": NaN}' % execution, headers=headers)
    body = assert_problem(nan, 422)
    assert body["field"] == "label" and "label" in body["detail"]
    assert "rating" in assert_problem(httpx.post(url, json={"execution_id": execution, "rating": 7},
                                                 headers=headers), 422)["detail"]
    assert_problem(httpx.post(url, json={"execution_id": "0123456789ab-999", "label": True}, headers=headers), 404)
    assert_problem(httpx.post(url, json={"execution_id": execution, "label": True},
                              headers=world.headers("read")), 403)
    assert feedback_files(world) == before  # nothing refused was recorded

    done = httpx.post(url, json={"execution_id": execution, "label": False, "rating": 4, "comments": "ok"},
                      headers=headers)
    assert done.status_code == 201, done.text
    event_id = done.json()["event_id"]
    written = [p for p in feedback_files(world) if p not in before]
    assert len(written) == 1 and event_id in written[0].name


def test_feedback_is_written_only_to_the_store_the_service_serves(world, tmp_path):
    """A service on another store never finds (and writes feedback beside) an execution of the store
    its own environment's POET_HOME names."""
    execution = world.execution_ids[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith("POET_")}
    env.update(POET_HOME=str(world.store_root))
    before = feedback_files(world)
    with ServiceProcess(tmp_path / "data", tmp_path / "empty_store", env=env) as other:
        refused = httpx.post(other.url + "/api/v1/feedback", json={"execution_id": execution, "label": True},
                             headers=other.headers("write"), timeout=30)
    assert_problem(refused, 404)
    assert feedback_files(world) == before


# -- functions, versions, rollback -------------------------------------------------------------


def test_functions_versions_and_rollback_change_the_store(world):
    from poet_runtime.store import FunctionStore, folder_name

    listed = {f["id"]: f for f in get(world, "/api/v1/functions").json()["functions"]}
    assert {DETECT, GAUGE} <= set(listed)
    assert listed[DETECT]["calls"]["enhanced"] == 3 and listed[DETECT]["objective"] == "accuracy"
    assert listed[GAUGE]["calls"]["enhanced"] == 1

    # a second version, made as the store makes them, so there is something to roll back to
    store = FunctionStore(world.store_root / folder_name("svcpkg.mod", "Gauge.read"), GAUGE)
    first = store.current()
    meta = {k: v for k, v in first.metadata.items() if k not in ("version", "function", "parent", "created_at",
                                                                  "integrity")}
    store.create(first.code() + "\n# v2\n", first.params(), first.state(), meta)
    assert store.current_number() == 2

    versions = get(world, f"/api/v1/functions/{GAUGE}/versions").json()
    assert [v["version"] for v in versions["versions"]] == [1, 2] and versions["current"] == 2
    detail = get(world, f"/api/v1/functions/{GAUGE}/versions/1").json()
    assert detail["code"] == (store.folder / "v1" / "code.py").read_text()
    assert detail["metadata"]["function"] == GAUGE and "params" in detail and "state" in detail

    moved = httpx.put(world.url + f"/api/v1/functions/{GAUGE}/current", json={"version": 1},
                      headers=world.headers("write"))
    assert moved.status_code == 200, moved.text
    assert moved.json() == {"function": GAUGE, "current": 1, "previous": 2}
    assert os.readlink(store.folder / "current") == "v1"  # the store on disk changed
    assert FunctionStore(store.folder, GAUGE).current_number() == 1
    assert_problem(httpx.put(world.url + f"/api/v1/functions/{GAUGE}/current", json={"version": 9},
                             headers=world.headers("write")), 404)
    assert os.readlink(store.folder / "current") == "v1"


# -- events ------------------------------------------------------------------------------------


def test_events_filters_since_and_inputs_only_for_admin(world):
    params = {"type": "function.execution", "function": DETECT}
    events = get(world, "/api/v1/events", params=params).json()["events"]
    assert [e["payload"]["execution_id"] for e in events] == world.execution_ids
    assert all("inputs" not in e["payload"] and e["payload"]["inputs_withheld"] for e in events)
    admin = get(world, "/api/v1/events", "admin", params=params).json()["events"]
    assert admin[1]["payload"]["inputs"] == {"args": [0.95], "kwargs": {}}
    later = get(world, "/api/v1/events", params={**params, "since": repr(events[0]["timestamp"])}).json()
    assert [e["payload"]["execution_id"] for e in later["events"]] == world.execution_ids[1:]
    assert_problem(get(world, "/api/v1/events", params={"type": "no.such"}), 422)


def test_events_stream_delivers_an_event_written_after_it_opened(world):
    execution = world.execution_ids[2]
    headers = {**world.headers("read"), "Accept": "text/event-stream"}
    with httpx.stream("GET", world.url + "/api/v1/events", params={"type": "function.feedback",
                                                                     "since": repr(time.time())},
                      headers=headers, timeout=httpx.Timeout(30, read=20)) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        assert next(lines).startswith("retry:")  # the stream is open and being served
        done = httpx.post(world.url + "/api/v1/feedback", json={"execution_id": execution, "label": True},
                          headers=world.headers("write"))
        assert done.status_code == 201, done.text
        deadline = time.monotonic() + 20
        message = {}
        for line in lines:
            if line.startswith("data: "):
                message = json.loads(line[len("data: "):])
                break
            assert time.monotonic() < deadline
    assert message["type"] == "function.feedback" and message["id"] == done.json()["event_id"]
    assert message["payload"]["execution_id"] == execution


# -- metrics -------------------------------------------------------------------------------------

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"'
                    r'(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*")*)?\})? (\S+)$')


def parse_exposition(text: str) -> dict:
    """Prometheus text format 0.0.4, strictly: every line a comment or a sample of a declared family."""
    types, samples = {}, {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped") and name not in types
            types[name] = kind
            continue
        if line.startswith("#") or not line:
            continue
        match = SAMPLE.match(line)
        assert match, line
        name, labels, value = match.group(1), match.group(2) or "", match.group(3)
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
        assert family in types, line
        number = float(value)
        assert not math.isnan(number), line
        samples.setdefault(family, []).append((name, labels, number))
    for family, kind in types.items():
        if kind != "histogram":
            continue
        series: dict = {}
        for name, labels, number in samples.get(family, []):
            if name.endswith("_bucket"):
                key = re.sub(r',?le="[^"]*"', "", labels)
                series.setdefault(key, []).append(number)
        for counts in series.values():
            assert counts == sorted(counts), (family, counts)  # cumulative buckets
    return samples


def test_metrics_is_prometheus_text(world):
    response = get(world, "/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = parse_exposition(response.text)
    calls = {labels: value for _, labels, value in samples["poet_calls_total"]}
    assert calls[f'{{function="{DETECT}",outcome="enhanced"}}'] == 3
    durations = [v for n, labels, v in samples["poet_call_duration_seconds"]
                 if n.endswith("_count") and DETECT in labels]
    assert durations == [3]
    assert any(n == "poet_service_requests_total" for n, _, _ in samples["poet_service_requests_total"])
    assert "poet_service_request_seconds" in samples
    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError:
        return
    names = {family.name for family in text_string_to_metric_families(response.text)}
    assert {"poet_calls", "poet_call_duration_seconds"} <= names


def test_readiness_and_an_open_event_stream_not_holding_up_the_stop(tmp_path):
    """Ready means the store can be read (503 problem otherwise). SIGTERM with a follow=1 stream open: the
    stream ends and the server exits at once (uvicorn waits for open responses before it stops, and an event
    stream never ends by itself)."""
    import signal
    import threading

    service = ServiceProcess(tmp_path / "data", tmp_path / "store").start()
    assert httpx.get(service.url + "/health/live").json() == {"status": "ok"}
    (tmp_path / "store").rename(tmp_path / "elsewhere")
    assert "store" in assert_problem(httpx.get(service.url + "/health/ready"), 503)["detail"]
    (tmp_path / "elsewhere").rename(tmp_path / "store")
    assert httpx.get(service.url + "/health/ready").status_code == 200
    opened, ended = threading.Event(), threading.Event()

    def follow():
        try:
            with httpx.stream("GET", service.url + "/api/v1/events", params={"follow": "1"},
                              headers=service.headers("read"), timeout=30) as stream:
                for line in stream.iter_lines():
                    if line.startswith("retry:"):
                        opened.set()
        except httpx.HTTPError:
            pass
        finally:
            ended.set()

    threading.Thread(target=follow, daemon=True).start()
    try:
        assert opened.wait(20)
        started = time.monotonic()
        service.process.send_signal(signal.SIGTERM)
        service.process.wait(timeout=4)  # uvicorn's own graceful timeout (5 s) is only the backstop
        assert time.monotonic() - started < 4
        assert ended.wait(5)
    finally:
        service.stop()
