"""What the key providers outside the process have in common (a PKCS#11 token, a KMS).

Such a provider serves one site. Its key-encryption keys stay where they were made: the
provider asks the token or the KMS to wrap and unwrap data keys. The site's index key and
signing key are used on every write, so the vault needs them in memory: they are kept in
a file sealed (AES-256-GCM, done by the token or the KMS) under a second key that also
stays there, never rotated, and unsealed when the provider opens. The file is worthless
without that key; nothing of it is plaintext on disk.

The sealed file is made only by ``ensure_site`` (setup); a missing file is a site whose
keys are not there, never a cue to make new ones (new keys beside existing data would
leave it unreadable).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from domicile.crypto.errors import DecryptionFailed, KeyringError
from domicile.files import lock_file, write_private_json
from domicile.stores.base import SiteUnavailable

SEALED_FORMAT = 1
REFRESH = 0.05  # seconds between looks for a rotation by another process (as the keyring)


class KeyProviderUnavailable(SiteUnavailable):
    """A site's key provider does not answer (its module missing, a wrong PIN, a token
    absent, a KMS down or refusing its credentials): the site is unavailable; the other
    sites work. Names the provider, never a PIN or a token."""

    code = "key_provider_unavailable"

    def __init__(
        self, site: str, reason: str, *, hint: str | None = None, final: bool = False
    ) -> None:
        super().__init__(site, reason, hint=hint)
        # Not worth trying again in this process (a refused PIN or credential): a token
        # may lock its PIN after a few wrong tries.
        self.final = final


def sealed_ad(site_id: str) -> bytes:
    """Associated data binding a sealed-secrets file to its site."""
    return b"\x00".join((b"domicile/sealed/v1", site_id.encode()))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class CustodyProvider(ABC):
    """One site's keys, held outside the process. Implements ``KeyProvider`` for that site
    (``token_key`` and ``join_key`` stay in the keyring file: see ``providers.py``)."""

    kind = "custody"

    def __init__(self, site_id: str, sealed_path: Path) -> None:
        self.site_id = site_id
        self.sealed_path = sealed_path
        self._lock = threading.RLock()
        self._index_key: bytes | None = None
        self._signing: Ed25519PrivateKey | None = None

    # --- what each provider does where its keys are -------------------------------------

    @abstractmethod
    def describe(self) -> str:
        """Where the keys are, in a few words (no secret)."""

    @abstractmethod
    def _create_keys(self) -> None:
        """Make the first key-encryption key and the sealing key, where they are missing."""

    @abstractmethod
    def _seal(self, plaintext: bytes, ad: bytes) -> bytes: ...

    @abstractmethod
    def _unseal(self, sealed: bytes, ad: bytes) -> bytes:
        """Raises ``DecryptionFailed`` when ``sealed`` does not authenticate."""

    @abstractmethod
    def wrap(self, site_id: str, dek: bytes, context: bytes) -> tuple[int, bytes]: ...

    @abstractmethod
    def unwrap(self, site_id: str, version: int, wrapped: bytes, context: bytes) -> bytes: ...

    @abstractmethod
    def current_version(self, site_id: str) -> int: ...

    @abstractmethod
    def versions(self, site_id: str) -> list[int]:
        """The key-encryption key versions that still unwrap."""

    @abstractmethod
    def rotate(self, site_id: str) -> int: ...

    @abstractmethod
    def retire(self, site_id: str, version: int) -> None: ...

    def close(self) -> None:
        """Forget the unsealed secrets (the session or client closes with its owner)."""
        with self._lock:
            self._index_key = None
            self._signing = None

    # --- common: the site check and the sealed secrets ----------------------------------

    def _mine(self, site_id: str) -> None:
        if site_id != self.site_id:
            raise KeyringError(
                f"the {self.kind} provider of site {self.site_id!r} was asked for site {site_id!r}",
                hint="this is a bug in domicile's key routing; report it",
            )

    def ensure_site(self, site_id: str) -> None:
        """Setup: the keys where they are kept, and the sealed file (each made only if it
        is missing; an existing file is kept and must unseal)."""
        self._mine(site_id)
        with lock_file(self.sealed_path.with_name(self.sealed_path.name + ".lock")):
            self._create_keys()
            if not self.sealed_path.exists():
                signing = Ed25519PrivateKey.generate()
                raw = signing.private_bytes(
                    serialization.Encoding.Raw,
                    serialization.PrivateFormat.Raw,
                    serialization.NoEncryption(),
                )
                plain = json.dumps(
                    {"index_key": _b64(secrets.token_bytes(32)), "signing_key": _b64(raw)}
                ).encode()
                write_private_json(
                    self.sealed_path,
                    {
                        "format": SEALED_FORMAT,
                        "site": site_id,
                        "provider": self.kind,
                        "sealed": _b64(self._seal(plain, sealed_ad(site_id))),
                    },
                )
        self.open_secrets()

    def open_secrets(self) -> None:
        """Unseal the site's index and signing keys (once)."""
        with self._lock:
            if self._index_key is not None:
                return
            try:
                doc: Any = json.loads(self.sealed_path.read_text(encoding="utf-8"))
            except FileNotFoundError:
                raise KeyringError(
                    f"site {self.site_id!r} has no sealed keys at {self.sealed_path}",
                    hint="sites are set up by `domicile sites create`; if it was, restore"
                    " the file from its backup",
                ) from None
            except (OSError, ValueError):
                raise KeyringError(
                    f"the sealed keys of site {self.site_id!r} ({self.sealed_path}) cannot be read",
                    hint="check the file's permissions, or restore it from its backup",
                ) from None
            if (
                not isinstance(doc, dict)
                or doc.get("format") != SEALED_FORMAT
                or doc.get("site") != self.site_id
            ):
                raise KeyringError(
                    f"{self.sealed_path} is not the sealed keys of site {self.site_id!r}",
                    hint="restore the site's own file from its backup",
                )
            try:
                sealed = base64.b64decode(str(doc.get("sealed", "")), validate=True)
                plain = json.loads(self._unseal(sealed, sealed_ad(self.site_id)))
                self._index_key = base64.b64decode(plain["index_key"], validate=True)
                self._signing = Ed25519PrivateKey.from_private_bytes(
                    base64.b64decode(plain["signing_key"], validate=True)
                )
            except (DecryptionFailed, ValueError, KeyError, TypeError):
                raise KeyringError(
                    f"the sealed keys of site {self.site_id!r} do not open under its {self.describe()}",
                    hint="the file was altered, or belongs to another token or key; restore it",
                ) from None

    def index_key(self, site_id: str) -> bytes:
        self._mine(site_id)
        self.open_secrets()
        assert self._index_key is not None
        return self._index_key

    def signing_key(self, site_id: str) -> Ed25519PrivateKey:
        self._mine(site_id)
        self.open_secrets()
        assert self._signing is not None
        return self._signing

    def verify_key(self, site_id: str) -> Ed25519PublicKey:
        return self.signing_key(site_id).public_key()


def env_secret(name: str, what: str, provider: str, site_id: str) -> str:
    """A PIN or token from the environment variable the configuration names."""
    value = os.environ.get(name)
    if not value:
        raise KeyProviderUnavailable(
            site_id,
            f"its {provider} needs {what} in ${name}, which is not set",
            hint=f"set {name} in the environment of every domicile process of this site",
            final=True,
        )
    return value
