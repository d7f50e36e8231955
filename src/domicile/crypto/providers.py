"""Each site's keys from the provider its configuration names (docs/keys.md).

A deployment whose sites all keep their keys in the keyring file (the embedded default)
gets the keyring itself, exactly as before. Otherwise ``SiteKeyRouter`` is its
``KeyProvider``: each call about a site goes to that site's provider (the keyring file, a
PKCS#11 token, HashiCorp Vault Transit), and the deployment-wide secrets (``token_key``,
``join_key``) still come from the keyring file.

A site's provider is opened when the site is first used. One that does not answer makes
that site unavailable (``KeyProviderUnavailable``, exit 4 / HTTP 503) while the other sites
work; the next use tries again after ``RETRY`` seconds, except after a refused or unset PIN or
token, which is not tried again in this process (a token may lock its PIN after a few
wrong tries; the environment that holds the PIN cannot change under a running process).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from domicile.crypto.custody import CustodyProvider, KeyProviderUnavailable
from domicile.crypto.keys import KeyProvider, LocalKeyring, wrap_many
from domicile.crypto.specs import KeyProviderSpec, KeyringSpec, Pkcs11Spec, TransitSpec
from domicile.errors import DomicileError, MissingExtra

if TYPE_CHECKING:
    from domicile.config import Config

RETRY = 5.0  # seconds before a provider that did not answer is tried again


def sealed_path(config: Config, site_id: str, spec: Pkcs11Spec | TransitSpec) -> Path:
    """Where a site's sealed index and signing keys are kept."""
    if spec.sealed:
        return config.path(spec.sealed)
    return config.data_dir / "custody" / f"{site_id}.sealed.json"


def open_site_provider(site_id: str, spec: Pkcs11Spec | TransitSpec, path: Path) -> CustodyProvider:
    """Open one site's provider (connect, log in, unseal); fails if it does not answer."""
    if isinstance(spec, Pkcs11Spec):
        from domicile.crypto.pkcs11 import Pkcs11Provider

        return Pkcs11Provider(site_id, spec, path)
    from domicile.crypto.transit import TransitProvider

    return TransitProvider(site_id, spec, path)


@dataclass
class _Failure:
    error: DomicileError
    at: float
    final: bool = False


@dataclass
class _Route:
    spec: Pkcs11Spec | TransitSpec
    path: Path
    provider: CustodyProvider | None = None
    failure: _Failure | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class SiteKeyRouter:
    """``KeyProvider`` for a deployment whose sites keep their keys in different places."""

    def __init__(
        self,
        keyring: LocalKeyring,
        routes: dict[str, tuple[Pkcs11Spec | TransitSpec, Path]],
        *,
        opener: Any = open_site_provider,
    ) -> None:
        self.keyring = keyring
        self._routes = {site: _Route(spec, path) for site, (spec, path) in routes.items()}
        self._opener = opener

    # --- routing ------------------------------------------------------------------------

    def kind(self, site_id: str) -> str:
        route = self._routes.get(site_id)
        return "keyring" if route is None else route.spec.kind

    def describe(self, site_id: str) -> str:
        route = self._routes.get(site_id)
        return KeyringSpec().describe() if route is None else route.spec.describe()

    def provider(self, site_id: str) -> KeyProvider | CustodyProvider:
        """The site's provider, opened on first use."""
        route = self._routes.get(site_id)
        if route is None:
            return self.keyring
        with route.lock:
            if route.provider is not None:
                return route.provider
            failed = route.failure
            if failed is not None and (failed.final or time.monotonic() - failed.at < RETRY):
                raise failed.error
            try:
                route.provider = self._opener(site_id, route.spec, route.path)
            except KeyProviderUnavailable as exc:
                route.failure = _Failure(exc, time.monotonic(), final=exc.final)
                raise
            route.failure = None
            return route.provider

    def close(self) -> None:
        for route in self._routes.values():
            with route.lock:
                if route.provider is not None:
                    route.provider.close()
                    route.provider = None

    # --- KeyProvider --------------------------------------------------------------------

    def ensure_site(self, site_id: str) -> None:
        self.provider(site_id).ensure_site(site_id)

    def wrap(self, site_id: str, dek: bytes, context: bytes) -> tuple[int, bytes]:
        return self.provider(site_id).wrap(site_id, dek, context)

    def wrap_many(
        self, site_id: str, keys: Sequence[tuple[bytes, bytes]]
    ) -> list[tuple[int, bytes]]:
        return wrap_many(self.provider(site_id), site_id, keys)

    def unwrap(self, site_id: str, version: int, wrapped: bytes, context: bytes) -> bytes:
        return self.provider(site_id).unwrap(site_id, version, wrapped, context)

    def current_version(self, site_id: str) -> int:
        return self.provider(site_id).current_version(site_id)

    def versions(self, site_id: str) -> list[int]:
        found: list[int] = self.provider(site_id).versions(site_id)  # type: ignore[union-attr]
        return found

    def rotate(self, site_id: str) -> int:
        return self.provider(site_id).rotate(site_id)

    def retire(self, site_id: str, version: int) -> None:
        self.provider(site_id).retire(site_id, version)

    def index_key(self, site_id: str) -> bytes:
        return self.provider(site_id).index_key(site_id)

    def signing_key(self, site_id: str) -> Ed25519PrivateKey:
        return self.provider(site_id).signing_key(site_id)

    def verify_key(self, site_id: str) -> Ed25519PublicKey:
        return self.provider(site_id).verify_key(site_id)

    def token_key(self) -> bytes:
        return self.keyring.token_key()

    def join_key(self) -> bytes:
        return self.keyring.join_key()


def key_provider(config: Config, keyring: LocalKeyring, *, node: str | None = None) -> KeyProvider:
    """The deployment's key provider: the keyring when every site keeps its keys there
    (the embedded default, unchanged), else a router over each site's provider. On a
    federation's ``node`` only that node's own site is routed: of the other sites it
    holds public keys only, in its keyring."""
    routes: dict[str, tuple[Pkcs11Spec | TransitSpec, Path]] = {}
    for site in config.sites:
        if node is not None and site.id != node:
            continue
        spec: KeyProviderSpec | None = site.key_provider
        if isinstance(spec, Pkcs11Spec | TransitSpec):
            routes[site.id] = (spec, sealed_path(config, site.id, spec))
    if not routes:
        return keyring
    return SiteKeyRouter(keyring, routes)


def site_status(keys: KeyProvider, site_id: str) -> dict[str, Any]:
    """What ``domicile keys status`` shows of one site: its provider, whether it answers,
    its current key-encryption key version and the versions that still unwrap. Reads
    only; an error is reported, not raised."""
    if isinstance(keys, SiteKeyRouter):
        kind, where = keys.kind(site_id), keys.describe(site_id)
    elif isinstance(keys, LocalKeyring):
        kind, where = "keyring", f"keyring file {keys.path}"
    else:
        kind, where = type(keys).__name__, "a provider given to the vault"
    if kind == "keyring" and isinstance(keys, SiteKeyRouter):
        where = f"keyring file {keys.keyring.path}"
    out: dict[str, Any] = {"site": site_id, "provider": kind, "where": where}
    try:
        out["current_version"] = keys.current_version(site_id)
        versions = getattr(keys, "versions", None)
        out["versions"] = versions(site_id) if versions else [out["current_version"]]
        keys.index_key(site_id)  # the sealed secrets open too
        out["answers"] = True
    except MissingExtra:
        raise  # usage, not an outage: install the extra (exit 2)
    except DomicileError as exc:
        out["answers"] = False
        out["error"] = {"code": exc.code, "message": exc.message, "exit_code": exc.exit_code}
        if exc.hint:
            out["error"]["hint"] = exc.hint
    return out
