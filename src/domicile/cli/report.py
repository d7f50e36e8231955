"""``domicile report ...``: the database location register and the compliance report, as
JSON, HTML or PDF from one model. Reads only: the deployment is opened read-only; the one
file written is ``--out``."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from domicile.cli._output import console, emit_json, err_console, errors
from domicile.cli.vault import ConfigOpt, JsonOpt, vault
from domicile.errors import BadInput

report_app = typer.Typer(
    help="Reports for regulators and boards: the database register, the compliance report.",
    no_args_is_help=True,
)

FormatOpt = typer.Option(
    None, "--format", help="json, html or pdf (default: from --out's suffix; else a summary)."
)
OutOpt = typer.Option(None, "--out", help="Write the report to FILE (PDF needs one).")


def _format(fmt: str | None, out: Path | None) -> str | None:
    if fmt is None and out is not None:
        fmt = out.suffix.lstrip(".").lower() or None
        if fmt not in ("json", "html", "pdf"):
            raise BadInput("cannot tell the format from --out", hint="add --format json|html|pdf")
    if fmt is not None and fmt not in ("json", "html", "pdf"):
        raise BadInput("unknown --format", hint="use json, html or pdf")
    if fmt == "pdf" and out is None:
        raise BadInput("a PDF goes to a file", hint="add --out FILE.pdf")
    return fmt


def _write(out: Path, data: bytes) -> None:
    """Write ``data`` to ``out`` whole or not at all (a temporary file, then a rename)."""
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise BadInput(f"no folder {folder} for --out", hint="create it first")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".report-", dir=folder)
    except OSError as exc:
        raise BadInput(f"cannot write in {folder}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _emit(model: dict[str, Any], fmt: str | None, out: Path | None, as_json: bool) -> bool:
    """Render and write or print the report; False when the caller prints a summary."""
    from domicile.reports import render

    if out is not None and fmt is not None:
        _write(out, render(model, fmt))
        if as_json:
            emit_json(model)
        else:
            console.print(f"wrote {escape(str(out))} ({fmt})", soft_wrap=True)
        return True
    if as_json or fmt == "json":
        emit_json(model)
        return True
    if fmt == "html":
        typer.echo(render(model, "html").decode(), nl=False)
        return True
    return False


def _n(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def _counts(s: dict[str, Any]) -> str:
    return ", ".join(
        (
            _n(s["records"], "record", "records"),
            _n(s["copies"], "copy", "copies"),
            _n(s["subjects"], "subject", "subjects"),
        )
    )


def _status(as_json: bool) -> Any:
    from contextlib import nullcontext

    if as_json:
        return nullcontext()
    return err_console.status("reading the audit logs ...")


@report_app.command("register")
def register_cmd(
    pack: str = typer.Option("ru", "--pack", help="The law whose register to draw: a pack that keeps one (ru, uz, cn, id, in, kz, vn)."),
    since_notice: str | None = typer.Option(
        None, "--since-notice", help="YYYY-MM-DD: compare with the register as of this day "
        "(default: the date of the notice filing on record).",
    ),
    fmt: str | None = FormatOpt,
    out: Path | None = OutOpt,
    config: str | None = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:  # fmt: skip
    """The database location register (Russia's Art. 22 notice, item 10.1): every site
    holding the law's subjects' data with its address, categories and subject counts; what
    changed since the last notice, and when the change notice is due. Writes nothing to
    the deployment."""
    from domicile.policy import parse_date
    from domicile.reports import register, require_extra

    with errors(as_json):
        fmt = _format(fmt, out)
        require_extra(fmt or "json")
        day = parse_date(since_notice, "--since-notice") if since_notice else None
        with vault(config, as_json, read_only=True) as d, _status(as_json):
            model = register(d, pack=pack.strip().lower(), since_notice=day)
        if _emit(model, fmt, out, as_json):
            return
    console.print(f"[bold]{escape(model['title'])}[/]", soft_wrap=True)
    for s in model["sites"]:
        abroad = "" if s["in_country"] else " [red](abroad)[/]"
        console.print(
            f"{s['site']} ({s['country']}){abroad}: {escape(s['provider'])}, "
            f"{escape(s['address'])}, {escape(s['city'])}; {_counts(s)}; "
            f"categories: {escape(', '.join(s['categories']))}",
            soft_wrap=True,
        )
    if not model["sites"]:
        console.print("no site holds data of subjects this law covers")
    n = model["notice"]
    due = f", due {n['due']}" + (" (overdue)" if n.get("overdue") else "") if n["due"] else ""
    console.print(f"notice {n['filing'] or '(none)'}: {n['status']}{due}", soft_wrap=True)
    for c in model["changes"]:
        console.print(
            f"  {c['site']}: {c['change']}{' ' + c['category'] if c['category'] else ''}"
            f"{' on ' + c['on'] if c['on'] else ''}{' (entry ' + c['entry'] + ')' if c['entry'] else ''}",
            soft_wrap=True,
        )


@report_app.command("compliance")
def compliance_cmd(
    jurisdiction: str = typer.Option(..., "--jurisdiction", help="A pack's jurisdiction (RU, EU, CN, ...)."),
    since: str = typer.Option(..., "--since", help="YYYY-MM-DD: the period's first day."),
    until: str = typer.Option(..., "--until", help="YYYY-MM-DD: the period's last day."),
    fmt: str | None = FormatOpt,
    out: Path | None = OutOpt,
    findings: list[Path] = typer.Option(
        [], "--findings", metavar="SCAN.json",
        help="A `domicile scan --json` report whose findings under this law join the report; repeatable.",
    ),
    config: str | None = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:  # fmt: skip
    """The compliance report of a jurisdiction for a period: records and subjects by site,
    transfers by destination over time, decisions by outcome and rule, masked and refused
    disclosures, outstanding obligations, parity and the audit's verification with its
    witnessed heads; every figure with the audit entries it came from. Writes nothing to
    the deployment."""
    from domicile.policy import parse_date
    from domicile.reports import compliance, require_extra

    with errors(as_json):
        fmt = _format(fmt, out)
        require_extra(fmt or "json")
        first, last = parse_date(since, "--since"), parse_date(until, "--until")
        with vault(config, as_json, read_only=True) as d, _status(as_json):
            model = compliance(
                d, jurisdiction=jurisdiction, since=first, until=last, scans=_scans(findings)
            )
        if _emit(model, fmt, out, as_json):
            return
    p = model["period"]
    console.rule(f"[bold]{model['jurisdiction']}: {p['since']} to {p['until']}")
    for s in model["holdings"]["sites"]:
        console.print(f"{s['site']} ({s['country']}): {_counts(s)}")
    t = model["transfers"]
    console.print(
        f"transfers: {t['total']}"
        + "".join(f"; to {k}: {v['transfers']}" for k, v in t["by_destination"].items())
    )
    console.print(
        "decisions: "
        + (", ".join(f"{k} {v}" for k, v in model["decisions"]["by_outcome"].items()) or "none")
    )
    console.print(
        f"masked disclosures: {model['masked']['total']}; refusals: {model['refused']['total']}"
    )
    for o in model["obligations"]["outstanding"]:
        console.print(
            f"[yellow]outstanding[/] {escape(o['id'])}: {escape(o['text'])}"
            + (f" (due {escape(o['due'])})" if o["due"] else ""),
            soft_wrap=True,
        )
    for w in model["obligations"]["waiting"]:
        console.print(
            f"[yellow]waiting[/] {escape(w['for'])}: allowed from {w['allowed_from']}",
            soft_wrap=True,
        )
    console.print(
        f"parity: {'ok' if model['parity']['ok'] else str(model['parity']['discrepancies']) + ' discrepancies'}"
    )
    console.print(
        "audit: " + ", ".join(f"{s['site']} {s['status']}" for s in model["audit"]["sites"])
    )
    console.print("(--out FILE.pdf or --format html|json for the full report with its sources)")


def register(app: typer.Typer) -> None:
    app.add_typer(report_app, name="report")


def _scans(paths: list[Path]) -> list[dict[str, Any]]:
    """The scan reports given with --findings, each checked to be one."""
    import json

    from domicile.errors import BadInput

    out = []
    for path in paths:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise BadInput(f"--findings {path}: {exc.strerror}") from None
        except ValueError:
            raise BadInput(
                f"--findings {path}: not JSON",
                hint="give the file `domicile scan --json --out` wrote",
            ) from None
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("findings"), list)
            or "located_in" not in data
        ):
            raise BadInput(
                f"--findings {path}: not a scan report",
                hint="give the file `domicile scan --json --out` wrote",
            )
        out.append(data)
    return out
