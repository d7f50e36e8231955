"""Where a site's keys live, as the configuration names it (a site's ``key_provider:``).

Only the shapes: ``providers.py`` opens them. The default, for a site that names none, is
the deployment's keyring file. Secrets never appear here: a PIN or a token is named by the
environment variable that holds it.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KeyringSpec(_Spec):
    """The site's keys in the deployment's keyring file (the embedded default)."""

    kind: Literal["keyring"] = "keyring"

    def describe(self) -> str:
        return "keyring file"


class Pkcs11Spec(_Spec):
    """The site's key-encryption keys in a PKCS#11 token (an HSM): generated there, never
    extractable; wrap and unwrap happen inside it."""

    kind: Literal["pkcs11"]
    module: str  # the token's PKCS#11 library, e.g. /usr/lib/softhsm/libsofthsm2.so
    token: Annotated[str, Field(min_length=1, max_length=32)]  # the token's label
    pin_env: Annotated[str, Field(pattern=ENV_NAME)] = "DOMICILE_PKCS11_PIN"
    # The file of the site's secrets sealed under a key in the token (the index and signing
    # keys); default: DATA_DIR/custody/SITE.sealed.json
    sealed: str | None = None

    def describe(self) -> str:
        return f"pkcs11 token {self.token!r}"


class TransitSpec(_Spec):
    """The site's key-encryption key in HashiCorp Vault's Transit secrets engine."""

    kind: Literal["transit"]
    url: str  # the Vault server, e.g. https://vault.ru.example:8200
    mount: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")] = "transit"
    key: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,128}$")] | None = None
    token_env: Annotated[str, Field(pattern=ENV_NAME)] = "VAULT_TOKEN"
    namespace: str | None = None  # Vault Enterprise namespace
    ca: str | None = None  # CA bundle of the server's certificate (default: the system's)
    timeout: float = Field(default=10.0, gt=0, le=300)
    sealed: str | None = None  # as for pkcs11

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("url is the Vault server's address, e.g. https://vault.example:8200")
        return value.rstrip("/")

    def key_name(self, site_id: str) -> str:
        return self.key or f"domicile-{site_id}"

    def describe(self) -> str:
        return f"transit at {self.url}/v1/{self.mount}"


KeyProviderSpec = Annotated[KeyringSpec | Pkcs11Spec | TransitSpec, Field(discriminator="kind")]
