"""``domicile bench http``: put and get over HTTP against the same operations in-process.

A real ``domicile serve --workers N`` runs in a child process on a free port, over a fresh
embedded deployment (three SQLite sites). A small asyncio HTTP/1.1 client (keep-alive
connections, a few lines of parsing: light enough that the load generator does not take
the cores the service needs) drives ``POST /v1/collections/profiles/records`` for a fixed
time with ``concurrency`` connections, then ``GET /v1/records/{token}``, then the batch
routes (``.../records/batch`` and ``POST /v1/read``, ``batch`` records a request),
recording every latency. In the same run:

- the SDK does the same puts and gets in-process, one at a time, for the same time: the
  baseline of the ratios;
- the **serving ceiling**: a bare FastAPI application on uvicorn, with the same number of
  workers, connections, paths and bodies, whose routes do no work and answer a fixed body.
  No service on this stack and machine can answer faster, so where a ratio misses its
  target, ``ceiling_*_vs_sdk`` shows how much of the target the stack alone allows.

The figures are requests (or records) per second, p50 and p99 latency, and the ratios.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from itertools import count
from pathlib import Path
from typing import Any

from domicile.errors import BenchFailed, EnvironmentProblem

# Subjects whose reads from the US are local (the same work over HTTP and in-process).
SUBJECTS = [{"citizenship": "US", "residence": "US"}, {"citizenship": "US"}]
PUT = "/v1/collections/profiles/records"
TARGETS = {"http_put_vs_sdk": 0.6, "http_get_vs_sdk": 0.5}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _body(i: int) -> dict[str, Any]:
    return {
        "subject": SUBJECTS[i % len(SUBJECTS)],
        "fields": {"full_name": f"Person {i}", "email": f"p{i}@example.org", "city": "Springfield"},
        "purpose": "benchmark",
    }


def wait_ready(proc: subprocess.Popen[bytes], port: int, log: Path | None = None) -> None:
    """Return once the service on ``port`` answers ``/healthz``; ``EnvironmentProblem`` if
    it exits or has not answered within a minute (``log``: where it wrote why)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise EnvironmentProblem(
                f"the service on port {port} did not start",
                hint=f"see its log, {log}" if log else None,
            )
        time.sleep(0.1)


@contextlib.contextmanager
def _process(argv: list[str], log: Path, port: int) -> Iterator[None]:
    with open(log, "wb") as sink:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=sink)
        try:
            wait_ready(proc, port, log)
            yield
        finally:
            proc.terminate()  # a clean stop: signs each site's audit head
            proc.wait(timeout=60)


def _server(config: Path, port: int, workers: int) -> contextlib.AbstractContextManager[None]:
    argv = [
        sys.executable, "-m", "domicile.cli.app", "serve", "--config", str(config),
        "--port", str(port), "--workers", str(workers),
    ]  # fmt: skip
    return _process(argv, config.parent / "service.log", port)  # a line per request


def _bare(folder: Path, port: int, workers: int) -> contextlib.AbstractContextManager[None]:
    argv = [
        sys.executable, "-m", "uvicorn", "domicile.bench.bare:app", "--port", str(port),
        "--workers", str(workers), "--log-level", "warning", "--no-access-log", "--http", "h11",
    ]  # fmt: skip
    return _process(argv, folder / "bare.log", port)


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    if not ordered:
        return {"p50": 0.0, "p99": 0.0}
    return {
        "p50": round(statistics.median(ordered) * 1000, 2),
        "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2),
    }


class Connection:
    """One keep-alive HTTP/1.1 connection: a request, then its whole response."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, auth: str):
        self.reader = reader
        self.writer = writer
        self.head = f"Host: bench\r\nAuthorization: {auth}\r\n"

    async def request(self, method: str, target: str, body: bytes | None = None) -> bytes:
        head = f"{method} {target} HTTP/1.1\r\n{self.head}"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + (body or b""))
        status = (await self.reader.readline()).split(b" ", 2)
        if len(status) < 2 or not status[1].startswith(b"2"):
            code = int(status[1]) if len(status) > 1 and status[1].isdigit() else None
            raise BenchFailed(
                f"{method} {target.partition('?')[0]} answered {code or 'nothing'}",
                status=code,
                hint="see the service's log",
            )
        length = 0
        chunked = False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
        if not chunked:
            return await self.reader.readexactly(length)
        out = b""
        while size := int((await self.reader.readline()).strip(), 16):
            out += await self.reader.readexactly(size + 2)
        await self.reader.readline()
        return out


async def _connect(port: int, auth: str, n: int) -> list[Connection]:
    conns = []
    for _ in range(n):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        conns.append(Connection(reader, writer, auth))
    return conns


async def _phase(conns: list[Connection], seconds: float, one: Any) -> list[float]:
    """Each connection sends ``one(conn, k)`` requests back to back for ``seconds``."""
    latencies: list[float] = []
    until = time.monotonic() + seconds

    async def loop(conn: Connection, k: int) -> None:
        while time.monotonic() < until:
            start = time.perf_counter()
            await one(conn, k)
            latencies.append(time.perf_counter() - start)

    await asyncio.gather(*(loop(c, k) for k, c in enumerate(conns)))
    return latencies


async def _drive(
    port: int, auth: str, seconds: float, concurrency: int, batch: int, *, bare: bool = False
) -> dict[str, Any]:
    conns = await _connect(port, auth, concurrency)
    numbers = count()
    tokens: list[str] = []

    async def put(conn: Connection, k: int) -> None:
        data = await conn.request("POST", PUT, json.dumps(_body(next(numbers))).encode())
        if not bare:
            tokens.append(json.loads(data)["token"])

    reads = count()

    def token() -> str:
        return tokens[next(reads) % len(tokens)] if tokens else "dom1_" + "A" * 43

    async def get(conn: Connection, k: int) -> None:
        await conn.request("GET", f"/v1/records/{token()}?purpose=benchmark")

    async def put_batch(conn: Connection, k: int) -> None:
        items = [_body(next(numbers)) for _ in range(batch)]
        for item in items:
            del item["purpose"]
        body = {"records": items, "purpose": "benchmark"}
        await conn.request("POST", PUT + "/batch", json.dumps(body).encode())

    async def get_batch(conn: Connection, k: int) -> None:
        body = {"tokens": [token() for _ in range(batch)], "purpose": "benchmark"}
        await conn.request("POST", "/v1/read", json.dumps(body).encode())

    try:
        out: dict[str, Any] = {}
        for name, one in (("put", put), ("get", get), ("put_batch", put_batch), ("get_batch", get_batch)):  # fmt: skip
            latencies = await _phase(conns, seconds, one)
            per = batch if name.endswith("batch") else 1
            out[name] = len(latencies) * per / seconds
            out[name + "_latency"] = percentiles(latencies)
        return out
    finally:
        for c in conns:
            c.writer.close()


def _sdk(config: Path, seconds: float) -> dict[str, Any]:
    from domicile.vault import Domicile

    vault = Domicile.open(config)
    puts: list[float] = []
    gets: list[float] = []
    tokens: list[tuple[str, str]] = []
    i = 0
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        b = _body(10**8 + i)
        start = time.perf_counter()
        r = vault.put("profiles", subject=b["subject"], fields=b["fields"], purpose="benchmark")
        puts.append(time.perf_counter() - start)
        tokens.append((r.token, r.site))
        i += 1
    until = time.monotonic() + seconds
    j = 0
    while time.monotonic() < until:
        token, _ = tokens[j % len(tokens)]
        start = time.perf_counter()
        vault.get(token, purpose="benchmark", as_site="us")
        gets.append(time.perf_counter() - start)
        j += 1
    vault.close()
    return {
        "put": len(puts) / seconds, "get": len(gets) / seconds,
        "put_latency": percentiles(puts), "get_latency": percentiles(gets),
    }  # fmt: skip


def loop_run(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        return asyncio.run(coro)
    return uvloop.run(coro)


def run(
    seconds: float = 5.0, concurrency: int = 8, workers: int | None = None, batch: int = 100
) -> dict[str, Any]:
    """Measure; ``workers`` as ``serve`` (default: the number of cores)."""
    from domicile.clients import ClientRegistry
    from domicile.deploy.starter import init

    workers = workers or os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="domicile-bench-http-") as tmp:
        cfg = init(Path(tmp))
        # Reads are decided as from the US site (local_site) in both runs: the same work.
        _, key = ClientRegistry(cfg.data_dir / "clients.json").add(
            "bench", ["records:write", "records:read", "collection:*", "purpose:*", "site:us"],
            api_key=True,
        )  # fmt: skip
        auth = f"Bearer {key}"
        config = Path(cfg.source)
        port = free_port()
        with _server(config, port, workers):
            http = loop_run(_drive(port, auth, seconds, concurrency, batch))
        port = free_port()
        with _bare(Path(tmp), port, workers):
            bare = loop_run(_drive(port, auth, seconds, concurrency, batch, bare=True))
        sdk = _sdk(config, seconds)
    ratios = {
        "http_put_vs_sdk": round(http["put"] / sdk["put"], 3),
        "http_get_vs_sdk": round(http["get"] / sdk["get"], 3),
        "http_put_batch_vs_sdk": round(http["put_batch"] / sdk["put"], 3),
        "http_get_batch_vs_sdk": round(http["get_batch"] / sdk["get"], 3),
        "ceiling_put_vs_sdk": round(bare["put"] / sdk["put"], 3),
        "ceiling_get_vs_sdk": round(bare["get"] / sdk["get"], 3),
        "http_put_vs_ceiling": round(http["put"] / bare["put"], 3),
        "http_get_vs_ceiling": round(http["get"] / bare["get"], 3),
    }
    return {
        "benchmark": "http",
        "python": platform.python_version(),
        "cores": os.cpu_count(),
        "seconds": seconds,
        "concurrency": concurrency,
        "workers": workers,
        "batch": batch,
        "per_second": {
            "http_put": round(http["put"]),
            "http_get": round(http["get"]),
            "http_put_batch": round(http["put_batch"]),  # records
            "http_get_batch": round(http["get_batch"]),  # records
            "sdk_put": round(sdk["put"]),
            "sdk_get": round(sdk["get"]),
            "ceiling_put": round(bare["put"]),
            "ceiling_get": round(bare["get"]),
        },
        "latency_ms": {
            "http_put": http["put_latency"],
            "http_get": http["get_latency"],
            "http_put_batch": http["put_batch_latency"],  # per request
            "http_get_batch": http["get_batch_latency"],
            "sdk_put": sdk["put_latency"],
            "sdk_get": sdk["get_latency"],
            "ceiling_put": bare["put_latency"],
            "ceiling_get": bare["get_latency"],
        },
        "ratios": ratios,
        "targets": TARGETS,
        # Where a target is missed: the most the serving stack alone allows (its ceiling).
        "ceilings": {
            name: ratios[name.replace("http_", "ceiling_")]
            for name, goal in TARGETS.items()
            if ratios[name] < goal
        },
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
