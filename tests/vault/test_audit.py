"""Tampering with a site's audit ledger is detected and the first bad entry named, on
SQLite and on PostgreSQL."""

from __future__ import annotations

import json

import pytest

from domicile.audit.ledger import CHECKPOINT_EVERY, entry_hash
from domicile.vault import Domicile

from .conftest import IVAN, Deployment


@pytest.fixture
def ledger(deployment: Deployment) -> Deployment:
    """Five entries at the Russian site, then a signed checkpoint of entry 5."""
    vault = deployment.open()
    token = vault.put(
        "profiles", subject={"citizenship": "RU"}, fields=IVAN, purpose="signup"
    ).token
    for _ in range(3):
        vault.get(token, purpose="view", as_site="ru")
    vault.update(token, fields={"city": "Kazan"}, purpose="edit")
    vault.close()  # signs a checkpoint of the head
    deployment.drop_audit_guard("ru")  # the attacker can do this much
    return deployment


def verify(deployment: Deployment) -> dict[str, object]:
    vault = deployment.open()
    try:
        return vault.verify_audit("ru")[0].to_dict()
    finally:
        vault.close(checkpoint=False)  # no new checkpoint over the tampering


def test_untouched_chain_verifies(ledger: Deployment) -> None:
    report = verify(ledger)
    assert report["ok"] is True
    assert report["entries"] == 5
    assert report["checkpoints"] == 1


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
    bad = report["first_bad"]
    assert isinstance(bad, dict)
    assert bad["seq"] == seq
    assert words in bad["problem"]


def test_cutting_entries_off_the_end_is_detected(ledger: Deployment) -> None:
    ledger.execute("ru", "DELETE FROM audit WHERE seq >= 4")
    report = verify(ledger)
    assert report["ok"] is False
    assert "were removed" in json.dumps(report["first_bad"])


def test_rewriting_the_whole_chain_is_caught_by_the_anchor(ledger: Deployment) -> None:
    # With the database in hand, an attacker recomputes every hash and drops the checkpoints;
    # the anchor file beside the data (and its signature) still tells.
    rows = ledger.execute("ru", "SELECT seq, payload FROM audit ORDER BY seq")
    prev = b""
    for seq, payload in rows:
        payload = payload.replace('"view"', '"marketing"')
        digest = entry_hash(prev, seq, payload)
        ledger.execute(
            "ru",
            "UPDATE audit SET payload = ?, prev_hash = ?, hash = ? WHERE seq = ?",
            params=(payload, prev, digest, seq),
        )
        prev = digest
    ledger.execute("ru", "DELETE FROM checkpoints")
    report = verify(ledger)
    assert report["ok"] is False
    assert "anchor" in json.dumps(report["first_bad"])


def test_a_forged_checkpoint_signature_is_detected(ledger: Deployment) -> None:
    ledger.execute("ru", "UPDATE checkpoints SET signature = ?", params=(bytes(64),))
    report = verify(ledger)
    assert report["ok"] is False
    assert "bad signature" in json.dumps(report["problems"])


def test_checkpoints_are_signed_every_thousand_entries(vault: Domicile) -> None:
    items = [
        {"subject": {"citizenship": "US"}, "fields": {"full_name": f"P{i}"}}
        for i in range(CHECKPOINT_EVERY + 5)
    ]
    vault.put_many("profiles", items, purpose="import")
    assert [c.seq for c in vault.store("us").checkpoints()] == [CHECKPOINT_EVERY + 5]
    assert vault.verify_audit("us")[0].ok
