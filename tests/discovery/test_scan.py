"""``domicile scan`` against real sources (SQLite, the machine's PostgreSQL and MariaDB,
CSV, Parquet and JSON-lines files) made by the synthetic generator, whose truth says what
the scan must find; read-only proofs; bad input in one line."""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import sys
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from domicile.cli.app import app
from domicile.discovery import open_source
from domicile.discovery.synthetic import Dataset, generate, write_database, write_files

runner = CliRunner()
MARIADB = "mysql://root@127.0.0.1:3306"
SUBJECTS = 120
CITY = "Москва"


@cache
def dataset() -> Dataset:
    return generate(SUBJECTS, seed=11)


def scan(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["scan", *args])
    return result.exit_code, result.stdout, result.stderr


def scan_json(source: str, *more: str) -> dict[str, Any]:
    code, out, err = scan(source, "--located-in", "US", "--json", *more)
    assert code == 0, out + err
    data: dict[str, Any] = json.loads(out)
    return data


def personal_values(data: Dataset) -> set[str]:
    """Every value of a personal column, to prove none reaches the report. Cities are left
    out: the packs' citations name capitals."""
    out = set()
    for t in data.tables.values():
        for i, column in enumerate(t.columns):
            if data.columns[f"{t.name}.{column}"] in (None, "user.contact.address.city"):
                continue
            out.update(str(r[i]) for r in t.rows if r[i] is not None and len(str(r[i])) > 3)
    return out


def check_report(report: dict[str, Any], data: Dataset, *, declared: bool) -> None:
    assert {"columns", "subjects", "links", "findings", "stats"} <= set(report)
    wrong = {
        k: (v["category"], data.columns[k])
        for k, v in report["columns"].items()
        if v["category"] != data.columns[k]
    }
    assert wrong == {}
    assert report["subjects"] == data.subjects
    links = {(link["from"], link["to"]) for link in report["links"]}
    assert links == {
        ("kyc.c_ref", "customers.id"),
        ("orders.cust", "customers.id"),
        ("payments.o", "orders.oid"),
        ("sessions.u", "customers.id"),
    }
    assert all(link["declared"] is declared for link in report["links"])
    findings = {f["rule"]: f for f in report["findings"]}
    ru = findings["ru.localization.2025"]
    assert ru["outcome"] == "deny"
    assert ru["jurisdiction"] == "RU"
    assert ru["citations"]
    russians = {k for k, v in data.subjects.items() if v == ["RU"]}
    assert russians <= set(ru["subject_refs"])
    assert ru["subjects"] == len(ru["subject_refs"])
    # Rows are referred to by primary key only.
    assert set(ru["row_refs"]) <= {"customers", "kyc", "payments", "sessions"}
    assert all(ref.isdigit() for refs in ru["row_refs"].values() for ref in refs)
    assert report["stats"]["rows"] == sum(len(t.rows) for t in data.tables.values()) - len(
        data.tables["products"].rows
    )
    text = json.dumps(report, ensure_ascii=False)
    leaked = [v for v in personal_values(data) if v in text]
    assert leaked == []


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- sources ---------------------------------------------------------------------------------


def test_sqlite_scan_finds_the_truth_and_writes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "crm.db"
    write_database(dataset(), f"sqlite:///{db}")
    before = digest(db), db.stat().st_mtime_ns
    report = scan_json(f"sqlite:///{db}")
    check_report(report, dataset(), declared=True)
    assert (digest(db), db.stat().st_mtime_ns) == before
    assert not (tmp_path / "crm.db-journal").exists()
    assert not (tmp_path / "crm.db-wal").exists()


def test_sqlite_source_connection_refuses_writes(tmp_path: Path) -> None:
    db = tmp_path / "crm.db"
    write_database(generate(20), f"sqlite:///{db}")
    src: Any = open_source(f"sqlite:///{db}")
    try:
        with pytest.raises(Exception, match=r"readonly|read-only|attempt to write"):
            src._conn.exec_driver_sql("DELETE FROM customers")
    finally:
        src.close()


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_file_scan_infers_links_and_finds_the_truth(tmp_path: Path, fmt: str) -> None:
    folder = tmp_path / "export"
    write_files(dataset(), folder, fmt)
    before = {p.name: digest(p) for p in folder.iterdir()}
    report = scan_json(str(folder))
    check_report(report, dataset(), declared=False)
    assert all(link["containment"] >= 0.9 for link in report["links"])
    assert {p.name: digest(p) for p in folder.iterdir()} == before


def test_postgresql_scan_is_read_only(pg_database: Callable[[str], str]) -> None:
    url = pg_database("scan")
    write_database(dataset(), url)
    report = scan_json(url)
    check_report(report, dataset(), declared=True)
    src: Any = open_source(url)
    try:
        with pytest.raises(Exception, match="read-only"):
            src._conn.exec_driver_sql("DELETE FROM customers")
    finally:
        src.close()


@pytest.fixture
def mariadb_url() -> Iterator[str]:
    import pymysql

    try:
        admin = pymysql.connect(host="127.0.0.1", port=3306, user="root", connect_timeout=5)
    except pymysql.Error as exc:
        pytest.fail(f"MariaDB does not answer at 127.0.0.1:3306: {exc}", pytrace=False)
    name = f"domicile_scan_{secrets.token_hex(4)}"
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
    try:
        yield f"{MARIADB}/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE {name}")
        admin.close()


def test_mariadb_scan_is_read_only(mariadb_url: str) -> None:
    write_database(dataset(), mariadb_url)
    report = scan_json(mariadb_url)
    check_report(report, dataset(), declared=True)
    src: Any = open_source(mariadb_url)
    try:
        with pytest.raises(Exception, match="READ ONLY"):
            src._conn.exec_driver_sql("DELETE FROM customers")
    finally:
        src.close()


def test_table_option_sample_and_out(tmp_path: Path) -> None:
    db = tmp_path / "crm.db"
    write_database(dataset(), f"sqlite:///{db}")
    out = tmp_path / "report.json"
    code, stdout, _ = scan(
        f"sqlite:///{db}", "--located-in", "DE", "--table", "customers", "--table", "kyc",
        "--sample", "50", "--out", str(out),
    )  # fmt: skip
    assert code == 0
    report = json.loads(out.read_text())
    assert {k.partition(".")[0] for k in report["columns"]} == {"customers", "kyc"}
    assert report["located_in"] == "DE"
    # Human output: readable lines, no Python reprs.
    assert "ru.localization.2025" in stdout
    assert "subjects" in stdout
    assert "{'" not in stdout
    assert str(out) in stdout.replace("\n", "")


def test_out_is_exactly_what_json_prints_and_the_report_in_memory(tmp_path: Path) -> None:
    """``--out`` writes the report as it is made: byte for byte what ``--json`` prints, and
    what ``json.dumps`` makes of the report held whole (timings aside); a finding's
    subjects, spooled to the ledger meanwhile, come back in order. A scan that fails
    leaves an existing ``--out`` file as it was, and no other file."""
    import io
    import re

    from domicile.discovery import run_scan
    from domicile.discovery.scan import scan_to
    from domicile.policy import PolicyEngine

    db = tmp_path / "crm.db"
    write_database(dataset(), f"sqlite:///{db}")
    out = tmp_path / "report.json"
    code, printed, err = scan(f"sqlite:///{db}", "--located-in", "US", "--json", "--out", str(out))
    assert code == 0, err
    written = out.read_text(encoding="utf-8")

    def untimed(text: str) -> str:
        return re.sub(r'"seconds": [0-9.]+', '"seconds": 0', text)

    assert untimed(written) == untimed(printed)
    assert out.stat().st_mode & 0o777 == 0o600
    engine = PolicyEngine()
    src = open_source(f"sqlite:///{db}")
    try:
        whole = run_scan(src, located_in="US", engine=engine)
        streamed = io.StringIO()
        scan_to(streamed, src, located_in="US", engine=engine)
    finally:
        src.close()
    dumped = json.dumps(whole, ensure_ascii=False, indent=2) + "\n"
    assert untimed(streamed.getvalue()) == untimed(dumped) == untimed(written)
    ru = next(f for f in whole["findings"] if f["rule"] == "ru.localization.2025")
    assert len(ru["subject_refs"]) == ru["subjects"] > 0
    order = list(whole["subjects"])
    assert ru["subject_refs"] == sorted(ru["subject_refs"], key=order.index)

    code, _, _ = scan(f"sqlite:///{db}", "--located-in", "US", "--table", "nope", "--out", str(out))
    assert code == 2
    assert out.read_text(encoding="utf-8") == written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crm.db", "report.json"]


def test_lazy_json_reads_as_json_dumps() -> None:
    """Lazy objects and arrays, empty or nested, at any depth, beside ordinary values."""
    import io

    from domicile.discovery.stream import LazyArray, LazyObject, materialize, write

    def make() -> Any:
        return {
            "a": LazyObject(iter([("x", ["RU"]), ("y", []), ("z", {"k": LazyArray(iter([1]))})])),
            "b": LazyArray(iter([])),
            "c": LazyObject(iter([])),
            "d": [LazyArray(iter(["ё", {"n": None}])), {}, [], 1.5, True],
            "e": 'plain "text"\n',
        }

    buf = io.StringIO()
    write(make(), buf)
    assert buf.getvalue() == json.dumps(materialize(make()), ensure_ascii=False, indent=2)


def test_site_of_the_configuration_gives_the_location(tmp_path: Path) -> None:
    db = tmp_path / "crm.db"
    write_database(generate(30), f"sqlite:///{db}")
    config = tmp_path / "domicile.yaml"
    config.write_text(
        "environment_id: default\ndata_dir: data\ndefault_site: ru\nsites:\n"
        "  - {id: ru, country: RU, location: {provider: P, city: Moscow, address: A},"
        " backend: 'sqlite:data/ru.sqlite'}\n"
        "collections:\n  profiles:\n    fields:\n      email: {category: user.contact.email}\n"
    )
    code, out, err = scan(f"sqlite:///{db}", "--site", "ru", "--config", str(config), "--json")
    assert code == 0, out + err
    report = json.loads(out)
    assert report["located_in"] == "RU"
    assert "ru.localization.2025" not in {f["rule"] for f in report["findings"]}


# --- bad input -------------------------------------------------------------------------------


def one_line_error(code: int, out: str, err: str, expected: int, *secrets_: str) -> str:
    assert code == expected, out + err
    message = (out + err).strip()
    assert "Traceback" not in message
    assert len(message.splitlines()) == 1 or message.startswith("error:"), message
    for s in secrets_:
        assert s not in message
    return message


def test_unreachable_server_is_exit_4_without_credentials() -> None:
    code, out, err = scan("postgresql://scanner:s3cretpw@127.0.0.1:1/crm", "--located-in", "US")
    msg = one_line_error(code, out, err, 4, "s3cretpw", "scanner")
    assert "does not answer" in msg


def test_wrong_password_is_exit_2_without_credentials(mariadb_url: str) -> None:
    url = mariadb_url.replace("root@", "root:wr0ngpw@")
    code, out, err = scan(url, "--located-in", "US")
    msg = one_line_error(code, out, err, 2, "wr0ngpw")
    assert "credentials" in msg


def test_missing_database_is_exit_2(pg_server: Any) -> None:
    code, out, _ = scan(
        "postgresql://postgres@127.0.0.1:5432/no_such_db_here", "--located-in", "US", "--json"
    )
    assert code == 2
    assert json.loads(out)["error"]["code"] == "bad_source"


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda d: (d / "a.csv").mkdir(), "cannot read"),
        (lambda d: (d / "a.parquet").write_bytes(b"not parquet" * 10), "cannot be read as Parquet"),
        (lambda d: (d / "a.csv").write_bytes(b""), "is empty"),
        (
            lambda d: (d / "a.csv").write_bytes(b"a,b\n" + CITY.encode() + b",1\ncaf\xe9,2\n"),
            "not UTF-8",
        ),
        (lambda d: (d / "a.txt").write_text("x"), "no CSV, Parquet or JSON-lines files"),
    ],
)
def test_bad_files_are_one_line_exit_2(
    tmp_path: Path, make: Callable[[Path], None], words: str
) -> None:
    make(tmp_path)
    code, out, err = scan(str(tmp_path), "--located-in", "US")
    msg = one_line_error(code, out, err, 2, CITY, "caf")
    assert words in msg


def test_empty_tables_and_unknown_table(tmp_path: Path) -> None:
    db = tmp_path / "empty.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE people (id INTEGER PRIMARY KEY, email TEXT)")
    code, out, err = scan(f"sqlite:///{db}", "--located-in", "US")
    assert "empty" in one_line_error(code, out, err, 2)
    code, out, err = scan(f"sqlite:///{db}", "--located-in", "US", "--table", "nope")
    assert "no table 'nope'" in one_line_error(code, out, err, 2)
    code, out, err = scan(f"sqlite:///{db}")
    assert "--located-in" in one_line_error(code, out, err, 2)


def test_binary_columns_and_mixed_encodings_are_read_not_fatal(tmp_path: Path) -> None:
    db = tmp_path / "mixed.db"
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TABLE people (id INTEGER PRIMARY KEY, photo BLOB, mail TEXT, note TEXT)"
        )
        for i in range(40):
            conn.execute(
                "INSERT INTO people VALUES (?, ?, ?, CAST(? AS TEXT))",
                (i, bytes([i, 255, 0]), f"p{i}@firm{i}.de", b"caf\xe9 " + str(i).encode()),
            )
    report = scan_json(f"sqlite:///{db}")
    assert report["columns"]["people.photo"]["category"] is None
    assert report["columns"]["people.photo"]["evidence"] == "binary values are not read"
    assert report["columns"]["people.mail"]["category"] == "user.contact.email"
    assert report["columns"]["people.note"]["category"] is None
    assert report["subjects"]["people:7"] == ["DE"]


def test_without_the_extra_the_command_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "duckdb", None)
    code, out, err = scan("sqlite:///x.db", "--located-in", "US")
    msg = one_line_error(code, out, err, 2)
    assert "pip install 'domicile[scan]'" in msg


def test_inferred_links_are_checked_on_the_whole_column(tmp_path: Path) -> None:
    """A sample of payments.o (order ids 1..50) fits the customers' keys too; the whole
    column (1..120) fits only the orders'."""
    data = generate(60, seed=4)
    write_files(data, tmp_path, "csv")
    report = scan_json(str(tmp_path), "--sample", "50")
    assert {"from": "payments.o", "to": "orders.oid", "declared": False, "containment": 1.0} in (
        report["links"]
    )
    assert report["subjects"] == data.subjects


def test_bench_scan_reports_rates_accuracy_and_ratios() -> None:
    result = runner.invoke(app, ["bench", "scan", "--subjects", "60", "--sample", "50", "--json"])
    assert result.exit_code == 0, result.stdout
    data = json.loads(result.stdout)
    assert set(data["per_second"]) == {"scan_sqlite", "scan_parquet", "baseline_all_regex"}
    assert set(data["ratios"]) >= {"scan_sqlite_vs_baseline_speed", "scan_vs_baseline_macro_f1"}
    for name in ("sqlite", "parquet"):
        assert data["scan"][name]["accuracy"]["macro_f1"] >= 0.9
        assert data["scan"][name]["subjects_exact"] >= 0.95
    # The baseline flags decoys (order numbers, timestamps) the validators leave alone.
    assert data["baseline"]["accuracy"]["macro_f1"] < data["scan"]["sqlite"]["accuracy"]["macro_f1"]


def test_a_folder_of_parts_is_one_table(tmp_path: Path) -> None:
    """Partitioned files, as Spark or DuckDB write them: customers/part-0.parquet, ..."""
    import duckdb

    data = generate(60, seed=9)
    flat = tmp_path / "flat"
    write_files(data, flat, "parquet")
    parted = tmp_path / "parted"
    parted.mkdir()
    for f in flat.iterdir():
        (parted / f.stem).mkdir()
        con = duckdb.connect()
        con.execute(
            f"COPY (SELECT * FROM read_parquet('{f}')) TO '{parted / f.stem}' "
            "(FORMAT parquet, PER_THREAD_OUTPUT true)"
        )
        con.close()
        assert list((parted / f.stem).iterdir())
    report = scan_json(str(parted))
    assert report["subjects"] == data.subjects
    assert {k: v["category"] for k, v in report["columns"].items()} == data.columns


def test_file_keys_prefer_the_tables_own_id(tmp_path: Path) -> None:
    """customer_id is unique in this export too; order_id names the orders."""
    (tmp_path / "customers.csv").write_text(
        "customer_id,mail\n" + "".join(f"{i},p{i}@firm{i}.de\n" for i in range(1, 41))
    )
    (tmp_path / "orders.csv").write_text(
        "customer_id,order_id,total\n" + "".join(f"{i},{1000 + i},{i}.50\n" for i in range(1, 41))
    )
    report = scan_json(str(tmp_path))
    assert report["links"] == [
        {
            "from": "orders.customer_id",
            "to": "customers.customer_id",
            "declared": False,
            "containment": 1.0,
        }
    ]
    assert report["subjects"]["customers:7"] == ["DE"]


def test_national_numbers_are_evidence_only_where_something_fixes_their_country(
    tmp_path: Path,
) -> None:
    """Numbers without a country code, read under the country the column's other numbers,
    the subject's documents, or --located-in fix; never alone; order numbers stay none."""
    import random

    from domicile.discovery.synthetic import de_tax_id

    rng = random.Random(21)
    db = tmp_path / "crm.db"
    phones = [f"+7 912 {rng.randint(100, 999)} {rng.randint(10, 99)} {rng.randint(10, 99)}" for _ in range(60)]  # fmt: skip
    phones += [
        "8 912 345-67-89",  # 61: the column's numbers are Russian -> RU
        "(0)30 1234567",  # 62: a German tax id fixes Germany -> DE
        "(0)30 1234567",  # 63: nothing fixes Germany -> nothing
        "8 000 000-00-00",  # 64: no valid number anywhere -> nothing
        "06 12 34 56 78",  # 65: a German tax id; valid in Germany (not Russia, not the US)
    ]
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE clients (id INTEGER PRIMARY KEY, tel TEXT, order_no TEXT)")
        conn.execute(
            "CREATE TABLE kyc (kid INTEGER PRIMARY KEY, client INTEGER REFERENCES clients(id), tax TEXT)"
        )
        for i, tel in enumerate(phones, 1):
            order = "8" + "".join(rng.choice("0123456789") for _ in range(10))
            conn.execute("INSERT INTO clients VALUES (?, ?, ?)", (i, tel, order))
        for kid, client in enumerate((62, 65, 1, 2, 3), 1):
            conn.execute("INSERT INTO kyc VALUES (?, ?, ?)", (kid, client, de_tax_id(rng)))
    report = scan_json(f"sqlite:///{db}")
    assert report["columns"]["clients.tel"]["category"] == "user.contact.phone_number"
    assert report["columns"]["clients.order_no"]["category"] is None
    subjects = report["subjects"]
    assert subjects["clients:61"] == ["RU"]
    assert subjects["clients:62"] == ["DE"]
    assert subjects["clients:63"] == []
    assert subjects["clients:64"] == []
    assert subjects["clients:65"] == ["DE"]
    assert subjects["clients:1"] == ["DE", "RU"]

    # A column of Russian national numbers alone: a phone column where the source is in
    # Russia (and its people Russian); in Germany nothing fixes Russia, and it is none.
    only = tmp_path / "only.db"
    with sqlite3.connect(only) as conn:
        conn.execute("CREATE TABLE people (id INTEGER PRIMARY KEY, tel TEXT)")
        for i in range(1, 31):
            conn.execute("INSERT INTO people VALUES (?, ?)", (i, f"8 912 345-{i:02d}-{i:02d}"))
    code, out, err = scan(f"sqlite:///{only}", "--located-in", "RU", "--json")
    assert code == 0, out + err
    in_russia = json.loads(out)
    # (A few of these numbers also pass an 11-digit checksum and are not counted.)
    assert in_russia["columns"]["people.tel"]["category"] == "user.contact.phone_number"
    assert in_russia["columns"]["people.tel"]["national"] >= 27
    assert set(map(tuple, in_russia["subjects"].values())) == {("RU",)}
    code, out, err = scan(f"sqlite:///{only}", "--located-in", "DE", "--json")
    assert code == 0, out + err
    assert json.loads(out)["columns"]["people.tel"]["category"] is None


# --- composite keys --------------------------------------------------------------------------


def composite_source() -> tuple[dict[str, list[list[Any]]], dict[str, list[str]]]:
    """Accounts keyed by (tenant_id, user_id), user ids repeating in every tenant; orders
    keyed by (tenant_id, order_id) and linked to them by (tenant_id, user_id); payments
    linked to orders by (tenant_id, order_id). Each account's e-mail domain says RU or FR;
    tenant 2's payments come from German bank accounts. Truth: the subjects' countries."""
    import random

    from domicile.discovery.synthetic import iban

    rng = random.Random(31)
    rows: dict[str, list[list[Any]]] = {"accounts": [], "orders": [], "payments": []}
    truth: dict[str, list[str]] = {}
    pid = 0
    for tenant in (1, 2, 3):
        order = 0
        for user in range(1, 21):
            cc = "ru" if user % 2 else "fr"
            rows["accounts"].append([tenant, user, f"u{user}.t{tenant}@firm{user % 5}.{cc}"])
            countries = {cc.upper()}
            for _ in range(2):
                order += 1
                rows["orders"].append([tenant, order, user, f"{10 * (order % 3)}.00"])
                pid += 1
                acct = iban(rng, "DE") if tenant == 2 else None
                rows["payments"].append([pid, tenant, order, acct])
                if acct:
                    countries.add("DE")
            truth[f"accounts:{tenant}/{user}"] = sorted(countries)
    return rows, truth


COMPOSITE_LINKS = {
    ("orders.(tenant_id, user_id)", "accounts.(tenant_id, user_id)"),
    ("payments.(tenant_id, order_id)", "orders.(tenant_id, order_id)"),
}


def test_composite_keys_declared_in_sqlite_carry_residency(tmp_path: Path) -> None:
    rows, truth = composite_source()
    db = tmp_path / "tenants.db"
    with sqlite3.connect(db) as conn:
        conn.executescript(
            """
            CREATE TABLE accounts (tenant_id INTEGER, user_id INTEGER, email TEXT,
                PRIMARY KEY (tenant_id, user_id));
            CREATE TABLE orders (tenant_id INTEGER, order_id INTEGER, user_id INTEGER,
                total TEXT, PRIMARY KEY (tenant_id, order_id),
                FOREIGN KEY (user_id, tenant_id) REFERENCES accounts (user_id, tenant_id));
            CREATE TABLE payments (pid INTEGER PRIMARY KEY, tenant_id INTEGER,
                order_id INTEGER, acct TEXT,
                FOREIGN KEY (tenant_id, order_id) REFERENCES orders (tenant_id, order_id));
            """
        )
        for table, values in rows.items():
            marks = ", ".join("?" * len(values[0]))
            conn.executemany(f"INSERT INTO {table} VALUES ({marks})", values)
    report = scan_json(f"sqlite:///{db}")
    assert {(link["from"], link["to"]) for link in report["links"]} == COMPOSITE_LINKS
    assert all(link["declared"] for link in report["links"])
    assert report["subject_tables"] == ["accounts"]
    assert report["subjects"] == truth
    # Rows are referred to by their composite key.
    fr = {f["rule"]: f for f in report["findings"]}
    refs = [r for f in fr.values() for r in f["row_refs"].get("payments", [])]
    assert all(r.isdigit() for r in refs)


def test_composite_keys_inferred_in_csv_files_carry_residency(tmp_path: Path) -> None:
    rows, truth = composite_source()
    heads = {
        "accounts": "tenant_id,user_id,email",
        "orders": "tenant_id,order_id,user_id,total",
        "payments": "pid,tenant_id,order_id,acct",
    }
    for table, values in rows.items():
        lines = [",".join("" if v is None else str(v) for v in r) for r in values]
        (tmp_path / f"{table}.csv").write_text(heads[table] + "\n" + "\n".join(lines) + "\n")
    report = scan_json(str(tmp_path))
    links = {(link["from"], link["to"]): link for link in report["links"]}
    assert set(links) == COMPOSITE_LINKS
    link = links[("orders.(tenant_id, user_id)", "accounts.(tenant_id, user_id)")]
    assert (link["columns"], link["to_columns"], link["containment"]) == (
        ["tenant_id", "user_id"], ["tenant_id", "user_id"], 1.0,
    )  # fmt: skip
    assert report["subjects"] == truth


# --- the ledger on disk ----------------------------------------------------------------------


def test_small_batches_give_the_same_report_and_the_ledger_is_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each subject's evidence, row counts and first row references are gathered on disk
    batch by batch: batches of 7 rows (a subject's rows spread over many) give the same
    report as batches of 5000, and the ledger's folder is gone after the scan."""
    import tempfile

    from domicile.discovery import run_scan
    from domicile.policy import PolicyEngine

    db = tmp_path / "crm.db"
    write_database(dataset(), f"sqlite:///{db}")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    engine = PolicyEngine()
    reports = []
    for size in (5000, 7):
        src = open_source(f"sqlite:///{db}")
        try:
            report = run_scan(src, located_in="US", engine=engine, batch_size=size, sample=300)
        finally:
            src.close()
        report["stats"].pop("seconds")
        reports.append(json.dumps(report, ensure_ascii=False))
        assert list(scratch.iterdir()) == []
    assert reports[0] == reports[1]
    report = json.loads(reports[0])
    assert report["subjects"] == dataset().subjects
    ru = next(f for f in report["findings"] if f["rule"] == "ru.localization.2025")
    # Every Russian's two orders' payments are counted, three references at most each.
    assert 0 < len(ru["row_refs"]["payments"]) <= 3 * ru["subjects"]


def test_a_killed_scans_ledger_is_removed_by_the_next_scan_not_a_running_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scan killed by SIGKILL leaves its ledger's folder; the next scan removes it, and
    leaves the folder of a ledger still open (its lock held), another user's files and
    folders by other names alone."""
    import os
    import signal
    import subprocess
    import tempfile
    import time

    from domicile.discovery import run_scan
    from domicile.discovery.ledger import Ledger
    from domicile.policy import PolicyEngine

    db = tmp_path / "crm.db"
    write_database(generate(800, seed=3), f"sqlite:///{db}")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch)}
    left: list[Path] = []
    for _ in range(3):  # the scan may finish before it is caught at work: try again
        proc = subprocess.Popen(
            [sys.executable, "-c", "from domicile.cli.app import main; main()", "scan",
             f"sqlite:///{db}", "--located-in", "US", "--json"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            if list(scratch.glob("domicile-scan-*/ledger.sqlite")):
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.002)
        proc.wait(timeout=30)
        left = list(scratch.glob("domicile-scan-*"))
        if proc.returncode == -signal.SIGKILL and left:
            break
    assert proc.returncode == -signal.SIGKILL, "the scan was never caught at work"
    assert left  # the gathering's ledger, and the findings' spool if it was made yet
    other = scratch / "domicile-scanner-notes"  # another name, same start: not a ledger
    other.mkdir()
    (scratch / "domicile-scan-file").write_text("a file, not a ledger's folder")
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    running = Ledger()  # a scan at work: its lock is held
    try:
        src = open_source(f"sqlite:///{db}")
        try:
            run_scan(src, located_in="US", engine=PolicyEngine(), sample=50, tables=["customers"])
        finally:
            src.close()
        assert not any(p.exists() for p in left)
        assert running._dir.exists()
        assert other.exists()
    finally:
        running.close()
    # (a folder still being made when the kill came, before its lock, waits an hour)
    kept = sorted(p.name for p in scratch.iterdir() if not p.name.startswith(".domicile-scan"))
    assert kept == ["domicile-scan-file", other.name]


# --- how keys are written ----------------------------------------------------------------


def test_key_text_writes_each_type_one_way() -> None:
    """Where ``str`` and the recognizers' ``text`` disagree, the key is written one way:
    bytes as hex, a number alike from an integer, an integral float or a decimal, dates in
    ISO form; a composite key escapes its separator, so two keys never read the same."""
    import datetime as dt
    from decimal import Decimal

    from domicile.discovery.keys import cursor_json, cursor_values, key_text

    assert key_text([b"\x01\xff"]) == "0x01ff" != str(b"\x01\xff")
    assert key_text([5]) == key_text([5.0]) == key_text([Decimal("5.00")]) == "5"
    assert key_text([Decimal("1001.50")]) == "1001.5"
    assert key_text([dt.datetime(2024, 3, 1, 9, 30)]) == "2024-03-01T09:30:00"
    assert key_text([" ab "]) == " ab "  # a key is the value as stored, spaces and all
    assert key_text([None]) is None
    assert key_text([1, None]) is None  # a composite key with an empty part names no row
    assert key_text([dt.date(2024, 3, 1), "x/1"]) == "2024-03-01/x\\/1"
    assert key_text(["a/b", "c"]) != key_text(["a", "b/c"])
    for values in ([b"\x00k"], [Decimal("1.50"), dt.date(2024, 1, 2)], ["x", 3]):
        assert cursor_values(cursor_json(values), len(values)) == tuple(values)


def test_keys_of_every_type_link_rows_in_scan_and_plan(pg_database: Callable[[str], str]) -> None:
    """Subjects keyed by bytes, by a decimal and by (a date, text with a slash), each with
    identity documents in a table that points to them: the documents reach their subjects
    (the links' keys are written as the rows' own), the report names each subject by
    ``key_text`` of its key, and a migration plan names the same rows the same way."""
    import datetime as dt
    from decimal import Decimal

    import psycopg

    from domicile.discovery.keys import key_text
    from domicile.discovery.migration.plan import Step, TablePlan
    from domicile.discovery.migration.rows import subject_of
    from domicile.discovery.synthetic import ru_inn

    rng = __import__("random").Random(4)
    url = pg_database("keys")
    keys: dict[str, list[tuple[Any, ...]]] = {
        "a": [(bytes([i, 255 - i]),) for i in range(30)],
        "b": [(Decimal(f"{1000 + i}.50"),) for i in range(30)],
        "c": [(dt.date(2024, 1, 1 + i % 3), f"x/{i}") for i in range(30)],
    }
    kinds = {"a": ["bytea"], "b": ["numeric(12,2)"], "c": ["date", "text"]}
    with psycopg.connect(url) as conn:
        for t, cols in kinds.items():
            names = [f"k{j}" for j in range(len(cols))]
            typed = ", ".join(f"{n} {c}" for n, c in zip(names, cols, strict=True))
            ref = ", ".join(names)
            conn.execute(f"CREATE TABLE {t}_people ({typed}, email text, PRIMARY KEY ({ref}))")
            conn.execute(
                f"CREATE TABLE {t}_docs (id int PRIMARY KEY, {typed}, inn text, "
                f"FOREIGN KEY ({ref}) REFERENCES {t}_people ({ref}))"
            )
            marks = ", ".join(["%s"] * len(cols))
            for i, k in enumerate(keys[t]):
                conn.execute(
                    f"INSERT INTO {t}_people VALUES ({marks}, %s)", (*k, f"u{i}@gmail.com")
                )
                conn.execute(f"INSERT INTO {t}_docs VALUES (%s, {marks}, %s)", (i, *k, ru_inn(rng)))
    report = scan_json(url)
    for t, ks in keys.items():
        names = tuple(f"k{j}" for j in range(len(ks[0])))
        expected = {f"{t}_people:{key_text(k)}" for k in ks}
        got = {sid: cc for sid, cc in report["subjects"].items() if sid.startswith(f"{t}_")}
        assert set(got) == expected
        assert all(cc == ["RU"] for cc in got.values()), got  # the documents reached them
        people = TablePlan(f"{t}_people", names, {})
        docs = TablePlan(f"{t}_docs", ("id",), {}, [Step(names, f"{t}_people", names)])
        for k in ks:
            row = dict(zip(names, k, strict=True))
            assert subject_of(people, row, []) in expected
            assert subject_of(docs, {"id": 0, **row}, []) == subject_of(people, row, [])
