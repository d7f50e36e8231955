"""The sorted subject tree alone: every member proves present, every other key proves
absent (before the first leaf, between two, after the last), and the proofs a lying
prover could try (neighbours that are not adjacent, that do not bracket the key, a leaf
moved) are refused."""

from __future__ import annotations

import copy
import random

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from domicile.attest.commitment import (
    MIN_SIZE,
    SubjectTree,
    check_absent,
    check_member,
    padded_size,
    sign_commitment,
    subject_key,
)
from domicile.audit.merkle import inclusion_proof, list_subtree
from domicile.errors import BadInput

KEY = bytes(range(32))


def tree_of(n: int, seed: int = 1) -> tuple[SubjectTree, dict[str, str]]:
    rng = random.Random(seed)
    subjects = {f"{rng.getrandbits(128):032x}": rng.choice(("primary", "copy")) for _ in range(n)}
    return SubjectTree(KEY, "ru", subjects), subjects  # type: ignore[arg-type]


@pytest.mark.parametrize("n", [0, 1, 15, 16, 17, 100])
def test_members_and_absentees_prove(n: int) -> None:
    tree, subjects = tree_of(n)
    assert tree.size == padded_size(n) >= max(n, MIN_SIZE)
    head = sign_commitment(Ed25519PrivateKey.generate(), tree)
    for sid, role in subjects.items():
        k = subject_key(KEY, sid)
        assert check_member(head, k, tree.prove(k, role)) == role  # type: ignore[arg-type]
    lo, hi = min(tree.keys), max(tree.keys)
    absentees = [b"\x00" * 32, b"\xff" * 32, *(subject_key(KEY, f"x{i}") for i in range(50))]
    for k in absentees:
        if k in tree.keys:
            continue
        proof = tree.prove(k, None)
        check_absent(head, k, proof)
        if k < lo:
            assert proof["left"] is None
            assert proof["right"]["index"] == 0
        if k > hi:
            assert proof["right"] is None
            assert proof["left"]["index"] == tree.size - 1


def test_lying_proofs_are_refused() -> None:
    tree, subjects = tree_of(40)
    head = sign_commitment(Ed25519PrivateKey.generate(), tree)
    first = next(iter(subjects))
    member = subject_key(KEY, first)
    absent = subject_key(KEY, "nobody")
    proof = tree.prove(absent, None)
    # A member cannot be shown absent: the leaves around it bracket it but are not adjacent.
    middle = tree.keys[tree.size // 2]
    i = tree.size // 2
    fake = {"left": _side(tree, i - 1), "right": _side(tree, i + 1)}
    with pytest.raises(BadInput, match="adjacent"):
        check_absent(head, middle, fake)
    # Neighbours that do not bracket the key.
    wrong = copy.deepcopy(proof)
    wrong["left"], wrong["right"] = _side(tree, 0), _side(tree, 1)
    if not (tree.keys[0] < absent < tree.keys[1]):
        with pytest.raises(BadInput):
            check_absent(head, absent, wrong)
    # A neighbour's leaf altered, or moved to another index.
    bad = copy.deepcopy(proof)
    side = bad["left"] or bad["right"]
    side["index"] += 1
    with pytest.raises(BadInput):
        check_absent(head, absent, bad)
    # An absence with no neighbour in a tree that has leaves.
    with pytest.raises(BadInput, match="no neighbour"):
        check_absent(head, absent, {"left": None, "right": None})
    # Membership of the wrong role, or of another subject's key.
    role = subjects[first]
    other = "copy" if role == "primary" else "primary"
    m = tree.prove(member, role)  # type: ignore[arg-type]
    with pytest.raises(BadInput, match="another subject"):
        check_member(head, member, {**m, "role": other})
    with pytest.raises(BadInput, match="another subject"):
        check_member(head, absent, m)


def _side(tree: SubjectTree, j: int) -> dict[str, object]:
    """Leaf ``j`` as a neighbour, with its (genuine) inclusion proof."""
    path = inclusion_proof(j, tree.size, list_subtree(tree.hashes))
    return {"index": j, **tree.leaves[j].to_dict(), "audit_path": [h.hex() for h in path]}


def test_padding_hides_the_count_and_dummies_look_like_subjects() -> None:
    small, _ = tree_of(3)
    bigger, _ = tree_of(9, seed=2)
    assert small.size == bigger.size == MIN_SIZE
    assert tree_of(33)[0].size == 64
    # Rebuilt from the same subjects, the tree is the same (no state to keep).
    assert tree_of(33)[0].root == tree_of(33)[0].root
    # Every leaf is 32 + 32 opaque bytes, dummies included.
    assert all(len(leaf.key) == 32 and len(leaf.role_commit) == 32 for leaf in small.leaves)
