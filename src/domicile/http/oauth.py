"""The token endpoint's errors, as OAuth2 clients read them (RFC 6749 section 5.2).

InCountry's clients, like any OAuth2 client, decide what went wrong at ``/oauth2/token``
from the body's ``error`` code, not from a problem document: ``invalid_request`` (a
required parameter is missing), ``invalid_client`` (the client id or secret is wrong or
missing), ``unsupported_grant_type`` and ``invalid_scope`` (the ``scope`` does not name this
service's environment). The body is ``{"error", "error_description", "status_code"}``:
``status_code`` repeats the HTTP status, as InCountry's own token endpoint does, so that
its clients map the error to an authentication error. ``invalid_client`` answers 401 with
``WWW-Authenticate: Basic`` (the scheme clients authenticate with here), the others 400;
none is cached. Descriptions name what is wrong, never a value the request carried.

Rate limiting (429), a site that does not answer (503) and internal errors keep their
problem documents: RFC 6749 has no code for them and clients retry on the status.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi.responses import JSONResponse

from domicile.errors import DomicileError, ExitCode

ErrorCode = Literal["invalid_request", "invalid_client", "invalid_scope", "unsupported_grant_type"]

_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error", "error_description", "status_code"],
    "properties": {
        "error": {
            "type": "string",
            "enum": [
                "invalid_request",
                "invalid_client",
                "invalid_scope",
                "unsupported_grant_type",
            ],
        },
        "error_description": {"type": "string"},
        "status_code": {"type": "integer", "enum": [400, 401]},
    },
    "additionalProperties": False,
}

# OpenAPI ``responses`` of the token endpoint's OAuth2 errors.
DOCUMENTED: dict[int | str, dict[str, Any]] = {
    400: {
        "description": "invalid_request, invalid_scope or unsupported_grant_type (RFC 6749 5.2)",
        "content": {"application/json": {"schema": _SCHEMA}},
    },
    401: {
        "description": "invalid_client: the client id or secret is wrong or missing",
        "content": {"application/json": {"schema": _SCHEMA}},
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
    },
}


class OAuthError(DomicileError):
    """A refusal of the token endpoint, with its RFC 6749 error code."""

    code = "oauth_error"
    exit_code = ExitCode.REFUSED

    def __init__(self, error: ErrorCode, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.error = error
        self.status = 401 if error == "invalid_client" else 400


def response(exc: OAuthError) -> JSONResponse:
    headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="domicile"'
    body = {"error": exc.error, "error_description": str(exc), "status_code": exc.status}
    return JSONResponse(body, status_code=exc.status, headers=headers)
