"""A three-site deployment (RU, DE, US) with retention periods and a legal hold, on SQLite
files (or PostgreSQL databases), with a clock the tests set."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from domicile.config import Config, parse_config
from domicile.setup import create_deployment
from domicile.vault import Domicile
from domicile.vault.replication import Replicator
from tests.vault.conftest import SITES

T0 = dt.datetime(2025, 3, 3, 9, 0, tzinfo=dt.UTC)
HOLD = "402-FZ Art. 29 (accounting records, 5 years)"

CONFIG = """
environment_id: default
data_dir: data
default_site: us
local_site: us
sites:
  - {{id: ru, country: RU, location: {{provider: P, city: Moscow, address: "1 Street"}}, backend: "{ru}", keys: "{ru_keys}"}}
  - {{id: de, country: DE, location: {{provider: P, city: Frankfurt, address: "2 Strasse"}}, backend: "{de}", keys: "{de_keys}"}}
  - {{id: us, country: US, location: {{provider: P, city: Ashburn, address: "3 Way"}}, backend: "{us}", keys: "{us_keys}"}}
collections:
  profiles:
    fields:
      full_name: {{category: user.name, required: true, max_length: 200}}
      email: {{category: user.contact.email, searchable: true, identifies: true, normalize: email}}
      city: {{category: user.contact.address.city, retention: {{after: collected, keep: 90d}}}}
    retention: {{after: last_access, keep: 1y}}
    replicate:
      - {{to: de, fields: [full_name, email, city]}}
  invoices:
    fields:
      payer: {{category: user.name, required: true}}
      email: {{category: user.contact.email, searchable: true, identifies: true, normalize: email}}
      amount: {{category: user.financial, type: integer}}
    retention:
      after: collected
      keep: 30d
      hold: [{{statute: "{hold}", fields: [payer, amount], keep: 5y}}]
  notes:
    fields:
      text: {{category: user.content.public}}
filings:
  ru.art22_notice: 2025-01-15
"""


def sqlite_urls() -> dict[str, str]:
    urls = {s: f"sqlite:data/{s}.sqlite" for s in SITES}
    urls.update({f"{s}_keys": f"sqlite:data/keys/{s}.sqlite" for s in SITES})
    return urls


def config_text(urls: dict[str, str] | None = None) -> str:
    return CONFIG.format(hold=HOLD, **(urls or sqlite_urls()))


def make_config(folder: Path, urls: dict[str, str] | None = None) -> Config:
    text = config_text(urls)
    (folder / "domicile.yaml").write_text(text)
    return parse_config(text, str(folder / "domicile.yaml"), folder)


@dataclass
class Clock:
    now: dt.datetime = T0

    def __call__(self) -> dt.datetime:
        return self.now


@dataclass
class World:
    config: Config
    vault: Domicile
    clock: Clock

    def put(self, collection: str, citizenship: str, fields: dict[str, Any]) -> str:
        token = self.vault.put(
            collection, subject={"citizenship": citizenship}, fields=fields, purpose="signup"
        ).token
        Replicator(self.vault).run_once(reconcile=False)
        return token

    def record(self, token: str) -> Any:
        site, rid = self.vault.tokens.read(token)
        return self.vault.store(site).get(rid)

    def at(self, days: int) -> dt.datetime:
        self.clock.now = T0 + dt.timedelta(days=days)
        return self.clock.now


def make_world(config: Config) -> Iterator[World]:
    clock = Clock()
    create_deployment(config, create_database=True)
    vault = Domicile(config, clock=clock)
    try:
        yield World(config, vault, clock)
    finally:
        vault.close()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    yield from make_world(make_config(tmp_path))


def fingerprint(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` and a digest of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }
