"""Nodes of a federation in one process, for tests: each a ``FederatedDomicile`` of its
own site with its own keyring, the channel replaced by ``Direct``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from domicile.cli.app import app
from domicile.config import Config, load_config
from domicile.crypto.keys import LocalKeyring
from domicile.errors import DomicileError, NodeUnavailable
from domicile.federation.node import FederatedDomicile, error_to_wire, raise_from_wire

RU = {"citizenship": "RU"}
US = {"citizenship": "US"}
FIELDS = {"full_name": "Anna Volkova", "email": "anna.volkova@example.ru"}


class Direct:
    """The channel, in one process: the peer answers as it would over the wire (JSON both
    ways, errors as their documents), or is down."""

    def __init__(self, me: str, nodes: dict[str, FederatedDomicile]) -> None:
        self.me, self.nodes, self.down = me, nodes, set[str]()
        self.calls: list[tuple[str, str]] = []
        self.sent: list[tuple[str, str, str]] = []  # (node, op, the body as it went)

    def call(
        self, node: str, op: str, body: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        self.calls.append((node, op))
        if node in self.down:
            raise NodeUnavailable(node, "did not answer")
        wire = json.dumps(body)
        self.sent.append((node, op, wire))
        try:
            answer = self.nodes[node].answer_peer(self.me, op, json.loads(wire))
        except DomicileError as exc:
            raise raise_from_wire(json.loads(json.dumps(error_to_wire(exc))), node) from None
        return json.loads(json.dumps(answer))  # type: ignore[no-any-return]


def in_process_nodes(cfg: Config) -> dict[str, FederatedDomicile]:
    """A node per site of ``cfg`` (which has a federation section), each with a keyring of
    its own site's keys copied from the deployment's (the first time: a node restarted
    opens the one it has)."""
    whole = LocalKeyring(cfg.keyring_path)
    nodes: dict[str, FederatedDomicile] = {}
    for site in cfg.sites:
        path = cfg.as_node(site.id).keyring_path
        keys = LocalKeyring(path) if path.exists() else whole.node_copy(site.id, path)
        nodes[site.id] = FederatedDomicile(
            cfg, node=site.id, peers=Direct(site.id, nodes), keys=keys
        )
    return nodes


def add_federation(path: Path, base_port: int = 9000) -> None:
    """Give the configuration at ``path`` a federation section: a node per site (loopback
    addresses that nothing dials: ``Direct`` stands for the channel)."""
    doc = yaml.safe_load(path.read_text())
    doc["federation"] = {
        "nodes": {s["id"]: {"url": f"https://127.0.0.1:{base_port + i}"}
                  for i, s in enumerate(doc["sites"])}
    }  # fmt: skip
    path.write_text(yaml.safe_dump(doc))


def init_federation(tmp_path: Path) -> dict[str, FederatedDomicile]:
    """The deployment ``domicile init`` makes (profiles copied to DE as well), a node per
    site; the caller closes them."""
    folder = tmp_path / "dep"
    result = CliRunner().invoke(app, ["init", str(folder)])
    assert result.exit_code == 0, result.output
    path = folder / "domicile.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["collections"]["profiles"]["replicate"] = [
        {"to": "de", "fields": ["full_name", "headline", "city"]}
    ]
    path.write_text(yaml.safe_dump(doc))
    add_federation(path)
    return in_process_nodes(load_config(path))
