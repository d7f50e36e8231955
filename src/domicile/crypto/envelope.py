"""Envelope encryption of records.

Each subject has its own 256-bit data key (DEK), kept wrapped by the home site's
key-encryption key in a key store apart from the data. Values are sealed with AES-256-GCM
under the subject's DEK; the associated data names where the value belongs (for a record's
body: site, collection, record and version, see ``domicile.vault.sealing``; for a field of
the earlier layout or a file: site, collection, record and field), so a ciphertext copied
elsewhere does not decrypt.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from domicile.crypto.errors import DecryptionFailed

NONCE = 12
VERSION = b"\x01"
DEK_BYTES = 32  # AES-256


def new_data_key() -> bytes:
    return AESGCM.generate_key(8 * DEK_BYTES)


def record_context(site: str, collection: str, record: str) -> bytes:
    """The common start of the associated data of every field of one record."""
    return b"\x00".join(
        (b"domicile/field/v1", site.encode(), collection.encode(), record.encode(), b"")
    )


def field_context(site: str, collection: str, record: str, field: str) -> bytes:
    """Associated data binding a ciphertext to its place: site, collection, record, field."""
    return record_context(site, collection, record) + field.encode()


def key_context(site: str, subject: str) -> bytes:
    """Associated data binding a wrapped data key to its subject and site."""
    return b"\x00".join((b"domicile/dek/v1", site.encode(), subject.encode()))


class Sealer:
    """Seals one value that arrives in pieces (an uploaded file), without holding the
    plaintext: the output is exactly what ``FieldCipher.seal`` gives for the whole value."""

    __slots__ = ("_encryptor", "_out", "size")

    def __init__(self, dek: bytes, context: bytes) -> None:
        nonce = secrets.token_bytes(NONCE)
        self._encryptor = Cipher(algorithms.AES(dek), modes.GCM(nonce)).encryptor()
        self._encryptor.authenticate_additional_data(context)
        self._out = bytearray(VERSION + nonce)
        self.size = 0

    def update(self, piece: bytes) -> None:
        self.size += len(piece)
        self._out += self._encryptor.update(piece)

    def finish(self) -> bytearray:
        """The sealed value (a bytearray, so that it is not copied once more)."""
        self._out += self._encryptor.finalize()
        self._out += self._encryptor.tag
        return self._out


class FieldCipher:
    """Seals and opens field values under one subject's data key."""

    __slots__ = ("_aead", "_dek")

    def __init__(self, dek: bytes) -> None:
        self._aead = AESGCM(dek)
        self._dek = dek

    @property
    def aead(self) -> AESGCM:
        return self._aead

    def open_raw(self, nonce: bytes, sealed: bytes, context: bytes) -> bytes:
        """Open a ciphertext (with its tag) under ``nonce`` and ``context``."""
        try:
            return self._aead.decrypt(nonce, sealed, context)
        except InvalidTag:
            raise DecryptionFailed(
                "a stored value does not decrypt in its place",
                hint="it was altered or moved from another record, collection, site or version",
            ) from None

    def sealer(self, context: bytes) -> Sealer:
        """A ``Sealer`` for a value that arrives in pieces."""
        return Sealer(self._dek, context)

    def seal(self, plaintext: bytes, context: bytes) -> bytes:
        nonce = secrets.token_bytes(NONCE)
        return VERSION + nonce + self._aead.encrypt(nonce, plaintext, context)

    def seal_all(self, items: Sequence[tuple[bytes, bytes]]) -> list[bytes]:
        """``seal`` for several (plaintext, context) pairs, with one call to the OS for all
        the nonces (each is still 96 fresh random bits)."""
        pool = os.urandom(NONCE * len(items))
        encrypt = self._aead.encrypt
        out = []
        for i, (plaintext, context) in enumerate(items):
            nonce = pool[NONCE * i : NONCE * (i + 1)]
            out.append(VERSION + nonce + encrypt(nonce, plaintext, context))
        return out

    def open(self, sealed: bytes, context: bytes) -> bytes:
        if sealed[:1] != VERSION or len(sealed) < 1 + NONCE + 16:
            raise DecryptionFailed(
                "a stored value is malformed", hint="the site's data was altered"
            )
        try:
            return self._aead.decrypt(sealed[1 : 1 + NONCE], sealed[1 + NONCE :], context)
        except InvalidTag:
            raise DecryptionFailed(
                "a stored value does not decrypt in its place",
                hint="it was altered or moved from another record, field or site",
            ) from None
