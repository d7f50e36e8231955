"""Retention on PostgreSQL sites: a hold honoured, a subject shredded, one signed act."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from domicile.retention import plan, run
from domicile.retention.service import acts
from domicile.rights.acts import verify_act
from tests.vault.conftest import SITES

from .conftest import T0, World, make_config, make_world


@pytest.fixture
def pg_world(tmp_path: Path, pg_database: Callable[[str], str]) -> Iterator[World]:
    urls = {}
    for s in SITES:
        urls[s] = pg_database(s)
        urls[f"{s}_keys"] = pg_database(f"{s}_keys")
    yield from make_world(make_config(tmp_path, urls))


def test_run_on_postgresql(pg_world: World) -> None:
    world = pg_world
    inv = world.put("invoices", "US", {"payer": "Ann Lee", "email": "ann@example.com", "amount": 3})
    prof = world.put("profiles", "US", {"full_name": "Bo Ng", "email": "bo@example.com"})
    world.clock.now = T0 + dt.timedelta(days=400)
    [row] = [r for r in plan(world.vault)["collections"] if r["collection"] == "invoices"]
    assert row["due"]["strip"] == 1
    done = run(world.vault)
    assert done["sites"][0]["records_erased"] == 1
    assert done["sites"][0]["keys_destroyed"] == 1
    assert world.record(prof) is None
    assert world.vault.get(inv, purpose="audit").fields == {"payer": "Ann Lee", "amount": 3}
    [act] = acts(world.config)
    assert all(c["valid"] for c in verify_act(world.vault, act))
    assert all(r.ok for r in world.vault.verify_audit())
