"""Errors as problem documents (RFC 9457): typed, with a hint, never a stack trace or a value.

A policy refusal carries what a caller needs to act (the outcome, the rule ids, the
obligations that would unlock it) but not the decision's request: that names the
subject's countries, which are personal data the caller may not be entitled to.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from domicile.errors import BadInput, DomicileError
from domicile.http.security import Forbidden, Unauthorized
from domicile.stores.base import SiteUnavailable, VersionConflict
from domicile.vault import NotFound, PolicyRefused

log = logging.getLogger("domicile.http")
MEDIA = "application/problem+json"

_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status", "code"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "code": {"type": "string"},
        "detail": {"type": "string"},
        "hint": {"type": "string"},
    },
    "additionalProperties": True,
}


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the problem documents a route may answer with."""
    words = {
        400: "Bad input", 401: "Not authenticated", 403: "Refused (scope or policy)",
        404: "Not found", 409: "Changed concurrently; retry",
        422: "The request does not match the API", 500: "Internal error",
        503: "A site is unavailable",
    }  # fmt: skip
    return {s: {"description": words[s], "content": {MEDIA: {"schema": _SCHEMA}}} for s in statuses}


ALL = documented(400, 401, 403, 404, 422, 500, 503)


def status_of(exc: DomicileError) -> int:
    if isinstance(exc, Unauthorized):
        return 401
    if isinstance(exc, Forbidden | PolicyRefused):
        return 403
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, BadInput):
        return 400
    if isinstance(exc, SiteUnavailable):
        return 503
    if isinstance(exc, VersionConflict):
        return 409
    return 500


def problem(
    status: int, code: str, title: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body = {
        "type": f"https://domicile.dev/problems/{code}",
        "title": title,
        "status": status,
        "code": code,
    }
    body.update({k: v for k, v in extra.items() if v is not None})
    out = dict(headers or {})
    if status == 401:
        out["WWW-Authenticate"] = 'Bearer realm="domicile"'
    return JSONResponse(body, status_code=status, media_type=MEDIA, headers=out or None)


def public_decision(decision: dict[str, Any] | None) -> dict[str, Any] | None:
    if not decision:
        return None
    return {
        "decision": decision.get("decision"),
        "disclosure": decision.get("disclosure"),
        "rules": [
            {"id": r["id"], "outcome": r["outcome"], "route": r.get("route")}
            for r in decision.get("rules", [])
        ],
        "obligations": [
            {"id": o["id"], "text": o["text"], "status": o["status"], "earliest": o.get("earliest")}
            for o in decision.get("obligations", [])
            if o.get("status") != "met"
        ],
        "earliest_allowed": decision.get("earliest_allowed"),
    }


def _allowed(request: Request) -> set[str]:
    methods: set[str] = set()
    for route in request.app.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return methods


def install(app: FastAPI) -> None:
    @app.exception_handler(DomicileError)
    async def domicile_error(request: Request, exc: DomicileError) -> JSONResponse:
        status = status_of(exc)
        if status == 500:
            log.error("internal error", extra={"code": exc.code, "path": request.url.path})
            return problem(500, "internal_error", "internal error", detail="see the service log")
        extra: dict[str, Any] = {"detail": exc.message, "hint": exc.hint}
        if isinstance(exc, PolicyRefused):
            extra["decision"] = public_decision(exc.decision)
        if isinstance(exc, SiteUnavailable):
            extra["site"] = exc.site
        return problem(status, exc.code, exc.code.replace("_", " "), **extra)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Name where the request is wrong, never what it held.
        where = [
            {"loc": [str(p) for p in e.get("loc", ())], "problem": e.get("msg", "invalid")}
            for e in exc.errors()
        ]
        return problem(
            422, "invalid_request", "the request does not match the API", errors=where,
            hint="see /openapi.json",
        )  # fmt: skip

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers) if exc.headers else {}
        if exc.status_code == 405:  # every method of every route on this path, not just one
            headers["Allow"] = ", ".join(sorted(_allowed(request)))
        return problem(exc.status_code, f"http_{exc.status_code}", str(exc.detail), headers or None)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error", extra={"error": type(exc).__name__, "path": request.url.path})
        return problem(500, "internal_error", "internal error", detail="see the service log")
