"""The ``domicile`` command."""

from __future__ import annotations

import typer
from rich.markup import escape
from rich.table import Table

from domicile._version import __version__
from domicile.cli import vault as vault_cli
from domicile.cli._output import console, emit_json, errors
from domicile.cli.policy import policy_app, residency_app

app = typer.Typer(
    name="domicile",
    help="Keeps each person's personal data where the law demands it, and proves it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(policy_app, name="policy")
app.add_typer(residency_app, name="residency")
bench_app = typer.Typer(
    help="Benchmarks: figures and ratios against a baseline run in the same process.",
    no_args_is_help=True,
)
app.add_typer(bench_app, name="bench")
vault_cli.register(app)

_COLOURS = {"allow": "green", "escalate": "yellow", "deny": "red"}


@app.command()
def version() -> None:
    """Print the version."""
    console.print(__version__)


@bench_app.command("policy")
def bench_policy(
    seconds: float = typer.Option(1.0, "--seconds", min=0.05, help="Time per measurement."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Decisions per second (cached and uncached) and resolutions per second, against dict lookups."""
    from domicile.bench.policy import run

    with errors(as_json):
        result = run(seconds)
    if as_json:
        emit_json(result)
        return
    table = Table(title="domicile bench policy (one core)")
    table.add_column("measure")
    table.add_column("per second", justify="right")
    for name, value in result["per_second"].items():
        table.add_row(name, f"{value:,}")
    console.print(table)
    for name, value in result["ratios"].items():
        console.print(f"ratio {name}: {value}")
    met = result["target"]["met"]
    console.print(
        f"target {result['target']['decisions_per_second']:,} decisions/s: {'met' if met else 'NOT met'}"
    )


@bench_app.command("vault")
def bench_vault(
    records: int = typer.Option(20_000, "--records", min=100, help="Records to write."),
    backend: str = typer.Option("sqlite", "--backend", help="sqlite or postgresql."),
    postgres_url: str = typer.Option(
        "postgresql://postgres@127.0.0.1:5432",
        "--postgres-url",
        help="Server for --backend postgresql.",
    ),
    batch: int = typer.Option(500, "--batch", min=1, help="Records per batch put / insert."),
    gets: int = typer.Option(5_000, "--gets", min=1, help="Point reads to time."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Batch put and point get through the SDK, against plain INSERT and SELECT on the same backend."""
    from rich.console import Console

    from domicile.bench.vault import run
    from domicile.errors import BadInput

    with errors(as_json):
        if backend not in ("sqlite", "postgresql"):
            raise BadInput(f"unknown backend {backend!r}", hint="use sqlite or postgresql")
        result = run(
            records, backend=backend, postgres_url=postgres_url, batch=batch, gets=gets,
            progress=Console(stderr=True),
        )  # fmt: skip
    if as_json:
        emit_json(result)
        return
    table = Table(title=f"domicile bench vault ({backend}, {records:,} records)")
    table.add_column("measure")
    table.add_column("per second", justify="right")
    for name, value in result["per_second"].items():
        table.add_row(name, f"{value:,}")
    console.print(table)
    for name, value in result["ratios"].items():
        console.print(f"ratio {name}: {value} (target {result['target']['ratio']})")


@app.command()
def demo(as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")) -> None:
    """A guided tour of the decision engine over a sample population."""
    from domicile.demo import SITES, placements, timeline
    from domicile.policy import PolicyEngine

    with errors(as_json):
        engine = PolicyEngine()
        rows = placements(engine)
        steps = timeline(engine)
    if as_json:
        emit_json({"placements": rows, "timeline": steps})
        return
    console.rule("[bold]domicile: where may each profile be stored? (1 September 2025)")
    table = Table(show_lines=True)
    table.add_column("subject")
    table.add_column("laws that cover them")
    for site in SITES:
        table.add_column(f"site {site}", justify="center")
    for row in rows:
        cells = [f"[{_COLOURS[v]}]{v}[/]" for v in row["sites"].values()]
        table.add_row(escape(row["subject"]), escape("\n".join(row["laws"]) or "none"), *cells)
    console.print(table)
    console.print("Why not (first refusing rule per site):")
    for row in rows:
        for site, why in row["why_not"].items():
            console.print(f"  {escape(row['subject'])} @ {site}: {escape(why)}", soft_wrap=True)
    console.rule("[bold]A recruiter in the US reads a Russian member's profile")
    for step in steps:
        colour = _COLOURS[step["decision"]]
        console.print(f"[{colour}]{step['decision'].upper():8}[/] {escape(step['step'])}")
        for ob in step["obligations"]:
            console.print(f"           to do: {escape(ob)}", soft_wrap=True)
    console.print(
        "\nTry: [bold]domicile policy explain --subject citizenship=RU --category user.contact.email "
        "--operation store --site-country DE --date 2025-09-01[/]"
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
