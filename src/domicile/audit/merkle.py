"""Merkle trees as Certificate Transparency defines them (RFC 9162, section 2.1).

A site's audit log is a list of entries; its Merkle tree hashes each entry into a leaf
(``leaf_hash``: SHA-256 over 0x00 and the entry) and pairs of subtrees into nodes
(``node_hash``: SHA-256 over 0x01 and both children), splitting a list of ``n`` leaves at
the largest power of two below ``n``. The root commits to every entry; a signed root (a
tree head) commits the site to its whole history up to that size.

Two proofs come with the tree, and both are checked with nothing but hashes:

- an **inclusion proof** shows that one entry is leaf ``index`` of the tree of ``size``
  whose root is known (``inclusion_proof``, ``verify_inclusion``);
- a **consistency proof** shows that the tree of ``size2`` extends the tree of ``size1``:
  the same first ``size1`` leaves, nothing rewritten, removed or reordered
  (``consistency_proof``, ``verify_consistency``).

The generators take ``subtree(lo, hi)``, a function giving the root of leaves
``[lo, hi)``, so a caller can answer from stored nodes instead of rehashing everything.
Verification follows RFC 9162 sections 2.1.3.2 and 2.1.4.2 step by step; this module is
pure and has no state but ``CompactRange``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

Subtree = Callable[[int, int], bytes]


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def split(n: int) -> int:
    """The largest power of two smaller than ``n`` (``n`` > 1): where RFC 9162 splits."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(leaves: Sequence[bytes]) -> bytes:
    """The root of a tree over these leaf hashes (``EMPTY_ROOT`` for none)."""
    compact = CompactRange()
    for leaf in leaves:
        compact.append(leaf)
    return compact.root()


def list_subtree(leaves: Sequence[bytes]) -> Subtree:
    """``subtree`` over leaf hashes held in memory."""

    def subtree(lo: int, hi: int) -> bytes:
        return root_of(leaves[lo:hi])

    return subtree


class CompactRange:
    """The roots of the perfect subtrees that make up a tree of ``size`` leaves, biggest
    first (one per set bit of ``size``): enough to append leaves and to compute the root
    without the leaves themselves. ``on_node(level, index, hash)`` is called for every
    perfect subtree of ``2**level`` leaves completed at or above ``min_level``, so a caller
    can keep them for proofs."""

    __slots__ = ("hashes", "levels", "min_level", "on_node", "size")

    def __init__(
        self,
        size: int = 0,
        hashes: Sequence[bytes] = (),
        *,
        on_node: Callable[[int, int, bytes], None] | None = None,
        min_level: int = 0,
    ) -> None:
        levels = [b for b in range(size.bit_length() - 1, -1, -1) if size >> b & 1]
        if len(levels) != len(hashes) or any(len(h) != HASH_SIZE for h in hashes):
            raise ValueError("a compact range needs one 32-byte hash per set bit of its size")
        self.size = size
        self.levels = levels
        self.hashes = list(hashes)
        self.on_node = on_node
        self.min_level = min_level

    def append(self, leaf: bytes) -> None:
        hashes, levels = self.hashes, self.levels
        hashes.append(leaf)
        levels.append(0)
        end = self.size + 1
        while len(levels) > 1 and levels[-1] == levels[-2]:
            right = hashes.pop()
            level = levels.pop() + 1
            merged = node_hash(hashes[-1], right)
            hashes[-1] = merged
            levels[-1] = level
            if self.on_node is not None and level >= self.min_level:
                self.on_node(level, (end >> level) - 1, merged)
        self.size = end

    def extend(self, leaves: Iterable[bytes]) -> None:
        for leaf in leaves:
            self.append(leaf)

    def root(self) -> bytes:
        if not self.hashes:
            return EMPTY_ROOT
        root = self.hashes[-1]
        for h in reversed(self.hashes[:-1]):
            root = node_hash(h, root)
        return root

    def pack(self) -> bytes:
        return b"".join(self.hashes)

    @classmethod
    def unpack(cls, size: int, packed: bytes, **kwargs: object) -> CompactRange:
        hashes = [packed[i : i + HASH_SIZE] for i in range(0, len(packed), HASH_SIZE)]
        return cls(size, hashes, **kwargs)  # type: ignore[arg-type]


# --- proofs -----------------------------------------------------------------------------


def inclusion_proof(index: int, size: int, subtree: Subtree) -> list[bytes]:
    """The audit path of leaf ``index`` in the tree of ``size`` leaves (RFC 9162 2.1.3.1)."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size} leaves")
    path: list[bytes] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = split(hi - lo)
        if index < lo + k:
            path.append(subtree(lo + k, hi))
            hi = lo + k
        else:
            path.append(subtree(lo, lo + k))
            lo += k
    path.reverse()  # from the leaf's sibling up to the root's child
    return path


def consistency_proof(size1: int, size2: int, subtree: Subtree) -> list[bytes]:
    """The proof that the tree of ``size2`` leaves extends the one of ``size1``
    (RFC 9162 2.1.4.1)."""
    if not 0 <= size1 <= size2:
        raise ValueError(f"no consistency proof from {size1} to {size2} leaves")
    if size1 == 0 or size1 == size2:
        return []
    path: list[bytes] = []
    lo, hi, m, complete = 0, size2, size1, True
    while m != hi - lo:
        k = split(hi - lo)
        if m <= k:
            path.append(subtree(lo + k, hi))
            hi = lo + k
        else:
            path.append(subtree(lo, lo + k))
            lo += k
            m -= k
            complete = False
    if not complete:
        path.append(subtree(lo, hi))
    path.reverse()
    return path


def verify_inclusion(
    leaf: bytes, index: int, size: int, path: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 2.1.3.2: does ``path`` show that ``leaf`` is leaf ``index`` of the tree of
    ``size`` leaves whose root is ``root``?"""
    if not 0 <= index < size or not _hashes(leaf, root, *path):
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(
    size1: int, size2: int, root1: bytes, root2: bytes, path: Sequence[bytes]
) -> bool:
    """RFC 9162 2.1.4.2: does ``path`` show that the tree of ``size2`` leaves with root
    ``root2`` extends the tree of ``size1`` leaves with root ``root1``?"""
    if not 0 <= size1 <= size2 or not _hashes(root1, root2, *path):
        return False
    if size1 == size2:
        return not path and root1 == root2
    if size1 == 0:
        return not path and root1 == EMPTY_ROOT
    if not path:
        return False
    proof = list(path)
    if size1 & (size1 - 1) == 0:  # an exact power of two: its root starts the proof
        proof.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == root1 and sr == root2 and sn == 0


def _hashes(*values: object) -> bool:
    return all(isinstance(v, bytes) and len(v) == HASH_SIZE for v in values)
