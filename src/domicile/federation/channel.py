"""The node channel, client side: one node's requests to the others.

HTTP/2 through httpx over mutual TLS with the node's own certificate. Each peer node gets
its own client whose TLS context expects that node (``tls.client_context``): a server
whose certificate is not that node's is refused inside the handshake, before the request
is sent, and the caller gets ``PeerRefused`` (not retried). Connection failures and 502,
503 or 504 answers are retried a bounded number of times, with backoff, carrying the same
``Idempotency-Key`` header so that the receiving node can apply the request once; when
the node still does not answer the caller gets ``NodeUnavailable`` (exit 4, HTTP 503):
fail closed, nothing is decided elsewhere.
"""

from __future__ import annotations

import random
import ssl
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from domicile.errors import BadInput, NodeUnavailable, PeerRefused
from domicile.extras import require
from domicile.federation.ca import check_node_id
from domicile.federation.tls import HandshakeRefused, Refusal, client_context, refusal_of

if TYPE_CHECKING:
    import httpx

IDEMPOTENCY_HEADER = "Idempotency-Key"
RETRY_STATUSES = frozenset({502, 503, 504})


def _refusal_in(exc: BaseException) -> PeerRefused | None:
    """The handshake refusal behind an httpx error, if that is what it was."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, HandshakeRefused):
            return e.refusal
        if isinstance(e, PeerRefused):
            return e
        if isinstance(e, ssl.SSLCertVerificationError):  # OpenSSL refused the server first
            return refusal_of(e)  # never None for a verification error
        e = e.__cause__ or e.__context__
    return None


class NodeChannel:
    """Requests from this node (its bundle in ``self_node_dir``) to the nodes in
    ``peers`` (node id to base URL, ``https://host:port``).

    ``attempts`` bounds the tries of one request (connection failures, 502/503/504);
    between tries it waits ``backoff``, doubling, with jitter, at most ``max_backoff``.
    ``on_refusal`` hears of every peer refused at the handshake (the requester's audit)."""

    def __init__(
        self,
        self_node_dir: Path,
        peers: Mapping[str, str],
        *,
        timeout: float = 10.0,
        attempts: int = 3,
        backoff: float = 0.2,
        max_backoff: float = 2.0,
        on_refusal: Refusal | None = None,
    ) -> None:
        require("federation", "the node channel")
        if attempts < 1:
            raise BadInput("attempts must be at least 1")
        self.node_dir = Path(self_node_dir)
        self.peers: dict[str, str] = {}
        for node, url in peers.items():
            check_node_id(node)
            if not url.startswith("https://"):
                raise BadInput(
                    f"node {node}'s address {url!r} is not an https:// URL",
                    hint="nodes talk over mutual TLS only: give https://HOST:PORT",
                )
            self.peers[node] = url.rstrip("/")
        self.timeout = timeout
        self.attempts = attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.on_refusal = on_refusal
        self._clients: dict[str, httpx.Client] = {}
        self._lock = threading.Lock()

    def _client(self, node: str) -> httpx.Client:
        import httpx

        with self._lock:
            client = self._clients.get(node)
            if client is None:
                ctx = client_context(self.node_dir, node, on_refusal=self.on_refusal)
                client = httpx.Client(
                    base_url=self.peers[node],
                    verify=ctx,
                    http2=True,
                    timeout=self.timeout,
                    follow_redirects=False,
                    trust_env=False,  # no proxies from the environment between nodes
                )
                self._clients[node] = client
            return client

    def _drop(self, node: str) -> None:
        """Forget the node's connections (after a failure, a retry dials afresh)."""
        with self._lock:
            client = self._clients.pop(node, None)
        if client is not None:
            client.close()

    def request(
        self,
        node_id: str,
        method: str,
        path: str,
        json: Any = None,
        idempotency_key: str | None = None,
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send one request to node ``node_id`` and return its answer (any status but
        502/503/504, which are retried). Every try carries the same ``Idempotency-Key``
        (``idempotency_key``, or a random one made here). Raises ``PeerRefused`` if the
        server is not that node, ``NodeUnavailable`` if it does not answer in time."""
        import httpx

        if node_id not in self.peers:
            raise BadInput(
                f"node {node_id} is not among this node's peers",
                hint=f"known nodes: {', '.join(sorted(self.peers)) or 'none'}",
            )
        if not path.startswith("/"):
            raise BadInput(f"a node path starts with /, not {path!r}")
        key = idempotency_key or uuid.uuid4().hex
        send_headers = {**(headers or {}), IDEMPOTENCY_HEADER: key}
        per_try = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + per_try * self.attempts
        last = "no answer"
        for attempt in range(self.attempts):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                response = self._client(node_id).request(
                    method,
                    path,
                    json=json,
                    headers=send_headers,
                    timeout=min(per_try, left),
                )
            except httpx.TransportError as exc:
                refusal = _refusal_in(exc)
                if refusal is not None:
                    self._drop(node_id)
                    raise refusal from None
                last = type(exc).__name__
                self._drop(node_id)
            else:
                if response.status_code not in RETRY_STATUSES:
                    return response
                last = f"HTTP {response.status_code}"
            if attempt + 1 < self.attempts:
                pause = min(self.max_backoff, self.backoff * 2**attempt)
                pause *= 0.5 + random.random() / 2
                pause = min(pause, max(0.0, deadline - time.monotonic()))
                time.sleep(pause)
        raise NodeUnavailable(
            node_id,
            f"node {node_id} did not answer ({last}; {self.attempts} tries)",
            hint="the request was not carried out there; try again when the node is back",
        )

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

    def __enter__(self) -> NodeChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
