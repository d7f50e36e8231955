"""``domicile scan --engine spark`` in local mode: the report equals the one-process scan's
(but its timing) on files made by the synthetic generator, split into parts as Spark writes
tables, and on a source whose phone numbers lack a country code and one of whose tables has
no key. Spark and its JVM start once for the file (some 20 s), each scan then takes a few
seconds; every run stops its session."""

from __future__ import annotations

import csv
import json
import random
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from domicile.cli.app import app
from domicile.discovery.synthetic import de_tax_id, generate, write_files

runner = CliRunner()


@pytest.fixture(scope="module", autouse=True)
def spark_runs() -> None:
    """The Spark test needs pyspark (the spark extra, in dev) and Java 17: without them it
    fails, it is never skipped."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        pytest.fail("pyspark is missing: pip install -e '.[dev]' (the spark extra)")
    if shutil.which("java") is None:
        pytest.fail("Spark needs a Java 17 runtime on the PATH (Debian: openjdk-17-jre-headless)")


def scan(source: Path, *more: str) -> dict[str, Any]:
    result = runner.invoke(app, ["scan", str(source), "--located-in", "US", "--json", *more])
    assert result.exit_code == 0, result.stdout + result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    report["stats"].pop("seconds")
    return report


def test_the_report_on_spark_equals_the_one_process_scan(tmp_path: Path) -> None:
    """One source, scanned once each way: generated tables as folders of three Parquet
    parts each (the order of rows across parts decides which subjects come first and which
    row references are listed), beside CSV files of numbers without a country code and a
    table without a key."""
    import pyarrow.parquet as pq

    data = generate(60, seed=5)
    flat = tmp_path / "flat"
    write_files(data, flat, "parquet")
    source = tmp_path / "source"
    for f in sorted(flat.iterdir()):
        table = pq.read_table(f)
        (source / f.stem).mkdir(parents=True)
        step = -(-table.num_rows // 3)
        for part in range(3):
            pq.write_table(table.slice(part * step, step), source / f.stem / f"part-{part}.parquet")
    national_tables(source)
    local = scan(source)
    on_spark = scan(source, "--engine", "spark", "--master", "local[2]")
    assert json.dumps(on_spark, ensure_ascii=False) == json.dumps(local, ensure_ascii=False)

    subjects = local["subjects"]
    assert {k: v for k, v in subjects.items() if k.startswith("customers:")} == data.subjects
    assert local["findings"], "the generator's people give findings in the US"
    assert subjects["clients:61"] == ["RU"]  # the column's other numbers fix Russia
    assert subjects["clients:62"] == ["DE"]  # a German tax id fixes Germany
    assert subjects["clients:63"] == []  # nothing fixes Germany
    # The visits have no key: their rows are named by their number.
    refs = {ref for f in local["findings"] for ref in f["row_refs"].get("visits", [])}
    assert refs
    assert all(ref.startswith("#") for ref in refs)


def national_tables(folder: Path) -> None:
    """Clients whose numbers lack a country code (read under what the column and the
    subject's tax ids fix), their tax ids, and visits (IP addresses) without a key."""
    rng = random.Random(21)
    phones = [f"+7 912 {rng.randint(100, 999)} {rng.randint(10, 99)} {rng.randint(10, 99)}" for _ in range(60)]  # fmt: skip
    phones += ["8 912 345-67-89", "(0)30 1234567", "(0)30 1234567", "06 12 34 56 78"]
    with (folder / "clients.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "tel", "order_no"])
        for i, tel in enumerate(phones, 1):
            w.writerow([i, tel, "8" + "".join(rng.choice("0123456789") for _ in range(10))])
    with (folder / "tax_ids.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["tid", "client", "tax"])
        for kid, client in enumerate((62, 64, 1, 2, 3), 1):
            w.writerow([kid, client, de_tax_id(rng)])
    with (folder / "visits.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["client", "ip"])
        for _ in range(3):
            for client in range(1, 41):
                w.writerow([client, f"77.88.55.{rng.randint(1, 254)}"])


def test_the_spark_engine_refuses_what_it_cannot_scan(tmp_path: Path) -> None:
    """Databases, an unknown engine and --master alone: one line, exit 2, no JVM."""
    for argv, words in (
        (["sqlite:///x.db", "--engine", "spark"], "reads files, not databases"),
        ([str(tmp_path), "--engine", "flink"], "no engine 'flink'"),
        ([str(tmp_path), "--master", "local[2]"], "--master goes with --engine spark"),
    ):
        result = runner.invoke(app, ["scan", *argv, "--located-in", "US"])
        assert result.exit_code == 2, result.stdout + result.stderr
        assert words in result.stderr
        assert result.stderr.count("\n") == 1


def test_without_java_spark_is_not_started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No Java runtime: one line saying so, exit 5, before Spark's launcher runs."""
    (tmp_path / "people.csv").write_text("id,mail\n1,anna@firm.de\n")
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    result = runner.invoke(app, ["scan", str(tmp_path), "--located-in", "US", "--engine", "spark"])
    assert result.exit_code == 5, result.stdout + result.stderr
    assert "no Java runtime" in result.stderr
    assert result.stderr.count("\n") == 1
