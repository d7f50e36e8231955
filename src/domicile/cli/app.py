"""The ``domicile`` command."""

from __future__ import annotations

import typer
from rich.markup import escape
from rich.table import Table

from domicile._version import __version__
from domicile.cli import service as service_cli
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
service_cli.register(app)

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


@bench_app.command("transfers")
def bench_transfers(
    records: int = typer.Option(10_000, "--records", min=100, help="Records replicated."),
    reads: int = typer.Option(2_000, "--reads", min=10, help="Reads from abroad."),
    backend: str = typer.Option("sqlite", "--backend", help="sqlite or postgresql."),
    postgres_url: str = typer.Option(
        "postgresql://postgres@127.0.0.1:5432",
        "--postgres-url",
        help="Server for --backend postgresql.",
    ),
    parity_records: int = typer.Option(
        1_000_000, "--parity-records", min=0, help="Copies for the parity memory check (0: skip)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Replication through the outbox against a plain copy, reads from abroad against a
    plain select, and parity's peak memory over many copies."""
    from rich.console import Console

    from domicile.bench.transfers import run
    from domicile.errors import BadInput

    with errors(as_json):
        if backend not in ("sqlite", "postgresql"):
            raise BadInput(f"unknown backend {backend!r}", hint="use sqlite or postgresql")
        result = run(
            records, reads=reads, backend=backend, postgres_url=postgres_url,
            parity_records=parity_records, progress=Console(stderr=True),
        )  # fmt: skip
    if as_json:
        emit_json(result)
        return
    table = Table(title=f"domicile bench transfers ({backend})")
    table.add_column("measure")
    table.add_column("per second", justify="right")
    for name, value in result["per_second"].items():
        table.add_row(name, f"{value:,}")
    console.print(table)
    for name, value in result["ratios"].items():
        console.print(f"ratio {name}: {value} (target {result['target']['ratio']})")
    if "parity_memory" in result:
        pm = result["parity_memory"]
        console.print(
            f"parity over {pm['copies']:,} copies: peak {pm['peak_mb']:.0f} MB (limit {pm['limit_mb']} MB)"
        )


@bench_app.command("http")
def bench_http(
    seconds: float = typer.Option(5.0, "--seconds", min=0.5, help="Time per operation and side."),
    concurrency: int = typer.Option(
        8, "--concurrency", min=1, max=256, help="Concurrent HTTP clients."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Put and get over HTTP (a real `domicile serve`) against the SDK in-process."""
    from domicile.bench.http import run

    with errors(as_json):
        result = run(seconds, concurrency)
    if as_json:
        emit_json(result)
        return
    table = Table(title="domicile bench http")
    for col in ("measure", "per second", "p50 ms", "p99 ms"):
        table.add_column(col)
    for name, value in result["per_second"].items():
        lat = result["latency_ms"][name]
        table.add_row(name, f"{value:,}", str(lat["p50"]), str(lat["p99"]))
    console.print(table)
    for name, value in result["ratios"].items():
        console.print(f"ratio {name}: {value}")


@app.command()
def demo(
    directory: str = typer.Option(
        "domicile-demo", "--dir", help="Folder for the demo's deployment (recreated)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """The main job: the embedded three-site vault with a sample population: where each
    record went and why, reads from abroad, and the evidence."""
    from pathlib import Path

    from domicile.vault_demo import run

    with errors(as_json):
        out = run(Path(directory))
    if as_json:
        emit_json(out)
        return
    console.rule("[bold]domicile: a sample population stored where the law puts it")
    table = Table(show_lines=True)
    for col in ("subject", "site", "why"):
        table.add_column(col)
    for p in out["placements"]:
        site = f"{p['site']} ({p['country']})" if p["site"] else "[red]refused[/]"
        table.add_row(escape(p["subject"]), site, escape(p["why"]))
    console.print(table)
    console.rule("[bold]Reads from another country are transfers, decided and logged")
    for r in out["reads"]:
        colour = "green" if r["outcome"] == "allowed" else "red"
        extra = f" ({', '.join(r['rules'])})" if r["outcome"] == "allowed" else f": {r['why']}"
        console.print(
            f"[{colour}]{r['outcome']:8}[/] {escape(r['subject'])} read at site {r['requester_site']}{escape(extra)}",
            soft_wrap=True,
        )
    console.rule("[bold]Evidence")
    for s in out["sites"]:
        loc = s["location"]
        console.print(
            f"site {s['id']} ({s['country']}, {escape(loc['city'])}): {s['records']} records, healthy={s['healthy']}"
        )
    for a in out["audit"]:
        console.print(
            f"audit {a['site']}: {'ok' if a['ok'] else 'BROKEN'} ({a['entries']} entries, chain verified)"
        )
    check = out["plaintext_check"]
    console.print(
        f"plaintext scan: {len(check['found'])} of {check['values']} field values found in "
        f"{check['files']} files of the deployment"
    )
    console.print(
        f"\nThe deployment is in {escape(directory)}/. Try: [bold]domicile sites --config "
        f"{escape(directory)}/domicile.yaml[/]; the policy engine tour: [bold]domicile policy tour[/]"
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
