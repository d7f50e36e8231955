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

from domicile.errors import BadInput, DomicileError
from domicile.http.security import Forbidden, Unauthorized
from domicile.stores.base import SiteUnavailable
from domicile.vault import NotFound, PolicyRefused

log = logging.getLogger("domicile.http")
MEDIA = "application/problem+json"


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
    return 500


def problem(status: int, code: str, title: str, **extra: Any) -> JSONResponse:
    body = {
        "type": f"https://domicile.dev/problems/{code}",
        "title": title,
        "status": status,
        "code": code,
    }
    body.update({k: v for k, v in extra.items() if v is not None})
    headers = {"WWW-Authenticate": 'Bearer realm="domicile"'} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=MEDIA, headers=headers)


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
        return problem(exc.status_code, f"http_{exc.status_code}", str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error", extra={"error": type(exc).__name__, "path": request.url.path})
        return problem(500, "internal_error", "internal error", detail="see the service log")
