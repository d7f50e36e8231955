"""Blind indexes: keyed digests that allow equality search without storing the value.

The digest is HMAC-SHA256 under the site's index key, over the collection, the field and
the normalised value, cut to 16 bytes. Different sites have different keys, so the same
e-mail address gives unrelated digests at two sites.
"""

from __future__ import annotations

import hashlib
import hmac

DIGEST_BYTES = 16


class BlindIndexer:
    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        self._key = key

    def digest(self, collection: str, field: str, value: str) -> bytes:
        msg = b"\x00".join((collection.encode(), field.encode(), value.encode("utf-8")))
        return hmac.digest(self._key, msg, hashlib.sha256)[:DIGEST_BYTES]
