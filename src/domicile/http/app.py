"""The domicile service: ``create_app(vault)`` builds the FastAPI application.

- ``/v1/...``: the native API, every SDK operation (``native.py``);
- ``/oauth2/token``, ``/v2/storage/records/{country}/...``, ``/healthcheck``: the
  InCountry-compatible storage API (``incountry.py``);
- ``/healthz``, ``/readyz`` (ready only when every site answers), ``/metrics``
  (Prometheus).

Logs are one JSON object per line, with the route template, status, duration and client id:
never a body, a query string or a value.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Form, Header, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from domicile._version import __version__
from domicile.access import Access
from domicile.clients import ClientRegistry
from domicile.http import problems
from domicile.http.security import Principal, TokenIssuer, Unauthorized, audit_refusal
from domicile.vault import Domicile
from domicile.vault.incountry import InCountryStorage

log = logging.getLogger("domicile.http")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "domicile_requests",
            "HTTP requests",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "domicile_request_seconds", "HTTP request latency", ["route"], registry=self.registry
        )
        self.decisions = Counter(
            "domicile_decisions",
            "Policy decisions behind requests",
            ["outcome"],
            registry=self.registry,
        )
        self.transfers = Counter(
            "domicile_transfers",
            "Transfers (reads from abroad)",
            ["destination"],
            registry=self.registry,
        )


@dataclass
class Service:
    vault: Domicile
    clients: ClientRegistry
    issuer: TokenIssuer
    metrics: Metrics


async def service(request: Request) -> Service:
    # Dependencies are async where they do not block: a sync one costs a thread hop.
    svc: Service = request.app.state.service
    return svc


ServiceDep = Annotated[Service, Depends(service)]


async def authenticate(
    request: Request,
    svc: ServiceDep,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Principal:
    """The calling client, from ``Authorization: Bearer <access token or API key>``."""
    if not authorization or not authorization.lower().startswith("bearer "):
        audit_refusal(svc.vault, "no credentials", route=_route(request))
        raise Unauthorized(
            "credentials are missing", hint="send Authorization: Bearer <token or API key>"
        )
    bearer = authorization[7:].strip()
    claims = svc.issuer.read(bearer)
    client = svc.clients.get(claims["c"]) if claims else svc.clients.by_api_key(bearer)
    if client is None:
        audit_refusal(svc.vault, "invalid credentials", route=_route(request))
        raise Unauthorized(
            "the token or API key is not valid", hint="get a new token from /oauth2/token"
        )
    request.state.client = client.id
    return Principal(client, "token" if claims else "api_key")


PrincipalDep = Annotated[Principal, Depends(authenticate)]


def client_access(svc: Service, principal: Principal, as_site: str | None = None) -> Access:
    """The client as a caller of the vault: its id and scopes, acting from ``as_site`` when
    it names one, else from its only site, else from the service's local site. Whether it
    may act from there is checked with everything else, by ``Domicile.authorize``."""
    client = principal.client
    sites = client.sites
    site = as_site or (sites[0] if len(sites) == 1 else svc.vault.config.local_site)
    return Access.of_client(client.id, client.scopes, site)


def authorize(
    svc: Service,
    principal: Principal,
    operation: str,
    *,
    site: str | None = None,
    collection: str | None = None,
    purpose: str | None = None,
) -> Access:
    """Refuse (403, audited where the request arrived) unless the client's scopes allow
    this, through the vault's one check; the client as a caller otherwise. Record routes
    leave the check to the vault's operations, which make it once the record is known."""
    access = client_access(svc, principal, site)
    svc.vault.authorize(access, operation, site=site, collection=collection, purpose=purpose)
    return access


def _route(request: Request) -> str:
    """The path with each parameter replaced by its name: never a token or a value."""
    if request.scope.get("route") is None:
        return "unmatched"
    path = request.url.path
    for name, value in (request.scope.get("path_params") or {}).items():
        if value:
            path = path.replace(str(value), "{" + name + "}")
    return path


class _Observe:
    """Metrics and one JSON log line per request (pure ASGI: no extra task per request)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def record_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            elapsed = time.perf_counter() - start
            request = Request(scope)
            route = _route(request)
            self.metrics.requests.labels(scope["method"], route, str(status)).inc()
            self.metrics.latency.labels(route).observe(elapsed)
            log.info(
                json.dumps(
                    {
                        "event": "request", "method": scope["method"], "route": route,
                        "status": status, "ms": round(elapsed * 1000, 2),
                        "client": scope.get("state", {}).get("client"),
                    }
                )
            )  # fmt: skip


def create_app(
    vault: Domicile, *, clients: ClientRegistry | None = None, witness_every: float | None = None
) -> FastAPI:
    """The service over ``vault``; ``witness_every``: seconds between witness rounds
    (default: the configuration's ``audit.witness_every``)."""
    registry = clients or ClientRegistry(
        vault.config.data_dir / "clients.json",
        [c.model_dump() for c in vault.config.model.clients],
    )
    svc = Service(
        vault,
        registry,
        TokenIssuer(vault.keys.token_key(), vault.config.model.environment_id),
        Metrics(),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from domicile.vault.auditing import Witnesser

        witnesser = Witnesser(vault, witness_every or vault.config.model.audit.witness_every)
        app.state.witnesser = witnesser.start()
        yield
        witnesser.stop()
        vault.close()  # a last witness round on a clean stop

    app = FastAPI(
        title="domicile",
        version=__version__,
        description="Keeps each person's personal data where the law demands it, and proves it.",
        lifespan=lifespan,
    )
    app.state.service = svc
    app.state.incountry = InCountryStorage(vault)
    problems.install(app)

    app.add_middleware(_Observe, metrics=svc.metrics)

    @app.get("/healthz", tags=["operations"], summary="The process is alive")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz", tags=["operations"], summary="Every site answers",
        responses={503: {"description": "A site does not answer"}},
    )  # fmt: skip
    def readyz() -> JSONResponse:
        sites = {s.id: s.healthy for s in vault.sites()}
        ready = all(sites.values())
        return JSONResponse({"ready": ready, "sites": sites}, status_code=200 if ready else 503)

    @app.get(
        "/metrics",
        tags=["operations"],
        summary="Prometheus metrics",
        response_class=PlainTextResponse,
    )
    def metrics() -> Response:
        return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post(
        "/oauth2/token", tags=["authentication"], summary="OAuth2 client credentials",
        responses=problems.documented(401, 422, 500, 503),
    )  # fmt: skip
    def token(
        request: Request,
        grant_type: Annotated[str, Form()],
        scope: Annotated[str | None, Form()] = None,
        audience: Annotated[str | None, Form()] = None,
        client_id: Annotated[str | None, Form()] = None,
        client_secret: Annotated[str | None, Form()] = None,
        authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
    ) -> dict[str, Any]:
        """Exchange a client id and secret (HTTP Basic, or form fields) for an access token.
        ``scope`` is the environment id, as InCountry clients send it."""
        if authorization and authorization.lower().startswith("basic "):
            try:
                raw = base64.b64decode(authorization[6:].strip()).decode()
                client_id, _, client_secret = raw.partition(":")
            except (binascii.Error, UnicodeDecodeError):
                client_id = client_secret = None
        if grant_type != "client_credentials":
            audit_refusal(vault, "unsupported grant", client=client_id)
            raise Unauthorized("only the client_credentials grant is supported")
        environment = vault.config.model.environment_id
        if scope and scope.split()[0] != environment:
            audit_refusal(vault, "wrong environment", client=client_id)
            raise Unauthorized(
                f"unknown environment {scope!r}", hint=f"this service is {environment!r}"
            )
        client = svc.clients.by_secret(client_id or "", client_secret or "")
        if client is None:
            audit_refusal(vault, "invalid client credentials", route="/oauth2/token")
            raise Unauthorized("the client id or secret is wrong")
        request.state.client = client.id
        access, ttl = svc.issuer.issue(client)
        return {
            "access_token": access,
            "expires_in": ttl,
            "token_type": "bearer",
            "scope": environment,
        }

    from domicile.http import incountry, native

    app.include_router(native.router, prefix="/v1")
    app.include_router(incountry.router)
    return app
