"""``domicile policy calendar`` and ``domicile policy impact``: law that changes.

``calendar`` lists the dates on which the packs in force change their effect; ``impact``
decides the deployment's actual flows on a future (or past) day and lists those whose
outcome changes. Both only read.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from domicile.cli._output import console, emit_json, err_console, errors
from domicile.cli.policy import PackOpt
from domicile.cli.vault import ConfigOpt, JsonOpt, vault
from domicile.errors import BadInput
from domicile.policy import parse_date

_COLOURS = {"allow": "green", "escalate": "yellow", "deny": "red"}


def calendar(
    since: str | None = typer.Option(None, "--from", help="YYYY-MM-DD: only from this day."),
    until: str | None = typer.Option(None, "--to", help="YYYY-MM-DD: only up to this day."),
    only: list[str] | None = typer.Option(None, "--only", help="Pack id; repeatable."),
    pack: list[str] | None = PackOpt,
    as_json: bool = JsonOpt,
) -> None:
    """The dates on which a rule's effect changes, for the packs in force: rules and
    wordings, transfer routes, adequacy lists, deadlines and penalties, with citations."""
    from domicile.packs.changes import WAITING_NOTE, law_calendar
    from domicile.packs.loader import load_packs

    with errors(as_json):
        start = parse_date(since, "--from") if since else None
        end = parse_date(until, "--to") if until else None
        if start and end and end < start:
            raise BadInput("--to is before --from", hint="give --from the earlier day")
        packs = load_packs(pack or [])
        unknown = sorted(set(only or ()) - {lp.id for lp in packs})
        if unknown:
            raise BadInput(
                "no pack with that id", hint="`domicile policy list` shows the packs in force"
            )
        changes = law_calendar(packs, since=start, until=end, only=only or ())
    if as_json:
        emit_json(
            {
                "from": start,
                "to": end,
                "changes": [c.to_dict() for c in changes],
                "not_listed": WAITING_NOTE,
            }
        )
        return
    if not changes:
        console.print("No change of the law in that period.")
    day: dt.date | None = None
    for c in changes:
        if c.date != day:
            day = c.date
            console.print(f"\n[bold]{day.isoformat()}[/]")
        console.print(f"  {c.pack:<4} {escape(c.rule)}: {escape(c.what)}", soft_wrap=True)
        if c.citations:
            console.print(f"       [dim]{escape(str(c.citations[0]))}[/]", soft_wrap=True)
    console.print(f"\n{len(changes)} changes. Not listed: {WAITING_NOTE}.", soft_wrap=True)


def impact(
    on: str = typer.Option(..., "--on", help="YYYY-MM-DD: the day to decide the flows on."),
    baseline: str | None = typer.Option(
        None, "--baseline", help="YYYY-MM-DD: the day to compare with (default today)."
    ),
    config: str | None = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Re-decide the deployment's actual flows (writes at its sites, copies to its
    replicas, the last year's reads from abroad) on a day, and list what would change
    from today: writes refused, copies that must go, transfers that need a step first.
    Reads only."""
    from domicile.vault.impact import impact as run

    with errors(as_json):
        day = parse_date(on, "--on")
        base = parse_date(baseline, "--baseline") if baseline else None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    bar = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        console=err_console, transient=True, disable=as_json,
    )  # fmt: skip
    tasks: dict[str, Any] = {}

    def tell(site_id: str, walked: int, total: int) -> None:
        if site_id not in tasks:
            tasks[site_id] = bar.add_task(f"site {site_id}", total=total)
        bar.update(tasks[site_id], completed=walked)

    with vault(config, as_json, read_only=True) as d, errors(as_json), bar:
        out = run(d, day, baseline=base, progress=tell).to_dict()
    if as_json:
        emit_json(out)
        return
    _human(out)


def _human(out: dict[str, Any]) -> None:
    console.print(f"[bold]The deployment's flows on {out['on']}, against {out['baseline']}[/]")
    checked = out["checked"]
    console.print(
        f"checked: {checked['write']} stored records, {checked['copy']} copies,"
        f" {checked['transfer']} reads from abroad in the last year"
    )
    if not out["changes"]:
        console.print("[green]Nothing changes.[/]")
    else:
        table = Table(show_lines=True)
        for col in ("#", "flow", "collection", "where", "laws", "records", "change", "consequence"):
            table.add_column(col)
        for n, c in enumerate(out["changes"], 1):
            where = c["site"] + (f" -> {c['to']}" if c["to"] else "")
            change = (
                f"[{_COLOURS[c['before']]}]{c['before']}[/] -> "
                f"[{_COLOURS[c['after']]}]{c['after']}[/]"
            )
            table.add_row(
                str(n), c["flow"], escape(c["collection"] or "-"), escape(where),
                escape(", ".join(c["laws"]) or "-"), str(c["records"]), change,
                escape(c["consequence"]),
            )  # fmt: skip
        console.print(table)
        for n, c in enumerate(out["changes"], 1):
            for r in c["rules"]:
                console.print(
                    f"  #{n} {escape(r['id'])} ({r['outcome']}): {escape(r['reason'])}",
                    soft_wrap=True,
                )
            for step in c["steps"]:
                console.print(f"  #{n} to do: {escape(step)}", soft_wrap=True)
    s = out["summary"]
    console.print(
        f"{s['writes_refused']} records whose writes would be refused,"
        f" {s['copies_to_remove']} copies that must go,"
        f" {s['transfers_needing_steps']} reads from abroad refused or needing a step;"
        f" {s['flows_allowed_again']} flows allowed again"
    )
    for why, n in sorted(out["skipped"].items()):
        console.print(f"[dim]skipped {n}: {escape(why)}[/]")
    if out["unavailable"]:
        console.print(
            f"[yellow]unavailable sites (not checked): {', '.join(out['unavailable'])}[/]"
        )


def register(app: typer.Typer) -> None:
    """Add the commands to ``domicile policy``."""
    app.command("calendar")(calendar)
    app.command("impact")(impact)
