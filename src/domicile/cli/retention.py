"""``domicile retention``: what the configured retention periods destroy, and when.

``plan``, ``run --dry-run`` and ``acts`` only read: their stores are opened read-only and
nothing is written, not even the retention file when there is none yet.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import typer
from rich.markup import escape

from domicile.cli._output import console, emit_json, err_console, errors
from domicile.cli.vault import ConfigOpt, JsonOpt, vault
from domicile.errors import BadInput

retention_app = typer.Typer(
    help="Retention periods (collections' and fields' `retention:` in the configuration):"
    " what goes when, and its destruction with acts of destruction.",
    no_args_is_help=True,
)


def _as_of(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        day = dt.date.fromisoformat(value)
    except ValueError:
        raise BadInput("--as-of is a date", hint="give YYYY-MM-DD, e.g. 2030-01-01") from None
    return dt.datetime.combine(day, dt.time(), dt.UTC)


SiteOpt = typer.Option(
    None, "--site", help="Only this site (repeat for several; default: every site)."
)


@retention_app.command("plan")
def plan_cmd(
    as_of: str | None = typer.Option(
        None, "--as-of", help="Plan as of this date (YYYY-MM-DD) instead of now."
    ),
    site: list[str] | None = SiteOpt,
    config: str | None = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """What retention destroys now and later, per collection and site: counts of records
    and fields due, records kept by legal holds, the subjects whose due data a restriction
    keeps (with the request), the next date and a month-by-month schedule. Never values.
    Writes nothing."""
    from domicile.retention import plan

    with errors(as_json):
        when = _as_of(as_of)
    with vault(config, as_json, read_only=True) as d, errors(as_json):
        out = plan(d, now=when, sites=site or None)
    if as_json:
        emit_json(out)
        _unavailable(out)
        return
    console.print(f"retention as of {out['as_of'][:10]}")
    for row in out["collections"]:
        due = row["due"]
        rule = row["retention"] or "no record retention"
        console.print(
            f"[bold]{row['collection']}[/] at {row['site']} ({row['country']}), {rule}:"
            f" {row['records']} records; due now: {due['erase']} to erase,"
            f" {due['strip']} to lose {due['fields']} fields"
            + (f" ({due['restricted']} of them kept by a restriction)" if due["restricted"] else "")
            + f"; next {row['next'] or 'none'}",
            soft_wrap=True,
        )
        for name, r in row["field_retention"].items():
            console.print(f"  field {name}: {r}", soft_wrap=True)
        for h in row["holds"]:
            console.print(
                f"  hold: {escape(h['statute'])} keeps {', '.join(h['fields'])}"
                f" ({h['keep'] or 'while configured'}): {h['records_held']} records held",
                soft_wrap=True,
            )
        if row["schedule"]:
            later = ", ".join(f"{m}: {n}" for m, n in row["schedule"].items())
            console.print(f"  later, by month: {later}", soft_wrap=True)
    if not out["collections"]:
        console.print("no records under a retention period")
    for k in out["kept"]:
        console.print(
            f"kept at {k['site']}: {k['records']} records due of subject {k['subject']}"
            f" ({', '.join(k['collections'])}), restricted by request {k['request']} since"
            f" {k['since'][:10]}: kept as they are until the restriction is lifted",
            soft_wrap=True,
        )
    if out["without_retention"]:
        console.print(f"without retention: {', '.join(out['without_retention'])}")
    _unavailable(out)


@retention_app.command("run")
def run_cmd(
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Only say what would be destroyed; write nothing."
    ),
    site: list[str] | None = SiteOpt,
    config: str | None = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Destroy what is due: records by crypto-shredding (a subject left with nothing at a
    site loses its data key first), fields by sealing their record again without them
    where a legal hold keeps the rest. Every destruction is audited, and the run ends
    with a signed act of destruction (RKN Order 179), kept in DATA_DIR/retention.json.
    Safe to stop and run again: nothing is destroyed twice, and an act a stopped run did
    not make is made by the next. With --site, only those sites (and their act)."""
    from rich.progress import Progress, SpinnerColumn, TextColumn

    from domicile.retention import run

    bar = Progress(
        SpinnerColumn(), TextColumn("{task.description}"),
        console=err_console, transient=True, disable=as_json or dry_run,
    )  # fmt: skip
    tasks: dict[str, Any] = {}

    def progress(site: str, done: int) -> None:
        if site not in tasks:
            tasks[site] = bar.add_task(site)
        bar.update(tasks[site], description=f"{site}: {done} records destroyed")

    with bar, vault(config, as_json, read_only=dry_run) as d, errors(as_json):
        out = run(d, dry_run=dry_run, progress=progress, sites=site or None)
    if as_json:
        emit_json(out)
        _unavailable(out)
        return
    would = "would be " if dry_run else ""
    for s in out["sites"]:
        console.print(
            f"{s['site']}: {s['records_erased']} records {would}erased"
            f" ({s['keys_destroyed']} subject keys), {s['records_stripped']} records"
            f" {would}stripped of {s['fields_removed']} fields; {s['records_held']}"
            " records kept in part by a legal hold",
            soft_wrap=True,
        )
    if not out["sites"] and not out["unavailable"]:
        console.print("nothing is due")
    if out["act"]:
        console.print(f"act of destruction: {out['act']} (see `domicile retention acts`)")
    _unavailable(out)


def _unavailable(out: dict[str, Any]) -> None:
    """Exit 4 when a site could not be reached (after saying so; the others were done)."""
    from domicile.errors import ExitCode

    if out["unavailable"]:
        err_console.print(
            f"unavailable: {', '.join(out['unavailable'])}; run again when they are back",
            soft_wrap=True,
        )
        raise typer.Exit(ExitCode.UNAVAILABLE)


@retention_app.command("acts")
def acts_cmd(
    config: str | None = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """The signed acts of destruction the retention runs made. Writes nothing."""
    from domicile.config import load_config
    from domicile.retention.service import acts

    with errors(as_json):
        found = acts(load_config(config))
    if as_json:
        emit_json({"acts": found})
        return
    for a in found:
        body = a["act"]
        t = body["totals"]
        console.print(
            f"[bold]{body['id']}[/] {body['performed_at'][:19]}: {t['records']} records,"
            f" {t['keys_destroyed']} subject keys, {len(body['log_extract'])} audit entries,"
            f" signed by {', '.join(s['site'] for s in a['signatures'])}",
            soft_wrap=True,
        )
    if not found:
        console.print("no acts yet")
