"""``domicile evidence export|verify``: the evidence pack an inspector checks offline."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import typer
from rich.markup import escape

from domicile.cli._output import console, emit_json, err_console, errors, fail
from domicile.cli.vault import ConfigOpt, JsonOpt, vault
from domicile.errors import BadInput, DomicileError, ExitCode

evidence_app = typer.Typer(
    help="Evidence packs: the audit, the transfer ledger and their proofs, checked offline.",
    no_args_is_help=True,
)


@evidence_app.command("export")
def export(
    out: str = typer.Argument(..., help="The pack to write (a new .zip file)."),
    since: str = typer.Option(..., "--since", help="YYYY-MM-DD: the period's first day (UTC)."),
    until: str | None = typer.Option(
        None, "--until", help="YYYY-MM-DD: the period's last day (UTC; default today)."
    ),
    pinned: str | None = typer.Option(
        None,
        "--pinned",
        help="A heads file the inspector holds (`audit heads --out`): the pack ships this "
        "deployment's head of each size it names, so `verify --keys` can compare them.",
    ),
    config: str | None = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Write the evidence pack of a period: each site's audit entries with their signed
    tree heads, consistency and inclusion proofs and witness records, the transfer
    ledger, the public keys, a signed manifest and verify.py. Writes nothing to the
    deployment; the pack ends at each site's newest signed head (run `domicile audit
    witness` first to bring in the newest entries)."""
    from rich.progress import Progress, SpinnerColumn, TextColumn

    from domicile.evidence.pack import export_pack
    from domicile.policy import parse_date

    with errors(as_json):
        first = parse_date(since, "--since")
        last = parse_date(until, "--until") if until else dt.datetime.now(dt.UTC).date()
        if first > last:
            raise BadInput(
                "--since is after --until", hint="the period runs from --since to --until"
            )
    with vault(config, as_json, read_only=True) as d, errors(as_json):
        if as_json or not err_console.is_terminal:
            result = export_pack(d, out, since=first, until=last, pinned=pinned)
        else:
            with Progress(
                SpinnerColumn(), TextColumn("{task.description}"), console=err_console,
                transient=True,
            ) as progress:  # fmt: skip
                task = progress.add_task("evidence pack", total=None)

                def tell(step: str) -> None:
                    progress.update(task, description=f"evidence pack: {step}")

                result = export_pack(d, out, since=first, until=last, tell=tell, pinned=pinned)
    if as_json:
        emit_json(result)
        return
    period = result["period"]
    console.print(
        f"wrote {escape(result['out'])} ({result['bytes']} bytes, SHA-256 {result['sha256']}): "
        f"deployment {escape(result['deployment'])}, {period['since']} to {period['until']}",
        soft_wrap=True,
    )
    for sid, s in sorted(result["sites"].items()):
        span = (
            f"entries {s['first']}-{s['last']} ({s['in_period']} of the period)"
            if s["entries"]
            else "no entries"
        )
        console.print(f"  {sid}: {span}; signed heads: {s['heads']}")
        if s["not_yet_signed"]:
            console.print(
                f"    [yellow]{s['not_yet_signed']} later operations of the period are not in "
                "the pack[/]: no signed head covers them yet (run `domicile audit witness`, "
                "then export again)",
                soft_wrap=True,
            )
    console.print(
        f"check it with: domicile evidence verify {escape(result['out'])} --keys KEYS",
        soft_wrap=True,
    )


@evidence_app.command("verify")
def verify(
    pack: str = typer.Argument(..., help="An evidence pack (from `domicile evidence export`)."),
    keys: str | None = typer.Option(
        None,
        "--keys",
        help="The deployment's public keys as obtained apart from the pack (a heads file "
        "from `audit heads --out`, or a trusted pack's keys.json), to pin trust.",
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Check every signature and proof of an evidence pack offline, with public keys only;
    name each member that was changed and what failed. Exit 0 good, 1 a check failed,
    2 not a pack. The pack's own verify.py runs the same checks."""
    from domicile.evidence import verifier

    try:
        pinned = verifier.load_pinned(Path(keys)) if keys else None
        report = verifier.check_pack(pack, pinned)
    except verifier.PackUnreadable as exc:
        fail(BadInput(str(exc)), as_json=as_json)
    except DomicileError as exc:  # pragma: no cover - the checker raises none of its own
        fail(exc, as_json=as_json)
    if as_json:
        emit_json(report.to_dict())
    else:
        for line in verifier.render(report).splitlines():
            colour = "red" if line.startswith("FAILED") or line.endswith("checks failed") else None
            console.print(
                f"[{colour}]{escape(line)}[/]" if colour else escape(line), soft_wrap=True
            )
    if not report.ok:
        raise typer.Exit(ExitCode.CHECK_FAILED)
