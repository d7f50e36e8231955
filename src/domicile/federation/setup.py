"""Setting a federated deployment up: the CA and one node certificate per site.

``domicile init DIR --federated`` comes here after the plain ``init`` has set the sites
up; ``domicile federation issue|remove|list`` use ``ca`` directly. Only cryptography is
needed (no extra): the CA's machine need not run a node.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from domicile.config import Config
from domicile.errors import BadInput, Conflict
from domicile.federation.ca import CA_CERT, CA_KEY, ca_dir, create_ca, host_names, issue_node


def check_hosts(hosts: dict[str, list[str]], site_ids: list[str]) -> None:
    """Refuse, before anything is written, hosts of unknown sites or malformed hosts."""
    for site, names in hosts.items():
        if site not in site_ids:
            raise BadInput(
                f"--host names site {site!r}, which the configuration does not have",
                hint=f"the sites are {', '.join(site_ids)}",
            )
        host_names(names)


def refuse_existing_ca(data_dir: Path) -> None:
    folder = ca_dir(data_dir)
    if (folder / CA_KEY).exists() or (folder / CA_CERT).exists():
        raise Conflict(
            f"{folder} already holds a federation CA",
            hint="keep it (`domicile federation issue NODE` renews certificates), or move it away first",
        )


def init_federation(config: Config, hosts: dict[str, list[str]]) -> dict[str, Any]:
    """Create the deployment CA under ``DATA_DIR/federation/ca`` and a node bundle for each
    site of ``config`` (with its ``hosts``). Returns what was made."""
    site_ids = [s.id for s in config.sites]
    check_hosts(hosts, site_ids)
    refuse_existing_ca(config.data_dir)
    folder = ca_dir(config.data_dir)
    create_ca(folder, Path(config.source).resolve().parent.name or "domicile")
    nodes = {site: str(issue_node(folder, site, hosts.get(site, []))) for site in site_ids}
    # Each node's keyring, beside its bundle: only its own site's keys.
    from domicile.federation.serving import make_node_keyrings

    keyrings = make_node_keyrings(config)
    urls = {
        site: f"https://{_url_host((hosts.get(site) or ['127.0.0.1'])[0])}:{CHANNEL_PORT + i}"
        for i, site in enumerate(site_ids)
    }
    _add_nodes_to_config(Path(config.source), urls)
    return {
        "ca": str(folder), "nodes": nodes,
        "keyrings": {k: str(v) for k, v in keyrings.items()}, "urls": urls,
    }  # fmt: skip


CHANNEL_PORT = 8701  # the first node's channel; the others' follow, so all fit on one machine


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _add_nodes_to_config(path: Path, urls: dict[str, str]) -> None:
    """Append ``federation.nodes`` to the configuration ``init`` just wrote."""
    from domicile.files import write_private

    lines = [
        "",
        "# A node in each country (`domicile serve --node SITE`): where each node's channel",
        "# listens (mutual TLS with the certificates under DATA_DIR/federation). Change the",
        "# addresses to the nodes' hosts; docs/federation.md says what runs where.",
        "federation:",
        "  nodes:",
        *(f'    {site}: {{url: "{url}"}}' for site, url in urls.items()),
        "",
    ]
    write_private(path, path.read_text(encoding="utf-8").rstrip("\n") + "\n" + "\n".join(lines))
