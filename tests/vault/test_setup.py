"""Setup is the only way a site comes to exist: ``domicile init``, ``domicile sites create``
(``--adopt`` for a deployment made by an older domicile, ``--create-database`` on
PostgreSQL), and ``domicile sites migrate``."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from domicile.cli.app import app
from domicile.config import load_config
from domicile.stores.schema import SITE_MIGRATIONS, SITE_SCHEMA_VERSION
from domicile.vault import Domicile
from tests.pg import PgServer

from .conftest import CONFIG, sqlite_urls

runner = CliRunner()


def run(*args: str) -> tuple[int, Any]:
    result = runner.invoke(app, [*args, "--json"])
    try:
        return result.exit_code, json.loads(result.stdout)
    except ValueError:
        return result.exit_code, result.stdout + result.stderr


def sql(path: Path, *statements: str) -> list[Any]:
    rows: list[Any] = []
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        for stmt in statements:
            rows = conn.execute(stmt).fetchall()
    return rows


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A three-site configuration (ru, de, us on SQLite), not set up yet."""
    (tmp_path / "domicile.yaml").write_text(CONFIG.format(**sqlite_urls()), encoding="utf-8")
    monkeypatch.setenv("DOMICILE_CONFIG", str(tmp_path / "domicile.yaml"))
    return tmp_path


def put(citizenship: str = "RU") -> tuple[int, Any]:
    return run(
        "put", "profiles", "--subject", f"citizenship={citizenship}",
        "--field", "full_name=Anna Volkova", "--purpose", "signup",
    )  # fmt: skip


def test_a_deployment_that_is_not_set_up_creates_nothing(folder: Path) -> None:
    code, out = put()
    assert code == 5  # the keyring is missing: this machine stands in the way
    assert out["error"]["code"] == "keyring_error"
    assert "domicile init" in out["error"]["hint"]
    assert sorted(p.name for p in folder.iterdir()) == ["domicile.yaml"]  # nothing made


def test_sites_create_makes_each_store_once_and_records_it(folder: Path) -> None:
    code, out = run("sites", "create", "ru")
    assert code == 0, out
    assert out["outcome"] == "created"
    data = folder / "data"
    meta = dict(sql(data / "ru.sqlite", "SELECT key, value FROM meta"))
    assert meta["creation_id"] == out["store_creation_id"]
    keys_meta = dict(sql(data / "keys" / "ru.sqlite", "SELECT key, value FROM meta"))
    assert keys_meta["creation_id"] == out["keys_creation_id"]
    registry = json.loads((data / "deployment.json").read_text())
    assert registry["sites"]["ru"]["store"] == out["store_creation_id"]
    assert set(registry["sites"]) == {"ru"}

    # The other sites are unavailable, with a hint that says how sites come to exist.
    code, written = put("RU")
    assert code == 0, written
    code, refused = put("US")
    assert code == 4
    assert refused["error"]["details"]["site"] == "us"
    assert "domicile sites create us" in refused["error"]["hint"]
    assert not (data / "us.sqlite").exists()
    code, rows = run("sites")
    assert {r["id"]: r["healthy"] for r in rows} == {"ru": True, "de": False, "us": False}

    code, again = run("sites", "create", "ru")
    assert code == 2
    assert "set up already" in again["error"]["message"]
    assert dict(sql(data / "ru.sqlite", "SELECT key, value FROM meta")) == meta


def test_sites_create_all_sets_up_every_site_not_set_up_yet(folder: Path) -> None:
    code, one = run("sites", "create", "de")
    assert code == 0, one
    code, rows = run("sites", "create", "--all")
    assert code == 0, rows
    assert {r["site"]: r["outcome"] for r in rows} == {
        "ru": "created", "de": "existing", "us": "created",
    }  # fmt: skip
    by_site = {r["site"]: r for r in rows}
    assert by_site["de"]["store_creation_id"] == one["store_creation_id"]
    for args in (("sites", "create"), ("sites", "create", "ru", "--all")):
        code, out = run(*args)
        assert code == 2
        assert "--all" in out["error"]["message"]


def test_sites_create_refuses_a_site_the_configuration_does_not_have(folder: Path) -> None:
    code, out = run("sites", "create", "fr")
    assert code == 2
    assert "no site 'fr'" in out["error"]["message"]
    assert not (folder / "data" / "fr.sqlite").exists()


def test_sites_create_never_overwrites_a_store_it_did_not_record(folder: Path) -> None:
    run("sites", "create", "ru")
    data = folder / "data"
    registry = data / "deployment.json"
    registry.write_text(json.dumps({"format": 1, "sites": {}}))  # the record is lost
    before = (data / "ru.sqlite").read_bytes()
    code, out = run("sites", "create", "ru")
    assert code == 2
    assert "already has a database and a key store" in out["error"]["message"]
    assert "--adopt" in out["error"]["hint"]
    assert (data / "ru.sqlite").read_bytes() == before
    assert json.loads(registry.read_text())["sites"] == {}


def test_init_sets_up_every_site_and_is_refused_the_second_time(tmp_path: Path) -> None:
    code, out = run("init", str(tmp_path / "d"))
    assert code == 0, out
    registry = json.loads((tmp_path / "d" / "domicile-data" / "deployment.json").read_text())
    assert set(registry["sites"]) == {"ru", "de", "us"}
    code, _ = run("init", str(tmp_path / "d"))
    assert code == 2


def old_deployment(folder: Path) -> dict[str, int]:
    """A deployment as an older domicile left it: stores without creation ids, no
    registry, a record at each site."""
    config = load_config(folder / "domicile.yaml")
    from domicile.setup import create_deployment

    create_deployment(config)
    with Domicile(config) as vault:
        vault.put("profiles", subject={"citizenship": "RU"}, fields={"full_name": "A"}, purpose="x")
        vault.put("profiles", subject={"citizenship": "US"}, fields={"full_name": "B"}, purpose="x")
    data = folder / "data"
    for site in ("ru", "de", "us"):
        for path in (data / f"{site}.sqlite", data / "keys" / f"{site}.sqlite"):
            sql(path, "DELETE FROM meta WHERE key = 'creation_id'")
            path.chmod(0o644)  # as the umask made them then
    (data / "deployment.json").unlink()
    return {s: len(sql(data / f"{s}.sqlite", "SELECT seq FROM audit")) for s in ("ru", "de", "us")}


def test_an_old_deployment_is_unavailable_until_each_site_is_adopted(folder: Path) -> None:
    entries = old_deployment(folder)
    code, out = put()
    assert code == 4
    assert "not set up" in out["error"]["message"]
    assert "--adopt" in out["error"]["hint"]

    for site in ("ru", "de", "us"):
        code, adopted = run("sites", "create", site, "--adopt")
        assert code == 0, adopted
        assert adopted["outcome"] == "adopted"
    data = folder / "data"
    registry = json.loads((data / "deployment.json").read_text())
    assert all(entry["adopted"] for entry in registry["sites"].values())
    # Each site's own log says that it was adopted, and by which ids.
    last = json.loads(sql(data / "ru.sqlite", "SELECT payload FROM audit ORDER BY seq DESC LIMIT 1")[0][0])  # fmt: skip
    assert (last["action"], last["detail"]["adopted"]) == ("setup", True)
    assert last["detail"]["store"] == registry["sites"]["ru"]["store"]
    assert len(sql(data / "ru.sqlite", "SELECT seq FROM audit")) == entries["ru"] + 1
    for path in (data / "ru.sqlite", data / "keys" / "us.sqlite"):
        assert path.stat().st_mode & 0o777 == 0o600  # adopted stores are private too
    code, rows = run("sites")
    assert {r["id"]: (r["healthy"], r["records"]) for r in rows} == {
        "ru": (True, 1), "de": (True, 0), "us": (True, 1),
    }  # fmt: skip
    assert put()[0] == 0


def test_adopting_needs_something_to_adopt_and_its_keys(folder: Path) -> None:
    code, out = run("sites", "create", "ru", "--adopt")
    assert code == 2
    assert "no keyring" in out["error"]["message"]  # nothing here was ever set up
    run("sites", "create", "de")
    code, out = run("sites", "create", "ru", "--adopt")
    assert code == 2
    assert "no database and no key store to adopt" in out["error"]["message"]
    assert not (folder / "data" / "ru.sqlite").exists()


def test_a_site_added_later_is_unavailable_until_created(folder: Path) -> None:
    """The vault never makes keys or stores for a site it has not been set up with; the
    other sites keep working meanwhile."""
    run("sites", "create", "ru")
    run("sites", "create", "us")
    keyring = json.loads((folder / "data" / "keyring.json").read_text())
    assert set(keyring["sites"]) == {"ru", "us"}
    assert put("US")[0] == 0
    assert put("RU")[0] == 0
    code, rows = run("sites")
    assert code == 4  # listed, and a site is down
    status = {r["id"]: r for r in rows}
    assert status["de"]["healthy"] is False
    assert "never set up" in status["de"]["error"]
    assert (status["ru"]["healthy"], status["us"]["healthy"]) == (True, True)
    assert set(json.loads((folder / "data" / "keyring.json").read_text())["sites"]) == {"ru", "us"}
    assert not (folder / "data" / "de.sqlite").exists()
    assert run("sites", "create", "de")[0] == 0
    code, rows = run("sites")
    assert code == 0
    assert all(r["healthy"] for r in rows)


def test_sites_migrate_upgrades_what_read_only_opens_refuse(folder: Path) -> None:
    from domicile.stores import open_site_store
    from domicile.stores.base import SchemaOutdated

    run("sites", "create", "ru")
    path = folder / "data" / "ru.sqlite"
    older = SITE_SCHEMA_VERSION - 1
    # Undo the newest migration by hand: the database an older domicile left.
    undo = [
        f"DROP {kind} IF EXISTS {name}"
        for stmt in reversed(SITE_MIGRATIONS["sqlite"][SITE_SCHEMA_VERSION])
        for kind, name in re.findall(r"^CREATE (TABLE|INDEX|TRIGGER) (\w+)", stmt)
    ]
    # ... and make again what it dropped, as the earlier migrations made it.
    dropped = {
        name
        for stmt in SITE_MIGRATIONS["sqlite"][SITE_SCHEMA_VERSION]
        for name in re.findall(r"^DROP TABLE (\w+)", stmt)
    }
    undo += [
        stmt
        for version in range(1, SITE_SCHEMA_VERSION)
        for stmt in SITE_MIGRATIONS["sqlite"][version]
        if re.match(rf"^CREATE (TABLE|INDEX \w+ ON) ({'|'.join(dropped) or '-'})\b", stmt)
    ]
    assert undo
    sql(path, *undo, f"UPDATE meta SET value = '{older}' WHERE key = 'schema_version'")
    with pytest.raises(SchemaOutdated):
        open_site_store("ru", f"sqlite:{path}", read_only=True)
    code, out = run("sites", "migrate", "--site", "ru")
    assert code == 0, out
    assert dict(sql(path, "SELECT key, value FROM meta"))["schema_version"] == str(
        SITE_SCHEMA_VERSION
    )
    open_site_store("ru", f"sqlite:{path}", read_only=True).close()


def test_on_postgresql_the_database_is_created_only_when_asked(
    tmp_path: Path, pg_server: PgServer, pg_database: Callable[[str], str]
) -> None:
    missing = pg_server.url(pg_server.new_name("ru"))
    urls = {**sqlite_urls(), "ru": missing, "ru_keys": pg_database("ru_keys")}
    config = tmp_path / "domicile.yaml"
    config.write_text(CONFIG.format(**urls), encoding="utf-8")
    code, out = run("sites", "create", "ru", "--config", str(config))
    assert code == 2
    assert "does not exist" in out["error"]["message"]
    assert "--create-database" in out["error"]["hint"]
    try:
        code, out = run("sites", "create", "ru", "--create-database", "--config", str(config))
        assert code == 0, out
        with psycopg.connect(missing) as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'creation_id'").fetchone()
        assert row == (out["store_creation_id"],)
    finally:
        pg_server.discard([missing.rsplit("/", 1)[1]])
