"""Access tokens, and the dependencies that authenticate and authorize a request.

Access tokens are stateless: ``dat1.PAYLOAD.SIGNATURE``, where the payload holds the client
id, its scopes, the environment id and an expiry, and the signature is HMAC-SHA256 under a
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
import time
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from domicile.access import Forbidden as Forbidden  # one class for every refusal of scope
from domicile.audit import AuditEvent
from domicile.clients import Client
from domicile.errors import DomicileError
from domicile.stores.base import SiteUnavailable
from domicile.vault import Domicile

TOKEN_TTL = 3600


class Unauthorized(DomicileError):
    code = "unauthorized"
    exit_code = 2


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Principal:
    client: Client
    via: str  # "token" or "api_key"


class TokenIssuer:
    def __init__(self, master: bytes, environment: str) -> None:
        self._key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"domicile/access-token/v1"
        ).derive(master)
        self.environment = environment

    def issue(self, client: Client, ttl: int = TOKEN_TTL) -> tuple[str, int]:
        claims = {"c": client.id, "e": self.environment, "x": int(time.time()) + ttl}
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        sig = _b64(hmac.digest(self._key, payload.encode(), hashlib.sha256))
        return f"dat1.{payload}.{sig}", ttl

    def read(self, token: str) -> dict[str, Any] | None:
        """The claims of a valid, unexpired token of this environment, else None."""
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != "dat1":
            return None
        expected = _b64(hmac.digest(self._key, parts[1].encode(), hashlib.sha256))
        if not hmac.compare_digest(expected, parts[2]):
            return None
        try:
            claims: dict[str, Any] = json.loads(_unb64(parts[1]))
        except ValueError:
            return None
        if claims.get("e") != self.environment or int(claims.get("x", 0)) < time.time():
            return None
        return claims


def audit_refusal(vault: Domicile, reason: str, **detail: Any) -> None:
    """A refused request, in the local site's audit (ids and scope names only)."""
    event = AuditEvent(
        action="refuse", site=vault.config.local_site, requester=vault.config.local_site,
        client=detail.pop("client", None), purpose=detail.pop("purpose", None),
        detail={"reason": reason, **detail},
    )  # fmt: skip
    try:
        vault._audit(vault.config.local_site, [event])
    except SiteUnavailable:
        vault._drop(vault.config.local_site)
