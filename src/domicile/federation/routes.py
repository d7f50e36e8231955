"""The node channel's server side: what a node answers its peers.

``node_app(vault)`` is a small ASGI application served only over mutual TLS
(``serve_node_app``), apart from the public API: its callers are peer nodes, never
applications. The peer's id is what the server put in the request's scope from the
certificate the TLS handshake verified (``PEER_SCOPE_KEY``); a request without one is
refused and audited, whatever its headers say.

- ``POST /v1/node/{op}``: ``FederatedDomicile.answer_peer`` (get, put, find, update,
  delete, erase, subject and request_step: a subject's request; and the peer node's own
  replica, witness, prove, primaries, verify: its own log verified, signed); errors are the typed error documents ``raise_from_wire`` reads back.
- ``GET /v1/node/ping``: which node this is (the channel checks it reached the node it
  meant to, and a node checks its peers answer before it writes anything).
"""

from __future__ import annotations

import logging
from typing import Any

import anyio.to_thread
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from domicile.audit import AuditEvent
from domicile.errors import BadInput, DomicileError
from domicile.federation.node import FederatedDomicile, Replies, StoredReplies, error_to_wire
from domicile.http.observe import log_event
from domicile.http.problems import status_of
from domicile.stores.base import SiteUnavailable

PEER_SCOPE_KEY = "domicile.peer"  # set by the mutual-TLS server from the verified certificate
MAX_BODY = 8 * 1024 * 1024  # a batch of records forwarded at once
MAX_KEY = 256  # an idempotency key, kept in memory with its answer


def _json(status: int, data: Any) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def node_app(vault: FederatedDomicile) -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    replies = Replies(persist=StoredReplies(vault))

    def refuse_unverified(request: Request) -> Response:
        event = AuditEvent(
            action="refuse", site=vault.config.local_site,
            detail={"operation": "node_call", "reason": "no_verified_peer"},
        )  # fmt: skip
        vault._audit_refusal(event)
        log_event("node call without a verified peer", logging.WARNING)
        return JSONResponse(
            {
                "code": "forbidden",
                "message": "only a peer node with a verified certificate may call",
            },
            status_code=403,
        )

    @app.get("/v1/node/ping")
    async def ping(request: Request) -> Response:
        if not isinstance(request.scope.get(PEER_SCOPE_KEY), str):
            return refuse_unverified(request)
        return _json(200, {"node": vault.node})

    @app.post("/v1/node/{op}")
    async def call(op: str, request: Request) -> Response:
        peer = request.scope.get(PEER_SCOPE_KEY)
        if not isinstance(peer, str):
            return refuse_unverified(request)
        key = request.headers.get("idempotency-key")
        # Keep at most MAX_BODY: the rest of a larger body is read and dropped as it arrives
        # (so the peer gets its answer, not a reset stream), never held; past four times
        # that, the answer goes at once.
        raw = bytearray()
        seen = 0
        async for chunk in request.stream():
            seen += len(chunk)
            if seen <= MAX_BODY:
                raw += chunk
            elif seen > 4 * MAX_BODY:
                break
        if seen > MAX_BODY:
            too_large = BadInput("the node call's body is too large")
            return _json(status_of(too_large), error_to_wire(too_large))
        if key is not None and len(key) > MAX_KEY:
            long_key = BadInput(f"the idempotency key is longer than {MAX_KEY} characters")
            return _json(status_of(long_key), error_to_wire(long_key))

        def work() -> tuple[int, dict[str, Any]]:
            try:
                try:
                    body = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    raise BadInput("a node call's body is JSON") from None
                return 200, vault.answer_peer(peer, op, body)
            except DomicileError as exc:
                if isinstance(exc, SiteUnavailable):
                    log_event("site unavailable", logging.WARNING, site=exc.site)
                return status_of(exc), error_to_wire(exc)

        status, answer = await anyio.to_thread.run_sync(
            lambda: replies.once(peer, key, work, op=op)
        )
        return _json(status, answer)

    return app
