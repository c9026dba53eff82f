"""A real POET service for tests: ``python -m poet_runtime serve`` in a uvicorn subprocess.

No TestClient, no in-process app: the tests talk HTTP to the same server a user runs, on a free
127.0.0.1 port, with the data dir and store the test gives. One key per scope is made before
start (``keys["read"]``, ``keys["write"]``, ``keys["admin"]``); ``headers(scope)`` is the
``Authorization`` header for that key. ``stop()`` sends SIGTERM and waits (SIGKILL after 10 s).

    from service_helpers import poet_service  # noqa: F401   (a fixture: tmp_path/data, tmp_path/store)

    def test_x(poet_service):
        httpx.get(poet_service.url + "/api/v1/functions", headers=poet_service.headers("read"))

or, with your own folders or arguments: ``with ServiceProcess(data, store, args=["--rate-limit", "5"]) as service:``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from poet_runtime.service.context import SCOPES

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServiceProcess:
    def __init__(self, data_dir: Path, store_root: Path, *, args: list[str] | None = None,
                 env: dict | None = None, host: str | None = None, port: int | None = None):
        self.data_dir = Path(data_dir)
        self.store_root = Path(store_root)
        self.args = list(args or [])
        self.env = env
        self.host = host  # None: serve's default (127.0.0.1)
        self.port = port
        self.process: subprocess.Popen | None = None
        self.keys: dict[str, str] = {}
        self.log_path = self.data_dir / "serve.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def headers(self, scope: str = "read") -> dict:
        return {"Authorization": f"Bearer {self.keys[scope]}"}

    def make_keys(self) -> dict[str, str]:
        from poet_runtime.service.auth import KeyStore

        store = KeyStore(self.data_dir)
        for scope in SCOPES:
            if scope not in self.keys:
                self.keys[scope] = store.add(f"test-{scope}", scope)
        return self.keys

    def command(self) -> list[str]:
        command = [sys.executable, "-m", "poet_runtime", "serve", "--port", str(self.port),
                   "--data", str(self.data_dir), "--store", str(self.store_root), "--log-level", "warning"]
        if self.host is not None:
            command += ["--host", self.host]
        return command + self.args

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def start(self, timeout: float = 60.0) -> "ServiceProcess":
        import httpx

        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.store_root.mkdir(parents=True, exist_ok=True)
        self.make_keys()
        for attempt in range(3):  # a free port can be taken between the probe and uvicorn's bind
            self.port = self.port or free_port()
            env = dict(os.environ if self.env is None else self.env)
            env.setdefault("PYTHONPATH", str(ROOT))
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, env=env, cwd=str(self.data_dir))
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    break
                try:
                    if httpx.get(self.url + "/health/ready", timeout=2.0).status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
            else:
                self.stop()
                raise RuntimeError(f"poet serve on port {self.port} not ready in {timeout} s:\n{self.log()}")
            if "address already in use" not in self.log().lower() or attempt == 2:
                raise RuntimeError(f"poet serve exited with {self.process.returncode}:\n{self.log()}")
            self.port = None
        raise AssertionError("unreachable")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def __enter__(self) -> "ServiceProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@pytest.fixture
def poet_service(tmp_path):
    """A running service on ``tmp_path/data`` serving the (empty) store ``tmp_path/store``.
    Fill the store before the first request, or use ``ServiceProcess`` directly."""
    service = ServiceProcess(tmp_path / "data", tmp_path / "store").start()
    try:
        yield service
    finally:
        service.stop()
