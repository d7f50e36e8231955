"""A site's audit log is a hash chain and a Merkle tree with signed heads that the other
sites witness. Tampering is detected and located, verification writes nothing, and single
entries can be proved to a third party; on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

import pytest

from domicile.audit.heads import HeadsFile, check_proof, parse_public_key
from domicile.audit.ledger import HEAD_EVERY, LogTree
from domicile.audit.merkle import root_of
from domicile.errors import BadInput
from domicile.stores.base import entry_hash
from domicile.vault import Domicile

from .conftest import IVAN, Deployment


@pytest.fixture
def ledger(deployment: Deployment) -> Deployment:
    """Five entries at the Russian site (a write, two reads, an update and the read of its
    answer), signed and witnessed by Germany and the US."""
    vault = deployment.open()
    token = vault.put(
        "profiles", subject={"citizenship": "RU"}, fields=IVAN, purpose="signup"
    ).token
    for _ in range(2):
        vault.get(token, purpose="view", as_site="ru")
    vault.update(token, fields={"city": "Kazan"}, purpose="edit", as_site="ru")
    vault.close()  # a witness round: ru's head of 5 entries, recorded by de and us
    for site in ("ru", "de", "us"):
        deployment.drop_audit_guard(site)  # the attacker can do this much
    return deployment


def verify(deployment: Deployment, site: str = "ru", **kwargs: Any) -> dict[str, Any]:
    vault = deployment.open()
    try:
        report: dict[str, Any] = vault.verify_audit(site, **kwargs)[0].to_dict()
        return report
    finally:
        vault.close()


def rewrite(deployment: Deployment, site: str, change: Any) -> None:
    """What an attacker with the site's database can do: change payloads and recompute
    every hash after them, so the chain alone looks whole."""
    rows = deployment.execute(site, "SELECT seq, payload FROM audit ORDER BY seq")
    prev = b""
    for seq, payload in rows:
        payload = change(seq, payload)
        digest = entry_hash(prev, seq, payload)
        deployment.execute(
            site,
            "UPDATE audit SET payload = ?, prev_hash = ?, hash = ? WHERE seq = ?",
            params=(payload, prev, digest, seq),
        )
        prev = digest
    if deployment.backend == "postgresql":  # where the next entry chains from
        deployment.execute(site, "UPDATE audit_head SET hash = ? WHERE id = 1", params=(prev,))


def test_untouched_log_verifies_against_its_witnesses(ledger: Deployment) -> None:
    report = verify(ledger)
    assert report["ok"] is True
    assert report["status"] == "verified"
    assert report["entries"] == 5
    assert report["witnessed"] == 5
    assert report["unwitnessed"] == 0
    assert report["witnesses"] == ["de", "us"]


TAMPERING = {
    "edited": (
        ["UPDATE audit SET payload = replace(payload, '\"view\"', '\"marketing\"') WHERE seq = 3"],
        3,
        "edited",
    ),
    "deleted": (["DELETE FROM audit WHERE seq = 2"], 2, "missing (deleted)"),
    # Two entries swap places (their contents move, their numbers stay).
    "reordered": (
        [
            "UPDATE audit SET seq = -3 WHERE seq = 3",
            "UPDATE audit SET seq = 3 WHERE seq = 4",
            "UPDATE audit SET seq = 4 WHERE seq = -3",
        ],
        3,
        "does not follow",
    ),
    # A forged entry slipped in at 3; later ones move up (through negative numbers, as the
    # primary key allows no overlap while renumbering).
    "inserted": (
        [
            "UPDATE audit SET seq = -seq WHERE seq >= 3",
            "UPDATE audit SET seq = -seq + 1 WHERE seq < 0",
            'INSERT INTO audit (seq, payload, prev_hash, hash) VALUES (3, \'{"action":"read"}\', ?, ?)',
        ],
        3,
        "does not follow",
    ),
}


@pytest.mark.parametrize("kind", list(TAMPERING))
def test_tampering_is_detected_at_the_first_bad_entry(ledger: Deployment, kind: str) -> None:
    statements, seq, words = TAMPERING[kind]
    params = (b"\x00", b"\x00") if kind == "inserted" else ()
    ledger.execute("ru", *statements, params=params)
    report = verify(ledger)
    assert report["ok"] is False
    assert report["status"] == "tampered"
    assert report["first_bad"]["seq"] == seq
    assert words in report["first_bad"]["problem"]


def test_cutting_entries_off_the_end_is_caught_by_the_witnesses(ledger: Deployment) -> None:
    ledger.execute("ru", "DELETE FROM audit WHERE seq >= 4", "DELETE FROM tree_heads")
    report = verify(ledger)
    assert report["ok"] is False
    assert report["first_bad"]["seq"] == 4
    assert "entries 4 to 5 were removed" in report["first_bad"]["problem"]
    assert "witnessed by" in report["first_bad"]["problem"]


def test_rewriting_the_whole_chain_is_caught_by_the_witnesses(ledger: Deployment) -> None:
    # The attacker recomputes every hash and drops the site's own heads: the chain alone
    # looks whole, but de and us hold heads that commit to the old entries.
    rewrite(ledger, "ru", lambda seq, p: p.replace('"view"', '"marketing"') if seq == 3 else p)
    ledger.execute("ru", "DELETE FROM tree_heads", "DELETE FROM tree_nodes")
    report = verify(ledger)
    assert report["ok"] is False
    bad = report["first_bad"]
    assert (bad["seq"], bad["until"]) == (1, 5)  # the rewritten entry 3 is in the range
    assert "the log was rewritten" in bad["problem"]
    assert "witnessed by" in bad["problem"]


def test_a_forged_head_signature_is_detected(ledger: Deployment) -> None:
    ledger.execute("ru", "UPDATE tree_heads SET signature = ?", params=(bytes(64),))
    report = verify(ledger)
    assert report["ok"] is False
    assert "bad signature" in json.dumps(report["problems"])


def test_verification_writes_nothing(ledger: Deployment) -> None:
    vault = ledger.open()
    token = vault.put("profiles", subject={"citizenship": "RU"}, fields=IVAN, purpose="x").token
    vault.get(token, purpose="view", as_site="ru")
    vault.close(checkpoint=False)  # two entries nobody has witnessed yet
    before = {name: ledger.dump(name) for name in ledger.urls}
    files = {
        p: p.read_bytes()
        for p in ledger.folder.rglob("*")
        if p.is_file() and ".sqlite" not in p.name
    }
    for _ in range(2):
        report = verify(ledger)
        assert report["ok"] is True
        assert report["status"] == "partly witnessed"
        assert (report["witnessed"], report["unwitnessed"]) == (5, 2)
    vault = ledger.open()
    vault.audit_heads()
    vault.prove_entry("ru", 2)
    vault.close()
    assert {name: ledger.dump(name) for name in ledger.urls} == before
    assert {
        p: p.read_bytes()
        for p in ledger.folder.rglob("*")
        if p.is_file() and ".sqlite" not in p.name
    } == files


def test_a_witness_refuses_a_head_that_does_not_extend_what_it_holds(ledger: Deployment) -> None:
    rewrite(ledger, "ru", lambda seq, p: p.replace('"edit"', '"marketing"') if seq == 5 else p)
    ledger.execute("ru", "DELETE FROM tree_heads", "DELETE FROM tree_nodes")
    vault = ledger.open()
    done = vault.witness()  # ru signs a head of its rewritten log; de and us check it
    vault.close(checkpoint=False)
    refused = {(r.witness, r.site) for r in done.refused}
    assert refused == {("de", "ru"), ("us", "ru")}
    assert all(
        "does not extend" in (r.reason or "") or "differs" in (r.reason or "") for r in done.refused
    )
    # The refusal is evidence in the witnesses' own logs, and the rewrite still shows.
    vault = ledger.open()
    assert any('"refused"' in row.payload for row in vault.store("de").audit())
    vault.close()
    assert verify(ledger)["ok"] is False


def test_entries_after_the_newest_witnessed_head_are_reported_as_unwitnessed(
    ledger: Deployment,
) -> None:
    vault = ledger.open()
    token = vault.put("profiles", subject={"citizenship": "RU"}, fields=IVAN, purpose="x").token
    vault.close(checkpoint=False)
    report = verify(ledger)
    assert (report["status"], report["witnessed"], report["unwitnessed"]) == (
        "partly witnessed", 5, 1,
    )  # fmt: skip
    # An attacker may even edit those (recomputing hashes): nobody holds a head of them,
    # so verify cannot call them verified; it says they are not witnessed.
    rewrite(ledger, "ru", lambda seq, p: p.replace('"x"', '"y"') if seq == 6 else p)
    assert verify(ledger)["status"] == "partly witnessed"
    vault = ledger.open()
    vault.get(token, purpose="view", as_site="ru")
    vault.close()  # a witness round
    report = verify(ledger)
    assert (report["status"], report["unwitnessed"]) == ("verified", 0)


def test_the_heads_file_catches_what_every_witness_lost(ledger: Deployment) -> None:
    vault = ledger.open()
    heads = vault.audit_heads()
    vault.close()
    path = ledger.folder / "heads.json"
    path.write_text(json.dumps(heads.to_dict()))
    # An attacker who holds every site's database rewrites ru and drops every witness record.
    rewrite(ledger, "ru", lambda seq, p: p.replace('"view"', '"marketing"') if seq == 2 else p)
    for site in ("ru", "de", "us"):
        ledger.execute(site, "DELETE FROM tree_heads", "DELETE FROM witnessed")
    assert verify(ledger)["status"] == "not witnessed"
    report = verify(ledger, heads=str(path))
    assert report["ok"] is False
    assert "in the heads file" in report["first_bad"]["problem"]
    assert report["first_bad"]["until"] == 5


def test_a_replaced_signing_key_does_not_match_the_heads_file(ledger: Deployment) -> None:
    vault = ledger.open()
    data = vault.audit_heads().to_dict()
    vault.close()
    data["sites"]["ru"]["public_key"] = data["sites"]["de"]["public_key"]
    path = ledger.folder / "heads.json"
    path.write_text(json.dumps(data))
    report = verify(ledger, heads=str(path))
    assert report["ok"] is False
    assert "not the one in the heads file" in json.dumps(report["problems"])
    assert HeadsFile.load(path).keys["ru"] == data["sites"]["ru"]["public_key"]


def test_an_entry_is_proved_with_the_public_key_alone(ledger: Deployment) -> None:
    vault = ledger.open()
    proof = vault.prove_entry("ru", 3)
    keys = vault.audit_heads().keys
    key, other = keys["ru"], keys["de"]
    with pytest.raises(BadInput, match="not covered by a signed tree head"):
        vault.prove_entry("ru", 99)
    vault.close()
    head = check_proof(json.loads(json.dumps(proof)), parse_public_key(key))
    assert (head.site, head.size, proof["entry"]["seq"]) == ("ru", 5, 3)
    assert '"view"' in proof["entry"]["payload"]
    forged = json.loads(json.dumps(proof))
    forged["entry"]["payload"] = forged["entry"]["payload"].replace('"view"', '"marketing"')
    with pytest.raises(BadInput, match="not in the signed tree"):
        check_proof(forged, parse_public_key(key))
    with pytest.raises(BadInput, match="signature"):
        check_proof(proof, parse_public_key(other))
    for seq in (0, -1, 6, 2**70):  # outside the tree: named, never an internal error
        bad = json.loads(json.dumps(proof))
        bad["entry"]["seq"] = seq
        with pytest.raises(BadInput, match="outside the signed tree"):
            check_proof(bad, parse_public_key(key))


def test_heads_are_signed_as_the_log_grows_and_proofs_use_the_kept_subtrees(
    vault: Domicile,
) -> None:
    # A write of a batch is one entry; every read is one: 1 + 1299 entries.
    token = vault.put("profiles", subject={"citizenship": "US"}, fields=IVAN, purpose="x").token
    for _ in range(HEAD_EVERY + 299):
        vault.get(token, purpose="view")
    store = vault.store("us")
    assert [h.size for h in store.heads()] == [HEAD_EVERY]
    vault.witness()  # and one head at the end of the log
    assert [h.size for h in store.heads()] == [HEAD_EVERY, HEAD_EVERY + 300]
    # The complete subtrees of 256 entries and more were kept; a proof built from them is
    # the proof built from the entries themselves.
    assert store.tree_nodes([(8, 0), (9, 1), (10, 0)]).keys() == {(8, 0), (9, 1), (10, 0)}
    ledger = vault.ledger("us")
    for size1, size2 in ((1, HEAD_EVERY + 300), (300, 1200), (512, 1024), (777, 1299)):
        assert ledger.consistency(store, size1, size2) == ledger.consistency(
            store, size1, size2, use_nodes=False
        )
    leaves = [LogTree(store, use_nodes=False).subtree(i, i + 1) for i in range(HEAD_EVERY + 300)]
    assert store.heads()[-1].root == root_of(leaves)
    assert vault.verify_audit("us")[0].ok
