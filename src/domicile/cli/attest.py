"""``domicile attest commit|status|subject|verify``: where a subject's data is, provably."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from domicile.cli._output import console, emit_json, errors, fail
from domicile.cli.vault import ConfigOpt, JsonOpt, _write_private, vault
from domicile.errors import BadInput, DomicileError, ExitCode

attest_app = typer.Typer(
    help="Signed commitments over the subjects each site holds, and proofs for one subject.",
    no_args_is_help=True,
)


@attest_app.command("commit")
def commit(
    site: str | None = typer.Option(None, "--site", help="Only this site (default: every site)."),
    config: str | None = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Rebuild each site's commitment over the subjects it holds, sign it, record it in the
    site's audit log and have the other sites witness it. Run it after writes, copies and
    erasures: a proof is refused while a site's contents differ from its commitment."""
    from domicile.attest.service import commit as do_commit

    with vault(config, as_json) as d, errors(as_json):
        out = do_commit(d, site)
    if as_json:
        emit_json(out)
    else:
        _print_commit(out)
    if out["unavailable"]:
        raise typer.Exit(ExitCode.UNAVAILABLE)
    if out["witness"]["refused"]:
        raise typer.Exit(ExitCode.CHECK_FAILED)


def _print_commit(out: dict[str, Any]) -> None:
    for s in out["sites"]:
        what = "published" if s["changed"] else "unchanged"
        console.print(
            f"{s['site']}: commitment {what} (tree of {s['size']} leaves, audit entry {s['seq']})"
        )
    for sid in out["unavailable"]:
        console.print(f"[red]site {sid} unavailable[/]: its commitment is as it was")
    for r in out["witness"]["refused"]:
        console.print(
            f"[red]{r['witness']} refused a head of {r['site']}: {escape(r['reason'])}[/]"
        )


@attest_app.command("status")
def status(config: str | None = ConfigOpt, as_json: bool = JsonOpt) -> None:
    """Whether each site's newest commitment still matches what it holds. Writes nothing;
    exits 1 when some site needs `domicile attest commit`."""
    from domicile.attest.service import status as do_status

    with vault(config, as_json, read_only=True) as d, errors(as_json):
        out = do_status(d)
    if as_json:
        emit_json({"ok": all(s["current"] for s in out), "sites": out})
    else:
        for s in out:
            if not s["committed"]:
                console.print(f"[yellow]{s['site']}: no commitment yet[/]")
            elif s["current"]:
                console.print(f"[green]ok[/]  {s['site']}: current (signed {s['signed_at']})")
            else:
                console.print(
                    f"[yellow]stale[/] {s['site']}: changed since {s['signed_at']}; "
                    "run `domicile attest commit`"
                )
    if not all(s["current"] for s in out):
        raise typer.Exit(ExitCode.CHECK_FAILED)


@attest_app.command("subject")
def subject(
    token: str | None = typer.Option(None, "--token", help="A token of the subject's records."),
    identity: str | None = typer.Option(
        None, "--identity", help="FIELD=VALUE of a field that identifies the subject."
    ),
    out: str | None = typer.Option(None, "--out", help="Write the proof to this file (0600)."),
    heads: str | None = typer.Option(
        None,
        "--heads",
        help="The verifier's heads file: the proof shows that each newer head extends it.",
    ),
    config: str | None = ConfigOpt,
    as_json: bool = JsonOpt,
    quiet: bool = typer.Option(
        False,
        "--quiet",
        "-q",
        help="Print only the subject's keyed hash (what `attest verify --subject` checks).",
    ),
) -> None:
    """A proof that the subject's primary records are committed at its home site and that
    every other site holds nothing of it, or a lawful copy with the transfer entries that
    allowed it. It names the subject by a keyed hash only. Writes nothing but --out."""
    from domicile.attest.service import prove

    with errors(as_json):
        ident = None
        if identity is not None:
            name, sep, value = identity.partition("=")
            if not sep or not name.strip() or not value.strip():
                # The value is personal data: never echoed back.
                raise BadInput("--identity is FIELD=VALUE", hint="write e.g. --identity email=...")
            ident = (name.strip(), value.strip())
        since = None
        if heads is not None:
            from domicile.audit.heads import HeadsFile

            since = {site: h.size for site, h in HeadsFile.load(heads).heads.items()}
    with vault(config, as_json, read_only=True) as d, errors(as_json):
        doc = prove(d, token=token, identity=ident, since=since)
        if out is not None:
            _write_private(out, doc)
    if quiet:
        console.print(doc["subject"], soft_wrap=True)
        return
    if as_json and out is None:
        emit_json(doc)
        return
    held = [s for s, v in doc["sites"].items() if v["holds"] != "nothing"]
    summary = {
        "subject": doc["subject"],
        "home": doc["home"],
        "held_at": held,
        "out": out,
    }
    if as_json:
        emit_json(summary)
        return
    console.print(
        f"subject {doc['subject'][:16]}... (keyed hash): primary records at {doc['home']}; "
        f"held at {', '.join(held)}; every other site proves it holds nothing",
        soft_wrap=True,
    )
    if not out:
        console.print("the proof itself: --json, or --out FILE")
    else:
        console.print(
            f"wrote {escape(out)}; check it with: domicile attest verify {escape(out)} --keys HEADS "
            f"--subject {doc['subject']}",
            soft_wrap=True,
        )


@attest_app.command("verify")
def verify(
    proof: str = typer.Argument(..., help="A proof from `domicile attest subject`."),
    keys: str = typer.Option(
        ..., "--keys", help="A heads file (`domicile audit heads --out`): public keys and heads."
    ),
    expect: str = typer.Option(
        ...,
        "--subject",
        help="The subject's keyed hash the proof must be about: the subject's application "
        "keeps it from the API's first answer (`subject`), an operator prints it with "
        "`attest subject -q`. Without it a proof could be about anyone.",
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Check a proof offline, with public keys only, against the subject it must be about.
    Exit 0 good, 1 a check failed (each named: another subject, a stale or forged head),
    2 not a proof, not a heads file, or no --subject."""
    from domicile.attest import verifier
    from domicile.audit.heads import HeadsFile

    try:
        heads = HeadsFile.load(Path(keys))
        report = verifier.check(verifier.load(proof), heads, expect)
    except DomicileError as exc:
        fail(exc, as_json=as_json)
    if as_json:
        emit_json(report.to_dict())
    else:
        for line in verifier.render(report).splitlines():
            bad = line.startswith("FAILED") or line.endswith("checks failed")
            console.print(f"[red]{escape(line)}[/]" if bad else escape(line), soft_wrap=True)
    if not report.ok:
        raise typer.Exit(ExitCode.CHECK_FAILED)
