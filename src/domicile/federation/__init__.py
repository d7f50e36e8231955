"""Federation: one node per site, known to the others by certificates of the deployment CA.

``ca`` makes the CA and the node certificates, ``tls`` the TLS contexts and the one check of
a peer's certificate (``verify_peer``), ``server`` serves an ASGI app to other nodes with the
verified peer in its scope, and ``channel`` is the client side. ``ca`` needs only the core
install; the rest needs the ``federation`` extra.
"""

from __future__ import annotations

from domicile.errors import NodeUnavailable, PeerRefused
from domicile.federation.ca import (
    NODE_SCHEME,
    ca_dir,
    create_ca,
    federation_dir,
    issue_node,
    list_nodes,
    node_dir,
    remove_node,
)
from domicile.federation.tls import (
    REASONS,
    Trust,
    client_context,
    server_context,
    verify_peer,
)

__all__ = [
    "NODE_SCHEME",
    "REASONS",
    "NodeUnavailable",
    "PeerRefused",
    "Trust",
    "ca_dir",
    "client_context",
    "create_ca",
    "federation_dir",
    "issue_node",
    "list_nodes",
    "node_dir",
    "remove_node",
    "server_context",
    "verify_peer",
]
