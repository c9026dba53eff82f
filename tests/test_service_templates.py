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
