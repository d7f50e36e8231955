"""A subject moved in by ``domicile migrate`` is a subject like any other: an erasure
request destroys its key and records, the legacy database's token no longer opens, and
``migrate verify`` says the token's subject was erased (not that the migration lost it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from domicile.discovery.synthetic import generate
from domicile.errors import NotFound
from domicile.rights import fulfil, open_request
from domicile.vault import Domicile
from tests.discovery.test_migrate import (
    check_moved,
    cli,
    cli_json,
    customers,
    deployment,
    make_plan,
    sqlite_source,
)  # fmt: skip

from .conftest import WHO


def test_erasure_reaches_a_migrated_subject_and_verify_says_so(tmp_path: Path) -> None:
    data = generate(20, seed=11)
    url = sqlite_source(tmp_path, data)
    config = deployment(tmp_path)
    plan_file = tmp_path / "plan.yaml"
    make_plan(url, config, plan_file)
    cli_json("migrate", "run", str(plan_file), "--config", config)
    rows = customers(url)
    check_moved(config, data, rows)
    original = {r[0]: r[1:] for r in data.tables["customers"].rows}
    key, row = next((k, r) for k, r in sorted(rows.items()) if str(r[0]).startswith("dom1_"))
    token = row[0]
    d = Domicile.open(config)
    try:
        req = open_request(d, "erasure", {"email": original[key][1]}, **WHO)
        assert req["subject"]["found"]
        _, act = fulfil(d, req["id"])
        assert act is not None
        assert sum(x["records"] for x in act["act"]["destroyed"]) >= 1
        with pytest.raises(NotFound):
            d.get(token, purpose="migration_check")
    finally:
        d.close()
    report = cli_json("migrate", "verify", str(plan_file), "--config", config)
    assert report["ok"] is True, report["problems"]
    assert report["erased"] == 1
    # A record that vanished without an audited erasure is still reported missing.
    d = Domicile.open(config)
    try:
        other = next(
            r[0] for k, r in sorted(rows.items()) if k != key and str(r[0]).startswith("dom1_")
        )
        site, rid = d.tokens.read(other)
        with d.store(site).transaction() as tx:
            tx.delete([rid])
    finally:
        d.close()
    code, out, _ = cli("migrate", "verify", str(plan_file), "--config", config)
    assert code == 1
    assert "its record is missing" in out
