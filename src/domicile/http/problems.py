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

from domicile.crypto.errors import DecryptionFailed, KeyDestroyed
from domicile.errors import (
    BadInput,
    Conflict,
    DomicileError,
    NodeUnavailable,
    OtherNode,
    PeerRefused,
    TooLarge,
)
from domicile.http import oauth
from domicile.http.observe import log_event, route_template
from domicile.http.security import Forbidden, RateLimited, Unauthorized
from domicile.stores.base import SiteUnavailable, VersionConflict
from domicile.vault import NotFound, PolicyRefused
from domicile.vault.errors import InvalidToken, SubjectBlocked

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
        421: "Another node holds that country's data: send the request there",
        410: "The record's subject key is gone (erased)", 413: "The body is too large",
        422: "The request does not match the API",
        429: "Too many failed authentications; retry after Retry-After seconds",
        500: "Internal error", 503: "A site is unavailable",
    }  # fmt: skip
    return {s: {"description": words[s], "content": {MEDIA: {"schema": _SCHEMA}}} for s in statuses}


ALL = documented(400, 401, 403, 404, 409, 410, 413, 422, 429, 500, 503)


def status_of(exc: DomicileError) -> int:
    if isinstance(exc, Unauthorized):
        return 401
    if isinstance(exc, RateLimited):
        return 429
    if isinstance(exc, OtherNode):  # Misdirected Request: the same request, to its node
        return 421
    if isinstance(exc, Forbidden | PolicyRefused | PeerRefused):
        return 403
    if isinstance(exc, NotFound | InvalidToken):  # a token that is not ours names no record
        return 404
    if isinstance(exc, KeyDestroyed):  # the record is still there, its subject's key is not
        return 410
    if isinstance(exc, TooLarge):
        return 413
    if isinstance(exc, Conflict):
        return 409
    if isinstance(exc, BadInput):
        return 400
    if isinstance(exc, SiteUnavailable | NodeUnavailable):
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


def too_large(cap: int | None) -> JSONResponse:
    return problem(
        413, "body_too_large", "the request body is too large",
        detail=f"this route takes at most {cap} bytes" if cap else None,
        hint="send a smaller body; the caps are service.max_json_bytes and service.max_attachment_bytes",
    )  # fmt: skip


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


# Where a request can be wrong, and the union members pydantic names in its locations.
_LOCATIONS = frozenset(("body", "query", "path", "header", "cookie", "str", "int", "bool"))


def _collect_names(node: Any, out: set[str]) -> None:
    if isinstance(node, dict):
        props = node.get("properties")
        if isinstance(props, dict):
            out.update(props)
        if node.get("in") in ("query", "path", "header", "cookie") and "name" in node:
            out.add(str(node["name"]))
            out.add(str(node["name"]).replace("-", "_"))
        for value in node.values():
            _collect_names(value, out)
    elif isinstance(node, list):
        for value in node:
            _collect_names(value, out)


def install(app: FastAPI) -> None:
    @app.exception_handler(oauth.OAuthError)
    async def oauth_error(request: Request, exc: oauth.OAuthError) -> JSONResponse:
        return oauth.response(exc)  # the token endpoint answers as OAuth2 clients expect

    @app.exception_handler(DomicileError)
    async def domicile_error(request: Request, exc: DomicileError) -> JSONResponse:
        status = status_of(exc)
        route = route_template(request.scope)
        if status == 500:
            log_event("internal error", logging.ERROR, route=route, code=exc.code)
            if isinstance(exc, DecryptionFailed):  # typed: a caller may retry or report it
                return problem(
                    500, exc.code, "decryption failed", detail=exc.message, hint=exc.hint
                )
            return problem(500, "internal_error", "internal error", detail="see the service log")
        extra: dict[str, Any] = {"detail": exc.message, "hint": exc.hint}
        headers: dict[str, str] = {}
        if isinstance(exc, SubjectBlocked):
            extra["block"] = exc.block  # its kind, request, since and site: no subject
        elif isinstance(exc, PolicyRefused):
            extra["decision"] = public_decision(exc.decision)
        if isinstance(exc, SiteUnavailable):
            # Why a site is down names its database (a path, a host, a port, a database
            # name): that is for the operator's log, not for the caller.
            log_event("site unavailable", logging.WARNING, route=route, site=exc.site,
                      reason=exc.reason)  # fmt: skip
            extra.update(site=exc.site, detail=f"site {exc.site!r} is unavailable")
        if isinstance(exc, RateLimited):
            headers["Retry-After"] = str(exc.retry_after)
        if isinstance(exc, OtherNode):  # where to send it instead: a client can act on it
            extra.update(node=exc.node, country=exc.country, endpoint=exc.endpoint)
        return problem(status, exc.code, exc.code.replace("_", " "), headers or None, **extra)

    names: set[str] = set()

    def known_names() -> set[str]:
        """Every name the API defines (properties, parameters, collection fields): a key
        the caller made up is not repeated in an error, since it may be a value."""
        if not names:
            names.update(_LOCATIONS)
            _collect_names(app.openapi(), names)
            service = getattr(app.state, "service", None)
            if service is not None:
                for coll in service.vault.config.model.collections.values():
                    names.update(coll.fields)
        return names

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Name where the request is wrong, never what it held.
        known = known_names()
        where = [
            {
                "loc": [
                    str(p) if isinstance(p, int) or p in known else "*" for p in e.get("loc", ())
                ],
                "problem": e.get("msg", "invalid"),
            }
            for e in exc.errors()
        ]
        return problem(
            422, "invalid_request", "the request does not match the API", errors=where,
            hint="see /openapi.json",
        )  # fmt: skip

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 413:
            return too_large(getattr(exc, "cap", None))
        headers = dict(exc.headers) if exc.headers else {}
        if exc.status_code == 405:  # every method of every route on this path, not just one
            headers["Allow"] = ", ".join(sorted(_allowed(request)))
        return problem(exc.status_code, f"http_{exc.status_code}", str(exc.detail), headers or None)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # The type only: an exception's message may hold a value.
        log_event(
            "unexpected error", logging.ERROR, route=route_template(request.scope),
            error=type(exc).__name__,
        )  # fmt: skip
        return problem(500, "internal_error", "internal error", detail="see the service log")
