"""A site's keys in HashiCorp Vault's Transit secrets engine, through hvac (the ``kms``
extra): the KMS seam of docs/keys.md.

Written and tested against Transit's documented HTTP API, served in the tests by a small
HTTP server of their own (tests/keys/transit_server.py), NOT against a Vault server: none
can run where domicile is developed. Check it against your Vault before relying on it.

The site's key-encryption key is the Transit key ``domicile-SITE`` (or the configured
``key``), of type ``aes256-gcm96`` and created ``derived``: every encrypt and decrypt
names the key context (site and subject) as Transit's ``context``, from which Vault
derives the key that seals, so a wrapped data key moved to another subject or site does
not unwrap. A wrapped key is Transit's ciphertext text (``vault:vN:...``), whose ``N`` is
the key version domicile records. Rotation is Transit's rotate (the new version encrypts;
older ones still decrypt). Transit never deletes one version: retiring version N raises
the key's ``min_decryption_version`` past it, so Vault refuses to decrypt anything wrapped
with N or older. The index and signing keys are sealed (``custody.py``) under a second,
never rotated Transit key, ``domicile-SITE-sealed``.
"""

from __future__ import annotations

import base64
import re
import time
from pathlib import Path
from typing import Any

from domicile.crypto.custody import (
    REFRESH,
    CustodyProvider,
    KeyProviderUnavailable,
    env_secret,
)
from domicile.crypto.errors import DecryptionFailed, KeyringError
from domicile.crypto.specs import TransitSpec
from domicile.extras import require

KEY_TYPE = "aes256-gcm96"
_CIPHERTEXT = re.compile(r"^vault:v(\d+):[A-Za-z0-9+/=]+$")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class TransitProvider(CustodyProvider):
    """One site's keys in Vault Transit (tested against the documented API, not a Vault
    server)."""

    kind = "transit"

    def __init__(self, site_id: str, spec: TransitSpec, sealed_path: Path) -> None:
        require("kms", f"site {site_id!r}'s key provider (Vault Transit)")
        import hvac

        super().__init__(site_id, sealed_path)
        self.spec = spec
        self.key = spec.key_name(site_id)
        self.seal_key = f"{self.key}-sealed"
        token = env_secret(spec.token_env, "a Vault token", self.describe(), site_id)
        self._client = hvac.Client(
            url=spec.url,
            token=token,
            namespace=spec.namespace,
            verify=str(Path(spec.ca)) if spec.ca else True,
            timeout=spec.timeout,
        )
        self._info: dict[str, Any] = {}
        self._looked = -1.0
        self._read(missing_ok=True)  # answers now, or the site is unavailable
        if sealed_path.exists():
            self.open_secrets()

    def describe(self) -> str:
        return f"Vault Transit key {self.key!r} at {self.spec.url}"

    # --- calls --------------------------------------------------------------------------

    def _call(self, what: str, fn: Any) -> Any:
        """One Transit call; Vault down or refusing the token is an unavailable site."""
        import hvac.exceptions as hx

        try:
            return fn(self._client.secrets.transit)
        except (hx.Forbidden, hx.Unauthorized):
            raise KeyProviderUnavailable(
                self.site_id,
                f"{self.describe()} refused the token in ${self.spec.token_env} ({what})",
                hint="give a token whose policy allows the key's encrypt, decrypt, read,"
                " rotate and config paths",
                final=True,
            ) from None
        except (hx.VaultDown, hx.InternalServerError, hx.BadGateway, hx.RateLimitExceeded):
            raise KeyProviderUnavailable(
                self.site_id, f"{self.describe()} is not serving ({what})"
            ) from None
        except OSError as exc:  # requests' errors (refused, timed out, TLS) are OSErrors
            raise KeyProviderUnavailable(
                self.site_id,
                f"{self.describe()} does not answer ({what}: {type(exc).__name__})",
                hint="check that Vault runs, its address and its certificate (key_provider.ca)",
            ) from None

    def _read(self, *, missing_ok: bool = False) -> dict[str, Any]:
        import hvac.exceptions as hx

        try:
            answer = self._call("reading the key", lambda t: t.read_key(self.key, self.spec.mount))
        except hx.InvalidPath:
            if missing_ok:
                self._info = {}
                return {}
            raise KeyringError(
                f"{self.describe()} does not exist",
                hint="sites are set up by `domicile sites create`; is this the site's Vault?",
            ) from None
        self._info = dict(answer["data"])
        self._looked = time.monotonic()
        return self._info

    def _refresh(self, *, at_most_every: float = 0.0) -> dict[str, Any]:
        if not self._info or time.monotonic() - self._looked >= at_most_every:
            return self._read()
        return self._info

    def _encrypt(self, key: str, plaintext: bytes, context: bytes) -> str:
        answer = self._call(
            "encrypting",
            lambda t: t.encrypt_data(
                key, _b64(plaintext), context=_b64(context), mount_point=self.spec.mount
            ),
        )
        return str(answer["data"]["ciphertext"])

    def _decrypt(self, key: str, ciphertext: str, context: bytes) -> bytes:
        import hvac.exceptions as hx

        try:
            answer = self._call(
                "decrypting",
                lambda t: t.decrypt_data(
                    key, ciphertext, context=_b64(context), mount_point=self.spec.mount
                ),
            )
        except hx.InvalidRequest as exc:
            if "disallowed by policy" in str(exc):  # older than min_decryption_version
                raise KeyringError(
                    f"{self.describe()} no longer decrypts this version (retired)",
                    hint="it was retired while data was still wrapped with it; lower the"
                    " key's min_decryption_version in Vault",
                ) from None
            raise DecryptionFailed(
                f"a data key of site {self.site_id!r} does not unwrap",
                hint="the key store was altered",
            ) from None
        return base64.b64decode(answer["data"]["plaintext"], validate=True)

    # --- CustodyProvider ----------------------------------------------------------------

    def _create_keys(self) -> None:
        import hvac.exceptions as hx

        for name in (self.key, self.seal_key):
            try:
                self._call("reading a key", lambda t, n=name: t.read_key(n, self.spec.mount))
            except hx.InvalidPath:
                self._call(
                    "creating a key",
                    lambda t, n=name: t.create_key(
                        n, key_type=KEY_TYPE, derived=True, exportable=False,
                        mount_point=self.spec.mount,
                    ),
                )  # fmt: skip
        self._read()

    def _seal(self, plaintext: bytes, ad: bytes) -> bytes:
        return self._encrypt(self.seal_key, plaintext, ad).encode()

    def _unseal(self, sealed: bytes, ad: bytes) -> bytes:
        import hvac.exceptions as hx

        try:
            return self._decrypt(self.seal_key, sealed.decode("ascii"), ad)
        except (KeyringError, UnicodeDecodeError, hx.InvalidPath):
            raise DecryptionFailed("sealed keys do not open") from None

    def current_version(self, site_id: str) -> int:
        self._mine(site_id)
        return int(self._refresh(at_most_every=REFRESH)["latest_version"])

    def versions(self, site_id: str) -> list[int]:
        self._mine(site_id)
        info = self._refresh()
        return list(range(int(info["min_decryption_version"]), int(info["latest_version"]) + 1))

    def wrap(self, site_id: str, dek: bytes, context: bytes) -> tuple[int, bytes]:
        self._mine(site_id)
        ciphertext = self._encrypt(self.key, dek, context)
        found = _CIPHERTEXT.match(ciphertext)
        if found is None:
            raise KeyProviderUnavailable(
                site_id, f"{self.describe()} answered a ciphertext of an unknown form"
            )
        return int(found.group(1)), ciphertext.encode()

    def unwrap(self, site_id: str, version: int, wrapped: bytes, context: bytes) -> bytes:
        self._mine(site_id)
        try:
            text = wrapped.decode("ascii")
        except UnicodeDecodeError:
            text = ""
        found = _CIPHERTEXT.match(text)
        if found is None or int(found.group(1)) != version:
            raise DecryptionFailed(
                f"a data key of site {site_id!r} does not unwrap",
                hint="the key store was altered",
            )
        return self._decrypt(self.key, text, context)

    def rotate(self, site_id: str) -> int:
        self._mine(site_id)
        self._call("rotating", lambda t: t.rotate_key(self.key, mount_point=self.spec.mount))
        return int(self._read()["latest_version"])

    def retire(self, site_id: str, version: int) -> None:
        """Versions retire oldest first (Transit's ``min_decryption_version``): retiring the
        oldest that still decrypts raises it by one; a newer one waits until those before
        it are retired (``versions`` still lists it)."""
        self._mine(site_id)
        info = self._read()
        if version == int(info["latest_version"]):
            raise KeyringError("cannot retire the current key-encryption key", hint="rotate first")
        if version != int(info["min_decryption_version"]):
            return
        self._call(
            "retiring a version",
            lambda t: t.update_key_configuration(
                self.key, min_decryption_version=version + 1, mount_point=self.spec.mount
            ),
        )
        self._read()
