"""Access tokens, and the dependencies that authenticate and authorize a request.

Access tokens are stateless: ``dat1.PAYLOAD.SIGNATURE``, where the payload holds the client
id, the environment id and an expiry (not the scopes: they are looked up on each request,
so a change to a client's scopes applies at once), and the signature is HMAC-SHA256 under a
key derived from the keyring (HKDF). Any process of the deployment can check them. A
bearer value that is not an access token is tried as a static API key.

Every refusal, whether authentication or authorization, is audited at the local site
without personal data, and answered with a problem document.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
import time
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from domicile.access import Forbidden as Forbidden  # one class for every refusal of scope
from domicile.audit import AuditEvent
from domicile.clients import OPERATIONS, Client, ClientRegistry
from domicile.errors import DomicileError, ExitCode
from domicile.stores.base import SiteUnavailable
from domicile.vault import Domicile

TOKEN_TTL = 3600


class Unauthorized(DomicileError):
    code = "unauthorized"
    exit_code = ExitCode.REFUSED


class RateLimited(DomicileError):
    """Too many failed authentications from this source (or for this client id)."""

    code = "rate_limited"
    exit_code = ExitCode.REFUSED

    def __init__(self, wait: float) -> None:
        seconds = max(1, math.ceil(wait))
        super().__init__(
            f"too many failed authentications; retry in {seconds} s",
            hint="check the credentials before retrying",
        )
        self.retry_after = seconds


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Principal:
    client: Client
    via: str  # "token" or "api_key"
    expires: float | None = None  # an access token's expiry (epoch seconds)


def _derive(master: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(master)


class TokenIssuer:
    def __init__(self, master: bytes, environment: str) -> None:
        self._key = _derive(master, b"domicile/access-token/v1")
        # Keys the digests that name a request's source address in audit entries.
        self.source_key = _derive(master, b"domicile/source-id/v1")
        self.environment = environment

    def issue(self, client: Client, ttl: int = TOKEN_TTL) -> tuple[str, int]:
        claims = {"c": client.id, "e": self.environment, "x": int(time.time()) + ttl}
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        sig = _b64(hmac.digest(self._key, payload.encode(), hashlib.sha256))
        return f"dat1.{payload}.{sig}", ttl

    def read(self, token: str) -> dict[str, Any] | None:
        """The claims of a valid, unexpired token of this environment, else None (never an
        exception, whatever the caller sent)."""
        if not isinstance(token, str) or not token.isascii() or len(token) > 4096:
            return None
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != "dat1":
            return None
        expected = _b64(hmac.digest(self._key, parts[1].encode(), hashlib.sha256))
        if not hmac.compare_digest(expected.encode(), parts[2].encode()):
            return None
        try:
            claims = json.loads(_unb64(parts[1]))
            if not isinstance(claims, dict) or not isinstance(claims.get("c"), str):
                return None
            if claims.get("e") != self.environment or int(claims.get("x", 0)) < time.time():
                return None
        except (ValueError, TypeError):
            return None
        return claims


def bearer_principal(issuer: TokenIssuer, clients: ClientRegistry, bearer: str) -> Principal | None:
    """The client a bearer value (an access token, else an API key) belongs to, or None.
    Both checks are cheap (an HMAC; a SHA-256 digest looked up)."""
    if not bearer or not bearer.isascii() or len(bearer) > 4096:
        return None
    claims = issuer.read(bearer)
    client = clients.get(claims["c"]) if claims else clients.by_api_key(bearer)
    if client is None:
        return None
    if claims:
        return Principal(client, "token", float(int(claims["x"])))
    return Principal(client, "api_key")


_PURPOSE = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")


def _known_scope(vault: Domicile, scope: str) -> str:
    """A scope as audited: its value is kept only if the deployment knows it (a collection
    or site named in a request path is the caller's text, and the audit keeps no value)."""
    prefix, sep, value = scope.partition(":")
    if not sep or value == "*":
        return scope
    known = {
        "site": {s.id for s in vault.config.sites},
        "collection": set(vault.config.model.collections),
    }.get(prefix)
    if known is not None:
        return scope if value in known else f"{prefix}:?"
    if prefix == "purpose":
        return scope if _PURPOSE.match(value) else "purpose:?"
    return scope if scope in OPERATIONS else "?"


def audit_refusal(vault: Domicile, reason: str, **detail: Any) -> None:
    """A refused request, in the local site's audit (ids, scope names and route templates
    only). This writes to a database: call it from a worker thread, not the event loop."""
    if isinstance(detail.get("missing_scope"), str):
        detail["missing_scope"] = _known_scope(vault, detail["missing_scope"])
    purpose = detail.pop("purpose", None)
    event = AuditEvent(
        action="refuse", site=vault.config.local_site, requester=vault.config.local_site,
        client=detail.pop("client", None),
        purpose=purpose if isinstance(purpose, str) and _PURPOSE.match(purpose) else None,
        detail={"reason": reason, **detail},
    )  # fmt: skip
    try:
        vault._audit(vault.config.local_site, [event])
    except SiteUnavailable:
        vault._drop(vault.config.local_site)
