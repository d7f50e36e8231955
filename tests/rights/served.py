"""A three-site deployment (tests.vault's RU, DE, US on SQLite) with lawful bases for its
purposes, its vault, its clients and (started when first used) its service: for the tests
of blocks and of the InCountry API's subjects."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from domicile.cli.app import app as cli
from domicile.clients import ClientRegistry
from domicile.config import parse_config
from domicile.http.app import create_app
from domicile.setup import create_deployment
from domicile.vault import Domicile
from domicile.vault.replication import Replicator
from tests.vault.conftest import CONFIG, sqlite_urls

from .conftest import Clock

PURPOSES = """
purposes:
  signup: {basis: contract}
  profile_view: {basis: contract}
  newsletter: {basis: consent}
  legal_defence: {basis: legal_claims}
"""


@dataclass
class World:
    folder: Path
    vault: Domicile
    clock: Clock
    clients: ClientRegistry
    _http: TestClient | None = None

    @property
    def http(self) -> TestClient:
        """The service over this vault, started when a test first calls it."""
        if self._http is None:
            self._http = TestClient(create_app(self.vault, clients=self.clients))
            self._http.__enter__()
        return self._http

    @property
    def cfg(self) -> str:
        return str(self.folder / "domicile.yaml")

    def put(self, citizenship: str, fields: dict[str, Any], *, replicate: bool = True) -> str:
        token = self.vault.put(
            "profiles", subject={"citizenship": citizenship}, fields=fields, purpose="signup"
        ).token
        if replicate:
            Replicator(self.vault).run_once(reconcile=False)
        return token

    def headers(self, *scopes: str) -> dict[str, str]:
        _, key = self.clients.add("app", list(scopes), api_key=True)
        return {"Authorization": f"Bearer {key}", "x-env-id": "default"}

    def entries(self, site: str, action: str) -> list[dict[str, Any]]:
        rows = self.vault.store(site).audit()
        return [e for r in rows if (e := json.loads(r.payload))["action"] == action]

    def subject(self, token: str) -> str:
        site, rid = self.vault.tokens.read(token)
        rec = self.vault.store(site).get(rid)
        assert rec is not None
        return rec.subject_id


def served_world(tmp_path: Path) -> Iterator[World]:
    """The deployment, its vault on a clock the test sets, and its clients' registry."""
    text = CONFIG.format(**sqlite_urls()) + PURPOSES
    (tmp_path / "domicile.yaml").write_text(text, encoding="utf-8")
    config = parse_config(text, str(tmp_path / "domicile.yaml"), tmp_path)
    create_deployment(config)
    clock = Clock()
    vault = Domicile(config, clock=clock)
    world = World(tmp_path, vault, clock, ClientRegistry(tmp_path / "clients.json"))
    try:
        yield world
    finally:
        if world._http is not None:
            world._http.__exit__(None, None, None)
        vault.close()


def cli_json(world: World, *args: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(cli, [*args, "--config", world.cfg, "--json"])
    return result.exit_code, json.loads(result.stdout or "{}")
