"""The fast path of the record routes: put, batch put, get and batch read.

FastAPI resolves a route's dependencies and parameters anew on every request, and on the
record routes that cost several times the vault's own work. These routes need nothing it
resolves that is not already known: the gate has matched the route, authenticated the
client (before the body was read) and capped the body. So a well-formed request to one of
them is served here, inside the gate, in one step:

1. the path and query parameters and the JSON body (parsed once, with orjson) are checked
   against the published document (``Contract``), exactly as ``deps.conforms`` checks them;
2. the body is validated by the route's own model, as FastAPI would;
3. the route's work (``native.put_work`` and the others, which the FastAPI endpoints call
   too) runs on the service's executor, and its JSON bytes are the answer.

Anything else goes to the application unchanged, with its body handed over as it was
read: a body that is not JSON, a missing parameter, a request the document or the model
refuses. So every refusal (its status, its problem document, its audit entry) is the one
the application gives, by construction. The vault's own errors (a policy refusal, a
missing record) are answered by the application's handlers for them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError
from starlette.datastructures import Headers, QueryParams
from starlette.requests import Request
from starlette.routing import compile_path
from starlette.types import Scope

from domicile.errors import DomicileError
from domicile.http import native
from domicile.http.deps import Service
from domicile.http.gate import principal_of
from domicile.http.observe import ROUTE_KEY
from domicile.http.openapi import Contract
from domicile.http.security import Principal

Work = Callable[[Service, Principal, dict[str, str], dict[str, str], Any], bytes]


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


ROUTES = {
    (r.method, r.template): r
    for r in (
        _route(
            "POST", "/v1/collections/{collection}/records", native.PutBody,
            lambda svc, who, path, q, body: native.put_work(svc, who, path, body, q.get("as_site")),
            201,
        ),
        _route(
            "POST", "/v1/collections/{collection}/records/batch", native.BatchBody,
            lambda svc, who, path, q, body: native.put_batch_work(
                svc, who, path, body, q.get("as_site")
            ),
            201,
        ),
        _route(
            "GET", "/v1/records/{token}", None,
            lambda svc, who, path, q, _: native.get_work(
                svc, who, path["token"], q["purpose"], q.get("as_site")
            ),
            query=("purpose", "as_site"), required=("purpose",),
        ),
        _route(
            "POST", "/v1/read", native.ReadManyBody,
            lambda svc, who, path, q, body: native.read_many_work(svc, who, body, q.get("as_site")),
        ),
    )
}  # fmt: skip


class FastRecords:
    """Pure ASGI, inside the gate: serves the record routes' well-formed requests (see the
    module docstring) and hands every other request to ``app``."""

    def __init__(self, app: Any, service: Service, application: Any) -> None:
        self.app = app
        self.service = service
        self.application = application  # the FastAPI app: its document and error handlers

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        route = ROUTES.get((scope.get("method", ""), scope.get(ROUTE_KEY, "")))
        principal = principal_of(scope) if route is not None else None
        if route is None or principal is None:
            await self.app(scope, receive, send)
            return
        body = b""
        if route.body is not None:
            more = True
            while more:
                message = await receive()
                if message["type"] != "http.request":  # the client went away
                    return
                body += message.get("body", b"")
                more = message.get("more_body", False)
        checked = self._check(route, scope, body)
        if checked is None:
            await self.app(scope, _replay(body, receive), send)
            return
        path, query, model = checked
        svc = self.service
        try:
            data = await svc.run(lambda: route.work(svc, principal, path, query, model))
        except DomicileError as exc:
            handler = self.application.exception_handlers[DomicileError]
            response = await handler(Request(scope), exc)
            await response(scope, receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": route.status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(data)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": data})

    def _check(
        self, route: FastRoute, scope: Scope, body: bytes
    ) -> tuple[dict[str, str], dict[str, str], Any] | None:
        """The path and query parameters and the validated body; None when anything is
        not as the document and the route's model want it (the application answers)."""
        found = route.regex.match(scope["path"])
        if found is None:
            return None
        path = found.groupdict()
        params = QueryParams(scope.get("query_string", b""))
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


def _replay(body: bytes, receive: Any) -> Any:
    """A ``receive`` that gives ``body`` (already read) once, then defers to ``receive``."""
    given = False

    async def replay() -> dict[str, Any]:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        message: dict[str, Any] = await receive()
        return message

    return replay
