"""The starter configuration ``domicile init`` writes: three SQLite sites (Russia, Germany,
United States) under a data folder, and a sample ``profiles`` collection."""

from __future__ import annotations

from pathlib import Path

from domicile.config import DEFAULT_CONFIG, Config, parse_config
from domicile.errors import BadInput
from domicile.files import private_dir, write_private

STARTER = """\
# domicile deployment configuration (written by `domicile init`).
# Paths are relative to this file. Reference: README.md and docs/packs.md.

# The environment id that InCountry-compatible clients send (x-env-id).
environment_id: default

# Where SQLite site files, subject key stores, the keyring and the deployment registry
# (which sites are set up: `domicile sites create ID` adds one) live.
data_dir: domicile-data

# Site for subjects that no law pins to a country, and the site this process runs at
# (refusals are audited there when a home site cannot be reached).
default_site: us
local_site: us

# Each site is one database in one country. `location` is what a Russian Art. 22 notice
# (item 10.1) must state: provider, city and street address of the database.
# backend: sqlite:PATH, or postgresql://USER@HOST:PORT/DATABASE (one database or cluster per site).
# keys: where the site's subject keys live (default: DATA_DIR/keys/SITE.sqlite), kept apart
# from the data so that erasing a subject's key reaches every copy and backup of its data.
sites:
  - id: ru
    country: RU
    location: {provider: "Example Hosting LLC", city: Moscow, address: "1 Example Street, Moscow 101000"}
    backend: sqlite:domicile-data/ru.sqlite
  - id: de
    country: DE
    location: {provider: "Example Rechenzentrum GmbH", city: Frankfurt am Main, address: "Beispielstrasse 1, 60311 Frankfurt am Main"}
    backend: sqlite:domicile-data/de.sqlite
  - id: us
    country: US
    location: {provider: "Example Data Centers Inc.", city: Ashburn, address: "1 Example Way, Ashburn, VA 20147"}
    backend: sqlite:domicile-data/us.sqlite

# Record types. Each field has a data category (`domicile policy categories` lists them);
# searchable fields can be found by equality through a keyed blind index; fields that
# identify the subject tie a new record to the subject's earlier ones.
collections:
  profiles:
    fields:
      full_name: {category: user.name, required: true, max_length: 200}
      email: {category: user.contact.email, searchable: true, identifies: true, normalize: email, max_length: 320, join_token: true}
      phone: {category: user.contact.phone_number, searchable: true, normalize: phone, max_length: 40}
      headline: {category: user.content.public, max_length: 300}
      city: {category: user.contact.address.city, max_length: 100}
    # Copies at foreign sites, where the law permits them (`domicile replicate` delivers
    # them; `domicile parity` proves the primary holds at least what each copy holds):
    # replicate:
    #   - {to: de, fields: [full_name, headline, city]}

# Filings on record (names as in `domicile policy explain --filing`), with their dates.
# More can be recorded at run time: `domicile filings add NAME=YYYY-MM-DD`.
filings:
  ru.art22_notice: 2025-01-15
#  ru.art12_notice: 2025-03-03
#  eu.scc.US: 2024-06-01

# Facts about the controller (as in `--fact`).
facts:
  controller.ciio: false

# Extra or overriding pack files.
packs: []

# How `domicile serve` guards itself (its options override these; README, "Guarding the
# service"). /metrics needs the metrics:read scope unless it has an address of its own.
# service:
#   metrics_address: 127.0.0.1:9700
#   max_json_bytes: 16777216            # JSON and form bodies
#   max_attachment_bytes: 104857600     # attachment uploads
#   auth_failures_per_source: 30/minute
#   auth_failures_per_client: 10/minute
#   trusted_proxies: []                 # reverse proxies whose X-Forwarded-For is believed
"""


def init(directory: str | Path = ".", *, force: bool = False) -> Config:
    """Write the starter configuration in ``directory`` and set the deployment up: its
    keyring, and each site's database and key store (``domicile.setup``). The
    configuration is written last, so a folder that has one is a deployment set up."""
    from domicile.setup import create_deployment

    folder = Path(directory)
    target = folder / DEFAULT_CONFIG
    if target.exists() and not force:
        raise BadInput(
            f"{target} already exists", hint="use it as it is, or pass --force to overwrite it"
        )
    private_dir(folder)  # a folder made here is private; an existing one keeps its mode
    config = parse_config(STARTER, str(target), target.resolve().parent)
    create_deployment(config)
    write_private(target, STARTER)
    return config
