"""``domicile scan SOURCE``: find personal data in an existing database or files, whose
people it belongs to, and what the law says about holding it where the source is."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import typer
from rich.markup import escape
from rich.table import Table

from domicile.cli._output import console, err_console, errors
from domicile.config import CONFIG_ENV
from domicile.errors import BadInput


def _location(located_in: str | None, site: str | None, config: str | None) -> tuple[str, Any]:
    """The country the source is in, and the engine to decide with."""
    from domicile.countries import country
    from domicile.packs import load_packs
    from domicile.policy import PolicyEngine

    if located_in and site:
        raise BadInput("give --located-in or --site, not both", hint="one says where the source is")
    if located_in:
        return country(located_in, what="--located-in"), PolicyEngine()
    if site:
        from domicile.config import load_config

        cfg = load_config(config)
        try:
            where = cfg.site(site).country
        except KeyError:
            raise BadInput(
                f"no site {site!r} in the configuration",
                hint=f"use one of: {', '.join(s.id for s in cfg.sites)}",
            ) from None
        return where, PolicyEngine(load_packs(cfg.pack_paths))
    raise BadInput(
        "where is the source? give --located-in CC",
        hint="e.g. --located-in US, or --site ID for a site of the configuration",
    )


ENGINES = ("local", "spark")


def _engine(name: str, master: str | None, source: str) -> bool:
    """Whether the scan runs on Spark; refuses what Spark cannot scan, before anything
    starts."""
    if name not in ENGINES:
        raise BadInput(f"no engine {name!r}", hint=f"use one of: {', '.join(ENGINES)}")
    if name != "spark":
        if master is not None:
            raise BadInput("--master goes with --engine spark", hint="add --engine spark")
        return False
    if "://" in source or source.startswith("sqlite:"):
        raise BadInput(
            "the spark engine reads files, not databases",
            hint="give a folder of CSV, Parquet or JSON-lines files, or leave out --engine",
        )
    from domicile.discovery.spark import require_extra as require_spark

    require_spark()
    return True


def register(app: typer.Typer) -> None:
    @app.command()
    def scan(
        source: str = typer.Argument(
            ...,
            help="A database URL (postgresql://, mysql://, sqlite:///FILE) or a path to CSV, Parquet or JSON-lines files or a folder of them.",
        ),
        located_in: str | None = typer.Option(
            None, "--located-in", help="Country the source is stored in (two letters)."
        ),
        site: str | None = typer.Option(
            None, "--site", help="Or: the source is stored where this site of the configuration is."
        ),
        config: str | None = typer.Option(
            None, "--config", envvar=CONFIG_ENV, help="Configuration file, with --site."
        ),
        tables: list[str] | None = typer.Option(
            None, "--table", help="Scan only this table (repeatable)."
        ),
        sample: int = typer.Option(
            1000, "--sample", min=10, help="Rows per table sampled to classify columns."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
        out: Path | None = typer.Option(
            None, "--out", help="Write the JSON object to FILE (as --json prints it; 0600)."
        ),
        engine_name: str = typer.Option(
            "local",
            "--engine",
            help="local: this process (DuckDB for files); spark: the full pass as a Spark job (files only; the spark extra).",
        ),
        master: str | None = typer.Option(
            None,
            "--master",
            help="With --engine spark: local[N] or a cluster's master URL (default: what spark-submit set, else local[*]).",
        ),
    ) -> None:
        """Find personal data in a database or files, whose it is, and what the law says.

        Classifies the columns of a source, resolves each subject's countries from all
        linked rows, and reports what the law forbids about holding them there. Reads
        only. Exit 0 with the report (findings or none), 2 for bad input, 4 if the source
        (or, with --engine spark, the Spark master) does not answer, 5 if Spark finds no
        Java runtime."""
        from rich.progress import Progress, SpinnerColumn, TextColumn

        from domicile.discovery.sources import require_extra

        with errors(as_json):
            spark = _engine(engine_name, master, source)
            require_extra()
            from domicile.discovery import open_source
            from domicile.discovery.scan import scan_to

            where, engine = _location(located_in, site, config)
            bar = Progress(
                SpinnerColumn(), TextColumn("{task.description}"),
                console=err_console, transient=True, disable=as_json,
            )  # fmt: skip
            tasks: dict[str, Any] = {}
            done: dict[str, int] = {}

            def tell(table: str, rows: int) -> None:
                done[table] = done.get(table, 0) + rows
                if table not in tasks:
                    tasks[table] = bar.add_task(table)
                bar.update(tasks[table], description=f"{table}: {done[table]:,} rows")

            with _report_file(out) as fh:
                if spark:
                    from domicile.discovery import spark as on_spark

                    session = on_spark.session(master)  # the JVM starts before the bar
                    try:
                        files = on_spark.SparkSource(session, Path(source))
                        with bar:
                            summary = scan_to(
                                fh, files, located_in=where, engine=engine,
                                tables=tables or (), sample=sample,
                                gather=on_spark.gather(files, where, tell),
                            )  # fmt: skip
                    finally:
                        session.stop()
                else:
                    src = open_source(source)
                    try:
                        with bar:
                            summary = scan_to(
                                fh, src, located_in=where, engine=engine,
                                tables=tables or (), sample=sample, progress=tell,
                            )  # fmt: skip
                    finally:
                        src.close()
                if as_json and out is None:
                    fh.seek(0)
                    shutil.copyfileobj(fh, sys.stdout)
            if as_json and out is not None:  # the file is in place first, then printed
                with out.open(encoding="utf-8") as written:
                    shutil.copyfileobj(written, sys.stdout)
        if not as_json:
            _human(summary, out)


@contextlib.contextmanager
def _report_file(out: Path | None) -> Iterator[TextIO]:
    """A file the report is written to as it is made (it can hold millions of subjects,
    never held whole): a new file beside ``out``, put in its place once the report is
    whole (an existing file is replaced only then; a failed scan leaves nothing), or, with
    no ``out``, a nameless temporary file (``--json`` prints it)."""
    if out is None:
        with tempfile.TemporaryFile("w+", encoding="utf-8") as fh:
            yield fh
        return
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent)
    except OSError:
        raise BadInput(f"cannot write {out}", hint="check the folder and its permissions") from None
    try:
        with os.fdopen(fd, "w+", encoding="utf-8") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except OSError:
        raise BadInput(f"cannot write {out}", hint="check the folder and its permissions") from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def _human(report: dict[str, Any], out: Path | None) -> None:
    """The summary ``scan_to`` returns, for people: the report without its lists of
    subjects, with the number of subjects per country."""
    st = report["stats"]
    console.rule(f"[bold]scan of {escape(report['source'])}, as stored in {report['located_in']}")
    table = Table(title="columns holding personal data")
    for col in ("column", "category", "confidence", "evidence"):
        table.add_column(col, overflow="fold")
    none = 0
    for name, c in report["columns"].items():
        if c["category"] is None:
            none += 1
            continue
        table.add_row(escape(name), c["category"], f"{c['confidence']:.2f}", escape(c["evidence"]))
    console.print(table)
    console.print(f"{none} other columns hold no personal data the recognizers know.")
    for link in report["links"]:
        how = "declared" if link["declared"] else f"inferred, {link['containment']:.0%} contained"
        console.print(f"link {escape(link['from'])} -> {escape(link['to'])} ({how})")
    by_country: dict[str, int] = report["countries"]
    shown = ", ".join(f"{cc} {n}" for cc, n in sorted(by_country.items(), key=lambda kv: -kv[1]))
    console.print(
        f"{st['subjects']:,} subjects in {', '.join(report['subject_tables']) or 'no table'}: {shown or 'none'}"
    )
    if not report["findings"]:
        console.print(
            f"[green]no findings[/]: the packs allow holding this data in {report['located_in']}"
        )
    for f in report["findings"]:
        colour = "red" if f["outcome"] == "deny" else "yellow"
        cites = "; ".join(
            c["title"] + (f" {c['pinpoint']}" if c["pinpoint"] else "") for c in f["citations"][:2]
        )
        weak = f" ({f['uncertain_subjects']:,} on weak evidence)" if f["uncertain_subjects"] else ""
        console.print(
            f"[{colour}]{f['outcome']}[/] {f['rule']} ({f['jurisdiction']}): "
            f"{f['subjects']:,} subjects{weak}, {f['rows']:,} rows"
        )
        console.print(f"    why: {escape(f['reason'])}", soft_wrap=True)
        console.print(f"    law: {escape(cites)}", soft_wrap=True, style="dim")
    console.print(f"{st['rows']:,} rows, {st['values']:,} values in {st['seconds']} s")
    if out is not None:
        console.print(f"full report (JSON) in {escape(str(out))}")
