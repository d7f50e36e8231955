"""Tokens: what the world keeps instead of personal data.

A token is the record's site and id sealed with AES-256-GCM under the deployment's token
key. A holder without the key learns nothing from it: not the subject, not the home site,
not whether two tokens belong to the same person.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from domicile.vault.errors import InvalidToken

PREFIX = "dom1_"
_AAD = b"domicile/token/v1"
_URLSAFE = bytes.maketrans(b"+/", b"-_")


class TokenCodec:
    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def issue(self, site_id: str, record_id: str) -> str:
        site = site_id.encode()
        plain = bytes([len(site)]) + site + bytes.fromhex(record_id)
        nonce = secrets.token_bytes(12)
        sealed = nonce + self._aead.encrypt(nonce, plain, _AAD)
        return PREFIX + base64.urlsafe_b64encode(sealed).decode().rstrip("=")

    def issue_many(self, site_id: str, record_ids: Sequence[str]) -> list[str]:
        """``issue`` for many records, with one call to the OS for all the nonces."""
        site = site_id.encode()
        head = bytes([len(site)]) + site
        pool = os.urandom(12 * len(record_ids))
        encrypt = self._aead.encrypt
        out = []
        for i, record_id in enumerate(record_ids):
            nonce = pool[12 * i : 12 * i + 12]
            sealed = nonce + encrypt(nonce, head + bytes.fromhex(record_id), _AAD)
            # ``base64.urlsafe_b64encode``, without its two Python calls per token
            text = binascii.b2a_base64(sealed, newline=False).translate(_URLSAFE)
            out.append(PREFIX + text.decode().rstrip("="))
        return out

    def read(self, token: str) -> tuple[str, str]:
        """(site id, record id), or ``InvalidToken``."""
        if not isinstance(token, str) or not token.startswith(PREFIX) or len(token) > 200:
            raise _invalid()
        body = token[len(PREFIX) :]
        try:
            sealed = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            plain = self._aead.decrypt(sealed[:12], sealed[12:], _AAD)
            n = plain[0] if plain else -1
            if len(plain) != 1 + n + 16:
                raise _invalid()
            return plain[1 : 1 + n].decode(), plain[1 + n :].hex()
        except (ValueError, InvalidTag):  # UnicodeDecodeError is a ValueError
            raise _invalid() from None


def _invalid() -> InvalidToken:
    return InvalidToken(
        "not a valid domicile token", hint="pass a token returned by put, exactly as returned"
    )
