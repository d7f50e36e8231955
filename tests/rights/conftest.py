"""A three-site deployment (RU, DE, US) for subjects' requests, on SQLite files, with a
clock the tests set; subjects written with copies abroad where the law lets them go."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from domicile.config import Config
from domicile.setup import create_deployment
from domicile.vault import Domicile
from domicile.vault.replication import Replicator
from tests.vault.conftest import make_config

NOW = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.UTC)  # a Friday
OLGA = {"full_name": "Olga Ivanovna Smirnova", "email": "olga.smirnova@example.ru", "city": "Kazan"}
JOHN = {"full_name": "John Quincy Miller", "email": "john.miller@example.com", "city": "Denver"}
WHO = {"checked_by": "dpo.kim", "verified_how": "account_login"}


@dataclass
class Clock:
    now: dt.datetime = NOW

    def __call__(self) -> dt.datetime:
        return self.now


@dataclass
class World:
    config: Config
    vault: Domicile
    clock: Clock

    def put(self, citizenship: str, fields: dict[str, Any]) -> str:
        token = self.vault.put(
            "profiles", subject={"citizenship": citizenship}, fields=fields, purpose="signup"
        ).token
        Replicator(self.vault).run_once(reconcile=False)
        return token

    def records(self, site: str, subject: str) -> list[Any]:
        return self.vault.store(site).subject_records(subject)


def make_world(config: Config) -> Iterator[World]:
    clock = Clock()
    vault = Domicile(config, clock=clock)
    try:
        yield World(config, vault, clock)
    finally:
        vault.close()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    config = make_config(tmp_path)
    create_deployment(config)
    yield from make_world(config)
