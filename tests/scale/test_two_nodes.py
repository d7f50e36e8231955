"""Two ``domicile serve`` processes, on two ports, over the same PostgreSQL sites (as two
hosts behind a load balancer would be): puts, gets, updates, deletes and erasures go
through both, interleaved. Each process sees the other's writes at once, concurrent
updates of one record through both lose nothing (each success is one version), every
write is in the audit once, and each site's audit stays one chain that verifies."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx

from domicile.clients import ClientRegistry
from tests.security.domicile_process import free_port

from .conftest import Deployment

DOMICILE = Path(sys.executable).with_name("domicile")
PUT = "/v1/collections/profiles/records"
THREADS, RECORDS_EACH, SHARED, UPDATES_EACH = 4, 12, 4, 10
HOMES = {"US": "us", "DE": "de", "RU": "ru"}


@contextmanager
def _serve(config: Path, log: Path) -> Iterator[str]:
    port = free_port()
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [str(DOMICILE), "serve", "--config", str(config), "--port", str(port)],
            stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
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
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert proc.returncode == 0, log.read_text()


def _cli(config: Path, *args: str) -> Any:
    done = subprocess.run(
        [str(DOMICILE), *args, "--config", str(config), "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def test_two_serve_processes_over_one_site_keep_one_chain_and_every_write(
    pg_deployment: Deployment, tmp_path: Path
) -> None:
    config = tmp_path / "domicile.yaml"
    config.write_text(pg_deployment.config_text)
    _, key = ClientRegistry(tmp_path / "data" / "clients.json").add("ops", ["admin"], api_key=True)
    headers = {"Authorization": f"Bearer {key}"}
    with ExitStack() as stack:
        bases = [stack.enter_context(_serve(config, tmp_path / f"serve{n}.log")) for n in (1, 2)]
        clients = [
            stack.enter_context(httpx.Client(base_url=b, headers=headers, timeout=120))
            for b in bases
        ]

        def owned(t: int) -> dict[str, Any]:
            """One thread's own records: each step goes through one node and is checked
            through the other at once (no node may answer from a stale copy of its own)."""
            rng = random.Random(t)
            kept: dict[str, tuple[str, str]] = {}  # token -> (site, city)
            gone: list[str] = []
            for i in range(RECORDS_EACH):
                a, b = rng.sample(clients, 2)
                country = ("US", "DE", "RU")[(t + i) % 3]
                r = a.post(PUT, json={
                    "subject": {"citizenship": country, "residence": country},
                    "fields": {"full_name": f"P {t}-{i}", "email": f"p{t}-{i}@example.org",
                               "city": "Start"},
                    "purpose": "signup",
                })  # fmt: skip
                assert r.status_code == 201, r.text
                token, site = r.json()["token"], r.json()["site"]
                assert site == HOMES[country]
                got = b.get(f"/v1/records/{token}", params={"purpose": "support", "as_site": site})
                assert got.status_code == 200, got.text
                assert got.json()["fields"]["city"] == "Start"
                city = f"City {t}-{i}"
                r = b.patch(
                    f"/v1/records/{token}",
                    json={"fields": {"city": city}, "purpose": "edit"},
                    params={"as_site": site},
                )
                assert r.status_code == 200, r.text
                got = a.get(f"/v1/records/{token}", params={"purpose": "support", "as_site": site})
                assert got.json()["fields"]["city"] == city
                assert got.json()["version"] == 2
                if i % 4 == 1:
                    r = a.delete(
                        f"/v1/records/{token}", params={"purpose": "cleanup", "as_site": site}
                    )
                    assert r.status_code == 200, r.text
                    gone.append(token)
                elif i % 4 == 3:
                    r = b.post(
                        "/v1/subjects/erase",
                        json={"token": token, "purpose": "erasure"},
                        params={"as_site": site},
                    )
                    assert r.status_code == 200, r.text
                    gone.append(token)
                else:
                    kept[token] = (site, city)
                for old in gone:  # neither node serves what the other removed
                    missing = rng.choice(clients).get(
                        f"/v1/records/{old}", params={"purpose": "support"}
                    )
                    assert missing.status_code == 404, missing.text
            return {"kept": kept, "gone": gone}

        # Records that every thread updates through both nodes at once.
        shared = []
        for n in range(SHARED):
            r = clients[n % 2].post(PUT, json={
                "subject": {"citizenship": "US", "residence": "US"},
                "fields": {"full_name": f"Shared {n}", "city": "Start"},
                "purpose": "signup",
            })  # fmt: skip
            assert r.status_code == 201, r.text
            shared.append(r.json()["token"])

        def contend(t: int) -> Counter[str]:
            rng = random.Random(100 + t)
            won: Counter[str] = Counter()
            for u in range(UPDATES_EACH):
                token = rng.choice(shared)
                r = rng.choice(clients).patch(
                    f"/v1/records/{token}",
                    json={"fields": {"city": f"C{t}-{u}"}, "purpose": "edit"},
                    params={"as_site": "us"},
                )
                assert r.status_code in (200, 409), r.text  # 409: the other won the race
                if r.status_code == 200:
                    won[token] += 1
            return won

        with ThreadPoolExecutor(2 * THREADS) as pool:
            mine = [pool.submit(owned, t) for t in range(THREADS)]
            races = [pool.submit(contend, t) for t in range(THREADS)]
            results = [f.result() for f in mine]
            wins = sum((f.result() for f in races), Counter[str]())

        for result in results:
            for token, (site, city) in result["kept"].items():
                for http in clients:
                    got = http.get(
                        f"/v1/records/{token}", params={"purpose": "support", "as_site": site}
                    )
                    assert got.json()["fields"]["city"] == city
        for token in shared:  # every successful update is one version: none was lost
            versions = {
                http.get(f"/v1/records/{token}", params={"purpose": "support"}).json()["version"]
                for http in clients
            }
            assert versions == {1 + wins[token]}
        assert sum(wins.values()) > 0

    verified = _cli(config, "audit", "verify")
    sites = verified["sites"] if isinstance(verified, dict) else verified
    assert all(s["ok"] and s["problems"] == [] for s in sites), verified
    # Every write is in its site's chain once: one entry per record created, one per
    # successful update (whichever node made it).
    vault = pg_deployment.open()
    try:
        writes: Counter[str] = Counter()
        for site in HOMES.values():
            for row in vault.store(site).audit():
                entry = json.loads(row.payload)
                if entry["action"] in ("write", "update"):  # a put names its records
                    for record in entry.get("records") or [entry["record"]]:
                        writes[record] += 1
        created = [t for r in results for t in [*r["kept"], *r["gone"]]]
        for token in created:
            assert writes[vault.tokens.read(token)[1]] == 2  # the put and its update
        for token in shared:
            assert writes[vault.tokens.read(token)[1]] == 1 + wins[token]
    finally:
        vault.close()


INCOUNTRY = "/v2/storage/records/us"
UPSERTS_EACH = 12


def test_incountry_upserts_of_one_key_through_two_nodes_lose_nothing(
    pg_deployment: Deployment, tmp_path: Path
) -> None:
    """An upsert reads the record it replaces: two nodes upserting one key at once must
    take turns across processes (a lock held in one process only would let both replace
    the same version, one write silently lost, or fail on the duplicate key)."""
    config = tmp_path / "domicile.yaml"
    config.write_text(pg_deployment.config_text)
    _, key = ClientRegistry(tmp_path / "data" / "clients.json").add("ops", ["admin"], api_key=True)
    headers = {"Authorization": f"Bearer {key}", "x-env-id": "default"}
    with ExitStack() as stack:
        bases = [stack.enter_context(_serve(config, tmp_path / f"serve{n}.log")) for n in (1, 2)]
        clients = [
            stack.enter_context(httpx.Client(base_url=b, headers=headers, timeout=120))
            for b in bases
        ]

        def upsert(t: int) -> int:
            done = 0
            for u in range(UPSERTS_EACH):
                r = clients[(t + u) % 2].post(
                    INCOUNTRY,
                    json={"record_key": "shared", "profile_key": "p1", "body": f"w{t}-{u}"},
                )
                assert r.status_code == 201, r.text
                done += 1
            return done

        with ThreadPoolExecutor(4) as pool:
            total = sum(pool.map(upsert, range(4)))
        answers = [c.get(f"{INCOUNTRY}/shared") for c in clients]
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
        assert answers[0].json()["body"] == answers[1].json()["body"]
    vault = pg_deployment.open()
    try:
        stored = [r for r in vault.store("us").records_after("", 100)]
        assert len(stored) == 1
        assert stored[0].version == total  # each upsert one version: none replaced another's
        entries = [json.loads(r.payload) for r in vault.store("us").audit()]
        writes = [e for e in entries if e["action"] in ("write", "update")]
        assert len(writes) == total
        assert all(r.ok for r in vault.verify_audit())
    finally:
        vault.close()
