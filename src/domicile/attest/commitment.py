"""A site's commitment over the subjects it holds: a sorted Merkle tree of keyed hashes.

Each subject a site holds is one leaf. The leaf does not name the subject: it carries
``key``, the subject's keyed hash (HMAC-SHA-256 under the deployment's attestation key, so
nobody without that key can compute or test one), and ``role_commit``, a hash that hides
whether the site holds the subject's primary records or a copy (SHA-256 over the role and
a salt derived from the key; the salt is shown only in the subject's own proof). Leaves are
sorted by ``key``, so that

- **membership** is one leaf and its RFC 9162 inclusion proof, and
- **non-membership** is two adjacent leaves whose keys bracket the absent key (or the
  first or last leaf, or an empty tree), each with its inclusion proof.

The tree is padded with dummy leaves (keyed hashes of nothing a subject can have) to the
next power of two, at least ``MIN_SIZE``: the size a verifier sees says how many subjects
a site holds only to within a factor of two.

The root is signed with the site's Ed25519 key (``CommitmentHead``) and recorded as an
``attest`` entry of the site's audit log, which the other sites witness. Everything here
is pure: the tree is a function of the key, the site and the set of subjects, so it can
be rebuilt to prove and to check that it is still current.
"""

from __future__ import annotations

import bisect
import datetime as dt
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from domicile.audit.heads import TreeHead
from domicile.audit.merkle import (
    HASH_SIZE,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_of,
    verify_inclusion,
)
from domicile.crypto.signing import sign
from domicile.errors import BadInput

Role = Literal["primary", "copy"]
ROLES: tuple[Role, ...] = ("primary", "copy")
MIN_SIZE = 16
_HEAD_TAG = b"domicile/attest-head/v1"
_SUBJECT_TAG = b"domicile/attest/subject/v1"
_ROLE_TAG = b"domicile/attest/role/v1"
_NEWEST_TAG = b"domicile/attest-newest/v1"


def attest_key(token_key: bytes) -> bytes:
    """The deployment's attestation key, derived from its token key (HKDF-SHA-256, its own
    label): one key for every site, so that the same subject has the same keyed hash in
    every site's tree and a proof can show it absent from the others."""
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"domicile/attest/key/v1"
    ).derive(token_key)


def subject_key(key: bytes, subject_id: str) -> bytes:
    """A subject's keyed hash: what the trees hold and what a proof shows instead of it."""
    return hmac.digest(key, _SUBJECT_TAG + b"\x00" + subject_id.encode(), hashlib.sha256)


def role_salt(key: bytes, site: str, leaf_key: bytes) -> bytes:
    return hmac.digest(key, b"\x00".join((_ROLE_TAG, site.encode(), leaf_key)), hashlib.sha256)


def role_commit(role: str, salt: bytes) -> bytes:
    return hashlib.sha256(b"\x00".join((_ROLE_TAG, role.encode(), salt))).digest()


def leaf_of(leaf_key: bytes, commit: bytes) -> bytes:
    return leaf_hash(leaf_key + commit)


def padded_size(n: int) -> int:
    size = MIN_SIZE
    while size < n:
        size *= 2
    return size


@dataclass(frozen=True)
class Leaf:
    key: bytes
    role_commit: bytes

    @property
    def hash(self) -> bytes:
        return leaf_of(self.key, self.role_commit)

    def to_dict(self) -> dict[str, str]:
        return {"key": self.key.hex(), "role_commit": self.role_commit.hex()}


class SubjectTree:
    """The sorted tree of one site: built from ``{subject_id: role}``."""

    def __init__(self, key: bytes, site: str, subjects: Mapping[str, Role]) -> None:
        self.site = site
        self._key = key
        leaves = []
        for sid, role in subjects.items():
            k = subject_key(key, sid)
            leaves.append(Leaf(k, role_commit(role, role_salt(key, site, k))))
        pad = padded_size(len(leaves)) - len(leaves)
        for i in range(pad):  # dummies: keyed hashes no subject id can have
            label = b"\x00".join((b"domicile/attest/pad/v1", site.encode(), str(i).encode()))
            k = hmac.digest(key, label, hashlib.sha256)
            leaves.append(Leaf(k, hmac.digest(key, b"role" + label, hashlib.sha256)))
        leaves.sort(key=lambda leaf: leaf.key)
        self.leaves = leaves
        self.keys = [leaf.key for leaf in leaves]
        self.hashes = [leaf.hash for leaf in leaves]
        # Every level of the tree, kept: the size is a power of two, so each subtree a
        # proof needs is a whole node of some level, read here instead of recomputed.
        self._levels = [self.hashes]
        while len(self._levels[-1]) > 1:
            low = self._levels[-1]
            self._levels.append([node_hash(low[i], low[i + 1]) for i in range(0, len(low), 2)])
        self.root = self._levels[-1][0]
        self.subjects = len(subjects)

    def _subtree(self, lo: int, hi: int) -> bytes:
        width = hi - lo
        level = width.bit_length() - 1
        if width == 1 << level and lo % width == 0:
            return self._levels[level][lo >> level]
        return root_of(self.hashes[lo:hi])  # not a whole node: never asked of a padded tree

    @property
    def size(self) -> int:
        return len(self.leaves)

    def _path(self, index: int) -> list[str]:
        return [h.hex() for h in inclusion_proof(index, self.size, self._subtree)]

    def prove(self, leaf_key: bytes, role: Role | None) -> dict[str, Any]:
        """Membership (with the role and its salt) when ``role`` is given, else
        non-membership: the neighbours bracketing ``leaf_key``."""
        i = bisect.bisect_left(self.keys, leaf_key)
        present = i < self.size and self.keys[i] == leaf_key
        if role is not None:
            if not present:
                raise ValueError("the subject is not in this tree")
            return {
                "index": i,
                "role": role,
                "salt": role_salt(self._key, self.site, leaf_key).hex(),
                "audit_path": self._path(i),
            }
        if present:
            raise ValueError("the subject is in this tree")

        def side(j: int) -> dict[str, Any] | None:
            if not 0 <= j < self.size:
                return None
            return {"index": j, **self.leaves[j].to_dict(), "audit_path": self._path(j)}

        return {"left": side(i - 1), "right": side(i)}


# --- the signed head ----------------------------------------------------------------------


@dataclass(frozen=True)
class CommitmentHead(TreeHead):
    """A site's signed statement: "the subjects I hold are the leaves of this tree". Shaped
    and checked as a tree head; its signature covers a message of its own kind, so neither
    can stand for the other."""

    def message(self) -> bytes:
        return commitment_message(self.site, self.size, self.root, self.signed_at)


def commitment_message(site: str, size: int, root: bytes, signed_at: str) -> bytes:
    return b"\x00".join((_HEAD_TAG, site.encode(), str(size).encode(), root, signed_at.encode()))


def sign_commitment(key: Ed25519PrivateKey, tree: SubjectTree) -> CommitmentHead:
    at = dt.datetime.now(dt.UTC).isoformat()
    signature = sign(key, commitment_message(tree.site, tree.size, tree.root, at))
    return CommitmentHead(tree.site, tree.size, tree.root, at, signature)


def newest_message(
    site: str, audit_size: int, audit_root: bytes, seq: int, commitment_root: bytes
) -> bytes:
    """What a site signs when it proves: "up to my audit tree head of this size and root,
    my newest commitment is the ``attest`` entry ``seq``, with this root". An older
    commitment cannot stand for the newest without the site signing a false statement
    about a log that the witnesses and the heads file pin (an auditor with the log checks
    it: ``attest status``)."""
    return b"\x00".join(
        (_NEWEST_TAG, site.encode(), str(audit_size).encode(), audit_root, str(seq).encode(),
         commitment_root)
    )  # fmt: skip


# --- checking a membership or an absence ------------------------------------------------


def check_member(head: CommitmentHead, leaf_key: bytes, member: Any) -> Role:
    """The role the subject has in ``head``'s tree; ``BadInput`` naming what fails."""
    try:
        index = int(member["index"])
        role = str(member["role"])
        salt = unhex(member["salt"], HASH_SIZE)
        path = [unhex(h, HASH_SIZE) for h in member["audit_path"]]
    except (KeyError, TypeError, ValueError):
        raise BadInput("a membership needs index, role, salt and audit_path") from None
    if role not in ROLES:
        raise BadInput(f"unknown role {role!r}")
    leaf = leaf_of(leaf_key, role_commit(role, salt))
    if not verify_inclusion(leaf, index, head.size, path, head.root):
        raise BadInput(
            f"the subject's hash is not leaf {index} of the commitment of site {head.site!r} "
            "(a proof for another subject, or an altered one)"
        )
    return "primary" if role == "primary" else "copy"


def check_absent(head: CommitmentHead, leaf_key: bytes, absence: Any) -> None:
    """That ``leaf_key`` is in no leaf of ``head``'s tree: its neighbours are adjacent
    leaves whose keys bracket it (sorted trees only; the site signed a sorted one)."""
    if not isinstance(absence, Mapping):
        raise BadInput("an absence needs left and right")
    sides: list[tuple[int, bytes] | None] = []
    for name in ("left", "right"):
        side = absence.get(name)
        if side is None:
            sides.append(None)
            continue
        try:
            index = int(side["index"])
            k = unhex(side["key"], HASH_SIZE)
            commit = unhex(side["role_commit"], HASH_SIZE)
            path = [unhex(h, HASH_SIZE) for h in side["audit_path"]]
        except (KeyError, TypeError, ValueError):
            raise BadInput(
                f"the {name} neighbour needs index, key, role_commit, audit_path"
            ) from None
        if not verify_inclusion(leaf_of(k, commit), index, head.size, path, head.root):
            raise BadInput(
                f"the {name} neighbour is not leaf {index} of the commitment of site {head.site!r}"
            )
        sides.append((index, k))
    left, right = sides
    if head.size == 0 and left is None and right is None:
        return
    if left is None and right is None:
        raise BadInput(
            f"an absence from the non-empty commitment of site {head.site!r} names no neighbour"
        )
    if left is not None and not left[1] < leaf_key:
        raise BadInput(f"the left neighbour in site {head.site!r} does not sort before the subject")
    if right is not None and not leaf_key < right[1]:
        raise BadInput(f"the right neighbour in site {head.site!r} does not sort after the subject")
    if left is None and right is not None and right[0] != 0:
        raise BadInput(f"site {head.site!r}: a right neighbour alone must be the first leaf")
    if right is None and left is not None and left[0] != head.size - 1:
        raise BadInput(f"site {head.site!r}: a left neighbour alone must be the last leaf")
    if left is not None and right is not None and right[0] != left[0] + 1:
        raise BadInput(f"site {head.site!r}: the neighbours are not adjacent leaves")


def unhex(value: Any, size: int | None) -> bytes:
    if not isinstance(value, str):
        raise ValueError("not hex")
    raw = bytes.fromhex(value)
    if size is not None and len(raw) != size:
        raise ValueError("wrong length")
    return raw


def subjects_of(records: Iterable[tuple[str, bool]]) -> dict[str, Role]:
    """``{subject: role}`` from (subject id, is a copy) pairs; primary wins."""
    out: dict[str, Role] = {}
    for sid, is_copy in records:
        if not is_copy:
            out[sid] = "primary"
        else:
            out.setdefault(sid, "copy")
    return out
