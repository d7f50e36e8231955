"""``domicile rights``: subjects' requests, their statutory deadlines, and their fulfilment.

``list``, ``show`` and ``act`` only read: they open no site and write nothing, not even
the requests file when there is none yet.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from domicile.cli._output import console, emit_json, errors, pairs
from domicile.cli.vault import ConfigOpt, JsonOpt, vault
from domicile.errors import BadInput

rights_app = typer.Typer(
    help="Subjects' requests (access, rectification, erasure, restriction, withdrawal of"
    " consent, portability) and the deadlines the law sets for them.",
    no_args_is_help=True,
)

_KIND_HELP = "access, rectification, erasure, restriction, withdrawal or portability."
NodeOpt = typer.Option(
    None, "--node", metavar="SITE",
    help="As federation node SITE: other sites' parts are done by their own nodes, over the node channel.",
)  # fmt: skip


def _config(config: str | None) -> Any:
    from domicile.config import load_config

    return load_config(config)


def _new_file(path: str | None) -> Path | None:
    """A file to create: refused before anything is done if it exists or cannot be made."""
    if path is None:
        return None
    p = Path(path)
    if p.exists():
        raise BadInput(f"{path} exists already", hint="give a new file name")
    if not p.parent.is_dir():
        raise BadInput(f"the folder of {path} does not exist", hint="create it first")
    return p


def _write(p: Path | None, text: str) -> None:
    if p is None:
        return
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


def _due_line(req: dict[str, Any]) -> str:
    d = req["deadline"]
    if d is None:
        return "due: no loaded law sets a deadline for this kind of request"
    line = f"due: {req['due']} ({d['period']} under {d['law']}, rule {d['rule']})"
    if req.get("extension"):
        line += f", extended from {req['extension']['from']}"
    elif d["extension"]:
        line += f"; extendable by {d['extension']} to {d['extended_due']} with a reasoned notice"
    reading = (d.get("reading") or {}).get("status")
    if reading and reading != "statutory":  # a period read from less than the statute's text
        line += f"; the reading behind it is {reading.replace('_', ' ')}"
    return line


def _print_request(req: dict[str, Any]) -> None:
    console.print(f"[bold]{req['id']}[/] {req['kind']} request, {req['status']}", soft_wrap=True)
    console.print(f"  received {req['received']} via {req['via']}", soft_wrap=True)
    ident = req["identity"]
    console.print(
        f"  identity: found by {', '.join(ident['by'])}; checked by"
        f" {escape(ident['checked_by'])} ({ident['verified_how']})",
        soft_wrap=True,
    )
    holdings = req["subject"]["holdings"]
    if holdings:
        for h in holdings:
            console.print(
                f"  site {h['site']} ({h['country']}): {h['records']} records,"
                f" {h['copies']} copies",
                soft_wrap=True,
            )
    else:
        console.print("  the subject was not found at any site", soft_wrap=True)
    console.print(f"  {escape(_due_line(req))}", soft_wrap=True)
    if req["laws"]:
        console.print(f"  laws considered: {escape('; '.join(req['laws']))}", soft_wrap=True)
    for other in req["deadlines"][1:]:
        console.print(f"    also {other['law']} ({other['rule']}): {other['due']}", soft_wrap=True)
    from domicile.rights.blocks import block_state

    state = block_state(req)
    if state:
        console.print(f"  {escape(state)}", soft_wrap=True)
    if req.get("overdue"):
        console.print("  [red]overdue[/]")
    for h in req["history"]:
        console.print(f"  {h['at'][:19]} {h['step']} by {escape(str(h['by']))}", soft_wrap=True)
    for act in req.get("acts", []):
        console.print(f"  act of destruction {act['act']['id']}: `domicile rights act {req['id']}`")
    if req["outcome"]:
        o = req["outcome"]
        on_time = "on time" if o["on_time"] else "late"
        console.print(f"  closed: {o['outcome']} ({on_time})", soft_wrap=True)


@rights_app.command("open")
def open_(
    kind: str = typer.Argument(..., help=_KIND_HELP),
    identity: list[str] = typer.Option(
        None, "--identity", help="K=V: an identifying field (or its category) and its value;"
        " incountry.profile_key=V finds the InCountry API's records of that profile key."
    ),
    checked_by: str = typer.Option(
        ..., "--identity-checked-by", help="The member of staff who checked the identity."
    ),
    verified_how: str = typer.Option(
        ..., "--verified-how",
        help="identity_document, account_login, email_confirmation, phone_confirmation,"
        " signed_letter, in_person, representative_authority or other.",
    ),
    via: str = typer.Option("email", "--via", help="email, post, web, phone, in_person, api or other."),
    received: str | None = typer.Option(None, "--received", help="YYYY-MM-DD (default today)."),
    node: str | None = NodeOpt,
    config: str | None = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:  # fmt: skip
    """Open a request: find the subject at every site by its identity (blind indexes: no
    value leaves its site), record who checked the identity and how, and set the deadline
    from the laws that cover the subject (the earliest binds)."""
    from domicile.rights import open_request

    with errors(as_json):
        ident = pairs(identity, "--identity")
    with vault(config, as_json, node=node) as d, errors(as_json):
        req = open_request(
            d, kind, ident, checked_by=checked_by, verified_how=verified_how, via=via,
            received=received,
        )  # fmt: skip
    if as_json:
        emit_json(req)
    else:
        _print_request(req)


@rights_app.command("list")
def list_(
    due_before: str | None = typer.Option(None, "--due-before", help="YYYY-MM-DD."),
    status: str | None = typer.Option(None, "--status", help="open, extended, closed or overdue."),
    config: str | None = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Requests on record, soonest due first. Reads only."""
    from domicile.rights import list_requests

    with errors(as_json):
        rows = list_requests(_config(config), due_before=due_before, status=status)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        console.print("no requests on record")
        return
    table = Table(title="Subjects' requests")
    for col in ("id", "kind", "status", "received", "due", "law", "sites"):
        table.add_column(col)
    for r in rows:
        due = f"[red]{r['due']} overdue[/]" if r["overdue"] else (r["due"] or "none")
        table.add_row(
            r["id"], r["kind"], r["outcome"] or r["status"], r["received"], due,
            r["law"] or "", ", ".join(r["sites"]),
        )  # fmt: skip
    console.print(table)


@rights_app.command("show")
def show_(
    request_id: str = typer.Argument(...),
    config: str | None = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """One request: the subject's sites, the deadlines and the law that set them, and its
    history. Reads only."""
    from domicile.rights import show

    with errors(as_json):
        req = show(_config(config), request_id)
    if as_json:
        emit_json(req)
    else:
        _print_request(req)


@rights_app.command("fulfil")
def fulfil_(
    request_id: str = typer.Argument(...),
    field: list[str] = typer.Option(
        None, "--field", help="Rectification: NAME=VALUE, the corrected value."
    ),
    out: str | None = typer.Option(
        None, "--out", help="Access/portability: the subject's data as JSON (a new file)."
    ),
    html: str | None = typer.Option(
        None, "--html", help="A readable page: the subject's data, or the act of destruction."
    ),
    act: str | None = typer.Option(None, "--act", help="Erasure: the signed act as JSON (a new file)."),
    erase: bool = typer.Option(False, "--erase", help="Withdrawal of consent: erase the data too."),
    node: str | None = NodeOpt,
    config: str | None = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:  # fmt: skip
    """Do what the request asks at every site that holds the subject: produce its data
    (access, portability), correct every record and copy (rectification), or erase it
    everywhere and sign an act of destruction (erasure). Each step is audited."""
    from domicile.rights import fulfil
    from domicile.rights.fulfil import as_json as package_json
    from domicile.rights.render import access_html, act_html

    with errors(as_json):
        fields = pairs(field, "--field")
        paths = [_new_file(p) for p in (out, html, act)]
        if len({str(p) for p in paths if p is not None}) < sum(p is not None for p in paths):
            raise BadInput("give a different file for each output")
        out_p, html_p, act_p = paths
    with vault(config, as_json, node=node) as d, errors(as_json):
        from domicile.rights import show

        kind = show(d.config, request_id)["kind"]
        if kind in ("access", "portability") and not (out_p or html_p or as_json):
            raise BadInput(
                "say where the subject's data goes",
                hint="--out FILE.json and/or --html FILE.html (or --json to print it)",
            )
        req, package = fulfil(d, request_id, fields=fields, erase=erase)
    if package is not None:
        if kind in ("access", "portability"):
            _write(out_p, package_json(package))
            _write(html_p, access_html(package))
        else:
            _write(act_p, package_json(package))
            _write(html_p, act_html(package))
    step = req["history"][-1]
    if as_json:
        emit_json({"request": req, "result": package})
        return
    what = {k: v for k, v in step.items() if k not in ("at", "by", "step", "audit")}
    console.print(f"fulfilled {req['kind']} request {req['id']}", soft_wrap=True)
    for k, v in what.items():
        shown = (", ".join(map(str, v)) or "none") if isinstance(v, list) else str(v)
        console.print(f"  {k}: {escape(shown)}", soft_wrap=True)
    for p in (out_p, html_p, act_p):
        if p is not None:
            console.print(f"  wrote {escape(str(p))}", soft_wrap=True)
    console.print(f"  next: domicile rights close {req['id']} --outcome fulfilled", soft_wrap=True)


@rights_app.command("extend")
def extend_(
    request_id: str = typer.Argument(...),
    reason: str = typer.Option(..., "--reason", help="Why (sent to the subject); no personal data."),
    node: str | None = NodeOpt,
    config: str | None = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:  # fmt: skip
    """Extend the deadline by what the binding law allows (once), recording the reasoned
    notice to the subject."""
    from domicile.rights import extend

    with vault(config, as_json, node=node) as d, errors(as_json):
        req = extend(d, request_id, reason=reason)
    if as_json:
        emit_json(req)
    else:
        console.print(
            f"{req['id']}: due {req['due']} (was {req['extension']['from']});"
            f" send the subject the notice: {escape(req['extension']['notice'])}",
            soft_wrap=True,
        )


@rights_app.command("close")
def close_(
    request_id: str = typer.Argument(...),
    outcome: str = typer.Option(
        ..., "--outcome",
        help="fulfilled, partly_fulfilled, refused, no_data or withdrawn_by_subject.",
    ),
    reason: str | None = typer.Option(None, "--reason", help="Required for refused."),
    node: str | None = NodeOpt,
    config: str | None = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:  # fmt: skip
    """Close a request with its outcome; it records whether the answer was on time."""
    from domicile.rights import close

    with vault(config, as_json, node=node) as d, errors(as_json):
        req = close(d, request_id, outcome=outcome, reason=reason)
    if as_json:
        emit_json(req)
    else:
        o = req["outcome"]
        console.print(
            f"{req['id']} closed: {o['outcome']}, {'on time' if o['on_time'] else 'late'}"
            f" (due {req['due'] or 'none'})",
            soft_wrap=True,
        )


@rights_app.command("lift")
def lift_(
    request_id: str = typer.Argument(...),
    reason: str = typer.Option(
        ...,
        "--reason",
        help="Why the block ends (no personal data), e.g. the accuracy was checked.",
    ),
    config: str | None = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Lift the block a restriction or a withdrawal of consent placed, at every site that
    holds it (audited there). Closing a restriction request lifts its block too; a
    withdrawal of consent stays until it is lifted (the subject consented again)."""
    from domicile.rights import lift

    with vault(config, as_json) as d, errors(as_json):
        req = lift(d, request_id, reason=reason)
    if as_json:
        emit_json(req)
        return
    step = req["history"][-1]
    console.print(
        f"{req['id']}: {req['block']['kind']} lifted at {', '.join(step['sites']) or 'no site'}",
        soft_wrap=True,
    )
    if step["requeued"]:
        console.print(f"  {step['requeued']} copies queued again for replication", soft_wrap=True)


@rights_app.command("act")
def act_(
    request_id: str = typer.Argument(...),
    html: str | None = typer.Option(None, "--html", help="Write the readable act (a new file)."),
    config: str | None = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """The signed act of destruction of an erasure request, its signatures checked."""
    from domicile.rights import show
    from domicile.rights.render import act_html

    with errors(as_json):
        html_p = _new_file(html)
        req = show(_config(config), request_id)
        acts = req.get("acts") or []
        if not acts:
            raise BadInput(
                "the request has no act of destruction",
                hint="acts are made when an erasure is fulfilled",
            )
    with vault(config, as_json, read_only=True) as d, errors(as_json):
        from domicile.rights.acts import verify_act

        checks = verify_act(d, acts[-1])
    _write(html_p, act_html(acts[-1]))
    if as_json:
        emit_json({**acts[-1], "verified": checks})
        return
    a = acts[-1]["act"]
    console.print(
        f"{a['id']}: {a['totals']['records']} records destroyed at"
        f" {a['totals']['sites']} sites on {a['performed_at'][:10]}",
        soft_wrap=True,
    )
    what = {"act": "signature of site", "part": "part signed by the node of site",
            "missing": "no signature of site"}  # fmt: skip
    for c in checks:
        tag = "[green]valid[/]" if c["valid"] else "[red]INVALID[/]"
        console.print(f"  {what[c['signed']]} {c['site']}: {tag}")
    if html_p is not None:
        console.print(f"  wrote {escape(str(html_p))}", soft_wrap=True)
