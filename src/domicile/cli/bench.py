"""``domicile bench ...``: benchmarks that print figures and ratios against a baseline
measured in the same run (one JSON object with ``--json``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from domicile.bench.judging import verdict
from domicile.cli._output import console, emit_json, errors
from domicile.errors import BadInput

bench_app = typer.Typer(
    help="Benchmarks: figures and ratios against a baseline run in the same process.",
    no_args_is_help=True,
)
JsonOpt = typer.Option(False, "--json", help="Print one JSON object.")
BackendOpt = typer.Option("sqlite", "--backend", help="sqlite or postgresql.")
PostgresOpt = typer.Option(
    "postgresql://postgres@127.0.0.1:5432",
    "--postgres-url",
    help="Server for --backend postgresql.",
)


def _backend(name: str) -> str:
    if name not in ("sqlite", "postgresql"):
        raise BadInput(f"unknown backend {name!r}", hint="use sqlite or postgresql")
    return name


RepeatOpt = typer.Option(
    1, "--repeat", min=1, help="Runs on fresh databases; medians of rates and ratios."
)
ReadersOpt = typer.Option(
    4, "--readers", min=1, max=64, help="Concurrent readers for the get figures (all sides)."
)


def _show(result: dict[str, Any], title: str, as_json: bool, *, latency: bool = False) -> None:
    """The result as JSON, or as a table of rates (and latencies) followed by the ratios,
    each with its target and, where measured, the ceiling of the required work."""
    if as_json:
        emit_json(result)
        return
    table = Table(title=title)
    table.add_column("measure")
    table.add_column("per second", justify="right")
    if latency:
        table.add_column("p50 ms", justify="right")
        table.add_column("p99 ms", justify="right")
    for name, value in result["per_second"].items():
        row = [name, f"{value:,}"]
        if latency:
            lat = result["latency_ms"].get(name, {})
            row += [str(lat.get("p50", "-")), str(lat.get("p99", "-"))]
        table.add_row(*row)
    console.print(table)
    targets = result.get("targets")
    if targets is None:  # the judged benchmarks (bench.judging)
        for name in result["ratios"]:
            console.print(verdict(result, name))
        return
    ceilings = result.get("ceilings", {})  # bench http: the serving ceiling of a missed target
    for name, value in result["ratios"].items():
        goal = targets.get(name)
        note = f" (target {goal})" if goal is not None else ""
        if name in ceilings:
            note += f"; not reached: the serving ceiling allows {ceilings[name]}"
        console.print(f"ratio {name}: {value}{note}")


@bench_app.command("policy")
def bench_policy(
    seconds: float = typer.Option(1.0, "--seconds", min=0.05, help="Time per measurement."),
    as_json: bool = JsonOpt,
) -> None:
    """Decisions per second (cached and uncached) and resolutions per second, against
    dictionary lookups."""
    from domicile.bench.policy import run

    with errors(as_json):
        result = run(seconds)
    _show(result, "domicile bench policy (one core)", as_json)
    if not as_json:
        met = result["target"]["met"]
        goal = result["target"]["decisions_per_second"]
        console.print(f"target {goal:,} decisions/s: {'met' if met else 'NOT met'}")


@bench_app.command("vault")
def bench_vault(
    records: int = typer.Option(20_000, "--records", min=100, help="Records to write."),
    backend: str = BackendOpt,
    postgres_url: str = PostgresOpt,
    batch: int = typer.Option(500, "--batch", min=1, help="Records per batch put / insert."),
    gets: int = typer.Option(5_000, "--gets", min=1, help="Point reads to time."),
    readers: int = ReadersOpt,
    repeat: int = RepeatOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Batch put and point get through the SDK, against plain INSERT and SELECT, and an
    ORM with encrypted columns, on the same backend; beside each ratio, the ceiling that
    the required work of the record layout allows. Needs the bench extra."""
    from domicile.bench.vault import run

    with errors(as_json):
        result = run(
            records, backend=_backend(backend), postgres_url=postgres_url, batch=batch,
            gets=gets, readers=readers, repeat=repeat, progress=Console(stderr=True),
        )  # fmt: skip
    _show(result, f"domicile bench vault ({backend}, {records:,} records)", as_json)


@bench_app.command("transfers")
def bench_transfers(
    records: int = typer.Option(10_000, "--records", min=100, help="Records replicated."),
    reads: int = typer.Option(2_000, "--reads", min=10, help="Reads from abroad."),
    backend: str = BackendOpt,
    postgres_url: str = PostgresOpt,
    parity_records: int = typer.Option(
        1_000_000, "--parity-records", min=0, help="Copies for the parity memory check (0: skip)."
    ),
    repeat: int = RepeatOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Replication through the outbox against a plain copy, reads from abroad against a
    plain select, and parity's peak memory over many copies."""
    from domicile.bench.transfers import run

    with errors(as_json):
        result = run(
            records, reads=reads, backend=_backend(backend), postgres_url=postgres_url,
            parity_records=parity_records, repeat=repeat, progress=Console(stderr=True),
        )  # fmt: skip
    _show(result, f"domicile bench transfers ({backend})", as_json)
    if not as_json and "parity_memory" in result:
        pm = result["parity_memory"]
        console.print(
            f"parity over {pm['copies']:,} copies: peak {pm['peak_mb']:.0f} MB"
            f" (limit {pm['limit_mb']} MB)"
        )


@bench_app.command("scale")
def bench_scale(
    records: int = typer.Option(
        20_000, "--records", min=1_000, help="Records to load (the issue's figure: 1000000)."
    ),
    backend: str = BackendOpt,
    postgres_url: str = PostgresOpt,
    batch: int = typer.Option(500, "--batch", min=1, help="Records per batch put."),
    ceiling: bool = typer.Option(
        True,
        "--ceiling/--no-ceiling",
        help="Also load a scratch store of the layout's required work, for its own ratio.",
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Put rate over the first and the last tenth of a large load, and resident memory
    sampled through it; beside it, the same ratio for the layout's required work alone."""
    from domicile.bench.scale import run

    with errors(as_json):
        result = run(
            records, backend=_backend(backend), postgres_url=postgres_url, batch=batch,
            progress=Console(stderr=True), ceiling=ceiling,
        )  # fmt: skip
    _show(result, f"domicile bench scale ({backend}, {records:,} records)", as_json)
    if not as_json:
        mem = result["memory"]
        tenths = ", ".join(f"{m:.0f}" for m in mem["by_tenth_mb"])
        console.print(
            f"resident memory by tenth (MB): {tenths}; peak {mem['peak_mb']:.0f} MB;"
            f" {'flat' if mem['flat'] else 'NOT flat'}"
            f" (last/first {mem['growth_last_vs_first']}, limit {mem['limit']})"
        )


@bench_app.command("http")
def bench_http(
    seconds: float = typer.Option(5.0, "--seconds", min=0.5, help="Time per operation and side."),
    concurrency: int = typer.Option(
        8, "--concurrency", min=1, max=256, help="Concurrent HTTP clients."
    ),
    workers: int | None = typer.Option(
        None, "--workers", min=1, max=64, help="Service processes (default: the number of cores)."
    ),
    batch: int = typer.Option(
        100, "--batch", min=1, max=1000, help="Records per request on the batch routes."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Put and get over HTTP (a real `domicile serve --workers N`) against the SDK
    in-process, with the serving ceiling (a bare route on the same stack) beside them."""
    from domicile.bench.http import run

    with errors(as_json):
        result = run(seconds, concurrency, workers, batch)
    _show(result, "domicile bench http", as_json, latency=True)


@bench_app.command("scan")
def bench_scan(
    subjects: int = typer.Option(5_000, "--subjects", min=50, help="People in the source."),
    sample: int = typer.Option(1000, "--sample", min=10, help="Rows sampled per table."),
    keep: Path | None = typer.Option(
        None,
        "--keep",
        metavar="FOLDER",
        help="Write the synthetic source into this new folder and keep it (source.db, files/).",
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Scan speed and accuracy on a synthetic source, against every pattern on every value.

    A source with its own truth (SQLite and Parquet): values per second, per-category
    precision and recall, subjects exactly right, against running every recognizer's
    pattern on every value."""
    from domicile.discovery.sources import require_extra

    with errors(as_json):
        require_extra("domicile bench scan")
        from domicile.bench.scan import run

        result = run(
            subjects, sample=sample, progress=None if as_json else Console(stderr=True), keep=keep
        )
    _show(
        result, f"domicile bench scan ({subjects:,} subjects, {result['values']:,} values)", as_json
    )
    if not as_json:
        for name, r in result["scan"].items():
            acc = r["accuracy"]
            console.print(
                f"{name}: macro F1 {acc['macro_f1']} (precision {acc['macro_precision']}, "
                f"recall {acc['macro_recall']}), decoy columns flagged {acc['decoy_columns_flagged']}, "
                f"subjects exactly right {r['subjects_exact']:.1%}"
            )
        base = result["baseline"]["accuracy"]
        console.print(
            f"baseline: macro F1 {base['macro_f1']}, decoy columns flagged {base['decoy_columns_flagged']}"
        )
        met = result["target"]["met"]
        console.print(
            "targets: " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in met.items())
        )


@bench_app.command("federation")
def bench_federation(
    records: int = typer.Option(
        1_000, "--records", min=10, help="Requests of each kind (writes, then reads)."
    ),
    connections: int = typer.Option(
        4, "--connections", min=1, max=256, help="Concurrent HTTP connections to a node."
    ),
    max_seconds: float = typer.Option(
        120.0,
        "--max-seconds",
        min=1.0,
        help="Most time for each kind; a kind cut short counts what it did.",
    ),
    keep: Path | None = typer.Option(
        None,
        "--keep",
        metavar="FOLDER",
        help="Make the scratch federation in this new folder and leave it there (nodes stopped).",
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Writes and reads across nodes against the same inside one node, through the US
    node's API: three `domicile serve --node` processes over mutual TLS. Needs the
    federation extra."""
    from domicile.bench.federation import run

    with errors(as_json):
        result = run(
            records, connections=connections, max_seconds=max_seconds, keep=keep,
            progress=Console(stderr=True),
        )  # fmt: skip
    _show(
        result,
        f"domicile bench federation ({records:,} records, {connections} connections, at the US node)",
        as_json,
        latency=True,
    )
    if not as_json:
        console.print(
            "cross-node reads are full transfers (the Art. 12 notice is on record); local_read"
            " asks the RU node itself"
        )
        if "deployment" in result:
            console.print(f"deployment kept in {result['deployment']}")
