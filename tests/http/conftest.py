"""A running service (in process) over a fresh three-site deployment."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from domicile.clients import Client, ClientRegistry
from domicile.http.app import create_app
from domicile.starter import init
from domicile.vault import Domicile


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
