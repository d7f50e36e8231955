"""Issue 8, finding 3: a missing, renamed, emptied or swapped site database (or key store)
must make the site unavailable, never be silently re-created or taken for the site.

Each test performs the attack end to end, against the ``domicile`` command and a real
``domicile serve`` over real SQLite files or real PostgreSQL databases, and passes only
when the attack fails: exit 4 / HTTP 503, nothing created, the refusal audited at the site
where the request arrived (``local_site``: us), and the site whole again once its own
database is back.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from domicile.stores import open_site_store
from tests.pg import PgServer

from .domicile_process import Served, admin_headers, cli, refusals_for, sqlite_audit

ANNA = {"full_name": "Anna Volkova", "email": "anna@example.ru"}
RU_BODY = {"subject": {"citizenship": "RU"}, "fields": ANNA, "purpose": "account_signup"}
RECORDS = "/v1/collections/profiles/records"


def put_ru(config: Path, email: str = "anna@example.ru") -> Any:
    return cli(
        "put", "profiles", "--subject", "citizenship=RU", "--field", "full_name=Anna Volkova",
        "--field", f"email={email}", "--purpose", "account_signup", "--json",
        "--config", str(config),
    )  # fmt: skip


def move(path: Path, folder: Path) -> None:
    """Move a SQLite database (with its -wal and -shm) into ``folder``."""
    folder.mkdir(exist_ok=True)
    for f in path.parent.glob(path.name + "*"):
        f.rename(folder / f.name)


def move_back(folder: Path, path: Path) -> None:
    for f in folder.iterdir():
        f.rename(path.parent / f.name)


def assert_unavailable(done: Any, site: str = "ru") -> dict[str, Any]:
    assert done.code == 4, done.out + done.err
    error: dict[str, Any] = done.json()["error"]
    assert error["details"]["site"] == site
    return error


@pytest.fixture
def deployment(tmp_path: Path) -> Path:
    """``domicile init``: three SQLite sites (ru, de, us); local_site us."""
    done = cli("init", str(tmp_path / "deploy"), "--json")
    assert done.code == 0, done.err
    return tmp_path / "deploy" / "domicile.yaml"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    made: list[Served] = []

    def start(config: Path) -> Served:
        srv = Served(tmp_path, "--config", str(config))
        srv.headers = admin_headers(config)
        made.append(srv)
        return srv.start()

    yield start
    for srv in made:
        srv.stop()


# -- (a) a SQLite site's file moved away ----------------------------------------------------


def test_a_moved_away_site_file_is_unavailable_to_the_cli_and_never_recreated(
    deployment: Path, tmp_path: Path
) -> None:
    data = deployment.parent / "domicile-data"
    first = put_ru(deployment)
    assert first.code == 0, first.err
    token = first.json()["token"]
    history = sqlite_audit(data / "ru.sqlite")
    move(data / "ru.sqlite", tmp_path / "aside")

    error = assert_unavailable(put_ru(deployment, "boris@example.ru"))
    assert error["code"] == "site_unavailable"
    assert "sites create" in error["hint"]  # says how sites come to exist
    got = cli("get", token, "--purpose", "profile_view", "--as-site", "ru", "--json", "--config", str(deployment))  # fmt: skip
    assert_unavailable(got)
    verify = cli("audit", "verify", "--site", "ru", "--json", "--config", str(deployment))
    assert verify.code == 4, verify.out  # not "ok" over a new empty log
    sites = cli("sites", "--json", "--config", str(deployment))
    assert {r["id"]: r["healthy"] for r in sites.json()} == {"ru": False, "de": True, "us": True}

    assert not list(data.glob("ru.sqlite*")), "a new Russian database was created"
    refused = refusals_for(sqlite_audit(data / "us.sqlite"), "ru")
    assert len(refused) == 2  # the write and the read, audited where they arrived
    assert all("anna" not in str(e) and "boris" not in str(e) for e in refused)

    move_back(tmp_path / "aside", data / "ru.sqlite")
    again = put_ru(deployment, "boris@example.ru")
    assert again.code == 0, again.err
    assert again.json()["site"] == "ru"
    assert sqlite_audit(data / "ru.sqlite")[: len(history)] == history  # its log is whole


def test_a_running_service_refuses_a_site_whose_file_was_moved_away(
    deployment: Path, tmp_path: Path, served: Callable[..., Served]
) -> None:
    data = deployment.parent / "domicile-data"
    srv = served(deployment)
    r = srv.request("POST", RECORDS, RU_BODY)
    assert (r.status, r.body["site"]) == (201, "ru"), r.body
    token = r.body["token"]
    move(data / "ru.sqlite", tmp_path / "aside")

    r = srv.request("POST", RECORDS, {**RU_BODY, "fields": {"full_name": "Boris B"}})
    assert r.status == 503, r.body
    assert (r.body["code"], r.body["site"]) == ("site_unavailable", "ru")
    r = srv.request("GET", f"/v1/records/{token}?purpose=profile_view&as_site=ru")
    assert (r.status, r.body["site"]) == (503, "ru"), r.body
    ready = srv.request("GET", "/readyz")
    assert ready.status == 503
    assert ready.body["sites"] == {"ru": False, "de": True, "us": True}
    assert not list(data.glob("ru.sqlite*")), "the service created a new Russian database"
    assert len(refusals_for(sqlite_audit(data / "us.sqlite"), "ru")) == 2

    move_back(tmp_path / "aside", data / "ru.sqlite")
    assert srv.request("GET", "/readyz").status == 200
    r = srv.request("GET", f"/v1/records/{token}?purpose=profile_view&as_site=ru")
    assert (r.status, r.body["fields"]) == (200, ANNA)


# -- (b) a running PostgreSQL site's database renamed ---------------------------------------

PG_CONFIG = """
environment_id: default
data_dir: data
default_site: us
local_site: us
sites:
  - {{id: ru, country: RU, location: {{provider: P, city: Moscow, address: "1 Street"}}, backend: "{ru}", keys: "{ru_keys}"}}
  - {{id: de, country: DE, location: {{provider: P, city: Frankfurt, address: "2 Strasse"}}, backend: "{de}", keys: "{de_keys}"}}
  - {{id: us, country: US, location: {{provider: P, city: Ashburn, address: "3 Way"}}, backend: "{us}", keys: "{us_keys}"}}
collections:
  profiles:
    fields:
      full_name: {{category: user.name, required: true}}
      email: {{category: user.contact.email, searchable: true, identifies: true, normalize: email}}
"""


def admin(pg_server: PgServer, *statements: sql.Composable) -> list[Any]:
    """Statements on the server's maintenance database, as its administrator."""
    rows: list[Any] = []
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        for stmt in statements:
            cur = conn.execute(stmt)
            rows = cur.fetchall() if cur.description else []
    return rows


def rename(pg_server: PgServer, old: str, new: str) -> None:
    """What an operator (or attacker) with the server's admin rights does: cut the site's
    connections and rename its database."""
    admin(
        pg_server,
        sql.SQL("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = {}").format(
            sql.Literal(old)
        ),
        sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new)),
    )


def databases(pg_server: PgServer, *names: str) -> set[str]:
    rows = admin(pg_server, sql.SQL("SELECT datname FROM pg_database WHERE datname = ANY({})").format(sql.Literal(list(names))))  # fmt: skip
    return {str(r[0]) for r in rows}


def test_a_renamed_postgresql_database_makes_its_site_unavailable_and_is_never_recreated(
    tmp_path: Path,
    pg_server: PgServer,
    pg_database: Callable[[str], str],
    served: Callable[..., Served],
) -> None:
    urls = {n: pg_database(n) for n in ("ru", "ru_keys", "de", "de_keys", "us", "us_keys")}
    config = tmp_path / "domicile.yaml"
    config.write_text(PG_CONFIG.format(**urls), encoding="utf-8")
    for site in ("ru", "de", "us"):  # the sites exist only once setup made them
        done = cli("sites", "create", site, "--json", "--config", str(config))
        assert done.code == 0, done.err + done.out
        assert done.json()["outcome"] == "created"
    srv = served(config)
    r = srv.request("POST", RECORDS, RU_BODY)
    assert (r.status, r.body["site"]) == (201, "ru"), r.body
    token = r.body["token"]
    ru = urls["ru"].rsplit("/", 1)[1]
    moved = ru + "_moved"

    rename(pg_server, ru, moved)
    try:
        for _ in range(2):  # the first write meets the dead connection, the next a new one
            r = srv.request("POST", RECORDS, RU_BODY)
            assert (r.status, r.body["site"]) == (503, "ru"), r.body
        ready = srv.request("GET", "/readyz")
        assert (ready.status, ready.body["ready"], ready.body["sites"]["ru"]) == (503, False, False)
        assert databases(pg_server, ru) == set(), "a new database took the site's name"
        cli_put = cli("put", "profiles", "--subject", "citizenship=RU", "--field", "full_name=C", "--purpose", "x", "--json", "--config", str(config))  # fmt: skip
        assert_unavailable(cli_put)
        assert databases(pg_server, ru) == set()

        # An empty database of the same name, then one with a domicile store for "ru" made
        # by someone else (another creation id): neither is the site.
        admin(pg_server, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(ru)))
        r = srv.request("POST", RECORDS, RU_BODY)
        assert (r.status, r.body["site"]) == (503, "ru"), r.body
        assert srv.request("GET", "/readyz").status == 503
        impostor = open_site_store("ru", urls["ru"], create=True)
        impostor.close()
        r = srv.request("POST", RECORDS, RU_BODY)
        assert (r.status, r.body["site"]) == (503, "ru"), r.body
        assert srv.request("GET", "/readyz").status == 503
        with psycopg.connect(urls["ru"]) as conn:
            assert conn.execute("SELECT count(*) FROM records").fetchone() == (0,)
            assert conn.execute("SELECT count(*) FROM audit").fetchone() == (0,)
        admin(pg_server, sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(ru)))
    finally:
        if databases(pg_server, moved):
            rename(pg_server, moved, ru)

    assert len(refusals_for(pg_audit(urls["us"]), "ru")) >= 4
    assert srv.request("GET", "/readyz").status == 200
    r = srv.request("GET", f"/v1/records/{token}?purpose=profile_view&as_site=ru")
    assert (r.status, r.body["fields"]) == (200, ANNA)
    last = srv.request("POST", RECORDS, RU_BODY)
    assert last.status == 201, last.body.get("detail")


def pg_audit(url: str) -> list[dict[str, Any]]:
    """A PostgreSQL site's audit entries, read straight from its database."""
    with psycopg.connect(url) as conn:
        return [json.loads(p) for (p,) in conn.execute("SELECT payload FROM audit ORDER BY seq")]


# -- (c) a key store deleted ------------------------------------------------------------------


def test_a_deleted_key_store_makes_reads_unavailable_not_erased(
    deployment: Path, tmp_path: Path, served: Callable[..., Served]
) -> None:
    data = deployment.parent / "domicile-data"
    written = put_ru(deployment)
    assert written.code == 0, written.err
    token = written.json()["token"]
    srv = served(deployment)
    r = srv.request("POST", RECORDS, {**RU_BODY, "fields": {"full_name": "Boris B"}})
    assert r.status == 201  # the service has the Russian key store open now
    keys = data / "keys" / "ru.sqlite"
    move(keys, tmp_path / "keys-aside")  # gone from where the deployment keeps it

    got = cli("get", token, "--purpose", "profile_view", "--as-site", "ru", "--json", "--config", str(deployment))  # fmt: skip
    error = assert_unavailable(got)
    assert error["code"] == "site_unavailable"  # not key_destroyed: nobody erased Anna
    r = srv.request("GET", f"/v1/records/{token}?purpose=profile_view&as_site=ru")
    assert (r.status, r.body["code"], r.body["site"]) == (503, "site_unavailable", "ru"), r.body
    r = srv.request("POST", RECORDS, {**RU_BODY, "fields": {"full_name": "Clara C"}})
    assert (r.status, r.body["site"]) == (503, "ru"), r.body
    assert srv.request("GET", "/readyz").status == 503
    assert not list(keys.parent.glob("ru.sqlite*")), "a new, empty key store was created"
    assert len(refusals_for(sqlite_audit(data / "us.sqlite"), "ru")) >= 2

    move_back(tmp_path / "keys-aside", keys)
    r = srv.request("GET", f"/v1/records/{token}?purpose=profile_view&as_site=ru")
    assert (r.status, r.body["fields"]) == (200, ANNA)


# -- (d) a site's database swapped for another ------------------------------------------------


def test_a_site_database_swapped_for_another_sites_is_refused(
    deployment: Path, tmp_path: Path
) -> None:
    data = deployment.parent / "domicile-data"
    written = put_ru(deployment)
    assert written.code == 0, written.err
    token = written.json()["token"]
    de_before = (data / "de.sqlite").read_bytes()
    move(data / "ru.sqlite", tmp_path / "ru-aside")
    move(data / "de.sqlite", tmp_path / "de-aside")
    for f in (tmp_path / "de-aside").iterdir():  # Germany's database where Russia's was
        shutil.copy(f, data / f.name.replace("de.sqlite", "ru.sqlite"))
    for f in (tmp_path / "ru-aside").iterdir():  # and Russia's where Germany's was
        shutil.copy(f, data / f.name.replace("ru.sqlite", "de.sqlite"))

    error = assert_unavailable(put_ru(deployment, "boris@example.ru"))
    assert error["code"] == "store_mismatch"
    assert "belongs to site 'de'" in error["message"]
    got = cli("get", token, "--purpose", "profile_view", "--as-site", "ru", "--json", "--config", str(deployment))  # fmt: skip
    assert_unavailable(got)
    de_put = cli("put", "profiles", "--subject", "citizenship=DE", "--subject", "residence=DE", "--field", "full_name=Dieter D", "--purpose", "account_signup", "--json", "--config", str(deployment))  # fmt: skip
    assert_unavailable(de_put, "de")
    assert (data / "ru.sqlite").read_bytes() == de_before  # Germany's file took no write


def test_an_empty_database_with_the_right_site_id_but_another_creation_id_is_refused(
    deployment: Path, tmp_path: Path, served: Callable[..., Served]
) -> None:
    data = deployment.parent / "domicile-data"
    written = put_ru(deployment)
    assert written.code == 0, written.err
    srv = served(deployment)
    last = srv.request("POST", RECORDS, RU_BODY)
    assert last.status == 201, last.body.get("detail")
    move(data / "ru.sqlite", tmp_path / "aside")
    # A perfectly good domicile store for site "ru", made elsewhere: its own creation id.
    impostor = open_site_store("ru", f"sqlite:{data / 'ru.sqlite'}", create=True)
    impostor.close()

    error = assert_unavailable(put_ru(deployment, "boris@example.ru"))
    assert error["code"] == "store_mismatch"
    assert "another creation id" in error["message"]
    r = srv.request("POST", RECORDS, RU_BODY)  # the running service: it had the real one open
    assert (r.status, r.body["site"]) == (503, "ru"), r.body
    assert srv.request("GET", "/readyz").status == 503
    assert sqlite_audit(data / "ru.sqlite") == []  # the impostor took nothing
    with_records = cli("sites", "--json", "--config", str(deployment)).json()
    assert {r["id"]: r["healthy"] for r in with_records}["ru"] is False
