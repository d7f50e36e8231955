"""Running a node: ``domicile serve --node ID``.

A node serves two listeners in one process: the public API (the same service as ever,
over its own site's vault) for applications, and the node channel (mutual TLS, the
address in ``federation.nodes.ID.url``) for its peers. Its keyring holds only its own
site's keys (``make_node_keyrings``, run by ``init --federated``, makes one per node
from the deployment's keyring); refusals of peers at the TLS handshake are audited in
the node's own log, as refusals of callers are.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from domicile.audit import AuditEvent
from domicile.config import Config
from domicile.crypto.errors import KeyringError
from domicile.crypto.keys import LocalKeyring
from domicile.errors import BadInput, PeerRefused
from domicile.federation.node import ChannelCaller, FederatedDomicile


def node_spec(cfg: Config, node: str) -> tuple[str, int]:
    """The host and port of node ``node``'s channel, from the configuration."""
    fed = cfg.model.federation
    if fed is None or node not in fed.nodes:
        raise BadInput(
            f"the configuration names no node {node!r}",
            hint="add federation: nodes: {ID: {url: https://HOST:PORT}} for each site "
            "(domicile init --federated writes it)",
        )
    parts = urlsplit(fed.nodes[node].url)
    if parts.hostname is None or parts.port is None:
        raise BadInput(f"node {node!r}'s url names no host and port", hint="https://HOST:PORT")
    return parts.hostname, parts.port


def make_node_keyrings(cfg: Config, nodes: list[str] | None = None) -> dict[str, Path]:
    """One keyring per node, each holding only its own site's keys (setup: never made
    implicitly). The deployment's whole keyring stays where it was: keep it offline, as
    the CA's key, once the nodes have theirs."""
    from domicile.crypto.providers import key_provider
    from domicile.crypto.specs import KeyringSpec

    whole = LocalKeyring(cfg.keyring_path)
    keys = key_provider(cfg, whole)  # sites whose keys are in a token or a KMS: through it
    publics = {s.id: keys.verify_key(s.id) for s in cfg.sites}
    made = {}
    for site in cfg.sites:
        if nodes is not None and site.id not in nodes:
            continue
        if site.key_provider is None or isinstance(site.key_provider, KeyringSpec):
            whole.ensure_site(site.id)
        path = cfg.as_node(site.id).keyring_path
        whole.node_copy(site.id, path, verify_keys=publics)
        made[site.id] = path
    return made


def _audit_refusal(vault: FederatedDomicile, refusal: PeerRefused) -> None:
    event = AuditEvent(
        action="refuse", site=vault.config.local_site,
        detail={"operation": "node_channel", "reason": "peer_refused",
                "refused_because": refusal.reason,
                **({"claimed_node": refusal.node} if refusal.node else {}),
                **({"serial": refusal.serial} if refusal.serial else {})},
    )  # fmt: skip
    vault._audit_refusal(event)


def open_node(
    cfg: Config, node: str, *, operator: str | None = None, read_only: bool = False
) -> FederatedDomicile:
    """The vault of node ``node``, its channel to every peer attached (``read_only``: its
    stores opened read-only, for commands that must write nothing)."""
    from domicile.federation.channel import NodeChannel

    node_spec(cfg, node)
    fed = cfg.model.federation
    assert fed is not None
    mine = cfg.as_node(node)
    if not mine.keyring_path.exists():
        raise KeyringError(
            f"node {node!r} has no keyring at {mine.keyring_path}",
            hint="init --federated makes each node's keyring; copy the node's folder from where it was made",
        )
    holder: list[FederatedDomicile] = []

    def refused(refusal: PeerRefused) -> None:  # a server that was not the node we called
        if holder:
            _audit_refusal(holder[0], refusal)

    channel = NodeChannel(
        cfg.node_dir(node),
        {n: spec.url for n, spec in fed.nodes.items() if n != node},
        timeout=fed.timeout,
        on_refusal=refused,
    )
    vault = FederatedDomicile(
        mine,
        node=node,
        peers=ChannelCaller(channel),  # its keys: its keyring, and its site's token or KMS
        operator=operator,
        read_only=read_only,
    )
    holder.append(vault)
    return vault


async def serve_node(
    vault: FederatedDomicile,
    api: Any,
    *,
    ready: Callable[[tuple[str, int]], None] | None = None,
) -> None:
    """Serve the public API (``api``: a uvicorn ``Server``) and the node channel together,
    until a stop signal; when either ends, the other is stopped."""
    from domicile.federation.routes import node_app
    from domicile.federation.server import serve_node_app

    host, port = node_spec(vault.config, vault.node or "")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    auditor = threading.Lock()

    def refused(refusal: PeerRefused) -> None:  # on the event loop: audit in a thread
        def write() -> None:
            with auditor:
                _audit_refusal(vault, refusal)

        loop.run_in_executor(None, write)

    async def until_stopped() -> None:
        await stop.wait()

    channel = asyncio.create_task(
        serve_node_app(
            node_app(vault), vault.config.node_dir(vault.node or ""), host, port,
            on_refusal=refused, ready=ready, shutdown_trigger=until_stopped,
        )
    )  # fmt: skip

    def ended(task: asyncio.Task[None]) -> None:  # the channel could not listen, say
        api.should_exit = True

    channel.add_done_callback(ended)
    try:
        await api.serve()
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await channel
