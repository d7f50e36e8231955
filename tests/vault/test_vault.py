"""The vault's invariants (architecture.md) on SQLite and PostgreSQL sites, and its behaviour."""

from __future__ import annotations

import base64
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from domicile.config import Config
from domicile.crypto.envelope import key_context, new_data_key
from domicile.crypto.errors import DecryptionFailed, KeyDestroyed
from domicile.crypto.keys import REFRESH, LocalKeyring
from domicile.errors import BadInput
from domicile.stores.base import SiteUnavailable
from domicile.stores.keystore import WrappedKey
from domicile.vault import Domicile, NotFound, PolicyRefused

from .conftest import IVAN, Deployment, open_vault, sqlite_urls

RU = {"citizenship": "RU"}


# --- the invariants, on SQLite and on PostgreSQL ------------------------------------------


def test_russian_citizen_lands_in_russia_and_nowhere_else(deployment: Deployment) -> None:
    vault = deployment.open()
    r = vault.put("profiles", subject=RU, fields=IVAN, purpose="signup")
    assert (r.site, r.country) == ("ru", "RU")
    vault.close()
    # (a) nothing of the record at the other sites, in their data or key stores
    for name in ("de", "us", "de_keys", "us_keys"):
        raw = deployment.raw(name)
        for value in IVAN.values():
            assert value.encode() not in raw, f"{name} holds a value"
    # (b) no plaintext at the Russian site either, nor anywhere in the deployment
    everything = deployment.everything()
    assert len(everything) > 1000
    for value in IVAN.values():
        assert value.encode() not in everything
        assert value.encode("utf-16-le") not in everything


def test_fail_closed_when_the_home_site_is_down(deployment: Deployment) -> None:
    vault = deployment.open()
    vault.put(
        "profiles",
        subject={"citizenship": "US"},
        fields={"full_name": "Jane Roe"},
        purpose="signup",
    )
    assert all(s.healthy for s in vault.sites())  # every site connected and answering
    deployment.stop("ru")  # for PostgreSQL: the Russian server itself goes down
    with pytest.raises(SiteUnavailable) as caught:
        vault.put("profiles", subject=RU, fields=IVAN, purpose="signup")
    assert caught.value.site == "ru"
    assert caught.value.exit_code == 4
    status = {s.id: s for s in vault.sites()}
    assert not status["ru"].healthy
    assert (status["de"].records, status["us"].records) == (0, 1)
    # The refusal is audited where the request arrived (local_site: us), without values.
    entries = [e.payload for e in vault.store("us").audit()]
    assert '"reason":"site_unavailable"' in entries[-1]
    assert '"home_site":"ru"' in entries[-1]
    for name in ("de", "us"):
        after = deployment.raw(name)
        for value in IVAN.values():
            assert value.encode() not in after
    assert deployment.execute("de", "SELECT count(*) FROM audit") == [(0,)]
    # Back up: the same write now goes through, to Russia.
    deployment.start("ru")
    assert vault.put("profiles", subject=RU, fields=IVAN, purpose="signup").site == "ru"
    vault.close()


def test_fail_closed_when_the_home_site_is_read_only(deployment: Deployment) -> None:
    vault = deployment.open()
    vault.put(
        "profiles", subject={"citizenship": "US"}, fields={"full_name": "X"}, purpose="signup"
    )
    vault.sites()
    if deployment.backend == "sqlite":
        blocker = sqlite3.connect(deployment.url("ru").removeprefix("sqlite:"))
        blocker.execute("BEGIN EXCLUSIVE")  # another process holds the only write lock
        vault.store("ru").conn.execute("PRAGMA busy_timeout = 50")  # type: ignore[attr-defined]
    else:
        deployment.execute("ru", "ALTER DATABASE ru SET default_transaction_read_only = on")
        vault.close()
        vault = deployment.open()
    try:
        with pytest.raises(SiteUnavailable) as caught:
            vault.put("profiles", subject=RU, fields=IVAN, purpose="signup")
        assert caught.value.site == "ru"
    finally:
        if deployment.backend == "sqlite":
            blocker.execute("ROLLBACK")
            blocker.close()
    assert [s.records for s in vault.sites()] == [0, 0, 1]
    vault.close()


def test_ciphertext_moved_between_records_or_fields_does_not_decrypt(
    deployment: Deployment,
) -> None:
    vault = deployment.open()
    t1 = vault.put("profiles", subject=RU, fields=IVAN, purpose="signup").token
    t2 = vault.put(
        "profiles", subject=RU, fields={**IVAN, "email": "other@example.ru"}, purpose="signup"
    ).token
    t3 = vault.put(
        "profiles", subject=RU, fields={**IVAN, "email": "third@example.ru"}, purpose="signup"
    ).token
    rid = {t: vault.tokens.read(t)[1] for t in (t1, t2, t3)}
    blobs = {
        t: deployment.execute(
            "ru", "SELECT fields FROM records WHERE record_id = ?", params=(rid[t],)
        )[0][0]
        for t in (t1, t2, t3)
    }
    # Swap the whole sealed payloads of records 1 and 2.
    for a, b in ((t1, t2), (t2, t1)):
        deployment.execute(
            "ru",
            "UPDATE records SET fields = ? WHERE record_id = ?",
            params=(bytes(blobs[b]), rid[a]),
        )
    # Record 3: its header names the fields in another order (the ciphertext untouched).
    body = bytes(blobs[t3])
    end = 3 + int.from_bytes(body[1:3], "big")
    names = body[3:end].split(b"\x00")
    swapped = body[:3] + b"\x00".join(reversed(names)) + body[end:]
    assert len(swapped) == len(body)
    deployment.execute(
        "ru", "UPDATE records SET fields = ? WHERE record_id = ?", params=(swapped, rid[t3])
    )
    # Record 4: the body stays, its version in the clear moves on.
    t4 = vault.put(
        "profiles", subject=RU, fields={**IVAN, "email": "fourth@example.ru"}, purpose="signup"
    ).token
    deployment.execute(
        "ru",
        "UPDATE records SET version = version + 1 WHERE record_id = ?",
        params=(vault.tokens.read(t4)[1],),
    )
    vault.close()
    vault = deployment.open()
    for token in (t1, t2, t3, t4):
        with pytest.raises(DecryptionFailed):
            vault.get(token, purpose="profile_view", as_site="ru")
    vault.close()


def test_erasure_reaches_a_copy_taken_before_it(deployment: Deployment) -> None:
    vault = deployment.open()
    token = vault.put("profiles", subject=RU, fields=IVAN, purpose="signup").token
    assert vault.get(token, purpose="view", as_site="ru").fields == IVAN
    vault.close()
    restore = deployment.snapshot("ru")  # a backup of the Russian site's data store
    vault = deployment.open()
    out = vault.erase(token, purpose="subject_request")
    assert out["records"] == 1
    assert out["key_destroyed"]
    with pytest.raises(NotFound):
        vault.get(token, purpose="profile_view", as_site="ru")
    vault.close()
    # Restore the old copy: its rows are back, but the subject's key is gone from the key
    # store, which lives apart from the data, so nothing in the copy can be opened.
    restore()
    restored = deployment.open()
    with pytest.raises(KeyDestroyed):
        restored.get(token, purpose="profile_view", as_site="ru")
    restored.close()


BAD_FIELDS: list[tuple[dict[str, object], str]] = [
    ({"full_name": 42}, "must be text"),
    ({"full_name": "A", "shoe_size": "44"}, "has no such field"),
    ({"full_name": "A" * 201}, "longer than its limit of 200"),
    ({"full_name": "bad \udcff utf-8"}, "not valid UTF-8"),
    ({"full_name": "nul \x00 inside"}, "NUL"),
    ({"full_name": "A", "age": "forty"}, "whole number"),
    ({"full_name": "A", "age": True}, "whole number"),
    ({"email": "a@b.c"}, "required field"),
    ({"full_name": "A", "phone": "not a phone"}, "phone number"),
    ({}, "at least one field"),
]


def test_malformed_input_is_refused_with_nothing_written(deployment: Deployment) -> None:
    vault = deployment.open()
    for fields, words in BAD_FIELDS:
        with pytest.raises(BadInput, match=words):
            vault.put("profiles", subject=RU, fields=fields, purpose="signup")
    batch = [{"subject": RU, "fields": IVAN}, {"subject": RU, "fields": {"full_name": 7}}]
    with pytest.raises(BadInput, match="record 1: field 'full_name'"):
        vault.put_many("profiles", batch, purpose="import")
    assert [s.records for s in vault.sites()] == [0, 0, 0]
    assert not list(vault.store("ru").audit())
    vault.close()
    for value in IVAN.values():
        assert value.encode() not in deployment.everything()


# --- behaviour (SQLite) --------------------------------------------------------------------


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
    # No Art. 12 notice on record: only the masked forms the Russian pack permits.
    abroad = vault.get(token, purpose="profile_view", as_site="us")
    assert abroad.masked
    assert abroad.fields == {"full_name": "I. P. S.", "email": "*@example.ru"}
    vault.add_filing("ru.transfer_ban.US", "2025-01-01")  # and after a ban, nothing
    with pytest.raises(PolicyRefused):
        vault.get(token, purpose="profile_view", as_site="us")
    actions = [e.payload for e in vault.store("ru").audit()]
    assert '"action":"write"' in actions[0]
    assert '"action":"read"' in actions[1]
    # A masked disclosure is recorded as what it is, with the mask applied to each field.
    assert '"action":"disclose_masked"' in actions[2]
    assert '"masks":{"email":"domain","full_name":"initials"}' in actions[2]
    assert not abroad.transfer
    assert '"action":"refuse"' in actions[3]
    assert '"to_country":"US"' in actions[3]


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
    assert [(r.masked, r.fields) for r in abroad.records] == [
        (True, {"full_name": "I. P. S.", "email": "*@example.ru"})
    ]
    vault.add_filing("ru.transfer_ban.US", "2025-01-01")
    banned = vault.find("profiles", where={"email": IVAN["email"]}, purpose="lookup", as_site="us")
    assert banned.records == []
    assert len(banned.refused) == 1
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


def test_batch_put_groups_by_site(vault: Domicile) -> None:
    items = [{"subject": RU, "fields": {"full_name": f"R{i}"}} for i in range(5)]
    items += [
        {"subject": {"citizenship": "US"}, "fields": {"full_name": f"U{i}"}} for i in range(3)
    ]
    results = vault.put_many("profiles", items, purpose="import")
    assert [r.site for r in results] == ["ru"] * 5 + ["us"] * 3
    assert {s.id: s.records for s in vault.sites()} == {"ru": 5, "de": 0, "us": 3}


def test_a_batch_whose_one_home_fails_leaves_each_site_whole(tmp_path: Path) -> None:
    """The homes of a batch are written side by side: one failing (here a trigger an
    operator left on Russia's records) fails the call with its error, writes nothing of
    its records, and every other home keeps its records with their audit entry."""
    deployment = Deployment("sqlite", tmp_path, sqlite_urls(), None)
    deployment.execute(
        "ru",
        "CREATE TRIGGER refuse BEFORE INSERT ON records BEGIN SELECT RAISE(ABORT, 'refused'); END",
    )
    vault = deployment.open()
    try:
        items = [{"subject": RU, "fields": {"full_name": f"R{i}"}} for i in range(4)]
        items += [
            {"subject": {"citizenship": "US"}, "fields": {"full_name": f"U{i}"}} for i in range(3)
        ]
        with pytest.raises(sqlite3.IntegrityError, match="refused"):
            vault.put_many("profiles", items, purpose="import")
        assert {s.id: s.records for s in vault.sites()} == {"ru": 0, "de": 0, "us": 3}
        written = [
            json.loads(p)
            for (p,) in deployment.execute("us", "SELECT payload FROM audit")
            if json.loads(p)["action"] == "write"
        ]
        assert len(written) == 1
        assert len(written[0]["records"]) == 3
        assert deployment.execute("ru", "SELECT count(*) FROM audit")[0][0] == 0
        assert deployment.execute("ru", "SELECT count(*) FROM digests")[0][0] == 0
    finally:
        vault.close()


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
    out = vault.rotate_key("ru", grace=0)
    assert (out["from_version"], out["to_version"], out["rewrapped"]) == (1, 2, 1)
    assert out["retired"] == [1]
    vault._deks.clear()  # force an unwrap with the new key
    assert vault.get(token, purpose="x", as_site="ru").fields == IVAN
    token2 = vault.put(
        "profiles", subject={"citizenship": "RU"}, fields={"full_name": "New"}, purpose="signup"
    ).token
    assert vault.keystore("ru").versions() == {2: 2}
    assert vault.get(token2, purpose="x", as_site="ru").fields["full_name"] == "New"


def test_a_rotation_by_another_process_takes_effect_in_moments(config: Config) -> None:
    """A server keeps running while the CLI rotates: the server's next new subject is
    wrapped with the new key, not with the one the CLI has just deleted (the server looks
    at the keyring file at most every REFRESH seconds; rotations wait far longer than that
    for writers before they delete the old key)."""
    server, cli = open_vault(config), open_vault(config)
    try:
        before = server.put("profiles", subject=RU, fields=IVAN, purpose="signup").token
        out = cli.rotate_key("ru", grace=0)
        assert out["retired"] == [1]
        time.sleep(REFRESH * 2)
        after = server.put(
            "profiles", subject=RU, fields={"full_name": "Anna"}, purpose="signup"
        ).token
        assert server.keystore("ru").versions() == {2: 2}
    finally:
        server.close()
        cli.close()
    fresh = open_vault(config)  # a restart: nothing is cached any more
    try:
        assert fresh.get(before, purpose="x", as_site="ru").fields == IVAN
        assert fresh.get(after, purpose="x", as_site="ru").fields == {"full_name": "Anna"}
    finally:
        fresh.close()


def test_a_stale_keyring_in_one_process_never_overwrites_another_process_change(
    config: Config,
) -> None:
    one = LocalKeyring(config.keyring_path, create=True)
    two = LocalKeyring(config.keyring_path, create=True)
    one.ensure_site("ru")
    two.ensure_site("ru")
    assert one.rotate("ru") == 2
    two.ensure_site("xx")  # rewrites the file: must keep the rotation it has not seen yet
    again = LocalKeyring(config.keyring_path)
    assert again.versions("ru") == [1, 2]
    assert again.current_version("ru") == 2
    assert again.versions("xx") == [1]


def test_a_key_wrapped_with_the_old_key_during_a_rotation_is_rewrapped_not_lost(
    config: Config,
) -> None:
    vault = open_vault(config)
    try:
        vault.put("profiles", subject=RU, fields=IVAN, purpose="signup")
        ctx = key_context("ru", "straggler")
        dek = new_data_key()
        version, wrapped = vault.keys.wrap("ru", dek, ctx)  # a writer wraps with key 1 ...
        assert version == 1
        result: dict[str, Any] = {}
        rotation = threading.Thread(target=lambda: result.update(vault.rotate_key("ru", grace=1.0)))
        rotation.start()
        time.sleep(0.5)  # ... and stores it after the rotation's first pass
        vault.keystore("ru").put_many([("straggler", WrappedKey(version, wrapped))])
        rotation.join(30)
        assert result["retired"] == [1]
        assert result["rewrapped"] == 2
        stored = vault.keystore("ru").get("straggler")
        assert stored is not None
        assert stored.kek_version == 2
        assert vault.keys.unwrap("ru", stored.kek_version, stored.wrapped, ctx) == dek
    finally:
        vault.close()


def test_audit_entries_hold_no_plaintext(vault: Domicile) -> None:
    token = vault.put("profiles", subject=RU, fields=IVAN, purpose="signup").token
    vault.get(token, purpose="view", as_site="ru")
    vault.update(token, fields={"city": "Kazan"}, purpose="edit")
    text = "".join(e.payload for e in vault.store("ru").audit())
    for value in [*IVAN.values(), "Kazan"]:
        assert value not in text
    assert "ru.localization.2025" in text


def test_erasing_some_records_shreds_the_subject_only_with_its_last(vault: Domicile) -> None:
    """``erase_records`` (the erasure path of expired InCountry records) on native records:
    a record whose subject keeps another loses its row and its copies (through the outbox);
    the subject's last record takes the key with it, first."""
    a = vault.put("profiles", subject=RU, fields=IVAN, purpose="signup")
    b = vault.put(
        "profiles", subject=RU, fields={"full_name": "I. S.", "email": IVAN["email"]},
        purpose="signup",
    )  # fmt: skip
    site, rid_a = vault._locate(a.token)
    _, rid_b = vault._locate(b.token)
    store = vault.store(site.id)
    rec_a, rec_b = store.get(rid_a), store.get(rid_b)
    assert rec_a is not None
    assert rec_b is not None
    subject = rec_a.subject_id
    out = vault.erase_records(
        site.id, [rec_a], purpose="retention", client="test", detail={"reason": "test"}
    )
    assert (out["records"], out["keys_destroyed"]) == (1, 0)
    with pytest.raises(NotFound):
        vault.get(a.token, purpose="view", as_site="ru")
    assert vault.get(b.token, purpose="view", as_site="ru").fields["full_name"] == "I. S."
    deletes = [(i.record_id, i.op) for i in store.outbox(100) if i.op != "upsert"]
    assert deletes == [(rid_a, "delete"), (rid_a, "delete")]  # its copies at de and us
    assert subject in vault.keystore(site.id).get_many([subject])
    out = vault.erase_records(
        site.id, [rec_b], purpose="retention", client="test", detail={"reason": "test"}
    )
    assert (out["records"], out["keys_destroyed"]) == (1, 1)
    assert subject not in vault.keystore(site.id).get_many([subject])
    assert store.subject_records(subject) == []
    erased = [r.payload for r in store.audit() if '"action":"erase"' in r.payload]
    assert len(erased) == 2
    assert '"key_destroyed":true' in erased[1]
    assert IVAN["email"] not in "".join(erased)
