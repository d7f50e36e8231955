"""Blind indexes: keyed digests that allow equality search without storing the value.

The digest is HMAC-SHA256 under the site's index key, over the collection, the field and
the normalised value, cut to 16 bytes. Different sites have different keys, so the same
e-mail address gives unrelated digests at two sites.

A federation searches another node's site without sending it the value: the asking node
computes a **search digest** (HMAC-SHA256 under the deployment's search key, which every
node derives from the join key, over the same collection, field and normalised value) and
sends only that; the home node keys it again with its own index key
(``BlindIndexer.of_search``) and looks the result up. So in a federated deployment each
searchable value is indexed twice at its site: by its digest, and by the site-keyed form
of its search digest. What is stored still opens to no one without the site's index key;
what crosses is a digest under a key the nodes share (a node that receives it can test
guesses of the value against it, as any keyed equality search allows, but never reads
it).
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

DIGEST_BYTES = 16
SEARCH_BYTES = 32
_SEARCH_ROW = b"@search\x00"  # no collection is named so: a namespace of its own
_BLOCK = 64  # SHA-256's block size: HMAC pads (or first hashes) the key to it
_IPAD = bytes(b ^ 0x36 for b in range(256))
_OPAD = bytes(b ^ 0x5C for b in range(256))


class BlindIndexer:
    """HMAC-SHA256 under one site's index key. The key's inner and outer hash states are
    computed once (RFC 2104: ``H(key ^ opad || H(key ^ ipad || msg))``) and copied for each
    digest, which costs a third of ``hmac.digest`` setting the key up again every time; the
    digests are the same (``tests/crypto``)."""

    __slots__ = ("_inner", "_outer", "_prefixes")

    def __init__(self, key: bytes) -> None:
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        key = key.ljust(_BLOCK, b"\x00")
        self._inner = hashlib.sha256(key.translate(_IPAD))
        self._outer = hashlib.sha256(key.translate(_OPAD))
        # The encoded ``collection NUL field NUL`` start of each message (a few shapes).
        self._prefixes: dict[tuple[str, str], bytes] = {}

    def _mac(self, msg: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(msg)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()[:DIGEST_BYTES]

    def digest(self, collection: str, field: str, value: str) -> bytes:
        prefix = self._prefixes.get((collection, field))
        if prefix is None:
            prefix = b"\x00".join((collection.encode(), field.encode(), b""))
            if len(self._prefixes) < 1024:
                self._prefixes[(collection, field)] = prefix
        inner = self._inner.copy()  # ``_mac``, written out: a write makes two per record
        inner.update(prefix + value.encode("utf-8"))
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()[:DIGEST_BYTES]

    def of_search(self, search: bytes) -> bytes:
        """The site's index entry for a search digest (``search_digest``)."""
        return self._mac(_SEARCH_ROW + search)


def search_key(join_key: bytes) -> bytes:
    """The deployment's search key, derived from its join key (a key of its own: a search
    digest is never a join token)."""
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"domicile federated search v1"
    ).derive(join_key)


def search_digest(key: bytes, collection: str, field: str, value: str) -> bytes:
    """What a node sends another to search for a normalised value."""
    msg = b"\x00".join((collection.encode(), field.encode(), value.encode("utf-8")))
    return hmac.digest(key, msg, hashlib.sha256)[:SEARCH_BYTES]
