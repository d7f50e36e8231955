"""The vault's invariants (architecture.md), on SQLite sites."""

from __future__ import annotations

import base64
import shutil
import sqlite3
from pathlib import Path

import pytest

from domicile.crypto.errors import DecryptionFailed, KeyDestroyed
from domicile.errors import BadInput
from domicile.stores.base import SiteUnavailable
from domicile.vault import Domicile, NotFound, PolicyRefused

from .conftest import IVAN, make_config, open_vault

RU = {"citizenship": "RU"}


def site_bytes(folder: Path, site: str) -> bytes:
    """Every byte a site keeps on disk: its database file, WAL and shared memory."""
    out = b""
    for p in sorted((folder / "data").glob(f"{site}.sqlite*")):
        out += p.read_bytes()
    return out


def all_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted((folder / "data").rglob("*")) if p.is_file())


def test_russian_citizen_lands_in_russia_and_nowhere_else(vault: Domicile, tmp_path: Path) -> None:
    r = vault.put("profiles", subject=RU, fields=IVAN, purpose="signup")
    assert (r.site, r.country) == ("ru", "RU")
    vault.close()
    for site in ("de", "us"):
        raw = site_bytes(tmp_path, site)
        for value in IVAN.values():
            assert value.encode() not in raw, f"{site} holds a value"
    # (b) the Russian site holds no plaintext either, nor does any other file of the deployment
    everything = all_bytes(tmp_path)
    for value in IVAN.values():
        assert value.encode() not in everything
        assert value.encode("utf-16-le") not in everything


def test_records_go_where_the_law_puts_them(vault: Domicile) -> None:
    def home(subject: dict[str, str]) -> str:
        return vault.put(
            "profiles", subject=subject, fields={"full_name": "A B"}, purpose="signup"
        ).site

    assert home({"citizenship": "US", "residence": "US"}) == "us"  # not covered: the default site
    assert home({"citizenship": "FR", "residence": "FR"}) == "de"  # the EU keeps it inside the EEA
    assert home({"phone": "+7 912 345-67-89"}) == "ru"  # possibly Russian: localize


def test_policy_refusal_writes_nothing_and_is_audited(vault: Domicile, tmp_path: Path) -> None:
    # A Russian citizen living in Germany: Russia wants the data in Russia, the EU does not
    # let it go to Russia without standard clauses. No site may hold it.
    with pytest.raises(PolicyRefused) as caught:
        vault.put(
            "profiles",
            subject={"citizenship": "RU", "residence": "DE"},
            fields=IVAN,
            purpose="signup",
        )
    assert caught.value.exit_code == 3
    assert all(s.records == 0 for s in vault.sites())
    entries = list(vault.store("us").audit())
    assert [e.payload.count('"action":"refuse"') for e in entries] == [1]
    assert IVAN["email"] not in entries[0].payload


def test_read_at_home_and_from_abroad(vault: Domicile) -> None:
    token = vault.put("profiles", subject=RU, fields=IVAN, purpose="signup").token
    home = vault.get(token, purpose="profile_view", as_site="ru")
    assert home.fields == IVAN
    assert not home.transfer
    with pytest.raises(PolicyRefused):
        vault.get(token, purpose="profile_view", as_site="us")  # no Art. 12 notice on record
    actions = [e.payload for e in vault.store("ru").audit()]
    assert '"action":"write"' in actions[0]
    assert '"action":"read"' in actions[1]
    assert '"action":"refuse"' in actions[2]
    assert '"to_country":"US"' in actions[2]


def test_fail_closed_when_the_home_site_is_down(tmp_path: Path) -> None:
    # The Russian site's database path is a directory: SQLite cannot open it.
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "ru.sqlite").mkdir()
    vault = open_vault(make_config(tmp_path))
    with pytest.raises(SiteUnavailable) as caught:
        vault.put("profiles", subject=RU, fields=IVAN, purpose="signup")
    assert caught.value.site == "ru"
    assert caught.value.exit_code == 4
    assert [s.records for s in vault.sites() if s.id != "ru"] == [0, 0]
    refusals = [e.payload for e in vault.store("us").audit()]
    assert len(refusals) == 1
    assert '"reason":"site_unavailable"' in refusals[0]
    vault.close()
    for value in IVAN.values():
        assert value.encode() not in all_bytes(tmp_path)


def test_fail_closed_when_the_home_site_is_read_only(vault: Domicile, tmp_path: Path) -> None:
    vault.put(
        "profiles", subject={"citizenship": "US"}, fields={"full_name": "X"}, purpose="signup"
    )
    vault.store("ru")  # opened and healthy
    conn = sqlite3.connect(tmp_path / "data" / "ru.sqlite")
    conn.execute("BEGIN EXCLUSIVE")  # another process holds the write lock: no writes get through
    try:
        store = vault.store("ru")
        store.conn.execute("PRAGMA busy_timeout = 50")
        with pytest.raises(SiteUnavailable):
            vault.put("profiles", subject=RU, fields=IVAN, purpose="signup")
    finally:
        conn.execute("ROLLBACK")
        conn.close()
    assert [s.records for s in vault.sites()] == [0, 0, 1]


def _swap(path: Path, sql_a: str, sql_b: str) -> None:
    conn = sqlite3.connect(path)
    a = conn.execute(sql_a).fetchone()
    b = conn.execute(sql_b).fetchone()
    conn.execute("UPDATE records SET fields = ? WHERE record_id = ?", (b[1], a[0]))
    conn.execute("UPDATE records SET fields = ? WHERE record_id = ?", (a[1], b[0]))
    conn.commit()
    conn.close()


def test_ciphertext_moved_between_records_does_not_decrypt(vault: Domicile, tmp_path: Path) -> None:
    t1 = vault.put("profiles", subject=RU, fields=IVAN, purpose="signup").token
    t2 = vault.put(
        "profiles", subject=RU, fields={**IVAN, "email": "other@example.ru"}, purpose="signup"
    ).token
    _swap(
        tmp_path / "data" / "ru.sqlite",
        "SELECT record_id, fields FROM records ORDER BY rowid LIMIT 1",
        "SELECT record_id, fields FROM records ORDER BY rowid DESC LIMIT 1",
    )
    for token in (t1, t2):
        with pytest.raises(DecryptionFailed):
            vault.get(token, purpose="profile_view", as_site="ru")


def test_ciphertext_moved_between_fields_does_not_decrypt(vault: Domicile, tmp_path: Path) -> None:
    from domicile.stores.base import pack_fields, unpack_fields

    token = vault.put("profiles", subject=RU, fields=IVAN, purpose="signup").token
    path = tmp_path / "data" / "ru.sqlite"
    conn = sqlite3.connect(path)
    rid, blob = conn.execute("SELECT record_id, fields FROM records").fetchone()
    fields = unpack_fields(blob)
    fields["email"], fields["city"] = fields["city"], fields["email"]
    conn.execute("UPDATE records SET fields = ? WHERE record_id = ?", (pack_fields(fields), rid))
    conn.commit()
    conn.close()
    with pytest.raises(DecryptionFailed):
        vault.get(token, purpose="profile_view", as_site="ru")


def test_erasure_reaches_a_copy_taken_before_it(
    vault: Domicile, config: object, tmp_path: Path
) -> None:
    token = vault.put("profiles", subject=RU, fields=IVAN, purpose="signup").token
    vault.close()
    backup = tmp_path / "backup"
    shutil.copytree(tmp_path / "data", backup)
    vault = open_vault(make_config(tmp_path))
    out = vault.erase(token, purpose="subject_request")
    assert out["records"] == 1
    assert out["key_destroyed"]
    with pytest.raises(NotFound):
        vault.get(token, purpose="profile_view", as_site="ru")
    vault.close()
    # Put the old copy of the Russian site's database back: its rows are there, but the
    # subject's key is gone from the key store, so nothing in it can be opened.
    shutil.copy(backup / "ru.sqlite", tmp_path / "data" / "ru.sqlite")
    for extra in ("ru.sqlite-wal", "ru.sqlite-shm"):
        (tmp_path / "data" / extra).unlink(missing_ok=True)
        if (backup / extra).exists():
            shutil.copy(backup / extra, tmp_path / "data" / extra)
    restored = open_vault(make_config(tmp_path))
    with pytest.raises(KeyDestroyed):
        restored.get(token, purpose="profile_view", as_site="ru")
    restored.close()


def test_same_identifier_is_the_same_subject_and_erasure_takes_all(vault: Domicile) -> None:
    a = vault.put("profiles", subject=RU, fields=IVAN, purpose="signup")
    b = vault.put(
        "profiles",
        subject=RU,
        fields={"full_name": "I. Sidorov", "email": "IVAN.SIDOROV@example.ru"},
        purpose="signup",
    )
    assert a.subject_is_new
    assert not b.subject_is_new
    assert vault.erase(b.token)["records"] == 2
    with pytest.raises(NotFound):
        vault.get(a.token, purpose="x", as_site="ru")


def test_find_by_blind_index(vault: Domicile) -> None:
    vault.put(
        "profiles", subject=RU, fields={**IVAN, "phone": "+7 912 345-67-89"}, purpose="signup"
    )
    found = vault.find("profiles", where={"phone": "+79123456789"}, purpose="lookup", as_site="ru")
    assert [r.fields["email"] for r in found.records] == [IVAN["email"]]
    abroad = vault.find(
        "profiles", where={"email": IVAN["email"].upper()}, purpose="lookup", as_site="us"
    )
    assert abroad.records == []
    assert len(abroad.refused) == 1
    with pytest.raises(BadInput, match="not searchable"):
        vault.find("profiles", where={"city": "Yekaterinburg"}, purpose="lookup")


def test_update_reseals_and_reindexes(vault: Domicile) -> None:
    token = vault.put("profiles", subject=RU, fields=IVAN, purpose="signup").token
    out = vault.update(token, fields={"email": "new@example.ru", "age": 41}, purpose="profile_edit")
    assert out.version == 2
    assert vault.get(token, purpose="x", as_site="ru").fields["age"] == 41
    assert vault.find(
        "profiles", where={"email": "new@example.ru"}, purpose="x", as_site="ru"
    ).records
    assert not vault.find(
        "profiles", where={"email": IVAN["email"]}, purpose="x", as_site="ru"
    ).records


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"full_name": 42}, "must be text"),
        ({"full_name": "A", "shoe_size": "44"}, "has no field 'shoe_size'"),
        ({"full_name": "A" * 201}, "longer than its limit of 200"),
        ({"full_name": "bad \udcff utf-8"}, "not valid UTF-8"),
        ({"full_name": "nul \x00 inside"}, "NUL"),
        ({"full_name": "A", "age": "forty"}, "whole number"),
        ({"email": "a@b.c"}, "required field"),
        ({"full_name": "A", "phone": "not a phone"}, "phone number"),
        ({}, "at least one field"),
    ],
)
def test_malformed_input_is_refused_with_nothing_written(
    vault: Domicile, fields: dict[str, object], words: str
) -> None:
    with pytest.raises(BadInput, match=words):
        vault.put("profiles", subject=RU, fields=fields, purpose="signup")
    assert [s.records for s in vault.sites()] == [0, 0, 0]
    assert not list(vault.store("ru").audit())


def test_one_bad_record_in_a_batch_writes_nothing(vault: Domicile) -> None:
    items = [
        {"subject": RU, "fields": IVAN},
        {"subject": {"citizenship": "US"}, "fields": {"full_name": "Jane"}},
        {"subject": {"citizenship": "US"}, "fields": {"full_name": 7}},
    ]
    with pytest.raises(BadInput, match="record 2: field 'full_name'"):
        vault.put_many("profiles", items, purpose="import")
    assert [s.records for s in vault.sites()] == [0, 0, 0]


def test_batch_put_groups_by_site(vault: Domicile) -> None:
    items = [{"subject": RU, "fields": {"full_name": f"R{i}"}} for i in range(5)]
    items += [
        {"subject": {"citizenship": "US"}, "fields": {"full_name": f"U{i}"}} for i in range(3)
    ]
    results = vault.put_many("profiles", items, purpose="import")
    assert [r.site for r in results] == ["ru"] * 5 + ["us"] * 3
    assert {s.id: s.records for s in vault.sites()} == {"ru": 5, "de": 0, "us": 3}


@pytest.mark.parametrize("purpose", ["", "Has Spaces", "x" * 65, "ivan@example.ru"])
def test_every_call_names_a_well_formed_purpose(vault: Domicile, purpose: str) -> None:
    with pytest.raises(BadInput, match="purpose"):
        vault.put("profiles", subject=RU, fields=IVAN, purpose=purpose)


def test_tokens_are_opaque_and_checked(vault: Domicile) -> None:
    a = vault.put("profiles", subject=RU, fields=IVAN, purpose="signup").token
    b = vault.put("profiles", subject=RU, fields=IVAN, purpose="signup").token
    assert a != b
    rid = vault.tokens.read(a)[1]
    body = a.removeprefix("dom1_")
    sealed = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    assert bytes.fromhex(rid) not in sealed  # the record id travels only encrypted
    assert rid not in a
    with pytest.raises(BadInput, match="not a valid domicile token"):
        vault.get(a[:-2] + ("A" if a[-2] != "A" else "B") + a[-1], purpose="x")
    with pytest.raises(BadInput):
        vault.get("hello", purpose="x")


def test_key_rotation_keeps_data_readable(vault: Domicile) -> None:
    token = vault.put("profiles", subject=RU, fields=IVAN, purpose="signup").token
    out = vault.rotate_key("ru")
    assert (out["from_version"], out["to_version"], out["rewrapped"]) == (1, 2, 1)
    assert out["retired"] == [1]
    vault._deks.clear()  # force an unwrap with the new key
    assert vault.get(token, purpose="x", as_site="ru").fields == IVAN
    token2 = vault.put(
        "profiles", subject={"citizenship": "RU"}, fields={"full_name": "New"}, purpose="signup"
    ).token
    assert vault.keystore("ru").versions() == {2: 2}
    assert vault.get(token2, purpose="x", as_site="ru").fields["full_name"] == "New"


def test_audit_entries_hold_no_plaintext(vault: Domicile) -> None:
    token = vault.put("profiles", subject=RU, fields=IVAN, purpose="signup").token
    vault.get(token, purpose="view", as_site="ru")
    vault.update(token, fields={"city": "Kazan"}, purpose="edit")
    text = "".join(e.payload for e in vault.store("ru").audit())
    for value in [*IVAN.values(), "Kazan"]:
        assert value not in text
    assert "ru.localization.2025" in text
