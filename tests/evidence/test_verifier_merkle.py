"""The shipped checker carries its own copy of RFC 9162 verification (it may import
nothing of domicile); it must agree with ``domicile.audit.merkle`` on every proof, good
and bad, and with the log's entry hash and head message."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from domicile.audit import merkle
from domicile.audit.heads import head_message
from domicile.evidence import verifier
from domicile.stores.base import entry_hash


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 70), st.data())
def test_proofs_agree_with_the_log(size: int, data: st.DataObject) -> None:
    leaves = [merkle.leaf_hash(bytes([i % 256, i // 256])) for i in range(size)]
    subtree = merkle.list_subtree(leaves)
    root = merkle.root_of(leaves)
    index = data.draw(st.integers(0, size - 1))
    path = merkle.inclusion_proof(index, size, subtree)
    flip = data.draw(st.booleans())
    if flip and path:
        path[0] = bytes([path[0][0] ^ 1]) + path[0][1:]
    assert verifier.verify_inclusion(leaves[index], index, size, path, root) == (
        merkle.verify_inclusion(leaves[index], index, size, path, root)
    )
    assert verifier.verify_inclusion(leaves[index], index, size, path, root) is not (
        flip and bool(path)
    )
    size1 = data.draw(st.integers(1, size))
    root1 = merkle.root_of(leaves[:size1])
    proof = merkle.consistency_proof(size1, size, subtree)
    if flip and proof:
        proof[-1] = bytes([proof[-1][0] ^ 1]) + proof[-1][1:]
    assert verifier.verify_consistency(size1, size, root1, root, proof) == (
        merkle.verify_consistency(size1, size, root1, root, proof)
    )


def test_entry_hash_and_head_message_are_the_logs() -> None:
    assert verifier.entry_hash(b"\x01" * 32, 7, '{"a":"é"}') == entry_hash(
        b"\x01" * 32, 7, '{"a":"é"}'
    )
    assert verifier.head_message("ru", 9, b"\x02" * 32, "t") == head_message(
        "ru", 9, b"\x02" * 32, "t"
    )
