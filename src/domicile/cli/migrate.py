"""``domicile migrate plan|run|verify``: move the personal data a scan found into the
sites the law names, through the vault, and leave tokens in the source
(``domicile.discovery.migration``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from domicile.cli._output import console, emit_json, err_console, errors
from domicile.config import CONFIG_ENV
from domicile.errors import BadInput, ExitCode

migrate_app = typer.Typer(
    help="Move personal data a scan found into its home sites, leaving tokens behind.",
    no_args_is_help=True,
)

ConfigOpt = typer.Option(
    None, "--config", envvar=CONFIG_ENV, help="Configuration file (default ./domicile.yaml)."
)
JsonOpt = typer.Option(False, "--json", help="Print one JSON object.")
SourceOpt = typer.Option(
    None,
    "--source",
    help="The plan's source URL with its password (a plan keeps none); must be the same database.",
)


@contextmanager
def _vault(config: str | None, *, read_only: bool) -> Iterator[Any]:
    from domicile.access import cli_operator
    from domicile.vault import Domicile

    d = Domicile.open(config, operator=cli_operator(), read_only=read_only)
    try:
        yield d
    finally:
        d.close(checkpoint=not read_only)


def _bar(as_json: bool) -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )

    class Rate(TextColumn):
        def render(self, task: Any) -> Any:
            from rich.text import Text

            speed = task.finished_speed or task.speed
            return Text(f"{speed:,.0f} rows/s" if speed else "", style="progress.data.speed")

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TaskProgressColumn(), Rate(""), TimeRemainingColumn(),
        console=err_console, transient=True, disable=as_json,
    )  # fmt: skip


@migrate_app.command("plan")
def plan(
    source: str = typer.Argument(
        ..., help="Database URL: postgresql://, mysql://, sqlite:///FILE."
    ),
    collection: str = typer.Option(..., "--collection", help="Collection the records go into."),
    maps: list[str] | None = typer.Option(
        None,
        "--map",
        help="TABLE.COLUMN=FIELD (or COLUMN=FIELD); COLUMN= leaves it out. Repeatable.",
    ),
    located_in: str | None = typer.Option(
        None, "--located-in", help="Country the source is stored in."
    ),
    site: str | None = typer.Option(
        None, "--site", help="Or: where this site of the configuration is."
    ),
    legacy: str = typer.Option(
        "tokens", "--legacy", help="What the moved values become in the source: tokens or delete."
    ),
    batch: int = typer.Option(500, "--batch", min=1, max=100_000, help="Rows per transaction."),
    out: Path | None = typer.Option(None, "--out", help="Write the plan to FILE (.json or .yaml)."),
    config: str | None = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Propose a migration from a scan of SOURCE: columns to fields, subjects to sites.

    Reads only from the source and the vault. The plan is a file to read and edit before
    `migrate run`."""
    from domicile.cli.scan import _location
    from domicile.discovery.sources import require_extra

    with errors(as_json):
        require_extra()
        if out is None and not as_json:
            raise BadInput("where does the plan go? give --out FILE", hint="or --json to print it")
        from domicile.discovery.migration import make_plan, save_plan
        from domicile.discovery.migration.plan import new_plan_file

        if out is not None:
            new_plan_file(out)  # refused before the scan, not after it
        where, engine = _location(located_in, site, config)
        bar = _bar(as_json)
        tasks: dict[str, Any] = {}

        def tell(table: str, rows: int) -> None:
            if table not in tasks:
                tasks[table] = bar.add_task(f"scan {table}", total=None)
            bar.update(tasks[table], advance=rows)

        with _vault(config, read_only=True) as d, bar:
            p = make_plan(
                source, vault=d, collection=collection, located_in=where, engine=engine,
                maps=maps or (), legacy=legacy, batch_size=batch, progress=tell,
            )  # fmt: skip
        if out is not None:
            save_plan(p, out)
    data = p.to_dict()
    if as_json:
        emit_json(data)
        return
    console.rule(
        f"[bold]migration plan for {escape(p.source_description)} into {escape(p.collection)}"
    )
    table = Table(title="what moves")
    for col in ("table", "columns -> fields", "kept in the source"):
        table.add_column(col, overflow="fold")
    for t in p.tables.values():
        table.add_row(
            escape(t.name),
            escape(", ".join(f"{c} -> {f}" for c, f in t.map.items())),
            escape(", ".join(t.kept) or "-"),
        )
    console.print(table)
    dest = ", ".join(f"{s} {n}" for s, n in data["destinations"].items()) or "none"
    placed = sum(data["destinations"].values())
    console.print(f"subjects the findings name: {len(p.subjects):,}; to move: {placed:,} ({dest})")
    if data["unplaced"]:
        console.print(
            f"[yellow]{data['unplaced']:,} subjects no configured site may hold[/]: they stay"
        )
    console.print(f"legacy values become: {p.legacy}; {p.batch_size} rows per transaction")
    for note in p.notes:
        console.print(f"note: {escape(note)}", soft_wrap=True)
    console.print(
        f"plan written to {escape(str(out))}; next: domicile migrate run {escape(str(out))}"
    )


@migrate_app.command("run")
def run(
    plan_file: Path = typer.Argument(..., metavar="PLAN", help="The plan file."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Count what would move; write nothing."),
    source: str | None = SourceOpt,
    config: str | None = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Move the plan's rows through the vault and replace their values in the source.

    Batch by batch, each in a transaction of the source. Resumable: run it again after
    any interruption; nothing is lost or written twice."""
    from domicile.discovery.sources import require_extra

    with errors(as_json):
        require_extra()
        from domicile.discovery.migration import load_plan, open_planned_source
        from domicile.discovery.migration import run as run_plan

        p = load_plan(plan_file)
        bar = _bar(as_json)
        task = bar.add_task("dry run" if dry_run else "moving", total=None)
        with _vault(config, read_only=dry_run) as d:
            src = open_planned_source(p, source, writable=not dry_run, vault=d)
            try:
                with bar:
                    outcome = run_plan(
                        p, vault=d, source=src, dry_run=dry_run,
                        progress=lambda _t, n: bar.update(task, advance=n),
                        total=lambda n: bar.update(task, total=n),
                    )  # fmt: skip
            finally:
                src.close()
    data = outcome.to_dict()
    if as_json:
        emit_json(data)
        return
    verb = "would move" if dry_run else "moved"
    sites = ", ".join(f"{s} {n:,}" for s, n in data["sites"].items()) or "nothing"
    console.print(f"{verb} {data['moved']:,} rows ({sites}) in {data['seconds']} s")
    for t, c in data["tables"].items():
        counts = ", ".join(f"{k} {v:,}" for k, v in c.items() if v) or "nothing left to move"
        console.print("  " + escape(t) + ": " + counts)
    for reason, n in data["refused"].items():
        console.print(f"[yellow]{n:,} rows refused by the vault ({escape(reason)})[/]: they stay")
    if not dry_run:
        console.print(f"next: domicile migrate verify {escape(str(plan_file))}")


@migrate_app.command("verify")
def verify(
    plan_file: Path = typer.Argument(..., metavar="PLAN", help="The plan file."),
    source: str | None = SourceOpt,
    config: str | None = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Check a migration, reading only: no moved value remains in the source, every token
    resolves, the counts agree, the audit verifies. Exit 1 with the problems."""
    from domicile.discovery.sources import require_extra

    with errors(as_json):
        require_extra()
        from domicile.discovery.migration import load_plan, open_planned_source
        from domicile.discovery.migration import verify as verify_plan

        p = load_plan(plan_file)
        with _vault(config, read_only=True) as d:
            src = open_planned_source(p, source, writable=False, vault=d)
            try:
                report = verify_plan(p, vault=d, source=src)
            finally:
                src.close()
    if as_json:
        emit_json(report)
    else:
        sites = ", ".join(f"{s} {n:,}" for s, n in report["sites"].items()) or "none"
        if report["ok"]:
            console.print(
                f"[green]ok[/]: {report['moved']:,} rows moved ({sites}); every token resolves; the audit verifies"
            )
        else:
            console.print(
                f"[red]{len(report['problems'])} problem(s)[/] ({report['moved']:,} rows moved: {sites})"
            )
            for line in report["problems"][:50]:
                console.print(f"  {escape(line)}", soft_wrap=True)
            if len(report["problems"]) > 50:
                console.print(f"  ... and {len(report['problems']) - 50} more (--json lists all)")
        if report["refused"]:
            console.print(f"{report['refused']:,} rows refused by the vault stay in the source")
        if report["erased"]:
            console.print(
                f"{report['erased']:,} moved rows hold tokens of records erased since (the "
                "audit shows the erasure): they no longer open, as the erasure demands"
            )
        kept = ", ".join(f"{t}.{c}" for t, cols in report["kept_columns"].items() for c in cols)
        if kept:
            console.print(
                f"{report['kept_values']:,} values of moved rows stay in columns the plan keeps "
                f"({escape(kept)}): give them a field of the collection and plan again to move them",
                soft_wrap=True,
            )
    if not report["ok"]:
        raise typer.Exit(ExitCode.CHECK_FAILED)
