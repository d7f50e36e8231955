"""``domicile migrate`` against real sources (SQLite files, the machine's PostgreSQL):
plan, dry run, run, verify; a crash between the vault's commit and the source's; bad
input in one line without credentials. The SIGKILL campaign is in test_migrate_kill.py."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from domicile.cli.app import app
from domicile.discovery.migration import load_plan, open_planned_source
from domicile.discovery.migration import run as run_plan
from domicile.discovery.synthetic import Dataset, generate, write_database
from domicile.vault import Domicile

runner = CliRunner()
SUBJECTS = 60


def cli(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def cli_json(*args: str) -> dict[str, Any]:
    code, out, err = cli(*args, "--json")
    assert code == 0, out + err
    data: dict[str, Any] = json.loads(out)
    return data


def deployment(tmp: Path) -> str:
    code, out, err = cli("init", str(tmp / "dep"))
    assert code == 0, out + err
    return str(tmp / "dep" / "domicile.yaml")


def sqlite_source(tmp: Path, data: Dataset, name: str = "legacy.db") -> str:
    url = f"sqlite:///{tmp / name}"
    write_database(data, url)
    return url


def personal_values(data: Dataset) -> set[str]:
    t = data.tables["customers"]
    return {str(v) for r in t.rows for v in r[1:6] if v is not None and len(str(v)) > 3}


def digest_tree(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def customers(url: str) -> dict[int, tuple[Any, ...]]:
    db = sqlite3.connect(url.removeprefix("sqlite:///"))
    try:
        return {r[0]: r[1:] for r in db.execute("SELECT * FROM customers")}
    finally:
        db.close()


TENANT_SCHEMA = (
    """CREATE TABLE customers (tenant_id INTEGER NOT NULL, id INTEGER NOT NULL,
        fld_a TEXT, fld_b TEXT, fld_c TEXT, fld_d TEXT, fld_e TEXT, created TEXT,
        h TEXT, PRIMARY KEY (tenant_id, id))""",
    """CREATE TABLE kyc (kid INTEGER PRIMARY KEY, tenant_id INTEGER, c_ref INTEGER,
        x1 TEXT, x2 TEXT, x3 TEXT, x4 TEXT, x5 TEXT, x6 TEXT, x7 TEXT, x8 TEXT,
        x9 TEXT, FOREIGN KEY (tenant_id, c_ref) REFERENCES customers (tenant_id, id))""",
    """CREATE TABLE contacts (cid INTEGER PRIMARY KEY, tenant_id INTEGER, owner INTEGER,
        who TEXT, mail TEXT,
        FOREIGN KEY (tenant_id, owner) REFERENCES customers (tenant_id, id))""",
)


def write_tenants(url: str, data: Dataset, *, contacts: bool = True) -> None:
    """The customers of ``data`` under a composite key, (tenant_id, id), as a multi-tenant
    schema has them: ids repeat in every tenant. Their identity documents and contacts (a
    name and an e-mail address again) point to them by both columns (declared composite
    foreign keys)."""
    import sqlalchemy as sa

    customers = data.tables["customers"]
    rows = {
        "customers": [[*tenant_key(r[0]), *r[1:]] for r in customers.rows],
        "kyc": [[r[0], *tenant_key(r[1]), *r[2:]] for r in data.tables["kyc"].rows],
        "contacts": [[r[0], *tenant_key(r[0]), r[1], r[2]] for r in customers.rows]
        if contacts
        else [],
    }
    columns = {
        "customers": ["tenant_id", *customers.columns],
        "kyc": ["kid", "tenant_id", *data.tables["kyc"].columns[1:]],
        "contacts": ["cid", "tenant_id", "owner", "who", "mail"],
    }
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        for ddl in TENANT_SCHEMA:
            conn.exec_driver_sql(ddl)
        for name, table_rows in rows.items():
            if table_rows:
                t = sa.table(name, *(sa.column(c) for c in columns[name]))
                conn.execute(
                    t.insert(), [dict(zip(columns[name], r, strict=True)) for r in table_rows]
                )
    engine.dispose()


def tenant_source(
    tmp: Path, data: Dataset, name: str = "tenants.db", *, contacts: bool = True
) -> str:
    """``write_tenants`` into a new SQLite file; its URL."""
    url = f"sqlite:///{tmp / name}"
    write_tenants(url, data, contacts=contacts)
    return url


def tenant_key(i: int) -> tuple[int, int]:
    """The (tenant_id, id) of the generator's customer ``i``: three tenants, ids from 1 in
    each."""
    return (i - 1) % 3 + 1, (i - 1) // 3 + 1


def tenant_customers(url: str) -> dict[tuple[int, int], tuple[Any, ...]]:
    db = sqlite3.connect(url.removeprefix("sqlite:///"))
    try:
        return {(r[0], r[1]): r[2:] for r in db.execute("SELECT * FROM customers")}
    finally:
        db.close()


def check_moved(
    config: str,
    data: Dataset,
    rows: dict[Any, tuple[Any, ...]],
    original: dict[Any, tuple[Any, ...]] | None = None,
    other_records: int = 0,
) -> int:
    """Every moved row holds one token, of a record holding the row's original values; the
    vault holds exactly as many records as rows were moved (none twice). ``original``: the
    rows as written, by key (by default the generator's customers, by id); ``other_records``:
    records the vault holds of other tables' rows."""
    if original is None:
        original = {r[0]: tuple(r[1:]) for r in data.tables["customers"].rows}
    d = Domicile.open(config)
    try:
        moved = 0
        for key, row in rows.items():
            if not str(row[0]).startswith("dom1_"):
                assert row == original[key]  # untouched, never half
                continue
            assert len(set(row[:4])) == 1  # every mapped column: the same token
            assert row[4:] == original[key][4:]  # the columns the plan keeps
            site, _ = d.tokens.read(row[0])
            got = d.get(row[0], purpose="migration_check", as_site=site).fields
            assert got["full_name"] == original[key][0]
            assert got["email"] == original[key][1]
            assert got["city"] == original[key][3]
            moved += 1
        assert sum(d.store(s.id).count() for s in d.config.sites) == moved + other_records
        return moved
    finally:
        d.close()


def make_plan(url: str, config: str, out: Path, *more: str) -> dict[str, Any]:
    code, stdout, err = cli(
        "migrate", "plan", url, "--collection", "profiles", "--located-in", "US",
        "--out", str(out), "--config", config, *more,
    )  # fmt: skip
    assert code == 0, stdout + err
    return json.loads(json.dumps(load_plan(out).to_dict()))


def test_plan_dry_run_run_verify_on_sqlite(tmp_path: Path) -> None:
    data = generate(SUBJECTS, seed=5)
    url = sqlite_source(tmp_path, data)
    config = deployment(tmp_path)
    plan_file = tmp_path / "plan.yaml"
    plan = make_plan(url, config, plan_file)
    assert plan["tables"]["customers"]["map"] == {
        "fld_a": "full_name", "fld_b": "email", "fld_c": "phone", "fld_d": "city",
    }  # fmt: skip
    assert plan["tables"]["customers"]["kept"] == ["fld_e"]
    assert set(plan["tables"]) == {"customers"}  # the others have no field of profiles
    assert plan["destinations"]["ru"] > 0
    assert sum(plan["destinations"].values()) + plan["unplaced"] == len(plan["subjects"])
    text = plan_file.read_text(encoding="utf-8")
    assert not [v for v in personal_values(data) if v in text]
    assert "password" not in text

    before = (digest_tree(tmp_path / "dep"), (tmp_path / "legacy.db").read_bytes())
    dry = cli_json("migrate", "run", str(plan_file), "--dry-run", "--config", config)
    assert dry["dry_run"] is True
    assert dry["sites"] == plan["destinations"]
    assert (digest_tree(tmp_path / "dep"), (tmp_path / "legacy.db").read_bytes()) == before
    assert not list(tmp_path.glob("plan.yaml.*"))

    code, out, _ = cli("migrate", "verify", str(plan_file), "--config", config)
    assert code == 1
    assert "not moved yet" in out

    done = cli_json("migrate", "run", str(plan_file), "--config", config)
    assert done["sites"] == plan["destinations"]
    again = cli_json("migrate", "run", str(plan_file), "--config", config)
    assert again["moved"] == 0
    moved = check_moved(config, data, customers(url))
    assert moved == done["moved"] == sum(plan["destinations"].values())

    before_verify = digest_tree(tmp_path)
    report = cli_json("migrate", "verify", str(plan_file), "--config", config)
    assert digest_tree(tmp_path) == before_verify  # verify writes nothing anywhere
    assert report["ok"] is True, report["problems"]
    assert report["moved"] == moved
    assert report["sites"] == plan["destinations"]


def test_composite_key_table_moves_by_all_its_columns(tmp_path: Path) -> None:
    """Customers keyed by (tenant_id, id), ids repeating in each tenant: the plan names
    them by both columns, the run pages, rewrites and journals each row by both, a second
    run moves nothing, verify is clean and names a row by both."""
    from domicile.discovery.migration import Journal

    data = generate(SUBJECTS, seed=5)
    url = tenant_source(tmp_path, data)
    original = {tenant_key(r[0]): tuple(r[1:]) for r in data.tables["customers"].rows}
    config = deployment(tmp_path)
    plan_file = tmp_path / "plan.yaml"
    plan = make_plan(url, config, plan_file, "--batch", "7")
    assert plan["tables"]["customers"]["key"] == ["tenant_id", "id"]
    # contacts reach their subjects through both columns of the key
    assert plan["tables"]["contacts"]["via"] == [
        {"column": ["tenant_id", "owner"], "table": "customers", "key": ["tenant_id", "id"]}
    ]
    planned = sum(plan["destinations"].values())
    assert planned > 0
    assert all(re.fullmatch(r"customers:[1-3]/\d+", sid) for sid in plan["subjects"])
    # the same id in two tenants is two subjects (generator: customer 1 is RU, 2 is CN)
    assert (
        plan["subjects"]["customers:1/1"]["residency"]
        != plan["subjects"]["customers:2/1"]["residency"]
    )
    done = cli_json("migrate", "run", str(plan_file), "--config", config)
    assert done["tables"]["customers"]["move"] == done["tables"]["contacts"]["move"] == planned
    assert cli_json("migrate", "run", str(plan_file), "--config", config)["moved"] == 0
    moved = check_moved(config, data, tenant_customers(url), original, other_records=planned)
    assert moved == planned
    journal = Journal.open_existing(load_plan(plan_file).journal_path)
    assert journal is not None
    keys = journal.rows("customers")
    journal.close()
    assert len(keys) == planned
    assert all(re.fullmatch(r"[1-3]/\d+", k) for k in keys)
    # every contact of a moved subject holds tokens, every other is as it was
    db = sqlite3.connect(url.removeprefix("sqlite:///"))
    contacts = {
        (r[0], r[1]): r[2:] for r in db.execute("SELECT tenant_id, owner, who, mail FROM contacts")
    }
    db.close()
    moved_keys = {k for k, r in tenant_customers(url).items() if str(r[0]).startswith("dom1_")}
    for k, (who, mail) in contacts.items():
        assert str(who).startswith("dom1_") == str(mail).startswith("dom1_") == (k in moved_keys)
    report = cli_json("migrate", "verify", str(plan_file), "--config", config)
    assert report["ok"] is True, report["problems"]
    assert report["moved"] == 2 * planned  # customers and their contacts

    # verify names a row by its whole key; a row of one tenant is not taken for another's
    rows = tenant_customers(url)
    t, i = next(k for k, r in sorted(rows.items()) if str(r[0]).startswith("dom1_"))
    db = sqlite3.connect(url.removeprefix("sqlite:///"))
    with db:
        db.execute(
            "UPDATE customers SET fld_a = ? WHERE tenant_id = ? AND id = ?",
            (original[(t, i)][0], t, i),
        )
    db.close()
    code, out, err = cli("migrate", "verify", str(plan_file), "--config", config)
    assert code == 1, out + err
    assert f"customers row {t}/{i}: fld_a still hold values beside tokens" in out
    assert out.count("beside tokens") == 1


def test_composite_key_table_moves_from_postgresql(
    pg_database: Callable[[str], str], tmp_path: Path
) -> None:
    """The same on PostgreSQL, where a batch's rows are locked (``FOR UPDATE``) and paged
    by the key as a row value: all moved once, a second run moves nothing, verify clean."""
    import psycopg

    data = generate(30, seed=5)
    url = pg_database("tenants")
    write_tenants(url, data)
    config = deployment(tmp_path)
    plan_file = tmp_path / "plan.yaml"
    plan = make_plan(url, config, plan_file, "--batch", "4")
    planned = sum(plan["destinations"].values())
    assert plan["tables"]["customers"]["key"] == ["tenant_id", "id"]
    assert planned > 4
    done = cli_json("migrate", "run", str(plan_file), "--config", config)
    assert done["tables"]["customers"]["move"] == done["tables"]["contacts"]["move"] == planned
    assert cli_json("migrate", "run", str(plan_file), "--config", config)["moved"] == 0
    with psycopg.connect(url) as conn:
        rows = {
            (r[0], r[1]): tuple(r[2:]) for r in conn.execute("SELECT * FROM customers").fetchall()
        }
    original = {tenant_key(r[0]): tuple(r[1:]) for r in data.tables["customers"].rows}
    assert check_moved(config, data, rows, original, other_records=planned) == planned
    report = cli_json("migrate", "verify", str(plan_file), "--config", config)
    assert report["ok"] is True, report["problems"]
    assert report["moved"] == 2 * planned


def test_crash_between_vault_and_source_commit_is_resumed(tmp_path: Path) -> None:
    """The vault has committed a batch, the source has not: the next run finds the records
    by their ids and only rewrites the rows."""
    data = generate(SUBJECTS, seed=6)
    url = sqlite_source(tmp_path, data)
    config = deployment(tmp_path)
    plan_file = tmp_path / "plan.json"
    make_plan(url, config, plan_file, "--batch", "4")
    plan = load_plan(plan_file)

    class Crash(BaseException):
        pass

    d = Domicile.open(config)
    real = d.put_many
    calls = 0

    def put_then_die(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        out = real(*args, **kwargs)
        calls += 1
        if calls == 3:
            raise Crash  # after the vault's commit, before the source's
        return out

    d.put_many = put_then_die  # type: ignore[method-assign]
    src = open_planned_source(plan, None, writable=True, vault=d)
    with pytest.raises(Crash):
        run_plan(plan, vault=d, source=src)
    src.close()
    d.close()
    rows = customers(url)
    tokens = sum(1 for r in rows.values() if str(r[0]).startswith("dom1_"))
    d = Domicile.open(config)
    records = sum(d.store(s.id).count() for s in d.config.sites)
    d.close()
    assert 0 < tokens < records  # the third batch is in the vault only
    code, out, err = cli("migrate", "run", str(plan_file), "--config", config)
    assert code == 0, out + err
    moved = check_moved(config, data, customers(url))
    assert moved == sum(1 for s in plan.subjects.values() if s["site"])
    report = cli_json("migrate", "verify", str(plan_file), "--config", config)
    assert report["ok"] is True, report["problems"]


def test_verify_finds_what_is_wrong_without_printing_values(tmp_path: Path) -> None:
    data = generate(SUBJECTS, seed=8)
    url = sqlite_source(tmp_path, data)
    config = deployment(tmp_path)
    plan_file = tmp_path / "plan.yaml"
    make_plan(url, config, plan_file)
    assert cli("migrate", "run", str(plan_file), "--config", config)[0] == 0
    rows = customers(url)
    moved = sorted(k for k, r in rows.items() if str(r[0]).startswith("dom1_"))
    a, b, c = moved[:3]
    original = {r[0]: tuple(r[1:]) for r in data.tables["customers"].rows}
    db = sqlite3.connect(url.removeprefix("sqlite:///"))
    with db:
        # a value back beside its token; another row's token; a moved e-mail in a kept column
        db.execute("UPDATE customers SET fld_a = ? WHERE id = ?", (original[a][0], a))
        db.execute("UPDATE customers SET fld_b = ? WHERE id = ?", (rows[c][0], b))
        db.execute("UPDATE customers SET fld_e = ? WHERE id = ?", (original[c][1], c))
    db.close()
    code, out, err = cli("migrate", "verify", str(plan_file), "--config", config)
    assert code == 1, out + err
    assert f"customers row {a}: fld_a still hold values beside tokens" in out
    assert f"customers row {b}: fld_b holds the token of another record" in out
    assert f"customers row {c}: fld_e still holds the email of a moved record" in out
    assert not [v for v in personal_values(data) if v in out + err]


def test_postgresql_source_with_delete(pg_database: Callable[[str], str], tmp_path: Path) -> None:
    import psycopg

    data = generate(SUBJECTS, seed=9)
    url = pg_database("migrate")
    write_database(data, url)
    config = deployment(tmp_path)
    plan_file = tmp_path / "plan.yaml"
    with_password = url.replace("postgres@", "postgres:s3cretpw@")  # trust: any password
    assert with_password != url
    plan = make_plan(with_password, config, plan_file, "--legacy", "delete", "--batch", "7")
    assert "s3cretpw" not in plan_file.read_text()
    done = cli_json("migrate", "run", str(plan_file), "--source", with_password, "--config", config)
    assert done["moved"] == sum(plan["destinations"].values()) > 0
    with psycopg.connect(url) as conn:
        cleared = conn.execute(
            "SELECT count(*) FROM customers WHERE fld_a IS NULL AND fld_b IS NULL"
        ).fetchone()
    assert cleared is not None
    assert cleared[0] == done["moved"]
    report = cli_json("migrate", "verify", str(plan_file), "--config", config)
    assert report["ok"] is True, report["problems"]
    assert report["moved"] == done["moved"]


# --- bad input ------------------------------------------------------------------------------


def one_line(code: int, out: str, err: str, expected: int, *secrets_: str) -> str:
    assert code == expected, out + err
    message = (out + err).strip()
    assert "Traceback" not in message
    assert message.startswith("error:"), message
    assert len(message.splitlines()) <= 2, message
    for s in secrets_:
        assert s not in message
    return message


def test_unreachable_source_is_exit_4(tmp_path: Path) -> None:
    config = deployment(tmp_path)
    code, out, err = cli(
        "migrate", "plan", "postgresql://mover:s3cretpw@127.0.0.1:1/crm",
        "--collection", "profiles", "--located-in", "US", "--out", str(tmp_path / "p.yaml"),
        "--config", config,
    )  # fmt: skip
    assert "does not answer" in one_line(code, out, err, 4, "s3cretpw", "mover")
    assert not (tmp_path / "p.yaml").exists()


def test_wrong_password_is_exit_2(tmp_path: Path) -> None:
    import pymysql

    try:
        admin = pymysql.connect(host="127.0.0.1", port=3306, user="root", connect_timeout=5)
    except pymysql.Error as exc:
        pytest.fail(f"MariaDB does not answer at 127.0.0.1:3306: {exc}", pytrace=False)
    name = f"domicile_migrate_{hashlib.sha256(str(tmp_path).encode()).hexdigest()[:8]}"
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
    try:
        url = f"mysql://root@127.0.0.1:3306/{name}"
        write_database(generate(30, seed=3), url)
        config = deployment(tmp_path)
        plan_file = tmp_path / "plan.yaml"
        make_plan(url, config, plan_file)
        bad = url.replace("root@", "root:wr0ngpw@")
        code, out, err = cli("migrate", "run", str(plan_file), "--source", bad, "--config", config)
        assert "credentials" in one_line(code, out, err, 2, "wr0ngpw")
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE {name}")
        admin.close()


def test_missing_plan_and_plan_for_another_source(tmp_path: Path) -> None:
    config = deployment(tmp_path)
    code, out, err = cli("migrate", "run", str(tmp_path / "nope.yaml"), "--config", config)
    assert "no plan file" in one_line(code, out, err, 2)
    code, out, err = cli("migrate", "verify", str(tmp_path / "nope.yaml"), "--config", config)
    one_line(code, out, err, 2)

    url = sqlite_source(tmp_path, generate(30, seed=4))
    plan_file = tmp_path / "plan.yaml"
    make_plan(url, config, plan_file)
    other = sqlite_source(tmp_path, generate(30, seed=4), "other.db")
    code, out, err = cli("migrate", "run", str(plan_file), "--source", other, "--config", config)
    assert "another source" in one_line(code, out, err, 2)
    # the same file, its tables changed since the plan
    db = sqlite3.connect(url.removeprefix("sqlite:///"))
    with db:
        db.execute("ALTER TABLE customers ADD COLUMN extra TEXT")
    db.close()
    code, out, err = cli("migrate", "verify", str(plan_file), "--config", config)
    assert "another source" in one_line(code, out, err, 2)
    # not a plan at all
    (tmp_path / "bad.yaml").write_text("just: text\n")
    code, out, err = cli("migrate", "run", str(tmp_path / "bad.yaml"), "--config", config)
    assert "not a migration plan" in one_line(code, out, err, 2)


def test_files_and_unknown_map_are_bad_input(tmp_path: Path) -> None:
    config = deployment(tmp_path)
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    code, out, err = cli(
        "migrate", "plan", str(tmp_path / "x.csv"), "--collection", "profiles",
        "--located-in", "US", "--out", str(tmp_path / "p.yaml"), "--config", config,
    )  # fmt: skip
    assert "not files" in one_line(code, out, err, 2)
    url = sqlite_source(tmp_path, generate(30, seed=4))
    code, out, err = cli(
        "migrate", "plan", url, "--collection", "profiles", "--located-in", "US",
        "--map", "customers.nope=email", "--out", str(tmp_path / "p.yaml"), "--config", config,
    )  # fmt: skip
    assert "no column" in one_line(code, out, err, 2)
    assert not (tmp_path / "p.yaml").exists()


def test_vault_writes_records_under_the_ids_it_is_given(tmp_path: Path) -> None:
    from domicile.errors import BadInput

    d = Domicile.open(deployment(tmp_path))
    try:
        item = {"subject": ["citizenship=DE"], "fields": {"full_name": "Erika Muster"}}
        rid = "0" * 12 + "ab" * 10
        [r] = d.put_many("profiles", [item], purpose="t", record_ids=[rid])
        site, got = d.tokens.read(r.token)
        assert got == rid
        with pytest.raises(BadInput):
            d.put_many("profiles", [item], purpose="t", record_ids=["not-hex"])
        with pytest.raises(Exception):  # noqa: B017, PT011 - the store refuses a second record
            d.put_many("profiles", [item], purpose="t", record_ids=[rid])
        assert d.store(site).count() == 1
    finally:
        d.close()


def test_a_second_run_of_the_same_plan_waits_for_none(tmp_path: Path) -> None:
    from domicile.discovery.migration import Journal

    url = sqlite_source(tmp_path, generate(30, seed=4))
    config = deployment(tmp_path)
    plan_file = tmp_path / "plan.yaml"
    make_plan(url, config, plan_file)
    held = Journal(load_plan(plan_file).journal_path)  # as a run in progress holds it
    try:
        code, out, err = cli("migrate", "run", str(plan_file), "--config", config)
        assert "another `migrate run`" in one_line(code, out, err, 2)
    finally:
        held.close()
    assert cli("migrate", "run", str(plan_file), "--config", config)[0] == 0


def test_mariadb_source_plan_run_verify(tmp_path: Path) -> None:
    """The whole migration on the machine's MariaDB: plan, run in small batches (every
    moved row holds tokens of a record with its values), a second run moves nothing,
    verify is clean."""
    import pymysql

    try:
        admin = pymysql.connect(host="127.0.0.1", port=3306, user="root", connect_timeout=5)
    except pymysql.Error as exc:
        pytest.fail(f"MariaDB does not answer at 127.0.0.1:3306: {exc}", pytrace=False)
    name = f"domicile_migrate_{hashlib.sha256(str(tmp_path).encode()).hexdigest()[:8]}"
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
    try:
        data = generate(30, seed=17)
        url = f"mysql://root@127.0.0.1:3306/{name}"
        write_database(data, url)
        config = deployment(tmp_path)
        plan_file = tmp_path / "plan.yaml"
        plan = make_plan(url, config, plan_file, "--batch", "9")
        assert set(plan["tables"]) == {"customers"}
        done = cli_json("migrate", "run", str(plan_file), "--config", config)
        assert done["moved"] == sum(plan["destinations"].values()) > 0
        assert cli_json("migrate", "run", str(plan_file), "--config", config)["moved"] == 0
        conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", database=name)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT * FROM customers")
                rows = {int(r[0]): tuple(r[1:]) for r in cur.fetchall()}
        finally:
            conn.close()
        assert check_moved(config, data, rows) == done["moved"]
        report = cli_json("migrate", "verify", str(plan_file), "--config", config)
        assert report["ok"] is True, report["problems"]
        assert report["moved"] == done["moved"]
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE {name}")
        admin.close()
