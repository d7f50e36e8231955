"""The fast path of the record routes: put, batch put, get and batch read.

FastAPI resolves a route's dependencies and parameters anew on every request, and on the
record routes that cost several times the vault's own work; each layer of middleware
around them (FastAPI's own three, then the observer, the gate) costs again. These routes
need nothing of that which cannot be done in one step. So the front (``FastRecords``),
which sees each request before FastAPI's stack does, serves a well-formed request to one
of them from a client it can authenticate, end to end:

1. the route is matched as the router will match it (the gate's table), and the client
   authenticated from ``Authorization: Bearer`` (``Service.bearer``) before the body is
   read, which must not pass the JSON cap;
2. the path and query parameters and the JSON body (parsed once, with orjson) are checked
   against the published document (``Contract``), exactly as ``deps.conforms`` checks them;
3. the body is validated by the route's own model, as FastAPI would;
4. the route's work (``native.put_work`` and the others, which the FastAPI endpoints call
   too) runs where they run it (``Service.run_single`` for a single read, the executor
   for writes and batch reads), and its JSON bytes are the answer;
5. the answer is observed as the observer observes every other one (``observe.observed``:
   its metrics and its log line).

Anything else goes to the application unchanged (its gate, its observer, its routes), with
its body handed over as it was read: no credentials or bad ones, a body too large, a body
that is not JSON, a missing parameter, a request the document or the model refuses. So
every refusal (its status, its problem document, its audit entry, its count against the
source) is the one the application gives, by construction. The vault's own errors (a
policy refusal, a missing record) are answered by the application's handlers for them, and
anything unexpected by its handler of last resort (a 500), as FastAPI's outermost layer
does.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import orjson
from pydantic import BaseModel, ValidationError
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.routing import compile_path
from starlette.types import Scope

from domicile.errors import DomicileError
from domicile.http import native
from domicile.http.deps import Service
from domicile.http.gate import Gate
from domicile.http.observe import ROUTE_KEY, observed
from domicile.http.openapi import Contract
from domicile.http.security import Principal

# The route's work, given the service, the client, the path and query parameters and the
# validated body: its answer's JSON bytes.
Work = Callable[[Service, Principal, dict[str, str], dict[str, str], Any], Awaitable[bytes]]


@dataclass(frozen=True)
class FastRoute:
    method: str
    template: str
    regex: re.Pattern[str]
    body: type[BaseModel] | None
    query: tuple[str, ...]  # the query parameters it takes
    required: tuple[str, ...]  # ...and those it cannot do without
    work: Work
    status: int


def _route(
    method: str, template: str, body: type[BaseModel] | None, work: Work, status: int = 200,
    query: tuple[str, ...] = ("as_site",), required: tuple[str, ...] = (),
) -> FastRoute:  # fmt: skip
    regex, _, _ = compile_path(template)
    return FastRoute(method, template, regex, body, query, required, work, status)


# A single read on ``Service.run_single``, writes and batch reads on the executor: as the
# FastAPI endpoints run them.
async def _put(
    svc: Service, who: Principal, path: dict[str, str], q: dict[str, str], body: Any
) -> bytes:
    return await svc.run(lambda: native.put_work(svc, who, path, body, q.get("as_site")))


async def _put_batch(
    svc: Service, who: Principal, path: dict[str, str], q: dict[str, str], body: Any
) -> bytes:
    return await svc.run(lambda: native.put_batch_work(svc, who, path, body, q.get("as_site")))


async def _get(
    svc: Service, who: Principal, path: dict[str, str], q: dict[str, str], _: Any
) -> bytes:
    token, purpose = path["token"], q["purpose"]
    return await svc.run_single(lambda: native.get_work(svc, who, token, purpose, q.get("as_site")))


async def _read(
    svc: Service, who: Principal, _: dict[str, str], q: dict[str, str], body: Any
) -> bytes:
    return await native.read_many(svc, who, body, q.get("as_site"))


ROUTES = {
    (r.method, r.template): r
    for r in (
        _route("POST", "/v1/collections/{collection}/records", native.PutBody, _put, 201),
        _route("POST", "/v1/collections/{collection}/records/batch", native.BatchBody, _put_batch, 201),
        _route(
            "GET", "/v1/records/{token}", None, _get,
            query=("purpose", "as_site"), required=("purpose",),
        ),
        _route("POST", "/v1/read", native.ReadManyBody, _read),
    )
}  # fmt: skip


class FastRecords:
    """The front of the application: pure ASGI, around FastAPI's own stack (``app.py``
    calls it first). It serves the record routes' well-formed requests from authenticated
    clients (see the module docstring) and hands every other request to ``app`` (the
    FastAPI application, with its gate and observer) unchanged."""

    def __init__(self, app: Any, service: Service, application: Any, gate: Gate) -> None:
        self.app = app
        self.service = service
        self.application = application  # the FastAPI app: its document and error handlers
        self.gate = gate  # its table of routes: the route the router will take
        # Opened by the application's start, unless FastAPI's own OpenTelemetry is on then
        # (its spans and metrics see a request only through FastAPI's stack).
        self.open = False

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if not self.open or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        facts = self.gate.match(scope)
        route = ROUTES.get((scope["method"], facts.template)) if facts is not None else None
        if route is None or facts is None or not facts.authenticated:
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        authorization = length = None
        for name, value in scope["headers"]:
            if name == b"authorization" and authorization is None:
                authorization = value
            elif name == b"content-length" and length is None:
                length = value
        svc = self.service
        principal = None
        if authorization is not None and authorization[:7].lower() == b"bearer ":
            principal = svc.bearer(authorization[7:].decode("latin-1").strip())
        cap = svc.settings.max_json_bytes
        if principal is None or (length is not None and length.isdigit() and int(length) > cap):
            # Refused by the gate, as ever: no credentials, bad ones, a body too large.
            await self.app(scope, receive, send)
            return
        scope[ROUTE_KEY] = facts.template
        scope["app"] = self.application
        state = scope.setdefault("state", {})
        state["principal"] = principal
        state["client"] = principal.client.id
        body = b""
        if route.body is not None:
            more = True
            while more:
                message = await receive()
                if message["type"] != "http.request":  # the client went away
                    return
                body += message.get("body", b"")
                more = message.get("more_body", False)
                if len(body) > cap:  # the gate answers 413
                    await self.app(scope, _replay(body, receive, more), send)
                    return
        checked = self._check(route, scope, body)
        if checked is None:
            await self.app(scope, _replay(body, receive), send)
            return
        path, query, model = checked
        status = 500
        started = False
        try:
            try:
                data = await route.work(svc, principal, path, query, model)
            except DomicileError as exc:
                handler = self.application.exception_handlers[DomicileError]
                response = await handler(Request(scope), exc)
                status, started = response.status_code, True
                await response(scope, receive, send)
                return
            status, started = route.status, True
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", b"%d" % len(data)),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": data})
        except Exception as exc:
            if not started:  # as FastAPI's outermost layer: the application's own 500
                status = 500
                response = await self.application.exception_handlers[Exception](Request(scope), exc)
                await response(scope, receive, send)
            raise  # on to QuietErrors, which logs its type
        finally:
            observed(svc.metrics, scope, status, time.perf_counter() - start)

    def _check(
        self, route: FastRoute, scope: Scope, body: bytes
    ) -> tuple[dict[str, str], dict[str, str], Any] | None:
        """The path and query parameters and the validated body; None when anything is
        not as the document and the route's model want it (the application answers)."""
        found = route.regex.match(scope["path"])
        if found is None:
            return None
        path = found.groupdict()
        # As Starlette's ``QueryParams`` reads it (its last value of a name), without the
        # multi-value copies it keeps beside.
        raw = scope.get("query_string", b"").decode("latin-1")
        params = dict(parse_qsl(raw, keep_blank_values=True)) if raw else {}
        query = {name: params[name] for name in route.query if name in params}
        if any(name not in query for name in route.required):
            return None
        headers = Headers(scope=scope)
        parsed: Any = None
        if route.body is not None:
            kind = headers.get("content-type", "").partition(";")[0].strip().lower()
            if kind != "application/json" or not body:
                return None
            try:
                parsed = orjson.loads(body)
            except orjson.JSONDecodeError:
                return None
        contract: Contract | None = getattr(self.application.state, "contract", None)
        if contract is None:
            return None
        wanted = {"path": path, "query": params, "header": headers}
        if contract.problems(route.method, route.template, wanted, parsed, route.body is not None):
            return None
        if route.body is None:
            return path, query, None
        try:
            return path, query, route.body.model_validate(parsed)
        except ValidationError:
            return None


def _replay(body: bytes, receive: Any, more: bool = False) -> Any:
    """A ``receive`` that gives ``body`` (already read; ``more``: not all of it) once,
    then defers to ``receive``."""
    given = False

    async def replay() -> dict[str, Any]:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": more}
        message: dict[str, Any] = await receive()
        return message

    return replay
