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
from cryptography.hazmat.primitives.hmac import HMAC
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

DIGEST_BYTES = 16
SEARCH_BYTES = 32
_SEARCH_ROW = b"@search\x00"  # no collection is named so: a namespace of its own


class BlindIndexer:
    """HMAC-SHA256 under one site's index key. The key is set up once (``cryptography``'s
    HMAC, whose keyed state holds the inner and outer hashes of RFC 2104) and that state is
    copied for each digest, which costs well under half of ``hmac.digest`` setting the key
    up again every time; the digests are the same (``tests/vault/test_fast_paths.py``)."""

    __slots__ = ("_keyed", "_prefixes")

    def __init__(self, key: bytes) -> None:
        self._keyed = HMAC(key, hashes.SHA256())  # never finalized: only copied
        # The encoded ``collection NUL field NUL`` start of each message (a few shapes).
        self._prefixes: dict[tuple[str, str], bytes] = {}

    def _mac(self, msg: bytes) -> bytes:
        h = self._keyed.copy()
        h.update(msg)
        return h.finalize()[:DIGEST_BYTES]

    def digest(self, collection: str, field: str, value: str) -> bytes:
        prefix = self._prefixes.get((collection, field))
        if prefix is None:
            prefix = b"\x00".join((collection.encode(), field.encode(), b""))
            if len(self._prefixes) < 1024:
                self._prefixes[(collection, field)] = prefix
        h = self._keyed.copy()  # ``_mac``, written out: a write makes two per record
        h.update(prefix + value.encode("utf-8"))
        return h.finalize()[:DIGEST_BYTES]

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
