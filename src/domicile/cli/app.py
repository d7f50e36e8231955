"""The ``domicile`` command."""

from __future__ import annotations

import os
import sys
from typing import Any

import typer
import typer.core
from rich.markup import escape
from rich.table import Table

from domicile._version import __version__
from domicile.cli import lawchange as lawchange_cli
from domicile.cli import report as report_cli
from domicile.cli import scan as scan_cli
from domicile.cli import service as service_cli
from domicile.cli import vault as vault_cli
from domicile.cli._output import console, emit_json, errors, last_word
from domicile.cli.attest import attest_app
from domicile.cli.bench import bench_app
from domicile.cli.evidence import evidence_app
from domicile.cli.federation import federation_app
from domicile.cli.migrate import migrate_app
from domicile.cli.policy import policy_app, residency_app
from domicile.cli.retention import retention_app
from domicile.cli.rights import rights_app

app = typer.Typer(
    name="domicile",
    help="Keeps each person's personal data where the law demands it, and proves it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    rich_markup_mode="markdown",  # docstrings reflow; `code` shows as code
)
# Flags take no value: the help shows none (this typer version shows <bool> for them).
_display_type = typer.core.TyperOption.display_type_rich


def _flag_type(self: typer.core.TyperOption, ctx: Any) -> str | None:
    return None if self.is_flag else _display_type(self, ctx)


typer.core.TyperOption.display_type_rich = _flag_type  # type: ignore[method-assign]


def _version(value: bool) -> None:
    if value:
        console.print(version_text(), soft_wrap=True)
        raise typer.Exit()


@app.callback()
def _root(
    show_version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True,
        help="Print the version and the packs' versions, and exit.",
    ),
) -> None:  # fmt: skip
    """Keeps each person's personal data where the law demands it, and proves it."""


def version_info() -> dict[str, Any]:
    """domicile's version and each pack's (or why the packs could not be loaded)."""
    from domicile.errors import DomicileError
    from domicile.packs.loader import load_packs

    try:
        packs: dict[str, str] | str = {lp.id: lp.pack.pack.version for lp in load_packs()}
    except DomicileError as exc:  # a broken DOMICILE_PACKS pack: say so, print the rest
        packs = f"not loaded ({exc.message})"
    return {"version": __version__, "packs": packs}


def version_text() -> str:
    info = version_info()
    packs = info["packs"]
    listed = ", ".join(f"{k} {v}" for k, v in packs.items()) if isinstance(packs, dict) else packs
    return f"domicile {info['version']}\npacks: {listed}"


app.add_typer(policy_app, name="policy")
app.add_typer(residency_app, name="residency")
app.add_typer(bench_app, name="bench")
app.add_typer(evidence_app, name="evidence")
app.add_typer(migrate_app, name="migrate")
app.add_typer(rights_app, name="rights")
app.add_typer(retention_app, name="retention")
app.add_typer(attest_app, name="attest")
app.add_typer(federation_app, name="federation")
vault_cli.register(app)
service_cli.register(app)
scan_cli.register(app)
report_cli.register(app)
lawchange_cli.register(policy_app)

_COLOURS = {"allow": "green", "escalate": "yellow", "deny": "red"}


@app.command()
def version(as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")) -> None:
    """Print the version and the packs' versions."""
    if as_json:
        emit_json(version_info())
    else:
        console.print(version_text(), soft_wrap=True)


@app.command()
def demo(
    directory: str = typer.Option(
        "domicile-demo", "--dir", help="Folder for the demo's deployment (recreated)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """A guided tour in its own folder: the embedded three-site vault with a sample
    population (`scripts/run` is the quick start's main job; this is its tour): where each
    record went and why, reads from abroad, and the evidence."""
    from pathlib import Path

    from domicile.tour.vault import run

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


def main(argv: list[str] | None = None) -> None:
    """The command. Whatever happens, it ends in one line and a code from the one table
    (``domicile.errors.ExitCode``), never in a traceback (``DOMICILE_DEBUG=1`` shows one)."""
    try:
        app(args=argv, prog_name="domicile")
    except SystemExit:
        raise
    except BaseException as exc:
        if os.environ.get("DOMICILE_DEBUG") == "1" and not isinstance(exc, KeyboardInterrupt):
            raise
        as_json = "--json" in (argv if argv is not None else sys.argv[1:])
        sys.exit(last_word(exc, as_json=as_json))


if __name__ == "__main__":
    main()
