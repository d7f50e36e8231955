"""``domicile federation issue|remove|list``: the deployment CA's node certificates.

The CA is made by ``domicile init DIR --federated``. Exit codes: the one table
(``domicile.errors.ExitCode``); a node or CA that does not exist is bad input (2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from domicile.cli._output import console, emit_json, err_console, errors
from domicile.cli.vault import ConfigOpt, JsonOpt
from domicile.errors import BadInput, ExitCode

federation_app = typer.Typer(
    help="Federation (preview): the deployment CA's node certificates for mutual TLS.",
    no_args_is_help=True,
)

HostOpt = typer.Option(
    None, "--host", help="A DNS name or IP address of the node's host; repeatable."
)


def _ca(config: str | None) -> tuple[Path, list[str]]:
    from domicile.config import load_config
    from domicile.federation.ca import ca_dir

    cfg = load_config(config)
    return ca_dir(cfg.data_dir), [s.id for s in cfg.sites]


@federation_app.command("issue")
def issue(
    node: str = typer.Argument(..., help="The node: a site id of the configuration, e.g. ru."),
    host: list[str] | None = HostOpt,
    days: int = typer.Option(90, "--days", help="Lifetime of the certificate, in days."),
    config: str | None = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Issue NODE a new certificate and write its bundle (node.pem, node.key, ca.pem,
    crl.pem) to DATA_DIR/federation/nodes/NODE/, to copy to the node's host. Earlier
    certificates of the node stay valid until they expire or the node is removed."""
    from cryptography import x509

    from domicile.federation.ca import NODE_CERT, issue_node, list_nodes

    with errors(as_json):
        folder, sites = _ca(config)
        if node not in sites:
            raise BadInput(
                f"the configuration has no site {node!r}",
                hint=f"a node serves one site: {', '.join(sites)}",
            )
        out = issue_node(folder, node, host or [], days)
        serial = format(
            x509.load_pem_x509_certificate((out / NODE_CERT).read_bytes()).serial_number, "x"
        )
        newest = next(e for e in list_nodes(folder) if e["serial"] == serial)
    data = {
        "node": node,
        "bundle": str(out),
        **{k: newest[k] for k in ("serial", "not_after", "hosts")},
    }
    if as_json:
        emit_json(data)
    else:
        console.print(
            f"issued node {node} certificate {data['serial']} (valid until {data['not_after']}); "
            f"bundle in {escape(str(out))}/",
            soft_wrap=True,
        )


@federation_app.command("remove")
def remove(
    node: str = typer.Argument(..., help="The node to remove."),
    config: str | None = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Revoke every certificate NODE was issued and rewrite the CRL (in the CA folder and
    in every node bundle here); delete NODE's node.pem and node.key here. Copy the new
    crl.pem to the other nodes' hosts: they reread it on each new connection."""
    from domicile.federation.ca import remove_node

    with errors(as_json):
        folder, _ = _ca(config)
        revoked = remove_node(folder, node)
    data = {"node": node, "revoked": revoked, "crl": str(folder / "crl.pem")}
    if as_json:
        emit_json(data)
    else:
        what = ", ".join(revoked) if revoked else "none (all were revoked before)"
        console.print(f"removed node {node}; certificates revoked now: {what}", soft_wrap=True)


@federation_app.command("list")
def list_(config: str | None = ConfigOpt, as_json: bool = JsonOpt) -> None:
    """Every node certificate the CA issued: node, serial, hosts, expiry, state (valid,
    expired, revoked). Writes nothing."""
    from domicile.federation.ca import deployment_name, list_nodes

    with errors(as_json):
        folder, _ = _ca(config)
        rows = list_nodes(folder)
    if as_json:
        emit_json({"ca": str(folder), "deployment": deployment_name(folder), "certificates": rows})
        return
    table = Table(title=f"Node certificates of {escape(str(folder))}")
    for col in ("node", "serial", "hosts", "expires", "state"):
        table.add_column(col)
    colour = {"valid": "green", "expired": "yellow", "revoked": "red"}
    for r in rows:
        state: Any = r["state"]
        table.add_row(
            r["node"], r["serial"], escape(", ".join(r["hosts"]) or "-"), r["not_after"],
            f"[{colour[state]}]{state}[/]",
        )  # fmt: skip
    console.print(table)


@federation_app.command("check")
def check(
    bundle: list[str] | None = typer.Option(
        None,
        "--bundle",
        help="A node folder to check (default: every one of the deployment's); repeatable.",
    ),
    config: str | None = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Check node bundles: each certificate as its peers will see it (CA, validity, CRL,
    node name), then a request over mutual TLS from each bundle to a loopback node served
    with the first. Exits 1 if anything fails. Writes nothing."""
    from domicile.extras import require
    from domicile.federation.check import check_bundles

    with errors(as_json):
        require("federation", "`domicile federation check`")
        if bundle:
            folders = [Path(b) for b in bundle]
        else:
            folder, _ = _ca(config)
            nodes = folder.parent / "nodes"
            found = sorted(nodes.iterdir()) if nodes.is_dir() else []
            folders = [p for p in found if (p / "node.pem").is_file()]  # removed nodes have none
            if not folders:
                raise BadInput(
                    f"no node bundles in {nodes}",
                    hint="issue one with `domicile federation issue NODE`",
                )
        out = check_bundles(folders)
    if as_json:
        emit_json(out)
    else:
        for n in out["nodes"]:
            if n["ok"]:
                console.print(
                    f"[green]ok[/]  node {n['node']}: certificate {n['serial']}, {n['days_left']} days left",
                    soft_wrap=True,
                )
            else:
                console.print(
                    f"[red]BAD[/] {escape(n['bundle'])}: {escape(n['problem'])}", soft_wrap=True
                )
        for c in out["handshakes"]:
            if c["ok"]:
                console.print(
                    f"[green]ok[/]  {c['from']} -> {c['to']} over mutual TLS ({c['http_version']})"
                )
            else:
                why = c.get("problem") or f"the server saw {c.get('peer_seen')}"
                console.print(
                    f"[red]BAD[/] {c['from']} -> {c['to']}: {escape(why)}", soft_wrap=True
                )
    if not out["ok"]:
        raise typer.Exit(ExitCode.CHECK_FAILED)


@federation_app.command("reindex")
def reindex(
    node: str = typer.Option(
        ..., "--node", metavar="SITE", help="The node whose own site is walked (run it there)."
    ),
    batch: int = typer.Option(500, "--batch", min=1, max=100_000, help="Records per transaction."),
    config: str | None = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Give the records of node SITE's own site written before the deployment had a
    federation section the search entries by which other nodes find them (writes since
    make their own). Audited; safe to stop and run again: what has its entries is passed
    over, and a run with nothing missing writes nothing. Exit 1 if some records do not
    open, 4 if the site is unavailable."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from domicile.cli.vault import vault
    from domicile.config import load_config
    from domicile.federation.reindex import check_federated
    from domicile.federation.reindex import reindex as run_reindex

    with errors(as_json):
        check_federated(load_config(config))

    bar = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        console=err_console, transient=True, disable=as_json,
    )  # fmt: skip
    task: list[Any] = []

    def tell(walked: int, total: int) -> None:
        if not task:
            task.append(bar.add_task(f"site {node}", total=total))
        bar.update(task[0], completed=walked)

    with vault(config, as_json, node=node) as d, errors(as_json), bar:
        out = run_reindex(d, batch=batch, progress=tell)
    if as_json:
        emit_json(out.to_dict())
    else:
        console.print(
            f"{node}: {out.indexed} records given {out.entries} search entries, "
            f"{out.current} had them already ({out.records} records walked)"
        )
        if out.unreadable:
            console.print(
                f"[red]{len(out.unreadable)} records do not open[/] (erased meanwhile, or altered)"
            )
    if not out.done:
        raise typer.Exit(ExitCode.CHECK_FAILED)
