"""``/v1/rights``: the same requests through the API, behind their scopes, in the
published document."""

from __future__ import annotations

from tests.http.conftest import Service, service  # noqa: F401  (the fixture)

PUT = {
    "subject": {"citizenship": "RU"},
    "fields": {"full_name": "Anna Volkova", "email": "anna@example.ru"},
    "purpose": "signup",
}
OPEN = {
    "kind": "access",
    "identity": {"email": "Anna@Example.ru"},
    "checked_by": "dpo.kim",
    "verified_how": "email_confirmation",
}


def test_rights_through_the_api(service: Service) -> None:  # noqa: F811
    _, admin = service.client("app", "admin")
    assert (
        service.http.post("/v1/collections/profiles/records", json=PUT, headers=admin).status_code
        == 201
    )
    # A request concerns every site that holds its subject (every site, to open one); the
    # office acts as itself, within its collections and the purposes of its requests.
    sites = ("site:ru", "site:de", "site:us")
    _, reader = service.client("auditor", "rights:read", *sites)
    _, office = service.client(
        "dpo", "rights:write", "rights:read", *sites, "collection:profiles",
        "purpose:subject_access",
    )  # fmt: skip
    r = service.http.post("/v1/rights", json=OPEN, headers=reader)
    assert r.status_code == 403
    assert r.json()["code"] == "forbidden"
    r = service.http.post("/v1/rights", json=OPEN, headers=office)
    assert r.status_code == 201, r.text
    req = r.json()
    assert req["deadline"]["rule"] == "ru.access_2022"
    assert req["via"] == "api"
    assert req["opened_by"].startswith("dc_")
    rid = req["id"]
    listed = service.http.get("/v1/rights", params={"status": "open"}, headers=reader).json()
    assert [x["id"] for x in listed] == [rid]
    assert service.http.get(f"/v1/rights/{rid}", headers=reader).json()["id"] == rid
    # Acting from the subject's site, the read stays there (from elsewhere it would be
    # decided as a transfer: see tests/security/test_rights_scopes.py).
    r = service.http.post(
        f"/v1/rights/{rid}/fulfil", json={}, headers=office, params={"as_site": "ru"}
    )
    assert r.status_code == 200, r.text
    [record] = r.json()["result"]["records"]
    assert record["fields"]["email"] == "anna@example.ru"
    r = service.http.post(f"/v1/rights/{rid}/extend", json={"reason": "archives"}, headers=office)
    assert r.json()["due"] == r.json()["deadline"]["extended_due"]
    r = service.http.post(f"/v1/rights/{rid}/close", json={"outcome": "refused"}, headers=office)
    assert r.status_code == 400
    r = service.http.post(f"/v1/rights/{rid}/close", json={"outcome": "fulfilled"}, headers=office)
    assert r.json()["status"] == "closed"
    r = service.http.post(f"/v1/rights/{rid}/close", json={"outcome": "fulfilled"}, headers=office)
    assert r.status_code == 409


def test_bad_requests_get_the_documented_answers(service: Service) -> None:  # noqa: F811
    _, office = service.client(
        "dpo", "rights:write", "rights:read", "site:ru", "site:de", "site:us", "purpose:*"
    )
    assert service.http.get("/v1/rights/rq_000000000000", headers=office).status_code == 404
    assert service.http.get("/v1/rights/42", headers=office).status_code == 422
    bad = {**OPEN, "identity": {"full_name": "Anna Volkova"}}
    r = service.http.post("/v1/rights", json=bad, headers=office)
    assert r.status_code == 422
    assert "Anna" not in r.text
    r = service.http.post("/v1/rights", json={**OPEN, "kind": "forget"}, headers=office)
    assert r.status_code == 422
    r = service.http.post("/v1/rights", json={**OPEN, "received": "2999-01-01"}, headers=office)
    assert r.status_code == 409
    assert service.http.get("/v1/rights", headers=office).json() == []


def test_the_document_publishes_the_routes_and_the_identity_fields(service: Service) -> None:  # noqa: F811
    doc = service.http.get("/openapi.json").json()
    assert {"/v1/rights", "/v1/rights/{request_id}", "/v1/rights/{request_id}/fulfil"} <= set(
        doc["paths"]
    )
    body = doc["components"]["schemas"]["RightsOpenBody"]["properties"]["identity"]
    assert set(body["properties"]) == {"email", "incountry.profile_key"}
    assert body["additionalProperties"] is False
    assert doc["paths"]["/v1/rights"]["post"]["security"]
