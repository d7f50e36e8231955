"""Vault commands: init, put, get, find, update, delete, erase, expire, sites, audit, keys.

Sites are created only by ``init`` and ``sites create``; every other command finds a
missing or foreign database unavailable (exit 4).

Exit codes: the one table, ``domicile.errors.ExitCode``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.table import Table

from domicile.cli._output import changes, console, emit_json, err_console, errors, pairs
from domicile.config import CONFIG_ENV
from domicile.errors import BadInput, ExitCode

if TYPE_CHECKING:
    from domicile.vault import ReadResult

ConfigOpt = typer.Option(
    None,
    "--config",
    envvar=CONFIG_ENV,
    help="Configuration file, or the folder holding domicile.yaml (default ./domicile.yaml).",
)
JsonOpt = typer.Option(False, "--json", help="Print one JSON object.")
PurposeOpt = typer.Option(..., "--purpose", help="Why the data is processed, e.g. account_signup.")

audit_app = typer.Typer(help="The tamper-evident audit ledger.", no_args_is_help=True)
keys_app = typer.Typer(help="Site keys.", no_args_is_help=True)
sites_app = typer.Typer(help="The deployment's sites: list them, create them, upgrade them.")
filings_app = typer.Typer(
    help="Filings on record: notices, clauses, regulators' bans.", no_args_is_help=True
)


@contextmanager
def vault(
    config: str | None, as_json: bool, *, read_only: bool = False, node: str | None = None
) -> Iterator[Any]:
    """The vault of the configuration; ``read_only``: a command that must write nothing
    (its stores opened read-only, and no witness round when it closes); ``node``: as that
    federation node runs it (its own site here, the others through their nodes)."""
    from domicile.access import cli_operator
    from domicile.vault import Domicile

    with errors(as_json):
        # Every operation of the CLI is the local operator's, named in the audit.
        d: Domicile
        if node is not None:
            from domicile.config import load_config
            from domicile.federation.serving import open_node

            d = open_node(load_config(config), node, operator=cli_operator(), read_only=read_only)
        else:
            d = Domicile.open(config, operator=cli_operator(), read_only=read_only)
        try:
            yield d
        finally:
            d.close(checkpoint=not read_only)


def _where(p: Any) -> str:
    if p.seq is None:
        return ""
    return (
        f"entries {p.seq}-{p.until}: "
        if p.until is not None and p.until != p.seq
        else f"entry {p.seq}: "
    )


def _verify_line(r: Any) -> str:
    if not r.ok:
        bad = r.problems[0]
        return f"[red]TAMPERED[/] {r.site}: {_where(bad)}{escape(bad.problem)}"
    held = ", ".join([*r.witnesses, *(["the heads file"] if r.heads_file else [])]) or "nobody"
    line = f"{r.site}: {r.entries} entries"
    if r.status == "empty":
        return f"[green]ok[/]  {line}"
    if r.witnessed:
        line += f"; {r.witnessed} verified against heads held by {held}"
    if r.unwitnessed:
        line += f"; {r.unwitnessed} appended since the newest witnessed head, not yet witnessed (run `domicile audit witness`)"
    tag = {
        "verified": "[green]ok[/]",
        "partly witnessed": "[yellow]ok[/]",
        "not witnessed": "[yellow]unwitnessed[/]",
    }[r.status]
    if r.unavailable_witnesses:
        line += f"; witnesses not answering: {', '.join(r.unavailable_witnesses)}"
    return f"{tag}  {line}"


def _write_private(path: str, data: Any) -> None:
    """Write JSON to a new file readable by its owner only."""
    import json
    import os

    from domicile.errors import BadInput

    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        raise BadInput(f"cannot write {path}: {exc.strerror}") from None
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2)
        fh.write("\n")


def _site_hosts(values: list[str] | None, federated: bool, directory: str) -> dict[str, list[str]]:
    """``--host SITE=HOST`` options of ``init --federated``, checked before anything is
    written (the sites are the starter configuration's)."""
    if values and not federated:
        raise BadInput("--host is for the nodes of `init --federated`", hint="add --federated")
    if not federated:
        return {}
    from domicile.config import parse_config
    from domicile.deploy.starter import STARTER
    from domicile.federation.setup import check_hosts, refuse_existing_ca

    hosts: dict[str, list[str]] = {}
    for raw in values or []:
        site, sep, name = raw.partition("=")
        if not sep or not site.strip() or not name.strip():
            raise BadInput(
                f"--host {raw!r} is not SITE=HOST", hint="write e.g. --host ru=node-ru.example.com"
            )
        hosts.setdefault(site.strip(), []).append(name.strip())
    starter = parse_config(STARTER, "starter", Path(directory).resolve())
    check_hosts(hosts, [s.id for s in starter.sites])
    refuse_existing_ca(starter.data_dir)
    return hosts


def _fields(values: list[str] | None) -> dict[str, str]:
    return pairs(values, "--field")


def _show(data: Any, as_json: bool, human: Callable[[], None]) -> None:
    if as_json:
        emit_json(data)
    else:
        human()


def register(app: typer.Typer) -> None:
    app.add_typer(sites_app, name="sites")
    app.add_typer(audit_app, name="audit")
    app.add_typer(keys_app, name="keys")
    app.add_typer(filings_app, name="filings")

    @app.command()
    def init(
        directory: str = typer.Argument(".", help="Folder for domicile.yaml and its data."),
        force: bool = typer.Option(False, "--force", help="Overwrite an existing domicile.yaml."),
        federated: bool = typer.Option(
            False,
            "--federated",
            help="Also create the deployment CA and a node certificate per site (preview).",
        ),
        host: list[str] | None = typer.Option(
            None, "--host", help="With --federated: SITE=HOST, a host of a site's node; repeatable."
        ),
        as_json: bool = JsonOpt,
    ) -> None:
        """Write a commented starter configuration: three SQLite sites (RU, DE, US) and a
        sample `profiles` collection; create the keyring and each site's database and key
        store (the only command besides `sites create` that creates them). With
        --federated, also the deployment CA and each site's node bundle under
        DATA_DIR/federation/."""
        from domicile.deploy.starter import init as write

        with errors(as_json):
            hosts = _site_hosts(host, federated, directory)
            cfg = write(directory, force=force)
            fed = None
            if federated:
                from domicile.federation.setup import init_federation

                fed = init_federation(cfg, hosts)
        out: dict[str, Any] = {
            "config": cfg.source,
            "data_dir": str(cfg.data_dir),
            "sites": [s.id for s in cfg.sites],
        }
        if fed is not None:
            out["federation"] = fed

        def human() -> None:
            console.print(
                f"wrote {escape(cfg.source)} and set up sites {', '.join(out['sites'])}; keyring at {escape(str(cfg.keyring_path))}",
                soft_wrap=True,
            )
            if fed is not None:
                console.print(
                    f"federation CA in {escape(fed['ca'])}; node bundles for {', '.join(fed['nodes'])} beside it",
                    soft_wrap=True,
                )

        _show(out, as_json, human)

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
        quiet: bool = typer.Option(
            False, "--quiet", "-q", help="Print only the token, e.g. for TOKEN=$(domicile put ...)."
        ),
    ) -> None:
        """Store a record at the site the law requires; print its token."""
        with vault(config, as_json) as d, errors(as_json):
            r = d.put(collection, subject=subject, fields=_fields(field), purpose=purpose)
        if quiet and not as_json:
            print(r.token)
            return
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
        _show(r.to_dict(), as_json, lambda: _print_record(r))

    @app.command()
    def find(
        collection: str = typer.Argument(...),
        field: list[str] = typer.Option(
            ..., "--field", help="NAME=VALUE of a searchable field; repeatable."
        ),
        purpose: str = PurposeOpt,
        as_site: str | None = typer.Option(
            None, "--as-site", help="The requester's site (default: local_site)."
        ),
        config: str | None = ConfigOpt,
        as_json: bool = JsonOpt,
    ) -> None:
        """Find records by searchable fields, at every site."""
        with vault(config, as_json) as d, errors(as_json):
            result = d.find(collection, where=_fields(field), purpose=purpose, as_site=as_site)
        data = result.to_dict()

        def human() -> None:
            for r in result.records:
                _print_record(r)
            for x in data["refused"]:
                console.print(
                    f"[red]refused[/] {x['token']} at site {x['site']}: {escape(x['reason'])}",
                    soft_wrap=True,
                )
            for site_id in data["unavailable"]:
                console.print(f"[red]site {site_id} unavailable[/]")
            if not (result.records or data["refused"] or data["unavailable"]):
                console.print("no record matches")

        _show(data, as_json, human)
        if result.unavailable:
            raise typer.Exit(4)

    @app.command()
    def update(
        token: str = typer.Argument(...),
        field: list[str] = typer.Option(
            ..., "--field", help="NAME=VALUE sets a field, NAME= clears it; repeatable."
        ),
        purpose: str = PurposeOpt,
        config: str | None = ConfigOpt,
        as_json: bool = JsonOpt,
    ) -> None:
        """Change fields of a record, at its home site; show it as a read from the local site
        would (full, masked, or only the new version when that read is refused)."""
        from domicile.vault import ReadResult

        with vault(config, as_json) as d, errors(as_json):
            r = d.update(token, fields=changes(field), purpose=purpose)
        if isinstance(r, ReadResult):
            _show(r.to_dict(), as_json, lambda: _print_record(r))
        else:
            _show(r.to_dict(), as_json, lambda: console.print(f"updated: version {r.version}"))

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
        """Erase the subject a token belongs to: destroy its key, delete its records, and at
        once its copies and keys at every site that may hold copies and answers."""
        with vault(config, as_json) as d, errors(as_json):
            out = d.erase(token, purpose=purpose)

        def human() -> None:
            console.print(
                f"erased: {out['records']} record(s) at site {out['site']}; the subject's key is destroyed"
            )
            copies = out["copies"]
            if copies["deleted"]:
                console.print(f"copies erased at: {', '.join(copies['deleted'])}")
            if copies["pending"]:
                console.print(
                    f"[yellow]copies pending at: {', '.join(copies['pending'])}[/] "
                    "(those sites did not answer; `domicile replicate` finishes there)"
                )

        _show(out, as_json, human)

    @app.command()
    def status(config: str | None = ConfigOpt, as_json: bool = JsonOpt) -> None:
        """Which deployment this is, and how it stands: its sites and their health, the
        replication backlog, the clients and the filings on record. Writes nothing; exits
        4 when a site is down."""
        from domicile.cli.service import running_server
        from domicile.clients import ClientRegistry
        from domicile.vault.replication import Replicator

        with vault(config, as_json, read_only=True) as d, errors(as_json):
            cfg = d.config
            sites = [s.to_dict() for s in d.sites()]
            clients = ClientRegistry(
                cfg.data_dir / "clients.json", [c.model_dump() for c in cfg.model.clients]
            ).all()
            out: dict[str, Any] = {
                "deployment": {
                    "config": str(Path(cfg.source).resolve()),
                    "environment_id": cfg.model.environment_id,
                    "data_dir": str(cfg.data_dir),
                    "local_site": cfg.local_site,
                    "default_site": cfg.model.default_site,
                },
                "sites": sites,
                "replication": {"pending": Replicator(d).pending()},
                "clients": [
                    {"client_id": c.id, "name": c.name, "scopes": sorted(c.scopes)} for c in clients
                ],
                "filings": [e.to_dict() for e in d.filings.entries()],
                "server": running_server(cfg),
            }

        def human() -> None:
            dep = out["deployment"]
            console.print(f"deployment: {escape(dep['config'])}", soft_wrap=True)
            console.print(
                f"  environment {escape(dep['environment_id'])}; local site {dep['local_site']};"
                f" data in {escape(dep['data_dir'])}",
                soft_wrap=True,
            )
            for r in sites:
                state = "[green]up[/]" if r["healthy"] else f"[red]down[/]: {escape(_reason(r))}"
                n = r["records"]
                count = "" if n is None else f", {n} record{'' if n == 1 else 's'}"
                console.print(
                    f"  site {r['id']} ({r['country']}, {escape(r['location'].get('city', ''))})"
                    f"{count}: {state}",
                    soft_wrap=True,
                )
            console.print(f"  replication: {out['replication']['pending']} copies waiting")
            names = [c["client_id"] for c in out["clients"]]
            console.print(f"  clients: {len(names)}" + (f" ({', '.join(names)})" if names else ""))
            filed = [f"{f['name']} from {f['date']}" for f in out["filings"]]
            console.print("  filings on record: " + (", ".join(filed) or "none"), soft_wrap=True)
            srv = out["server"]
            console.print(
                f"  server: {srv['url']} (pid {srv['pid']}, {srv['processes']} processes, since {srv['since']})"
                if srv
                else "  server: none running for this deployment",
                soft_wrap=True,
            )

        _show(out, as_json, human)
        if any(not r["healthy"] for r in sites):
            raise typer.Exit(ExitCode.UNAVAILABLE)

    @sites_app.callback(invoke_without_command=True)
    def sites(ctx: typer.Context, config: str | None = ConfigOpt, as_json: bool = JsonOpt) -> None:
        """Every site: country, physical location, backend, record count, health. With a
        command: set sites up (`create`) or upgrade their schemas (`migrate`)."""
        if ctx.invoked_subcommand is not None:
            return
        with vault(config, as_json, read_only=True) as d, errors(as_json):
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
                    "[green]yes[/]" if r["healthy"] else f"[red]down[/]: {escape(_reason(r))}",
                )  # fmt: skip
            console.print(table)

        _show(rows, as_json, human)
        if any(not r["healthy"] for r in rows):
            raise typer.Exit(ExitCode.UNAVAILABLE)  # listed all the same; a monitor sees it

    @sites_app.command("create")
    def sites_create(
        site_id: str | None = typer.Argument(None, help="A site of the configuration, e.g. ru."),
        all_sites: bool = typer.Option(
            False, "--all", help="Every site of the configuration that is not set up yet."
        ),
        adopt: bool = typer.Option(
            False,
            "--adopt",
            help="Take in the site's existing database and key store (made by an older "
            "domicile): give them creation ids and record them.",
        ),
        create_database: bool = typer.Option(
            False,
            "--create-database",
            help="PostgreSQL: create the database too (default: it must exist, empty).",
        ),
        config: str | None = ConfigOpt,
        as_json: bool = JsonOpt,
    ) -> None:
        """Create a site of the configuration (or, with --all, each one not set up yet): its
        database (a SQLite file, or the schema in an empty PostgreSQL database), its key
        store and its keys, recorded in the deployment. Nothing else creates a site."""
        from domicile.config import load_config
        from domicile.errors import BadInput
        from domicile.setup import create_deployment, create_site

        with errors(as_json):
            if (site_id is None) == (not all_sites):
                raise BadInput(
                    "name one site, or pass --all", hint="e.g. `domicile sites create ru`"
                )
            cfg = load_config(config)
            if site_id is not None:
                done = [create_site(cfg, site_id, adopt=adopt, create_database=create_database)]
            else:
                done = create_deployment(cfg, adopt=adopt, create_database=create_database)
        rows = [d.to_dict() for d in done]
        _show(rows[0] if site_id else rows, as_json, lambda: console.print("\n".join(
            f"site {d.site}: {d.outcome} (database {d.record.store[:8]}…, key store {d.record.keys[:8]}…)"
            for d in done
        )))  # fmt: skip

    @sites_app.command("migrate")
    def sites_migrate(
        site: str | None = typer.Option(None, "--site", help="Only this site."),
        config: str | None = ConfigOpt,
        as_json: bool = JsonOpt,
    ) -> None:
        """Upgrade the schema of each site's database and key store to this domicile's
        (commands that write do it too; read-only ones never do)."""
        from domicile.config import load_config
        from domicile.setup import migrate_sites

        with errors(as_json):
            out = migrate_sites(load_config(config), [site] if site else None)
        _show(out, as_json, lambda: console.print(
            "\n".join(f"site {r['site']}: schema {r['site_schema']}, key store {r['key_schema']}" for r in out)
        ))  # fmt: skip

    @audit_app.command("verify")
    def audit_verify(
        site: str | None = typer.Option(None, "--site", help="Only this site."),
        heads: str | None = typer.Option(
            None, "--heads", help="Also check against a heads file kept offline (audit heads)."
        ),
        require_witnessed: bool = typer.Option(
            False,
            "--require-witnessed",
            help="Fail (exit 1) when some entries are not yet covered by a witnessed head.",
        ),
        deployment: bool = typer.Option(
            False,
            "--deployment",
            help="Every node's log, each verified by its own node, asked over the node channel (with --node).",
        ),
        node: str | None = typer.Option(
            None,
            "--node",
            metavar="SITE",
            help="With --deployment: the node that asks (this host's).",
        ),
        config: str | None = ConfigOpt,
        as_json: bool = JsonOpt,
    ) -> None:
        """Verify each site's audit log against its signed heads, its witnesses (the other
        sites) and a heads file; name what was found and where. Writes nothing.

        With `--deployment --node SITE`, node SITE asks every other node to verify its own
        log and checks each signed answer against the heads it witnessed (exit 4 when a
        node does not answer, 1 when a log does not verify)."""
        if deployment or node is not None:
            _verify_deployment(deployment, node, site, heads, require_witnessed, config, as_json)
            return
        with vault(config, as_json, read_only=True) as d, errors(as_json):
            reports = d.verify_audit(site, heads=heads)
        ok = all(r.ok for r in reports)
        whole = all(r.unwitnessed == 0 for r in reports)
        data = reports[0].to_dict() if site else {"ok": ok, "sites": [r.to_dict() for r in reports]}

        def human() -> None:
            for r in reports:
                console.print(_verify_line(r))
                for p in r.problems[1:]:
                    console.print(f"      also: {_where(p)}{escape(p.problem)}")

        _show(data, as_json, human)
        if not ok or (require_witnessed and not whole):
            raise typer.Exit(1)

    def _verify_deployment(
        deployment: bool,
        node: str | None,
        site: str | None,
        heads: str | None,
        require_witnessed: bool,
        config: str | None,
        as_json: bool,
    ) -> None:
        from domicile.federation.verify import verify_deployment

        with errors(as_json):
            if not deployment or node is None:
                raise BadInput(
                    "--deployment and --node go together: the node that asks the others",
                    hint="domicile audit verify --deployment --node SITE",
                )
            if site is not None or heads is not None:
                raise BadInput(
                    "--site and --heads check logs in one process; --deployment asks the nodes",
                    hint="leave them out, or leave out --deployment and --node",
                )
        with vault(config, as_json, read_only=True, node=node) as d, errors(as_json):
            out = verify_deployment(d)
        data = out.to_dict()
        whole = all(n.report is not None and n.report.get("unwitnessed") == 0 for n in out.nodes)

        def human() -> None:
            table = Table(title=f"Audit logs of the deployment, as node {out.asked_by} asked")
            for col in ("node", "result", "entries", "witnessed", "checked here"):
                table.add_column(col)
            for n in out.nodes:
                r = n.report or {}
                state = "[green]ok[/]" if n.ok else "[red]FAILED[/]"
                table.add_row(
                    n.node, f"{state} {r.get('status', '')}", str(r.get("entries", "-")),
                    str(r.get("witnessed", "-")), escape("; ".join(n.checked)) or "-",
                )  # fmt: skip
            for sid in out.unavailable:
                table.add_row(sid, "[red]unavailable[/]", "-", "-", "did not answer")
            console.print(table)
            for n in out.nodes:
                first = (n.report or {}).get("first_bad")
                for p in [*n.problems, *([first["problem"]] if first else [])]:
                    console.print(f"[red]{n.node}[/]: {escape(p)}", soft_wrap=True)
            if out.unavailable:
                console.print(
                    f"[red]not verified[/]: {', '.join(out.unavailable)} did not answer; "
                    "run again when they are back"
                )

        _show(data, as_json, human)
        if out.unavailable:
            raise typer.Exit(ExitCode.UNAVAILABLE)
        if not out.ok or (require_witnessed and not whole):
            raise typer.Exit(ExitCode.CHECK_FAILED)

    @audit_app.command("witness")
    def audit_witness(
        node: str | None = typer.Option(
            None, "--node", metavar="SITE",
            help="As federation node SITE: sign its own log, witnessed by its peers over the node channel.",
        ),
        config: str | None = ConfigOpt,
        as_json: bool = JsonOpt,
    ) -> None:  # fmt: skip
        """Sign each site's audit log where it changed, and have every other site witness
        the new head (after checking that it extends the last one it holds)."""
        with vault(config, as_json, node=node) as d, errors(as_json):
            done = d.witness()
        data = done.to_dict()

        def human() -> None:
            for sid, head in sorted(done.heads.items()):
                by = sorted(
                    r.witness for r in done.results if r.site == sid and r.outcome != "refused"
                )
                console.print(
                    f"{sid}: head of {head.size} entries"
                    + (f", witnessed by {', '.join(by)}" if by else ", no witness answered")
                )
            for r in done.refused:
                console.print(
                    f"[red]refused[/] {r.witness} would not witness {r.site}: {escape(r.reason or '')}"
                )
            if done.unavailable:
                console.print(f"[yellow]unavailable[/]: {', '.join(sorted(done.unavailable))}")

        _show(data, as_json, human)
        if done.refused:
            raise typer.Exit(1)

    @audit_app.command("checkpoint", hidden=True)
    def audit_checkpoint(config: str | None = ConfigOpt, as_json: bool = JsonOpt) -> None:
        """The name `audit witness` had before witnesses."""
        audit_witness(None, config, as_json)

    @audit_app.command("heads")
    def audit_heads(
        out: str | None = typer.Option(None, "--out", help="Write the heads file here (0600)."),
        config: str | None = ConfigOpt,
        as_json: bool = JsonOpt,
    ) -> None:
        """Every site's public key and newest signed tree head: a heads file to keep
        offline, for `audit verify --heads FILE`. Writes nothing to the deployment."""
        with vault(config, as_json, read_only=True) as d, errors(as_json):
            data = d.audit_heads().to_dict()
        if out is not None:
            with errors(as_json):
                _write_private(out, data)

        def human() -> None:
            for sid, entry in data["sites"].items():
                head = entry["head"]
                console.print(
                    f"{sid}: "
                    + (
                        f"{head['size']} entries, root {head['root'][:16]}..., signed {head['signed_at']}"
                        if head
                        else "no signed head yet"
                    )
                )
            if out:
                console.print(
                    f"wrote {escape(out)}: keep it where whoever runs the sites cannot change it"
                )

        _show(data, as_json, human)

    @audit_app.command("prove")
    def audit_prove(
        seq: int = typer.Argument(..., help="The entry's sequence number."),
        site: str = typer.Option(..., "--site", help="The site whose log holds it."),
        config: str | None = ConfigOpt,
        as_json: bool = JsonOpt,
    ) -> None:
        """An entry of a site's log with its inclusion proof against the newest signed tree
        head, checkable with the site's public key alone (`audit check-proof`)."""
        with vault(config, as_json, read_only=True) as d, errors(as_json):
            doc = d.prove_entry(site, seq)
        _show(doc, as_json, lambda: console.print_json(data=doc))

    @audit_app.command("check-proof")
    def audit_check_proof(
        file: str = typer.Argument(..., help="A proof from `audit prove --json` (- for stdin)."),
        key: str | None = typer.Option(
            None, "--key", help="The site's public key (ed25519:...); default: the proof's own."
        ),
        as_json: bool = JsonOpt,
    ) -> None:
        """Check an inclusion proof with a public key only: no deployment needed."""
        import json
        import sys
        from pathlib import Path

        from domicile.audit.heads import check_proof, parse_public_key
        from domicile.errors import BadInput

        with errors(as_json):
            try:
                text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
                doc = json.loads(text)
            except (OSError, ValueError):
                raise BadInput(f"cannot read a JSON proof from {file}") from None
            head = check_proof(doc, parse_public_key(key) if key else None)
        out = {"ok": True, "site": head.site, "seq": doc["entry"]["seq"], "tree_size": head.size}
        _show(out, as_json, lambda: console.print(
            f"[green]ok[/] entry {out['seq']} is in the log of site {head.site} signed at size {head.size}"
            + ("" if key else " (checked with the key the proof names: pass --key to check with yours)")
        ))  # fmt: skip

    @app.command()
    def upgrade(
        site: str | None = typer.Option(None, "--site", help="Only this site."),
        batch: int = typer.Option(
            500, "--batch", min=1, max=100_000, help="Records per transaction."
        ),
        config: str | None = ConfigOpt,
        as_json: bool = JsonOpt,
    ) -> None:
        """Re-seal records written in an earlier layout in the current one (one seal per
        record), in place, at every site. Safe to stop and run again: it goes on where it
        was. Exit 1 if some records do not open, 4 if a site is unavailable."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        from domicile.vault.upgrade import upgrade as run_upgrade

        bar = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            console=err_console, transient=True, disable=as_json,
        )  # fmt: skip
        tasks: dict[str, Any] = {}

        def tell(site_id: str, walked: int, total: int) -> None:
            if site_id not in tasks:
                tasks[site_id] = bar.add_task(f"site {site_id}", total=total)
            bar.update(tasks[site_id], completed=walked)

        with vault(config, as_json) as d, errors(as_json), bar:
            report = run_upgrade(d, site=site, batch=batch, progress=tell)
        data = report.to_dict()

        def human() -> None:
            for s in report.sites:
                line = f"{s.site}: {s.resealed} re-sealed, {s.current} already current"
                if s.unreadable:
                    line += (
                        f", [red]{len(s.unreadable)} do not open[/] (erased meanwhile, or altered)"
                    )
                console.print(line)
            for sid in report.unavailable:
                console.print(f"[red]{sid}: unavailable[/]; run again when it is back")

        _show(data, as_json, human)
        if report.unavailable:
            raise typer.Exit(4)
        if not report.done:
            raise typer.Exit(1)

    @app.command()
    def expire(
        site: list[str] | None = typer.Option(
            None, "--site", help="Only this site (repeat for more); default every site."
        ),
        config: str | None = ConfigOpt,
        as_json: bool = JsonOpt,
    ) -> None:
        """Destroy InCountry records whose expires_at has passed, with their files, as an
        erasure does: a subject left with no record at the site loses its key first. Each
        record destroyed is audited. The service does this on a timer (service.expire_every);
        expired records are never served meanwhile. Exit 4 if a site is unavailable."""
        from domicile.errors import ExitCode
        from domicile.vault.incountry import Caller, InCountryStorage

        with vault(config, as_json) as d, errors(as_json):
            report = InCountryStorage(d).expire_all(Caller(d.operator.client or "cli"), site)

        def human() -> None:
            for s in report["sites"]:
                line = f"{s['site']}: {s['records']} expired records destroyed"
                if s["keys_destroyed"]:
                    line += f", {s['keys_destroyed']} subject keys destroyed"
                if s["copies"]["pending"]:
                    line += f"; copies pending at {', '.join(s['copies']['pending'])}"
                if s["restricted"]:
                    line += (
                        f"; {s['restricted']} kept while their subjects' processing is"
                        " restricted (destroyed by the first sweep after the lift)"
                    )
                console.print(line)
            for sid in report["unavailable"]:
                console.print(f"[red]{sid}: unavailable[/]; run again when it is back")

        _show(report, as_json, human)
        if report["unavailable"]:
            raise typer.Exit(ExitCode.UNAVAILABLE)

    @app.command()
    def replicate(
        follow: bool = typer.Option(False, "--follow", help="Keep running until SIGINT/SIGTERM."),
        interval: float = typer.Option(1.0, "--interval", min=0.01, help="Seconds between rounds."),
        node: str | None = typer.Option(
            None, "--node", metavar="SITE",
            help="As federation node SITE: its own site's outbox, delivered to the targets' nodes.",
        ),
        config: str | None = ConfigOpt,
        as_json: bool = JsonOpt,
    ) -> None:  # fmt: skip
        """Deliver the replication outbox: copies where the law permits them, removals
        where it no longer does."""
        import signal
        import threading

        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        from domicile.vault.replication import Replicator

        stop = threading.Event()

        def _stop(signum: int, frame: object) -> None:
            stop.set()

        signal.signal(signal.SIGINT, _stop)
        signal.signal(signal.SIGTERM, _stop)
        with vault(config, as_json, node=node) as d, errors(as_json):
            if node is not None:
                from domicile.federation.replication import NodeReplicator

                worker: Replicator = NodeReplicator(d)
            else:
                worker = Replicator(d)
            if follow:

                def tell(report: Any) -> None:
                    if not as_json and any(
                        report.to_dict()[k] for k in ("delivered", "removed", "refused")
                    ):
                        console.print(_replication_line(report.to_dict()))

                worker.follow(stop, interval=interval, on_report=tell)
                result = {"stopped": True}
            else:
                total = worker.pending()
                with Progress(
                    TextColumn("replicating"), BarColumn(), MofNCompleteColumn(),
                    console=err_console, transient=True, disable=as_json,
                ) as bar:  # fmt: skip
                    task = bar.add_task("outbox", total=total)
                    report = worker.run_once(progress=lambda n: bar.advance(task, n), stop=stop)
                result = report.to_dict()
        _show(result, as_json, lambda: console.print(_replication_line(result)))

    @app.command()
    def transfers(
        since: str | None = typer.Option(None, "--since", help="YYYY-MM-DD: only from this date."),
        to: str | None = typer.Option(None, "--to", help="Only to this country."),
        limit: int = typer.Option(
            1000, "--limit", min=0, help="Entries to list (totals count all)."
        ),
        masked: bool = typer.Option(
            False, "--masked", help="Also list the masked disclosures (counted apart always)."
        ),
        config: str | None = ConfigOpt,
        as_json: bool = JsonOpt,
    ) -> None:
        """The transfer ledger: every read from abroad that disclosed the data and every
        copy delivered. Masked disclosures are no transfers: counted apart, and listed with
        --masked."""
        from domicile.countries import country
        from domicile.policy import parse_date
        from domicile.vault.transfers import summarize

        with vault(config, as_json, read_only=True) as d, errors(as_json):
            out = summarize(
                d, since=parse_date(since, "--since") if since else None,
                to_country=country(to, what="--to") if to else None, limit=limit, masked=masked,
            ).to_dict()  # fmt: skip

        def human() -> None:
            table = Table(title=f"{out['total']} transfers")
            for col in ("to", "transfers", "subjects", "kinds", "routes"):
                table.add_column(col)
            for dest, agg in sorted(out["by_destination"].items()):
                table.add_row(
                    dest, str(agg["transfers"]), str(agg["subjects"]),
                    escape(", ".join(f"{k}: {v}" for k, v in agg["kinds"].items())),
                    escape(", ".join(agg["routes"])),
                )  # fmt: skip
            console.print(table)
            disclosed = out["masked_disclosures"]
            console.print(
                f"{disclosed['total']} masked disclosures (not transfers): "
                + (
                    ", ".join(f"{k}: {v}" for k, v in sorted(disclosed["by_destination"].items()))
                    or "none"
                )
            )
            for e in disclosed.get("entries", []):
                masks = ", ".join(f"{f} ({m})" for f, m in sorted(e["masks"].items()))
                console.print(
                    f"  {e['at']} {e['from_country']} -> {e['to_country']}: {escape(masks)}"
                    + (f"; withheld {escape(', '.join(e['withheld']))}" if e["withheld"] else "")
                )

        _show(out, as_json, human)

    @app.command()
    def parity(
        site: str | None = typer.Option(None, "--site", help="Only the copies held at this site."),
        node: str | None = typer.Option(
            None, "--node", metavar="SITE",
            help="As federation node SITE: its copies, against primaries its peers describe.",
        ),
        config: str | None = ConfigOpt,
        as_json: bool = JsonOpt,
    ) -> None:  # fmt: skip
        """Prove that every primary holds at least what its foreign copies hold."""
        from domicile.vault.parity import check_parity

        with vault(config, as_json, read_only=True, node=node) as d, errors(as_json):
            if site is not None:
                d._requester(site)  # a clear error for an unknown site
            report = check_parity(d, site)
        out = report.to_dict()

        def human() -> None:
            state = "[green]ok[/]" if report.ok else "[red]DISCREPANCIES[/]"
            console.print(
                f"{state}: {out['copies']} copies checked, {out['lagging']} lagging behind"
            )
            for item in out["discrepancies"]:
                console.print(f"  {escape(str(item))}")

        _show(out, as_json, human)
        if not report.ok:
            raise typer.Exit(1)

    @keys_app.command("rotate")
    def keys_rotate(
        site: str = typer.Option(..., "--site"),
        grace: float = typer.Option(
            2.0,
            "--grace",
            min=0.0,
            help="Seconds to wait for writers that wrapped a key just before the rotation.",
        ),
        config: str | None = ConfigOpt,
        as_json: bool = JsonOpt,
    ) -> None:
        """Rotate a site's key-encryption key online, re-wrapping every subject key; the old
        key is deleted once nothing is wrapped with it."""
        with vault(config, as_json) as d, errors(as_json):
            out = d.rotate_key(site, grace=grace)
        _show(out, as_json, lambda: console.print(
            f"site {out['site']}: key-encryption key v{out['from_version']} -> v{out['to_version']};"
            f" {out['rewrapped']} subject keys re-wrapped; retired: "
            + (", ".join(f"v{v}" for v in out["retired"]) or "none yet (in use)")
        ))  # fmt: skip

    @keys_app.command("status")
    def keys_status(
        site: str | None = typer.Option(None, "--site", help="One site (default: every site)."),
        config: str | None = ConfigOpt,
        as_json: bool = JsonOpt,
    ) -> None:
        """Each site's key provider (keyring file, PKCS#11 token, Vault Transit), whether it
        answers, its current key-encryption key version and the versions that still unwrap.
        Reads only. Exits 4 if a site's provider does not answer."""
        from domicile.crypto.providers import site_status

        with vault(config, as_json, read_only=True) as d, errors(as_json):
            sites = [s.id for s in d.config.sites]
            if site is not None:
                if site not in sites:
                    raise BadInput(
                        "no site of that name", hint=f"the sites are: {', '.join(sites)}"
                    )
                sites = [site]
            rows = [site_status(d.keys, s) for s in sites]
        out = {"sites": rows, "ok": all(r["answers"] for r in rows)}

        def human() -> None:
            for r in rows:
                if r["answers"]:
                    console.print(
                        f"[green]ok[/]    {r['site']}: {escape(r['where'])}; current v{r['current_version']}"
                        f" (unwraps: {', '.join(f'v{v}' for v in r['versions'])})"
                    )
                else:
                    console.print(
                        f"[red]DOWN[/]  {r['site']}: {escape(r['where'])}: {escape(r['error']['message'])}"
                        + (f" ({escape(r['error']['hint'])})" if r["error"].get("hint") else "")
                    )

        _show(out, as_json, human)
        if not out["ok"]:
            raise typer.Exit(ExitCode.UNAVAILABLE)


@filings_app.command("add")
def filings_add(
    filing: str = typer.Argument(..., help="NAME=YYYY-MM-DD, e.g. ru.art12_notice=2025-03-03."),
    note: str | None = typer.Option(None, "--note", help="A reference, e.g. the receipt number."),
    config: str | None = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Put a filing on record; decisions use it at once, from the date it carries."""
    with vault(config, as_json) as d, errors(as_json):
        name, sep, date = filing.partition("=")
        if not sep or not name.strip() or not date.strip():
            raise BadInput(
                "FILING is NAME=YYYY-MM-DD",
                hint=f"e.g. {name.strip() or 'ru.art12_notice'}=2025-03-03",
            )
        entry = d.add_filing(name, date, note=note)
    _show(entry.to_dict(), as_json, lambda: console.print(
        f"on record: {entry.name} from {entry.date.isoformat()} ({escape(entry.title)})"
    ))  # fmt: skip


@filings_app.command("list")
def filings_list(config: str | None = ConfigOpt, as_json: bool = JsonOpt) -> None:
    """Every filing on record, from the configuration and the registry."""
    with vault(config, as_json, read_only=True) as d, errors(as_json):
        rows = [e.to_dict() for e in d.filings.entries()]

    def human() -> None:
        table = Table(title="Filings on record")
        for col in ("name", "date", "source", "what"):
            table.add_column(col)
        for r in rows:
            table.add_row(r["name"], r["date"], r["source"], escape(r["title"]))
        console.print(table)

    _show(rows, as_json, human)


@filings_app.command("withdraw")
def filings_withdraw(
    name: str = typer.Argument(...), config: str | None = ConfigOpt, as_json: bool = JsonOpt
) -> None:
    """Take a filing off the record (it stays in the registry's history)."""
    with vault(config, as_json) as d, errors(as_json):
        entry = d.withdraw_filing(name)
    _show(
        {"withdrawn": entry.to_dict()}, as_json, lambda: console.print(f"withdrawn: {entry.name}")
    )


def _print_record(r: ReadResult) -> None:
    """A record read, whole token first (it is what the next command needs), then what was
    disclosed and, when masked, why and what would unlock the full values."""
    where = f"site {r.site} ({r.country})"
    if r.source == "replica":
        where += f", from its permitted copy at {r.read_at}"
    elif r.transfer:
        where += ", read across a border (a transfer, logged)"
    console.print(r.token, soft_wrap=True, highlight=False)
    console.print(f"  {r.collection} v{r.version} at {where}", soft_wrap=True)
    for k, v in r.fields.items():
        console.print(f"  {k}: {escape(str(v))}", soft_wrap=True)
    if r.masked:
        rules = ", ".join(r.decision.rule_ids) or "the packs in force"
        console.print(
            f"  [yellow]masked[/]: the values above are masked forms, not the real ones; the"
            f" law does not let the full values reach this requester ({escape(rules)}).",
            soft_wrap=True,
        )
        unlock = [o for o in r.decision.obligations if o.status == "outstanding"]
        if unlock:
            console.print("  what would unlock the full values:")
        for o in unlock:
            console.print(f"  - {escape(o.text)} ({o.id})", soft_wrap=True)
        if not unlock:
            console.print(
                "  to see them in full: read from the record's own country (--as-site) or"
                " with a purpose its law allows",
                soft_wrap=True,
            )


def _reason(row: dict[str, Any]) -> str:
    """Why a site is down, without the "site 'x' is unavailable:" its error starts with."""
    error = str(row.get("error") or "no answer")
    return error.split(" is unavailable: ", 1)[-1]


def _replication_line(r: dict[str, Any]) -> str:
    line = (
        f"replication: {r.get('delivered', 0)} copies delivered, {r.get('unchanged', 0)}"
        f" unchanged, {r.get('removed', 0)} removed, {r.get('refused', 0)} refused by policy"
    )
    if r.get("unavailable"):
        line += f"; unavailable: {', '.join(r['unavailable'])} (retried next round)"
    if r.get("stopped"):
        line = "replication stopped"
    return line
