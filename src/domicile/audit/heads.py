"""Signed tree heads, the files an operator keeps offline, and proofs for third parties.

A **tree head** is a site's statement "my audit log had ``size`` entries and its Merkle
root was ``root`` at ``signed_at``", signed with the site's Ed25519 key. Heads are kept in
three places, so that whoever can write one site's disk cannot rewrite its history
unseen:

- at the site itself (``tree_heads``), which helps to name where a log went wrong;
- at every other site of the deployment, which **witnesses** it: a witness records a new
  head only after checking a consistency proof from the last head it recorded, so it
  never accepts a rewritten or shortened history (``witnessed`` and an audit entry in the
  witness's own log);
- in a **heads file** the operator exports (``domicile audit heads --json``) and keeps
  elsewhere. ``audit verify --heads FILE`` checks the logs against it.

Everything here is plain data and signatures: a verifier needs only a site's public key.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from domicile.audit.merkle import HASH_SIZE, leaf_hash, verify_inclusion
from domicile.crypto.signing import sign, verify
from domicile.errors import BadInput
from domicile.stores.base import entry_hash

HEADS_FORMAT = "domicile.heads/1"
PROOF_FORMAT = "domicile.inclusion-proof/1"
_TAG = b"domicile/tree-head/v1"


@dataclass(frozen=True)
class TreeHead:
    """A signed statement of a site's log: its size and Merkle root at a time."""

    site: str
    size: int
    root: bytes
    signed_at: str
    signature: bytes

    def message(self) -> bytes:
        return head_message(self.site, self.size, self.root, self.signed_at)

    def verifies(self, key: Ed25519PublicKey) -> bool:
        return verify(key, self.message(), self.signature)

    def to_dict(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "size": self.size,
            "root": self.root.hex(),
            "signed_at": self.signed_at,
            "signature": self.signature.hex(),
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "a tree head") -> Self:
        if not isinstance(data, Mapping):
            raise BadInput(f"{where} is not an object")
        try:
            head = cls(
                str(data["site"]),
                int(data["size"]),
                _unhex(data["root"], HASH_SIZE),
                str(data["signed_at"]),
                _unhex(data["signature"], 64),
            )
        except (KeyError, TypeError, ValueError):
            raise BadInput(
                f"{where} needs site, size, root (32 bytes, hex), signed_at and signature "
                "(64 bytes, hex)"
            ) from None
        if head.size < 0:
            raise BadInput(f"{where} has a negative size")
        return head


def head_message(site: str, size: int, root: bytes, signed_at: str) -> bytes:
    """What a tree head's signature covers (domain-separated, unambiguous)."""
    return b"\x00".join((_TAG, site.encode(), str(size).encode(), root, signed_at.encode()))


def sign_head(key: Ed25519PrivateKey, site: str, size: int, root: bytes) -> TreeHead:
    signed_at = dt.datetime.now(dt.UTC).isoformat()
    return TreeHead(
        site, size, root, signed_at, sign(key, head_message(site, size, root, signed_at))
    )


@dataclass(frozen=True)
class WitnessedHead:
    """A head of ``head.site`` as the site ``witness`` recorded it (``seq``: the entry of
    the witness's log that records it)."""

    witness: str
    head: TreeHead
    seq: int


# --- public keys ------------------------------------------------------------------------


def public_key_text(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + base64.b64encode(raw).decode()


def parse_public_key(text: Any) -> Ed25519PublicKey:
    if not isinstance(text, str) or not text.startswith("ed25519:"):
        raise BadInput("a public key is written ed25519:BASE64 (32 bytes)")
    try:
        raw = base64.b64decode(text.removeprefix("ed25519:"), validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError):
        raise BadInput("a public key is written ed25519:BASE64 (32 bytes)") from None


# --- the heads file ---------------------------------------------------------------------


@dataclass(frozen=True)
class HeadsFile:
    """Heads exported for safekeeping: per site, its public key and its newest head."""

    environment: str
    exported_at: str
    keys: dict[str, str]  # site -> public key text
    heads: dict[str, TreeHead]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": HEADS_FORMAT,
            "environment": self.environment,
            "exported_at": self.exported_at,
            "sites": {
                site: {
                    "public_key": self.keys[site],
                    "head": self.heads[site].to_dict() if site in self.heads else None,
                }
                for site in sorted(self.keys)
            },
        }

    @classmethod
    def load(cls, path: str | Path) -> HeadsFile:
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise BadInput(f"no heads file at {p}") from None
        except (OSError, UnicodeDecodeError, ValueError):
            raise BadInput(
                f"{p} is not a heads file", hint="make one with `domicile audit heads --json`"
            ) from None
        if not isinstance(data, dict) or data.get("format") != HEADS_FORMAT:
            raise BadInput(
                f"{p} is not a heads file ({HEADS_FORMAT})",
                hint="make one with `domicile audit heads --json`",
            )
        sites = data.get("sites")
        if not isinstance(sites, dict):
            raise BadInput(f"{p}: 'sites' must map site ids to their keys and heads")
        keys: dict[str, str] = {}
        heads: dict[str, TreeHead] = {}
        for site, entry in sites.items():
            if not isinstance(entry, dict):
                raise BadInput(f"{p}: site {site!r} is not an object")
            parse_public_key(entry.get("public_key"))
            keys[str(site)] = entry["public_key"]
            if entry.get("head") is not None:
                head = TreeHead.from_dict(entry["head"], f"{p}: the head of site {site!r}")
                if head.site != site:
                    raise BadInput(f"{p}: the head listed under {site!r} is of site {head.site!r}")
                heads[str(site)] = head
        return cls(str(data.get("environment", "")), str(data.get("exported_at", "")), keys, heads)


# --- inclusion proofs -------------------------------------------------------------------


def proof_document(
    site: str,
    key: Ed25519PublicKey,
    seq: int,
    payload: str,
    prev_hash: bytes,
    head: TreeHead,
    path: list[bytes],
) -> dict[str, Any]:
    """An entry, its place in a signed tree, and everything needed to check both."""
    return {
        "format": PROOF_FORMAT,
        "site": site,
        "public_key": public_key_text(key),
        "entry": {"seq": seq, "payload": payload, "prev_hash": prev_hash.hex()},
        "leaf_index": seq - 1,
        "head": head.to_dict(),
        "audit_path": [h.hex() for h in path],
        "how_to_check": (
            "entry hash = SHA-256('domicile/audit/v1' || prev_hash || seq as 8 bytes big-endian "
            "|| payload as UTF-8); leaf = SHA-256(0x00 || entry hash); fold audit_path into the "
            "root as RFC 9162 section 2.1.3.2 says; the head's signature is Ed25519 over "
            "'domicile/tree-head/v1' 0x00 site 0x00 size 0x00 root 0x00 signed_at"
        ),
    }


def check_proof(document: Any, key: Ed25519PublicKey | None = None) -> TreeHead:
    """Check an inclusion proof with only a public key (``key``, else the one the
    document names, which is only as good as where the document came from). Returns the
    head it is proved against; raises ``BadInput`` naming what does not hold."""
    if not isinstance(document, Mapping) or document.get("format") != PROOF_FORMAT:
        raise BadInput(f"not an inclusion proof ({PROOF_FORMAT})")
    try:
        entry = document["entry"]
        seq = int(entry["seq"])
        payload = str(entry["payload"])
        prev = _unhex(entry["prev_hash"], None)
        path = [_unhex(h, HASH_SIZE) for h in document["audit_path"]]
    except (KeyError, TypeError, ValueError):
        raise BadInput("the proof needs entry {seq, payload, prev_hash} and audit_path") from None
    head = TreeHead.from_dict(document.get("head"), "the proof's head")
    if key is None:
        key = parse_public_key(document.get("public_key"))
    if head.site != document.get("site"):
        raise BadInput("the proof's head is of another site")
    if not head.verifies(key):
        raise BadInput("the head's signature does not verify with the site's public key")
    if not 1 <= seq <= head.size:  # also keeps a huge or negative number out of the hashing
        raise BadInput(f"entry {seq} is outside the signed tree of {head.size} entries")
    leaf = leaf_hash(entry_hash(prev, seq, payload))
    if not verify_inclusion(leaf, seq - 1, head.size, path, head.root):
        raise BadInput(f"entry {seq} is not in the signed tree of {head.size} entries")
    return head


def _unhex(value: Any, size: int | None) -> bytes:
    if not isinstance(value, str):
        raise ValueError("not hex")
    raw = bytes.fromhex(value)
    if size is not None and len(raw) != size:
        raise ValueError("wrong length")
    return raw
