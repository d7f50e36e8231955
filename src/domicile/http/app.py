"""The domicile service: ``create_app(vault)`` builds the FastAPI application.

- ``/v1/...``: the native API, every SDK operation (``native.py``);
- ``/oauth2/token``, ``/v2/storage/records/{country}/...``, ``/healthcheck``: the
  InCountry-compatible storage API (``incountry.py``);
- ``/healthz``, ``/readyz`` (ready only when every site it serves answers), ``/metrics``
  (Prometheus; needs the ``metrics:read`` scope, or is served on a separate address).

Every request passes the gate (``gate.py``) first: it is matched to its route, its client
is authenticated before its body is read, and its body is capped. Logs are one JSON object
per line, with the route template, status, duration and client id: never a path, a body, a
query string or a value (``observe.py``). The record routes' well-formed requests are
served by a front before FastAPI's stack, which makes the same checks in one step
(``fast.py``).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import anyio
import anyio.to_thread
from fastapi import Depends, FastAPI, Form, Header, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.routing import APIRoute
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.routing import BaseRoute, Route

from domicile import console
from domicile._version import __version__
from domicile.clients import ClientRegistry
from domicile.config import ServiceSettings
from domicile.http import oauth, problems
from domicile.http.deps import (
    PrincipalDep,
    Service,
    authorize,
    conforms,
    needs_client,
    on_this_machine,
    vault_executor,
)
from domicile.http.fast import FastRecords
from domicile.http.gate import AuthThrottle, Gate, refuse_credentials, source_address
from domicile.http.oauth import OAuthError
from domicile.http.observe import Metrics, Observe
from domicile.http.openapi import Contract, harden
from domicile.http.security import (
    RateLimited,
    TokenIssuer,
    audit_refusal,
)
from domicile.vault import Domicile
from domicile.vault.incountry import ExpirySweeper, InCountryStorage

# Secrets hashed with scrypt (by earlier versions) cost tens of milliseconds and 16 MB
# each to check: at most this many checks run at once, in worker threads, never on the
# event loop.
_SCRYPT_AT_ONCE = 2


class Application(FastAPI):
    """FastAPI, with the record routes' front (``fast.FastRecords``) seeing each request
    before FastAPI's own stack does."""

    front: FastRecords | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.front is None:
            await super().__call__(scope, receive, send)
        else:
            await self.front(scope, receive, send)

    async def stack(self, scope: Any, receive: Any, send: Any) -> None:
        """FastAPI's own stack: its middleware (the gate, the observer), then the router."""
        await super().__call__(scope, receive, send)


def _traced(app: FastAPI) -> bool:
    """Whether FastAPI's own OpenTelemetry is on (a provider configured in the process)."""
    telemetry = getattr(app, "_native_telemetry", None)
    return bool(telemetry is not None and telemetry.enabled())


def create_app(
    vault: Domicile,
    *,
    clients: ClientRegistry | None = None,
    settings: ServiceSettings | None = None,
    witness_every: float | None = None,
    processes: int = 1,
) -> FastAPI:
    """The service over ``vault``. ``settings`` (default: the configuration's ``service:``)
    sets the body caps, the authentication limits and whether /metrics is served apart;
    ``witness_every``: seconds between witness rounds (default: the configuration's
    ``audit.witness_every``); ``processes``: how many processes serve the deployment
    together (each takes its share of the authentication limits)."""
    registry = clients or ClientRegistry(
        vault.config.data_dir / "clients.json",
        [c.model_dump() for c in vault.config.model.clients],
    )
    settings = settings or vault.config.model.service
    issuer = TokenIssuer(vault.keys.token_key(), vault.config.model.environment_id)
    throttle = AuthThrottle(
        settings.auth_failures_per_source,
        settings.auth_failures_per_client,
        issuer.source_key,
        share=processes,
    )
    svc = Service(vault, registry, issuer, Metrics(), settings, throttle)
    svc.inline = on_this_machine(vault)
    scrypt_slots = anyio.CapacityLimiter(_SCRYPT_AT_ONCE)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from domicile.vault.auditing import Witnesser

        witnesser = Witnesser(vault, witness_every or vault.config.model.audit.witness_every)
        app.state.witnesser = witnesser.start()
        sweeper = ExpirySweeper(app.state.incountry, settings.expire_every)
        app.state.expiry = sweeper.start()
        retention = None
        if settings.retention_every is not None:  # off unless configured
            from domicile.retention.sweeper import RetentionSweeper

            retention = RetentionSweeper(vault, settings.retention_every).start()
        app.state.retention = retention
        # The document compiled before the first request, not during it (each worker
        # process of a multi-process service builds its own).
        app.state.contract = Contract(app.openapi())
        front.open = not _traced(app)
        yield
        front.open = False
        if retention is not None:
            retention.stop()
        sweeper.stop()
        witnesser.stop()
        svc.executor.shutdown(wait=True)
        svc.executor = vault_executor()  # threads start on first use, if the app is used again
        for key, count in throttle.drain().items():  # limited refusals not yet audited
            audit_refusal(
                vault, "rate limited", rate_limited_unaudited=count,
                source=throttle.source_id(key.partition(":")[2]),
            )  # fmt: skip
        vault.close()  # a last witness round on a clean stop

    app = Application(
        title="domicile",
        version=__version__,
        description="Keeps each person's personal data where the law demands it, and proves it.",
        lifespan=lifespan,
        docs_url=None,  # served offline by the console package
        redoc_url=None,
    )
    app.state.service = svc
    app.state.incountry = InCountryStorage(vault)
    problems.install(app)

    # Added last, so it runs first: the gate, then (outside it) the request log and metrics.
    from domicile.http import incountry, native

    def routes() -> list[tuple[str, BaseRoute]]:
        """Every route with the prefix it is mounted under, in the router's order."""
        own = [("", r) for r in app.router.routes if isinstance(r, Route)]
        return [*own, *(("/v1", r) for r in native.router.routes)] + [
            ("", r) for r in incountry.router.routes
        ]

    gate = Gate(None, svc, routes, needs_client)  # its table, for the front (``fast.py``)
    app.add_middleware(Gate, service=svc, routes=routes, needs_client=needs_client)
    app.add_middleware(Observe, metrics=svc.metrics)
    front = app.front = FastRecords(app.stack, svc, app, gate)

    @app.get("/healthz", tags=["operations"], summary="The process is alive")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz", tags=["operations"], summary="Every site this process serves answers",
        responses={503: {"description": "A site does not answer"}},
    )  # fmt: skip
    def readyz() -> JSONResponse:
        sites = vault.ready()  # on a federation node: its own site
        ready = all(sites.values())
        return JSONResponse({"ready": ready, "sites": sites}, status_code=200 if ready else 503)

    @app.get(
        "/metrics",
        tags=["operations"],
        summary="Prometheus metrics (scope metrics:read)",
        response_class=PlainTextResponse,
        responses=problems.documented(401, 403),
    )
    async def metrics(principal: PrincipalDep) -> Response:
        authorize(svc, principal, "metrics:read")
        return metrics_response(svc.metrics)

    @app.post(
        "/oauth2/token", tags=["authentication"], summary="OAuth2 client credentials",
        responses={**problems.documented(422, 429, 500, 503), **oauth.DOCUMENTED},
        openapi_extra={"requestBody": {"required": True}},  # grant_type missing: invalid_request
    )  # fmt: skip
    async def token(
        request: Request,
        grant_type: Annotated[str | None, Form()] = None,
        scope: Annotated[str | None, Form()] = None,
        audience: Annotated[str | None, Form()] = None,
        client_id: Annotated[str | None, Form()] = None,
        client_secret: Annotated[str | None, Form()] = None,
        authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
    ) -> dict[str, Any]:
        """Exchange a client id and secret (HTTP Basic, or form fields) for an access token.
        ``scope`` is the environment id, as InCountry clients send it. Refusals are OAuth2
        errors (RFC 6749 5.2; see ``oauth.py``), audited."""
        if authorization and authorization.lower().startswith("basic "):
            try:
                raw = base64.b64decode(authorization[6:].strip(), validate=True).decode()
                client_id, _, client_secret = raw.partition(":")
            except (binascii.Error, UnicodeDecodeError):
                client_id = client_secret = None
        # Only an existing client id has a limit of its own (an attacker's made-up ids
        # would otherwise each take memory); every failure counts against the source.
        known = svc.clients.get(client_id) if client_id else None
        limited_id = known.id if known else None
        wait = throttle.wait(source_address(request.scope), limited_id)
        if wait is not None:
            await refuse_credentials(svc, request.scope, "invalid credentials", limited_id)
            raise RateLimited(wait)
        environment = vault.config.model.environment_id
        problem: tuple[str, OAuthError] | None = None
        if not grant_type:
            problem = (
                "no grant type",
                OAuthError(
                    "invalid_request", "grant_type is required",
                    hint="send grant_type=client_credentials",
                ),
            )  # fmt: skip
        elif grant_type != "client_credentials":
            problem = (
                "unsupported grant",
                OAuthError(
                    "unsupported_grant_type", "only the client_credentials grant is supported"
                ),
            )
        elif scope is not None and scope.split()[:1] != [environment]:
            problem = (
                "wrong environment",
                OAuthError(
                    "invalid_scope", "the scope names another environment",
                    hint=f"this service is {environment!r}",
                )
                if scope.strip()
                else OAuthError(
                    "invalid_scope", "scope is blank", hint=f"send scope={environment} or leave it out"
                ),
            )  # fmt: skip
        if problem is not None:
            await refuse_credentials(svc, request.scope, problem[0], limited_id)
            raise problem[1]
        client = None
        if known is not None and client_secret:
            client = await anyio.to_thread.run_sync(
                svc.clients.by_secret, known.id, client_secret, limiter=scrypt_slots
            )
        if client is None:
            await refuse_credentials(svc, request.scope, "invalid client credentials", limited_id)
            raise OAuthError("invalid_client", "the client id or secret is wrong or missing")
        request.state.client = client.id
        access, ttl = svc.issuer.issue(client)
        return {
            "access_token": access,
            "expires_in": ttl,
            "token_type": "bearer",
            "scope": environment,
        }

    # Every request keeps to the published document (see ``openapi.py``).
    app.include_router(native.router, prefix="/v1", dependencies=[Depends(conforms)])
    app.include_router(incountry.router)  # its calls check after authorizing (incountry.py)
    console.install(app)  # /console and /docs, left out of the OpenAPI document

    generate = app.openapi
    authenticated = {
        (method, prefix + route.path)
        for prefix, route in routes()
        if isinstance(route, APIRoute) and needs_client(route)
        for method in route.methods or ()
    }

    def openapi() -> dict[str, Any]:
        return harden(generate(), vault.config, vault.engine, authenticated)

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def metrics_response(metrics: Metrics) -> Response:
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


def metrics_app(metrics: Metrics) -> Any:
    """A bare ASGI application serving only ``/metrics``, for a listener of its own
    (``serve --metrics-address``): whoever can reach that address may read the metrics."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/metrics" and scope["method"] in ("GET", "HEAD"):
            await metrics_response(metrics)(scope, receive, send)
        else:
            await PlainTextResponse("not found", status_code=404)(scope, receive, send)

    return app
