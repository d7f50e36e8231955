"""Export and verify on both backends, from a deployment whose writes carry a fixed date
and whose reads carry today's (the segment is cut by the entries' own times), with more
than one signed head per site."""

from __future__ import annotations

import datetime as dt
import json
import zipfile
from pathlib import Path

import pytest

from domicile.evidence.pack import export_pack
from domicile.evidence.verifier import check_pack
from domicile.vault import Domicile
from tests.vault.conftest import FIXED_NOW, IVAN, Deployment
from tests.vault.conftest import deployment as deployment  # the fixture, on both backends

RU = {"citizenship": "RU"}


def export(dep: Deployment, folder: Path, since: dt.date, until: dt.date) -> Path:
    """As `domicile evidence export` does it: a read-only vault."""
    out = folder / f"pack-{since}-{until}.zip"
    vault = Domicile(dep.config, read_only=True)
    try:
        export_pack(vault, out, since=since, until=until)
    finally:
        vault.close(checkpoint=False)
    return out


def test_export_and_verify_on_each_backend(
    dep: Deployment, tmp_path_factory: pytest.TempPathFactory
) -> None:
    packs = tmp_path_factory.mktemp("packs")  # not in the deployment's folder
    vault = dep.open()
    try:
        tokens = [
            vault.put("profiles", subject=RU, fields=IVAN, purpose="signup").token
            for _ in range(40)
        ]
        vault.witness()
        vault.add_filing("ru.art12_notice", "2025-03-03")
        for token in tokens[:5]:
            vault.get(token, purpose="view", as_site="de")
        vault.witness()
    finally:
        vault.close(checkpoint=False)
    today = dt.datetime.now(dt.UTC).date()
    before = state(dep)
    whole = export(dep, packs, FIXED_NOW.date(), today)
    assert state(dep) == before  # export only reads
    report = check_pack(whole)
    assert report.ok, report.failures
    assert report.info["ledger"]["transfers"] == 5
    assert report.sites["ru"]["in_period"] >= 40 + 5
    with zipfile.ZipFile(whole) as zf:
        assert len(json.loads(zf.read("audit/ru.json"))["heads"]) >= 2
    # Only the reads are of today, but the writes (of an earlier clock) were signed today
    # too: the segment is cut at heads signed before the period, and none is, so it starts
    # at the log's first entry.
    report = check_pack(export(dep, packs, today, today))
    assert report.ok, report.failures
    assert report.sites["ru"]["first"] == 1
    assert report.info["ledger"]["transfers"] == 5


def state(dep: Deployment) -> object:
    """SQLite: every byte of every file. PostgreSQL: every row of every store (a dump
    carries a random token of its own), and every file of the deployment's folder."""
    if dep.backend == "sqlite":
        return dep.everything()
    files = {f: f.read_bytes() for f in sorted(dep.folder.rglob("*")) if f.is_file()}
    return [dep.dump(n) for n in dep.urls], files


@pytest.fixture
def dep(deployment: Deployment) -> Deployment:
    return deployment
