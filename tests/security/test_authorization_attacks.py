"""Finding 1 of the trust review, performed as the attacker would, against a real
``domicile serve``: an update that disclosed a Russian subject's record in full to a client
that may not read it, and delete, erase and export by a client scoped to another
collection. Each test passes only when the attack fails, and checks that the refusal is in
the audit, naming the client that tried.
"""

from __future__ import annotations

from typing import Any

from .conftest import Served

ANNA = {"full_name": "Anna Sergeevna Volkova", "email": "anna.volkova@example.ru", "city": "Kazan"}
MASKED = {"full_name": "A. S. V.", "email": "*@example.ru"}  # what Russia's pack lets through


def _setup(served: Served) -> tuple[dict[str, str], str, str]:
    """An administrator's headers, a Russian subject's profile token and the token of a
    note of the same subject (tied to it by the e-mail address)."""
    _, admin = served.client("ops", "admin")
    r = served.http.post(
        "/v1/collections/profiles/records",
        json={"subject": {"citizenship": "RU"}, "fields": ANNA, "purpose": "signup"},
        headers=admin,
    )
    assert r.status_code == 201, r.text
    assert r.json()["site"] == "ru"
    note = served.http.post(
        "/v1/collections/notes/records",
        json={
            "subject": {"citizenship": "RU"},
            "fields": {"email": ANNA["email"], "text": "prefers mornings"},
            "purpose": "signup",
        },
        headers=admin,
    )
    assert note.status_code == 201, note.text
    return admin, r.json()["token"], note.json()["token"]


def _leaks(text: str) -> list[str]:
    return [v for v in (*ANNA.values(), "Anna", "Volkova", "prefers mornings") if v in text]


def _refusals(served: Served, client: str) -> list[dict[str, Any]]:
    return [e for e in served.audit("us") if e["action"] == "refuse" and e.get("client") == client]


def _admin_view(served: Served, admin: dict[str, str], token: str) -> dict[str, Any]:
    r = served.http.get(
        f"/v1/records/{token}", params={"purpose": "check", "as_site": "ru"}, headers=admin
    )
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def _gone_token(served: Served, admin: dict[str, str]) -> str:
    """The token of a record that no longer exists."""
    r = served.http.post(
        "/v1/collections/profiles/records",
        json={"subject": {"citizenship": "RU"}, "fields": {"full_name": "X Y"}, "purpose": "p"},
        headers=admin,
    )
    token: str = r.json()["token"]
    assert served.http.delete(
        f"/v1/records/{token}", params={"purpose": "p"}, headers=admin
    ).is_success
    return token


def test_patch_by_a_client_of_another_collection_discloses_nothing(served: Served) -> None:
    admin, token, _ = _setup(served)
    attacker, headers = served.client(
        "notes-writer", "records:write", "site:us", "collection:notes", "purpose:x"
    )
    body = {"fields": {"headline": "x"}, "purpose": "x"}
    r = served.http.patch(f"/v1/records/{token}", json=body, headers=headers)
    assert r.status_code == 404, r.text
    assert _leaks(r.text) == []
    # The answer is the one a missing record gets: it does not even say the record exists.
    missing = served.http.patch(
        f"/v1/records/{_gone_token(served, admin)}", json=body, headers=headers
    )
    assert (missing.status_code, missing.json()) == (r.status_code, r.json())
    # Nothing was written, and the refusal names the client and the scope it lacks.
    record = _admin_view(served, admin, token)
    assert record["version"] == 1
    assert "headline" not in record["fields"]
    assert not [e for e in served.audit("ru") if e["action"] == "update"]
    refusal = _refusals(served, attacker)[0]
    assert refusal["detail"]["missing_scope"] == "collection:profiles"
    assert refusal["requester"] == "us"


def test_patch_answers_no_more_than_a_read_by_the_same_client(served: Served) -> None:
    admin, token, _ = _setup(served)
    # A US client that may read profiles: the update answers what its read would (masked,
    # with no Art. 12 notice on record), and the disclosure is audited as such.
    reader, headers = served.client(
        "us-editor", "records:write", "records:read", "site:us", "collection:profiles",
        "purpose:x",
    )  # fmt: skip
    r = served.http.patch(
        f"/v1/records/{token}", json={"fields": {"headline": "x"}, "purpose": "x"}, headers=headers
    )
    assert r.status_code == 200, r.text
    assert (r.json()["fields"], r.json()["masked"], r.json()["transfer"]) == (MASKED, True, False)
    read = served.http.get(f"/v1/records/{token}", params={"purpose": "x"}, headers=headers)
    assert read.json()["fields"] == r.json()["fields"]
    assert _leaks(r.text) == []
    ru = served.audit("ru")
    update = next(e for e in ru if e["action"] == "update")
    assert (update["client"], update["requester"]) == (reader, "us")
    shown = [e for e in ru if e["action"] == "disclose_masked" and e["client"] == reader]
    assert len(shown) == 2  # the update's answer and the read
    assert shown[0]["detail"]["masks"] == {"email": "domain", "full_name": "initials"}
    assert not [e for e in ru if e["action"] == "transfer"]

    # A client that may write but not read gets the new version, and no field at all.
    writer, headers = served.client(
        "us-writer", "records:write", "site:us", "collection:profiles", "purpose:x"
    )
    r = served.http.patch(
        f"/v1/records/{token}", json={"fields": {"city": "Omsk"}, "purpose": "x"}, headers=headers
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"token": token, "version": 3}
    assert [e["action"] for e in served.audit("ru") if e.get("client") == writer] == ["update"]
    assert _admin_view(served, admin, token)["fields"]["city"] == "Omsk"


def test_delete_by_a_client_of_another_collection_is_refused(served: Served) -> None:
    admin, token, _ = _setup(served)
    attacker, headers = served.client(
        "notes-deleter", "records:delete", "site:us", "collection:notes", "purpose:*"
    )
    r = served.http.delete(f"/v1/records/{token}", params={"purpose": "x"}, headers=headers)
    assert r.status_code == 404, r.text
    assert _admin_view(served, admin, token)["fields"] == ANNA
    assert not [e for e in served.audit("ru") if e["action"] == "delete"]
    assert _refusals(served, attacker)[0]["detail"]["missing_scope"] == "collection:profiles"


def test_erase_by_a_client_of_another_collection_is_refused_and_erasure_is_attributed(
    served: Served,
) -> None:
    admin, token, _ = _setup(served)
    attacker, headers = served.client(
        "notes-eraser", "records:erase", "site:us", "collection:notes", "purpose:*"
    )
    r = served.http.post("/v1/subjects/erase", json={"token": token}, headers=headers)
    assert r.status_code == 404, r.text
    assert _admin_view(served, admin, token)["fields"] == ANNA  # the key is still there
    assert not [e for e in served.audit("ru") if e["action"] == "erase"]
    assert _refusals(served, attacker)[0]["detail"]["missing_scope"] == "collection:profiles"

    # A client that may erase profiles does, and the erasure names it.
    eraser, headers = served.client(
        "dpo", "records:erase", "site:us", "collection:profiles", "purpose:erasure"
    )
    r = served.http.post("/v1/subjects/erase", json={"token": token}, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["records"] == 2  # the profile and the note: the subject goes
    (erased,) = [e for e in served.audit("ru") if e["action"] == "erase"]
    assert (erased["client"], erased["requester"]) == (eraser, "us")


def test_export_by_a_client_of_another_collection_is_refused(served: Served) -> None:
    _, token, _ = _setup(served)
    attacker, headers = served.client(
        "notes-exporter", "records:export", "records:read", "site:us", "collection:notes",
        "purpose:*",
    )  # fmt: skip
    r = served.http.get("/v1/subjects/export", params={"token": token}, headers=headers)
    assert r.status_code == 404, r.text
    assert _leaks(r.text) == []
    assert _refusals(served, attacker)[0]["detail"]["missing_scope"] == "collection:profiles"

    # Export needs the read rights a read would: without records:read, nothing.
    blind, headers = served.client(
        "exporter", "records:export", "site:us", "collection:profiles", "purpose:*"
    )
    r = served.http.get("/v1/subjects/export", params={"token": token}, headers=headers)
    assert r.status_code == 403, r.text
    assert _refusals(served, blind)[0]["detail"]["missing_scope"] == "records:read"

    # With them: each record as its read from the US would be, and the note (another
    # collection) withheld and counted, never shown.
    _, headers = served.client(
        "sar", "records:export", "records:read", "site:us", "collection:profiles", "purpose:*"
    )
    r = served.http.get("/v1/subjects/export", params={"token": token}, headers=headers)
    assert r.status_code == 200, r.text
    assert [x["fields"] for x in r.json()["records"]] == [MASKED]
    assert r.json()["withheld"] == 1
    assert _leaks(r.text) == []
