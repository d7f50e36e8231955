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
    # PER-NODE KEYRING SPLIT (issue 14, part 4) goes here: with every node bundle made,
    # give each node a keyring holding only its own site's keys, beside its bundle.
    return {"ca": str(folder), "nodes": nodes}
