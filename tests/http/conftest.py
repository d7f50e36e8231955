"""A running service (in process) over a fresh three-site deployment; and, for the
InCountry-compatible API, a three-site service (RU, DE, US) with a clock the tests move and
helpers to make clients with given scopes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from domicile.clients import Client, ClientRegistry
from domicile.deploy.starter import init
from domicile.http.app import create_app
from domicile.policy import PolicyEngine
from domicile.vault import Domicile
from tests.vault.conftest import FIXED_NOW, SITES, Deployment, sqlite_urls


@dataclass
class Service:
    http: TestClient
    vault: Domicile
    clients: ClientRegistry

    def client(self, name: str, *scopes: str) -> tuple[Client, dict[str, str]]:
        """A new client with these scopes, and the headers of its API key."""
        client, key = self.clients.add(name, list(scopes), api_key=True)
        return client, {"Authorization": f"Bearer {key}"}

    def refusals(self, site: str = "us") -> list[str]:
        return [
            r.payload for r in self.vault.store(site).audit() if '"action":"refuse"' in r.payload
        ]


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    config = init(tmp_path)
    vault = Domicile(config)
    app = create_app(vault)
    with TestClient(app) as http:
        yield Service(http, vault, app.state.service.clients)


# --- the InCountry-compatible API ----------------------------------------------------------

BASE = "/v2/storage/records"


@dataclass
class Clock:
    now: dt.datetime = FIXED_NOW

    def __call__(self) -> dt.datetime:
        return self.now

    def tick(self, **delta: float) -> dt.datetime:
        self.now += dt.timedelta(**delta)
        return self.now


@dataclass
class Api:
    http: TestClient
    vault: Domicile
    clients: ClientRegistry
    deployment: Deployment
    clock: Clock
    admin: dict[str, str] = field(default_factory=dict)

    def headers(self, scopes: list[str], **extra: str) -> dict[str, str]:
        """Headers of a new API-key client with these scopes."""
        _, key = self.clients.add("client", scopes, api_key=True)
        return {"Authorization": f"Bearer {key}", "x-env-id": "default", **extra}

    def write(self, cc: str, record: dict[str, Any], **headers: str) -> dict[str, Any]:
        r = self.http.post(f"{BASE}/{cc}", json=record, headers={**self.admin, **headers})
        assert r.status_code == 201, r.text
        out: dict[str, Any] = r.json()
        return out

    def find(self, cc: str, flt: dict[str, Any], **options: Any) -> Any:
        body = {"filter": flt, **({"options": options} if options else {})}
        return self.http.post(f"{BASE}/{cc}/find", json=body, headers=self.admin)

    def keys(self, cc: str, flt: dict[str, Any], **options: Any) -> list[str]:
        r = self.find(cc, flt, **options)
        assert r.status_code == 200, r.text
        return [x["record_key"] for x in r.json()["data"]]

    def audit(self, site: str) -> list[str]:
        return [row.payload for row in self.vault.store(site).audit()]


def open_api(deployment: Deployment, engine: PolicyEngine) -> Iterator[Api]:
    clock = Clock()
    vault = Domicile(deployment.config, clock=clock, engine=engine)
    registry = ClientRegistry(deployment.folder / "clients.json")
    with TestClient(create_app(vault, clients=registry)) as http:
        api = Api(http, vault, registry, deployment, clock)
        api.admin = api.headers(["admin"])
        yield api


@pytest.fixture
def api(tmp_path: Path, engine: PolicyEngine) -> Iterator[Api]:
    yield from open_api(Deployment("sqlite", tmp_path, sqlite_urls(), None), engine)


@pytest.fixture(params=["sqlite", "postgresql"])
def any_api(request: pytest.FixtureRequest, tmp_path: Path, engine: PolicyEngine) -> Iterator[Api]:
    """The same service on SQLite files or on PostgreSQL databases."""
    if request.param == "sqlite":
        yield from open_api(Deployment("sqlite", tmp_path, sqlite_urls(), None), engine)
        return
    make_db: Callable[[str], str] = request.getfixturevalue("pg_database")
    urls = {name: make_db(name) for s in SITES for name in (s, f"{s}_keys")}
    yield from open_api(Deployment("postgresql", tmp_path, urls, None), engine)
