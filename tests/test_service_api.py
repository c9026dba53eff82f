"""The POET service's API against a real uvicorn subprocess (``service_helpers.ServiceProcess``), httpx as client."""

from __future__ import annotations

import httpx
import pytest

from service_helpers import ServiceProcess

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    root = tmp_path_factory.mktemp("service")
    with ServiceProcess(root / "data", root / "store") as running:
        yield running


def assert_problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status
    for name in ("type", "title", "detail", "instance"):
        assert isinstance(body[name], str) and body[name], (name, body)
    return body


def test_keys_and_scopes(service):
    url = service.url + "/api/v1/whoami"
    assert_problem(httpx.get(url), 401)
    assert "unknown" in assert_problem(httpx.get(url, headers={"X-API-Key": "poet_nope"}), 401)["type"]
    assert httpx.get(url, headers={"X-API-Key": service.keys["read"]}).json() == {"name": "test-read", "scope": "read"}
    assert httpx.get(url, headers=service.headers("admin")).json()["scope"] == "admin"
    keys = (service.data_dir / "keys.json").read_text()
    assert all(key not in keys for key in service.keys.values())  # only digests are stored
    assert (service.data_dir / "keys.json").stat().st_mode & 0o777 == 0o600


def test_unknown_route_is_a_problem(service):
    body = assert_problem(httpx.get(service.url + "/api/v1/no/such/route"), 404)
    assert body["instance"] == "/api/v1/no/such/route"
