"""Clients of the HTTP service: who they are, how they prove it, what they may do.

A client has an id, a name and scopes. It authenticates in one of two ways:

- with a **client secret**, exchanged for a short-lived access token (OAuth2 client
  credentials);
- with a **static API key**, sent as a bearer token (for scripts).

Both are 256 random bits made here, never chosen by a person, so a SHA-256 digest of them
is as strong as any password hash: nobody can search 2**256 values for a preimage. A slow
hash would only add CPU to an endpoint anyone can call. Secrets stored by earlier versions
as ``scrypt$SALT$HASH`` (n=2**14, r=8, p=1) still work; a hash may also carry its scrypt
parameters (``scrypt$n=16384,r=8,p=1$SALT$HASH``).

The plaintext secret or key is shown once, when the client is made. Clients come from the
configuration (``clients:``, with hashes) and from ``DATA_DIR/clients.json``, which
``domicile clients add`` writes.

Scopes:

- operations: ``records:write``, ``records:read``, ``records:delete``, ``records:erase``,
  ``records:export``, ``filings:read``, ``filings:write``, ``transfers:read``,
  ``parity:read``, ``audit:read``, ``policy:read``, ``sites:read``, ``metrics:read``,
  ``rights:read``, ``rights:write`` (subjects' requests: ``rights:write`` opens and
  fulfils them, reading, correcting and erasing the subject's data, within the client's
  site, collection and purpose scopes: see ``domicile.rights.service.authorize_request``),
  ``subjects:attest`` (a proof of where a subject's data is held, ``domicile.attest``),
  ``retention:read`` and ``retention:run`` (the retention plan, and the run that
  destroys what is due, within the client's site, collection and purpose scopes: see
  ``domicile.retention.service.authorize``);
- constraints: ``site:ID`` (the sites the client acts from: reads are decided as from that
  site, so a US client reads a Russian subject's data only through a permitted transfer),
  ``collection:NAME`` and ``purpose:NAME`` (``*`` for any);
- ``admin``: everything, from any site.

Whether a client may do something is decided in one place for every interface:
``domicile.access.Access`` (checked through ``Domicile.authorize``).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import os
import secrets
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from domicile.errors import BadInput, DomicileError, ExitCode
from domicile.files import lock_file

OPERATIONS = (
    "records:write", "records:read", "records:delete", "records:erase", "records:export",
    "filings:read", "filings:write", "transfers:read", "parity:read", "audit:read",
    "policy:read", "sites:read", "metrics:read", "rights:read", "rights:write",
    "subjects:attest", "retention:read", "retention:run",
)  # fmt: skip
CONSTRAINTS = ("site:", "collection:", "purpose:")
FORMAT = 1
_SCRYPT = {"length": 32, "n": 2**14, "r": 8, "p": 1}  # of secrets hashed by earlier versions


class ClientsError(DomicileError):
    code = "clients_error"
    exit_code = ExitCode.ENVIRONMENT


def check_scope(scope: str, sites: Iterable[str], collections: Iterable[str]) -> str:
    """A scope as written, or ``BadInput`` saying which scopes exist."""
    if scope == "admin" or scope in OPERATIONS:
        return scope
    for prefix in CONSTRAINTS:
        if scope.startswith(prefix):
            value = scope.removeprefix(prefix)
            if prefix == "site:" and value not in set(sites):
                raise BadInput(
                    f"scope {scope!r} names no configured site", hint=f"sites: {', '.join(sites)}"
                )
            if prefix == "collection:" and value != "*" and value not in set(collections):
                raise BadInput(f"scope {scope!r} names no configured collection")
            if not value:
                raise BadInput(f"scope {scope!r} needs a value after the colon")
            return scope
    raise BadInput(
        f"unknown scope {scope!r}",
        hint="use admin, an operation ("
        + ", ".join(OPERATIONS)
        + "), or site:ID, collection:NAME, purpose:NAME",
    )


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_secret(secret: str) -> str:
    """``sha256$HEX``, for storing a client secret (see the module docstring for why)."""
    return "sha256$" + hashlib.sha256(secret.encode()).hexdigest()


def _scrypt_params(text: str) -> dict[str, int]:
    params = dict(_SCRYPT)
    for part in text.split(","):
        name, _, value = part.partition("=")
        if name not in ("n", "r", "p") or not value.isdigit():
            raise ValueError("bad scrypt parameters")
        params[name] = int(value)
    if not (2 <= params["n"] <= 2**20 and params["r"] <= 32 and params["p"] <= 16):
        raise ValueError("scrypt parameters out of range")
    return params


def _verify_secret(secret: str, stored: str) -> bool:
    """Whether ``secret`` matches a stored hash: ``sha256$HEX`` (cheap), or an scrypt
    hash of an earlier version (slow: callers run it off the event loop, a few at a time)."""
    try:
        raw = secret.encode()
        kind, _, rest = stored.partition("$")
        if kind == "sha256":
            return hmac.compare_digest(hashlib.sha256(raw).hexdigest().encode(), rest.encode())
        if kind != "scrypt":
            return False
        parts = rest.split("$")
        params = _scrypt_params(parts.pop(0)) if len(parts) == 3 else dict(_SCRYPT)
        salt, digest = parts
        expected = _unb64(digest)
        got = Scrypt(salt=_unb64(salt), **params).derive(raw)
    except (ValueError, TypeError, UnicodeError):
        return False
    return hmac.compare_digest(expected, got)


def key_digest(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


@dataclass(frozen=True)
class Client:
    id: str
    name: str
    scopes: frozenset[str]
    source: str = "registry"  # or "config"

    @property
    def admin(self) -> bool:
        return "admin" in self.scopes

    def values(self, prefix: str) -> set[str]:
        return {s.removeprefix(prefix) for s in self.scopes if s.startswith(prefix)}

    @property
    def sites(self) -> list[str]:
        return sorted(self.values("site:"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "client_id": self.id,
            "name": self.name,
            "scopes": sorted(self.scopes),
            "source": self.source,
        }


class ClientRegistry:
    def __init__(self, path: Path, configured: Iterable[dict[str, Any]] = ()) -> None:
        self.path = path
        self._configured = {c["client_id"]: dict(c, source="config") for c in configured}
        self._stamp: tuple[int, int] | None = None
        self._data: dict[str, Any] = {"format": FORMAT, "clients": {}}

    def _refresh(self) -> dict[str, dict[str, Any]]:
        try:
            st = self.path.stat()
            stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp != self._stamp:
            self._data = self._read()
            self._stamp = stamp
        return {
            **{k: dict(v, source="registry") for k, v in self._data["clients"].items()},
            **self._configured,
        }

    def _read(self) -> dict[str, Any]:
        if not self.path.exists():
            return {"format": FORMAT, "clients": {}}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise ClientsError(f"the clients file {self.path} is unreadable") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ClientsError(f"the clients file {self.path} has an unknown format")
        return data

    def _client(self, entry: dict[str, Any]) -> Client:
        return Client(
            entry["client_id"], entry["name"], frozenset(entry["scopes"]), entry["source"]
        )

    def all(self) -> list[Client]:
        return [self._client(e) for e in sorted(self._refresh().values(), key=lambda e: e["name"])]

    def add(self, name: str, scopes: list[str], *, api_key: bool = False) -> tuple[Client, str]:
        """Make a client; returns it and its secret (or API key), shown this once."""
        if not name.strip() or len(name) > 100:
            raise BadInput("a client needs a name of 1 to 100 characters")
        if not scopes:
            raise BadInput(
                "a client needs at least one scope",
                hint="e.g. --scope records:read --scope site:us",
            )
        client_id = "dc_" + secrets.token_hex(8)
        secret = ("dk_" if api_key else "ds_") + secrets.token_urlsafe(32)
        entry: dict[str, Any] = {
            "client_id": client_id,
            "name": name.strip(),
            "scopes": sorted(set(scopes)),
            "created_at": dt.datetime.now(dt.UTC).isoformat(),
        }
        if api_key:
            entry["api_key_sha256"] = key_digest(secret)
        else:
            entry["secret_hash"] = hash_secret(secret)
        self._write(lambda data: data["clients"].__setitem__(client_id, entry))
        return Client(client_id, entry["name"], frozenset(entry["scopes"])), secret

    def remove(self, client_id: str) -> None:
        entries = self._refresh()
        if client_id not in entries:
            raise BadInput(f"no client {client_id!r}")
        if entries[client_id]["source"] == "config":
            raise BadInput(
                f"client {client_id!r} comes from the configuration file; remove it there"
            )
        self._write(lambda data: data["clients"].pop(client_id, None))

    def _write(self, change: Any) -> None:
        with lock_file(self.path.with_suffix(".lock")):  # 0600, in a 0700 folder
            data = self._read()
            change(data)
            fd, tmp = tempfile.mkstemp(prefix=".clients-", dir=self.path.parent)
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(data, out, indent=1, sort_keys=True)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        self._stamp = None

    def session_stamp(self, client_id: str) -> str | None:
        """What a console session of the client is bound to: the client's session
        generation and its stored secret hash (None for no such client). A session issued
        under another stamp is over: ``end_sessions`` bumps the generation (sign-out), and
        a new secret changes the hash."""
        entry = self._refresh().get(client_id)
        if entry is None:
            return None
        generations = self._data.get("sessions", {})
        generation = generations.get(client_id, 0) if isinstance(generations, dict) else 0
        return f"{generation}${entry.get('secret_hash', '')}"

    def end_sessions(self, client_id: str) -> None:
        """End every console session of the client (kept in the registry's file, under
        ``sessions``, so every process of the service sees it; works for clients of the
        configuration too)."""

        def bump(data: dict[str, Any]) -> None:
            generations = data.get("sessions")
            if not isinstance(generations, dict):
                generations = data["sessions"] = {}
            generations[client_id] = int(generations.get(client_id, 0)) + 1

        self._write(bump)

    def by_secret(self, client_id: str, secret: str) -> Client | None:
        entry = self._refresh().get(client_id)
        if entry is None or "secret_hash" not in entry:
            return None
        return self._client(entry) if _verify_secret(secret, entry["secret_hash"]) else None

    def by_api_key(self, api_key: str) -> Client | None:
        digest = key_digest(api_key)
        for entry in self._refresh().values():
            stored = entry.get("api_key_sha256")
            if stored and hmac.compare_digest(stored, digest):
                return self._client(entry)
        return None

    def get(self, client_id: str) -> Client | None:
        entry = self._refresh().get(client_id)
        return self._client(entry) if entry else None
