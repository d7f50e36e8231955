"""Console sessions: a signed cookie, and the CSRF token every change must carry.

A session is stateless, like the API's access tokens, so any process of a multi-process
service accepts it: ``dcs1.PAYLOAD.SIGNATURE``, where the payload holds the client id, a
random session id, an expiry and a binding, and the signature is HMAC-SHA256 under a key
derived from the keyring. The client's scopes are not in it: they are looked up on every
request, so a change to a client (or its removal) applies at once.

The binding is an HMAC of the client's session stamp in the client registry
(``ClientRegistry.session_stamp``: a per-client generation and the stored secret hash),
checked on every request. Signing out bumps the generation, and a new secret changes the
hash, so a cookie kept from before either no longer signs anyone in. Signing out ends
every session of that client, in every browser.

The CSRF token of a session is an HMAC of its session id under another derived key: a
form carries it in a hidden field and the server recomputes it. A page of another origin
can neither read the cookie (HttpOnly, SameSite=Strict) nor compute the token. The sign-in
form has a token of its own, tied to a short-lived pre-session cookie.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

COOKIE = "domicile_console"
PRE_COOKIE = "domicile_console_signin"
SESSION_TTL = 8 * 3600  # a working day
PRE_TTL = 1800


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _derive(master: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(master)


@dataclass(frozen=True)
class Session:
    client_id: str
    sid: str
    expires: int
    binding: str


class Sessions:
    """Issues and reads session cookies and CSRF tokens for one deployment."""

    def __init__(self, master: bytes, environment: str) -> None:
        self._sign = _derive(master, b"domicile/console-session/v1")
        self._csrf = _derive(master, b"domicile/console-csrf/v1")
        self.environment = environment

    def issue(self, client_id: str, stamp: str, ttl: int = SESSION_TTL) -> str:
        """A cookie for the client, bound to its current ``stamp`` (see the module)."""
        claims = {
            "c": client_id,
            "s": secrets.token_urlsafe(16),
            "g": self._bind(client_id, stamp),
            "e": self.environment,
            "x": int(time.time()) + ttl,
        }
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        return f"dcs1.{payload}.{self._mac(payload)}"

    def _bind(self, client_id: str, stamp: str) -> str:
        return self._mac(f"bind.{client_id}\0{stamp}")

    def current(self, session: Session, stamp: str | None) -> bool:
        """Whether a session is still bound to its client's stamp (None: no such client)."""
        if stamp is None:
            return False
        expected = self._bind(session.client_id, stamp)
        return hmac.compare_digest(expected.encode(), session.binding.encode())

    def _mac(self, payload: str) -> str:
        return _b64(hmac.digest(self._sign, payload.encode(), hashlib.sha256))

    def read(self, cookie: str | None) -> Session | None:
        """The session of a valid, unexpired cookie, else None (never an exception)."""
        if not cookie or not cookie.isascii() or len(cookie) > 2048:
            return None
        parts = cookie.split(".")
        if len(parts) != 3 or parts[0] != "dcs1":
            return None
        if not hmac.compare_digest(self._mac(parts[1]).encode(), parts[2].encode()):
            return None
        try:
            claims = json.loads(_unb64(parts[1]))
            client, sid, expires = claims["c"], claims["s"], int(claims["x"])
            binding = claims["g"]
        except (ValueError, TypeError, KeyError):
            return None
        if not all(isinstance(v, str) for v in (client, sid, binding)) or not binding.isascii():
            return None
        if claims.get("e") != self.environment or expires < time.time():
            return None
        return Session(client, sid, expires, binding)

    def csrf(self, sid: str) -> str:
        """The CSRF token of a session (or of a sign-in form's pre-session)."""
        return _b64(hmac.digest(self._csrf, sid.encode(), hashlib.sha256))

    def csrf_ok(self, sid: str | None, token: str | None) -> bool:
        if not sid or not token or not token.isascii():
            return False
        return hmac.compare_digest(self.csrf(sid).encode(), token.encode())

    def pre_session(self) -> str:
        """A random id for a sign-in form's pre-session cookie (signed, expiring)."""
        sid = secrets.token_urlsafe(16)
        expires = int(time.time()) + PRE_TTL
        payload = f"{sid}.{expires}"
        return f"{payload}.{self._mac('pre.' + payload)}"

    def read_pre(self, cookie: str | None) -> str | None:
        if not cookie or not cookie.isascii() or len(cookie) > 256:
            return None
        parts = cookie.split(".")
        if len(parts) != 3 or not parts[1].isdigit():
            return None
        payload = f"{parts[0]}.{parts[1]}"
        if not hmac.compare_digest(self._mac("pre." + payload).encode(), parts[2].encode()):
            return None
        if int(parts[1]) < time.time():
            return None
        return parts[0]
