"""A three-site SQLite deployment (RU, DE, US) with known contents, made once per module:
three Russian citizens (one erased), two French and one American, a masked read from the
US, a refused read, then the Art. 12 notice and a transfer to the US."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import pytest

from domicile.config import Config, parse_config
from domicile.setup import create_deployment
from domicile.vault import Domicile, PolicyRefused

CONFIG = """
environment_id: default
data_dir: data
default_site: us
local_site: us
sites:
  - {id: ru, country: RU, location: {provider: Selectel, city: Moscow, address: "Tsvetochnaya 21"}, backend: "sqlite:data/ru.sqlite"}
  - {id: de, country: DE, location: {provider: Hetzner, city: Falkenstein, address: "Sigmund-Riefler 2"}, backend: "sqlite:data/de.sqlite"}
  - {id: us, country: US, location: {provider: Equinix, city: Ashburn, address: "21715 Filigree Ct"}, backend: "sqlite:data/us.sqlite"}
collections:
  profiles:
    fields:
      full_name: {category: user.name, required: true}
      email: {category: user.contact.email, searchable: true, identifies: true, normalize: email}
      city: {category: user.contact.address.city}
"""

# Values that must appear in no report.
PLAINTEXT = (
    "Ivan Sidorov",
    "ivan@example.ru",
    "Olga",
    "olga@example.ru",
    "Kazan",
    "Camille",
    "c@d.fr",
)


@dataclass
class Known:
    folder: Path
    config: Config
    today: dt.date
    notice: dt.date  # ru.art12_notice and ru.art22_notice


@pytest.fixture(scope="module")
def known(tmp_path_factory: pytest.TempPathFactory) -> Known:
    folder = tmp_path_factory.mktemp("reports")
    (folder / "domicile.yaml").write_text(CONFIG)
    config = parse_config(CONFIG, str(folder / "domicile.yaml"), folder)
    create_deployment(config)
    today = dt.datetime.now(dt.UTC).date()
    notice = today - dt.timedelta(days=40)
    ru = {"citizenship": "RU"}
    fr = {"citizenship": "FR", "residence": "FR"}
    with Domicile(config) as v:
        ivan = v.put(
            "profiles",
            subject=ru,
            fields={"full_name": "Ivan Sidorov", "email": "ivan@example.ru"},
            purpose="signup",
        ).token
        v.put(
            "profiles",
            subject=ru,
            fields={"full_name": "Olga", "email": "olga@example.ru", "city": "Kazan"},
            purpose="signup",
        )
        gone = v.put("profiles", subject=ru, fields={"full_name": "Pavel"}, purpose="signup").token
        camille = v.put(
            "profiles",
            subject=fr,
            fields={"full_name": "Camille", "email": "c@d.fr"},
            purpose="signup",
        ).token
        v.put("profiles", subject=fr, fields={"full_name": "Jean"}, purpose="signup")
        v.put(
            "profiles",
            subject={"citizenship": "US"},
            fields={"full_name": "John"},
            purpose="signup",
        )
        assert v.get(ivan, purpose="profile_view", as_site="us").masked  # no Art. 12 notice yet
        with pytest.raises(PolicyRefused):
            v.get(camille, purpose="profile_view", as_site="us")  # GDPR: no clauses for the US
        v.erase(gone)
        v.add_filing("ru.art12_notice", notice)
        v.add_filing("ru.art22_notice", notice)
        read = v.get(ivan, purpose="profile_view", as_site="us")
        assert read.transfer
        assert not read.masked
    return Known(folder, config, today, notice)
