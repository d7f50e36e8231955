"""``domicile serve --workers 2``: two processes serving one deployment, on SQLite files and
on PostgreSQL, under concurrent writers and readers (and a witness round run beside them
from the command line). Every request succeeds, every site's audit log stays one valid
chain (``domicile audit verify``), and /metrics counts the requests of both processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from domicile.clients import ClientRegistry
from tests.security.domicile_process import free_port
from tests.vault.conftest import SITES, Deployment, sqlite_urls

DOMICILE = Path(sys.executable).with_name("domicile")
PUT = "/v1/collections/profiles/records"
WRITERS, PUTS = 4, 15


def _deployment(backend: str, folder: Path, request: pytest.FixtureRequest) -> Path:
    if backend == "sqlite":
        urls = sqlite_urls()
    else:
        make_db: Callable[[str], str] = request.getfixturevalue("pg_database")
        urls = {name: make_db(name) for s in SITES for name in (s, f"{s}_keys")}
    deployment = Deployment(backend, folder, urls, None)
    config = folder / "domicile.yaml"
    config.write_text(deployment.config_text)
    return config


def _cli(config: Path, *args: str) -> Any:
    done = subprocess.run(
        [str(DOMICILE), *args, "--config", str(config), "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def _workers_of(pid: int) -> int:
    """How many worker processes the supervisor ``pid`` runs."""
    found = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        if ppid == pid and b"spawn_main" in cmdline:
            found += 1
    return found


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_processes_share_a_deployment_and_its_audit_chains(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    config = _deployment(backend, tmp_path, request)
    data = tmp_path / "data"
    _, key = ClientRegistry(data / "clients.json").add("ops", ["admin"], api_key=True)
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [str(DOMICILE), "serve", "--config", str(config), "--port", str(port), "--workers", "2"],
            stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {key}"}
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        assert _workers_of(proc.pid) == 2

        def writer(w: int) -> list[str]:
            tokens = []
            with httpx.Client(base_url=base, headers=headers, timeout=60) as http:
                for i in range(PUTS):
                    country = ("US", "RU", "DE")[(w + i) % 3]
                    body = {
                        "subject": {"citizenship": country, "residence": country},
                        "fields": {"full_name": f"Person {w}-{i}"},
                        "purpose": "signup",
                    }
                    r = http.post(PUT, json=body, headers={"Connection": "close"})
                    assert r.status_code == 201, r.text
                    tokens.append(r.json()["token"])
                    if i % 5 == 4:  # and reads them back in a batch, as their home site
                        got = http.post(
                            "/v1/read",
                            json={"tokens": tokens[-5:], "purpose": "support"},
                            params={"as_site": "us"},
                        )
                        assert got.status_code == 200, got.text
            return tokens

        with ThreadPoolExecutor(WRITERS + 1) as pool:
            futures = [pool.submit(writer, w) for w in range(WRITERS)]
            witness = pool.submit(_cli, config, "audit", "witness")
            tokens = [t for f in futures for t in f.result()]
            assert witness.result()["ok"] is True
        assert len(set(tokens)) == WRITERS * PUTS

        # Both processes' counts, summed (each request landed on one or the other).
        with httpx.Client(base_url=base, headers=headers, timeout=60) as http:
            metrics = http.get("/metrics").text
        line = next(
            x
            for x in metrics.splitlines()
            if x.startswith("domicile_requests_total{")
            and 'route="/v1/collections/{collection}/records"' in x
            and 'status="201"' in x
        )
        assert float(line.rsplit(" ", 1)[1]) == WRITERS * PUTS
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert proc.returncode == 0, log.read_text()

    verified = _cli(config, "audit", "verify")
    sites = verified["sites"] if isinstance(verified, dict) else verified
    assert all(s["ok"] for s in sites), verified
    by_site = {s["site"]: s for s in sites}
    # Every put and every read left its entry, in one chain per site.
    assert sum(by_site[s]["entries"] for s in SITES) > 2 * WRITERS * PUTS
    for s in SITES:
        assert by_site[s]["problems"] == []
