"""``domicile upgrade`` re-seals records written in layout 2 (one seal per field) as layout 3
(one seal per record), in place, on a deployment with records, copies abroad, erased
subjects and an audit log; it can stop and start again. And a site store of schema 6
(blind indexes with their collection and field) moves to the compact index on open."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from domicile.crypto.envelope import record_context
from domicile.stores.base import StoredRecord, pack_fields
from domicile.stores.schema import SITE_SCHEMA_VERSION
from domicile.vault import Domicile, values
from domicile.vault.replication import Replicator
from domicile.vault.sealing import RESIDENCY_FIELD, open_body
from domicile.vault.upgrade import upgrade

from .conftest import IVAN, Deployment

RU = {"citizenship": "RU"}


def as_layout2(vault: Domicile, site: str, rec: StoredRecord) -> StoredRecord:
    """The record as an earlier domicile sealed it: each field on its own (associated
    data: site, collection, record, field), the residency as the field ``@residency``."""
    cipher = vault._cipher(site, rec.subject_id)
    text, fields = open_body(cipher, site, rec)
    prefix = record_context(site, rec.collection, rec.record_id)
    sealed = {
        name: cipher.seal(values.encode(value), prefix + name.encode())
        for name, value in fields.items()
    }
    sealed[RESIDENCY_FIELD] = cipher.seal(
        values.encode(json.loads(text)), prefix + RESIDENCY_FIELD.encode()
    )
    return StoredRecord(
        rec.record_id, rec.subject_id, rec.collection, rec.version, rec.created_at,
        rec.updated_at, pack_fields(sealed), rec.primary_site,
    )  # fmt: skip


def downgrade(deployment: Deployment, vault: Domicile) -> int:
    """Every record of every site back to layout 2, written straight into the stores."""
    count = 0
    for site in ("ru", "de", "us"):
        store = vault.store(site)
        for rec in store.records_after("", 10_000):
            old = as_layout2(vault, site, rec)
            with store.transaction() as tx:
                tx.replace(old, rec.version)
            count += 1
    return count


@pytest.fixture
def old_deployment(deployment: Deployment) -> tuple[Deployment, dict[str, Any]]:
    """Records at ru (with copies at de and us), one erased subject, an update, an audit
    log witnessed, then every body turned back into layout 2."""
    # Mid-2024: before Russia's 2025 amendment, copies abroad after an Art. 12 notice.
    vault = deployment.open(dt.datetime(2024, 6, 20, tzinfo=dt.UTC))
    vault.add_filing("ru.art12_notice", "2024-05-27")
    kept = vault.put("profiles", subject=RU, fields=IVAN, purpose="signup").token
    vault.update(kept, fields={"city": "Kazan"}, purpose="edit")
    others = [
        vault.put(
            "profiles", subject=RU, fields={**IVAN, "email": f"p{i}@example.ru"}, purpose="signup"
        ).token
        for i in range(7)
    ]
    gone = vault.put(
        "profiles", subject=RU, fields={**IVAN, "email": "gone@example.ru"}, purpose="signup"
    ).token
    Replicator(vault).run_once()
    vault.erase(gone, purpose="subject_request")
    us = vault.put("profiles", subject={"citizenship": "US"}, fields=IVAN, purpose="x").token
    before = {t: vault.get(t, purpose="view", as_site="ru").fields for t in [kept, *others]}
    copies = vault.store("de").count_replicas()
    assert copies == 8
    assert downgrade(deployment, vault) == 9 + 2 * copies  # copies at de and at us
    vault.close()
    return deployment, {"kept": kept, "others": others, "us": us, "before": before}


def layouts(vault: Domicile) -> dict[int, int]:
    out: dict[int, int] = {}
    for site in ("ru", "de", "us"):
        for rec in vault.store(site).records_after("", 10_000):
            out[rec.layout] = out.get(rec.layout, 0) + 1
    return out


def test_layout2_records_read_and_upgrade_in_place(
    old_deployment: tuple[Deployment, dict[str, Any]],
) -> None:
    deployment, seen = old_deployment
    vault = deployment.open()
    assert set(layouts(vault)) == {2}
    # Still readable as they are, and still updatable (an update seals in layout 3).
    for token, fields in seen["before"].items():
        assert vault.get(token, purpose="view", as_site="ru").fields == fields
    assert vault.get(seen["kept"], purpose="view", as_site="de").fields  # the copy at de
    report = upgrade(vault, batch=3)
    assert report.done
    assert {s.site: s.resealed for s in report.sites} == {"ru": 8, "de": 8, "us": 9}
    assert layouts(vault) == {3: 25}
    for token, fields in seen["before"].items():
        assert vault.get(token, purpose="view", as_site="ru").fields == fields
    assert vault.get(seen["kept"], purpose="view", as_site="de").fields["city"] == "Kazan"
    again = upgrade(vault)
    assert [s.resealed for s in again.sites] == [0, 0, 0]
    from domicile.vault.parity import check_parity

    assert check_parity(vault).to_dict()["ok"] is True
    assert all(r.ok for r in vault.verify_audit())
    entries = [json.loads(r.payload) for r in vault.store("ru").audit()]
    upgraded = [e for e in entries if e["action"] == "upgrade"]
    assert sum(len(e["records"]) for e in upgraded) == 8
    assert all(e.get("client") == vault.operator.client for e in upgraded)
    vault.close()


def test_an_upgrade_stopped_midway_goes_on_where_it_was(
    old_deployment: tuple[Deployment, dict[str, Any]],
) -> None:
    deployment, seen = old_deployment
    vault = deployment.open()
    calls: list[tuple[str, int, int]] = []

    def stop_after_two(site: str, walked: int, total: int) -> None:
        calls.append((site, walked, total))
        if len(calls) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        upgrade(vault, site="ru", batch=2, progress=stop_after_two)
    assert layouts(vault)[3] == 4  # two batches of two, committed
    report = upgrade(vault, site="ru", batch=2)
    assert report.sites[0].resealed == 4
    assert report.sites[0].current == 4
    for token, fields in seen["before"].items():
        assert vault.get(token, purpose="view", as_site="ru").fields == fields
    vault.close()


def test_the_cli_upgrades_and_says_what_it_did(
    old_deployment: tuple[Deployment, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from domicile.cli.app import app

    deployment, _ = old_deployment
    (deployment.folder / "domicile.yaml").write_text(deployment.config_text)
    monkeypatch.setenv("DOMICILE_CONFIG", str(deployment.folder / "domicile.yaml"))
    result = CliRunner().invoke(app, ["upgrade", "--json"])
    assert result.exit_code == 0, result.stdout
    data = json.loads(result.stdout)
    assert data["done"] is True
    assert sum(s["resealed"] for s in data["sites"]) == 25


def test_a_schema6_index_moves_to_the_compact_index_on_open(deployment: Deployment) -> None:
    vault = deployment.open()
    vault.put("profiles", subject=RU, fields=IVAN, purpose="signup")
    vault.close()
    # The store as schema 6 kept it: the blind-index table with collection and field.
    deployment.execute(
        "ru",
        "CREATE TABLE blind_index (collection TEXT NOT NULL, field TEXT NOT NULL,"
        " digest "
        + ("BLOB" if deployment.backend == "sqlite" else "BYTEA")
        + " NOT NULL, record_id TEXT NOT NULL)",
        "INSERT INTO blind_index SELECT 'c', 'f', digest, record_id FROM digests",
        "DROP TABLE digests",
        "DROP TABLE node_replies",  # (schema 8)
        "DROP TABLE subject_blocks",  # (schema 9)
        "UPDATE meta SET value = '6' WHERE key = 'schema_version'",
    )
    vault = deployment.open()
    found = vault.find("profiles", where={"email": IVAN["email"]}, purpose="lookup", as_site="ru")
    assert [r.fields["full_name"] for r in found.records] == [IVAN["full_name"]]
    assert deployment.execute("ru", "SELECT value FROM meta WHERE key = 'schema_version'") == [
        (str(SITE_SCHEMA_VERSION),)
    ]
    vault.close()
