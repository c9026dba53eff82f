"""The POET service under load, against a bare FastAPI endpoint on the same uvicorn (the floor).

Why: the design asks the service for 50 concurrent generations and 100 per minute, and template
fetches cheap enough to do on every client's TTL. Everything runs in this one process's run: two
real uvicorn subprocesses (``python -m poet_runtime serve`` on a store a real program filled, and
a FastAPI app whose one route returns a constant), one small HTTP/1.1 client for both (``Connection``), and the rows are
measured in alternating blocks, in a new random order each time, so the machine's drifting load
hits both alike. Medians over the
blocks are printed, with the ratio to the floor measured at the same concurrency.

Rows: ``/api/v1/whoami`` (what every route pays: the key check, the rate limit, the request
metrics, around a constant), template fetch with an ETag hit (``GET /api/v1/templates/{domain}`` + ``If-None-Match`` ->
304; skipped with a message when the registry is not installed), ``/api/v1/enhance`` with the
built-in generator and 50 concurrent clients, each asking for a function nobody asked for before
(every request a generation) and all asking for one function (one generation, the rest shared or
cached), feedback ingest (each one fsynced into the store), and the floor.

    python benchmarks/bench_service.py [--requests 400] [--repeats 5] [--concurrency 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

FLOOR_APP = '''\
import sys
import uvicorn
from fastapi import FastAPI

app = FastAPI()


@app.get("/const")
def const() -> dict:
    return {"status": "ok"}


uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
'''

PROGRAM = '''\
import json
import poet_runtime
poet_runtime.enable(hook=False)
import benchmod
benchmod.detect(0.7)
print(json.dumps(poet_runtime.last_execution().execution_id))
'''

MODULE = '''\
from poet_runtime import poet


@poet(domain="ml_monitoring", optimize_for="accuracy", policy="trusted")
def detect(score: float, threshold: float = 0.5) -> dict:
    return {"drift_detected": score > threshold, "score": score}
'''


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {process.returncode}")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"{url}: not answering after {timeout} s")


def fill_store(folder: Path) -> str:
    (folder / "app").mkdir(parents=True)
    (folder / "app" / "benchmod.py").write_text(MODULE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("POET_")}
    env.update(POET_HOME=str(folder / "store"), POET_CACHE_DIR=str(folder / "cache"),
               PYTHONPATH=os.pathsep.join([str(folder / "app"), str(ROOT)]))
    done = subprocess.run([sys.executable, "-c", PROGRAM], env=env, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


class Connection:
    """One keep-alive HTTP/1.1 connection, as little client as a request needs.

    Why not httpx here: at 50 connections on a loaded 2-core machine httpx's own work per request
    capped both servers at the same rate, so the ratios said more about the client than the service.
    This writes a request and reads one response (Content-Length, chunked, or none for 304),
    reconnecting when the server closed an idle connection.
    """

    def __init__(self, host: str, port: int, headers: dict):
        self.host, self.port = host, port
        self.head = "".join(f"{name}: {value}\r\n" for name, value in
                            {"Host": f"{host}:{port}", **headers}.items())
        self.reader = self.writer = None

    async def request(self, method: str, path: str, json_body=None, headers=None) -> int:
        body = b"" if json_body is None else json.dumps(json_body).encode()
        extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        if json_body is not None:
            extra += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        data = f"{method} {path} HTTP/1.1\r\n{self.head}{extra}\r\n".encode() + body
        for attempt in range(2):
            fresh = self.writer is None
            if fresh:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            try:
                self.writer.write(data)
                await self.writer.drain()
                return await self._response()
            except (ConnectionError, asyncio.IncompleteReadError):
                await self.close()
                if fresh or attempt:  # a new connection that fails is an error, not a stale one
                    raise
        raise AssertionError("unreachable")

    async def _response(self) -> int:
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        fields = {}
        for line in lines[1:]:
            if ":" in line:
                name, _, value = line.partition(":")
                fields[name.strip().lower()] = value.strip()
        if status in (204, 304):
            pass
        elif fields.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        else:
            await self.reader.readexactly(int(fields.get("content-length", "0")))
        if fields.get("connection", "").lower() == "close":
            await self.close()
        return status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
        self.reader = self.writer = None


async def run_block(connect, make, count: int, concurrency: int) -> tuple[float, list[float], dict]:
    """``count`` requests with ``concurrency`` in flight, one connection each, opened for the block
    (the same for both servers): (requests/s, latencies in s, statuses)."""
    queue = iter(range(count))
    latencies: list[float] = []
    statuses: dict = {}

    async def worker():
        connection = connect()
        try:
            for index in queue:
                method, path, kwargs = make(index)
                started = time.perf_counter()
                try:
                    status = await connection.request(method, path, kwargs.get("json"), kwargs.get("headers"))
                except (OSError, asyncio.IncompleteReadError, ValueError) as error:  # counted, never retried
                    name = type(error).__name__
                    statuses[name] = statuses.get(name, 0) + 1
                    continue
                latencies.append(time.perf_counter() - started)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            await connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return count / (time.perf_counter() - started), latencies, statuses


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def enhance_body(name: str) -> dict:
    source = f"def {name}(value: float, threshold: float = 0.5) -> bool:\n    return value > threshold\n"
    return {"source": source, "module": "bench.clients", "qualname": name,
            "config": {"domain": "ml_monitoring", "optimize_for": "accuracy"}}


async def main_async(args) -> int:
    import httpx

    from service_helpers import ServiceProcess, free_port

    folder = Path(tempfile.mkdtemp(prefix="bench_service_"))
    execution_id = fill_store(folder)
    env = dict(os.environ, POET_FEEDBACK_RATE="1000000")  # the learner's per-function feedback bucket off
    service = ServiceProcess(folder / "data", folder / "store", env=env,
                             args=["--rate-limit", "100000000"]).start()
    floor_port = free_port()
    floor = subprocess.Popen([sys.executable, "-c", FLOOR_APP, str(floor_port)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    floor_url = f"http://127.0.0.1:{floor_port}"
    try:
        wait_ready(floor_url + "/const", floor)
        def ours():
            return Connection("127.0.0.1", service.port, service.headers("admin"))

        def bare():
            return Connection("127.0.0.1", floor_port, {})

        etag = None
        template = httpx.get(f"{service.url}/api/v1/templates/{args.domain}", headers=service.headers("admin"))
        if template.status_code == 200 and template.headers.get("etag"):
            etag = template.headers["etag"]
        else:
            print(f"template fetch: skipped (GET /api/v1/templates/{args.domain} answered {template.status_code}"
                  f"{'' if template.status_code != 200 else ' without an ETag'}; is the registry installed?)")

        rows: dict[str, list] = {}

        def record(name, result):
            rows.setdefault(name, []).append(result)

        c = args.concurrency
        plan = [(f"floor c={n}", bare, lambda tag: (lambda i: ("GET", "/const", {})), args.requests, n)
                for n in (1, c)]
        # the service's own floor: key check, rate limit and request metrics around a constant
        plan.append(("whoami (key check) c=1", ours, lambda tag: (lambda i: ("GET", "/api/v1/whoami", {})),
                     args.requests, 1))
        if etag:
            plan += [(f"template ETag hit c={n}", ours,
                      lambda tag: (lambda i: ("GET", f"/api/v1/templates/{args.domain}",
                                              {"headers": {"If-None-Match": etag}})), args.requests, n)
                     for n in (1, c)]
        plan += [
            (f"enhance new functions c={c}", ours,
             lambda tag: (lambda i: ("POST", "/api/v1/enhance", {"json": enhance_body(f"fn_{tag}_{i}")})),
             args.generations, c),
            (f"enhance one function c={c}", ours,
             lambda tag: (lambda i: ("POST", "/api/v1/enhance", {"json": enhance_body(f"same_{tag}")})),
             args.generations, c),
            (f"feedback c={args.feedback_concurrency}", ours,
             lambda tag: (lambda i: ("POST", "/api/v1/feedback",
                                     {"json": {"execution_id": execution_id, "metrics": {"latency": float(i)}}})),
             args.feedback, args.feedback_concurrency),
        ]
        order = random.Random(1)
        for repeat in range(args.repeats):
            # a new order each block: a row always run after the fsync-heavy feedback block (or any
            # other) would carry that block's after-effects in every repeat
            for name, connect, maker, count, concurrency in order.sample(plan, len(plan)):
                record(name, await run_block(connect, maker(f"r{repeat}"), count, concurrency))
        metrics = httpx.get(service.url + "/metrics", headers=service.headers("read")).text
    finally:
        service.stop()
        floor.terminate()
        floor.wait(timeout=10)

    print(f"\n{args.repeats} alternating blocks; medians over blocks (p99 over all requests); "
          f"ratio = floor req/s / row req/s at the same concurrency")
    print(f"{'row':<34} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'x floor':>8}  statuses")
    floor_rate = {}
    for name in [row[0] for row in plan]:
        results = rows[name]
        rate = statistics.median(r[0] for r in results)
        p50 = statistics.median(percentile(r[1], 0.5) for r in results) * 1000
        p99 = percentile([x for r in results for x in r[1]], 0.99) * 1000
        statuses: dict = {}
        for r in results:
            for code, n in r[2].items():
                statuses[code] = statuses.get(code, 0) + n
        concurrency = int(name.rsplit("c=", 1)[1])
        if name.startswith("floor"):
            floor_rate[concurrency] = rate
        base = floor_rate.get(concurrency) or floor_rate.get(1)
        print(f"{name:<34} {rate:>9.1f} {p50:>8.2f} {p99:>8.2f} {base / rate:>7.1f}x  {dict(sorted(statuses.items(), key=lambda item: str(item[0])))}")
    generations = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                      if line.startswith('poet_service_generations_total{') and 'outcome="ok"' in line)
    new = rows[f"enhance new functions c={args.concurrency}"]
    per_minute = statistics.median(r[0] for r in new) * 60
    print(f"\ngenerations run by the service: {generations:.0f} "
          f"(expected {args.repeats * (args.generations + 1)}: one per new function, one per 'one function' block)")
    print(f"the design asks for 50 concurrent generations and 100 per minute: {args.concurrency} concurrent clients "
          f"got {per_minute:,.0f} generations per minute (median), {per_minute / 100:,.0f}x the 100/min asked")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=400, help="requests per floor/template block")
    parser.add_argument("--generations", type=int, default=100, help="enhance requests per block")
    parser.add_argument("--feedback", type=int, default=200, help="feedback requests per block")
    parser.add_argument("--feedback-concurrency", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--domain", default="ml_monitoring")
    args = parser.parse_args()
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
