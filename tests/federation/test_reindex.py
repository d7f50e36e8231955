"""``domicile federation reindex``: records written before a deployment was federated get
the search entries other nodes find them by, at their own node, once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from domicile.cli.app import app
from domicile.config import load_config
from domicile.federation.reindex import reindex
from domicile.vault import Domicile

from .inprocess import add_federation, in_process_nodes

EMAIL = "anna.volkova@example.ru"


def _site_state(path: Path, site: str) -> tuple[int, int]:
    """The site's audit entries and index entries, counted."""
    d = Domicile.open(path, read_only=True)
    try:
        store = d.store(site)
        digests = sum(
            len(v)
            for v in store.digests_of(
                [r.record_id for r in store.records_after("", 10_000)]
            ).values()
        )
        return sum(1 for _ in store.audit()), digests
    finally:
        d.close(checkpoint=False)


class Stopped(Exception):
    pass


def stop(walked: int, total: int) -> None:
    raise Stopped


def test_records_written_before_federation_are_found_by_other_nodes_after_a_reindex(
    tmp_path: Path,
) -> None:
    runner = CliRunner()
    folder = tmp_path / "dep"
    assert runner.invoke(app, ["init", str(folder)]).exit_code == 0
    path = folder / "domicile.yaml"
    # Written by the embedded default: no federation section, so no search entries.
    d = Domicile.open(path)
    for i in range(3):
        d.put(
            "profiles", subject={"citizenship": "RU"}, purpose="signup",
            fields={"full_name": f"Anna {i}", "email": EMAIL if i == 0 else f"a{i}@example.ru"},
        )  # fmt: skip
    d.close()
    # Nothing to reindex before the deployment is federated: refused, nothing written.
    before = _site_state(path, "ru")
    refused = runner.invoke(app, ["federation", "reindex", "--node", "ru", "--config", str(path)])
    assert refused.exit_code == 2
    assert "no federation section" in refused.output
    assert _site_state(path, "ru") == before

    add_federation(path)
    nodes = in_process_nodes(load_config(path))
    try:
        us, ru = nodes["us"], nodes["ru"]
        assert us.find("profiles", where={"email": EMAIL}, purpose="view").records == []
        # Stopped after its first page (two records, committed), then run again: it goes
        # on where it was.
        with pytest.raises(Stopped):
            reindex(ru, batch=2, progress=stop)
        done = reindex(ru, batch=2)
        assert (done.indexed, done.current, done.unreadable) == (1, 2, [])
        found = us.find("profiles", where={"email": EMAIL}, purpose="view")
        assert [r.site for r in found.records] == ["ru"]
        assert found.records[0].masked  # decided at the RU node, as any read from the US
        entries = [json.loads(r.payload) for r in ru.store("ru").audit()]
        upgrades = [e for e in entries if e["action"] == "upgrade"]
        assert sum(len(e["records"]) for e in upgrades) == 3
        assert all(e["detail"]["search_entries"] > 0 for e in upgrades)
        assert EMAIL not in json.dumps(upgrades)
    finally:
        for n in nodes.values():
            n.close(checkpoint=False)

    # A rerun (the command, at the node) finds every entry there and writes nothing.
    after = _site_state(path, "ru")
    again = runner.invoke(
        app, ["federation", "reindex", "--node", "ru", "--config", str(path), "--json"]
    )
    assert again.exit_code == 0, again.output
    out = json.loads(again.stdout)
    assert (out["indexed"], out["entries"], out["current"], out["done"]) == (0, 0, 3, True)
    assert _site_state(path, "ru") == after
