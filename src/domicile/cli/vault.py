"""Vault commands: init, put, get, find, update, delete, erase, sites, audit, keys.

Exit codes: 0 success, 2 bad input, 3 refused by policy, 4 a site is unavailable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from domicile.cli._output import console, emit_json, errors, pairs
from domicile.config import CONFIG_ENV

ConfigOpt = typer.Option(
    None, "--config", envvar=CONFIG_ENV, help="Configuration file (default ./domicile.yaml)."
)
JsonOpt = typer.Option(False, "--json", help="Print one JSON object.")
PurposeOpt = typer.Option(..., "--purpose", help="Why the data is processed, e.g. account_signup.")

audit_app = typer.Typer(help="The tamper-evident audit ledger.", no_args_is_help=True)
keys_app = typer.Typer(help="Site keys.", no_args_is_help=True)


@contextmanager
def vault(config: str | None, as_json: bool) -> Iterator[Any]:
    from domicile.vault import Domicile

    with errors(as_json):
        d = Domicile.open(config)
        try:
            yield d
        finally:
            d.close()


def _fields(values: list[str] | None) -> dict[str, str]:
    return pairs(values, "--field")


def _show(data: Any, as_json: bool, human: Callable[[], None]) -> None:
    if as_json:
        emit_json(data)
    else:
        human()


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")
    app.add_typer(keys_app, name="keys")

    @app.command()
    def init(
        directory: str = typer.Argument(".", help="Folder for domicile.yaml and its data."),
        force: bool = typer.Option(False, "--force", help="Overwrite an existing domicile.yaml."),
        as_json: bool = JsonOpt,
    ) -> None:
        """Write a commented starter configuration: three SQLite sites (RU, DE, US) and a
        sample `profiles` collection; create the keyring."""
        from domicile.starter import init as write

        with errors(as_json):
            cfg = write(directory, force=force)
        out = {
            "config": cfg.source,
            "data_dir": str(cfg.data_dir),
            "sites": [s.id for s in cfg.sites],
        }
        _show(out, as_json, lambda: console.print(
            f"wrote {escape(cfg.source)} (sites: {', '.join(out['sites'])}); keyring at {escape(str(cfg.keyring_path))}"
        ))  # fmt: skip

    @app.command()
    def put(
        collection: str = typer.Argument(..., help="Collection (record type)."),
        subject: list[str] = typer.Option(
            ..., "--subject", help="Evidence KEY=VALUE, as for policy explain."
        ),
        field: list[str] = typer.Option(..., "--field", help="NAME=VALUE; repeatable."),
        purpose: str = PurposeOpt,
        config: str | None = ConfigOpt,
        as_json: bool = JsonOpt,
    ) -> None:
        """Store a record at the site the law requires; print its token."""
        with vault(config, as_json) as d, errors(as_json):
            r = d.put(collection, subject=subject, fields=_fields(field), purpose=purpose)
        _show(r.to_dict(), as_json, lambda: console.print(
            f"{r.token}\nstored at site {r.site} ({r.country}): {escape(r.decision.explanation.splitlines()[0])}"
        ))  # fmt: skip

    @app.command()
    def get(
        token: str = typer.Argument(...),
        purpose: str = PurposeOpt,
        as_site: str | None = typer.Option(
            None, "--as-site", help="The requester's site (default: local_site)."
        ),
        config: str | None = ConfigOpt,
        as_json: bool = JsonOpt,
    ) -> None:
        """Read a record. A requester in another country is a transfer, decided by policy."""
        with vault(config, as_json) as d, errors(as_json):
            r = d.get(token, purpose=purpose, as_site=as_site)
        _show(r.to_dict(), as_json, lambda: _print_record(r.to_dict()))

    @app.command()
    def find(
        collection: str = typer.Argument(...),
        field: list[str] = typer.Option(
            ..., "--field", help="NAME=VALUE of a searchable field; repeatable."
        ),
        purpose: str = PurposeOpt,
        as_site: str | None = typer.Option(None, "--as-site"),
        config: str | None = ConfigOpt,
        as_json: bool = JsonOpt,
    ) -> None:
        """Find records by searchable fields, at every site."""
        with vault(config, as_json) as d, errors(as_json):
            result = d.find(collection, where=_fields(field), purpose=purpose, as_site=as_site)
        data = result.to_dict()

        def human() -> None:
            for r in data["records"]:
                _print_record(r)
            for r in data["refused"]:
                console.print(
                    f"[red]refused[/] {r['token'][:24]}… at site {r['site']}: {escape(r['reason'])}"
                )
            for site_id in data["unavailable"]:
                console.print(f"[red]site {site_id} unavailable[/]")

        _show(data, as_json, human)
        if result.unavailable:
            raise typer.Exit(4)

    @app.command()
    def update(
        token: str = typer.Argument(...),
        field: list[str] = typer.Option(..., "--field", help="NAME=VALUE; repeatable."),
        purpose: str = PurposeOpt,
        config: str | None = ConfigOpt,
        as_json: bool = JsonOpt,
    ) -> None:
        """Change fields of a record, at its home site."""
        with vault(config, as_json) as d, errors(as_json):
            r = d.update(token, fields=_fields(field), purpose=purpose)
        _show(r.to_dict(), as_json, lambda: _print_record(r.to_dict()))

    @app.command()
    def delete(
        token: str = typer.Argument(...),
        purpose: str = PurposeOpt,
        config: str | None = ConfigOpt,
        as_json: bool = JsonOpt,
    ) -> None:
        """Delete one record (the subject's other records stay)."""
        with vault(config, as_json) as d, errors(as_json):
            out = d.delete(token, purpose=purpose)
        _show(out, as_json, lambda: console.print(f"deleted at site {out['site']}"))

    @app.command()
    def erase(
        token: str = typer.Argument(...),
        purpose: str = typer.Option("erasure", "--purpose"),
        config: str | None = ConfigOpt,
        as_json: bool = JsonOpt,
    ) -> None:
        """Erase the subject a token belongs to: destroy its key, delete its records."""
        with vault(config, as_json) as d, errors(as_json):
            out = d.erase(token, purpose=purpose)
        _show(out, as_json, lambda: console.print(
            f"erased: {out['records']} record(s) at site {out['site']}; the subject's key is destroyed"
        ))  # fmt: skip

    @app.command()
    def sites(config: str | None = ConfigOpt, as_json: bool = JsonOpt) -> None:
        """Every site: country, physical location, backend, record count, health."""
        with vault(config, as_json) as d, errors(as_json):
            rows = [s.to_dict() for s in d.sites()]

        def human() -> None:
            table = Table(title="Sites")
            for col in ("id", "country", "location", "backend", "records", "healthy"):
                table.add_column(col)
            for r in rows:
                loc = r["location"]
                table.add_row(
                    r["id"], r["country"], escape(f"{loc['provider']}, {loc['address']}"), escape(r["backend"]),
                    "-" if r["records"] is None else str(r["records"]),
                    "[green]yes[/]" if r["healthy"] else f"[red]no[/] {escape(r.get('error', ''))}",
                )  # fmt: skip
            console.print(table)

        _show(rows, as_json, human)

    @audit_app.command("verify")
    def audit_verify(
        site: str | None = typer.Option(None, "--site", help="Only this site."),
        config: str | None = ConfigOpt,
        as_json: bool = JsonOpt,
    ) -> None:
        """Prove each site's audit chain; name the first bad entry if any."""
        with vault(config, as_json) as d, errors(as_json):
            reports = d.verify_audit(site)
        ok = all(r.ok for r in reports)
        data = reports[0].to_dict() if site else {"ok": ok, "sites": [r.to_dict() for r in reports]}

        def human() -> None:
            for r in reports:
                if r.ok:
                    console.print(
                        f"[green]ok[/]  {r.site}: {r.entries} entries, {r.checkpoints} checkpoints"
                    )
                else:
                    bad = r.problems[0]
                    console.print(f"[red]BAD[/] {r.site}: entry {bad.seq}: {escape(bad.problem)}")

        _show(data, as_json, human)
        if not ok:
            raise typer.Exit(1)

    @audit_app.command("checkpoint")
    def audit_checkpoint(config: str | None = ConfigOpt, as_json: bool = JsonOpt) -> None:
        """Sign each site's current chain head."""
        with vault(config, as_json) as d, errors(as_json):
            out = d.checkpoint_audit()
        _show(out, as_json, lambda: console.print(out))

    @keys_app.command("rotate")
    def keys_rotate(
        site: str = typer.Option(..., "--site"),
        config: str | None = ConfigOpt,
        as_json: bool = JsonOpt,
    ) -> None:
        """Rotate a site's key-encryption key online, re-wrapping every subject key."""
        with vault(config, as_json) as d, errors(as_json):
            out = d.rotate_key(site)
        _show(out, as_json, lambda: console.print(out))


def _print_record(r: dict[str, Any]) -> None:
    where = f"site {r['site']} ({r['country']})" + (
        ", read across a border" if r.get("transfer") else ""
    )
    console.print(f"[bold]{r['token'][:24]}…[/] {r['collection']} v{r['version']} at {where}")
    for k, v in r["fields"].items():
        console.print(f"  {k}: {escape(str(v))}")
