"""The Merkle tree of the audit logs agrees with RFC 9162 (its published test vectors), and
its proofs verify exactly when they should."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domicile.audit.merkle import (
    EMPTY_ROOT,
    CompactRange,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    list_subtree,
    node_hash,
    root_of,
    verify_consistency,
    verify_inclusion,
)

# The reference leaves and roots of Certificate Transparency's test suite (RFC 6962/9162).
DATA = [
    bytes.fromhex(h)
    for h in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657",
              "606162636465666768696a6b6c6d6e6f")
]  # fmt: skip
ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
INCLUSION = {
    (0, 8): ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
             "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"],
    (5, 8): ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
             "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
             "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"],
}  # fmt: skip
CONSISTENCY = {
    (2, 8): ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"],
    (6, 8): ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
             "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
             "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"],
    (2, 5): ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"],
}  # fmt: skip
LEAVES = [leaf_hash(d) for d in DATA]


def test_roots_are_the_rfc_test_vectors() -> None:
    assert EMPTY_ROOT.hex() == hashlib.sha256(b"").hexdigest()
    assert root_of([]) == EMPTY_ROOT
    for n in range(1, 9):
        assert root_of(LEAVES[:n]).hex() == ROOTS[n - 1]


@pytest.mark.parametrize(("index", "size"), list(INCLUSION))
def test_inclusion_proofs_are_the_rfc_test_vectors(index: int, size: int) -> None:
    path = inclusion_proof(index, size, list_subtree(LEAVES))
    assert [p.hex() for p in path] == INCLUSION[(index, size)]
    assert verify_inclusion(LEAVES[index], index, size, path, bytes.fromhex(ROOTS[size - 1]))


@pytest.mark.parametrize(("size1", "size2"), list(CONSISTENCY))
def test_consistency_proofs_are_the_rfc_test_vectors(size1: int, size2: int) -> None:
    path = consistency_proof(size1, size2, list_subtree(LEAVES))
    assert [p.hex() for p in path] == CONSISTENCY[(size1, size2)]
    root1, root2 = (bytes.fromhex(ROOTS[n - 1]) for n in (size1, size2))
    assert verify_consistency(size1, size2, root1, root2, path)


def _leaves(n: int) -> list[bytes]:
    return [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


MANY = _leaves(70)
MANY_ROOTS = [root_of(MANY[:n]) for n in range(len(MANY) + 1)]


def test_every_inclusion_proof_verifies_and_a_mangled_one_does_not() -> None:
    subtree = list_subtree(MANY)
    for n in range(1, len(MANY) + 1):
        for i in range(n):
            path = inclusion_proof(i, n, subtree)
            assert verify_inclusion(MANY[i], i, n, path, MANY_ROOTS[n])
            if n > 1:
                assert not verify_inclusion(MANY[i], (i + 1) % n, n, path, MANY_ROOTS[n])
                assert not verify_inclusion(MANY[(i + 1) % n], i, n, path, MANY_ROOTS[n])
                assert not verify_inclusion(MANY[i], i, n, path[:-1], MANY_ROOTS[n])
                assert not verify_inclusion(MANY[i], i, n, [*path, MANY[0]], MANY_ROOTS[n])
                flipped = [bytes([path[0][0] ^ 1]) + path[0][1:], *path[1:]]
                assert not verify_inclusion(MANY[i], i, n, flipped, MANY_ROOTS[n])


def test_every_consistency_proof_verifies_and_a_mangled_one_does_not() -> None:
    subtree = list_subtree(MANY)
    for n in range(len(MANY) + 1):
        for m in range(n + 1):
            path = consistency_proof(m, n, subtree)
            assert verify_consistency(m, n, MANY_ROOTS[m], MANY_ROOTS[n], path)
            if 0 < m < n:
                assert not verify_consistency(m, n, MANY_ROOTS[m], MANY_ROOTS[n], path[:-1])
                assert not verify_consistency(m, n, MANY_ROOTS[m], MANY_ROOTS[n], [*path, MANY[0]])
                # A forked history: the same size, another leaf somewhere in the first m.
                forked = [*MANY[: m - 1], leaf_hash(b"forged"), *MANY[m:n]]
                fork_path = consistency_proof(m, n, list_subtree(forked))
                assert not verify_consistency(m, n, MANY_ROOTS[m], root_of(forked), fork_path)
    # The degenerate cases: equal sizes need equal roots and no proof; none from nothing.
    assert verify_consistency(4, 4, MANY_ROOTS[4], MANY_ROOTS[4], [])
    assert not verify_consistency(4, 4, MANY_ROOTS[4], MANY_ROOTS[5], [])
    assert not verify_consistency(6, 4, MANY_ROOTS[6], MANY_ROOTS[4], [])
    assert not verify_consistency(3, 8, MANY_ROOTS[3], MANY_ROOTS[8], [])


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=600), st.integers(min_value=0, max_value=600))
def test_a_compact_range_grows_to_the_same_root_and_reports_complete_subtrees(
    split_at: int, more: int
) -> None:
    leaves = _leaves(split_at + more)
    first = CompactRange()
    first.extend(leaves[:split_at])
    seen: list[tuple[int, int, bytes]] = []
    resumed = CompactRange.unpack(
        split_at, first.pack(), on_node=lambda lv, ix, h: seen.append((lv, ix, h)), min_level=3
    )
    resumed.extend(leaves[split_at:])
    assert resumed.root() == root_of(leaves)
    for level, idx, h in seen:
        assert h == root_of(leaves[idx << level : (idx + 1) << level])
    # Every complete subtree of 8 leaves or more that ends after the split was reported.
    for level in range(3, (len(leaves)).bit_length()):
        for idx in range(len(leaves) >> level):
            if (idx + 1) << level > split_at:
                assert (level, idx, root_of(leaves[idx << level : (idx + 1) << level])) in seen


def test_proof_generation_refuses_impossible_requests() -> None:
    with pytest.raises(ValueError, match="not in a tree"):
        inclusion_proof(8, 8, list_subtree(LEAVES))
    with pytest.raises(ValueError, match="no consistency proof"):
        consistency_proof(5, 3, list_subtree(LEAVES))
    with pytest.raises(ValueError, match="one 32-byte hash"):
        CompactRange(3, [node_hash(LEAVES[0], LEAVES[1])])
