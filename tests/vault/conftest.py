"""A three-site vault (RU, DE, US) per test, on SQLite files in a temporary folder."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from domicile.config import Config, parse_config
from domicile.vault import Domicile

FIXED_NOW = dt.datetime(2025, 9, 1, 12, 0, tzinfo=dt.UTC)

CONFIG = """
environment_id: default
data_dir: data
default_site: us
local_site: us
sites:
  - {{id: ru, country: RU, location: {{provider: P, city: Moscow, address: "1 Street"}}, backend: "{ru}"}}
  - {{id: de, country: DE, location: {{provider: P, city: Frankfurt, address: "2 Strasse"}}, backend: "{de}"}}
  - {{id: us, country: US, location: {{provider: P, city: Ashburn, address: "3 Way"}}, backend: "{us}"}}
collections:
  profiles:
    fields:
      full_name: {{category: user.name, required: true, max_length: 200}}
      email: {{category: user.contact.email, searchable: true, identifies: true, normalize: email}}
      phone: {{category: user.contact.phone_number, searchable: true, normalize: phone}}
      headline: {{category: user.content.public, max_length: 300}}
      city: {{category: user.contact.address.city}}
      age: {{category: user.demographic.age_range, type: integer}}
filings:
  ru.art22_notice: 2025-01-15
"""


def make_config(folder: Path, backends: dict[str, str] | None = None) -> Config:
    urls = {s: f"sqlite:data/{s}.sqlite" for s in ("ru", "de", "us")}
    urls.update(backends or {})
    return parse_config(CONFIG.format(**urls), str(folder / "domicile.yaml"), folder)


def open_vault(config: Config) -> Domicile:
    return Domicile(config, clock=lambda: FIXED_NOW)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path)


@pytest.fixture
def vault(config: Config) -> Iterator[Domicile]:
    d = open_vault(config)
    yield d
    d.close()


IVAN = {
    "full_name": "Ivan Petrovich Sidorov",
    "email": "ivan.sidorov@example.ru",
    "city": "Yekaterinburg",
}
