"""Tampering with a site's audit ledger is detected, and the first bad entry named."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from domicile.audit.ledger import CHECKPOINT_EVERY
from domicile.config import Config
from domicile.vault import Domicile

from .conftest import IVAN, open_vault


@pytest.fixture
def ledger(vault: Domicile, config: Config, tmp_path: Path) -> Path:
    """Five entries at the Russian site, then a signed checkpoint at entry 5."""
    token = vault.put(
        "profiles", subject={"citizenship": "RU"}, fields=IVAN, purpose="signup"
    ).token
    for _ in range(3):
        vault.get(token, purpose="view", as_site="ru")
    vault.update(token, fields={"city": "Kazan"}, purpose="edit")
    vault.close()  # signs a checkpoint of the head
    return tmp_path / "data" / "ru.sqlite"


def tamper(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path)
    conn.execute("DROP TRIGGER IF EXISTS audit_append_only_update")
    conn.execute("DROP TRIGGER IF EXISTS audit_append_only_delete")
    for sql in statements:
        conn.execute(sql)
    conn.commit()
    conn.close()


def verify(config: Config) -> dict[str, object]:
    vault = open_vault(config)
    try:
        report = vault.verify_audit("ru")[0].to_dict()
    finally:
        vault._stores.clear()  # do not sign a new checkpoint over the tampered chain
        vault.close()
    return report


def test_untouched_chain_verifies(ledger: Path, config: Config) -> None:
    report = verify(config)
    assert report["ok"] is True
    assert report["entries"] == 5
    assert report["checkpoints"] >= 1


@pytest.mark.parametrize(
    ("statements", "seq", "words"),
    [
        (
            [
                "UPDATE audit SET payload = replace(payload, '\"view\"', '\"marketing\"') WHERE seq = 3"
            ],
            3,
            "edited",
        ),
        (["DELETE FROM audit WHERE seq = 2"], 2, "missing (deleted)"),
        # Swap two entries' contents (reordering), keeping their sequence numbers.
        (
            [
                "UPDATE audit SET seq = -3 WHERE seq = 3",
                "UPDATE audit SET seq = 3 WHERE seq = 4",
                "UPDATE audit SET seq = 4 WHERE seq = -3",
            ],
            3,
            "does not follow",
        ),
        # An inserted entry with a plausible-looking hash.
        # An inserted entry: later ones move up one place (through negative numbers, as the
        # primary key allows no overlap), and a forged entry takes number 3.
        (
            [
                "UPDATE audit SET seq = -seq WHERE seq >= 3",
                "UPDATE audit SET seq = -seq + 1 WHERE seq < 0",
                "INSERT INTO audit VALUES (3, '{\"action\":\"read\"}', x'00', x'00')",
            ],
            3,
            "does not follow",
        ),
    ],
)
def test_tampering_is_detected_at_the_first_bad_entry(
    ledger: Path, config: Config, statements: list[str], seq: int, words: str
) -> None:
    tamper(ledger, *statements)
    report = verify(config)
    assert report["ok"] is False
    bad = report["first_bad"]
    assert isinstance(bad, dict)
    assert bad["seq"] == seq
    assert words in bad["problem"]


def test_cutting_entries_off_the_end_is_detected(ledger: Path, config: Config) -> None:
    tamper(ledger, "DELETE FROM audit WHERE seq >= 4")
    report = verify(config)
    assert report["ok"] is False
    assert "were removed" in json.dumps(report["first_bad"])


def test_rewriting_the_whole_chain_is_caught_by_the_anchor(ledger: Path, config: Config) -> None:
    # An attacker with the database rewrites every hash consistently and drops checkpoints,
    # but cannot touch the anchor file kept beside the data (or forge its signature).
    from domicile.audit.ledger import entry_hash

    conn = sqlite3.connect(ledger)
    conn.execute("DROP TRIGGER audit_append_only_update")
    rows = conn.execute("SELECT seq, payload FROM audit ORDER BY seq").fetchall()
    prev = b""
    for seq, payload in rows:
        payload = payload.replace('"view"', '"marketing"')
        digest = entry_hash(prev, seq, payload)
        conn.execute(
            "UPDATE audit SET payload = ?, prev_hash = ?, hash = ? WHERE seq = ?",
            (payload, prev, digest, seq),
        )
        prev = digest
    conn.execute("DELETE FROM checkpoints")
    conn.commit()
    conn.close()
    report = verify(config)
    assert report["ok"] is False
    assert "anchor" in json.dumps(report["first_bad"])


def test_a_forged_checkpoint_signature_is_detected(ledger: Path, config: Config) -> None:
    tamper(ledger, "UPDATE checkpoints SET signature = zeroblob(64)")
    report = verify(config)
    assert report["ok"] is False
    assert "bad signature" in json.dumps(report["problems"])


def test_database_refuses_to_change_the_ledger(ledger: Path) -> None:
    conn = sqlite3.connect(ledger)
    for sql in ("UPDATE audit SET payload = 'x'", "DELETE FROM audit"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute(sql)
    conn.close()


def test_checkpoints_are_signed_every_thousand_entries(vault: Domicile) -> None:
    items = [
        {"subject": {"citizenship": "US"}, "fields": {"full_name": f"P{i}"}}
        for i in range(CHECKPOINT_EVERY + 5)
    ]
    vault.put_many("profiles", items, purpose="import")
    assert [c.seq for c in vault.store("us").checkpoints()] == [CHECKPOINT_EVERY + 5]
    assert vault.verify_audit("us")[0].ok
