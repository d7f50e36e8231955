"""Deployments for the scale-out tests: every site on PostgreSQL (the machine's server),
so several processes can share a site as several hosts would."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.vault.conftest import SITES, Deployment


@pytest.fixture
def pg_deployment(pg_database: Callable[[str], str], tmp_path: Path) -> Deployment:
    urls = {}
    for site in SITES:
        urls[site] = pg_database(site)
        urls[f"{site}_keys"] = pg_database(f"{site}_keys")
    return Deployment("postgresql", tmp_path, urls, None)
