"""``domicile policy ...`` and ``domicile residency ...``: the decision engine from the shell."""

from __future__ import annotations

import datetime as dt
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from domicile.cli._output import console, emit_json, errors, pairs
from domicile.packs.loader import PackSet, load_packs, read_pack_file
from domicile.packs.model import Outcome
from domicile.policy import Decision, PolicyEngine, run_fixtures
from domicile.residency import SubjectEvidence, resolve

policy_app = typer.Typer(
    help="Ask the decision engine; list, validate and test packs.", no_args_is_help=True
)
residency_app = typer.Typer(
    help="Resolve which countries a subject is connected to.", no_args_is_help=True
)

PackOpt = typer.Option(
    None,
    "--pack",
    help="Extra pack file or folder (repeatable); overrides a built-in pack with the same id.",
)
JsonOpt = typer.Option(False, "--json", help="Print one JSON object.")

_COLOURS = {Outcome.allow: "green", Outcome.escalate: "yellow", Outcome.deny: "red"}


def _engine(packs: list[str] | None) -> PolicyEngine:
    return PolicyEngine(load_packs(packs or []))


def render_decision(d: Decision) -> None:
    colour = _COLOURS[d.outcome]
    head, _, body = d.explanation.partition("\n")
    console.print(f"[bold {colour}]{escape(head)}[/]")
    if body:
        console.print(escape(body), soft_wrap=True)
    if d.rules:
        table = Table(title="Rules that fired", show_lines=False, expand=False)
        table.add_column("rule")
        table.add_column("outcome")
        table.add_column("reading")
        table.add_column("citation")
        for r in d.rules:
            cite = r.citations[0] if r.citations else None
            where = (
                f"{cite.title}{', ' + cite.pinpoint if cite and cite.pinpoint else ''}"
                if cite
                else ""
            )
            table.add_row(
                r.id,
                f"[{_COLOURS[r.outcome]}]{r.outcome.value}[/]"
                + (" (uncertain)" if r.uncertain else ""),
                r.interpretation,
                escape(where),
            )
        console.print(table)


@policy_app.command("explain")
def explain(
    subject: list[str] = typer.Option(
        ...,
        "--subject",
        help="Evidence KEY=VALUE: citizenship, residence, located_at_collection, phone, ip, document.",
    ),
    category: list[str] = typer.Option(
        ..., "--category", help="Data category (fideslang key); repeatable."
    ),
    operation: str = typer.Option(
        ..., "--operation", help="collect, record, store, update, retrieve, transfer, delete."
    ),
    site_country: str = typer.Option(
        ..., "--site-country", help="Country of the site where it happens."
    ),
    to_country: str | None = typer.Option(
        None, "--to-country", help="Destination (transfer) or requester's country (retrieve)."
    ),
    date: str | None = typer.Option(None, "--date", help="YYYY-MM-DD; default today."),
    filing: list[str] | None = typer.Option(
        None, "--filing", help="NAME=YYYY-MM-DD on record; repeatable."
    ),
    basis: list[str] | None = typer.Option(
        None, "--basis", help="Legal basis claimed; repeatable."
    ),
    fact: list[str] | None = typer.Option(
        None, "--fact", help="KEY=VALUE, e.g. replica=true; repeatable."
    ),
    pack: list[str] | None = PackOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Decide one request and explain it: decision, rules, citations, obligations."""
    with errors(as_json):
        engine = _engine(pack)
        request = engine.request(
            subject=SubjectEvidence.parse(subject),
            categories=category,
            operation=operation,
            site_country=site_country,
            to_country=to_country,
            date=date or dt.date.today().isoformat(),
            filings=pairs(filing, "--filing"),
            bases=basis or [],
            facts=pairs(fact, "--fact"),
        )
        decision = engine.decide(request)
    if as_json:
        emit_json(decision.to_dict())
    else:
        render_decision(decision)


def _pack_rows(packs: PackSet) -> list[dict[str, Any]]:
    return [
        {
            "id": lp.id,
            "jurisdiction": lp.pack.pack.jurisdiction,
            "name": lp.pack.pack.name,
            "title": lp.pack.pack.title,
            "version": lp.pack.pack.version,
            "status": lp.pack.pack.status,
            "as_of": lp.pack.pack.as_of.isoformat(),
            "countries": lp.pack.pack.countries,
            "rules": [r.id for r in lp.pack.rules],
            "fixtures": len(lp.pack.tests),
            "origin": lp.origin,
            "overrides": lp.overrides,
        }
        for lp in packs
    ]


@policy_app.command("list")
def list_packs(pack: list[str] | None = PackOpt, as_json: bool = JsonOpt) -> None:
    """The packs in force: built-in ones and any given with --pack or DOMICILE_PACKS."""
    with errors(as_json):
        packs = load_packs(pack or [])
    rows = _pack_rows(packs)
    if as_json:
        emit_json(rows)
        return
    table = Table(title=f"{len(rows)} packs in force")
    for col in ("id", "jurisdiction", "name", "version", "status", "rules", "fixtures", "origin"):
        table.add_column(col)
    for r in rows:
        origin = r["origin"] + (f" (overrides {r['overrides']})" if r["overrides"] else "")
        table.add_row(
            r["id"], r["jurisdiction"], escape(r["name"]), r["version"], r["status"],
            str(len(r["rules"])), str(r["fixtures"]), escape(origin),
        )  # fmt: skip
    console.print(table)


@policy_app.command("validate")
def validate(
    file: str = typer.Argument(..., help="The pack file to check."),
    as_json: bool = JsonOpt,
) -> None:
    """Check a pack file (shape, references) and run its fixtures beside the built-in packs."""
    with errors(as_json):
        pack = read_pack_file(file)
        engine = PolicyEngine(load_packs([file]))
        results = run_fixtures(engine, [pack.pack.id])
        failed = [r for r in results if not r.ok]
        report = {
            "ok": not failed,
            "file": file,
            "pack": pack.pack.id,
            "version": pack.pack.version,
            "rules": len(pack.rules),
            "fixtures": len(results),
            "failed": [{"name": r.name, "problems": list(r.problems)} for r in failed],
        }
        if as_json:
            emit_json(report)
        else:
            console.print(
                f"{escape(file)}: pack {pack.pack.id} {pack.pack.version}, {len(pack.rules)} rules, "
                f"{len(results)} fixtures"
            )
            for r in failed:
                console.print(f"[red]FAIL[/] {escape(r.name)}: {escape('; '.join(r.problems))}")
        if failed:
            if not as_json:
                console.print(f"[red]{len(failed)} of {len(results)} fixtures failed[/]")
            raise typer.Exit(1)
        if not as_json:
            console.print("[green]valid[/]")


@policy_app.command("fixtures")
def fixtures(
    only: list[str] | None = typer.Option(
        None, "--only", help="Pack id; repeatable. Default: every pack."
    ),
    pack: list[str] | None = PackOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Run every loaded pack's own fixtures."""
    with errors(as_json):
        results = run_fixtures(_engine(pack), only)
    failed = [r for r in results if not r.ok]
    if as_json:
        emit_json(
            {
                "ok": not failed,
                "fixtures": len(results),
                "failed": [
                    {"pack": r.pack, "name": r.name, "problems": list(r.problems)} for r in failed
                ],
            }
        )
    else:
        for r in results:
            mark = "[green]ok[/]  " if r.ok else "[red]FAIL[/]"
            console.print(
                f"{mark} {r.pack}: {escape(r.name)}"
                + ("" if r.ok else f": {escape('; '.join(r.problems))}")
            )
        console.print(f"{len(results) - len(failed)} of {len(results)} fixtures pass")
    if failed:
        raise typer.Exit(1)


@policy_app.command("categories")
def categories(
    under: str = typer.Option("user", "--under", help="Only keys under this one."),
    pack: list[str] | None = PackOpt,
    as_json: bool = JsonOpt,
) -> None:
    """The data-category vocabulary: fideslang's keys plus domicile's and the packs' additions."""
    with errors(as_json):
        taxonomy = load_packs(pack or []).taxonomy
        keys = sorted(taxonomy.descendants(taxonomy.check(under)))
    if as_json:
        emit_json({k: taxonomy.label(k) for k in keys})
        return
    for k in keys:
        console.print(f"{k}  [dim]{escape(taxonomy.label(k))}[/]")


@residency_app.command("resolve")
def resolve_cmd(
    subject: list[str] = typer.Option(
        ..., "--subject", help="Evidence KEY=VALUE (as for policy explain)."
    ),
    pack: list[str] | None = PackOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Which countries a subject is connected to, how surely, and which laws cover them."""
    with errors(as_json):
        residency = resolve(SubjectEvidence.parse(subject))
        engine = _engine(pack)
        jurisdictions = [j for j in engine.jurisdictions(residency) if j.coverage != "none"]
    out = {**residency.to_dict(), "jurisdictions": [j.to_dict() for j in jurisdictions]}
    if as_json:
        emit_json(out)
        return
    table = Table(title="Residency")
    table.add_column("attribute")
    table.add_column("certain")
    table.add_column("possible")
    for name, tri in (
        ("citizenship", residency.citizenship),
        ("residence", residency.residence),
        ("location at collection", residency.location),
    ):
        table.add_row(
            name, ", ".join(sorted(tri.certain)) or "-", ", ".join(sorted(tri.possible)) or "-"
        )
    console.print(table)
    for f in residency.findings:
        console.print(f"  evidence ({f.strength}): {escape(f.description)}")
    if not jurisdictions:
        console.print("No loaded pack covers this subject.")
    for j in jurisdictions:
        colour = "red" if j.coverage == "covered" else "yellow"
        console.print(
            f"[{colour}]{j.name}[/] ({j.pack}): {j.coverage}: {escape('; '.join(j.reasons))}"
        )


_TOUR_COLOURS = {"allow": "green", "escalate": "yellow", "deny": "red"}


@policy_app.command("tour")
def tour(as_json: bool = JsonOpt) -> None:
    """A guided tour of the decision engine over a sample population."""
    from domicile.tour.policy import SITES, placements, timeline

    with errors(as_json):
        engine = PolicyEngine()
        rows = placements(engine)
        steps = timeline(engine)
    if as_json:
        emit_json({"placements": rows, "timeline": steps})
        return
    console.rule("[bold]Where may each profile be stored? (1 September 2025)")
    table = Table(show_lines=True)
    table.add_column("subject")
    table.add_column("laws that cover them")
    for site in SITES:
        table.add_column(f"site {site}", justify="center")
    for row in rows:
        cells = [f"[{_TOUR_COLOURS[v]}]{v}[/]" for v in row["sites"].values()]
        table.add_row(escape(row["subject"]), escape("\n".join(row["laws"]) or "none"), *cells)
    console.print(table)
    console.rule("[bold]A recruiter in the US reads a Russian member's profile")
    for step in steps:
        colour = _TOUR_COLOURS[step["decision"]]
        console.print(f"[{colour}]{step['decision'].upper():8}[/] {escape(step['step'])}")
        for ob in step["obligations"]:
            console.print(f"           to do: {escape(ob)}", soft_wrap=True)
