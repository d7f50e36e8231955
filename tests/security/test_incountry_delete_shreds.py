"""Finding 8 of the trust review, second half: a DELETE through the InCountry-compatible API
left the record's data key, so a sealed copy saved before the delete (a backup, a dump, a
stolen file) still decrypted afterwards.

The attack, against a real ``domicile serve``: save the sealed record straight from the
site's database file, delete the record over HTTP, then try to open the saved blob with
the vault's own machinery and keys. A delete now destroys the subject's key when the
subject keeps no other record at the site (the subject is the record's ``profile_key``,
or the record itself), so the saved blob no longer opens.
"""

from __future__ import annotations

import sqlite3

import pytest

from domicile.crypto.envelope import record_context
from domicile.crypto.errors import KeyDestroyed
from domicile.stores.base import unpack_fields
from domicile.vault import Domicile

from .conftest import Served

BASE = "/v2/storage/records/ru"
SECRET = "the body an attacker wants"


def _saved(served: Served) -> dict[str, tuple[str, dict[str, bytes]]]:
    """Every InCountry record of the Russian site as stored, sealed: what an attacker
    copies off the disk (record id -> subject id, sealed fields)."""
    conn = sqlite3.connect(f"file:{served.data / 'ru.sqlite'}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT record_id, subject_id, fields FROM records WHERE collection = '@incountry'"
        ).fetchall()
    finally:
        conn.close()
    return {rid: (sid, unpack_fields(blob)) for rid, sid, blob in rows}


def _open_body(served: Served, rid: str, subject: str, fields: dict[str, bytes]) -> bytes:
    """Open a saved record's body with the deployment's keyring and key store."""
    vault = Domicile.open(served.config)
    try:
        cipher = vault._cipher("ru", subject)
        return cipher.open(fields["body"], record_context("ru", "@incountry", rid) + b"body")
    finally:
        vault.close(checkpoint=False)


def test_a_body_saved_before_delete_cannot_be_opened_after_it(served: Served) -> None:
    client, key = served.client("app", "records:write", "records:delete", "site:ru",
                                "purpose:incountry")  # fmt: skip
    headers = {**key, "x-env-id": "default"}
    for record_key in ("a", "b"):  # two records of one profile, and one without a profile
        r = served.http.post(
            BASE, json={"record_key": record_key, "profile_key": "p", "body": SECRET},
            headers=headers,
        )  # fmt: skip
        assert r.status_code == 201, r.text
    r = served.http.post(BASE, json={"record_key": "c", "body": SECRET}, headers=headers)
    assert r.status_code == 201, r.text
    saved = _saved(served)
    assert len(saved) == 3
    # The machinery works on a saved blob while the key exists: the test can tell.
    for rid, (subject, fields) in saved.items():
        assert SECRET in _open_body(served, rid, subject, fields).decode()

    # Deleting one of the profile's two records keeps the profile's key: "b" is still there.
    assert served.http.delete(f"{BASE}/a", headers=headers).status_code == 200
    by_subject: dict[str, list[str]] = {}
    for rid, (subject, _) in saved.items():
        by_subject.setdefault(subject, []).append(rid)
    profile = next(s for s, rids in by_subject.items() if len(rids) == 2)
    single = next(s for s, rids in by_subject.items() if len(rids) == 1)
    rid_a = next(r for r in by_subject[profile] if r not in _saved(served))
    assert SECRET in _open_body(served, rid_a, profile, saved[rid_a][1]).decode()

    # Its last record, and the record without a profile (batch delete): the keys go.
    assert served.http.delete(f"{BASE}/b", headers=headers).status_code == 200
    r = served.http.post(
        f"{BASE}/batchDelete", json={"filter": {"record_key": ["c"]}}, headers=headers
    )
    assert r.status_code == 200, r.text
    assert _saved(served) == {}
    for rid, (subject, fields) in saved.items():
        with pytest.raises(KeyDestroyed):
            _open_body(served, rid, subject, fields)
    assert {profile, single} == set(by_subject)

    # The deletes are in the site's audit, naming the client and which destroyed a key.
    deletes = [e for e in served.audit("ru") if e["action"] == "delete"]
    assert [e["client"] for e in deletes] == [client] * 3
    assert [e["detail"]["key_destroyed"] for e in deletes] == [False, True, True]
