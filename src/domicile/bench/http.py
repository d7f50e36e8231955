"""``domicile bench http``: put and get over HTTP against the same operations in-process.

A real ``domicile serve`` runs in a child process on a free port, over a fresh embedded
deployment (three SQLite sites). An asyncio client (httpx) with a few concurrent
connections drives ``POST /v1/collections/profiles/records`` for a fixed time, then
``GET /v1/records/{token}``, recording every latency. In the same run, the SDK does the
same puts and gets in-process for the same time. The figures are requests per second,
p50 and p99 latency, and the ratios HTTP / SDK.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Subjects whose reads from the US are local (the same work over HTTP and in-process).
SUBJECTS = [{"citizenship": "US", "residence": "US"}, {"citizenship": "US"}]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _body(i: int) -> dict[str, Any]:
    return {
        "subject": SUBJECTS[i % len(SUBJECTS)],
        "fields": {"full_name": f"Person {i}", "email": f"p{i}@example.org", "city": "Springfield"},
        "purpose": "benchmark",
    }


@contextlib.contextmanager
def _server(config: Path, port: int) -> Iterator[str]:
    log = config.parent / "service.log"  # the service logs a line per request
    with open(log, "wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "domicile.cli.app", "serve", "--config", str(config), "--port", str(port)],
            stdout=subprocess.DEVNULL, stderr=sink,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            import httpx

            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the service did not start")
                time.sleep(0.1)
            yield base
        finally:
            proc.terminate()  # a clean stop: signs each site's audit head
            proc.wait(timeout=30)


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    if not ordered:
        return {"p50": 0.0, "p99": 0.0}
    return {
        "p50": round(statistics.median(ordered) * 1000, 2),
        "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2),
    }


async def _drive(
    base: str, headers: dict[str, str], seconds: float, concurrency: int
) -> dict[str, Any]:
    import httpx

    puts: list[float] = []
    gets: list[float] = []
    tokens: list[str] = []
    counter = iter(range(10**9))
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:

        async def put_worker(until: float) -> None:
            while time.monotonic() < until:
                start = time.perf_counter()
                r = await client.post("/v1/collections/profiles/records", json=_body(next(counter)))
                r.raise_for_status()
                puts.append(time.perf_counter() - start)
                tokens.append(r.json()["token"])

        async def get_worker(until: float, offset: int) -> None:
            i = offset
            while time.monotonic() < until:
                start = time.perf_counter()
                r = await client.get(
                    f"/v1/records/{tokens[i % len(tokens)]}", params={"purpose": "benchmark"}
                )
                if r.status_code != 200:
                    raise RuntimeError(f"a read failed: {r.status_code}")
                gets.append(time.perf_counter() - start)
                i += concurrency

        until = time.monotonic() + seconds
        await asyncio.gather(*(put_worker(until) for _ in range(concurrency)))
        until = time.monotonic() + seconds
        await asyncio.gather(*(get_worker(until, k) for k in range(concurrency)))
    return {
        "put": len(puts) / seconds, "get": len(gets) / seconds,
        "put_latency": _percentiles(puts), "get_latency": _percentiles(gets),
    }  # fmt: skip


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
        "put_latency": _percentiles(puts), "get_latency": _percentiles(gets),
    }  # fmt: skip


def run(seconds: float = 5.0, concurrency: int = 8) -> dict[str, Any]:
    from domicile.clients import ClientRegistry
    from domicile.starter import init

    with tempfile.TemporaryDirectory(prefix="domicile-bench-http-") as tmp:
        cfg = init(Path(tmp))
        # Reads are decided as from the US site (local_site) in both runs: the same work.
        _, key = ClientRegistry(cfg.data_dir / "clients.json").add(
            "bench", ["records:write", "records:read", "collection:*", "purpose:*", "site:us"],
            api_key=True,
        )  # fmt: skip
        config = Path(cfg.source)
        with _server(config, _free_port()) as base:
            http = asyncio.run(
                _drive(base, {"Authorization": f"Bearer {key}"}, seconds, concurrency)
            )
        sdk = _sdk(config, seconds)
    return {
        "benchmark": "http",
        "python": platform.python_version(),
        "seconds": seconds,
        "concurrency": concurrency,
        "per_second": {
            "http_put": round(http["put"]),
            "http_get": round(http["get"]),
            "sdk_put": round(sdk["put"]),
            "sdk_get": round(sdk["get"]),
        },
        "latency_ms": {
            "http_put": http["put_latency"],
            "http_get": http["get_latency"],
            "sdk_put": sdk["put_latency"],
            "sdk_get": sdk["get_latency"],
        },
        "ratios": {
            "http_put_vs_sdk": round(http["put"] / sdk["put"], 3),
            "http_get_vs_sdk": round(http["get"] / sdk["get"], 3),
        },
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
