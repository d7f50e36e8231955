"""A three-site SQLite deployment (RU, DE, US) whose sites name their key providers."""

from __future__ import annotations

from pathlib import Path

from domicile.config import Config, load_config
from domicile.setup import create_deployment

MODULE = "/usr/lib/softhsm/libsofthsm2.so"

CONFIG = """
environment_id: default
data_dir: data
default_site: us
local_site: us
sites:
  - id: ru
    country: RU
    location: {{provider: P, city: Moscow, address: "1 Street"}}
    backend: "sqlite:data/ru.sqlite"
{ru_provider}
  - id: de
    country: DE
    location: {{provider: P, city: Frankfurt, address: "2 Strasse"}}
    backend: "sqlite:data/de.sqlite"
{de_provider}
  - id: us
    country: US
    location: {{provider: P, city: Ashburn, address: "3 Way"}}
    backend: "sqlite:data/us.sqlite"
collections:
  profiles:
    fields:
      full_name: {{category: user.name, required: true, max_length: 200}}
      email: {{category: user.contact.email, searchable: true, identifies: true, normalize: email}}
      city: {{category: user.contact.address.city}}
    replicate:
      - {{to: us, fields: [full_name]}}
filings:
  ru.art22_notice: 2025-01-15
"""


def pkcs11_provider(
    token: str, *, module: str = MODULE, pin_env: str = "DOMICILE_PKCS11_PIN"
) -> str:
    return f'    key_provider: {{kind: pkcs11, module: "{module}", token: "{token}", pin_env: {pin_env}}}'


def transit_provider(url: str, *, ca: str | None = None, token_env: str = "VAULT_TOKEN") -> str:
    extra = f', ca: "{ca}"' if ca else ""
    return f'    key_provider: {{kind: transit, url: "{url}", token_env: {token_env}{extra}}}'


def write(folder: Path, ru_provider: str = "", de_provider: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "domicile.yaml"
    path.write_text(CONFIG.format(ru_provider=ru_provider, de_provider=de_provider))
    return path


def deploy(folder: Path, ru_provider: str = "", de_provider: str = "") -> Config:
    """Write the configuration and set every site up."""
    config = load_config(write(folder, ru_provider, de_provider))
    create_deployment(config)
    return config


RU = {"citizenship": "RU"}
DE = {"citizenship": "DE"}
US = {"citizenship": "US"}
ANNA = {"full_name": "Anna Volkova", "email": "anna.volkova@example.ru", "city": "Kazan"}
